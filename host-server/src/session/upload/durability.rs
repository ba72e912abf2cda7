//! When received bytes become durable and are acknowledged.
//!
//! Durability rule: an `Ack` for offset N is queued only after
//! [`Store::sync_partial`](crate::store::Store::sync_partial)`(N)` returned,
//! i.e. after the bytes were fsynced and N was committed. The cadence is
//! stated once, in PROTOCOL.md ("When the relay acknowledges"); the
//! constants below implement it.
//!
//! Deferred syncs: a driver that calls [`Session::defer_syncs`] gets each
//! `sync_partial` as a [`SyncJob`] to run on another thread while the
//! session keeps receiving into the page cache; the `Ack` is queued when the
//! job has finished ([`Session::handle_synced`]). One job is in flight per
//! session. Anything that needs the durable offset settled first (a file's
//! completion or rejection, a resume, a disconnect) finishes the job in
//! line, so the order of durable offsets and store transitions is the same
//! as without deferral.

use std::sync::{Arc, Condvar, Mutex};

use pickup_proto::message::Kind;
use pickup_proto::Duration;

use super::super::outbox::Outbox;
#[cfg(doc)]
use super::super::Session;
use super::file::FileState;
use super::{failure_code, LeaseLost, Upload};
use crate::relay::{lock, Lease, Relay};
use crate::store::{PartialId, Store, StoreError};

/// What a deferred sync ended with: `None` if the lease was lost.
pub(super) type SyncOutcome = Option<Result<(), StoreError>>;

pub(super) enum JobState {
    Pending,
    Running,
    Done(SyncOutcome),
    /// The session has taken the outcome.
    Taken,
}

/// One deferred `sync_partial`: makes a file's first `at` bytes durable.
pub(in crate::session) struct Job {
    pub(super) store: Arc<dyn Store>,
    pub(super) lease: Arc<Lease>,
    pub(super) session: u64,
    pub(super) file: usize,
    pub(super) partial: PartialId,
    pub(super) at: u64,
    pub(super) state: Mutex<JobState>,
    pub(super) done: Condvar,
}

impl Job {
    /// Runs the sync unless another thread already is, then waits until it
    /// has finished: whoever calls first does the work.
    pub(in crate::session) fn run(&self) {
        let mut state = lock(&self.state);
        if matches!(*state, JobState::Pending) {
            *state = JobState::Running;
            drop(state);
            let (store, at) = (&self.store, self.at);
            // A panic must still end the job, or a session waiting on it
            // would wait forever.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.lease
                    .run(self.session, || store.sync_partial(self.partial, at))
            }))
            .unwrap_or_else(|_| Some(Err(StoreError::Corrupt("a sync panicked".into()))));
            state = lock(&self.state);
            *state = JobState::Done(outcome);
            self.done.notify_all();
            return;
        }
        while matches!(*state, JobState::Running) {
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The outcome, once, if the job has finished.
    pub(super) fn take(&self) -> Option<SyncOutcome> {
        let mut state = lock(&self.state);
        match core::mem::replace(&mut *state, JobState::Taken) {
            JobState::Done(outcome) => Some(outcome),
            other => {
                *state = other;
                None
            }
        }
    }
}

/// Work a session hands to its driver: making received bytes durable, which
/// takes an fsync and a database commit. Run it off the session's thread
/// with [`run`](Self::run), then call [`Session::handle_synced`]. A job
/// nobody runs is run by the session itself when it next needs the result.
pub struct SyncJob(Arc<Job>);

impl SyncJob {
    /// Does the work (blocking; at most once however often it is called).
    pub fn run(&self) {
        self.0.run();
    }
}

impl core::fmt::Debug for SyncJob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SyncJob")
            .field("file", &self.0.file)
            .field("at", &self.0.at)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// Makes every received byte durable and acknowledges it, in line.
    pub(in crate::session) fn ack_all(
        &mut self,
        relay: &Relay,
        session: u64,
        out: &mut Outbox,
    ) -> Result<(), LeaseLost> {
        self.finish_job(out)?;
        self.flush = false;
        for i in 0..self.files.len() {
            self.sync_ack(relay, session, i, out)?;
        }
        self.last_data = None;
        self.unsynced_since = None;
        Ok(())
    }

    pub(super) fn sync_ack(
        &mut self,
        relay: &Relay,
        session: u64,
        index: usize,
        out: &mut Outbox,
    ) -> Result<(), LeaseLost> {
        let FileState::Receiving(r) = &mut self.files[index].state else {
            return Ok(());
        };
        if r.received == r.acked {
            return Ok(());
        }
        let (partial, at) = (r.partial, r.received);
        match self
            .lease
            .run(session, || relay.store.sync_partial(partial, at))
        {
            None => return Err(LeaseLost),
            Some(Err(e)) => {
                tracing::error!(batch = self.batch.0, file = index, "sync failed: {e}");
                out.error(failure_code(&e), Kind::Data);
            }
            Some(Ok(())) => {
                r.acked = at;
                out.ack(index as u16);
            }
        }
        Ok(())
    }

    /// The ack timer fired: make every received byte durable, in line or,
    /// deferred, one job per file after the other.
    pub(in crate::session) fn ack_timer(
        &mut self,
        relay: &Relay,
        session: u64,
        out: &mut Outbox,
    ) -> Result<(), LeaseLost> {
        if !self.deferred {
            return self.ack_all(relay, session, out);
        }
        self.last_data = None;
        self.unsynced_since = None;
        self.flush = true;
        self.next_job(relay, session, 0);
        Ok(())
    }

    /// Starts a deferred sync if none is in flight and some file has enough
    /// unacknowledged bytes (`step`; any amount while flushing).
    pub(super) fn next_job(&mut self, relay: &Relay, session: u64, step: u64) {
        if self.syncing.is_some() {
            return;
        }
        let due = self
            .files
            .iter()
            .enumerate()
            .find_map(|(i, f)| match &f.state {
                FileState::Receiving(r)
                    if r.received > r.acked
                        && (self.flush || r.received - r.acked >= step.max(1)) =>
                {
                    Some((i, r.partial, r.received))
                }
                _ => None,
            });
        let Some((file, partial, at)) = due else {
            self.flush = false;
            return;
        };
        let job = Job {
            store: relay.store.clone(),
            lease: self.lease.clone(),
            session,
            file,
            partial,
            at,
            state: Mutex::new(JobState::Pending),
            done: Condvar::new(),
        };
        self.syncing = Some((Arc::new(job), true));
    }

    /// The job the driver should run next, if any (deferred mode).
    pub(in crate::session) fn poll_job(&mut self) -> Option<SyncJob> {
        match &mut self.syncing {
            Some((job, fresh)) if *fresh => {
                *fresh = false;
                Some(SyncJob(job.clone()))
            }
            _ => None,
        }
    }

    /// A deferred sync may have finished: acknowledge what it made durable
    /// and start the next one.
    pub(in crate::session) fn on_synced(
        &mut self,
        relay: &Relay,
        session: u64,
        window: u32,
        out: &mut Outbox,
    ) -> Result<(), LeaseLost> {
        let Some(outcome) = self.syncing.as_ref().and_then(|(job, _)| job.take()) else {
            return Ok(());
        };
        if let Some((job, _)) = self.syncing.take() {
            self.absorb(&job, outcome, out)?;
        }
        self.next_job(relay, session, sync_step(window));
        Ok(())
    }

    /// Finishes the sync in flight, in line (running it if no driver has),
    /// and acknowledges what it made durable.
    pub(super) fn finish_job(&mut self, out: &mut Outbox) -> Result<(), LeaseLost> {
        let Some((job, _)) = self.syncing.take() else {
            return Ok(());
        };
        job.run();
        match job.take() {
            Some(outcome) => self.absorb(&job, outcome, out),
            None => Ok(()),
        }
    }

    pub(super) fn absorb(
        &mut self,
        job: &Job,
        outcome: SyncOutcome,
        out: &mut Outbox,
    ) -> Result<(), LeaseLost> {
        match outcome {
            None => Err(LeaseLost),
            Some(Err(e)) => {
                tracing::error!(batch = self.batch.0, file = job.file, "sync failed: {e}");
                out.error(failure_code(&e), Kind::Data);
                Ok(())
            }
            Some(Ok(())) => {
                if let Some(FileState::Receiving(r)) =
                    self.files.get_mut(job.file).map(|f| &mut f.state)
                {
                    if r.partial == job.partial && r.acked < job.at && job.at <= r.received {
                        r.acked = job.at;
                        out.ack(job.file as u16);
                    }
                }
                Ok(())
            }
        }
    }
}

/// Most bytes between two syncs started by data (deferred mode; twice this
/// in line). Terminals cap the window the relay offers (at 32 MiB by
/// default), so the cadence must not grow with the relay's window: an
/// operator may offer a larger window to terminals that accept one (it lets
/// them ride out slow disk flushes) without starving the others.
pub(super) const ACK_STEP_MAX: u64 = 2 << 20;

/// Longest a received byte waits before a sync for it starts while data
/// keeps coming (checked as data arrives; `ack_delay` covers a pause). A
/// slow link (a serial line at 115200 baud moves 16 KiB in 1.4 s) may
/// never fill a step of a wide window, and a terminal resends everything
/// unacknowledged after its retransmit timeout (2 s by default, 3 s and
/// 5 s on the serial terminals): acks must come well within it.
pub(super) const ACK_AGE_MAX: Duration = Duration::from_millis(500);

/// How many unacknowledged bytes start a deferred sync: a quarter of the
/// window, so the ack of the bytes synced arrives while the terminal still
/// has half its window to send, and no more than [`ACK_STEP_MAX`].
pub(super) fn sync_step(window: u32) -> u64 {
    u64::from(window / 4).min(ACK_STEP_MAX)
}
