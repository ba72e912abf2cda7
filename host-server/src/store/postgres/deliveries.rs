//! The PostgreSQL store's [`Mailbox`]: store/sqlite/deliveries.rs on
//! PostgreSQL, `deliveries` and `delivery_reads` in the batches' database,
//! so a push checks its batch and a deadline moves a batch's expiry in the
//! transaction that changes the delivery. Delivery ids are identities,
//! never reused. A retried push is recognised by `UNIQUE(sender,
//! push_id)` even when two instances store it at once; pushes that count
//! against the same caps take turns (advisory locks); the sweep's chunks
//! skip rows another instance's sweep holds.

use pickup_proto::message::DeliveryState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Transaction};

use super::db::DbError;
use super::rows::{code, int, nat};
use super::store::PgStore;
use crate::mailbox::rules::{self, OpenCounts, OPEN_STATES_SQL};
use crate::mailbox::{
    DeliveryRecord, DeliverySweep, Mailbox, NewPush, PushRefusal, PushSettings, Pushed, Settle,
    Settled,
};
use crate::store::{BatchId, LookupKey, Result};

type Step<T> = std::result::Result<T, DbError>;

/// Columns a [`DeliveryRecord`] is read from, in [`record`]'s order.
const COLUMNS: &str = "id, sender, push_id, batch, code_len, code_value, terminal, state, \
                       bytes, total, files, at, until, created_at, last_read_at, went_offline";

fn record(r: &Row) -> Step<DeliveryRecord> {
    let state =
        rules::state_from(r.get(7)).ok_or_else(|| super::rows::corrupt("delivery state"))?;
    Ok(DeliveryRecord {
        id: nat(r.get(0)),
        sender: r.get(1),
        push_id: r.get::<_, i64>(2) as u64,
        batch: BatchId(nat(r.get(3))),
        code: code(r.get(4), r.get(5))?,
        terminal: r.get(6),
        state,
        bytes: nat(r.get(8)),
        total: nat(r.get(9)),
        files: u16::try_from(r.get::<_, i64>(10)).unwrap_or(u16::MAX),
        at: nat(r.get(11)),
        until: nat(r.get(12)),
        created_at: nat(r.get(13)),
        last_read_at: r.get::<_, Option<i64>>(14).map(nat),
        went_offline: r.get(15),
    })
}

async fn records(
    tx: &Transaction<'_>,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Step<Vec<DeliveryRecord>> {
    tx.query(sql, p).await?.iter().map(record).collect()
}

async fn by_id(tx: &Transaction<'_>, id: i64) -> Step<Option<DeliveryRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE id = $1");
    Ok(records(tx, &sql, &[&id]).await?.pop())
}

async fn by_push(tx: &Transaction<'_>, sender: &str, push_id: u64) -> Step<Option<DeliveryRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE sender = $1 AND push_id = $2");
    Ok(records(tx, &sql, &[&sender, &(push_id as i64)])
        .await?
        .pop())
}

fn state(s: DeliveryState) -> i64 {
    i64::from(rules::state_code(s))
}

async fn set_state(tx: &Transaction<'_>, id: i64, s: DeliveryState, now: i64) -> Step<()> {
    tx.execute(
        "UPDATE deliveries SET state = $2, at = $3 WHERE id = $1",
        &[&id, &state(s), &now],
    )
    .await?;
    Ok(())
}

/// Moves `batch`'s expiry to `until` if that is later, and the `until` of
/// its open deliveries with it; the batch's expiry, `None` if it is gone.
async fn keep_batch(tx: &Transaction<'_>, batch: i64, until: i64) -> Step<Option<u64>> {
    let expires_at: Option<i64> = tx
        .query_opt(
            "UPDATE batches SET expires_at = GREATEST(expires_at, $2) WHERE id = $1
             RETURNING expires_at",
            &[&batch, &until],
        )
        .await?
        .map(|r| r.get(0));
    if let Some(e) = expires_at {
        tx.execute(
            &format!(
                "UPDATE deliveries SET until = $2 WHERE batch = $1 AND state IN {OPEN_STATES_SQL}"
            ),
            &[&batch, &e],
        )
        .await?;
    }
    Ok(expires_at.map(nat))
}

/// The batch a push names (id, size, files, expiry), or why it cannot be
/// pushed. The batch row is held `FOR SHARE`, so it is not swept meanwhile.
async fn pushable(
    tx: &Transaction<'_>,
    key: &LookupKey,
    now: i64,
) -> Step<std::result::Result<(i64, u64, u16, i64), PushRefusal>> {
    let row = tx
        .query_opt(
            "SELECT id, expires_at FROM batches WHERE code_key = $1 FOR SHARE",
            &[&&key.0[..]],
        )
        .await?;
    let Some(row) = row else {
        let expired: bool = tx
            .query_one(
                "SELECT EXISTS(SELECT 1 FROM expired WHERE code_key = $1)",
                &[&&key.0[..]],
            )
            .await?
            .get(0);
        return Ok(Err(if expired {
            PushRefusal::Expired
        } else {
            PushRefusal::UnknownCode
        }));
    };
    let (id, expires_at): (i64, i64) = (row.get(0), row.get(1));
    if expires_at <= now {
        return Ok(Err(PushRefusal::Expired));
    }
    let r = tx
        .query_one(
            "SELECT COUNT(*), COALESCE(SUM(size), 0)::BIGINT, COUNT(partial)
             FROM files WHERE batch = $1",
            &[&id],
        )
        .await?;
    let (files, size, uploading): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    if uploading > 0 {
        return Ok(Err(PushRefusal::NotReady));
    }
    let files = u16::try_from(files).unwrap_or(u16::MAX);
    Ok(Ok((id, nat(size), files, expires_at)))
}

async fn open_counts(
    tx: &Transaction<'_>,
    sender: &str,
    terminal: &str,
    batch: i64,
    size: u64,
) -> Step<OpenCounts> {
    let open = OPEN_STATES_SQL;
    let r = tx
        .query_one(
            &format!(
                "SELECT
                   (SELECT COUNT(*) FROM deliveries WHERE terminal = $1 AND state IN {open}),
                   (SELECT COUNT(*) FROM deliveries
                    WHERE terminal = $1 AND sender = $2 AND state IN {open}),
                   (SELECT COUNT(*) FROM deliveries WHERE sender = $2 AND state IN {open}),
                   (SELECT COALESCE(SUM(total), 0)::BIGINT FROM
                      (SELECT DISTINCT batch, total FROM deliveries
                       WHERE sender = $2 AND batch != $3 AND state IN {open}) AS d)"
            ),
            &[&terminal, &sender, &batch],
        )
        .await?;
    Ok(OpenCounts {
        to_terminal: nat(r.get(0)),
        sender_to_terminal: nat(r.get(1)),
        from_sender: nat(r.get(2)),
        sender_bytes: nat(r.get(3)).saturating_add(size),
    })
}

impl Mailbox for PgStore {
    fn delivery_by_push(&self, sender: &str, push_id: u64) -> Result<Option<DeliveryRecord>> {
        self.run(async |tx| by_push(tx, sender, push_id).await)
    }

    fn push(&self, p: &NewPush<'_>, limits: &PushSettings) -> Result<Pushed> {
        let now = int(p.now)?;
        let code_value = p.code.value().to_le_bytes();
        self.run(async |tx| {
            // The caps count a terminal's and a sender's open deliveries:
            // pushes to the same terminal or from the same sender take
            // turns across instances, so two cannot both fit the last
            // place. (Always terminal first, then sender: no lock cycle.)
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('push-terminal:' || $1, 0)),
                        pg_advisory_xact_lock(hashtextextended('push-sender:' || $2, 0))",
                &[&p.terminal, &p.sender],
            )
            .await?;
            if let Some(d) = by_push(tx, p.sender, p.push_id).await? {
                return Ok(Pushed::Again(d));
            }
            let (batch, size, files, until) = match pushable(tx, &p.code_key, now).await? {
                Ok(b) => b,
                Err(why) => return Ok(Pushed::Refused(why)),
            };
            let counts = open_counts(tx, p.sender, p.terminal, batch, size).await?;
            if let Err(cap) = rules::check_caps(&counts, limits) {
                return Ok(Pushed::Refused(PushRefusal::Full(cap)));
            }
            let id = tx
                .query_opt(
                    "INSERT INTO deliveries(sender, push_id, batch, code_len, code_value, code_key,
                         terminal, state, bytes, total, files, at, until, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11, $12, $11)
                     ON CONFLICT (sender, push_id) DO NOTHING RETURNING id",
                    &[
                        &p.sender,
                        &(p.push_id as i64),
                        &batch,
                        &(p.code.len() as i64),
                        &&code_value[..],
                        &&p.code_key.0[..],
                        &p.terminal,
                        &state(DeliveryState::Queued),
                        &int(size)?,
                        &i64::from(files),
                        &now,
                        &until,
                    ],
                )
                .await?;
            // Stored by another instance meanwhile: that one is the push.
            let Some(id) = id else {
                let d = by_push(tx, p.sender, p.push_id).await?;
                return d
                    .map(Pushed::Again)
                    .ok_or_else(|| super::rows::corrupt("delivery not stored"));
            };
            let d = by_id(tx, id.get(0))
                .await?
                .ok_or_else(|| super::rows::corrupt("delivery not stored"))?;
            // The instance holding the terminal's connection hears of it
            // once this commits (and never if it does not).
            super::notices::notify_terminal(tx, p.terminal).await?;
            Ok(Pushed::Queued(d))
        })
    }

    fn deliveries_of(
        &self,
        sender: &str,
        code_key: &LookupKey,
        max: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        let sql = format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM deliveries WHERE sender = $1 AND code_key = $2
             ORDER BY id DESC LIMIT $3) AS d ORDER BY id"
        );
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.run(async |tx| records(tx, &sql, &[&sender, &&code_key.0[..], &max]).await)
    }

    fn inbox(&self, terminal: &str, after: u64, max: usize) -> Result<Vec<DeliveryRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM deliveries WHERE terminal = $1 AND id > $2
             AND state IN {OPEN_STATES_SQL} ORDER BY id LIMIT $3"
        );
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.run(async |tx| records(tx, &sql, &[&terminal, &after, &max]).await)
    }

    fn acknowledge(&self, terminal: &str, id: u64, now: u64) -> Result<bool> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(false);
        };
        let now = int(now)?;
        self.run(async |tx| {
            let Some(d) = by_id(tx, id).await?.filter(|d| d.terminal == terminal) else {
                return Ok(false);
            };
            if let Some(next) = rules::after_ack(d.state) {
                set_state(tx, id, next, now).await?;
            }
            Ok(true)
        })
    }

    fn settle(&self, terminal: &str, id: u64, how: Settle, now: u64) -> Result<Settled> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(Settled::Unknown);
        };
        let now = int(now)?;
        self.run(async |tx| {
            // Locked, so two instances settling at once agree on who was first.
            let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE id = $1 FOR UPDATE");
            let found = records(tx, &sql, &[&id]).await?.pop();
            let Some(d) = found.filter(|d| d.terminal == terminal) else {
                return Ok(Settled::Unknown);
            };
            Ok(match rules::after_settle(d.state, how) {
                Some(next) => {
                    set_state(tx, id, next, now).await?;
                    Settled::Now(next)
                }
                None => Settled::Already(d.state),
            })
        })
    }

    fn record_progress(
        &self,
        terminal: &str,
        batch: BatchId,
        ends: &[(u16, u64)],
        now: u64,
        grace_secs: u64,
    ) -> Result<Option<u64>> {
        let (batch, now_i) = (int(batch.0)?, int(now)?);
        let until = i64::try_from(now.saturating_add(grace_secs)).unwrap_or(i64::MAX);
        let ends: Vec<(i64, i64)> = ends
            .iter()
            .map(|&(f, e)| Ok((i64::from(f), int(e)?)))
            .collect::<Result<_>>()?;
        self.run(async |tx| {
            let sql = format!(
                "SELECT {COLUMNS} FROM deliveries WHERE batch = $1 AND terminal = $2
                 AND state IN {OPEN_STATES_SQL} ORDER BY id FOR UPDATE"
            );
            let open = records(tx, &sql, &[&batch, &terminal]).await?;
            if open.is_empty() {
                return Ok(None);
            }
            for d in &open {
                let id = int(d.id)?;
                for (file, end) in &ends {
                    tx.execute(
                        "INSERT INTO delivery_reads(delivery, file, read_end) VALUES ($1, $2, $3)
                         ON CONFLICT (delivery, file) DO UPDATE
                         SET read_end = GREATEST(delivery_reads.read_end, EXCLUDED.read_end)",
                        &[&id, file, end],
                    )
                    .await?;
                }
                tx.execute(
                    "UPDATE deliveries SET last_read_at = $2, bytes = LEAST(total,
                         (SELECT COALESCE(SUM(read_end), 0) FROM delivery_reads
                          WHERE delivery = $1)::BIGINT)
                     WHERE id = $1",
                    &[&id, &now_i],
                )
                .await?;
                if let Some(next) = rules::after_read(d.state) {
                    set_state(tx, id, next, now_i).await?;
                }
            }
            keep_batch(tx, batch, until).await
        })
    }

    fn sweep_deliveries(&self, now: u64, p: &PushSettings) -> Result<DeliverySweep> {
        let mut total = DeliverySweep::default();
        let now = int(now)?;
        loop {
            let (swept, more) = self.run(async |tx| sweep_deliveries_chunk(tx, now, p).await)?;
            total.offline += swept.offline;
            total.kept_receiving += swept.kept_receiving;
            if !more {
                return Ok(total);
            }
        }
    }
}

/// Deliveries one sweep transaction takes offline (and batches it keeps
/// for their readers) at most.
const SWEEP_CHUNK: i64 = 256;

/// One transaction of [`Mailbox::sweep_deliveries`]; `true` if more may
/// wait (a full chunk that changed something).
async fn sweep_deliveries_chunk(
    tx: &Transaction<'_>,
    now: i64,
    p: &PushSettings,
) -> Step<(DeliverySweep, bool)> {
    let mut swept = DeliverySweep::default();
    let deadline = now.saturating_sub(int(p.confirm_deadline_secs)?);
    let sql = format!(
        "SELECT {COLUMNS} FROM deliveries WHERE state IN {OPEN_STATES_SQL}
         AND NOT went_offline AND created_at <= $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let offline_until =
        i64::try_from(nat(now).saturating_add(p.offline_ttl_secs)).unwrap_or(i64::MAX);
    let due = records(tx, &sql, &[&deadline, &SWEEP_CHUNK]).await?;
    let mut full = due.len() as i64 == SWEEP_CHUNK;
    for d in due {
        if !rules::goes_offline(d.state, d.went_offline, d.created_at, nat(now), p) {
            continue;
        }
        let id = int(d.id)?;
        set_state(tx, id, DeliveryState::Offline, now).await?;
        tx.execute(
            "UPDATE deliveries SET went_offline = TRUE WHERE id = $1",
            &[&id],
        )
        .await?;
        keep_batch(tx, int(d.batch.0)?, offline_until).await?;
        swept.offline += 1;
    }
    let grace = int(p.receiving_grace_secs)?;
    // Keeping a batch is idempotent (GREATEST): instances doing it at
    // once do no harm, so these rows need no lock.
    let sql = format!(
        "SELECT batch, MAX(last_read_at) FROM deliveries WHERE state IN {OPEN_STATES_SQL}
         AND last_read_at IS NOT NULL AND until <= $1 AND last_read_at + $2 > $1
         GROUP BY batch LIMIT $3"
    );
    let reading = tx.query(&sql, &[&now, &grace, &SWEEP_CHUNK]).await?;
    full |= reading.len() as i64 == SWEEP_CHUNK;
    for r in &reading {
        let (batch, read): (i64, i64) = (r.get(0), r.get(1));
        keep_batch(tx, batch, read.saturating_add(grace)).await?;
        swept.kept_receiving += 1;
    }
    // A full chunk that changed nothing would find the same rows again.
    let changed = swept.offline + swept.kept_receiving > 0;
    Ok((swept, full && changed))
}
