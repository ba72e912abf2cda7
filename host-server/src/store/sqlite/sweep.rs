//! Deleting expired batches, and incomplete ones without progress, in
//! short transactions, then their files; releasing blobs of replaced or
//! removed names whose keep time passed.

use rusqlite::params;

use super::rows::{to_i64, to_u64};
use super::{Result, SqliteStore, SweepStats};

/// Batches deleted per sweep transaction, so sessions are not held up long.
const SWEEP_CHUNK: i64 = 256;

impl SqliteStore {
    /// One sweep transaction over at most [`SWEEP_CHUNK`] expired batches
    /// and as many kept blobs whose time passed; `true` if more may wait.
    pub(super) fn sweep_chunk(&self, now: u64, stats: &mut SweepStats) -> Result<bool> {
        let mut partials = Vec::new();
        let blobs: Vec<u64>;
        let more;
        {
            let mut db = self.db();
            let tx = db.transaction()?;
            let expired: Vec<(i64, Vec<u8>, i64)> = tx
                .prepare(
                    "SELECT id, code_key, MIN(expires_at, ?1) FROM batches
                     WHERE expires_at <= ?1
                        OR (stale_at <= ?1
                            AND (open = 1
                                OR EXISTS(SELECT 1 FROM files WHERE batch = batches.id AND partial IS NOT NULL)))
                     LIMIT ?2",
                )?
                .query_map(params![to_i64(now)?, SWEEP_CHUNK], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<std::result::Result<_, _>>()?;
            let more_expired = expired.len() as i64 == SWEEP_CHUNK;
            for (id, code_key, expires_at) in &expired {
                let contents: Vec<(Option<i64>, Option<i64>)> = tx
                    .prepare_cached("SELECT partial, blob FROM files WHERE batch = ?1")?
                    .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<std::result::Result<_, _>>()?;
                for (partial, blob) in contents {
                    if let Some(b) = blob {
                        tx.execute("UPDATE blobs SET refs = refs - 1 WHERE id = ?1", params![b])?;
                    } else if let Some(p) = partial {
                        tx.execute("DELETE FROM partials WHERE id = ?1", params![p])?;
                        partials.push(to_u64(p));
                    }
                }
                tx.execute("DELETE FROM files WHERE batch = ?1", params![id])?;
                tx.execute("DELETE FROM batches WHERE id = ?1", params![id])?;
                tx.execute(
                    "INSERT OR REPLACE INTO expired(code_key, expired_at) VALUES (?1, ?2)",
                    params![code_key, expires_at],
                )?;
                Self::expire_deliveries(&tx, *id, *expires_at, stats)?;
            }
            // Kept blobs of replaced or removed names: their readers have
            // had their time. As many per transaction as batches.
            let released: Vec<i64> = tx
                .prepare_cached("SELECT blob FROM kept_blobs WHERE until <= ?1 LIMIT ?2")?
                .query_map(params![to_i64(now)?, SWEEP_CHUNK], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?;
            more = more_expired || released.len() as i64 == SWEEP_CHUNK;
            for blob in &released {
                tx.execute(
                    "UPDATE blobs SET refs = refs - 1 WHERE id = ?1",
                    params![blob],
                )?;
                tx.execute("DELETE FROM kept_blobs WHERE blob = ?1", params![blob])?;
            }
            blobs = tx
                .prepare("SELECT id FROM blobs WHERE refs <= 0")?
                .query_map([], |r| r.get::<_, i64>(0))?
                .map(|r| r.map(to_u64))
                .collect::<std::result::Result<_, _>>()?;
            tx.execute(
                "DELETE FROM blob_owners WHERE blob IN (SELECT id FROM blobs WHERE refs <= 0)",
                [],
            )?;
            tx.execute("DELETE FROM blobs WHERE refs <= 0", [])?;
            tx.commit()?;
            stats.batches += expired.len() as u64;
            stats.released += released.len() as u64;
            // After the commit, so a line means the batch is gone. Incomplete
            // batches without progress are deleted here too: both are the
            // end of a batch's life for the operator.
            for (id, _, _) in &expired {
                tracing::info!(batch = id, "batch expired");
            }
        }
        stats.partials += partials.len() as u64;
        stats.blobs += blobs.len() as u64;
        for id in partials {
            self.files.drop_partial_file(id)?;
        }
        for id in blobs {
            self.files.drop_blob_file(id)?;
        }
        Ok(more)
    }
}
