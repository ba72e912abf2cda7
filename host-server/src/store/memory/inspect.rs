//! What tests see of a [`MemoryStore`] beyond the [`Store`](crate::store::Store)
//! trait: a held lock, a simulated crash, blob counts and bytes.

#[cfg(test)]
use std::collections::BTreeMap;

use super::MemoryStore;
use crate::store::BlobId;
#[cfg(test)]
use crate::store::FileContent;

impl MemoryStore {
    /// Holds the store's lock until the result is dropped: every call
    /// waits meanwhile, as on a wedged disk (for readiness tests).
    #[cfg(test)]
    pub(crate) fn hold(&self) -> impl Sized + '_ {
        self.lock()
    }

    /// Simulates a crash and restart: every partial upload loses the bytes
    /// past its durable offset. Sessions using the store must be dropped
    /// first, as a real crash would drop them. Feature `test-support`.
    #[cfg(any(test, feature = "test-support"))]
    pub fn crash(&self) {
        let mut inner = self.lock();
        for p in inner.partials.values_mut() {
            p.data
                .truncate(usize::try_from(p.durable).unwrap_or(usize::MAX));
        }
    }

    /// Blobs whose reference count differs from what holds them: files of
    /// batches, names and kept blobs (for tests; empty when consistent).
    #[cfg(test)]
    pub(crate) fn miscounted_blobs(&self) -> Vec<BlobId> {
        let inner = self.lock();
        let mut held: BTreeMap<BlobId, u64> = BTreeMap::new();
        let files = inner.batches.values().flat_map(|b| &b.batch.files);
        let blobs = files.filter_map(|f| match f.content {
            FileContent::Blob(blob) => Some(blob),
            FileContent::Partial { .. } => None,
        });
        let named = inner.names.values().map(|n| n.blob);
        for blob in blobs.chain(named).chain(inner.kept.keys().copied()) {
            *held.entry(blob).or_default() += 1;
        }
        inner
            .blobs
            .iter()
            .filter(|(id, b)| held.get(id).copied().unwrap_or(0) != b.refs)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Number of blobs held (for tests of collection and deduplication).
    pub fn blob_count(&self) -> usize {
        self.lock().blobs.len()
    }

    /// A blob's bytes (for tests); [`BlobId::EMPTY`] holds none.
    pub fn blob_bytes(&self, id: BlobId) -> Option<Vec<u8>> {
        if id == BlobId::EMPTY {
            return Some(Vec::new());
        }
        self.lock().blobs.get(&id).map(|b| b.data.clone())
    }
}
