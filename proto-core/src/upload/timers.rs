//! An upload's timers: retransmission (resend from the last ack, or the
//! pending request), keepalives, and the idle timeout that declares the link lost.

use super::{Control, Event, FileState, Phase, Session};
use crate::time::Instant;

impl<'n, const F: usize> Session<'n, F> {
    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return None;
        }
        let mut t = self.last_heard + self.config.idle_timeout;
        t = t.min(self.last_sent + self.config.keepalive_interval);
        if let Some(w) = self.waiting_since {
            t = t.min(w + self.config.retransmit_timeout);
        }
        Some(t)
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return;
        }
        if now >= self.last_heard + self.config.idle_timeout {
            self.phase = Phase::Idle;
            self.waiting_since = None;
            self.control.clear();
            self.push_event(Event::LinkLost);
            return;
        }
        if now >= self.last_sent + self.config.keepalive_interval {
            self.push_control(Control::Keepalive);
        }
        let Some(since) = self.waiting_since else {
            return;
        };
        if now < since + self.config.retransmit_timeout {
            return;
        }
        self.waiting_since = Some(now);
        match self.phase {
            Phase::AwaitWelcome => self.push_control(Control::Hello),
            #[cfg(any(test, feature = "auth"))]
            Phase::Authenticating => {
                if let Some(h) = self.auth.as_mut() {
                    h.retransmit();
                }
            }
            Phase::Announcing { .. } => self.phase = Phase::Announcing { next: None },
            Phase::AwaitGrant => {
                if self.token.is_some() {
                    self.push_control(Control::Resume)
                } else {
                    self.phase = Phase::Announcing { next: None }
                }
            }
            Phase::Transfer => {
                // Nothing moved for a whole retransmit timeout: resend what
                // is unacknowledged, and ask the relay where every file
                // stands. Resending alone is not enough: if the relay holds
                // the bytes and only its ack or verdict was lost, it ignores
                // the duplicates, and the answer to `Resume` is what moves
                // the upload on (durable offsets, `Held`).
                let mut waiting = false;
                for (i, f) in self.files.iter_mut().enumerate() {
                    if f.state == FileState::Sending && f.sent > f.acked {
                        f.sent = f.acked;
                        if self.events.is_full() {
                            self.events.pop_front();
                        }
                        let _ = self.events.push_back(Event::Retransmit {
                            file: i as u16,
                            offset: f.acked,
                        });
                    }
                    // ProofDue only waits for our own transmit.
                    waiting |= !matches!(f.state, FileState::Done | FileState::ProofDue(_));
                }
                // A named batch whose files are all verified waits for its
                // names to be bound: a lost BatchComplete is asked for again.
                if waiting || !self.names_settled() {
                    self.push_control(Control::Resume);
                }
            }
            Phase::Idle | Phase::Done | Phase::Failed => {}
        }
    }
}
