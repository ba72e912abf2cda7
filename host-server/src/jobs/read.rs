//! Downloading: reading a stream's blob ahead of its frames.

use crate::store::{BlobId, Store, StoreError};

/// Read the next bytes of a stream's blob ahead of the frames that carry them.
#[derive(Debug)]
pub(crate) struct ReadBlob {
    pub(crate) stream: u64,
    pub(crate) blob: BlobId,
    pub(crate) offset: u64,
    pub(crate) len: usize,
    /// A buffer to reuse.
    pub(crate) buf: Vec<u8>,
}

/// What a [`ReadBlob`] read.
#[derive(Debug)]
pub(crate) struct BlobRead {
    pub(crate) stream: u64,
    pub(crate) offset: u64,
    /// The bytes read from `offset` on (fewer than asked only at an error).
    pub(crate) bytes: Vec<u8>,
    pub(crate) result: Result<(), StoreError>,
}

pub(super) fn read_blob(store: &dyn Store, w: ReadBlob) -> BlobRead {
    // A reused buffer keeps its old bytes: every byte kept below is read
    // anew and the rest is cut off, so only growth is zeroed (zeroing a
    // 1 MiB chunk per read would be one more pass over every byte sent).
    let mut bytes = w.buf;
    bytes.resize(w.len, 0);
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
    bytes.truncate(got);
    BlobRead {
        stream: w.stream,
        offset: w.offset,
        bytes,
        result,
    }
}
