//! Forwarding: this relay uploads one of its live batches to a peer relay
//! (docs/design/forwarding.md §3), as a terminal would.
//!
//! ```text
//!   Store ──find_by_code──► Batch (ready, live)
//!     │                        │ names, sizes, SHA-1s: the announcement
//!     │ read_blob              ▼
//!   BatchSource (ReadAt) ──► pickup_device::Uploader ──Dialled (tcp/tls, as `pickup`)──► peer relay
//!     ▲ Liveness: before every connect and on every read   │ Hello{role: Relay}, relay_mac,
//!                                                          │ BatchOpen | Resume{token}, Data, Proof
//!   progress(Progress{state, sent, total, token}) ◄────────┘ ──► Forwarded{code, token, …}
//! ```
//!
//! The runner is the CLI's own upload driver ([`pickup_device::Uploader`]
//! over [`pickup_device::cli::dial`]), so a forward gets what an upload
//! gets: offsets acknowledged only when durable at the peer, a resume from
//! the peer's durable offsets given the peer's resume token (after either
//! relay restarted), and instant upload by proof of ownership, which makes
//! content the peer already holds from this relay cross as one proof per
//! file (the peer counts every batch of a peer relay as one owner,
//! `peer:NAME`). The batch's SHA-1s come from its record; only a proof
//! reads a whole file, hashed under the peer's challenge.
//!
//! The runner blocks its caller for the whole forward (the driver is the
//! blocking one of the CLI): call it from a thread of its own or from
//! tokio's blocking pool. It runs the session on a thread it starts with
//! a stack of [`STACK`] bytes, since the session keeps a slot per file and
//! a frame buffer each way, built in place. The durable queue of forwards
//! is the store's ([`crate::store::forwards`]); [`service`] claims and runs
//! it, and [`board`] keeps the live progress that sessions report.
//!
//! A push forward (`ForwardPush`) asks the peer for one more thing once
//! the copy is verified: a push of it to one of the peer's terminals
//! ([`push`], over a relay-role request session of its own).
//!
//! The peer authenticates this relay under the name of the `[[peers]]`
//! entry (`PeerConfig::name`): each relay of a pair lists the other under
//! the pair's one name, with the pair's one key.

pub mod board;
mod link;
pub mod push;
pub mod service;
mod source;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};

use pickup_device::cli::dial::{Dialled, PeerTrust, RelayDial, RX, TX};
use pickup_device::clock::StdClock;
use pickup_device::retransfer::LinkEvent;
use pickup_device::{Connector, Event, RunError, Uploader};
use pickup_proto::identity::{Credential, RelayIdentity};
use pickup_proto::message::ResumeToken;
use pickup_proto::upload::{self, FileMeta};
use pickup_proto::{Code, ErrorCode};

use crate::codes::code_key;
use crate::config::peers::{PeerAddr, PeerRelay, PeerTrust as ConfigTrust};
use crate::store::{FileRecord, Lookup, Store};

/// How a run retries lost links: [`Forward::policy`].
pub use pickup_device::retransfer::RetransferPolicy;
pub use source::{BatchSource, Liveness, SourceError, RECHECK};

/// Most files one forwarded batch may hold: as many as `pickup send` sends.
pub const MAX_FILES: usize = 1024;

/// Where a forward stands: the wire's states (PROTOCOL.md §12), of which
/// one run reports `Connecting`, `Transferring`, `Verifying` and `Done`.
pub use pickup_proto::message::ForwardState;

/// What the progress callback is told, on every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Where the forward stands.
    pub state: ForwardState,
    /// Bytes durable at the peer (acknowledged, linked or verified).
    pub sent: u64,
    /// Bytes of the batch.
    pub total: u64,
    /// The peer's resume token, once it granted the batch: keep it to
    /// resume this forward after a failure or a restart of either relay.
    pub token: Option<ResumeToken>,
}

/// A finished forward: the peer's copy and how to name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// The peer's pickup code for the copy.
    pub code: Code,
    /// When the peer's copy expires, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The peer's resume token of the copy.
    pub token: ResumeToken,
    /// Bytes of the batch.
    pub total: u64,
}

/// Why a forward ended without the peer's code.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No batch has this code here, or it expired.
    #[error("no live batch has this code")]
    UnknownBatch,
    /// The batch is still uploading (or open): only a ready batch is forwarded.
    #[error("the batch is not complete yet")]
    NotReady,
    /// The batch has more files than [`MAX_FILES`].
    #[error("the batch has more files than a forward takes ({MAX_FILES})")]
    TooManyFiles,
    /// The forward was told to stop (`Forward::stop`: the relay shuts
    /// down); running it again with `token` resumes it.
    #[error("the forward was stopped")]
    Stopped {
        /// The peer's token, if it granted the batch.
        token: Option<ResumeToken>,
    },
    /// The source batch expired or was ended during the forward.
    #[error("the source batch expired during the forward")]
    SourceExpired {
        /// The peer's token, if it granted the batch (its partial copy
        /// is swept there as any stale upload).
        token: Option<ResumeToken>,
    },
    /// The peer's address or certificate rules are unusable, or the peer
    /// could not be reached at all.
    #[error("peer {peer}: {reason}")]
    Dial {
        /// The peer's name.
        peer: String,
        /// Why, in one line.
        reason: String,
    },
    /// The peer refused: authentication (a key the peer does not share),
    /// a quota, a file it would not take.
    #[error("peer {peer} refused the forward: {error}")]
    Refused {
        /// The peer's name.
        peer: String,
        /// What the upload machine failed with.
        error: upload::Error,
    },
    /// The link to the peer was lost and reconnecting gave up; running
    /// the forward again with `token` resumes it.
    #[error("peer {peer}: {reason}")]
    LinkLost {
        /// The peer's name.
        peer: String,
        /// The driver's one-line reason.
        reason: String,
        /// The peer's token, if it granted the batch.
        token: Option<ResumeToken>,
    },
    /// The peer verified the copy but the push to its terminal failed
    /// (a push forward's last step, [`push`]).
    #[error("peer {peer}: the push failed: {error}")]
    Push {
        /// The peer's name.
        peer: String,
        /// The link's failure or the peer's refusal.
        error: pickup_device::cli::dial::PeerError,
    },
    /// This relay's store failed.
    #[error("{0}")]
    Source(SourceError),
    /// The forward's thread could not be started.
    #[error("cannot start the forward's thread: {0}")]
    Thread(std::io::Error),
}

/// Whether a peer's refusal `code` is about its state rather than the
/// request (busy, failing, stopping, limiting, or the link idle), so that
/// a later attempt may pass; the copy and the push each add the refusals
/// of their own that pass.
fn peer_state_may_pass(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Busy
            | ErrorCode::Internal
            | ErrorCode::ShuttingDown
            | ErrorCode::RateLimited
            | ErrorCode::IdleTimeout
    )
}

/// One forward to run: which batch, to which peer, from where.
#[derive(Debug)]
pub struct Forward<'a, S: ?Sized> {
    /// This relay's store.
    pub store: &'a S,
    /// The batch's pickup code here.
    pub code: Code,
    /// The peer, as `[[peers]]` lists it (key read).
    pub peer: &'a PeerRelay,
    /// The peer's token from an earlier attempt of this forward: the
    /// forward resumes from the peer's durable offsets.
    pub resume: Option<ResumeToken>,
    /// How lost links are retried within this run.
    pub policy: RetransferPolicy,
    /// Set, the run stops at its next read or connect
    /// ([`ForwardError::Stopped`]).
    pub stop: Option<&'a AtomicBool>,
}

/// How the CLI's dialler reads a peer's address.
fn dialler(peer: &PeerRelay) -> Result<RelayDial, String> {
    match &peer.addr {
        PeerAddr::Tcp(hostport) => RelayDial::new(&format!("tcp://{hostport}"), PeerTrust::Roots),
        PeerAddr::Tls { hostport, trust } => RelayDial::new(
            &format!("tls://{hostport}"),
            match trust {
                ConfigTrust::Roots => PeerTrust::Roots,
                ConfigTrust::Ca(path) => PeerTrust::Ca(path.clone()),
                ConfigTrust::Pin(digest) => PeerTrust::Pin(*digest),
            },
        ),
    }
}

/// Where a forward stands after the driver's `event`: the states of
/// [`ForwardState`] from the upload's events, and the bytes from its
/// progress (durable at the peer, so they never go back within a run).
fn advance(state: Progress, event: Event<upload::Event>) -> Progress {
    match event {
        Event::Session(upload::Event::Granted { token, .. }) => Progress {
            state: ForwardState::Transferring,
            token: Some(token),
            ..state
        },
        // A new link to a batch the peer granted: the session resumes it.
        Event::Session(upload::Event::Authenticated) if state.token.is_some() => Progress {
            state: ForwardState::Transferring,
            ..state
        },
        Event::Session(upload::Event::Progress { acked, .. }) => Progress {
            state: match state.state {
                ForwardState::Transferring if acked >= state.total => ForwardState::Verifying,
                other => other,
            },
            sent: acked,
            ..state
        },
        Event::Session(upload::Event::Complete { .. }) => Progress {
            state: ForwardState::Done,
            sent: state.total,
            ..state
        },
        Event::Link(LinkEvent::Lost(_)) => Progress {
            state: ForwardState::Connecting,
            ..state
        },
        _ => state,
    }
}

/// A connector that asks [`Liveness`] before every dial: a batch that
/// expired during an outage is not forwarded on the next link.
struct LiveConnector<'a, S: ?Sized> {
    inner: Dialled,
    live: Liveness<'a, S>,
    expired: bool,
    stop: Option<&'a AtomicBool>,
    stopped: bool,
}

impl<'a, S: Store + ?Sized> Connector for LiveConnector<'a, S> {
    type IoError = std::io::Error;
    type Link<'l>
        = link::StopLink<'a, <Dialled as Connector>::Link<'l>>
    where
        Self: 'l;
    type ConnectError = ();

    fn connect(&mut self) -> Result<Self::Link<'_>, ()> {
        if self.stop.is_some_and(|s| s.load(Ordering::Acquire)) {
            self.stopped = true;
            return Err(());
        }
        if self.live.check(true).is_err() {
            self.expired = true;
            return Err(());
        }
        let inner = self.inner.connect()?;
        Ok(link::StopLink {
            inner,
            stop: self.stop,
        })
    }

    fn given_up(&self) -> bool {
        self.stopped || self.expired
    }
}

/// The stack of the thread a forward runs on (see the module docs).
pub const STACK: usize = 16 << 20;

/// Runs `job` to its end: the peer's code once every file is verified
/// there. `progress` hears every change of state or of the bytes durable
/// at the peer, on the forward's thread. Blocks the caller (see the
/// module docs).
pub fn run<S: Store + ?Sized>(
    job: &Forward<'_, S>,
    progress: impl FnMut(&Progress) + Send,
) -> Result<Forwarded, ForwardError> {
    std::thread::scope(|scope| {
        let forward = std::thread::Builder::new()
            .name("forward".into())
            .stack_size(STACK)
            .spawn_scoped(scope, || run_here(job, progress))
            .map_err(ForwardError::Thread)?;
        forward
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// [`run`] on the calling thread.
fn run_here<S: Store + ?Sized>(
    job: &Forward<'_, S>,
    mut progress: impl FnMut(&Progress),
) -> Result<Forwarded, ForwardError> {
    let key = code_key(&job.code);
    let found = job.store.find_by_code(&key, source::unix_now());
    let batch = match found.map_err(|e| ForwardError::Source(e.into()))? {
        Lookup::Live(b) => b,
        Lookup::Expired | Lookup::Unknown => return Err(ForwardError::UnknownBatch),
    };
    if !batch.ready() {
        return Err(ForwardError::NotReady);
    }
    if batch.files.len() > MAX_FILES {
        return Err(ForwardError::TooManyFiles);
    }
    let mut source = BatchSource::new(job.store, key, &batch)
        .ok_or(ForwardError::NotReady)?
        .stop_on(job.stop);
    let metas: Vec<FileMeta<'_>> = batch.files.iter().map(FileRecord::meta).collect();
    let total = batch.total_size();
    let peer = || job.peer.name.clone();
    let dial_error = |reason| ForwardError::Dial {
        peer: peer(),
        reason,
    };

    let mut state = Progress {
        state: ForwardState::Connecting,
        sent: 0,
        total,
        token: job.resume,
    };
    progress(&state);
    let mut live = Liveness::new(job.store, key, &batch);
    live.check(true).map_err(|e| match e {
        SourceError::Expired => ForwardError::SourceExpired { token: job.resume },
        e => ForwardError::Source(e),
    })?;
    let dial = dialler(job.peer).map_err(dial_error)?;
    let mut connector = LiveConnector {
        inner: dial.dial().map_err(dial_error)?,
        live,
        expired: false,
        stop: job.stop,
        stopped: false,
    };

    let config = dial.upload_config();
    let uploader = match job.resume {
        Some(token) => Uploader::<MAX_FILES, RX, TX>::resume(config, &metas, token, job.policy),
        None => Uploader::new(config, &metas, job.policy),
    };
    // Boxed: the session holds a slot per file, and the buffers a frame each.
    let mut uploader = Box::new(uploader.map_err(|error| ForwardError::Refused {
        peer: peer(),
        error,
    })?);
    uploader.authenticate(Credential::Relay(RelayIdentity {
        name: &job.peer.name,
        key: job.peer.key,
    }));

    let clock = StdClock::new();
    let result = uploader.run(&mut connector, &clock, &mut source, |event| {
        let next = advance(state, event);
        if next != state {
            state = next;
            progress(&state);
        }
    });
    let token = uploader.session().grant().map(|g| g.token).or(job.resume);
    match result {
        // The driver finishes only after a grant; without one, the peer's
        // batch is not the one announced.
        Ok(code) => match uploader.session().grant() {
            Some(grant) => Ok(Forwarded {
                code,
                expires_at: grant.expires_at,
                token: grant.token,
                total,
            }),
            None => Err(ForwardError::Refused {
                peer: peer(),
                error: upload::Error::Mismatch,
            }),
        },
        Err(RunError::Storage(SourceError::Expired)) => Err(ForwardError::SourceExpired { token }),
        Err(RunError::Storage(SourceError::Stopped)) => Err(ForwardError::Stopped { token }),
        Err(RunError::GaveUp { .. }) if connector.stopped => Err(ForwardError::Stopped { token }),
        Err(RunError::Storage(e)) => Err(ForwardError::Source(e)),
        Err(RunError::Session(error)) => Err(ForwardError::Refused {
            peer: peer(),
            error,
        }),
        Err(RunError::GaveUp { .. }) if connector.expired => {
            Err(ForwardError::SourceExpired { token })
        }
        Err(e @ RunError::GaveUp { .. }) => Err(ForwardError::LinkLost {
            peer: peer(),
            reason: match connector.inner.last_error() {
                Some(io) => format!("{e}: {io}"),
                None => e.to_string(),
            },
            token,
        }),
    }
}
