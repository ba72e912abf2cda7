//! Receiving: writing bytes and hashing them, syncs, re-hashing a prefix,
//! and a file's verdict or reset.
//!
//! The session hashes a frame's bytes as it takes them
//! (`session::upload::hashing`). A write that carries its file's hasher,
//! after a re-hash while the hasher catches up, hashes its bytes right
//! after writing them, on the same thread, while they are still in the
//! CPU's cache. Hashed later, after the megabytes that the socket, the
//! page cache and the other writes move meanwhile, they come from memory:
//! on the bench's machine, SHA-1 over one buffer hashed again and again ran
//! at 1,750–1,910 MiB/s for buffers of 8 MiB or less and at 1,080–1,130
//! MiB/s for 16 MiB or more.

use crate::running_sha1::{Midstate, RunningSha1};
use pickup_proto::{ErrorCode, Sha1Digest};

use super::pieces::Pieces;
use super::{Held, LeaseLost, READ_CHUNK};
use crate::store::{BatchId, BlobId, Content, FileRef, PartialId, Store, StoreError};

/// Write received bytes of a file, and hash them into the file's running
/// SHA-1 when the session gave the write its hasher.
#[derive(Debug)]
pub(crate) struct Write {
    pub(crate) held: Held,
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    pub(crate) partial: PartialId,
    /// The file offset of the first byte of `bufs`.
    pub(crate) offset: u64,
    /// The file's bytes from `offset` on, one piece after another, written
    /// with one call; with a hasher, each is written and then hashed before
    /// the next, so the hash reads what the write just read.
    pub(crate) bufs: Pieces,
    /// The file's running SHA-1 and how many of its bytes it covers (at
    /// least `offset`, less than the end of `bufs`): the job hashes the
    /// bytes past it once they are written.
    pub(crate) hasher: Option<(Box<RunningSha1>, u64)>,
}

impl Write {
    /// The offset just past the write's last byte.
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.len() as u64
    }

    /// The bytes the write carries.
    pub(crate) fn len(&self) -> usize {
        self.bufs.len()
    }
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
    /// The write's pieces: their copies' buffers are filled again.
    pub(crate) bufs: Pieces,
    /// The hasher the write carried and how many of the file's bytes it
    /// covers now: `end` if every byte was written, less if a write failed.
    pub(crate) hasher: Option<(Box<RunningSha1>, u64)>,
    /// `Err` if the session no longer held the lease: nothing was done.
    pub(crate) result: Result<(), LeaseLost>,
    /// The store's answer.
    pub(crate) store: Result<(), StoreError>,
}

pub(super) fn write(store: &dyn Store, w: Write) -> Written {
    let end = w.end();
    let mut hasher = w.hasher;
    let outcome = w.held.step(|| {
        if hasher.is_none() {
            let pieces: Vec<&[u8]> = w.bufs.iter().collect();
            return store.write_partial_pieces(w.partial, w.offset, &pieces);
        }
        let mut at = w.offset;
        for buf in w.bufs.iter().filter(|b| !b.is_empty()) {
            store.write_partial(w.partial, at, buf)?;
            // Only written bytes are hashed: what the hash covers is on disk.
            if let Some((hasher, hashed)) = hasher.as_mut() {
                let skip = usize::try_from(hashed.saturating_sub(at)).unwrap_or(usize::MAX);
                if let Some(rest) = buf.get(skip..) {
                    hasher.update(rest);
                    *hashed = at + buf.len() as u64;
                }
            }
            at += buf.len() as u64;
        }
        Ok(())
    });
    let (result, store) = match outcome {
        Ok(done) => (Ok(()), done),
        Err(lost) => (Err(lost), Ok(())),
    };
    Written {
        epoch: w.epoch,
        file: w.file,
        partial: w.partial,
        offset: w.offset,
        end,
        bufs: w.bufs,
        hasher,
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
    /// The file's SHA-1 state over a prefix of those bytes, recorded with
    /// them.
    pub(crate) hashed: Option<Midstate>,
    /// Given out beside the ordered work (a live upload's sync), rather
    /// than in its order (the last syncs of an upload the session left).
    pub(crate) beside: bool,
    /// The upload progressed: its batch is not deleted as stale before
    /// this time (Unix seconds), recorded after the sync.
    pub(crate) keep_until: Option<u64>,
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

pub(super) fn sync(store: &dyn Store, w: Sync) -> Synced {
    Synced {
        epoch: w.epoch,
        file: w.file,
        partial: w.partial,
        at: w.at,
        beside: w.beside,
        result: w.held.step(|| {
            store.sync_partial(w.partial, w.at, w.hashed.as_ref())?;
            keep(store, w.held.lease.batch, w.keep_until);
            Ok(())
        }),
    }
}

/// Records an upload's progress, so its batch does not go stale before
/// `until`. The bytes are kept either way; a batch not kept longer only
/// goes stale sooner.
fn keep(store: &dyn Store, batch: BatchId, until: Option<u64>) {
    if let Some(until) = until {
        if let Err(e) = store.keep_incomplete(batch, until) {
            tracing::warn!("cannot record an upload's progress: {e}");
        }
    }
}

/// Rebuild the SHA-1 of a resumed upload's durable prefix: from the state
/// recorded with it, reading only the bytes that state does not cover.
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
    pub(crate) hasher: Result<(Box<RunningSha1>, u64), StoreError>,
}

pub(super) fn hash_prefix(store: &dyn Store, w: HashPrefix) -> Hashed {
    let start = match store.partial_hash_state(w.partial) {
        Ok(Some(m)) if m.len <= w.len => m,
        Ok(_) => Midstate::START,
        Err(e) => {
            tracing::warn!(partial = w.partial.0, "no hash state, hashing from 0: {e}");
            Midstate::START
        }
    };
    let mut h = Box::new(RunningSha1::from_midstate(start));
    let mut offset = start.len;
    let mut buf = vec![0u8; READ_CHUNK.min(usize::try_from(w.len - offset).unwrap_or(READ_CHUNK))];
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
    pub(crate) hasher: Option<Box<RunningSha1>>,
    /// As [`Sync::keep_until`]: a file arriving whole is progress too
    /// (small files complete without a sync).
    pub(crate) keep_until: Option<u64>,
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

/// `threshold` is the disclosure threshold the content gets if it becomes
/// a new blob ([`crate::disclosure::draw_threshold`]).
pub(super) fn complete(store: &dyn Store, w: Complete, threshold: u32) -> Completed {
    // Without a hasher nothing can be verified: a mismatch by construction.
    let digest = w.hasher.map(|h| h.digest());
    let result = w.held.step(|| {
        let Some(digest) = digest.filter(|d| *d == w.sha1) else {
            return match store.reset_partial(w.partial) {
                Ok(()) => Ok(Verdict::Mismatch),
                Err(StoreError::Fenced) => Err(StoreError::Fenced),
                Err(e) => Ok(Verdict::MismatchNotReset(e)),
            };
        };
        let content = Content {
            size: w.size,
            sha1: digest,
            threshold,
        };
        match store.complete_file(w.file, w.partial, &content) {
            Ok(blob) => {
                keep(store, w.file.batch, w.keep_until);
                Ok(Verdict::Kept(blob))
            }
            Err(StoreError::Fenced) => Err(StoreError::Fenced),
            Err(e) => Ok(Verdict::Failed(e)),
        }
    });
    let result = result.map(|r| r.unwrap_or_else(Verdict::Failed));
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

pub(super) fn reset(store: &dyn Store, w: Reset) -> ResetDone {
    ResetDone {
        epoch: w.epoch,
        file: w.file,
        reason: w.reason,
        result: w.held.step(|| store.reset_partial(w.partial)),
    }
}
