//! What a stream connection has to write: frames the session encoded, and
//! download payloads that stay in the buffers the file was read into.
//!
//! A `Data` frame the session gives out split ([`Transmit::Split`]) is its
//! head and CRC in the encode buffer around a slice of a read-ahead buffer;
//! one vectored write sends the parts in order, so the relay itself copies
//! no download byte between the file read and the socket.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::session::{Session, Transmit};

/// Bytes of frames queued before the connection waits for the socket.
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// Parts handed to one vectored write at most (Linux takes 1,024; a
/// high-water mark of 64 KiB frames needs about ten).
const MAX_PARTS_PER_WRITE: usize = 64;

/// One stretch of what waits, in order.
enum Part {
    /// Bytes of [`Outgoing::buf`].
    Encoded(Range<usize>),
    /// A split frame's payload.
    Payload(Bytes),
}

/// Frames waiting for the socket. The encode buffer keeps its length while
/// frames flow (the bytes past `end` are scratch the next frame is encoded
/// over), so a frame of a few hundred bytes does not cost zeroing the
/// frame-sized room it is encoded into.
#[derive(Default)]
pub(super) struct Outgoing {
    buf: Vec<u8>,
    /// Bytes of `buf` in use.
    end: usize,
    parts: VecDeque<Part>,
    /// Bytes of the first part already written.
    written: usize,
}

impl Outgoing {
    /// Whether nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Takes frames from the session until [`WRITE_HIGH_WATER`] bytes wait
    /// or it has nothing more to say (call it once everything was
    /// written). With `split`, download payloads stay where they were read.
    pub(super) fn fill(&mut self, session: &mut Session, split: bool) {
        self.end = 0;
        self.written = 0;
        self.parts.clear();
        let mut queued = 0;
        while queued < WRITE_HIGH_WATER && session.wants_transmit() {
            let out = self.room(session.transmit_buffer_len());
            let frame = if split {
                session.poll_transmit_split(out)
            } else {
                session.poll_transmit(out).map(Transmit::Whole)
            };
            match frame {
                Some(frame) => queued += self.push(frame),
                None => break,
            }
        }
    }

    /// At least `len` bytes of `buf` after what is in use, for the next
    /// frame to be encoded into.
    fn room(&mut self, len: usize) -> &mut [u8] {
        let room = self.end + len;
        if self.buf.len() < room {
            self.buf.resize(room, 0);
        }
        &mut self.buf[self.end..room]
    }

    /// A frame encoded into [`room`](Self::room) waits now; returns its
    /// length on the wire.
    fn push(&mut self, frame: Transmit) -> usize {
        match frame {
            Transmit::Whole(n) => {
                self.push_encoded(n);
                n
            }
            Transmit::Split {
                head_len,
                payload,
                trailer,
            } => {
                self.push_encoded(head_len);
                let len = head_len + payload.len() + trailer.len();
                self.parts.push_back(Part::Payload(payload));
                // The head took a few bytes of the frame-sized room.
                self.buf[self.end..self.end + trailer.len()].copy_from_slice(&trailer);
                self.push_encoded(trailer.len());
                len
            }
        }
    }

    /// The next `n` bytes of `buf`, encoded in place, wait too.
    fn push_encoded(&mut self, n: usize) {
        let start = self.end;
        self.end += n;
        if let Some(Part::Encoded(last)) = self.parts.back_mut() {
            if last.end == start {
                last.end = self.end;
                return;
            }
        }
        self.parts.push_back(Part::Encoded(start..self.end));
    }

    /// What waits, in order, as slices for one vectored write; returns
    /// how many of `slices` it set.
    fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut skip = self.written;
        let mut n = 0;
        for (part, slot) in self.parts.iter().zip(slices.iter_mut()) {
            let bytes = match part {
                Part::Encoded(r) => &self.buf[r.clone()],
                Part::Payload(b) => &b[..],
            };
            *slot = IoSlice::new(&bytes[skip..]);
            skip = 0;
            n += 1;
        }
        n
    }

    /// `n` more bytes were written: parts written whole are dropped (a
    /// payload's buffer can then be read into again).
    pub(super) fn advance(&mut self, mut n: usize) {
        while let Some(part) = self.parts.front() {
            let len = match part {
                Part::Encoded(r) => r.len(),
                Part::Payload(b) => b.len(),
            } - self.written;
            if n < len {
                self.written += n;
                return;
            }
            n -= len;
            self.written = 0;
            self.parts.pop_front();
        }
    }
}

/// Writes what waits (as much as the stream takes in one call), or, with
/// nothing waiting, flushes what the stream holds; `Ok(0)` after a flush.
/// Both are cancel-safe, as `select!` needs: a write that did not
/// complete took nothing.
pub(super) async fn write_or_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &Outgoing,
) -> std::io::Result<usize> {
    if out.is_empty() {
        return writer.flush().await.map(|()| 0);
    }
    let mut slices = [IoSlice::new(&[]); MAX_PARTS_PER_WRITE];
    let n = out.io_slices(&mut slices);
    writer.write_vectored(&slices[..n]).await
}

#[cfg(test)]
mod tests;
