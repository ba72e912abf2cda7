//! Finishing an upload: completing its object, then sharing a stored blob
//! with the same bytes or making it a blob; linking after a proof; the
//! blob rows. The SQL of store/sqlite/blobs.rs, each commit fenced.

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

    /// [`Store::complete_file`](crate::store::Store::complete_file)
    /// (design §3.2, §4): the blob object completed, compared with the
    /// candidates outside any transaction, then the decision taken under
    /// the content identity's advisory lock: share an equal blob (and doom
    /// our copy) or make ours a blob.
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
                let upload = self.upload_of(tx, pid).await?;
                self.doom_partial(tx, pid, upload.as_deref(), true, &[])
                    .await?;
                set_blob(tx, file, pid, int(BlobId::EMPTY.0)?).await
            })?;
            self.wait(self.objects.drop_spool(partial.0))?;
            return Ok(BlobId::EMPTY);
        }
        let size = int(content.size)?;
        // Fenced before anything is written: a fenced instance leaves the
        // objects to the new holder.
        let mut row = self.run(async |tx| {
            self.check_fence(tx, batch).await?;
            expect_partial(tx, file, pid).await?;
            self.partial_row(tx, pid).await
        })?;
        if row.layout.complete_needs_multipart(content.size) {
            self.ensure_multipart(partial, &mut row)?;
        }
        self.wait(self.objects.complete(&row.layout, content.size))?;
        // Segments a crashed or fenced writer left without a row.
        let listed = self.wait(self.objects.list_tail(partial.0))?;
        let threshold = i64::from(content.threshold);
        let lock = content_lock(content.size, &sha1);
        let mut compared: Vec<(BlobId, bool)> = Vec::new();
        // Each round compares at least one more candidate, so rounds are
        // bounded by the candidates an upload is compared with at most.
        for _ in 0..=MAX_COMPARED {
            let decided = self.run(async |tx| {
                self.check_fence(tx, batch).await?;
                // A retry of a commit whose answer was lost finds it made.
                let made = tx
                    .query_opt(
                        "SELECT blob FROM files WHERE batch = $1 AND idx = $2 AND blob IS NOT NULL",
                        &[&batch, &idx],
                    )
                    .await?;
                if let Some(made) = made.map(|r| r.get::<_, i64>(0)) {
                    let ours =
                        made == pid || compared.iter().any(|&(b, same)| same && b.0 == nat(made));
                    if ours {
                        return Ok(Decision::Done(BlobId(nat(made))));
                    }
                }
                // Two instances finishing the same content take turns
                // here: the second sees the first's blob and compares.
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
                    .await?;
                let found = candidates(tx, size, &sha1, MAX_COMPARED as i64).await?;
                let fresh: Vec<BlobId> = found
                    .iter()
                    .filter(|b| !compared.iter().any(|(c, _)| c == *b))
                    .copied()
                    .collect();
                if !fresh.is_empty() {
                    return Ok(Decision::Compare(fresh));
                }
                // Shared or made a blob, the upload is complete: its
                // segments go either way.
                self.doom_partial(tx, pid, None, false, &listed).await?;
                for (blob, same) in &compared {
                    if !same || !found.contains(blob) {
                        continue;
                    }
                    if share_blob(tx, file, pid, int(blob.0)?).await? {
                        // Our own copy of the same bytes is garbage.
                        self.doom(tx, &self.objects.blob_key(partial.0), None)
                            .await?;
                        return Ok(Decision::Done(*blob));
                    }
                }
                tx.execute(
                    "INSERT INTO blobs(id, size, sha1, refs, threshold) VALUES ($1, $2, $3, 1, $4)
                     ON CONFLICT (id) DO NOTHING",
                    &[&pid, &size, &&sha1.0[..], &threshold],
                )
                .await?;
                set_blob(tx, file, pid, pid).await?;
                add_owner(tx, file, pid).await?;
                Ok(Decision::Done(BlobId(partial.0)))
            });
            match decided {
                Ok(Decision::Done(blob)) => {
                    self.wait(self.objects.drop_spool(partial.0))?;
                    return Ok(blob);
                }
                Ok(Decision::Compare(fresh)) => {
                    for blob in fresh {
                        let same = match self.wait(self.objects.same_bytes(
                            partial.0,
                            blob.0,
                            content.size,
                        )) {
                            Ok(same) => same,
                            Err(e) => {
                                tracing::warn!(
                                    blob = blob.0,
                                    "cannot compare with a stored blob: {e}"
                                );
                                false
                            }
                        };
                        compared.push((blob, same));
                    }
                }
                Err(e) => {
                    if matches!(e, StoreError::NotFound) {
                        self.doom_orphan_blob(pid)?;
                    }
                    return Err(e);
                }
            }
        }
        Err(StoreError::Corrupt(format!(
            "more than {MAX_COMPARED} blobs with the size and SHA-1 of partial {pid}"
        )))
    }

    /// The completed `blobs/{pid}` of an upload whose file went meanwhile
    /// (swept): no row will ever name it, unless one does already.
    fn doom_orphan_blob(&self, pid: i64) -> Result<()> {
        let key = self.objects.blob_key(nat(pid));
        self.run(async |tx| {
            let named = tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM blobs WHERE id = $1)
                         OR EXISTS(SELECT 1 FROM partials WHERE id = $1)",
                    &[&pid],
                )
                .await?
                .get::<_, bool>(0);
            if !named {
                self.doom(tx, &key, None).await?;
            }
            Ok(())
        })
    }

    /// [`Store::link_file`](crate::store::Store::link_file).
    pub(super) fn link(&self, file: FileRef, blob: BlobId) -> Result<bool> {
        let (bid, batch) = (int(blob.0)?, int(file.batch.0)?);
        let linked = self.run(async |tx| {
            self.check_fence(tx, batch).await?;
            let pid = file_partial(tx, file)
                .await?
                .ok_or_else(|| refused(StoreError::NotFound))?;
            let upload = self.upload_of(tx, pid).await?;
            if !share_blob(tx, file, pid, bid).await? {
                return Ok(None);
            }
            self.doom_partial(tx, pid, upload.as_deref(), true, &[])
                .await?;
            Ok(Some(pid))
        })?;
        match linked {
            Some(pid) => {
                self.wait(self.objects.drop_spool(nat(pid)))?;
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

/// What a completion's decision transaction found.
enum Decision {
    /// The file points at this blob now.
    Done(BlobId),
    /// Blobs of the same size and SHA-1 not compared yet: compare them
    /// (outside any transaction) and decide again.
    Compare(Vec<BlobId>),
}

/// The advisory lock of a content identity (design §4): the first eight
/// bytes of its SHA-1 XOR its size.
fn content_lock(size: u64, sha1: &Sha1Digest) -> i64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&sha1.0[..8]);
    i64::from_le_bytes(head) ^ (size as i64)
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
