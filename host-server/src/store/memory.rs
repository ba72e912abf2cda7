//! An in-memory [`Store`] for the simulator, the fuzzers and unit tests.
//!
//! It keeps the same durability model as the SQLite store: metadata changes
//! are durable as soon as a method returns, partial bytes only once synced.
//! `MemoryStore::crash` (feature `test-support`) throws away exactly what a
//! crash would: every partial upload falls back to its durable prefix.
//! Named files, their shares and kept blobs are metadata: a crash keeps
//! them as it keeps batches.
//!
//! Several handles may share one state (`MemoryStore::another_instance`,
//! feature `test-support`), as relay instances share a database: each
//! handle holds its own upload fences (see `fence`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use pickup_proto::Sha1Digest;

use crate::running_sha1::Midstate;

mod fence;
mod forwards;
mod inspect;
mod mailbox;
mod open;

use super::{
    Attrs, Batch, BatchId, BlobId, Content, FileContent, FileRecord, FileRef, Holders, Lookup,
    LookupKey, NameUsage, NamedFile, NewBatch, NewFile, OwnerId, PartialId, Result, Store,
    StoreError, SweepStats, Usage,
};

#[derive(Debug)]
struct StoredBatch {
    batch: Batch,
    code_key: LookupKey,
    token_key: LookupKey,
    /// Deleted at this time while incomplete (see [`NewBatch::stale_at`]).
    stale_at: u64,
    /// The upload's fence: bumped by every [`Store::take_upload`].
    fence: u64,
}

#[derive(Debug)]
struct Partial {
    /// The batch whose file it is (its fence guards it).
    batch: BatchId,
    /// Every byte written, durable or not.
    data: Vec<u8>,
    durable: u64,
    /// The SHA-1 state recorded with the durable offset.
    hashed: Midstate,
}

impl Partial {
    fn new(batch: BatchId) -> Self {
        Partial {
            batch,
            data: Vec::new(),
            durable: 0,
            hashed: Midstate::START,
        }
    }
}

#[derive(Debug)]
struct Blob {
    data: Vec<u8>,
    sha1: Sha1Digest,
    refs: u64,
    /// Drawn when the blob was stored ([`Content::threshold`]).
    threshold: u32,
    /// Owners of batches that completed or linked a file with it.
    owners: BTreeSet<OwnerId>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    batches: BTreeMap<BatchId, StoredBatch>,
    by_code: HashMap<LookupKey, BatchId>,
    by_token: HashMap<LookupKey, BatchId>,
    /// Codes of deleted batches, with their expiry time.
    expired: HashMap<LookupKey, u64>,
    partials: BTreeMap<PartialId, Partial>,
    blobs: BTreeMap<BlobId, Blob>,
    /// Named files by (owner, name); each holds a reference to its blob.
    names: BTreeMap<(String, String), Named>,
    /// Read grants: (owner, name, grantee).
    shares: BTreeSet<(String, String, String)>,
    /// Blobs of replaced or removed names, held (one reference each) until
    /// the time given, like `kept_blobs` in SQLite.
    kept: BTreeMap<BlobId, u64>,
    /// Deliveries ([`crate::mailbox`]), by id.
    deliveries: mailbox::Deliveries,
    /// Forwards ([`super::forwards`]), by id.
    forwards: forwards::Queue,
}

/// A named file's row.
#[derive(Debug, Clone)]
struct Named {
    blob: BlobId,
    size: u64,
    sha1: Sha1Digest,
    attrs: Option<Attrs>,
    updated_at: u64,
}

impl Named {
    fn file(&self, owner: &str, name: &str) -> NamedFile {
        NamedFile {
            owner: owner.to_owned(),
            name: name.to_owned(),
            blob: self.blob,
            size: self.size,
            sha1: self.sha1,
            attrs: self.attrs,
            updated_at: self.updated_at,
        }
    }
}

impl Inner {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn lookup(&self, id: Option<&BatchId>, expired_key: Option<&LookupKey>, now: u64) -> Lookup {
        match id.and_then(|id| self.batches.get(id)) {
            Some(b) if b.batch.expires_at <= now => Lookup::Expired,
            Some(b) => Lookup::Live(self.snapshot(&b.batch)),
            None if expired_key.is_some_and(|k| self.expired.contains_key(k)) => Lookup::Expired,
            None => Lookup::Unknown,
        }
    }

    /// The batch with each partial's current durable offset filled in.
    fn snapshot(&self, batch: &Batch) -> Batch {
        let mut batch = batch.clone();
        for f in &mut batch.files {
            if let FileContent::Partial { id, durable } = &mut f.content {
                *durable = self.partials.get(id).map_or(0, |p| p.durable);
            }
        }
        batch
    }

    /// The owner of a file's batch becomes one of `blob`'s owners.
    fn add_owner(&mut self, file: FileRef, blob: BlobId) {
        let Some(owner) = self.batches.get(&file.batch).map(|b| b.batch.owner) else {
            return;
        };
        if let Some(b) = self.blobs.get_mut(&blob) {
            b.owners.insert(owner);
        }
    }

    /// Drops one reference to `blob` (the sweep collects it at zero).
    fn release(&mut self, blob: BlobId) {
        if let Some(b) = self.blobs.get_mut(&blob) {
            b.refs = b.refs.saturating_sub(1);
        }
    }

    /// The reference a name held on `blob` now keeps it until `until`
    /// instead; a blob kept already keeps one reference, to the later time.
    fn keep(&mut self, blob: BlobId, until: u64) {
        if blob == BlobId::EMPTY {
            return;
        }
        match self.kept.get_mut(&blob) {
            Some(t) => {
                *t = (*t).max(until);
                self.release(blob);
            }
            None => {
                self.kept.insert(blob, until);
            }
        }
    }

    /// Deletes a name's shares.
    fn unshare_all(&mut self, owner: &str, name: &str) {
        self.shares
            .retain(|(o, n, _)| !(o.as_str() == owner && n.as_str() == name));
    }

    fn file_mut(&mut self, file: FileRef) -> Result<&mut FileRecord> {
        self.batches
            .get_mut(&file.batch)
            .and_then(|b| b.batch.files.get_mut(usize::from(file.index)))
            .ok_or(StoreError::NotFound)
    }
}

/// Everything in memory. Cheap to create; share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// The fence this handle holds per batch it took
    /// ([`Store::take_upload`]); 0 for the others. Locked after `inner`.
    fences: Mutex<HashMap<BatchId, u64>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn read_range(data: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let n = buf.len().min(data.len() - start);
    buf[..n].copy_from_slice(&data[start..start + n]);
    n
}

impl Store for MemoryStore {
    fn create_batch(&self, new: &NewBatch<'_>) -> Result<Batch> {
        let mut inner = self.lock();
        if inner.by_code.contains_key(&new.code_key) || inner.by_token.contains_key(&new.token_key)
        {
            return Err(StoreError::Corrupt("duplicate code or token".into()));
        }
        let id = BatchId(inner.id());
        let files = new.files.iter().map(|f| inner.new_file(id, f)).collect();
        let batch = Batch {
            id,
            code: new.code,
            owner: new.owner,
            created_at: new.created_at,
            expires_at: new.expires_at,
            files,
            open: new.open,
        };
        inner.by_code.insert(new.code_key, id);
        inner.by_token.insert(new.token_key, id);
        inner.batches.insert(
            id,
            StoredBatch {
                batch: batch.clone(),
                code_key: new.code_key,
                token_key: new.token_key,
                stale_at: new.stale_at,
                fence: 0,
            },
        );
        Ok(batch)
    }

    fn code_taken(&self, code: &LookupKey) -> Result<bool> {
        let inner = self.lock();
        Ok(inner.by_code.contains_key(code) || inner.expired.contains_key(code))
    }

    fn find_by_code(&self, code: &LookupKey, now: u64) -> Result<Lookup> {
        let inner = self.lock();
        Ok(inner.lookup(inner.by_code.get(code), Some(code), now))
    }

    fn find_by_token(&self, token: &LookupKey, now: u64) -> Result<Lookup> {
        let inner = self.lock();
        Ok(inner.lookup(inner.by_token.get(token), None, now))
    }

    fn take_upload(&self, batch: BatchId) -> Result<Batch> {
        self.take(batch)
    }

    fn usage(&self) -> Result<Usage> {
        let inner = self.lock();
        let blobs: u64 = inner.blobs.values().map(|b| b.data.len() as u64).sum();
        let partial: u64 = inner.partials.values().map(|p| p.durable).sum();
        Ok(Usage {
            bytes: blobs + partial,
            batches: inner.batches.len() as u64,
        })
    }

    fn add_file(&self, batch: BatchId, file: &NewFile<'_>) -> Result<FileRef> {
        self.lock().add_file(batch, file)
    }

    fn close_batch(&self, batch: BatchId) -> Result<()> {
        self.lock().batch_mut(batch)?.open = false;
        Ok(())
    }

    fn end_batch(&self, batch: BatchId, now: u64) -> Result<()> {
        let b = &mut *self.lock();
        let b = b.batch_mut(batch)?;
        b.expires_at = b.expires_at.min(now);
        Ok(())
    }

    fn keep_incomplete(&self, batch: BatchId, stale_at: u64) -> Result<()> {
        let mut inner = self.lock();
        let b = inner.batches.get_mut(&batch).ok_or(StoreError::NotFound)?;
        b.stale_at = b.stale_at.max(stale_at);
        Ok(())
    }

    fn write_partial(&self, id: PartialId, offset: u64, data: &[u8]) -> Result<()> {
        let mut inner = self.lock();
        self.check_partial(&inner, id)?;
        let p = inner.partials.get_mut(&id).ok_or(StoreError::NotFound)?;
        let start = usize::try_from(offset).map_err(|_| StoreError::NotFound)?;
        let end = start + data.len();
        if p.data.len() < end {
            p.data.resize(end, 0);
        }
        p.data[start..end].copy_from_slice(data);
        Ok(())
    }

    fn sync_partial(&self, id: PartialId, durable: u64, hashed: Option<&Midstate>) -> Result<()> {
        let mut inner = self.lock();
        self.check_partial(&inner, id)?;
        let p = inner.partials.get_mut(&id).ok_or(StoreError::NotFound)?;
        if durable > p.data.len() as u64 || hashed.is_some_and(|h| h.len > durable) {
            return Err(StoreError::Corrupt(
                "durable offset past the written bytes".into(),
            ));
        }
        p.durable = durable;
        if let Some(h) = hashed {
            p.hashed = *h;
        }
        Ok(())
    }

    fn partial_hash_state(&self, id: PartialId) -> Result<Option<Midstate>> {
        let inner = self.lock();
        let p = inner.partials.get(&id).ok_or(StoreError::NotFound)?;
        Ok(Some(p.hashed))
    }

    fn read_partial(&self, id: PartialId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let inner = self.lock();
        let p = inner.partials.get(&id).ok_or(StoreError::NotFound)?;
        Ok(read_range(&p.data, offset, buf))
    }

    fn reset_partial(&self, id: PartialId) -> Result<()> {
        {
            let mut inner = self.lock();
            self.check_partial(&inner, id)?;
            let p = inner.partials.get_mut(&id).ok_or(StoreError::NotFound)?;
            p.data.clear();
        }
        self.sync_partial(id, 0, Some(&Midstate::START))
    }

    fn candidates(&self, size: u64, sha1: &Sha1Digest, limit: usize) -> Result<Vec<BlobId>> {
        let inner = self.lock();
        Ok(inner
            .blobs
            .iter()
            .filter(|(_, b)| b.data.len() as u64 == size && b.sha1 == *sha1)
            .map(|(id, _)| *id)
            .take(limit)
            .collect())
    }

    fn read_blob(&self, id: BlobId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if id == BlobId::EMPTY {
            return Ok(0);
        }
        let inner = self.lock();
        let b = inner.blobs.get(&id).ok_or(StoreError::NotFound)?;
        Ok(read_range(&b.data, offset, buf))
    }

    fn complete_file(
        &self,
        file: FileRef,
        partial: PartialId,
        content: &Content,
    ) -> Result<BlobId> {
        let mut inner = self.lock();
        self.check(&inner, file.batch)?;
        match inner.file_mut(file)?.content {
            FileContent::Partial { id, .. } if id == partial => {}
            _ => return Err(StoreError::NotFound),
        }
        // As the SQLite store: the verified SHA-1 becomes the record's.
        inner.file_mut(file)?.sha1 = content.sha1;
        if content.size == 0 {
            inner.partials.remove(&partial);
            inner.file_mut(file)?.content = FileContent::Blob(BlobId::EMPTY);
            return Ok(BlobId::EMPTY);
        }
        let size = usize::try_from(content.size).unwrap_or(usize::MAX);
        let existing = {
            let p = inner.partials.get(&partial).ok_or(StoreError::NotFound)?;
            let bytes = &p.data[..size.min(p.data.len())];
            // Equal bytes, not just an equal SHA-1: collisions never alias.
            inner
                .blobs
                .iter()
                .find(|(_, b)| b.sha1 == content.sha1 && b.data == bytes)
                .map(|(id, _)| *id)
        };
        let mut p = inner
            .partials
            .remove(&partial)
            .ok_or(StoreError::NotFound)?;
        let blob = match existing {
            Some(id) => {
                if let Some(b) = inner.blobs.get_mut(&id) {
                    b.refs += 1;
                }
                id
            }
            None => {
                p.data.resize(size, 0);
                let id = BlobId(partial.0);
                inner.blobs.insert(
                    id,
                    Blob {
                        data: p.data,
                        sha1: content.sha1,
                        refs: 1,
                        threshold: content.threshold,
                        owners: BTreeSet::new(),
                    },
                );
                id
            }
        };
        inner.file_mut(file)?.content = FileContent::Blob(blob);
        inner.add_owner(file, blob);
        Ok(blob)
    }

    fn link_file(&self, file: FileRef, blob: BlobId) -> Result<bool> {
        let mut inner = self.lock();
        self.check(&inner, file.batch)?;
        let partial = match inner.file_mut(file)?.content {
            FileContent::Partial { id, .. } => id,
            FileContent::Blob(_) => return Err(StoreError::NotFound),
        };
        let Some(b) = inner.blobs.get_mut(&blob) else {
            return Ok(false);
        };
        b.refs += 1;
        inner.partials.remove(&partial);
        inner.file_mut(file)?.content = FileContent::Blob(blob);
        inner.add_owner(file, blob);
        Ok(true)
    }

    fn holders(&self, blob: BlobId, owner: &OwnerId) -> Result<Holders> {
        let inner = self.lock();
        let b = inner.blobs.get(&blob).ok_or(StoreError::NotFound)?;
        Ok(Holders {
            owned: b.owners.contains(owner),
            owners: b.owners.len() as u64,
            threshold: b.threshold,
        })
    }

    fn sweep(&self, now: u64, forget_before: u64) -> Result<SweepStats> {
        let mut inner = self.lock();
        let mut stats = SweepStats::default();
        let expired: Vec<BatchId> = inner
            .batches
            .iter()
            .filter(|(_, b)| b.batch.expires_at <= now || (b.stale_at <= now && !b.batch.ready()))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(b) = inner.batches.remove(&id) else {
                continue;
            };
            inner.by_code.remove(&b.code_key);
            inner.by_token.remove(&b.token_key);
            inner
                .expired
                .insert(b.code_key, b.batch.expires_at.min(now));
            for f in &b.batch.files {
                match f.content {
                    FileContent::Partial { id, .. } => {
                        inner.partials.remove(&id);
                        stats.partials += 1;
                    }
                    FileContent::Blob(blob) => {
                        if let Some(blob) = inner.blobs.get_mut(&blob) {
                            blob.refs = blob.refs.saturating_sub(1);
                        }
                    }
                }
            }
            stats.batches += 1;
        }
        let before = inner.expired.len();
        inner.expired.retain(|_, at| *at >= forget_before);
        inner.sweep_deliveries_of_gone_batches(now, forget_before, &mut stats);
        stats.forgotten = (before - inner.expired.len()) as u64;
        let released: Vec<BlobId> = inner
            .kept
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in released {
            inner.kept.remove(&id);
            inner.release(id);
            stats.released += 1;
        }
        let before = inner.blobs.len();
        inner.blobs.retain(|_, b| b.refs > 0);
        stats.blobs = (before - inner.blobs.len()) as u64;
        Ok(stats)
    }

    fn bind_names(
        &self,
        owner: &str,
        batch: BatchId,
        now: u64,
        keep_replaced_secs: u64,
    ) -> Result<u64> {
        let mut inner = self.lock();
        let b = inner.batches.get(&batch).ok_or(StoreError::NotFound)?;
        // Checked in full before anything changes: all names or none.
        let mut bound: BTreeMap<String, Named> = BTreeMap::new();
        for f in &b.batch.files {
            let FileContent::Blob(blob) = f.content else {
                return Err(StoreError::Incomplete);
            };
            if blob != BlobId::EMPTY && !inner.blobs.contains_key(&blob) {
                return Err(StoreError::Corrupt(format!(
                    "blob {} of a file is gone",
                    blob.0
                )));
            }
            let named = Named {
                blob,
                size: f.size,
                sha1: f.sha1,
                attrs: f.attrs,
                updated_at: now,
            };
            bound.insert(f.name.clone(), named);
        }
        let until = now.saturating_add(keep_replaced_secs);
        let count = bound.len() as u64;
        for (name, named) in bound {
            // Checked above: the blob exists (or is the empty content).
            if let Some(b) = inner.blobs.get_mut(&named.blob) {
                b.refs += 1;
            }
            let new_blob = named.blob;
            if let Some(old) = inner.names.insert((owner.to_owned(), name), named) {
                if old.blob == new_blob {
                    inner.release(old.blob);
                } else {
                    inner.keep(old.blob, until);
                }
            }
        }
        Ok(count)
    }

    fn find_name(&self, owner: &str, name: &str) -> Result<Option<NamedFile>> {
        let inner = self.lock();
        Ok(inner
            .names
            .get(&(owner.to_owned(), name.to_owned()))
            .map(|n| n.file(owner, name)))
    }

    fn list_names(&self, owner: &str) -> Result<Vec<NamedFile>> {
        let inner = self.lock();
        Ok(inner
            .names
            .range((owner.to_owned(), String::new())..)
            .take_while(|((o, _), _)| o == owner)
            .map(|((_, name), n)| n.file(owner, name))
            .collect())
    }

    fn remove_name(
        &self,
        owner: &str,
        name: &str,
        now: u64,
        keep_replaced_secs: u64,
    ) -> Result<bool> {
        let mut inner = self.lock();
        let Some(old) = inner.names.remove(&(owner.to_owned(), name.to_owned())) else {
            return Ok(false);
        };
        inner.keep(old.blob, now.saturating_add(keep_replaced_secs));
        inner.unshare_all(owner, name);
        Ok(true)
    }

    fn share_name(&self, owner: &str, name: &str, grantee: &str, allow: bool) -> Result<bool> {
        let mut inner = self.lock();
        if !inner
            .names
            .contains_key(&(owner.to_owned(), name.to_owned()))
        {
            return Ok(false);
        }
        let share = (owner.to_owned(), name.to_owned(), grantee.to_owned());
        if allow {
            inner.shares.insert(share);
        } else {
            inner.shares.remove(&share);
        }
        Ok(true)
    }

    fn is_shared(&self, owner: &str, name: &str, grantee: &str) -> Result<bool> {
        let inner = self.lock();
        Ok(inner
            .shares
            .contains(&(owner.to_owned(), name.to_owned(), grantee.to_owned())))
    }

    fn name_usage(&self, owner: &str) -> Result<NameUsage> {
        let names = self.list_names(owner)?;
        Ok(NameUsage {
            bytes: names.iter().map(|n| n.size).sum(),
            files: names.len() as u64,
        })
    }

    fn remove_owner(&self, owner: &str) -> Result<()> {
        let mut inner = self.lock();
        let owned: Vec<(String, String)> = inner
            .names
            .range((owner.to_owned(), String::new())..)
            .take_while(|((o, _), _)| o == owner)
            .map(|(k, _)| k.clone())
            .collect();
        for key in owned {
            if let Some(old) = inner.names.remove(&key) {
                inner.release(old.blob);
            }
        }
        inner
            .shares
            .retain(|(o, _, g)| o.as_str() != owner && g.as_str() != owner);
        Ok(())
    }
}
