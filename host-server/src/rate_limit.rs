//! Rate limiting of failed lookups (unknown or expired codes, unknown tokens).
//!
//! Two token buckets guard every lookup: one per peer and one for the whole
//! relay. A lookup may run only while both buckets hold a token; a lookup
//! that fails takes one from each. A successful lookup costs nothing, so
//! people who hold real codes are not slowed down, yet the number of failed
//! guesses is bounded by the global bucket, whatever the number of peers:
//! that bound is what [`crate::codes::guess_bound`] uses.
//!
//! Time is an argument ([`Instant`]), so the limiter is deterministic.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use pickup_proto::Instant;

/// Who is asking: the unit of per-peer limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP peer. IPv6 peers are grouped by /64, since one host usually owns one.
    Ip(IpAddr),
    /// A device on a serial port, by port path.
    Serial(Arc<str>),
    /// A simulated or fuzzed peer (feature `test-support`).
    #[cfg(any(test, feature = "test-support"))]
    Sim(u64),
}

impl Peer {
    /// The peer as limits see it (IPv6 addresses cut to their /64).
    pub fn for_tcp(ip: IpAddr) -> Peer {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Peer::Ip(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    Peer::Ip(IpAddr::V6(bits.into()))
                }
            },
            v4 => Peer::Ip(v4),
        }
    }
}

impl core::fmt::Display for Peer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Peer::Ip(ip) => write!(f, "{ip}"),
            Peer::Serial(path) => write!(f, "serial:{path}"),
            #[cfg(any(test, feature = "test-support"))]
            Peer::Sim(n) => write!(f, "sim:{n}"),
        }
    }
}

/// Bucket sizes and refill rates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateSettings {
    /// Failed lookups one peer may make at once.
    pub peer_burst: u32,
    /// Failed lookups one peer may make per second, sustained.
    pub peer_per_sec: f64,
    /// Failed lookups the whole relay allows at once.
    pub global_burst: u32,
    /// Failed lookups the whole relay allows per second, sustained.
    pub global_per_sec: f64,
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings {
            peer_burst: 10,
            peer_per_sec: 0.5,
            global_burst: 100,
            global_per_sec: 10.0,
        }
    }
}

/// Peers remembered at most; past this, full buckets are forgotten and new
/// peers share one overflow bucket (the global bucket still bounds guessing).
const MAX_PEERS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, burst: u32, per_sec: f64, now: Instant) {
        let elapsed = now.saturating_since(self.at).as_millis() as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * per_sec).min(f64::from(burst));
        if now > self.at {
            self.at = now;
        }
    }

    /// Milliseconds until a whole token is available (0 if one is).
    fn wait_ms(&self, per_sec: f64) -> u32 {
        if self.tokens >= 1.0 {
            return 0;
        }
        if per_sec <= 0.0 {
            return u32::MAX;
        }
        let ms = ((1.0 - self.tokens) / per_sec * 1000.0).ceil();
        if ms >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            (ms as u32).max(1)
        }
    }
}

/// The per-peer and global buckets.
#[derive(Debug)]
pub struct RateLimiter {
    settings: RateSettings,
    global: Bucket,
    peers: HashMap<Peer, Bucket>,
    overflow: Bucket,
}

impl RateLimiter {
    /// Full buckets at `now`.
    pub fn new(settings: RateSettings, now: Instant) -> Self {
        RateLimiter {
            settings,
            global: Bucket::full(settings.global_burst, now),
            peers: HashMap::new(),
            overflow: Bucket::full(settings.peer_burst, now),
        }
    }

    fn peer_bucket(&mut self, peer: &Peer, now: Instant) -> &mut Bucket {
        let s = self.settings;
        if !self.peers.contains_key(peer) && self.peers.len() >= MAX_PEERS {
            self.prune(now);
            if self.peers.len() >= MAX_PEERS {
                return &mut self.overflow;
            }
        }
        self.peers
            .entry(peer.clone())
            .or_insert_with(|| Bucket::full(s.peer_burst, now))
    }

    /// Forgets peers whose bucket has refilled: they are as good as new.
    pub fn prune(&mut self, now: Instant) {
        let s = self.settings;
        self.peers.retain(|_, b| {
            b.refill(s.peer_burst, s.peer_per_sec, now);
            b.tokens < f64::from(s.peer_burst)
        });
    }

    /// May `peer` look something up now? `Err(ms)` says how long to wait.
    pub fn check(&mut self, peer: &Peer, now: Instant) -> Result<(), u32> {
        let s = self.settings;
        self.global.refill(s.global_burst, s.global_per_sec, now);
        let global_wait = self.global.wait_ms(s.global_per_sec);
        let b = self.peer_bucket(peer, now);
        b.refill(s.peer_burst, s.peer_per_sec, now);
        let wait = b.wait_ms(s.peer_per_sec).max(global_wait);
        if wait == 0 {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// A lookup by `peer` failed: it costs a token of each bucket.
    pub fn failed(&mut self, peer: &Peer, now: Instant) {
        self.global.tokens -= 1.0;
        self.peer_bucket(peer, now).tokens -= 1.0;
    }

    /// Peers currently remembered (for tests and metrics).
    pub fn tracked_peers(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RateSettings {
        RateSettings {
            peer_burst: 3,
            peer_per_sec: 1.0,
            global_burst: 5,
            global_per_sec: 2.0,
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn peer_bucket_empties_and_refills() {
        let mut l = RateLimiter::new(settings(), at(0));
        let p = Peer::Sim(1);
        for _ in 0..3 {
            assert_eq!(l.check(&p, at(0)), Ok(()));
            l.failed(&p, at(0));
        }
        assert_eq!(l.check(&p, at(0)), Err(1000));
        assert_eq!(l.check(&p, at(600)), Err(400));
        assert_eq!(l.check(&p, at(1000)), Ok(()));
    }

    #[test]
    fn global_bucket_bounds_many_peers() {
        let mut l = RateLimiter::new(settings(), at(0));
        for i in 0..5 {
            let p = Peer::Sim(i);
            assert_eq!(l.check(&p, at(0)), Ok(()));
            l.failed(&p, at(0));
        }
        // A fresh peer is refused: the relay-wide budget is spent.
        assert_eq!(l.check(&Peer::Sim(99), at(0)), Err(500));
        assert_eq!(l.check(&Peer::Sim(99), at(500)), Ok(()));
    }

    #[test]
    fn prune_forgets_refilled_peers_and_ipv6_groups_by_64() {
        let mut l = RateLimiter::new(settings(), at(0));
        l.failed(&Peer::Sim(1), at(0));
        assert_eq!(l.tracked_peers(), 1);
        l.prune(at(10_000));
        assert_eq!(l.tracked_peers(), 0);
        let a = Peer::for_tcp("2001:db8::1".parse().unwrap());
        let b = Peer::for_tcp("2001:db8::ffff:1".parse().unwrap());
        let c = Peer::for_tcp("2001:db8:0:1::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            Peer::for_tcp("::ffff:10.0.0.1".parse().unwrap()),
            Peer::Ip("10.0.0.1".parse().unwrap())
        );
    }
}
