//! The spool: bytes of partial uploads received by this instance, in local
//! files `spool/{partial}` (0600, never fsynced), until a sync copies them
//! into object storage. Reading them back from here spares a GET.
//!
//! A spool file may start mid-upload (an upload taken over from another
//! instance receives only the bytes after its durable offset), so the
//! spool remembers, per partial, the one contiguous range it holds; bytes
//! outside it (a hole reads as zeros) are never served.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use super::Result;

/// Mode of the spool directory: uploads are other people's files.
const DIR_MODE: u32 = 0o700;
/// Mode of each spool file.
const FILE_MODE: u32 = 0o600;

/// The spool directory and what each file holds.
#[derive(Debug)]
pub(super) struct Spool {
    dir: PathBuf,
    /// Per partial, the byte range its file holds. Only in memory: the
    /// spool is emptied at start.
    held: Mutex<HashMap<u64, Range<u64>>>,
}

impl Spool {
    /// Creates the directory (0700) if missing.
    pub(super) fn open(dir: PathBuf) -> Result<Spool> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)?;
        Ok(Spool {
            dir,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The range of partial `id`'s bytes the spool holds, if any.
    pub(super) fn held(&self, id: u64) -> Option<Range<u64>> {
        self.map().get(&id).cloned()
    }

    /// Writes `data` at `offset`. The held range grows when the write
    /// touches it; a write elsewhere replaces it (the bytes before a gap
    /// would not be contiguous with the new ones).
    pub(super) async fn write(&self, id: u64, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "offset overflows"))?;
        let path = self.path(id);
        let data = data.to_vec();
        let written = blocking(move || {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .mode(FILE_MODE)
                .open(&path)?;
            file.write_all_at(&data, offset)
        })
        .await;
        let mut held = self.map();
        if let Err(e) = written {
            // Part of the held range may now hold a mix of old and new
            // bytes: trust none of it.
            held.remove(&id);
            return Err(e);
        }
        let range = match held.get(&id) {
            Some(h) if offset <= h.end && end >= h.start => h.start.min(offset)..h.end.max(end),
            _ => offset..end,
        };
        held.insert(id, range);
        Ok(())
    }

    /// Reads `len` bytes at `offset`, which the caller found in
    /// [`Spool::held`].
    pub(super) async fn read(&self, id: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        let path = self.path(id);
        blocking(move || {
            let file = fs::File::open(&path)?;
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await
    }

    /// Deletes partial `id`'s file (if any).
    pub(super) async fn remove(&self, id: u64) -> Result<()> {
        self.map().remove(&id);
        let path = self.path(id);
        blocking(move || match fs::remove_file(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            other => other,
        })
        .await
    }

    /// Deletes every file in the spool.
    pub(super) async fn clear(&self) -> Result<()> {
        self.map().clear();
        let dir = self.dir.clone();
        blocking(move || {
            for entry in fs::read_dir(&dir)? {
                let path = entry?.path();
                match fs::remove_file(&path) {
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    other => other?,
                }
            }
            Ok(())
        })
        .await
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Range<u64>>> {
        // The map is consistent after any panic (single inserts/removes).
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs file I/O on the blocking pool, never on a runtime worker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(std::io::Error::other(e).into()),
    }
}
