//! [`AuthSettings`]: how long logins last, how many failures lock what,
//! what anonymous sessions may do, and what a password hash costs. The
//! one place their defaults are written; `[auth]` in the config file
//! ([`crate::config`]) overrides them.

use super::password::PasswordParams;

/// Authentication settings (PROTOCOL.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// How long a login token stays valid, in seconds.
    pub token_ttl_secs: u64,
    /// Failed authentications of one account (user or terminal) within
    /// `account_lock_secs` of each other that lock it ...
    pub account_failures: u32,
    /// ... for this many seconds at most ([`crate::auth_limit`]).
    pub account_lock_secs: u64,
    /// Failed authentications one peer may make ...
    pub peer_failures: u32,
    /// ... within this many seconds, whatever the accounts.
    pub peer_window_secs: u64,
    /// Sessions that did not authenticate may upload batches.
    pub allow_anonymous_upload: bool,
    /// Sessions that did not authenticate may download batches.
    pub allow_anonymous_download: bool,
    /// What hashing a new password costs (`[auth.password]`).
    pub password: PasswordParams,
    /// How long a named file's replaced or removed content stays readable
    /// for downloads that began on it, in seconds.
    pub keep_replaced_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            token_ttl_secs: 30 * 24 * 3600,
            account_failures: 5,
            account_lock_secs: 60,
            peer_failures: 20,
            peer_window_secs: 600,
            allow_anonymous_upload: true,
            allow_anonymous_download: true,
            password: PasswordParams::DEFAULT,
            keep_replaced_secs: 24 * 3600,
        }
    }
}

impl AuthSettings {
    /// Checks ranges that would otherwise fail at the first login, or
    /// silently disable a limit.
    pub fn validate(&self) -> Result<(), String> {
        if self.token_ttl_secs == 0 {
            return Err("auth.token_ttl_secs must be positive".into());
        }
        if self.account_failures == 0 || self.peer_failures == 0 {
            return Err("auth.account_failures and auth.peer_failures must be at least 1".into());
        }
        if self.account_lock_secs == 0 || self.peer_window_secs == 0 {
            return Err("auth.account_lock_secs and auth.peer_window_secs must be positive".into());
        }
        self.password
            .validate()
            .map_err(|e| format!("auth.password: {e}"))
    }
}
