//! The state of one file of an upload.
//!
//! ```text
//!   Challenged ──Proof──► Proving ──linked──► Done
//!       │                    └──refused──► Receiving
//!       └─(no candidates)──► Receiving ──last byte──► Verifying ──kept──► Done
//!                               ▲                        └──mismatch──► Receiving (from 0)
//!                               └──── Resetting ◄── data past the size
//! ```

use pickup_proto::hash::Nonce;

use crate::running_sha1::{Midstate, RunningSha1};
use pickup_proto::Sha1Digest;

use crate::jobs::Pieces;
use crate::store::{BlobId, PartialId};

/// Where the SHA-1 of a receiving file's bytes is.
#[derive(Debug)]
pub(super) enum Hashing {
    /// Here: the SHA-1 of the file's first `at` bytes.
    Home { hasher: Box<RunningSha1>, at: u64 },
    /// With a write that hashes what it writes and brings it back (while it
    /// catches up after a re-hash), or with a verdict.
    Away,
    /// Unknown (a resumed upload, or after a failure): the durable prefix
    /// is re-hashed from the store before more bytes count.
    Unknown,
    /// Being re-hashed by a job.
    Rehashing,
}

/// A file whose bytes are arriving.
#[derive(Debug)]
pub(super) struct Receiving {
    pub(super) partial: PartialId,
    /// Bytes taken (contiguous from 0): written, queued or buffered.
    pub(super) received: u64,
    /// Bytes durable and acknowledged.
    pub(super) acked: u64,
    /// Bytes written by writes that have finished (contiguous from 0).
    pub(super) written: u64,
    /// The prefix a sync is wanted for, once the writes before it are done.
    pub(super) sync_wanted: u64,
    /// The highest prefix a sync was given out for.
    pub(super) syncing_to: u64,
    /// Bytes taken but not yet given to a write: `received - taken.len()..received`.
    pub(super) taken: Pieces,
    /// The SHA-1 of the bytes taken so far (hashed as they are taken, or
    /// by the writes while it catches up after a re-hash).
    pub(super) hash: Hashing,
    /// The state of that SHA-1 when a sync was last wanted, or a write
    /// last brought it back: a sync covering `midstate.len` bytes records
    /// it, so a resume hashes only what follows.
    pub(super) midstate: Midstate,
    /// The offset a `Rewind` was last sent for, so a burst of frames past a
    /// gap draws one rewind, not one per frame.
    pub(super) rewound_at: Option<u64>,
}

impl Receiving {
    /// A file with no byte yet.
    pub(super) fn fresh(partial: PartialId) -> Self {
        Receiving::resumed(partial, 0)
    }

    /// A file with `durable` bytes held (their hash is not known here).
    pub(super) fn resumed(partial: PartialId, durable: u64) -> Self {
        Receiving {
            partial,
            received: durable,
            acked: durable,
            written: durable,
            sync_wanted: durable,
            syncing_to: durable,
            taken: Pieces::default(),
            hash: if durable == 0 {
                Hashing::Home {
                    hasher: Box::default(),
                    at: 0,
                }
            } else {
                Hashing::Unknown
            },
            midstate: Midstate::START,
            rewound_at: None,
        }
    }
}

impl Receiving {
    /// The SHA-1 state to record with a durable prefix of `at` bytes, if
    /// the last one known lies within it.
    pub(super) fn hashed_within(&self, at: u64) -> Option<Midstate> {
        (self.midstate.len > 0 && self.midstate.len <= at).then_some(self.midstate)
    }

    /// The file takes bytes again from `received`: a state past it may
    /// cover bytes that will be sent anew, and is dropped.
    pub(super) fn forget_midstate_past_received(&mut self) {
        if self.midstate.len > self.received {
            self.midstate = Midstate::START;
        }
    }
}

/// One file's place in the upload.
#[derive(Debug)]
pub(super) enum FileState {
    /// Complete: verified, linked after a proof, or empty.
    Done,
    /// Waiting for a proof of ownership over `nonce`.
    Challenged {
        nonce: Nonce,
        partial: PartialId,
        /// Blobs that may hold the file (when the challenge was made).
        candidates: Vec<BlobId>,
        /// The proof each readable candidate gives for `nonce`, once the
        /// job computing them is done.
        expected: Option<Vec<(BlobId, Sha1Digest)>>,
    },
    /// A proof is being checked.
    Proving {
        partial: PartialId,
        nonce: Nonce,
        /// As in `Challenged`: the check takes them when it starts.
        expected: Option<Vec<(BlobId, Sha1Digest)>>,
    },
    /// Receiving bytes.
    Receiving(Receiving),
    /// Every byte is in; the SHA-1 is being checked and the bytes kept.
    Verifying {
        partial: PartialId,
        /// Where the SHA-1 is until the job that checks it takes it.
        hash: Hashing,
        /// Bytes durable and acknowledged before the last write.
        acked: u64,
    },
    /// Its bytes are being thrown away.
    Resetting { partial: PartialId },
}

/// A file of the upload.
#[derive(Debug)]
pub(super) struct UpFile {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha1: Sha1Digest,
    /// As announced; compared when the terminal announces again.
    pub(super) attrs: Option<crate::store::Attrs>,
    pub(super) state: FileState,
}
