//! Row 3: many simultaneous two-file uploads of 64 KiB each, the clients
//! spread in turn over one relay or several (instances of one cluster on
//! the `postgres` backend), each relay's RSS sampled while they run.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::relay::Relay;
use crate::{client, cpu_secs, random_bytes, sha1_fast, tcp_link, tcp_upload_config};

/// How often each relay's RSS is read while the uploads run.
const RSS_EVERY: Duration = Duration::from_millis(50);

/// `rounds` rounds of [`run`] one after the other against the same
/// relays, each with content of its own (no round's files are already
/// held). The median round by rate is the report, with every round's rate,
/// p99, failures and CPU under `rounds`.
///
/// One round's rate moves a lot on a small machine (on the 2-core guest of
/// bench/RESULTS.md, 0.5–1.2x of the median between rounds of one run);
/// the median of several is steadier. The first round also pays for
/// starting the relay's blocking threads, and rounds in one relay delete
/// no files between them (see RESULTS.md on ext4 without a journal).
pub fn rounds(relays: &[&Relay], uploads: usize, rounds: usize) -> io::Result<Value> {
    let mut all = Vec::new();
    for round in 0..rounds.max(1) {
        all.push(run_round(relays, uploads, round)?);
    }
    median_round(all).ok_or_else(|| io::Error::other("no round ran"))
}

/// The round with the median rate (of an even number, the faster of the
/// middle two), with every round's summary, in the order they ran, under
/// `rounds`.
fn median_round(mut all: Vec<Value>) -> Option<Value> {
    let rate = |v: &Value| v["completions_per_sec"].as_f64().unwrap_or(0.0);
    let summary: Vec<Value> = all
        .iter()
        .map(|r| {
            json!({
                "completions_per_sec": r["completions_per_sec"],
                "p99_ms": r["p99_ms"],
                "failures": r["failures"],
                "relay_cpu_secs": r["relay_cpu_secs"],
                "clients_cpu_secs": r["clients_cpu_secs"],
            })
        })
        .collect();
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| rate(&all[a]).total_cmp(&rate(&all[b])));
    let mut median = all.swap_remove(*order.get(order.len() / 2)?);
    median["rounds"] = json!(summary);
    Some(median)
}

/// `uploads` clients, client `i` on `relays[i % relays.len()]`, all
/// released at once; latencies, rate, failures, and each relay's CPU and
/// RSS (before, peak, after) and threads (before, peak).
pub fn run(relays: &[&Relay], uploads: usize) -> io::Result<Value> {
    run_round(relays, uploads, 0)
}

/// [`run`], with the content of round `round` (each round's differs).
fn run_round(relays: &[&Relay], uploads: usize, round: usize) -> io::Result<Value> {
    if relays.is_empty() {
        return Err(io::Error::other("no relay to upload to"));
    }
    // Every client has its data before the clock starts. The clock is one
    // for all, read before the release: with a thousand threads made
    // runnable at once on a few cores, a thread may get a core only long
    // after the release, and a clock read after it would leave out that
    // wait (the main thread's own start, read late, inflated the rate).
    let barrier = Arc::new(Barrier::new(uploads + 1));
    let released = Arc::new(OnceLock::<Instant>::new());
    let handles: Vec<_> = (0..uploads)
        .map(|i| {
            let barrier = barrier.clone();
            let released = released.clone();
            let addr = relays[i % relays.len()].addr;
            std::thread::spawn(move || -> io::Result<[Duration; 3]> {
                let seed = 2 * (round * uploads + i) as u64;
                let files = vec![
                    random_bytes(64 * 1024, seed),
                    random_bytes(64 * 1024, seed + 1),
                ];
                let sha1s: Vec<_> = files.iter().map(|f| sha1_fast(f)).collect();
                let names = vec!["one.bin".to_string(), "two.bin".to_string()];
                barrier.wait();
                let t = *released.get().ok_or_else(|| io::Error::other("no start"))?;
                let mut link = tcp_link(addr)?;
                let up = client::upload(&mut link, tcp_upload_config(), &names, &files, &sha1s)?;
                Ok([t.elapsed(), up.welcomed_after, up.granted_after])
            })
        })
        .collect();
    let rss_before: Vec<u64> = relays.iter().map(|r| r.rss().unwrap_or(0)).collect();
    let relay_cpu: Vec<f64> = relays.iter().map(|r| r.cpu_secs()).collect();
    let clients_cpu = cpu_secs("/proc/self/stat");
    let stop = AtomicBool::new(false);
    let threads_before: Vec<u64> = relays.iter().map(|r| r.threads().unwrap_or(0)).collect();
    let (elapsed, latencies, failures, (rss_peak, threads_peak)) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_rss(relays, &stop));
        let start = Instant::now();
        let _ = released.set(start);
        barrier.wait();
        let mut latencies = Vec::new();
        let mut failures = BTreeMap::<String, usize>::new();
        for h in handles {
            match h.join() {
                Ok(Ok(d)) => latencies.push(d),
                Ok(Err(e)) => *failures.entry(e.to_string()).or_default() += 1,
                Err(_) => *failures.entry("client panicked".into()).or_default() += 1,
            }
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let peak = sampler.join().unwrap_or_default();
        (elapsed, latencies, failures, peak)
    });
    let relay_cpu: Vec<f64> = relays
        .iter()
        .zip(&relay_cpu)
        .map(|(r, before)| r.cpu_secs() - before)
        .collect();
    let clients_cpu = cpu_secs("/proc/self/stat") - clients_cpu;
    let rss_after: Vec<u64> = relays.iter().map(|r| r.rss().unwrap_or(0)).collect();
    let pct = |which: usize, p: f64| {
        let mut v: Vec<Duration> = latencies.iter().map(|l| l[which]).collect();
        v.sort();
        v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(json!({
        "uploads": uploads,
        "relays": relays.len(),
        "failures": failures.values().sum::<usize>(),
        // What the failed clients were told, and how many were told it.
        "failure_reasons": failures,
        "completions_per_sec": latencies.len() as f64 / elapsed.as_secs_f64(),
        "p50_ms": pct(0, 0.50),
        "p99_ms": pct(0, 0.99),
        "welcome_p50_ms": pct(1, 0.50),
        "grant_p50_ms": pct(2, 0.50),
        "wall_secs": elapsed.as_secs_f64(),
        "relay_cpu_secs": relay_cpu.iter().sum::<f64>(),
        "relay_cpu_secs_each": relay_cpu,
        "clients_cpu_secs": clients_cpu,
        "relay_rss_before_bytes": rss_before,
        "relay_rss_peak_bytes": rss_peak,
        "relay_rss_after_bytes": rss_after,
        "relay_threads_before": threads_before,
        "relay_threads_peak": threads_peak,
    }))
}

/// Samples every relay's RSS and thread count until told to stop; each
/// one's peaks.
fn sample_rss(relays: &[&Relay], stop: &AtomicBool) -> (Vec<u64>, Vec<u64>) {
    let mut rss = vec![0u64; relays.len()];
    let mut threads = vec![0u64; relays.len()];
    let sample = |rss: &mut Vec<u64>, threads: &mut Vec<u64>| {
        for ((m, t), r) in rss.iter_mut().zip(threads.iter_mut()).zip(relays) {
            *m = (*m).max(r.rss().unwrap_or(0));
            *t = (*t).max(r.threads().unwrap_or(0));
        }
    };
    while !stop.load(Ordering::Relaxed) {
        sample(&mut rss, &mut threads);
        std::thread::sleep(RSS_EVERY);
    }
    sample(&mut rss, &mut threads);
    (rss, threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(rate: f64, p99: f64) -> Value {
        json!({ "completions_per_sec": rate, "p99_ms": p99, "failures": 0 })
    }

    #[test]
    fn the_median_round_by_rate_is_reported_with_every_round_in_order() {
        let all = vec![
            round(500.0, 2000.0),
            round(1000.0, 900.0),
            round(800.0, 1200.0),
        ];
        let median = median_round(all).unwrap();
        assert_eq!(median["completions_per_sec"], 800.0);
        assert_eq!(median["p99_ms"], 1200.0);
        let rates: Vec<f64> = median["rounds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["completions_per_sec"].as_f64().unwrap())
            .collect();
        assert_eq!(rates, [500.0, 1000.0, 800.0]);
        // Of an even number, the faster of the middle two.
        let even = vec![
            round(300.0, 0.0),
            round(900.0, 0.0),
            round(600.0, 0.0),
            round(100.0, 0.0),
        ];
        assert_eq!(median_round(even).unwrap()["completions_per_sec"], 600.0);
        assert!(median_round(Vec::new()).is_none());
    }
}
