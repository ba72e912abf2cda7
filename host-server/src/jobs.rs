//! Work a [`Session`](crate::session::Session) hands to its driver: everything
//! that touches the store, the disk, or a hash over stored bytes.
//!
//! ```text
//!   session ── poll_job() ──► Job ── driver runs job.run(&relay) where it likes ──┐
//!      ▲                                                                           │
//!      └──────────────── handle_job_done(now, JobDone) ◄───────────────────────────┘
//! ```
//!
//! A session gives out one job at a time and takes its result before it
//! gives out the next, so the store sees a session's work in the order the
//! session decided it (a file's last write and sync before its completion,
//! a flush before a resume's lookup). The TCP driver runs jobs on tokio's
//! blocking pool, the serial driver on its port's thread, and the simulator
//! and fuzzers whenever their seed says, including never (a relay crash
//! between a job's start and its completion).
//!
//! Running a job is the only place the relay blocks: its durability contract
//! is the [`Store`]'s.

use pickup_proto::hash::{Nonce, ProofHasher, Sha1Hasher};
use pickup_proto::message::ResumeToken;
use pickup_proto::{Code, ErrorCode, Sha1Digest};

use crate::codes::{self, code_key, token_key};
use crate::relay::{lock, Lease, Relay};
use crate::store::{
    Batch, BlobId, Content, FileContent, FileRef, Lookup, LookupKey, NewBatch, NewFile, PartialId,
    Store, StoreError,
};

use std::sync::Arc;

/// Bytes read per store call when hashing stored bytes.
const READ_CHUNK: usize = 256 * 1024;

/// Most candidate blobs a proof is checked against (more than one means a
/// SHA-1 collision is stored; more than a few is an attack).
const MAX_CANDIDATES: usize = 4;

/// How long a relay over its live-batch limit asks uploaders to wait.
pub(crate) const FULL_RETRY_MS: u32 = 60_000;

/// Work to do, given out by [`Session::poll_job`](crate::session::Session::poll_job).
/// Run it with [`run`](Self::run), anywhere, then hand the result back with
/// [`Session::handle_job_done`](crate::session::Session::handle_job_done).
#[derive(Debug)]
pub struct Job {
    pub(crate) work: Work,
}

/// A finished [`Job`]'s result.
#[derive(Debug)]
pub struct JobDone {
    pub(crate) outcome: Outcome,
}

impl Job {
    /// Does the work: disk, database and hashing, blocking. Never panics on
    /// a store failure; the session decides what a failure means.
    pub fn run(self, relay: &Relay) -> JobDone {
        let outcome = match self.work {
            Work::CreateBatch(w) => Outcome::Created(create_batch(relay, w)),
            Work::FindToken { token, now_secs } => Outcome::FoundToken {
                token,
                found: find(relay, |s| s.find_by_token(&token_key(&token), now_secs)),
            },
            Work::FindCode { code, now_secs, to } => Outcome::FoundCode {
                to,
                found: find(relay, |s| s.find_by_code(&code_key(&code), now_secs)),
            },
            Work::Write(w) => Outcome::Written(write(&*relay.store, w)),
            Work::Sync(w) => Outcome::Synced(sync(&*relay.store, w)),
            Work::HashPrefix(w) => Outcome::Hashed(hash_prefix(&*relay.store, w)),
            Work::Complete(w) => Outcome::Completed(complete(&*relay.store, w)),
            Work::Reset(w) => Outcome::Reset(reset(&*relay.store, w)),
            Work::CheckProof(w) => Outcome::Proved(check_proof(&*relay.store, w)),
            Work::ReadBlob(w) => Outcome::BlobRead(read_blob(&*relay.store, w)),
        };
        JobDone { outcome }
    }

    /// A short name for logs and test traces.
    pub fn name(&self) -> &'static str {
        match self.work {
            Work::CreateBatch(_) => "create-batch",
            Work::FindToken { .. } => "find-token",
            Work::FindCode { .. } => "find-code",
            Work::Write(_) => "write",
            Work::Sync(_) => "sync",
            Work::HashPrefix(_) => "hash-prefix",
            Work::Complete(_) => "complete",
            Work::Reset(_) => "reset",
            Work::CheckProof(_) => "check-proof",
            Work::ReadBlob(_) => "read-blob",
        }
    }
}

/// The kinds of work.
#[derive(Debug)]
pub(crate) enum Work {
    CreateBatch(CreateBatch),
    FindToken {
        token: ResumeToken,
        now_secs: u64,
    },
    FindCode {
        code: Code,
        now_secs: u64,
        to: LookupFor,
    },
    Write(Write),
    Sync(Sync),
    HashPrefix(HashPrefix),
    Complete(Complete),
    Reset(Reset),
    CheckProof(CheckProof),
    ReadBlob(ReadBlob),
}

/// What a code lookup is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LookupFor {
    /// A `Fetch`: the manifest.
    Fetch,
    /// A `Read`: a stream of one file.
    Read(pickup_proto::message::Read),
}

/// What a finished job found or did.
#[derive(Debug)]
pub(crate) enum Outcome {
    Created(Result<Created, Refused>),
    FoundToken {
        token: ResumeToken,
        found: Result<Found, StoreError>,
    },
    FoundCode {
        to: LookupFor,
        found: Result<Found, StoreError>,
    },
    Written(Written),
    Synced(Synced),
    Hashed(Hashed),
    Completed(Completed),
    Reset(ResetDone),
    Proved(Proved),
    BlobRead(BlobRead),
}

/// A batch found by a lookup, with the candidate blobs of each file that
/// has no durable byte yet (what a challenge needs).
#[derive(Debug)]
pub(crate) enum Found {
    Live(Batch, Vec<Vec<BlobId>>),
    Expired,
    Unknown,
}

/// Another session took the upload over: this job did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseLost;

/// A store step of an upload, done only while the session holds the lease.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) lease: Arc<Lease>,
    pub(crate) session: u64,
}

impl Held {
    fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, LeaseLost> {
        self.lease.run(self.session, f).ok_or(LeaseLost)
    }
}

// ---- announcing and resuming -------------------------------------------------

/// One announced file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announced {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) sha1: Sha1Digest,
}

/// Create a batch under a fresh code and token, within the limits.
#[derive(Debug)]
pub(crate) struct CreateBatch {
    pub(crate) files: Vec<Announced>,
    pub(crate) total: u64,
    pub(crate) now_secs: u64,
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

fn create_batch(relay: &Relay, w: CreateBatch) -> Result<Created, Refused> {
    let s = &relay.settings;
    let store = &*relay.store;
    let internal = |what: &str, e: StoreError| {
        tracing::error!("store error creating a batch ({what}): {e}");
        Refused {
            code: ErrorCode::Internal,
            retry_after_ms: 0,
        }
    };
    let usage = store.usage().map_err(|e| internal("usage", e))?;
    if usage.batches >= s.max_live_batches {
        return Err(Refused {
            code: ErrorCode::Busy,
            retry_after_ms: FULL_RETRY_MS,
        });
    }
    if usage.bytes.saturating_add(w.total) > s.disk_quota {
        return Err(Refused {
            code: ErrorCode::Quota,
            retry_after_ms: 0,
        });
    }
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
        })
        .collect();
    let batch = store
        .create_batch(&NewBatch {
            code,
            code_key: code_key(&code),
            token_key: token_key(&token),
            created_at: w.now_secs,
            expires_at: w.now_secs.saturating_add(s.code_ttl_secs),
            files: &files,
        })
        .map_err(|e| internal("create", e))?;
    let candidates = challenge_candidates(relay, &batch);
    Ok(Created {
        batch,
        token,
        candidates,
    })
}

fn find(
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
/// relay offers instant upload (empty lists otherwise).
fn challenge_candidates(relay: &Relay, batch: &Batch) -> Vec<Vec<BlobId>> {
    batch
        .files
        .iter()
        .map(|f| match f.content {
            FileContent::Partial { durable: 0, .. } if relay.settings.instant_upload => {
                candidates(&*relay.store, f.size, &f.sha1)
            }
            _ => Vec::new(),
        })
        .collect()
}

/// Candidate blobs for `(size, sha1)`; a store error means none.
fn candidates(store: &dyn Store, size: u64, sha1: &Sha1Digest) -> Vec<BlobId> {
    if size == 0 {
        return Vec::new();
    }
    match store.candidates(size, sha1) {
        Ok(c) => c.into_iter().take(MAX_CANDIDATES).collect(),
        Err(e) => {
            tracing::warn!("candidate lookup failed: {e}");
            Vec::new()
        }
    }
}

// ---- receiving ---------------------------------------------------------------

/// Write received bytes of a file, and hash them.
#[derive(Debug)]
pub(crate) struct Write {
    pub(crate) held: Held,
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    pub(crate) partial: PartialId,
    pub(crate) offset: u64,
    pub(crate) bytes: Vec<u8>,
    /// The SHA-1 of everything before `offset`, carried along so hashing
    /// runs where the write does; `None` once hashing has failed.
    pub(crate) hasher: Option<Box<Sha1Hasher>>,
}

/// What a [`Write`] did.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    pub(crate) partial: PartialId,
    /// The bytes asked to be written: `offset..end`.
    pub(crate) offset: u64,
    pub(crate) end: u64,
    /// The hasher, updated with every byte written.
    pub(crate) hasher: Option<Box<Sha1Hasher>>,
    /// The write's buffer, emptied, to be filled again.
    pub(crate) buf: Vec<u8>,
    /// `Err` if the session no longer held the lease: nothing was done.
    pub(crate) result: Result<(), LeaseLost>,
    /// The store's answer.
    pub(crate) store: Result<(), StoreError>,
}

fn write(store: &dyn Store, mut w: Write) -> Written {
    let end = w.offset + w.bytes.len() as u64;
    let outcome = w.held.run(|| {
        if !w.bytes.is_empty() {
            store.write_partial(w.partial, w.offset, &w.bytes)?;
            if let Some(h) = w.hasher.as_mut() {
                h.update(&w.bytes);
            }
        }
        Ok(())
    });
    let (result, store) = match outcome {
        Ok(done) => (Ok(()), done),
        Err(lost) => (Err(lost), Ok(())),
    };
    w.bytes.clear();
    Written {
        epoch: w.epoch,
        file: w.file,
        partial: w.partial,
        offset: w.offset,
        end,
        hasher: w.hasher,
        buf: w.bytes,
        result,
        store,
    }
}

/// Make the first `at` bytes of a file durable (fsync, then commit `at`).
/// It may run beside a write of the same file's later bytes: the writes
/// before `at` have finished when it is given out.
#[derive(Debug)]
pub(crate) struct Sync {
    pub(crate) held: Held,
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    pub(crate) partial: PartialId,
    pub(crate) at: u64,
    /// Given out beside the ordered work (a live upload's sync), rather
    /// than in its order (the last syncs of an upload the session left).
    pub(crate) beside: bool,
}

/// What a [`Sync`] did.
#[derive(Debug)]
pub(crate) struct Synced {
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    pub(crate) partial: PartialId,
    pub(crate) at: u64,
    pub(crate) beside: bool,
    pub(crate) result: Result<Result<(), StoreError>, LeaseLost>,
}

fn sync(store: &dyn Store, w: Sync) -> Synced {
    Synced {
        epoch: w.epoch,
        file: w.file,
        partial: w.partial,
        at: w.at,
        beside: w.beside,
        result: w.held.run(|| store.sync_partial(w.partial, w.at)),
    }
}

/// Rebuild the SHA-1 of a resumed upload's durable prefix.
#[derive(Debug)]
pub(crate) struct HashPrefix {
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    pub(crate) partial: PartialId,
    pub(crate) len: u64,
}

/// What a [`HashPrefix`] found.
#[derive(Debug)]
pub(crate) struct Hashed {
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    pub(crate) partial: PartialId,
    /// The bytes asked to be hashed.
    pub(crate) len: u64,
    /// The hash of the first `found` bytes; `found < len` if the partial
    /// upload is shorter than its durable offset.
    pub(crate) hasher: Result<(Box<Sha1Hasher>, u64), StoreError>,
}

fn hash_prefix(store: &dyn Store, w: HashPrefix) -> Hashed {
    let mut h = Box::new(Sha1Hasher::new());
    let mut buf = vec![0u8; READ_CHUNK.min(usize::try_from(w.len).unwrap_or(READ_CHUNK))];
    let mut offset = 0u64;
    let hasher = loop {
        if offset >= w.len {
            break Ok((h, offset));
        }
        let want = usize::try_from(w.len - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        match store.read_partial(w.partial, offset, &mut buf[..want]) {
            Ok(0) => break Ok((h, offset)),
            Ok(n) => {
                h.update(&buf[..n]);
                offset += n as u64;
            }
            Err(e) => break Err(e),
        }
    };
    Hashed {
        epoch: w.epoch,
        file: w.file,
        partial: w.partial,
        len: w.len,
        hasher,
    }
}

/// All bytes of a file are durable: check the SHA-1, then keep the bytes
/// (a new blob, or a byte-equal one already held) or throw them away.
#[derive(Debug)]
pub(crate) struct Complete {
    pub(crate) held: Held,
    pub(crate) epoch: u64,
    pub(crate) file: FileRef,
    pub(crate) partial: PartialId,
    pub(crate) size: u64,
    pub(crate) sha1: Sha1Digest,
    /// The SHA-1 of every byte, given by the session when the job starts.
    pub(crate) hasher: Option<Box<Sha1Hasher>>,
}

/// What a [`Complete`] decided.
#[derive(Debug)]
pub(crate) struct Completed {
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    pub(crate) result: Result<Verdict, LeaseLost>,
}

/// A completed file's fate.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Verified and kept.
    Kept(BlobId),
    /// The SHA-1 did not match: the bytes are gone (durable offset 0).
    Mismatch,
    /// The SHA-1 did not match and the bytes could not be thrown away.
    MismatchNotReset(StoreError),
    /// Keeping the bytes failed; the file stays receiving.
    Failed(StoreError),
}

fn complete(store: &dyn Store, w: Complete) -> Completed {
    // Without a hasher nothing can be verified: a mismatch by construction.
    let digest = w.hasher.map(|h| h.digest());
    let result = w.held.run(|| {
        let Some(digest) = digest.filter(|d| *d == w.sha1) else {
            return match store.reset_partial(w.partial) {
                Ok(()) => Verdict::Mismatch,
                Err(e) => Verdict::MismatchNotReset(e),
            };
        };
        let content = Content {
            size: w.size,
            sha1: digest,
        };
        match store.complete_file(w.file, w.partial, &content) {
            Ok(blob) => Verdict::Kept(blob),
            Err(e) => Verdict::Failed(e),
        }
    });
    Completed {
        epoch: w.epoch,
        file: w.file.index,
        result,
    }
}

/// Throw a file's bytes away (it restarts from 0).
#[derive(Debug)]
pub(crate) struct Reset {
    pub(crate) held: Held,
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    pub(crate) partial: PartialId,
    pub(crate) reason: ErrorCode,
}

/// What a [`Reset`] did.
#[derive(Debug)]
pub(crate) struct ResetDone {
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    pub(crate) reason: ErrorCode,
    pub(crate) result: Result<Result<(), StoreError>, LeaseLost>,
}

fn reset(store: &dyn Store, w: Reset) -> ResetDone {
    ResetDone {
        epoch: w.epoch,
        file: w.file,
        reason: w.reason,
        result: w.held.run(|| store.reset_partial(w.partial)),
    }
}

// ---- proof of ownership ------------------------------------------------------

/// Check a terminal's proof against the blobs that may hold its file, and
/// link the file to the first one it proves.
#[derive(Debug)]
pub(crate) struct CheckProof {
    pub(crate) held: Held,
    pub(crate) epoch: u64,
    pub(crate) file: FileRef,
    pub(crate) size: u64,
    pub(crate) sha1: Sha1Digest,
    pub(crate) nonce: Nonce,
    pub(crate) proof: Sha1Digest,
}

/// What a [`CheckProof`] decided.
#[derive(Debug)]
pub(crate) struct Proved {
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    /// The blob the file is now linked to, if the proof matched one.
    pub(crate) result: Result<Option<BlobId>, LeaseLost>,
}

fn check_proof(store: &dyn Store, w: CheckProof) -> Proved {
    let mut linked = Ok(None);
    for blob in candidates(store, w.size, &w.sha1) {
        match blob_proof(store, blob, w.size, &w.nonce) {
            Ok(p) if p == w.proof => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(blob = blob.0, "cannot read a candidate blob: {e}");
                continue;
            }
        }
        match w.held.run(|| store.link_file(w.file, blob)) {
            Err(lost) => {
                linked = Err(lost);
                break;
            }
            Ok(Ok(true)) => {
                linked = Ok(Some(blob));
                break;
            }
            // Collected meanwhile: try the next, or upload.
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(
                    batch = w.file.batch.0,
                    file = w.file.index,
                    "link failed: {e}"
                );
                break;
            }
        }
    }
    Proved {
        epoch: w.epoch,
        file: w.file.index,
        result: linked,
    }
}

/// The proof of ownership of a stored blob for `nonce`.
fn blob_proof(
    store: &dyn Store,
    blob: BlobId,
    size: u64,
    nonce: &Nonce,
) -> Result<Sha1Digest, StoreError> {
    let mut hasher = ProofHasher::new(nonce);
    let mut buf = vec![0u8; READ_CHUNK.min(usize::try_from(size).unwrap_or(READ_CHUNK))];
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from(size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = store.read_blob(blob, offset, &mut buf[..want])?;
        if n == 0 {
            return Err(StoreError::Corrupt(format!("blob {} is short", blob.0)));
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher.finish())
}

// ---- downloading -------------------------------------------------------------

/// Read the next bytes of a stream's blob ahead of the frames that carry them.
#[derive(Debug)]
pub(crate) struct ReadBlob {
    pub(crate) stream: u64,
    pub(crate) blob: BlobId,
    pub(crate) offset: u64,
    pub(crate) len: usize,
    /// A buffer to reuse.
    pub(crate) buf: Vec<u8>,
}

/// What a [`ReadBlob`] read.
#[derive(Debug)]
pub(crate) struct BlobRead {
    pub(crate) stream: u64,
    pub(crate) offset: u64,
    /// The bytes read from `offset` on (fewer than asked only at an error).
    pub(crate) bytes: Vec<u8>,
    pub(crate) result: Result<(), StoreError>,
}

fn read_blob(store: &dyn Store, w: ReadBlob) -> BlobRead {
    let mut bytes = w.buf;
    bytes.clear();
    bytes.resize(w.len, 0);
    let mut got = 0;
    let mut result = Ok(());
    while got < w.len {
        match store.read_blob(w.blob, w.offset + got as u64, &mut bytes[got..]) {
            Ok(0) => {
                result = Err(StoreError::Corrupt(format!("blob {} is short", w.blob.0)));
                break;
            }
            Ok(n) => got += n,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    bytes.truncate(got);
    BlobRead {
        stream: w.stream,
        offset: w.offset,
        bytes,
        result,
    }
}

/// The lookup key of a resume token (for tests that seed a store).
#[doc(hidden)]
pub fn resume_key(token: &ResumeToken) -> LookupKey {
    token_key(token)
}
