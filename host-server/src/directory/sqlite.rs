//! [`SqliteDirectory`]: the directory in the relay's own database file
//! (`DATA/relay.sqlite`), in tables of its own, over a connection of its own.
//!
//! The store ([`crate::store::sqlite`]) keeps its schema and migrations;
//! these tables are created with `CREATE TABLE IF NOT EXISTS` and touch
//! none of the store's, so either side can change without the other. One
//! file rather than two keeps a backup of the data directory consistent.
//!
//! The database runs in WAL mode with a 30 s busy timeout (the store's
//! own pragmas, from one function both call), so the operator's commands
//! (`pickup-relay user add`…) work while a relay serves the same
//! directory: each write is one `BEGIN IMMEDIATE` transaction, which waits
//! for the other process's writer instead of failing, and the relay sees
//! the change at its next lookup (nothing is cached here).
//!
//! Numbers are SQLite integers (signed 64-bit): a quota or time past
//! `i64::MAX` is stored as `i64::MAX`, which no real one reaches.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use pickup_proto::identity::DeviceKey;
use pickup_proto::message::AuthToken;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::password::{self, DummyHash, PasswordParams};
use super::{
    check_remote_room, terminal_named, token_key, user_named, validate_account_name,
    validate_sender_name, Directory, DirectoryError, TerminalRecord, TokenInfo, UserRecord,
};
use crate::store::sqlite::{connect, db_file, prepare_db_file};

/// `users.password` is the argon2id PHC string ([`super::password`]);
/// `auth_tokens.hash` the token's SHA-256; `terminals.key` the 16-byte
/// device key itself, which the relay needs to check HMACs.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users(
    name TEXT PRIMARY KEY,
    password TEXT NOT NULL,
    quota_bytes INTEGER,
    quota_files INTEGER,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_tokens(
    hash BLOB PRIMARY KEY,
    user TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_tokens_by_user ON auth_tokens(user);
CREATE TABLE IF NOT EXISTS terminals(
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS terminals_by_owner ON terminals(owner);
CREATE TABLE IF NOT EXISTS removed_accounts(
    name TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS allowed_senders(
    owner TEXT NOT NULL,
    sender TEXT NOT NULL,
    PRIMARY KEY(owner, sender)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS allowed_senders_by_sender ON allowed_senders(sender);
";

fn storage(e: impl core::fmt::Display) -> DirectoryError {
    DirectoryError::Storage(e.to_string())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Users, tokens and terminals in `DATA/relay.sqlite`.
pub struct SqliteDirectory {
    params: PasswordParams,
    dummy: DummyHash,
    db: Mutex<Connection>,
}

impl core::fmt::Debug for SqliteDirectory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteDirectory")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl SqliteDirectory {
    /// Opens the directory in the data directory `data_dir` (creating it,
    /// private, and the database, if missing), hashing new passwords under
    /// `params`, which must be within argon2's range.
    pub fn open(data_dir: &Path, params: PasswordParams) -> Result<Self, DirectoryError> {
        params.validate().map_err(DirectoryError::Storage)?;
        let path = prepare_db_file(data_dir)
            .map_err(|e| storage(format!("cannot create {}: {e}", data_dir.display())))?;
        // The file's directory entry, in case this made it (the store does
        // the same); a crash must not lose users the operator was told of.
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(storage)?;
        let db = connect(&path).map_err(storage)?;
        db.execute_batch(SCHEMA).map_err(storage)?;
        Ok(SqliteDirectory {
            params,
            dummy: DummyHash::new(params),
            db: Mutex::new(db),
        })
    }

    /// Opens the directory of a data directory a relay (or
    /// [`SqliteDirectory::open`]) already made: `NotFound` rather than a
    /// new, empty database when `data_dir` holds none, so a mistyped
    /// `--data` is reported, not created.
    pub fn open_existing(data_dir: &Path, params: PasswordParams) -> Result<Self, DirectoryError> {
        if !db_file(data_dir).is_file() {
            return Err(DirectoryError::NotFound(format!(
                "relay database in {}",
                data_dir.display()
            )));
        }
        Self::open(data_dir, params)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // SQLite rolls back a transaction dropped by a panic: the
        // connection is sound whatever the panic left.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction and commits it if
    /// `f` succeeds: the write lock is taken at the start, so two
    /// processes never deadlock upgrading a read to a write.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        let mut db = self.db();
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let value = f(&tx)?;
        tx.commit().map_err(storage)?;
        Ok(value)
    }
}

/// `Exists` if `name` is any account's.
fn free(tx: &Transaction<'_>, name: &str) -> Result<(), DirectoryError> {
    if exists(tx, "SELECT 1 FROM users WHERE name = ?1", name)? {
        return Err(DirectoryError::Exists(user_named(name)));
    }
    if exists(tx, "SELECT 1 FROM terminals WHERE name = ?1", name)? {
        return Err(DirectoryError::Exists(terminal_named(name)));
    }
    let pending = exists(tx, "SELECT 1 FROM removed_accounts WHERE name = ?1", name)?
        || exists(
            tx,
            "SELECT 1 FROM removed_accounts WHERE name = '@' || ?1",
            name,
        )?;
    if pending {
        return Err(DirectoryError::Exists(format!(
            "{} (removed; its files are released at the relay's next sweep)",
            user_named(name)
        )));
    }
    Ok(())
}

fn exists(db: &Connection, sql: &str, name: &str) -> Result<bool, DirectoryError> {
    db.query_row(sql, [name], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
        .map_err(storage)
}

fn require_user(db: &Connection, name: &str) -> Result<(), DirectoryError> {
    if exists(db, "SELECT 1 FROM users WHERE name = ?1", name)? {
        Ok(())
    } else {
        Err(DirectoryError::NotFound(user_named(name)))
    }
}

const USER_COLUMNS: &str = "name, quota_bytes, quota_files, created_at";

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        name: r.get(0)?,
        quota_bytes: r.get::<_, Option<i64>>(1)?.map(to_u64),
        quota_files: r.get::<_, Option<i64>>(2)?.map(to_u64),
        created_at: to_u64(r.get(3)?),
    })
}

const TERMINAL_COLUMNS: &str = "name, owner, key, created_at";

/// A terminal row; a key of the wrong length (a damaged row) is an error,
/// not a terminal no answer verifies for.
fn terminal_row(r: &Row<'_>) -> rusqlite::Result<Result<TerminalRecord, DirectoryError>> {
    let name: String = r.get(0)?;
    let key: Vec<u8> = r.get(2)?;
    let Ok(key) = <[u8; 16]>::try_from(key.as_slice()) else {
        return Ok(Err(storage(format!(
            "terminal {name:?}: stored key is not 16 bytes"
        ))));
    };
    Ok(Ok(TerminalRecord {
        owner: r.get(1)?,
        key: DeviceKey(key),
        created_at: to_u64(r.get(3)?),
        name,
    }))
}

impl Directory for SqliteDirectory {
    fn add_user(&self, name: &str, password: &str, now: u64) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        // Hashed before the transaction: argon2 takes milliseconds, and a
        // name taken meanwhile is caught inside it.
        let hash = password::hash(password, self.params)?;
        self.write(|tx| {
            free(tx, name)?;
            tx.execute(
                "INSERT INTO users(name, password, created_at) VALUES (?1, ?2, ?3)",
                params![name, hash, to_i64(now)],
            )
            .map_err(storage)?;
            Ok(())
        })
    }

    fn set_password(&self, name: &str, password: &str) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        let hash = password::hash(password, self.params)?;
        self.write(|tx| {
            let changed = tx
                .execute(
                    "UPDATE users SET password = ?2 WHERE name = ?1",
                    params![name, hash],
                )
                .map_err(storage)?;
            if changed == 0 {
                return Err(DirectoryError::NotFound(user_named(name)));
            }
            tx.execute("DELETE FROM auth_tokens WHERE user = ?1", [name])
                .map_err(storage)?;
            Ok(())
        })
    }

    fn remove_user(&self, name: &str) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        self.write(|tx| {
            let removed = tx
                .execute("DELETE FROM users WHERE name = ?1", [name])
                .map_err(storage)?;
            if removed == 0 {
                return Err(DirectoryError::NotFound(user_named(name)));
            }
            tx.execute("DELETE FROM auth_tokens WHERE user = ?1", [name])
                .map_err(storage)?;
            tx.execute(
                "DELETE FROM allowed_senders WHERE owner = ?1 OR sender = ?1",
                [name],
            )
            .map_err(storage)?;
            tx.execute(
                "INSERT OR IGNORE INTO removed_accounts(name) \
                 SELECT '@' || name FROM terminals WHERE owner = ?1",
                [name],
            )
            .map_err(storage)?;
            tx.execute("DELETE FROM terminals WHERE owner = ?1", [name])
                .map_err(storage)?;
            tx.execute(
                "INSERT OR IGNORE INTO removed_accounts(name) VALUES (?1)",
                [name],
            )
            .map_err(storage)?;
            Ok(())
        })
    }

    fn set_quota(
        &self,
        name: &str,
        bytes: Option<u64>,
        files: Option<u64>,
    ) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        self.write(|tx| {
            let changed = tx
                .execute(
                    "UPDATE users SET quota_bytes = ?2, quota_files = ?3 WHERE name = ?1",
                    params![name, bytes.map(to_i64), files.map(to_i64)],
                )
                .map_err(storage)?;
            if changed == 0 {
                return Err(DirectoryError::NotFound(user_named(name)));
            }
            Ok(())
        })
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>, DirectoryError> {
        self.db()
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                [name],
                user_row,
            )
            .optional()
            .map_err(storage)
    }

    fn users(&self) -> Result<Vec<UserRecord>, DirectoryError> {
        let db = self.db();
        let mut stmt = db
            .prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .map_err(storage)?;
        let rows = stmt.query_map([], user_row).map_err(storage)?;
        rows.collect::<rusqlite::Result<_>>().map_err(storage)
    }

    fn check_password(&self, name: &str, password: &str) -> Result<bool, DirectoryError> {
        let stored: Option<String> = self
            .db()
            .query_row("SELECT password FROM users WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(storage)?;
        // Verified with the connection released: argon2 takes milliseconds
        // and other sessions' lookups need not wait for it.
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
        self.write(|tx| {
            require_user(tx, user)?;
            tx.execute(
                "INSERT OR REPLACE INTO auth_tokens(hash, user, expires_at) VALUES (?1, ?2, ?3)",
                params![token_key(token).as_slice(), user, to_i64(expires_at)],
            )
            .map_err(storage)?;
            Ok(())
        })
    }

    fn check_token(
        &self,
        token: &AuthToken,
        now: u64,
    ) -> Result<Option<TokenInfo>, DirectoryError> {
        self.db()
            .query_row(
                "SELECT user, expires_at FROM auth_tokens WHERE hash = ?1 AND expires_at > ?2",
                params![token_key(token).as_slice(), to_i64(now)],
                |r| {
                    Ok(TokenInfo {
                        user: r.get(0)?,
                        expires_at: to_u64(r.get(1)?),
                    })
                },
            )
            .optional()
            .map_err(storage)
    }

    fn revoke_token(&self, token: &AuthToken) -> Result<bool, DirectoryError> {
        self.write(|tx| {
            let removed = tx
                .execute(
                    "DELETE FROM auth_tokens WHERE hash = ?1",
                    [token_key(token).as_slice()],
                )
                .map_err(storage)?;
            Ok(removed > 0)
        })
    }

    fn remove_expired_tokens(&self, now: u64) -> Result<u64, DirectoryError> {
        self.write(|tx| {
            let removed = tx
                .execute(
                    "DELETE FROM auth_tokens WHERE expires_at <= ?1",
                    [to_i64(now)],
                )
                .map_err(storage)?;
            Ok(removed as u64)
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
        self.write(|tx| {
            free(tx, name)?;
            require_user(tx, owner)?;
            tx.execute(
                "INSERT INTO terminals(name, owner, key, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, owner, key.0.as_slice(), to_i64(now)],
            )
            .map_err(storage)?;
            Ok(())
        })
    }

    fn terminal(&self, name: &str) -> Result<Option<TerminalRecord>, DirectoryError> {
        self.db()
            .query_row(
                &format!("SELECT {TERMINAL_COLUMNS} FROM terminals WHERE name = ?1"),
                [name],
                terminal_row,
            )
            .optional()
            .map_err(storage)?
            .transpose()
    }

    fn terminals(&self) -> Result<Vec<TerminalRecord>, DirectoryError> {
        let db = self.db();
        let mut stmt = db
            .prepare(&format!(
                "SELECT {TERMINAL_COLUMNS} FROM terminals ORDER BY name"
            ))
            .map_err(storage)?;
        let rows = stmt.query_map([], terminal_row).map_err(storage)?;
        rows.map(|r| r.map_err(storage)?).collect()
    }

    fn remove_terminal(&self, name: &str) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        self.write(|tx| {
            let removed = tx
                .execute("DELETE FROM terminals WHERE name = ?1", [name])
                .map_err(storage)?;
            if removed == 0 {
                return Err(DirectoryError::NotFound(terminal_named(name)));
            }
            tx.execute(
                "INSERT OR IGNORE INTO removed_accounts(name) VALUES ('@' || ?1)",
                [name],
            )
            .map_err(storage)?;
            Ok(())
        })
    }

    fn removed_accounts(&self, max: usize) -> Result<Vec<String>, DirectoryError> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT name FROM removed_accounts ORDER BY name LIMIT ?1")
            .map_err(storage)?;
        let rows = stmt
            .query_map([to_i64(max as u64)], |r| r.get::<_, String>(0))
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }

    fn forget_removed(&self, names: &[String]) -> Result<(), DirectoryError> {
        self.write(|tx| {
            for name in names {
                tx.execute("DELETE FROM removed_accounts WHERE name = ?1", [name])
                    .map_err(storage)?;
            }
            Ok(())
        })
    }

    fn allow_sender(&self, owner: &str, sender: &str, allow: bool) -> Result<(), DirectoryError> {
        validate_account_name(owner)?;
        validate_sender_name(sender)?;
        self.write(|tx| {
            if !allow {
                tx.execute(
                    "DELETE FROM allowed_senders WHERE owner = ?1 AND sender = ?2",
                    [owner, sender],
                )
                .map_err(storage)?;
                return Ok(());
            }
            // A peer relay's user is nobody here to look up.
            for name in [owner, sender].into_iter().filter(|n| !n.contains('@')) {
                let exists: bool = tx
                    .query_row(
                        "SELECT EXISTS(SELECT 1 FROM users WHERE name = ?1)",
                        [name],
                        |r| r.get(0),
                    )
                    .map_err(storage)?;
                if !exists {
                    return Err(DirectoryError::NotFound(user_named(name)));
                }
            }
            if sender.contains('@') {
                let (held, granted): (u64, bool) = tx
                    .query_row(
                        "SELECT COUNT(*), COALESCE(SUM(sender = ?2), 0) FROM allowed_senders \
                         WHERE owner = ?1 AND sender LIKE '%@%'",
                        [owner, sender],
                        |r| Ok((r.get(0)?, r.get::<_, i64>(1)? > 0)),
                    )
                    .map_err(storage)?;
                if !granted {
                    check_remote_room(held)?;
                }
            }
            tx.execute(
                "INSERT OR IGNORE INTO allowed_senders(owner, sender) VALUES (?1, ?2)",
                [owner, sender],
            )
            .map_err(storage)?;
            Ok(())
        })
    }

    fn allows_sender(&self, owner: &str, sender: &str) -> Result<bool, DirectoryError> {
        self.db()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM allowed_senders WHERE owner = ?1 AND sender = ?2)",
                [owner, sender],
                |r| r.get(0),
            )
            .map_err(storage)
    }

    fn allowed_senders(&self, owner: &str) -> Result<Vec<String>, DirectoryError> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT sender FROM allowed_senders WHERE owner = ?1 ORDER BY sender")
            .map_err(storage)?;
        let rows = stmt.query_map([owner], |r| r.get(0)).map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }
}
