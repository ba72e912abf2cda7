//! Deterministic simulation over many seeds (see `pickup_tests::sim`).
//!
//! - `cargo test -p pickup-tests --test simulation` runs 200 seeds;
//! - `PICKUP_SIM_SEEDS=10000` runs that many (CI does, in release mode);
//! - `PICKUP_SIM_SEED=1234` replays one seed with a trace on stderr;
//! - `PICKUP_SIM_FIRST=5000` starts the range elsewhere;
//! - the seeds of [`sim::REGRESSIONS`] run every time, in their own test.

use std::time::Instant as WallClock;

use pickup_tests::sim::traffic::{self, ByLink, Traffic};
use pickup_tests::sim::{self, Options};

const DEFAULT_SEEDS: u64 = 200;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

fn replay_command(seed: u64) -> String {
    format!("PICKUP_SIM_SEED={seed} cargo test -p pickup-tests --test simulation -- --nocapture")
}

#[test]
fn seeds_that_once_failed_pass() {
    if env_u64("PICKUP_SIM_SEED").is_some() {
        return; // a replay's trace stays alone on stderr
    }
    let mut failures = std::collections::BTreeMap::new();
    for &seed in sim::REGRESSIONS {
        failures.append(&mut sim::run_many(seed, 1, 1).1);
    }
    for (seed, msg) in &failures {
        println!(
            "seed {seed} failed: {msg}\n  replay: {}",
            replay_command(*seed)
        );
    }
    assert!(
        failures.is_empty(),
        "regression seeds failed: {:?}",
        failures.keys()
    );
}

#[test]
fn simulated_transfers_survive_faults_crashes_and_restarts() {
    if let Some(seed) = env_u64("PICKUP_SIM_SEED") {
        let report = sim::run_seed(seed, Options { trace: true });
        eprintln!("{report:#?}");
        return;
    }
    let seeds = env_u64("PICKUP_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = env_u64("PICKUP_SIM_FIRST").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = WallClock::now();
    // The seeds' own panics are reported below with their replay commands.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let (reports, failures) = sim::run_many(first, seeds, threads);
    std::panic::set_hook(hook);
    let elapsed = started.elapsed();
    let sum = |f: fn(&sim::Report) -> u64| reports.iter().map(f).sum::<u64>();
    let (mut up, mut down, mut by_link) =
        (Traffic::default(), Traffic::default(), ByLink::default());
    // The seed whose download moved least per connection next to its upload.
    let mut slowest: Option<(f64, &sim::Report)> = None;
    for r in &reports {
        up.add(r.up);
        down.add(r.down);
        by_link.add(r.bytes_per_ms, r.up, r.down);
        if let Some(ratio) = traffic::down_over_up(r.up, r.down) {
            if slowest.is_none_or(|(worst, _)| ratio < worst) {
                slowest = Some((ratio, r));
            }
        }
    }
    let longest = reports.iter().max_by_key(|r| r.sim_ms);
    let slowest = slowest.map_or("none".to_owned(), |(ratio, r)| {
        format!(
            "{ratio:.2} (seed {}: up {} down {} B/conn)",
            r.seed,
            r.up.per_connection(),
            r.down.per_connection()
        )
    });
    println!(
        "simulation: {} seeds from {first} in {:.1} s on {threads} threads: {} passed, {} failed; \
         {} uploads, {} downloads, {} files linked by proof, {} relay crashes, {} link cuts, \
         {} terminal restarts, {} refused as expired, {} relay jobs, {} connections, {} simulated hours \
         (longest: seed {} at {} s), {} steps, \
         link writes {} (dropped {}, duplicated {}, flipped {}, truncated {}); \
         bytes per connection: uploads {} ({} connections), downloads {} ({} connections); \
         by link speed: {by_link}; \
         slowest download per connection next to its upload: {slowest}",
        seeds,
        elapsed.as_secs_f64(),
        reports.len(),
        failures.len(),
        sum(|r| u64::from(r.uploads)),
        sum(|r| u64::from(r.downloads)),
        sum(|r| u64::from(r.linked)),
        sum(|r| u64::from(r.crashes)),
        sum(|r| u64::from(r.cuts)),
        sum(|r| u64::from(r.restarts)),
        sum(|r| u64::from(r.expired)),
        sum(|r| u64::from(r.jobs)),
        sum(|r| u64::from(r.connections)),
        sum(|r| r.sim_ms) / 3_600_000,
        longest.map_or(0, |r| r.seed),
        longest.map_or(0, |r| r.sim_ms / 1000),
        sum(|r| r.steps),
        sum(|r| r.link.writes),
        sum(|r| r.link.dropped),
        sum(|r| r.link.duplicated),
        sum(|r| r.link.flipped),
        sum(|r| r.link.truncated),
        up.per_connection(),
        up.connections,
        down.per_connection(),
        down.connections,
    );
    println!(
        "named files: {} seeds authenticated as a terminal: {} named uploads, {} downloads by name \
         ({} saw their name replaced), {} impostors refused",
        reports.iter().filter(|r| r.named).count(),
        sum(|r| u64::from(r.named_uploads)),
        sum(|r| u64::from(r.named_downloads)),
        sum(|r| u64::from(r.replaced)),
        sum(|r| u64::from(r.impostors)),
    );
    println!(
        "notices: {} seeds with addressed delivery: {} notices handed to an application, \
         {} delivery answers and status lines, {} relay crashes on purpose, \
         pushes ended {} delivered, {} refused, {} expired",
        reports.iter().filter(|r| r.notices).count(),
        sum(|r| u64::from(r.notices_shown)),
        sum(|r| u64::from(r.notices_reported)),
        sum(|r| u64::from(r.notice_crashes)),
        sum(|r| u64::from(r.notices_delivered)),
        sum(|r| u64::from(r.notices_refused)),
        sum(|r| u64::from(r.notices_expired)),
    );
    for (seed, msg) in &failures {
        println!(
            "seed {seed} failed: {msg}\n  replay: {}",
            replay_command(*seed)
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed; first: seed {:?}",
        failures.len(),
        failures.keys().next()
    );
    // Every seed ends with its uploads and downloads done, so these count
    // real work, not skipped seeds.
    assert!(sum(|r| u64::from(r.downloads)) >= seeds);
}

/// A range's reports, and the failing seeds with their messages.
type Outcomes<R> = (Vec<R>, std::collections::BTreeMap<u64, String>);

/// A two-relay scenario over the main simulation's seed range: replays
/// `PICKUP_SIM_SEED` alone (its report on stderr; `None`), else runs the
/// range through `run_range` and fails naming every failing seed; the
/// reports and the range's first seed for the scenario's own checks.
fn scenario<R: std::fmt::Debug>(
    name: &str,
    replay: fn(u64) -> R,
    run_range: fn(u64, u64, usize) -> Outcomes<R>,
) -> Option<(Vec<R>, u64)> {
    if let Some(seed) = env_u64("PICKUP_SIM_SEED") {
        eprintln!("{:#?}", replay(seed));
        return None;
    }
    let seeds = env_u64("PICKUP_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = env_u64("PICKUP_SIM_FIRST").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let (reports, failures) = run_range(first, seeds, threads);
    std::panic::set_hook(hook);
    for (seed, msg) in &failures {
        println!(
            "seed {seed} failed: {msg}\n  replay: {}",
            replay_command(*seed)
        );
    }
    assert!(
        failures.is_empty(),
        "{name} seeds failed: {:?}",
        failures.keys()
    );
    Some((reports, first))
}

/// Two relay instances over one store: an upload resumed on the second
/// while the first still holds a session for it (`sim::takeover`). The
/// same seed range as the main simulation; `PICKUP_SIM_SEED` replays one.
#[test]
fn uploads_taken_over_by_another_relay_instance_are_fenced() {
    let Some((reports, first)) = scenario(
        "takeover",
        sim::takeover::run_takeover,
        sim::takeover::run_takeovers,
    ) else {
        return;
    };
    let fenced = reports.iter().filter(|r| r.late_durable_jobs > 0).count();
    let told = reports.iter().filter(|r| r.told).count();
    println!(
        "takeover: {} seeds from {first}, {fenced} with late upload steps on the first relay (refused), {told} told their terminal",
        reports.len()
    );
    // Most seeds leave the first relay work to do after the takeover:
    // otherwise the scenario checks nothing.
    assert!(
        fenced * 2 >= reports.len(),
        "only {fenced} of {} seeds had late upload steps",
        reports.len()
    );
}

/// A relay-to-relay pair (`sim::forward`): a batch forwarded from the
/// relay holding it to a peer with the terminal upload machine, with
/// crashes of either relay on the way. The same seed range as the main
/// simulation; `PICKUP_SIM_SEED` replays one.
#[test]
fn forwards_between_relays_survive_crashes_on_both_sides() {
    let Some((reports, first)) = scenario(
        "forward",
        sim::forward::run_forward,
        sim::forward::run_forwards,
    ) else {
        return;
    };
    let source = reports.iter().filter(|r| r.source_crashes > 0).count();
    let peer = reports.iter().filter(|r| r.peer_crashes > 0).count();
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    let size: u64 = reports.iter().map(|r| r.size).sum();
    println!(
        "forward: {} seeds from {first}, {source} with the source's forwarder dying, {peer} with the peer relay dying; {sent} file bytes crossed for {size}",
        reports.len()
    );
    // Both kinds of crash happen in a run of any size, or the scenario
    // checks less than it says.
    assert!(
        reports.len() < 100 || (source * 10 >= reports.len() && peer * 10 >= reports.len()),
        "too few crashes: {source} source, {peer} peer in {} seeds",
        reports.len()
    );
}
