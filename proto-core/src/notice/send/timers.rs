//! A sender's timers: retries of `Hello`, the handshake and the request,
//! keepalives, the idle timeout. Each timer that fires is re-armed
//! strictly later than `now` or cleared.

use super::{Control, Phase, Sender};
use crate::notice::config::at_least_1ms;
use crate::time::Instant;

impl Sender<'_> {
    /// When [`handle_timeout`](Self::handle_timeout) must next be called;
    /// `None` while idle or failed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Idle | Phase::Failed) {
            return None;
        }
        let mut t = (self.last_heard + at_least_1ms(self.config.idle_timeout))
            .min(self.last_sent + at_least_1ms(self.config.keepalive_interval));
        if let Some(r) = self.retry_at {
            t = t.min(r);
        }
        Some(t)
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Idle | Phase::Failed) {
            return;
        }
        if now >= self.last_heard + at_least_1ms(self.config.idle_timeout) {
            return self.link_lost();
        }
        if now >= self.last_sent + at_least_1ms(self.config.keepalive_interval) {
            self.push_control(Control::Keepalive);
            // Counted as sent now, so the deadline moves on even if the
            // driver does not transmit before it asks again.
            self.last_sent = now;
        }
        if self.retry_at.is_none_or(|t| now < t) {
            return;
        }
        self.retry_at = Some(now + self.rto());
        match self.phase {
            Phase::AwaitWelcome => self.push_control(Control::Hello),
            Phase::Authenticating => self.auth.retransmit(),
            Phase::Ready => match self.pending.as_mut() {
                Some(p) => p.due = true,
                None => self.retry_at = None,
            },
            Phase::Idle | Phase::Failed => self.retry_at = None,
        }
    }
}
