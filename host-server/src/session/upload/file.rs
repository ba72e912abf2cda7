//! The state of one file of an upload.

use pickup_proto::hash::Nonce;
use pickup_proto::Sha1Digest;

use super::hashing::Hashing;
use super::proof::ExpectedProofs;
use crate::store::PartialId;

pub(super) struct Receiving {
    pub(super) partial: PartialId,
    /// Bytes written (contiguous from 0).
    pub(super) received: u64,
    /// Bytes durable and acknowledged.
    pub(super) acked: u64,
    /// How the SHA-1 of the bytes up to `received` is computed.
    pub(super) hash: Hashing,
    /// The offset a `Rewind` was last sent for, so a burst of frames past a
    /// gap draws one rewind, not one per frame.
    pub(super) rewound_at: Option<u64>,
}

impl Receiving {
    pub(super) fn fresh(partial: PartialId) -> Self {
        Receiving {
            partial,
            received: 0,
            acked: 0,
            hash: Hashing::Inline(Box::default()),
            rewound_at: None,
        }
    }
}

pub(super) enum FileState {
    /// Complete: verified, linked after a proof, or empty.
    Done,
    /// Waiting for a proof of ownership over `nonce`.
    Challenged {
        nonce: Nonce,
        partial: PartialId,
        /// The proofs the candidates give, being computed meanwhile.
        expected: Option<ExpectedProofs>,
    },
    Receiving(Receiving),
}

pub(super) struct UpFile {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha1: Sha1Digest,
    pub(super) state: FileState,
}
