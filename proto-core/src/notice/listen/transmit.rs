//! What a listener sends: hello, the handshake, `Listen`,
//! acknowledgements and verdicts.

use super::{Control, ListenError, Listener, Phase};
use crate::frame;
use crate::message::{self, Hello, Kind, NoticeAck, NoticeRefuse, Receipt, Role};
use crate::notice::ledger::Verdict;
use crate::time::Instant;
use crate::PROTOCOL_VERSION;

impl<const N: usize> Listener<'_, N> {
    /// Writes the next frame to send into `out` and returns its length, or
    /// `None` if there is nothing to send now. `out` must hold at least
    /// [`frame::max_encoded_len`] of [`frame::MIN_FRAME_LEN`].
    #[must_use = "a frame written to `out` must be sent"]
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        if matches!(self.phase, Phase::Idle | Phase::Failed) {
            return None;
        }
        let max = self.peer_max_frame;
        // A verdict goes before `Listen`: its `Settled` then comes before
        // the inbox, which no longer lists the notice, so a link that
        // carries little (a reconnect after a cut) settles first.
        if self.verdict_due && self.authenticated() {
            if let Some(n) = self.verdict_frame(now, max, out) {
                return Some(n);
            }
        }
        if let Some(c) = self.control.pop_front() {
            let encoded = match c {
                // Hello must fit the smallest frame any relay accepts.
                Control::Hello => message::encode(
                    &Hello {
                        version: PROTOCOL_VERSION,
                        role: Role::Terminal,
                        max_frame: self.config.max_frame,
                        window: 0,
                        caps: message::CAP_PUSH_NOTICE,
                    },
                    frame::MIN_FRAME_LEN,
                    out,
                ),
                Control::Listen => message::encode_empty(Kind::Listen, max, out),
            };
            // Every one of these fits the smallest frame.
            return encoded.ok();
        }
        if self.phase == Phase::Authenticating {
            return match self.auth.poll_transmit(max, out)? {
                Ok(n) => Some(n),
                Err(e) => {
                    self.fail(ListenError::Auth(e));
                    None
                }
            };
        }
        if !self.authenticated() {
            return None;
        }
        let id = self.acks.pop_front()?;
        message::encode(&NoticeAck { id }, max, out).ok()
    }

    /// The verdict due: the one in flight again if it still is, else the
    /// oldest.
    fn verdict_frame(&mut self, now: Instant, max: usize, out: &mut [u8]) -> Option<usize> {
        self.verdict_due = false;
        let (id, verdict) = self
            .in_flight
            .and_then(|id| Some((id, self.ledger.get(id)?.due()?)))
            .or_else(|| self.ledger.first_due())?;
        self.in_flight = Some(id);
        self.verdict_at = Some(now + self.rto());
        match verdict {
            Verdict::Confirmed => message::encode(&Receipt { id }, max, out),
            Verdict::Refused(reason) => message::encode(&NoticeRefuse { id, reason }, max, out),
        }
        .ok()
    }
}
