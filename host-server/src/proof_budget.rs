//! What proofs of ownership may cost the relay.
//!
//! Every challenge carries a fresh nonce, and the proof it expects can only
//! be computed by hashing the held content after that nonce: a pass over
//! the whole blob, paid by the relay whether or not a proof ever comes. A
//! terminal that resumes again and again, or answers with wrong proofs,
//! would otherwise buy gigabytes of hashing with a few hundred bytes. So
//! the work is charged before a challenge goes out:
//!
//! - to the **file**: at most [`ProofSettings::challenges_per_file`]
//!   challenges per file of a batch (that is, per resume token) within
//!   [`ProofSettings::file_window_secs`]. A resume draws a fresh nonce (an
//!   old one is never accepted again) but does not draw it for free;
//! - to the **peer**: a bucket of bytes ([`ProofSettings::peer_burst_bytes`],
//!   refilled at [`ProofSettings::peer_bytes_per_sec`]) that each challenge
//!   takes the held content's size from.
//!
//! A challenge the budget refuses becomes a plain `Upload` plan: the
//! terminal sends the bytes, which costs it what it costs the relay. A
//! wrong proof also counts as a failed lookup ([`crate::rate_limit`]).
//!
//! Time is an argument ([`Instant`]), so the budget is deterministic.

use std::collections::HashMap;

use pickup_proto::Instant;

use crate::rate_limit::Peer;
use crate::store::BatchId;

/// Limits on the hashing that challenges cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProofSettings {
    /// Challenges one file of a batch may get within `file_window_secs`.
    pub challenges_per_file: u32,
    /// The window `challenges_per_file` counts in, in seconds.
    pub file_window_secs: u64,
    /// Bytes of held content one peer may have hashed for its challenges
    /// at once.
    pub peer_burst_bytes: u64,
    /// Bytes per second that allowance grows back by.
    pub peer_bytes_per_sec: u64,
}

impl Default for ProofSettings {
    fn default() -> Self {
        ProofSettings {
            challenges_per_file: 3,
            file_window_secs: 3_600,
            peer_burst_bytes: 4 << 30,
            peer_bytes_per_sec: 16 << 20,
        }
    }
}

/// Peers and files remembered at most. Past this, new peers share one
/// bucket, and files not remembered get no challenge (a plain upload).
const MAX_ENTRIES: usize = 65_536;

/// A peer's allowance of bytes to hash.
#[derive(Debug, Clone, Copy)]
struct Bytes {
    left: u64,
    at: Instant,
}

impl Bytes {
    fn refill(&mut self, s: &ProofSettings, now: Instant) {
        let ms = now.saturating_since(self.at).as_millis();
        let grown = s.peer_bytes_per_sec.saturating_mul(ms) / 1000;
        self.left = self.left.saturating_add(grown).min(s.peer_burst_bytes);
        if now > self.at {
            self.at = now;
        }
    }

    fn is_full(&self, s: &ProofSettings) -> bool {
        self.left >= s.peer_burst_bytes
    }
}

/// Challenges one file got in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// The challenge allowances of peers and files.
#[derive(Debug)]
pub struct ProofBudget {
    settings: ProofSettings,
    peers: HashMap<Peer, Bytes>,
    overflow: Bytes,
    files: HashMap<(BatchId, u16), Window>,
}

impl ProofBudget {
    /// Full allowances at `now`.
    pub fn new(settings: ProofSettings, now: Instant) -> Self {
        ProofBudget {
            settings,
            peers: HashMap::new(),
            overflow: Bytes {
                left: settings.peer_burst_bytes,
                at: now,
            },
            files: HashMap::new(),
        }
    }

    fn window_ms(&self) -> u64 {
        self.settings.file_window_secs.saturating_mul(1000)
    }

    /// Takes one challenge of file `index` of `batch`, whose held content
    /// is `size` bytes, from `peer`'s allowance: `false` (and nothing
    /// taken) if either the file or the peer has none left.
    pub fn charge(
        &mut self,
        peer: &Peer,
        batch: BatchId,
        index: u16,
        size: u64,
        now: Instant,
    ) -> bool {
        let s = self.settings;
        let window_ms = self.window_ms();
        if self.files.len() >= MAX_ENTRIES || self.peers.len() >= MAX_ENTRIES {
            self.prune(now);
        }
        let file = match self.files.get(&(batch, index)) {
            Some(w) if now.saturating_since(w.start).as_millis() < window_ms => *w,
            _ if self.files.len() >= MAX_ENTRIES => return false,
            _ => Window {
                start: now,
                count: 0,
            },
        };
        if file.count >= s.challenges_per_file {
            return false;
        }
        let full = Bytes {
            left: s.peer_burst_bytes,
            at: now,
        };
        let bytes = if self.peers.len() < MAX_ENTRIES || self.peers.contains_key(peer) {
            self.peers.entry(peer.clone()).or_insert(full)
        } else {
            &mut self.overflow
        };
        bytes.refill(&s, now);
        if bytes.left < size {
            return false;
        }
        bytes.left -= size;
        self.files.insert(
            (batch, index),
            Window {
                start: file.start,
                count: file.count + 1,
            },
        );
        true
    }

    /// Forgets peers whose allowance is full again and files whose window
    /// has passed (they would start afresh anyway).
    pub fn prune(&mut self, now: Instant) {
        let s = self.settings;
        let window_ms = self.window_ms();
        self.peers.retain(|_, b| {
            b.refill(&s, now);
            !b.is_full(&s)
        });
        self.files
            .retain(|_, w| now.saturating_since(w.start).as_millis() < window_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn settings() -> ProofSettings {
        ProofSettings {
            challenges_per_file: 2,
            file_window_secs: 60,
            peer_burst_bytes: 100 * MIB,
            peer_bytes_per_sec: 10 * MIB,
        }
    }

    #[test]
    fn a_file_gets_a_few_challenges_per_window() {
        let mut b = ProofBudget::new(settings(), at(0));
        let p = Peer::Sim(1);
        assert!(b.charge(&p, BatchId(1), 0, MIB, at(0)));
        assert!(b.charge(&p, BatchId(1), 0, MIB, at(1_000)));
        assert!(!b.charge(&p, BatchId(1), 0, MIB, at(2_000)));
        // Another file, another batch: their own counts.
        assert!(b.charge(&p, BatchId(1), 1, MIB, at(2_000)));
        assert!(b.charge(&p, BatchId(2), 0, MIB, at(2_000)));
        // From another peer too: the count is the file's.
        assert!(!b.charge(&Peer::Sim(2), BatchId(1), 0, MIB, at(3_000)));
        // A new window.
        assert!(b.charge(&p, BatchId(1), 0, MIB, at(60_000)));
    }

    #[test]
    fn a_peer_pays_the_bytes_it_makes_the_relay_hash() {
        let mut b = ProofBudget::new(settings(), at(0));
        let p = Peer::Sim(1);
        for batch in 0..4 {
            assert!(b.charge(&p, BatchId(batch), 0, 25 * MIB, at(0)));
        }
        assert!(!b.charge(&p, BatchId(9), 0, MIB, at(0)));
        // Others are not held back by it.
        assert!(b.charge(&Peer::Sim(2), BatchId(9), 0, 25 * MIB, at(0)));
        // Content larger than the burst is never challenged.
        assert!(!b.charge(&Peer::Sim(3), BatchId(10), 0, 101 * MIB, at(0)));
        // 10 MiB a second grows back.
        assert!(!b.charge(&p, BatchId(9), 0, 25 * MIB, at(2_000)));
        assert!(b.charge(&p, BatchId(9), 0, 25 * MIB, at(2_500)));
        // The file's two challenges are spent (one by peer 2), whatever
        // bytes are left.
        assert!(!b.charge(&p, BatchId(9), 0, 0, at(2_500)));
    }

    #[test]
    fn pruning_forgets_only_what_would_start_afresh() {
        let mut b = ProofBudget::new(settings(), at(0));
        let p = Peer::Sim(1);
        assert!(b.charge(&p, BatchId(1), 0, 50 * MIB, at(0)));
        b.prune(at(1_000));
        assert_eq!((b.peers.len(), b.files.len()), (1, 1));
        b.prune(at(60_000));
        assert_eq!((b.peers.len(), b.files.len()), (0, 0));
    }
}
