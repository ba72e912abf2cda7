//! Forwarding work (PROTOCOL.md §12): storing a user's forward request
//! (a `ForwardPush` is one with a push target, §12.1),
//! reading a forward's status (the stored record with the live progress
//! of [`crate::forward::board`]), and retrying a failed one, against the
//! store's [`Forwards`](crate::store::Forwards).

use pickup_proto::message::{ForwardStatus, Kind};
use pickup_proto::{Code, ErrorCode};

use crate::codes::code_key;
use crate::relay::Relay;
use crate::store::forwards::{Created, NewForward, PushTarget, Retried};
use crate::store::{Lookup, StoreError};

/// Why a status is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// `ForwardWatch{once}`: one status.
    Once,
    /// `ForwardWatch`: the first status of a watch.
    Watch,
    /// The watched forward changed (its watcher's doorbell rang).
    Reload,
}

/// Store work about forwards.
#[derive(Debug)]
pub(crate) enum ForwardWork {
    /// `ForwardRequest` by `requester` (the peer is one of `[[peers]]`),
    /// or `ForwardPush` with its `push` target.
    Request {
        requester: String,
        /// `ForwardRequest` or `ForwardPush`: what an error answers.
        kind: Kind,
        code: Code,
        peer: String,
        push: Option<PushTarget>,
        now_secs: u64,
    },
    /// The status of forward `id`, if it is `requester`'s.
    Status {
        requester: String,
        id: u64,
        look: Look,
    },
    /// `ForwardRetry`.
    Retry {
        requester: String,
        id: u64,
        now_secs: u64,
    },
}

impl ForwardWork {
    /// Whether the work answers a terminal's question (dropped when the
    /// terminal starts over; see `session::work`).
    pub(crate) fn asks(&self) -> bool {
        !self.is_reload()
    }

    /// Whether the session must wait for it before taking input: not for
    /// a reload, which only reports.
    pub(crate) fn blocks(&self) -> bool {
        !self.is_reload()
    }

    fn is_reload(&self) -> bool {
        matches!(
            self,
            ForwardWork::Status {
                look: Look::Reload,
                ..
            }
        )
    }

    /// A short name for logs and the latency histogram.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ForwardWork::Request { .. } => "forward-request",
            ForwardWork::Status { .. } => "forward-status",
            ForwardWork::Retry { .. } => "forward-retry",
        }
    }
}

/// What a [`ForwardWork`] found or did.
#[derive(Debug)]
pub(crate) enum ForwardDone {
    /// The new forward's id (or, for a retried push, the one it made), or
    /// why the request (of `kind`) was refused.
    Requested {
        kind: Kind,
        result: Result<Result<u64, ErrorCode>, StoreError>,
    },
    /// The forward's status; `None`: no forward of the requester's has
    /// this id.
    Status {
        id: u64,
        look: Look,
        result: Result<Option<ForwardStatus>, StoreError>,
    },
    /// The status after a retry, or why it was refused: `UnknownCode`
    /// (no forward of the requester's has this id), `QueueFull` (a failed
    /// forward, and the requester at `[forward] max_open_per_user`).
    Retried(Result<Result<ForwardStatus, ErrorCode>, StoreError>),
}

pub(super) fn run(relay: &Relay, w: ForwardWork) -> ForwardDone {
    let store = &relay.store;
    let board = relay.forward_board();
    match w {
        ForwardWork::Request {
            requester,
            kind,
            code,
            peer,
            push,
            now_secs,
        } => ForwardDone::Requested {
            kind,
            result: (|| {
                // A retried push: the forward it made, whatever its batch
                // became since (create_forward checks again, atomically).
                if let Some(p) = &push {
                    if let Some(f) = store.forward_by_push(&requester, p.push_id)? {
                        return Ok(Ok(f.id));
                    }
                }
                let batch = match store.find_by_code(&code_key(&code), now_secs)? {
                    Lookup::Live(b) => b,
                    Lookup::Expired => return Ok(Err(ErrorCode::Expired)),
                    Lookup::Unknown => return Ok(Err(ErrorCode::UnknownCode)),
                };
                if !batch.ready() {
                    return Ok(Err(ErrorCode::NotReady));
                }
                let created = store.create_forward(&NewForward {
                    batch: batch.id,
                    code,
                    requester: &requester,
                    peer: &peer,
                    total: batch.total_size(),
                    now: now_secs,
                    push,
                    max_open: relay.settings.forward.max_open_per_user,
                })?;
                let f = match created {
                    Created::New(f) => f,
                    // A retried ForwardPush: the forward it made, as it stands.
                    Created::Again(f) => return Ok(Ok(f.id)),
                    Created::Full => return Ok(Err(ErrorCode::QueueFull)),
                };
                let terminal = f.push.as_ref().map(|p| p.terminal.as_str());
                tracing::info!(forward = f.id, batch = batch.id.0, %requester, %peer, ?terminal, "forward queued");
                // Committed: the forwarder claims it now, not at its next poll.
                board.kick();
                Ok(Ok(f.id))
            })(),
        },
        ForwardWork::Status {
            requester,
            id,
            look,
        } => ForwardDone::Status {
            id,
            look,
            result: store.forward(id).map(|r| {
                r.filter(|r| r.requester == requester)
                    .map(|r| board.status(&r))
            }),
        },
        ForwardWork::Retry {
            requester,
            id,
            now_secs,
        } => ForwardDone::Retried(
            store
                .retry_forward(
                    id,
                    &requester,
                    now_secs,
                    relay.settings.forward.max_open_per_user,
                )
                .map(|r| match r {
                    Some(Retried::Record(r)) => {
                        board.kick();
                        board.ring(r.id);
                        Ok(board.status(&r))
                    }
                    Some(Retried::Full(_)) => Err(ErrorCode::QueueFull),
                    None => Err(ErrorCode::UnknownCode),
                }),
        ),
    }
}
