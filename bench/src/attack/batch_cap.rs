//! Issue 20, item 3: the live-batch cap filled from one address. Sessions
//! announce one-byte batches and never upload them, as fast as the relay
//! grants, until it answers `Busy` (the cap is reached) or the budget is
//! spent. A relay without per-peer limits then refuses every new batch.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

use super::connection::Conn;
use super::Ctx;

/// A little over the default `limits.max_live_batches` (100,000).
const MAX_BATCHES: u64 = 110_000;

/// Creates one-byte batches from `ctx.sessions` sessions until refused or
/// out of budget; they outlive the sessions.
pub fn run(ctx: &Ctx<'_>) -> io::Result<Value> {
    let start = Instant::now();
    let created = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let capped = AtomicBool::new(false);
    let refusals = Mutex::new(Vec::<String>::new());
    let errors = Mutex::new(Vec::<String>::new());
    let next = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..ctx.sessions {
            s.spawn(|| {
                let result = (|| -> io::Result<()> {
                    let mut c = Conn::open(ctx.relay, ctx.source)?;
                    let outcome = loop {
                        if ctx.done() || capped.load(Ordering::Relaxed) {
                            break Ok(());
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= MAX_BATCHES {
                            break Ok(());
                        }
                        let sha1 = crate::sha1_fast(&i.to_le_bytes());
                        if let Err(e) = c.announce(&[("b".into(), 1, sha1)]) {
                            break Err(e);
                        }
                        match c.grant_and_plan() {
                            Ok(Ok(_)) => {
                                created.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Err(code)) => {
                                if let Ok(mut r) = refusals.lock() {
                                    r.push(format!("{code:?}"));
                                }
                                // Whatever the reason, more of the same
                                // gets the same answer.
                                capped.store(true, Ordering::Relaxed);
                            }
                            Err(e) => break Err(e),
                        }
                    };
                    bytes.fetch_add(c.sent, Ordering::Relaxed);
                    outcome
                })();
                if let (Err(e), Ok(mut errs)) = (result, errors.lock()) {
                    errs.push(e.to_string());
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    ctx.arm();
    let mut refusals = refusals.into_inner().unwrap_or_default();
    refusals.dedup();
    let mut errors = errors.into_inner().unwrap_or_default();
    errors.dedup();
    let made = created.load(Ordering::Relaxed);
    Ok(json!({
        "summary": format!(
            "{made} one-byte batches in {secs:.1} s from {} sessions (refused: {})",
            ctx.sessions,
            if refusals.is_empty() { "never".to_string() } else { refusals.join(", ") }
        ),
        "sessions": ctx.sessions,
        "batches_created": made,
        "refused_with": refusals,
        "session_errors": errors,
        "secs": secs,
        "bytes_sent": bytes.load(Ordering::Relaxed),
    }))
}
