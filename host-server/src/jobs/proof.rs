//! Proof of ownership: computing the proofs a challenge expects, checking a
//! terminal's proof against the blobs that may hold its file, and linking
//! the file to the one it proves.

use pickup_proto::hash::{Nonce, ProofHasher};
use pickup_proto::Sha1Digest;

use super::{Held, LeaseLost};
use crate::store::{BlobId, FileRef, Store, StoreError};

/// Compute the proof each candidate blob gives for a challenge's nonce,
/// while the terminal computes its own over its bytes: the check that
/// follows its `Proof` then compares digests instead of reading the blob.
#[derive(Debug)]
pub(crate) struct ExpectProof {
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    pub(crate) size: u64,
    pub(crate) nonce: Nonce,
    pub(crate) candidates: Vec<BlobId>,
}

/// What an [`ExpectProof`] computed.
#[derive(Debug)]
pub(crate) struct Expected {
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    /// The nonce the proofs are for (a re-grant draws a new one).
    pub(crate) nonce: Nonce,
    /// Each readable candidate and its proof.
    pub(crate) proofs: Vec<(BlobId, Sha1Digest)>,
}

pub(super) fn expect_proof(store: &dyn Store, w: ExpectProof) -> Expected {
    let proofs = w
        .candidates
        .iter()
        .filter_map(|&blob| match blob_proof(store, blob, w.size, &w.nonce) {
            Ok(p) => Some((blob, p)),
            Err(e) => {
                tracing::warn!(blob = blob.0, "cannot read a candidate blob: {e}");
                None
            }
        })
        .collect();
    Expected {
        epoch: w.epoch,
        file: w.file,
        nonce: w.nonce,
        proofs,
    }
}

/// Check a terminal's proof against the blobs that may hold its file, and
/// link the file to the first one it proves.
#[derive(Debug)]
pub(crate) struct CheckProof {
    pub(crate) held: Held,
    pub(crate) epoch: u64,
    pub(crate) file: FileRef,
    pub(crate) size: u64,
    pub(crate) nonce: Nonce,
    pub(crate) proof: Sha1Digest,
    /// The proofs an [`ExpectProof`] computed for this nonce, given by the
    /// session when the job starts; `None` if there are none: the check
    /// then reads the candidates itself.
    pub(crate) expected: Option<Vec<(BlobId, Sha1Digest)>>,
    /// The blobs the challenge was for: only those the batch's owner may
    /// learn of ([`crate::disclosure`]), so a proof never links (and so
    /// reveals) another blob with the same SHA-1.
    pub(crate) candidates: Vec<BlobId>,
}

/// What a [`CheckProof`] decided.
#[derive(Debug)]
pub(crate) struct Proved {
    pub(crate) epoch: u64,
    pub(crate) file: u16,
    /// The blob the file is now linked to, if the proof matched one.
    pub(crate) result: Result<Option<BlobId>, LeaseLost>,
}

pub(super) fn check_proof(store: &dyn Store, w: CheckProof) -> Proved {
    let proves = |blob: BlobId| match &w.expected {
        Some(expected) => expected.iter().any(|&(b, p)| b == blob && p == w.proof),
        None => match blob_proof(store, blob, w.size, &w.nonce) {
            Ok(p) => p == w.proof,
            Err(e) => {
                tracing::warn!(blob = blob.0, "cannot read a candidate blob: {e}");
                false
            }
        },
    };
    let blobs = match &w.expected {
        Some(expected) => expected.iter().map(|&(b, _)| b).collect(),
        None => w.candidates.clone(),
    };
    let mut linked = Ok(None);
    for blob in blobs {
        if !proves(blob) {
            continue;
        }
        match w.held.step(|| store.link_file(w.file, blob)) {
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
pub(super) fn blob_proof(
    store: &dyn Store,
    blob: BlobId,
    size: u64,
    nonce: &Nonce,
) -> Result<Sha1Digest, StoreError> {
    let mut hasher = ProofHasher::new(nonce);
    store.scan_blob(blob, size, &mut |bytes| hasher.update(bytes))?;
    Ok(hasher.finish())
}
