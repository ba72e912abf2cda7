//! A download's timers: retries of the pending request, keepalives, the
//! idle timeout, and polling a batch that is not ready yet.

use super::{Control, Phase, Session};
use crate::time::Instant;

impl<const F: usize> Session<'_, F> {
    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return None;
        }
        let mut t = self.last_sent + self.config.keepalive_interval;
        if !self.polling() {
            t = t.min(self.last_heard + self.config.idle_timeout);
        }
        if let Some(r) = self.retry_at {
            t = t.min(r);
        }
        Some(t)
    }

    /// Whether the whole manifest of a batch that is not ready yet was read
    /// and the session waits to fetch it again: silence is expected then,
    /// so the idle timeout does not run.
    fn polling(&self) -> bool {
        self.phase == Phase::AwaitManifest
            && !self.manifest_ready
            && self.config.wait_until_ready.is_some()
            && self.expected_files == Some(self.entries_seen)
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return;
        }
        let polling = self.polling();
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
            #[cfg(any(test, feature = "auth"))]
            Phase::Authenticating => {
                if let Some(h) = self.auth.as_mut() {
                    h.retransmit();
                }
            }
            Phase::AwaitManifest => {
                self.expect_manifest();
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
