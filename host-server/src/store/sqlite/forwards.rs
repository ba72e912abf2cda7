//! The SQLite store's [`Forwards`]: table `forwards` in the database of
//! the batches they copy. Each transition reads the row, applies the one
//! rule of [`crate::store::forwards`] and writes the row back, in one
//! transaction of the group commit.
//!
//! `state` is [`ForwardState::number`], `last_error` the [`ErrorCode`]'s
//! number (NULL: none); codes are stored as the batches' are (length and
//! value), `peer_token` as its 16 bytes. A push forward's target is
//! `push_terminal` and `push_id` (the id's 64 bits as a signed integer;
//! both NULL for a plain forward), added by [`migrate_push`];
//! `forwards_by_push` makes a requester's push ids unique.
//! `forwards_finished`, added by [`migrate_finished`], is what the sweep
//! of finished forwards reads (their `updated_at` is when they finished).

use pickup_proto::error::ErrorCode;
use pickup_proto::message::{ForwardState, ResumeToken};
use pickup_proto::Code;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::rows::{exec, to_i64, to_u64};
use super::{BatchId, Delta, Result, SqliteStore, StoreError};
use crate::store::forwards::{
    apply_claim, apply_retry, Created, ForwardChange, ForwardRecord, Forwards, NewForward,
    PushTarget, Retried,
};

/// The table, created by the migration that brought forwards.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS forwards(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch INTEGER NOT NULL,
    code_len INTEGER NOT NULL,
    code_value BLOB NOT NULL,
    requester TEXT NOT NULL,
    peer TEXT NOT NULL,
    state INTEGER NOT NULL,
    sent INTEGER NOT NULL,
    total INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error INTEGER,
    peer_token BLOB,
    peer_code_len INTEGER,
    peer_code_value BLOB,
    peer_expires_at INTEGER NOT NULL,
    claim INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS forwards_by_state ON forwards(state, next_attempt_at);
";

/// Brings the table of [`SCHEMA`] to push forwards (PROTOCOL.md §12.1):
/// the target's columns, NULL for every forward stored before, the unique
/// push ids, and the index the cap on open forwards counts by.
pub(super) fn migrate_push(db: &Connection) -> Result<()> {
    let has: bool = db.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('forwards') WHERE name = 'push_id')",
        [],
        |r| r.get(0),
    )?;
    if !has {
        db.execute_batch(
            "ALTER TABLE forwards ADD COLUMN push_terminal TEXT;
             ALTER TABLE forwards ADD COLUMN push_id INTEGER;",
        )?;
    }
    db.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS forwards_by_push ON forwards(requester, push_id)
             WHERE push_id IS NOT NULL;
         CREATE INDEX IF NOT EXISTS forwards_by_requester ON forwards(requester, state);",
    )?;
    Ok(())
}

/// Brings the table to the sweep of finished forwards: an index on their
/// finish time, so a sweep reads only the forwards it deletes. No column
/// changes (a final forward's `updated_at` is its finish time).
pub(super) fn migrate_finished(db: &Connection) -> Result<()> {
    db.execute_batch(
        "CREATE INDEX IF NOT EXISTS forwards_finished ON forwards(state, updated_at);",
    )?;
    Ok(())
}

/// Columns a [`ForwardRecord`] is read from, in [`record`]'s order.
const COLUMNS: &str = "id, batch, code_len, code_value, requester, peer, state, sent, total, \
                       attempts, next_attempt_at, last_error, peer_token, peer_code_len, \
                       peer_code_value, peer_expires_at, claim, lease_until, created_at, \
                       updated_at, push_terminal, push_id";

fn code_of(len: i64, value: Vec<u8>) -> Option<Code> {
    let value = <[u8; 16]>::try_from(value).ok()?;
    Code::from_parts(to_u64(len) as usize, u128::from_le_bytes(value)).ok()
}

fn record(r: &Row<'_>) -> rusqlite::Result<Result<ForwardRecord>> {
    let corrupt = |what: &str| Ok(Err(StoreError::Corrupt(format!("forward {what}"))));
    let Some(code) = code_of(r.get(2)?, r.get(3)?) else {
        return corrupt("code");
    };
    let Some(state) = u8::try_from(r.get::<_, i64>(6)?)
        .ok()
        .and_then(ForwardState::from_number)
    else {
        return corrupt("state");
    };
    let last_error = match r.get::<_, Option<i64>>(11)? {
        None => None,
        Some(n) => match ErrorCode::ALL.get(usize::try_from(n).unwrap_or(usize::MAX)) {
            Some(e) => Some(*e),
            None => return corrupt("error"),
        },
    };
    let peer_token = match r.get::<_, Option<Vec<u8>>>(12)? {
        None => None,
        Some(t) => match <[u8; 16]>::try_from(t) {
            Ok(t) => Some(ResumeToken(t)),
            Err(_) => return corrupt("token"),
        },
    };
    let peer_code = match (r.get::<_, Option<i64>>(13)?, r.get(14)?) {
        (Some(len), Some(value)) => match code_of(len, value) {
            Some(c) => Some(c),
            None => return corrupt("peer code"),
        },
        _ => None,
    };
    let push = match (
        r.get::<_, Option<String>>(20)?,
        r.get::<_, Option<i64>>(21)?,
    ) {
        (Some(terminal), Some(id)) => Some(PushTarget {
            terminal,
            push_id: id as u64,
        }),
        (None, None) => None,
        _ => return corrupt("push target"),
    };
    Ok(Ok(ForwardRecord {
        id: to_u64(r.get(0)?),
        batch: BatchId(to_u64(r.get(1)?)),
        code,
        requester: r.get(4)?,
        peer: r.get(5)?,
        state,
        sent: to_u64(r.get(7)?),
        total: to_u64(r.get(8)?),
        attempts: u32::try_from(r.get::<_, i64>(9)?).unwrap_or(u32::MAX),
        next_attempt_at: to_u64(r.get(10)?),
        last_error,
        peer_token,
        peer_code,
        peer_expires_at: to_u64(r.get(15)?),
        push,
        claim: to_u64(r.get(16)?),
        lease_until: to_u64(r.get(17)?),
        created_at: to_u64(r.get(18)?),
        updated_at: to_u64(r.get(19)?),
    }))
}

fn by_id(db: &Connection, id: u64) -> Result<Option<ForwardRecord>> {
    let Ok(id) = i64::try_from(id) else {
        return Ok(None);
    };
    let sql = format!("SELECT {COLUMNS} FROM forwards WHERE id = ?1");
    db.prepare_cached(&sql)?
        .query_row([id], record)
        .optional()?
        .transpose()
}

fn by_push(db: &Connection, requester: &str, push_id: u64) -> Result<Option<ForwardRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM forwards WHERE requester = ?1 AND push_id = ?2");
    db.prepare_cached(&sql)?
        .query_row(params![requester, push_id as i64], record)
        .optional()?
        .transpose()
}

/// Writes back every column a transition may change.
fn save(db: &Connection, r: &ForwardRecord) -> Result<()> {
    exec(
        db,
        "UPDATE forwards SET state = ?2, sent = ?3, attempts = ?4, next_attempt_at = ?5,
             last_error = ?6, peer_token = ?7, peer_code_len = ?8, peer_code_value = ?9,
             peer_expires_at = ?10, claim = ?11, lease_until = ?12, updated_at = ?13
         WHERE id = ?1",
        params![
            to_i64(r.id)?,
            i64::from(r.state.number()),
            to_i64(r.sent)?,
            i64::from(r.attempts),
            to_i64(r.next_attempt_at)?,
            r.last_error.map(|e| e as i64),
            r.peer_token.map(|t| t.0.to_vec()),
            r.peer_code.map(|c| c.len() as i64),
            r.peer_code.map(|c| c.value().to_le_bytes().to_vec()),
            to_i64(r.peer_expires_at)?,
            to_i64(r.claim)?,
            to_i64(r.lease_until)?,
            to_i64(r.updated_at)?,
        ],
    )?;
    Ok(())
}

/// The forwards of `requester` that are not `Done` or `Failed`.
fn open_of(db: &Connection, requester: &str) -> Result<i64> {
    Ok(db.query_row(
        "SELECT COUNT(*) FROM forwards WHERE requester = ?1 AND state NOT IN (?2, ?3)",
        params![
            requester,
            i64::from(ForwardState::Done.number()),
            i64::from(ForwardState::Failed.number()),
        ],
        |r| r.get(0),
    )?)
}

/// `(state IN running AND lease_until <= now) OR (state IN waiting AND
/// next_attempt_at <= now)`, with the states' numbers written in.
pub(crate) fn due_sql() -> String {
    let n = |s: ForwardState| s.number();
    format!(
        "((state IN ({}, {}, {}) AND lease_until <= ?1) OR (state IN ({}, {}) AND next_attempt_at <= ?1))",
        n(ForwardState::Connecting),
        n(ForwardState::Transferring),
        n(ForwardState::Verifying),
        n(ForwardState::Queued),
        n(ForwardState::Retrying),
    )
}

impl Forwards for SqliteStore {
    fn create_forward(&self, new: &NewForward<'_>) -> Result<Created> {
        let (requester, peer) = (new.requester.to_owned(), new.peer.to_owned());
        let (batch, code, total, now) = (new.batch, new.code, to_i64(new.total)?, to_i64(new.now)?);
        let (push, max_open) = (new.push.clone(), i64::from(new.max_open));
        self.write(move |db| {
            if let Some(p) = &push {
                if let Some(r) = by_push(db, &requester, p.push_id)? {
                    return Ok((Created::Again(r), Delta::default()));
                }
            }
            if open_of(db, &requester)? >= max_open {
                return Ok((Created::Full, Delta::default()));
            }
            exec(
                db,
                "INSERT INTO forwards(batch, code_len, code_value, requester, peer, state, sent,
                     total, attempts, next_attempt_at, peer_expires_at, claim, lease_until,
                     created_at, updated_at, push_terminal, push_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, 0, ?8, 0, 0, 0, ?8, ?8, ?9, ?10)",
                params![
                    to_i64(batch.0)?,
                    code.len() as i64,
                    code.value().to_le_bytes().to_vec(),
                    requester,
                    peer,
                    i64::from(ForwardState::Queued.number()),
                    total,
                    now,
                    push.as_ref().map(|p| p.terminal.clone()),
                    push.as_ref().map(|p| p.push_id as i64),
                ],
            )?;
            let id = to_u64(db.last_insert_rowid());
            let r = by_id(db, id)?.ok_or(StoreError::NotFound)?;
            Ok((Created::New(r), Delta::default()))
        })
    }

    fn forward(&self, id: u64) -> Result<Option<ForwardRecord>> {
        by_id(&self.db(), id)
    }

    fn forward_by_push(&self, requester: &str, push_id: u64) -> Result<Option<ForwardRecord>> {
        by_push(&self.db(), requester, push_id)
    }

    fn claim_forwards(
        &self,
        now: u64,
        lease_until: u64,
        limit: usize,
    ) -> Result<Vec<ForwardRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |db| {
            let sql = format!(
                "SELECT {COLUMNS} FROM forwards WHERE {}
                 ORDER BY CASE WHEN state IN ({}, {}) THEN next_attempt_at ELSE lease_until END, id
                 LIMIT ?2",
                due_sql(),
                ForwardState::Queued.number(),
                ForwardState::Retrying.number(),
            );
            let due: Vec<ForwardRecord> = db
                .prepare_cached(&sql)?
                .query_map(params![to_i64(now)?, limit], record)?
                .map(|r| r?)
                .collect::<Result<_>>()?;
            let mut claimed = Vec::with_capacity(due.len());
            for mut r in due {
                apply_claim(&mut r, now, lease_until);
                save(db, &r)?;
                claimed.push(r);
            }
            Ok((claimed, Delta::default()))
        })
    }

    fn advance_forward(
        &self,
        id: u64,
        claim: u64,
        change: &ForwardChange,
        now: u64,
    ) -> Result<Option<ForwardRecord>> {
        let change = *change;
        self.write(move |db| {
            let Some(mut r) = by_id(db, id)? else {
                return Ok((None, Delta::default()));
            };
            if r.claim != claim || !r.state.is_running() {
                return Ok((None, Delta::default()));
            }
            change.apply(&mut r, now);
            save(db, &r)?;
            Ok((Some(r), Delta::default()))
        })
    }

    fn retry_forward(
        &self,
        id: u64,
        requester: &str,
        now: u64,
        max_open: u32,
    ) -> Result<Option<Retried>> {
        let requester = requester.to_owned();
        self.write(move |db| {
            let Some(mut r) = by_id(db, id)?.filter(|r| r.requester == requester) else {
                return Ok((None, Delta::default()));
            };
            if r.retry_reopens() && open_of(db, &requester)? >= i64::from(max_open) {
                return Ok((Some(Retried::Full(r)), Delta::default()));
            }
            if apply_retry(&mut r, now) {
                save(db, &r)?;
            }
            Ok((Some(Retried::Record(r)), Delta::default()))
        })
    }

    fn sweep_forwards(&self, finished_before: u64, limit: usize) -> Result<u64> {
        let before = to_i64(finished_before)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |db| {
            let n = exec(
                db,
                "DELETE FROM forwards WHERE id IN
                     (SELECT id FROM forwards WHERE state IN (?1, ?2) AND updated_at < ?3
                      LIMIT ?4)",
                params![
                    i64::from(ForwardState::Done.number()),
                    i64::from(ForwardState::Failed.number()),
                    before,
                    limit,
                ],
            )?;
            Ok((n as u64, Delta::default()))
        })
    }
}
