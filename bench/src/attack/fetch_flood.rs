//! Issue 20, item 1: memory amplification by unread replies. One ready
//! batch of 1,000 empty files with 255-byte names (a manifest of about
//! 300 KB), then sessions that each send 400 `Fetch` of it and never read.
//! A relay that queued a manifest per request grew by gigabytes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pickup_proto::message::{Fetch, Message};
use pickup_proto::Sha1Digest;
use serde_json::{json, Value};

use super::connection::{Conn, Reply};
use super::Ctx;

const FILES: usize = 1000;
const FETCHES: usize = 400;

/// Publishes the big batch, then floods it from `ctx.sessions` sessions
/// and holds them, unread, until the honest transfer is over.
pub fn run(ctx: &Ctx<'_>) -> io::Result<Value> {
    let mut owner = Conn::open(ctx.relay, ctx.source)?;
    let files: Vec<(String, u64, Sha1Digest)> = (0..FILES)
        .map(|i| (format!("{i:04}{}", "n".repeat(251)), 0, Sha1Digest::EMPTY))
        .collect();
    owner.announce(&files)?;
    let code = match owner.expect(|r| match r {
        Reply::Grant(g) => Some(g.code),
        _ => None,
    })? {
        Ok(code) => code,
        Err(refused) => return Ok(json!({ "setup_refused": format!("{refused:?}") })),
    };
    // Empty files are held at once; the batch is ready when complete.
    if let Err(refused) = owner.expect(|r| matches!(r, Reply::Complete).then_some(()))? {
        return Ok(json!({ "setup_refused": format!("{refused:?}") }));
    }
    // Its slot goes to a flooding session.
    drop(owner);

    let mut fetches = Vec::new();
    for _ in 0..FETCHES {
        fetches.extend_from_slice(&Conn::frame(Message::Fetch(Fetch { code }))?);
    }
    let opened = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    let blocked = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    std::thread::scope(|s| {
        let flooders: Vec<_> = (0..ctx.sessions)
            .map(|_| {
                s.spawn(|| {
                    let Ok(mut c) = Conn::open(ctx.relay, ctx.source) else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        return None;
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    // What the relay does not read waits in the socket; a
                    // write that times out is its backpressure at work.
                    let _ = c.stream.set_write_timeout(Some(Duration::from_secs(2)));
                    match c.send_bytes(&fetches) {
                        Ok(()) => written.fetch_add(1, Ordering::Relaxed),
                        Err(_) => blocked.fetch_add(1, Ordering::Relaxed),
                    };
                    bytes.fetch_add(c.sent, Ordering::Relaxed);
                    Some(c)
                })
            })
            .collect();
        // Every session keeps its unread replies until the end.
        let held: Vec<Conn> = flooders
            .into_iter()
            .filter_map(|f| f.join().ok().flatten())
            .collect();
        ctx.arm();
        ctx.hold();
        drop(held);
    });
    let sessions = opened.load(Ordering::Relaxed);
    let blocked = blocked.load(Ordering::Relaxed);
    Ok(json!({
        "summary": format!(
            "{sessions} sessions x {FETCHES} unread Fetch of a {FILES}-file manifest \
             ({} KB sent); {blocked} sessions' writes blocked",
            bytes.load(Ordering::Relaxed) / 1000
        ),
        "manifest_files": FILES,
        "sessions": sessions,
        "sessions_refused": refused.load(Ordering::Relaxed),
        "fetches_per_session": FETCHES,
        "sessions_written_in_full": written.load(Ordering::Relaxed),
        "sessions_blocked_writing": blocked,
        "bytes_sent": bytes.load(Ordering::Relaxed),
    }))
}
