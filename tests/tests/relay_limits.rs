//! The real `pickup-relay` under abuse that must not reach honest users
//! (issue 20): guessing from many addresses, a low open-file limit, idle
//! connections that never start anything, and batches of empty files.
//! Peers are told apart by source address: 127.0.0.2 and up are bound on
//! Linux loopback like 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pickup_proto::message::{BatchOpen, Fetch, FileAnnounce, Message};
use pickup_proto::{Code, ErrorCode, Sha1Digest};
use pickup_tests::e2e::{pickup, run, TempDir};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::*;

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// 40 addresses guess codes as fast as the relay lets them (each waits at
/// most 100 ms when told to wait): the relay's failed-lookup budget stays
/// spent. From an address that never guessed, 36 fetches of a real code
/// all succeed, and `pickup get` of 256 KiB takes normal time.
#[test]
fn honest_lookups_get_through_a_guessing_attack_from_40_addresses() {
    let relay = RelayProcess::start();
    let content = bytes(256 * 1024, 5);
    let up = upload_tcp(relay.addr(), &[("letter.bin", content.clone())], None);
    assert!(up.complete(), "{:?}", up.events);
    let code = up.code();

    let stop = Arc::new(AtomicBool::new(false));
    let guesses = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (2..42u8)
        .map(|n| {
            let (addr, stop) = (relay.addr(), stop.clone());
            let (guesses, limited) = (guesses.clone(), limited.clone());
            thread::spawn(move || {
                let mut raw = Raw::connect_from(addr, loopback(n));
                raw.hello();
                let mut x = u128::from(n) << 40;
                while !stop.load(Ordering::Relaxed) {
                    x += 1;
                    let code = Code::from_parts(13, x).unwrap();
                    raw.send(Message::Fetch(Fetch { code }));
                    match raw.recv_within(Duration::from_secs(10)) {
                        Some(Ok(Reply::Error(ErrorCode::UnknownCode, _))) => {
                            guesses.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Ok(Reply::Error(ErrorCode::RateLimited, wait))) => {
                            limited.fetch_add(1, Ordering::Relaxed);
                            thread::sleep(Duration::from_millis(u64::from(wait).min(100)));
                        }
                        other => return format!("attacker {n}: {other:?}"),
                    }
                }
                String::new()
            })
        })
        .collect();
    // Let the attack spend the relay's burst.
    thread::sleep(Duration::from_secs(5));

    let mut fetched = 0;
    let mut refused = Vec::new();
    for _ in 0..36 {
        let mut raw = Raw::connect(relay.addr());
        raw.hello();
        raw.send(Message::Fetch(Fetch { code }));
        match raw.recv() {
            Reply::Manifest(m) if m.ready => fetched += 1,
            other => refused.push(other),
        }
        thread::sleep(Duration::from_millis(100));
    }

    println!("under attack: {fetched}/36 honest fetches served");

    let work = TempDir::new("relay-limits");
    let dest = work.path().join("got");
    let start = Instant::now();
    let out = run(pickup(&work.path().join("state")).args([
        "get",
        "--relay",
        &relay.tcp(),
        &code.to_string(),
        "-o",
        dest.to_str().unwrap(),
    ]));
    let took = start.elapsed();

    stop.store(true, Ordering::Relaxed);
    let stopped: Vec<String> = attackers
        .into_iter()
        .map(|a| a.join().unwrap())
        .filter(|why| !why.is_empty())
        .collect();
    let (guesses, limited) = (
        guesses.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
    );
    println!(
        "under attack ({guesses} failed guesses, {limited} rate-limited): \
         {fetched}/36 honest fetches served, pickup get of 256 KiB in {took:?}"
    );
    assert!(stopped.is_empty(), "{stopped:?}\n{}", relay.log());
    assert!(limited > 100, "the guessers never met the limit: no attack");
    assert!(
        out.status.success(),
        "pickup get failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(dest.join("letter.bin")).unwrap() == content);
    assert_eq!(fetched, 36, "refused: {refused:?}");
    assert!(
        took < Duration::from_secs(10),
        "pickup get took {took:?} under attack"
    );
}

/// The session cap the relay logged at start.
fn logged_session_cap(relay: &RelayProcess) -> usize {
    let log = relay.log();
    log.lines()
        .find_map(|l| l.split("descriptors: up to ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no session cap in the log:\n{log}"))
}

/// What the relay first says to a new connection that says `Hello`.
enum Answer {
    Welcome(Raw),
    Busy,
    Silent,
}

fn knock(relay: &RelayProcess, i: usize) -> Answer {
    // Eight addresses: the per-address cap (64) is not what refuses them.
    let mut raw = Raw::connect_from(relay.addr(), loopback(2 + (i % 8) as u8));
    raw.send(Message::Hello(pickup_proto::message::Hello {
        version: 1,
        role: pickup_proto::message::Role::Terminal,
        max_frame: 65_536,
        window: 1 << 20,
        caps: 0,
    }));
    match raw.recv_within(Duration::from_secs(3)) {
        Some(Ok(Reply::Welcome)) => Answer::Welcome(raw),
        Some(Ok(Reply::Error(ErrorCode::Busy, retry))) => {
            assert!(retry > 0, "Busy without a retry hint");
            Answer::Busy
        }
        other => {
            assert!(other.is_none(), "connection {i}: {other:?}");
            Answer::Silent
        }
    }
}

/// Opens connections until one is refused (at most `max`): the sessions
/// kept, and whether the refusal was a `Busy` (not silence).
fn fill(relay: &RelayProcess, max: usize) -> (Vec<Raw>, Option<Answer>) {
    let mut open = Vec::new();
    for i in 0..max {
        match knock(relay, i) {
            Answer::Welcome(raw) => open.push(raw),
            refused => return (open, Some(refused)),
        }
    }
    (open, None)
}

/// Under `ulimit -n 256` the relay derives its session cap from the
/// descriptors it has, logs it, serves that many sessions and answers
/// every connection beyond with `Busy`; `accept` never runs out of
/// descriptors. A closed session makes room again.
#[test]
fn under_ulimit_256_sessions_are_capped_and_the_rest_get_busy() {
    let relay = RelayProcess::builder().open_files(256).start();
    let (mut open, refused) = fill(&relay, 400);
    let served = open.len();
    assert!(
        matches!(refused, Some(Answer::Busy)),
        "after {served} sessions the next connection was {}: {}",
        match refused {
            Some(Answer::Silent) => "not answered",
            _ => "accepted",
        },
        relay.log()
    );
    let cap = logged_session_cap(&relay);
    println!("ulimit -n 256: session cap {cap}, {served} sessions served, then Busy");
    assert_eq!(served, cap);
    for i in 0..40 {
        assert!(matches!(knock(&relay, i), Answer::Busy), "connection {i}");
    }
    // Ten sessions end: ten new ones are served (once the relay has seen
    // the ends), and the next is refused again.
    open.truncate(cap - 10);
    thread::sleep(Duration::from_millis(500));
    let (more, refused) = fill(&relay, 20);
    assert_eq!(more.len(), 10);
    assert!(matches!(refused, Some(Answer::Busy)));
    let log = relay.log();
    assert!(
        !log.contains("accept failed") && !log.contains("Too many open files"),
        "{log}"
    );
}

/// Under `ulimit -Sn 256` (a low soft limit, the hard limit higher) the
/// relay raises its soft limit and serves 300 sessions.
#[test]
fn a_low_soft_limit_is_raised_to_the_hard_limit() {
    let hard = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    if hard != "unlimited" && hard.parse::<u64>().unwrap() < 1024 {
        println!("hard open-file limit {hard}: nothing to raise to");
        return;
    }
    let relay = RelayProcess::builder().soft_open_files(256).start();
    let (open, refused) = fill(&relay, 300);
    assert!(
        refused.is_none(),
        "after {} sessions the next connection was refused:\n{}",
        open.len(),
        relay.log()
    );
    assert!(logged_session_cap(&relay) >= 300);
}

/// A connection that never says `Hello`, and one that says it but starts
/// nothing, are closed after `idle_timeout_before_transfer_secs` (30 s by
/// default); a session with a batch stays open (`idle_timeout_secs`, 120 s).
#[test]
fn idle_connections_without_a_batch_are_closed_after_30_s() {
    let relay = RelayProcess::start();
    let start = Instant::now();
    let mut silent = Raw::connect(relay.addr());
    let mut greeted = Raw::connect(relay.addr());
    greeted.hello();
    let mut started = Raw::connect(relay.addr());
    started.hello();
    started.send(Message::BatchOpen(BatchOpen {
        files: 1,
        total_size: 4,
    }));
    started.send(Message::FileAnnounce(FileAnnounce {
        index: 0,
        size: 4,
        sha1: Sha1Digest::of(b"abcd"),
        name: "f",
    }));
    assert!(matches!(started.recv(), Reply::Grant(_)));
    for (what, raw) in [("silent", &mut silent), ("greeted", &mut greeted)] {
        let closed = loop {
            match raw.recv_within(Duration::from_secs(50).saturating_sub(start.elapsed())) {
                Some(Ok(Reply::Error(ErrorCode::IdleTimeout, _))) | Some(Err(Closed)) => {
                    break start.elapsed()
                }
                Some(Ok(_)) => continue,
                None => panic!("the {what} connection is still open after 50 s"),
            }
        };
        println!("{what} connection closed after {closed:?}");
        assert!(
            (Duration::from_secs(29)..Duration::from_secs(40)).contains(&closed),
            "{what}: {closed:?}"
        );
    }
    // The session with a batch is still there and answers.
    started.send(Message::Keepalive);
    loop {
        match started.recv() {
            Reply::Keepalive => break,
            Reply::Plan(_) | Reply::Ack(_) => {}
            other => panic!("the uploading session: {other:?}"),
        }
    }
}

/// 20 batches of 1,000 empty files: each is granted and complete at once
/// (`Held` plans), none makes a blob file, and each is served as ready.
#[test]
fn twenty_thousand_empty_files_make_no_blob_file() {
    let relay = RelayProcess::start();
    let mut raw = Raw::connect(relay.addr());
    raw.hello();
    let mut times = Vec::new();
    let mut first = None;
    for batch in 0..20 {
        // Other names each time: the same announcement again would be
        // taken for a lost grant and granted again.
        let files: Vec<(String, u64, Sha1Digest)> = (0..1000)
            .map(|i| (format!("empty-{batch}-{i:04}"), 0, Sha1Digest::EMPTY))
            .collect();
        let start = Instant::now();
        raw.announce(&files);
        loop {
            match raw.recv() {
                Reply::Grant(g) => {
                    first.get_or_insert(g.code);
                }
                Reply::Complete => break,
                Reply::Error(code, _) => panic!("refused: {code:?}"),
                _ => {}
            }
        }
        times.push(start.elapsed());
    }
    let blob_files = std::fs::read_dir(relay.data().join("blobs"))
        .unwrap()
        .count();
    let slowest = times.iter().max().unwrap();
    println!("20,000 empty files: {blob_files} blob files; 1,000 granted and complete in at most {slowest:?}");
    // How long a grant takes is the bench's to measure, not a test's.
    assert_eq!(blob_files, 0);
    // Served as a ready batch (relay_process.rs downloads empty files).
    raw.send(Message::Fetch(Fetch {
        code: first.unwrap(),
    }));
    match raw.recv() {
        Reply::Manifest(m) => assert!(m.ready && m.files == 1000, "{m:?}"),
        other => panic!("{other:?}"),
    }
}
