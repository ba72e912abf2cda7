//! `[forward]`: how the forwarder runs the queue of forwards to peer
//! relays (docs/design/forwarding.md §3, [`crate::forward::service`]).
//! The one place its defaults are written.

use serde::Deserialize;

/// `[forward]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardSettings {
    /// Forwards this relay instance runs at once; more wait `Queued`.
    pub max_active: u32,
    /// Attempts before a forward is `Failed` (at most 255: the wire
    /// counts attempts in a byte).
    pub max_attempts: u32,
    /// The longest wait between two attempts: the n-th failed attempt
    /// waits 2^n seconds, at most this long.
    pub backoff_cap_secs: u64,
    /// How long a claim on a running forward lasts without being renewed:
    /// a forward of an instance that died is taken up again after it.
    pub lease_secs: u64,
    /// Who may ask this relay to forward a batch: unset, every user
    /// logged in here; a list, only these users (an empty list: nobody).
    /// Forwards spend this relay's bandwidth and the peer's storage.
    pub users: Option<Vec<String>>,
    /// Forwards one user may have that are not `Done` or `Failed`; a
    /// request past it is refused with `Error{QueueFull}`, so one user
    /// cannot fill the queue every user's forwards wait in.
    pub max_open_per_user: u32,
    /// How long a `Done` or `Failed` forward is kept after it finished,
    /// in seconds: its status (`pickup forward --status`) and, for a
    /// failed one, its retry by command. The relay's sweep then deletes
    /// it, and its id reads as unknown (`UnknownCode`). At least 1:
    /// keeping none would end a forward's status the moment it is final.
    pub keep_finished_secs: u64,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        ForwardSettings {
            max_active: 4,
            max_attempts: 8,
            backoff_cap_secs: 300,
            lease_secs: 60,
            users: None,
            max_open_per_user: 64,
            keep_finished_secs: 7 * 24 * 3600,
        }
    }
}

impl ForwardSettings {
    /// Checks ranges that would stop every forward or overflow the wire.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_active == 0 {
            return Err("forward.max_active must be at least 1".into());
        }
        if !(1..=255).contains(&self.max_attempts) {
            return Err("forward.max_attempts must be within 1..=255".into());
        }
        if self.backoff_cap_secs == 0 {
            return Err("forward.backoff_cap_secs must be positive".into());
        }
        if self.lease_secs < 4 {
            return Err(
                "forward.lease_secs must be at least 4 (it is renewed every quarter)".into(),
            );
        }
        if self.max_open_per_user == 0 {
            return Err("forward.max_open_per_user must be at least 1".into());
        }
        if self.keep_finished_secs == 0 {
            return Err("forward.keep_finished_secs must be at least 1".into());
        }
        for user in self.users.iter().flatten() {
            crate::directory::validate_account_name(user)
                .map_err(|e| format!("forward.users: {user:?}: {e}"))?;
        }
        Ok(())
    }

    /// Whether `user` (logged in) may ask for a forward.
    pub fn may_forward(&self, user: &str) -> bool {
        self.users
            .as_ref()
            .is_none_or(|users| users.iter().any(|u| u == user))
    }

    /// The forwards a sweep at `now` (Unix seconds) deletes: those
    /// finished before this time.
    pub fn finished_before(&self, now: u64) -> u64 {
        now.saturating_sub(self.keep_finished_secs)
    }

    /// The wait after the `attempts`-th failed attempt: 2^attempts
    /// seconds, capped.
    pub fn backoff_secs(&self, attempts: u32) -> u64 {
        1u64.checked_shl(attempts)
            .unwrap_or(u64::MAX)
            .min(self.backoff_cap_secs)
    }
}
