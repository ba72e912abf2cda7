//! What a download sends: hello, fetch, reads and acks (the relay's credit),
//! keepalives and goodbye.

#[cfg(any(test, feature = "auth"))]
use super::Error;
use super::{Control, Phase, Session, Sink};
#[cfg(any(test, feature = "auth"))]
use crate::error::ErrorCode;
use crate::frame::{self, EncodeError};
#[cfg(any(test, feature = "auth"))]
use crate::message::FetchNamed;
use crate::message::{self, Ack, Fetch, Hello, Read, Role};
use crate::storage::ReadAt;
use crate::time::Instant;
use crate::PROTOCOL_VERSION;

impl<const F: usize> Session<'_, F> {
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
            return Ok(self.auth_frame(now, out));
        };
        let window = self.config.window;
        let credit = self.credit.get();
        let max = frame::Format {
            framing: self.framing,
            max_frame: self.peer_max_frame,
        };
        let encoded = match c {
            // Hello must fit the smallest frame any relay accepts.
            Control::Hello => message::encode(
                &Hello {
                    version: PROTOCOL_VERSION,
                    role: self.hello_role(),
                    max_frame: self.config.max_frame,
                    window,
                    // Without the feature a terminal cannot take them.
                    caps: if cfg!(any(test, feature = "file-attrs")) && self.config.file_attrs {
                        message::CAP_FILE_ATTRS
                    } else {
                        0
                    } | frame::Framing::offer(self.config.length_prefix),
                },
                frame::MIN_FRAME_LEN,
                out,
            ),
            Control::Fetch => self.fetch(max, out),
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

impl<const F: usize> Session<'_, F> {
    /// The role the `Hello` says: the credential's, else a terminal's.
    fn hello_role(&self) -> Role {
        #[cfg(any(test, feature = "auth"))]
        if let Some(auth) = &self.auth {
            return auth.role();
        }
        Role::Terminal
    }

    /// `Fetch` by code, or `FetchNamed`; an owner and name too long for
    /// the relay's frames fail the session (no retry mends that).
    fn fetch(&mut self, max: frame::Format, out: &mut [u8]) -> Result<usize, EncodeError> {
        #[cfg(any(test, feature = "auth"))]
        if let Some(n) = self.named {
            let fetch = FetchNamed {
                owner: n.owner,
                name: n.name,
            };
            let encoded = message::encode(&fetch, max, out);
            if encoded.is_err() {
                self.fail(Error::Relay(ErrorCode::InvalidName));
            }
            return encoded;
        }
        message::encode(&Fetch { code: self.code }, max, out)
    }

    /// The handshake's next frame while authenticating; a name that fits
    /// no frame fails the session.
    #[cfg(any(test, feature = "auth"))]
    fn auth_frame(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        if self.phase != Phase::Authenticating {
            return None;
        }
        match self.auth.as_mut()?.poll_transmit(
            frame::Format {
                framing: self.framing,
                max_frame: self.peer_max_frame,
            },
            out,
        )? {
            Ok(n) => {
                self.last_sent = now;
                Some(n)
            }
            Err(e) => {
                self.fail(Error::Auth(e));
                None
            }
        }
    }

    #[cfg(not(any(test, feature = "auth")))]
    fn auth_frame(&mut self, _: Instant, _: &mut [u8]) -> Option<usize> {
        None
    }
}
