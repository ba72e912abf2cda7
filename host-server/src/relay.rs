//! State every session of one relay shares: settings, the store, the random
//! source, failed-lookup limits, storage reservations, session counts,
//! upload leases and the manifests of ready batches being sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard, Weak};

use pickup_proto::{Code, ErrorCode, Instant};

use crate::auth_limit::AuthLimiter;
use crate::directory::{memory::MemoryDirectory, Directory};
use crate::mailbox::listeners::Listeners;
use crate::mailbox::Doorbell;
use crate::metrics::Metrics;
use crate::proof_budget::ProofBudget;
use crate::quota::Quotas;
use crate::random::Random;
use crate::rate_limit::{Peer, RateLimiter, Stock};
use crate::settings::Settings;
use crate::store::{Batch, BatchId, Store, StoreError, SweepStats};

/// Shared manifests kept track of before the dead ones are forgotten.
const MANIFESTS_PRUNE_AT: usize = 1024;

/// Locks `m`, taking over the state of a holder that panicked (every
/// critical section leaves its state whole).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seconds since the Unix epoch, from the relay's `now` (milliseconds since
/// the Unix epoch, see [`crate::transport::Clock`]).
pub fn unix_secs(now: Instant) -> u64 {
    now.as_millis() / 1000
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_text(secs: u64) -> String {
    let (year, month, day) = civil_date(secs.div_euclid(86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian `(year, month, day)` of `days` since
/// 1970-01-01 (Howard Hinnant's civil-from-days algorithm).
pub(crate) fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Who may write to a batch's partial uploads: the session that most
/// recently granted or resumed it. A terminal that reconnects takes the
/// upload over from its stale session, whose later writes are refused.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) batch: BatchId,
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
    pub(crate) settings: Settings,
    pub(crate) store: Arc<dyn Store>,
    /// Users, their tokens and terminals.
    pub(crate) directory: Arc<dyn Directory>,
    /// Failed authentications, per account and per peer.
    pub(crate) auth_limit: Mutex<AuthLimiter>,
    pub(crate) rng: Mutex<Box<dyn Random>>,
    limiter: Mutex<RateLimiter>,
    proofs: Mutex<ProofBudget>,
    /// Storage reservations and per-owner batch limits: admission checks
    /// and reserves under this one lock.
    quotas: Mutex<Quotas>,
    sessions: Mutex<SessionCounts>,
    leases: Mutex<HashMap<BatchId, Arc<Lease>>>,
    /// Ready batches whose manifest some session is sending, by code: one
    /// copy each, however many sessions (or requests) send it.
    manifests: Mutex<HashMap<Code, Weak<Batch>>>,
    next_session: AtomicU64,
    shutting_down: AtomicBool,
    /// Shared with each session's operator log ([`Relay::metrics_handle`]).
    metrics: Arc<Metrics>,
    /// The session listening for each terminal's notices.
    listeners: Listeners,
    /// The running forwards' live progress and their watchers.
    forwards: crate::forward::board::Board,
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
    /// A relay over `store` with no accounts (an empty in-memory
    /// directory), drawing secrets from `rng`.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        rng: Box<dyn Random>,
        now: Instant,
    ) -> Arc<Relay> {
        let directory = Arc::new(MemoryDirectory::new(settings.auth.password));
        Relay::with_directory(settings, store, directory, rng, now)
    }

    /// A relay over `store` whose users and terminals are in `directory`.
    pub fn with_directory(
        settings: Settings,
        store: Arc<dyn Store>,
        directory: Arc<dyn Directory>,
        rng: Box<dyn Random>,
        now: Instant,
    ) -> Arc<Relay> {
        Arc::new(Relay {
            directory,
            auth_limit: Mutex::new(AuthLimiter::new(&settings.auth)),
            limiter: Mutex::new(RateLimiter::new(settings.rate, now)),
            proofs: Mutex::new(ProofBudget::new(settings.proof, now)),
            quotas: Mutex::new(Quotas::new(settings.quota)),
            settings,
            store,
            rng: Mutex::new(rng),
            sessions: Mutex::new(SessionCounts::default()),
            leases: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            metrics: Arc::new(Metrics::new()),
            listeners: Listeners::default(),
            forwards: Default::default(),
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

    /// The directory of users and terminals.
    pub fn directory(&self) -> &dyn Directory {
        &*self.directory
    }

    /// The operator's counters and gauges.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics, for a holder that outlives a borrow of the relay.
    pub(crate) fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
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

    /// Bytes reserved by uploads now (besides what the store holds).
    pub fn reserved_bytes(&self) -> u64 {
        lock(&self.quotas).reserved()
    }

    /// Deletes expired batches and incomplete ones without progress,
    /// collects unreferenced blobs, deletes forwards finished more than
    /// `[forward] keep_finished_secs` ago, releases the reservations of
    /// stalled uploads and forgets rate-limit state that has refilled.
    /// Call it periodically.
    pub fn sweep(&self, now: Instant) -> Result<SweepStats, StoreError> {
        lock(&self.limiter).prune(now);
        lock(&self.proofs).prune(now);
        let released = lock(&self.quotas).sweep(now);
        if released > 0 {
            tracing::info!(
                bytes = released,
                "released the reservations of stalled uploads"
            );
        }
        let secs = unix_secs(now);
        self.release_removed_accounts();
        if let Err(e) = self.directory.remove_expired_tokens(secs) {
            tracing::error!("forgetting expired tokens failed: {e}");
        }
        // Deadlines first: a delivery going offline, or a target still
        // reading, keeps its batch from the store sweep below.
        let deliveries = self.store.sweep_deliveries(secs, &self.settings.push);
        if let Err(e) = &deliveries {
            tracing::error!("sweeping deliveries failed: {e}");
        }
        let swept = self
            .store
            .sweep(secs, secs.saturating_sub(self.settings.expired_memory_secs))
            .map(|mut stats| {
                stats.deliveries_offline = deliveries.map_or(0, |d| d.offline);
                self.metrics.deliveries_swept(&stats);
                stats
            });
        // A failed forward sweep leaves the rest for the next sweep, as
        // a failed delivery sweep does.
        let forwards = self
            .store
            .sweep_finished(self.settings.forward.finished_before(secs));
        if let Err(e) = &forwards {
            tracing::error!("sweeping finished forwards failed: {e}");
        }
        let swept = swept.map(|mut stats| {
            stats.forwards = forwards.unwrap_or(0);
            stats
        });
        // After the sweep, so the gauges leave out what it removed.
        match self.store.usage() {
            Ok(usage) => self.metrics.store_usage(usage),
            Err(e) => tracing::error!("reading the store's usage failed: {e}"),
        }
        swept
    }

    /// Releases the named files and shares of accounts an operator removed
    /// ([`Directory::removed_accounts`]), a bounded number per sweep.
    fn release_removed_accounts(&self) {
        let names = match self.directory.removed_accounts(256) {
            Ok(names) => names,
            Err(e) => return tracing::error!("listing removed accounts failed: {e}"),
        };
        let mut released = Vec::with_capacity(names.len());
        for name in names {
            match self.store.remove_owner(&name) {
                Ok(()) => released.push(name),
                Err(e) => tracing::error!("releasing a removed account's files failed: {e}"),
            }
        }
        if !released.is_empty() {
            tracing::info!(
                accounts = released.len(),
                "released removed accounts' files"
            );
            if let Err(e) = self.directory.forget_removed(&released) {
                tracing::error!("forgetting released accounts failed: {e}");
            }
        }
    }

    /// Session `session` listens for `terminal`'s notices, waking by
    /// `bell`; a newer listener replaces it (PROTOCOL.md §11).
    pub(crate) fn listen(&self, terminal: &str, session: u64, bell: Arc<Doorbell>) {
        self.listeners.listen(terminal, session, bell);
    }

    /// Session `session` stops listening for `terminal`, if it still did.
    pub(crate) fn stop_listening(&self, terminal: &str, session: u64) {
        self.listeners.stop(terminal, session);
    }

    /// Whether `session` still listens for `terminal`.
    pub(crate) fn is_listening(&self, terminal: &str, session: u64) -> bool {
        self.listeners.is_listening(terminal, session)
    }

    /// The running forwards' live progress, their watchers, and the
    /// forwarder's doorbell ([`crate::forward::board`]).
    pub fn forward_board(&self) -> &crate::forward::board::Board {
        &self.forwards
    }

    /// A push to `terminal` was committed: wake its listening session.
    pub(crate) fn ring(&self, terminal: &str) {
        self.listeners.ring(terminal);
    }

    /// Every listening session may have missed a push (the doorbells of
    /// other instances were lost for a while): wake them all.
    pub(crate) fn ring_all(&self) {
        self.listeners.ring_all();
    }

    /// Failed lookups from now on spend only `stock`, tokens claimed from
    /// the budget all instances of a cluster share
    /// ([`RateLimiter::share`]); per-peer limits stay this relay's.
    pub fn share_lookup_budget(&self, stock: Arc<Stock>) {
        lock(&self.limiter).share(stock);
    }

    /// Whether failed lookups spend a budget shared with other instances.
    pub fn lookup_budget_is_shared(&self) -> bool {
        lock(&self.limiter).is_shared()
    }

    /// The admission state; admission checks and reserves under this lock.
    pub(crate) fn quotas(&self) -> MutexGuard<'_, Quotas> {
        lock(&self.quotas)
    }

    pub(crate) fn fill_random(&self, buf: &mut [u8]) -> bool {
        lock(&self.rng).fill(buf)
    }

    pub(crate) fn check_lookup(&self, peer: &Peer, now: Instant) -> Result<(), u32> {
        lock(&self.limiter).check(peer, now)
    }

    pub(crate) fn failed_lookup(&self, peer: &Peer, now: Instant) {
        lock(&self.limiter).failed(peer, now);
    }

    /// Takes a challenge of file `index` of `batch` (held content of
    /// `size` bytes) from the proof budget: `false` if the file or `peer`
    /// has none left, and the file is then uploaded instead.
    pub(crate) fn charge_challenge(
        &self,
        peer: &Peer,
        batch: BatchId,
        index: u16,
        size: u64,
        now: Instant,
    ) -> bool {
        lock(&self.proofs).charge(peer, batch, index, size, now)
    }

    /// The manifest to send for `batch`, just looked up: the copy another
    /// request is already sending if the batch is ready (a ready batch no
    /// longer changes), so a peer that asks for it again and again without
    /// reading costs one copy, not one per request.
    pub(crate) fn share_manifest(&self, batch: Batch) -> Arc<Batch> {
        if !batch.ready() {
            return Arc::new(batch);
        }
        let mut manifests = lock(&self.manifests);
        if let Some(shared) = manifests
            .get(&batch.code)
            .and_then(Weak::upgrade)
            .filter(|b| b.id == batch.id)
        {
            return shared;
        }
        if manifests.len() >= MANIFESTS_PRUNE_AT {
            manifests.retain(|_, m| m.strong_count() > 0);
        }
        let shared = Arc::new(batch);
        manifests.insert(shared.code, Arc::downgrade(&shared));
        shared
    }

    /// The manifest of the ready batch under `code` if a session is sending
    /// it now and it has not expired (at `now_secs`): a repeated `Fetch`
    /// needs no lookup in the store.
    pub(crate) fn sending_manifest(&self, code: &Code, now_secs: u64) -> Option<Arc<Batch>> {
        lock(&self.manifests)
            .get(code)
            .and_then(Weak::upgrade)
            .filter(|b| now_secs < b.expires_at)
    }

    pub(crate) fn take_lease(&self, batch: BatchId, session: u64) -> Arc<Lease> {
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

    /// The batch's lease for `session` if nobody holds it now; `None` while
    /// another writer (a wire session or another tus request) does. A tus
    /// PATCH takes it this way: a second concurrent PATCH is refused
    /// rather than interleaved, while a wire resume still takes over.
    pub(crate) fn try_lease(&self, batch: BatchId, session: u64) -> Option<Arc<Lease>> {
        let mut leases = lock(&self.leases);
        if leases.contains_key(&batch) {
            return None;
        }
        let lease = Arc::new(Lease {
            batch,
            owner: RwLock::new(session),
        });
        leases.insert(batch, lease.clone());
        Some(lease)
    }

    /// A writer id that no session has: what a tus request holds a lease
    /// as (its connection's session slot is counted by the listener).
    pub(crate) fn writer_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn release_lease(&self, lease: &Lease, session: u64) {
        let mut leases = lock(&self.leases);
        if *lease.owner() == session {
            leases.remove(&lease.batch);
        }
    }

    pub(crate) fn open_session(&self, peer: &Peer) -> Result<u64, ErrorCode> {
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

    pub(crate) fn close_session(&self, peer: &Peer) {
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
