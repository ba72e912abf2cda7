//! [`PgDirectory`]: the directory in PostgreSQL, shared by every relay
//! instance of a cluster and by the operator's commands
//! (docs/design/scale-out.md §1.2).
//!
//! Its tables are [`super::sqlite`]'s, column for column (migration
//! `0002_directory.sql`), and each method is one transaction, uncached, so
//! a change made through one instance or by `pickup-relay user …` holds on
//! every instance at its next lookup.
//!
//! SQLite runs one writer at a time (`BEGIN IMMEDIATE`), which makes its
//! read-then-write rules hold; here transactions run side by side (READ
//! COMMITTED), so each rule takes a lock of its own:
//!
//! - **A name is one account's.** Users and terminals share a namespace
//!   across two tables (and `removed_accounts`), which no unique
//!   constraint spans. A claim (`add_user`, `add_terminal`) first takes a
//!   transaction-scoped advisory lock on the name, then checks all three
//!   tables in one statement (one snapshot) and inserts: two claims of one
//!   name run one after the other. A removal moves the name from its table
//!   to `removed_accounts` in one commit, so a claim's snapshot sees it in
//!   one or the other.
//! - **What refers to a user goes with it.** A step that adds a terminal,
//!   a token or a grant locks the user's row `FOR KEY SHARE`; `remove_user`
//!   locks it `FOR UPDATE` before deleting what refers to it. Whichever
//!   comes second waits for the first to commit, then sees its work (the
//!   adder finds no user; the remover finds the new row and deletes it).
//!   Foreign keys back this up in the schema.
//!
//! The pool (`store::postgres::db`) retries a step whose connection was
//! lost, and a commit whose answer was lost may have happened. Every step
//! is therefore safe to run twice, and a step whose earlier try reached its
//! commit answers as that try would have: a repeated `add_user` finds its
//! own row (the salted hash is unique to it), a repeated `remove_user` does
//! not report the user it removed as missing, a repeated `revoke_token`
//! still says it revoked. (Had that commit failed and another removed the
//! user meanwhile, the removal reports success too: the end is the same.)
//!
//! Numbers are `BIGINT`s clamped as [`super::sqlite`] clamps them: a quota
//! or time past `i64::MAX` is stored as `i64::MAX`. Names are `COLLATE "C"`,
//! so lists come in byte order, as SQLite gives them.

use pickup_proto::identity::DeviceKey;
use pickup_proto::message::AuthToken;
use tokio_postgres::Transaction;

use self::queries::{
    bigint, free, lock_name, require_user, storable, terminal_row, unsigned, user_row, Verdict,
    TERMINAL_COLUMNS, USER_COLUMNS,
};
use super::password::{self, DummyHash, PasswordParams};
use super::{
    check_remote_room, terminal_named, token_key, user_named, validate_account_name,
    validate_sender_name, Directory, DirectoryError, TerminalRecord, TokenInfo, UserRecord,
};
use crate::store::postgres::db::{Db, DbError};
use crate::store::postgres::migrations::{check_durability, migrate, MIGRATIONS};

mod queries;
#[cfg(test)]
mod tests;

/// A database error with its causes: `tokio_postgres` says only "db error"
/// and keeps the server's message as the source.
fn db_storage(e: DbError) -> DirectoryError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    DirectoryError::Storage(text)
}

/// Users, tokens and terminals in a PostgreSQL database.
pub struct PgDirectory {
    params: PasswordParams,
    dummy: DummyHash,
    db: Db,
}

impl core::fmt::Debug for PgDirectory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PgDirectory")
            .field("params", &self.params)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl PgDirectory {
    /// Connects to `url` (a libpq key-value string or a `postgres://` URL)
    /// with at most `connections` connections, refuses a server that could
    /// lose a commit, and brings the schema up to date; new passwords are
    /// hashed under `params`, which must be within argon2's range.
    ///
    /// Call it, and every method, from a thread that is not a tokio
    /// runtime's worker (the relay's jobs and sweep, an admin command).
    pub fn open(
        url: &str,
        connections: usize,
        params: PasswordParams,
    ) -> Result<Self, DirectoryError> {
        params.validate().map_err(DirectoryError::Storage)?;
        let db = Db::connect(url, connections).map_err(db_storage)?;
        db.block_on(async {
            check_durability(&db).await?;
            migrate(&db, MIGRATIONS).await
        })
        .map_err(db_storage)?;
        Ok(PgDirectory {
            params,
            dummy: DummyHash::new(params),
            db,
        })
    }

    /// Runs `step` in one transaction and commits it. `step` is told the
    /// verdict of an earlier try that reached its commit (`None` on the
    /// first try, or when earlier tries failed before), which may or may
    /// not have been committed: see the module docs.
    fn run<T: Clone>(
        &self,
        mut step: impl AsyncFnMut(&Transaction<'_>, Option<&T>) -> Result<Verdict<T>, DbError>,
    ) -> Verdict<T> {
        let mut previous: Option<T> = None;
        let outcome = self.db.block_on(self.db.transaction(async |tx| {
            let verdict = step(tx, previous.as_ref()).await?;
            if let Ok(value) = &verdict {
                previous = Some(value.clone());
            }
            Ok(verdict)
        }));
        outcome.map_err(db_storage)?
    }
}

impl Directory for PgDirectory {
    fn add_user(&self, name: &str, password: &str, now: u64) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        // Hashed before the transaction: argon2 takes milliseconds, and a
        // name taken meanwhile is caught inside it.
        let hash = password::hash(password, self.params)?;
        self.run(async |tx, previous| {
            lock_name(tx, name).await?;
            if previous.is_some() {
                let ours = "SELECT 1 FROM users WHERE name = $1 AND password = $2";
                if tx.query_opt(ours, &[&name, &hash]).await?.is_some() {
                    return Ok(Ok(()));
                }
            }
            if let Err(e) = free(tx, name).await? {
                return Ok(Err(e));
            }
            tx.execute(
                "INSERT INTO users(name, password, created_at) VALUES ($1, $2, $3)",
                &[&name, &hash, &bigint(now)],
            )
            .await?;
            Ok(Ok(()))
        })
    }

    fn set_password(&self, name: &str, password: &str) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        let hash = password::hash(password, self.params)?;
        self.run(async |tx, _| {
            let changed = tx
                .execute(
                    "UPDATE users SET password = $2 WHERE name = $1",
                    &[&name, &hash],
                )
                .await?;
            if changed == 0 {
                return Ok(Err(DirectoryError::NotFound(user_named(name))));
            }
            tx.execute(r#"DELETE FROM auth_tokens WHERE "user" = $1"#, &[&name])
                .await?;
            Ok(Ok(()))
        })
    }

    fn remove_user(&self, name: &str) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        self.run(async |tx, previous| {
            let found = tx
                .query_opt("SELECT 1 FROM users WHERE name = $1 FOR UPDATE", &[&name])
                .await?;
            if found.is_none() {
                return Ok(match previous {
                    Some(()) => Ok(()),
                    None => Err(DirectoryError::NotFound(user_named(name))),
                });
            }
            // What refers to the user first: the foreign keys check each
            // statement as it ends.
            tx.execute(r#"DELETE FROM auth_tokens WHERE "user" = $1"#, &[&name])
                .await?;
            tx.execute(
                "DELETE FROM allowed_senders WHERE owner = $1 OR sender = $1",
                &[&name],
            )
            .await?;
            tx.execute(
                "INSERT INTO removed_accounts(name) \
                 SELECT '@' || name FROM terminals WHERE owner = $1 \
                 ON CONFLICT DO NOTHING",
                &[&name],
            )
            .await?;
            tx.execute("DELETE FROM terminals WHERE owner = $1", &[&name])
                .await?;
            tx.execute("DELETE FROM users WHERE name = $1", &[&name])
                .await?;
            tx.execute(
                "INSERT INTO removed_accounts(name) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&name],
            )
            .await?;
            Ok(Ok(()))
        })
    }

    fn set_quota(
        &self,
        name: &str,
        bytes: Option<u64>,
        files: Option<u64>,
    ) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        let (bytes, files) = (bytes.map(bigint), files.map(bigint));
        self.run(async |tx, _| {
            let changed = tx
                .execute(
                    "UPDATE users SET quota_bytes = $2, quota_files = $3 WHERE name = $1",
                    &[&name, &bytes, &files],
                )
                .await?;
            Ok(if changed == 0 {
                Err(DirectoryError::NotFound(user_named(name)))
            } else {
                Ok(())
            })
        })
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>, DirectoryError> {
        if !storable(name) {
            return Ok(None);
        }
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1");
        self.run(async |tx, _| {
            let row = tx.query_opt(&sql, &[&name]).await?;
            Ok(Ok(row.as_ref().map(user_row).transpose()?))
        })
    }

    fn users(&self) -> Result<Vec<UserRecord>, DirectoryError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name");
        self.run(async |tx, _| {
            let rows = tx.query(&sql, &[]).await?;
            Ok(Ok(rows.iter().map(user_row).collect::<Result<_, _>>()?))
        })
    }

    fn check_password(&self, name: &str, password: &str) -> Result<bool, DirectoryError> {
        if !storable(name) {
            return Ok(self.dummy.verify(password));
        }
        let stored: Option<String> = self.run(async |tx, _| {
            let row = tx
                .query_opt("SELECT password FROM users WHERE name = $1", &[&name])
                .await?;
            Ok(Ok(row.map(|r| r.try_get(0)).transpose()?))
        })?;
        // Verified with the connection back in the pool: argon2 takes
        // milliseconds and other sessions' lookups need not wait for it.
        match stored {
            Some(hash) => password::verify(password, &hash),
            None => Ok(self.dummy.verify(password)),
        }
    }

    fn add_token(
        &self,
        user: &str,
        token: &AuthToken,
        expires_at: u64,
    ) -> Result<(), DirectoryError> {
        if !storable(user) {
            return Err(DirectoryError::NotFound(user_named(user)));
        }
        let hash = token_key(token);
        self.run(async |tx, _| {
            if let Err(e) = require_user(tx, user).await? {
                return Ok(Err(e));
            }
            tx.execute(
                r#"INSERT INTO auth_tokens(hash, "user", expires_at) VALUES ($1, $2, $3)
                   ON CONFLICT (hash) DO UPDATE
                   SET "user" = EXCLUDED."user", expires_at = EXCLUDED.expires_at"#,
                &[&hash.as_slice(), &user, &bigint(expires_at)],
            )
            .await?;
            Ok(Ok(()))
        })
    }

    fn check_token(
        &self,
        token: &AuthToken,
        now: u64,
    ) -> Result<Option<TokenInfo>, DirectoryError> {
        let hash = token_key(token);
        self.run(async |tx, _| {
            let row = tx
                .query_opt(
                    r#"SELECT "user", expires_at FROM auth_tokens
                       WHERE hash = $1 AND expires_at > $2"#,
                    &[&hash.as_slice(), &bigint(now)],
                )
                .await?;
            let Some(row) = row else {
                return Ok(Ok(None));
            };
            Ok(Ok(Some(TokenInfo {
                user: row.try_get(0)?,
                expires_at: unsigned(row.try_get(1)?),
            })))
        })
    }

    fn revoke_token(&self, token: &AuthToken) -> Result<bool, DirectoryError> {
        let hash = token_key(token);
        self.run(async |tx, previous| {
            let removed = tx
                .execute(
                    "DELETE FROM auth_tokens WHERE hash = $1",
                    &[&hash.as_slice()],
                )
                .await?;
            Ok(Ok(removed > 0 || previous == Some(&true)))
        })
    }

    fn remove_expired_tokens(&self, now: u64) -> Result<u64, DirectoryError> {
        self.run(async |tx, previous| {
            let removed = tx
                .execute(
                    "DELETE FROM auth_tokens WHERE expires_at <= $1",
                    &[&bigint(now)],
                )
                .await?;
            // After a lost commit the count is an estimate: the larger of
            // the two tries' (it only feeds logs).
            Ok(Ok(removed.max(previous.copied().unwrap_or(0))))
        })
    }

    fn add_terminal(
        &self,
        name: &str,
        owner: &str,
        key: DeviceKey,
        now: u64,
    ) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        validate_account_name(owner)?;
        let created_at = bigint(now);
        self.run(async |tx, previous| {
            lock_name(tx, name).await?;
            if previous.is_some() {
                let ours = "SELECT 1 FROM terminals \
                            WHERE name = $1 AND owner = $2 AND key = $3 AND created_at = $4";
                let args: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                    [&name, &owner, &key.0.as_slice(), &created_at];
                if tx.query_opt(ours, &args).await?.is_some() {
                    return Ok(Ok(()));
                }
            }
            if let Err(e) = free(tx, name).await? {
                return Ok(Err(e));
            }
            if let Err(e) = require_user(tx, owner).await? {
                return Ok(Err(e));
            }
            tx.execute(
                "INSERT INTO terminals(name, owner, key, created_at) VALUES ($1, $2, $3, $4)",
                &[&name, &owner, &key.0.as_slice(), &created_at],
            )
            .await?;
            Ok(Ok(()))
        })
    }

    fn terminal(&self, name: &str) -> Result<Option<TerminalRecord>, DirectoryError> {
        if !storable(name) {
            return Ok(None);
        }
        let sql = format!("SELECT {TERMINAL_COLUMNS} FROM terminals WHERE name = $1");
        self.run(async |tx, _| {
            let Some(row) = tx.query_opt(&sql, &[&name]).await? else {
                return Ok(Ok(None));
            };
            Ok(terminal_row(&row)?.map(Some))
        })
    }

    fn terminals(&self) -> Result<Vec<TerminalRecord>, DirectoryError> {
        let sql = format!("SELECT {TERMINAL_COLUMNS} FROM terminals ORDER BY name");
        self.run(async |tx, _| {
            let rows = tx.query(&sql, &[]).await?;
            let mut terminals = Vec::with_capacity(rows.len());
            for row in &rows {
                match terminal_row(row)? {
                    Ok(t) => terminals.push(t),
                    Err(e) => return Ok(Err(e)),
                }
            }
            Ok(Ok(terminals))
        })
    }

    fn remove_terminal(&self, name: &str) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        self.run(async |tx, previous| {
            let removed = tx
                .execute("DELETE FROM terminals WHERE name = $1", &[&name])
                .await?;
            if removed == 0 {
                return Ok(match previous {
                    Some(()) => Ok(()),
                    None => Err(DirectoryError::NotFound(terminal_named(name))),
                });
            }
            tx.execute(
                "INSERT INTO removed_accounts(name) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&format!("@{name}")],
            )
            .await?;
            Ok(Ok(()))
        })
    }

    fn removed_accounts(&self, max: usize) -> Result<Vec<String>, DirectoryError> {
        let max = bigint(max as u64);
        self.run(async |tx, _| {
            let rows = tx
                .query(
                    "SELECT name FROM removed_accounts ORDER BY name LIMIT $1",
                    &[&max],
                )
                .await?;
            Ok(Ok(rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?))
        })
    }

    fn forget_removed(&self, names: &[String]) -> Result<(), DirectoryError> {
        let names: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| storable(n))
            .collect();
        self.run(async |tx, _| {
            tx.execute(
                "DELETE FROM removed_accounts WHERE name = ANY($1)",
                &[&names],
            )
            .await?;
            Ok(Ok(()))
        })
    }

    fn allow_sender(&self, owner: &str, sender: &str, allow: bool) -> Result<(), DirectoryError> {
        validate_account_name(owner)?;
        validate_sender_name(sender)?;
        self.run(async |tx, _| {
            if !allow {
                tx.execute(
                    "DELETE FROM allowed_senders WHERE owner = $1 AND sender = $2",
                    &[&owner, &sender],
                )
                .await?;
                return Ok(Ok(()));
            }
            // A peer relay's user is nobody here to look up (migration 6
            // dropped the sender's reference to users for it).
            for name in [owner, sender].into_iter().filter(|n| !n.contains('@')) {
                if let Err(e) = require_user(tx, name).await? {
                    return Ok(Err(e));
                }
            }
            if sender.contains('@') {
                // The owner's row is locked: concurrent grants of one owner
                // count one after another.
                tx.execute("SELECT 1 FROM users WHERE name = $1 FOR UPDATE", &[&owner])
                    .await?;
                let row = tx
                    .query_one(
                        "SELECT COUNT(*), COALESCE(BOOL_OR(sender = $2), false) \
                         FROM allowed_senders WHERE owner = $1 AND sender LIKE '%@%'",
                        &[&owner, &sender],
                    )
                    .await?;
                let (held, granted): (i64, bool) = (row.try_get(0)?, row.try_get(1)?);
                if !granted {
                    if let Err(e) = check_remote_room(u64::try_from(held).unwrap_or(0)) {
                        return Ok(Err(e));
                    }
                }
            }
            tx.execute(
                "INSERT INTO allowed_senders(owner, sender) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&owner, &sender],
            )
            .await?;
            Ok(Ok(()))
        })
    }

    fn allows_sender(&self, owner: &str, sender: &str) -> Result<bool, DirectoryError> {
        if !storable(owner) || !storable(sender) {
            return Ok(false);
        }
        self.run(async |tx, _| {
            let row = tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM allowed_senders \
                     WHERE owner = $1 AND sender = $2)",
                    &[&owner, &sender],
                )
                .await?;
            Ok(Ok(row.try_get(0)?))
        })
    }

    fn allowed_senders(&self, owner: &str) -> Result<Vec<String>, DirectoryError> {
        if !storable(owner) {
            return Ok(Vec::new());
        }
        self.run(async |tx, _| {
            let rows = tx
                .query(
                    "SELECT sender FROM allowed_senders WHERE owner = $1 ORDER BY sender",
                    &[&owner],
                )
                .await?;
            Ok(Ok(rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?))
        })
    }
}
