//! The tables, and opening a database: pragmas, schema, migrations.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::Result;

/// `batches.stale_at` is when the batch is deleted if still incomplete
/// (NULL: only at `expires_at`, for batches of an earlier relay).
/// `partials.hashed` is the SHA-1 state of a durable prefix
/// ([`crate::running_sha1::Midstate`], 28 bytes), or NULL. `batches.owner`
/// is the batch's token family ([`crate::store::OwnerId`], 32 bytes);
/// `blob_owners` lists the families that stored or linked each blob, and
/// `blobs.threshold` is the number of them past which the relay reveals
/// that it holds the blob to others ([`crate::disclosure`]; 0 for blobs
/// stored before thresholds existed). `files.executable` and `files.mtime`
/// are a file's announced attributes (PROTOCOL.md §5.5), both NULL when
/// the uploader sent none.
///
/// `names` binds a user's name to a blob (PROTOCOL.md §8), with the size,
/// SHA-1 and attributes of the file that bound it; each row holds one
/// reference (`blobs.refs`) to its blob, as a file row does. `name_shares`
/// lists who else may read a name. `kept_blobs` holds one reference to the
/// blob of a replaced or removed name until `until`, so readers of the old
/// content finish it; the sweep releases it then. (Tables of the user
/// directory, `users`, `auth_tokens`, `terminals` and `allowed_senders`,
/// live in the same file but are not the store's.) The deliveries of
/// pushes to terminals have their tables in `deliveries.rs`, the forwards to
/// peer relays theirs in `forwards.rs`.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code_len INTEGER NOT NULL,
    code_value BLOB NOT NULL,
    code_key BLOB NOT NULL UNIQUE,
    token_key BLOB NOT NULL UNIQUE,
    owner BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    stale_at INTEGER,
    open INTEGER NOT NULL DEFAULT 0
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
    executable INTEGER,
    mtime INTEGER,
    PRIMARY KEY(batch, idx)
);
CREATE TABLE IF NOT EXISTS partials(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    durable INTEGER NOT NULL,
    hashed BLOB
);
CREATE TABLE IF NOT EXISTS blobs(
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    sha1 BLOB NOT NULL,
    refs INTEGER NOT NULL,
    threshold INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS blobs_by_sha1 ON blobs(size, sha1);
CREATE TABLE IF NOT EXISTS expired(
    code_key BLOB PRIMARY KEY,
    expired_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_owners(
    blob INTEGER NOT NULL,
    owner BLOB NOT NULL,
    PRIMARY KEY(blob, owner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS names(
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    blob INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha1 BLOB NOT NULL,
    executable INTEGER,
    mtime INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY(owner, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS name_shares(
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    grantee TEXT NOT NULL,
    PRIMARY KEY(owner, name, grantee)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS name_shares_by_grantee ON name_shares(grantee);
CREATE TABLE IF NOT EXISTS kept_blobs(
    blob INTEGER PRIMARY KEY,
    until INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS kept_blobs_by_time ON kept_blobs(until);
";

/// The database file of the data directory `dir`, created private with
/// `dir` if missing. The store and the account directory
/// ([`crate::directory::SqliteDirectory`]) both open this one file, each
/// with its own connection ([`connect`]).
pub(crate) fn prepare_db_file(dir: &Path) -> std::io::Result<PathBuf> {
    crate::store::contents::create_dir_all(dir)?;
    let path = db_file(dir);
    crate::store::contents::touch(&path)?;
    Ok(path)
}

/// The database file of the data directory `dir` (which may not exist).
pub(crate) fn db_file(dir: &Path) -> PathBuf {
    dir.join(super::DB_FILE)
}

/// A connection to the database at `path` in WAL mode with
/// `synchronous=FULL`: readers and one writer at a time, across
/// processes too (an admin command while the relay serves), writers
/// waiting up to 30 s for each other instead of failing.
pub(crate) fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.busy_timeout(Duration::from_secs(30))?;
    db.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(db)
}

/// Prepared statements a connection keeps: more than the store prepares
/// (its SQL sites number over 60), so none is parsed again for want of
/// room. rusqlite keeps 16 by default, fewer than one upload's statements.
const STATEMENT_CACHE: usize = 256;

/// Opens (or creates) the database at `path` ([`connect`]) with every
/// table of [`SCHEMA`].
pub(super) fn open_db(path: &Path) -> Result<Connection> {
    let db = connect(path)?;
    db.execute_batch(SCHEMA)?;
    migrate(&db)?;
    Ok(db)
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
    // Partials gained the SHA-1 state of their durable prefix.
    let has_hashed: bool = db.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('partials') WHERE name = 'hashed')",
        [],
        |r| r.get(0),
    )?;
    if !has_hashed {
        db.execute_batch("ALTER TABLE partials ADD COLUMN hashed BLOB")?;
    }
    // Batches gained the time they are deleted at while incomplete.
    let has_stale_at: bool = db.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('batches') WHERE name = 'stale_at')",
        [],
        |r| r.get(0),
    )?;
    if !has_stale_at {
        db.execute_batch("ALTER TABLE batches ADD COLUMN stale_at INTEGER")?;
    }
    db.execute_batch("CREATE INDEX IF NOT EXISTS batches_by_staleness ON batches(stale_at)")?;
    // Batches gained an owner (their token family): a batch made before
    // is a family of its own, named by its token's lookup key (which no
    // family derived from a token equals: another domain tag). Blobs
    // stored before keep no owner and threshold 0, which counts as the
    // largest a relay draws.
    if !has_column(db, "batches", "owner")? {
        db.execute_batch(
            "ALTER TABLE batches ADD COLUMN owner BLOB;
             UPDATE batches SET owner = token_key WHERE owner IS NULL;",
        )?;
    }
    if !has_column(db, "blobs", "threshold")? {
        db.execute_batch("ALTER TABLE blobs ADD COLUMN threshold INTEGER NOT NULL DEFAULT 0")?;
    }
    // Named files came as tables of their own (names, name_shares,
    // kept_blobs): SCHEMA creates them in an earlier database, which has
    // no names to move, and no blob row's count changes.
    // Files gained their attributes; files stored before have none (NULL).
    if !has_column(db, "files", "executable")? {
        db.execute_batch(
            "ALTER TABLE files ADD COLUMN executable INTEGER;
             ALTER TABLE files ADD COLUMN mtime INTEGER;",
        )?;
    }
    // Batches may be open (tus batches before their close); every batch
    // stored before is closed.
    if !has_column(db, "batches", "open")? {
        db.execute_batch("ALTER TABLE batches ADD COLUMN open INTEGER NOT NULL DEFAULT 0")?;
    }
    // Addressed delivery (PROTOCOL.md §11) came with tables of its own,
    // `deliveries` and `delivery_reads` (see `deliveries.rs`): an earlier
    // database has no delivery to move, and no other table changes.
    db.execute_batch(super::deliveries::SCHEMA)?;
    // Forwarding to peer relays (docs/design/forwarding.md) came with a
    // table of its own, `forwards` (see `forwards.rs`).
    db.execute_batch(super::forwards::SCHEMA)?;
    // Forwards gained a push target (PROTOCOL.md §12.1).
    super::forwards::migrate_push(db)?;
    // Finished forwards are swept after `[forward] keep_finished_secs`.
    super::forwards::migrate_finished(db)?;
    Ok(())
}

fn has_column(db: &Connection, table: &str, column: &str) -> Result<bool> {
    Ok(db.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        [table, column],
        |r| r.get(0),
    )?)
}
