//! The two machines' tuning, and the listener's auto-receive policy.

use crate::time::Duration;

/// Which senders' notices reach the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AcceptFrom<'a> {
    /// Every sender the relay lets push here.
    Any,
    /// Only these senders, as a notice names them (`alice`, or
    /// `ada@site-b` for a user of a peer relay); a notice from anyone else
    /// is refused with
    /// [`RefuseReason::Sender`](crate::message::RefuseReason::Sender).
    Only(&'a [&'a str]),
}

/// What a listening terminal takes without asking its application: a
/// notice outside it is refused by the [`Listener`](super::Listener)
/// itself and never handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Policy<'a> {
    /// Largest batch (`Notice.total_size`) accepted; larger ones are
    /// refused with [`RefuseReason::TooLarge`](crate::message::RefuseReason::TooLarge).
    pub max_size: u64,
    /// Whose notices are accepted.
    pub accept_from: AcceptFrom<'a>,
}

impl Policy<'_> {
    /// Anything from anyone.
    pub const ACCEPT_ALL: Policy<'static> = Policy {
        max_size: u64::MAX,
        accept_from: AcceptFrom::Any,
    };
}

impl Default for Policy<'_> {
    fn default() -> Self {
        Policy::ACCEPT_ALL
    }
}

/// Tuning for a [`Listener`](super::Listener). `'a` is the lifetime of
/// the policy's list of senders.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ListenConfig<'a> {
    /// Largest raw frame this side accepts (its decoder buffer size).
    pub max_frame: u32,
    /// Without an answer for this long, ask again: `Hello`, the
    /// handshake, `Listen` (no `Inbox`, or fewer notices than it said),
    /// and each `Receipt` or `NoticeRefuse` until its `Settled`.
    pub retransmit_timeout: Duration,
    /// Send `Listen` again after this long while nothing else is going on:
    /// it catches a notice lost on the way and doubles as the keepalive,
    /// so keep it below the relay's idle timeout (30 s by default for a
    /// session that moves no batch).
    pub relisten_interval: Duration,
    /// Without any frame from the relay for this long, the link is lost.
    /// Keep it above `relisten_interval`: every `Listen` is answered.
    pub idle_timeout: Duration,
    /// What is refused without asking the application.
    pub policy: Policy<'a>,
}

impl Default for ListenConfig<'_> {
    fn default() -> Self {
        ListenConfig {
            max_frame: 1024,
            retransmit_timeout: Duration::from_millis(2_000),
            relisten_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            policy: Policy::ACCEPT_ALL,
        }
    }
}

/// Tuning for a [`Sender`](super::Sender).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SendConfig {
    /// Largest raw frame this side accepts (its decoder buffer size).
    pub max_frame: u32,
    /// Without an answer for this long, send the request again (a `Push`
    /// with the same `push_id`, which the relay de-duplicates).
    pub retransmit_timeout: Duration,
    /// Without any frame from the relay for this long, the link is lost.
    pub idle_timeout: Duration,
    /// Send a keepalive after this long without sending anything.
    pub keepalive_interval: Duration,
}

impl Default for SendConfig {
    fn default() -> Self {
        SendConfig {
            max_frame: 1024,
            retransmit_timeout: Duration::from_millis(2_000),
            idle_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(5),
        }
    }
}

/// A duration a timer is armed with: at least 1 ms, so that a timer that
/// fires is always re-armed strictly later and a driver never spins on a
/// deadline that stays at `now`.
pub(crate) fn at_least_1ms(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}
