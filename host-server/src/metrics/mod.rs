//! What an operator scrapes: counters and gauges of one relay, in a
//! `prometheus-client` [`Registry`], and the HTTP face that serves them
//! ([`http`]: `/metrics`, `/healthz`, `/readyz`).
//!
//! ```text
//!  transports ──bytes, sessions──┐
//!  session    ──events, refusals─┤  Metrics (atomics)  ──encode──► GET /metrics
//!  jobs       ──store latency────┤
//!  sweep      ──usage────────────┘
//! ```
//!
//! Updating is an atomic add: every counter a hot path touches (bytes,
//! sessions, lookups) is created once, with its labels, when the relay
//! starts, and kept by value. Only refusals (labelled by error code and
//! request, rare) and store latencies (labelled by job) go through a
//! `Family`, whose lookup is a read lock inside `prometheus-client`.
//!
//! Metrics are a side channel: nothing reads them back into a decision,
//! so the simulator and the fuzzers behave the same with or without them.

pub mod http;

use std::time::Duration;

use pickup_proto::message::Kind;
use pickup_proto::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::jobs::Found;
use crate::store::{StoreError, SweepStats, Usage};

/// The link a session runs over, a label of the byte and session metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP (bytes counted are those of the decrypted stream).
    Tls,
    /// A serial port.
    Serial,
    /// The HTTP face ([`crate::http`]): browsers' pages and downloads.
    Http,
}

impl Transport {
    const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::Serial,
        Transport::Http,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Serial => "serial",
            Transport::Http => "http",
        }
    }
}

/// How a code lookup (`Fetch` or `Read` by code) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A live batch was found.
    Ok,
    /// No batch has the code.
    Unknown,
    /// The batch has expired.
    Expired,
    /// Refused by the failed-lookup rate limiter before any lookup.
    RateLimited,
}

impl Lookup {
    const ALL: [Lookup; 4] = [
        Lookup::Ok,
        Lookup::Unknown,
        Lookup::Expired,
        Lookup::RateLimited,
    ];

    fn name(self) -> &'static str {
        match self {
            Lookup::Ok => "ok",
            Lookup::Unknown => "unknown",
            Lookup::Expired => "expired",
            Lookup::RateLimited => "rate_limited",
        }
    }
}

/// What became of a file an upload announced with content the relay may
/// already hold (instant upload, PROTOCOL.md's proof of ownership).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstantUpload {
    /// The content was held: the file was linked, no byte sent.
    Hit,
    /// The content was not held (or not disclosable): a plain upload.
    Miss,
    /// A challenge was answered with a wrong proof: uploaded instead.
    ProofFailed,
}

impl InstantUpload {
    const ALL: [InstantUpload; 3] = [
        InstantUpload::Hit,
        InstantUpload::Miss,
        InstantUpload::ProofFailed,
    ];

    fn name(self) -> &'static str {
        match self {
            InstantUpload::Hit => "hit",
            InstantUpload::Miss => "miss",
            InstantUpload::ProofFailed => "proof_failed",
        }
    }
}

/// The labels of a refusal: which request, what for, and the error code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    /// `upload`, `download`, `auth`, `names` or `session` (from the kind).
    phase: &'static str,
    /// The refused message's kind (`FileAnnounce`, `Fetch`, …).
    request: String,
    /// The `ErrorCode` sent (`UnknownCode`, `Quota`, …).
    code: String,
}

/// The label of a store operation's latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: &'static str,
}

type Pair = [(&'static str, &'static str); 1];

/// Which part of the protocol a message kind belongs to (PROTOCOL.md's
/// kind ranges), so refusals can be summed per upload or download.
fn phase(kind: Option<Kind>) -> &'static str {
    match kind.map(|k| k as u8) {
        Some(0x10..=0x1F) | Some(0x57) => "upload",
        Some(0x20..=0x2F) | Some(0x58) => "download",
        Some(0x30..=0x3F) => "notices",
        Some(0x50..=0x56) => "auth",
        Some(0x59..=0x5F) => "names",
        _ => "session",
    }
}

/// A relay's metrics, held by [`Relay`](crate::Relay) ([`Relay::metrics`](crate::Relay::metrics)).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    received: [Counter; 4],
    sent: [Counter; 4],
    sessions: [Gauge; 4],
    uploads_started: Counter,
    uploads_completed: Counter,
    tus_bytes: Counter,
    tus_completed: Counter,
    downloads_started: Counter,
    files_downloaded: Counter,
    refusals: Family<RefusalLabels, Counter>,
    instant: [Counter; 3],
    dedup_bytes: Counter,
    lookups: [Counter; 4],
    logins_ok: Counter,
    logins_failed: Counter,
    store_seconds: Family<JobLabels, Histogram, fn() -> Histogram>,
    live_batches: Gauge,
    stored_bytes: Gauge,
    pushes: [Counter; 8],
    deliveries: [Counter; 4],
}

/// How a `Push` ended (PROTOCOL.md §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// A new delivery was stored.
    Queued,
    /// A retry: the delivery made before was answered.
    Retried,
    /// No terminal the sender may push to (or none of the name).
    UnknownTerminal,
    /// No batch has the code.
    UnknownCode,
    /// The batch has expired.
    Expired,
    /// The batch is still uploading.
    NotReady,
    /// A cap was reached.
    QueueFull,
    /// The store or the directory failed.
    Failed,
}

impl PushResult {
    const ALL: [PushResult; 8] = [
        PushResult::Queued,
        PushResult::Retried,
        PushResult::UnknownTerminal,
        PushResult::UnknownCode,
        PushResult::Expired,
        PushResult::NotReady,
        PushResult::QueueFull,
        PushResult::Failed,
    ];

    fn name(self) -> &'static str {
        match self {
            PushResult::Queued => "queued",
            PushResult::Retried => "retried",
            PushResult::UnknownTerminal => "unknown_terminal",
            PushResult::UnknownCode => "unknown_code",
            PushResult::Expired => "expired",
            PushResult::NotReady => "not_ready",
            PushResult::QueueFull => "queue_full",
            PushResult::Failed => "failed",
        }
    }
}

/// A state a delivery ended in, or went offline (counted once each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The target sent its receipt.
    Delivered,
    /// The target refused the notice.
    Refused,
    /// The batch expired first.
    Expired,
    /// No receipt within the confirm deadline: kept as an offline file.
    Offline,
}

impl DeliveryOutcome {
    const ALL: [DeliveryOutcome; 4] = [
        DeliveryOutcome::Delivered,
        DeliveryOutcome::Refused,
        DeliveryOutcome::Expired,
        DeliveryOutcome::Offline,
    ];

    fn name(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Refused => "refused",
            DeliveryOutcome::Expired => "expired",
            DeliveryOutcome::Offline => "offline",
        }
    }
}

/// Store latencies from 50 µs to about 3.3 s, in factors of 4: a write
/// to the page cache, a sync of a slow disk and everything between.
fn store_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 4.0, 9))
}

/// Registers one counter per label value of `label` under `name`, and
/// returns them in the order of `values`.
fn labelled<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<Pair, Counter>::default();
    registry.register(name, help, family.clone());
    values.map(|v| family.get_or_create(&[(label, v)]).clone())
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered at zero.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let transports = Transport::ALL.map(Transport::name);
        let received = labelled(
            &mut r,
            "pickup_transport_received_bytes",
            "Bytes read from peers, by transport (TLS: decrypted bytes)",
            "transport",
            transports,
        );
        let sent = labelled(
            &mut r,
            "pickup_transport_sent_bytes",
            "Bytes written to peers, by transport (TLS: before encryption)",
            "transport",
            transports,
        );
        let sessions_family = Family::<Pair, Gauge>::default();
        r.register(
            "pickup_sessions_open",
            "Sessions open now, by transport",
            sessions_family.clone(),
        );
        let sessions =
            transports.map(|t| sessions_family.get_or_create(&[("transport", t)]).clone());
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let uploads_started = counter("pickup_uploads_started", "Batches created by an upload");
        let uploads_completed = counter(
            "pickup_uploads_completed",
            "Uploaded batches complete: every file verified or linked",
        );
        let tus_bytes = counter(
            "pickup_tus_received_bytes",
            "Bytes of tus PATCH bodies made durable (HTTP uploads)",
        );
        let tus_completed = counter(
            "pickup_tus_uploads_completed",
            "tus uploads complete: the file verified and kept",
        );
        let downloads_started = counter(
            "pickup_downloads_started",
            "Ready batches whose manifest a session fetched (once per session and batch)",
        );
        let files_downloaded = counter(
            "pickup_downloads_files_completed",
            "Download streams that sent the last byte of their file",
        );
        let dedup_bytes = counter(
            "pickup_dedup_saved_bytes",
            "Bytes not uploaded because the relay held the content (instant-upload hits)",
        );
        let logins_ok = counter(
            "pickup_logins_ok",
            "Successful authentications (password, token or terminal)",
        );
        let logins_failed = counter("pickup_logins_failed", "Failed authentications");
        let refusals = Family::<RefusalLabels, Counter>::default();
        r.register(
            "pickup_refusals",
            "Error replies sent, by phase (upload, download, notices, auth, names, session), request kind and error code",
            refusals.clone(),
        );
        let instant = labelled(
            &mut r,
            "pickup_instant_uploads",
            "Non-empty files of new batches: hit (linked after a proof), miss (nothing held to challenge against), proof_failed (uploaded instead)",
            "result",
            InstantUpload::ALL.map(InstantUpload::name),
        );
        let lookups = labelled(
            &mut r,
            "pickup_code_lookups",
            "Lookups of a pickup code: ok, unknown, expired, rate_limited",
            "result",
            Lookup::ALL.map(Lookup::name),
        );
        let store_seconds = Family::<JobLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            store_histogram,
        );
        r.register(
            "pickup_store_operation_seconds",
            "Time a session's store job took, by job",
            store_seconds.clone(),
        );
        let live_batches = Gauge::default();
        r.register(
            "pickup_store_batches",
            "Batches the store holds (live or expired and not yet swept), at the last sweep",
            live_batches.clone(),
        );
        let stored_bytes = Gauge::default();
        r.register(
            "pickup_store_bytes",
            "Bytes the store holds (blobs and durable partial uploads), at the last sweep",
            stored_bytes.clone(),
        );
        let pushes = labelled(
            &mut r,
            "pickup_pushes",
            "Pushes to a terminal, by result: queued, retried, unknown_terminal, unknown_code, expired, not_ready, queue_full, failed",
            "result",
            PushResult::ALL.map(PushResult::name),
        );
        let deliveries = labelled(
            &mut r,
            "pickup_deliveries",
            "Deliveries that ended delivered, refused or expired, or went offline",
            "state",
            DeliveryOutcome::ALL.map(DeliveryOutcome::name),
        );
        Metrics {
            pushes,
            deliveries,
            registry: r,
            received,
            sent,
            sessions,
            uploads_started,
            uploads_completed,
            tus_bytes,
            tus_completed,
            downloads_started,
            files_downloaded,
            refusals,
            instant,
            dedup_bytes,
            lookups,
            logins_ok,
            logins_failed,
            store_seconds,
            live_batches,
            stored_bytes,
        }
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The byte counters of transport `t`, for a connection or a port to
    /// keep (a clone shares the counts).
    pub fn bytes(&self, t: Transport) -> Bytes {
        Bytes {
            received: self.received[t as usize].clone(),
            sent: self.sent[t as usize].clone(),
        }
    }

    /// A session opened over `t`; it counts as open while the guard lives.
    pub fn session_opened(&self, t: Transport) -> OpenSession {
        let gauge = self.sessions[t as usize].clone();
        gauge.inc();
        OpenSession(gauge)
    }

    /// A batch was created for an upload.
    pub fn upload_started(&self) {
        self.uploads_started.inc();
    }

    /// An upload's batch is complete.
    pub fn upload_completed(&self) {
        self.uploads_completed.inc();
    }

    /// `n` bytes of a tus PATCH became durable.
    pub fn tus_received(&self, n: u64) {
        self.tus_bytes.inc_by(n);
    }

    /// A tus upload completed (its file verified and kept).
    pub fn tus_completed(&self) {
        self.tus_completed.inc();
    }

    /// A session began downloading a ready batch.
    pub fn download_started(&self) {
        self.downloads_started.inc();
    }

    /// A download stream sent the last byte of its file.
    pub fn file_downloaded(&self) {
        self.files_downloaded.inc();
    }

    /// A session answered `code` about a message of kind byte `kind`
    /// (every `Error` frame a session sends).
    pub fn refusal(&self, code: ErrorCode, kind: u8) {
        let kind = Kind::from_u8(kind);
        let labels = RefusalLabels {
            phase: phase(kind),
            request: kind.map_or_else(|| "none".to_owned(), |k| format!("{k:?}")),
            code: format!("{code:?}"),
        };
        self.refusals.get_or_create(&labels).inc();
    }

    /// A file announced with possibly held content ended as `i`; a hit
    /// saved `size` bytes.
    pub fn instant_upload(&self, i: InstantUpload, size: u64) {
        self.instant[i as usize].inc();
        if i == InstantUpload::Hit {
            self.dedup_bytes.inc_by(size);
        }
    }

    /// A code lookup ended as `l`.
    pub fn lookup(&self, l: Lookup) {
        self.lookups[l as usize].inc();
    }

    /// A code was looked up in the store: found live, expired or unknown
    /// (a store error counts as none of them).
    pub(crate) fn code_looked_up(&self, found: &Result<Found, StoreError>) {
        match found {
            Ok(Found::Live(..)) => self.lookup(Lookup::Ok),
            Ok(Found::Expired) => self.lookup(Lookup::Expired),
            Ok(Found::Unknown) => self.lookup(Lookup::Unknown),
            Err(_) => {}
        }
    }

    /// An authentication succeeded (`true`) or failed.
    pub fn login(&self, ok: bool) {
        if ok {
            self.logins_ok.inc();
        } else {
            self.logins_failed.inc();
        }
    }

    /// A store job named `job` took `took`.
    pub fn store_operation(&self, job: &'static str, took: Duration) {
        self.store_seconds
            .get_or_create(&JobLabels { job })
            .observe(took.as_secs_f64());
    }

    /// A push ended as `r`.
    pub fn push(&self, r: PushResult) {
        self.pushes[r as usize].inc();
    }

    /// A delivery ended as `o`, or went offline.
    pub fn delivery(&self, o: DeliveryOutcome) {
        self.deliveries[o as usize].inc();
    }

    /// What a sweep did to deliveries.
    pub fn deliveries_swept(&self, stats: &SweepStats) {
        self.deliveries[DeliveryOutcome::Offline as usize].inc_by(stats.deliveries_offline);
        self.deliveries[DeliveryOutcome::Expired as usize].inc_by(stats.deliveries_expired);
    }

    /// What the store holds, as a sweep read it.
    pub fn store_usage(&self, usage: Usage) {
        self.live_batches
            .set(i64::try_from(usage.batches).unwrap_or(i64::MAX));
        self.stored_bytes
            .set(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
    }
}

/// The byte counters of one transport, kept by its read and write loops.
#[derive(Debug, Clone)]
pub struct Bytes {
    received: Counter,
    sent: Counter,
}

impl Bytes {
    /// `n` bytes were read from a peer.
    pub fn received(&self, n: usize) {
        self.received.inc_by(n as u64);
    }

    /// `n` bytes were written to a peer.
    pub fn sent(&self, n: usize) {
        self.sent.inc_by(n as u64);
    }
}

/// A session counted as open in [`Metrics`] until dropped.
#[derive(Debug)]
#[must_use = "the session counts as open only while this lives"]
pub struct OpenSession(Gauge);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests;
