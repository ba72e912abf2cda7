//! The queries [`super::PgDirectory`]'s steps share: the locks that keep
//! SQLite's one-writer rules across instances, the namespace check, and
//! rows decoded into records.

use pickup_proto::identity::DeviceKey;
use sha2::{Digest, Sha256};
use tokio_postgres::{Row, Transaction};

use crate::directory::{terminal_named, user_named, DirectoryError, TerminalRecord, UserRecord};
use crate::store::postgres::db::DbError;

/// The first key of the advisory locks on account names (the second is a
/// hash of the name). Two-key advisory locks never conflict with one-key
/// ones such as the migrations' lock.
const NAME_LOCK_CLASS: i32 = 0x6e61_6d65; // "name"

/// A step's own verdict: `Err` only before the step wrote anything, so the
/// transaction it ends may be committed as it is.
pub(super) type Verdict<T> = Result<T, DirectoryError>;

fn storage(e: impl core::fmt::Display) -> DirectoryError {
    DirectoryError::Storage(e.to_string())
}

/// Whether `name` can be in the database at all: PostgreSQL's text holds
/// no NUL, so a lookup of such a name finds nothing (as in SQLite) rather
/// than failing.
pub(super) fn storable(name: &str) -> bool {
    !name.contains('\0')
}

/// `n` as a `BIGINT`, `i64::MAX` if larger (as [`crate::directory::sqlite`] stores it).
pub(super) fn bigint(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored `BIGINT` as the unsigned number it stands for.
pub(super) fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Serializes the claims of `name` until the transaction ends.
pub(super) async fn lock_name(tx: &Transaction<'_>, name: &str) -> Result<(), DbError> {
    let digest = Sha256::digest(name.as_bytes());
    let key = i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&NAME_LOCK_CLASS, &key],
    )
    .await?;
    Ok(())
}

/// `Exists` if `name` is any account's, or one removed whose files the
/// relay has not released; one statement, so one snapshot.
pub(super) async fn free(tx: &Transaction<'_>, name: &str) -> Result<Verdict<()>, DbError> {
    let row = tx
        .query_one(
            "SELECT EXISTS(SELECT 1 FROM users WHERE name = $1), \
                    EXISTS(SELECT 1 FROM terminals WHERE name = $1), \
                    EXISTS(SELECT 1 FROM removed_accounts WHERE name = $1 OR name = $2)",
            &[&name, &format!("@{name}")],
        )
        .await?;
    let (user, terminal, pending): (bool, bool, bool) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(if user {
        Err(DirectoryError::Exists(user_named(name)))
    } else if terminal {
        Err(DirectoryError::Exists(terminal_named(name)))
    } else if pending {
        Err(DirectoryError::Exists(format!(
            "{} (removed; its files are released at the relay's next sweep)",
            user_named(name)
        )))
    } else {
        Ok(())
    })
}

/// `NotFound` unless `name` is a user; if it is, the user cannot be
/// removed before this transaction ends.
pub(super) async fn require_user(tx: &Transaction<'_>, name: &str) -> Result<Verdict<()>, DbError> {
    let found = tx
        .query_opt(
            "SELECT 1 FROM users WHERE name = $1 FOR KEY SHARE",
            &[&name],
        )
        .await?;
    Ok(match found {
        Some(_) => Ok(()),
        None => Err(DirectoryError::NotFound(user_named(name))),
    })
}

pub(super) const USER_COLUMNS: &str = "name, quota_bytes, quota_files, created_at";

pub(super) fn user_row(r: &Row) -> Result<UserRecord, DbError> {
    Ok(UserRecord {
        name: r.try_get(0)?,
        quota_bytes: r.try_get::<_, Option<i64>>(1)?.map(unsigned),
        quota_files: r.try_get::<_, Option<i64>>(2)?.map(unsigned),
        created_at: unsigned(r.try_get(3)?),
    })
}

pub(super) const TERMINAL_COLUMNS: &str = "name, owner, key, created_at";

/// A terminal row; a key of the wrong length (a damaged row) is an error,
/// not a terminal no answer verifies for.
pub(super) fn terminal_row(r: &Row) -> Result<Verdict<TerminalRecord>, DbError> {
    let name: String = r.try_get(0)?;
    let key: &[u8] = r.try_get(2)?;
    let Ok(key) = <[u8; 16]>::try_from(key) else {
        return Ok(Err(storage(format!(
            "terminal {name:?}: stored key is not 16 bytes"
        ))));
    };
    Ok(Ok(TerminalRecord {
        owner: r.try_get(1)?,
        key: DeviceKey(key),
        created_at: unsigned(r.try_get(3)?),
        name,
    }))
}
