//! The PostgreSQL side of contents in object storage (design §3.2, §5.3):
//! a partial upload's [`PartialLayout`] read from its rows and the
//! outcome of a sync committed into them; objects made unreachable queued
//! in `doomed_objects` by the transaction that makes them so; and the
//! collector that deletes them once their time has come.

use tokio_postgres::Transaction;

use super::db::DbError;
use super::objects::{self, PartialLayout, Segment, Synced};
use super::rows::{corrupt, int, nat, refused};
use super::store::PgStore;
use crate::running_sha1::Midstate;
use crate::store::{PartialId, Result, StoreError};

/// Doomed objects one collection transaction takes at most.
const COLLECT_CHUNK: i64 = 100;

/// Collection transactions one sweep runs at most (so a sweep ends even
/// when objects are doomed as fast as they are deleted).
const COLLECT_ROUNDS: usize = 100;

/// The database's clock, in whole seconds since the epoch: every instance
/// reads the same one.
const NOW_SQL: &str = "EXTRACT(EPOCH FROM clock_timestamp())::BIGINT";

impl From<objects::Error> for StoreError {
    fn from(e: objects::Error) -> Self {
        match e {
            objects::Error::NotFound(_) => StoreError::NotFound,
            objects::Error::Spool(e) => StoreError::Io(e),
            e @ (objects::Error::Unavailable(_)
            | objects::Error::Storage(_)
            | objects::Error::Config(_)) => StoreError::Io(std::io::Error::other(e)),
            other => StoreError::Corrupt(other.to_string()),
        }
    }
}

/// A partial upload as its rows describe it.
#[derive(Debug, Clone)]
pub(super) struct PartialRow {
    /// Its batch (whose fence a step checks).
    pub(super) batch: i64,
    /// The SHA-1 state's length, 0 without one.
    pub(super) hashed_len: u64,
    /// Where its bytes are, with the fence this instance holds.
    pub(super) layout: PartialLayout,
}

impl PgStore {
    /// Partial `id`'s rows, or `NotFound`.
    pub(super) async fn partial_row(
        &self,
        tx: &Transaction<'_>,
        id: i64,
    ) -> std::result::Result<PartialRow, DbError> {
        let row = tx
            .query_opt(
                "SELECT batch, hashed, part_size, upload_id, parts_end
                 FROM partials WHERE id = $1",
                &[&id],
            )
            .await?
            .ok_or_else(|| refused(StoreError::NotFound))?;
        let batch: i64 = row.get(0);
        let hashed: Option<Vec<u8>> = row.get(1);
        let hashed_len = hashed
            .as_deref()
            .and_then(Midstate::from_bytes)
            .map_or(0, |m| m.len);
        let parts = tx
            .query(
                "SELECT part_idx, etag FROM partial_parts WHERE partial = $1 ORDER BY part_idx",
                &[&id],
            )
            .await?;
        let mut etags = Vec::with_capacity(parts.len());
        for (k, p) in parts.iter().enumerate() {
            if p.get::<_, i64>(0) != k as i64 {
                return Err(corrupt("the parts of a partial upload have a gap"));
            }
            etags.push(p.get::<_, String>(1));
        }
        let segments = tx
            .query(
                "SELECT start_at, end_at, fence FROM partial_segments
                 WHERE partial = $1 ORDER BY start_at",
                &[&id],
            )
            .await?
            .iter()
            .map(|s| Segment {
                start: nat(s.get(0)),
                end: nat(s.get(1)),
                fence: nat(s.get(2)),
            })
            .collect();
        Ok(PartialRow {
            batch,
            hashed_len,
            layout: PartialLayout {
                id: nat(id),
                fence: nat(self.held(batch)),
                part_size: nat(row.get(2)),
                upload_id: row.get(3),
                parts: etags,
                parts_end: nat(row.get(4)),
                segments,
            },
        })
    }

    /// Starts the multipart upload `row` needs and commits its id (fenced)
    /// before any part is sent (design §3.2: an id lost before its commit
    /// holds no bytes). An id committed meanwhile wins; ours is doomed.
    pub(super) fn ensure_multipart(&self, pid: PartialId, row: &mut PartialRow) -> Result<()> {
        let started = self.wait(self.objects.start_multipart(&row.layout))?;
        let id = int(pid.0)?;
        let key = self.objects.blob_key(pid.0);
        let kept: String = self.run(async |tx| {
            self.check_fence(tx, row.batch).await?;
            let kept: String = tx
                .query_opt(
                    "UPDATE partials SET upload_id = COALESCE(upload_id, $2) WHERE id = $1
                     RETURNING upload_id",
                    &[&id, &started],
                )
                .await?
                .ok_or_else(|| refused(StoreError::NotFound))?
                .get(0);
            if kept != started {
                self.doom(tx, &key, Some(&started)).await?;
            }
            Ok(kept)
        })?;
        row.layout.upload_id = Some(kept);
        Ok(())
    }

    /// Commits what a sync wrote (design §3.2 step 3), fenced: the durable
    /// offset and hash state, the new parts and segment, and the segments
    /// now folded into parts, doomed.
    pub(super) async fn commit_synced(
        &self,
        tx: &Transaction<'_>,
        row: &PartialRow,
        durable: u64,
        hashed: Option<&Midstate>,
        synced: &Synced,
    ) -> std::result::Result<(), DbError> {
        self.check_fence(tx, row.batch).await?;
        let id = int(row.layout.id)?;
        let hashed = hashed.map(|h| h.to_bytes().to_vec());
        let updated = tx
            .execute(
                "UPDATE partials SET durable = $2, hashed = COALESCE($3, hashed),
                     parts_end = GREATEST(parts_end, $4)
                 WHERE id = $1 AND durable <= $2",
                &[&id, &int(durable)?, &hashed, &int(synced.parts_end)?],
            )
            .await?;
        if updated == 0 {
            // Gone, or a retry of a step whose commit went through and
            // that a later sync has passed since: nothing to record.
            let exists = tx
                .query_opt("SELECT 1 FROM partials WHERE id = $1", &[&id])
                .await?;
            return match exists {
                None => Err(refused(StoreError::NotFound)),
                Some(_) => Ok(()),
            };
        }
        for (k, etag) in &synced.new_parts {
            tx.execute(
                "INSERT INTO partial_parts(partial, part_idx, etag) VALUES ($1, $2, $3)
                 ON CONFLICT (partial, part_idx) DO UPDATE SET etag = EXCLUDED.etag",
                &[&id, &i64::from(*k), etag],
            )
            .await?;
        }
        if let Some(s) = &synced.new_segment {
            tx.execute(
                "INSERT INTO partial_segments(partial, start_at, end_at, fence)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&id, &int(s.start)?, &int(s.end)?, &int(s.fence)?],
            )
            .await?;
        }
        for s in &synced.obsolete_segments {
            tx.execute(
                "DELETE FROM partial_segments WHERE partial = $1 AND start_at = $2",
                &[&id, &int(s.start)?],
            )
            .await?;
            self.doom(tx, &self.objects.segment_key(row.layout.id, s), None)
                .await?;
        }
        Ok(())
    }

    /// Queues `key` for the collector (or, with `upload_id`, that
    /// multipart upload of it, to abort), in the transaction that makes
    /// it unreachable.
    pub(super) async fn doom(
        &self,
        tx: &Transaction<'_>,
        key: &str,
        upload_id: Option<&str>,
    ) -> std::result::Result<(), DbError> {
        tx.execute(
            &format!(
                "INSERT INTO doomed_objects(key, upload_id, not_before)
                 VALUES ($1, $2, {NOW_SQL} + $3)"
            ),
            &[&key, &upload_id, &self.collect_delay],
        )
        .await?;
        Ok(())
    }

    /// The multipart upload of partial `id`, if it has one.
    pub(super) async fn upload_of(
        &self,
        tx: &Transaction<'_>,
        id: i64,
    ) -> std::result::Result<Option<String>, DbError> {
        Ok(tx
            .query_opt("SELECT upload_id FROM partials WHERE id = $1", &[&id])
            .await?
            .and_then(|r| r.get(0)))
    }

    /// Forgets where partial `id`'s bytes are: its part and segment rows
    /// go, and its objects are doomed: the segments and `listed` (keys
    /// found under its tail), its multipart upload `upload` (aborted), and
    /// `blobs/{id}` if `gone` (the partial ends without becoming that
    /// blob: a completion not committed left the object, design §5.3 leak
    /// b). The caller deletes or resets the `partials` row in the same
    /// transaction (read `upload` with [`upload_of`](Self::upload_of)
    /// before). A partial that lives on must not doom `blobs/{id}`: its
    /// own completion writes that key later.
    pub(super) async fn doom_partial(
        &self,
        tx: &Transaction<'_>,
        id: i64,
        upload: Option<&str>,
        gone: bool,
        listed: &[String],
    ) -> std::result::Result<(), DbError> {
        let pid = nat(id);
        let mut keys: Vec<String> = tx
            .query(
                "DELETE FROM partial_segments WHERE partial = $1 RETURNING start_at, end_at, fence",
                &[&id],
            )
            .await?
            .iter()
            .map(|s| {
                let segment = Segment {
                    start: nat(s.get(0)),
                    end: nat(s.get(1)),
                    fence: nat(s.get(2)),
                };
                self.objects.segment_key(pid, &segment)
            })
            .collect();
        tx.execute("DELETE FROM partial_parts WHERE partial = $1", &[&id])
            .await?;
        keys.extend(listed.iter().cloned());
        keys.sort();
        keys.dedup();
        for key in &keys {
            self.doom(tx, key, None).await?;
        }
        if let Some(upload) = upload {
            self.doom(tx, &self.objects.blob_key(pid), Some(upload))
                .await?;
        }
        if gone {
            self.doom(tx, &self.objects.blob_key(pid), None).await?;
        }
        Ok(())
    }

    /// Deletes the doomed objects whose time has come, and their rows, in
    /// chunks that skip rows another instance is collecting; an object
    /// that cannot be deleted now stays queued. Returns how many went.
    pub(super) fn collect_doomed(&self) -> Result<u64> {
        let mut collected = 0;
        for _ in 0..COLLECT_ROUNDS {
            let (done, more) = self.run(async |tx| {
                let rows = tx
                    .query(
                        &format!(
                            "SELECT id, key, upload_id FROM doomed_objects
                             WHERE not_before <= {NOW_SQL}
                             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
                        ),
                        &[&COLLECT_CHUNK],
                    )
                    .await?;
                let mut gone = Vec::with_capacity(rows.len());
                for r in &rows {
                    let (id, key, upload): (i64, String, Option<String>) =
                        (r.get(0), r.get(1), r.get(2));
                    match self.delete_object(&key, upload.as_deref()).await {
                        Ok(()) => gone.push(id),
                        Err(e) => tracing::warn!(%key, "cannot delete a doomed object: {e}"),
                    }
                }
                tx.execute("DELETE FROM doomed_objects WHERE id = ANY($1)", &[&gone])
                    .await?;
                let more = rows.len() as i64 == COLLECT_CHUNK && gone.len() == rows.len();
                Ok((gone.len() as u64, more))
            })?;
            collected += done;
            if !more {
                break;
            }
        }
        Ok(collected)
    }

    /// Aborts the multipart upload `upload_id` of `key`, or, without
    /// one, deletes the object.
    async fn delete_object(&self, key: &str, upload_id: Option<&str>) -> objects::Result<()> {
        match upload_id {
            Some(upload) => self.objects.abort(key, upload).await,
            None => self.objects.delete(key).await,
        }
    }
}
