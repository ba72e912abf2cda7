//! The session's queue of work for its driver, in the order it must happen.
//!
//! Entries are store work ([`Work`], given out as [`Job`]s one at a time)
//! and session steps that must wait for the work before them ([`Then`]).
//! Beside that ordered work, one sync of a live upload may run at a time
//! (its writes have finished when it is given out); work that changes a
//! file's place in the store (a verdict, a reset, a link) waits for it.
//! Work that only moves bytes (writes and syncs, re-hashing a prefix, reading
//! a blob ahead) lets the session go on taking frames while it runs; any
//! other entry *blocks* it: until that entry is done the session asks for
//! no input ([`Session::wants_input`](super::Session::wants_input)), so its
//! decisions follow the same order as if the store had answered at once.

use std::collections::VecDeque;

use pickup_proto::message::Kind;
use pickup_proto::{ErrorCode, Instant};

use super::upload::{Armed, Ctx, MAX_WRITE_LEN};
use super::{Phase, Session, Upload};
use crate::jobs::{Found, Job, JobDone, LeaseLost, Outcome, Pieces, Work};
use crate::relay::unix_secs;
use crate::store::PartialId;

/// A session step that runs once everything queued before it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Then {
    /// Re-grant the current upload (its flushes are done): fresh nonces,
    /// the `Grant` and plans again, files whose bytes are all in completed.
    Regrant {
        /// The upload it is for.
        epoch: u64,
    },
}

#[derive(Debug)]
enum Entry {
    Work(Work),
    Then(Then),
}

/// What the session queued, and what its driver is running.
#[derive(Debug, Default)]
pub(super) struct WorkQueue {
    queue: VecDeque<Entry>,
    /// A job is with the driver; `true` if it blocks input.
    running: Option<bool>,
    /// The running job answers a conversation that has since started over
    /// (a new `Hello`): its result is dropped.
    running_stale: bool,
    /// The running job is a lookup or a batch creation.
    running_asks: bool,
    /// A sync runs beside the ordered work.
    syncing: bool,
    /// Blocking entries queued (not counting the running job).
    blocking: usize,
}

/// Whether `work` answers a terminal's question (a lookup, a creation).
fn asks(work: &Work) -> bool {
    matches!(
        work,
        Work::CreateBatch(_)
            | Work::FindToken { .. }
            | Work::FindCode { .. }
            | Work::Login(_)
            | Work::CheckToken { .. }
            | Work::FindTerminal { .. }
            | Work::FindNamed { .. }
            | Work::ListNamed { .. }
            | Work::Push(_)
    ) || matches!(work, Work::Notice(n) if n.asks())
        || matches!(work, Work::Forward(f) if f.asks())
}

/// Whether `work` must not run beside a sync (it moves or drops the bytes
/// a sync may be flushing).
fn exclusive(work: &Work) -> bool {
    blocks(work) && !matches!(work, Work::FindCode { .. } | Work::FindToken { .. })
}

/// Whether waiting for `work` must hold back the session's input.
fn blocks(work: &Work) -> bool {
    !matches!(
        work,
        Work::Write(_)
            | Work::Sync(_)
            | Work::HashPrefix(_)
            | Work::ExpectProof(_)
            | Work::ReadBlob(_)
    ) && !matches!(work, Work::Notice(n) if !n.blocks())
        && !matches!(work, Work::Forward(f) if !f.blocks())
}

impl WorkQueue {
    /// Queues store work.
    pub(super) fn push(&mut self, work: Work) {
        if blocks(&work) {
            self.blocking += 1;
        }
        self.queue.push_back(Entry::Work(work));
    }

    /// Adds `bytes`, bytes of a file from `offset` on, to the write at the
    /// back of the queue if it is one of the same file (`epoch`, `file`,
    /// `partial`) that ends at `offset` and takes more bytes; gives them
    /// back otherwise.
    pub(super) fn append_write(
        &mut self,
        (epoch, file, partial): (u64, u16, PartialId),
        offset: u64,
        bytes: Pieces,
    ) -> Result<(), Pieces> {
        match self.queue.back_mut() {
            Some(Entry::Work(Work::Write(w)))
                if w.epoch == epoch
                    && w.file == file
                    && w.partial == partial
                    && w.end() == offset
                    && w.len() < MAX_WRITE_LEN =>
            {
                w.bufs.append(bytes);
                Ok(())
            }
            _ => Err(bytes),
        }
    }

    /// Queues a step for when everything before it is done.
    pub(super) fn then(&mut self, step: Then) {
        self.blocking += 1;
        self.queue.push_back(Entry::Then(step));
    }

    /// The session must take no input until blocking work is done.
    pub(super) fn blocked(&self) -> bool {
        self.blocking > 0 || self.running == Some(true)
    }

    /// Nothing queued, nothing running.
    pub(super) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.running.is_none() && !self.syncing
    }

    /// A sync runs beside the ordered work.
    pub(super) fn is_syncing(&self) -> bool {
        self.syncing
    }

    /// A sync is given out beside the ordered work.
    pub(super) fn sync_started(&mut self) {
        self.syncing = true;
    }

    /// The sync beside the ordered work has finished.
    pub(super) fn sync_finished(&mut self) {
        self.syncing = false;
    }

    /// The step at the head, if it is a step and no job runs: it is due.
    pub(super) fn due_step(&mut self) -> Option<Then> {
        if self.running.is_some() {
            return None;
        }
        match self.queue.front() {
            Some(Entry::Then(step)) => {
                let step = *step;
                self.queue.pop_front();
                self.blocking -= 1;
                Some(step)
            }
            _ => None,
        }
    }

    /// The work at the head, if no job runs, to be given out.
    pub(super) fn next_work(&mut self) -> Option<Work> {
        if self.running.is_some() {
            return None;
        }
        match self.queue.front() {
            Some(Entry::Work(w)) if !(self.syncing && exclusive(w)) => {}
            _ => return None,
        }
        let Some(Entry::Work(work)) = self.queue.pop_front() else {
            return None;
        };
        let blocking = blocks(&work);
        if blocking {
            self.blocking -= 1;
        }
        Some(work)
    }

    /// Puts work back at the head (it was not given out after all).
    pub(super) fn unpop(&mut self, work: Work) {
        if blocks(&work) {
            self.blocking += 1;
        }
        self.queue.push_front(Entry::Work(work));
    }

    /// `job` is given to the driver.
    pub(super) fn started(&mut self, job: &Job) {
        self.running = Some(blocks(&job.work));
        self.running_asks = asks(&job.work);
        self.running_stale = false;
    }

    /// The running job's result is in; `false` if it is to be dropped.
    pub(super) fn finished(&mut self) -> bool {
        self.running = None;
        !core::mem::take(&mut self.running_stale)
    }

    /// The terminal started over: queued lookups and creations are dropped,
    /// and so is the result of a running one.
    pub(super) fn forget_conversation(&mut self) {
        self.forget(asks);
        if self.running.is_some() && self.running_asks {
            self.running_stale = true;
        }
    }

    /// Drops queued work that `stale` says is no longer wanted; returns the
    /// bytes of the writes dropped.
    pub(super) fn forget(&mut self, mut stale: impl FnMut(&Work) -> bool) -> usize {
        let mut freed = 0;
        let mut blocking = 0;
        self.queue.retain(|e| match e {
            Entry::Work(w) if stale(w) => {
                if let Work::Write(w) = w {
                    freed += w.len();
                }
                false
            }
            Entry::Work(w) => {
                blocking += usize::from(blocks(w));
                true
            }
            Entry::Then(_) => {
                blocking += 1;
                true
            }
        });
        self.blocking = blocking;
        freed
    }
}

impl Session {
    /// The next job for the driver to run, if any. At most two jobs are
    /// out at once, and they may run at the same time: the session's store
    /// work in order (the next comes only after
    /// [`handle_job_done`](Self::handle_job_done) of the one before), and
    /// beside it one sync. Call it until it returns `None` after every call
    /// into the session.
    #[must_use]
    pub fn poll_job(&mut self) -> Option<Job> {
        self.run_due_steps();
        self.flush_progress(false);
        if !self.work.is_syncing() {
            let (session, now_secs) = (self.id, unix_secs(self.clock));
            let stale_secs = self.relay.settings.quota.incomplete_ttl_secs;
            if let Some(sync) = self
                .upload
                .as_deref_mut()
                .and_then(|u| u.next_sync(session, now_secs, stale_secs))
            {
                self.work.sync_started();
                return Some(Job {
                    work: Work::Sync(sync),
                });
            }
        }
        loop {
            self.run_due_steps();
            let mut work = self.work.next_work()?;
            let epoch = self.upload.as_ref().map(|u| u.epoch());
            match &mut work {
                Work::Complete(c) => {
                    let Some(up) = self.upload.as_deref_mut().filter(|u| u.epoch() == c.epoch)
                    else {
                        continue; // Its upload is gone: no verdict wanted.
                    };
                    match up.arm_complete(c) {
                        Armed::Ready => {}
                        Armed::Rehash(rehash) => {
                            self.work.unpop(work);
                            work = Work::HashPrefix(rehash);
                        }
                    }
                }
                Work::Write(w) => {
                    if let Some(up) = self.upload.as_deref_mut() {
                        up.arm_write(w);
                    }
                }
                Work::HashPrefix(h) if Some(h.epoch) != epoch => continue,
                Work::Reset(r) if Some(r.epoch) != epoch => continue,
                Work::CheckProof(p) if Some(p.epoch) != epoch => continue,
                Work::ExpectProof(e) if Some(e.epoch) != epoch => continue,
                Work::CheckProof(p) => {
                    if let Some(up) = self.upload.as_deref_mut() {
                        up.arm_proof(p);
                    }
                }
                Work::ReadBlob(r) if self.stream.as_ref().map(|s| s.id) != Some(r.stream) => {
                    continue
                }
                _ => {}
            }
            let job = Job { work };
            self.work.started(&job);
            return Some(job);
        }
    }

    /// A job from [`poll_job`](Self::poll_job) has been run: take its result.
    pub fn handle_job_done(&mut self, now: Instant, done: JobDone) {
        self.clock = self.clock.max(now);
        if self.work.blocked() {
            // The session read nothing while it waited: the terminal's
            // silence meanwhile was the store's, not its own.
            self.last_heard = self.last_heard.max(now);
        }
        let wanted = match &done.outcome {
            Outcome::Synced(s) if s.beside => {
                self.work.sync_finished();
                true
            }
            _ => self.work.finished(),
        };
        let open = wanted && matches!(self.phase, Phase::AwaitHello | Phase::Open);
        match done.outcome {
            Outcome::Created(created) if open => {
                self.started |= created.is_ok();
                self.on_created(created)
            }
            Outcome::FoundToken { token, found } if open => {
                self.started |= matches!(found, Ok(Found::Live(..)));
                self.on_found_token(token, found)
            }
            Outcome::FoundCode { to, found } if open => self.on_code_looked_up(to, found),
            Outcome::BlobRead(read) => self.on_blob_read(read),
            Outcome::LoggedIn(done) if open => self.on_logged_in(done),
            Outcome::TokenChecked { result } if open => self.on_token_checked(result),
            Outcome::TerminalFound { name, result } if open => self.on_terminal_found(name, result),
            Outcome::TokenRevoked { result } if open => self.on_token_revoked(result),
            Outcome::FoundNamed { handle, result } if open => self.on_found_named(handle, result),
            Outcome::ListedNamed { result } if open => self.on_listed_named(result),
            Outcome::NameChanged { change, result } if open => self.on_name_changed(change, result),
            Outcome::Bound(bound) => self.on_bound(bound),
            Outcome::Pushed { push, answer } if open => self.on_pushed(&push, answer),
            Outcome::Notice(done) => self.on_notice_done(open, done),
            Outcome::Forward(done) => self.on_forward_done(open, done),
            Outcome::Created(_)
            | Outcome::FoundToken { .. }
            | Outcome::FoundCode { .. }
            | Outcome::LoggedIn(_)
            | Outcome::TokenChecked { .. }
            | Outcome::TerminalFound { .. }
            | Outcome::TokenRevoked { .. }
            | Outcome::FoundNamed { .. }
            | Outcome::ListedNamed { .. }
            | Outcome::NameChanged { .. }
            | Outcome::Pushed { .. } => {}
            upload => {
                let epoch = match &upload {
                    Outcome::Written(w) => w.epoch,
                    Outcome::Synced(s) => s.epoch,
                    Outcome::Hashed(h) => h.epoch,
                    Outcome::Completed(c) => c.epoch,
                    Outcome::Reset(r) => r.epoch,
                    Outcome::Expected(e) => e.epoch,
                    Outcome::Proved(p) => p.epoch,
                    _ => return,
                };
                if self.upload.as_ref().is_some_and(|u| u.epoch() == epoch) {
                    self.with_upload(|up, cx| up.on_outcome(cx, upload));
                    self.account_upload();
                }
            }
        }
        self.run_due_steps();
        if self.work.is_idle() {
            for lease in core::mem::take(&mut self.retired) {
                self.relay.release_lease(&lease, self.id);
            }
        }
    }

    /// Whether the driver should feed the session frames now. `false` while
    /// it waits for a job whose result decides how the next frame is taken
    /// (a lookup, a batch being created, a verdict), while as many
    /// received bytes wait to be written as it holds, or while its replies
    /// do not drain (a peer that asks and does not read): the driver then
    /// stops reading, and the peer's bytes wait in the link.
    pub fn wants_input(&self) -> bool {
        !self.work.blocked()
            && !self.out.is_full()
            && self
                .upload
                .as_ref()
                .is_none_or(|u| u.pending_bytes() < super::upload::MAX_PENDING)
    }

    /// Runs the session steps that were waiting for work before them.
    fn run_due_steps(&mut self) {
        while let Some(step) = self.work.due_step() {
            match step {
                Then::Regrant { epoch } => {
                    if self.upload.as_ref().is_some_and(|u| u.epoch() == epoch) {
                        self.with_upload(|up, cx| {
                            up.regranted(cx);
                            Ok(())
                        });
                    }
                }
            }
        }
    }

    /// Tells admission where the upload stands: the bytes it still has to
    /// send stay reserved, and a complete batch gives its slot back.
    pub(super) fn account_upload(&self) {
        let Some(up) = self.upload.as_deref() else {
            return;
        };
        let mut quotas = self.relay.quotas();
        if up.all_done() {
            quotas.finished(up.batch());
        } else {
            quotas.progress(up.batch(), up.unsent(), self.clock);
        }
    }

    /// Makes every received byte durable and acknowledges it (by jobs),
    /// and writes the download progress not yet written.
    pub(super) fn settle(&mut self, _now: Instant) {
        self.flush_progress(true);
        self.with_upload(|up, cx| {
            up.ack_all(cx);
            Ok(())
        });
    }

    /// Forgets the upload; its lease is released once its queued work is done.
    pub(super) fn drop_upload(&mut self) {
        self.with_upload(|up, cx| {
            up.retire_syncs(cx);
            Ok(())
        });
        if let Some(up) = self.upload.take() {
            if self.work.is_idle() {
                self.relay.release_lease(up.lease(), self.id);
            } else {
                self.retired.push(up.lease().clone());
            }
        }
    }

    /// Runs `f` on the active upload; drops the upload if another session
    /// (of this relay, or of another instance over the same store: a
    /// fenced store step) took it over meanwhile. This connection's
    /// terminal is told at once (`TakenOver`) rather than left to wait for
    /// acks that will not come. A terminal that moved to a new connection
    /// itself never reads it; one that does is a second uploader of the
    /// same token, and stops, so two of them cannot take the upload from
    /// each other in turn.
    pub(super) fn with_upload(
        &mut self,
        f: impl FnOnce(&mut Upload, &mut Ctx<'_>) -> Result<(), LeaseLost>,
    ) {
        let window = self.ack_window();
        let Some(up) = self.upload.as_deref_mut() else {
            return;
        };
        let mut cx = Ctx {
            relay: &self.relay,
            session: self.id,
            peer: &self.peer,
            now: self.clock,
            out: &mut self.out,
            work: &mut self.work,
            window,
            window_stated: self.peer_window != 0,
        };
        if f(up, &mut cx).is_err() {
            self.upload_taken_over();
        }
    }

    /// Drops the active upload if a newer session of this relay took its
    /// lease since this session's last step of it. Called before each
    /// frame goes out: the queued replies describe the upload as this
    /// session last knew it (a resume offset, an ack), and the newer
    /// session may since have thrown bytes away (found by the
    /// relay_session fuzzer). Another instance's takeover shows at the
    /// next store step (`with_upload`).
    pub(super) fn notice_taken_over(&mut self) {
        let lost = self
            .upload
            .as_deref()
            .is_some_and(|up| up.lease().run(self.id, || ()).is_none());
        if lost {
            self.upload_taken_over();
        }
    }

    /// The upload is no longer this session's: forget it and what was
    /// queued about it, and tell the terminal (`TakenOver`).
    fn upload_taken_over(&mut self) {
        tracing::info!(session = self.id, "upload taken over by a newer session");
        if let Some(up) = self.upload.take() {
            // Still ours if another instance took the upload: given
            // back, as after any upload, once its queued work is done.
            self.retired.push(up.lease().clone());
        }
        self.out.forget_upload_replies();
        self.out.error(ErrorCode::TakenOver, Kind::Data);
    }
}
