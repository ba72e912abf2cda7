//! The durable queue of forwards (docs/design/forwarding.md §3): one row
//! per request to copy a batch to a peer relay, which the forwarder
//! ([`crate::forward::service`]) claims, runs and settles.
//!
//! ```text
//!   create_forward ─► Queued ──claim_forwards──► Connecting ─advance(Progress)─► Transferring ─► Verifying
//!                       ▲                          │ (claim n, lease)                  │            │
//!                       │ retry_forward            ├─advance(Retry)─► Retrying ─(due)─► claimed again
//!                       └─────────── Failed ◄──────┴─advance(Fail)                      advance(Done) ─► Done
//!                                                                  with a push target: advance(Pushed) ─► Verifying
//!                                                                  (peer code kept) ─► the push ─► advance(Done) ─► Done
//! ```
//!
//! A forward may carry a [`PushTarget`] (`ForwardPush`, PROTOCOL.md
//! §12.1): once the peer verified the copy, the runner records the peer's
//! code with [`ForwardChange::Pushed`] (still `Verifying`) and asks the
//! peer to queue the push; `Done` only once the peer took it. A later
//! attempt that finds the peer's code recorded skips the copy. A requester
//! has at most one forward per push id (a retried `ForwardPush` gets the
//! one it made, [`Created::Again`]), and at most
//! [`NewForward::max_open`] forwards not yet `Done` or `Failed`
//! ([`Created::Full`]); both are checked in the transaction that stores.
//!
//! A retry by command of a `Failed` forward makes it open again, so it
//! counts against the same cap in its own transaction
//! ([`Retried::Full`]).
//!
//! Finished forwards (`Done`, `Failed`) are kept for `[forward]
//! keep_finished_secs` after they finished, then the relay's sweep
//! deletes them ([`Forwards::sweep_finished`]), a bounded chunk per
//! transaction. A final forward changes no more (only a retry by command
//! makes it open again), so its `updated_at` is when it finished: the
//! sweep reads that, and no column of its own is needed.
//!
//! Every transition is one transaction, durable when the method returns
//! (the [`Store`](super::Store)'s contract). A claim bumps the row's
//! `claim` and gives it a lease: the runner passes its claim number with
//! every later change, and a change under a claim that is no longer the
//! row's (another instance took the forward over after the lease ran out)
//! is refused and changes nothing, as upload fences do. A running row
//! whose lease ran out (its instance crashed) is due again, and the next
//! claim resumes it from the peer's token kept in the row.
//!
//! Ids are never reused (SQLite `AUTOINCREMENT`, PostgreSQL identity),
//! also after a sweep deleted the highest: a stale id names no other
//! forward, it is unknown.

use pickup_proto::error::ErrorCode;
use pickup_proto::message::{ForwardState, ResumeToken};
use pickup_proto::Code;

use super::{BatchId, Result};

/// Where a forward's copy is pushed once the peer verified it: a
/// terminal registered at the peer, and the requester's id for the push
/// (a retry repeats it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// The terminal's registered name at the peer.
    pub terminal: String,
    /// The requester's id for the push: unique per requester.
    pub push_id: u64,
}

/// A forward to store.
#[derive(Debug, Clone)]
pub struct NewForward<'a> {
    /// The source batch.
    pub batch: BatchId,
    /// Its code on this relay.
    pub code: Code,
    /// The user who asked.
    pub requester: &'a str,
    /// The peer's name (`[[peers]]`).
    pub peer: &'a str,
    /// Bytes of the batch.
    pub total: u64,
    /// Now, Unix seconds.
    pub now: u64,
    /// The push after the copy, if the request was a `ForwardPush`.
    pub push: Option<PushTarget>,
    /// The requester may have at most this many forwards that are not
    /// `Done` or `Failed` (`[forward] max_open_per_user`).
    pub max_open: u32,
}

/// What [`Forwards::create_forward`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Stored a new forward.
    New(ForwardRecord),
    /// The requester already has a forward with this push id: that one,
    /// unchanged.
    Again(ForwardRecord),
    /// The requester has `max_open` open forwards already: nothing stored.
    Full,
}

impl Created {
    /// The forward made or found, if any.
    pub fn record(&self) -> Option<&ForwardRecord> {
        match self {
            Created::New(r) | Created::Again(r) => Some(r),
            Created::Full => None,
        }
    }
}

/// What [`Forwards::retry_forward`] did to a forward of the requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// The forward as it stands after the retry: queued again if its
    /// state allowed one ([`apply_retry`]), else unchanged.
    Record(ForwardRecord),
    /// The forward is `Failed` and its requester has `max_open` open
    /// forwards already: the forward, unchanged.
    Full(ForwardRecord),
}

/// Forwards one transaction of [`Forwards::sweep_finished`] deletes at
/// most, so a sweep holds the queue (the memory store's lock, SQLite's
/// writer, PostgreSQL's rows) only briefly at a time.
pub const SWEEP_CHUNK: usize = 256;

/// One forward, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRecord {
    /// The relay's id, never reused.
    pub id: u64,
    /// The source batch.
    pub batch: BatchId,
    /// Its code on this relay.
    pub code: Code,
    /// The user who asked: the only one who sees the forward.
    pub requester: String,
    /// The peer's name.
    pub peer: String,
    /// Where it stands.
    pub state: ForwardState,
    /// Bytes durable at the peer, as last recorded.
    pub sent: u64,
    /// Bytes of the batch.
    pub total: u64,
    /// Attempts made since the request or the last retry by command.
    pub attempts: u32,
    /// A `Queued` or `Retrying` forward is not claimed before this time
    /// (Unix seconds).
    pub next_attempt_at: u64,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<ErrorCode>,
    /// The peer's resume token, once it granted the batch (a capability
    /// for the partial copy: kept as the database is, private).
    pub peer_token: Option<ResumeToken>,
    /// The peer's code for the copy, once the peer verified it (`Done`,
    /// or a push forward still pushing or failed at the push).
    pub peer_code: Option<Code>,
    /// When the peer's copy expires (Unix seconds; 0 until verified).
    pub peer_expires_at: u64,
    /// The push after the copy, if any.
    pub push: Option<PushTarget>,
    /// The number of the latest claim (0: never claimed).
    pub claim: u64,
    /// A running forward whose lease passed is due again (Unix seconds).
    pub lease_until: u64,
    /// When the forward was requested.
    pub created_at: u64,
    /// When it last changed; for a `Done` or `Failed` forward, when it
    /// finished (a final forward does not change).
    pub updated_at: u64,
}

impl ForwardRecord {
    /// Whether it counts against its requester's open forwards.
    pub fn is_open(&self) -> bool {
        !self.state.is_final()
    }

    /// The peer's verified copy, if recorded and not expired at `now`:
    /// a push forward's next attempt only pushes it.
    pub fn verified_copy(&self, now: u64) -> Option<Code> {
        self.peer_code.filter(|_| self.peer_expires_at > now)
    }

    /// Whether a retry by command would make it open again: it is
    /// `Failed`, so it counts against the cap once queued (a `Retrying`
    /// forward counts already).
    pub fn retry_reopens(&self) -> bool {
        self.state == ForwardState::Failed
    }

    /// Whether the sweep deletes it: finished before `finished_before`.
    pub fn is_swept(&self, finished_before: u64) -> bool {
        self.state.is_final() && self.updated_at < finished_before
    }

    /// Whether `claim_forwards` at `now` would take it.
    pub fn is_due(&self, now: u64) -> bool {
        match self.state {
            ForwardState::Queued | ForwardState::Retrying => self.next_attempt_at <= now,
            s if s.is_running() => self.lease_until <= now,
            _ => false,
        }
    }
}

/// A change a runner makes to the forward it claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardChange {
    /// The attempt goes on: a running `state`, the bytes durable at the
    /// peer, the peer's token once granted; the lease moves to
    /// `lease_until`.
    Progress {
        /// A running state (`Connecting`, `Transferring`, `Verifying`).
        state: ForwardState,
        /// Bytes durable at the peer.
        sent: u64,
        /// The peer's token, if granted.
        peer_token: Option<ResumeToken>,
        /// The new end of the lease.
        lease_until: u64,
    },
    /// The peer verified every file of a forward with a push target:
    /// the copy is recorded, the forward stays `Verifying` (lease to
    /// `lease_until`) until the peer took the push.
    Pushed {
        /// The peer's code for the copy.
        peer_code: Code,
        /// When the copy expires there.
        peer_expires_at: u64,
        /// The peer's token of the copy.
        peer_token: ResumeToken,
        /// The new end of the lease.
        lease_until: u64,
    },
    /// The peer verified every file (and, for a push forward, took the
    /// push).
    Done {
        /// The peer's code for the copy.
        peer_code: Code,
        /// When the copy expires there.
        peer_expires_at: u64,
        /// The peer's token of the copy.
        peer_token: ResumeToken,
    },
    /// The attempt failed; the next follows at `next_attempt_at`.
    Retry {
        /// Why.
        reason: ErrorCode,
        /// The peer's token, if it granted the batch.
        peer_token: Option<ResumeToken>,
        /// When the next attempt may start.
        next_attempt_at: u64,
    },
    /// The attempt failed because the peer no longer knows its token
    /// (it swept the partial copy): the next attempt, at
    /// `next_attempt_at`, starts a new copy from zero.
    Restart {
        /// Why.
        reason: ErrorCode,
        /// When the next attempt may start.
        next_attempt_at: u64,
    },
    /// The forward gives up.
    Fail {
        /// Why.
        reason: ErrorCode,
        /// The peer's token, if it granted the batch.
        peer_token: Option<ResumeToken>,
    },
}

impl ForwardChange {
    /// The record after the change, at `now` (the one place every store's
    /// transition is written, so the stores cannot disagree on it).
    pub fn apply(&self, r: &mut ForwardRecord, now: u64) {
        match *self {
            ForwardChange::Progress {
                state,
                sent,
                peer_token,
                lease_until,
            } => {
                r.state = state;
                r.sent = sent;
                r.peer_token = peer_token.or(r.peer_token);
                r.lease_until = lease_until;
            }
            ForwardChange::Pushed {
                peer_code,
                peer_expires_at,
                peer_token,
                lease_until,
            } => {
                r.state = ForwardState::Verifying;
                r.sent = r.total;
                r.peer_code = Some(peer_code);
                r.peer_expires_at = peer_expires_at;
                r.peer_token = Some(peer_token);
                r.lease_until = lease_until;
            }
            ForwardChange::Done {
                peer_code,
                peer_expires_at,
                peer_token,
            } => {
                r.state = ForwardState::Done;
                r.sent = r.total;
                r.peer_code = Some(peer_code);
                r.peer_expires_at = peer_expires_at;
                r.peer_token = Some(peer_token);
                r.last_error = None;
                r.lease_until = 0;
            }
            ForwardChange::Retry {
                reason,
                peer_token,
                next_attempt_at,
            } => {
                r.state = ForwardState::Retrying;
                r.last_error = Some(reason);
                r.peer_token = peer_token.or(r.peer_token);
                r.next_attempt_at = next_attempt_at;
                r.lease_until = 0;
            }
            ForwardChange::Restart {
                reason,
                next_attempt_at,
            } => {
                r.state = ForwardState::Retrying;
                r.last_error = Some(reason);
                r.peer_token = None;
                r.peer_code = None;
                r.peer_expires_at = 0;
                r.sent = 0;
                r.next_attempt_at = next_attempt_at;
                r.lease_until = 0;
            }
            ForwardChange::Fail { reason, peer_token } => {
                r.state = ForwardState::Failed;
                r.last_error = Some(reason);
                r.peer_token = peer_token.or(r.peer_token);
                r.lease_until = 0;
            }
        }
        r.updated_at = now;
    }
}

/// The record after a claim at `now` with a lease to `lease_until`: a new
/// attempt, `Connecting`.
pub fn apply_claim(r: &mut ForwardRecord, now: u64, lease_until: u64) {
    r.state = ForwardState::Connecting;
    r.claim += 1;
    r.attempts = r.attempts.saturating_add(1);
    r.lease_until = lease_until;
    r.updated_at = now;
}

/// The record after a retry by command at `now`, if its state allows one
/// (`Failed`, `Retrying`): queued at once, attempts from zero.
pub fn apply_retry(r: &mut ForwardRecord, now: u64) -> bool {
    if !matches!(r.state, ForwardState::Failed | ForwardState::Retrying) {
        return false;
    }
    r.state = ForwardState::Queued;
    r.attempts = 0;
    r.next_attempt_at = now;
    r.last_error = None;
    r.updated_at = now;
    true
}

/// The durable queue of forwards; every store implements it under the
/// [`Store`](super::Store)'s durability contract.
pub trait Forwards {
    /// Stores a new forward, `Queued` and due at once; or, in the same
    /// transaction, finds the requester's forward with the same push id
    /// ([`Created::Again`]) or finds the requester at
    /// [`NewForward::max_open`] ([`Created::Full`]).
    fn create_forward(&self, new: &NewForward<'_>) -> Result<Created>;
    /// The forward `id`, if there is one.
    fn forward(&self, id: u64) -> Result<Option<ForwardRecord>>;
    /// The forward `requester` made with push id `push_id`, if any: a
    /// retried `ForwardPush` is answered with it before its batch is
    /// looked up (the batch may have ended since).
    fn forward_by_push(&self, requester: &str, push_id: u64) -> Result<Option<ForwardRecord>>;
    /// Claims at most `limit` forwards due at `now`
    /// ([`ForwardRecord::is_due`]), oldest due first: each becomes
    /// `Connecting` under a new claim with a lease to `lease_until`, one
    /// more attempt. A forward is claimed by one caller only, also across
    /// relay instances sharing a database.
    fn claim_forwards(
        &self,
        now: u64,
        lease_until: u64,
        limit: usize,
    ) -> Result<Vec<ForwardRecord>>;
    /// Applies `change` to forward `id` if `claim` is still its claim and
    /// it is running; the record after it, or `None` (and nothing
    /// changed) if another claim took it over or it is not running.
    fn advance_forward(
        &self,
        id: u64,
        claim: u64,
        change: &ForwardChange,
        now: u64,
    ) -> Result<Option<ForwardRecord>>;
    /// Queues forward `id` of `requester` again ([`apply_retry`]); the
    /// record as it stands after (changed or not), `None` if there is no
    /// such forward of `requester`. A `Failed` forward is queued only if
    /// `requester` has fewer than `max_open` open forwards
    /// ([`Retried::Full`] otherwise), checked in the same transaction as
    /// [`create_forward`](Self::create_forward) checks it.
    fn retry_forward(
        &self,
        id: u64,
        requester: &str,
        now: u64,
        max_open: u32,
    ) -> Result<Option<Retried>>;
    /// Deletes, in one transaction, at most `limit` forwards that are
    /// `Done` or `Failed` and finished before `finished_before`
    /// ([`ForwardRecord::is_swept`]); how many it deleted. Open forwards
    /// are never deleted. Instances sweeping at once delete disjoint rows.
    fn sweep_forwards(&self, finished_before: u64, limit: usize) -> Result<u64>;
    /// Deletes every forward finished before `finished_before`, in
    /// transactions of at most [`SWEEP_CHUNK`]; how many it deleted.
    fn sweep_finished(&self, finished_before: u64) -> Result<u64> {
        let mut swept = 0;
        loop {
            let n = self.sweep_forwards(finished_before, SWEEP_CHUNK)?;
            swept += n;
            // A short chunk took the last: forwards finishing now finish
            // after `finished_before`, so the loop ends.
            if n < SWEEP_CHUNK as u64 {
                return Ok(swept);
            }
        }
    }
}
