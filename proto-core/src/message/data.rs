//! [`Data`], the one message whose payload is not postcard: encoded straight
//! from a file read into the frame (decoding, in `decode`, borrows the
//! payload from the frame's body).

use super::Kind;
#[cfg(any(test, feature = "length-prefixed"))]
use crate::frame::length_prefixed::{self, SplitFrame};
use crate::frame::{self, EncodeError};
use crate::PROTOCOL_VERSION;

/// 0x15, either way: file bytes at an offset. Upload data flows terminal →
/// relay; download data relay → terminal in answer to [`Read`](super::Read).
///
/// Body layout: `varint(file) ‖ varint(offset) ‖ bytes…` to the end of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    /// File index.
    pub file: u16,
    /// Offset of the first byte.
    pub offset: u64,
    /// The bytes.
    pub bytes: &'a [u8],
}

/// The most bytes of `(file, offset)` prefix a [`Data`] body can have.
pub const DATA_PREFIX_MAX: usize = 3 + 10;

impl Data<'_> {
    /// The largest payload that always fits a raw frame of `max_frame` bytes.
    pub const fn max_payload(max_frame: usize) -> usize {
        max_frame.saturating_sub(frame::OVERHEAD + DATA_PREFIX_MAX)
    }
}

/// Encodes a [`Data`] frame whose payload `fill` writes straight into the
/// frame (e.g. a file read), so the bytes are copied once. `fill` gets at
/// most `max_len` bytes of room and returns how many it wrote.
pub fn encode_data_with(
    file: u16,
    offset: u64,
    max_len: usize,
    max_frame: impl Into<frame::Format>,
    out: &mut [u8],
    fill: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> Result<usize, EncodeError> {
    frame::encode_with(PROTOCOL_VERSION, Kind::Data as u8, max_frame, out, |buf| {
        let n = postcard::to_slice(&(file, offset), buf).ok()?.len();
        let room = buf.len().checked_sub(n)?.min(max_len);
        let written = fill(buf.get_mut(n..n + room)?)?;
        (written <= room).then_some(n + written)
    })
}

/// Room [`encode_data_split`] needs for a frame's head: the length prefix,
/// the header and the largest `(file, offset)` prefix.
#[cfg(any(test, feature = "length-prefixed"))]
pub const DATA_SPLIT_HEAD_LEN: usize =
    length_prefixed::PREFIX_LEN + frame::HEADER_LEN + DATA_PREFIX_MAX;

/// Encodes a length-prefixed [`Data`] frame around `bytes` without copying
/// them: its head goes to `head` ([`DATA_SPLIT_HEAD_LEN`] bytes suffice),
/// and the frame carries as many of `bytes` as a raw frame of `max_frame`
/// bytes holds. A sender writes the head, those bytes and the trailer with
/// one vectored write; the wire bytes are [`encode_data_with`]'s.
#[cfg(any(test, feature = "length-prefixed"))]
pub fn encode_data_split(
    file: u16,
    offset: u64,
    bytes: &[u8],
    max_frame: usize,
    head: &mut [u8],
) -> Result<SplitFrame, EncodeError> {
    length_prefixed::encode_split(
        PROTOCOL_VERSION,
        Kind::Data as u8,
        max_frame,
        head,
        |buf| Some(postcard::to_slice(&(file, offset), buf).ok()?.len()),
        bytes,
    )
}
