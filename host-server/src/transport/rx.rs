//! Read buffers of a connection that streams frames in, so that a data
//! frame's bytes go from the socket to the page cache without a copy.
//!
//! An idle or chatty connection reads into its worker thread's buffer and
//! the session copies what it keeps (`tcp`). Once a length-prefixed stream
//! brings large reads, the connection reads into a [`Bulk`] buffer of its
//! own instead: whole frames are cut off its front as one shared [`Bytes`]
//! and handed to the session with each frame, which keeps a data frame's
//! bytes as a slice of it until their write has run
//! ([`Piece::Shared`](crate::jobs::Piece)). The incomplete frame at the end
//! of a read stays at the front of the buffer, and the next read completes
//! it in place, so frames are never gathered in the decoder.
//!
//! A buffer some of whose bytes the session still keeps cannot be read
//! into again; the connection reads into a fresh one meanwhile and takes
//! the old one back once its last byte is written. How many it may wait
//! for is bounded ([`MAX_KEPT`]); past that, frames are handed over
//! without their buffer, and the session copies them.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use pickup_proto::frame::length_prefixed::PREFIX_LEN;
use pickup_proto::frame::MAX_FRAME_LEN;
use tokio::io::AsyncRead;

/// Capacity of one bulk read buffer.
const BULK_BUF: usize = 512 * 1024;

/// Room a read is not started with less of: the largest frame and its
/// prefix, so the one at the front can always be completed in place.
const MIN_ROOM: usize = MAX_FRAME_LEN + PREFIX_LEN;

/// Buffers still partly kept by the session past which frames are no
/// longer shared. A session keeps at most 8 MiB of bytes not yet written
/// (`MAX_PENDING`), 16 buffers' worth; a few more cover the ones whose
/// writes are running. A peer whose small frames each keep a buffer alive
/// cannot make a connection hold more than this many, besides the one it
/// reads into and one let go of, kept in hand to read into next.
const MAX_KEPT: usize = 20;

/// Reads at least this long switch a connection to a [`Bulk`] buffer.
pub(super) const BULK_ENTER: usize = 64 * 1024;

/// A read shorter than this ends bulk reading: the stream has gone quiet.
pub(super) const BULK_LEAVE: usize = 4 * 1024;

/// A connection's own read buffers while frames stream in.
#[derive(Debug)]
pub(super) struct Bulk {
    /// The buffer reads go into; at its front, bytes read and not yet
    /// taken (an incomplete frame, after [`Bulk::take`]).
    current: BytesMut,
    /// Earlier buffers, emptied, that the session kept parts of when they
    /// were last looked at (one it has let go of may wait here to be
    /// read into again).
    kept: Vec<BytesMut>,
    /// Buffers allocated so far.
    #[cfg(test)]
    allocated: usize,
}

impl Bulk {
    /// A connection's first bulk buffer.
    pub(super) fn new() -> Self {
        Bulk {
            current: BytesMut::with_capacity(BULK_BUF),
            kept: Vec::new(),
            #[cfg(test)]
            allocated: 1,
        }
    }

    /// A connection's first bulk buffer, holding `unread`: the start of
    /// a frame that the reads to come complete.
    pub(super) fn starting_with(unread: &[u8]) -> Self {
        let mut bulk = Bulk::new();
        bulk.current.extend_from_slice(unread);
        bulk
    }

    /// Puts bytes taken and not used back in front of those not yet taken
    /// (they are copied: only the rare frame a decoder finished is).
    pub(super) fn put_back(&mut self, bytes: &[u8]) {
        if self.current.is_empty() {
            self.current.extend_from_slice(bytes);
            return;
        }
        let mut joined = BytesMut::with_capacity(bytes.len() + self.current.len());
        joined.extend_from_slice(bytes);
        joined.extend_from_slice(&self.current);
        self.current.clear();
        self.current.extend_from_slice(&joined);
    }

    /// Reads once into the buffer, after the bytes not yet taken; `Ok(0)`
    /// at the end of the stream.
    pub(super) fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        self.make_room();
        tokio_util::io::poll_read_buf(Pin::new(reader), cx, &mut self.current)
    }

    /// Bytes read and not yet taken.
    pub(super) fn unread(&self) -> &[u8] {
        &self.current
    }

    /// Takes the first `len` bytes not yet taken, as a buffer of their own
    /// that the session may keep slices of.
    pub(super) fn take(&mut self, len: usize) -> Bytes {
        self.current.split_to(len).freeze()
    }

    /// Whether frames may be handed over with their buffer: not while
    /// [`MAX_KEPT`] buffers wait for the session to let go of them.
    pub(super) fn shareable(&mut self) -> bool {
        if self.kept.len() >= MAX_KEPT {
            self.kept.retain_mut(|b| !b.try_reclaim(BULK_BUF));
        }
        self.kept.len() < MAX_KEPT
    }

    /// Buffers waiting for the session to let go of them.
    #[cfg(test)]
    pub(super) fn kept(&self) -> usize {
        self.kept.len()
    }

    /// Makes room for a read: in place when the session no longer keeps
    /// any of the buffer's bytes, else in a buffer it has let go of, or a
    /// new one; the bytes not yet taken move to the front.
    fn make_room(&mut self) {
        let unread = self.current.len();
        if self.current.capacity() - unread >= MIN_ROOM
            || self.current.try_reclaim(BULK_BUF - unread)
        {
            return;
        }
        let free = self.kept.iter_mut().position(|b| b.try_reclaim(BULK_BUF));
        let mut next = match free {
            Some(i) => self.kept.swap_remove(i),
            None => {
                #[cfg(test)]
                {
                    self.allocated += 1;
                }
                BytesMut::with_capacity(BULK_BUF)
            }
        };
        next.extend_from_slice(&self.current);
        let mut old = core::mem::replace(&mut self.current, next);
        old.clear();
        self.kept.push(old);
        // Buffers let go of since are dropped: one kept in hand is enough.
        let mut spare = false;
        self.kept.retain_mut(|b| {
            let free = b.try_reclaim(BULK_BUF);
            let keep = !free || !spare;
            spare |= free;
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bulk: &mut Bulk, bytes: &[u8]) {
        let mut reader: &[u8] = bytes;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut total = 0;
        while total < bytes.len() {
            match bulk.poll_read(&mut reader, &mut cx) {
                Poll::Ready(Ok(n)) if n > 0 => total += n,
                other => panic!("a slice reads whole: {other:?}"),
            }
        }
    }

    #[test]
    fn a_buffer_is_read_into_again_once_nothing_keeps_its_bytes() {
        let mut bulk = Bulk::new();
        let mut taken = Vec::new();
        for i in 0..8u8 {
            read(&mut bulk, &[i; 100_000]);
            // All but the last 10,000 bytes, as if a frame were incomplete.
            let whole = bulk.unread().len() - 10_000;
            taken.push(bulk.take(whole));
        }
        assert!(
            bulk.kept() >= 1,
            "a buffer filled while its bytes were kept"
        );
        assert!(bulk.unread() == [7u8; 10_000], "the rest of the last read");
        assert!(taken[1][..10_000] == [0u8; 10_000] && taken[1][10_000..] == [1u8; 90_000]);
        drop(taken);
        let rest = bulk.unread().len();
        drop(bulk.take(rest));
        let allocated = bulk.allocated;
        // Nothing kept: the reads from now on go to buffers already there.
        for i in 0..16u8 {
            read(&mut bulk, &[i; 100_000]);
            let t = bulk.take(100_000);
            assert!(t[..] == [i; 100_000]);
        }
        assert_eq!(bulk.allocated, allocated);
    }

    #[test]
    fn kept_buffers_past_the_bound_stop_sharing_until_let_go_of() {
        let mut bulk = Bulk::new();
        let mut held = Vec::new();
        for _ in 0..MAX_KEPT + 2 {
            // A small piece of each buffer kept: the rest is let go of.
            read(&mut bulk, &[9u8; BULK_BUF - MIN_ROOM + 1]);
            let all = bulk.take(BULK_BUF - MIN_ROOM + 1);
            held.push(all.slice(..10));
        }
        assert!(!bulk.shareable(), "{} buffers kept", bulk.kept());
        held.clear();
        assert!(bulk.shareable());
        assert_eq!(bulk.kept(), 0);
    }
}
