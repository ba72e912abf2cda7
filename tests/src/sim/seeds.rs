//! Running a scenario over a range of seeds on several threads: each
//! seed's panic is caught and kept as that seed's failure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Runs `count` seeds from `first` on `threads` threads through `run`
/// (which panics on a failed check); returns the reports and the
/// failures' messages by seed.
pub(super) fn run_seeds<R: Send>(
    first: u64,
    count: u64,
    threads: usize,
    run: fn(u64) -> R,
) -> (Vec<R>, BTreeMap<u64, String>) {
    let next = AtomicU64::new(first);
    let results = Mutex::new((Vec::new(), BTreeMap::new()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first.saturating_add(count) {
                    return;
                }
                let outcome = std::panic::catch_unwind(|| run(seed));
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
