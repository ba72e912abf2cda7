//! Held blobs hashed where they lie in the page cache: a proof of ownership
//! reads a whole blob (PROTOCOL.md §7) while its terminal hashes the same
//! bytes, and a `pread` would first copy each of them out of the page
//! cache. Mapped, the hash reads the page cache itself: on the bench's
//! machine a pass over 1 GiB in the page cache took 1.03–1.15x an
//! in-memory SHA-1 pass through 256 KiB reads and 0.93–1.02x through a
//! populated map (bench/RESULTS.md, session 22).
//!
//! This is the relay's one use of `unsafe` (`memmap2`'s map call): a
//! mapping stays sound only while nobody shrinks the file under it; a page
//! past a new end raises `SIGBUS`. The relay never shrinks a blob:
//! [`Contents::promote`](super::Contents::promote) renames a finished,
//! fsynced partial into `blobs/`, and from then on its file is only read,
//! or unlinked, which leaves a mapping valid. (A blob whose row then fails
//! to commit goes back to `partial/`, but no proof has mapped it: a proof
//! hashes only blobs that a committed row names.) Partial files, which a
//! reset or a recovery does cut, are never mapped. What the relay cannot rule
//! out is another process cutting a blob file in its data directory while
//! it is hashed; that ends the relay as it would end any program reading
//! a mapped file, and no stored byte is lost by it. The length is checked
//! against the file before mapping, so a blob that is already short is an
//! error, not a signal.
//!
//! A blob is mapped a window at a time ([`WINDOW`]), each populated up
//! front (`MAP_POPULATE`: one call instead of a page fault per few pages).
//! The address space a hash takes stays small (32-bit hosts, many proofs
//! at once), and so does what a window of a blob that is not in the page
//! cache makes the hash wait for: over a 1 GiB file just dropped from the
//! page cache, windows of 64 MiB took 1.31–1.57 s, against 1.00–1.16 s
//! for 256 KiB `pread`s and 0.76–0.90 s for windows of 8 MiB; with the
//! file in the page cache, 0.75–0.79 s and 0.78–0.82 s for the two
//! window sizes and 0.88–0.92 s for the reads (three rounds each, on the
//! bench's machine).

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};

/// Bytes mapped at a time.
pub(super) const WINDOW: usize = 8 * 1024 * 1024;

/// Blobs shorter than this are read, not mapped: a map, its population and
/// its unmapping cost more system calls and page-table work than a few
/// reads into a buffer the hash then finds in the CPU's cache.
pub(super) const MIN_MAPPED: u64 = 1024 * 1024;

/// Hands the first `len` bytes of `file` to `sink`, in order, a window of
/// at most `window` bytes at a time. An error if the file holds fewer.
pub(super) fn scan(
    file: &File,
    len: u64,
    window: usize,
    sink: &mut dyn FnMut(&[u8]),
) -> io::Result<()> {
    let size = file.metadata()?.len();
    if size < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{size} bytes where {len} were expected"),
        ));
    }
    let mut offset = 0u64;
    while offset < len {
        let n = usize::try_from(len - offset)
            .unwrap_or(usize::MAX)
            .min(window);
        let map = map_window(file, offset, n)?;
        sink(&map);
        offset += n as u64;
    }
    Ok(())
}

/// Maps `len` bytes of `file` from `offset`, read-only, populated.
#[allow(unsafe_code)]
fn map_window(file: &File, offset: u64, len: usize) -> io::Result<Mmap> {
    // SAFETY: `file` is a blob (see the module docs): the relay never
    // writes to it or shrinks it once it is in `blobs/`, and `scan` has
    // checked that it holds `offset + len` bytes. The mapping is read-only
    // and `scan` drops it before it returns.
    unsafe {
        MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_of(data: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        File::create(&path).unwrap().write_all(data).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    fn scanned(file: &File, len: u64, window: usize) -> io::Result<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        let mut pieces = 0;
        scan(file, len, window, &mut |b| {
            out.extend_from_slice(b);
            pieces += 1;
        })?;
        Ok((out, pieces))
    }

    #[test]
    fn windows_hand_over_every_byte_in_order() {
        let data: Vec<u8> = (0..5 * 4096 + 123u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (_dir, file) = file_of(&data);
        // Windows of one page: the last is short; offsets stay page-aligned.
        let (out, pieces) = scanned(&file, data.len() as u64, 4096).unwrap();
        assert_eq!(out, data);
        assert_eq!(pieces, 6);
        // A prefix ends inside a window.
        let (out, pieces) = scanned(&file, 2 * 4096 + 5, 4096).unwrap();
        assert_eq!(out, &data[..2 * 4096 + 5]);
        assert_eq!(pieces, 3);
        // One window for all of it.
        let (out, pieces) = scanned(&file, data.len() as u64, WINDOW).unwrap();
        assert_eq!(out, data);
        assert_eq!(pieces, 1);
    }

    #[test]
    fn nothing_to_scan_maps_nothing() {
        let (_dir, file) = file_of(b"");
        assert_eq!(scanned(&file, 0, WINDOW).unwrap(), (Vec::new(), 0));
    }

    #[test]
    fn a_file_shorter_than_its_length_is_an_error_before_any_byte() {
        let (_dir, file) = file_of(&[1u8; 8192]);
        let mut handed = 0;
        let err = scan(&file, 8193, 4096, &mut |b| handed += b.len()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(handed, 0);
    }
}
