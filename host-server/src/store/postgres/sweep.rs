//! Deleting expired batches, and incomplete ones without progress, in
//! short transactions, their objects doomed in the same ones; releasing
//! kept blobs whose time passed; collecting blobs nothing holds
//! (store/sqlite/sweep.rs); then deleting the doomed objects whose time
//! has come (design §5.3).
//!
//! Every instance sweeps (docs/design/scale-out.md §5.2): each chunk locks
//! its rows `FOR UPDATE SKIP LOCKED`, so instances sweeping at once take
//! disjoint chunks and never do the same work twice; forgetting codes and
//! deliveries are `DELETE`s, idempotent.

use tokio_postgres::Transaction;

use super::db::DbError;
use super::rows::{int, nat};
use super::store::PgStore;
use crate::mailbox::rules::{self, OPEN_STATES_SQL};
use crate::store::{Result, SweepStats};
use pickup_proto::message::DeliveryState;

/// Rows (batches, kept blobs, blobs) one sweep transaction takes at most,
/// so sessions are not held up long.
const SWEEP_CHUNK: i64 = 256;

/// What one chunk deleted, for the files to go after its commit.
#[derive(Default)]
struct Chunk {
    stats: SweepStats,
    partials: Vec<u64>,
    batches: Vec<i64>,
    more: bool,
}

impl PgStore {
    /// [`Store::sweep`](crate::store::Store::sweep).
    pub(super) fn sweep_all(&self, now: u64, forget_before: u64) -> Result<SweepStats> {
        let mut stats = SweepStats::default();
        let now = int(now)?;
        loop {
            let chunk = self.run(async |tx| self.sweep_chunk(tx, now, SWEEP_CHUNK).await)?;
            add(&mut stats, &chunk.stats);
            // After the commit, so a line means the batch is gone.
            for id in &chunk.batches {
                tracing::info!(batch = id, "batch expired");
            }
            for &id in &chunk.partials {
                self.wait(self.objects.drop_spool(id))?;
            }
            if !chunk.more {
                break;
            }
        }
        let forget_before = int(forget_before)?;
        let forgotten = self.run(async |tx| {
            let mut s = SweepStats {
                forgotten: tx
                    .execute(
                        "DELETE FROM expired WHERE expired_at < $1",
                        &[&forget_before],
                    )
                    .await?,
                ..SweepStats::default()
            };
            forget_deliveries(tx, forget_before, &mut s).await?;
            Ok(s)
        })?;
        add(&mut stats, &forgotten);
        self.collect_doomed()?;
        Ok(stats)
    }
}

fn add(total: &mut SweepStats, s: &SweepStats) {
    total.batches += s.batches;
    total.blobs += s.blobs;
    total.partials += s.partials;
    total.forgotten += s.forgotten;
    total.released += s.released;
    total.deliveries_expired += s.deliveries_expired;
    total.deliveries_forgotten += s.deliveries_forgotten;
}

impl PgStore {
    /// One sweep transaction: at most `limit` ([`SWEEP_CHUNK`] but in
    /// tests) expired or stale batches, as many kept blobs whose time
    /// passed, as many blobs nothing holds, each skipping rows another
    /// sweep holds; their objects doomed.
    async fn sweep_chunk(
        &self,
        tx: &Transaction<'_>,
        now: i64,
        limit: i64,
    ) -> std::result::Result<Chunk, DbError> {
        let mut chunk = Chunk::default();
        let expired = tx
            .query(
                "SELECT id, code_key, LEAST(expires_at, $1) FROM batches
             WHERE expires_at <= $1
                OR (stale_at <= $1
                    AND (open
                         OR EXISTS(SELECT 1 FROM files
                                   WHERE batch = batches.id AND partial IS NOT NULL)))
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&now, &limit],
            )
            .await?;
        for row in &expired {
            let (id, code_key, expired_at): (i64, Vec<u8>, i64) =
                (row.get(0), row.get(1), row.get(2));
            let contents = tx
                .query(
                    "DELETE FROM files WHERE batch = $1 RETURNING partial, blob",
                    &[&id],
                )
                .await?;
            for c in contents {
                let (partial, blob): (Option<i64>, Option<i64>) = (c.get(0), c.get(1));
                if let Some(b) = blob {
                    tx.execute("UPDATE blobs SET refs = refs - 1 WHERE id = $1", &[&b])
                        .await?;
                } else if let Some(p) = partial {
                    let upload = self.upload_of(tx, p).await?;
                    self.doom_partial(tx, p, upload.as_deref(), true, &[])
                        .await?;
                    tx.execute("DELETE FROM partials WHERE id = $1", &[&p])
                        .await?;
                    chunk.partials.push(nat(p));
                }
            }
            tx.execute("DELETE FROM batches WHERE id = $1", &[&id])
                .await?;
            tx.execute(
                "INSERT INTO expired(code_key, expired_at) VALUES ($1, $2)
             ON CONFLICT (code_key) DO UPDATE SET expired_at = EXCLUDED.expired_at",
                &[&code_key, &expired_at],
            )
            .await?;
            chunk.stats.deliveries_expired += tx
                .execute(
                    &format!(
                        "UPDATE deliveries SET state = $2, at = $3
                     WHERE batch = $1 AND state IN {OPEN_STATES_SQL}"
                    ),
                    &[
                        &id,
                        &i64::from(rules::state_code(DeliveryState::Expired)),
                        &expired_at,
                    ],
                )
                .await?;
            chunk.batches.push(id);
        }
        // Kept blobs of replaced or removed names: their readers have had
        // their time. Locked first, deleted by id, here and below: a
        // `DELETE … WHERE blob IN (SELECT … LIMIT n FOR UPDATE SKIP
        // LOCKED)` may run its subquery again and delete more than `limit`
        // (seen in a test of the forwards sweep, store/postgres/forwards.rs).
        let released = locked_ids(
            tx,
            "SELECT blob FROM kept_blobs WHERE until <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&now, &limit],
        )
        .await?;
        tx.execute("DELETE FROM kept_blobs WHERE blob = ANY($1)", &[&released])
            .await?;
        // `blob` is the key of `kept_blobs`: one reference each.
        tx.execute(
            "UPDATE blobs SET refs = refs - 1 WHERE id = ANY($1)",
            &[&released],
        )
        .await?;
        // A blob at zero never gains a reference again (a share needs
        // `refs > 0`), so collecting it races with nothing.
        let collected = locked_ids(
            tx,
            "SELECT id FROM blobs WHERE refs <= 0 LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&limit],
        )
        .await?;
        tx.execute("DELETE FROM blobs WHERE id = ANY($1)", &[&collected])
            .await?;
        tx.execute(
            "DELETE FROM blob_owners WHERE blob = ANY($1)",
            &[&collected],
        )
        .await?;
        for &id in &collected {
            self.doom(tx, &self.objects.blob_key(nat(id)), None).await?;
        }
        chunk.more = [expired.len(), released.len(), collected.len()]
            .iter()
            .any(|&n| n as i64 == limit);
        chunk.stats.batches = expired.len() as u64;
        chunk.stats.released = released.len() as u64;
        chunk.stats.partials = chunk.partials.len() as u64;
        chunk.stats.blobs = collected.len() as u64;
        Ok(chunk)
    }
}

/// The ids (first column) of the rows `sql` selects and locks.
async fn locked_ids(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<Vec<i64>, DbError> {
    Ok(tx
        .query(sql, params)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Forgets deliveries whose batch is gone and whose expiry is older than
/// `forget_before`, as the relay forgets expired codes.
async fn forget_deliveries(
    tx: &Transaction<'_>,
    forget_before: i64,
    stats: &mut SweepStats,
) -> std::result::Result<(), DbError> {
    let gone = "SELECT id FROM deliveries WHERE until < $1
                AND NOT EXISTS(SELECT 1 FROM batches WHERE id = deliveries.batch)";
    tx.execute(
        &format!("DELETE FROM delivery_reads WHERE delivery IN ({gone})"),
        &[&forget_before],
    )
    .await?;
    stats.deliveries_forgotten += tx
        .execute(
            &format!("DELETE FROM deliveries WHERE id IN ({gone})"),
            &[&forget_before],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::Fixture;
    use crate::store::Store;

    /// Counts of kept blobs due at 100, kept blobs, blobs, blobs at zero.
    const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM kept_blobs WHERE until <= 100),
                                 (SELECT COUNT(*) FROM kept_blobs),
                                 (SELECT COUNT(*) FROM blobs),
                                 (SELECT COUNT(*) FROM blobs WHERE refs <= 0)";

    /// More kept blobs due and more blobs at zero than a chunk: one chunk
    /// releases and collects exactly its limit of each, and the rest
    /// waits for the next.
    #[test]
    fn a_chunk_releases_and_collects_at_most_its_limit() {
        let Some(fx) = Fixture::new("a_chunk_releases_and_collects_at_most_its_limit") else {
            return;
        };
        let store = fx.open();
        let counts = |store: &super::PgStore| -> [i64; 4] {
            store
                .run(async |tx| {
                    let row = tx.query_one(COUNTS, &[]).await?;
                    Ok([row.get(0), row.get(1), row.get(2), row.get(3)])
                })
                .unwrap()
        };
        // Blobs 1-5 held only by kept rows due at 50, 6-8 held by nothing,
        // 9 kept until 500.
        store
            .run(async |tx| {
                tx.batch_execute(
                    "INSERT INTO blobs(id, size, sha1, refs)
                     SELECT i, 1, '\\x00', CASE WHEN i BETWEEN 6 AND 8 THEN 0 ELSE 1 END
                     FROM generate_series(1, 9) AS i;
                     INSERT INTO kept_blobs(blob, until)
                     SELECT i, CASE WHEN i = 9 THEN 500 ELSE 50 END
                     FROM generate_series(1, 9) AS i WHERE i NOT BETWEEN 6 AND 8;",
                )
                .await?;
                Ok(())
            })
            .unwrap();
        assert_eq!(counts(&store), [5, 6, 9, 3]);

        let chunk = store
            .run(async |tx| store.sweep_chunk(tx, 100, 2).await)
            .unwrap();
        assert_eq!((chunk.stats.released, chunk.stats.blobs), (2, 2));
        assert!(chunk.more, "a full chunk says more may wait");
        // Two released (their blobs at zero), two of the five at zero
        // collected.
        assert_eq!(counts(&store), [3, 4, 7, 3]);
        assert!(fx.miscounted_blobs().is_empty());

        // The whole sweep takes the rest; the kept blob not due stays.
        let all = store.sweep(100, 0).unwrap();
        assert_eq!((all.released, all.blobs), (3, 6));
        assert_eq!(counts(&store), [0, 1, 1, 0]);
        assert!(fx.miscounted_blobs().is_empty());
    }
}
