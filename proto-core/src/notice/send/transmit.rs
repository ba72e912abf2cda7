//! What a sender writes: hello, the handshake, the request, keepalives.

use super::{Control, Phase, Request, SendError, SendEvent, Sender};
use crate::error::ErrorCode;
use crate::frame;
use crate::message::{self, AllowSender, DeliveryStatus, Hello, Kind, Push};
use crate::time::Instant;
use crate::PROTOCOL_VERSION;

impl Sender<'_> {
    /// Writes the next frame to send into `out` and returns its length, or
    /// `None` if there is nothing to send now. `out` must hold at least
    /// [`frame::max_encoded_len`] of [`frame::MIN_FRAME_LEN`].
    #[must_use = "a frame written to `out` must be sent"]
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        if matches!(self.phase, Phase::Idle | Phase::Failed) {
            return None;
        }
        let max = self.peer_max_frame;
        let encoded = if let Some(c) = self.control.pop_front() {
            match c {
                // Hello must fit the smallest frame any relay accepts.
                Control::Hello => message::encode(
                    &Hello {
                        version: PROTOCOL_VERSION,
                        role: self.auth.role(),
                        max_frame: self.config.max_frame,
                        window: 0,
                        caps: message::CAP_PUSH_NOTICE,
                    },
                    frame::MIN_FRAME_LEN,
                    out,
                ),
                Control::Keepalive => message::encode_empty(Kind::Keepalive, max, out),
            }
            .ok()
        } else if self.phase == Phase::Authenticating {
            match self.auth.poll_transmit(max, out)? {
                Ok(n) => Some(n),
                Err(e) => {
                    self.fail(SendError::Auth(e));
                    None
                }
            }
        } else {
            self.request(now, max, out)
        };
        if encoded.is_some() {
            self.last_sent = now;
        }
        encoded
    }

    /// The request in progress, if it is due.
    fn request(&mut self, now: Instant, max: usize, out: &mut [u8]) -> Option<usize> {
        if self.phase != Phase::Ready {
            return None;
        }
        let p = self.pending.as_mut().filter(|p| p.due)?;
        p.due = false;
        // A fresh answer: its status lines count from the first.
        p.seen = 0;
        let encoded = match &p.request {
            Request::Push {
                push_id,
                code,
                terminal,
            } => message::encode(
                &Push {
                    push_id: *push_id,
                    code: *code,
                    terminal,
                },
                max,
                out,
            ),
            Request::Status { code } => message::encode(&DeliveryStatus { code: *code }, max, out),
            Request::AllowSender { sender, allow } => message::encode(
                &AllowSender {
                    sender,
                    allow: *allow,
                },
                max,
                out,
            ),
        };
        match encoded {
            Ok(n) => {
                self.retry_at = Some(now + self.rto());
                Some(n)
            }
            // A 32-byte terminal fits every frame (64 bytes at least) and
            // a buffer of its encoded form; a sender of up to 65 bytes
            // (`user@pair`) may not. Sent again it would not fit either.
            Err(_) => {
                let request = p.request.kind();
                self.pending = None;
                self.retry_at = None;
                self.push_event(SendEvent::Refused {
                    request,
                    code: ErrorCode::TooLarge,
                    retry_after_ms: 0,
                });
                None
            }
        }
    }
}
