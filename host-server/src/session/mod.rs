//! The relay's side of one connection, as a sans-IO state machine.
//!
//! A [`Session`] speaks the Pickup protocol with one terminal. It never
//! touches a socket, a clock or a thread: drivers (the TCP and serial
//! transports, the simulator, a fuzzer) move bytes and time in and out, and
//! the session reaches durable state only through the [`Store`] trait held
//! by the shared [`Relay`]. Given the same inputs, times and random source
//! it does the same thing.
//!
//! ```text
//!   Session::new(relay, peer, link, now)      refused with Busy / ShuttingDown
//!   loop {
//!       while let Some(n) = poll_transmit(buf) { write buf[..n] }
//!       if is_closed() { break }
//!       wait for bytes, or until poll_timeout()
//!       bytes → frame::Decoder → handle_frame(now, frame)   (handle_dropped on garbage)
//!       handle_timeout(now)
//!   }
//!   on EOF: handle_disconnected(now);  on SIGTERM: shutdown(now), flush, close
//! ```
//!
//! Time: the relay's [`Instant`] counts milliseconds since the Unix epoch, so
//! that expiry times (Unix seconds on the wire) come from the same `now`.
//!
//! ```text
//!   AwaitHello ──Hello──► Open ──Goodbye / idle / shutdown──► Closing ──queue drained──► Closed
//!                          │ BatchOpen, FileAnnounce… ─► upload (Grant, FilePlans, Acks, verdicts)
//!                          │ Resume ─────────────────► upload continues from durable offsets
//!                          │ Fetch, Read, Ack ───────► download (Manifest, entries, Data)
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard};

use pickup_proto::frame::{self, Dropped, Frame};
use pickup_proto::message::{
    self, FilePlan, Kind, Manifest, ManifestEntry, Message, Role, Welcome, CAP_INSTANT_UPLOAD,
};
use pickup_proto::{Duration, ErrorCode, Instant, PROTOCOL_VERSION};

use crate::random::Random;
use crate::rate_limit::{Peer, RateLimiter, RateSettings};
use crate::store::{Batch, BatchId, BlobId, Store, StoreError, SweepStats};

mod download;
mod upload;

#[cfg(test)]
mod tests;

pub use upload::SyncJob;
use upload::Upload;

/// Settings every session of a relay shares (see [`crate::config::Config`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Symbols per pickup code.
    pub code_len: usize,
    /// Batch lifetime in seconds.
    pub code_ttl_secs: u64,
    /// How long an expired code answers `Expired` rather than `UnknownCode`.
    pub expired_memory_secs: u64,
    /// Largest file.
    pub max_file_size: u64,
    /// Most files per batch.
    pub max_files_per_batch: u16,
    /// Largest batch.
    pub max_batch_size: u64,
    /// Most content bytes held.
    pub disk_quota: u64,
    /// Most batches alive at once.
    pub max_live_batches: u64,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Most sessions at once from one peer.
    pub max_sessions_per_peer: usize,
    /// Close a session that sends nothing for this long.
    pub idle_timeout: Duration,
    /// Acknowledge received bytes after this long without more data.
    pub ack_delay: Duration,
    /// Failed-lookup limits.
    pub rate: RateSettings,
    /// Offer instant upload.
    pub instant_upload: bool,
}

impl Default for Settings {
    fn default() -> Self {
        crate::config::Config::default().settings()
    }
}

/// Link parameters, per transport: what the relay announces in `Welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Largest raw frame the relay accepts on this link (its decoder size).
    pub max_frame: u32,
    /// Upload bytes a terminal may have in flight.
    pub window: u32,
}

/// The smallest terminal window the relay paces its acks by (acks then come
/// every 1–2 KiB at most); a smaller announced window counts as this.
pub const MIN_ACK_WINDOW: u32 = 4096;

impl Link {
    /// The TCP defaults: 64 KiB frames, 32 MiB window (what terminals accept at most by default).
    pub const TCP: Link = Link {
        max_frame: frame::MAX_FRAME_LEN as u32,
        window: 32 * 1024 * 1024,
    };
    /// The serial defaults: 4 KiB frames, 8 MiB window.
    pub const SERIAL: Link = Link {
        max_frame: 4096,
        window: 8 * 1024 * 1024,
    };

    /// The decoder buffer a driver needs for this link.
    pub fn max_frame(&self) -> usize {
        self.max_frame as usize
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seconds since the Unix epoch, from the relay's `now`.
pub fn unix_secs(now: Instant) -> u64 {
    now.as_millis() / 1000
}

/// Who may write to a batch's partial uploads: the session that most
/// recently granted or resumed it. A terminal that reconnects takes the
/// upload over from its stale session, whose later writes are refused.
#[derive(Debug)]
pub(crate) struct Lease {
    batch: BatchId,
    /// Read-locked while the owner works (its receiving thread and its
    /// deferred sync may both be at it), write-locked to change owners.
    owner: RwLock<u64>,
}

impl Lease {
    /// Runs `f` if `session` still holds the lease, excluding the new owner
    /// while it runs; `None` if the lease was taken over.
    pub(crate) fn run<T>(&self, session: u64, f: impl FnOnce() -> T) -> Option<T> {
        let owner = self.owner.read().unwrap_or_else(|e| e.into_inner());
        (*owner == session).then(f)
    }

    fn owner(&self) -> RwLockWriteGuard<'_, u64> {
        self.owner.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Default)]
struct SessionCounts {
    total: usize,
    per_peer: HashMap<Peer, usize>,
}

/// What all sessions of one relay share: settings, store, random source,
/// rate limits, session counts and upload leases.
pub struct Relay {
    settings: Settings,
    store: Arc<dyn Store>,
    rng: Mutex<Box<dyn Random>>,
    limiter: Mutex<RateLimiter>,
    sessions: Mutex<SessionCounts>,
    leases: Mutex<HashMap<BatchId, Arc<Lease>>>,
    next_session: AtomicU64,
    shutting_down: AtomicBool,
    /// Threads computing expected proofs now (at most one per core).
    proof_threads: Arc<AtomicUsize>,
}

impl core::fmt::Debug for Relay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Relay")
            .field("settings", &self.settings)
            .field("sessions", &lock(&self.sessions).total)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay over `store`, drawing secrets from `rng`.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        rng: Box<dyn Random>,
        now: Instant,
    ) -> Arc<Relay> {
        Arc::new(Relay {
            limiter: Mutex::new(RateLimiter::new(settings.rate, now)),
            settings,
            store,
            rng: Mutex::new(rng),
            sessions: Mutex::new(SessionCounts::default()),
            leases: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            proof_threads: Arc::default(),
        })
    }

    /// The shared settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        lock(&self.sessions).total
    }

    /// From now on new sessions are refused with `ShuttingDown`.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Whether [`begin_shutdown`](Self::begin_shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Deletes expired batches, collects unreferenced blobs and forgets
    /// rate-limit state that has refilled. Call it periodically.
    pub fn sweep(&self, now: Instant) -> Result<SweepStats, StoreError> {
        lock(&self.limiter).prune(now);
        let secs = unix_secs(now);
        self.store
            .sweep(secs, secs.saturating_sub(self.settings.expired_memory_secs))
    }

    fn fill_random(&self, buf: &mut [u8]) -> bool {
        lock(&self.rng).fill(buf)
    }

    fn check_lookup(&self, peer: &Peer, now: Instant) -> Result<(), u32> {
        lock(&self.limiter).check(peer, now)
    }

    fn failed_lookup(&self, peer: &Peer, now: Instant) {
        lock(&self.limiter).failed(peer, now);
    }

    fn take_lease(&self, batch: BatchId, session: u64) -> Arc<Lease> {
        let lease = lock(&self.leases)
            .entry(batch)
            .or_insert_with(|| {
                Arc::new(Lease {
                    batch,
                    owner: RwLock::new(session),
                })
            })
            .clone();
        *lease.owner() = session;
        lease
    }

    fn release_lease(&self, lease: &Lease, session: u64) {
        let mut leases = lock(&self.leases);
        if *lease.owner() == session {
            leases.remove(&lease.batch);
        }
    }

    fn open_session(&self, peer: &Peer) -> Result<u64, ErrorCode> {
        if self.is_shutting_down() {
            return Err(ErrorCode::ShuttingDown);
        }
        let mut counts = lock(&self.sessions);
        let mine = counts.per_peer.get(peer).copied().unwrap_or(0);
        if counts.total >= self.settings.max_sessions || mine >= self.settings.max_sessions_per_peer
        {
            return Err(ErrorCode::Busy);
        }
        counts.total += 1;
        counts.per_peer.insert(peer.clone(), mine + 1);
        Ok(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    fn close_session(&self, peer: &Peer) {
        let mut counts = lock(&self.sessions);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_peer.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                counts.per_peer.remove(peer);
            }
        }
    }
}

/// How long a refused terminal should wait before trying again.
const BUSY_RETRY_MS: u32 = 1000;

/// Encodes the `Error` frame that answers a connection [`Session::new`]
/// refused, into `out` (at least 64 bytes).
pub fn refusal(code: ErrorCode, out: &mut [u8]) -> Option<usize> {
    let retry_after_ms = if code == ErrorCode::Busy {
        BUSY_RETRY_MS
    } else {
        0
    };
    Message::Error(message::Error {
        code,
        kind: 0,
        retry_after_ms,
    })
    .encode(frame::MIN_FRAME_LEN, out)
    .ok()
}

/// A message waiting for [`Session::poll_transmit`]. Multi-frame replies
/// (a grant and its plans, a manifest and its entries) are one entry with a
/// cursor, so a queue entry stays small whatever the batch size.
#[derive(Debug, Clone)]
enum Out {
    Welcome,
    Keepalive,
    Error {
        code: ErrorCode,
        kind: u8,
        retry_after_ms: u32,
    },
    /// `next == 0`: the Grant; `next == i + 1`: the plan of file `i`.
    Grant {
        next: u32,
    },
    /// The current plan of one file.
    Plan(u16),
    /// The durable offset of one file, read when sent.
    Ack(u16),
    Rewind {
        file: u16,
        offset: u64,
    },
    Verified(u16),
    Rejected {
        index: u16,
        reason: ErrorCode,
    },
    BatchComplete,
    /// `next == 0`: the Manifest; `next == i + 1`: entry `i`.
    Manifest {
        batch: Arc<Batch>,
        next: u32,
    },
}

/// Replies waiting to be sent. Bounded: a peer that sends requests without
/// reading replies loses replies, not relay memory.
#[derive(Debug, Default)]
struct Outbox(VecDeque<Out>);

/// Most queued replies per session.
const MAX_QUEUED: usize = 256;

impl Outbox {
    /// Forgets replies that describe the current upload. They are rendered
    /// from the upload when sent, so once it is replaced they would describe
    /// the new batch instead (found by the relay_session fuzzer).
    fn forget_upload_replies(&mut self) {
        self.0.retain(|o| {
            !matches!(
                o,
                Out::Grant { .. }
                    | Out::Plan(_)
                    | Out::Ack(_)
                    | Out::Rewind { .. }
                    | Out::Verified(_)
                    | Out::Rejected { .. }
                    | Out::BatchComplete
            )
        });
    }
}

impl Outbox {
    fn push(&mut self, out: Out) {
        if self.0.len() < MAX_QUEUED {
            self.0.push_back(out);
        } else {
            tracing::debug!("reply queue full, dropping {out:?}");
        }
    }

    fn error(&mut self, code: ErrorCode, kind: Kind) {
        self.error_retry(code, kind, 0);
    }

    fn error_retry(&mut self, code: ErrorCode, kind: Kind, retry_after_ms: u32) {
        self.push(Out::Error {
            code,
            kind: kind as u8,
            retry_after_ms,
        });
    }

    /// Queues an Ack for `file` unless one is already waiting (it reads the
    /// offset when sent, so one is enough).
    fn ack(&mut self, file: u16) {
        if !self
            .0
            .iter()
            .any(|o| matches!(o, Out::Ack(f) if *f == file))
        {
            self.push(Out::Ack(file));
        }
    }
}

/// A download stream: `Data` frames of one blob from `next` up to the credit.
#[derive(Debug, Clone, Copy)]
struct Stream {
    file: u16,
    blob: BlobId,
    size: u64,
    next: u64,
    credit_end: u64,
    /// The batch's expiry (Unix seconds): nothing is served from then on.
    expires_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    Open,
    /// Sending what is queued, then closed.
    Closing,
    Closed,
}

/// The relay's side of one connection. See the module docs.
pub struct Session {
    relay: Arc<Relay>,
    id: u64,
    peer: Peer,
    link: Link,
    phase: Phase,
    peer_max_frame: usize,
    peer_caps: u32,
    /// Upload bytes the terminal keeps in flight at most, from its `Hello`
    /// (0: it did not say).
    peer_window: u32,
    last_heard: Instant,
    /// The latest `now` any input brought: replies rendered later are
    /// judged by it (a verdict for a batch that expired meanwhile is not sent).
    clock: Instant,
    out: Outbox,
    announcing: Option<Box<upload::Announcing>>,
    /// The last announcement was refused: its remaining `FileAnnounce`s are
    /// ignored (the refusal was said once) until the next `BatchOpen`.
    announce_refused: bool,
    upload: Option<Box<Upload>>,
    stream: Option<Stream>,
    /// The driver runs syncs as [`SyncJob`]s ([`Session::defer_syncs`]).
    deferred_syncs: bool,
    /// Large files may be hashed on a helper thread ([`Session::offload_hashing`]).
    offload_hashing: bool,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(up) = &self.upload {
            self.relay.release_lease(up.lease(), self.id);
        }
        self.relay.close_session(&self.peer);
    }
}

impl Session {
    /// A session for a new connection from `peer`, or the error code to
    /// refuse it with (`Busy` over the session limits, `ShuttingDown`).
    pub fn new(relay: Arc<Relay>, peer: Peer, link: Link, now: Instant) -> Result<Self, ErrorCode> {
        let id = relay.open_session(&peer)?;
        Ok(Session {
            relay,
            id,
            peer,
            link,
            phase: Phase::AwaitHello,
            peer_max_frame: frame::MIN_FRAME_LEN,
            peer_caps: 0,
            peer_window: 0,
            last_heard: now,
            clock: now,
            out: Outbox::default(),
            announcing: None,
            announce_refused: false,
            upload: None,
            stream: None,
            deferred_syncs: false,
            offload_hashing: false,
        })
    }

    /// From now on, files of 8 MiB and more are hashed by a helper thread
    /// that reads their bytes back from the store as they are written, so
    /// that SHA-1 runs on another core than receiving; and the proofs a
    /// challenge expects are computed by a helper thread from the moment it
    /// is issued, while the terminal computes its own. Only for drivers on
    /// machines with cores to spare; the outcomes are the same either way.
    pub fn offload_hashing(&mut self) {
        self.offload_hashing = true;
    }

    /// From now on, received bytes are made durable by [`SyncJob`]s that the
    /// driver takes with [`poll_sync`](Self::poll_sync) and runs on another
    /// thread, reporting back with [`handle_synced`](Self::handle_synced),
    /// instead of in line during [`handle_frame`](Self::handle_frame): the
    /// session keeps receiving while the disk flushes, which keeps a fast
    /// link's window open. Acks still follow their fsync.
    pub fn defer_syncs(&mut self) {
        self.deferred_syncs = true;
    }

    /// The next sync job to run (after [`defer_syncs`](Self::defer_syncs)).
    /// Check it after every call into the session.
    #[must_use]
    pub fn poll_sync(&mut self) -> Option<SyncJob> {
        self.upload.as_deref_mut()?.poll_job()
    }

    /// A [`SyncJob`] from [`poll_sync`](Self::poll_sync) has been run:
    /// acknowledge what it made durable and start the next one.
    pub fn handle_synced(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        let window = self.ack_window();
        self.with_upload(|up, relay, id, out| up.on_synced(relay, id, window, out));
    }

    /// The window acks are paced by: the link's, or the terminal's if its
    /// `Hello` said it keeps fewer bytes in flight. A terminal that stops at
    /// 8 KiB would otherwise wait for a step meant for megabytes and be
    /// acknowledged only after a pause in its data. Never below
    /// [`MIN_ACK_WINDOW`]: each ack costs an fsync, and a terminal must not
    /// buy one per few bytes by announcing a tiny window.
    fn ack_window(&self) -> u32 {
        match self.peer_window {
            0 => self.link.window,
            w => w.max(MIN_ACK_WINDOW).min(self.link.window),
        }
    }

    /// This session's number, unique within the relay (for logs).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The peer.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The largest raw frame this session accepts: size the decoder with it.
    pub fn max_frame(&self) -> usize {
        self.link.max_frame()
    }

    /// The smallest `out` buffer for [`poll_transmit`](Self::poll_transmit)
    /// that lets every frame reach the peer's frame size.
    pub fn transmit_buffer_len(&self) -> usize {
        frame::max_encoded_len(self.peer_max_frame)
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has something to send,
    /// so a driver can allocate its buffer only then.
    pub fn wants_transmit(&self) -> bool {
        !self.out.0.is_empty()
            || (self.phase == Phase::Open
                && self
                    .stream
                    .is_some_and(|s| s.next < s.credit_end.min(s.size)))
    }

    /// The session is over: the driver should close the connection once
    /// [`poll_transmit`](Self::poll_transmit) returns `None`.
    pub fn is_closed(&self) -> bool {
        match self.phase {
            Phase::Closed => true,
            Phase::Closing => self.out.0.is_empty(),
            _ => false,
        }
    }

    fn instant_upload(&self) -> bool {
        self.relay.settings.instant_upload && self.peer_caps & CAP_INSTANT_UPLOAD != 0
    }

    /// Handles one CRC-checked frame from the terminal.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) {
        self.clock = self.clock.max(now);
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        let msg = match Message::decode(frame) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::debug!(session = self.id, "undecodable frame: {e}");
                return self.out.push(Out::Error {
                    code: e.code(),
                    kind: e.kind(),
                    retry_after_ms: 0,
                });
            }
        };
        self.last_heard = now;
        let kind = msg.kind();
        match msg {
            Message::Hello(h) => return self.on_hello(now, h),
            _ if self.phase == Phase::AwaitHello => {
                return self.out.error(ErrorCode::UnexpectedMessage, kind)
            }
            _ => {}
        }
        match msg {
            Message::Keepalive => self.out.push(Out::Keepalive),
            Message::Goodbye => {
                self.settle(now);
                self.phase = Phase::Closing;
            }
            Message::Error(e) => {
                tracing::debug!(
                    session = self.id,
                    "terminal reports {:?} about kind {:#04x}",
                    e.code,
                    e.kind
                );
            }
            Message::BatchOpen(b) => self.on_batch_open(b),
            Message::FileAnnounce(a) => self.on_file_announce(now, a),
            Message::Proof(p) => self.on_proof(p),
            Message::Data(d) => self.on_data(now, d),
            Message::Resume(r) => self.on_resume(now, r),
            Message::Fetch(f) => self.on_fetch(now, f),
            Message::Read(r) => self.on_read(now, r),
            Message::Ack(a) => self.on_download_ack(a),
            // Relay-to-terminal kinds make no sense here.
            _ => self.out.error(ErrorCode::UnexpectedMessage, kind),
        }
    }

    /// The driver's decoder threw bytes away. Noise is normal on a serial
    /// line and is not answered, but a frame over the announced size is
    /// (the peer ignored `Welcome.max_frame`).
    pub fn handle_dropped(&mut self, now: Instant, why: Dropped) {
        self.clock = self.clock.max(now);
        if why == Dropped::Oversize && self.phase == Phase::Open {
            self.out.push(Out::Error {
                code: ErrorCode::TooLarge,
                kind: 0,
                retry_after_ms: 0,
            });
        }
    }

    fn on_hello(&mut self, now: Instant, h: message::Hello) {
        if h.version == 0 {
            return self.out.error(ErrorCode::UnsupportedVersion, Kind::Hello);
        }
        if self.phase == Phase::Open {
            // The terminal started over (it restarted, or lost our Welcome):
            // make what it sent durable and forget the conversation.
            self.settle(now);
            self.drop_upload();
            self.announcing = None;
            self.stream = None;
            self.out.0.clear();
        }
        self.peer_max_frame =
            (h.max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN);
        self.peer_caps = h.caps;
        self.peer_window = h.window;
        self.phase = Phase::Open;
        self.out.push(Out::Welcome);
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let idle = self.last_heard + self.relay.settings.idle_timeout;
        let ack = self
            .upload
            .as_ref()
            .and_then(|u| u.ack_deadline(self.relay.settings.ack_delay));
        Some(ack.map_or(idle, |a| a.min(idle)))
    }

    /// Fires the timers due at `now`: idle timeout, delayed acknowledgements.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        if now >= self.last_heard + self.relay.settings.idle_timeout {
            tracing::debug!(session = self.id, peer = %self.peer, "idle timeout");
            return self.close_with(now, ErrorCode::IdleTimeout);
        }
        let due = self
            .upload
            .as_ref()
            .and_then(|u| u.ack_deadline(self.relay.settings.ack_delay))
            .is_some_and(|t| now >= t);
        if due {
            self.with_upload(|up, relay, id, out| up.ack_timer(relay, id, out));
        }
    }

    /// The relay is shutting down: make received bytes durable, tell the
    /// terminal (`Error{ShuttingDown}`), and close once that is sent.
    pub fn shutdown(&mut self, now: Instant) {
        if !self.is_closed() {
            self.close_with(now, ErrorCode::ShuttingDown);
        }
    }

    /// The connection is gone (EOF, reset, port removed): make received
    /// bytes durable so a resume continues after them.
    pub fn handle_disconnected(&mut self, now: Instant) {
        self.settle(now);
        self.drop_upload();
        self.phase = Phase::Closed;
    }

    fn close_with(&mut self, now: Instant, code: ErrorCode) {
        self.settle(now);
        self.stream = None;
        self.out.push(Out::Error {
            code,
            kind: 0,
            retry_after_ms: 0,
        });
        self.phase = Phase::Closing;
    }

    /// Makes every received byte durable and acknowledges it.
    fn settle(&mut self, _now: Instant) {
        self.with_upload(|up, relay, id, out| up.ack_all(relay, id, out));
    }

    fn drop_upload(&mut self) {
        if let Some(up) = self.upload.take() {
            self.relay.release_lease(up.lease(), self.id);
        }
    }

    /// Runs `f` on the active upload; drops the upload if another session
    /// took it over meanwhile.
    fn with_upload(
        &mut self,
        f: impl FnOnce(&mut Upload, &Relay, u64, &mut Outbox) -> Result<(), upload::LeaseLost>,
    ) {
        let Some(up) = self.upload.as_deref_mut() else {
            return;
        };
        if f(up, &self.relay, self.id, &mut self.out).is_err() {
            tracing::info!(session = self.id, "upload taken over by a newer session");
            self.upload = None;
        }
    }

    /// Writes the next frame into `out` (at least
    /// [`transmit_buffer_len`](Self::transmit_buffer_len) bytes) and returns
    /// its length, or `None` when there is nothing to send now.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        while let Some(item) = self.out.0.pop_front() {
            if let Some(n) = self.render(item, out) {
                return Some(n);
            }
        }
        if self.phase == Phase::Open {
            return self.poll_data(out);
        }
        None
    }

    /// Encodes one queued reply; re-queues a cursor that has more to say.
    fn render(&mut self, item: Out, out: &mut [u8]) -> Option<usize> {
        let max = self.peer_max_frame;
        let encoded = match &item {
            Out::Welcome => Message::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                role: Role::Relay,
                max_frame: self.link.max_frame,
                window: self.link.window,
                caps: if self.relay.settings.instant_upload {
                    CAP_INSTANT_UPLOAD
                } else {
                    0
                },
            })
            .encode(max, out),
            Out::Keepalive => Message::Keepalive.encode(max, out),
            Out::Error {
                code,
                kind,
                retry_after_ms,
            } => Message::Error(message::Error {
                code: *code,
                kind: *kind,
                retry_after_ms: *retry_after_ms,
            })
            .encode(max, out),
            Out::Manifest { batch, next } => {
                let msg = match next.checked_sub(1) {
                    None => Message::Manifest(Manifest {
                        code: batch.code,
                        expires_at: batch.expires_at,
                        files: batch.files.len() as u16,
                        total_size: batch.total_size(),
                        received: batch.received(),
                        ready: batch.ready(),
                    }),
                    Some(i) => {
                        let f = &batch.files[i as usize];
                        Message::ManifestEntry(ManifestEntry {
                            index: i as u16,
                            size: f.size,
                            sha1: f.sha1,
                            received: f.received(),
                            name: &f.name,
                        })
                    }
                };
                let encoded = msg.encode(max, out);
                if (*next as usize) < batch.files.len() {
                    self.out.0.push_front(Out::Manifest {
                        batch: batch.clone(),
                        next: next + 1,
                    });
                }
                encoded
            }
            upload_item => {
                let up = self.upload.as_deref()?;
                let (msg, more) =
                    up.render(upload_item, self.link.window, unix_secs(self.clock))?;
                if let Some(more) = more {
                    self.out.0.push_front(more);
                }
                msg.encode(max, out)
            }
        };
        match encoded {
            Ok(n) => Some(n),
            Err(_) => {
                // Only a long name in a tiny peer frame gets here.
                tracing::warn!(
                    session = self.id,
                    "reply does not fit the peer's frame: {item:?}"
                );
                None
            }
        }
    }
}

/// The plan a file's state stands for, as sent in a `FilePlan`.
fn file_plan(index: u16, plan: message::Plan) -> Message<'static> {
    Message::FilePlan(FilePlan { index, plan })
}
