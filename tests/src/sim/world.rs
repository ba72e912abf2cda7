//! [`World`]: a seed's world set up from the seed, and the loop that runs
//! it step by step until every terminal is done (or an invariant breaks).

use std::collections::BTreeMap;
use std::sync::Arc;

use pickup_proto::code::Code;
use pickup_proto::frame;
use pickup_proto::{Duration, Instant};
use pickup_relay::disclosure::{DisclosureMode, DisclosureSettings};
use pickup_relay::random::SeededRandom;
use pickup_relay::store::memory::MemoryStore;
use pickup_relay::{Link, Relay, Settings};

use super::link::Faults;
use super::rng::SimRng;
use super::{
    named, notices, Actor, BatchSpec, BatchState, Job, Machine, Options, Report, World, DEADLINE,
    EPOCH, MAX_FILES, MAX_STEPS, MAX_STEPS_AT_ONE_INSTANT,
};

impl<'a> World<'a> {
    /// A world for `seed` over the batches of [`batches_for`]`(seed)`.
    ///
    /// [`batches_for`]: super::batches_for
    pub fn new(seed: u64, options: Options, specs: &'a [BatchSpec]) -> World<'a> {
        let mut rng = SimRng::new(seed);
        let faults = Faults::random(&mut rng);
        let deferred = rng.chance(500_000);
        let fsync = Duration::from_millis(rng.range(0, 40));
        let link = Link {
            max_frame: [64, 256, 1024, 4096, 65_536][rng.below(5) as usize],
            window: [1024, 8192, 65_536, 4 << 20][rng.below(4) as usize],
            encrypted: false,
            reliable: false,
        };
        // One run in seven gets codes that live an hour, and a downloader
        // that comes a minute too late.
        let named = named::enabled(seed);
        // Drawn in every seed, so the draws after it stay where they were;
        // a named seed's codes live a day (names outlive codes, and the
        // names' downloads wait for their uploads).
        let short_lived = rng.chance(150_000) && !named;
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
        let directory = Arc::new(named::directory(EPOCH.as_millis() / 1000));
        let with_notices = notices::enabled(seed);
        let notices = with_notices.then(|| {
            let now_secs = EPOCH.as_millis() / 1000;
            notices::setup(seed, &directory, now_secs, specs[0].total(), named)
        });
        if notices.as_ref().is_some_and(|n| n.away.is_some()) {
            // The away target's delivery must expire with its batch, not
            // go offline first (which keeps the batch for days).
            settings.code_ttl_secs = 3600;
            settings.push.confirm_deadline_secs = 2 * 86_400;
        }
        let relay = Relay::with_directory(
            settings.clone(),
            store.clone(),
            directory.clone(),
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
                named,
                notices: with_notices,
                ..Report::default()
            },
            client_buf: vec![0; frame::max_encoded_len(frame::MAX_FRAME_LEN)],
            relay_buf: vec![0; frame::max_encoded_len(frame::MAX_FRAME_LEN)],
            directory,
            book: named.then(|| named::Book::new(&specs[0].names)),
            notices,
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
        if named {
            // Downloads by name start once a batch binding their name is
            // complete (see `on_event`).
            for _ in 0..world.rng.range(1, 3) {
                let n = world.rng.below(specs[0].names.len() as u64) as usize;
                world.add_actor(Job::Named(n), None);
            }
            if world.rng.chance(500_000) {
                let start = EPOCH + Duration::from_millis(world.rng.range(0, 20_000));
                world.add_actor(Job::Impostor, Some(start));
            }
        }
        if world.notices.is_some() {
            world.add_notice_actors();
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

    pub(super) fn trace(&self, args: core::fmt::Arguments<'_>) {
        if self.trace {
            eprintln!("[{:>9} ms] {args}", (self.now - EPOCH).as_millis());
        }
    }

    /// An exponentially distributed delay with mean `mean`, from now.
    pub(super) fn poisson(&mut self, mean: Duration) -> Instant {
        let u = (self.rng.below(1 << 30) as f64 + 1.0) / (1u64 << 30) as f64;
        let ms = -(mean.as_millis() as f64) * u.ln();
        self.now + Duration::from_millis(ms.min(1e9) as u64 + 1)
    }

    pub(super) fn add_actor(&mut self, job: Job, start_at: Option<Instant>) {
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
            since: 0,
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

    pub(super) fn status(&self) -> String {
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
                            Machine::Send { .. } => "pushing",
                            Machine::Listen { .. } => "listening",
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
            times.extend(self.notice_timer());
        }
        times.into_iter().min()
    }

    /// Moves every pending output into the pipes and handles every event.
    fn pump(&mut self) {
        // A push rings the target's listening session, which may belong
        // to an actor already pumped: go round again while a bell rings.
        for _ in 0..8 {
            self.pump_once();
            if !self.ring_doorbells() {
                break;
            }
        }
    }

    fn pump_once(&mut self) {
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

    /// Counts a connection of actor `i` that ends now, and what it moved.
    pub(super) fn account(&mut self, i: usize) {
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
            Job::Named(_) => &mut self.report.down,
            Job::Download(_)
            | Job::Bogus
            | Job::Late(_)
            | Job::Impostor
            | Job::Push
            | Job::Listen(_)
            | Job::Fetch { .. } => return,
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
        self.check_notices_at_end();
        self.trace(format_args!("seed {} done: {:?}", self.seed, self.report));
    }
}
