//! Rate limiting of failed lookups (unknown or expired codes, unknown tokens).
//!
//! A lookup may run only while the peer's bucket and the relay's bucket
//! hold a token; a lookup that fails takes one from each. A successful
//! lookup costs nothing, so people who hold real codes are not slowed down,
//! yet the number of failed guesses is bounded by the relay's bucket,
//! whatever the number of peers: that bound is what
//! [`crate::codes::guess_bound`] uses.
//!
//! The relay's bucket is split in two, so that guessers cannot lock out
//! people with real codes by spending it: a *reserved* share
//! ([`RateSettings::reserved_share`] of its burst and of its rate) that only
//! *clean* peers may spend (no failed lookup in the last
//! [`RateSettings::suspect_secs`]), and the rest, which everyone shares.
//! A guessing address turns suspect at its first failure, so it spends at
//! most one reserved token per `suspect_secs`; with the defaults (2 reserved
//! tokens a second, 600 s) guessing from fewer than 1,200 addresses (IPv4
//! addresses, IPv6 /64s) at once leaves the reserve to the others. The two
//! parts add up to the relay's bucket, so the bound on guesses is unchanged.
//!
//! ```text
//!   check(peer):  peer bucket ≥ 1  and  (shared ≥ 1  or  (peer clean and reserved ≥ 1))
//!   failed(peer): peer bucket − 1;  shared − 1 if it holds a token or the peer is
//!                 suspect, else reserved − 1;  the peer is suspect for suspect_secs
//! ```
//!
//! Time is an argument ([`Instant`]), so the limiter is deterministic.
//!
//! Several relay instances over one shared store must not each allow the
//! relay's bucket, or N instances would multiply the guessing budget. In
//! *shared* mode ([`RateLimiter::share`]) the relay's two parts spend only
//! tokens claimed ahead from a budget all instances draw on
//! ([`Stock`], filled by `store::postgres::lookup_budget`), so `check` and
//! `failed` stay in memory; per-peer buckets and suspects stay local. When
//! nothing refills the stock it runs dry and lookups are refused: the
//! limiter fails closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use pickup_proto::{Duration, Instant};

/// Seconds between two log lines about one rate-limited peer.
const RATE_LOG_SECS: u64 = 60;

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
    /// The part of the relay's bucket (of its burst, rounded down, and of
    /// its rate) kept for clean peers, in `0.0..1.0`.
    pub reserved_share: f64,
    /// How long a peer is a suspect after a failed lookup: it may not spend
    /// the reserved share.
    pub suspect_secs: u64,
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings {
            peer_burst: 10,
            peer_per_sec: 0.5,
            global_burst: 100,
            global_per_sec: 10.0,
            reserved_share: 0.2,
            suspect_secs: 600,
        }
    }
}

impl RateSettings {
    /// Burst and rate of the reserved part of the relay's bucket.
    pub(crate) fn reserved(&self) -> (u32, f64) {
        let share = self.reserved_share.clamp(0.0, 1.0);
        let burst = (f64::from(self.global_burst) * share).floor() as u32;
        (burst.min(self.global_burst), self.global_per_sec * share)
    }

    /// Burst and rate of the part of the relay's bucket everyone shares.
    pub(crate) fn shared(&self) -> (u32, f64) {
        let (burst, rate) = self.reserved();
        (self.global_burst - burst, self.global_per_sec - rate)
    }
}

/// How the guessing bound's budget is counted, for the start-up line:
/// `shared` when the relay's bucket is claimed from a budget all instances
/// share ([`RateLimiter::share`]).
pub fn budget_scope(shared: bool) -> &'static str {
    if shared {
        "failed lookups shared by all instances (postgres)"
    } else {
        "failed lookups counted by this relay alone"
    }
}

/// One of the two parts of the relay's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The part everyone may spend.
    Shared,
    /// The part only clean peers may spend.
    Reserved,
}

/// Tokens of the relay's bucket this instance claimed from a budget shared
/// with other instances, not spent yet. The limiter spends them one failed
/// lookup at a time; a claimer adds whole claims.
///
/// A count may go below zero: a lookup checked while a token was there may
/// fail after another took it (as in local mode, lookups in flight are not
/// counted ahead). The debt is paid from the next claims.
#[derive(Debug, Default)]
pub struct Stock {
    shared: AtomicI64,
    reserved: AtomicI64,
}

impl Stock {
    fn part(&self, part: Part) -> &AtomicI64 {
        match part {
            Part::Shared => &self.shared,
            Part::Reserved => &self.reserved,
        }
    }

    /// Adds `tokens` claimed for `part`.
    pub fn add(&self, part: Part, tokens: u32) {
        self.part(part)
            .fetch_add(i64::from(tokens), Ordering::AcqRel);
    }

    /// Tokens of `part` on hand (negative: owed).
    pub fn available(&self, part: Part) -> i64 {
        self.part(part).load(Ordering::Acquire)
    }

    fn take(&self, part: Part) {
        self.part(part).fetch_sub(1, Ordering::AcqRel);
    }

    /// Milliseconds until `part` (refilled at `per_sec` across the
    /// instances) may hold a token again: a guess, since other instances
    /// claim too, but never less than a claimer's turn.
    fn wait_ms(&self, part: Part, per_sec: f64) -> u32 {
        if self.available(part) >= 1 {
            return 0;
        }
        if per_sec <= 0.0 {
            return u32::MAX;
        }
        let ms = (1000.0 / per_sec).ceil();
        if ms >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            (ms as u32).max(STOCK_WAIT_MIN_MS)
        }
    }
}

/// The shortest wait a refusal in shared mode names: about one turn of the
/// task that claims tokens.
const STOCK_WAIT_MIN_MS: u32 = 50;

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

/// What the limiter remembers of one peer.
#[derive(Debug, Clone, Copy)]
struct PeerState {
    bucket: Bucket,
    /// When its last lookup failed.
    failed_at: Option<Instant>,
    /// When a refusal of this peer was last logged, and the refusals since:
    /// a guesser is said once a minute, not once a try.
    limited_logged_at: Option<Instant>,
    limited_unlogged: u64,
}

impl PeerState {
    fn new(burst: u32, now: Instant) -> Self {
        PeerState {
            bucket: Bucket::full(burst, now),
            failed_at: None,
            limited_logged_at: None,
            limited_unlogged: 0,
        }
    }

    /// No failed lookup within `suspect_secs` of `now`.
    fn clean(&self, suspect_secs: u64, now: Instant) -> bool {
        self.failed_at
            .is_none_or(|t| now.saturating_since(t).as_millis() >= suspect_secs * 1000)
    }
}

/// The per-peer buckets and the relay's, in its shared and reserved parts.
#[derive(Debug)]
pub struct RateLimiter {
    settings: RateSettings,
    shared: Bucket,
    reserved: Bucket,
    /// In shared mode, the claimed tokens that stand for the relay's
    /// buckets (`shared` and `reserved` are then unused).
    stock: Option<Arc<Stock>>,
    peers: HashMap<Peer, PeerState>,
    overflow: PeerState,
}

impl RateLimiter {
    /// Full buckets at `now`.
    pub fn new(settings: RateSettings, now: Instant) -> Self {
        RateLimiter {
            settings,
            shared: Bucket::full(settings.shared().0, now),
            reserved: Bucket::full(settings.reserved().0, now),
            stock: None,
            peers: HashMap::new(),
            overflow: PeerState::new(settings.peer_burst, now),
        }
    }

    fn peer_state(&mut self, peer: &Peer, now: Instant) -> &mut PeerState {
        let s = self.settings;
        if !self.peers.contains_key(peer) && self.peers.len() >= MAX_PEERS {
            self.prune(now);
            if self.peers.len() >= MAX_PEERS {
                return &mut self.overflow;
            }
        }
        self.peers
            .entry(peer.clone())
            .or_insert_with(|| PeerState::new(s.peer_burst, now))
    }

    /// Shared mode: from now on the relay's buckets spend only `stock`,
    /// which starts empty and is filled by whoever claims from the budget
    /// shared by all instances. Per-peer buckets are unchanged.
    pub fn share(&mut self, stock: Arc<Stock>) {
        self.stock = Some(stock);
    }

    /// Whether the relay's buckets are shared ([`share`](Self::share)).
    pub fn is_shared(&self) -> bool {
        self.stock.is_some()
    }

    /// Milliseconds until the shared and the reserved part hold a token.
    fn relay_waits(&mut self, now: Instant) -> (u32, u32) {
        let s = self.settings;
        match &self.stock {
            Some(stock) => (
                stock.wait_ms(Part::Shared, s.shared().1),
                stock.wait_ms(Part::Reserved, s.reserved().1),
            ),
            None => {
                self.refill_relay(now);
                (
                    self.shared.wait_ms(s.shared().1),
                    self.reserved.wait_ms(s.reserved().1),
                )
            }
        }
    }

    fn refill_relay(&mut self, now: Instant) {
        let (shared, reserved) = (self.settings.shared(), self.settings.reserved());
        self.shared.refill(shared.0, shared.1, now);
        self.reserved.refill(reserved.0, reserved.1, now);
    }

    /// Forgets peers whose bucket has refilled and who are no longer
    /// suspect: they are as good as new.
    pub fn prune(&mut self, now: Instant) {
        let s = self.settings;
        self.peers.retain(|_, p| {
            p.bucket.refill(s.peer_burst, s.peer_per_sec, now);
            p.bucket.tokens < f64::from(s.peer_burst) || !p.clean(s.suspect_secs, now)
        });
    }

    /// May `peer` look something up now? `Err(ms)` says how long to wait.
    pub fn check(&mut self, peer: &Peer, now: Instant) -> Result<(), u32> {
        let s = self.settings;
        let (mut relay_wait, reserved_wait) = self.relay_waits(now);
        let p = self.peer_state(peer, now);
        p.bucket.refill(s.peer_burst, s.peer_per_sec, now);
        if p.clean(s.suspect_secs, now) {
            relay_wait = relay_wait.min(reserved_wait);
        }
        let wait = p.bucket.wait_ms(s.peer_per_sec).max(relay_wait);
        if wait == 0 {
            return Ok(());
        }
        p.limited_unlogged += 1;
        let due = p
            .limited_logged_at
            .is_none_or(|at| now >= at + Duration::from_secs(RATE_LOG_SECS));
        if due {
            // `now` is the caller's, so the log follows the limiter's own
            // time and stays deterministic in the simulator.
            tracing::info!(
                %peer,
                refused = p.limited_unlogged,
                retry_after_ms = wait,
                "rate limited: lookups refused (said at most once a minute per peer)"
            );
            p.limited_logged_at = Some(now);
            p.limited_unlogged = 0;
        }
        Err(wait)
    }

    /// A lookup by `peer` failed: it costs a token of the peer's bucket and
    /// one of the relay's (of the reserve only if the shared part is spent
    /// and the peer was clean), and the peer is a suspect from now on.
    pub fn failed(&mut self, peer: &Peer, now: Instant) {
        let s = self.settings;
        let p = self.peer_state(peer, now);
        p.bucket.tokens -= 1.0;
        let clean = p.clean(s.suspect_secs, now);
        p.failed_at = Some(now);
        if let Some(stock) = &self.stock {
            if stock.available(Part::Shared) >= 1 || !clean {
                stock.take(Part::Shared);
            } else {
                stock.take(Part::Reserved);
            }
            return;
        }
        self.refill_relay(now);
        if self.shared.tokens >= 1.0 || !clean {
            self.shared.tokens -= 1.0;
        } else {
            self.reserved.tokens -= 1.0;
        }
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
            reserved_share: 0.0,
            suspect_secs: 60,
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
    fn successful_lookups_cost_nothing() {
        let mut l = RateLimiter::new(settings(), at(0));
        for _ in 0..1000 {
            assert_eq!(l.check(&Peer::Sim(1), at(0)), Ok(()));
        }
        assert_eq!(l.tracked_peers(), 1);
        l.prune(at(0));
        assert_eq!(l.tracked_peers(), 0, "a peer that never failed is not kept");
    }

    /// Guessers from many addresses spend the shared part; a clean peer
    /// still gets the reserve, a suspect does not, and all failures
    /// together stay within the relay's burst and rate.
    #[test]
    fn the_reserve_is_for_clean_peers_and_the_bound_holds() {
        let s = RateSettings {
            peer_burst: 2,
            peer_per_sec: 1.0,
            global_burst: 10,
            global_per_sec: 5.0,
            reserved_share: 0.2,
            suspect_secs: 60,
        };
        assert_eq!((s.shared(), s.reserved()), ((8, 4.0), (2, 1.0)));
        let mut l = RateLimiter::new(s, at(0));
        let mut failures = 0u32;
        // 20 guessers, each trying every 10 ms for 20 s. Each takes at
        // most one reserved token (its first failure, while clean); after
        // 12 s none is clean and the reserve stays full.
        for t in (0..=20_000).step_by(10) {
            for g in 0..20 {
                if l.check(&Peer::Sim(g), at(t)).is_ok() {
                    l.failed(&Peer::Sim(g), at(t));
                    failures += 1;
                }
            }
        }
        // At most burst + rate * 20 s (plus what is in flight: none here).
        assert!(failures <= 10 + 100, "{failures} failed guesses");
        // The shared part is spent; a clean peer gets in, on the reserve.
        assert!(l.shared.tokens < 1.0);
        let now = at(20_000);
        assert!(l.check(&Peer::Sim(100), now).is_ok());
        // A guesser does not: it failed recently.
        assert!(l.check(&Peer::Sim(0), now).is_err());
        // Nor does a clean peer whose guess just failed.
        l.failed(&Peer::Sim(100), now);
        assert!(l.check(&Peer::Sim(100), now).is_err());
        // Another clean peer still finds a token in the reserve.
        assert!(l.check(&Peer::Sim(101), now).is_ok());
        // Suspects are remembered for suspect_secs, then forgotten.
        l.prune(now);
        assert_eq!(l.tracked_peers(), 21);
        l.prune(at(90_000));
        assert_eq!(l.tracked_peers(), 0);
    }

    /// Shared mode spends only the stock given to it: time alone refills
    /// nothing, and per-peer buckets still apply.
    #[test]
    fn shared_mode_spends_only_claimed_stock() {
        let mut l = RateLimiter::new(settings(), at(0));
        let stock = Arc::new(Stock::default());
        l.share(stock.clone());
        assert!(l.is_shared());
        // The shared part refills at 2/s across the instances: a guess of
        // 500 ms, however long nothing was claimed.
        assert_eq!(l.check(&Peer::Sim(1), at(0)), Err(500));
        assert_eq!(l.check(&Peer::Sim(1), at(600_000)), Err(500));
        let now = at(600_000);
        stock.add(Part::Shared, 2);
        for i in 10..12 {
            assert_eq!(l.check(&Peer::Sim(i), now), Ok(()));
            l.failed(&Peer::Sim(i), now);
        }
        assert_eq!(stock.available(Part::Shared), 0);
        assert_eq!(l.check(&Peer::Sim(20), now), Err(500));
        // Plenty of stock: the peer's own bucket (3) still refuses it.
        stock.add(Part::Shared, 10);
        for _ in 0..3 {
            assert_eq!(l.check(&Peer::Sim(30), now), Ok(()));
            l.failed(&Peer::Sim(30), now);
        }
        assert_eq!(l.check(&Peer::Sim(30), now), Err(1000));
        assert_eq!(stock.available(Part::Shared), 7);
    }

    /// In shared mode too, the reserve is for clean peers; a failure after
    /// the stock ran out is owed and paid from the next claim.
    #[test]
    fn shared_mode_keeps_the_reserve_for_clean_peers() {
        let s = RateSettings {
            peer_burst: 3,
            peer_per_sec: 1.0,
            global_burst: 4,
            global_per_sec: 2.0,
            reserved_share: 0.5,
            suspect_secs: 60,
        };
        let mut l = RateLimiter::new(s, at(0));
        let stock = Arc::new(Stock::default());
        l.share(stock.clone());
        stock.add(Part::Shared, 1);
        stock.add(Part::Reserved, 1);
        let (suspect, clean, late) = (Peer::Sim(1), Peer::Sim(2), Peer::Sim(3));
        assert_eq!(l.check(&suspect, at(0)), Ok(()));
        l.failed(&suspect, at(0));
        // The shared part is spent: the suspect may not use the reserve.
        assert_eq!(l.check(&suspect, at(0)), Err(1000));
        assert_eq!(l.check(&clean, at(0)), Ok(()));
        l.failed(&clean, at(0));
        assert_eq!(stock.available(Part::Reserved), 0);
        assert_eq!(l.check(&late, at(0)), Err(1000));
        // A lookup let in earlier fails now: the shared part owes a token.
        l.failed(&suspect, at(0));
        assert_eq!(stock.available(Part::Shared), -1);
        stock.add(Part::Shared, 1);
        assert_eq!(l.check(&late, at(0)), Err(1000));
        stock.add(Part::Shared, 1);
        assert_eq!(l.check(&late, at(0)), Ok(()));
    }

    #[test]
    fn the_start_up_line_names_the_shared_budget() {
        assert_eq!(
            budget_scope(true),
            "failed lookups shared by all instances (postgres)"
        );
        assert_ne!(budget_scope(false), budget_scope(true));
    }

    #[test]
    fn prune_forgets_refilled_peers_and_ipv6_groups_by_64() {
        let mut l = RateLimiter::new(settings(), at(0));
        l.failed(&Peer::Sim(1), at(0));
        assert_eq!(l.tracked_peers(), 1);
        l.prune(at(10_000));
        assert_eq!(l.tracked_peers(), 1, "still a suspect");
        l.prune(at(60_000));
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
