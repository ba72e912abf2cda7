//! Issue 20, item 2: storage quota locked by declared sizes. Batches that
//! announce two 4 GiB files each (the default largest file) and send
//! nothing; a relay that reserves declared bytes for as long as a batch
//! lives refuses every later upload with `Quota`.

use std::io;
use std::time::{Duration, Instant};

use pickup_proto::message::Message;
use serde_json::{json, Value};

use super::connection::Conn;
use super::Ctx;

/// The default `limits.max_file_size`.
const FILE_SIZE: u64 = 4 << 30;
/// Enough for the default 32 GiB quota four times over; the relay's
/// refusal ends it sooner.
const MAX_BATCHES: usize = 16;

pub fn run(ctx: &Ctx<'_>) -> io::Result<Value> {
    let mut c = Conn::open(ctx.relay, ctx.source)?;
    let start = Instant::now();
    let mut granted = 0usize;
    let mut refused = None;
    for i in 0..MAX_BATCHES {
        if ctx.done() {
            break;
        }
        // Distinct content per file, so nothing is held or linked.
        let files: Vec<_> = (0..2)
            .map(|j| {
                let sha1 = crate::sha1_fast(format!("quota {i} {j}").as_bytes());
                (format!("big-{i}-{j}.bin"), FILE_SIZE, sha1)
            })
            .collect();
        c.announce(&files)?;
        match c.grant_and_plan()? {
            Ok(_) => granted += 1,
            Err(code) => {
                refused = Some(format!("{code:?}"));
                break;
            }
        }
    }
    let locked_after = start.elapsed().as_secs_f64();
    let bytes_sent = c.sent;
    ctx.arm();
    // The session stays open (the batches would outlive it anyway),
    // answering nothing but keeping the relay's idle timer at bay.
    let mut last = Instant::now();
    while !ctx.done() {
        c.drain()?;
        if last.elapsed() > Duration::from_secs(5) {
            c.send(Message::Keepalive)?;
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(json!({
        "file_size": FILE_SIZE,
        "batches_granted": granted,
        "declared_bytes": granted as u64 * 2 * FILE_SIZE,
        "refused_with": refused,
        "secs": locked_after,
        "bytes_sent": bytes_sent,
    }))
}
