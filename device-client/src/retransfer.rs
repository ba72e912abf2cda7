//! Automatic retransfer: when to reconnect after a lost link, and when to stop.
//!
//! The protocol machines already know how to continue after a reconnect
//! (the relay keeps durable offsets; the uploader resends from the last
//! acknowledged byte, the downloader re-reads from its last written byte).
//! What is left to decide is *whether* and *when* to dial again. That is
//! [`Retransfer`], a small sans-IO state machine over a [`RetransferPolicy`]:
//!
//! - each loss (a failed connect included) is one attempt; the wait before
//!   it starts at [`initial_backoff`](RetransferPolicy::initial_backoff) and
//!   doubles up to [`max_backoff`](RetransferPolicy::max_backoff);
//! - an *outage* lasts from the first loss until the session moves forward
//!   again on a new link (more bytes durable or written, the first grant or
//!   manifest). Only then are the attempt count and the backoff reset, so a
//!   link that connects but never carries anything still runs out of attempts;
//! - the driver gives up when an outage has used
//!   [`max_attempts`](RetransferPolicy::max_attempts) or lasted
//!   [`give_up_after`](RetransferPolicy::give_up_after).

use pickup_proto::{Duration, Instant};

use crate::link::LinkLoss;

/// How hard to try to get a lost link back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransferPolicy {
    /// Reconnect at all. When off, the first loss ends the transfer (the
    /// relay keeps its state, so running the transfer again still resumes).
    pub enabled: bool,
    /// Most reconnect attempts in one outage; `None` for no limit.
    pub max_attempts: Option<u32>,
    /// Wait before the first attempt of an outage.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Longest outage before giving up; `None` for no limit.
    pub give_up_after: Option<Duration>,
}

impl RetransferPolicy {
    /// Never reconnect.
    pub const DISABLED: RetransferPolicy = RetransferPolicy {
        enabled: false,
        max_attempts: Some(0),
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        give_up_after: Some(Duration::ZERO),
    };
}

impl Default for RetransferPolicy {
    /// Ten attempts per outage, 250 ms doubling to 8 s, at most two minutes.
    fn default() -> Self {
        RetransferPolicy {
            enabled: true,
            max_attempts: Some(10),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            give_up_after: Some(Duration::from_secs(120)),
        }
    }
}

/// What a driver reports about its link, next to the session's own events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// The link was lost (or a connection attempt failed).
    Lost(LinkLoss),
    /// Attempt number `attempt` (from 1 in each outage) starts after `after`.
    Reconnecting {
        /// Attempt number within the outage.
        attempt: u32,
        /// Backoff before the attempt.
        after: Duration,
    },
    /// A new link is up; the session resumes on it.
    Reconnected {
        /// Attempt number within the outage.
        attempt: u32,
    },
    /// The policy is exhausted: the driver returns an error.
    GaveUp {
        /// Attempts made in the last outage.
        attempts: u32,
        /// The last reason the link was lost.
        last: LinkLoss,
    },
}

/// The retransfer decision after a loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait `after`, then make attempt `attempt`.
    Retry {
        /// Attempt number within the outage, from 1.
        attempt: u32,
        /// Backoff to wait first.
        after: Duration,
    },
    /// Stop: the policy is exhausted (or disabled).
    GiveUp {
        /// Attempts already made in this outage.
        attempts: u32,
    },
}

/// The retransfer state of one transfer. See the module docs.
#[derive(Debug, Clone)]
pub struct Retransfer {
    policy: RetransferPolicy,
    attempts: u32,
    outage_since: Option<Instant>,
    backoff: Duration,
}

impl Retransfer {
    /// Fresh state under `policy`.
    pub fn new(policy: RetransferPolicy) -> Self {
        Retransfer {
            policy,
            attempts: 0,
            outage_since: None,
            backoff: policy.initial_backoff,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetransferPolicy {
        &self.policy
    }

    /// Attempts made in the current outage (0 when there is none).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The session moved forward: any outage is over.
    pub fn on_progress(&mut self) {
        self.attempts = 0;
        self.outage_since = None;
        self.backoff = self.policy.initial_backoff;
    }

    /// The link was lost (or a connection attempt failed) at `now`.
    pub fn on_loss(&mut self, now: Instant) -> Decision {
        let p = self.policy;
        if !p.enabled {
            return Decision::GiveUp {
                attempts: self.attempts,
            };
        }
        if p.max_attempts.is_some_and(|max| self.attempts >= max) {
            return Decision::GiveUp {
                attempts: self.attempts,
            };
        }
        let since = *self.outage_since.get_or_insert(now);
        let mut after = self.backoff;
        if let Some(limit) = p.give_up_after {
            let used = now.saturating_since(since);
            if used >= limit {
                return Decision::GiveUp {
                    attempts: self.attempts,
                };
            }
            // The last attempt happens at the deadline, not after it.
            let left = Duration::from_millis(limit.as_millis() - used.as_millis());
            after = after.min(left);
        }
        self.attempts += 1;
        self.backoff = self.backoff.doubled().min(p.max_backoff);
        Decision::Retry {
            attempt: self.attempts,
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_attempts_run_out() {
        let mut r = Retransfer::new(RetransferPolicy {
            enabled: true,
            max_attempts: Some(4),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            give_up_after: None,
        });
        let waits: [u64; 4] = [100, 200, 300, 300];
        for (i, wait) in waits.iter().enumerate() {
            assert_eq!(
                r.on_loss(at(0)),
                Decision::Retry {
                    attempt: i as u32 + 1,
                    after: Duration::from_millis(*wait)
                }
            );
        }
        assert_eq!(r.on_loss(at(0)), Decision::GiveUp { attempts: 4 });
    }

    #[test]
    fn progress_ends_the_outage() {
        let mut r = Retransfer::new(RetransferPolicy {
            enabled: true,
            max_attempts: Some(2),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            give_up_after: None,
        });
        for _ in 0..10 {
            assert!(matches!(
                r.on_loss(at(0)),
                Decision::Retry { attempt: 1, .. }
            ));
            assert!(matches!(
                r.on_loss(at(0)),
                Decision::Retry { attempt: 2, .. }
            ));
            r.on_progress();
            assert_eq!(r.attempts(), 0);
        }
        r.on_loss(at(0));
        r.on_loss(at(0));
        assert_eq!(r.on_loss(at(0)), Decision::GiveUp { attempts: 2 });
    }

    #[test]
    fn outage_time_limit() {
        let mut r = Retransfer::new(RetransferPolicy {
            enabled: true,
            max_attempts: None,
            initial_backoff: Duration::from_millis(400),
            max_backoff: Duration::from_millis(400),
            give_up_after: Some(Duration::from_millis(1000)),
        });
        assert!(matches!(
            r.on_loss(at(5_000)),
            Decision::Retry { attempt: 1, .. }
        ));
        // 900 ms into the outage only 100 ms are left to wait.
        assert_eq!(
            r.on_loss(at(5_900)),
            Decision::Retry {
                attempt: 2,
                after: Duration::from_millis(100)
            }
        );
        assert_eq!(r.on_loss(at(6_000)), Decision::GiveUp { attempts: 2 });
        // A new outage after progress gets the full time again.
        r.on_progress();
        assert!(matches!(
            r.on_loss(at(9_000)),
            Decision::Retry { attempt: 1, .. }
        ));
    }

    #[test]
    fn disabled_gives_up_at_once() {
        let mut r = Retransfer::new(RetransferPolicy::DISABLED);
        assert_eq!(r.on_loss(at(0)), Decision::GiveUp { attempts: 0 });
        let mut r = Retransfer::new(RetransferPolicy {
            enabled: false,
            ..RetransferPolicy::default()
        });
        assert_eq!(r.on_loss(at(0)), Decision::GiveUp { attempts: 0 });
    }
}
