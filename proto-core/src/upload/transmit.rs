//! What an upload sends: control messages, the batch announcement, proofs
//! of ownership, and data read from the source within the relay's window.

use super::{Control, Error, FileState, Phase, Session};
use crate::frame::{self, EncodeError};
use crate::hash::Sha1Digest;
use crate::message::{self, BatchOpen, FileAnnounce, Hello, Proof, Role, CAP_INSTANT_UPLOAD};
use crate::storage::{self, ReadAt};
use crate::time::Instant;
use crate::PROTOCOL_VERSION;

impl<'n, const F: usize> Session<'n, F> {
    /// How frames go to the relay now.
    fn peer_format(&self) -> frame::Format {
        frame::Format {
            framing: self.framing,
            max_frame: self.peer_max_frame,
        }
    }

    /// The role the `Hello` says: the credential's (a relay forwarding
    /// says `Relay`), else a terminal's.
    fn hello_role(&self) -> Role {
        #[cfg(any(test, feature = "auth"))]
        if let Some(auth) = &self.auth {
            return auth.role();
        }
        Role::Terminal
    }

    fn bytes_in_flight(&self) -> u64 {
        self.files.iter().fold(0u64, |t, f| {
            t.saturating_add(f.sent.saturating_sub(f.acked))
        })
    }

    /// Writes the next frame to send into `out` (at least
    /// [`frame::max_encoded_len`] of the relay's frame size, and of
    /// `config.max_frame`) and returns its length, or `None` if there is
    /// nothing to send now. Reads file bytes through `source`; a read error
    /// is returned as is and nothing is marked sent.
    #[must_use = "a frame written to `out` must be sent"]
    pub fn poll_transmit<R: ReadAt + ?Sized>(
        &mut self,
        now: Instant,
        source: &mut R,
        out: &mut [u8],
    ) -> Result<Option<usize>, R::Error> {
        let n = self.next_frame(source, out)?;
        if n.is_some() {
            self.last_sent = now;
        }
        Ok(n)
    }

    fn next_frame<R: ReadAt + ?Sized>(
        &mut self,
        source: &mut R,
        out: &mut [u8],
    ) -> Result<Option<usize>, R::Error> {
        let max = self.peer_format();
        if let Some(c) = self.control.pop_front() {
            if c == Control::Resume && self.token.is_some() {
                // A named batch resumed on a new link binds its names too:
                // the relay applies NamedPut to the batch opened or resumed next.
                if let Some(n) = self.named_frame(out) {
                    // Room: `c` was just taken from the queue.
                    let _ = self.control.push_front(c);
                    return Ok(Some(n));
                }
                self.named_reset();
            }
            let encoded = match c {
                // Hello must fit the smallest frame any relay accepts.
                Control::Hello => message::encode(
                    &Hello {
                        version: PROTOCOL_VERSION,
                        role: self.hello_role(),
                        max_frame: self.config.max_frame,
                        // The relay paces its acks to fit what we keep in flight.
                        window: self.config.max_window,
                        caps: if self.config.instant_upload {
                            CAP_INSTANT_UPLOAD
                        } else {
                            0
                        } | self.attrs_caps()
                            | if cfg!(any(test, feature = "page-link")) && self.config.page_link {
                                message::CAP_PAGE_LINK
                            } else {
                                0
                            }
                            | if cfg!(any(test, feature = "relay-limits"))
                                && self.config.relay_limits
                            {
                                message::CAP_RELAY_LIMITS
                            } else {
                                0
                            }
                            | frame::Framing::offer(self.config.length_prefix),
                    },
                    frame::MIN_FRAME_LEN,
                    out,
                ),
                Control::Resume => match self.token {
                    Some(token) => message::encode(&message::Resume { token }, max, out),
                    None => return Ok(None),
                },
                Control::Join => match self.family {
                    Some(token) => message::encode(&message::Join { token }, max, out),
                    None => return Ok(None),
                },
                Control::Keepalive => message::encode_empty(message::Kind::Keepalive, max, out),
                Control::Goodbye => message::encode_empty(message::Kind::Goodbye, max, out),
            };
            return Ok(encoded.ok());
        }
        match self.phase {
            #[cfg(any(test, feature = "auth"))]
            Phase::Authenticating => return Ok(self.auth_frame(max, out)),
            Phase::Announcing { next } => return Ok(self.announce(next, out)),
            Phase::Transfer => {}
            _ => return Ok(None),
        }
        // Proofs first: they unblock whole files.
        for i in 0..self.files.len() {
            if let FileState::ProofDue(nonce) = self.files[i].state {
                let size = self.files[i].meta.size;
                // `out` doubles as the read buffer; the proof is 20 bytes.
                let proof = match storage::proof_of(source, i as u16, size, &nonce, out) {
                    Ok(p) => p,
                    Err(storage::ReadError::Storage(e)) => return Err(e),
                    // The file shrank under us: send a proof that fails, so
                    // the relay asks for a normal upload, which will be
                    // rejected with a clear reason.
                    Err(storage::ReadError::ShortFile) => Sha1Digest::default(),
                };
                self.files[i].state = FileState::ProofSent;
                let proof = Proof {
                    index: i as u16,
                    proof,
                };
                return Ok(message::encode(&proof, max, out).ok());
            }
        }
        let budget = self.peer_window.saturating_sub(self.bytes_in_flight());
        for i in 0..self.files.len() {
            let f = self.files[i];
            if f.state != FileState::Sending {
                continue;
            }
            if f.sent >= f.meta.size {
                continue;
            }
            if budget == 0 {
                return Ok(None);
            }
            let want = (f.meta.size - f.sent).min(budget);
            let want = usize::try_from(want).unwrap_or(usize::MAX);
            let mut read_result = Ok(0usize);
            let encoded = message::encode_data_with(i as u16, f.sent, want, max, out, |room| {
                read_result = source.read_at(i as u16, f.sent, room);
                match read_result {
                    Ok(n) if n > 0 => Some(n),
                    _ => None,
                }
            });
            match (encoded, read_result) {
                (Ok(len), Ok(n)) => {
                    self.files[i].sent += n as u64;
                    if self.waiting_since.is_none() {
                        self.waiting_since = Some(self.last_sent);
                    }
                    return Ok(Some(len));
                }
                (_, Err(e)) => return Err(e),
                // A read of 0 bytes before the announced end: the file
                // shrank. Send nothing more; the relay's verification of
                // what it has will reject the file with a clear reason.
                (Err(_), Ok(_)) => {
                    self.files[i].sent = f.meta.size;
                    continue;
                }
            }
        }
        Ok(None)
    }

    fn announce(&mut self, next: Option<u16>, out: &mut [u8]) -> Option<usize> {
        let max = self.peer_format();
        let (encoded, following) = match next {
            None => {
                if let Some(n) = self.named_frame(out) {
                    return Some(n);
                }
                self.attrs_reset();
                (
                    message::encode(
                        &BatchOpen {
                            files: self.files.len() as u16,
                            total_size: self.total_size(),
                        },
                        max,
                        out,
                    ),
                    Phase::Announcing { next: Some(0) },
                )
            }
            Some(i) => {
                let f = *self.files.get(usize::from(i))?;
                if let Some(n) = self.attrs_frame(usize::from(i), out) {
                    return Some(n);
                }
                self.attrs_reset();
                let following = if usize::from(i) + 1 < self.files.len() {
                    Phase::Announcing { next: Some(i + 1) }
                } else {
                    Phase::AwaitGrant
                };
                let announce = FileAnnounce {
                    index: i,
                    size: f.meta.size,
                    sha1: f.meta.sha1,
                    name: f.meta.name,
                };
                (message::encode(&announce, max, out), following)
            }
        };
        match encoded {
            Ok(n) => {
                if next.is_none() {
                    // A restarted announcement names its batch again.
                    self.named_reset();
                }
                self.phase = following;
                Some(n)
            }
            Err(EncodeError::TooLarge) => {
                self.fail(Error::InvalidName {
                    file: next.unwrap_or(0),
                });
                None
            }
        }
    }
}

/// File attributes (PROTOCOL.md §5.5), with the feature `file-attrs`.
#[cfg(any(test, feature = "file-attrs"))]
impl<const F: usize> Session<'_, F> {
    /// Only a batch with attributes offers the bit: it is all the bit asks
    /// of the relay.
    fn attrs_caps(&self) -> u32 {
        if self.files.iter().any(|f| f.attrs.is_some()) {
            message::CAP_FILE_ATTRS
        } else {
            0
        }
    }

    /// File `i`'s `FileAttrs`, if it has some, the relay takes them and they
    /// are not sent yet: just before its announcement, while the relay still
    /// builds the batch. A few bytes, they fit any frame; if not, the file
    /// simply goes without them.
    fn attrs_frame(&mut self, i: usize, out: &mut [u8]) -> Option<usize> {
        let attrs = self.files.get(i)?.attrs?;
        if !self.attrs_allowed || self.attrs_sent {
            return None;
        }
        let n = message::encode(&attrs, self.peer_format(), out).ok()?;
        self.attrs_sent = true;
        Some(n)
    }

    /// The next file's attributes are still to be sent.
    fn attrs_reset(&mut self) {
        self.attrs_sent = false;
    }
}

/// Without the feature `file-attrs`: no attributes, and no code for them.
#[cfg(not(any(test, feature = "file-attrs")))]
impl<const F: usize> Session<'_, F> {
    fn attrs_caps(&self) -> u32 {
        0
    }

    fn attrs_frame(&mut self, _: usize, _: &mut [u8]) -> Option<usize> {
        None
    }

    fn attrs_reset(&mut self) {}
}

/// Authentication and named batches (PROTOCOL.md §8), with the feature `auth`.
#[cfg(any(test, feature = "auth"))]
impl<const F: usize> Session<'_, F> {
    /// The handshake's next frame; a name that fits no frame fails the
    /// session.
    fn auth_frame(&mut self, max: frame::Format, out: &mut [u8]) -> Option<usize> {
        match self.auth.as_mut()?.poll_transmit(max, out)? {
            Ok(n) => Some(n),
            Err(e) => {
                self.fail(Error::Auth(e));
                None
            }
        }
    }

    /// `NamedPut`, if the batch is named and it has not gone out before
    /// this announcement's `BatchOpen`: the relay applies it to the next
    /// batch the session opens.
    fn named_frame(&mut self, out: &mut [u8]) -> Option<usize> {
        if !self.named || self.named_sent {
            return None;
        }
        let n = message::encode_empty(message::Kind::NamedPut, self.peer_format(), out).ok()?;
        self.named_sent = true;
        // Its `Done` is what counts, not an earlier one.
        self.named_acked = false;
        Some(n)
    }

    /// The next `BatchOpen` needs its `NamedPut` again.
    fn named_reset(&mut self) {
        self.named_sent = false;
    }
}

/// Without the feature `auth`: anonymous, unnamed batches only.
#[cfg(not(any(test, feature = "auth")))]
impl<const F: usize> Session<'_, F> {
    fn named_frame(&mut self, _: &mut [u8]) -> Option<usize> {
        None
    }

    fn named_reset(&mut self) {}
}
