//! The open-file handle cache: partial and blob files opened once, not per
//! frame. A file is removed only through here, so no cached handle outlives
//! its file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, MutexGuard};

use super::{remove_if_present, BlobId, PartialId, Result, SqliteStore, StoreError};

/// Open file handles kept per kind, so a stream of data frames does not
/// reopen its file for every frame.
const HANDLE_CACHE: usize = 256;

pub(super) struct PartialHandle {
    pub(super) file: File,
    /// The file's directory entry has been made durable.
    pub(super) dir_synced: AtomicBool,
}

#[derive(Default)]
pub(super) struct Handles {
    partials: HashMap<u64, Arc<PartialHandle>>,
    blobs: HashMap<u64, Arc<File>>,
}

fn cache_insert<V>(map: &mut HashMap<u64, V>, key: u64, value: V) {
    if map.len() >= HANDLE_CACHE {
        if let Some(k) = map.keys().next().copied() {
            map.remove(&k);
        }
    }
    map.insert(key, value);
}

impl SqliteStore {
    fn handles(&self) -> MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
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
        cache_insert(&mut self.handles().partials, id.0, h.clone());
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
        cache_insert(&mut self.handles().blobs, id.0, file.clone());
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
