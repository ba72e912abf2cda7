//! The tables, and opening a database: pragmas, schema, migrations.

use std::path::Path;
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
    stale_at INTEGER
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
";

/// Opens (or creates) the database at `path` in WAL mode with
/// `synchronous=FULL`, with every table of [`SCHEMA`].
pub(super) fn open_db(path: &Path) -> Result<Connection> {
    let db = Connection::open(path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.busy_timeout(Duration::from_secs(30))?;
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
    // Files gained their attributes; files stored before have none (NULL).
    if !has_column(db, "files", "executable")? {
        db.execute_batch(
            "ALTER TABLE files ADD COLUMN executable INTEGER;
             ALTER TABLE files ADD COLUMN mtime INTEGER;",
        )?;
    }
    Ok(())
}

fn has_column(db: &Connection, table: &str, column: &str) -> Result<bool> {
    Ok(db.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        [table, column],
        |r| r.get(0),
    )?)
}
