//! Files of a batch as created or added to an open batch (tus), and the
//! batch record the tus steps change.

use super::{Inner, Partial};
use crate::store::{
    Batch, BatchId, BlobId, FileContent, FileRecord, FileRef, NewFile, Result, StoreError,
};

impl Inner {
    /// A new file's record, with its partial upload unless it is the
    /// empty content.
    pub(super) fn new_file(&mut self, batch: BatchId, f: &NewFile<'_>) -> FileRecord {
        let content = if f.is_empty_content() {
            FileContent::Blob(BlobId::EMPTY)
        } else {
            let partial = crate::store::PartialId(self.id());
            self.partials.insert(partial, Partial::new(batch));
            FileContent::Partial {
                id: partial,
                durable: 0,
            }
        };
        FileRecord {
            name: f.name.to_owned(),
            size: f.size,
            sha1: f.sha1,
            attrs: f.attrs,
            content,
        }
    }

    /// The stored batch `id`.
    pub(super) fn batch_mut(&mut self, id: BatchId) -> Result<&mut Batch> {
        self.batches
            .get_mut(&id)
            .map(|b| &mut b.batch)
            .ok_or(StoreError::NotFound)
    }

    /// [`crate::store::Store::add_file`].
    pub(super) fn add_file(&mut self, batch: BatchId, file: &NewFile<'_>) -> Result<FileRef> {
        let index = match self.batches.get(&batch) {
            Some(b) if b.batch.open => b.batch.files.len(),
            _ => return Err(StoreError::NotFound),
        };
        let index =
            u16::try_from(index).map_err(|_| StoreError::Corrupt("too many files".into()))?;
        let record = self.new_file(batch, file);
        self.batch_mut(batch)?.files.push(record);
        Ok(FileRef { batch, index })
    }
}
