//! The upload half of a session: announcing, granting, proofs of ownership,
//! data, acknowledgements and verdicts.
//!
//! Durability rule: an `Ack` for offset N is queued only after
//! [`Store::sync_partial`](crate::store::Store::sync_partial)`(N)` returned,
//! i.e. after the bytes were fsynced and N was committed. Acks go out at
//! least every `window / 2` bytes, where `window` is the smaller of the
//! link's and the one the terminal's `Hello` announced (and every
//! [`ACK_STEP_MAX`] at most, so a terminal that accepts less than the
//! relay's window without saying so is never starved), at
//! the end of each file, after `ack_delay` without more data, and on a link
//! too slow to fill a step, at least every [`ACK_AGE_MAX`] of data.
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

use pickup_proto::hash::{Nonce, ProofHasher, Sha1Hasher};
use pickup_proto::message::{
    self, Ack, BatchComplete, BatchOpen, Data, FileAnnounce, FileRejected, FileVerified, Grant,
    Kind, Message, Plan, Proof, Resume, ResumeToken, Rewind,
};
use pickup_proto::{Code, Duration, ErrorCode, Instant, Sha1Digest};

use super::{file_plan, lock, unix_secs, Lease, Out, Outbox, Relay, Session};
use crate::codes::{self, code_key, token_key};
use crate::store::{
    Batch, BatchId, BlobId, Content, FileContent, FileRef, Lookup, NewBatch, NewFile, PartialId,
    Store, StoreError,
};

/// Buffer for re-hashing a resumed prefix or checking a proof.
const READ_CHUNK: usize = 256 * 1024;

/// Most candidate blobs a proof is checked against (more than one means a
/// SHA-1 collision is stored; more than a few is an attack).
const MAX_CANDIDATES: usize = 4;

/// How long a relay over its live-batch limit asks uploaders to wait.
const FULL_RETRY_MS: u32 = 60_000;

/// Another session took the upload over; this one must drop it.
#[derive(Debug)]
pub(super) struct LeaseLost;

/// A batch being announced: `BatchOpen` seen, `FileAnnounce`s arriving.
#[derive(Debug)]
pub(super) struct Announcing {
    open: BatchOpen,
    files: Vec<Announced>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Announced {
    name: String,
    size: u64,
    sha1: Sha1Digest,
}

/// SHA-1 of the bytes received so far, checked against the announcement at
/// the end. (Deduplication compares bytes, so nothing else is hashed.)
#[derive(Clone, Default)]
struct Hashers {
    sha1: Sha1Hasher,
}

impl Hashers {
    fn update(&mut self, data: &[u8]) {
        self.sha1.update(data);
    }
}

/// What a deferred sync ended with: `None` if the lease was lost.
type SyncOutcome = Option<Result<(), StoreError>>;

enum JobState {
    Pending,
    Running,
    Done(SyncOutcome),
    /// The session has taken the outcome.
    Taken,
}

/// One deferred `sync_partial`: makes a file's first `at` bytes durable.
pub(super) struct Job {
    store: Arc<dyn Store>,
    lease: Arc<Lease>,
    session: u64,
    file: usize,
    partial: PartialId,
    at: u64,
    state: Mutex<JobState>,
    done: Condvar,
}

impl Job {
    /// Runs the sync unless another thread already is, then waits until it
    /// has finished: whoever calls first does the work.
    pub(super) fn run(&self) {
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
    fn take(&self) -> Option<SyncOutcome> {
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

/// How a file's SHA-1 is being computed.
enum Hashing {
    /// Not yet: a resumed upload's durable prefix is re-hashed first.
    Unknown,
    /// In line, as bytes are written.
    Inline(Box<Hashers>),
    /// By a [`Follower`] thread reading the bytes back.
    Behind(Follower),
}

/// Files at least this large are hashed by a [`Follower`] when the driver
/// allows it ([`Session::offload_hashing`]): hashing is the largest cost of
/// receiving, and a second core can do it while this one receives.
const FOLLOW_MIN_SIZE: u64 = 8 << 20;

/// Bytes the follower reads per call.
const FOLLOW_CHUNK: usize = 1 << 20;

/// A thread that hashes a partial upload by reading back what the session
/// wrote, up to what it was told is written. The file is the queue: no byte
/// is copied between the threads, and the pages are still in the cache.
struct Follower {
    shared: Arc<FollowShared>,
    thread: Option<std::thread::JoinHandle<Result<(Sha1Hasher, u64), StoreError>>>,
    /// `written` when the thread was last woken.
    woken_at: u64,
}

struct FollowShared {
    /// Bytes the thread may hash (written, contiguous from 0).
    written: core::sync::atomic::AtomicU64,
    /// Hash up to `written`, then stop.
    finish: core::sync::atomic::AtomicBool,
    /// Stop now; the result is not wanted.
    stop: core::sync::atomic::AtomicBool,
}

impl Follower {
    fn start(store: Arc<dyn Store>, partial: PartialId) -> std::io::Result<Follower> {
        use core::sync::atomic::{AtomicBool, AtomicU64};
        let shared = Arc::new(FollowShared {
            written: AtomicU64::new(0),
            finish: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("pickup-hash".into())
            .spawn(move || follow(&*store, partial, &theirs))?;
        Ok(Follower {
            shared,
            thread: Some(thread),
            woken_at: 0,
        })
    }

    /// The first `written` bytes are in the store.
    fn advance(&mut self, written: u64) {
        use core::sync::atomic::Ordering;
        self.shared.written.store(written, Ordering::Release);
        // Waking costs a system call: do it once per chunk's worth.
        if written - self.woken_at >= FOLLOW_CHUNK as u64 {
            self.woken_at = written;
            self.wake();
        }
    }

    fn wake(&self) {
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Waits for the digest of the first `size` bytes.
    fn finish(mut self, size: u64) -> Result<Sha1Hasher, StoreError> {
        use core::sync::atomic::Ordering;
        self.shared.written.store(size, Ordering::Release);
        self.shared.finish.store(true, Ordering::Release);
        self.wake();
        let Some(thread) = self.thread.take() else {
            return Err(StoreError::Corrupt("hash follower gone".into()));
        };
        match thread.join() {
            Ok(Ok((h, hashed))) if hashed == size => Ok(h),
            Ok(Ok((_, hashed))) => Err(StoreError::Corrupt(format!(
                "hashed {hashed} of {size} bytes"
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Corrupt("hash follower panicked".into())),
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        // Not finished (rejected, taken over, session gone): let the thread
        // end on its own; nobody waits for it.
        self.shared
            .stop
            .store(true, core::sync::atomic::Ordering::Release);
        self.wake();
    }
}

/// The follower thread: hashes `partial` up to `written` as it grows.
fn follow(
    store: &dyn Store,
    partial: PartialId,
    shared: &FollowShared,
) -> Result<(Sha1Hasher, u64), StoreError> {
    use core::sync::atomic::Ordering;
    let mut h = Sha1Hasher::new();
    let mut buf = vec![0u8; FOLLOW_CHUNK];
    let mut hashed = 0u64;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return Ok((h, hashed));
        }
        // Read `finish` before `written`: once finishing, `written` is final.
        let finishing = shared.finish.load(Ordering::Acquire);
        let written = shared.written.load(Ordering::Acquire);
        if hashed < written {
            let want = usize::try_from(written - hashed)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = store.read_partial(partial, hashed, &mut buf[..want])?;
            if n == 0 {
                return Err(StoreError::Corrupt(format!(
                    "partial {} ends at {hashed}, {written} were written",
                    partial.0
                )));
            }
            h.update(&buf[..n]);
            hashed += n as u64;
        } else if finishing {
            return Ok((h, hashed));
        } else {
            std::thread::park();
        }
    }
}

struct Receiving {
    partial: PartialId,
    /// Bytes written (contiguous from 0).
    received: u64,
    /// Bytes durable and acknowledged.
    acked: u64,
    /// How the SHA-1 of the bytes up to `received` is computed.
    hash: Hashing,
    /// The offset a `Rewind` was last sent for, so a burst of frames past a
    /// gap draws one rewind, not one per frame.
    rewound_at: Option<u64>,
}

impl Receiving {
    fn fresh(partial: PartialId) -> Self {
        Receiving {
            partial,
            received: 0,
            acked: 0,
            hash: Hashing::Inline(Box::default()),
            rewound_at: None,
        }
    }
}

enum FileState {
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

/// A candidate blob and its proof for a challenge's nonce.
type BlobProof = (BlobId, Result<Sha1Digest, StoreError>);

/// The proofs a challenge's candidate blobs give, computed by a helper
/// thread from the moment the challenge is issued, while the terminal
/// computes its own: checking a proof then costs no wait for hashing the
/// blob after the proof arrives.
struct ExpectedProofs {
    stop: Arc<core::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<BlobProof>>>,
}

impl ExpectedProofs {
    /// Starts hashing `blobs`, unless as many threads as cores already are
    /// (then the proof is checked in line when it arrives).
    fn start(relay: &Relay, blobs: Vec<BlobId>, size: u64, nonce: Nonce) -> Option<Self> {
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
    fn wait(mut self) -> Vec<BlobProof> {
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
struct ProofSlot(Arc<core::sync::atomic::AtomicUsize>);

impl ProofSlot {
    fn take(relay: &Relay) -> Option<ProofSlot> {
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

struct UpFile {
    name: String,
    size: u64,
    sha1: Sha1Digest,
    state: FileState,
}

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

    /// The message for a queued upload reply, and the cursor that follows it.
    pub(super) fn render(
        &self,
        item: &Out,
        window: u32,
        now_secs: u64,
    ) -> Option<(Message<'static>, Option<Out>)> {
        let n = self.files.len();
        Some(match *item {
            // A verdict rendered after the code expired would tell the
            // uploader it succeeded with a code that serves nothing.
            Out::Verified(_) | Out::BatchComplete if now_secs >= self.expires_at => (
                Message::Error(pickup_proto::message::Error {
                    code: ErrorCode::Expired,
                    kind: Kind::Data as u8,
                    retry_after_ms: 0,
                }),
                None,
            ),
            Out::Grant { next: 0 } => (
                Message::Grant(Grant {
                    code: self.code,
                    expires_at: self.expires_at,
                    token: self.token,
                    files: n as u16,
                }),
                (n > 0).then_some(Out::Grant { next: 1 }),
            ),
            Out::Grant { next } => {
                let i = next as usize - 1;
                let more = (i + 1 < n).then_some(Out::Grant { next: next + 1 });
                (file_plan(i as u16, self.plan(i)?), more)
            }
            Out::Plan(i) => (file_plan(i, self.plan(usize::from(i))?), None),
            Out::Ack(i) => {
                let f = self.files.get(usize::from(i))?;
                let offset = match &f.state {
                    FileState::Done => f.size,
                    FileState::Challenged { .. } => 0,
                    FileState::Receiving(r) => r.acked,
                };
                (
                    Message::Ack(Ack {
                        file: i,
                        offset,
                        window,
                    }),
                    None,
                )
            }
            Out::Rewind { file, offset } => (Message::Rewind(Rewind { file, offset }), None),
            Out::Verified(index) => (Message::FileVerified(FileVerified { index }), None),
            Out::Rejected { index, reason } => {
                (Message::FileRejected(FileRejected { index, reason }), None)
            }
            Out::BatchComplete => (
                Message::BatchComplete(BatchComplete { code: self.code }),
                None,
            ),
            _ => return None,
        })
    }

    /// Makes every received byte durable and acknowledges it, in line.
    pub(super) fn ack_all(
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

    fn sync_ack(
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
    pub(super) fn ack_timer(
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
    fn next_job(&mut self, relay: &Relay, session: u64, step: u64) {
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
    pub(super) fn poll_job(&mut self) -> Option<SyncJob> {
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
    pub(super) fn on_synced(
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
    fn finish_job(&mut self, out: &mut Outbox) -> Result<(), LeaseLost> {
        let Some((job, _)) = self.syncing.take() else {
            return Ok(());
        };
        job.run();
        match job.take() {
            Some(outcome) => self.absorb(&job, outcome, out),
            None => Ok(()),
        }
    }

    fn absorb(
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
                out.push(Out::Rewind {
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
        out.push(Out::Verified(index as u16));
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
                out.push(Out::Rejected {
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
            out.push(Out::BatchComplete);
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
        out.push(Out::Grant { next: 0 });
        self.complete_sent = false;
        self.finish_ready_files(relay, session, out)
    }

    fn on_proof(
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
            out.push(Out::Plan(p.index));
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
        out.push(Out::Plan(p.index));
        self.check_complete(out);
        Ok(())
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

/// Candidate blobs for `(size, sha1)`; a store error means none.
fn candidates(relay: &Relay, size: u64, sha1: &Sha1Digest) -> Vec<BlobId> {
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
fn challenge(
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
fn blob_proof(
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

/// Most bytes between two syncs started by data (deferred mode; twice this
/// in line). Terminals cap the window the relay offers (at 32 MiB by
/// default), so the cadence must not grow with the relay's window: an
/// operator may offer a larger window to terminals that accept one (it lets
/// them ride out slow disk flushes) without starving the others.
const ACK_STEP_MAX: u64 = 2 << 20;

/// Longest a received byte waits before a sync for it starts while data
/// keeps coming (checked as data arrives; `ack_delay` covers a pause). A
/// slow link (a serial line at 115200 baud moves 16 KiB in 1.4 s) may
/// never fill a step of a wide window, and a terminal resends everything
/// unacknowledged after its retransmit timeout (2 s by default, 3 s and
/// 5 s on the serial terminals): acks must come well within it.
const ACK_AGE_MAX: Duration = Duration::from_millis(500);

/// How many unacknowledged bytes start a deferred sync: a quarter of the
/// window, so the ack of the bytes synced arrives while the terminal still
/// has half its window to send, and no more than [`ACK_STEP_MAX`].
fn sync_step(window: u32) -> u64 {
    u64::from(window / 4).min(ACK_STEP_MAX)
}

/// Rebuilds the hash state of a resumed upload from its durable prefix.
/// `false` if the prefix could not be read back whole: the upload then
/// continues from what is there, and the terminal is told to rewind.
fn rehash(relay: &Relay, index: usize, r: &mut Receiving, out: &mut Outbox) -> bool {
    let mut h = Hashers::default();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut offset = 0u64;
    while offset < r.received {
        let want = usize::try_from(r.received - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        match relay
            .store
            .read_partial(r.partial, offset, &mut buf[..want])
        {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                offset += n as u64;
            }
            Err(e) => {
                tracing::error!(file = index, "re-hashing failed: {e}");
                out.error(ErrorCode::Internal, Kind::Data);
                return false;
            }
        }
    }
    r.hash = Hashing::Inline(Box::new(h));
    if offset == r.received {
        return true;
    }
    tracing::error!(
        file = index,
        durable = r.received,
        found = offset,
        "partial upload is shorter than its durable offset"
    );
    r.received = offset;
    r.acked = r.acked.min(offset);
    r.rewound_at = Some(offset);
    out.push(Out::Rewind {
        file: index as u16,
        offset,
    });
    false
}

impl Session {
    pub(super) fn on_batch_open(&mut self, b: BatchOpen) {
        let s = &self.relay.settings;
        self.announcing = None;
        self.announce_refused = true;
        if b.files == 0 || b.files > s.max_files_per_batch {
            return self.out.error(ErrorCode::TooManyFiles, Kind::BatchOpen);
        }
        if b.total_size > s.max_batch_size {
            return self.out.error(ErrorCode::TooLarge, Kind::BatchOpen);
        }
        self.announce_refused = false;
        self.announcing = Some(Box::new(Announcing {
            open: b,
            files: Vec::with_capacity(usize::from(b.files).min(64)),
        }));
    }

    pub(super) fn on_file_announce(&mut self, now: Instant, a: FileAnnounce<'_>) {
        // Any refusal below drops the announcement: the terminal starts over.
        let Some(mut ann) = self.announcing.take() else {
            if !self.announce_refused {
                self.out
                    .error(ErrorCode::UnexpectedMessage, Kind::FileAnnounce);
            }
            return;
        };
        self.announce_refused = true;
        if usize::from(a.index) != ann.files.len() {
            return self
                .out
                .error(ErrorCode::UnexpectedMessage, Kind::FileAnnounce);
        }
        if let Err(code) = message::validate_name(a.name) {
            tracing::debug!(session = self.id, "refused a hostile or invalid file name");
            return self.out.error(code, Kind::FileAnnounce);
        }
        if a.size > self.relay.settings.max_file_size {
            return self.out.error(ErrorCode::TooLarge, Kind::FileAnnounce);
        }
        self.announce_refused = false;
        ann.files.push(Announced {
            name: a.name.to_owned(),
            size: a.size,
            sha1: a.sha1,
        });
        if ann.files.len() < usize::from(ann.open.files) {
            self.announcing = Some(ann);
            return;
        }
        let total = ann
            .files
            .iter()
            .try_fold(0u64, |t, f| t.checked_add(f.size));
        if total != Some(ann.open.total_size) {
            self.announce_refused = true;
            return self.out.error(ErrorCode::SizeMismatch, Kind::FileAnnounce);
        }
        self.create_batch(now, &ann.files, ann.open.total_size);
    }

    fn create_batch(&mut self, now: Instant, files: &[Announced], total: u64) {
        if self.upload.as_ref().is_some_and(|u| u.same_files(files)) {
            // Our Grant was lost and the terminal announced again.
            self.with_upload(|up, relay, id, out| up.regrant(relay, id, out));
            if self.upload.is_some() {
                return;
            }
        }
        self.settle(now);
        self.drop_upload();
        let relay = self.relay.clone();
        let s = &relay.settings;
        let kind = Kind::FileAnnounce;
        let usage = match relay.store.usage() {
            Ok(u) => u,
            Err(e) => return self.internal(kind, &e),
        };
        if usage.batches >= s.max_live_batches {
            return self.out.error_retry(ErrorCode::Busy, kind, FULL_RETRY_MS);
        }
        if usage.bytes.saturating_add(total) > s.disk_quota {
            return self.out.error(ErrorCode::Quota, kind);
        }
        // Re-roll until the code is not in use (live or remembered as
        // expired); with 65-bit codes a second roll is already unlikely.
        let mut code = None;
        for _ in 0..16 {
            let Some(c) = codes::random_code(&mut **super::lock(&relay.rng), s.code_len) else {
                break;
            };
            match relay.store.code_taken(&code_key(&c)) {
                Ok(false) => {
                    code = Some(c);
                    break;
                }
                Ok(true) => continue,
                Err(e) => return self.internal(kind, &e),
            }
        }
        let token = codes::random_token(&mut **super::lock(&relay.rng));
        let (Some(code), Some(token)) = (code, token) else {
            tracing::error!("no fresh code or token: the random source failed");
            return self.out.error(ErrorCode::Internal, kind);
        };
        let created_at = unix_secs(now);
        let new_files: Vec<NewFile<'_>> = files
            .iter()
            .map(|f| NewFile {
                name: &f.name,
                size: f.size,
                sha1: f.sha1,
            })
            .collect();
        let batch = match relay.store.create_batch(&NewBatch {
            code,
            code_key: code_key(&code),
            token_key: token_key(&token),
            created_at,
            expires_at: created_at.saturating_add(s.code_ttl_secs),
            files: &new_files,
        }) {
            Ok(b) => b,
            Err(e) => return self.internal(kind, &e),
        };
        tracing::info!(session = self.id, peer = %self.peer, batch = batch.id.0, files = files.len(), bytes = total, "batch created");
        self.activate(batch, token);
    }

    fn activate(&mut self, batch: Batch, token: ResumeToken) {
        let up = Upload::start(
            &self.relay,
            self.id,
            batch,
            token,
            self.instant_upload(),
            self.deferred_syncs,
            self.offload_hashing,
        );
        self.out.forget_upload_replies();
        self.upload = Some(Box::new(up));
        self.out.push(Out::Grant { next: 0 });
        self.with_upload(|up, relay, id, out| up.finish_ready_files(relay, id, out));
    }

    pub(super) fn internal(&mut self, kind: Kind, e: &StoreError) {
        tracing::error!(session = self.id, "store error on {kind:?}: {e}");
        self.out.error(ErrorCode::Internal, kind);
    }

    pub(super) fn on_resume(&mut self, now: Instant, r: Resume) {
        let relay = self.relay.clone();
        if let Err(wait) = relay.check_lookup(&self.peer, now) {
            return self
                .out
                .error_retry(ErrorCode::RateLimited, Kind::Resume, wait);
        }
        let batch = match relay
            .store
            .find_by_token(&token_key(&r.token), unix_secs(now))
        {
            Ok(Lookup::Live(b)) => b,
            Ok(found) => {
                relay.failed_lookup(&self.peer, now);
                let code = if found == Lookup::Expired {
                    ErrorCode::Expired
                } else {
                    ErrorCode::UnknownToken
                };
                return self.out.error(code, Kind::Resume);
            }
            Err(e) => return self.internal(Kind::Resume, &e),
        };
        self.announcing = None;
        if self.upload.as_ref().is_some_and(|u| u.batch == batch.id) {
            self.with_upload(|up, relay, id, out| up.regrant(relay, id, out));
            if self.upload.is_some() {
                return;
            }
        }
        self.settle(now);
        self.drop_upload();
        tracing::info!(session = self.id, peer = %self.peer, batch = batch.id.0, received = batch.received(), "upload resumed");
        self.activate(batch, r.token);
    }

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
