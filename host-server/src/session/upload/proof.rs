//! Proof of ownership: challenging a file whose content the relay may
//! hold, precomputing the proofs its candidates give, and linking the file
//! once the terminal's proof matches one.

use std::sync::Arc;

use pickup_proto::hash::{Nonce, ProofHasher};
use pickup_proto::message::{Kind, Proof};
use pickup_proto::{ErrorCode, Sha1Digest};

use super::super::outbox::Outbox;
use super::file::{FileState, Receiving};
use super::hashing::READ_CHUNK;
use super::{LeaseLost, Reply, Upload};
use crate::relay::Relay;
use crate::store::{BlobId, PartialId, Store, StoreError};

/// Most candidate blobs a proof is checked against (more than one means a
/// SHA-1 collision is stored; more than a few is an attack).
pub(super) const MAX_CANDIDATES: usize = 4;

/// A candidate blob and its proof for a challenge's nonce.
pub(super) type BlobProof = (BlobId, Result<Sha1Digest, StoreError>);

/// The proofs a challenge's candidate blobs give, computed by a helper
/// thread from the moment the challenge is issued, while the terminal
/// computes its own: checking a proof then costs no wait for hashing the
/// blob after the proof arrives.
pub(super) struct ExpectedProofs {
    pub(super) stop: Arc<core::sync::atomic::AtomicBool>,
    pub(super) thread: Option<std::thread::JoinHandle<Vec<BlobProof>>>,
}

impl ExpectedProofs {
    /// Starts hashing `blobs`, unless as many threads as cores already are
    /// (then the proof is checked in line when it arrives).
    pub(super) fn start(
        relay: &Relay,
        blobs: Vec<BlobId>,
        size: u64,
        nonce: Nonce,
    ) -> Option<Self> {
        let slot = ProofSlot::take(relay)?;
        let stop = Arc::new(core::sync::atomic::AtomicBool::new(false));
        let theirs = stop.clone();
        let store = relay.store.clone();
        let thread = std::thread::Builder::new()
            .name("pickup-proof".into())
            .spawn(move || {
                let _slot = slot;
                blobs
                    .into_iter()
                    .map(|b| (b, blob_proof(&*store, b, size, &nonce, &theirs)))
                    .collect()
            })
            .ok()?;
        Some(ExpectedProofs {
            stop,
            thread: Some(thread),
        })
    }

    /// Waits for the proofs.
    pub(super) fn wait(mut self) -> Vec<BlobProof> {
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for ExpectedProofs {
    fn drop(&mut self) {
        // Unwanted (a new nonce, the upload gone): stop at the next chunk.
        self.stop.store(true, core::sync::atomic::Ordering::Release);
    }
}

/// A claim on one of the relay's proof threads, released on drop.
pub(super) struct ProofSlot(Arc<core::sync::atomic::AtomicUsize>);

impl ProofSlot {
    pub(super) fn take(relay: &Relay) -> Option<ProofSlot> {
        use core::sync::atomic::Ordering;
        let max = std::thread::available_parallelism().map_or(1, |n| n.get());
        let count = relay.proof_threads.clone();
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ProofSlot(count))
    }
}

impl Drop for ProofSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, core::sync::atomic::Ordering::AcqRel);
    }
}

impl Upload {
    pub(super) fn on_proof(
        &mut self,
        relay: &Relay,
        session: u64,
        p: Proof,
        out: &mut Outbox,
    ) -> Result<(), LeaseLost> {
        let index = usize::from(p.index);
        let file = self.file_ref(index);
        let Some(f) = self.files.get_mut(index) else {
            out.error(ErrorCode::OutOfRange, Kind::Proof);
            return Ok(());
        };
        let FileState::Challenged { nonce, partial, .. } = f.state else {
            // A late or repeated proof: restate the plan.
            out.upload(Reply::Plan(p.index));
            return Ok(());
        };
        let expected = match &mut f.state {
            FileState::Challenged { expected, .. } => expected.take(),
            _ => None,
        };
        // Proofs computed since the challenge went out, then any candidate
        // they do not cover (stored meanwhile, or none were precomputed).
        let mut proofs: Vec<BlobProof> = expected.map(ExpectedProofs::wait).unwrap_or_default();
        let mut linked = None;
        let mut next = 0;
        loop {
            if next == proofs.len() {
                let more: Vec<BlobId> = candidates(relay, f.size, &f.sha1)
                    .into_iter()
                    .filter(|c| !proofs.iter().any(|(b, _)| b == c))
                    .collect();
                if more.is_empty() {
                    break;
                }
                let never = core::sync::atomic::AtomicBool::new(false);
                for c in more {
                    let proof = blob_proof(&*relay.store, c, f.size, &nonce, &never);
                    proofs.push((c, proof));
                }
            }
            let (c, proof) = &proofs[next];
            let c = *c;
            next += 1;
            match proof {
                Ok(proof) if *proof == p.proof => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(blob = c.0, "cannot read a candidate blob: {e}");
                    continue;
                }
            }
            match self.lease.run(session, || relay.store.link_file(file, c)) {
                None => return Err(LeaseLost),
                Some(Ok(true)) => {
                    linked = Some(c);
                    break;
                }
                // Collected meanwhile: try the next, or upload.
                Some(Ok(false)) => {}
                Some(Err(e)) => {
                    tracing::error!(batch = self.batch.0, file = index, "link failed: {e}");
                    break;
                }
            }
        }
        f.state = match linked {
            Some(blob) => {
                tracing::debug!(
                    batch = self.batch.0,
                    file = index,
                    blob = blob.0,
                    "linked after proof"
                );
                FileState::Done
            }
            None => {
                tracing::debug!(
                    batch = self.batch.0,
                    file = index,
                    "proof refused, uploading"
                );
                FileState::Receiving(Receiving::fresh(partial))
            }
        };
        out.upload(Reply::Plan(p.index));
        self.check_complete(out);
        Ok(())
    }
}

/// Candidate blobs for `(size, sha1)`; a store error means none.
pub(super) fn candidates(relay: &Relay, size: u64, sha1: &Sha1Digest) -> Vec<BlobId> {
    match relay.store.candidates(size, sha1) {
        Ok(c) => c.into_iter().take(MAX_CANDIDATES).collect(),
        Err(e) => {
            tracing::warn!("candidate lookup failed: {e}");
            Vec::new()
        }
    }
}

/// A challenge for a file whose content may be held, or a plain upload.
/// With `precompute`, the candidates' proofs are computed from now on.
pub(super) fn challenge(
    relay: &Relay,
    size: u64,
    sha1: &Sha1Digest,
    partial: PartialId,
    precompute: bool,
) -> FileState {
    let mut nonce = [0u8; 32];
    let blobs = candidates(relay, size, sha1);
    if blobs.is_empty() || !relay.fill_random(&mut nonce) {
        return FileState::Receiving(Receiving::fresh(partial));
    }
    let expected = precompute
        .then(|| ExpectedProofs::start(relay, blobs, size, nonce))
        .flatten();
    FileState::Challenged {
        nonce,
        partial,
        expected,
    }
}

/// The proof of ownership of a stored blob for `nonce` (abandoned when
/// `stop` is set).
pub(super) fn blob_proof(
    store: &dyn Store,
    blob: BlobId,
    size: u64,
    nonce: &Nonce,
    stop: &core::sync::atomic::AtomicBool,
) -> Result<Sha1Digest, StoreError> {
    let mut hasher = ProofHasher::new(nonce);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut offset = 0u64;
    while offset < size {
        if stop.load(core::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Corrupt("proof abandoned".into()));
        }
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
