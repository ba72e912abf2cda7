//! Rows to API types and back: the integer conversions, the statement cache,
//! reading a batch, a file row and the usage counters.

use pickup_proto::{Code, Sha1Digest};

use crate::store::Attrs;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    Batch, BatchId, BlobId, FileContent, FileRecord, FileRef, Lookup, LookupKey, OwnerId,
    PartialId, Result, SqliteStore, StoreError, Usage,
};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

pub(super) fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} does not fit the database")))
}

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn digest20(bytes: Vec<u8>) -> Result<[u8; 20]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("digest of the wrong length".into()))
}

/// Runs one statement through the connection's statement cache (parsing
/// SQL costs more than running these statements).
pub(super) fn exec(db: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<usize> {
    Ok(db.prepare_cached(sql)?.execute(params)?)
}

/// Counts what [`Store::usage`](crate::store::Store::usage) reports, from
/// the tables.
pub(super) fn count_usage(db: &Connection) -> Result<Usage> {
    let (bytes, batches): (i64, i64) = db
        .prepare_cached(
            "SELECT (SELECT COALESCE(SUM(size), 0) FROM blobs)
              + (SELECT COALESCE(SUM(durable), 0) FROM partials),
                (SELECT COUNT(*) FROM batches)",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(Usage {
        bytes: to_u64(bytes),
        batches: to_u64(batches),
    })
}

impl SqliteStore {
    pub(super) fn load(
        &self,
        db: &Connection,
        key_column: &str,
        key: &LookupKey,
        now: u64,
    ) -> Result<Lookup> {
        let sql = format!(
            "SELECT id, code_len, code_value, created_at, expires_at, owner, open FROM batches WHERE {key_column} = ?1"
        );
        let row = db
            .query_row(&sql, params![&key.0[..]], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, bool>(6)?,
                ))
            })
            .optional()?;
        let Some((id, code_len, code_value, created_at, expires_at, owner, open)) = row else {
            if key_column == "code_key" {
                let expired: bool = db
                    .prepare_cached("SELECT EXISTS(SELECT 1 FROM expired WHERE code_key = ?1)")?
                    .query_row(params![&key.0[..]], |r| r.get(0))?;
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
        let owner = OwnerId(
            owner
                .try_into()
                .map_err(|_| StoreError::Corrupt("batch owner".into()))?,
        );
        let mut stmt = db.prepare_cached(
            "SELECT f.idx, f.name, f.size, f.sha1, f.partial, f.blob, p.durable, f.executable, f.mtime
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
                r.get::<_, Option<bool>>(7)?,
                r.get::<_, Option<i64>>(8)?,
            ))
        })?;
        let mut files = Vec::new();
        for row in rows {
            let (name, size, sha1, partial, blob, durable, executable, mtime) = row?;
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
                attrs: match (executable, mtime) {
                    (Some(executable), Some(mtime)) => Some(Attrs { executable, mtime }),
                    _ => None,
                },
                content,
            });
        }
        Ok(Lookup::Live(Batch {
            id: BatchId(to_u64(id)),
            code,
            owner,
            created_at: to_u64(created_at),
            expires_at: to_u64(expires_at),
            files,
            open,
        }))
    }

    /// The partial a file row points at, if it is still uploading.
    pub(super) fn file_partial(db: &Connection, file: FileRef) -> Result<Option<i64>> {
        Ok(Self::file_row(db, file)?.0)
    }

    /// A file's partial (if still uploading) and size.
    pub(super) fn file_row(db: &Connection, file: FileRef) -> Result<(Option<i64>, i64)> {
        db.prepare_cached("SELECT partial, size FROM files WHERE batch = ?1 AND idx = ?2")?
            .query_row(params![to_i64(file.batch.0)?, file.index], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()?
            .ok_or(StoreError::NotFound)
    }
}
