//! Finishing an upload: sharing a stored blob with the same bytes
//! (deduplication compares bytes, not only hashes), or moving the partial
//! file into `blobs/` under durability rule 3; and the blob rows.

use pickup_proto::Sha1Digest;
use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{exec, to_i64, to_u64};
use super::Delta;
use super::{
    BlobId, Content, FileRef, Holders, OwnerId, PartialId, Result, SqliteStore, StoreError,
};

/// Most candidate blobs an upload is compared with (more than one means a
/// SHA-1 collision is stored; more than a few is an attack).
pub(super) const MAX_COMPARED: usize = 4;

impl SqliteStore {
    /// Shares the first of (at most [`MAX_COMPARED`]) `candidates` that holds
    /// the same bytes as the partial upload and is still live, and deletes
    /// the partial file; `None` if there is no such blob.
    pub(super) fn share_same_bytes(
        &self,
        file: FileRef,
        partial: PartialId,
        content: &Content,
        candidates: Vec<BlobId>,
    ) -> Result<Option<BlobId>> {
        let pid = to_i64(partial.0)?;
        for blob in candidates.into_iter().take(MAX_COMPARED) {
            match self.files.same_bytes(partial, blob, content.size) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(blob = blob.0, "cannot compare with a stored blob: {e}");
                    continue;
                }
            }
            // Same bytes: the same content. Share the blob, if it is
            // still there (the sweeper may have collected it meanwhile).
            let bid = to_i64(blob.0)?;
            let shared = self.write(move |db| Self::share_blob(db, file, pid, bid))?;
            if !shared {
                continue;
            }
            self.files.drop_partial_file(partial.0)?;
            return Ok(Some(blob));
        }
        Ok(None)
    }

    /// Makes the partial file the blob of the same id: fsync, rename into
    /// `blobs/`, fsync that directory, then commit the row (rule 3).
    pub(super) fn promote_to_blob(
        &self,
        file: FileRef,
        partial: PartialId,
        content: &Content,
    ) -> Result<BlobId> {
        let pid = to_i64(partial.0)?;
        self.files.promote(partial)?;
        let (size, sha1, threshold) = (to_i64(content.size)?, content.sha1, content.threshold);
        let committed = self.write(move |db| {
            exec(
                db,
                "INSERT INTO blobs(id, size, sha1, refs, threshold) VALUES (?1, ?2, ?3, 1, ?4)",
                params![pid, size, &sha1.0[..], threshold],
            )?;
            let durable = Self::set_blob(db, file, pid, pid)?;
            Self::add_owner(db, file, pid)?;
            // The partial's durable bytes become the blob's.
            Ok((
                (),
                Delta {
                    bytes: size - durable,
                    batches: 0,
                },
            ))
        });
        if let Err(e) = committed {
            // No row points at the blob file. Swept meanwhile: it is garbage.
            self.files
                .demote(partial, matches!(e, StoreError::NotFound))?;
            return Err(e);
        }
        Ok(BlobId(partial.0))
    }

    /// At most `limit` blobs with this size and SHA-1 (rows past the limit
    /// are never stepped to).
    pub(super) fn candidate_ids(
        db: &Connection,
        size: u64,
        sha1: &Sha1Digest,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        // The limit is the iterator's, not a bound `LIMIT ?`: with one,
        // SQLite prepared this statement again on every call (perf showed
        // `sqlite3Reprepare` under it), the most of the store's parsing
        // under many small uploads. Stepping stops at the limit all the same.
        let mut stmt = db.prepare_cached("SELECT id FROM blobs WHERE size = ?1 AND sha1 = ?2")?;
        let rows = stmt.query_map(params![to_i64(size)?, &sha1.0[..]], |r| r.get::<_, i64>(0))?;
        rows.take(limit).map(|r| Ok(BlobId(to_u64(r?)))).collect()
    }

    /// An empty upload (of a relay that kept empty files as partials)
    /// becomes [`BlobId::EMPTY`]: no blob file, no row, no fsync.
    pub(super) fn complete_empty(&self, file: FileRef, partial: PartialId) -> Result<BlobId> {
        let pid = to_i64(partial.0)?;
        let empty = to_i64(BlobId::EMPTY.0)?;
        self.write(move |db| {
            let durable = Self::set_blob(db, file, pid, empty)?;
            Ok((
                (),
                Delta {
                    bytes: -durable,
                    batches: 0,
                },
            ))
        })?;
        self.files.drop_partial_file(partial.0)?;
        Ok(BlobId::EMPTY)
    }

    /// Points `file` (still in `partial`) at the existing `blob`, taking a
    /// reference, if the blob is still live (the sweeper may have collected
    /// it). On success the file's `size` bytes no longer count twice.
    pub(super) fn share_blob(
        db: &Connection,
        file: FileRef,
        partial: i64,
        blob: i64,
    ) -> Result<(bool, Delta)> {
        let n = exec(
            db,
            "UPDATE blobs SET refs = refs + 1 WHERE id = ?1 AND refs > 0",
            params![blob],
        )?;
        if n == 0 {
            return Ok((false, Delta::default()));
        }
        let durable = Self::set_blob(db, file, partial, blob)?;
        Self::add_owner(db, file, blob)?;
        Ok((
            true,
            Delta {
                bytes: -durable,
                batches: 0,
            },
        ))
    }

    /// The owner of a file's batch becomes one of `blob`'s owners.
    fn add_owner(db: &Connection, file: FileRef, blob: i64) -> Result<()> {
        exec(
            db,
            "INSERT OR IGNORE INTO blob_owners(blob, owner) SELECT ?1, owner FROM batches WHERE id = ?2",
            params![blob, to_i64(file.batch.0)?],
        )?;
        Ok(())
    }

    /// Who holds `blob`, as `owner` may learn it ([`Store::holders`]).
    ///
    /// [`Store::holders`]: crate::store::Store::holders
    pub(super) fn blob_holders(db: &Connection, blob: BlobId, owner: &OwnerId) -> Result<Holders> {
        let bid = to_i64(blob.0)?;
        let threshold: Option<i64> = db
            .prepare_cached("SELECT threshold FROM blobs WHERE id = ?1 AND refs > 0")?
            .query_row(params![bid], |r| r.get(0))
            .optional()?;
        let threshold = threshold.ok_or(StoreError::NotFound)?;
        let (owners, owned): (i64, bool) = db
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(MAX(owner = ?2), 0) FROM blob_owners WHERE blob = ?1",
            )?
            .query_row(params![bid, &owner.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(Holders {
            owned,
            owners: to_u64(owners),
            threshold: u32::try_from(threshold).unwrap_or(u32::MAX),
        })
    }

    /// Points a file at a blob and deletes its partial row, in `tx`;
    /// `NotFound` if the file no longer points at `partial`. Returns the
    /// partial's durable bytes, which no longer count as stored.
    fn set_blob(db: &Connection, file: FileRef, partial: i64, blob: i64) -> Result<i64> {
        let n = exec(
            db,
            "UPDATE files SET partial = NULL, blob = ?1 WHERE batch = ?2 AND idx = ?3 AND partial = ?4",
            params![blob, to_i64(file.batch.0)?, file.index, partial],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        let durable: i64 = db
            .prepare_cached("SELECT durable FROM partials WHERE id = ?1")?
            .query_row(params![partial], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        exec(db, "DELETE FROM partials WHERE id = ?1", params![partial])?;
        Ok(durable)
    }
}
