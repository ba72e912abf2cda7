//! Long writes and reads past the page cache (`O_DIRECT`, Linux).
//!
//! A write through the page cache copies every byte into a page the kernel
//! allocates, dirties and later writes back; on the bench's machine, a
//! virtual one, that copy took 66% of the relay's CPU during an upload
//! (bench/RESULTS.md, session 23). A blob is written once and read a few times, soon or
//! much later: caching it buys little. So uploads are written past the
//! page cache, and downloads and proofs read past it ([`read`], [`scan`]).
//!
//! A direct write hands the disk the relay's own buffer. It wants the file
//! offset, the length and the buffer's address aligned to the disk's block
//! ([`ALIGN`]), and the bytes of an upload arrive in pieces of any length
//! at any offset. So a long write is split:
//!
//! ```text
//!   offset        up to ALIGN            down to ALIGN          end
//!     |-- head ----|====== middle (copied, direct) ======|-- tail --|
//!      page cache                                          page cache
//! ```
//!
//! The head and the tail, under a block each, go through the page cache;
//! the middle is copied into an aligned buffer and written directly, a
//! [`CHUNK`] at a time. The three never share a block, and the head of
//! the next write completes the block the tail began, so a stream of
//! writes never puts a direct write on a page it left dirty in the page
//! cache (the kernel would first write that page back: correct, but one
//! small synchronous write per call). Every byte is in
//! the file when [`write`] returns, whichever way it went, and the
//! `fdatasync` before an acknowledgement makes both kinds durable: no
//! byte is held back in memory, and reads see what was written.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

/// The alignment of a direct write's offset, length and buffer: the
/// largest logical block size of common disks (4 KiB sectors; 512-byte
/// ones divide it).
pub(super) const ALIGN: usize = 4096;

/// Bytes copied into an aligned buffer and written per direct write.
pub(super) const CHUNK: usize = 2 * 1024 * 1024;

/// Writes shorter than this go through the page cache whole: a direct
/// write waits for the disk, and for a few blocks the copy saved is less
/// than that wait.
pub(super) const MIN_DIRECT: usize = 128 * 1024;

/// Aligned buffers kept for reuse between writes.
const KEPT_BUFFERS: usize = 4;

/// Opens `path` (which exists) for direct writes (`write`) or reads.
/// `Ok(None)` if its file system takes none.
pub(super) fn open(path: &Path, write: bool) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if refused(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a direct write failed because the file system or the disk does
/// not take it as aligned here (`EINVAL`): the caller writes through the
/// page cache instead.
pub(super) fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// Aligned buffers of [`CHUNK`] bytes, reused from write to write so their
/// pages are faulted in once.
#[derive(Default)]
pub(super) struct Buffers(Mutex<Vec<Vec<u8>>>);

impl Buffers {
    fn take(&self) -> Vec<u8> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        kept.unwrap_or_else(|| vec![0u8; CHUNK + ALIGN])
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT_BUFFERS {
            kept.push(buf);
        }
    }
}

/// The [`CHUNK`] bytes of `buf` that start at an [`ALIGN`]ed address.
fn aligned(buf: &mut [u8]) -> &mut [u8] {
    let skip = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
    &mut buf[skip..][..CHUNK]
}

/// The parts of `pieces` (one byte stream) from byte `from` to byte `to`.
fn between<'a>(pieces: &[&'a [u8]], from: usize, to: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for p in pieces {
        let (start, end) = (at, at + p.len());
        at = end;
        if end <= from || start >= to {
            continue;
        }
        out.push(&p[from.max(start) - start..to.min(end) - start]);
    }
    out
}

/// Writes `pieces` one after another from `offset`: head and tail through
/// `cached`, the aligned middle through `direct` (see the module docs).
/// An error that [`refused`] names leaves the bytes partly written; writing
/// them all again through the page cache is then correct.
pub(super) fn write(
    cached: &File,
    direct: &File,
    buffers: &Buffers,
    offset: u64,
    pieces: &[&[u8]],
) -> io::Result<()> {
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let align = ALIGN as u64;
    let end = offset + len as u64;
    let middle_start = offset.div_ceil(align) * align;
    let middle_end = end / align * align;
    if middle_end <= middle_start {
        return write_cached(cached, offset, &between(pieces, 0, len));
    }
    let head = (middle_start - offset) as usize;
    let tail_start = (middle_end - offset) as usize;
    write_cached(cached, offset, &between(pieces, 0, head))?;
    let mut buf = buffers.take();
    let written = (|| -> io::Result<()> {
        let chunk = aligned(&mut buf);
        let mut at = head;
        while at < tail_start {
            let n = (tail_start - at).min(CHUNK);
            let mut filled = 0;
            for part in between(pieces, at, at + n) {
                chunk[filled..filled + part.len()].copy_from_slice(part);
                filled += part.len();
            }
            direct.write_all_at(&chunk[..n], offset + at as u64)?;
            at += n;
        }
        Ok(())
    })();
    buffers.give_back(buf);
    written?;
    write_cached(cached, middle_end, &between(pieces, tail_start, len))
}

/// Writes `parts` one after another from `offset` through the page cache.
pub(super) fn write_cached(file: &File, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
    let mut at = offset;
    // Linux takes at most 1,024 buffers a call (IOV_MAX).
    for group in parts.chunks(256) {
        let mut slices: Vec<io::IoSlice<'_>> = group
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| io::IoSlice::new(p))
            .collect();
        let mut left = &mut slices[..];
        while !left.is_empty() {
            match rustix::io::pwritev(file, left, at) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    at += n as u64;
                    io::IoSlice::advance_slices(&mut left, n);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }
    Ok(())
}

/// Reads into `buf` from `offset`, as `pread` does (fewer bytes only at the
/// end of the file): up to the first aligned offset through `cached`, the
/// rest through `direct`, a [`CHUNK`] at a time into an aligned buffer and
/// copied out. The page cache then neither fills with a blob that is read
/// once nor spends a fresh page on each 4 KiB of it.
pub(super) fn read(
    cached: &File,
    direct: &File,
    buffers: &Buffers,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<usize> {
    let head = ((ALIGN as u64 - offset % ALIGN as u64) % ALIGN as u64) as usize;
    let head = head.min(buf.len());
    let mut done = 0;
    if head > 0 {
        done = read_full(cached, &mut buf[..head], offset)?;
        if done < head {
            return Ok(done);
        }
    }
    let rest = &mut buf[done..];
    if rest.as_ptr().align_offset(ALIGN) == 0 {
        // An aligned buffer (a download's read-ahead) is read into as it
        // is: its whole blocks directly, the last few bytes through the
        // page cache.
        let whole = rest.len() / ALIGN * ALIGN;
        let got = match whole {
            0 => 0,
            _ => direct.read_at(&mut rest[..whole], offset + done as u64)?,
        };
        if got < whole {
            return Ok(done + got);
        }
        let tail = read_full(cached, &mut rest[whole..], offset + (done + whole) as u64)?;
        return Ok(done + whole + tail);
    }
    let mut scratch = buffers.take();
    let result = (|| -> io::Result<usize> {
        let chunk = aligned(&mut scratch);
        while done < buf.len() {
            let want = (buf.len() - done).min(CHUNK);
            let ask = want.next_multiple_of(ALIGN);
            let got = direct.read_at(&mut chunk[..ask], offset + done as u64)?;
            let take = got.min(want);
            buf[done..done + take].copy_from_slice(&chunk[..take]);
            done += take;
            if got < want {
                // The end of the file (or a short read the caller repeats).
                break;
            }
        }
        Ok(done)
    })();
    buffers.give_back(scratch);
    result
}

/// `read_at` until `buf` is full or the file ends; the bytes read.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Hands the first `len` bytes of `direct`'s file to `sink`, in order, a
/// [`CHUNK`] at a time, read past the page cache: a helper thread reads
/// the next chunk while `sink` takes the last, so the hash of a proof and
/// the disk work side by side. An `UnexpectedEof` error if the file holds
/// fewer bytes.
pub(super) fn scan(direct: &File, len: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    use std::sync::mpsc::sync_channel;
    // Two buffers: one being read into, one being handed over.
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(2);
    let (full_tx, full_rx) = sync_channel::<io::Result<(Vec<u8>, usize)>>(2);
    for _ in 0..2 {
        // Cannot fail: the channel has room for both. (A proof is rare:
        // its buffers are not worth keeping.)
        let _ = free_tx.send(vec![0u8; CHUNK + ALIGN]);
    }
    let result = std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut offset = 0u64;
            while offset < len {
                let Ok(mut buf) = free_rx.recv() else {
                    return;
                };
                let want = usize::try_from(len - offset)
                    .unwrap_or(usize::MAX)
                    .min(CHUNK);
                // One read: a direct read is short only at the end of the
                // file, and another from an unaligned offset would fail.
                let read = direct.read_at(
                    &mut aligned(&mut buf)[..want.next_multiple_of(ALIGN)],
                    offset,
                );
                let read = match read {
                    Ok(got) if got < want => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} bytes where {len} were expected", offset + got as u64),
                    )),
                    Ok(_) => Ok((buf, want)),
                    Err(e) => Err(e),
                };
                let failed = read.is_err();
                if full_tx.send(read).is_err() || failed {
                    return;
                }
                offset += want as u64;
            }
        });
        // Owned here: a return before the end drops it, which ends the
        // reader if it waits for a buffer.
        let free_tx = free_tx;
        let mut handed = 0u64;
        while handed < len {
            let (mut buf, n) = full_rx
                .recv()
                .map_err(|_| io::Error::other("the blob reader stopped"))??;
            sink(&aligned(&mut buf)[..n]);
            handed += n as u64;
            // The reader may be done and gone: then the buffer is not needed.
            let _ = free_tx.send(buf);
        }
        // The reader ends once `len` bytes are read.
        Ok(())
    });
    result
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Bytes that differ from offset to offset, so a misplaced block shows.
    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
            .collect()
    }

    /// A file and its direct descriptor; `None` (and a line saying so)
    /// where the file system refuses direct I/O.
    fn files(data: &[u8]) -> (tempfile::TempDir, File, Option<File>, Option<File>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap().write_all(data).unwrap();
        let cached = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let w = open(&path, true).unwrap();
        let r = open(&path, false).unwrap();
        if w.is_none() {
            eprintln!(
                "{}: no direct I/O here, only the page-cache path is checked",
                path.display()
            );
        }
        (dir, cached, w, r)
    }

    fn contents(file: &File) -> Vec<u8> {
        let mut out = vec![0u8; file.metadata().unwrap().len() as usize];
        file.read_exact_at(&mut out, 0).unwrap();
        out
    }

    /// Splits `data` into pieces of the given lengths, cycled.
    fn pieces<'a>(data: &'a [u8], lens: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < data.len() {
            let n = lens[i % lens.len()].min(data.len() - at);
            out.push(&data[at..at + n]);
            at += n;
            i += 1;
        }
        out
    }

    #[test]
    fn writes_land_every_byte_where_it_belongs() {
        let buffers = Buffers::default();
        // (offset, length, piece lengths): aligned and not, shorter than a
        // block, one chunk, several chunks with a short last one.
        let cases: &[(u64, usize, &[usize])] = &[
            (0, MIN_DIRECT, &[65_536]),
            (100, MIN_DIRECT + 7, &[1, 4095, 65_530]),
            (4096, 3 * 4096, &[4096]),
            (4095, 2, &[1]),
            (8191, 2 * CHUNK + 5000, &[65_519, 3, 200_000]),
            (1 << 20, CHUNK, &[CHUNK]),
        ];
        for &(offset, len, lens) in cases {
            let old = pattern(offset as usize + len + 3000, 7);
            let (_dir, cached, direct, _) = files(&old);
            let new = pattern(len, offset as u32);
            let parts = pieces(&new, lens);
            match &direct {
                Some(d) => write(&cached, d, &buffers, offset, &parts).unwrap(),
                None => write_cached(&cached, offset, &parts).unwrap(),
            }
            let mut want = old.clone();
            want[offset as usize..offset as usize + len].copy_from_slice(&new);
            assert!(contents(&cached) == want, "offset {offset}, {len} bytes");
        }
    }

    #[test]
    fn writes_one_after_another_fill_the_blocks_they_share() {
        let buffers = Buffers::default();
        let (_dir, cached, direct, _) = files(b"");
        let Some(direct) = direct else { return };
        let data = pattern(5 * MIN_DIRECT + 12_345, 3);
        // Each write ends inside a block the next one begins in.
        let mut at = 0;
        for len in [MIN_DIRECT + 1, MIN_DIRECT + 4094, 2 * MIN_DIRECT + 17] {
            write(
                &cached,
                &direct,
                &buffers,
                at as u64,
                &[&data[at..at + len]],
            )
            .unwrap();
            at += len;
        }
        write(&cached, &direct, &buffers, at as u64, &[&data[at..]]).unwrap();
        assert!(contents(&cached) == data);
    }

    #[test]
    fn reads_give_what_pread_gives() {
        let buffers = Buffers::default();
        let data = pattern(CHUNK + CHUNK / 2 + 123, 5);
        let (_dir, cached, _, direct) = files(&data);
        let Some(direct) = direct else { return };
        for offset in [0, 1, 4095, 4096, CHUNK as u64 - 1, data.len() as u64 - 10] {
            for len in [MIN_DIRECT, 3 * 4096 + 1, CHUNK + 1, 2 * CHUNK] {
                let mut got = vec![0u8; len];
                let n = read(&cached, &direct, &buffers, offset, &mut got).unwrap();
                let end = (offset as usize + len).min(data.len());
                assert_eq!(n, end - offset as usize, "offset {offset}, {len} bytes");
                assert!(
                    got[..n] == data[offset as usize..end],
                    "offset {offset}, {len} bytes"
                );
            }
        }
        let mut got = vec![0u8; MIN_DIRECT];
        assert_eq!(
            read(&cached, &direct, &buffers, data.len() as u64, &mut got).unwrap(),
            0
        );
        // Into an aligned buffer: read where it lies, whole blocks and a tail.
        let mut room = vec![0u8; 2 * CHUNK + 2 * ALIGN];
        for offset in [0, 4096, 100, CHUNK as u64 + 4096, data.len() as u64 - 5000] {
            for len in [MIN_DIRECT, MIN_DIRECT + 77, CHUNK + 1, 2 * CHUNK] {
                // Aligned where the direct part begins (past a head).
                let head = ((ALIGN as u64 - offset % ALIGN as u64) % ALIGN as u64) as usize;
                let start = room.as_ptr().align_offset(ALIGN) + ALIGN - head;
                let got = &mut room[start..start + len];
                let n = read(&cached, &direct, &buffers, offset, got).unwrap();
                let end = (offset as usize + len).min(data.len());
                assert_eq!(
                    n,
                    end - offset as usize,
                    "aligned, offset {offset}, {len} bytes"
                );
                assert!(
                    got[..n] == data[offset as usize..end],
                    "aligned, offset {offset}, {len} bytes"
                );
            }
        }
    }

    #[test]
    fn a_scan_hands_over_every_byte_in_order_or_says_the_file_is_short() {
        let data = pattern(2 * CHUNK + 4321, 9);
        let (_dir, _, _, direct) = files(&data);
        let Some(direct) = direct else { return };
        for len in [0, 1, CHUNK, 2 * CHUNK + 4321] {
            let mut out = Vec::new();
            scan(&direct, len as u64, &mut |b| out.extend_from_slice(b)).unwrap();
            assert!(out == data[..len], "{len} bytes");
        }
        let mut handed = 0;
        let err = scan(&direct, data.len() as u64 + 1, &mut |b| handed += b.len()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // Every whole chunk before the short one was handed over.
        assert_eq!(handed, 2 * CHUNK);
    }

    #[test]
    fn an_unaligned_direct_write_is_refused_and_the_page_cache_takes_it() {
        let (_dir, cached, direct, _) = files(&[0u8; 8192]);
        let Some(direct) = direct else { return };
        let err = direct.write_all_at(&[1u8; 100], 1).unwrap_err();
        assert!(refused(&err), "{err}");
        write_cached(&cached, 1, &[&[1u8; 100]]).unwrap();
        assert_eq!(
            contents(&cached)[..102],
            [[0u8].as_slice(), &[1u8; 100], &[0u8]].concat()
        );
    }
}
