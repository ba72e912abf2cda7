//! Users' named files: the SQL of store/sqlite/names.rs (one reference per
//! `names` row and per `kept_blobs` row). Changes to one owner's names
//! take a transaction-scoped advisory lock on the owner, so two instances
//! binding the same name at once cannot both read "no old binding" and
//! lose the reference of the one replaced.

use std::collections::BTreeMap;

use tokio_postgres::{Row, Transaction};

use super::db::DbError;
use super::rows::{attrs, digest20, int, nat, refused};
use super::store::PgStore;
use crate::store::{BatchId, BlobId, NameUsage, NamedFile, Result, StoreError};

/// The time a kept blob is released, as stored: far futures are clamped.
fn keep_until(now: u64, keep_secs: u64) -> i64 {
    i64::try_from(now.saturating_add(keep_secs)).unwrap_or(i64::MAX)
}

/// Columns of `names` a [`NamedFile`] is read from, in [`named_file`]'s order.
const NAMED_COLUMNS: &str = "name, blob, size, sha1, executable, mtime, updated_at";

fn named_file(owner: &str, r: &Row) -> std::result::Result<NamedFile, DbError> {
    Ok(NamedFile {
        owner: owner.to_owned(),
        name: r.get(0),
        blob: BlobId(nat(r.get(1))),
        size: nat(r.get(2)),
        sha1: digest20(r.get(3))?,
        attrs: attrs(r.get(4), r.get(5)),
        updated_at: nat(r.get(6)),
    })
}

/// Serializes changes to `owner`'s names across instances, to the end of
/// the transaction.
async fn lock_owner(tx: &Transaction<'_>, owner: &str) -> std::result::Result<(), DbError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('names:' || $1, 0))",
        &[&owner],
    )
    .await?;
    Ok(())
}

/// Drops one reference to `blob` (a sweep collects it at zero).
async fn release(tx: &Transaction<'_>, blob: i64) -> std::result::Result<(), DbError> {
    tx.execute("UPDATE blobs SET refs = refs - 1 WHERE id = $1", &[&blob])
        .await?;
    Ok(())
}

/// The reference a name held on `blob` now keeps it until `until`
/// instead. A blob kept already has its reference, so this one is
/// dropped and the later of the two times stays.
async fn keep(tx: &Transaction<'_>, blob: i64, until: i64) -> std::result::Result<(), DbError> {
    if nat(blob) == BlobId::EMPTY.0 {
        return Ok(());
    }
    // `xmax = 0`: the row was inserted now, not updated.
    let inserted: bool = tx
        .query_one(
            "INSERT INTO kept_blobs(blob, until) VALUES ($1, $2)
             ON CONFLICT (blob) DO UPDATE SET until = GREATEST(kept_blobs.until, EXCLUDED.until)
             RETURNING (xmax = 0)",
            &[&blob, &until],
        )
        .await?
        .get(0);
    if !inserted {
        release(tx, blob).await?;
    }
    Ok(())
}

impl PgStore {
    /// [`Store::bind_names`](crate::store::Store::bind_names).
    pub(super) fn bind_batch_names(
        &self,
        owner: &str,
        batch: BatchId,
        now: u64,
        keep_secs: u64,
    ) -> Result<u64> {
        let (batch, until) = (int(batch.0)?, keep_until(now, keep_secs));
        let now = int(now)?;
        self.run(async |tx| {
            lock_owner(tx, owner).await?;
            let exists = tx
                .query_opt("SELECT 1 FROM batches WHERE id = $1", &[&batch])
                .await?;
            if exists.is_none() {
                return Err(refused(StoreError::NotFound));
            }
            let rows = tx
                .query(
                    "SELECT name, blob, size, sha1, executable, mtime FROM files
                     WHERE batch = $1 ORDER BY idx",
                    &[&batch],
                )
                .await?;
            // Every file is checked before any name changes; a later file
            // of the same name replaces an earlier one.
            let mut files: BTreeMap<String, (i64, Row)> = BTreeMap::new();
            for r in rows {
                let blob: Option<i64> = r.get(1);
                let blob = blob.ok_or_else(|| refused(StoreError::Incomplete))?;
                files.insert(r.get(0), (blob, r));
            }
            for (name, (blob, file)) in &files {
                bind_one(tx, owner, name, *blob, file, now, until).await?;
            }
            Ok(files.len() as u64)
        })
    }

    /// [`Store::find_name`](crate::store::Store::find_name).
    pub(super) fn named_file(&self, owner: &str, name: &str) -> Result<Option<NamedFile>> {
        let sql = format!("SELECT {NAMED_COLUMNS} FROM names WHERE owner = $1 AND name = $2");
        self.run(async |tx| {
            tx.query_opt(&sql, &[&owner, &name])
                .await?
                .map(|r| named_file(owner, &r))
                .transpose()
        })
    }

    /// [`Store::list_names`](crate::store::Store::list_names), in UTF-8
    /// byte order (`COLLATE "C"`), as Rust strings sort.
    pub(super) fn named_files(&self, owner: &str) -> Result<Vec<NamedFile>> {
        let sql = format!(
            "SELECT {NAMED_COLUMNS} FROM names WHERE owner = $1 ORDER BY name COLLATE \"C\""
        );
        self.run(async |tx| {
            tx.query(&sql, &[&owner])
                .await?
                .iter()
                .map(|r| named_file(owner, r))
                .collect()
        })
    }

    /// [`Store::remove_name`](crate::store::Store::remove_name).
    pub(super) fn unbind_name(
        &self,
        owner: &str,
        name: &str,
        now: u64,
        keep_secs: u64,
    ) -> Result<bool> {
        let until = keep_until(now, keep_secs);
        self.run(async |tx| {
            lock_owner(tx, owner).await?;
            let old = tx
                .query_opt(
                    "DELETE FROM names WHERE owner = $1 AND name = $2 RETURNING blob",
                    &[&owner, &name],
                )
                .await?;
            let Some(old) = old else {
                return Ok(false);
            };
            tx.execute(
                "DELETE FROM name_shares WHERE owner = $1 AND name = $2",
                &[&owner, &name],
            )
            .await?;
            keep(tx, old.get(0), until).await?;
            Ok(true)
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
        self.run(async |tx| {
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM names WHERE owner = $1 AND name = $2 FOR SHARE",
                    &[&owner, &name],
                )
                .await?
                .is_some();
            if exists {
                let sql = if allow {
                    "INSERT INTO name_shares(owner, name, grantee) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING"
                } else {
                    "DELETE FROM name_shares WHERE owner = $1 AND name = $2 AND grantee = $3"
                };
                tx.execute(sql, &[&owner, &name, &grantee]).await?;
            }
            Ok(exists)
        })
    }

    /// [`Store::is_shared`](crate::store::Store::is_shared).
    pub(super) fn shared_with(&self, owner: &str, name: &str, grantee: &str) -> Result<bool> {
        self.run(async |tx| {
            Ok(tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM name_shares
                                   WHERE owner = $1 AND name = $2 AND grantee = $3)",
                    &[&owner, &name, &grantee],
                )
                .await?
                .get(0))
        })
    }

    /// [`Store::name_usage`](crate::store::Store::name_usage).
    pub(super) fn names_held(&self, owner: &str) -> Result<NameUsage> {
        self.run(async |tx| {
            let r = tx
                .query_one(
                    "SELECT COALESCE(SUM(size), 0)::BIGINT, COUNT(*) FROM names WHERE owner = $1",
                    &[&owner],
                )
                .await?;
            Ok(NameUsage {
                bytes: nat(r.get(0)),
                files: nat(r.get(1)),
            })
        })
    }

    /// [`Store::remove_owner`](crate::store::Store::remove_owner).
    pub(super) fn drop_owner(&self, owner: &str) -> Result<()> {
        self.run(async |tx| {
            lock_owner(tx, owner).await?;
            // One reference per name: a blob bound under several of the
            // owner's names loses as many.
            tx.execute(
                "UPDATE blobs SET refs = refs
                     - (SELECT COUNT(*) FROM names WHERE owner = $1 AND blob = blobs.id)
                 WHERE id IN (SELECT blob FROM names WHERE owner = $1)",
                &[&owner],
            )
            .await?;
            tx.execute("DELETE FROM names WHERE owner = $1", &[&owner])
                .await?;
            tx.execute(
                "DELETE FROM name_shares WHERE owner = $1 OR grantee = $1",
                &[&owner],
            )
            .await?;
            Ok(())
        })
    }
}

/// Binds one name to one blob, taking a reference, and keeps the blob it
/// replaces (if another) until `until`. `file` is the batch's file row
/// (name, blob, size, sha1, executable, mtime).
async fn bind_one(
    tx: &Transaction<'_>,
    owner: &str,
    name: &str,
    blob: i64,
    file: &Row,
    now: i64,
    until: i64,
) -> std::result::Result<(), DbError> {
    if nat(blob) != BlobId::EMPTY.0 {
        // The batch's file holds the blob, so it is live.
        let n = tx
            .execute(
                "UPDATE blobs SET refs = refs + 1 WHERE id = $1 AND refs > 0",
                &[&blob],
            )
            .await?;
        if n == 0 {
            return Err(refused(StoreError::Corrupt(format!(
                "blob {blob} of a file is gone"
            ))));
        }
    }
    let old: Option<i64> = tx
        .query_opt(
            "SELECT blob FROM names WHERE owner = $1 AND name = $2",
            &[&owner, &name],
        )
        .await?
        .map(|r| r.get(0));
    let (size, sha1, executable, mtime): (i64, Vec<u8>, Option<bool>, Option<i64>) =
        (file.get(2), file.get(3), file.get(4), file.get(5));
    tx.execute(
        "INSERT INTO names(owner, name, blob, size, sha1, executable, mtime, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (owner, name) DO UPDATE SET blob = EXCLUDED.blob, size = EXCLUDED.size,
             sha1 = EXCLUDED.sha1, executable = EXCLUDED.executable, mtime = EXCLUDED.mtime,
             updated_at = EXCLUDED.updated_at",
        &[
            &owner,
            &name,
            &blob,
            &size,
            &sha1,
            &executable,
            &mtime,
            &now,
        ],
    )
    .await?;
    match old {
        // Rebound to the same content: no reader loses anything.
        Some(old) if old == blob => release(tx, old).await,
        Some(old) => keep(tx, old, until).await,
        None => Ok(()),
    }
}
