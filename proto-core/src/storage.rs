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
}

impl<T: AsRef<[u8]>> ReadAt for &[T] {
    type Error = core::convert::Infallible;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error> {
        Ok(read_slice(self, file, offset, buf))
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
}
