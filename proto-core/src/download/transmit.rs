//! What a download sends: hello, fetch, reads and acks (the relay's credit),
//! keepalives and goodbye.

use super::{Control, Phase, Session, Sink};
use crate::frame;
use crate::message::{self, Ack, Fetch, Hello, Read, Role};
use crate::storage::ReadAt;
use crate::time::Instant;
use crate::PROTOCOL_VERSION;

impl<const F: usize> Session<F> {
    /// Writes the next frame to send into `out` and returns its length, or
    /// `None` if there is nothing to send now. `out` must hold at least
    /// [`frame::max_encoded_len`] of [`frame::MIN_FRAME_LEN`]; it is also
    /// the buffer through which a resumed file's prefix is re-hashed.
    #[must_use = "a frame written to `out` must be sent"]
    pub fn poll_transmit<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
        out: &mut [u8],
    ) -> Result<Option<usize>, <S as ReadAt>::Error> {
        if self.phase == Phase::Reading && self.prefix_pending {
            self.rehash_prefix(now, sink, out)?;
        }
        let Some(c) = self.control.pop_front() else {
            return Ok(None);
        };
        let window = self.config.window;
        let credit = self.credit.get();
        let max = self.peer_max_frame;
        let encoded = match c {
            // Hello must fit the smallest frame any relay accepts.
            Control::Hello => message::encode(
                &Hello {
                    version: PROTOCOL_VERSION,
                    role: Role::Terminal,
                    max_frame: self.config.max_frame,
                    window,
                    // Without the feature a terminal cannot take them.
                    caps: if cfg!(any(test, feature = "file-attrs")) && self.config.file_attrs {
                        message::CAP_FILE_ATTRS
                    } else {
                        0
                    },
                },
                frame::MIN_FRAME_LEN,
                out,
            ),
            Control::Fetch => message::encode(&Fetch { code: self.code }, max, out),
            Control::Read | Control::Ack if self.phase != Phase::Reading => return Ok(None),
            Control::Read => {
                self.credit_end = self.received.saturating_add(u64::from(credit));
                let read = Read {
                    code: self.code,
                    file: self.current,
                    offset: self.received,
                    len: credit,
                };
                message::encode(&read, max, out)
            }
            Control::Ack => {
                self.credit_end = self.received.saturating_add(u64::from(credit));
                let ack = Ack {
                    file: self.current,
                    offset: self.received,
                    window: credit,
                };
                message::encode(&ack, max, out)
            }
            Control::Keepalive => message::encode_empty(message::Kind::Keepalive, max, out),
            Control::Goodbye => message::encode_empty(message::Kind::Goodbye, max, out),
        };
        let n = encoded.ok();
        if n.is_some() {
            self.last_sent = now;
        }
        Ok(n)
    }
}
