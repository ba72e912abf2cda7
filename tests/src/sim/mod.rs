//! Deterministic simulation of terminals and a relay over faulty links.
//!
//! One seed is one run: the seed picks the files, the link's faults and
//! speed, when links break, when the relay crashes (losing every byte it
//! had not made durable) and when terminals restart. Everything runs in one
//! thread on a simulated clock, so a failing seed replays exactly:
//!
//! ```text
//!   upload::Session ─┐   Pipe (drop, dup, flip, cut)   ┌─ session::Session ─┐
//!   download::Session┼── frame::Decoder ⇄ ──────────── ┼─ session::Session ─┼─ Relay ─ MemoryStore
//!   (sink in memory) │                                 │  …                 │    (crash: lose what
//!   notice::Sender   │                                 │  doorbell rung ──► │     was never synced;
//!   notice::Listener ┘                                 └─ handle_wake       ┘     deliveries kept)
//! ```
//!
//! In a third of the seeds the same links also carry addressed delivery
//! (PROTOCOL.md §11, see [`notices`]): a sender pushes the first batch to
//! 1–3 terminals, whose listeners connect, disconnect and restart, and
//! download what they are notified of as themselves; after every step the
//! run answers the relay sessions' doorbells as a transport does.
//!
//! Every frame the relay emits is decoded by a tap and checked against the
//! store and the original files before the link can damage it:
//!
//! - data served to a downloader is the uploaded file's bytes, and only
//!   from a batch whose every file is verified;
//! - a manifest describes exactly the uploaded files;
//! - an `Ack` or `FilePlan::Upload` offset never exceeds the durable bytes,
//!   and after a crash the store still holds at least every offset it
//!   ever acknowledged, with the right bytes;
//! - `FileVerified` and `BatchComplete` only for complete, correct content;
//! - a `Notice` only to its delivery's target, one delivery per push
//!   whatever the retries; a `Settled` only for the listener's own
//!   delivery; a `Delivery` reads `Delivered` only once the target's
//!   application confirmed, `Refused` only from a refusing target and
//!   `Expired` only after the batch's expiry.
//!
//! At the end every upload has completed, every download has completed with
//! byte-identical files, a download of an unknown code failed with
//! `UnknownCode`, every push was delivered exactly once to its target's
//! application (handed at most once per listener and never again once
//! decided, byte-identical files, `Delivered` in the store and for the
//! sender), refused by its target, or reported `Expired` to the sender
//! after its batch expired; and all of it within a bounded simulated time
//! and number of steps: a session that waits forever fails the seed.

mod batches;
mod direct;
pub mod forward;
pub mod link;
pub mod named;
pub mod pair;
pub mod rng;
mod seeds;
pub mod takeover;
pub mod traffic;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::mem_files::MemFiles;
use pickup_proto::code::Code;
use pickup_proto::download;
use pickup_proto::drive;
use pickup_proto::frame::{self, Decoder};
use pickup_proto::hash::Sha1Digest;
use pickup_proto::identity::{AuthError, Credential};
use pickup_proto::message::{Kind, Message, Plan, ResumeToken};
use pickup_proto::notice;
use pickup_proto::upload;
use pickup_proto::{Duration, ErrorCode, Instant};
use pickup_relay::codes::code_key;
use pickup_relay::directory::MemoryDirectory;
use pickup_relay::random::SeededRandom;
use pickup_relay::rate_limit::Peer;
use pickup_relay::store::memory::MemoryStore;
use pickup_relay::store::{FileContent, Lookup, Store};
use pickup_relay::{Job as RelayJob, Link, Relay, Session, Settings};

use link::{Faults, Pipe, PipeStats};
use rng::SimRng;
use traffic::Traffic;

pub use batches::{batches_for, run_many, BatchSpec};
use wire::{feed_relay, trace_client_frame, Ev, OwnedMsg, ToOwnedMsg};
pub(crate) use wire::{hand_frame, take_frame};

/// Seeds that once failed, run by every simulator test besides its range.
/// Each line says what the seed found; the commit that added it fixed it.
pub const REGRESSIONS: &[u64] = &[
    // A download on a 64-byte-frame, 1 byte/ms link losing a quarter of its
    // frames and cut every 5 s refetched its manifest on every reconnect,
    // and a lost credit Ack or restart Read stalled it for 8 s: it moved
    // 47 bytes per connection (its upload 287) and missed the deadline.
    1_079_341,
    // Uploads on a 1 byte/ms link outliving their one-hour code: the
    // relay had swept the expired batch and answered `Resume` with
    // `UnknownToken`, which the simulator only accepted as `Expired`.
    1_342_335,
    1_800_406,
    // Downloads on a 64-byte-frame, 1000 byte/ms link damaging about a
    // fifth of its frames: one granting a 1 MiB window had the relay send
    // the rest of the file after every loss, and each restarted stream
    // waited behind it (a few frames of progress per 800 ms); the run
    // missed the step bound. The credit now halves at each loss.
    1_180_230,
    // Named files (PROTOCOL.md §8) over lossy links: a lost NamedPut left
    // a batch unnamed behind its BatchComplete (146, 221); a duplicated
    // TerminalAuth made the honest answer to the older challenge fail
    // (125); a repeated FetchNamed replaced the handle about to be read
    // (144); a lost Manifest left the reads on an older link's handle
    // (817); a replaced name was written past its new size (230, 2468);
    // a terminal restarted over a sink holding more of a name than its new,
    // shorter content finished with the old bytes (5695, 8940).
    125,
    144,
    146,
    221,
    230,
    817,
    2468,
    5695,
    8940,
    // Addressed delivery: a relay session whose progress write fell due
    // while a job ran kept `poll_timeout` at now (only `poll_job` moved
    // it), and the run spun at one instant.
    155,
    // A nosy target's repeated guess drew two UnknownNotice answers; the
    // second was taken for its own Receipt, whose Settled the link then
    // lost: the verdict was held for good (CI's random range of 88bf53f).
    // The application now confirms again and the listener sends it again.
    150_355_328_990_986,
    150_355_328_997_959,
    // A grant arrived with a challenge per file and their upload plans in
    // one read: the upload machine's 8 event places overflowed and the
    // oldest, the grant, was dropped (CI's random range of 74d9810). A full
    // queue now drops the oldest report, never the grant.
    128_477_521_248_078,
    // A named download's repeated FetchNamed was answered before and after
    // the name's replacement; its reads went out under the first answer's
    // handle, which the second had replaced, and the relay's UnknownCode
    // failed the download (same range). Such reads now fetch again.
    128_477_521_259_313,
    // A named download left alone on a 64-byte-frame, 1 byte/ms link cut
    // every 3 s missed the 6 h bound (CI's random range of f85fc07): after
    // a duplicated TerminalAuth the relay refused the second answer as
    // unexpected, and the download dropped one in nine of the links it had
    // just authenticated. That refusal is now ignored. (Since 6e12eea's
    // relay keepalives the seed runs another course and passed anyway.)
    273_090_135_179_919,
    // The same race as 128_477_521_259_313 (the rotating range of
    // 7a07b93): the terminal read under the first of two manifests'
    // handles, which the second had replaced, and the relay's UnknownCode
    // failed the download. The relay now keeps a session's last four read
    // handles, so the first still reads.
    134_173_591_361_500,
];

/// Most files in a simulated batch (the client machines' capacity).
const MAX_FILES: usize = 4;
/// Simulated time a run may take before it counts as stuck.
const DEADLINE: Duration = Duration::from_secs(6 * 3600);
/// Steps a run may take before it counts as stuck.
const MAX_STEPS: u64 = 2_000_000;
/// Steps at one instant before it counts as a busy loop.
const MAX_STEPS_AT_ONE_INSTANT: u64 = 10_000;
/// Where the simulated clock starts: the relay's `Instant` is Unix milliseconds.
const EPOCH: Instant = Instant::from_millis(1_790_000_000_000);

/// How to run a seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Print every step of the run to stderr (for replaying a failure).
    pub trace: bool,
}

/// What a seed's run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Simulated milliseconds until everything finished.
    pub sim_ms: u64,
    /// Simulation steps.
    pub steps: u64,
    /// Uploads completed.
    pub uploads: u32,
    /// Downloads completed (byte-identical).
    pub downloads: u32,
    /// Files linked by proof of ownership instead of sent.
    pub linked: u32,
    /// Relay crashes.
    pub crashes: u32,
    /// Link cuts.
    pub cuts: u32,
    /// Terminal restarts.
    pub restarts: u32,
    /// Downloads refused because the code had expired.
    pub expired: u32,
    /// Relay session jobs run (writes and syncs, lookups, verdicts, reads).
    pub jobs: u32,
    /// Connections made.
    pub connections: u32,
    /// What the links did, summed over both directions of every connection.
    pub link: PipeStats,
    /// The link's speed in bytes per millisecond (0: unlimited), its
    /// class in the summary's per-direction figures.
    pub bytes_per_ms: u64,
    /// File bytes the uploads' connections moved (see [`traffic`]).
    pub up: Traffic,
    /// File bytes the downloads' connections moved (see [`traffic`]).
    pub down: Traffic,
    /// Whether the seed ran with identity and named files ([`named`]).
    pub named: bool,
    /// Named uploads completed (their names bound).
    pub named_uploads: u32,
    /// Downloads by name completed with a content the name held.
    pub named_downloads: u32,
    /// Downloads by name that saw their name replaced and started over.
    pub replaced: u32,
    /// Impostors (a wrong device key) refused.
    pub impostors: u32,
    /// Whether the seed ran with addressed delivery ([`notices`]).
    pub notices: bool,
    /// Notices handed to a target's application.
    pub notices_shown: u32,
    /// `Delivery` answers and status lines the sender received.
    pub notices_reported: u32,
    /// Relay crashes timed on purpose: after a push's answer, mid-way
    /// through a notice's download, after a confirmation.
    pub notice_crashes: u32,
    /// Pushes that ended delivered exactly once.
    pub notices_delivered: u32,
    /// Pushes their target refused by its policy.
    pub notices_refused: u32,
    /// Pushes that expired (or were never accepted: their batch expired).
    pub notices_expired: u32,
}

/// Which side of a connection closes it, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Everything in flight arrives first (FIN after data).
    Graceful,
    /// The link breaks: a random prefix of what is in flight arrives.
    Cut,
    /// The relay process died: nothing more arrives, the relay side is gone.
    RelayCrash,
}

/// One connection between a terminal and the relay.
struct Conn {
    /// `None` once the relay refused the connection (its error is in flight).
    relay: Option<Session>,
    to_relay: Pipe,
    to_client: Pipe,
    relay_decoder: Decoder<Vec<u8>>,
    client_decoder: Decoder<Vec<u8>>,
    /// Decodes what the relay sends, before the link can damage it.
    tap: Decoder<Vec<u8>>,
    /// The relay finished the session: close once its output has arrived.
    relay_done: bool,
    /// The session's job "on the disk thread", done at the given time.
    job: Option<(Instant, RelayJob)>,
    /// Bytes that arrived while the session asked for no input.
    unfed: Vec<u8>,
    /// The batch of the last grant the relay sent on this connection.
    code: Option<Code>,
    /// The SHA-1s of the named files the relay described on this
    /// connection (a download by name reads one of those contents: a
    /// repeated fetch may describe the name's newer content too).
    named_sha1s: Vec<Sha1Digest>,
}

/// A terminal's protocol machine with its files: the upload reads its
/// batch's contents, the download writes into its sink. Both are driven
/// through [`drive::Machine`], with one body for either (see [`drive!`]).
enum Machine<'a> {
    Up {
        session: Box<upload::Session<'a, MAX_FILES>>,
        config: upload::Config,
        source: &'a [Vec<u8>],
    },
    Down {
        session: Box<download::Session<'a, MAX_FILES>>,
        config: download::Config,
        /// The downloader's disk: survives its restarts, and panics if the
        /// session writes past a file or finishes a wrong one.
        sink: MemFiles,
    },
    /// A pusher ([`notices`]); it touches no files, `files` stays empty.
    Send {
        session: Box<notice::Sender<'a>>,
        config: notice::SendConfig,
        files: MemFiles,
    },
    /// A target terminal listening for notices ([`notices`]).
    Listen {
        session: Box<notice::Listener<'a, { notices::LEDGER }>>,
        config: notice::ListenConfig<'a>,
        files: MemFiles,
    },
}

/// Evaluates `$body` with `$s` bound to the session of a [`Machine`] (and
/// `$f` to its files), whichever its direction: the body is written once
/// against [`drive::Machine`] and compiled for both.
macro_rules! drive {
    ($m:expr, |$s:ident| $body:expr) => {
        match $m {
            Machine::Up { session: $s, .. } => $body,
            Machine::Down { session: $s, .. } => $body,
            Machine::Send { session: $s, .. } => $body,
            Machine::Listen { session: $s, .. } => $body,
        }
    };
    ($m:expr, |$s:ident, $f:ident| $body:expr) => {
        match $m {
            Machine::Up {
                session: $s,
                source: $f,
                ..
            } => $body,
            Machine::Down {
                session: $s,
                sink: $f,
                ..
            } => $body,
            Machine::Send {
                session: $s,
                files: $f,
                ..
            } => $body,
            Machine::Listen {
                session: $s,
                files: $f,
                ..
            } => $body,
        }
    };
}

// After `drive!`: a macro is in scope only in the text that follows it.
mod actors;
mod checks;
mod net;
pub mod notices;
mod wire;
mod world;

/// What a terminal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// Upload batch `n`.
    Upload(usize),
    /// Download batch `n`.
    Download(usize),
    /// Download a code nobody was given: must fail with `UnknownCode`.
    Bogus,
    /// Download batch `n` a minute after its code expired: must fail with
    /// `Expired` and never see the batch.
    Late(usize),
    /// Download watched name `n` of [`named::Book`] by name.
    Named(usize),
    /// Claim the terminal's name with a wrong key and try a named upload
    /// of batch 0: must fail with `AuthFailed` and never see a grant.
    Impostor,
    /// Push batch 0 to the targets of [`notices`], then follow the
    /// deliveries until they are final.
    Push,
    /// Listen for notices as target `n` of [`notices`].
    Listen(usize),
    /// Download batch 0 as target `t`, for its notice `id`, then confirm.
    Fetch { t: usize, id: u64 },
}

struct Actor<'a> {
    id: u64,
    job: Job,
    machine: Option<Machine<'a>>,
    conn: Option<Conn>,
    start_at: Option<Instant>,
    reconnect_at: Option<Instant>,
    restart_at: Option<Instant>,
    outcome: Option<Result<(), String>>,
    /// The upload's token, for a restart that resumes.
    token: Option<ResumeToken>,
    /// A download of a bogus code uses this code.
    bogus_code: Option<Code>,
    /// The most progress its terminal ever reached (see [`traffic`]).
    high_water: u64,
    /// A download by name: how many bindings of its name came before the
    /// one current when it started (it may end with that one or a later one).
    since: usize,
}

/// What the run knows about one batch to upload.
#[derive(Debug, Default, Clone)]
struct BatchState {
    /// The code, once the uploader has seen its grant.
    code: Option<Code>,
    /// Its expiry (Unix seconds), from the grant.
    expires_at: Option<u64>,
    /// The upload completed.
    uploaded: bool,
}

/// A batch the relay created (one upload may create several when grants
/// are lost and it announces again).
#[derive(Debug, Clone)]
struct Granted {
    /// Which spec's files it holds.
    spec: usize,
    /// The highest offset the relay ever called durable, per file.
    claimed: Vec<u64>,
}

/// The simulated world of one seed.
pub struct World<'a> {
    seed: u64,
    trace: bool,
    rng: SimRng,
    now: Instant,
    faults: Faults,
    settings: Settings,
    link: Link,
    store: Arc<MemoryStore>,
    relay: Arc<Relay>,
    specs: &'a [BatchSpec],
    batches: Vec<BatchState>,
    granted: BTreeMap<Code, Granted>,
    actors: Vec<Actor<'a>>,
    cut_every: Option<Duration>,
    next_cut: Option<Instant>,
    crash_every: Option<Duration>,
    next_crash: Option<Instant>,
    crashes_left: u32,
    next_sweep: Instant,
    /// Relay session jobs run later, `fsync` after they are given out (as
    /// on TCP's blocking pool), rather than at once.
    deferred: bool,
    /// How long a deferred job takes.
    fsync: Duration,
    report: Report,
    client_buf: Vec<u8>,
    relay_buf: Vec<u8>,
    /// The relay's users and terminals (kept across its crashes).
    directory: Arc<MemoryDirectory>,
    /// In a seed with named files, what the watched names were bound to.
    book: Option<named::Book>,
    /// In a seed with addressed delivery, its targets and what they know.
    notices: Option<notices::Notices>,
}

/// Runs one seed to the end; panics with a description if an invariant breaks.
pub fn run_seed(seed: u64, options: Options) -> Report {
    let specs = batches_for(seed);
    let mut world = World::new(seed, options, &specs);
    world.run();
    world.report
}
