//! Upload fences ([`Store::take_upload`](crate::store::Store::take_upload)):
//! which handle of a shared state may still make an upload durable.
//!
//! The shared state keeps the batch's current fence; each handle keeps the
//! fence it took, as each relay instance remembers its own. A handle that
//! never took a batch holds fence 0, the fence the batch is created with,
//! so the creating instance needs no take. A durable step through a handle
//! whose fence is older than the batch's is refused with
//! [`StoreError::Fenced`], before it changes anything.

use std::collections::HashMap;
use std::sync::MutexGuard;

use super::{Inner, MemoryStore};
use crate::store::{Batch, BatchId, PartialId, Result, StoreError};

impl MemoryStore {
    /// A second handle on the same state, as a second relay instance over
    /// the same database: it sees every batch, partial and blob, and holds
    /// fences of its own (none yet). Feature `test-support`.
    #[cfg(any(test, feature = "test-support"))]
    pub fn another_instance(&self) -> MemoryStore {
        MemoryStore {
            inner: self.inner.clone(),
            fences: Default::default(),
        }
    }

    fn fences(&self) -> MutexGuard<'_, HashMap<BatchId, u64>> {
        self.fences.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Store::take_upload`](crate::store::Store::take_upload).
    pub(super) fn take(&self, batch: BatchId) -> Result<Batch> {
        let mut inner = self.lock();
        let stored = inner.batches.get_mut(&batch).ok_or(StoreError::NotFound)?;
        stored.fence += 1;
        let fence = stored.fence;
        let mut fences = self.fences();
        // Batches swept since are forgotten here, so the map stays as
        // small as the live batches this handle took.
        fences.retain(|b, _| inner.batches.contains_key(b));
        fences.insert(batch, fence);
        let stored = &inner.batches[&batch];
        Ok(inner.snapshot(&stored.batch))
    }

    /// `Fenced` if another handle took `batch` after this one (or took it
    /// at all, if this one never did). A batch that is gone passes: the
    /// step itself answers `NotFound`.
    pub(super) fn check(&self, inner: &Inner, batch: BatchId) -> Result<()> {
        let Some(stored) = inner.batches.get(&batch) else {
            return Ok(());
        };
        let held = self.fences().get(&batch).copied().unwrap_or(0);
        if held < stored.fence {
            return Err(StoreError::Fenced);
        }
        Ok(())
    }

    /// [`check`](Self::check) for the batch of partial upload `id`.
    pub(super) fn check_partial(&self, inner: &Inner, id: PartialId) -> Result<()> {
        match inner.partials.get(&id) {
            Some(p) => self.check(inner, p.batch),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use pickup_proto::{Code, Sha1Digest};

    use crate::running_sha1::Midstate;
    use crate::store::memory::MemoryStore;
    use crate::store::postgres::tests::Fixture;
    use crate::store::{
        Batch, Content, FileContent, FileRef, LookupKey, NewBatch, NewFile, OwnerId, PartialId,
        Store, StoreError,
    };

    fn batch<S: Store>(store: &S, size: u64) -> (Batch, PartialId) {
        let code = Code::from_parts(9, 12345).expect("valid code");
        let files = [NewFile {
            name: "a.bin",
            size,
            sha1: Sha1Digest::EMPTY,
            attrs: None,
        }];
        let b = store
            .create_batch(&NewBatch {
                code,
                code_key: LookupKey([1; 32]),
                token_key: LookupKey([2; 32]),
                owner: OwnerId([3; 32]),
                created_at: 0,
                expires_at: 1000,
                stale_at: 1000,
                files: &files,
                open: false,
            })
            .expect("created");
        let FileContent::Partial { id, .. } = b.files[0].content else {
            panic!("a non-empty file starts partial");
        };
        (b, id)
    }

    fn durable(store: &MemoryStore, b: &Batch) -> u64 {
        store.take_upload(b.id).expect("live").files[0].received()
    }

    #[test]
    fn an_older_holder_can_make_nothing_durable() {
        let first = MemoryStore::new();
        let second = first.another_instance();
        let (b, partial) = batch(&first, 8);
        first.write_partial(partial, 0, b"abcd").expect("written");
        first.sync_partial(partial, 2, None).expect("synced");

        let taken = second.take_upload(b.id).expect("taken");
        assert_eq!(
            taken.files[0].received(),
            2,
            "the new owner sees the old one's bytes"
        );

        let fenced = |r: crate::store::Result<()>| matches!(r, Err(StoreError::Fenced));
        assert!(fenced(first.sync_partial(partial, 4, None)));
        assert!(fenced(first.write_partial(partial, 4, b"zz")));
        assert!(fenced(first.reset_partial(partial)));
        let file = FileRef {
            batch: b.id,
            index: 0,
        };
        let content = Content {
            size: 4,
            sha1: Sha1Digest::of(b"abcd"),
            threshold: 0,
        };
        assert!(matches!(
            first.complete_file(file, partial, &content),
            Err(StoreError::Fenced)
        ));
        assert!(matches!(
            first.link_file(file, crate::store::BlobId(1)),
            Err(StoreError::Fenced)
        ));

        second.write_partial(partial, 2, b"CDEF").expect("written");
        second
            .sync_partial(partial, 6, Some(&Midstate::START))
            .expect("the newer owner syncs");
        assert_eq!(
            durable(&second, &b),
            6,
            "the durable offset is the newer owner's"
        );
        let mut buf = [0u8; 6];
        assert_eq!(second.read_partial(partial, 0, &mut buf).expect("read"), 6);
        assert_eq!(
            &buf, b"abCDEF",
            "the older owner's refused write changed nothing"
        );
    }

    /// Two handles on one state (two relay instances): the last to take
    /// the upload holds it.
    fn taking_back<S: Store>(first: &S, second: &S) {
        let (b, partial) = batch(first, 8);
        second.take_upload(b.id).expect("taken");
        first.take_upload(b.id).expect("taken back");
        first.write_partial(partial, 0, b"ab").expect("written");
        first
            .sync_partial(partial, 2, None)
            .expect("the latest owner syncs");
        assert!(matches!(
            second.sync_partial(partial, 2, None),
            Err(StoreError::Fenced)
        ));
        // Reads are never fenced.
        let mut buf = [0u8; 2];
        assert_eq!(second.read_partial(partial, 0, &mut buf).expect("read"), 2);
    }

    #[test]
    fn taking_back_fences_the_other_handle() {
        let first = MemoryStore::new();
        taking_back(&first, &first.another_instance());
        let Some(fx) = Fixture::new("pg_taking_back_fences_the_other_handle") else {
            return;
        };
        taking_back(&fx.open(), &fx.open());
    }

    fn taking_again<S: Store>(store: &S) {
        let (b, partial) = batch(store, 4);
        store.take_upload(b.id).expect("taken");
        store.take_upload(b.id).expect("taken again");
        store.write_partial(partial, 0, b"abcd").expect("written");
        store.sync_partial(partial, 4, None).expect("synced");
        assert!(matches!(
            store.take_upload(crate::store::BatchId(999)),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn one_handle_taking_again_keeps_its_own_steps() {
        taking_again(&MemoryStore::new());
        let Some(fx) = Fixture::new("pg_one_handle_taking_again_keeps_its_own_steps") else {
            return;
        };
        taking_again(&fx.open());
    }
}
