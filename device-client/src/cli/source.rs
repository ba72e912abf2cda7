//! The upload source: the files of a batch, read at offsets, and their
//! SHA-1 before announcing.

use std::fs::File;
use std::io::{self, ErrorKind};

use pickup_proto::storage::ReadAt;
use pickup_proto::Sha1Digest;

use crate::hash_thread::read_at as read_retrying;

/// The files of an upload, opened once, read at offsets.
pub(crate) struct SourceFiles {
    pub files: Vec<File>,
}

impl ReadAt for SourceFiles {
    type Error = io::Error;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let f = self
            .files
            .get(usize::from(file))
            .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "no such file in the batch"))?;
        read_retrying(f, offset, buf)
    }
}

/// SHA-1 of a whole open file, reporting bytes as it goes.
pub(crate) fn sha1_file(
    file: &File,
    mut progress: impl FnMut(u64),
) -> io::Result<(u64, Sha1Digest)> {
    let mut h = pickup_proto::hash::Sha1Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = read_retrying(file, offset, &mut buf)?;
        if n == 0 {
            return Ok((offset, h.digest()));
        }
        h.update(&buf[..n]);
        offset += n as u64;
        progress(n as u64);
    }
}
