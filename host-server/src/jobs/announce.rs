//! Announcing and resuming: creating a batch under a fresh code, and the
//! lookups by code and token (with the candidates a challenge needs).

use pickup_proto::message::{self, ResumeToken};
use pickup_proto::{ErrorCode, Instant, Sha1Digest};

use super::Found;
use crate::codes::{self, code_key, token_key};
use crate::disclosure;
use crate::metrics::InstantUpload;
use crate::quota::{Owner, Refusal, Ticket};
use crate::relay::{lock, unix_secs, Relay};
use crate::settings::Settings;
use crate::store::{
    Attrs, Batch, BlobId, FileContent, Lookup, NewBatch, NewFile, OwnerId, Store, StoreError,
};

/// Most candidate blobs a proof is checked against (more than one means a
/// SHA-1 collision is stored; more than a few is an attack).
const MAX_CANDIDATES: usize = 4;

/// How long a relay over its live-batch limit asks uploaders to wait.
const FULL_RETRY_MS: u32 = 60_000;

/// One announced file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announced {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) sha1: Sha1Digest,
    pub(crate) attrs: Option<Attrs>,
}

/// Create a batch under a fresh code and token, within the limits.
#[derive(Debug)]
pub(crate) struct CreateBatch {
    pub(crate) files: Vec<Announced>,
    pub(crate) total: u64,
    /// Whom the batch's reservation and slot are charged to.
    pub(crate) owner: Owner,
    pub(crate) now: Instant,
    /// The token family the batch joins; `None` starts one from its token,
    /// unless `join` names a live batch, whose family it joins.
    pub(crate) family: Option<OwnerId>,
    /// The token of a `Join` (PROTOCOL.md §7.1).
    pub(crate) join: Option<ResumeToken>,
    /// A `NamedPut` batch: the user whose quota must hold its files.
    pub(crate) named: Option<String>,
    /// Created open, for files to be added before its close (a tus batch).
    pub(crate) open: bool,
}

/// A batch created.
#[derive(Debug)]
pub(crate) struct Created {
    pub(crate) batch: Batch,
    pub(crate) token: ResumeToken,
    pub(crate) candidates: Vec<Vec<BlobId>>,
}

/// Why no batch was created: the error and the retry hint to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) code: ErrorCode,
    pub(crate) retry_after_ms: u32,
}

/// Whether a batch of `files` files and `total` bytes may be announced
/// at all: the relay's per-batch limits, checked before anything else
/// (the wire's `BatchOpen`, a tus creation).
pub(crate) fn check_batch(settings: &Settings, files: u16, total: u64) -> Result<(), ErrorCode> {
    if files == 0 || files > settings.max_files_per_batch {
        return Err(ErrorCode::TooManyFiles);
    }
    if total > settings.max_batch_size {
        return Err(ErrorCode::TooLarge);
    }
    Ok(())
}

/// Whether one file may be announced under `name` with `size` bytes: the
/// name rules every downloader relies on, then the file-size limit (the
/// wire's `FileAnnounce`, a tus creation).
pub(crate) fn check_file(settings: &Settings, name: &str, size: u64) -> Result<(), ErrorCode> {
    message::validate_name(name)?;
    if size > settings.max_file_size {
        return Err(ErrorCode::TooLarge);
    }
    Ok(())
}

/// Takes a reservation for the unsent bytes of `batch` (owned by `owner`)
/// if it holds none, under the admission lock like a new batch's
/// admission (see [`crate::quota::Quotas::resume`]): a stalled upload's
/// reservation was released, or the relay restarted.
pub(crate) fn reserve_again(
    relay: &Relay,
    owner: &Owner,
    batch: &Batch,
    now: Instant,
) -> Result<(), Refusal> {
    if batch.ready() {
        return Ok(());
    }
    let unsent = batch.total_size().saturating_sub(batch.received());
    let mut quotas = relay.quotas();
    let stored = relay.store.usage().map(|u| u.bytes).unwrap_or(0);
    quotas.resume(owner, batch.id, unsent, stored, now)
}

pub(crate) fn create_batch(relay: &Relay, w: CreateBatch) -> Result<Created, Refused> {
    if let Some(owner) = &w.named {
        // Refused before a byte is stored; checked again when the names
        // are bound, since other uploads of the user may finish first.
        let files: Vec<(String, u64)> = w.files.iter().map(|f| (f.name.clone(), f.size)).collect();
        super::within_quota(relay, owner, &files).map_err(|code| Refused {
            code,
            retry_after_ms: 0,
        })?;
    }
    let ticket = admit(relay, &w)?;
    match create_admitted(relay, &w) {
        Ok(created) => {
            relay.quotas().bind(ticket, created.batch.id, w.now);
            Ok(created)
        }
        Err(refused) => {
            relay.quotas().cancel(ticket);
            Err(refused)
        }
    }
}

fn internal(what: &str, e: StoreError) -> Refused {
    tracing::error!("store error creating a batch ({what}): {e}");
    Refused {
        code: ErrorCode::Internal,
        retry_after_ms: 0,
    }
}

/// Checks the limits and reserves the batch's slot and bytes, all under
/// the admission lock, so concurrent announces cannot overshoot them.
fn admit(relay: &Relay, w: &CreateBatch) -> Result<Ticket, Refused> {
    let mut quotas = relay.quotas();
    let usage = relay.store.usage().map_err(|e| internal("usage", e))?;
    if usage.batches.saturating_add(quotas.creating()) >= relay.settings.max_live_batches {
        return Err(Refused {
            code: ErrorCode::Busy,
            retry_after_ms: FULL_RETRY_MS,
        });
    }
    quotas
        .admit(&w.owner, w.total, usage.bytes, w.now)
        .map_err(|r: Refusal| {
            tracing::debug!(owner = %w.owner, bytes = w.total, code = ?r.code, "batch refused");
            Refused {
                code: r.code,
                retry_after_ms: r.retry_after_ms,
            }
        })
}

fn create_admitted(relay: &Relay, w: &CreateBatch) -> Result<Created, Refused> {
    let s = &relay.settings;
    let store = &*relay.store;
    // Re-roll until the code is not in use (live or remembered as expired);
    // with 65-bit codes a second roll is already unlikely.
    let mut code = None;
    for _ in 0..16 {
        let Some(c) = codes::random_code(&mut **lock(&relay.rng), s.code_len) else {
            break;
        };
        if !store
            .code_taken(&code_key(&c))
            .map_err(|e| internal("code", e))?
        {
            code = Some(c);
            break;
        }
    }
    let token = codes::random_token(&mut **lock(&relay.rng));
    let (Some(code), Some(token)) = (code, token) else {
        tracing::error!("no fresh code or token: the random source failed");
        return Err(Refused {
            code: ErrorCode::Internal,
            retry_after_ms: 0,
        });
    };
    let files: Vec<NewFile<'_>> = w
        .files
        .iter()
        .map(|f| NewFile {
            name: &f.name,
            size: f.size,
            sha1: f.sha1,
            attrs: f.attrs,
        })
        .collect();
    let now_secs = unix_secs(w.now);
    let family = match (w.family, w.join) {
        (Some(family), _) => family,
        (None, Some(join)) => match store.find_by_token(&token_key(&join), now_secs) {
            Ok(Lookup::Live(b)) => b.owner,
            Ok(_) => codes::family_owner(&token),
            Err(e) => return Err(internal("join", e)),
        },
        (None, None) => codes::family_owner(&token),
    };
    let batch = store
        .create_batch(&NewBatch {
            code,
            code_key: code_key(&code),
            token_key: token_key(&token),
            owner: family,
            created_at: now_secs,
            expires_at: now_secs.saturating_add(s.code_ttl_secs),
            stale_at: now_secs.saturating_add(s.quota.incomplete_ttl_secs),
            files: &files,
            open: w.open,
        })
        .map_err(|e| internal("create", e))?;
    let candidates = challenge_candidates(relay, &batch);
    count_instant(relay, &batch, &candidates);
    Ok(Created {
        batch,
        token,
        candidates,
    })
}

/// Counts the misses of instant upload, decided at creation: a non-empty
/// file with no held content (none the owner may learn of) to challenge
/// it against. Challenged files are counted when their proof is checked
/// (`session::upload::proof`), as hits or failed proofs.
fn count_instant(relay: &Relay, batch: &Batch, candidates: &[Vec<BlobId>]) {
    if !relay.settings.instant_upload {
        return;
    }
    for (f, c) in batch.files.iter().zip(candidates) {
        if f.size > 0 && c.is_empty() {
            relay.metrics().instant_upload(InstantUpload::Miss, 0);
        }
    }
}

/// The batch behind a `Resume`'s token. A live upload still to finish is
/// taken over ([`Store::take_upload`]) before its session takes the lease:
/// another relay instance that held it can make nothing more durable, and
/// the batch returned holds all it did. (An open batch is not resumed over
/// the wire, and a ready one has nothing left to upload.)
pub(super) fn resume(
    store: &dyn Store,
    token: &ResumeToken,
    now_secs: u64,
) -> Result<Lookup, StoreError> {
    match store.find_by_token(&token_key(token), now_secs)? {
        Lookup::Live(b) if !b.open && !b.ready() => match store.take_upload(b.id) {
            Ok(b) => Ok(Lookup::Live(b)),
            // Swept between the two calls: as if the lookup came later.
            Err(StoreError::NotFound) => Ok(Lookup::Expired),
            Err(e) => Err(e),
        },
        found => Ok(found),
    }
}

pub(super) fn find(
    relay: &Relay,
    lookup: impl FnOnce(&dyn Store) -> Result<Lookup, StoreError>,
) -> Result<Found, StoreError> {
    Ok(match lookup(&*relay.store)? {
        Lookup::Live(batch) => {
            let candidates = challenge_candidates(relay, &batch);
            Found::Live(batch, candidates)
        }
        Lookup::Expired => Found::Expired,
        Lookup::Unknown => Found::Unknown,
    })
}

/// Candidate blobs per file for files without a durable byte, when the
/// relay offers instant upload (empty lists otherwise): only those whose
/// holding the batch's owner may learn ([`crate::disclosure`]).
pub(super) fn challenge_candidates(relay: &Relay, batch: &Batch) -> Vec<Vec<BlobId>> {
    batch
        .files
        .iter()
        .map(|f| match f.content {
            FileContent::Partial { durable: 0, .. } if relay.settings.instant_upload => {
                disclosure::disclosable(
                    &*relay.store,
                    &relay.settings.disclosure,
                    &batch.owner,
                    candidates(&*relay.store, f.size, &f.sha1),
                )
            }
            _ => Vec::new(),
        })
        .collect()
}

/// Candidate blobs for `(size, sha1)`; a store error means none.
pub(super) fn candidates(store: &dyn Store, size: u64, sha1: &Sha1Digest) -> Vec<BlobId> {
    if size == 0 {
        return Vec::new();
    }
    match store.candidates(size, sha1, MAX_CANDIDATES) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("candidate lookup failed: {e}");
            Vec::new()
        }
    }
}
