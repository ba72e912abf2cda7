//! The open-file handle cache: partial and blob files opened once, not per
//! frame. A file is removed only through here, so no cached handle outlives
//! its file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, MutexGuard, OnceLock};

use super::{remove_if_present, BlobId, Contents, PartialId, Result, StoreError};

/// Open file handles kept per kind (partial uploads, blobs) by default, so
/// a stream of data frames does not reopen its file for every frame
/// ([`SqliteStore::limit_open_files`](crate::store::sqlite::SqliteStore::limit_open_files)
/// sets another number).
pub const OPEN_FILES_PER_KIND: usize = 256;

pub(crate) struct PartialHandle {
    pub(crate) file: File,
    /// The file's directory entry has been made durable.
    pub(crate) dir_synced: AtomicBool,
    /// The same file opened for direct writes, once a write wants it
    /// (`None` inside: its file system refused).
    pub(crate) direct: OnceLock<Option<File>>,
}

/// A blob file, open.
pub(crate) struct BlobHandle {
    pub(crate) file: File,
    /// The same file opened for direct reads, once a read wants it
    /// (`None` inside: its file system refused).
    pub(crate) direct: OnceLock<Option<File>>,
}

pub(super) struct Handles {
    partials: HashMap<u64, Arc<PartialHandle>>,
    blobs: HashMap<u64, Arc<BlobHandle>>,
    /// Handles kept per kind at most.
    capacity: usize,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            partials: HashMap::new(),
            blobs: HashMap::new(),
            capacity: OPEN_FILES_PER_KIND,
        }
    }
}

/// Drops entries until at most `len` are left.
fn shrink<V>(map: &mut HashMap<u64, V>, len: usize) {
    while map.len() > len {
        let Some(k) = map.keys().next().copied() else {
            break;
        };
        map.remove(&k);
    }
}

fn cache_insert<V>(map: &mut HashMap<u64, V>, capacity: usize, key: u64, value: V) {
    shrink(map, capacity.saturating_sub(1));
    map.insert(key, value);
}

impl Handles {
    /// Keeps at most `per_kind` handles of each kind from now on.
    pub(super) fn limit(&mut self, per_kind: usize) {
        self.capacity = per_kind.max(1);
        shrink(&mut self.partials, self.capacity);
        shrink(&mut self.blobs, self.capacity);
    }
}

impl Contents {
    pub(super) fn handles(&self) -> MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The partial file's handle; `None` if it does not exist and `create`
    /// is false.
    pub(crate) fn partial_handle(
        &self,
        id: PartialId,
        create: bool,
    ) -> Result<Option<Arc<PartialHandle>>> {
        if let Some(h) = self.handles().partials.get(&id.0) {
            return Ok(Some(h.clone()));
        }
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            // Partials become blobs by rename: this is every blob's mode.
            .mode(super::FILE_MODE)
            .open(self.partial_path(id.0))
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let h = Arc::new(PartialHandle {
            file,
            dir_synced: AtomicBool::new(!create),
            direct: OnceLock::new(),
        });
        let mut handles = self.handles();
        let capacity = handles.capacity;
        cache_insert(&mut handles.partials, capacity, id.0, h.clone());
        Ok(Some(h))
    }

    /// A blob file's handle; `NotFound` if it has no file.
    pub(crate) fn blob_handle(&self, id: BlobId) -> Result<Arc<BlobHandle>> {
        if let Some(h) = self.handles().blobs.get(&id.0) {
            return Ok(h.clone());
        }
        let file = match File::open(self.blob_path(id.0)) {
            Ok(file) => Arc::new(BlobHandle {
                file,
                direct: OnceLock::new(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let mut handles = self.handles();
        let capacity = handles.capacity;
        cache_insert(&mut handles.blobs, capacity, id.0, file.clone());
        Ok(file)
    }

    /// Forgets the partial file's handle (before its file is renamed).
    pub(crate) fn close_partial(&self, id: u64) {
        self.handles().partials.remove(&id);
    }

    /// Deletes a partial file (its row is gone or becomes a blob's).
    pub(crate) fn drop_partial_file(&self, id: u64) -> Result<()> {
        self.close_partial(id);
        remove_if_present(&self.partial_path(id))
    }

    /// Deletes a collected blob's file.
    pub(crate) fn drop_blob_file(&self, id: u64) -> Result<()> {
        self.handles().blobs.remove(&id);
        remove_if_present(&self.blob_path(id))
    }
}
