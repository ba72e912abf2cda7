//! [`MemoryDirectory`]: the directory in memory, for the simulator, the
//! fuzzers and unit tests. It hashes passwords as the SQLite one does
//! (build it with `PasswordParams::FAST_FOR_TESTS` to keep that cheap).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use pickup_proto::identity::DeviceKey;
use pickup_proto::message::AuthToken;

use super::password::{self, DummyHash, PasswordParams};
use super::{
    check_remote_room, terminal_named, token_key, user_named, validate_account_name,
    validate_sender_name, Directory, DirectoryError, TerminalRecord, TokenInfo, UserRecord,
};

#[derive(Debug, Default)]
struct State {
    /// Each user with its password hash.
    users: BTreeMap<String, (UserRecord, String)>,
    tokens: HashMap<[u8; 32], TokenInfo>,
    terminals: BTreeMap<String, TerminalRecord>,
    /// See [`Directory::removed_accounts`].
    removed: std::collections::BTreeSet<String>,
    /// (owner, sender): see [`Directory::allow_sender`].
    allowed: std::collections::BTreeSet<(String, String)>,
}

impl State {
    /// `Exists` if `name` is any account's.
    fn free(&self, name: &str) -> Result<(), DirectoryError> {
        if self.users.contains_key(name) {
            return Err(DirectoryError::Exists(user_named(name)));
        }
        if self.terminals.contains_key(name) {
            return Err(DirectoryError::Exists(terminal_named(name)));
        }
        if self.removed.contains(name) || self.removed.contains(&format!("@{name}")) {
            return Err(DirectoryError::Exists(format!(
                "{} (removed; its files are released at the relay's next sweep)",
                user_named(name)
            )));
        }
        Ok(())
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut (UserRecord, String), DirectoryError> {
        self.users
            .get_mut(name)
            .ok_or_else(|| DirectoryError::NotFound(user_named(name)))
    }
}

/// Users, tokens and terminals in a mutex.
#[derive(Debug)]
pub struct MemoryDirectory {
    params: PasswordParams,
    dummy: DummyHash,
    state: Mutex<State>,
}

impl MemoryDirectory {
    /// An empty directory hashing new passwords under `params`.
    pub fn new(params: PasswordParams) -> Self {
        MemoryDirectory {
            params,
            dummy: DummyHash::new(params),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave a half-made change: every
        // operation changes the maps only after its checks passed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Directory for MemoryDirectory {
    fn add_user(&self, name: &str, password: &str, now: u64) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        self.state().free(name)?;
        // Hashed outside the lock: argon2 takes milliseconds.
        let hash = password::hash(password, self.params)?;
        let mut state = self.state();
        state.free(name)?;
        let record = UserRecord {
            name: name.to_owned(),
            quota_bytes: None,
            quota_files: None,
            created_at: now,
        };
        state.users.insert(name.to_owned(), (record, hash));
        Ok(())
    }

    fn set_password(&self, name: &str, password: &str) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        self.state().user_mut(name)?;
        let hash = password::hash(password, self.params)?;
        let mut state = self.state();
        state.user_mut(name)?.1 = hash;
        state.tokens.retain(|_, t| t.user != name);
        Ok(())
    }

    fn remove_user(&self, name: &str) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        let mut state = self.state();
        if state.users.remove(name).is_none() {
            return Err(DirectoryError::NotFound(user_named(name)));
        }
        state.tokens.retain(|_, t| t.user != name);
        state.allowed.retain(|(o, s)| o != name && s != name);
        let owned: Vec<String> = state
            .terminals
            .values()
            .filter(|t| t.owner == name)
            .map(|t| format!("@{}", t.name))
            .collect();
        state.removed.extend(owned);
        state.terminals.retain(|_, t| t.owner != name);
        state.removed.insert(name.to_owned());
        Ok(())
    }

    fn set_quota(
        &self,
        name: &str,
        bytes: Option<u64>,
        files: Option<u64>,
    ) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        let mut state = self.state();
        let record = &mut state.user_mut(name)?.0;
        record.quota_bytes = bytes;
        record.quota_files = files;
        Ok(())
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>, DirectoryError> {
        Ok(self.state().users.get(name).map(|(u, _)| u.clone()))
    }

    fn users(&self) -> Result<Vec<UserRecord>, DirectoryError> {
        Ok(self
            .state()
            .users
            .values()
            .map(|(u, _)| u.clone())
            .collect())
    }

    fn check_password(&self, name: &str, password: &str) -> Result<bool, DirectoryError> {
        let stored = self.state().users.get(name).map(|(_, h)| h.clone());
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
        let mut state = self.state();
        if !state.users.contains_key(user) {
            return Err(DirectoryError::NotFound(user_named(user)));
        }
        let info = TokenInfo {
            user: user.to_owned(),
            expires_at,
        };
        state.tokens.insert(token_key(token), info);
        Ok(())
    }

    fn check_token(
        &self,
        token: &AuthToken,
        now: u64,
    ) -> Result<Option<TokenInfo>, DirectoryError> {
        let state = self.state();
        Ok(state
            .tokens
            .get(&token_key(token))
            .filter(|t| t.expires_at > now)
            .cloned())
    }

    fn revoke_token(&self, token: &AuthToken) -> Result<bool, DirectoryError> {
        Ok(self.state().tokens.remove(&token_key(token)).is_some())
    }

    fn remove_expired_tokens(&self, now: u64) -> Result<u64, DirectoryError> {
        let mut state = self.state();
        let before = state.tokens.len();
        state.tokens.retain(|_, t| t.expires_at > now);
        Ok((before - state.tokens.len()) as u64)
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
        let mut state = self.state();
        state.free(name)?;
        state.user_mut(owner)?;
        let record = TerminalRecord {
            name: name.to_owned(),
            owner: owner.to_owned(),
            key,
            created_at: now,
        };
        state.terminals.insert(name.to_owned(), record);
        Ok(())
    }

    fn terminal(&self, name: &str) -> Result<Option<TerminalRecord>, DirectoryError> {
        Ok(self.state().terminals.get(name).cloned())
    }

    fn terminals(&self) -> Result<Vec<TerminalRecord>, DirectoryError> {
        Ok(self.state().terminals.values().cloned().collect())
    }

    fn remove_terminal(&self, name: &str) -> Result<(), DirectoryError> {
        validate_account_name(name)?;
        let mut state = self.state();
        match state.terminals.remove(name) {
            Some(_) => {
                state.removed.insert(format!("@{name}"));
                Ok(())
            }
            None => Err(DirectoryError::NotFound(terminal_named(name))),
        }
    }

    fn removed_accounts(&self, max: usize) -> Result<Vec<String>, DirectoryError> {
        Ok(self.state().removed.iter().take(max).cloned().collect())
    }

    fn forget_removed(&self, names: &[String]) -> Result<(), DirectoryError> {
        let mut state = self.state();
        for name in names {
            state.removed.remove(name);
        }
        Ok(())
    }

    fn allow_sender(&self, owner: &str, sender: &str, allow: bool) -> Result<(), DirectoryError> {
        validate_account_name(owner)?;
        validate_sender_name(sender)?;
        let mut state = self.state();
        let pair = (owner.to_owned(), sender.to_owned());
        if !allow {
            state.allowed.remove(&pair);
            return Ok(());
        }
        // A peer relay's user is nobody here to look up.
        let local = [owner, sender].into_iter().filter(|n| !n.contains('@'));
        for name in local {
            if !state.users.contains_key(name) {
                return Err(DirectoryError::NotFound(user_named(name)));
            }
        }
        if sender.contains('@') && !state.allowed.contains(&pair) {
            let held = state
                .allowed
                .iter()
                .filter(|(o, s)| o == owner && s.contains('@'))
                .count();
            check_remote_room(held as u64)?;
        }
        state.allowed.insert(pair);
        Ok(())
    }

    fn allows_sender(&self, owner: &str, sender: &str) -> Result<bool, DirectoryError> {
        Ok(self
            .state()
            .allowed
            .contains(&(owner.to_owned(), sender.to_owned())))
    }

    fn allowed_senders(&self, owner: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(self
            .state()
            .allowed
            .iter()
            .filter(|(o, _)| o == owner)
            .map(|(_, s)| s.clone())
            .collect())
    }
}
