//! Issue 20, item 5: code guessing from one address, as fast as the relay
//! answers, waiting at most 100 ms when told `RateLimited`. The honest
//! terminal's lookups must not pay for the guesser's failures.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pickup_proto::message::{Fetch, Message};
use pickup_proto::{Code, ErrorCode};
use rand::{RngCore, SeedableRng};
use serde_json::{json, Value};

use super::connection::{Conn, Reply};
use super::Ctx;

/// A bound on guesses in all; the run's time ends them first.
const MAX_GUESSES: u64 = 2_000_000;
/// The attack is in place once the guessers have met the limit, or after this.
const WARM_UP: Duration = Duration::from_secs(3);

/// Guesses from `ctx.sessions` sessions until the honest transfer is over.
pub fn run(ctx: &Ctx<'_>) -> io::Result<Value> {
    let guesses = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let limited = AtomicU64::new(0);
    let hits = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let errors = Mutex::new(Vec::<String>::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for n in 0..ctx.sessions {
            let (guesses, failed, limited, hits, bytes, errors) =
                (&guesses, &failed, &limited, &hits, &bytes, &errors);
            s.spawn(move || {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(500 + n as u64);
                let result = (|| -> io::Result<()> {
                    let mut c = Conn::open(ctx.relay, ctx.source)?;
                    let outcome = loop {
                        if ctx.done() || guesses.fetch_add(1, Ordering::Relaxed) >= MAX_GUESSES {
                            break Ok(());
                        }
                        let mut random = [0u8; 16];
                        rng.fill_bytes(&mut random);
                        // The default code length is 16 symbols; any
                        // length is one more failed lookup.
                        let code = Code::from_random(random, 16);
                        if let Err(e) = c.send(Message::Fetch(Fetch { code })) {
                            break Err(e);
                        }
                        match c.expect(|r| matches!(r, Reply::Manifest(_)).then_some(())) {
                            Ok(Ok(())) => {
                                hits.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Err(ErrorCode::RateLimited)) => {
                                limited.fetch_add(1, Ordering::Relaxed);
                                if start.elapsed() > Duration::from_millis(200) {
                                    ctx.arm();
                                }
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            Ok(Err(_)) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => break Err(e),
                        }
                        if start.elapsed() > WARM_UP {
                            ctx.arm();
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
    let mut errors = errors.into_inner().unwrap_or_default();
    errors.dedup();
    let (failed, limited) = (
        failed.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
    );
    Ok(json!({
        "summary": format!(
            "{} sessions: {failed} failed lookups, {limited} RateLimited in {:.1} s",
            ctx.sessions,
            start.elapsed().as_secs_f64()
        ),
        "sessions": ctx.sessions,
        "failed_lookups": failed,
        "rate_limited": limited,
        "hits": hits.load(Ordering::Relaxed),
        "session_errors": errors,
        "bytes_sent": bytes.load(Ordering::Relaxed),
    }))
}
