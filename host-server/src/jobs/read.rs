//! Downloading: reading a stream's blob ahead of its frames.

use std::sync::Arc;

use bytes::Bytes;

use crate::store::{BlobId, Store, StoreError};

/// The alignment of a read-ahead buffer's bytes: a store that reads past
/// the page cache (`store::contents::direct`) then reads straight into
/// them instead of into a buffer of its own and copying.
const ALIGN: usize = 4096;

/// A read-ahead buffer: room for a chunk of a blob that starts at an
/// [`ALIGN`]ed address, kept by its stream to read into again.
#[derive(Debug, Default)]
pub(crate) struct ReadBuf {
    room: Vec<u8>,
    /// Where the aligned bytes start in `room`.
    skip: usize,
    /// How many of them hold the chunk.
    len: usize,
}

impl ReadBuf {
    /// The first `len` bytes from the aligned start, to read into. Only
    /// growth is zeroed: a reused buffer keeps its old bytes, every one of
    /// which the read overwrites or cuts off (zeroing a chunk per read
    /// would be one more pass over every byte sent).
    fn fill(&mut self, len: usize) -> &mut [u8] {
        if self.room.len() < len + ALIGN {
            self.room.resize(len + ALIGN, 0);
        }
        self.skip = self.room.as_ptr().align_offset(ALIGN).min(ALIGN);
        self.len = len;
        &mut self.room[self.skip..self.skip + len]
    }

    /// Keeps only the first `len` bytes of the chunk.
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The chunk's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.room[self.skip..self.skip + self.len]
    }

    /// The chunk as [`Bytes`] that the frames sent from it slice; once
    /// every such slice is gone, `Arc::try_unwrap` on the returned `Arc`
    /// gives the buffer back.
    pub(crate) fn share(self) -> (Bytes, Arc<ReadBuf>) {
        let buf = Arc::new(self);
        (Bytes::from_owner(Shared(buf.clone())), buf)
    }
}

/// A read-ahead buffer as the owner of [`Bytes`].
struct Shared(Arc<ReadBuf>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// Read the next bytes of a stream's blob ahead of the frames that carry them.
#[derive(Debug)]
pub(crate) struct ReadBlob {
    pub(crate) stream: u64,
    pub(crate) blob: BlobId,
    pub(crate) offset: u64,
    pub(crate) len: usize,
    /// A buffer to reuse.
    pub(crate) buf: ReadBuf,
}

/// What a [`ReadBlob`] read.
#[derive(Debug)]
pub(crate) struct BlobRead {
    pub(crate) stream: u64,
    pub(crate) offset: u64,
    /// The bytes read from `offset` on (fewer than asked only at an error).
    pub(crate) bytes: ReadBuf,
    pub(crate) result: Result<(), StoreError>,
}

pub(super) fn read_blob(store: &dyn Store, w: ReadBlob) -> BlobRead {
    let mut buf = w.buf;
    let bytes = buf.fill(w.len);
    let mut got = 0;
    let mut result = Ok(());
    while got < w.len {
        match store.read_blob(w.blob, w.offset + got as u64, &mut bytes[got..]) {
            Ok(0) => {
                result = Err(StoreError::Corrupt(format!("blob {} is short", w.blob.0)));
                break;
            }
            Ok(n) => got += n,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    buf.truncate(got);
    BlobRead {
        stream: w.stream,
        offset: w.offset,
        bytes: buf,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_aligned_given_back_once_its_slices_are_gone_and_keeps_its_room() {
        let mut buf = ReadBuf::default();
        buf.fill(10_000).copy_from_slice(&[7u8; 10_000]);
        assert_eq!(buf.bytes().as_ptr() as usize % ALIGN, 0);
        buf.truncate(9_000);
        let (bytes, arc) = buf.share();
        assert_eq!(bytes.len(), 9_000);
        let slice = bytes.slice(100..200);
        drop(bytes);
        // A frame still holds a slice: the buffer is not free.
        let arc = Arc::try_unwrap(arc).unwrap_err();
        drop(slice);
        let mut buf = Arc::try_unwrap(arc).unwrap();
        let room = buf.room.as_ptr();
        // Read into again: the same room, aligned, the old bytes kept.
        let again = buf.fill(5_000);
        assert_eq!(again.as_ptr() as usize % ALIGN, 0);
        assert!(again.iter().all(|&b| b == 7));
        assert_eq!(buf.room.as_ptr(), room);
    }
}
