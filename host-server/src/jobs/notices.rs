//! Addressed-delivery work (PROTOCOL.md §11): pushes, delivery status,
//! notices, receipts, the target's progress and sender grants, against
//! the store's [`Mailbox`](crate::mailbox::Mailbox) and the directory.

use pickup_proto::message::Kind;
use pickup_proto::Code;

use crate::directory::DirectoryError;
use crate::mailbox::{DeliveryRecord, NewPush, Pushed, Settle, Settled};
use crate::relay::Relay;
use crate::store::{BatchId, StoreError};

/// Store a push of `code` to `terminal` by `sender`.
#[derive(Debug)]
pub(crate) struct PushWork {
    /// The request it answers: a user's `Push`, or a peer relay's
    /// `PeerPush` (whose `sender` is `user@relay`, never a terminal's
    /// owner: only a grant lets it through).
    pub(crate) kind: Kind,
    pub(crate) sender: String,
    pub(crate) push_id: u64,
    pub(crate) code: Code,
    pub(crate) terminal: String,
    pub(crate) now_secs: u64,
}

/// What became of a push.
#[derive(Debug)]
pub(crate) enum PushAnswer {
    /// The mailbox's answer.
    Stored(Pushed),
    /// No terminal of this name that the sender may push to.
    UnknownTerminal,
    /// The directory or the store failed (logged).
    Failed,
}

pub(super) fn push(relay: &Relay, w: &PushWork) -> PushAnswer {
    let failed = |what: &str, e: &dyn core::fmt::Display| {
        tracing::error!("push ({what}) failed: {e}");
        PushAnswer::Failed
    };
    // A retry is answered before anything else is checked: the first
    // answer may have been lost after the batch, the grant or the
    // terminal changed, and the delivery it made stands.
    match relay.store.delivery_by_push(&w.sender, w.push_id) {
        Ok(Some(d)) => return PushAnswer::Stored(Pushed::Again(d)),
        Ok(None) => {}
        Err(e) => return failed("retry", &e),
    }
    let owner = match relay.directory.terminal(&w.terminal) {
        Ok(Some(t)) => t.owner,
        Ok(None) => return PushAnswer::UnknownTerminal,
        Err(e) => return failed("terminal", &e),
    };
    if owner != w.sender {
        match relay.directory.allows_sender(&owner, &w.sender) {
            Ok(true) => {}
            Ok(false) => return PushAnswer::UnknownTerminal,
            Err(e) => return failed("grant", &e),
        }
    }
    let new = NewPush {
        sender: &w.sender,
        push_id: w.push_id,
        code: w.code,
        code_key: crate::codes::code_key(&w.code),
        terminal: &w.terminal,
        now: w.now_secs,
    };
    match relay.store.push(&new, &relay.settings.push) {
        Ok(pushed) => {
            if let Pushed::Queued(d) = &pushed {
                tracing::info!(
                    delivery = d.id,
                    batch = d.batch.0,
                    sender = %d.sender,
                    terminal = %d.terminal,
                    "batch pushed"
                );
                // Committed: a session listening as the target sends the
                // notice now.
                relay.ring(&d.terminal);
            }
            PushAnswer::Stored(pushed)
        }
        Err(e) => failed("store", &e),
    }
}

/// Store work about deliveries that answers or changes one.
#[derive(Debug)]
pub(crate) enum NoticeWork {
    /// The deliveries of `code` that `sender` pushed.
    Status { sender: String, code: Code },
    /// Open notices to `terminal` above id `after`; `listen`: the answer
    /// to a `Listen` (an `Inbox` first), else the live ones.
    Load {
        terminal: String,
        after: u64,
        listen: bool,
    },
    /// `NoticeAck`.
    Ack {
        terminal: String,
        id: u64,
        now_secs: u64,
    },
    /// `Receipt` or `NoticeRefuse`.
    Settle {
        terminal: String,
        id: u64,
        how: Settle,
        now_secs: u64,
    },
    /// The target's reads of `batch`: per file, the furthest end.
    Progress {
        terminal: String,
        batch: BatchId,
        ends: Vec<(u16, u64)>,
        now_secs: u64,
    },
    /// `AllowSender` by `owner`.
    Allow {
        owner: String,
        sender: String,
        allow: bool,
    },
}

impl NoticeWork {
    /// Whether the work answers a terminal's question (dropped when the
    /// terminal starts over; see `session::work`).
    pub(crate) fn asks(&self) -> bool {
        match self {
            NoticeWork::Status { .. } | NoticeWork::Settle { .. } | NoticeWork::Allow { .. } => {
                true
            }
            NoticeWork::Load { listen, .. } => *listen,
            NoticeWork::Ack { .. } | NoticeWork::Progress { .. } => false,
        }
    }

    /// Whether the session must wait for it before taking input: not for
    /// what has no answer.
    pub(crate) fn blocks(&self) -> bool {
        !matches!(self, NoticeWork::Ack { .. } | NoticeWork::Progress { .. })
    }

    /// A short name for logs and the latency histogram.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            NoticeWork::Status { .. } => "delivery-status",
            NoticeWork::Load { .. } => "load-notices",
            NoticeWork::Ack { .. } => "notice-ack",
            NoticeWork::Settle { .. } => "settle-notice",
            NoticeWork::Progress { .. } => "delivery-progress",
            NoticeWork::Allow { .. } => "allow-sender",
        }
    }
}

/// What a [`NoticeWork`] found or did.
#[derive(Debug)]
pub(crate) enum NoticeDone {
    Status(Result<Vec<DeliveryRecord>, StoreError>),
    Loaded {
        listen: bool,
        result: Result<Vec<DeliveryRecord>, StoreError>,
    },
    Acked(Result<bool, StoreError>),
    Settled {
        id: u64,
        how: Settle,
        result: Result<Settled, StoreError>,
    },
    Progress {
        batch: BatchId,
        result: Result<Option<u64>, StoreError>,
    },
    Allowed(Result<(), DirectoryError>),
}

/// The most deliveries one `DeliveryStatus` lists: the newest ones.
pub(crate) const MAX_STATUS: usize = 1000;

pub(super) fn run(relay: &Relay, w: NoticeWork) -> NoticeDone {
    let store = &relay.store;
    match w {
        NoticeWork::Status { sender, code } => NoticeDone::Status(store.deliveries_of(
            &sender,
            &crate::codes::code_key(&code),
            MAX_STATUS,
        )),
        NoticeWork::Load {
            terminal,
            after,
            listen,
        } => {
            let max = relay.settings.push.max_open_per_terminal as usize;
            NoticeDone::Loaded {
                listen,
                result: store.inbox(&terminal, after, max),
            }
        }
        NoticeWork::Ack {
            terminal,
            id,
            now_secs,
        } => NoticeDone::Acked(store.acknowledge(&terminal, id, now_secs)),
        NoticeWork::Settle {
            terminal,
            id,
            how,
            now_secs,
        } => NoticeDone::Settled {
            id,
            how,
            result: store.settle(&terminal, id, how, now_secs),
        },
        NoticeWork::Progress {
            terminal,
            batch,
            ends,
            now_secs,
        } => NoticeDone::Progress {
            batch,
            result: store.record_progress(
                &terminal,
                batch,
                &ends,
                now_secs,
                relay.settings.push.receiving_grace_secs,
            ),
        },
        NoticeWork::Allow {
            owner,
            sender,
            allow,
        } => NoticeDone::Allowed(match relay.directory.allow_sender(&owner, &sender, allow) {
            // A sender that does not exist is answered alike
            // (PROTOCOL.md §11): names cannot be probed this way.
            Err(DirectoryError::NotFound(_) | DirectoryError::InvalidName(_)) => Ok(()),
            other => other,
        }),
    }
}
