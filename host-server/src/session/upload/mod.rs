//! The upload half of a session: announcing, granting, proofs of ownership,
//! data, acknowledgements and verdicts.
//!
//! ```text
//!   announce    BatchOpen, FileAnnounce, Resume → a batch and its Grant
//!   file        per-file state: Challenged → Receiving → Done
//!   proof       challenges, candidate proofs, linking after a Proof
//!   hashing     the SHA-1 of what arrives (in line, follower, re-hash)
//!   durability  syncs and the Acks that follow them
//!   reply       the upload's queued replies and how they render
//! ```

use std::sync::Arc;

use pickup_proto::message::{Data, Kind, Plan, Proof, ResumeToken};
use pickup_proto::{Code, Duration, ErrorCode, Instant};

use super::outbox::Outbox;
use super::Session;
use crate::relay::{unix_secs, Lease, Relay};
use crate::store::{Batch, BatchId, Content, FileContent, FileRef, StoreError};

use announce::Announced;
use durability::{sync_step, Job, ACK_AGE_MAX, ACK_STEP_MAX};
use file::{FileState, Receiving, UpFile};
use hashing::{rehash, Follower, Hashing, FOLLOW_MIN_SIZE};
use proof::challenge;

pub(super) use announce::Announcing;
pub use durability::SyncJob;
pub(super) use reply::Reply;

mod announce;
mod durability;
mod file;
mod hashing;
mod proof;
mod reply;

/// Another session took the upload over; this one must drop it.
#[derive(Debug)]
pub(super) struct LeaseLost;

/// The upload a session is serving: one batch, after its grant.
pub(super) struct Upload {
    batch: BatchId,
    code: Code,
    token: ResumeToken,
    expires_at: u64,
    lease: Arc<Lease>,
    files: Vec<UpFile>,
    /// When data last arrived while some of it is unacknowledged.
    last_data: Option<Instant>,
    /// When the oldest data arrived that no sync has been started for.
    unsynced_since: Option<Instant>,
    complete_sent: bool,
    /// Syncs run as [`SyncJob`]s on the driver's threads.
    deferred: bool,
    /// The sync in flight (deferred mode), and whether the driver has yet to
    /// be given it.
    syncing: Option<(Arc<Job>, bool)>,
    /// The ack timer fired: sync every file, one job after the other.
    flush: bool,
    /// Large files may be hashed by a [`Follower`] thread.
    follow: bool,
}

impl Upload {
    /// The upload state of a stored batch, taking its lease. Files with no
    /// durable bytes whose content the relay may hold are challenged.
    fn start(
        relay: &Relay,
        session: u64,
        batch: Batch,
        token: ResumeToken,
        instant: bool,
        deferred: bool,
        follow: bool,
    ) -> Upload {
        let lease = relay.take_lease(batch.id, session);
        let files = batch
            .files
            .into_iter()
            .map(|f| {
                let state = match f.content {
                    FileContent::Blob(_) => FileState::Done,
                    FileContent::Partial { id, durable: 0 } if instant && f.size > 0 => {
                        challenge(relay, f.size, &f.sha1, id, follow)
                    }
                    FileContent::Partial { id, durable } => FileState::Receiving(Receiving {
                        partial: id,
                        received: durable,
                        acked: durable,
                        hash: if durable == 0 {
                            Hashing::Inline(Box::default())
                        } else {
                            Hashing::Unknown
                        },
                        rewound_at: None,
                    }),
                };
                UpFile {
                    name: f.name,
                    size: f.size,
                    sha1: f.sha1,
                    state,
                }
            })
            .collect();
        Upload {
            batch: batch.id,
            code: batch.code,
            token,
            expires_at: batch.expires_at,
            lease,
            files,
            last_data: None,
            unsynced_since: None,
            complete_sent: false,
            deferred,
            syncing: None,
            flush: false,
            follow,
        }
    }

    pub(super) fn lease(&self) -> &Lease {
        &self.lease
    }

    fn same_files(&self, files: &[Announced]) -> bool {
        self.files.len() == files.len()
            && self
                .files
                .iter()
                .zip(files)
                .all(|(a, b)| a.name == b.name && a.size == b.size && a.sha1 == b.sha1)
    }

    fn all_done(&self) -> bool {
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
        Some(match &self.files.get(index)?.state {
            FileState::Done => Plan::Held,
            FileState::Challenged { nonce, .. } => Plan::Challenge { nonce: *nonce },
            FileState::Receiving(r) => Plan::Upload { offset: r.acked },
        })
    }

    fn on_data(
        &mut self,
        relay: &Relay,
        session: u64,
        window: u32,
        now: Instant,
        d: Data<'_>,
        out: &mut Outbox,
    ) -> Result<(), LeaseLost> {
        let index = usize::from(d.file);
        let Some(f) = self.files.get_mut(index) else {
            out.error(ErrorCode::OutOfRange, Kind::Data);
            return Ok(());
        };
        let size = f.size;
        let r = match &mut f.state {
            FileState::Receiving(r) => r,
            // A duplicate of bytes that completed the file: nothing to do.
            FileState::Done => return Ok(()),
            FileState::Challenged { .. } => {
                out.error(ErrorCode::UnexpectedMessage, Kind::Data);
                return Ok(());
            }
        };
        match d.offset.checked_add(d.bytes.len() as u64) {
            Some(end) if end <= size => {}
            _ => return self.reject(relay, session, index, ErrorCode::SizeMismatch, out),
        }
        if matches!(r.hash, Hashing::Unknown) && !rehash(relay, index, r, out) {
            return Ok(());
        }
        if d.offset > r.received {
            // A gap: frames were lost. Ask once for a resend from the first missing byte.
            if r.rewound_at != Some(r.received) {
                r.rewound_at = Some(r.received);
                out.upload(Reply::Rewind {
                    file: d.file,
                    offset: r.received,
                });
            }
            return Ok(());
        }
        // Resent bytes we already hold are skipped; the rest is new.
        let skip = (r.received - d.offset) as usize;
        let Some(bytes) = d.bytes.get(skip..).filter(|b| !b.is_empty()) else {
            return Ok(());
        };
        let (partial, at) = (r.partial, r.received);
        if at == 0 && self.follow && size >= FOLLOW_MIN_SIZE && matches!(r.hash, Hashing::Inline(_))
        {
            match Follower::start(relay.store.clone(), partial) {
                Ok(f) => r.hash = Hashing::Behind(f),
                Err(e) => tracing::warn!("no hashing thread, hashing in line: {e}"),
            }
        }
        match self
            .lease
            .run(session, || relay.store.write_partial(partial, at, bytes))
        {
            None => return Err(LeaseLost),
            Some(Err(e)) => {
                tracing::error!(batch = self.batch.0, file = index, "write failed: {e}");
                out.error(failure_code(&e), Kind::Data);
                return Ok(());
            }
            Some(Ok(())) => {}
        }
        r.received += bytes.len() as u64;
        match &mut r.hash {
            Hashing::Inline(h) => h.update(bytes),
            Hashing::Behind(f) => f.advance(r.received),
            Hashing::Unknown => {}
        }
        r.rewound_at = None;
        let (received, acked) = (r.received, r.acked);
        self.last_data = Some(now);
        let overdue = now >= *self.unsynced_since.get_or_insert(now) + ACK_AGE_MAX;
        if received == size {
            self.finalize(relay, session, index, out)
        } else if self.deferred {
            let idle = self.syncing.is_none();
            self.next_job(relay, session, if overdue { 1 } else { sync_step(window) });
            if idle && self.syncing.is_some() {
                self.unsynced_since = None;
            }
            Ok(())
        } else if overdue || received - acked >= u64::from(window / 2).min(2 * ACK_STEP_MAX) {
            self.unsynced_since = None;
            self.sync_ack(relay, session, index, out)
        } else {
            Ok(())
        }
    }

    /// All bytes of a file are in: verify them and keep them, or reject them.
    fn finalize(
        &mut self,
        relay: &Relay,
        session: u64,
        index: usize,
        out: &mut Outbox,
    ) -> Result<(), LeaseLost> {
        // The store's transitions follow every sync of this upload.
        self.finish_job(out)?;
        let file = self.file_ref(index);
        let f = &mut self.files[index];
        let FileState::Receiving(r) = &mut f.state else {
            return Ok(());
        };
        if matches!(r.hash, Hashing::Unknown) && !rehash(relay, index, r, out) {
            return Ok(());
        }
        if r.received != f.size {
            return Ok(());
        }
        let sha1 = match core::mem::replace(&mut r.hash, Hashing::Unknown) {
            Hashing::Inline(h) => {
                let digest = h.sha1.digest();
                r.hash = Hashing::Inline(h);
                digest
            }
            Hashing::Behind(follower) => match follower.finish(f.size) {
                Ok(h) => h.digest(),
                Err(e) => {
                    // Left `Unknown`: the next attempt re-hashes in line.
                    tracing::error!(batch = self.batch.0, file = index, "hashing failed: {e}");
                    out.error(ErrorCode::Internal, Kind::Data);
                    return Ok(());
                }
            },
            Hashing::Unknown => return Ok(()),
        };
        if sha1 != f.sha1 {
            tracing::info!(
                batch = self.batch.0,
                file = index,
                "SHA-1 mismatch, file rejected"
            );
            return self.reject(relay, session, index, ErrorCode::HashMismatch, out);
        }
        let content = Content { size: f.size, sha1 };
        let partial = r.partial;
        match self.lease.run(session, || {
            relay.store.complete_file(file, partial, &content)
        }) {
            None => return Err(LeaseLost),
            Some(Err(e)) => {
                // The file stays receiving; the terminal's resume retries.
                tracing::error!(batch = self.batch.0, file = index, "completing failed: {e}");
                out.error(failure_code(&e), Kind::Data);
                return Ok(());
            }
            Some(Ok(blob)) => {
                tracing::debug!(
                    batch = self.batch.0,
                    file = index,
                    blob = blob.0,
                    "file verified"
                );
                f.state = FileState::Done;
            }
        }
        if self.files.iter().all(|f| !has_unacked(f)) {
            self.last_data = None;
            self.unsynced_since = None;
        }
        out.ack(index as u16);
        out.upload(Reply::Verified(index as u16));
        self.check_complete(out);
        Ok(())
    }

    /// Throws a file's bytes away; it restarts from 0 if sent again.
    fn reject(
        &mut self,
        relay: &Relay,
        session: u64,
        index: usize,
        reason: ErrorCode,
        out: &mut Outbox,
    ) -> Result<(), LeaseLost> {
        self.finish_job(out)?;
        let FileState::Receiving(r) = &mut self.files[index].state else {
            return Ok(());
        };
        // Stop hashing bytes about to go.
        if matches!(r.hash, Hashing::Behind(_)) {
            r.hash = Hashing::Unknown;
        }
        let partial = r.partial;
        match self
            .lease
            .run(session, || relay.store.reset_partial(partial))
        {
            None => return Err(LeaseLost),
            Some(Err(e)) => {
                tracing::error!(batch = self.batch.0, file = index, "reset failed: {e}");
                out.error(failure_code(&e), Kind::Data);
            }
            Some(Ok(())) => {
                *r = Receiving::fresh(partial);
                out.upload(Reply::Rejected {
                    index: index as u16,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Completes files whose every byte is already durable (empty files,
    /// or a crash after the last ack and before verification).
    fn finish_ready_files(
        &mut self,
        relay: &Relay,
        session: u64,
        out: &mut Outbox,
    ) -> Result<(), LeaseLost> {
        for i in 0..self.files.len() {
            let f = &self.files[i];
            if matches!(&f.state, FileState::Receiving(r) if r.received == f.size) {
                self.finalize(relay, session, i, out)?;
            }
        }
        self.check_complete(out);
        Ok(())
    }

    fn check_complete(&mut self, out: &mut Outbox) {
        if !self.complete_sent && self.all_done() {
            self.complete_sent = true;
            tracing::info!(batch = self.batch.0, "batch complete");
            out.upload(Reply::BatchComplete);
        }
    }

    /// Answers a repeated grant request (a `Resume`, or the same announcement
    /// again after a lost `Grant`): everything received becomes durable, each
    /// challenge gets a fresh nonce, and the grant and plans go out again.
    fn regrant(&mut self, relay: &Relay, session: u64, out: &mut Outbox) -> Result<(), LeaseLost> {
        self.ack_all(relay, session, out)?;
        for f in &mut self.files {
            if let FileState::Challenged { partial, .. } = f.state {
                f.state = challenge(relay, f.size, &f.sha1, partial, self.follow);
            }
        }
        out.upload(Reply::Grant { next: 0 });
        self.complete_sent = false;
        self.finish_ready_files(relay, session, out)
    }
}

/// The refusal for a failed store write: a partial upload that no longer
/// exists was swept with its expired batch; anything else is internal.
fn failure_code(e: &StoreError) -> ErrorCode {
    match e {
        StoreError::NotFound => ErrorCode::Expired,
        _ => ErrorCode::Internal,
    }
}

fn has_unacked(f: &UpFile) -> bool {
    matches!(&f.state, FileState::Receiving(r) if r.received > r.acked)
}

impl Session {
    pub(super) fn on_proof(&mut self, p: Proof) {
        if self.upload.is_none() {
            return self.out.error(ErrorCode::UnexpectedMessage, Kind::Proof);
        }
        self.with_upload(|up, relay, id, out| up.on_proof(relay, id, p, out));
    }

    pub(super) fn on_data(&mut self, now: Instant, d: Data<'_>) {
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
        let window = self.ack_window();
        self.with_upload(|up, relay, id, out| up.on_data(relay, id, window, now, d, out));
    }
}
