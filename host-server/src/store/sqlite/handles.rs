//! The open-file handle cache: partial and blob files opened once, not per
//! frame. A file is removed only through here, so no cached handle outlives
//! its file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, MutexGuard};

use super::{remove_if_present, BlobId, PartialId, Result, SqliteStore, StoreError};

/// Open file handles kept per kind (partial uploads, blobs) by default, so
/// a stream of data frames does not reopen its file for every frame
/// ([`SqliteStore::limit_open_files`] sets another number).
pub const OPEN_FILES_PER_KIND: usize = 256;

pub(super) struct PartialHandle {
    pub(super) file: File,
    /// The file's directory entry has been made durable.
    pub(super) dir_synced: AtomicBool,
}

pub(super) struct Handles {
    partials: HashMap<u64, Arc<PartialHandle>>,
    blobs: HashMap<u64, Arc<File>>,
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

impl SqliteStore {
    fn handles(&self) -> MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps at most `per_kind` partial and `per_kind` blob files open
    /// ([`OPEN_FILES_PER_KIND`] by default), closing the surplus at once; a handle a
    /// running store call holds closes when that call is done.
    pub fn limit_open_files(&self, per_kind: usize) {
        let mut h = self.handles();
        h.capacity = per_kind.max(1);
        let capacity = h.capacity;
        shrink(&mut h.partials, capacity);
        shrink(&mut h.blobs, capacity);
    }

    /// The partial file's handle; `None` if it does not exist and `create`
    /// is false.
    pub(super) fn partial_handle(
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
        });
        let mut handles = self.handles();
        let capacity = handles.capacity;
        cache_insert(&mut handles.partials, capacity, id.0, h.clone());
        Ok(Some(h))
    }

    pub(super) fn blob_handle(&self, id: BlobId) -> Result<Arc<File>> {
        if let Some(h) = self.handles().blobs.get(&id.0) {
            return Ok(h.clone());
        }
        let file = match File::open(self.blob_path(id.0)) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let mut handles = self.handles();
        let capacity = handles.capacity;
        cache_insert(&mut handles.blobs, capacity, id.0, file.clone());
        Ok(file)
    }

    /// Forgets the partial file's handle (before its file is renamed).
    pub(super) fn close_partial(&self, id: u64) {
        self.handles().partials.remove(&id);
    }

    pub(super) fn drop_partial_file(&self, id: u64) -> Result<()> {
        self.close_partial(id);
        remove_if_present(&self.partial_path(id))
    }

    pub(super) fn drop_blob_file(&self, id: u64) -> Result<()> {
        self.handles().blobs.remove(&id);
        remove_if_present(&self.blob_path(id))
    }
}
