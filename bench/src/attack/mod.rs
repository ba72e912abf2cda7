//! The "under attack" row (issue 20): an honest 32 MiB send + get through
//! the real relay, alone and then while one attacking address runs the
//! attacks of issue 20, items 1–5, one at a time and all together.
//!
//! ```text
//!   honest terminal 127.0.0.1 ──┐
//!                               ├──► pickup-relay (release, fresh store per scenario)
//!   attacker        127.0.0.2 ──┘      ▲ RSS sampled, CPU per phase
//!        fetch_flood · quota_lock · batch_cap · proof_cpu · guessing
//! ```
//!
//! Each scenario starts its own relay, because some attacks (quota,
//! live-batch cap) leave state that lasts for a day and would spoil the
//! next. The attacks are written against PROTOCOL.md with `pickup_proto`'s
//! encoders ([`connection`]); every loop in them is bounded in count and in
//! time, and only loopback addresses are used. A refused or stalled honest
//! transfer is a figure of the row, not a failure of the bench.

mod batch_cap;
mod connection;
mod fetch_flood;
mod guessing;
mod honest;
mod proof_cpu;
mod quota_lock;
pub mod report;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::relay::Relay;

/// The honest terminal's address.
const HONEST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// The one attacking address: as local as 127.0.0.1 on Linux, but another
/// peer to the relay's per-address limits.
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// How the row runs.
pub struct Settings {
    /// The relay's whole config file: empty for its built-in defaults, the
    /// limits a deployment would run with. `--attack-config FILE` replaces
    /// it, e.g. to try per-peer limits.
    pub relay_config: String,
    /// Size of the honest file.
    pub honest_bytes: usize,
    /// The longest an honest send + get may take before it counts as failed.
    pub honest_limit: Duration,
    /// The longest an attack may take to put its damage in place before
    /// the honest transfer starts anyway.
    pub arm_limit: Duration,
    /// How long the attacks run, in place, before the honest transfer
    /// starts: those that keep working (guessing, proofs) are then in full
    /// swing, not starting up.
    pub soak: Duration,
    /// Honest send + gets per phase (the median is the figure).
    pub honest_runs: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            relay_config: String::new(),
            honest_bytes: 32 << 20,
            honest_limit: Duration::from_secs(60),
            arm_limit: Duration::from_secs(150),
            soak: Duration::from_secs(3),
            honest_runs: 3,
        }
    }
}

/// One of issue 20's attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Item 1: sessions that `Fetch` a big manifest and never read.
    FetchFlood,
    /// Item 2: batches declaring huge files, nothing sent.
    QuotaLock,
    /// Item 3: one-byte batches never uploaded, up to the live-batch cap.
    BatchCap,
    /// Item 4: wrong proofs, free challenges, resumes that re-hash.
    ProofCpu,
    /// Item 5: guessing codes as fast as the relay answers.
    Guessing,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::FetchFlood,
        Kind::QuotaLock,
        Kind::BatchCap,
        Kind::ProofCpu,
        Kind::Guessing,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::FetchFlood => "fetch_flood",
            Kind::QuotaLock => "quota_lock",
            Kind::BatchCap => "batch_cap",
            Kind::ProofCpu => "proof_cpu",
            Kind::Guessing => "guessing",
        }
    }

    /// Sessions it opens from the attacking address. Alone, the fetch
    /// flood takes all but one of the relay's default 64 per address; all
    /// together they share them, so none is refused for the cap alone.
    fn sessions(self, combined: bool) -> usize {
        match (self, combined) {
            (Kind::FetchFlood, false) => 63,
            (Kind::FetchFlood, true) => 40,
            (Kind::QuotaLock, _) => 1,
            (Kind::BatchCap, _) => 8,
            (Kind::ProofCpu, _) => 2,
            (Kind::Guessing, false) => 8,
            (Kind::Guessing, true) => 4,
        }
    }

    /// Whether it shuts honest uploads out (quota, batch slots). All
    /// together, these start once the others are in place, because the
    /// others need room to set up (the CPU attack stores 128 MiB and
    /// declares 64 MiB more first).
    fn locks_out(self) -> bool {
        matches!(self, Kind::QuotaLock | Kind::BatchCap)
    }

    fn run(self, ctx: &Ctx<'_>) -> io::Result<Value> {
        if ctx.after > 0 {
            ctx.armed.wait(ctx.after, ctx.arm_limit);
        }
        match self {
            Kind::FetchFlood => fetch_flood::run(ctx),
            Kind::QuotaLock => quota_lock::run(ctx),
            Kind::BatchCap => batch_cap::run(ctx),
            Kind::ProofCpu => proof_cpu::run(ctx),
            Kind::Guessing => guessing::run(ctx),
        }
    }
}

/// Counts attacks whose damage is in place, so the honest transfer starts
/// when it would meet all of it.
struct Armed {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Armed {
    fn new() -> Self {
        Armed {
            count: Mutex::new(0),
            changed: Condvar::new(),
        }
    }

    fn arm(&self) {
        if let Ok(mut n) = self.count.lock() {
            *n += 1;
        }
        self.changed.notify_all();
    }

    /// Waits until `n` attacks are armed or `limit` has passed; whether
    /// they all were.
    fn wait(&self, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let Ok(mut count) = self.count.lock() else {
            return false;
        };
        while *count < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.changed.wait_timeout(count, left) {
                Ok((c, _)) => count = c,
                Err(_) => return false,
            }
        }
        true
    }
}

/// What one attack gets to work with.
pub struct Ctx<'a> {
    /// The relay's TCP address.
    relay: SocketAddr,
    /// The address to attack from.
    source: Ipv4Addr,
    /// Set when the honest measurement is over.
    stop: &'a AtomicBool,
    /// When the attack gives up whatever it is doing.
    deadline: Instant,
    /// Sessions it may open.
    sessions: usize,
    /// How many attacks must be in place before this one starts.
    after: usize,
    /// The longest it waits for them.
    arm_limit: Duration,
    armed: &'a Armed,
    armed_once: AtomicBool,
}

impl Ctx<'_> {
    /// Whether to stop: told to, or out of time.
    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    /// The attack's damage is in place (counted once).
    fn arm(&self) {
        if !self.armed_once.swap(true, Ordering::Relaxed) {
            self.armed.arm();
        }
    }

    /// Holds the attack's sessions open until told to stop.
    fn hold(&self) {
        while !self.done() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What happened while the attacks ran.
struct Phase {
    /// Each attack's own figures.
    attacks: Vec<(Kind, Value)>,
    /// The honest runs under attack.
    under: Value,
    /// Whether every attack was in place before the honest runs.
    all_armed: bool,
    /// Seconds until they were.
    armed_after: f64,
    /// The relay's peak RSS, sampled every 100 ms.
    rss_peak: u64,
    /// The relay's CPU seconds from the attacks being in place to their end.
    cpu_in_place: f64,
    /// Seconds from the attacks being in place to their end.
    in_place_secs: f64,
}

/// Samples the relay's RSS until told to stop; the peak.
fn sample_rss(relay: &Relay, stop: &AtomicBool) -> u64 {
    let mut peak = 0;
    while !stop.load(Ordering::Relaxed) {
        peak = peak.max(relay.rss().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100));
    }
    peak.max(relay.rss().unwrap_or(0))
}

/// One scenario: a fresh relay, the honest transfer alone, then under
/// `kinds` from the attacking address.
fn scenario(binary: &Path, settings: &Settings, kinds: &[Kind], seed: u64) -> io::Result<Value> {
    let relay = Relay::start_config(binary, None, &settings.relay_config)?;
    let combined = kinds.len() > 1;
    let honest = |seed| {
        honest::repeat(
            relay.addr,
            settings.honest_bytes,
            seed,
            settings.honest_limit,
            settings.honest_runs,
        )
    };
    let alone = honest(seed);
    let rss_before = relay.rss().unwrap_or(0);
    let cpu_before = relay.cpu_secs();

    let stop = AtomicBool::new(false);
    let sampling = AtomicBool::new(false);
    let armed = Armed::new();
    // Past it, every attack winds down even if the honest runs have not.
    let deadline = Instant::now()
        + settings.arm_limit
        + settings.soak
        + settings.honest_limit * (settings.honest_runs as u32 + 1);
    let started = Instant::now();
    let phase = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_rss(&relay, &sampling));
        let handles: Vec<_> = kinds
            .iter()
            .map(|&kind| {
                let ctx = Ctx {
                    relay: relay.addr,
                    source: ATTACKER,
                    stop: &stop,
                    deadline,
                    sessions: kind.sessions(combined),
                    after: if kind.locks_out() {
                        kinds.iter().filter(|k| !k.locks_out()).count()
                    } else {
                        0
                    },
                    arm_limit: settings.arm_limit / 2,
                    armed: &armed,
                    armed_once: AtomicBool::new(false),
                };
                s.spawn(move || {
                    let t = Instant::now();
                    let out = kind.run(&ctx);
                    // An attack that ended early (or failed) must not hold
                    // the honest transfer back.
                    ctx.arm();
                    let mut v = out.unwrap_or_else(|e| json!({ "error": e.to_string() }));
                    v["ran_secs"] = json!(t.elapsed().as_secs_f64());
                    v
                })
            })
            .collect();
        let all_armed = armed.wait(kinds.len(), settings.arm_limit);
        let armed_after = started.elapsed().as_secs_f64();
        // From here the relay's CPU is what the attacks cost while in
        // place (and the honest runs), not what setting them up did.
        let cpu_armed = relay.cpu_secs();
        let in_place = Instant::now();
        std::thread::sleep(settings.soak);
        let under = honest(seed + 1);
        stop.store(true, Ordering::Relaxed);
        let attacks: Vec<(Kind, Value)> = kinds
            .iter()
            .zip(handles)
            .map(|(&kind, h)| {
                let v = h
                    .join()
                    .unwrap_or_else(|_| json!({ "error": "attack thread panicked" }));
                (kind, v)
            })
            .collect();
        sampling.store(true, Ordering::Relaxed);
        let rss_peak = sampler.join().unwrap_or(0);
        Phase {
            attacks,
            under,
            all_armed,
            armed_after,
            rss_peak,
            cpu_in_place: relay.cpu_secs() - cpu_armed,
            in_place_secs: in_place.elapsed().as_secs_f64(),
        }
    });
    let cpu = relay.cpu_secs() - cpu_before;
    let attack_secs = started.elapsed().as_secs_f64();
    // Memory given back once the attackers' sessions closed.
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = relay.rss().unwrap_or(0);
    let mut detail = serde_json::Map::new();
    for (kind, v) in phase.attacks {
        detail.insert(kind.name().into(), v);
    }
    Ok(json!({
        "attacks": kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "slowdown": phase.under["secs"].as_f64().unwrap_or(f64::NAN)
            / alone["secs"].as_f64().unwrap_or(f64::NAN),
        "alone": alone,
        "under_attack": phase.under,
        "all_armed": phase.all_armed,
        "armed_after_secs": phase.armed_after,
        "in_place_secs": phase.in_place_secs,
        "relay_cpu_secs_in_place": phase.cpu_in_place,
        "attack_secs": attack_secs,
        "relay_cpu_secs_during_attack": cpu,
        "relay_rss_before_bytes": rss_before,
        "relay_rss_peak_bytes": phase.rss_peak,
        "relay_rss_after_bytes": rss_after,
        "detail": detail,
    }))
}

/// Runs every attack alone, then all together; the report's `attack` part.
pub fn run(binary: &Path, settings: &Settings) -> io::Result<Value> {
    let mut scenarios = Vec::new();
    let mut plan: Vec<Vec<Kind>> = Kind::ALL.iter().map(|&k| vec![k]).collect();
    plan.push(Kind::ALL.to_vec());
    for (i, kinds) in plan.iter().enumerate() {
        let names: Vec<_> = kinds.iter().map(|k| k.name()).collect();
        eprintln!("    under attack: {}…", names.join(" + "));
        scenarios.push(scenario(binary, settings, kinds, 100 + 2 * i as u64)?);
    }
    // The worst single attacks: those the honest transfer failed under,
    // else the one with the largest slowdown.
    let single: Vec<&Value> = scenarios.iter().take(Kind::ALL.len()).collect();
    let failed: Vec<&Value> = single
        .iter()
        .copied()
        .filter(|v| v["under_attack"]["ok"].as_bool() != Some(true))
        .collect();
    let worst: Vec<Value> = if failed.is_empty() {
        single
            .iter()
            .max_by(|a, b| {
                let slowdown = |v: &Value| v["slowdown"].as_f64().unwrap_or(0.0);
                slowdown(a).total_cmp(&slowdown(b))
            })
            .map(|v| v["attacks"][0].clone())
            .into_iter()
            .collect()
    } else {
        failed.iter().map(|v| v["attacks"][0].clone()).collect()
    };
    Ok(json!({
        "honest_bytes": settings.honest_bytes,
        "relay_config": settings.relay_config,
        "scenarios": scenarios,
        "worst": worst,
    }))
}
