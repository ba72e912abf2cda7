//! The default [`Store`]: metadata in SQLite, contents as files.
//!
//! ```text
//!   DATA/relay.sqlite (+ -wal, -shm)   batches, files, partials, blobs, expired codes,
//!                                      users' names, their shares, kept blobs,
//!                                      deliveries to terminals (`deliveries.rs`)
//!   DATA/partial/<id>                  bytes of an upload in progress
//!   DATA/blobs/<id>                    bytes of a complete, verified file
//!                                      (none for empty files: BlobId::EMPTY)
//! ```
//!
//! Files are named by internal id only: nothing a client sends shapes a path.
//! The database runs in WAL mode with `synchronous=FULL`, so a committed
//! transaction survives power loss. The rules that make an acknowledged
//! byte survive `kill -9`:
//!
//! 1. [`Store::sync_partial`] fsyncs the partial file (and its directory
//!    entry, once), then records the durable offset in a committed
//!    transaction. Only then may the session send an `Ack`.
//! 2. On open, every partial file is truncated to its recorded durable offset
//!    (bytes past it were never acknowledged), and files no row refers to are
//!    deleted.
//! 3. [`Store::complete_file`] fsyncs the partial file, renames it into
//!    `blobs/`, fsyncs that directory, and only then commits the row that
//!    says the blob exists. A crash between rename and commit leaves a
//!    partial row whose file sits in `blobs/`; recovery moves it back. (The
//!    old name needs no fsync: a partial file without a row is an orphan.)
//!
//! Concurrency: the database lock is never held across an fsync or a read
//! of file contents, and concurrent completions share directory fsyncs
//! (`DirSync`), so many small uploads finishing at once do not queue
//! behind each other's disk flushes.

mod blobs;
mod deliveries;
mod forwards;
mod names;
mod recovery;
mod rows;
mod schema;
mod sweep;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use pickup_proto::Sha1Digest;
use rusqlite::{params, Connection, OptionalExtension};

use crate::running_sha1::Midstate;

use self::rows::{count_usage, exec, to_i64, to_u64};
pub(crate) use self::schema::{connect, db_file, prepare_db_file};
use super::commit::{Delta, GroupCommit};
use super::contents::{sync_dir, Contents};
pub use super::contents::{Recovery, DIR_MODE, FILE_MODE, OPEN_FILES_PER_KIND};
use super::{
    Attrs, Batch, BatchId, BlobId, Content, FileContent, FileRecord, FileRef, Holders, Lookup,
    LookupKey, NameUsage, NamedFile, NewBatch, NewFile, OwnerId, PartialId, Result, Store,
    StoreError, SweepStats, Usage,
};

/// The store's directories and database in `dir` that group or others may
/// access, with their permission bits; missing entries are skipped.
pub fn wide_permissions(dir: &Path) -> Vec<(PathBuf, u32)> {
    [
        dir.to_path_buf(),
        dir.join("partial"),
        dir.join("blobs"),
        dir.join(DB_FILE),
    ]
    .into_iter()
    .filter_map(|path| {
        let mode = std::fs::metadata(&path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some((path, mode))
    })
    .collect()
}

/// SQLite metadata plus one file per partial upload and per blob.
pub struct SqliteStore {
    dir: PathBuf,
    /// The partial and blob files.
    files: Contents,
    db: Mutex<Connection>,
    /// Writes share transactions and WAL fsyncs ([`GroupCommit`]).
    group: GroupCommit,
    /// The counters behind [`Store::usage`], kept current by every commit
    /// (and recounted by a sweep) instead of summing tables per request.
    usage: Mutex<Usage>,
}

impl core::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .finish()
    }
}

/// The database's file name in the data directory.
const DB_FILE: &str = "relay.sqlite";

impl SqliteStore {
    /// Opens (or creates) the store in `dir` and recovers from any crash:
    /// see the module docs for what recovery does. What it creates is
    /// private ([`DIR_MODE`], [`FILE_MODE`]); what exists keeps its mode.
    pub fn open(dir: &Path) -> Result<(SqliteStore, Recovery)> {
        let files = Contents::open(dir)?;
        let db_path = schema::prepare_db_file(dir)?;
        sync_dir(dir)?;
        let db = schema::open_db(&db_path)?;
        let store = SqliteStore {
            dir: dir.to_owned(),
            files,
            db: Mutex::new(db),
            group: GroupCommit::default(),
            usage: Mutex::new(Usage::default()),
        };
        let recovery = store.recover()?;
        *store.usage_counters() = count_usage(&store.db())?;
        Ok((store, recovery))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn usage_counters(&self) -> MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `change` in a committed transaction shared with concurrent
    /// writers (see [`GroupCommit`]); returns once it is durable.
    fn write<T, F>(&self, change: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<(T, Delta)> + Send + 'static,
    {
        let apply = |d: Delta| {
            let mut u = self.usage_counters();
            u.bytes = u.bytes.saturating_add_signed(d.bytes);
            u.batches = u.batches.saturating_add_signed(d.batches);
        };
        self.group.write(&|| self.db(), &apply, change)
    }

    /// Keeps at most `per_kind` partial and `per_kind` blob files open
    /// ([`OPEN_FILES_PER_KIND`] by default), closing the surplus at once; a
    /// handle a running store call holds closes when that call is done.
    pub fn limit_open_files(&self, per_kind: usize) {
        self.files.limit_open_files(per_kind);
    }
}

impl Store for SqliteStore {
    fn create_batch(&self, new: &NewBatch<'_>) -> Result<Batch> {
        let code = new.code;
        let (code_key, token_key, owner) = (new.code_key, new.token_key, new.owner);
        let (created_at, expires_at) = (to_i64(new.created_at)?, to_i64(new.expires_at)?);
        let files: Vec<FileRow> = new
            .files
            .iter()
            .map(|f| {
                (
                    f.name.to_owned(),
                    f.size,
                    f.sha1,
                    f.is_empty_content(),
                    f.attrs,
                )
            })
            .collect();
        let (stale_at, open) = (to_i64(new.stale_at)?, new.open);
        self.write(move |db| {
            exec(
                db,
                "INSERT INTO batches(code_len, code_value, code_key, token_key, created_at, expires_at, stale_at, owner, open)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    code.len() as i64,
                    &code.value().to_le_bytes()[..],
                    &code_key.0[..],
                    &token_key.0[..],
                    created_at,
                    expires_at,
                    stale_at,
                    &owner.0[..],
                    open,
                ],
            )?;
            let id = db.last_insert_rowid();
            let mut records = Vec::with_capacity(files.len());
            for (i, file) in files.into_iter().enumerate() {
                records.push(insert_file(db, id, i as i64, file)?);
            }
            let batch = Batch {
                id: BatchId(to_u64(id)),
                code,
                owner,
                created_at: to_u64(created_at),
                expires_at: to_u64(expires_at),
                files: records,
                open,
            };
            // Nothing is stored yet: the announced bytes are a reservation.
            Ok((batch, Delta { bytes: 0, batches: 1 }))
        })
    }

    fn code_taken(&self, code: &LookupKey) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM batches WHERE code_key = ?1)
                 OR EXISTS(SELECT 1 FROM expired WHERE code_key = ?1)",
            )?
            .query_row(params![&code.0[..]], |r| r.get(0))?)
    }

    fn find_by_code(&self, code: &LookupKey, now: u64) -> Result<Lookup> {
        self.load(&self.db(), "code_key", code, now)
    }

    fn find_by_token(&self, token: &LookupKey, now: u64) -> Result<Lookup> {
        self.load(&self.db(), "token_key", token, now)
    }

    /// One relay process serves a SQLite store (its recovery at start
    /// assumes no other writer), so there is no other instance to fence:
    /// the relay's leases already decide which session writes. Taking an upload only reloads
    /// the batch (by its token's key, ignoring expiry as the caller just
    /// found it live).
    fn take_upload(&self, batch: BatchId) -> Result<Batch> {
        let db = self.db();
        let key: Option<Vec<u8>> = db
            .prepare_cached("SELECT token_key FROM batches WHERE id = ?1")?
            .query_row(params![to_i64(batch.0)?], |r| r.get(0))
            .optional()?;
        let key: [u8; 32] = key
            .ok_or(StoreError::NotFound)?
            .try_into()
            .map_err(|_| StoreError::Corrupt("token key".into()))?;
        match self.load(&db, "token_key", &LookupKey(key), 0)? {
            Lookup::Live(b) => Ok(b),
            Lookup::Expired | Lookup::Unknown => Err(StoreError::NotFound),
        }
    }

    fn usage(&self) -> Result<Usage> {
        Ok(*self.usage_counters())
    }

    fn add_file(&self, batch: BatchId, file: &NewFile<'_>) -> Result<FileRef> {
        let id = to_i64(batch.0)?;
        let file = (
            file.name.to_owned(),
            file.size,
            file.sha1,
            file.is_empty_content(),
            file.attrs,
        );
        self.write(move |db| {
            let open: Option<bool> = db
                .prepare_cached("SELECT open FROM batches WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            if open != Some(true) {
                return Err(StoreError::NotFound);
            }
            let next: i64 = db
                .prepare_cached("SELECT COALESCE(MAX(idx) + 1, 0) FROM files WHERE batch = ?1")?
                .query_row(params![id], |r| r.get(0))?;
            let index =
                u16::try_from(next).map_err(|_| StoreError::Corrupt("too many files".into()))?;
            insert_file(db, id, next, file)?;
            Ok((FileRef { batch, index }, Delta::default()))
        })
    }

    fn close_batch(&self, batch: BatchId) -> Result<()> {
        let id = to_i64(batch.0)?;
        self.write(move |db| {
            let n = exec(db, "UPDATE batches SET open = 0 WHERE id = ?1", params![id])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(((), Delta::default()))
        })
    }

    fn end_batch(&self, batch: BatchId, now: u64) -> Result<()> {
        let (batch, now) = (to_i64(batch.0)?, to_i64(now)?);
        self.write(move |db| {
            let n = exec(
                db,
                "UPDATE batches SET expires_at = MIN(expires_at, ?2) WHERE id = ?1",
                params![batch, now],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(((), Delta::default()))
        })
    }

    fn keep_incomplete(&self, batch: BatchId, stale_at: u64) -> Result<()> {
        let (batch, stale_at) = (to_i64(batch.0)?, to_i64(stale_at)?);
        self.write(move |db| {
            exec(
                db,
                "UPDATE batches SET stale_at = MAX(COALESCE(stale_at, 0), ?2) WHERE id = ?1",
                params![batch, stale_at],
            )?;
            Ok(((), Delta::default()))
        })
    }

    fn write_partial(&self, id: PartialId, offset: u64, data: &[u8]) -> Result<()> {
        self.files.write_partial(id, offset, data)
    }

    fn write_partial_pieces(&self, id: PartialId, offset: u64, pieces: &[&[u8]]) -> Result<()> {
        self.files.write_partial_pieces(id, offset, pieces)
    }

    fn sync_partial(&self, id: PartialId, durable: u64, hashed: Option<&Midstate>) -> Result<()> {
        self.files.sync_partial(id)?;
        if hashed.is_some_and(|h| h.len > durable) {
            return Err(StoreError::Corrupt(
                "hash state past the durable offset".into(),
            ));
        }
        let (durable, id) = (to_i64(durable)?, to_i64(id.0)?);
        let hashed = hashed.map(|h| h.to_bytes().to_vec());
        self.write(move |db| {
            let before: i64 = db
                .prepare_cached("SELECT durable FROM partials WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))
                .optional()?
                .ok_or(StoreError::NotFound)?;
            exec(
                db,
                "UPDATE partials SET durable = ?1, hashed = COALESCE(?3, hashed) WHERE id = ?2",
                params![durable, id, hashed],
            )?;
            Ok((
                (),
                Delta {
                    bytes: durable - before,
                    batches: 0,
                },
            ))
        })
    }

    fn partial_hash_state(&self, id: PartialId) -> Result<Option<Midstate>> {
        let stored: Option<Option<Vec<u8>>> = self
            .db()
            .prepare_cached("SELECT hashed FROM partials WHERE id = ?1")?
            .query_row(params![to_i64(id.0)?], |r| r.get(0))
            .optional()?;
        let stored = stored.ok_or(StoreError::NotFound)?;
        Ok(stored.and_then(|b| Midstate::from_bytes(&b)))
    }

    fn read_partial(&self, id: PartialId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.files.read_partial(id, offset, buf)
    }

    fn reset_partial(&self, id: PartialId) -> Result<()> {
        self.files.truncate_partial(id)?;
        self.sync_partial(id, 0, Some(&Midstate::START))
    }

    fn candidates(&self, size: u64, sha1: &Sha1Digest, limit: usize) -> Result<Vec<BlobId>> {
        Self::candidate_ids(&self.db(), size, sha1, limit)
    }

    fn read_blob(&self, id: BlobId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.files.read_blob(id, offset, buf)
    }

    fn scan_blob(&self, id: BlobId, len: u64, sink: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.files.scan_blob(id, len, sink)
    }

    fn complete_file(
        &self,
        file: FileRef,
        partial: PartialId,
        content: &Content,
    ) -> Result<BlobId> {
        let pid = to_i64(partial.0)?;
        // The verified SHA-1 becomes the record's first, ahead of the blob,
        // so a completion that fails after it leaves a record whose SHA-1
        // is still that of its durable bytes. It differs from the record's
        // only for a tus upload that declared none: a wire upload's is the
        // announced one, and costs no commit here.
        let (sha1, batch_id) = (content.sha1, to_i64(file.batch.0)?);
        let recorded: Option<Vec<u8>> = self
            .db()
            .prepare_cached(
                "SELECT sha1 FROM files WHERE batch = ?1 AND idx = ?2 AND partial = ?3",
            )?
            .query_row(params![batch_id, file.index, pid], |r| r.get(0))
            .optional()?;
        match recorded {
            None => return Err(StoreError::NotFound),
            Some(old) if old[..] == sha1.0[..] => {}
            Some(_) => self.write(move |db| {
                let n = exec(
                    db,
                    "UPDATE files SET sha1 = ?1 WHERE batch = ?2 AND idx = ?3 AND partial = ?4",
                    params![&sha1.0[..], batch_id, file.index, pid],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(((), Delta::default()))
            })?,
        }
        if content.size == 0 {
            return self.complete_empty(file, partial);
        }
        // The database lock is held only around reads and commits, never
        // around an fsync or a read of file contents: completions of other
        // sessions go on meanwhile. The session's lease keeps this file to
        // one session; only the sweeper may remove its rows concurrently,
        // which the commits below detect.
        let candidates = {
            let db = self.db();
            if Self::file_partial(&db, file)? != Some(pid) {
                return Err(StoreError::NotFound);
            }
            Self::candidate_ids(&db, content.size, &content.sha1, blobs::MAX_COMPARED)?
        };
        if let Some(blob) = self.share_same_bytes(file, partial, content, candidates)? {
            return Ok(blob);
        }
        self.promote_to_blob(file, partial, content)
    }

    fn link_file(&self, file: FileRef, blob: BlobId) -> Result<bool> {
        let bid = to_i64(blob.0)?;
        let linked = self.write(move |db| {
            let (partial, _) = Self::file_row(db, file)?;
            let pid = partial.ok_or(StoreError::NotFound)?;
            let (shared, delta) = Self::share_blob(db, file, pid, bid)?;
            Ok((shared.then_some(pid), delta))
        })?;
        match linked {
            Some(pid) => {
                self.files.drop_partial_file(to_u64(pid))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn holders(&self, blob: BlobId, owner: &OwnerId) -> Result<Holders> {
        Self::blob_holders(&self.db(), blob, owner)
    }

    fn sweep(&self, now: u64, forget_before: u64) -> Result<SweepStats> {
        let mut stats = SweepStats::default();
        while self.sweep_chunk(now, &mut stats)? {}
        let db = self.db();
        stats.forgotten = db.execute(
            "DELETE FROM expired WHERE expired_at < ?1",
            params![to_i64(forget_before)?],
        )? as u64;
        Self::forget_deliveries(&db, to_i64(forget_before)?, &mut stats)?;
        // Writes change the counters only under this lock: a recount here
        // sees exactly the committed state.
        *self.usage_counters() = count_usage(&db)?;
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

/// A file as [`Store::create_batch`] and [`Store::add_file`] store it:
/// name, size, SHA-1, whether it is the empty content, attributes.
type FileRow = (String, u64, Sha1Digest, bool, Option<Attrs>);

/// Inserts file `idx` of batch `batch` (with its partial upload unless it
/// is the empty content), in the caller's transaction.
fn insert_file(db: &Connection, batch: i64, idx: i64, file: FileRow) -> Result<FileRecord> {
    let (name, size, sha1, empty, attrs) = file;
    let content = if empty {
        exec(
            db,
            "INSERT INTO files(batch, idx, name, size, sha1, blob) VALUES (?1, ?2, ?3, 0, ?4, ?5)",
            params![batch, idx, name, &sha1.0[..], to_i64(BlobId::EMPTY.0)?],
        )?;
        FileContent::Blob(BlobId::EMPTY)
    } else {
        exec(db, "INSERT INTO partials(durable) VALUES (0)", [])?;
        let partial = db.last_insert_rowid();
        exec(
            db,
            "INSERT INTO files(batch, idx, name, size, sha1, partial) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![batch, idx, name, to_i64(size)?, &sha1.0[..], partial],
        )?;
        FileContent::Partial {
            id: PartialId(to_u64(partial)),
            durable: 0,
        }
    };
    if let Some(a) = attrs {
        // NULL columns mean "no attributes", as for files of an earlier
        // relay; set only when the uploader sent them.
        exec(
            db,
            "UPDATE files SET executable = ?1, mtime = ?2 WHERE batch = ?3 AND idx = ?4",
            params![a.executable, a.mtime, batch, idx],
        )?;
    }
    Ok(FileRecord {
        name,
        size,
        sha1,
        attrs,
        content,
    })
}
