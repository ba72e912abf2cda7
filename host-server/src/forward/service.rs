//! The forwarder: the relay's task that claims due forwards from the
//! store's queue ([`crate::store::forwards`]), runs each with [`run`] on
//! a blocking thread, and settles it (docs/design/forwarding.md §3).
//!
//! ```text
//!   loop (every POLL, or at once when a forward is queued: Board::kick)
//!     free slots (forward.max_active − running) ──► claim_forwards(now, now + lease, free)
//!       └► per claimed forward, on the blocking pool:
//!            run(Forward{code, peer, resume: stored peer_token}) ── progress ──► Board::update (watchers wake)
//!              │  state or token changed, or a second passed ──► advance_forward(Progress{sent, token, lease})
//!              ├ Ok ─────────────────────────────► advance_forward(Done{peer code})
//!              ├ Ok, a push forward ─────────────► advance_forward(Pushed{peer code}) (still Verifying)
//!              │    └► push::push(PeerPush) ── Delivery ──► advance_forward(Done{peer code})
//!              │        (a later attempt that finds the peer code recorded and live starts here)
//!              └ Err: may pass, attempts left ───► advance_forward(Retry{reason, now + 2^attempts s (capped)})
//!                     the peer lost its copy ───► advance_forward(Restart: no token, from zero)
//!                     will not pass, or the last ► advance_forward(Fail{reason})
//!     every lease/4: renew the lease of each running forward
//!   shutdown: stop every run (at its next read or connect) ──► Retry{ShuttingDown, due now}
//! ```
//!
//! `sent` is written from the runner's progress, which counts only bytes
//! durable at the peer; a resumed run starts from the peer's durable
//! offsets whatever was written, so writing it at most once a second
//! loses nothing but a second of the status after a crash. A write that
//! finds the claim gone (the lease ran out and another instance took the
//! forward) stops the run: two instances never drive one forward on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pickup_proto::error::ErrorCode;
use pickup_proto::message::{ForwardState, ResumeToken};
use pickup_proto::upload;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::push::{self, Push};
use super::source::unix_now;
use super::{run, Forward, ForwardError, Forwarded, Progress, RetransferPolicy};
use crate::config::peers::PeerRelay;
use crate::config::ForwardSettings;
use crate::relay::{lock, Relay};
use crate::store::forwards::{ForwardChange, ForwardRecord};
use crate::store::StoreError;

/// How often the forwarder looks for due forwards without being kicked
/// (a retry's time came, another instance's lease ran out).
pub const POLL: Duration = Duration::from_secs(1);

/// The progress of a run is written at most this often (and at every
/// change of state or token).
pub const WRITE_EVERY: Duration = Duration::from_secs(1);

/// How a run retries lost links before the attempt fails: briefly, since
/// the forwarder's own backoff follows.
pub fn link_policy() -> RetransferPolicy {
    RetransferPolicy {
        enabled: true,
        max_attempts: Some(3),
        initial_backoff: pickup_proto::Duration::from_millis(250),
        max_backoff: pickup_proto::Duration::from_secs(2),
        give_up_after: Some(pickup_proto::Duration::from_secs(15)),
    }
}

/// Why an attempt failed, and whether another attempt may help.
pub fn reason(e: &ForwardError) -> (ErrorCode, bool) {
    match e {
        ForwardError::UnknownBatch | ForwardError::SourceExpired { .. } => {
            (ErrorCode::Expired, false)
        }
        ForwardError::NotReady => (ErrorCode::NotReady, false),
        ForwardError::TooManyFiles => (ErrorCode::TooManyFiles, false),
        ForwardError::Stopped { .. } => (ErrorCode::ShuttingDown, true),
        ForwardError::Dial { .. } | ForwardError::LinkLost { .. } => {
            (ErrorCode::PeerUnreachable, true)
        }
        ForwardError::Source(_) | ForwardError::Thread(_) => (ErrorCode::Internal, true),
        ForwardError::Push { error, .. } => super::push::reason(error),
        ForwardError::Refused { error, .. } => match *error {
            upload::Error::Auth(_) => (ErrorCode::AuthFailed, false),
            upload::Error::Relay(code) => (
                code,
                super::peer_state_may_pass(code)
                    || matches!(
                        code,
                        ErrorCode::TooManyIncomplete | ErrorCode::PeerQuota | ErrorCode::BadFrame
                    ),
            ),
            upload::Error::Rejected { reason, .. } => (reason, false),
            upload::Error::TooManyFiles => (ErrorCode::TooManyFiles, false),
            upload::Error::InvalidName { .. } => (ErrorCode::InvalidName, false),
            upload::Error::Mismatch => (ErrorCode::UnexpectedMessage, false),
            // A newer machine's error: not retried blindly.
            _ => (ErrorCode::Internal, false),
        },
    }
}

/// The peer's token an error carries, if the peer granted the batch.
fn token_of(e: &ForwardError) -> Option<ResumeToken> {
    match e {
        ForwardError::SourceExpired { token }
        | ForwardError::Stopped { token }
        | ForwardError::LinkLost { token, .. } => *token,
        _ => None,
    }
}

/// What a failed attempt (the `attempts`-th) does to its forward at `now`.
pub fn settle(e: &ForwardError, attempts: u32, s: &ForwardSettings, now: u64) -> ForwardChange {
    let (reason, may_pass) = reason(e);
    let peer_token = token_of(e);
    // A stop is the relay's, not the forward's: it is due again at once.
    if matches!(e, ForwardError::Stopped { .. }) {
        return ForwardChange::Retry {
            reason,
            peer_token,
            next_attempt_at: now,
        };
    }
    // The peer swept the partial copy: a new one, from zero.
    if reason == ErrorCode::UnknownToken && attempts < s.max_attempts {
        return ForwardChange::Restart {
            reason,
            next_attempt_at: now.saturating_add(s.backoff_secs(attempts)),
        };
    }
    if may_pass && attempts < s.max_attempts {
        ForwardChange::Retry {
            reason,
            peer_token,
            next_attempt_at: now.saturating_add(s.backoff_secs(attempts)),
        }
    } else {
        ForwardChange::Fail { reason, peer_token }
    }
}

/// One running attempt, shared by its thread and the forwarder's loop.
#[derive(Debug)]
struct Attempt {
    record: ForwardRecord,
    stop: AtomicBool,
    /// What was last written (state, sent, token), and the store's
    /// writes of it: the runner and the lease renewal take turns.
    written: Mutex<(ForwardState, u64, Option<ResumeToken>)>,
}

impl Attempt {
    /// Writes the progress with a lease to `lease_until`; a claim that is
    /// gone stops the run.
    fn write(&self, relay: &Relay, w: (ForwardState, u64, Option<ResumeToken>), lease_until: u64) {
        let change = ForwardChange::Progress {
            state: w.0,
            sent: w.1,
            peer_token: w.2,
            lease_until,
        };
        match self.advance(relay, &change) {
            Ok(true) => {}
            Ok(false) => self.stop.store(true, Ordering::Release),
            Err(e) => tracing::error!(
                forward = self.record.id,
                "forward progress not written: {e}"
            ),
        }
    }

    /// Applies `change` under this attempt's claim; `Ok(false)` (and
    /// nothing changed) if another claim took the forward over.
    fn advance(&self, relay: &Relay, change: &ForwardChange) -> Result<bool, StoreError> {
        let r = &self.record;
        let still_ours = relay
            .store
            .advance_forward(r.id, r.claim, change, unix_now())?
            .is_some();
        if !still_ours {
            tracing::warn!(
                forward = r.id,
                "forward taken over by another claim; stopping"
            );
        }
        Ok(still_ours)
    }
}

/// What the progress `p` of a run of the claimed forward `r` writes:
/// (state, sent, token). A resumed run reports 0 bytes until the peer's
/// offsets arrive (its first `Transferring` comes before them), but the
/// bytes the peer holds under the same token never go back: written as
/// they came, a status read from the store (after a crash of this relay,
/// or on another instance) showed 0 for a second of every resumed attempt.
fn to_write(r: &ForwardRecord, p: &Progress) -> (ForwardState, u64, Option<ResumeToken>) {
    let sent = if p.token.is_some() && p.token == r.peer_token {
        p.sent.max(r.sent)
    } else {
        p.sent
    };
    (p.state, sent, p.token)
}

/// The copy of a claimed forward: run to the peer's verification, or,
/// for a push forward whose copy an earlier attempt recorded and which
/// has not expired there, the recorded one without running.
fn copy(relay: &Relay, a: &Attempt, peer: &PeerRelay) -> Result<Forwarded, ForwardError> {
    let r = &a.record;
    let s = &relay.settings.forward;
    let board = relay.forward_board();
    let now = unix_now;
    if let (Some(_), Some(code), Some(token)) = (&r.push, r.verified_copy(now()), r.peer_token) {
        board.update(r.id, ForwardState::Verifying, r.total, Instant::now());
        return Ok(Forwarded {
            code,
            expires_at: r.peer_expires_at,
            token,
            total: r.total,
        });
    }
    let job = Forward {
        store: &*relay.store,
        code: r.code,
        peer,
        resume: r.peer_token,
        policy: link_policy(),
        stop: Some(&a.stop),
    };
    let mut last_write = Instant::now();
    run(&job, |p: &Progress| {
        // A push forward is done only once the peer took the push.
        let shown = match p.state {
            ForwardState::Done if r.push.is_some() => ForwardState::Verifying,
            state => state,
        };
        board.update(r.id, shown, p.sent, Instant::now());
        if p.state == ForwardState::Done {
            return;
        }
        let mut written = lock(&a.written);
        let next = to_write(r, p);
        let due = next.0 != written.0 || next.2 != written.2;
        if next != *written && (due || last_write.elapsed() >= WRITE_EVERY) {
            *written = next;
            a.write(relay, next, now() + s.lease_secs);
            last_write = Instant::now();
        }
    })
}

/// The push step of a push forward whose copy `f` the peer verified:
/// records the copy (`Pushed`, unless recorded already), then asks the
/// peer to queue the push. `Err(Stopped)` if the claim is gone.
fn push_copy(
    relay: &Relay,
    a: &Attempt,
    peer: &PeerRelay,
    f: &Forwarded,
) -> Result<(), ForwardError> {
    let r = &a.record;
    let Some(target) = &r.push else {
        return Ok(());
    };
    if r.peer_code != Some(f.code) {
        let lease_until = unix_now() + relay.settings.forward.lease_secs;
        let change = ForwardChange::Pushed {
            peer_code: f.code,
            peer_expires_at: f.expires_at,
            peer_token: f.token,
            lease_until,
        };
        // Under the lock: a renewal after this writes the copy's bytes.
        let mut written = lock(&a.written);
        *written = (ForwardState::Verifying, r.total, Some(f.token));
        match a.advance(relay, &change) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ForwardError::Stopped {
                    token: Some(f.token),
                })
            }
            Err(e) => return Err(ForwardError::Source(e.into())),
        }
    }
    // The relay stops: the copy is recorded, the push is the next attempt's.
    if a.stop.load(Ordering::Acquire) {
        return Err(ForwardError::Stopped {
            token: Some(f.token),
        });
    }
    let state = push::push(&Push {
        peer,
        push_id: target.push_id,
        code: f.code,
        terminal: &target.terminal,
        sender: &r.requester,
    })?;
    tracing::info!(forward = r.id, peer = %peer.name, terminal = %target.terminal, ?state, "push queued at the peer");
    Ok(())
}

/// Runs one claimed forward to the end of this attempt and settles it.
fn attempt(relay: &Relay, a: &Attempt) {
    let r = &a.record;
    let s = &relay.settings.forward;
    let board = relay.forward_board();
    let now = unix_now;
    board.update(r.id, ForwardState::Connecting, r.sent, Instant::now());
    let outcome = match relay.settings.peers.get(&r.peer) {
        None => Err(ForwardError::Dial {
            peer: r.peer.clone(),
            reason: "no such peer in [[peers]]".into(),
        }),
        Some(peer) => copy(relay, a, peer).and_then(|f| push_copy(relay, a, peer, &f).map(|()| f)),
    };
    let change = match &outcome {
        Ok(f) => ForwardChange::Done {
            peer_code: f.code,
            peer_expires_at: f.expires_at,
            peer_token: f.token,
        },
        Err(ForwardError::Dial { reason, .. }) if relay.settings.peers.get(&r.peer).is_none() => {
            tracing::warn!(forward = r.id, peer = %r.peer, "{reason}");
            ForwardChange::Fail {
                reason: ErrorCode::UnknownPeer,
                peer_token: None,
            }
        }
        Err(e) => settle(e, r.attempts, s, now()),
    };
    match &outcome {
        Ok(f) => {
            tracing::info!(forward = r.id, peer = %r.peer, code = %f.code, bytes = f.total, "forward done")
        }
        Err(e) => {
            tracing::warn!(forward = r.id, peer = %r.peer, attempt = r.attempts, "forward attempt failed: {e}")
        }
    }
    // Under the lock: no renewal writes after the outcome.
    let _written = lock(&a.written);
    if let Err(e) = relay.store.advance_forward(r.id, r.claim, &change, now()) {
        tracing::error!(forward = r.id, "forward outcome not written: {e}");
    }
    board.finish(r.id);
}

/// Claims what is due into the free slots; the claimed forwards.
async fn claim(relay: &Arc<Relay>, free: usize) -> Vec<ForwardRecord> {
    let relay = relay.clone();
    let lease = relay.settings.forward.lease_secs;
    let claimed = tokio::task::spawn_blocking(move || {
        let now = unix_now();
        relay.store.claim_forwards(now, now + lease, free)
    })
    .await;
    match claimed {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => {
            tracing::error!("claiming forwards failed: {e}");
            Vec::new()
        }
        Err(e) => {
            tracing::error!("claiming forwards panicked: {e}");
            Vec::new()
        }
    }
}

/// The forwarder of `relay`, until `shutdown` turns true: then every run
/// stops at its next read or connect and is settled due again, and this
/// returns once all are.
pub async fn serve(relay: Arc<Relay>, mut shutdown: watch::Receiver<bool>) {
    let s = &relay.settings.forward;
    let renew_every = Duration::from_secs((s.lease_secs / 4).max(1));
    let mut running: HashMap<u64, Arc<Attempt>> = HashMap::new();
    let mut threads: JoinSet<u64> = JoinSet::new();
    let mut renew = tokio::time::interval(renew_every);
    let mut stopping = *shutdown.borrow();
    loop {
        let free = (s.max_active as usize).saturating_sub(running.len());
        if !stopping && free > 0 {
            for record in claim(&relay, free).await {
                let a = Arc::new(Attempt {
                    written: Mutex::new((record.state, record.sent, record.peer_token)),
                    record,
                    stop: AtomicBool::new(false),
                });
                running.insert(a.record.id, a.clone());
                let relay = relay.clone();
                threads.spawn_blocking(move || {
                    attempt(&relay, &a);
                    a.record.id
                });
            }
        }
        if stopping && running.is_empty() {
            return;
        }
        tokio::select! {
            _ = relay.forward_board().kicked(), if !stopping => {}
            _ = tokio::time::sleep(POLL), if !stopping => {}
            done = threads.join_next(), if !threads.is_empty() => match done {
                Some(Ok(id)) => { running.remove(&id); }
                Some(Err(e)) => {
                    tracing::error!("a forward's thread failed: {e}");
                    // Which one is unknown: drop those whose thread is gone.
                    running.retain(|_, a| Arc::strong_count(a) > 1);
                }
                None => {}
            },
            _ = renew.tick() => {
                let list: Vec<Arc<Attempt>> = running.values().cloned().collect();
                let relay = relay.clone();
                let lease = s.lease_secs;
                let _ = tokio::task::spawn_blocking(move || {
                    for a in list {
                        let written = lock(&a.written);
                        a.write(&relay, *written, unix_now() + lease);
                    }
                })
                .await;
            }
            changed = shutdown.changed(), if !stopping => {
                if changed.is_err() || *shutdown.borrow() {
                    stopping = true;
                    for a in running.values() {
                        a.stop.store(true, Ordering::Release);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
