//! Two relay instances over one store (docs/design/scale-out.md §5.1,
//! §8.2): an upload taken over by the other instance while the first one
//! still holds a session for it.
//!
//! ```text
//!                      ┌─ stalled link (Data in flight) ─► Session on A ─┐ jobs late
//!   upload::Session ───┤                                                  ├─ MemoryStore: one state,
//!                      └─ new link: Hello, Resume ───────► Session on B ─┘  a fence map per relay
//! ```
//!
//! One seed is one run. The terminal uploads to relay A until a seeded
//! offset; then its link to A stalls, holding the frames it sent next, and
//! A's disk falls behind (the jobs those frames give run late). The
//! terminal reconnects to relay B and resumes its token: B takes the
//! upload over ([`Store::take_upload`](pickup_relay::store::Store::take_upload)) and moves it on for a seeded while.
//! Only then do A's late frames arrive and its late jobs run, with its
//! timers. The checks:
//!
//! - relay A makes nothing durable any more: the batch and every durable
//!   byte read the same before and after all A's late work;
//! - every `Ack` A sends after the takeover claims no more than the store
//!   holds, and a stale session whose upload step was refused says so to
//!   its terminal (an `Error`) rather than leaving it to time out;
//! - the terminal completes its upload on B, and a download through a
//!   third instance is byte-identical.

use std::collections::BTreeMap;
use std::sync::Arc;

use pickup_proto::frame::{self, Decoder};
use pickup_proto::message::Message;
use pickup_proto::upload;
use pickup_proto::Duration;
use pickup_relay::directory::{MemoryDirectory, PasswordParams};
use pickup_relay::random::SeededRandom;
use pickup_relay::store::memory::MemoryStore;
use pickup_relay::{Link, Relay, Settings};

use super::direct::{
    deliver, download, durable_state, exchange, metas, run_until, Side, Uploader, MAX_ROUNDS,
};
use super::pair::START;
use super::rng::SimRng;
use super::seeds::run_seeds;

/// Jobs that make an upload's state durable (or would, unfenced).
const DURABLE_JOBS: [&str; 5] = ["write", "sync", "complete", "reset", "check-proof"];

/// What a seed's takeover run did.
#[derive(Debug, Clone, Default)]
pub struct TakeoverReport {
    /// The seed.
    pub seed: u64,
    /// Bytes in the batch.
    pub size: u64,
    /// Data bytes relay A took before its link stalled.
    pub cut_at: u64,
    /// Jobs of relay A that ran after B took the upload over.
    pub late_jobs: u32,
    /// Of those, the ones that would have made something durable.
    pub late_durable_jobs: u32,
    /// Relay A told its terminal that it lost the upload.
    pub told: bool,
}

/// Everything relay A sends, decoded: `(file, offset)` of its acks, and
/// whether it sent an error.
#[derive(Default)]
struct Said {
    acks: Vec<(u16, u64)>,
    error: bool,
}

fn drain(side: &mut Side, out: &mut [u8], said: &mut Said) {
    let mut decoder = Decoder::new(vec![0; frame::MAX_FRAME_LEN]);
    while let Some(n) = super::take_frame(&mut side.session, out) {
        let mut input = &out[..n];
        while let Some(Ok(f)) = decoder.feed(&mut input) {
            match Message::decode(f) {
                Ok(Message::Ack(a)) => said.acks.push((a.file, a.offset)),
                Ok(Message::Error(_)) => said.error = true,
                _ => {}
            }
        }
    }
}

/// Runs one seed; panics with a description if a check fails.
pub fn run_takeover(seed: u64) -> TakeoverReport {
    let mut rng = SimRng::new(seed);
    let files: Vec<Vec<u8>> = (0..rng.range(1, 3))
        .map(|_| {
            let mut data = vec![0u8; rng.range(1, 120_000) as usize];
            rng.fill(&mut data);
            data
        })
        .collect();
    let size: u64 = files.iter().map(|f| f.len() as u64).sum();
    let metas = metas(&files);
    let settings = Settings {
        ack_delay: Duration::from_millis(rng.range(0, 300)),
        ..Settings::default()
    };
    let store_a = Arc::new(MemoryStore::new());
    let store_b = Arc::new(store_a.another_instance());
    // The instances share their directory too (and making one costs a
    // password hash).
    let directory = Arc::new(MemoryDirectory::new(PasswordParams::FAST_FOR_TESTS));
    let relay = |store: &Arc<MemoryStore>, salt: u64| {
        Relay::with_directory(
            settings.clone(),
            store.clone(),
            directory.clone(),
            Box::new(SeededRandom::new(seed ^ salt)),
            START,
        )
    };
    let (relay_a, relay_b) = (relay(&store_a, 0xa), relay(&store_b, 0xb));
    // Frames of a few KiB, so that a file takes many and the cut falls
    // between them.
    let link = Link {
        max_frame: [1024, 4096, 16_384][rng.below(3) as usize],
        ..Link::TCP
    };
    let config = upload::Config {
        max_frame: link.max_frame,
        ..upload::Config::default()
    };
    let mut up = Uploader::new(
        upload::Session::new(config, &metas).expect("a valid batch"),
        &files,
    );
    let mut out = vec![0u8; frame::max_encoded_len(frame::MAX_FRAME_LEN)];
    let mut now = START;
    // At least one frame of data after the cut: the terminal cannot
    // finish on A.
    let cut_at = rng.below(size.saturating_sub(u64::from(link.max_frame)).max(1));
    let mut report = TakeoverReport {
        seed,
        size,
        cut_at,
        ..TakeoverReport::default()
    };

    // On A until `cut_at` data bytes went; the frames after stall in the
    // link, and A's disk runs none of the jobs they give.
    let mut a = Side::open(&relay_a, link, now);
    up.session.handle_connected(now);
    let mut taken = 0u64;
    let mut stalled: Vec<Vec<u8>> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let mut moved = false;
        if let Some((wire, data)) = up.transmit(now) {
            moved = true;
            if taken >= cut_at && data > 0 {
                stalled.push(wire);
            } else if stalled.is_empty() {
                taken += data;
                a.feed(now, &wire);
            }
        }
        if stalled.is_empty() {
            a.run_jobs(now);
            moved |= deliver(&mut a, &mut up, now, &mut out);
        }
        if !moved {
            break;
        }
    }
    assert!(up.granted, "seed {seed}: relay A never granted the upload");
    assert!(
        !up.complete,
        "seed {seed}: the upload finished before the cut"
    );
    let code = up.code.expect("granted");
    for wire in &stalled {
        a.feed(now, wire);
    }
    let mut late = Vec::new();
    while let Some(job) = a.session.poll_job() {
        late.push(job);
        if late.len() > 16 {
            panic!("relay A gives out more than its ordered job and one sync");
        }
    }

    // The terminal resumes on B, which takes the upload over and moves it
    // on for a while.
    now = now + Duration::from_millis(rng.range(1, 5_000));
    up.session.handle_disconnected(now);
    up.granted = false;
    let mut b = Side::open(&relay_b, link, now);
    up.session.handle_connected(now);
    run_until(&mut b, &relay_b, &mut up, &mut now, &mut out, |u| u.granted);
    assert!(up.granted, "seed {seed}: relay B never granted the resume");
    let more = rng.below(40) as usize;
    exchange(&mut b, &mut up, now, &mut out, more);

    // A's late jobs run, its timers fire: it must make nothing durable.
    let before = durable_state(&store_a, &code, now);
    let mut said = Said::default();
    let mut ran: Vec<&'static str> = Vec::new();
    for job in late {
        ran.push(job.name());
        let done = job.run(&relay_a);
        a.session.handle_job_done(now, done);
    }
    ran.extend(a.run_jobs(now));
    drain(&mut a, &mut out, &mut said);
    for _ in 0..8 {
        let Some(t) = a.session.poll_timeout() else {
            break;
        };
        now = now.max(t);
        a.session.handle_timeout(now);
        ran.extend(a.run_jobs(now));
        drain(&mut a, &mut out, &mut said);
    }
    let after = durable_state(&store_a, &code, now);
    assert!(
        before == after,
        "seed {seed}: relay A changed the store after B took the upload over ({ran:?})"
    );
    for &(file, offset) in &said.acks {
        let held = after.0.files[usize::from(file)].received();
        assert!(
            offset <= held,
            "seed {seed}: relay A acked file {file} to {offset}, the store holds {held}"
        );
    }
    report.late_jobs = ran.len() as u32;
    report.late_durable_jobs = ran.iter().filter(|n| DURABLE_JOBS.contains(n)).count() as u32;
    report.told = said.error;
    assert!(
        report.late_durable_jobs == 0 || said.error,
        "seed {seed}: relay A's upload steps were refused ({ran:?}) and it told its terminal nothing"
    );
    drop(a);

    // The terminal finishes on B.
    run_until(&mut b, &relay_b, &mut up, &mut now, &mut out, |u| {
        u.complete
    });
    assert!(up.complete, "seed {seed}: the upload never completed on B");

    // A third instance serves the download.
    let store_c = Arc::new(store_a.another_instance());
    let (got, events, _) = download(relay(&store_c, 0xc), store_c, link, code, now);
    assert!(
        got == files,
        "seed {seed}: the download differs from the upload ({events:?})"
    );
    report
}

/// Runs `count` seeds from `first` on `threads` threads; returns the
/// reports and the failures' messages by seed.
pub fn run_takeovers(
    first: u64,
    count: u64,
    threads: usize,
) -> (Vec<TakeoverReport>, BTreeMap<u64, String>) {
    run_seeds(first, count, threads, run_takeover)
}
