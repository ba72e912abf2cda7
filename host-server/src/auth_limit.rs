//! Limits on failed authentications (PROTOCOL.md §8): per account and
//! per peer, so that online guessing of passwords and terminal answers is
//! slow, yet an attacker cannot keep an account's owner out for long.
//!
//! ```text
//!   check(account, peer):  account not locked  and  peer's failures in the last
//!                          peer_window_secs < peer_failures      else Err(retry_after_ms)
//!   failed(account, peer): account: +1 (restarting from 0 if its last failure is
//!                          account_lock_secs old); at account_failures it is locked
//!                          for account_lock_secs and starts again from 0.
//!                          peer: the failure's time is remembered for peer_window_secs
//!   succeeded(account):    the account's failures are forgotten
//! ```
//!
//! **Per account** (a user name or a terminal name; the two share one
//! namespace, [`crate::directory`]): `account_failures` failures lock the
//! account for exactly `account_lock_secs`, never longer, and a locked
//! account's further attempts are refused before they are checked, so they
//! cannot extend the lock. When an attacker stops, the owner is back in at
//! most `account_lock_secs` later. An attacker who keeps guessing can lock
//! the account again as soon as a lock ends, so it stays locked in windows
//! of `account_lock_secs`, with a gap between them in which the owner's
//! login competes with the attacker's guesses; what bounds that attacker
//! is the per-peer limit, and guesses stay at `account_failures` per
//! `account_lock_secs` for each account (5 a minute by default).
//!
//! **Per peer** (an IPv4 address, an IPv6 /64, a serial port:
//! [`Peer`]): at most `peer_failures` failures in any `peer_window_secs`
//! (20 per 10 minutes by default), whichever accounts they tried, so one
//! address cannot spread its guesses over many accounts.
//!
//! Memory is bounded: at most [`DEFAULT_MAX_TRACKED`] accounts and as many
//! peers (each peer keeps at most `peer_failures` times). A new entry in a
//! full table first drops those with nothing left to remember (no lock,
//! no failure within the window), then the one whose last failure is
//! oldest. Evicting a locked account ends its lock early, which takes as
//! many newer failures as the table holds, each paid for against a
//! per-peer limit.
//!
//! Time is an argument ([`Instant`]), as in [`crate::rate_limit`].

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use pickup_proto::{Duration, Instant};

use crate::directory::AuthSettings;
use crate::rate_limit::Peer;

/// Accounts, and peers, remembered at most by default.
pub const DEFAULT_MAX_TRACKED: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct AccountState {
    /// Failures since the last lock, success or pause.
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
struct PeerState {
    /// Times of its most recent failures, oldest first; at most
    /// `peer_failures` of them (older ones cannot matter).
    failures: VecDeque<Instant>,
}

/// Failure counts per account and per peer; see the module docs.
#[derive(Debug)]
pub struct AuthLimiter {
    account_failures: u32,
    account_lock: Duration,
    peer_failures: u32,
    peer_window: Duration,
    max_tracked: usize,
    accounts: HashMap<String, AccountState>,
    peers: HashMap<Peer, PeerState>,
}

/// Milliseconds from `now` until `then` (at least 1, so a refusal never
/// says "retry in 0 ms"), saturated to `u32`.
fn wait_ms(now: Instant, then: Instant) -> u32 {
    let ms = then.saturating_since(now).as_millis().max(1);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

/// Makes room for one more entry in `map`: drops the entries `stale`
/// says have nothing to remember, then, if still full, the one `last`
/// says is oldest.
fn make_room<K: Clone + Eq + Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    stale: impl Fn(&V) -> bool,
    last: impl Fn(&V) -> Instant,
) {
    if map.len() < max {
        return;
    }
    map.retain(|_, v| !stale(v));
    while map.len() >= max {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| last(v))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        map.remove(&oldest);
    }
}

impl AuthLimiter {
    /// A limiter with `settings`' limits, remembering at most
    /// [`DEFAULT_MAX_TRACKED`] accounts and as many peers.
    pub fn new(settings: &AuthSettings) -> Self {
        Self::with_capacity(settings, DEFAULT_MAX_TRACKED)
    }

    /// A limiter remembering at most `max_tracked` accounts and as many
    /// peers (at least one of each).
    pub fn with_capacity(settings: &AuthSettings, max_tracked: usize) -> Self {
        AuthLimiter {
            account_failures: settings.account_failures.max(1),
            account_lock: Duration::from_secs(settings.account_lock_secs),
            peer_failures: settings.peer_failures.max(1),
            peer_window: Duration::from_secs(settings.peer_window_secs),
            max_tracked: max_tracked.max(1),
            accounts: HashMap::new(),
            peers: HashMap::new(),
        }
    }

    /// May `peer` try to authenticate as `account` now? `Err(ms)`: not
    /// before `ms` milliseconds (answered with `RateLimited`). Call it
    /// before looking at the password or answer, so refused attempts cost
    /// no hashing and tell nothing.
    pub fn check(&mut self, account: &str, peer: &Peer, now: Instant) -> Result<(), u32> {
        let mut wait = 0;
        if let Some(a) = self.accounts.get(account) {
            if let Some(until) = a.locked_until.filter(|&until| until > now) {
                wait = wait_ms(now, until);
            }
        }
        if let Some(p) = self.peers.get_mut(peer) {
            let window = self.peer_window;
            while p.failures.front().is_some_and(|&t| t + window <= now) {
                p.failures.pop_front();
            }
            if p.failures.len() >= self.peer_failures as usize {
                let oldest = p.failures[p.failures.len() - self.peer_failures as usize];
                wait = wait.max(wait_ms(now, oldest + window));
            }
        }
        if wait == 0 {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// An attempt by `peer` as `account` failed (wrong password, unknown
    /// user, bad answer, unknown or expired token). An empty `account`
    /// counts for the peer only: what has no account must not lock one.
    pub fn failed(&mut self, account: &str, peer: &Peer, now: Instant) {
        let (lock, window) = (self.account_lock, self.peer_window);
        // No account (a token guess, a malformed name): the peer only.
        if !account.is_empty() {
            if !self.accounts.contains_key(account) {
                make_room(
                    &mut self.accounts,
                    self.max_tracked,
                    |a| a.locked_until.is_none_or(|u| u <= now) && a.last_failure + lock <= now,
                    |a| a.last_failure,
                );
            }
            let a = self
                .accounts
                .entry(account.to_owned())
                .or_insert(AccountState {
                    failures: 0,
                    last_failure: now,
                    locked_until: None,
                });
            // A lock that ended, or a pause as long as a lock, starts the
            // count again: the lock is a window, never a sentence.
            if a.locked_until.is_some_and(|u| u <= now) || a.last_failure + lock <= now {
                a.failures = 0;
                a.locked_until = None;
            }
            // Failures during a lock (a caller that skipped `check`) count
            // for the peer only: they must not extend the lock.
            let locked = a.locked_until.is_some();
            if !locked {
                a.failures += 1;
                a.last_failure = now;
            }
            if !locked && a.failures >= self.account_failures {
                a.failures = 0;
                a.locked_until = Some(now + lock);
                tracing::warn!(
                    // Debug: the name may be anything a peer sent.
                    account = ?account,
                    %peer,
                    lock_secs = lock.as_millis() / 1000,
                    "account locked: too many failed authentications"
                );
            }
        }

        if !self.peers.contains_key(peer) {
            make_room(
                &mut self.peers,
                self.max_tracked,
                |p| p.failures.back().is_none_or(|&t| t + window <= now),
                |p| p.failures.back().copied().unwrap_or(Instant::ZERO),
            );
        }
        let p = self.peers.entry(peer.clone()).or_default();
        p.failures.push_back(now);
        while p.failures.len() > self.peer_failures as usize {
            p.failures.pop_front();
        }
        if p.failures.len() == self.peer_failures as usize
            && p.failures.front().is_some_and(|&t| t + window > now)
        {
            tracing::warn!(
                %peer,
                failures = self.peer_failures,
                window_secs = window.as_millis() / 1000,
                "peer rate limited: too many failed authentications"
            );
        }
    }

    /// `account` authenticated: its failures are forgotten (the peer's
    /// are not: a guesser who owns one account must not wash its record
    /// by logging in to it).
    pub fn succeeded(&mut self, account: &str) {
        self.accounts.remove(account);
    }

    /// Accounts currently remembered (for tests and metrics).
    pub fn tracked_accounts(&self) -> usize {
        self.accounts.len()
    }

    /// Peers currently remembered (for tests and metrics).
    pub fn tracked_peers(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn secs(s: u64) -> Instant {
        at(s * 1000)
    }

    fn limiter() -> AuthLimiter {
        AuthLimiter::new(&AuthSettings::default())
    }

    #[test]
    fn five_failures_lock_the_account_for_the_stated_time_only() {
        let mut l = limiter();
        let p = Peer::Sim(1);
        for _ in 0..4 {
            assert_eq!(l.check("ada", &p, secs(10)), Ok(()));
            l.failed("ada", &p, secs(10));
        }
        assert_eq!(l.check("ada", &p, secs(10)), Ok(()));
        l.failed("ada", &p, secs(10));
        // Locked for 60 s, from any peer; other accounts are not.
        assert_eq!(l.check("ada", &p, secs(10)), Err(60_000));
        assert_eq!(l.check("ada", &Peer::Sim(2), secs(40)), Err(30_000));
        assert_eq!(l.check("bob", &p, secs(40)), Ok(()));
        assert_eq!(l.check("ada", &Peer::Sim(2), at(69_999)), Err(1));
        // At most account_lock_secs after the attacker stopped, the owner is in.
        assert_eq!(l.check("ada", &Peer::Sim(2), secs(70)), Ok(()));
        l.succeeded("ada");
        assert_eq!(l.tracked_accounts(), 0);
    }

    #[test]
    fn a_persistent_guesser_relocks_in_windows_and_never_extends_a_lock() {
        let mut l = limiter();
        let mut guesses = 0;
        // One guesser per attempt (fresh peers), so only the account limit
        // applies: every 100 ms for 10 minutes.
        for t in (0..600_000).step_by(100) {
            let p = Peer::Sim(t);
            if l.check("ada", &p, at(t)).is_ok() {
                l.failed("ada", &p, at(t));
                guesses += 1;
            }
            // Whenever refused, the wait never passes the stated lock.
            if let Err(ms) = l.check("ada", &p, at(t)) {
                assert!(ms <= 60_000);
            }
        }
        // 5 a minute: the locks are windows of 60 s, back to back.
        assert_eq!(guesses, 50);
    }

    #[test]
    fn failures_far_apart_do_not_add_up() {
        let mut l = limiter();
        let p = Peer::Sim(1);
        for i in 0..10 {
            l.failed("ada", &p, secs(i * 61));
            assert_eq!(l.check("ada", &p, secs(i * 61)), Ok(()));
        }
    }

    #[test]
    fn the_peer_limit_holds_across_accounts_and_slides() {
        let mut l = limiter();
        let p = Peer::Sim(7);
        for i in 0..20u64 {
            let account = format!("user{i}");
            assert_eq!(l.check(&account, &p, secs(i)), Ok(()));
            l.failed(&account, &p, secs(i));
        }
        // 20 failures in 20 s: refused until the first leaves the window.
        assert_eq!(l.check("fresh", &p, secs(20)), Err(580_000));
        assert_eq!(
            l.check("fresh", &Peer::Sim(8), secs(20)),
            Ok(()),
            "other peers are not"
        );
        assert_eq!(l.check("fresh", &p, secs(600)), Ok(()));
        l.failed("fresh", &p, secs(600));
        // The window slides: the second failure (at 1 s) now limits.
        assert_eq!(l.check("fresh", &p, secs(600)), Err(1000));
        // A success does not wash a peer's record.
        l.succeeded("fresh");
        assert!(l.check("fresh", &p, secs(600)).is_err());
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_goes_first() {
        let mut l = AuthLimiter::with_capacity(&AuthSettings::default(), 100);
        for i in 0..10_000u64 {
            l.failed(&format!("a{i}"), &Peer::Sim(i), at(i));
            assert!(l.tracked_accounts() <= 100 && l.tracked_peers() <= 100);
        }
        // The newest are the ones kept.
        assert!(l.accounts.contains_key("a9999") && !l.accounts.contains_key("a0"));
        // A peer at its limit is the newest entry, so it stays limited.
        let mut l = AuthLimiter::with_capacity(&AuthSettings::default(), 2);
        for i in 0..20 {
            l.failed("x", &Peer::Sim(1), secs(i));
        }
        l.failed("y", &Peer::Sim(2), secs(30));
        assert!(l.check("z", &Peer::Sim(1), secs(30)).is_err());
        // Failures during the lock (5 of them, past its start) did not
        // extend it: it ends 60 s after the fifth failure.
        assert_eq!(l.check("x", &Peer::Sim(9), secs(63)), Err(1000));
        assert_eq!(l.check("x", &Peer::Sim(9), secs(64)), Ok(()));
        // Entries with nothing left to remember go first.
        l.failed("w", &Peer::Sim(3), secs(625));
        assert!(l.peers.contains_key(&Peer::Sim(2)) && l.peers.contains_key(&Peer::Sim(3)));
    }
}
