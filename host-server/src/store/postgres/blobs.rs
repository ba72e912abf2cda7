//! Finishing an upload: sharing a stored blob with the same bytes, or
//! making the partial file a blob (rule 3 of
//! [`contents`](crate::store::contents)); linking after a proof; the blob
//! rows. The SQL of store/sqlite/blobs.rs, each commit fenced.

use pickup_proto::Sha1Digest;
use tokio_postgres::Transaction;

use super::db::DbError;
use super::rows::{file_partial, int, nat, refused};
use super::store::{expect_partial, PgStore};
use crate::store::{BlobId, Content, FileRef, Holders, OwnerId, PartialId, Result, StoreError};

/// Most candidate blobs an upload is compared with (more than one means a
/// SHA-1 collision is stored; more than a few is an attack).
const MAX_COMPARED: usize = 4;

impl PgStore {
    /// At most `limit` blobs with this size and SHA-1.
    pub(super) fn candidate_ids(
        &self,
        size: u64,
        sha1: &Sha1Digest,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        let size = int(size)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async |tx| candidates(tx, size, sha1, limit).await)
    }

    /// [`Store::complete_file`](crate::store::Store::complete_file), as
    /// the SQLite store does it: no transaction is open across an fsync or
    /// a comparison of bytes.
    pub(super) fn complete(
        &self,
        file: FileRef,
        partial: PartialId,
        content: &Content,
    ) -> Result<BlobId> {
        let (pid, batch, idx) = (int(partial.0)?, int(file.batch.0)?, i64::from(file.index));
        let sha1 = content.sha1;
        // The verified SHA-1 becomes the record's first (see the SQLite
        // store): it differs only for a tus upload that declared none.
        let recorded: Option<Vec<u8>> = self.run(async |tx| {
            Ok(tx
                .query_opt(
                    "SELECT sha1 FROM files WHERE batch = $1 AND idx = $2 AND partial = $3",
                    &[&batch, &idx, &pid],
                )
                .await?
                .map(|r| r.get(0)))
        })?;
        match recorded {
            None => return Err(StoreError::NotFound),
            Some(old) if old[..] == sha1.0[..] => {}
            Some(_) => self.run(async |tx| {
                self.check_fence(tx, batch).await?;
                let n = tx
                    .execute(
                        "UPDATE files SET sha1 = $1 WHERE batch = $2 AND idx = $3 AND partial = $4",
                        &[&&sha1.0[..], &batch, &idx, &pid],
                    )
                    .await?;
                if n == 0 {
                    return Err(refused(StoreError::NotFound));
                }
                Ok(())
            })?,
        }
        if content.size == 0 {
            self.run(async |tx| {
                self.check_fence(tx, batch).await?;
                set_blob(tx, file, pid, int(BlobId::EMPTY.0)?).await
            })?;
            self.files.drop_partial_file(partial.0)?;
            return Ok(BlobId::EMPTY);
        }
        let size = int(content.size)?;
        let found = self.run(async |tx| {
            expect_partial(tx, file, pid).await?;
            candidates(tx, size, &sha1, MAX_COMPARED as i64).await
        })?;
        for blob in found.into_iter().take(MAX_COMPARED) {
            match self.files.same_bytes(partial, blob, content.size) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(blob = blob.0, "cannot compare with a stored blob: {e}");
                    continue;
                }
            }
            // Same bytes: share the blob, if it is still there (a sweep
            // may have collected it meanwhile).
            let bid = int(blob.0)?;
            let shared = self.run(async |tx| {
                self.check_fence(tx, batch).await?;
                share_blob(tx, file, pid, bid).await
            })?;
            if shared {
                self.files.drop_partial_file(partial.0)?;
                return Ok(blob);
            }
        }
        self.files.promote(partial)?;
        let threshold = i64::from(content.threshold);
        let committed = self.run(async |tx| {
            self.check_fence(tx, batch).await?;
            // A retry of a commit whose answer was lost finds it made.
            let made = tx
                .query_opt(
                    "SELECT 1 FROM files WHERE batch = $1 AND idx = $2 AND blob = $3",
                    &[&batch, &idx, &pid],
                )
                .await?;
            if made.is_some() {
                return Ok(());
            }
            tx.execute(
                "INSERT INTO blobs(id, size, sha1, refs, threshold) VALUES ($1, $2, $3, 1, $4)
                 ON CONFLICT (id) DO NOTHING",
                &[&pid, &size, &&sha1.0[..], &threshold],
            )
            .await?;
            set_blob(tx, file, pid, pid).await?;
            add_owner(tx, file, pid).await
        });
        if let Err(e) = committed {
            self.files
                .demote(partial, matches!(e, StoreError::NotFound))?;
            return Err(e);
        }
        Ok(BlobId(partial.0))
    }

    /// [`Store::link_file`](crate::store::Store::link_file).
    pub(super) fn link(&self, file: FileRef, blob: BlobId) -> Result<bool> {
        let (bid, batch) = (int(blob.0)?, int(file.batch.0)?);
        let linked = self.run(async |tx| {
            self.check_fence(tx, batch).await?;
            let pid = file_partial(tx, file)
                .await?
                .ok_or_else(|| refused(StoreError::NotFound))?;
            Ok(share_blob(tx, file, pid, bid).await?.then_some(pid))
        })?;
        match linked {
            Some(pid) => {
                self.files.drop_partial_file(nat(pid))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// [`Store::holders`](crate::store::Store::holders).
    pub(super) fn blob_holders(&self, blob: BlobId, owner: &OwnerId) -> Result<Holders> {
        let bid = int(blob.0)?;
        self.run(async |tx| {
            let threshold: i64 = tx
                .query_opt(
                    "SELECT threshold FROM blobs WHERE id = $1 AND refs > 0",
                    &[&bid],
                )
                .await?
                .ok_or_else(|| refused(StoreError::NotFound))?
                .get(0);
            let row = tx
                .query_one(
                    "SELECT COUNT(*), COALESCE(BOOL_OR(owner = $2), FALSE)
                     FROM blob_owners WHERE blob = $1",
                    &[&bid, &&owner.0[..]],
                )
                .await?;
            Ok(Holders {
                owned: row.get(1),
                owners: nat(row.get(0)),
                threshold: u32::try_from(threshold).unwrap_or(u32::MAX),
            })
        })
    }
}

async fn candidates(
    tx: &Transaction<'_>,
    size: i64,
    sha1: &Sha1Digest,
    limit: i64,
) -> std::result::Result<Vec<BlobId>, DbError> {
    let rows = tx
        .query(
            "SELECT id FROM blobs WHERE size = $1 AND sha1 = $2 ORDER BY id LIMIT $3",
            &[&size, &&sha1.0[..], &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| BlobId(nat(r.get(0)))).collect())
}

/// Points `file` (still in `partial`) at the existing `blob`, taking a
/// reference, if the blob is still live (a sweep may have collected it).
async fn share_blob(
    tx: &Transaction<'_>,
    file: FileRef,
    partial: i64,
    blob: i64,
) -> std::result::Result<bool, DbError> {
    let n = tx
        .execute(
            "UPDATE blobs SET refs = refs + 1 WHERE id = $1 AND refs > 0",
            &[&blob],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    set_blob(tx, file, partial, blob).await?;
    add_owner(tx, file, blob).await?;
    Ok(true)
}

/// The owner of a file's batch becomes one of `blob`'s owners.
async fn add_owner(
    tx: &Transaction<'_>,
    file: FileRef,
    blob: i64,
) -> std::result::Result<(), DbError> {
    tx.execute(
        "INSERT INTO blob_owners(blob, owner) SELECT $1, owner FROM batches WHERE id = $2
         ON CONFLICT DO NOTHING",
        &[&blob, &int(file.batch.0)?],
    )
    .await?;
    Ok(())
}

/// Points a file at a blob and deletes its partial row; `NotFound` if the
/// file no longer points at `partial`.
async fn set_blob(
    tx: &Transaction<'_>,
    file: FileRef,
    partial: i64,
    blob: i64,
) -> std::result::Result<(), DbError> {
    let n = tx
        .execute(
            "UPDATE files SET partial = NULL, blob = $1
             WHERE batch = $2 AND idx = $3 AND partial = $4",
            &[&blob, &int(file.batch.0)?, &i64::from(file.index), &partial],
        )
        .await?;
    if n == 0 {
        return Err(refused(StoreError::NotFound));
    }
    tx.execute("DELETE FROM partials WHERE id = $1", &[&partial])
        .await?;
    Ok(())
}
