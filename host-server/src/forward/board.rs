//! What the running forwards are doing now, in memory, and who watches
//! them: the progress between durable writes, the rate, and the doorbells
//! of the sessions that report a forward (PROTOCOL.md §12).
//!
//! ```text
//!   runner: update(id, state, sent) ──► Board: live[id], samples ──► ring watchers of id
//!   session: ForwardWatch ──► watch(id, session, bell);  bell rung ──► job: status(record) ──► ForwardStatus
//!   request stored ──► kick() ──► the forwarder claims at once instead of at its next poll
//! ```
//!
//! The store holds what survives a restart (state, `sent` as last
//! written, attempts, reason, the peer's code); the board adds what moves
//! faster than the forwarder writes it, and is lost with the process
//! without harm.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use pickup_proto::message::{ForwardState, ForwardStatus};

use crate::mailbox::Doorbell;
use crate::relay::lock;
use crate::store::forwards::ForwardRecord;

/// The rate is measured over this window.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);

/// A running forward, as its runner last said.
#[derive(Debug)]
struct Live {
    state: ForwardState,
    sent: u64,
    /// (when, sent) within [`RATE_WINDOW`], oldest first.
    samples: VecDeque<(Instant, u64)>,
    /// The attempt entered `Transferring` and its bytes have not moved
    /// since: their first move is where the peer's durable offsets put a
    /// resumed copy (it crossed earlier), so it starts the samples anew
    /// instead of counting as bytes sent in an instant.
    fresh: bool,
}

impl Live {
    fn rate(&self) -> u32 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, s0)), Some((t1, s1))) if t1 > t0 => {
                let secs = t1.duration_since(*t0).as_secs_f64();
                let rate = s1.saturating_sub(*s0) as f64 / secs;
                rate.min(f64::from(u32::MAX)) as u32
            }
            _ => 0,
        }
    }
}

/// The sessions watching one forward: (session id, its doorbell).
type Watchers = Vec<(u64, Weak<Doorbell>)>;

/// The in-memory side of the forwards of one relay instance.
#[derive(Debug, Default)]
pub struct Board {
    live: Mutex<HashMap<u64, Live>>,
    /// Per forward, the sessions watching it (by session id).
    watchers: Mutex<HashMap<u64, Watchers>>,
    /// Wakes the forwarder: a forward was queued.
    kick: Doorbell,
}

impl Board {
    /// The runner of forward `id` reports `state` and `sent` at `now`;
    /// its watchers wake.
    pub fn update(&self, id: u64, state: ForwardState, sent: u64, now: Instant) {
        {
            let mut live = lock(&self.live);
            let entry = live.entry(id).or_insert_with(|| Live {
                state,
                sent,
                samples: VecDeque::new(),
                fresh: false,
            });
            if state != entry.state {
                // The rate is of one state's bytes: a new attempt or a
                // new link starts it anew.
                entry.samples.clear();
                entry.fresh = state == ForwardState::Transferring;
            }
            entry.state = state;
            if entry.fresh && sent > entry.sent {
                entry.samples.clear();
                entry.fresh = false;
            }
            entry.sent = entry.sent.max(sent);
            entry.samples.push_back((now, entry.sent));
            while entry
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
            {
                entry.samples.pop_front();
            }
        }
        self.ring(id);
    }

    /// The attempt on forward `id` ended (its outcome is in the store);
    /// its watchers wake to read it.
    pub fn finish(&self, id: u64) {
        lock(&self.live).remove(&id);
        self.ring(id);
    }

    /// Wakes the sessions watching forward `id`.
    pub fn ring(&self, id: u64) {
        let mut watchers = lock(&self.watchers);
        if let Some(list) = watchers.get_mut(&id) {
            list.retain(|(_, bell)| match bell.upgrade() {
                Some(bell) => {
                    bell.ring();
                    true
                }
                None => false,
            });
            if list.is_empty() {
                watchers.remove(&id);
            }
        }
    }

    /// Session `session` watches forward `id`, woken by `bell`.
    pub fn watch(&self, id: u64, session: u64, bell: &Arc<Doorbell>) {
        let mut watchers = lock(&self.watchers);
        let list = watchers.entry(id).or_default();
        if !list.iter().any(|(s, _)| *s == session) {
            list.push((session, Arc::downgrade(bell)));
        }
    }

    /// Session `session` no longer watches forward `id`.
    pub fn unwatch(&self, id: u64, session: u64) {
        let mut watchers = lock(&self.watchers);
        if let Some(list) = watchers.get_mut(&id) {
            list.retain(|(s, _)| *s != session);
            if list.is_empty() {
                watchers.remove(&id);
            }
        }
    }

    /// A forward was queued: the forwarder claims now.
    pub fn kick(&self) {
        self.kick.ring();
    }

    /// Returns once [`kick`](Self::kick) was called (at once if it was
    /// while nobody waited); cancel-safe.
    pub async fn kicked(&self) {
        self.kick.wait().await;
    }

    /// What a `ForwardStatus` says about `r`: the stored record, with the
    /// state, bytes and rate of its running attempt on this instance.
    pub fn status(&self, r: &ForwardRecord) -> ForwardStatus {
        let live = lock(&self.live);
        let running = live.get(&r.id).filter(|_| r.state.is_running());
        let (state, sent, rate) = match running {
            // The copy is done, but not yet recorded with the peer's code
            // (`ForwardChange::Done`): a watcher reading `done` now would
            // find no code (relay_forward_faults.rs saw `peer_code: null`).
            Some(l) if l.state == ForwardState::Done => {
                (ForwardState::Verifying, l.sent.max(r.sent), l.rate())
            }
            Some(l) => (l.state, l.sent.max(r.sent), l.rate()),
            None => (r.state, r.sent, 0),
        };
        let failed = matches!(state, ForwardState::Retrying | ForwardState::Failed);
        // A push forward that failed at the push keeps the peer's copy:
        // its code shows, so the requester can still hand it on.
        let done = state == ForwardState::Done;
        let copied = done || state == ForwardState::Failed;
        ForwardStatus {
            id: r.id,
            state,
            sent,
            total: r.total,
            rate,
            attempts: u8::try_from(r.attempts).unwrap_or(u8::MAX),
            reason: r.last_error.filter(|_| failed),
            peer_code: r.peer_code.filter(|_| copied),
            peer_expires_at: if copied && r.peer_code.is_some() {
                r.peer_expires_at
            } else {
                0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BatchId;
    use pickup_proto::Code;

    fn record(state: ForwardState) -> ForwardRecord {
        ForwardRecord {
            id: 7,
            batch: BatchId(1),
            code: Code::from_parts(13, 5).unwrap(),
            requester: "ada".into(),
            peer: "site-b".into(),
            state,
            sent: 100,
            total: 10_000,
            attempts: 1,
            next_attempt_at: 0,
            last_error: None,
            peer_token: None,
            peer_code: None,
            peer_expires_at: 0,
            push: None,
            claim: 1,
            lease_until: 0,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_watcher_wakes_on_progress_and_the_status_shows_the_live_bytes_and_rate() {
        let board = Board::default();
        let bell = Arc::new(Doorbell::default());
        board.watch(7, 1, &bell);
        let t0 = Instant::now();
        board.update(7, ForwardState::Transferring, 1000, t0);
        assert!(bell.rung());
        board.update(
            7,
            ForwardState::Transferring,
            3000,
            t0 + Duration::from_secs(2),
        );
        let s = board.status(&record(ForwardState::Connecting));
        assert_eq!(
            (s.state, s.sent, s.rate),
            (ForwardState::Transferring, 3000, 1000)
        );
        // Bytes never go back within a forward, even if a report does.
        board.update(7, ForwardState::Connecting, 0, t0 + Duration::from_secs(3));
        assert_eq!(board.status(&record(ForwardState::Connecting)).sent, 3000);
        // A stored outcome wins over a live entry.
        board.finish(7);
        assert!(bell.rung());
        let s = board.status(&record(ForwardState::Retrying));
        assert_eq!((s.state, s.sent, s.rate), (ForwardState::Retrying, 100, 0));
        board.unwatch(7, 1);
        board.update(7, ForwardState::Transferring, 5000, t0);
        assert!(!bell.rung(), "no longer watching");
    }

    /// The runner puts the copy's `Done` on the board before it records
    /// the peer's code: a status read in between shows `Verifying`.
    #[test]
    fn a_copy_done_but_not_yet_recorded_shows_as_verifying_and_then_done_with_its_code() {
        let board = Board::default();
        board.update(7, ForwardState::Done, 5000, Instant::now());
        let s = board.status(&record(ForwardState::Transferring));
        assert_eq!((s.state, s.peer_code), (ForwardState::Verifying, None));
        let mut done = record(ForwardState::Done);
        done.peer_code = Some(Code::from_parts(13, 9).unwrap());
        let s = board.status(&done);
        assert_eq!(s.state, ForwardState::Done);
        assert!(s.peer_code.is_some());
    }

    /// A resumed attempt's first report jumps to the peer's durable
    /// offsets: those bytes crossed in an earlier attempt, not at the rate
    /// of a jump.
    #[test]
    fn the_rate_after_a_resume_counts_only_the_bytes_this_attempt_sent() {
        let board = Board::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        board.update(7, ForwardState::Connecting, 0, at(0));
        board.update(7, ForwardState::Transferring, 0, at(10));
        board.update(7, ForwardState::Transferring, 100 << 20, at(20));
        assert_eq!(board.status(&record(ForwardState::Transferring)).rate, 0);
        board.update(7, ForwardState::Transferring, (100 << 20) + 1000, at(1020));
        board.update(7, ForwardState::Transferring, (100 << 20) + 2000, at(2020));
        let s = board.status(&record(ForwardState::Transferring));
        assert_eq!((s.sent, s.rate), ((100 << 20) + 2000, 1000));
    }
}
