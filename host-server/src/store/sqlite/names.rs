//! Users' named files: bindings `(owner, name) → blob`, their shares, and
//! the blobs of replaced or removed names kept for their readers.
//!
//! Reference counting is the one of `blobs.rs`: every `names` row holds
//! one reference to its blob, as a `files` row does, and every
//! `kept_blobs` row holds one more until its time passes (the sweep then
//! drops it). A blob is collected when its count reaches zero, so neither
//! batch expiry nor a replacement can take content still bound or kept.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::rows::{digest20, exec, to_i64, to_u64};
use super::{
    Attrs, BatchId, BlobId, Delta, NameUsage, NamedFile, Result, Sha1Digest, SqliteStore,
    StoreError,
};

/// The time a kept blob is released, as the database stores it: far
/// futures are clamped rather than refused, since they only keep a blob
/// longer.
fn keep_until(now: u64, keep_secs: u64) -> i64 {
    i64::try_from(now.saturating_add(keep_secs)).unwrap_or(i64::MAX)
}

/// Columns of `names` a [`NamedFile`] is read from, in [`named_file`]'s order.
const NAMED_COLUMNS: &str = "name, blob, size, sha1, executable, mtime, updated_at";

/// A row of [`NAMED_COLUMNS`] as a [`NamedFile`]; the inner error is a
/// stored SHA-1 of the wrong length, which rusqlite cannot check.
fn named_file(owner: &str, r: &Row<'_>) -> rusqlite::Result<Result<NamedFile>> {
    let attrs = match (r.get::<_, Option<bool>>(4)?, r.get::<_, Option<i64>>(5)?) {
        (Some(executable), Some(mtime)) => Some(Attrs { executable, mtime }),
        _ => None,
    };
    let sha1 = match digest20(r.get(3)?) {
        Ok(d) => Sha1Digest(d),
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(NamedFile {
        owner: owner.to_owned(),
        name: r.get(0)?,
        blob: BlobId(to_u64(r.get(1)?)),
        size: to_u64(r.get(2)?),
        sha1,
        attrs,
        updated_at: to_u64(r.get(6)?),
    }))
}

/// Drops one reference to `blob` (the sweep collects it at zero).
fn release(db: &Connection, blob: i64) -> Result<()> {
    exec(
        db,
        "UPDATE blobs SET refs = refs - 1 WHERE id = ?1",
        params![blob],
    )?;
    Ok(())
}

/// The reference a name held on `blob` now keeps it until `until`
/// instead. A blob kept already has its reference, so this one is
/// dropped and the later of the two times stays.
fn keep(db: &Connection, blob: i64, until: i64) -> Result<()> {
    if to_u64(blob) == BlobId::EMPTY.0 {
        return Ok(());
    }
    let n = exec(
        db,
        "UPDATE kept_blobs SET until = MAX(until, ?2) WHERE blob = ?1",
        params![blob, until],
    )?;
    if n == 0 {
        exec(
            db,
            "INSERT INTO kept_blobs(blob, until) VALUES (?1, ?2)",
            params![blob, until],
        )?;
    } else {
        release(db, blob)?;
    }
    Ok(())
}

/// What a batch's file announced about its content, as a name keeps it.
struct Announced {
    size: i64,
    sha1: Vec<u8>,
    executable: Option<bool>,
    mtime: Option<i64>,
}

impl SqliteStore {
    /// [`Store::bind_names`](crate::store::Store::bind_names).
    pub(super) fn bind_batch_names(
        &self,
        owner: &str,
        batch: BatchId,
        now: u64,
        keep_secs: u64,
    ) -> Result<u64> {
        let owner = owner.to_owned();
        let (batch, now, until) = (to_i64(batch.0)?, to_i64(now)?, keep_until(now, keep_secs));
        self.write(move |db| {
            let exists: bool = db
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM batches WHERE id = ?1)")?
                .query_row(params![batch], |r| r.get(0))?;
            if !exists {
                return Err(StoreError::NotFound);
            }
            let rows: Vec<(String, Option<i64>, Announced)> = db
                .prepare_cached(
                    "SELECT name, blob, size, sha1, executable, mtime FROM files
                     WHERE batch = ?1 ORDER BY idx",
                )?
                .query_map(params![batch], |r| {
                    let announced = Announced {
                        size: r.get(2)?,
                        sha1: r.get(3)?,
                        executable: r.get(4)?,
                        mtime: r.get(5)?,
                    };
                    Ok((r.get(0)?, r.get(1)?, announced))
                })?
                .collect::<std::result::Result<_, _>>()?;
            // Every file is checked before any name changes; a later file
            // of the same name replaces an earlier one before binding.
            let mut files: BTreeMap<String, (i64, Announced)> = BTreeMap::new();
            for (name, blob, announced) in rows {
                let blob = blob.ok_or(StoreError::Incomplete)?;
                files.insert(name, (blob, announced));
            }
            for (name, (blob, announced)) in &files {
                Self::bind_one(db, &owner, name, *blob, announced, now, until)?;
            }
            Ok((files.len() as u64, Delta::default()))
        })
    }

    /// Binds one name to one blob, taking a reference, and keeps the blob
    /// it replaces (if another) until `until`.
    fn bind_one(
        db: &Connection,
        owner: &str,
        name: &str,
        blob: i64,
        file: &Announced,
        now: i64,
        until: i64,
    ) -> Result<()> {
        if to_u64(blob) != BlobId::EMPTY.0 {
            // The batch's file holds the blob, so it is live.
            let n = exec(
                db,
                "UPDATE blobs SET refs = refs + 1 WHERE id = ?1 AND refs > 0",
                params![blob],
            )?;
            if n == 0 {
                return Err(StoreError::Corrupt(format!(
                    "blob {blob} of a file is gone"
                )));
            }
        }
        let old: Option<i64> = db
            .prepare_cached("SELECT blob FROM names WHERE owner = ?1 AND name = ?2")?
            .query_row(params![owner, name], |r| r.get(0))
            .optional()?;
        exec(
            db,
            "INSERT OR REPLACE INTO names(owner, name, blob, size, sha1, executable, mtime, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![owner, name, blob, file.size, file.sha1, file.executable, file.mtime, now],
        )?;
        match old {
            // Rebound to the same content: no reader loses anything.
            Some(old) if old == blob => release(db, old),
            Some(old) => keep(db, old, until),
            None => Ok(()),
        }
    }

    /// [`Store::find_name`](crate::store::Store::find_name).
    pub(super) fn named_file(&self, owner: &str, name: &str) -> Result<Option<NamedFile>> {
        let db = self.db();
        let sql = format!("SELECT {NAMED_COLUMNS} FROM names WHERE owner = ?1 AND name = ?2");
        let row = db
            .prepare_cached(&sql)?
            .query_row(params![owner, name], |r| named_file(owner, r))
            .optional()?;
        row.transpose()
    }

    /// [`Store::list_names`](crate::store::Store::list_names).
    pub(super) fn named_files(&self, owner: &str) -> Result<Vec<NamedFile>> {
        let db = self.db();
        // The primary key's order (BINARY collation) is UTF-8 byte order,
        // the order of Rust strings and of the memory store.
        let sql = format!("SELECT {NAMED_COLUMNS} FROM names WHERE owner = ?1 ORDER BY name");
        let mut stmt = db.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![owner], |r| named_file(owner, r))?;
        rows.map(|r| r?).collect()
    }

    /// [`Store::remove_name`](crate::store::Store::remove_name).
    pub(super) fn unbind_name(
        &self,
        owner: &str,
        name: &str,
        now: u64,
        keep_secs: u64,
    ) -> Result<bool> {
        let (owner, name) = (owner.to_owned(), name.to_owned());
        let until = keep_until(now, keep_secs);
        self.write(move |db| {
            let old: Option<i64> = db
                .prepare_cached("SELECT blob FROM names WHERE owner = ?1 AND name = ?2")?
                .query_row(params![owner, name], |r| r.get(0))
                .optional()?;
            let Some(old) = old else {
                return Ok((false, Delta::default()));
            };
            exec(
                db,
                "DELETE FROM names WHERE owner = ?1 AND name = ?2",
                params![owner, name],
            )?;
            exec(
                db,
                "DELETE FROM name_shares WHERE owner = ?1 AND name = ?2",
                params![owner, name],
            )?;
            keep(db, old, until)?;
            Ok((true, Delta::default()))
        })
    }

    /// [`Store::share_name`](crate::store::Store::share_name).
    pub(super) fn set_share(
        &self,
        owner: &str,
        name: &str,
        grantee: &str,
        allow: bool,
    ) -> Result<bool> {
        let (owner, name, grantee) = (owner.to_owned(), name.to_owned(), grantee.to_owned());
        self.write(move |db| {
            let exists: bool = db
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM names WHERE owner = ?1 AND name = ?2)",
                )?
                .query_row(params![owner, name], |r| r.get(0))?;
            if exists {
                let sql = if allow {
                    "INSERT OR IGNORE INTO name_shares(owner, name, grantee) VALUES (?1, ?2, ?3)"
                } else {
                    "DELETE FROM name_shares WHERE owner = ?1 AND name = ?2 AND grantee = ?3"
                };
                exec(db, sql, params![owner, name, grantee])?;
            }
            Ok((exists, Delta::default()))
        })
    }

    /// [`Store::is_shared`](crate::store::Store::is_shared).
    pub(super) fn shared_with(&self, owner: &str, name: &str, grantee: &str) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM name_shares
                               WHERE owner = ?1 AND name = ?2 AND grantee = ?3)",
            )?
            .query_row(params![owner, name, grantee], |r| r.get(0))?)
    }

    /// [`Store::name_usage`](crate::store::Store::name_usage).
    pub(super) fn names_held(&self, owner: &str) -> Result<NameUsage> {
        let (bytes, files): (i64, i64) = self
            .db()
            .prepare_cached("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM names WHERE owner = ?1")?
            .query_row(params![owner], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(NameUsage {
            bytes: to_u64(bytes),
            files: to_u64(files),
        })
    }

    /// [`Store::remove_owner`](crate::store::Store::remove_owner).
    pub(super) fn drop_owner(&self, owner: &str) -> Result<()> {
        let owner = owner.to_owned();
        self.write(move |db| {
            // One reference per name: a blob bound under several of the
            // owner's names loses as many.
            exec(
                db,
                "UPDATE blobs SET refs = refs
                     - (SELECT COUNT(*) FROM names WHERE owner = ?1 AND blob = blobs.id)
                 WHERE id IN (SELECT blob FROM names WHERE owner = ?1)",
                params![owner],
            )?;
            exec(db, "DELETE FROM names WHERE owner = ?1", params![owner])?;
            exec(
                db,
                "DELETE FROM name_shares WHERE owner = ?1 OR grantee = ?1",
                params![owner],
            )?;
            Ok(((), Delta::default()))
        })
    }
}
