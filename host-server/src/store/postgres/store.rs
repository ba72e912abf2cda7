//! [`PgStore`]: opening it, its fences, and the [`Store`] methods that are
//! one statement or one short transaction each.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use pickup_proto::Sha1Digest;
use tokio_postgres::Transaction;

use super::db::{Db, DbError};
use super::migrations::{check_durability, migrate, MIGRATIONS};
use super::objects::{ObjectStoreConfig, Objects};
use super::rows::{corrupt, KeyColumn};
use super::rows::{count_usage, file_partial, insert_file, int, load, nat, refused, FileRow};
use crate::running_sha1::Midstate;
use crate::store::contents::Recovery;
use crate::store::{
    Batch, BatchId, BlobId, Content, FileRef, Holders, Lookup, LookupKey, NameUsage, NamedFile,
    NewBatch, NewFile, OwnerId, PartialId, Result, Store, StoreError, SweepStats, Usage,
};

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Refused(e) => *e,
            DbError::Range(what) => StoreError::Corrupt(format!("{what} out of range")),
            other => StoreError::Db(other.to_string()),
        }
    }
}

/// How long a doomed object waits before it is deleted, unless
/// [`PgStore::set_collect_delay`] says otherwise: readers that found it
/// just before it became unreachable have their time (design §5.3).
pub const COLLECT_DELAY_SECS: i64 = 60;

/// Metadata in PostgreSQL and contents in S3-compatible object storage,
/// both shared by every relay instance of a cluster. The data directory
/// holds only this instance's spool (bytes received and not yet synced),
/// emptied at open: instances need not share it.
pub struct PgStore {
    pub(super) db: Db,
    pub(super) objects: Objects,
    dir: PathBuf,
    /// The fence this instance holds per batch whose upload it took
    /// ([`Store::take_upload`]); a batch it created holds fence 0.
    fences: Mutex<HashMap<BatchId, i64>>,
    /// Seconds a doomed object waits before the collector deletes it.
    pub(super) collect_delay: i64,
}

impl core::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PgStore")
            .field("dir", &self.dir)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// The object storage `[store.s3]` names: region from the key, else
/// `AWS_REGION`, else `us-east-1`; plain HTTP only to an endpoint that
/// says `http://`.
pub fn object_store_config(s3: &crate::config::S3Config) -> ObjectStoreConfig {
    let region = s3
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
        .unwrap_or_else(|| "us-east-1".into());
    ObjectStoreConfig {
        endpoint: s3.endpoint.clone(),
        region,
        bucket: s3.bucket.clone().unwrap_or_default(),
        prefix: s3.prefix.clone(),
        access_key_id: s3.access_key_id.clone(),
        secret_access_key: s3.secret_access_key.clone(),
        allow_http: s3
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://")),
    }
}

/// Applies the migrations `url`'s database lacks, alone (`pickup-relay
/// migrate`); returns the versions applied now and the schema's version.
pub fn migrate_database(url: &str) -> std::result::Result<(Vec<i32>, i32), DbError> {
    let db = Db::connect(url, 1)?;
    db.block_on(check_durability(&db))?;
    let applied = db.block_on(migrate(&db, MIGRATIONS))?;
    Ok((applied.versions, applied.current))
}

impl PgStore {
    /// Connects at most `connections` connections to `url`, refuses a
    /// server that could lose a commit, applies missing migrations, opens
    /// the object storage `s3` names, and empties the spool under
    /// `data_dir` (nothing in it is trusted: another instance may have
    /// continued those uploads). Nothing shared is changed: other
    /// instances' uploads go on. Call it from a thread that is not a
    /// runtime worker.
    pub fn open(
        url: &str,
        connections: usize,
        data_dir: &Path,
        s3: &ObjectStoreConfig,
    ) -> Result<(PgStore, Recovery)> {
        let db = Db::connect(url, connections)?;
        db.block_on(check_durability(&db))?;
        db.block_on(migrate(&db, MIGRATIONS))?;
        let objects = Objects::connect(s3, data_dir)?;
        db.block_on(objects.clear_spool())?;
        let store = PgStore {
            db,
            objects,
            dir: data_dir.to_owned(),
            fences: Mutex::default(),
            collect_delay: COLLECT_DELAY_SECS,
        };
        let recovery = store.recover()?;
        Ok((store, recovery))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets how long doomed objects wait before they are deleted (tests
    /// collect at once).
    pub fn set_collect_delay(&mut self, secs: i64) {
        self.collect_delay = secs.max(0);
    }

    /// Runs `step` as one committed transaction from this thread, and
    /// waits for it; a step refused with a [`StoreError`] rolls back.
    ///
    /// Store calls come from jobs on blocking threads, except a few that
    /// sessions make from their tasks (`usage` when a quota is checked
    /// again): on a worker of a multi-thread runtime the wait is wrapped
    /// in `block_in_place`, which hands the worker's other tasks to
    /// another worker instead of stalling them (and which only runs the
    /// closure on a blocking thread).
    pub(super) fn run<T>(
        &self,
        step: impl AsyncFnMut(&Transaction<'_>) -> std::result::Result<T, DbError>,
    ) -> Result<T> {
        Ok(self.block_on(self.db.transaction(step))?)
    }

    /// Runs an object storage step on the store's runtime and waits for
    /// it, as [`run`](Self::run) does.
    pub(super) fn wait<T>(
        &self,
        step: impl Future<Output = super::objects::Result<T>>,
    ) -> Result<T> {
        Ok(self.block_on(step)?)
    }

    /// Waits for `f` on the store's runtime (see [`run`](Self::run)).
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let on_runtime =
            Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
        if on_runtime {
            tokio::task::block_in_place(|| self.db.block_on(f))
        } else {
            self.db.block_on(f)
        }
    }

    fn fences(&self) -> MutexGuard<'_, HashMap<BatchId, i64>> {
        self.fences.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `fence` as the one this instance holds for `batch`.
    pub(super) fn hold(&self, batch: BatchId, fence: i64) {
        let mut fences = self.fences();
        let held = fences.entry(batch).or_default();
        *held = (*held).max(fence);
    }

    pub(super) fn held(&self, batch: i64) -> i64 {
        self.fences()
            .get(&BatchId(nat(batch)))
            .copied()
            .unwrap_or(0)
    }

    /// Refuses the step with [`StoreError::Fenced`] if another instance
    /// took `batch` after this one. Holds the batch row `FOR SHARE` to the
    /// end of the step, so a take waits for it and then sees its commit.
    /// A batch that is gone passes: the step itself answers `NotFound`.
    pub(super) async fn check_fence(
        &self,
        tx: &Transaction<'_>,
        batch: i64,
    ) -> std::result::Result<(), DbError> {
        let row = tx
            .query_opt(
                "SELECT lease_fence FROM batches WHERE id = $1 FOR SHARE",
                &[&batch],
            )
            .await?;
        match row {
            Some(r) if self.held(batch) < r.get::<_, i64>(0) => Err(refused(StoreError::Fenced)),
            _ => Ok(()),
        }
    }

    /// Forgets the fences of batches that no longer exist (swept by any
    /// instance), so the map stays as small as the live batches taken here.
    pub(super) fn forget_fences(&self) -> Result<()> {
        let taken: Vec<i64> = self.fences().keys().map(|b| nat_to_int(b.0)).collect();
        if taken.is_empty() {
            return Ok(());
        }
        let live: HashSet<i64> = self.run(async |tx| {
            let rows = tx
                .query("SELECT id FROM batches WHERE id = ANY($1)", &[&taken])
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?;
        self.fences().retain(|b, _| live.contains(&nat_to_int(b.0)));
        Ok(())
    }

    /// What there is to resume: nothing is repaired, since nothing of
    /// the contents is this instance's alone any more.
    fn recover(&self) -> Result<Recovery> {
        let (partials, batches): (i64, i64) = self.run(async |tx| {
            let row = tx
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM partials WHERE durable > 0),
                            (SELECT COUNT(*) FROM batches)",
                    &[],
                )
                .await?;
            Ok((row.get(0), row.get(1)))
        })?;
        Ok(Recovery {
            partials: nat(partials),
            batches: nat(batches),
            ..Recovery::default()
        })
    }
}

/// A batch id as stored (ids come from the database, so they fit).
fn nat_to_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store for PgStore {
    fn create_batch(&self, new: &NewBatch<'_>) -> Result<Batch> {
        let files: Vec<FileRow> = new.files.iter().map(FileRow::from).collect();
        let (created_at, expires_at, stale_at) = (
            int(new.created_at)?,
            int(new.expires_at)?,
            int(new.stale_at)?,
        );
        let code_value = new.code.value().to_le_bytes();
        let code_len = new.code.len() as i64;
        self.run(async |tx| {
            let inserted = tx
                .query_opt(
                    "INSERT INTO batches(code_len, code_value, code_key, token_key, created_at,
                         expires_at, stale_at, owner, open)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (token_key) DO NOTHING RETURNING id",
                    &[
                        &code_len,
                        &&code_value[..],
                        &&new.code_key.0[..],
                        &&new.token_key.0[..],
                        &created_at,
                        &expires_at,
                        &stale_at,
                        &&new.owner.0[..],
                        &new.open,
                    ],
                )
                .await?;
            // Tokens are random and never reused: the batch of this token
            // is this batch, made by a try whose commit answer was lost.
            let Some(inserted) = inserted else {
                return match load(tx, KeyColumn::Token, &new.token_key, 0).await? {
                    Lookup::Live(b) if b.code == new.code => Ok(b),
                    _ => Err(corrupt("a resume token's key is taken")),
                };
            };
            let id: i64 = inserted.get(0);
            let mut records = Vec::with_capacity(files.len());
            for (i, file) in files.iter().enumerate() {
                records.push(insert_file(tx, id, i as i64, file).await?);
            }
            Ok(Batch {
                id: BatchId(nat(id)),
                code: new.code,
                owner: new.owner,
                created_at: new.created_at,
                expires_at: new.expires_at,
                files: records,
                open: new.open,
            })
        })
    }

    fn code_taken(&self, code: &LookupKey) -> Result<bool> {
        self.run(async |tx| {
            Ok(tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM batches WHERE code_key = $1)
                         OR EXISTS(SELECT 1 FROM expired WHERE code_key = $1)",
                    &[&&code.0[..]],
                )
                .await?
                .get(0))
        })
    }

    fn find_by_code(&self, code: &LookupKey, now: u64) -> Result<Lookup> {
        self.run(async |tx| load(tx, KeyColumn::Code, code, now).await)
    }

    fn find_by_token(&self, token: &LookupKey, now: u64) -> Result<Lookup> {
        self.run(async |tx| load(tx, KeyColumn::Token, token, now).await)
    }

    fn add_file(&self, batch: BatchId, file: &NewFile<'_>) -> Result<FileRef> {
        let id = int(batch.0)?;
        let file = FileRow::from(file);
        self.run(async |tx| {
            // The row lock orders concurrent additions to one batch.
            let open: Option<bool> = tx
                .query_opt("SELECT open FROM batches WHERE id = $1 FOR UPDATE", &[&id])
                .await?
                .map(|r| r.get(0));
            if open != Some(true) {
                return Err(refused(StoreError::NotFound));
            }
            let next: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(idx) + 1, 0) FROM files WHERE batch = $1",
                    &[&id],
                )
                .await?
                .get(0);
            let index = u16::try_from(next).map_err(|_| corrupt("too many files"))?;
            insert_file(tx, id, next, &file).await?;
            Ok(FileRef { batch, index })
        })
    }

    fn close_batch(&self, batch: BatchId) -> Result<()> {
        let id = int(batch.0)?;
        self.run(async |tx| {
            let n = tx
                .execute("UPDATE batches SET open = FALSE WHERE id = $1", &[&id])
                .await?;
            if n == 0 {
                return Err(refused(StoreError::NotFound));
            }
            Ok(())
        })
    }

    fn end_batch(&self, batch: BatchId, now: u64) -> Result<()> {
        let (id, now) = (int(batch.0)?, int(now)?);
        self.run(async |tx| {
            let n = tx
                .execute(
                    "UPDATE batches SET expires_at = LEAST(expires_at, $2) WHERE id = $1",
                    &[&id, &now],
                )
                .await?;
            if n == 0 {
                return Err(refused(StoreError::NotFound));
            }
            Ok(())
        })
    }

    /// Bumps the batch's fence and re-reads the batch in the same
    /// transaction (docs/design/scale-out.md §5.1): the bump waits for
    /// durable steps holding the row `FOR SHARE`, so the batch read holds
    /// all the previous owner committed, and its later steps are fenced.
    fn take_upload(&self, batch: BatchId) -> Result<Batch> {
        let id = int(batch.0)?;
        let (taken, fence) = self.run(async |tx| {
            let row = tx
                .query_opt(
                    "UPDATE batches SET lease_fence = lease_fence + 1 WHERE id = $1
                     RETURNING lease_fence, token_key",
                    &[&id],
                )
                .await?
                .ok_or_else(|| refused(StoreError::NotFound))?;
            let key = LookupKey(super::rows::key32(row.get(1), "token key")?);
            match load(tx, KeyColumn::Token, &key, 0).await? {
                Lookup::Live(b) => Ok((b, row.get::<_, i64>(0))),
                Lookup::Expired | Lookup::Unknown => Err(refused(StoreError::NotFound)),
            }
        })?;
        let before = self.fences().insert(batch, fence).unwrap_or(0);
        if fence == before + 1 {
            return Ok(taken);
        }
        // Another instance took the upload since this one held it: what
        // was spooled here may not be what that one made durable since.
        for file in &taken.files {
            if let crate::store::FileContent::Partial { id, .. } = file.content {
                self.wait(self.objects.drop_spool(id.0))?;
            }
        }
        Ok(taken)
    }

    fn usage(&self) -> Result<Usage> {
        self.run(async |tx| count_usage(tx).await)
    }

    fn keep_incomplete(&self, batch: BatchId, stale_at: u64) -> Result<()> {
        let (id, stale_at) = (int(batch.0)?, int(stale_at)?);
        self.run(async |tx| {
            tx.execute(
                "UPDATE batches SET stale_at = GREATEST(COALESCE(stale_at, 0), $2) WHERE id = $1",
                &[&id, &stale_at],
            )
            .await?;
            Ok(())
        })
    }

    fn write_partial(&self, id: PartialId, offset: u64, data: &[u8]) -> Result<()> {
        self.spool(id, offset, data)
    }

    fn sync_partial(&self, id: PartialId, durable: u64, hashed: Option<&Midstate>) -> Result<()> {
        self.sync(id, durable, hashed)
    }

    fn partial_hash_state(&self, id: PartialId) -> Result<Option<Midstate>> {
        let id = int(id.0)?;
        let stored: Option<Vec<u8>> = self.run(async |tx| {
            let row = tx
                .query_opt("SELECT hashed FROM partials WHERE id = $1", &[&id])
                .await?
                .ok_or_else(|| refused(StoreError::NotFound))?;
            Ok(row.get(0))
        })?;
        Ok(stored.and_then(|b| Midstate::from_bytes(&b)))
    }

    fn read_partial(&self, id: PartialId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.read_spooled(id, offset, buf)
    }

    fn reset_partial(&self, id: PartialId) -> Result<()> {
        self.reset(id)
    }

    fn candidates(&self, size: u64, sha1: &Sha1Digest, limit: usize) -> Result<Vec<BlobId>> {
        self.candidate_ids(size, sha1, limit)
    }

    fn read_blob(&self, id: BlobId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if id == BlobId::EMPTY {
            return Ok(0);
        }
        self.wait(self.objects.read_blob(id.0, offset, buf))
    }

    fn complete_file(
        &self,
        file: FileRef,
        partial: PartialId,
        content: &Content,
    ) -> Result<BlobId> {
        self.complete(file, partial, content)
    }

    fn link_file(&self, file: FileRef, blob: BlobId) -> Result<bool> {
        self.link(file, blob)
    }

    fn holders(&self, blob: BlobId, owner: &OwnerId) -> Result<Holders> {
        self.blob_holders(blob, owner)
    }

    fn sweep(&self, now: u64, forget_before: u64) -> Result<SweepStats> {
        let stats = self.sweep_all(now, forget_before)?;
        self.forget_fences()?;
        Ok(stats)
    }

    fn bind_names(
        &self,
        owner: &str,
        batch: BatchId,
        now: u64,
        keep_replaced_secs: u64,
    ) -> Result<u64> {
        self.bind_batch_names(owner, batch, now, keep_replaced_secs)
    }

    fn find_name(&self, owner: &str, name: &str) -> Result<Option<NamedFile>> {
        self.named_file(owner, name)
    }

    fn list_names(&self, owner: &str) -> Result<Vec<NamedFile>> {
        self.named_files(owner)
    }

    fn remove_name(
        &self,
        owner: &str,
        name: &str,
        now: u64,
        keep_replaced_secs: u64,
    ) -> Result<bool> {
        self.unbind_name(owner, name, now, keep_replaced_secs)
    }

    fn share_name(&self, owner: &str, name: &str, grantee: &str, allow: bool) -> Result<bool> {
        self.set_share(owner, name, grantee, allow)
    }

    fn is_shared(&self, owner: &str, name: &str, grantee: &str) -> Result<bool> {
        self.shared_with(owner, name, grantee)
    }

    fn name_usage(&self, owner: &str) -> Result<NameUsage> {
        self.names_held(owner)
    }

    fn remove_owner(&self, owner: &str) -> Result<()> {
        self.drop_owner(owner)
    }
}

/// The partial a file points at, refused as `NotFound` unless it is `pid`.
pub(super) async fn expect_partial(
    tx: &Transaction<'_>,
    file: FileRef,
    pid: i64,
) -> std::result::Result<(), DbError> {
    if file_partial(tx, file).await? != Some(pid) {
        return Err(refused(StoreError::NotFound));
    }
    Ok(())
}
