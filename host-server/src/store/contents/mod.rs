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

mod dir_sync;
mod handles;
mod mapped;
mod private;
mod recovery;

use std::fs;
use std::io::{ErrorKind, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

pub(crate) use self::dir_sync::sync_dir;
use self::dir_sync::DirSync;
use self::handles::Handles;
pub use self::handles::OPEN_FILES_PER_KIND;
pub(crate) use self::private::{create_dir_all, touch};
pub use self::private::{DIR_MODE, FILE_MODE};
pub use self::recovery::Recovery;
use super::{short_blob, BlobId, PartialId, Result, StoreError};

/// Bytes compared per read when checking an upload against a blob.
const COMPARE_CHUNK: usize = 256 * 1024;

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
        let h = self.partial_handle(id, true)?.ok_or(StoreError::NotFound)?;
        h.file.write_all_at(data, offset)?;
        Ok(())
    }

    /// Writes `pieces` of a partial upload one after another from
    /// `offset`, with one `pwritev` for as many as it takes.
    pub(crate) fn write_partial_pieces(
        &self,
        id: PartialId,
        offset: u64,
        pieces: &[&[u8]],
    ) -> Result<()> {
        let h = self.partial_handle(id, true)?.ok_or(StoreError::NotFound)?;
        let mut at = offset;
        // Linux takes at most 1,024 buffers a call (IOV_MAX).
        for group in pieces.chunks(256) {
            let mut slices: Vec<IoSlice<'_>> = group
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| IoSlice::new(p))
                .collect();
            let mut left = &mut slices[..];
            while !left.is_empty() {
                match rustix::io::pwritev(&h.file, left, at) {
                    Ok(0) => return Err(std::io::Error::from(ErrorKind::WriteZero).into()),
                    Ok(n) => {
                        at += n as u64;
                        IoSlice::advance_slices(&mut left, n);
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(std::io::Error::from(e).into()),
                }
            }
        }
        Ok(())
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
    /// nothing).
    pub(crate) fn read_blob(&self, id: BlobId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if id == BlobId::EMPTY {
            return Ok(0);
        }
        Ok(self.blob_handle(id)?.read_at(buf, offset)?)
    }

    /// Hands the first `len` bytes of a blob to `sink`, in order: mapped
    /// ([`mapped`]) if it is long enough to gain by it, else read. An error
    /// if the blob holds fewer bytes.
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
        let file = self.blob_handle(id)?;
        let scanned = if len >= mapped::MIN_MAPPED {
            mapped::scan(&file, len, mapped::WINDOW, sink)
        } else {
            // Under MIN_MAPPED: read whole, in one buffer.
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, 0).map(|()| sink(&buf))
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
            match b.read_exact_at(&mut right[..n], offset) {
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
                other => other?,
            }
            if left[..n] != right[..n] {
                return Ok(false);
            }
            offset += n as u64;
        }
        // Same prefix: the blob must also end here.
        Ok(b.read_at(&mut right[..1], size)? == 0)
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
