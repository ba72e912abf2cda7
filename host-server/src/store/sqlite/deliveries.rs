//! The SQLite store's [`Mailbox`]: `deliveries` and `delivery_reads`, in
//! the database of the batches they name, so that a push checks its batch
//! and a deadline moves a batch's expiry in the transaction that changes
//! the delivery.
//!
//! `deliveries.push_id` holds the sender's u64 as the i64 of the same
//! bits (SQLite has no unsigned integers); `state` is the number of
//! [`rules::state_code`]; `until` follows the batch's `expires_at` while
//! the delivery is open. `delivery_reads` keeps, per delivery and file,
//! the end of the furthest read by the target, so a resumed download is
//! not counted twice.

use pickup_proto::message::DeliveryState;
use pickup_proto::Code;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::rows::{exec, to_i64, to_u64};
use super::{BatchId, Delta, LookupKey, Result, SqliteStore, StoreError, SweepStats};
use crate::mailbox::rules::{self, OpenCounts, OPEN_STATES_SQL};
use crate::mailbox::{
    DeliveryRecord, DeliverySweep, Mailbox, NewPush, PushRefusal, PushSettings, Pushed, Settle,
    Settled,
};

/// The tables, created by the migration that brought deliveries.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sender TEXT NOT NULL,
    push_id INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    code_len INTEGER NOT NULL,
    code_value BLOB NOT NULL,
    code_key BLOB NOT NULL,
    terminal TEXT NOT NULL,
    state INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    total INTEGER NOT NULL,
    files INTEGER NOT NULL,
    at INTEGER NOT NULL,
    until INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    last_read_at INTEGER,
    went_offline INTEGER NOT NULL DEFAULT 0,
    UNIQUE(sender, push_id)
);
CREATE INDEX IF NOT EXISTS deliveries_by_terminal ON deliveries(terminal, state);
CREATE INDEX IF NOT EXISTS deliveries_by_sender_code ON deliveries(sender, code_key);
CREATE INDEX IF NOT EXISTS deliveries_by_batch ON deliveries(batch);
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries(state, created_at);
CREATE INDEX IF NOT EXISTS deliveries_by_until ON deliveries(until);
CREATE TABLE IF NOT EXISTS delivery_reads(
    delivery INTEGER NOT NULL,
    file INTEGER NOT NULL,
    read_end INTEGER NOT NULL,
    PRIMARY KEY(delivery, file)
) WITHOUT ROWID;
";

/// Columns a [`DeliveryRecord`] is read from, in [`record`]'s order.
const COLUMNS: &str = "id, sender, push_id, batch, code_len, code_value, terminal, state, \
                       bytes, total, files, at, until, created_at, last_read_at, went_offline";

fn record(r: &Row<'_>) -> rusqlite::Result<Result<DeliveryRecord>> {
    let corrupt = |what: &str| Ok(Err(StoreError::Corrupt(format!("delivery {what}"))));
    let Some(state) = rules::state_from(r.get(7)?) else {
        return corrupt("state");
    };
    let value: Vec<u8> = r.get(5)?;
    let Ok(value) = <[u8; 16]>::try_from(value) else {
        return corrupt("code");
    };
    let Ok(code) = Code::from_parts(to_u64(r.get(4)?) as usize, u128::from_le_bytes(value)) else {
        return corrupt("code");
    };
    Ok(Ok(DeliveryRecord {
        id: to_u64(r.get(0)?),
        sender: r.get(1)?,
        push_id: r.get::<_, i64>(2)? as u64,
        batch: BatchId(to_u64(r.get(3)?)),
        code,
        terminal: r.get(6)?,
        state,
        bytes: to_u64(r.get(8)?),
        total: to_u64(r.get(9)?),
        files: u16::try_from(r.get::<_, i64>(10)?).unwrap_or(u16::MAX),
        at: to_u64(r.get(11)?),
        until: to_u64(r.get(12)?),
        created_at: to_u64(r.get(13)?),
        last_read_at: r.get::<_, Option<i64>>(14)?.map(to_u64),
        went_offline: r.get(15)?,
    }))
}

/// Every delivery `sql` (selecting [`COLUMNS`]) finds.
fn records(db: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<DeliveryRecord>> {
    let mut stmt = db.prepare_cached(sql)?;
    let rows = stmt.query_map(p, record)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

fn by_id(db: &Connection, id: i64) -> Result<Option<DeliveryRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE id = ?1");
    Ok(records(db, &sql, params![id])?.pop())
}

fn by_push(db: &Connection, sender: &str, push_id: u64) -> Result<Option<DeliveryRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE sender = ?1 AND push_id = ?2");
    Ok(records(db, &sql, params![sender, push_id as i64])?.pop())
}

fn set_state(db: &Connection, id: i64, state: DeliveryState, now: i64) -> Result<()> {
    exec(
        db,
        "UPDATE deliveries SET state = ?2, at = ?3 WHERE id = ?1",
        params![id, rules::state_code(state), now],
    )?;
    Ok(())
}

/// Moves `batch`'s expiry to `until` if that is later, and the `until` of
/// its open deliveries with it; the batch's expiry, `None` if it is gone.
fn keep_batch(db: &Connection, batch: i64, until: i64) -> Result<Option<u64>> {
    exec(
        db,
        "UPDATE batches SET expires_at = MAX(expires_at, ?2) WHERE id = ?1",
        params![batch, until],
    )?;
    let expires_at: Option<i64> = db
        .prepare_cached("SELECT expires_at FROM batches WHERE id = ?1")?
        .query_row(params![batch], |r| r.get(0))
        .optional()?;
    if let Some(e) = expires_at {
        exec(
            db,
            &format!(
                "UPDATE deliveries SET until = ?2 WHERE batch = ?1 AND state IN {OPEN_STATES_SQL}"
            ),
            params![batch, e],
        )?;
    }
    Ok(expires_at.map(to_u64))
}

/// The batch a push names, as far as a push cares: id, size, files,
/// expiry, or why it cannot be pushed.
fn pushable(
    db: &Connection,
    key: &LookupKey,
    now: i64,
) -> Result<std::result::Result<(i64, u64, u16, i64), PushRefusal>> {
    let row: Option<(i64, i64)> = db
        .prepare_cached("SELECT id, expires_at FROM batches WHERE code_key = ?1")?
        .query_row(params![&key.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((id, expires_at)) = row else {
        let expired: bool = db
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM expired WHERE code_key = ?1)")?
            .query_row(params![&key.0[..]], |r| r.get(0))?;
        return Ok(Err(if expired {
            PushRefusal::Expired
        } else {
            PushRefusal::UnknownCode
        }));
    };
    if expires_at <= now {
        return Ok(Err(PushRefusal::Expired));
    }
    let (files, size, uploading): (i64, i64, i64) = db
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(partial IS NOT NULL), 0)
             FROM files WHERE batch = ?1",
        )?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    if uploading > 0 {
        return Ok(Err(PushRefusal::NotReady));
    }
    let files = u16::try_from(files).unwrap_or(u16::MAX);
    Ok(Ok((id, to_u64(size), files, expires_at)))
}

fn open_counts(
    db: &Connection,
    sender: &str,
    terminal: &str,
    batch: i64,
    size: u64,
) -> Result<OpenCounts> {
    let open = OPEN_STATES_SQL;
    let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64> {
        Ok(to_u64(db.prepare_cached(sql)?.query_row(p, |r| r.get(0))?))
    };
    let to_terminal = count(
        &format!("SELECT COUNT(*) FROM deliveries WHERE terminal = ?1 AND state IN {open}"),
        &[&terminal],
    )?;
    let sender_to_terminal = count(
        &format!(
            "SELECT COUNT(*) FROM deliveries WHERE terminal = ?1 AND sender = ?2 AND state IN {open}"
        ),
        &[&terminal, &sender],
    )?;
    let from_sender = count(
        &format!("SELECT COUNT(*) FROM deliveries WHERE sender = ?1 AND state IN {open}"),
        &[&sender],
    )?;
    let others = count(
        &format!(
            "SELECT COALESCE(SUM(total), 0) FROM (SELECT DISTINCT batch, total FROM deliveries
             WHERE sender = ?1 AND batch != ?2 AND state IN {open})"
        ),
        &[&sender, &batch],
    )?;
    Ok(OpenCounts {
        to_terminal,
        sender_to_terminal,
        from_sender,
        sender_bytes: others.saturating_add(size),
    })
}

impl SqliteStore {
    /// Part of a sweep transaction that deleted batches: their open
    /// deliveries expire (at the batch's expiry, or now if that is earlier).
    pub(super) fn expire_deliveries(
        tx: &Connection,
        batch: i64,
        expired_at: i64,
        stats: &mut SweepStats,
    ) -> Result<()> {
        let n = tx.execute(
            &format!(
                "UPDATE deliveries SET state = ?2, at = ?3
                 WHERE batch = ?1 AND state IN {OPEN_STATES_SQL}"
            ),
            params![batch, rules::state_code(DeliveryState::Expired), expired_at],
        )?;
        stats.deliveries_expired += n as u64;
        Ok(())
    }

    /// Forgets deliveries whose batch is gone and whose expiry is older
    /// than `forget_before`, as the relay forgets expired codes.
    pub(super) fn forget_deliveries(
        db: &Connection,
        forget_before: i64,
        stats: &mut SweepStats,
    ) -> Result<()> {
        let gone = "SELECT id FROM deliveries WHERE until < ?1
                    AND NOT EXISTS(SELECT 1 FROM batches WHERE id = deliveries.batch)";
        db.execute(
            &format!("DELETE FROM delivery_reads WHERE delivery IN ({gone})"),
            params![forget_before],
        )?;
        let n = db.execute(
            &format!("DELETE FROM deliveries WHERE id IN ({gone})"),
            params![forget_before],
        )?;
        stats.deliveries_forgotten += n as u64;
        Ok(())
    }
}

impl Mailbox for SqliteStore {
    fn delivery_by_push(&self, sender: &str, push_id: u64) -> Result<Option<DeliveryRecord>> {
        by_push(&self.db(), sender, push_id)
    }

    fn push(&self, p: &NewPush<'_>, limits: &PushSettings) -> Result<Pushed> {
        let (sender, terminal) = (p.sender.to_owned(), p.terminal.to_owned());
        let (push_id, code, key, now) = (p.push_id, p.code, p.code_key, to_i64(p.now)?);
        let limits = *limits;
        self.write(move |db| {
            if let Some(d) = by_push(db, &sender, push_id)? {
                return Ok((Pushed::Again(d), Delta::default()));
            }
            let (batch, size, files, until) = match pushable(db, &key, now)? {
                Ok(b) => b,
                Err(why) => return Ok((Pushed::Refused(why), Delta::default())),
            };
            let counts = open_counts(db, &sender, &terminal, batch, size)?;
            if let Err(cap) = rules::check_caps(&counts, &limits) {
                return Ok((Pushed::Refused(PushRefusal::Full(cap)), Delta::default()));
            }
            exec(
                db,
                "INSERT INTO deliveries(sender, push_id, batch, code_len, code_value, code_key,
                     terminal, state, bytes, total, files, at, until, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11, ?12, ?11)",
                params![
                    sender,
                    push_id as i64,
                    batch,
                    code.len() as i64,
                    &code.value().to_le_bytes()[..],
                    &key.0[..],
                    terminal,
                    rules::state_code(DeliveryState::Queued),
                    to_i64(size)?,
                    i64::from(files),
                    now,
                    until,
                ],
            )?;
            let d = by_id(db, db.last_insert_rowid())?
                .ok_or_else(|| StoreError::Corrupt("delivery not stored".into()))?;
            Ok((Pushed::Queued(d), Delta::default()))
        })
    }

    fn deliveries_of(
        &self,
        sender: &str,
        code_key: &LookupKey,
        max: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        let sql = format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM deliveries WHERE sender = ?1 AND code_key = ?2
             ORDER BY id DESC LIMIT ?3) ORDER BY id"
        );
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        records(&self.db(), &sql, params![sender, &code_key.0[..], max])
    }

    fn inbox(&self, terminal: &str, after: u64, max: usize) -> Result<Vec<DeliveryRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM deliveries WHERE terminal = ?1 AND id > ?2
             AND state IN {OPEN_STATES_SQL} ORDER BY id LIMIT ?3"
        );
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        records(&self.db(), &sql, params![terminal, after, max])
    }

    fn acknowledge(&self, terminal: &str, id: u64, now: u64) -> Result<bool> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(false);
        };
        let (terminal, now) = (terminal.to_owned(), to_i64(now)?);
        self.write(move |db| {
            let Some(d) = by_id(db, id)?.filter(|d| d.terminal == terminal) else {
                return Ok((false, Delta::default()));
            };
            if let Some(next) = rules::after_ack(d.state) {
                set_state(db, id, next, now)?;
            }
            Ok((true, Delta::default()))
        })
    }

    fn settle(&self, terminal: &str, id: u64, how: Settle, now: u64) -> Result<Settled> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(Settled::Unknown);
        };
        let (terminal, now) = (terminal.to_owned(), to_i64(now)?);
        self.write(move |db| {
            let Some(d) = by_id(db, id)?.filter(|d| d.terminal == terminal) else {
                return Ok((Settled::Unknown, Delta::default()));
            };
            let settled = match rules::after_settle(d.state, how) {
                Some(next) => {
                    set_state(db, id, next, now)?;
                    Settled::Now(next)
                }
                None => Settled::Already(d.state),
            };
            Ok((settled, Delta::default()))
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
        let (terminal, ends) = (terminal.to_owned(), ends.to_vec());
        let (batch, now) = (to_i64(batch.0)?, to_i64(now)?);
        let until = i64::try_from(to_u64(now).saturating_add(grace_secs)).unwrap_or(i64::MAX);
        self.write(move |db| {
            let sql = format!(
                "SELECT {COLUMNS} FROM deliveries WHERE batch = ?1 AND terminal = ?2
                 AND state IN {OPEN_STATES_SQL}"
            );
            let open = records(db, &sql, params![batch, terminal])?;
            if open.is_empty() {
                return Ok((None, Delta::default()));
            }
            for d in &open {
                let id = to_i64(d.id)?;
                for (file, end) in &ends {
                    exec(
                        db,
                        "INSERT INTO delivery_reads(delivery, file, read_end) VALUES (?1, ?2, ?3)
                         ON CONFLICT(delivery, file) DO UPDATE
                         SET read_end = MAX(read_end, excluded.read_end)",
                        params![id, file, to_i64(*end)?],
                    )?;
                }
                exec(
                    db,
                    "UPDATE deliveries SET last_read_at = ?2, bytes = MIN(total,
                         (SELECT COALESCE(SUM(read_end), 0) FROM delivery_reads WHERE delivery = ?1))
                     WHERE id = ?1",
                    params![id, now],
                )?;
                if let Some(next) = rules::after_read(d.state) {
                    set_state(db, id, next, now)?;
                }
            }
            Ok((keep_batch(db, batch, until)?, Delta::default()))
        })
    }

    fn sweep_deliveries(&self, now: u64, p: &PushSettings) -> Result<DeliverySweep> {
        let mut total = DeliverySweep::default();
        loop {
            let (swept, more) = self.sweep_deliveries_chunk(now, p)?;
            total.offline += swept.offline;
            total.kept_receiving += swept.kept_receiving;
            if !more {
                return Ok(total);
            }
        }
    }
}

/// Deliveries one sweep transaction takes offline (and batches it keeps
/// for their readers) at most, so sessions are not held up long.
const SWEEP_CHUNK: i64 = 256;

impl SqliteStore {
    /// One transaction of [`Mailbox::sweep_deliveries`]; `true` if more may
    /// wait (a full chunk that changed something).
    fn sweep_deliveries_chunk(&self, now: u64, p: &PushSettings) -> Result<(DeliverySweep, bool)> {
        let p = *p;
        let now = to_i64(now)?;
        self.write(move |db| {
            let mut swept = DeliverySweep::default();
            let deadline = now.saturating_sub(to_i64(p.confirm_deadline_secs)?);
            let sql = format!(
                "SELECT {COLUMNS} FROM deliveries WHERE state IN {OPEN_STATES_SQL}
                 AND went_offline = 0 AND created_at <= ?1 LIMIT ?2"
            );
            let offline_until =
                i64::try_from(to_u64(now).saturating_add(p.offline_ttl_secs)).unwrap_or(i64::MAX);
            let due = records(db, &sql, params![deadline, SWEEP_CHUNK])?;
            let mut full = due.len() as i64 == SWEEP_CHUNK;
            for d in due {
                if !rules::goes_offline(d.state, d.went_offline, d.created_at, to_u64(now), &p) {
                    continue;
                }
                let id = to_i64(d.id)?;
                set_state(db, id, DeliveryState::Offline, now)?;
                exec(
                    db,
                    "UPDATE deliveries SET went_offline = 1 WHERE id = ?1",
                    params![id],
                )?;
                keep_batch(db, to_i64(d.batch.0)?, offline_until)?;
                swept.offline += 1;
            }
            let grace = to_i64(p.receiving_grace_secs)?;
            let sql = format!(
                "SELECT batch, MAX(last_read_at) FROM deliveries WHERE state IN {OPEN_STATES_SQL}
                 AND last_read_at IS NOT NULL AND until <= ?1 AND last_read_at + ?2 > ?1
                 GROUP BY batch LIMIT ?3"
            );
            let reading: Vec<(i64, i64)> = db
                .prepare_cached(&sql)?
                .query_map(params![now, grace, SWEEP_CHUNK], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<std::result::Result<_, _>>()?;
            full |= reading.len() as i64 == SWEEP_CHUNK;
            for (batch, read) in reading {
                keep_batch(db, batch, read.saturating_add(grace))?;
                swept.kept_receiving += 1;
            }
            // A full chunk that changed nothing would find the same rows
            // again: stop rather than loop.
            let changed = swept.offline + swept.kept_receiving > 0;
            Ok(((swept, full && changed), Delta::default()))
        })
    }
}
