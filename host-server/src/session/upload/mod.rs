//! The upload half of a session: announcing, granting, proofs of ownership,
//! data, acknowledgements and verdicts.
//!
//! ```text
//!   announce    BatchOpen, FileAnnounce, Resume → a batch and its Grant
//!   file        per-file state: Challenged → Receiving → Verifying → Done
//!   proof       challenges, and linking a file once its Proof matches
//!   hashing     where each file's SHA-1 is, hashing what was written, re-hashing
//!   durability  writes, syncs and the Acks that follow them
//!   reply       the upload's queued replies and how they render
//! ```
//!
//! Nothing here touches the store: every store step is queued as work
//! ([`crate::jobs`]) and its outcome comes back through
//! [`Upload::on_outcome`].

use std::sync::Arc;

use bytes::Bytes;
use pickup_proto::message::{Data, Kind, Plan, Proof, ResumeToken};
use pickup_proto::{Code, Duration, ErrorCode, Instant};

use super::outbox::Outbox;
use super::work::WorkQueue;
use super::Session;
use crate::jobs::{
    Announced, BindNames, Complete, Completed, Held, LeaseLost, Outcome, Piece, Reset, ResetDone,
    Verdict, Work,
};
use crate::rate_limit::Peer;
use crate::relay::{unix_secs, Lease, Relay};
use crate::store::{BatchId, BlobId, FileContent, FileRef, StoreError};

use durability::{buffer_for, release, ACK_AGE_MAX, COPY_ROOM_BETWEEN_SHARED};
use file::{FileState, Hashing, Receiving, UpFile};

pub(super) use announce::Announcing;
pub(super) use durability::{MAX_PENDING, MAX_WRITE_LEN};
pub(super) use hashing::Armed;
pub(super) use reply::Reply;

mod announce;
mod durability;
mod file;
mod hashing;
mod proof;
mod reply;

/// What an upload's handlers need besides the upload: the relay, the
/// session's id, peer and time, its outbox and its work queue, and the ack
/// window.
pub(super) struct Ctx<'a> {
    pub(super) relay: &'a Relay,
    pub(super) session: u64,
    /// Who the session serves: challenges and failed proofs are charged to it.
    pub(super) peer: &'a Peer,
    /// The session's time.
    pub(super) now: Instant,
    pub(super) out: &'a mut Outbox,
    pub(super) work: &'a mut WorkQueue,
    /// The window acks are paced by.
    pub(super) window: u32,
    /// The terminal stated its window in its `Hello`.
    pub(super) window_stated: bool,
}

/// The upload a session is serving: one batch, after its grant.
pub(super) struct Upload {
    /// Tells this upload's job outcomes from those of one it replaced.
    epoch: u64,
    batch: BatchId,
    code: Code,
    token: ResumeToken,
    expires_at: u64,
    lease: Arc<Lease>,
    files: Vec<UpFile>,
    /// When data last arrived while some of it is unacknowledged.
    last_data: Option<Instant>,
    /// When the oldest data arrived that no sync has been queued for.
    unsynced_since: Option<Instant>,
    complete_sent: bool,
    /// "batch complete" was logged, or the batch was complete before this
    /// upload began: the operator hears of a batch's completion once,
    /// however often `BatchComplete` is sent again (regrants, resumes).
    complete_logged: bool,
    /// Bytes taken and not yet written (buffers and queued writes).
    pending_bytes: usize,
    /// A sync is given out and not yet done.
    syncing: bool,
    /// Emptied write buffers, to fill again.
    spare: Vec<Vec<u8>>,
    /// The store keeps the batch from going stale until this time (Unix
    /// seconds) at least; 0 when not known (it is pushed on by the next sync).
    kept_until: u64,
    /// A `NamedPut` upload: the user whose names its files are bound under
    /// once all are verified, before `BatchComplete` is sent.
    named: Option<String>,
    /// The names are being bound (a job is out for them).
    binding: bool,
}

impl Upload {
    /// The upload state of a stored batch, taking its lease. Files with no
    /// durable bytes whose content the relay may hold (`candidates`, per
    /// file) are challenged when `instant`.
    pub(super) fn start(
        relay: &Relay,
        (session, peer, now): (u64, &Peer, Instant),
        epoch: u64,
        batch: crate::store::Batch,
        token: ResumeToken,
        mut candidates: Vec<Vec<BlobId>>,
        instant: bool,
    ) -> Upload {
        let lease = relay.take_lease(batch.id, session);
        candidates.resize(batch.files.len(), Vec::new());
        let challenger = proof::Challenger {
            relay,
            peer,
            now,
            batch: batch.id,
        };
        let files = batch
            .files
            .into_iter()
            .zip(candidates)
            .enumerate()
            .map(|(index, (f, candidates))| {
                let state = match f.content {
                    FileContent::Blob(_) => FileState::Done,
                    FileContent::Partial { id, durable: 0 }
                        if instant && f.size > 0 && !candidates.is_empty() =>
                    {
                        challenger.challenge(index, f.size, id, candidates)
                    }
                    FileContent::Partial { id, durable } => {
                        FileState::Receiving(Receiving::resumed(id, durable))
                    }
                };
                UpFile {
                    name: f.name,
                    size: f.size,
                    sha1: f.sha1,
                    attrs: f.attrs,
                    state,
                }
            })
            .collect();
        Upload {
            epoch,
            batch: batch.id,
            code: batch.code,
            token,
            expires_at: batch.expires_at,
            lease,
            files,
            last_data: None,
            unsynced_since: None,
            complete_sent: false,
            named: None,
            binding: false,
            complete_logged: false,
            pending_bytes: 0,
            syncing: false,
            spare: Vec::new(),
            kept_until: 0,
        }
    }

    /// A stored batch taken up again (not a new one) that was already
    /// complete had its completion logged by the upload that completed it.
    pub(super) fn resumed(&mut self) {
        self.complete_logged = self.all_done();
    }

    pub(super) fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(super) fn batch(&self) -> BatchId {
        self.batch
    }

    /// Bytes taken and not yet written: the session stops reading while
    /// this is at its cap.
    pub(super) fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    fn held(&self, session: u64) -> Held {
        Held {
            lease: self.lease.clone(),
            session,
        }
    }

    pub(super) fn same_files(&self, files: &[Announced]) -> bool {
        self.files.len() == files.len()
            && self.files.iter().zip(files).all(|(a, b)| {
                a.name == b.name && a.size == b.size && a.sha1 == b.sha1 && a.attrs == b.attrs
            })
    }

    /// Bytes not yet durable, over the files not complete: what the
    /// upload still reserves.
    pub(super) fn unsent(&self) -> u64 {
        self.files
            .iter()
            .map(|f| match &f.state {
                FileState::Done => 0,
                FileState::Receiving(r) => f.size.saturating_sub(r.acked),
                FileState::Verifying { acked, .. } => f.size.saturating_sub(*acked),
                _ => f.size,
            })
            .fold(0u64, u64::saturating_add)
    }

    pub(super) fn all_done(&self) -> bool {
        self.files
            .iter()
            .all(|f| matches!(f.state, FileState::Done))
    }

    /// When unacknowledged bytes must be made durable and acknowledged.
    pub(super) fn ack_deadline(&self, delay: Duration) -> Option<Instant> {
        self.last_data.map(|t| t + delay)
    }

    fn file_ref(&self, index: usize) -> FileRef {
        FileRef {
            batch: self.batch,
            index: index as u16,
        }
    }

    fn plan(&self, index: usize) -> Option<Plan> {
        let f = self.files.get(index)?;
        Some(match &f.state {
            FileState::Done => Plan::Held,
            FileState::Challenged { nonce, .. } => Plan::Challenge { nonce: *nonce },
            FileState::Proving { .. } | FileState::Resetting { .. } => Plan::Upload { offset: 0 },
            FileState::Receiving(r) => Plan::Upload { offset: r.acked },
            FileState::Verifying { acked, .. } => Plan::Upload { offset: *acked },
        })
    }

    /// Takes a `Data` frame's bytes; `backing`, if given, is the read
    /// buffer the frame lies in, which the bytes may share (`Pieces`).
    fn on_data(&mut self, cx: &mut Ctx<'_>, now: Instant, d: Data<'_>, backing: Option<&Bytes>) {
        let index = usize::from(d.file);
        let Some(f) = self.files.get_mut(index) else {
            return cx.out.error(ErrorCode::OutOfRange, Kind::Data);
        };
        let size = f.size;
        let r = match &mut f.state {
            FileState::Receiving(r) => r,
            // A duplicate of bytes that completed the file: nothing to do.
            FileState::Done | FileState::Verifying { .. } | FileState::Resetting { .. } => return,
            FileState::Challenged { .. } | FileState::Proving { .. } => {
                return cx.out.error(ErrorCode::UnexpectedMessage, Kind::Data);
            }
        };
        match d.offset.checked_add(d.bytes.len() as u64) {
            Some(end) if end <= size => {}
            _ => return self.reject(cx, index, ErrorCode::SizeMismatch),
        }
        if d.offset > r.received {
            // A gap: frames were lost. Ask once for a resend from the first missing byte.
            if r.rewound_at != Some(r.received) {
                r.rewound_at = Some(r.received);
                cx.out.upload(Reply::Rewind {
                    file: d.file,
                    offset: r.received,
                });
            }
            return;
        }
        // Resent bytes we already hold are skipped; the rest is new.
        let skip = (r.received - d.offset) as usize;
        let Some(bytes) = d.bytes.get(skip..).filter(|b| !b.is_empty()) else {
            return;
        };
        if matches!(r.hash, Hashing::Unknown) {
            hashing::rehash(cx, self.epoch, index, r);
        }
        match backing.and_then(|b| Piece::share(b, bytes)) {
            Some(shared) => r.taken.push_shared(shared),
            None => {
                let (left, first) = (size - r.received, r.taken.is_empty());
                let spare = &mut self.spare;
                r.taken.push_copy(bytes, |need| {
                    if first {
                        buffer_for(spare, left)
                    } else {
                        // Between shared pieces: room for a run of small
                        // frames, not a whole write buffer.
                        let room = usize::try_from(left).map_or(COPY_ROOM_BETWEEN_SHARED, |l| {
                            l.min(COPY_ROOM_BETWEEN_SHARED)
                        });
                        Vec::with_capacity(need.max(room))
                    }
                });
            }
        }
        // Hashed now, while they are in the cache from the socket: the
        // writes then only write (`hashing`).
        if let Hashing::Home { hasher, at } = &mut r.hash {
            if *at == r.received {
                hasher.update(bytes);
                *at += bytes.len() as u64;
            }
        }
        r.received += bytes.len() as u64;
        r.rewound_at = None;
        self.pending_bytes += bytes.len();
        let (received, full) = (r.received, r.taken.len() >= durability::WRITE_CHUNK);
        self.last_data = Some(now);
        let overdue = now >= *self.unsynced_since.get_or_insert(now) + ACK_AGE_MAX;
        if received == size {
            self.finalize(cx, index);
        } else {
            if full {
                self.queue_write(cx, index, false);
            }
            self.sync_due(cx, overdue);
        }
        if self.pending_bytes >= durability::MAX_PENDING {
            // Input stops until writes finish: every buffer must be on its
            // way, or nothing would ever start it again.
            for i in 0..self.files.len() {
                self.queue_write(cx, i, false);
            }
        }
    }

    /// All bytes of a file are in: write and sync the rest, then verify
    /// them and keep them, or reject them.
    /// (The last write needs no sync: keeping the bytes syncs them, and
    /// rejecting them throws them away.)
    fn finalize(&mut self, cx: &mut Ctx<'_>, index: usize) {
        self.queue_write(cx, index, false);
        let held = self.held(cx.session);
        let file = self.file_ref(index);
        let f = &mut self.files[index];
        let FileState::Receiving(r) = &mut f.state else {
            return;
        };
        let (partial, acked) = (r.partial, r.acked);
        let hash = core::mem::replace(&mut r.hash, Hashing::Unknown);
        f.state = FileState::Verifying {
            partial,
            hash,
            acked,
        };
        let (size, sha1) = (f.size, f.sha1);
        let keep_until = self.keep_due(
            unix_secs(cx.now),
            cx.relay.settings.quota.incomplete_ttl_secs,
        );
        cx.work.push(Work::Complete(Complete {
            held,
            epoch: self.epoch,
            file,
            partial,
            size,
            sha1,
            hasher: None,
            keep_until,
        }));
        if self.files.iter().all(|f| !durability::has_unacked(f)) {
            self.last_data = None;
            self.unsynced_since = None;
        }
    }

    /// Throws a file's bytes away; it restarts from 0 if sent again.
    fn reject(&mut self, cx: &mut Ctx<'_>, index: usize, reason: ErrorCode) {
        let epoch = self.epoch;
        let held = self.held(cx.session);
        let FileState::Receiving(r) = &mut self.files[index].state else {
            return;
        };
        // Bytes about to go need no writing.
        release(&mut self.pending_bytes, &mut self.spare, &mut r.taken);
        let partial = r.partial;
        let file = index as u16;
        self.pending_bytes = self
            .pending_bytes
            .saturating_sub(cx.work.forget(|w| is_write_of(w, epoch, file)));
        self.files[index].state = FileState::Resetting { partial };
        cx.work.push(Work::Reset(Reset {
            held,
            epoch,
            file,
            partial,
            reason,
        }));
    }

    /// Completes files whose every byte is already durable (empty files,
    /// or a crash after the last ack and before verification).
    pub(super) fn finish_ready_files(&mut self, cx: &mut Ctx<'_>) {
        for i in 0..self.files.len() {
            let f = &self.files[i];
            if matches!(&f.state, FileState::Receiving(r) if r.received == f.size) {
                self.finalize(cx, i);
            }
        }
        self.check_complete(cx);
    }

    /// Makes this a `NamedPut` upload of `owner`'s.
    pub(super) fn set_named(&mut self, owner: String) {
        self.named = Some(owner);
    }

    /// Once every file is verified: a named upload binds its names first
    /// (`BindNames`, then [`names_bound`](Self::names_bound)); any other
    /// says `BatchComplete`.
    fn check_complete(&mut self, cx: &mut Ctx<'_>) {
        if self.complete_sent || self.binding || !self.all_done() {
            return;
        }
        match &self.named {
            Some(owner) => {
                self.binding = true;
                cx.work.push(Work::BindNames(BindNames {
                    owner: owner.clone(),
                    batch: self.batch,
                    files: self
                        .files
                        .iter()
                        .map(|f| (f.name.clone(), f.size))
                        .collect(),
                    epoch: self.epoch,
                    now_secs: unix_secs(cx.now),
                }));
            }
            None => self.say_complete(cx.out),
        }
    }

    /// The names of a named upload are bound.
    pub(super) fn names_bound(&mut self, cx: &mut Ctx<'_>) {
        self.binding = false;
        self.say_complete(cx.out);
    }

    fn say_complete(&mut self, out: &mut Outbox) {
        if !self.complete_sent {
            self.complete_sent = true;
            if !self.complete_logged {
                self.complete_logged = true;
                out.log.metrics.upload_completed();
                tracing::info!(
                    batch = self.batch.0,
                    files = self.files.len(),
                    bytes = self.files.iter().map(|f| f.size).sum::<u64>(),
                    "batch complete"
                );
            }
            out.upload(Reply::BatchComplete);
        }
    }

    /// Answers a repeated grant request (a `Resume`, or the same announcement
    /// again after a lost `Grant`): everything received becomes durable, and
    /// once it is, each challenge gets a fresh nonce and the grant and plans
    /// go out again ([`Upload::regranted`]).
    pub(super) fn regrant(&mut self, cx: &mut Ctx<'_>) {
        self.ack_all(cx);
        cx.work
            .then(super::work::Then::Regrant { epoch: self.epoch });
    }

    /// The flushes before a re-grant are done.
    pub(super) fn regranted(&mut self, cx: &mut Ctx<'_>) {
        let challenger = proof::Challenger {
            relay: cx.relay,
            peer: cx.peer,
            now: cx.now,
            batch: self.batch,
        };
        for (index, f) in self.files.iter_mut().enumerate() {
            if let FileState::Challenged {
                partial,
                candidates,
                ..
            } = &mut f.state
            {
                f.state =
                    challenger.challenge(index, f.size, *partial, core::mem::take(candidates));
            }
        }
        self.expect_proofs(cx);
        cx.out.upload(Reply::Grant { next: 0 });
        self.complete_sent = false;
        self.finish_ready_files(cx);
    }

    /// A job of this upload has finished.
    pub(super) fn on_outcome(
        &mut self,
        cx: &mut Ctx<'_>,
        outcome: Outcome,
    ) -> Result<(), LeaseLost> {
        match outcome {
            Outcome::Written(w) => self.on_written(cx, w),
            Outcome::Synced(s) => self.on_synced(cx, s),
            Outcome::Hashed(h) => {
                hashing::on_hashed(self, cx, h);
                Ok(())
            }
            Outcome::Completed(c) => self.on_completed(cx, c),
            Outcome::Reset(r) => self.on_reset(cx, r),
            Outcome::Expected(e) => {
                self.on_expected(e);
                Ok(())
            }
            Outcome::Proved(p) => self.on_proved(cx, p),
            _ => Ok(()),
        }
    }

    fn on_completed(&mut self, cx: &mut Ctx<'_>, c: Completed) -> Result<(), LeaseLost> {
        let index = usize::from(c.file);
        let verdict = c.result?;
        let Some(f) = self.files.get_mut(index) else {
            return Ok(());
        };
        let FileState::Verifying { partial, acked, .. } = f.state else {
            return Ok(());
        };
        match verdict {
            Verdict::Kept(blob) => {
                tracing::debug!(
                    batch = self.batch.0,
                    file = index,
                    blob = blob.0,
                    "file verified"
                );
                f.state = FileState::Done;
                cx.out.ack(c.file);
                cx.out.upload(Reply::Verified(c.file));
                self.check_complete(cx);
            }
            Verdict::Mismatch => {
                tracing::info!(
                    batch = self.batch.0,
                    file = index,
                    "SHA-1 mismatch, file rejected"
                );
                f.state = FileState::Receiving(Receiving::fresh(partial));
                cx.out.upload(Reply::Rejected {
                    index: c.file,
                    reason: ErrorCode::HashMismatch,
                });
            }
            Verdict::MismatchNotReset(e) => {
                tracing::error!(batch = self.batch.0, file = index, "reset failed: {e}");
                f.state = FileState::Receiving(Receiving::resumed(partial, acked));
                cx.out.error(failure_code(&e), Kind::Data);
            }
            Verdict::Failed(e) => {
                // The file stays receiving; the terminal's resume retries.
                tracing::error!(batch = self.batch.0, file = index, "completing failed: {e}");
                f.state = FileState::Receiving(Receiving::resumed(partial, acked));
                cx.out.error(failure_code(&e), Kind::Data);
            }
        }
        Ok(())
    }

    fn on_reset(&mut self, cx: &mut Ctx<'_>, r: ResetDone) -> Result<(), LeaseLost> {
        let result = r.result?;
        let Some(f) = self.files.get_mut(usize::from(r.file)) else {
            return Ok(());
        };
        let FileState::Resetting { partial } = f.state else {
            return Ok(());
        };
        f.state = FileState::Receiving(Receiving::fresh(partial));
        match result {
            Ok(()) => cx.out.upload(Reply::Rejected {
                index: r.file,
                reason: r.reason,
            }),
            Err(e) => {
                tracing::error!(batch = self.batch.0, file = r.file, "reset failed: {e}");
                cx.out.error(failure_code(&e), Kind::Data);
            }
        }
        Ok(())
    }
}

/// Whether `w` is a queued write of file `file` of the upload `epoch`.
fn is_write_of(w: &Work, epoch: u64, file: u16) -> bool {
    matches!(w, Work::Write(w) if w.epoch == epoch && w.file == file)
}

/// The refusal for a failed store step: a partial upload that no longer
/// exists was swept with its expired batch; anything else is internal.
pub(super) fn failure_code(e: &StoreError) -> ErrorCode {
    match e {
        StoreError::NotFound => ErrorCode::Expired,
        _ => ErrorCode::Internal,
    }
}

impl Session {
    pub(super) fn on_proof(&mut self, p: Proof) {
        if self.upload.is_none() {
            return self.out.error(ErrorCode::UnexpectedMessage, Kind::Proof);
        }
        self.with_upload(|up, cx| {
            up.on_proof(cx, p);
            Ok(())
        });
    }

    pub(super) fn on_data(&mut self, now: Instant, d: Data<'_>, backing: Option<&Bytes>) {
        let Some(up) = self.upload.as_deref() else {
            return self.out.error(ErrorCode::UnexpectedMessage, Kind::Data);
        };
        if unix_secs(now) >= up.expires_at {
            // The code already answers `Expired` to downloaders (and the
            // sweeper may have taken the batch): completing the upload now
            // would report success for a batch nobody can fetch.
            self.drop_upload();
            return self.out.error(ErrorCode::Expired, Kind::Data);
        }
        // The reservation first: one map lookup per Data frame, where
        // `all_done` walks every file of the batch.
        if !self.relay.quotas().touch(up.batch(), now) && !up.all_done() {
            // The upload stalled and its reservation was released: it
            // reserves its unsent bytes again before storing more.
            let (batch, unsent) = (up.batch(), up.unsent());
            let refused = {
                let mut quotas = self.relay.quotas();
                let stored = self.relay.store.usage().map(|u| u.bytes).unwrap_or(0);
                quotas.resume(&self.owner(), batch, unsent, stored, now)
            };
            if let Err(r) = refused {
                self.drop_upload();
                return self.out.error_retry(r.code, Kind::Data, r.retry_after_ms);
            }
        }
        self.with_upload(|up, cx| {
            up.on_data(cx, now, d, backing);
            Ok(())
        });
    }
}
