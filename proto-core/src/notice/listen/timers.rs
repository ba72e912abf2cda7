//! A listener's timers: retries of `Hello`, the handshake and `Listen`,
//! relistening while idle, verdicts until settled, the idle timeout.
//!
//! Every timer that fires is re-armed strictly later than `now` or
//! cleared (durations are at least 1 ms), so [`Listener::poll_timeout`]
//! never returns a deadline in the past after
//! [`Listener::handle_timeout`] ran.

use super::{Control, Listener, Phase};
use crate::time::Instant;

impl<const N: usize> Listener<'_, N> {
    /// When [`handle_timeout`](Self::handle_timeout) must next be called;
    /// `None` while idle or failed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Idle | Phase::Failed) {
            return None;
        }
        let idle = self.last_heard + crate::notice::config::at_least_1ms(self.config.idle_timeout);
        let t = [self.retry_at, self.relisten_at, self.verdict_at]
            .into_iter()
            .flatten()
            .fold(idle, Instant::min);
        Some(t)
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Idle | Phase::Failed) {
            return;
        }
        if now >= self.last_heard + crate::notice::config::at_least_1ms(self.config.idle_timeout) {
            return self.link_lost();
        }
        if self.verdict_at.is_some_and(|t| now >= t) {
            // Re-armed when the verdict goes out.
            self.verdict_at = None;
            self.verdict_due = self.authenticated();
        }
        if self.relisten_at.is_some_and(|t| now >= t) {
            // Also the keepalive: its `Inbox` is what the relay answers.
            self.listen(now);
        }
        if self.retry_at.is_some_and(|t| now >= t) {
            self.retry_at = Some(now + self.rto());
            match self.phase {
                Phase::AwaitWelcome => self.push_control(Control::Hello),
                Phase::Authenticating => self.auth.retransmit(),
                // No `Inbox`, or fewer notices than it said: ask again.
                Phase::AwaitInbox | Phase::Listening => self.listen(now),
                Phase::Idle | Phase::Failed => self.retry_at = None,
            }
        }
    }
}
