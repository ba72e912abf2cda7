//! Who may authenticate to the relay (PROTOCOL.md §8): users with a
//! password, their login tokens, and terminals with a device key.
//!
//! ```text
//!   pickup-relay user … / terminal …  (admin.rs)    session: Login, Authenticate,
//!                 │                                  TerminalAuth, Logout
//!                 ▼                                        ▼
//!   ┌─────────────────────────── Directory ───────────────────────────┐
//!   │ users        name, argon2id hash (PHC string), quota, created   │
//!   │ auth_tokens  SHA-256(token) → user, expires_at                  │
//!   │ terminals    name → owner (a user), device key, created         │
//!   │ allowed_senders  owner → a user (or `user@relay`) who may push  │
//!   ├─────────────────────┬──────────────────────┬────────────────────┤
//!   │ sqlite::            │ postgres::           │ memory::           │
//!   │ SqliteDirectory     │ PgDirectory          │ MemoryDirectory    │
//!   │ DATA/relay.sqlite,  │ backend = "postgres":│ simulator, fuzzers,│
//!   │ its own connection  │ one database for all │ unit tests         │
//!   │ and tables          │ instances            │                    │
//!   └─────────────────────┴──────────────────────┴────────────────────┘
//! ```
//!
//! What a stolen database gives away, and why each column is what it is:
//!
//! - **Passwords** are stored as argon2id hashes ([`password`]), so each
//!   needs an offline search. They are never logged nor put in an error.
//! - **Tokens** are stored as their SHA-256 only: a 128-bit random token
//!   needs no slow hash, and the hash cannot be sent back as a token.
//! - **Device keys** are stored as they are. The relay must hold them to
//!   check a terminal's HMAC answer (there is no way to check an HMAC
//!   against a hash of its key), so whoever reads the database can pose as
//!   every terminal: after a theft, remove and re-add each terminal.
//!
//! Users and terminals share one namespace of names ([`validate_account_name`]):
//! a name is a user's or a terminal's, never both, so the failure limiter
//! ([`crate::auth_limit`]) and the operator's logs never mix two accounts.
//!
//! Times are seconds since the Unix epoch, passed in by the caller (the
//! session's clock, or a test's), never read here.

pub mod memory;
pub mod password;
pub mod postgres;
pub mod settings;
pub mod sqlite;
#[cfg(test)]
mod tests;

use pickup_proto::identity::DeviceKey;
use pickup_proto::message::AuthToken;
use sha2::{Digest, Sha256};

pub use self::memory::MemoryDirectory;
pub use self::password::PasswordParams;
pub use self::postgres::PgDirectory;
pub use self::settings::AuthSettings;
pub use self::sqlite::SqliteDirectory;

/// A user, as the operator and the session see it (its password hash
/// never leaves the directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The login name.
    pub name: String,
    /// Bytes of named files the user may hold; `None`: no limit of its own.
    pub quota_bytes: Option<u64>,
    /// Named files the user may hold; `None`: no limit of its own.
    pub quota_files: Option<u64>,
    /// When the user was added (Unix seconds).
    pub created_at: u64,
}

/// A registered terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalRecord {
    /// The name the terminal gives in `TerminalAuth`.
    pub name: String,
    /// The user it acts for.
    pub owner: String,
    /// Its device key (its `Debug` form hides the bytes).
    pub key: DeviceKey,
    /// When it was added (Unix seconds).
    pub created_at: u64,
}

/// What a valid token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The user it authenticates.
    pub user: String,
    /// When it stops being valid (Unix seconds).
    pub expires_at: u64,
}

/// Why a directory operation failed. The texts are the operator's error
/// lines (`no user "bob"`); none carries a password, token or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// No such account; the text names it (`user "bob"`).
    #[error("no {0}")]
    NotFound(String),
    /// The name is taken; the text names it (`user "bob"`).
    #[error("{0} already exists")]
    Exists(String),
    /// The name breaks [`validate_account_name`]'s rules; the text quotes it
    /// (escaped, cut to 40 characters) and states them.
    #[error("invalid name {0}")]
    InvalidName(String),
    /// The database failed, or a stored row is damaged.
    #[error("storage: {0}")]
    Storage(String),
    /// A cap is reached; the text says which.
    #[error("{0}")]
    Full(String),
}

/// The longest user or terminal name.
pub const MAX_ACCOUNT_NAME_LEN: usize = 32;

/// Checks a user or terminal name: 1 to [`MAX_ACCOUNT_NAME_LEN`] of
/// `a-z 0-9 . _ -`, starting with a letter or a digit.
///
/// Narrower than file names on purpose: names show up in logs and
/// operators' terminals, where control characters, look-alike Unicode or
/// a leading `-` (an option to a shell command) would mislead. Names never
/// shape a path, but `/` and a leading `.` are refused all the same.
pub fn validate_account_name(name: &str) -> Result<(), DirectoryError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    let ok = (1..=MAX_ACCOUNT_NAME_LEN).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(ok_char);
    if ok {
        return Ok(());
    }
    let shown: String = name.chars().take(40).collect();
    let cut = if shown.len() < name.len() { "…" } else { "" };
    Err(DirectoryError::InvalidName(format!(
        "{shown:?}{cut}: a name is 1 to {MAX_ACCOUNT_NAME_LEN} of a-z, 0-9, '.', '_', '-', \
         starting with a letter or a digit"
    )))
}

/// The name a user of a peer relay pushes under: `user@relay`, with
/// `relay` the peer's `[[peers]]` name (PROTOCOL.md §12.1). Account names
/// hold no `@`, so it is never a local user's.
pub fn remote_sender(user: &str, relay: &str) -> String {
    format!("{user}@{relay}")
}

/// A sender name's parts if it names a user of a peer relay (`user@relay`,
/// both valid account names); `None` for anything else.
pub fn split_remote_sender(name: &str) -> Option<(&str, &str)> {
    let (user, relay) = name.split_once('@')?;
    let valid = validate_account_name(user).is_ok() && validate_account_name(relay).is_ok();
    valid.then_some((user, relay))
}

/// Most users of peer relays one owner may allow to push
/// ([`Directory::allow_sender`]). Local senders are bounded by the users
/// there are; remote names are whatever the owner sends, so without a cap
/// one account could grow the table without end.
pub const MAX_REMOTE_SENDERS: u64 = 256;

/// Whether an owner that allows `held` users of peer relays may allow one
/// more (`Full` if not).
pub(crate) fn check_remote_room(held: u64) -> Result<(), DirectoryError> {
    if held < MAX_REMOTE_SENDERS {
        return Ok(());
    }
    Err(DirectoryError::Full(format!(
        "already {held} users of peer relays allowed (at most {MAX_REMOTE_SENDERS}): \
         withdraw one first"
    )))
}

/// Checks a sender name for [`Directory::allow_sender`]: an account name,
/// or a peer relay's user as [`remote_sender`] writes it.
pub fn validate_sender_name(name: &str) -> Result<(), DirectoryError> {
    if name.contains('@') {
        return match split_remote_sender(name) {
            Some(_) => Ok(()),
            None => {
                let shown: String = name.chars().take(40).collect();
                let cut = if shown.len() < name.len() { "…" } else { "" };
                Err(DirectoryError::InvalidName(format!(
                    "{shown:?}{cut}: a remote sender is USER@RELAY, each 1 to \
                     {MAX_ACCOUNT_NAME_LEN} of a-z, 0-9, '.', '_', '-', starting with a letter \
                     or a digit"
                )))
            }
        };
    }
    validate_account_name(name)
}

/// The accounts, tokens and terminals of a relay. Every method is one
/// atomic step: a concurrent reader sees it whole or not at all.
pub trait Directory: Send + Sync {
    /// Adds a user with `password` (hashed with the directory's
    /// [`PasswordParams`]) and no quota of its own. `Exists` if the name is
    /// a user's or a terminal's.
    fn add_user(&self, name: &str, password: &str, now: u64) -> Result<(), DirectoryError>;
    /// Replaces a user's password and revokes all its tokens, so a leaked
    /// password's sessions end with it.
    fn set_password(&self, name: &str, password: &str) -> Result<(), DirectoryError>;
    /// Removes a user, its terminals and its tokens.
    fn remove_user(&self, name: &str) -> Result<(), DirectoryError>;
    /// Sets (or, with `None`, clears) a user's quotas.
    fn set_quota(
        &self,
        name: &str,
        bytes: Option<u64>,
        files: Option<u64>,
    ) -> Result<(), DirectoryError>;
    /// A user by name; `None` for an unknown or invalid name.
    fn user(&self, name: &str) -> Result<Option<UserRecord>, DirectoryError>;
    /// Every user, by name.
    fn users(&self) -> Result<Vec<UserRecord>, DirectoryError>;
    /// argon2id verify; for an unknown user verifies against a fixed dummy hash so the time does not tell whether the user exists.
    fn check_password(&self, name: &str, password: &str) -> Result<bool, DirectoryError>;
    /// Stores SHA-256(token) with the user and expiry (the token itself is never stored).
    fn add_token(
        &self,
        user: &str,
        token: &AuthToken,
        expires_at: u64,
    ) -> Result<(), DirectoryError>;
    /// Whom `token` authenticates at `now`; `None` if it is unknown,
    /// expired (`expires_at <= now`) or revoked.
    fn check_token(&self, token: &AuthToken, now: u64)
        -> Result<Option<TokenInfo>, DirectoryError>;
    /// Revokes `token` (`Logout`); `false` if it was not stored.
    fn revoke_token(&self, token: &AuthToken) -> Result<bool, DirectoryError>;
    /// Forgets tokens expired at `now` (they already fail
    /// [`Directory::check_token`]; this only reclaims their rows). Returns
    /// how many.
    fn remove_expired_tokens(&self, now: u64) -> Result<u64, DirectoryError>;
    /// Accounts removed whose named files and shares the relay has not
    /// released yet, at most `max`: user names, and `@` + name for
    /// terminals. The admin commands remove accounts while a relay runs,
    /// and only the relay touches the store, so the release is queued
    /// here and done by the relay's sweep ([`crate::relay::Relay::sweep`]).
    /// A name waiting here cannot be taken again (`Exists`): it would
    /// inherit the files.
    fn removed_accounts(&self, max: usize) -> Result<Vec<String>, DirectoryError>;
    /// The store has released these accounts' files and shares.
    fn forget_removed(&self, names: &[String]) -> Result<(), DirectoryError>;
    /// Registers a terminal for `owner`, which must be a user. `Exists` if
    /// the name is a user's or a terminal's.
    fn add_terminal(
        &self,
        name: &str,
        owner: &str,
        key: DeviceKey,
        now: u64,
    ) -> Result<(), DirectoryError>;
    /// A terminal by name; `None` for an unknown or invalid name.
    fn terminal(&self, name: &str) -> Result<Option<TerminalRecord>, DirectoryError>;
    /// Every terminal, by name.
    fn terminals(&self) -> Result<Vec<TerminalRecord>, DirectoryError>;
    /// Removes a terminal: its next `TerminalAuth` fails.
    fn remove_terminal(&self, name: &str) -> Result<(), DirectoryError>;
    /// Lets user `sender` push batches to `owner`'s terminals (`allow`),
    /// or no longer (PROTOCOL.md §11, `AllowSender`). `Full` for a new
    /// user of a peer relay past [`MAX_REMOTE_SENDERS`]. `NotFound` if either
    /// is not a user when allowing: a grant to a name nobody holds would
    /// pass to whoever registers it later. Withdrawing always works.
    /// Removing either user drops the grant.
    ///
    /// `sender` may also name a user of a peer relay, `user@relay`
    /// ([`remote_sender`], PROTOCOL.md §12.1): it is stored as it is,
    /// since this relay cannot know the peer's users (the session checks
    /// that `relay` is listed); removing the owner drops it. `InvalidName`
    /// for a name that is neither ([`validate_sender_name`]).
    fn allow_sender(&self, owner: &str, sender: &str, allow: bool) -> Result<(), DirectoryError>;
    /// Whether `owner` allows `sender` to push to its terminals (a user
    /// always may push to its own: the caller checks that first).
    fn allows_sender(&self, owner: &str, sender: &str) -> Result<bool, DirectoryError>;
    /// The senders `owner` allows to push to its terminals, by name: users,
    /// and users of peer relays (`user@relay`).
    fn allowed_senders(&self, owner: &str) -> Result<Vec<String>, DirectoryError>;
}

/// How a token is looked up: its SHA-256, so the database never holds a
/// token a thief could present.
pub(crate) fn token_key(token: &AuthToken) -> [u8; 32] {
    Sha256::digest(token.0).into()
}

/// The `NotFound` / `Exists` text for a user.
pub(crate) fn user_named(name: &str) -> String {
    format!("user {name:?}")
}

/// The `NotFound` / `Exists` text for a terminal.
pub(crate) fn terminal_named(name: &str) -> String {
    format!("terminal {name:?}")
}
