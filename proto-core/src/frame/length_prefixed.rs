//! The length-prefixed framing, for reliable byte streams (feature
//! `length-prefixed`, which `std` brings).
//!
//! ```text
//!  ┌────────┬─────────────────────┬──────────────────────────────────────┐
//!  │ marker │ length, u24 LE      │ raw frame: version, kind, body, CRC  │
//!  │ 0x00   │ 6..=max_frame       │ (the same bytes COBS would encode)   │
//!  └────────┴─────────────────────┴──────────────────────────────────────┘
//! ```
//!
//! COBS costs a pass over every byte on each side to buy resynchronisation,
//! which TCP and TLS never need: they lose no bytes and reorder none. Here
//! the raw frame travels as it is: a frame that arrives whole in one read
//! is checked where it lies (its CRC-32C is the only pass over it), and
//! only one split across reads is gathered in the decoder's buffer.
//!
//! The marker is 0x00 because no COBS frame can start with it (a zero is
//! only ever a COBS delimiter): a decoder expecting this framing that gets
//! COBS fails on the first byte with [`Dropped::WrongFraming`] instead of
//! reading a length out of COBS bytes. A frame whose length is out of
//! bounds is skipped whole (the length is still trusted), as is one whose
//! CRC does not match; after a wrong marker nothing can be trusted: the
//! decoder reports [`Dropped::WrongFraming`] once and drops (counting the
//! bytes) the rest of the stream until [`Decoder::reset`].

use super::{crc32c_append, Decoder, Dropped, EncodeError, CRC_LEN, HEADER_LEN, OVERHEAD};

/// The byte every length-prefixed frame starts with.
pub const MARKER: u8 = 0x00;
/// Bytes before the raw frame: the marker and a 3-byte length.
pub const PREFIX_LEN: usize = 4;
/// The largest raw frame the 3-byte length can describe.
pub const MAX_RAW_LEN: usize = 0xff_ffff;

/// How many leading bytes of `input` a [`Decoder`] between frames can be
/// fed without holding part of a frame: the whole length-prefixed frames
/// at its front, and everything if a frame that is not well-formed
/// follows them (a wrong marker, or a length out of `OVERHEAD..=max_frame`:
/// the decoder drops it, and says so).
///
/// For a driver that reads into buffers of its own: it feeds whole frames,
/// which the decoder checks where they lie, and keeps the incomplete one
/// at the end for the next read to complete in place.
pub fn whole_frames(input: &[u8], max_frame: usize) -> usize {
    let mut at = 0;
    while let Some(head) = input.get(at..at + PREFIX_LEN) {
        let want = u32::from_le_bytes([head[1], head[2], head[3], 0]) as usize;
        if head[0] != MARKER || !(OVERHEAD..=max_frame).contains(&want) {
            return input.len();
        }
        if input.len() - at - PREFIX_LEN < want {
            break;
        }
        at += PREFIX_LEN + want;
    }
    at
}

/// A frame [`encode_split`] laid out around a payload that stays where it
/// lies: on the wire it is `head[..head_len]`, then the first
/// `payload_len` bytes of the payload, then `trailer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitFrame {
    /// Bytes of `head` written: the prefix, the header and the body's
    /// bytes before the payload.
    pub head_len: usize,
    /// Bytes of the payload the frame carries (as many as fit the frame).
    pub payload_len: usize,
    /// The frame's CRC-32C, which follows the payload.
    pub trailer: [u8; CRC_LEN],
}

/// Encodes a frame whose body is a short part that `write_body_head`
/// writes, then as much of `payload` as fits a raw frame of `max_frame`
/// bytes, without copying the payload: a sender hands the three parts of
/// the [`SplitFrame`] to one vectored write. The bytes are those
/// [`encode_with`](super::encode_with) gives for the same body. `head`
/// needs room for the prefix, the header and the body's head.
pub fn encode_split(
    version: u8,
    kind: u8,
    max_frame: usize,
    head: &mut [u8],
    write_body_head: impl FnOnce(&mut [u8]) -> Option<usize>,
    payload: &[u8],
) -> Result<SplitFrame, EncodeError> {
    let raw_cap = max_frame.min(MAX_RAW_LEN);
    let body = head
        .get_mut(PREFIX_LEN + HEADER_LEN..)
        .ok_or(EncodeError::TooLarge)?;
    let room_for_head = body.len();
    // A writer that claims more than its room is refused, not trusted.
    let body_head = write_body_head(body)
        .filter(|&n| n <= room_for_head)
        .ok_or(EncodeError::TooLarge)?;
    let room = raw_cap
        .checked_sub(OVERHEAD + body_head)
        .ok_or(EncodeError::TooLarge)?;
    let payload = &payload[..payload.len().min(room)];
    let head_len = PREFIX_LEN + HEADER_LEN + body_head;
    head[PREFIX_LEN] = version;
    head[PREFIX_LEN + 1] = kind;
    let crc = crc32c_append(super::crc32c(&head[PREFIX_LEN..head_len]), payload);
    write_prefix(head, HEADER_LEN + body_head + payload.len() + CRC_LEN);
    Ok(SplitFrame {
        head_len,
        payload_len: payload.len(),
        trailer: crc.to_le_bytes(),
    })
}

/// Where a length-prefixed frame stands in a [`Decoder`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct State {
    /// Prefix bytes received of the current frame (0..=`PREFIX_LEN`).
    got: usize,
    /// The length bytes received so far.
    length: [u8; 3],
    /// The raw frame's length, once the prefix is complete.
    want: usize,
    /// Bytes still to skip of a frame dropped for its length.
    skip: usize,
    /// A wrong marker was seen: the stream has lost its place.
    lost: bool,
    /// Still in COBS until a frame starts with the marker.
    pending: bool,
}

impl State {
    /// Part of a frame has arrived, or more bytes are to be skipped.
    pub(super) fn in_frame(&self) -> bool {
        self.got > 0 || self.skip > 0 || self.lost
    }

    /// The state after [`Decoder::reset`]: no frame, the stream's place
    /// found again, and still waiting for the marker if it was.
    pub(super) fn restart(self) -> State {
        State {
            pending: self.pending,
            ..State::default()
        }
    }

    /// Decoding COBS until the marker.
    pub(super) fn pending(&self) -> bool {
        self.pending
    }
}

/// A frame [`Decoder::feed_prefixed`] found and checked.
pub(super) enum Found<'i> {
    /// `len` bytes at the front of the decoder's buffer.
    Buffered(usize),
    /// A frame the input held whole, where it lies.
    InPlace(&'i [u8]),
}

/// Writes the prefix of a `raw_len`-byte raw frame already at
/// `out[PREFIX_LEN..]` and returns the frame's length on the wire. The
/// caller keeps `raw_len` within `MAX_RAW_LEN` and `out`.
pub(super) fn write_prefix(out: &mut [u8], raw_len: usize) -> usize {
    let length = (raw_len as u32).to_le_bytes();
    out[0] = MARKER;
    out[1..PREFIX_LEN].copy_from_slice(&length[..3]);
    PREFIX_LEN + raw_len
}

impl<B: AsMut<[u8]> + AsRef<[u8]>> Decoder<B> {
    /// Keeps decoding COBS until a frame starts with [`MARKER`], and the
    /// length-prefixed framing from that frame on.
    ///
    /// For a relay: its decoder cannot know which of the terminal's frames
    /// is the first one sent after the terminal read the `Welcome` (a
    /// terminal may repeat its `Hello` in COBS meanwhile), but no COBS frame
    /// starts with the marker, so the stream says so itself (PROTOCOL.md
    /// §2.1). A terminal, which knows its switch point (right after the
    /// `Welcome`), calls [`Decoder::set_framing`] instead.
    pub fn switch_at_marker(&mut self) {
        if self.prefixed.is_none() {
            self.prefixed = Some(State {
                pending: true,
                ..State::default()
            });
        }
    }

    /// Told to [switch at the marker](Decoder::switch_at_marker) and not
    /// seen it yet. A driver that releases idle decoders remembers when
    /// this turned false, and [sets](Decoder::set_framing) the framing on
    /// the next one.
    pub fn awaiting_marker(&self) -> bool {
        self.prefixed.is_some_and(|s| s.pending)
    }

    /// [`Decoder::feed`] in the length-prefixed framing (or COBS before
    /// the marker, see [`Decoder::switch_at_marker`]). A frame that
    /// arrives whole in one `input` is checked there: a data frame's
    /// payload then costs no copy, only its CRC-32C.
    pub(super) fn feed_prefixed<'i>(
        &mut self,
        input: &mut &'i [u8],
    ) -> Option<Result<Found<'i>, Dropped>> {
        let capacity = self.buf.as_ref().len();
        loop {
            let state = self.prefixed.as_mut()?;
            if state.pending {
                let whole: &[u8] = input;
                let &first = whole.first()?;
                if first == MARKER && self.consumed == 0 && !self.skipping {
                    state.pending = false;
                    continue;
                }
                // The rest of one COBS frame: up to and with its delimiter,
                // so that the COBS decoder never reads the marker after it.
                let end = whole
                    .iter()
                    .position(|&b| b == 0)
                    .map_or(whole.len(), |i| i + 1);
                let mut head = &whole[..end];
                let found = self.feed_cobs(&mut head);
                *input = &whole[end - head.len()..];
                match found {
                    Some(found) => return Some(found.map(Found::Buffered)),
                    None => continue,
                }
            }
            if input.is_empty() {
                return None;
            }
            let state = self.prefixed.as_mut()?;
            if state.lost {
                // Said once: a split of the input must not change how
                // often (the fuzzer's invariant), and the driver knows.
                self.stats.dropped_bytes += input.len() as u64;
                *input = &[];
                return None;
            }
            if state.skip > 0 {
                let n = state.skip.min(input.len());
                state.skip -= n;
                *input = &input[n..];
                self.stats.dropped_bytes += n as u64;
                continue;
            }
            if state.got < PREFIX_LEN {
                let (&byte, rest) = input.split_first()?;
                *input = rest;
                self.consumed += 1;
                if state.got == 0 && byte != MARKER {
                    state.lost = true;
                    self.stats.dropped_bytes += input.len() as u64;
                    *input = &[];
                    return Some(Err(self.drop_frame(Dropped::WrongFraming, false)));
                }
                if let Some(slot) = state.length.get_mut(state.got.wrapping_sub(1)) {
                    *slot = byte;
                }
                state.got += 1;
                if state.got < PREFIX_LEN {
                    continue;
                }
                let [a, b, c] = state.length;
                let want = u32::from_le_bytes([a, b, c, 0]) as usize;
                let why = if want < OVERHEAD {
                    Dropped::TooShort
                } else if want > capacity {
                    Dropped::Oversize
                } else {
                    state.want = want;
                    self.len = 0;
                    continue;
                };
                // The length is trusted, so the next frame is found past
                // this one's bytes.
                *state = State {
                    skip: want,
                    ..State::default()
                };
                return Some(Err(self.drop_frame(why, false)));
            }
            if self.len == 0 && input.len() >= state.want {
                let whole: &'i [u8] = input;
                let (raw, rest) = whole.split_at(state.want);
                *state = State::default();
                *input = rest;
                self.consumed += raw.len() as u64;
                let sound = super::check(raw);
                return Some(self.checked(sound).map(|()| Found::InPlace(raw)));
            }
            let n = (state.want - self.len).min(input.len());
            let done = self.len + n == state.want;
            if done {
                *state = State::default();
            }
            let (take, rest) = input.split_at(n);
            self.buf.as_mut()[self.len..self.len + n].copy_from_slice(take);
            self.len += n;
            self.consumed += n as u64;
            *input = rest;
            if done {
                return Some(self.finish().map(Found::Buffered));
            }
        }
    }
}

#[cfg(test)]
mod tests;
