//! Rows to API types and back: numbers, digests, a batch, a file row, the
//! usage counts, and inserting a file.

use pickup_proto::{Code, Sha1Digest};
use tokio_postgres::Transaction;

use super::db::DbError;
use crate::store::{
    Attrs, Batch, BatchId, BlobId, FileContent, FileRecord, FileRef, Lookup, LookupKey, OwnerId,
    PartialId, StoreError, Usage,
};

/// The store's answer `e` out of a step, whose transaction rolls back.
pub(super) fn refused(e: StoreError) -> DbError {
    DbError::Refused(Box::new(e))
}

/// A stored contradiction, refused.
pub(super) fn corrupt(what: &str) -> DbError {
    refused(StoreError::Corrupt(what.into()))
}

/// `v` as a `BIGINT`.
pub(super) fn int(v: u64) -> Result<i64, DbError> {
    super::db::to_i64(v, "a number")
}

/// A `BIGINT` the store wrote from a `u64` (a negative one reads as 0,
/// as in the SQLite store).
pub(super) fn nat(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn digest20(bytes: Vec<u8>) -> Result<Sha1Digest, DbError> {
    Ok(Sha1Digest(
        bytes
            .try_into()
            .map_err(|_| corrupt("a digest of the wrong length"))?,
    ))
}

pub(super) fn key32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], DbError> {
    bytes.try_into().map_err(|_| corrupt(what))
}

/// A code from its stored length and value.
pub(super) fn code(len: i64, value: Vec<u8>) -> Result<Code, DbError> {
    let value: [u8; 16] = value.try_into().map_err(|_| corrupt("code value"))?;
    Code::from_parts(nat(len) as usize, u128::from_le_bytes(value)).map_err(|_| corrupt("code"))
}

/// Stored attributes: both columns, or none (NULL, NULL).
pub(super) fn attrs(executable: Option<bool>, mtime: Option<i64>) -> Option<Attrs> {
    match (executable, mtime) {
        (Some(executable), Some(mtime)) => Some(Attrs { executable, mtime }),
        _ => None,
    }
}

/// Which key a batch is looked up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyColumn {
    Code,
    Token,
}

/// The batch behind a code or token, as [`Store::find_by_code`] answers;
/// `now` decides expiry.
///
/// [`Store::find_by_code`]: crate::store::Store::find_by_code
pub(super) async fn load(
    tx: &Transaction<'_>,
    by: KeyColumn,
    key: &LookupKey,
    now: u64,
) -> Result<Lookup, DbError> {
    let sql = match by {
        KeyColumn::Code => {
            "SELECT id, code_len, code_value, created_at, expires_at, owner, open
             FROM batches WHERE code_key = $1"
        }
        KeyColumn::Token => {
            "SELECT id, code_len, code_value, created_at, expires_at, owner, open
             FROM batches WHERE token_key = $1"
        }
    };
    let Some(row) = tx.query_opt(sql, &[&&key.0[..]]).await? else {
        if by == KeyColumn::Code {
            let expired: bool = tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM expired WHERE code_key = $1)",
                    &[&&key.0[..]],
                )
                .await?
                .get(0);
            if expired {
                return Ok(Lookup::Expired);
            }
        }
        return Ok(Lookup::Unknown);
    };
    let expires_at: i64 = row.get(4);
    if nat(expires_at) <= now {
        return Ok(Lookup::Expired);
    }
    let id: i64 = row.get(0);
    let code = code(row.get(1), row.get(2))?;
    let owner = OwnerId(key32(row.get(5), "batch owner")?);
    let rows = tx
        .query(
            "SELECT f.name, f.size, f.sha1, f.partial, f.blob, p.durable, f.executable, f.mtime
             FROM files f LEFT JOIN partials p ON p.id = f.partial
             WHERE f.batch = $1 ORDER BY f.idx",
            &[&id],
        )
        .await?;
    let mut files = Vec::with_capacity(rows.len());
    for r in rows {
        let (partial, blob, durable): (Option<i64>, Option<i64>, Option<i64>) =
            (r.get(3), r.get(4), r.get(5));
        let content = match (partial, blob) {
            (_, Some(b)) => FileContent::Blob(BlobId(nat(b))),
            (Some(p), None) => FileContent::Partial {
                id: PartialId(nat(p)),
                durable: nat(durable.unwrap_or(0)),
            },
            (None, None) => return Err(corrupt("file without content")),
        };
        files.push(FileRecord {
            name: r.get(0),
            size: nat(r.get(1)),
            sha1: digest20(r.get(2))?,
            attrs: attrs(r.get(6), r.get(7)),
            content,
        });
    }
    Ok(Lookup::Live(Batch {
        id: BatchId(nat(id)),
        code,
        owner,
        created_at: nat(row.get(3)),
        expires_at: nat(expires_at),
        files,
        open: row.get(6),
    }))
}

/// A file's partial (if still uploading); `NotFound` if there is no such
/// file.
pub(super) async fn file_partial(
    tx: &Transaction<'_>,
    file: FileRef,
) -> Result<Option<i64>, DbError> {
    let row = tx
        .query_opt(
            "SELECT partial FROM files WHERE batch = $1 AND idx = $2",
            &[&int(file.batch.0)?, &i64::from(file.index)],
        )
        .await?;
    Ok(row.ok_or_else(|| refused(StoreError::NotFound))?.get(0))
}

/// What [`Store::usage`](crate::store::Store::usage) reports, summed from
/// the tables, so every instance sees every instance's changes.
pub(super) async fn count_usage(tx: &Transaction<'_>) -> Result<Usage, DbError> {
    let row = tx
        .query_one(
            "SELECT ((SELECT COALESCE(SUM(size), 0) FROM blobs)
                   + (SELECT COALESCE(SUM(durable), 0) FROM partials))::BIGINT,
                    (SELECT COUNT(*) FROM batches)",
            &[],
        )
        .await?;
    Ok(Usage {
        bytes: nat(row.get(0)),
        batches: nat(row.get(1)),
    })
}

/// A file as [`Store::create_batch`](crate::store::Store::create_batch)
/// and [`Store::add_file`](crate::store::Store::add_file) store it.
#[derive(Debug, Clone)]
pub(super) struct FileRow {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha1: Sha1Digest,
    /// The empty content: complete at once as [`BlobId::EMPTY`].
    pub(super) empty: bool,
    pub(super) attrs: Option<Attrs>,
}

impl From<&crate::store::NewFile<'_>> for FileRow {
    fn from(f: &crate::store::NewFile<'_>) -> Self {
        FileRow {
            name: f.name.to_owned(),
            size: f.size,
            sha1: f.sha1,
            empty: f.is_empty_content(),
            attrs: f.attrs,
        }
    }
}

/// Inserts file `idx` of batch `batch` (with its partial upload unless it
/// is the empty content), in the caller's transaction.
pub(super) async fn insert_file(
    tx: &Transaction<'_>,
    batch: i64,
    idx: i64,
    file: &FileRow,
) -> Result<FileRecord, DbError> {
    let executable = file.attrs.map(|a| a.executable);
    let mtime = file.attrs.map(|a| a.mtime);
    let sha1 = &file.sha1.0[..];
    let content = if file.empty {
        tx.execute(
            "INSERT INTO files(batch, idx, name, size, sha1, blob, executable, mtime)
             VALUES ($1, $2, $3, 0, $4, $5, $6, $7)",
            &[
                &batch,
                &idx,
                &file.name,
                &sha1,
                &int(BlobId::EMPTY.0)?,
                &executable,
                &mtime,
            ],
        )
        .await?;
        FileContent::Blob(BlobId::EMPTY)
    } else {
        let partial: i64 = tx
            .query_one(
                "INSERT INTO partials(batch, durable, part_size) VALUES ($1, 0, $2) RETURNING id",
                &[&batch, &int(super::objects::part_size_for(file.size))?],
            )
            .await?
            .get(0);
        tx.execute(
            "INSERT INTO files(batch, idx, name, size, sha1, partial, executable, mtime)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &batch,
                &idx,
                &file.name,
                &int(file.size)?,
                &sha1,
                &partial,
                &executable,
                &mtime,
            ],
        )
        .await?;
        FileContent::Partial {
            id: PartialId(nat(partial)),
            durable: 0,
        }
    };
    Ok(FileRecord {
        name: file.name.clone(),
        size: file.size,
        sha1: file.sha1,
        attrs: file.attrs,
        content,
    })
}
