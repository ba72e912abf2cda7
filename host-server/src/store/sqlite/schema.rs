//! The tables, and opening a database: pragmas, schema, migrations.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::Result;

/// `batches.stale_at` is when the batch is deleted if still incomplete
/// (NULL: only at `expires_at`, for batches of an earlier relay).
/// `partials.hashed` is the SHA-1 state of a durable prefix
/// ([`crate::running_sha1::Midstate`], 28 bytes), or NULL.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code_len INTEGER NOT NULL,
    code_value BLOB NOT NULL,
    code_key BLOB NOT NULL UNIQUE,
    token_key BLOB NOT NULL UNIQUE,
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
    refs INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_by_sha1 ON blobs(size, sha1);
CREATE TABLE IF NOT EXISTS expired(
    code_key BLOB PRIMARY KEY,
    expired_at INTEGER NOT NULL
);
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
    Ok(())
}
