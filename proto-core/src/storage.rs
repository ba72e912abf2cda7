//! How the state machines reach file bytes.
//!
//! The machines never own file contents: an upload reads through [`ReadAt`]
//! when it builds a data frame, a download writes through [`WriteAt`] as data
//! arrives (and reads back through [`ReadAt`] to re-hash a partial file when
//! it resumes). A host implements these over `std::fs::File`, an MCU over
//! flash or a RAM slice, a test over `Vec<u8>`.

use crate::hash::{ProofHasher, Sha1Digest, Sha1Hasher};

/// Random-access reads of the files of a batch, by index.
pub trait ReadAt {
    /// The storage's error; the machines surface it unchanged.
    type Error: core::fmt::Debug;

    /// Reads up to `buf.len()` bytes of `file` at `offset`; returns how many
    /// were read, 0 only at the end of the file.
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error>;

    /// All of `file`'s bytes where they lie, for a source that holds its
    /// files in memory (RAM, memory-mapped flash): a pass over a whole file
    /// (its SHA-1, a proof of ownership) then hashes them in place instead
    /// of copying each piece into a buffer first. `None`, the default, has
    /// them read with [`read_at`](ReadAt::read_at).
    fn in_place(&self, file: u16) -> Option<&[u8]> {
        let _ = file;
        None
    }
}

/// Random-access writes to the files of a batch, by index.
pub trait WriteAt {
    /// The storage's error; the machines surface it unchanged.
    type Error: core::fmt::Debug;

    /// Writes all of `data` to `file` at `offset`.
    fn write_at(&mut self, file: u16, offset: u64, data: &[u8]) -> Result<(), Self::Error>;
}

/// Why a whole-file read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReadError<E> {
    /// The storage failed.
    Storage(E),
    /// The file ended before `size` bytes.
    ShortFile,
}

/// Reads `size` bytes of `file` from the start and feeds them to `sink`.
fn read_all<R: ReadAt + ?Sized>(
    source: &mut R,
    file: u16,
    size: u64,
    buf: &mut [u8],
    mut sink: impl FnMut(&[u8]),
) -> Result<(), ReadError<R::Error>> {
    if let Some(bytes) = source.in_place(file) {
        let whole = usize::try_from(size)
            .ok()
            .and_then(|size| bytes.get(..size))
            .ok_or(ReadError::ShortFile)?;
        sink(whole);
        return Ok(());
    }
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from(size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = source
            .read_at(file, offset, &mut buf[..want])
            .map_err(ReadError::Storage)?;
        if n == 0 || n > want {
            return Err(ReadError::ShortFile);
        }
        sink(&buf[..n]);
        offset += n as u64;
    }
    Ok(())
}

/// SHA-1 of the first `size` bytes of `file`, read through `buf`.
pub fn sha1_of<R: ReadAt + ?Sized>(
    source: &mut R,
    file: u16,
    size: u64,
    buf: &mut [u8],
) -> Result<Sha1Digest, ReadError<R::Error>> {
    let mut h = Sha1Hasher::new();
    read_all(source, file, size, buf, |d| h.update(d))?;
    Ok(h.digest())
}

/// The proof of ownership of the first `size` bytes of `file` for `nonce`.
pub fn proof_of<R: ReadAt + ?Sized>(
    source: &mut R,
    file: u16,
    size: u64,
    nonce: &crate::hash::Nonce,
    buf: &mut [u8],
) -> Result<Sha1Digest, ReadError<R::Error>> {
    let mut h = ProofHasher::new(nonce);
    read_all(source, file, size, buf, |d| h.update(d))?;
    Ok(h.finish())
}

/// A batch held in memory, one byte slice per file: for tests, simulators and
/// MCUs that keep files in flash (`&'static [u8]`).
impl<T: AsRef<[u8]>, const N: usize> ReadAt for [T; N] {
    type Error = core::convert::Infallible;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error> {
        Ok(read_slice(self.as_slice(), file, offset, buf))
    }
    fn in_place(&self, file: u16) -> Option<&[u8]> {
        self.get(usize::from(file)).map(AsRef::as_ref)
    }
}

impl<T: AsRef<[u8]>> ReadAt for &[T] {
    type Error = core::convert::Infallible;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error> {
        Ok(read_slice(self, file, offset, buf))
    }
    fn in_place(&self, file: u16) -> Option<&[u8]> {
        self.get(usize::from(file)).map(AsRef::as_ref)
    }
}

fn read_slice<T: AsRef<[u8]>>(files: &[T], file: u16, offset: u64, buf: &mut [u8]) -> usize {
    let Some(data) = files.get(usize::from(file)).map(AsRef::as_ref) else {
        return 0;
    };
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let n = buf.len().min(data.len() - start);
    buf[..n].copy_from_slice(&data[start..start + n]);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_file_helpers() {
        let mut files = [b"hello world".as_slice(), b"".as_slice()];
        let mut buf = [0u8; 3];
        assert_eq!(
            sha1_of(&mut files, 0, 11, &mut buf).unwrap(),
            Sha1Digest::of(b"hello world")
        );
        assert_eq!(
            sha1_of(&mut files, 1, 0, &mut buf).unwrap(),
            Sha1Digest::EMPTY
        );
        assert_eq!(
            sha1_of(&mut files, 0, 12, &mut buf),
            Err(ReadError::ShortFile)
        );
        assert_eq!(
            sha1_of(&mut files, 5, 1, &mut buf),
            Err(ReadError::ShortFile)
        );
        let nonce = [1; 32];
        let mut p = ProofHasher::new(&nonce);
        p.update(b"hello world");
        assert_eq!(
            proof_of(&mut files, 0, 11, &nonce, &mut buf).unwrap(),
            p.finish()
        );
    }

    /// A source that hands out at most two bytes a read, and no bytes in
    /// place.
    struct Trickle<'a>(&'a [&'a [u8]]);

    impl ReadAt for Trickle<'_> {
        type Error = core::convert::Infallible;
        fn read_at(
            &mut self,
            file: u16,
            offset: u64,
            buf: &mut [u8],
        ) -> Result<usize, Self::Error> {
            let n = buf.len().min(2);
            Ok(read_slice(self.0, file, offset, &mut buf[..n]))
        }
    }

    #[test]
    fn bytes_in_place_and_bytes_read_give_the_same_answers() {
        let files = [b"hello world".as_slice(), b"".as_slice()];
        let mut buf = [0u8; 8];
        let nonce = [7; 32];
        for (file, size) in [(0, 11), (0, 4), (1, 0), (0, 12), (1, 1), (5, 1)] {
            assert!(files.as_slice().in_place(file).is_some() || file == 5);
            assert!(Trickle(&files).in_place(file).is_none());
            assert_eq!(
                sha1_of(&mut files.as_slice(), file, size, &mut buf),
                sha1_of(&mut Trickle(&files), file, size, &mut buf),
                "file {file}, {size} bytes"
            );
            assert_eq!(
                proof_of(&mut files.as_slice(), file, size, &nonce, &mut buf),
                proof_of(&mut Trickle(&files), file, size, &nonce, &mut buf),
                "file {file}, {size} bytes"
            );
        }
        assert_eq!(
            sha1_of(&mut files.as_slice(), 0, 4, &mut buf).unwrap(),
            Sha1Digest::of(b"hell")
        );
        assert_eq!(
            proof_of(&mut Trickle(&files), 0, 12, &nonce, &mut buf),
            Err(ReadError::ShortFile)
        );
    }
}
