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
//!   (sink in memory) ┘                                 └─ …                 ┘    (crash: lose what
//!                                                                                  was never synced)
//! ```
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
//! - `FileVerified` and `BatchComplete` only for complete, correct content.
//!
//! At the end every upload has completed, every download has completed with
//! byte-identical files, a download of an unknown code failed with
//! `UnknownCode`, and all of it within a bounded simulated time and number
//! of steps: a session that waits forever fails the seed.

pub mod link;
pub mod pair;
pub mod rng;
pub mod traffic;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::mem_files::MemFiles;
use pickup_proto::code::Code;
use pickup_proto::download;
use pickup_proto::drive;
use pickup_proto::frame::{self, Decoder};
use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::{Message, Plan, ResumeToken};
use pickup_proto::upload;
use pickup_proto::{Duration, ErrorCode, Instant};
use pickup_relay::codes::code_key;
use pickup_relay::disclosure::{DisclosureMode, DisclosureSettings};
use pickup_relay::random::SeededRandom;
use pickup_relay::rate_limit::Peer;
use pickup_relay::store::memory::MemoryStore;
use pickup_relay::store::{FileContent, Lookup, Store};
use pickup_relay::{Job as RelayJob, Link, Relay, Session, Settings};

use link::{Faults, Pipe, PipeStats};
use rng::SimRng;
use traffic::Traffic;

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
    1_342_335, 1_800_406,
    // Downloads on a 64-byte-frame, 1000 byte/ms link damaging about a
    // fifth of its frames: one granting a 1 MiB window had the relay send
    // the rest of the file after every loss, and each restarted stream
    // waited behind it (a few frames of progress per 800 ms); the run
    // missed the step bound. The credit now halves at each loss.
    1_180_230,
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
}

/// One batch the run uploads.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    /// File names.
    pub names: Vec<String>,
    /// File contents.
    pub contents: Vec<Vec<u8>>,
}

impl BatchSpec {
    fn random(rng: &mut SimRng, index: usize) -> BatchSpec {
        let files = rng.range(1, 3) as usize;
        let mut names = Vec::new();
        let mut contents = Vec::new();
        for i in 0..files {
            let size = match rng.below(40) {
                0..=3 => 0,
                4..=15 => rng.range(1, 100),
                16..=35 => rng.range(100, 3000),
                36..=38 => rng.range(3000, 20_000),
                _ => rng.range(20_000, 150_000),
            } as usize;
            let mut data = vec![0u8; size];
            rng.fill(&mut data);
            names.push(format!("b{index}-f{i}.bin"));
            contents.push(data);
        }
        BatchSpec { names, contents }
    }

    fn total(&self) -> u64 {
        self.contents.iter().map(|c| c.len() as u64).sum()
    }
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
        session: Box<download::Session<MAX_FILES>>,
        config: download::Config,
        /// The downloader's disk: survives its restarts, and panics if the
        /// session writes past a file or finishes a wrong one.
        sink: MemFiles,
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
        }
    };
}

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
}

/// The files a seed uploads: made before the world, which borrows their names.
pub fn batches_for(seed: u64) -> Vec<BatchSpec> {
    let mut rng = SimRng::new(seed ^ 0x0ba7_c4e5);
    let mut first = BatchSpec::random(&mut rng, 0);
    match rng.below(10) {
        // The same content again: instant upload after a proof.
        0..=2 => {
            let mut again = first.clone();
            for (i, n) in again.names.iter_mut().enumerate() {
                *n = format!("again-{i}.bin");
            }
            vec![first, again]
        }
        // A SHA-1 collision: the second batch holds the other file of a
        // pair with the same size and SHA-1. Its proof fails, its bytes
        // are uploaded, and each batch must download its own bytes.
        3 => {
            let (a, b) = sha1_collision();
            let (a, b) = if rng.chance(500_000) { (a, b) } else { (b, a) };
            let at = rng.below(first.contents.len() as u64 + 1) as usize;
            first.contents.insert(at, a);
            first.names.insert(at, "twin.bin".to_owned());
            let mut twin = first.clone();
            twin.contents[at] = b;
            for (i, n) in twin.names.iter_mut().enumerate() {
                *n = format!("other-{i}.bin");
            }
            vec![first, twin]
        }
        _ => vec![first],
    }
}

/// The SHAmbles pair (640 bytes each, equal SHA-1, different bytes) from
/// `testdata/sha1-collisions/`.
fn sha1_collision() -> (Vec<u8>, Vec<u8>) {
    static PAIR: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    PAIR.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/sha1-collisions/");
        let read = |name: &str| {
            std::fs::read(format!("{dir}{name}")).unwrap_or_else(|e| {
                panic!("{dir}{name}: {e} (the repository's testdata/sha1-collisions/)")
            })
        };
        let pair = (read("sha-mbles-1.bin"), read("sha-mbles-2.bin"));
        assert_ne!(pair.0, pair.1);
        assert_eq!(Sha1Digest::of(&pair.0), Sha1Digest::of(&pair.1));
        pair
    })
    .clone()
}

/// Runs one seed to the end; panics with a description if an invariant breaks.
pub fn run_seed(seed: u64, options: Options) -> Report {
    let specs = batches_for(seed);
    let mut world = World::new(seed, options, &specs);
    world.run();
    world.report
}

impl<'a> World<'a> {
    /// A world for `seed` over the batches of [`batches_for`]`(seed)`.
    pub fn new(seed: u64, options: Options, specs: &'a [BatchSpec]) -> World<'a> {
        let mut rng = SimRng::new(seed);
        let faults = Faults::random(&mut rng);
        let deferred = rng.chance(500_000);
        let fsync = Duration::from_millis(rng.range(0, 40));
        let link = Link {
            max_frame: [64, 256, 1024, 4096, 65_536][rng.below(5) as usize],
            window: [1024, 8192, 65_536, 4 << 20][rng.below(4) as usize],
        };
        // One run in seven gets codes that live an hour, and a downloader
        // that comes a minute too late.
        let short_lived = rng.chance(150_000);
        let mut settings = Settings {
            ack_delay: Duration::from_millis(rng.range(20, 500)),
            idle_timeout: Duration::from_secs(rng.range(30, 120)),
            code_ttl_secs: if short_lived { 3600 } else { 86_400 },
            ..Settings::default()
        };
        // The relay's seed also picks what instant upload may reveal, so
        // every mode runs without another draw from `rng` (which would
        // change what each earlier seed does); thresholds of 2..=4 owners,
        // so that content uploaded again is sometimes challenged.
        let relay_seed = rng.next_u64();
        settings.disclosure = DisclosureSettings {
            mode: [
                DisclosureMode::Threshold,
                DisclosureMode::OwnerOnly,
                DisclosureMode::Open,
            ][(relay_seed % 3) as usize],
            threshold_max: 2 + ((relay_seed >> 8) % 3) as u32,
        };
        let store = Arc::new(MemoryStore::new());
        let relay = Relay::new(
            settings.clone(),
            store.clone(),
            Box::new(SeededRandom::new(relay_seed)),
            EPOCH,
        );
        let cut_every = rng
            .chance(500_000)
            .then(|| Duration::from_millis(rng.range(2_000, 60_000)));
        let crash_every = rng
            .chance(300_000)
            .then(|| Duration::from_millis(rng.range(1_000, 60_000)));
        let mut world = World {
            seed,
            trace: options.trace,
            now: EPOCH,
            faults,
            settings,
            link,
            store,
            relay,
            specs,
            batches: vec![BatchState::default(); specs.len()],
            granted: BTreeMap::new(),
            actors: Vec::new(),
            cut_every,
            next_cut: None,
            crash_every,
            next_crash: None,
            crashes_left: 3,
            deferred,
            fsync,
            next_sweep: EPOCH + Duration::from_secs(10),
            report: Report {
                seed,
                bytes_per_ms: faults.bytes_per_ms,
                ..Report::default()
            },
            client_buf: vec![0; frame::max_encoded_len(frame::MAX_FRAME_LEN)],
            relay_buf: vec![0; frame::max_encoded_len(frame::MAX_FRAME_LEN)],
            rng,
        };
        world.next_cut = world.cut_every.map(|d| world.poisson(d));
        world.next_crash = world.crash_every.map(|d| world.poisson(d));
        for (b, spec) in specs.iter().enumerate() {
            assert!(spec.contents.len() <= MAX_FILES);
            // Later batches start later so the first one's blobs exist.
            let start = EPOCH + Duration::from_millis(b as u64 * world.rng.range(0, 30_000));
            world.add_actor(Job::Upload(b), Some(start));
            // Downloaders start once the code is known (see `on_event`).
            for _ in 0..world.rng.range(1, 2) {
                world.add_actor(Job::Download(b), None);
            }
        }
        if short_lived {
            world.add_actor(Job::Late(0), None);
        }
        if world.rng.chance(200_000) {
            let start = EPOCH + Duration::from_millis(world.rng.range(0, 10_000));
            world.add_actor(Job::Bogus, Some(start));
        }
        world.trace(format_args!(
            "seed {seed}: {} batch(es) {:?}, link {:?}, faults {:?}, cuts {:?}, crashes {:?}, deferred jobs {}",
            specs.len(),
            specs.iter().map(BatchSpec::total).collect::<Vec<_>>(),
            world.link,
            world.faults,
            world.cut_every,
            world.crash_every,
            world.deferred.then_some(world.fsync).map_or("off".to_owned(), |d| format!("{} ms", d.as_millis()))
        ));
        world
    }

    fn trace(&self, args: core::fmt::Arguments<'_>) {
        if self.trace {
            eprintln!("[{:>9} ms] {args}", (self.now - EPOCH).as_millis());
        }
    }

    /// An exponentially distributed delay with mean `mean`, from now.
    fn poisson(&mut self, mean: Duration) -> Instant {
        let u = (self.rng.below(1 << 30) as f64 + 1.0) / (1u64 << 30) as f64;
        let ms = -(mean.as_millis() as f64) * u.ln();
        self.now + Duration::from_millis(ms.min(1e9) as u64 + 1)
    }

    fn add_actor(&mut self, job: Job, start_at: Option<Instant>) {
        let id = self.actors.len() as u64 + 1;
        let bogus_code = (job == Job::Bogus).then(|| {
            let mut random = [0u8; 16];
            self.rng.fill(&mut random);
            Code::from_random(random, 13)
        });
        self.actors.push(Actor {
            id,
            job,
            machine: None,
            conn: None,
            start_at,
            reconnect_at: None,
            restart_at: None,
            outcome: None,
            token: None,
            bogus_code,
            high_water: 0,
        });
    }

    /// Runs until every terminal is done; panics on a broken invariant.
    pub fn run(&mut self) {
        let deadline = EPOCH + DEADLINE;
        let mut last_now = self.now;
        let mut same_instant = 0u64;
        for step in 0..MAX_STEPS {
            self.report.steps = step;
            self.pump();
            if self.actors.iter().all(|a| a.outcome.is_some()) {
                self.finish();
                return;
            }
            let next = self.next_event().unwrap_or_else(|| {
                panic!(
                    "deadlock: nothing in flight, no timer, terminals not done: {}",
                    self.status()
                )
            });
            assert!(
                next <= deadline,
                "not done after {} s of simulated time: {}",
                DEADLINE.as_millis() / 1000,
                self.status()
            );
            if next <= self.now {
                same_instant += 1;
                assert!(
                    same_instant < MAX_STEPS_AT_ONE_INSTANT,
                    "busy loop: {same_instant} steps at one instant: {}",
                    self.status()
                );
            } else {
                same_instant = 0;
            }
            self.now = next.max(self.now);
            debug_assert!(self.now >= last_now);
            last_now = self.now;
            self.deliver();
            self.fire_timers();
        }
        panic!("not done after {MAX_STEPS} steps: {}", self.status());
    }

    fn status(&self) -> String {
        let mut s = String::new();
        for a in &self.actors {
            let state = match (&a.outcome, &a.machine) {
                (Some(Ok(())), _) => "done".to_owned(),
                (Some(Err(e)), _) => format!("failed: {e}"),
                (None, None) => format!("not started (start {:?})", a.start_at),
                (None, Some(m)) => {
                    let (progress, timer) = drive!(m, |s| (s.progress(), s.poll_timeout()));
                    format!(
                        "{}, {}/{} done, timer {timer:?}, conn {}",
                        match m {
                            Machine::Up { .. } => "uploading",
                            Machine::Down { .. } => "downloading",
                        },
                        progress.done,
                        progress.total,
                        a.conn.is_some()
                    )
                }
            };
            s.push_str(&format!("[actor {} {:?}: {state}] ", a.id, a.job));
        }
        s
    }

    /// The earliest thing that happens next.
    fn next_event(&self) -> Option<Instant> {
        let mut times: Vec<Instant> = Vec::new();
        for a in &self.actors {
            if a.outcome.is_none() {
                times.extend(a.start_at);
                times.extend(a.reconnect_at);
                times.extend(a.restart_at);
                if let Some(m) = &a.machine {
                    times.extend(drive!(m, |s| s.poll_timeout()));
                }
            }
            // A finished terminal's connection still delivers its goodbye.
            if let Some(c) = &a.conn {
                times.extend(c.to_relay.next_arrival());
                times.extend(c.to_client.next_arrival());
                if let Some(r) = &c.relay {
                    times.extend(r.poll_timeout());
                }
                times.extend(c.job.as_ref().map(|(t, _)| *t));
                if c.relay_done && c.to_client.is_idle() {
                    times.extend(Some(self.now));
                }
            }
        }
        // Faults and sweeps only matter while something is running.
        let running = !times.is_empty();
        if running {
            times.extend(self.next_cut);
            times.extend(self.next_crash.filter(|_| self.crashes_left > 0));
            times.extend(Some(self.next_sweep));
        }
        times.into_iter().min()
    }

    /// Moves every pending output into the pipes and handles every event.
    fn pump(&mut self) {
        for i in 0..self.actors.len() {
            // Output and events feed each other (an event may close the
            // link); a few rounds settle it.
            for _ in 0..4 {
                let moved = self.transmit(i);
                let events = self.events(i);
                self.maybe_close(i);
                if !moved && !events {
                    break;
                }
            }
        }
    }

    /// Drains both ends' output of actor `i`'s connection; whether anything moved.
    fn transmit(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut moved = false;
        let World {
            actors,
            rng,
            faults,
            client_buf,
            relay_buf,
            fsync,
            deferred,
            trace,
            relay: shared,
            report,
            ..
        } = self;
        let actor = &mut actors[i];
        let (Some(conn), Some(machine)) = (actor.conn.as_mut(), actor.machine.as_mut()) else {
            return false;
        };
        for _ in 0..10_000 {
            let n = drive!(machine, |s, files| {
                match s.poll_transmit(now, files, client_buf) {
                    Ok(n) => n,
                    Err(never) => match never {},
                }
            });
            let Some(n) = n else { break };
            moved = true;
            if *trace {
                trace_client_frame(now, actor.id, &client_buf[..n]);
            }
            conn.to_relay.send(now, &client_buf[..n], faults, rng);
        }
        let mut frames = Vec::new();
        if let Some(relay) = conn.relay.as_mut() {
            // As the transports do: one job at a time, run off the
            // session's thread, taking `fsync` milliseconds (or at once).
            for _ in 0..100_000 {
                if conn.job.is_some() {
                    break;
                }
                let Some(job) = relay.poll_job() else { break };
                moved = true;
                if *deferred {
                    conn.job = Some((now + *fsync, job));
                } else {
                    report.jobs += 1;
                    relay.handle_job_done(now, job.run(shared));
                    feed_relay(relay, &mut conn.relay_decoder, &mut conn.unfed, now, &[]);
                }
            }
            if relay_buf.len() < relay.transmit_buffer_len() {
                relay_buf.resize(relay.transmit_buffer_len(), 0);
            }
            for _ in 0..100_000 {
                let Some(n) = relay.poll_transmit(relay_buf) else {
                    break;
                };
                moved = true;
                frames.push(relay_buf[..n].to_vec());
                conn.to_client.send(now, &relay_buf[..n], faults, rng);
            }
            if relay.is_closed() && !conn.relay_done {
                conn.relay_done = true;
                moved = true;
            }
        }
        for wire in frames {
            self.check_relay_output(i, &wire);
        }
        moved
    }

    /// Decodes one frame the relay sent to actor `i` and checks it.
    fn check_relay_output(&mut self, i: usize, wire: &[u8]) {
        let job = self.actors[i].job;
        let Some(conn) = self.actors[i].conn.as_mut() else {
            return;
        };
        let mut input = wire;
        let msg = match conn.tap.feed(&mut input) {
            Some(Ok(f)) => Message::decode(f)
                .unwrap_or_else(|e| panic!("relay sent an undecodable frame: {e}"))
                .to_owned_msg(),
            other => panic!("relay sent a broken frame: {other:?}"),
        };
        assert!(input.is_empty(), "relay wrote more than one frame at once");
        if !matches!(msg, OwnedMsg::Data { .. }) {
            self.trace(format_args!("relay → actor {}: {msg:?}", self.actors[i].id));
        }
        let unix = self.now.as_millis() / 1000;
        match job {
            Job::Upload(b) => self.check_upload_reply(i, b, &msg, unix),
            Job::Download(b) | Job::Late(b) => self.check_download_reply(b, &msg, unix),
            Job::Bogus => match msg {
                OwnedMsg::Manifest { .. } | OwnedMsg::Entry { .. } | OwnedMsg::Data { .. } => {
                    panic!("relay served {msg:?} for a code it never issued")
                }
                _ => {}
            },
        }
    }

    fn lookup(&self, code: Code, unix: u64) -> pickup_relay::store::Batch {
        match self.store.find_by_code(&code_key(&code), unix) {
            Ok(Lookup::Live(batch)) => batch,
            Ok(other) => panic!("batch {code} lost from the store: {other:?}"),
            Err(e) => panic!("store failed: {e}"),
        }
    }

    /// The batch uploaded from spec `b`, once its uploader knows the code.
    fn batch(&self, b: usize, unix: u64) -> Option<pickup_relay::store::Batch> {
        Some(self.lookup(self.batches[b].code?, unix))
    }

    fn check_upload_reply(&mut self, i: usize, b: usize, msg: &OwnedMsg, unix: u64) {
        let spec = &self.specs[b];
        let conn_code = self.actors[i].conn.as_ref().and_then(|c| c.code);
        match *msg {
            OwnedMsg::Grant { code, files, .. } => {
                assert_eq!(
                    usize::from(files),
                    spec.contents.len(),
                    "grant for the wrong batch"
                );
                if self.actors[i].token.is_some() {
                    // The uploader resumes with its token: same batch.
                    assert_eq!(
                        self.batches[b].code,
                        Some(code),
                        "a resumed grant changed the code"
                    );
                }
                let granted = self.granted.entry(code).or_insert_with(|| Granted {
                    spec: b,
                    claimed: vec![0; spec.contents.len()],
                });
                assert_eq!(granted.spec, b, "one code granted for two batches");
                if let Some(conn) = self.actors[i].conn.as_mut() {
                    conn.code = Some(code);
                }
            }
            OwnedMsg::Plan { index, plan } => {
                let code = conn_code.expect("a plan follows a grant");
                let size = spec.contents[usize::from(index)].len() as u64;
                if let Plan::Upload { offset } = plan {
                    let durable = self.lookup(code, unix).files[usize::from(index)].received();
                    assert!(
                        offset <= durable && offset <= size,
                        "plan says resume file {index} at {offset}, durable is {durable}"
                    );
                    self.claim(code, index, offset);
                }
            }
            OwnedMsg::Ack { file, offset } => {
                let code = conn_code.expect("an ack follows a grant");
                let durable = self.lookup(code, unix).files[usize::from(file)].received();
                let size = spec.contents[usize::from(file)].len() as u64;
                assert!(
                    offset <= durable && offset <= size,
                    "ack of file {file} at {offset}, durable is {durable}"
                );
                self.claim(code, file, offset);
            }
            OwnedMsg::Verified { index } => {
                let code = conn_code.expect("a verdict follows a grant");
                let batch = self.lookup(code, unix);
                self.check_blob(
                    b,
                    &batch.files[usize::from(index)].content,
                    usize::from(index),
                );
            }
            OwnedMsg::BatchComplete => {
                let code = conn_code.expect("completion follows a grant");
                let batch = self.lookup(code, unix);
                assert!(batch.ready(), "BatchComplete for a batch that is not ready");
                for (i, f) in batch.files.iter().enumerate() {
                    self.check_blob(b, &f.content, i);
                }
            }
            OwnedMsg::Rejected { index, reason } => {
                panic!("relay rejected honest file {index}: {reason:?}")
            }
            _ => {}
        }
    }

    fn claim(&mut self, code: Code, file: u16, offset: u64) {
        let granted = self.granted.get_mut(&code).expect("claims follow a grant");
        let c = &mut granted.claimed[usize::from(file)];
        *c = (*c).max(offset);
    }

    fn check_blob(&self, b: usize, content: &FileContent, index: usize) {
        let FileContent::Blob(id) = *content else {
            panic!("file {index} of batch {b} reported verified but is {content:?}");
        };
        let bytes = self
            .store
            .blob_bytes(id)
            .unwrap_or_else(|| panic!("file {index} of batch {b}: blob {id:?} is gone"));
        assert!(
            bytes == self.specs[b].contents[index],
            "file {index} of batch {b}: the blob differs from the upload"
        );
    }

    fn check_download_reply(&mut self, b: usize, msg: &OwnedMsg, unix: u64) {
        let spec = &self.specs[b];
        match msg {
            OwnedMsg::Manifest {
                code,
                files,
                total_size,
                ready,
            } => {
                assert_eq!(
                    Some(*code),
                    self.batches[b].code,
                    "manifest for another code"
                );
                let expires_at = self.batches[b].expires_at.unwrap_or(u64::MAX);
                assert!(
                    unix < expires_at,
                    "the relay served the manifest of batch {b} at {unix}, after it expired at {expires_at}"
                );
                assert_eq!(
                    usize::from(*files),
                    spec.contents.len(),
                    "manifest file count"
                );
                assert_eq!(*total_size, spec.total(), "manifest total size");
                if *ready {
                    let batch = self.batch(b, unix).expect("a manifest's batch");
                    assert!(batch.ready(), "manifest says ready, store says not");
                }
            }
            OwnedMsg::Entry {
                index,
                size,
                sha1,
                name,
            } => {
                let i = usize::from(*index);
                assert!(i < spec.contents.len(), "entry {i} past the batch");
                assert_eq!(*size, spec.contents[i].len() as u64, "entry {i} size");
                assert_eq!(*sha1, Sha1Digest::of(&spec.contents[i]), "entry {i} SHA-1");
                assert_eq!(name, &spec.names[i], "entry {i} name");
            }
            OwnedMsg::Data {
                file,
                offset,
                bytes,
            } => {
                let batch = self.batch(b, unix).expect("data from a batch with a code");
                assert!(
                    batch.ready(),
                    "relay served data from a batch not yet verified"
                );
                let content = &spec.contents[usize::from(*file)];
                let start = *offset as usize;
                assert!(
                    start + bytes.len() <= content.len() && !bytes.is_empty(),
                    "relay served {} bytes at {start} of a {}-byte file",
                    bytes.len(),
                    content.len()
                );
                assert!(
                    bytes[..] == content[start..start + bytes.len()],
                    "relay served wrong bytes of file {file} at {start}"
                );
            }
            _ => {}
        }
    }

    /// Handles the events of actor `i`; whether there were any.
    fn events(&mut self, i: usize) -> bool {
        let mut any = false;
        loop {
            let event = match self.actors[i].machine.as_mut() {
                Some(Machine::Up { session, .. }) => session.poll_event().map(Ev::Up),
                Some(Machine::Down { session, .. }) => session.poll_event().map(Ev::Down),
                None => None,
            };
            let Some(event) = event else {
                return any;
            };
            any = true;
            self.trace(format_args!("actor {}: {event:?}", self.actors[i].id));
            self.on_event(i, event);
        }
    }

    fn on_event(&mut self, i: usize, event: Ev) {
        let job = self.actors[i].job;
        match event {
            Ev::Up(upload::Event::Granted {
                code,
                token,
                expires_at,
            }) => {
                let Job::Upload(b) = job else { unreachable!() };
                self.actors[i].token = Some(token);
                if self.batches[b].code.is_none() {
                    self.batches[b].code = Some(code);
                    self.batches[b].expires_at = Some(expires_at);
                }
                assert_eq!(self.batches[b].code, Some(code), "granted a different code");
                // Start this batch's downloads: sometimes at once (they wait
                // for the upload), sometimes later; the late one after expiry.
                for d in 0..self.actors.len() {
                    let waiting = &self.actors[d];
                    if waiting.start_at.is_some()
                        || waiting.machine.is_some()
                        || waiting.outcome.is_some()
                    {
                        continue;
                    }
                    if waiting.job == Job::Download(b) {
                        let delay = Duration::from_millis(self.rng.range(0, 20_000));
                        self.actors[d].start_at = Some(self.now + delay);
                    } else if waiting.job == Job::Late(b) {
                        let at = Instant::from_millis((expires_at + 60) * 1000);
                        self.actors[d].start_at = Some(at.max(self.now));
                    }
                }
            }
            Ev::Up(upload::Event::Linked { .. }) => self.report.linked += 1,
            Ev::Up(upload::Event::Complete { code }) => {
                let Job::Upload(b) = job else { unreachable!() };
                assert_eq!(self.batches[b].code, Some(code));
                self.batches[b].uploaded = true;
                self.report.uploads += 1;
                self.actors[i].outcome = Some(Ok(()));
            }
            Ev::Up(upload::Event::Failed(upload::Error::Relay(
                ErrorCode::Expired | ErrorCode::UnknownToken,
            ))) if self.expired(job) => {
                // The code's lifetime ended before the upload did. A
                // `Resume` then gets `Expired`, or `UnknownToken` once the
                // sweeper has removed the batch (PROTOCOL.md 5.2).
                self.actors[i].outcome = Some(Ok(()));
                self.give_up_on_batch(job);
            }
            Ev::Up(upload::Event::Failed(e)) => {
                panic!("upload of batch {job:?} failed: {e}; {}", self.status())
            }
            Ev::Up(upload::Event::LinkLost) | Ev::Down(download::Event::LinkLost) => {
                self.close(i, Close::Graceful);
            }
            Ev::Down(download::Event::Complete) => {
                let Job::Download(b) = job else {
                    panic!("download {job:?} completed, but it should have been refused")
                };
                let Some(Machine::Down { sink, .. }) = &self.actors[i].machine else {
                    unreachable!()
                };
                let spec = &self.specs[b];
                for (f, content) in spec.contents.iter().enumerate() {
                    assert!(
                        sink.finished[f],
                        "download complete but file {f} not finished"
                    );
                    assert!(
                        sink.files[f] == *content,
                        "downloaded file {f} differs from the upload"
                    );
                }
                self.report.downloads += 1;
                self.actors[i].outcome = Some(Ok(()));
            }
            Ev::Down(download::Event::Failed(e)) => match (job, e) {
                (Job::Bogus, download::Error::Relay(ErrorCode::UnknownCode)) => {
                    self.actors[i].outcome = Some(Ok(()));
                }
                (Job::Late(_) | Job::Download(_), download::Error::Relay(ErrorCode::Expired))
                    if self.expired(job) =>
                {
                    self.report.expired += 1;
                    self.actors[i].outcome = Some(Ok(()));
                }
                _ => panic!("download {job:?} failed: {e}; {}", self.status()),
            },
            Ev::Down(download::Event::Verified { file }) => {
                let Job::Download(b) = job else {
                    panic!("download {job:?} verified a file, but it should have been refused")
                };
                let Some(Machine::Down { sink, .. }) = &self.actors[i].machine else {
                    unreachable!()
                };
                assert!(
                    sink.files[usize::from(file)] == self.specs[b].contents[usize::from(file)],
                    "file {file} verified with wrong bytes"
                );
            }
            _ => {}
        }
    }

    /// Whether the batch `job` is about has expired by now.
    fn expired(&self, job: Job) -> bool {
        let b = match job {
            Job::Upload(b) | Job::Download(b) | Job::Late(b) => b,
            Job::Bogus => return false,
        };
        let unix = self.now.as_millis() / 1000;
        self.batches[b].expires_at.is_some_and(|e| unix >= e)
    }

    /// An upload that ran out of time: its downloads cannot succeed, and
    /// whether they see `Expired` depends on timing; they stop here.
    fn give_up_on_batch(&mut self, job: Job) {
        let Job::Upload(b) = job else {
            return;
        };
        for a in &mut self.actors {
            if matches!(a.job, Job::Download(x) | Job::Late(x) if x == b) && a.outcome.is_none() {
                a.outcome = Some(Ok(()));
            }
        }
    }

    /// Closes actor `i`'s connection if a side is finished with it.
    fn maybe_close(&mut self, i: usize) {
        let a = &self.actors[i];
        let Some(conn) = &a.conn else {
            return;
        };
        if conn.relay_done && conn.to_client.is_idle() {
            // The relay closed after sending its last frame: EOF at the terminal.
            self.close(i, Close::Graceful);
            return;
        }
        let finished = match &a.machine {
            Some(m) => drive!(m, |s| s.is_finished()),
            None => true,
        };
        if finished && conn.to_relay.is_idle() {
            // The terminal said goodbye and hangs up.
            self.close(i, Close::Graceful);
        }
    }

    /// Ends actor `i`'s connection; a terminal that is not done reconnects later.
    fn close(&mut self, i: usize, how: Close) {
        let now = self.now;
        let Some(mut conn) = self.actors[i].conn.take() else {
            return;
        };
        self.trace(format_args!(
            "actor {}: connection closes ({how:?})",
            self.actors[i].id
        ));
        self.report.link.writes += conn.to_relay.stats.writes + conn.to_client.stats.writes;
        self.report.link.bytes += conn.to_relay.stats.bytes + conn.to_client.stats.bytes;
        self.report.link.dropped += conn.to_relay.stats.dropped + conn.to_client.stats.dropped;
        self.report.link.duplicated +=
            conn.to_relay.stats.duplicated + conn.to_client.stats.duplicated;
        self.report.link.flipped += conn.to_relay.stats.flipped + conn.to_client.stats.flipped;
        self.report.link.truncated +=
            conn.to_relay.stats.truncated + conn.to_client.stats.truncated;
        let (to_relay, to_client) = match how {
            Close::Graceful => {
                let mut up = Vec::new();
                while let Some(d) = conn.to_relay.receive(Instant::from_millis(u64::MAX)) {
                    up.extend(d);
                }
                let mut down = Vec::new();
                while let Some(d) = conn.to_client.receive(Instant::from_millis(u64::MAX)) {
                    down.extend(d);
                }
                (up, down)
            }
            Close::Cut => (
                conn.to_relay.cut(&mut self.rng),
                conn.to_client.cut(&mut self.rng),
            ),
            Close::RelayCrash => (Vec::new(), Vec::new()),
        };
        if how == Close::RelayCrash {
            // The process died: no goodbye, no settling of unsynced bytes,
            // and the job in flight never finished.
            conn.job = None;
            drop(conn.relay.take());
        } else if let Some(mut relay) = conn.relay.take() {
            // The transport finishes the session's jobs after the link is
            // gone (what it received becomes durable); here at once.
            let done = |relay: &mut Session, job: RelayJob, jobs: &mut u32| {
                *jobs += 1;
                relay.handle_job_done(now, job.run(&self.relay));
            };
            if let Some((_, job)) = conn.job.take() {
                done(&mut relay, job, &mut self.report.jobs);
            }
            let mut rest = if conn.relay_done {
                Vec::new()
            } else {
                to_relay.clone()
            };
            for _ in 0..100_000 {
                while let Some(job) = relay.poll_job() {
                    done(&mut relay, job, &mut self.report.jobs);
                }
                if rest.is_empty() && conn.unfed.is_empty() {
                    break;
                }
                let more = core::mem::take(&mut rest);
                feed_relay(
                    &mut relay,
                    &mut conn.relay_decoder,
                    &mut conn.unfed,
                    now,
                    &more,
                );
                if !relay.wants_input() || conn.unfed.is_empty() {
                    continue;
                }
            }
            relay.handle_disconnected(now);
            for _ in 0..100_000 {
                let Some(job) = relay.poll_job() else { break };
                done(&mut relay, job, &mut self.report.jobs);
            }
        }
        self.actors[i].conn = Some(conn);
        self.feed_client(i, &to_client);
        self.actors[i].conn = None;
        let actor = &mut self.actors[i];
        if let Some(m) = actor.machine.as_mut() {
            drive!(m, |s| s.handle_disconnected(now));
        }
        self.account(i);
        if self.actors[i].outcome.is_none() {
            let backoff = Duration::from_millis(self.rng.range(100, 3_000));
            self.actors[i].reconnect_at = Some(now + backoff);
        }
    }

    /// Feeds bytes that arrived at actor `i`'s terminal.
    fn feed_client(&mut self, i: usize, bytes: &[u8]) {
        let now = self.now;
        let actor = &mut self.actors[i];
        let (Some(conn), Some(machine)) = (actor.conn.as_mut(), actor.machine.as_mut()) else {
            return;
        };
        let mut input = bytes;
        while let Some(r) = conn.client_decoder.feed(&mut input) {
            let Ok(f) = r else { continue };
            drive!(machine, |s, files| {
                match drive::Machine::handle_frame(&mut **s, now, f, files) {
                    Ok(()) => {}
                    Err(never) => match never {},
                }
            });
        }
    }

    /// Delivers everything that has arrived by now.
    fn deliver(&mut self) {
        let now = self.now;
        for i in 0..self.actors.len() {
            while let Some(conn) = self.actors[i].conn.as_mut() {
                let mut progressed = false;
                if let Some(bytes) = conn.to_relay.receive(now) {
                    progressed = true;
                    if let Some(relay) = conn.relay.as_mut() {
                        feed_relay(relay, &mut conn.relay_decoder, &mut conn.unfed, now, &bytes);
                    }
                }
                if let Some(bytes) = conn.to_client.receive(now) {
                    progressed = true;
                    // Split arbitrarily: decoders must not care.
                    let cut = self.rng.below(bytes.len() as u64 + 1) as usize;
                    self.feed_client(i, &bytes[..cut]);
                    self.feed_client(i, &bytes[cut..]);
                }
                if !progressed {
                    break;
                }
            }
        }
    }

    /// Fires every timer that is due.
    fn fire_timers(&mut self) {
        let now = self.now;
        for i in 0..self.actors.len() {
            if let Some(conn) = self.actors[i].conn.as_mut() {
                if conn.job.as_ref().is_some_and(|(t, _)| *t <= now) {
                    if let Some((_, job)) = conn.job.take() {
                        let done = job.run(&self.relay);
                        self.report.jobs += 1;
                        if let Some(relay) = conn.relay.as_mut() {
                            relay.handle_job_done(now, done);
                            feed_relay(relay, &mut conn.relay_decoder, &mut conn.unfed, now, &[]);
                        }
                    }
                }
            }
            if let Some(relay) = self.actors[i].conn.as_mut().and_then(|c| c.relay.as_mut()) {
                if relay.poll_timeout().is_some_and(|t| t <= now) {
                    relay.handle_timeout(now);
                }
            }
            if self.actors[i].outcome.is_some() {
                continue;
            }
            if self.actors[i].start_at.is_some_and(|t| t <= now) {
                self.actors[i].start_at = None;
                self.start(i);
            }
            if self.actors[i].restart_at.is_some_and(|t| t <= now) {
                self.actors[i].restart_at = None;
                self.restart(i);
            }
            if self.actors[i].reconnect_at.is_some_and(|t| t <= now) {
                self.actors[i].reconnect_at = None;
                self.connect(i);
            }
            let actor = &mut self.actors[i];
            if let Some(m) = actor.machine.as_mut() {
                drive!(m, |s| if s.poll_timeout().is_some_and(|t| t <= now) {
                    s.handle_timeout(now)
                });
            }
        }
        if self.next_cut.is_some_and(|t| t <= now) {
            self.next_cut = self.cut_every.map(|d| self.poisson(d));
            let live: Vec<usize> = (0..self.actors.len())
                .filter(|&i| self.actors[i].conn.is_some())
                .collect();
            if !live.is_empty() {
                let i = live[self.rng.below(live.len() as u64) as usize];
                self.report.cuts += 1;
                self.close(i, Close::Cut);
            }
        }
        if self.next_crash.is_some_and(|t| t <= now) && self.crashes_left > 0 {
            self.crashes_left -= 1;
            self.next_crash = self.crash_every.map(|d| self.poisson(d));
            self.crash_relay();
        }
        if self.next_sweep <= now {
            self.next_sweep = now + Duration::from_secs(10);
            if let Err(e) = self.relay.sweep(now) {
                panic!("sweep failed: {e}");
            }
        }
    }

    fn start(&mut self, i: usize) {
        let job = self.actors[i].job;
        self.trace(format_args!("actor {}: starts {job:?}", self.actors[i].id));
        let machine = match job {
            Job::Upload(b) => {
                let spec = &self.specs[b];
                let config = self.upload_config();
                let metas: Vec<upload::FileMeta<'a>> = spec
                    .names
                    .iter()
                    .zip(&spec.contents)
                    .map(|(n, c)| upload::FileMeta {
                        name: n.as_str(),
                        size: c.len() as u64,
                        sha1: Sha1Digest::of(c),
                    })
                    .collect();
                let mut session = upload::Session::new(config, &metas)
                    .unwrap_or_else(|e| panic!("a valid batch refused: {e}"));
                with_attrs(&mut session);
                Machine::Up {
                    session: Box::new(session),
                    config,
                    source: &spec.contents,
                }
            }
            Job::Download(b) | Job::Late(b) => {
                let code = self.batches[b]
                    .code
                    .expect("downloads start after the grant");
                let config = self.download_config(!self.batches[b].uploaded);
                Machine::Down {
                    session: Box::new(download::Session::new(config, code)),
                    config,
                    sink: MemFiles::default(),
                }
            }
            Job::Bogus => {
                let config = self.download_config(false);
                let code = self.actors[i].bogus_code.expect("a bogus code");
                Machine::Down {
                    session: Box::new(download::Session::new(config, code)),
                    config,
                    sink: MemFiles::default(),
                }
            }
        };
        self.actors[i].machine = Some(machine);
        // A fifth of the terminals restart once, at a random moment.
        if self.rng.chance(200_000) && job != Job::Bogus {
            let at = self.now + Duration::from_millis(self.rng.range(100, 30_000));
            self.actors[i].restart_at = Some(at);
        }
        self.connect(i);
    }

    fn upload_config(&mut self) -> upload::Config {
        // Slow links get timeouts to match, as a serial deployment would.
        let slow = self.faults.bytes_per_ms != 0 && self.faults.bytes_per_ms < 100;
        upload::Config {
            max_frame: [64, 512, 4096, 16_384][self.rng.below(4) as usize],
            retransmit_timeout: Duration::from_millis(if slow { 8_000 } else { 2_000 }),
            idle_timeout: Duration::from_secs(if slow { 60 } else { 15 }),
            keepalive_interval: Duration::from_secs(5),
            instant_upload: self.rng.chance(800_000),
            max_window: if slow {
                2048
            } else {
                [1024, 65_536, 8 << 20][self.rng.below(3) as usize]
            },
        }
    }

    fn download_config(&mut self, early: bool) -> download::Config {
        let slow = self.faults.bytes_per_ms != 0 && self.faults.bytes_per_ms < 100;
        download::Config {
            max_frame: [64, 512, 4096, 16_384][self.rng.below(4) as usize],
            window: if slow {
                2048
            } else {
                [256, 4096, 1 << 20][self.rng.below(3) as usize]
            },
            retransmit_timeout: Duration::from_millis(if slow { 8_000 } else { 2_000 }),
            idle_timeout: Duration::from_secs(if slow { 60 } else { 15 }),
            keepalive_interval: Duration::from_secs(5),
            manifest_only: false,
            // An early downloader waits for the upload; a later one finds it ready.
            wait_until_ready: early.then(|| Duration::from_millis(1_000)),
            // Half the downloads leave verification to the sink (which
            // reads the file back: `Sink::digest`'s default), as the CLI
            // does with its hashing thread.
            hashing: if self.rng.chance(500_000) {
                download::Hashing::BySink
            } else {
                download::Hashing::InSession
            },
            // Early downloaders ask for file attributes, so the relay's
            // FileAttrs go through the faults too; drawn from no new random
            // number, so every seed replays the faults it had before.
            file_attrs: early,
        }
    }

    /// The terminal process restarts: its session is gone; an upload
    /// resumes with its token, a download reuses what is on its disk.
    fn restart(&mut self, i: usize) {
        self.report.restarts += 1;
        self.trace(format_args!("actor {}: restarts", self.actors[i].id));
        self.close(i, Close::Cut);
        self.actors[i].reconnect_at = None;
        let job = self.actors[i].job;
        match (job, self.actors[i].machine.take()) {
            (Job::Upload(b), Some(Machine::Up { config, .. })) => {
                let spec = &self.specs[b];
                let metas: Vec<upload::FileMeta<'a>> = spec
                    .names
                    .iter()
                    .zip(&spec.contents)
                    .map(|(n, c)| upload::FileMeta {
                        name: n.as_str(),
                        size: c.len() as u64,
                        sha1: Sha1Digest::of(c),
                    })
                    .collect();
                let mut session = match self.actors[i].token {
                    Some(token) => upload::Session::resume(config, &metas, token),
                    // Restarted before the grant arrived: announce again.
                    None => upload::Session::new(config, &metas),
                }
                .unwrap_or_else(|e| panic!("a valid batch refused: {e}"));
                with_attrs(&mut session);
                self.actors[i].machine = Some(Machine::Up {
                    session: Box::new(session),
                    config,
                    source: &spec.contents,
                });
            }
            (Job::Download(b) | Job::Late(b), Some(Machine::Down { config, sink, .. })) => {
                let code = self.batches[b].code.expect("a started download has a code");
                let mut sink = sink;
                // The finished files were renamed into place; their partial
                // state is what is on disk.
                sink.finished.iter_mut().for_each(|f| *f = false);
                self.actors[i].machine = Some(Machine::Down {
                    session: Box::new(download::Session::new(config, code)),
                    config,
                    sink,
                });
            }
            (_, other) => self.actors[i].machine = other,
        }
        self.connect(i);
    }

    /// Opens a new connection for actor `i`.
    fn connect(&mut self, i: usize) {
        let now = self.now;
        if self.actors[i].conn.is_some() {
            self.close(i, Close::Graceful);
            self.actors[i].reconnect_at = None;
        }
        self.report.connections += 1;
        let peer = Peer::Sim(self.actors[i].id);
        let (relay, refused) = match Session::new(self.relay.clone(), peer, self.link, now) {
            Ok(s) => (Some(s), None),
            Err(code) => {
                self.trace(format_args!(
                    "actor {}: refused with {code:?}",
                    self.actors[i].id
                ));
                (None, Some(code))
            }
        };
        let client_max = match &self.actors[i].machine {
            Some(Machine::Up { config, .. }) => config.max_frame,
            Some(Machine::Down { config, .. }) => config.max_frame,
            None => return,
        } as usize;
        let mut conn = Conn {
            relay,
            to_relay: Pipe::new(),
            to_client: Pipe::new(),
            relay_decoder: Decoder::new(vec![0; self.link.max_frame()]),
            client_decoder: Decoder::new(vec![0; client_max]),
            tap: Decoder::new(vec![0; frame::MAX_FRAME_LEN]),
            relay_done: false,
            code: None,
            job: None,
            unfed: Vec::new(),
        };
        if let Some(code) = refused {
            let mut out = [0u8; 64];
            if let Some(n) = pickup_relay::session::refusal(code, &mut out) {
                conn.to_client
                    .send(now, &out[..n], &self.faults, &mut self.rng);
            }
            conn.relay_done = true;
        }
        self.actors[i].conn = Some(conn);
        if let Some(m) = self.actors[i].machine.as_mut() {
            drive!(m, |s| s.handle_connected(now));
        }
    }

    /// The relay process dies and restarts: sessions vanish, the store loses
    /// every byte that was not durable, and must still hold all it promised.
    fn crash_relay(&mut self) {
        self.report.crashes += 1;
        self.trace(format_args!("relay crashes"));
        for i in 0..self.actors.len() {
            if self.actors[i].conn.is_some() {
                self.close(i, Close::RelayCrash);
            }
        }
        self.store.crash();
        let unix = self.now.as_millis() / 1000;
        for (code, granted) in &self.granted {
            let b = granted.spec;
            let batch = self.lookup(*code, unix);
            for (f, record) in batch.files.iter().enumerate() {
                let claimed = granted.claimed[f];
                let original = &self.specs[b].contents[f];
                match record.content {
                    FileContent::Partial { id, durable } => {
                        assert!(
                            durable >= claimed,
                            "crash lost acknowledged bytes: file {f} of batch {b} was acked to {claimed}, only {durable} survived"
                        );
                        let mut buf = vec![0u8; durable as usize];
                        let n = self
                            .store
                            .read_partial(id, 0, &mut buf)
                            .unwrap_or_else(|e| panic!("read of a partial failed: {e}"));
                        assert_eq!(n as u64, durable, "partial shorter than its durable offset");
                        assert!(
                            buf[..] == original[..n],
                            "file {f} of batch {b}: durable bytes differ from the upload"
                        );
                    }
                    FileContent::Blob(_) => self.check_blob(b, &record.content, f),
                }
            }
        }
        self.relay = Relay::new(
            self.settings.clone(),
            self.store.clone(),
            Box::new(SeededRandom::new(self.rng.next_u64())),
            self.now,
        );
    }

    /// Counts a connection of actor `i` that ends now, and what it moved.
    fn account(&mut self, i: usize) {
        let a = &mut self.actors[i];
        let Some(m) = &a.machine else {
            return;
        };
        let done = drive!(m, |s| s.progress().done);
        let gained = done.saturating_sub(a.high_water);
        a.high_water = a.high_water.max(done);
        let traffic = match a.job {
            Job::Upload(_) => &mut self.report.up,
            // Before its batch is complete a download can only wait.
            Job::Download(b) if self.batches[b].uploaded => &mut self.report.down,
            Job::Download(_) | Job::Bogus | Job::Late(_) => return,
        };
        traffic.connections += 1;
        traffic.bytes += gained;
        let id = a.id;
        self.trace(format_args!(
            "actor {id}: the connection moved {gained} bytes"
        ));
    }

    fn finish(&mut self) {
        self.report.sim_ms = (self.now - EPOCH).as_millis();
        for i in 0..self.actors.len() {
            if self.actors[i].conn.is_some() {
                self.account(i);
            }
        }
        for a in &self.actors {
            if let Some(Err(e)) = &a.outcome {
                panic!("actor {} {:?} failed: {e}", a.id, a.job);
            }
        }
        self.trace(format_args!("seed {} done: {:?}", self.seed, self.report));
    }
}

/// Traces what a terminal sends, but for its data.
fn trace_client_frame(now: Instant, id: u64, wire: &[u8]) {
    let mut input = wire;
    let mut decoder = Decoder::new(vec![0; frame::MAX_FRAME_LEN]);
    if let Some(Ok(f)) = decoder.feed(&mut input) {
        match Message::decode(f) {
            Ok(Message::Data(_)) => {}
            Ok(m) => eprintln!(
                "[{:>9} ms] actor {id} → relay: {m:?}",
                (now - EPOCH).as_millis()
            ),
            Err(e) => eprintln!("actor {id} sent an undecodable frame: {e}"),
        }
    }
}

/// Feeds the relay session what arrived, while it asks for input; what it
/// does not take waits in `unfed` (as a transport stops reading).
fn feed_relay(
    relay: &mut Session,
    decoder: &mut Decoder<Vec<u8>>,
    unfed: &mut Vec<u8>,
    now: Instant,
    bytes: &[u8],
) {
    unfed.extend_from_slice(bytes);
    let mut input = &unfed[..];
    while relay.wants_input() {
        match decoder.feed(&mut input) {
            Some(Ok(f)) => relay.handle_frame(now, f),
            Some(Err(why)) => relay.handle_dropped(now, why),
            None => break,
        }
    }
    let taken = unfed.len() - input.len();
    unfed.drain(..taken);
}

/// An event of either client machine.
#[derive(Debug)]
enum Ev {
    Up(upload::Event),
    Down(download::Event),
}

/// The parts of a relay message the checks need, owned (the frame is gone
/// by the time they run).
#[derive(Debug, Clone, PartialEq, Eq)]
enum OwnedMsg {
    Grant {
        code: Code,
        token: ResumeToken,
        files: u16,
    },
    Plan {
        index: u16,
        plan: Plan,
    },
    Ack {
        file: u16,
        offset: u64,
    },
    Verified {
        index: u16,
    },
    Rejected {
        index: u16,
        reason: ErrorCode,
    },
    BatchComplete,
    Manifest {
        code: Code,
        files: u16,
        total_size: u64,
        ready: bool,
    },
    Entry {
        index: u16,
        size: u64,
        sha1: Sha1Digest,
        name: String,
    },
    Data {
        file: u16,
        offset: u64,
        bytes: Vec<u8>,
    },
    Error {
        code: ErrorCode,
        kind: u8,
    },
    Other(pickup_proto::message::Kind),
}

trait ToOwnedMsg {
    fn to_owned_msg(&self) -> OwnedMsg;
}

impl ToOwnedMsg for Message<'_> {
    fn to_owned_msg(&self) -> OwnedMsg {
        match *self {
            Message::Grant(g) => OwnedMsg::Grant {
                code: g.code,
                token: g.token,
                files: g.files,
            },
            Message::FilePlan(p) => OwnedMsg::Plan {
                index: p.index,
                plan: p.plan,
            },
            Message::Ack(a) => OwnedMsg::Ack {
                file: a.file,
                offset: a.offset,
            },
            Message::FileVerified(v) => OwnedMsg::Verified { index: v.index },
            Message::FileRejected(r) => OwnedMsg::Rejected {
                index: r.index,
                reason: r.reason,
            },
            Message::BatchComplete(_) => OwnedMsg::BatchComplete,
            Message::Manifest(m) => OwnedMsg::Manifest {
                code: m.code,
                files: m.files,
                total_size: m.total_size,
                ready: m.ready,
            },
            Message::ManifestEntry(e) => OwnedMsg::Entry {
                index: e.index,
                size: e.size,
                sha1: e.sha1,
                name: e.name.to_owned(),
            },
            Message::Data(d) => OwnedMsg::Data {
                file: d.file,
                offset: d.offset,
                bytes: d.bytes.to_vec(),
            },
            Message::Error(e) => OwnedMsg::Error {
                code: e.code,
                kind: e.kind,
            },
            other => OwnedMsg::Other(other.kind()),
        }
    }
}

/// Runs `seeds` seeds from `first` on `threads` threads; returns the
/// reports and, for each failing seed, its panic message.
pub fn run_many(first: u64, seeds: u64, threads: usize) -> (Vec<Report>, BTreeMap<u64, String>) {
    let next = std::sync::atomic::AtomicU64::new(first);
    let results = std::sync::Mutex::new((Vec::new(), BTreeMap::new()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= first + seeds {
                    return;
                }
                let outcome = std::panic::catch_unwind(|| run_seed(seed, Options::default()));
                let mut r = results.lock().unwrap_or_else(|e| e.into_inner());
                match outcome {
                    Ok(report) => r.0.push(report),
                    Err(payload) => {
                        let msg = payload
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_else(|| "panic".to_owned());
                        r.1.insert(seed, msg);
                    }
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Every simulated upload gives its first file attributes, the same ones
/// after a restart (a re-announcement that differed would be another
/// batch), so `FileAttrs` crosses the faulty links both ways: drawn from
/// no random number, so each seed keeps the faults it had before.
fn with_attrs<const F: usize>(session: &mut upload::Session<'_, F>) {
    session.set_attrs(pickup_proto::message::FileAttrs {
        index: 0,
        executable: true,
        mtime: 1_700_000_000,
    });
}
