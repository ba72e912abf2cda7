//! Where secrets come from.
//!
//! Codes, resume tokens and challenge nonces are drawn through [`Random`], so
//! the relay uses the OS CSPRNG ([`OsRandom`]) while the simulator and the
//! fuzzers inject a seeded generator (`SeededRandom`, feature
//! `test-support`) and replay runs exactly.

/// A source of random bytes.
pub trait Random: Send {
    /// Fills `buf` with random bytes; `false` if the source failed (the
    /// request that needed them then fails with `Internal`).
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

/// The operating system's CSPRNG (`getrandom`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        getrandom::fill(buf).is_ok()
    }
}

/// A deterministic generator (SplitMix64) for simulation and tests. Not for
/// production: its output is predictable from the seed, which is why it
/// exists only with the `test-support` feature.
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug, Clone)]
pub struct SeededRandom(u64);

#[cfg(any(test, feature = "test-support"))]
impl SeededRandom {
    /// A generator that replays the same bytes for the same seed.
    pub fn new(seed: u64) -> Self {
        SeededRandom(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Random for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_reproducible_and_os_is_not_constant() {
        let (mut a, mut b) = (SeededRandom::new(7), SeededRandom::new(7));
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        assert!(a.fill(&mut x) && b.fill(&mut y));
        assert_eq!(x, y);
        let (mut p, mut q) = ([0u8; 16], [0u8; 16]);
        assert!(OsRandom.fill(&mut p) && OsRandom.fill(&mut q));
        assert_ne!(p, q);
    }
}
