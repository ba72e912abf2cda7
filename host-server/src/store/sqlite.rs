//! The default [`Store`]: metadata in SQLite, contents as files.
//!
//! ```text
//!   DATA/relay.sqlite (+ -wal, -shm)   batches, files, partials, blobs, expired codes
//!   DATA/partial/<id>                  bytes of an upload in progress
//!   DATA/blobs/<id>                    bytes of a complete, verified file
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

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use pickup_proto::{Code, Sha1Digest};
use rusqlite::{params, Connection, OptionalExtension};

use super::commit::{Delta, GroupCommit};
use super::{
    Batch, BatchId, BlobId, Content, FileContent, FileRecord, FileRef, Lookup, LookupKey, NewBatch,
    PartialId, Result, Store, StoreError, SweepStats, Usage,
};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code_len INTEGER NOT NULL,
    code_value BLOB NOT NULL,
    code_key BLOB NOT NULL UNIQUE,
    token_key BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_expiry ON batches(expires_at);
CREATE TABLE IF NOT EXISTS files(
    batch INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha1 BLOB NOT NULL,
    partial INTEGER,
    blob INTEGER,
    PRIMARY KEY(batch, idx)
);
CREATE TABLE IF NOT EXISTS partials(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    durable INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs(
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    sha1 BLOB NOT NULL,
    refs INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_by_sha1 ON blobs(size, sha1);
CREATE TABLE IF NOT EXISTS expired(
    code_key BLOB PRIMARY KEY,
    expired_at INTEGER NOT NULL
);
";

/// Open file handles kept per kind, so a stream of data frames does not
/// reopen its file for every frame.
const HANDLE_CACHE: usize = 256;

/// Most candidate blobs an upload is compared with (more than one means a
/// SHA-1 collision is stored; more than a few is an attack).
const MAX_COMPARED: usize = 4;

/// Bytes compared per read when checking an upload against a blob.
const COMPARE_CHUNK: usize = 256 * 1024;

/// Batches deleted per sweep transaction, so sessions are not held up long.
const SWEEP_CHUNK: i64 = 256;

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} does not fit the database")))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn digest20(bytes: Vec<u8>) -> Result<[u8; 20]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("digest of the wrong length".into()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Runs one statement through the connection's statement cache (parsing
/// SQL costs more than running these statements).
fn exec(db: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<usize> {
    Ok(db.prepare_cached(sql)?.execute(params)?)
}

/// Counts what [`Store::usage`] reports, from the tables.
fn count_usage(db: &Connection) -> Result<Usage> {
    let (bytes, batches): (i64, i64) = db.query_row(
        "SELECT (SELECT COALESCE(SUM(size), 0) FROM blobs)
              + (SELECT COALESCE(SUM(size), 0) FROM files WHERE partial IS NOT NULL),
                (SELECT COUNT(*) FROM batches)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Usage {
        bytes: to_u64(bytes),
        batches: to_u64(batches),
    })
}

/// Brings a database made by an earlier relay up to [`SCHEMA`].
fn migrate(db: &Connection) -> Result<()> {
    // Blobs used to carry a SHA-256 for deduplication; bytes are compared now.
    let has_sha256: bool = db.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('blobs') WHERE name = 'sha256')",
        [],
        |r| r.get(0),
    )?;
    if has_sha256 {
        db.execute_batch("ALTER TABLE blobs DROP COLUMN sha256")?;
    }
    Ok(())
}

/// Coalesces fsyncs of one directory: a caller whose change happened before
/// a sync started waits for that sync instead of queueing its own, so many
/// concurrent completions share a few directory fsyncs.
struct DirSync {
    dir: PathBuf,
    state: Mutex<DirSyncState>,
    done: Condvar,
}

#[derive(Default)]
struct DirSyncState {
    /// Sync requests so far.
    requested: u64,
    /// Every request up to this one is covered by a finished fsync.
    synced: u64,
    running: bool,
}

impl DirSync {
    fn new(dir: PathBuf) -> Self {
        DirSync {
            dir,
            state: Mutex::new(DirSyncState::default()),
            done: Condvar::new(),
        }
    }

    /// Makes every change made in the directory before this call durable.
    fn sync(&self) -> Result<()> {
        fn lock(m: &Mutex<DirSyncState>) -> MutexGuard<'_, DirSyncState> {
            m.lock().unwrap_or_else(|e| e.into_inner())
        }
        let mut st = lock(&self.state);
        st.requested += 1;
        let mine = st.requested;
        loop {
            if st.synced >= mine {
                return Ok(());
            }
            if !st.running {
                // Covers every request made so far, this one included.
                let target = st.requested;
                st.running = true;
                drop(st);
                let result = sync_dir(&self.dir);
                st = lock(&self.state);
                st.running = false;
                if result.is_ok() {
                    st.synced = st.synced.max(target);
                }
                self.done.notify_all();
                return result;
            }
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// What [`SqliteStore::open`] repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Partial uploads that resume (durable offset > 0).
    pub partials: u64,
    /// Partial files cut back to their durable offset.
    pub truncated: u64,
    /// Files no record referred to, deleted.
    pub orphans: u64,
    /// Completions interrupted between rename and commit, moved back.
    pub moved_back: u64,
    /// Blob records whose file is missing (data loss outside the relay's control).
    pub missing_blobs: u64,
    /// Batches in the store.
    pub batches: u64,
}

struct PartialHandle {
    file: File,
    /// The file's directory entry has been made durable.
    dir_synced: AtomicBool,
}

#[derive(Default)]
struct Handles {
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

/// SQLite metadata plus one file per partial upload and per blob.
pub struct SqliteStore {
    dir: PathBuf,
    partial_dir: PathBuf,
    blob_dir: PathBuf,
    db: Mutex<Connection>,
    /// Writes share transactions and WAL fsyncs ([`GroupCommit`]).
    group: GroupCommit,
    /// The counters behind [`Store::usage`], kept current by every commit
    /// (and recounted by a sweep) instead of summing tables per request.
    usage: Mutex<Usage>,
    handles: Mutex<Handles>,
    blob_dir_sync: DirSync,
}

impl core::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (or creates) the store in `dir` and recovers from any crash:
    /// see the module docs for what recovery does.
    pub fn open(dir: &Path) -> Result<(SqliteStore, Recovery)> {
        let partial_dir = dir.join("partial");
        let blob_dir = dir.join("blobs");
        fs::create_dir_all(&partial_dir)?;
        fs::create_dir_all(&blob_dir)?;
        sync_dir(dir)?;
        let db = Connection::open(dir.join("relay.sqlite"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(std::time::Duration::from_secs(30))?;
        db.execute_batch(SCHEMA)?;
        migrate(&db)?;
        let store = SqliteStore {
            dir: dir.to_owned(),
            partial_dir,
            blob_dir_sync: DirSync::new(blob_dir.clone()),
            blob_dir,
            db: Mutex::new(db),
            group: GroupCommit::default(),
            usage: Mutex::new(Usage::default()),
            handles: Mutex::new(Handles::default()),
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

    fn handles(&self) -> MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
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

    fn partial_path(&self, id: u64) -> PathBuf {
        self.partial_dir.join(id.to_string())
    }

    fn blob_path(&self, id: u64) -> PathBuf {
        self.blob_dir.join(id.to_string())
    }

    /// Makes the checkpointed database and every file consistent after a crash.
    fn recover(&self) -> Result<Recovery> {
        let mut report = Recovery::default();
        let db = self.db();
        let partials: Vec<(i64, i64)> = db
            .prepare("SELECT id, durable FROM partials")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        let blobs: HashSet<i64> = db
            .prepare("SELECT id FROM blobs")?
            .query_map([], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        report.batches = to_u64(db.query_row("SELECT COUNT(*) FROM batches", [], |r| r.get(0))?);
        for &(id, durable) in &partials {
            let id_u = to_u64(id);
            let path = self.partial_path(id_u);
            let blob_path = self.blob_path(id_u);
            if !path.exists() && blob_path.exists() && !blobs.contains(&id) {
                fs::rename(&blob_path, &path)?;
                sync_dir(&self.blob_dir)?;
                sync_dir(&self.partial_dir)?;
                report.moved_back += 1;
            }
            let durable = to_u64(durable);
            let len = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == ErrorKind::NotFound => 0,
                Err(e) => return Err(e.into()),
            };
            if len > durable {
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(durable)?;
                f.sync_all()?;
                report.truncated += 1;
            } else if len < durable {
                // The durable prefix is shorter than recorded: the disk lost
                // synced data. Resume from what is really there.
                tracing::error!(
                    partial = id,
                    durable,
                    len,
                    "partial file shorter than its durable offset"
                );
                db.execute(
                    "UPDATE partials SET durable = ?1 WHERE id = ?2",
                    params![to_i64(len)?, id],
                )?;
            }
            if durable > 0 {
                report.partials += 1;
            }
        }
        let partial_ids: HashSet<i64> = partials.iter().map(|p| p.0).collect();
        for (dir, known) in [(&self.partial_dir, &partial_ids), (&self.blob_dir, &blobs)] {
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let keep = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i64>().ok())
                    .is_some_and(|id| known.contains(&id));
                if !keep {
                    remove_if_present(&entry.path())?;
                    report.orphans += 1;
                }
            }
            sync_dir(dir)?;
        }
        for &id in &blobs {
            if !self.blob_path(to_u64(id)).exists() {
                tracing::error!(blob = id, "blob file missing");
                report.missing_blobs += 1;
            }
        }
        Ok(report)
    }

    fn partial_handle(&self, id: PartialId, create: bool) -> Result<Option<Arc<PartialHandle>>> {
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

    fn blob_handle(&self, id: BlobId) -> Result<Arc<File>> {
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

    fn drop_partial_file(&self, id: u64) -> Result<()> {
        self.handles().partials.remove(&id);
        remove_if_present(&self.partial_path(id))
    }

    fn load(&self, db: &Connection, key_column: &str, key: &LookupKey, now: u64) -> Result<Lookup> {
        let sql = format!(
            "SELECT id, code_len, code_value, created_at, expires_at FROM batches WHERE {key_column} = ?1"
        );
        let row = db
            .query_row(&sql, params![&key.0[..]], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .optional()?;
        let Some((id, code_len, code_value, created_at, expires_at)) = row else {
            if key_column == "code_key" {
                let expired: bool = db.query_row(
                    "SELECT EXISTS(SELECT 1 FROM expired WHERE code_key = ?1)",
                    params![&key.0[..]],
                    |r| r.get(0),
                )?;
                if expired {
                    return Ok(Lookup::Expired);
                }
            }
            return Ok(Lookup::Unknown);
        };
        if to_u64(expires_at) <= now {
            return Ok(Lookup::Expired);
        }
        let value: [u8; 16] = code_value
            .try_into()
            .map_err(|_| StoreError::Corrupt("code value".into()))?;
        let code = Code::from_parts(to_u64(code_len) as usize, u128::from_le_bytes(value))
            .map_err(|_| StoreError::Corrupt("code".into()))?;
        let mut stmt = db.prepare_cached(
            "SELECT f.idx, f.name, f.size, f.sha1, f.partial, f.blob, p.durable
             FROM files f LEFT JOIN partials p ON p.id = f.partial
             WHERE f.batch = ?1 ORDER BY f.idx",
        )?;
        let rows = stmt.query_map(params![id], |r| {
            Ok((
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })?;
        let mut files = Vec::new();
        for row in rows {
            let (name, size, sha1, partial, blob, durable) = row?;
            let content = match (partial, blob) {
                (_, Some(b)) => FileContent::Blob(BlobId(to_u64(b))),
                (Some(p), None) => FileContent::Partial {
                    id: PartialId(to_u64(p)),
                    durable: to_u64(durable.unwrap_or(0)),
                },
                (None, None) => return Err(StoreError::Corrupt("file without content".into())),
            };
            files.push(FileRecord {
                name,
                size: to_u64(size),
                sha1: Sha1Digest(digest20(sha1)?),
                content,
            });
        }
        Ok(Lookup::Live(Batch {
            id: BatchId(to_u64(id)),
            code,
            created_at: to_u64(created_at),
            expires_at: to_u64(expires_at),
            files,
        }))
    }

    /// The partial a file row points at, if it is still uploading.
    fn file_partial(db: &Connection, file: FileRef) -> Result<Option<i64>> {
        Ok(Self::file_row(db, file)?.0)
    }

    /// A file's partial (if still uploading) and size.
    fn file_row(db: &Connection, file: FileRef) -> Result<(Option<i64>, i64)> {
        db.prepare_cached("SELECT partial, size FROM files WHERE batch = ?1 AND idx = ?2")?
            .query_row(params![to_i64(file.batch.0)?, file.index], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()?
            .ok_or(StoreError::NotFound)
    }

    /// Blobs with this size and SHA-1.
    fn candidate_ids(db: &Connection, size: u64, sha1: &Sha1Digest) -> Result<Vec<BlobId>> {
        let mut stmt = db.prepare_cached("SELECT id FROM blobs WHERE size = ?1 AND sha1 = ?2")?;
        let rows = stmt.query_map(params![to_i64(size)?, &sha1.0[..]], |r| r.get::<_, i64>(0))?;
        rows.map(|r| Ok(BlobId(to_u64(r?)))).collect()
    }

    /// Whether the first `size` bytes of a partial upload equal a blob.
    fn same_bytes(&self, partial: PartialId, blob: BlobId, size: u64) -> Result<bool> {
        let p = self
            .partial_handle(partial, false)?
            .ok_or(StoreError::NotFound)?;
        let b = self.blob_handle(blob)?;
        let mut left = vec![0u8; COMPARE_CHUNK];
        let mut right = vec![0u8; COMPARE_CHUNK];
        let mut offset = 0u64;
        while offset < size {
            let n = usize::try_from(size - offset)
                .unwrap_or(usize::MAX)
                .min(COMPARE_CHUNK);
            p.file.read_exact_at(&mut left[..n], offset)?;
            match b.read_exact_at(&mut right[..n], offset) {
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
                other => other?,
            }
            if left[..n] != right[..n] {
                return Ok(false);
            }
            offset += n as u64;
        }
        // Same prefix: the blob must also end here.
        Ok(b.read_at(&mut right[..1], size)? == 0)
    }

    /// Points a file at a blob and deletes its partial row, in `tx`;
    /// `NotFound` if the file no longer points at `partial`.
    /// Points `file` (still in `partial`) at the existing `blob`, taking a
    /// reference, if the blob is still live (the sweeper may have collected
    /// it). On success the file's `size` bytes no longer count twice.
    fn share_blob(
        db: &Connection,
        file: FileRef,
        partial: i64,
        blob: i64,
        size: i64,
    ) -> Result<(bool, Delta)> {
        let n = exec(
            db,
            "UPDATE blobs SET refs = refs + 1 WHERE id = ?1 AND refs > 0",
            params![blob],
        )?;
        if n == 0 {
            return Ok((false, Delta::default()));
        }
        Self::set_blob(db, file, partial, blob)?;
        Ok((
            true,
            Delta {
                bytes: -size,
                batches: 0,
            },
        ))
    }

    fn set_blob(db: &Connection, file: FileRef, partial: i64, blob: i64) -> Result<()> {
        let n = exec(
            db,
            "UPDATE files SET partial = NULL, blob = ?1 WHERE batch = ?2 AND idx = ?3 AND partial = ?4",
            params![blob, to_i64(file.batch.0)?, file.index, partial],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        exec(db, "DELETE FROM partials WHERE id = ?1", params![partial])?;
        Ok(())
    }

    /// One sweep transaction over at most [`SWEEP_CHUNK`] expired batches.
    fn sweep_chunk(&self, now: u64, stats: &mut SweepStats) -> Result<bool> {
        let mut partials = Vec::new();
        let blobs: Vec<u64>;
        let more;
        {
            let mut db = self.db();
            let tx = db.transaction()?;
            let expired: Vec<(i64, Vec<u8>, i64)> = tx
                .prepare(
                    "SELECT id, code_key, expires_at FROM batches WHERE expires_at <= ?1 LIMIT ?2",
                )?
                .query_map(params![to_i64(now)?, SWEEP_CHUNK], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<std::result::Result<_, _>>()?;
            more = expired.len() as i64 == SWEEP_CHUNK;
            for (id, code_key, expires_at) in &expired {
                let contents: Vec<(Option<i64>, Option<i64>)> = tx
                    .prepare_cached("SELECT partial, blob FROM files WHERE batch = ?1")?
                    .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<std::result::Result<_, _>>()?;
                for (partial, blob) in contents {
                    if let Some(b) = blob {
                        tx.execute("UPDATE blobs SET refs = refs - 1 WHERE id = ?1", params![b])?;
                    } else if let Some(p) = partial {
                        tx.execute("DELETE FROM partials WHERE id = ?1", params![p])?;
                        partials.push(to_u64(p));
                    }
                }
                tx.execute("DELETE FROM files WHERE batch = ?1", params![id])?;
                tx.execute("DELETE FROM batches WHERE id = ?1", params![id])?;
                tx.execute(
                    "INSERT OR REPLACE INTO expired(code_key, expired_at) VALUES (?1, ?2)",
                    params![code_key, expires_at],
                )?;
            }
            blobs = tx
                .prepare("SELECT id FROM blobs WHERE refs <= 0")?
                .query_map([], |r| r.get::<_, i64>(0))?
                .map(|r| r.map(to_u64))
                .collect::<std::result::Result<_, _>>()?;
            tx.execute("DELETE FROM blobs WHERE refs <= 0", [])?;
            tx.commit()?;
            stats.batches += expired.len() as u64;
        }
        stats.partials += partials.len() as u64;
        stats.blobs += blobs.len() as u64;
        for id in partials {
            self.drop_partial_file(id)?;
        }
        for id in blobs {
            self.handles().blobs.remove(&id);
            remove_if_present(&self.blob_path(id))?;
        }
        Ok(more)
    }
}

impl Store for SqliteStore {
    fn create_batch(&self, new: &NewBatch<'_>) -> Result<Batch> {
        let code = new.code;
        let (code_key, token_key) = (new.code_key, new.token_key);
        let (created_at, expires_at) = (to_i64(new.created_at)?, to_i64(new.expires_at)?);
        let files: Vec<(String, u64, Sha1Digest)> = new
            .files
            .iter()
            .map(|f| (f.name.to_owned(), f.size, f.sha1))
            .collect();
        let bytes = files
            .iter()
            .try_fold(0i64, |t, f| to_i64(f.1).map(|size| t.saturating_add(size)))?;
        self.write(move |db| {
            exec(
                db,
                "INSERT INTO batches(code_len, code_value, code_key, token_key, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    code.len() as i64,
                    &code.value().to_le_bytes()[..],
                    &code_key.0[..],
                    &token_key.0[..],
                    created_at,
                    expires_at,
                ],
            )?;
            let id = db.last_insert_rowid();
            let mut records = Vec::with_capacity(files.len());
            for (i, (name, size, sha1)) in files.into_iter().enumerate() {
                exec(db, "INSERT INTO partials(durable) VALUES (0)", [])?;
                let partial = db.last_insert_rowid();
                exec(
                    db,
                    "INSERT INTO files(batch, idx, name, size, sha1, partial) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id, i as i64, name, to_i64(size)?, &sha1.0[..], partial],
                )?;
                records.push(FileRecord {
                    name,
                    size,
                    sha1,
                    content: FileContent::Partial {
                        id: PartialId(to_u64(partial)),
                        durable: 0,
                    },
                });
            }
            let batch = Batch {
                id: BatchId(to_u64(id)),
                code,
                created_at: to_u64(created_at),
                expires_at: to_u64(expires_at),
                files: records,
            };
            Ok((batch, Delta { bytes, batches: 1 }))
        })
    }

    fn code_taken(&self, code: &LookupKey) -> Result<bool> {
        Ok(self.db().query_row(
            "SELECT EXISTS(SELECT 1 FROM batches WHERE code_key = ?1)
                 OR EXISTS(SELECT 1 FROM expired WHERE code_key = ?1)",
            params![&code.0[..]],
            |r| r.get(0),
        )?)
    }

    fn find_by_code(&self, code: &LookupKey, now: u64) -> Result<Lookup> {
        self.load(&self.db(), "code_key", code, now)
    }

    fn find_by_token(&self, token: &LookupKey, now: u64) -> Result<Lookup> {
        self.load(&self.db(), "token_key", token, now)
    }

    fn usage(&self) -> Result<Usage> {
        Ok(*self.usage_counters())
    }

    fn write_partial(&self, id: PartialId, offset: u64, data: &[u8]) -> Result<()> {
        let h = self.partial_handle(id, true)?.ok_or(StoreError::NotFound)?;
        h.file.write_all_at(data, offset)?;
        Ok(())
    }

    fn sync_partial(&self, id: PartialId, durable: u64) -> Result<()> {
        let h = self.partial_handle(id, true)?.ok_or(StoreError::NotFound)?;
        h.file.sync_data()?;
        if !h.dir_synced.load(Ordering::Acquire) {
            sync_dir(&self.partial_dir)?;
            h.dir_synced.store(true, Ordering::Release);
        }
        let (durable, id) = (to_i64(durable)?, to_i64(id.0)?);
        self.write(move |db| {
            let n = exec(
                db,
                "UPDATE partials SET durable = ?1 WHERE id = ?2",
                params![durable, id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(((), Delta::default()))
        })
    }

    fn read_partial(&self, id: PartialId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match self.partial_handle(id, false)? {
            Some(h) => Ok(h.file.read_at(buf, offset)?),
            None => Ok(0),
        }
    }

    fn reset_partial(&self, id: PartialId) -> Result<()> {
        let h = self.partial_handle(id, true)?.ok_or(StoreError::NotFound)?;
        h.file.set_len(0)?;
        h.file.sync_all()?;
        self.sync_partial(id, 0)
    }

    fn candidates(&self, size: u64, sha1: &Sha1Digest) -> Result<Vec<BlobId>> {
        Self::candidate_ids(&self.db(), size, sha1)
    }

    fn read_blob(&self, id: BlobId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        Ok(self.blob_handle(id)?.read_at(buf, offset)?)
    }

    fn complete_file(
        &self,
        file: FileRef,
        partial: PartialId,
        content: &Content,
    ) -> Result<BlobId> {
        let pid = to_i64(partial.0)?;
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
            Self::candidate_ids(&db, content.size, &content.sha1)?
        };
        for blob in candidates.into_iter().take(MAX_COMPARED) {
            match self.same_bytes(partial, blob, content.size) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(blob = blob.0, "cannot compare with a stored blob: {e}");
                    continue;
                }
            }
            // Same bytes: the same content. Share the blob, if it is
            // still there (the sweeper may have collected it meanwhile).
            let (bid, size) = (to_i64(blob.0)?, to_i64(content.size)?);
            let shared = self.write(move |db| Self::share_blob(db, file, pid, bid, size))?;
            if !shared {
                continue;
            }
            self.drop_partial_file(partial.0)?;
            return Ok(blob);
        }
        let h = self
            .partial_handle(partial, true)?
            .ok_or(StoreError::NotFound)?;
        h.file.sync_all()?;
        self.handles().partials.remove(&partial.0);
        let blob_path = self.blob_path(partial.0);
        match fs::rename(self.partial_path(partial.0), &blob_path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::NotFound),
            other => other?,
        }
        // The new name must be durable before the row that points at it.
        // (The old name needs no fsync: after a crash, a partial file whose
        // row is gone is an orphan and recovery deletes it.)
        self.blob_dir_sync.sync()?;
        let (size, sha1) = (to_i64(content.size)?, content.sha1);
        let committed = self.write(move |db| {
            exec(
                db,
                "INSERT INTO blobs(id, size, sha1, refs) VALUES (?1, ?2, ?3, 1)",
                params![pid, size, &sha1.0[..]],
            )?;
            Self::set_blob(db, file, pid, pid)?;
            Ok(((), Delta::default()))
        });
        if let Err(e) = committed {
            // No row points at the blob file. Swept meanwhile: it is garbage.
            // Otherwise put it back where a retry (or recovery) expects it.
            if matches!(e, StoreError::NotFound)
                || fs::rename(&blob_path, self.partial_path(partial.0)).is_err()
            {
                remove_if_present(&blob_path)?;
            }
            return Err(e);
        }
        Ok(BlobId(partial.0))
    }

    fn link_file(&self, file: FileRef, blob: BlobId) -> Result<bool> {
        let bid = to_i64(blob.0)?;
        let linked = self.write(move |db| {
            let (partial, size) = Self::file_row(db, file)?;
            let pid = partial.ok_or(StoreError::NotFound)?;
            let (shared, delta) = Self::share_blob(db, file, pid, bid, size)?;
            Ok((shared.then_some(pid), delta))
        })?;
        match linked {
            Some(pid) => {
                self.drop_partial_file(to_u64(pid))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn sweep(&self, now: u64, forget_before: u64) -> Result<SweepStats> {
        let mut stats = SweepStats::default();
        while self.sweep_chunk(now, &mut stats)? {}
        let db = self.db();
        stats.forgotten = db.execute(
            "DELETE FROM expired WHERE expired_at < ?1",
            params![to_i64(forget_before)?],
        )? as u64;
        // Writes change the counters only under this lock: a recount here
        // sees exactly the committed state.
        *self.usage_counters() = count_usage(&db)?;
        Ok(stats)
    }
}
