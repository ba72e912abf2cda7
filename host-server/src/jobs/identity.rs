//! Identity work: checking passwords (argon2id, tens of milliseconds of
//! CPU: never on the session's thread), tokens and terminals against the
//! [`Directory`](crate::directory::Directory), and the requests on a
//! user's named files against the [`Store`](crate::store::Store).

use pickup_proto::identity::DeviceKey;
use pickup_proto::message::AuthToken;
use pickup_proto::ErrorCode;

use crate::directory::{DirectoryError, TokenInfo};
use crate::relay::Relay;
use crate::store::{Batch, BatchId, FileContent, FileRecord, NamedFile, OwnerId, StoreError};

/// Check a password and, if it is right, store the token to hand out.
pub(crate) struct Login {
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) token: AuthToken,
    pub(crate) expires_at: u64,
}

impl core::fmt::Debug for Login {
    /// The password never reaches a log, even a debug one.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What a login found: `Ok(true)` with the token stored.
#[derive(Debug)]
pub(crate) struct LoggedIn {
    pub(crate) user: String,
    pub(crate) token: AuthToken,
    pub(crate) expires_at: u64,
    pub(crate) result: Result<bool, DirectoryError>,
}

pub(super) fn login(relay: &Relay, w: Login) -> LoggedIn {
    let dir = &relay.directory;
    let result = dir.check_password(&w.user, &w.password).and_then(|ok| {
        if ok {
            dir.add_token(&w.user, &w.token, w.expires_at)?;
        }
        Ok(ok)
    });
    LoggedIn {
        user: w.user,
        token: w.token,
        expires_at: w.expires_at,
        result,
    }
}

pub(super) fn check_token(
    relay: &Relay,
    token: &AuthToken,
    now_secs: u64,
) -> Result<Option<TokenInfo>, DirectoryError> {
    relay.directory.check_token(token, now_secs)
}

/// A registered terminal's owner and key, if the name is registered.
pub(super) fn find_terminal(
    relay: &Relay,
    name: &str,
) -> Result<Option<(String, DeviceKey)>, DirectoryError> {
    Ok(relay.directory.terminal(name)?.map(|t| (t.owner, t.key)))
}

/// Who asks for a named file: a user, or a terminal acting for its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reader {
    pub(crate) user: String,
    pub(crate) terminal: Option<String>,
}

/// Look up `owner/name` for `reader`: found only if the reader may read it.
#[derive(Debug)]
pub(crate) struct FindNamed {
    pub(crate) owner: String,
    pub(crate) name: String,
    pub(crate) reader: Reader,
}

/// A named file as a one-file batch: what the download half of a session
/// streams, with `code` the session's read handle for it.
pub(super) fn find_named(relay: &Relay, w: &FindNamed) -> Result<Option<NamedFile>, StoreError> {
    let store = &relay.store;
    // A removed user's names may linger until the relay releases them:
    // they are gone already.
    let owner_exists = matches!(relay.directory.user(&w.owner), Ok(Some(_)));
    if !owner_exists {
        return Ok(None);
    }
    let Some(found) = store.find_name(&w.owner, &w.name)? else {
        return Ok(None);
    };
    let allowed = w.reader.user == w.owner
        || store.is_shared(&w.owner, &w.name, &w.reader.user)?
        || match &w.reader.terminal {
            Some(t) => store.is_shared(&w.owner, &w.name, &format!("@{t}"))?,
            None => false,
        };
    Ok(allowed.then_some(found))
}

/// Named files as the batch a session's download half serves: one file
/// for `FetchNamed`, a user's whole namespace for `ListNamed`.
pub(crate) fn named_batch(files: &[NamedFile], handle: pickup_proto::Code) -> Batch {
    Batch {
        // Not a stored batch: streams never use the id.
        id: BatchId(0),
        code: handle,
        owner: OwnerId([0; 32]),
        created_at: files.iter().map(|f| f.updated_at).max().unwrap_or(0),
        // Named files do not expire.
        expires_at: u64::MAX,
        open: false,
        files: files
            .iter()
            .map(|f| FileRecord {
                name: f.name.clone(),
                size: f.size,
                sha1: f.sha1,
                attrs: f.attrs,
                content: FileContent::Blob(f.blob),
            })
            .collect(),
    }
}

/// A change to the session user's names.
#[derive(Debug)]
pub(crate) enum NameChange {
    Remove {
        name: String,
    },
    Share {
        name: String,
        with: String,
        allow: bool,
    },
}

/// What a name change did: `Ok(false)` for "no such name (or grantee)".
pub(super) fn change_name(
    relay: &Relay,
    owner: &str,
    change: &NameChange,
    now_secs: u64,
) -> Result<bool, StoreError> {
    let store = &relay.store;
    let keep = relay.settings.auth.keep_replaced_secs;
    match change {
        NameChange::Remove { name } => store.remove_name(owner, name, now_secs, keep),
        NameChange::Share { name, with, allow } => {
            let exists = match with.strip_prefix('@') {
                Some(terminal) => relay.directory.terminal(terminal).ok().flatten().is_some(),
                None => relay.directory.user(with).ok().flatten().is_some(),
            };
            // An unknown grantee answers like an unknown name; revoking
            // works whether or not the grantee still exists.
            if !exists && *allow {
                return Ok(false);
            }
            store.share_name(owner, name, with, *allow)
        }
    }
}

/// Binds a completed named upload's files under its owner, within the
/// owner's quota (checked again here: a resumed upload was admitted
/// under the quota of its day).
#[derive(Debug)]
pub(crate) struct BindNames {
    pub(crate) owner: String,
    pub(crate) batch: BatchId,
    /// The batch's files: name and size.
    pub(crate) files: Vec<(String, u64)>,
    pub(crate) epoch: u64,
    pub(crate) now_secs: u64,
}

/// A bind's result: `Err` is the code to refuse with.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) epoch: u64,
    pub(crate) result: Result<u64, ErrorCode>,
}

pub(super) fn bind_names(relay: &Relay, w: &BindNames) -> Bound {
    let result = within_quota(relay, &w.owner, &w.files).and_then(|()| {
        relay
            .store
            .bind_names(
                &w.owner,
                w.batch,
                w.now_secs,
                relay.settings.auth.keep_replaced_secs,
            )
            .map_err(|e| {
                tracing::error!(batch = w.batch.0, "binding names failed: {e}");
                ErrorCode::Internal
            })
    });
    Bound {
        epoch: w.epoch,
        result,
    }
}

/// Whether `owner`'s names, with `files` (name, size) bound over any
/// names they replace, stay within the owner's quota.
pub(crate) fn within_quota(
    relay: &Relay,
    owner: &str,
    files: &[(String, u64)],
) -> Result<(), ErrorCode> {
    let internal = |what: &str, e: &dyn core::fmt::Display| {
        tracing::error!("quota check ({what}) failed: {e}");
        ErrorCode::Internal
    };
    let user = relay
        .directory
        .user(owner)
        .map_err(|e| internal("directory", &e))?
        .ok_or(ErrorCode::AuthFailed)?;
    if user.quota_bytes.is_none() && user.quota_files.is_none() {
        return Ok(());
    }
    let usage = relay
        .store
        .name_usage(owner)
        .map_err(|e| internal("usage", &e))?;
    let (mut bytes, mut count) = (usage.bytes, usage.files);
    for (name, size) in files {
        match relay
            .store
            .find_name(owner, name)
            .map_err(|e| internal("find", &e))?
        {
            Some(old) => bytes = bytes.saturating_sub(old.size),
            None => count += 1,
        }
        bytes = bytes.saturating_add(*size);
    }
    let over_bytes = user.quota_bytes.is_some_and(|q| bytes > q);
    let over_files = user.quota_files.is_some_and(|q| count > q);
    if over_bytes || over_files {
        Err(ErrorCode::UserQuota)
    } else {
        Ok(())
    }
}
