//! Contents as local files, for the store that keeps them on its own disk
//! (the SQLite store; the PostgreSQL store keeps them in S3, see
//! `store::postgres::objects`): one file per partial upload and per blob,
//! named by internal id.
//!
//! ```text
//!   DATA/partial/<id>    bytes of an upload in progress
//!   DATA/blobs/<id>      bytes of a complete, verified file
//! ```
//!
//! [`Contents`] holds the file rules; the metadata (which ids exist, which
//! offset is durable) is the store's, in its database. The store keeps
//! the order that makes an acknowledged byte survive `kill -9`:
//!
//! 1. [`Contents::sync_partial`] before the commit of a durable offset;
//! 2. [`Contents::recover`] at open, against the committed rows: partial
//!    files are cut back to their durable offset and files no row names
//!    are deleted;
//! 3. [`Contents::promote`] (fsync, rename into `blobs/`, fsync that
//!    directory) before the commit of the row that says the blob exists,
//!    and [`Contents::demote`] when that commit failed.
//!
//! Long writes and reads go past the page cache ([`direct`]); the rules
//! above hold for them alike (an `fdatasync` covers both kinds of write).

mod dir_sync;
mod direct;
mod handles;
mod private;
mod recovery;

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

pub(crate) use self::dir_sync::sync_dir;
use self::dir_sync::DirSync;
pub use self::handles::OPEN_FILES_PER_KIND;
use self::handles::{BlobHandle, Handles, PartialHandle};
pub(crate) use self::private::{create_dir_all, touch};
pub use self::private::{DIR_MODE, FILE_MODE};
pub use self::recovery::Recovery;
use super::{short_blob, BlobId, PartialId, Result, StoreError, SCAN_CHUNK};

/// Bytes compared per read when checking an upload against a blob.
const COMPARE_CHUNK: usize = 256 * 1024;

/// Blobs shorter than this are scanned through the page cache: a helper
/// thread and its buffers cost more than they save.
const SCAN_DIRECT: u64 = 1024 * 1024;

/// Hands the first `len` bytes of `file` to `sink`, read through the page
/// cache [`SCAN_CHUNK`] bytes at a time. An `UnexpectedEof` error if the
/// file holds fewer.
fn scan_cached(file: &File, len: u64, sink: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
    let mut offset = 0;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(SCAN_CHUNK)];
    while offset < len {
        let n = usize::try_from(len - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        file.read_exact_at(&mut buf[..n], offset)?;
        sink(&buf[..n]);
        offset += n as u64;
    }
    Ok(())
}

/// Removes a file; one already gone is not an error.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// The partial and blob files of one data directory, with their open
/// handles. See the module docs.
pub(crate) struct Contents {
    partial_dir: PathBuf,
    blob_dir: PathBuf,
    handles: std::sync::Mutex<Handles>,
    blob_dir_sync: DirSync,
    /// Aligned buffers for writes past the page cache ([`direct`]).
    direct_buffers: direct::Buffers,
    /// The data directory's file system refused direct I/O: every read
    /// and write goes through the page cache from then on.
    direct_refused: AtomicBool,
}

impl Contents {
    /// The contents under `dir`, whose `partial/` and `blobs/` are created
    /// private ([`DIR_MODE`]) if missing.
    pub(crate) fn open(dir: &Path) -> Result<Contents> {
        let partial_dir = dir.join("partial");
        let blob_dir = dir.join("blobs");
        create_dir_all(&partial_dir)?;
        create_dir_all(&blob_dir)?;
        Ok(Contents {
            partial_dir,
            blob_dir_sync: DirSync::new(blob_dir.clone()),
            blob_dir,
            handles: Default::default(),
            direct_buffers: Default::default(),
            direct_refused: AtomicBool::new(false),
        })
    }

    fn partial_path(&self, id: u64) -> PathBuf {
        self.partial_dir.join(id.to_string())
    }

    fn blob_path(&self, id: u64) -> PathBuf {
        self.blob_dir.join(id.to_string())
    }

    /// Writes bytes of a partial upload (creating its file), not durable.
    pub(crate) fn write_partial(&self, id: PartialId, offset: u64, data: &[u8]) -> Result<()> {
        self.write_partial_pieces(id, offset, &[data])
    }

    /// Writes `pieces` of a partial upload one after another from
    /// `offset`: past the page cache where the write is long enough
    /// ([`direct`]), else with one `pwritev` for as many as it takes.
    pub(crate) fn write_partial_pieces(
        &self,
        id: PartialId,
        offset: u64,
        pieces: &[&[u8]],
    ) -> Result<()> {
        let h = self.partial_handle(id, true)?.ok_or(StoreError::NotFound)?;
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        if len >= direct::MIN_DIRECT {
            if let Some(file) = self.direct_file(id, &h) {
                match direct::write(&h.file, file, &self.direct_buffers, offset, pieces) {
                    Ok(()) => return Ok(()),
                    Err(e) if direct::refused(&e) => self.refuse_direct(&e),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(direct::write_cached(&h.file, offset, pieces)?)
    }

    /// The partial file opened for direct writes, once per handle; `None`
    /// where the file system refuses them.
    fn direct_file<'h>(&self, id: PartialId, h: &'h PartialHandle) -> Option<&'h File> {
        self.direct_of(&h.direct, &self.partial_path(id.0), true)
    }

    /// The file at `path` opened for direct writes (`write`) or reads,
    /// once: kept in `slot`.
    fn direct_of<'h>(
        &self,
        slot: &'h OnceLock<Option<File>>,
        path: &Path,
        write: bool,
    ) -> Option<&'h File> {
        if self.direct_refused.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(opened) = slot.get() {
            return opened.as_ref();
        }
        let opened = self.open_direct(direct::open(path, write));
        opened.and_then(|o| slot.get_or_init(|| o).as_ref())
    }

    /// What opening a file for direct I/O gave: `Some(None)` (kept with
    /// the handle) if the file system refuses direct I/O, which then stays
    /// off; `None` (not kept: the next call tries again) if the open
    /// failed otherwise (the file went away, no descriptor was free), so
    /// the call goes through the page cache.
    fn open_direct(&self, opened: std::io::Result<Option<File>>) -> Option<Option<File>> {
        match opened {
            Ok(Some(file)) => Some(Some(file)),
            Ok(None) => {
                self.refuse_direct(&std::io::Error::from_raw_os_error(
                    rustix::io::Errno::INVAL.raw_os_error(),
                ));
                Some(None)
            }
            Err(e) => {
                tracing::debug!("cannot open a file for direct I/O: {e}");
                None
            }
        }
    }

    /// The blob file opened for direct reads, once per handle; `None`
    /// where the file system refuses them.
    fn direct_blob<'h>(&self, id: BlobId, h: &'h BlobHandle) -> Option<&'h File> {
        self.direct_of(&h.direct, &self.blob_path(id.0), false)
    }

    /// Turns direct I/O off for good (the file system or disk refused
    /// it), saying so once.
    fn refuse_direct(&self, e: &std::io::Error) {
        if !self.direct_refused.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "the data directory takes no direct I/O ({e}); reading and writing through the page cache"
            );
        }
    }

    /// Makes every byte written to the partial file durable, and its
    /// directory entry (once per handle): rule 1, before the commit.
    pub(crate) fn sync_partial(&self, id: PartialId) -> Result<()> {
        let h = self.partial_handle(id, true)?.ok_or(StoreError::NotFound)?;
        h.file.sync_data()?;
        if !h.dir_synced.load(Ordering::Acquire) {
            sync_dir(&self.partial_dir)?;
            h.dir_synced.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Reads bytes of a partial upload; 0 if it has no file (yet).
    pub(crate) fn read_partial(&self, id: PartialId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match self.partial_handle(id, false)? {
            Some(h) => Ok(h.file.read_at(buf, offset)?),
            None => Ok(0),
        }
    }

    /// Empties the partial file durably (before its offset is reset).
    pub(crate) fn truncate_partial(&self, id: PartialId) -> Result<()> {
        let h = self.partial_handle(id, true)?.ok_or(StoreError::NotFound)?;
        h.file.set_len(0)?;
        h.file.sync_all()?;
        Ok(())
    }

    /// Reads bytes of a blob; 0 only at its end ([`BlobId::EMPTY`] reads
    /// nothing). Long reads go past the page cache ([`direct`]).
    pub(crate) fn read_blob(&self, id: BlobId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if id == BlobId::EMPTY {
            return Ok(0);
        }
        let h = self.blob_handle(id)?;
        if buf.len() >= direct::MIN_DIRECT {
            if let Some(file) = self.direct_blob(id, &h) {
                match direct::read(&h.file, file, &self.direct_buffers, offset, buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if direct::refused(&e) => self.refuse_direct(&e),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(h.file.read_at(buf, offset)?)
    }

    /// Hands the first `len` bytes of a blob to `sink`, in order: past the
    /// page cache with the next bytes read while `sink` takes the last
    /// ([`direct::scan`]) if it is long enough to gain by it, else read.
    /// An error if the blob holds fewer bytes.
    pub(crate) fn scan_blob(
        &self,
        id: BlobId,
        len: u64,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if id == BlobId::EMPTY {
            return Err(short_blob(id));
        }
        let h = self.blob_handle(id)?;
        let direct = match len >= SCAN_DIRECT {
            true => self.direct_blob(id, &h),
            false => None,
        };
        let scanned = match direct {
            Some(file) => {
                let mut handed = 0u64;
                let scanned = direct::scan(file, len, &mut |b| {
                    handed += b.len() as u64;
                    sink(b)
                });
                match scanned {
                    // Refused before any byte went to `sink`: the page
                    // cache starts over. (After, `sink` has taken bytes
                    // that it must not take twice: the error stands.)
                    Err(e) if direct::refused(&e) && handed == 0 => {
                        self.refuse_direct(&e);
                        scan_cached(&h.file, len, sink)
                    }
                    other => other,
                }
            }
            None => scan_cached(&h.file, len, sink),
        };
        scanned.map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => short_blob(id),
            _ => e.into(),
        })
    }

    /// Whether the first `size` bytes of a partial upload equal a blob,
    /// compared in full.
    pub(crate) fn same_bytes(&self, partial: PartialId, blob: BlobId, size: u64) -> Result<bool> {
        let p = self
            .partial_handle(partial, false)?
            .ok_or(StoreError::NotFound)?;
        let b = self.blob_handle(blob)?;
        let mut left = vec![0u8; COMPARE_CHUNK];
        let mut right = vec![0u8; COMPARE_CHUNK];
        let mut offset = 0u64;
        while offset < size {
            let n = usize::try_from(size - offset)
                .unwrap_or(usize::MAX)
                .min(COMPARE_CHUNK);
            p.file.read_exact_at(&mut left[..n], offset)?;
            match b.file.read_exact_at(&mut right[..n], offset) {
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
                other => other?,
            }
            if left[..n] != right[..n] {
                return Ok(false);
            }
            offset += n as u64;
        }
        // Same prefix: the blob must also end here.
        Ok(b.file.read_at(&mut right[..1], size)? == 0)
    }

    /// Makes the partial file the blob of the same id: fsync, rename into
    /// `blobs/`, fsync that directory (rule 3). The store commits the
    /// blob's row next, and calls [`Contents::demote`] if that fails.
    pub(crate) fn promote(&self, partial: PartialId) -> Result<()> {
        let h = self
            .partial_handle(partial, true)?
            .ok_or(StoreError::NotFound)?;
        h.file.sync_all()?;
        self.close_partial(partial.0);
        match fs::rename(self.partial_path(partial.0), self.blob_path(partial.0)) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::NotFound),
            other => other?,
        }
        // The new name must be durable before the row that points at it.
        // (The old name needs no fsync: after a crash, a partial file whose
        // row is gone is an orphan and recovery deletes it.)
        self.blob_dir_sync.sync()
    }

    /// The commit after [`Contents::promote`] failed, so no row points at
    /// the blob file: it is garbage if the partial is gone (`gone`: swept
    /// meanwhile), else it goes back where a retry (or recovery) expects it.
    pub(crate) fn demote(&self, partial: PartialId, gone: bool) -> Result<()> {
        let blob_path = self.blob_path(partial.0);
        if gone || fs::rename(&blob_path, self.partial_path(partial.0)).is_err() {
            remove_if_present(&blob_path)?;
        }
        Ok(())
    }

    /// Keeps at most `per_kind` partial and `per_kind` blob files open
    /// ([`OPEN_FILES_PER_KIND`] by default), closing the surplus at once; a
    /// handle a running store call holds closes when that call is done.
    pub(crate) fn limit_open_files(&self, per_kind: usize) {
        self.handles().limit(per_kind);
    }
}
