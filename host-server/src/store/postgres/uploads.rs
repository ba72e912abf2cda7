//! The steps of a partial upload (design §3.2): bytes into the spool,
//! syncs into object storage and then one fenced commit, reads for a
//! resume, and a reset.

use super::layout::PartialRow;
use super::rows::{int, nat, refused};
use super::store::PgStore;
use crate::running_sha1::Midstate;
use crate::store::{BatchId, PartialId, Result, StoreError};

impl PgStore {
    /// [`Store::write_partial`](crate::store::Store::write_partial): into
    /// the spool, not durable.
    pub(super) fn spool(&self, id: PartialId, offset: u64, data: &[u8]) -> Result<()> {
        self.wait(self.objects.write_spool(id.0, offset, data))
    }

    /// [`Store::sync_partial`](crate::store::Store::sync_partial): parts
    /// and a tail segment written, then committed in one fenced
    /// transaction; only that commit makes the bytes durable.
    pub(super) fn sync(
        &self,
        id: PartialId,
        durable: u64,
        hashed: Option<&Midstate>,
    ) -> Result<()> {
        if hashed.is_some_and(|h| h.len > durable) {
            return Err(StoreError::Corrupt(
                "hash state past the durable offset".into(),
            ));
        }
        let pid = int(id.0)?;
        let mut row = self.fenced_row(pid)?;
        // A state shorter than the bytes already in parts would leave a
        // resume bytes it cannot read back (invariant I2): keep the
        // recorded one.
        let hashed = hashed.filter(|h| h.len >= row.layout.parts_end);
        let hashed_len = hashed.map_or(row.hashed_len, |h| h.len);
        if row.layout.sync_needs_multipart(durable, hashed_len) {
            self.ensure_multipart(id, &mut row)?;
        }
        let synced = self.wait(self.objects.sync(&row.layout, durable, hashed_len))?;
        self.run(async |tx| self.commit_synced(tx, &row, durable, hashed, &synced).await)
    }

    /// Partial `pid`'s rows, refused with `Fenced` if another instance
    /// took its upload: checked before anything is written, so a fenced
    /// instance leaves the objects to the new holder.
    fn fenced_row(&self, pid: i64) -> Result<PartialRow> {
        self.run(async |tx| {
            let row = self.partial_row(tx, pid).await?;
            self.check_fence(tx, row.batch).await?;
            Ok(row)
        })
    }

    /// [`Store::read_partial`](crate::store::Store::read_partial): from
    /// the spool where it holds the bytes, else from the committed
    /// segments (all a resume reads, invariant I2).
    pub(super) fn read_spooled(&self, id: PartialId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let pid = int(id.0)?;
        let row = self.run(async |tx| self.partial_row(tx, pid).await)?;
        self.wait(self.objects.read_partial(&row.layout, offset, buf))
    }

    /// [`Store::reset_partial`](crate::store::Store::reset_partial): every
    /// stored byte is doomed and the partial starts again, under a fence
    /// of its own. Taking the fence again keeps the new segments' keys
    /// apart from the old ones, which the collector deletes later (a
    /// create-only PUT finding an old segment would take it for its own).
    /// Like any take, it means an instance that did not hold the new
    /// fence takes the upload before its next step, as every resume does.
    pub(super) fn reset(&self, id: PartialId) -> Result<()> {
        let pid = int(id.0)?;
        let row = self.fenced_row(pid)?;
        // Segments a crashed or fenced writer left without a row.
        let listed = self.wait(self.objects.list_tail(id.0))?;
        // A completion whose commit failed may have left the blob's key
        // (design §5.3 leak b). No row names it while the partial lives,
        // so no reader is in it; it goes now, not later, because this
        // partial's own completion will write that key again.
        self.wait(self.objects.delete(&self.objects.blob_key(id.0)))?;
        let start = Midstate::START.to_bytes().to_vec();
        let fence = self.run(async |tx| {
            self.check_fence(tx, row.batch).await?;
            let upload = self.upload_of(tx, pid).await?;
            self.doom_partial(tx, pid, upload.as_deref(), false, &listed)
                .await?;
            let n = tx
                .execute(
                    "UPDATE partials SET durable = 0, hashed = $2, upload_id = NULL,
                         parts_end = 0
                     WHERE id = $1",
                    &[&pid, &start],
                )
                .await?;
            if n == 0 {
                return Err(refused(StoreError::NotFound));
            }
            let fence: i64 = tx
                .query_one(
                    "UPDATE batches SET lease_fence = lease_fence + 1 WHERE id = $1
                     RETURNING lease_fence",
                    &[&row.batch],
                )
                .await?
                .get(0);
            Ok(fence)
        })?;
        self.hold(BatchId(nat(row.batch)), fence);
        self.wait(self.objects.drop_spool(id.0))
    }
}
