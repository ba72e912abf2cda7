//! Proof of ownership: challenging a file whose content the relay may hold,
//! and linking the file once the terminal's proof matches a held blob.
//!
//! The relay never takes a SHA-1 as proof: a challenge carries a fresh
//! random nonce, and only a terminal that holds the bytes can compute the
//! proof over nonce and bytes (`pickup_proto::hash::ProofHasher`). The
//! proofs the candidates give are computed by a job as soon as the
//! challenge goes out, while the terminal computes its own, so checking
//! its `Proof` compares digests (a job too, as it links the file).

use pickup_proto::message::{Kind, Proof};
use pickup_proto::{ErrorCode, Instant};

use super::file::{FileState, Receiving};
use super::{Ctx, Reply, Upload};
use crate::jobs::{CheckProof, ExpectProof, Expected, LeaseLost, Proved, Work};
use crate::metrics::InstantUpload;
use crate::rate_limit::Peer;
use crate::relay::Relay;
use crate::store::{BatchId, BlobId, PartialId};

/// Who challenges the files of one batch, and whom the work is charged to.
pub(super) struct Challenger<'a> {
    pub(super) relay: &'a Relay,
    pub(super) peer: &'a Peer,
    pub(super) now: Instant,
    pub(super) batch: BatchId,
}

impl Challenger<'_> {
    /// A challenge for file `index` (`size` bytes), whose content may be
    /// held in `candidates`; or a plain upload if the proof budget
    /// ([`crate::proof_budget`]) refuses the hashing a challenge costs, or
    /// no nonce can be drawn. The lookup that found `candidates` kept only
    /// those the batch's owner may learn the relay holds
    /// ([`crate::disclosure`]): with none, the plan is the one content the
    /// relay never saw gets, so it says nothing.
    pub(super) fn challenge(
        &self,
        index: usize,
        size: u64,
        partial: PartialId,
        candidates: Vec<BlobId>,
    ) -> FileState {
        let plain = FileState::Receiving(Receiving::fresh(partial));
        let Ok(file) = u16::try_from(index) else {
            return plain;
        };
        if candidates.is_empty() {
            return plain;
        }
        // A challenge asks "do you hold this?" of the relay as much as of
        // the terminal: a peer whose failed lookups (wrong proofs among
        // them) are spent gets none.
        if self.relay.check_lookup(self.peer, self.now).is_err() {
            return plain;
        }
        // Each candidate is hashed for the proof it expects.
        let cost = size.saturating_mul(candidates.len() as u64);
        if !self
            .relay
            .charge_challenge(self.peer, self.batch, file, cost, self.now)
        {
            tracing::info!(
                peer = %self.peer,
                batch = self.batch.0,
                file,
                "challenge budget spent: the file is uploaded instead"
            );
            return plain;
        }
        let mut nonce = [0u8; 32];
        if !self.relay.fill_random(&mut nonce) {
            return plain;
        }
        FileState::Challenged {
            nonce,
            partial,
            candidates,
            expected: None,
        }
    }
}

impl Upload {
    /// Queues the computing of the proofs every fresh challenge expects
    /// (call it when challenges are made).
    pub(super) fn expect_proofs(&mut self, cx: &mut Ctx<'_>) {
        for (index, f) in self.files.iter().enumerate() {
            if let FileState::Challenged {
                nonce,
                candidates,
                expected: None,
                ..
            } = &f.state
            {
                cx.work.push(Work::ExpectProof(ExpectProof {
                    epoch: self.epoch,
                    file: index as u16,
                    size: f.size,
                    nonce: *nonce,
                    candidates: candidates.clone(),
                }));
            }
        }
    }

    /// The proofs a challenge expects are computed: kept with the file if
    /// its challenge still has that nonce.
    pub(super) fn on_expected(&mut self, e: Expected) {
        let Some(f) = self.files.get_mut(usize::from(e.file)) else {
            return;
        };
        match &mut f.state {
            FileState::Challenged {
                nonce, expected, ..
            }
            | FileState::Proving {
                nonce, expected, ..
            } if *nonce == e.nonce => *expected = Some(e.proofs),
            _ => {}
        }
    }

    /// A `Proof` arrived: check it (a job), or restate the plan if the
    /// file is not challenged (a late or repeated proof).
    pub(super) fn on_proof(&mut self, cx: &mut Ctx<'_>, p: Proof) {
        let index = usize::from(p.index);
        let held = self.held(cx.session);
        let file = self.file_ref(index);
        let Some(f) = self.files.get_mut(index) else {
            return cx.out.error(ErrorCode::OutOfRange, Kind::Proof);
        };
        let FileState::Challenged {
            nonce,
            partial,
            ref mut expected,
            ref mut candidates,
        } = f.state
        else {
            return cx.out.upload(Reply::Plan(p.index));
        };
        let expected = expected.take();
        let candidates = core::mem::take(candidates);
        f.state = FileState::Proving {
            partial,
            nonce,
            expected,
        };
        cx.work.push(Work::CheckProof(CheckProof {
            held,
            epoch: self.epoch,
            file,
            size: f.size,
            nonce,
            proof: p.proof,
            expected: None,
            candidates,
        }));
    }

    /// Gives a proof check the proofs its challenge expects, if they are
    /// computed (the check starts after the job computing them, queued
    /// when the challenge went out).
    pub(in crate::session) fn arm_proof(&mut self, c: &mut CheckProof) {
        let Some(f) = self.files.get_mut(usize::from(c.file.index)) else {
            return;
        };
        if let FileState::Proving {
            nonce, expected, ..
        } = &mut f.state
        {
            if *nonce == c.nonce {
                c.expected = expected.take();
            }
        }
    }

    /// A proof has been checked: the file is linked, or it is uploaded.
    pub(super) fn on_proved(&mut self, cx: &mut Ctx<'_>, p: Proved) -> Result<(), LeaseLost> {
        let linked = p.result?;
        let index = usize::from(p.file);
        let Some(f) = self.files.get_mut(index) else {
            return Ok(());
        };
        let FileState::Proving { partial, .. } = f.state else {
            return Ok(());
        };
        f.state = match linked {
            Some(blob) => {
                tracing::debug!(
                    batch = self.batch.0,
                    file = index,
                    blob = blob.0,
                    "linked after proof"
                );
                cx.relay
                    .metrics()
                    .instant_upload(InstantUpload::Hit, f.size);
                FileState::Done
            }
            None => {
                tracing::debug!(
                    batch = self.batch.0,
                    file = index,
                    "proof refused, uploading"
                );
                // A wrong proof is a failed guess at content.
                cx.relay
                    .metrics()
                    .instant_upload(InstantUpload::ProofFailed, 0);
                cx.relay.failed_lookup(cx.peer, cx.now);
                FileState::Receiving(Receiving::fresh(partial))
            }
        };
        cx.out.upload(Reply::Plan(p.file));
        self.check_complete(cx);
        Ok(())
    }
}
