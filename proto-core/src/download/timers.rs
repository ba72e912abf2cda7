//! A download's timers: retries of the pending request, keepalives, the
//! idle timeout, and polling a batch that is not ready yet.

use super::{Control, Phase, Session};
use crate::time::Instant;

impl<const F: usize> Session<F> {
    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return None;
        }
        let mut t = (self.last_heard + self.config.idle_timeout)
            .min(self.last_sent + self.config.keepalive_interval);
        if let Some(r) = self.retry_at {
            t = t.min(r);
        }
        Some(t)
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return;
        }
        // While polling a batch that is not ready, silence is expected.
        let polling =
            self.phase == Phase::AwaitManifest && self.entries_seen > 0 && !self.manifest_ready;
        if !polling && now >= self.last_heard + self.config.idle_timeout {
            return self.link_lost();
        }
        if now >= self.last_sent + self.config.keepalive_interval {
            self.push_control(Control::Keepalive);
        }
        match self.retry_at {
            Some(r) if now >= r => {}
            _ => return,
        }
        self.retry_at = Some(now + self.config.retransmit_timeout);
        match self.phase {
            Phase::AwaitWelcome => self.push_control(Control::Hello),
            Phase::AwaitManifest => {
                self.entries_seen = 0;
                self.push_control(Control::Fetch);
                if polling {
                    self.last_heard = now;
                }
            }
            Phase::Reading if !self.prefix_pending => {
                if now >= self.last_heard + self.config.retransmit_timeout {
                    // Silent for a whole timeout: nothing of an older
                    // stream is still on its way, so a gap is the new one's.
                    self.stale_until = u64::MAX;
                }
                self.restart_after_loss(now)
            }
            _ => {}
        }
    }
}
