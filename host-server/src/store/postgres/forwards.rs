//! The PostgreSQL store's [`Forwards`]: store/sqlite/forwards.rs on
//! PostgreSQL (migrations/0005_forwards.sql). Instances claim from one
//! queue: a claim takes due rows `FOR UPDATE SKIP LOCKED`, so two
//! instances claiming at once take disjoint rows, and each later change
//! holds its row `FOR UPDATE` and checks the claim number, so an instance
//! whose lease ran out and whose forward another took over changes
//! nothing. Creates of one requester take turns (an advisory lock on
//! the requester's name), so the cap on open forwards and the push id
//! checked before the insert hold across instances; a retry by command
//! takes the same turn, as it may reopen a failed forward. The sweep of
//! finished forwards deletes rows it locks `FOR UPDATE SKIP LOCKED`
//! (migrations/0008_forward_retention.sql indexes them), so it never
//! waits for a row a change holds, and instances sweeping at once delete
//! disjoint rows.

use pickup_proto::error::ErrorCode;
use pickup_proto::message::{ForwardState, ResumeToken};
use tokio_postgres::{Row, Transaction};

use super::db::DbError;
use super::rows::{code, corrupt, int, nat};
use super::store::PgStore;
use crate::store::forwards::{
    apply_claim, apply_retry, Created, ForwardChange, ForwardRecord, Forwards, NewForward,
    PushTarget, Retried,
};
use crate::store::{BatchId, Result};

type Step<T> = std::result::Result<T, DbError>;

/// Columns a [`ForwardRecord`] is read from, in [`record`]'s order.
const COLUMNS: &str = "id, batch, code_len, code_value, requester, peer, state, sent, total, \
                       attempts, next_attempt_at, last_error, peer_token, peer_code_len, \
                       peer_code_value, peer_expires_at, claim, lease_until, created_at, \
                       updated_at, push_terminal, push_id";

fn record(r: &Row) -> Step<ForwardRecord> {
    let state = u8::try_from(r.get::<_, i64>(6))
        .ok()
        .and_then(ForwardState::from_number)
        .ok_or_else(|| corrupt("forward state"))?;
    let last_error = match r.get::<_, Option<i64>>(11) {
        None => None,
        Some(n) => Some(
            *ErrorCode::ALL
                .get(usize::try_from(n).unwrap_or(usize::MAX))
                .ok_or_else(|| corrupt("forward error"))?,
        ),
    };
    let peer_token = match r.get::<_, Option<Vec<u8>>>(12) {
        None => None,
        Some(t) => Some(ResumeToken(
            t.try_into().map_err(|_| corrupt("forward token"))?,
        )),
    };
    let peer_code = match (r.get::<_, Option<i64>>(13), r.get::<_, Option<Vec<u8>>>(14)) {
        (Some(len), Some(value)) => Some(code(len, value)?),
        _ => None,
    };
    let push = match (r.get::<_, Option<String>>(20), r.get::<_, Option<i64>>(21)) {
        (Some(terminal), Some(id)) => Some(PushTarget {
            terminal,
            push_id: id as u64,
        }),
        (None, None) => None,
        _ => return Err(corrupt("forward push target")),
    };
    Ok(ForwardRecord {
        id: nat(r.get(0)),
        batch: BatchId(nat(r.get(1))),
        code: code(r.get(2), r.get(3))?,
        requester: r.get(4),
        peer: r.get(5),
        state,
        sent: nat(r.get(7)),
        total: nat(r.get(8)),
        attempts: u32::try_from(r.get::<_, i64>(9)).unwrap_or(u32::MAX),
        next_attempt_at: nat(r.get(10)),
        last_error,
        peer_token,
        peer_code,
        peer_expires_at: nat(r.get(15)),
        push,
        claim: nat(r.get(16)),
        lease_until: nat(r.get(17)),
        created_at: nat(r.get(18)),
        updated_at: nat(r.get(19)),
    })
}

/// Forward `id`, its row held `FOR UPDATE` when `lock`.
async fn by_id(tx: &Transaction<'_>, id: u64, lock: bool) -> Step<Option<ForwardRecord>> {
    let Ok(id) = i64::try_from(id) else {
        return Ok(None);
    };
    let lock = if lock { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM forwards WHERE id = $1{lock}");
    tx.query_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(record)
        .transpose()
}

/// The forward `requester` made with push id `push_id`.
async fn by_push(
    tx: &Transaction<'_>,
    requester: &str,
    push_id: u64,
) -> Step<Option<ForwardRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM forwards WHERE requester = $1 AND push_id = $2");
    tx.query_opt(&sql, &[&requester, &(push_id as i64)])
        .await?
        .as_ref()
        .map(record)
        .transpose()
}

/// Writes back every column a transition may change.
async fn save(tx: &Transaction<'_>, r: &ForwardRecord) -> Step<()> {
    tx.execute(
        "UPDATE forwards SET state = $2, sent = $3, attempts = $4, next_attempt_at = $5,
             last_error = $6, peer_token = $7, peer_code_len = $8, peer_code_value = $9,
             peer_expires_at = $10, claim = $11, lease_until = $12, updated_at = $13
         WHERE id = $1",
        &[
            &int(r.id)?,
            &i64::from(r.state.number()),
            &int(r.sent)?,
            &i64::from(r.attempts),
            &int(r.next_attempt_at)?,
            &r.last_error.map(|e| e as i64),
            &r.peer_token.map(|t| t.0.to_vec()),
            &r.peer_code.map(|c| c.len() as i64),
            &r.peer_code.map(|c| c.value().to_le_bytes().to_vec()),
            &int(r.peer_expires_at)?,
            &int(r.claim)?,
            &int(r.lease_until)?,
            &int(r.updated_at)?,
        ],
    )
    .await?;
    Ok(())
}

/// Takes `requester`'s turn to the end of the transaction: creates and
/// retries of one requester, which the cap on open forwards counts, run
/// one at a time across instances.
async fn lock_requester(tx: &Transaction<'_>, requester: &str) -> Step<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('forward-requester:' || $1, 0))",
        &[&requester],
    )
    .await?;
    Ok(())
}

/// The forwards of `requester` that are not `Done` or `Failed`.
async fn open_of(tx: &Transaction<'_>, requester: &str) -> Step<i64> {
    Ok(tx
        .query_one(
            "SELECT COUNT(*) FROM forwards WHERE requester = $1 AND state NOT IN ($2, $3)",
            &[
                &requester,
                &i64::from(ForwardState::Done.number()),
                &i64::from(ForwardState::Failed.number()),
            ],
        )
        .await?
        .get(0))
}

impl Forwards for PgStore {
    fn create_forward(&self, new: &NewForward<'_>) -> Result<Created> {
        let now = int(new.now)?;
        let code_value = new.code.value().to_le_bytes();
        let push_terminal = new.push.as_ref().map(|p| p.terminal.as_str());
        let push_id = new.push.as_ref().map(|p| p.push_id as i64);
        let max_open = i64::from(new.max_open);
        self.run(async |tx| {
            lock_requester(tx, new.requester).await?;
            if let Some(push_id) = new.push.as_ref().map(|p| p.push_id) {
                if let Some(r) = by_push(tx, new.requester, push_id).await? {
                    return Ok(Created::Again(r));
                }
            }
            if open_of(tx, new.requester).await? >= max_open {
                return Ok(Created::Full);
            }
            let row = tx
                .query_one(
                    "INSERT INTO forwards(batch, code_len, code_value, requester, peer, state,
                         sent, total, attempts, next_attempt_at, peer_expires_at, claim,
                         lease_until, created_at, updated_at, push_terminal, push_id)
                     VALUES ($1, $2, $3, $4, $5, $6, 0, $7, 0, $8, 0, 0, 0, $8, $8, $9, $10)
                     RETURNING id",
                    &[
                        &int(new.batch.0)?,
                        &(new.code.len() as i64),
                        &&code_value[..],
                        &new.requester,
                        &new.peer,
                        &i64::from(ForwardState::Queued.number()),
                        &int(new.total)?,
                        &now,
                        &push_terminal,
                        &push_id,
                    ],
                )
                .await?;
            by_id(tx, nat(row.get(0)), false)
                .await?
                .map(Created::New)
                .ok_or_else(|| corrupt("a forward just stored"))
        })
    }

    fn forward(&self, id: u64) -> Result<Option<ForwardRecord>> {
        self.run(async |tx| by_id(tx, id, false).await)
    }

    fn forward_by_push(&self, requester: &str, push_id: u64) -> Result<Option<ForwardRecord>> {
        self.run(async |tx| by_push(tx, requester, push_id).await)
    }

    fn claim_forwards(
        &self,
        now: u64,
        lease_until: u64,
        limit: usize,
    ) -> Result<Vec<ForwardRecord>> {
        let (now_i, limit) = (int(now)?, i64::try_from(limit).unwrap_or(i64::MAX));
        let n = |s: ForwardState| s.number();
        let sql = format!(
            "SELECT {COLUMNS} FROM forwards
             WHERE (state IN ({c}, {t}, {v}) AND lease_until <= $1)
                OR (state IN ({q}, {r}) AND next_attempt_at <= $1)
             ORDER BY CASE WHEN state IN ({q}, {r}) THEN next_attempt_at ELSE lease_until END, id
             LIMIT $2 FOR UPDATE SKIP LOCKED",
            c = n(ForwardState::Connecting),
            t = n(ForwardState::Transferring),
            v = n(ForwardState::Verifying),
            q = n(ForwardState::Queued),
            r = n(ForwardState::Retrying),
        );
        self.run(async |tx| {
            let rows = tx.query(&sql, &[&now_i, &limit]).await?;
            let mut claimed = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut r = record(row)?;
                apply_claim(&mut r, now, lease_until);
                save(tx, &r).await?;
                claimed.push(r);
            }
            Ok(claimed)
        })
    }

    fn advance_forward(
        &self,
        id: u64,
        claim: u64,
        change: &ForwardChange,
        now: u64,
    ) -> Result<Option<ForwardRecord>> {
        self.run(async |tx| {
            let Some(mut r) = by_id(tx, id, true).await? else {
                return Ok(None);
            };
            if r.claim != claim || !r.state.is_running() {
                return Ok(None);
            }
            change.apply(&mut r, now);
            save(tx, &r).await?;
            Ok(Some(r))
        })
    }

    fn retry_forward(
        &self,
        id: u64,
        requester: &str,
        now: u64,
        max_open: u32,
    ) -> Result<Option<Retried>> {
        self.run(async |tx| {
            // The turn before the row, as a create takes it: the count
            // below then sees every create and retry of this requester
            // that went before.
            lock_requester(tx, requester).await?;
            let Some(mut r) = by_id(tx, id, true)
                .await?
                .filter(|r| r.requester == requester)
            else {
                return Ok(None);
            };
            if r.retry_reopens() && open_of(tx, requester).await? >= i64::from(max_open) {
                return Ok(Some(Retried::Full(r)));
            }
            if apply_retry(&mut r, now) {
                save(tx, &r).await?;
            }
            Ok(Some(Retried::Record(r)))
        })
    }

    fn sweep_forwards(&self, finished_before: u64, limit: usize) -> Result<u64> {
        let before = int(finished_before)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (done, failed) = (
            i64::from(ForwardState::Done.number()),
            i64::from(ForwardState::Failed.number()),
        );
        self.run(async |tx| {
            // Locked first, deleted by id: a `DELETE … WHERE id IN
            // (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)` may run its
            // subquery again per row and, passing over the rows it just
            // deleted, delete more than `limit` (seen in the tests).
            let ids: Vec<i64> = tx
                .query(
                    "SELECT id FROM forwards WHERE state IN ($1, $2) AND updated_at < $3
                     LIMIT $4 FOR UPDATE SKIP LOCKED",
                    &[&done, &failed, &before, &limit],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok(tx
                .execute("DELETE FROM forwards WHERE id = ANY($1)", &[&ids])
                .await?)
        })
    }
}
