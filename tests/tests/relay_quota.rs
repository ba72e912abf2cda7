//! The real `pickup-relay` against peers that declare and never send
//! (issue 20, items 2 and 3): declared bytes do not lock out other
//! peers, stalled reservations are released, one address cannot take the
//! batch slots, incomplete batches without progress expire soon, and
//! `pickup send` says why it waits. Peers are told apart by source
//! address (127.0.0.2 and up are loopback on Linux). Limits are small so
//! that each test takes seconds; every wait is bounded in count and time.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use pickup_proto::message::{Fetch, Message, Resume, ResumeToken};
use pickup_proto::{Code, ErrorCode, Sha1Digest};
use pickup_tests::e2e::{pickup, TempDir};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::*;

const MIB: u64 = 1 << 20;

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// The relay's first answer to an announcement (or a resume) from a fresh
/// connection of `from`: a grant or an error.
fn ask(addr: SocketAddr, from: u8, what: impl FnOnce(&mut Raw)) -> Reply {
    let mut raw = Raw::connect_from(addr, loopback(from));
    raw.hello();
    what(&mut raw);
    for _ in 0..16 {
        match raw.recv() {
            r @ (Reply::Grant(_) | Reply::Error(..) | Reply::Manifest(_)) => return r,
            _ => continue,
        }
    }
    panic!("no grant, manifest or error")
}

/// A batch of `files` files of `size` bytes each, announced by `from`.
fn declare(addr: SocketAddr, from: u8, files: usize, size: u64) -> Reply {
    let list: Vec<(String, u64, Sha1Digest)> = (0..files)
        .map(|i| (format!("f{i}"), size, Sha1Digest([i as u8 + 1; 20])))
        .collect();
    ask(addr, from, |raw| raw.announce(&list))
}

fn short(r: &Reply) -> String {
    match r {
        Reply::Grant(_) => "Grant".into(),
        Reply::Error(code, wait) => format!("{code:?}({wait} ms)"),
        Reply::Manifest(m) if m.ready => "Manifest(ready)".into(),
        Reply::Manifest(_) => "Manifest(not ready)".into(),
        other => format!("{other:?}"),
    }
}

/// Figure (a): before, four announced batches of two 4 GiB files locked
/// every later upload out with `Quota` (here, scaled: 2 × 1 MiB batches
/// against a 4 MiB quota). Now the declaring address is held to its
/// share (`PeerQuota`) and an honest upload from another address succeeds.
#[test]
fn declared_but_unsent_batches_do_not_lock_out_another_address() {
    let relay = RelayProcess::builder()
        .config(
            "[limits]\nmax_file_size = 1048576\nmax_batch_size = 2097152\ndisk_quota = 4194304\n",
        )
        .start();
    let attacker: Vec<String> = (0..4)
        .map(|_| short(&declare(relay.addr(), 2, 2, MIB)))
        .collect();
    let content = bytes(MIB as usize, 7);
    let up = upload_tcp(relay.addr(), &[("honest.bin", content.clone())], None);
    println!(
        "attacker's 4 batches of 2 × 1 MiB: {attacker:?}; honest 1 MiB upload complete: {}",
        up.complete()
    );
    assert_eq!(attacker[0], "Grant");
    for r in &attacker[1..] {
        assert!(r.starts_with("PeerQuota("), "{attacker:?}");
    }
    assert!(up.complete(), "{:?}\n{}", up.events, relay.log());
    let got = download_tcp(relay.addr(), up.code()).unwrap();
    assert!(got.files[0] == content);
}

/// Figure (b): a reservation whose upload sends nothing is released
/// after `reservation_timeout_secs`, and the stalled upload must reserve
/// again to resume, which the quota may then refuse.
#[test]
fn stalled_reservations_are_released_after_the_timeout() {
    let relay = RelayProcess::builder()
        .config(
            "sweep_interval_secs = 1\n[limits]\nmax_file_size = 4194304\nmax_batch_size = 4194304\n\
             disk_quota = 4194304\nmax_reserved_per_peer = 4194304\nreservation_timeout_secs = 2\n",
        )
        .start();
    let Reply::Grant(stalled) = declare(relay.addr(), 2, 1, 4 * MIB) else {
        panic!("the first batch is admitted");
    };
    let first = declare(relay.addr(), 3, 1, MIB);
    assert!(
        matches!(first, Reply::Error(ErrorCode::Quota, wait) if wait > 0),
        "{first:?}"
    );
    let start = Instant::now();
    let mut tries = 0;
    let admitted = loop {
        tries += 1;
        match declare(relay.addr(), 3, 1, MIB) {
            Reply::Grant(_) => break true,
            Reply::Error(ErrorCode::Quota, _) if tries < 60 => {
                thread::sleep(Duration::from_millis(250))
            }
            _ => break false,
        }
    };
    let took = start.elapsed();
    println!(
        "stalled 4 MiB reservation: another address refused with {}, admitted after {took:?} ({tries} tries)",
        short(&first)
    );
    assert!(admitted, "never released:\n{}", relay.log());
    // The stalled upload resumes: its 4 MiB no longer fit.
    let token: ResumeToken = stalled.token;
    let resumed = ask(relay.addr(), 2, |raw| {
        raw.send(Message::Resume(Resume { token }))
    });
    println!("the stalled upload resuming: {}", short(&resumed));
    assert!(
        matches!(resumed, Reply::Error(ErrorCode::Quota, _)),
        "{resumed:?}"
    );
}

/// Figure (c): before, one address filled `max_live_batches` with
/// never-uploaded batches and every other got `Busy`. Now it gets
/// `TooManyIncomplete` past its incomplete batches and `RateLimited`
/// past its creation rate, while another address still creates batches.
#[test]
fn one_address_cannot_take_the_batch_slots() {
    let relay = RelayProcess::builder()
        .config(
            "[limits]\nmax_live_batches = 20\nmax_incomplete_batches_per_peer = 4\n\
             new_batch_burst_per_peer = 6\nnew_batches_per_hour_per_peer = 60\n",
        )
        .start();
    let incomplete: Vec<String> = (0..8)
        .map(|_| short(&declare(relay.addr(), 2, 1, 1)))
        .collect();
    // Batches of one empty file are complete at once: only the rate stops them.
    let empty = [("e", 0, Sha1Digest::EMPTY)];
    let complete: Vec<String> = (0..8)
        .map(|_| short(&ask(relay.addr(), 3, |raw| raw.announce(&empty))))
        .collect();
    println!("one-byte batches from one address: {incomplete:?}");
    println!("empty batches from another: {complete:?}");
    assert!(
        incomplete[..4].iter().all(|r| r == "Grant"),
        "{incomplete:?}"
    );
    assert!(
        incomplete[4..]
            .iter()
            .all(|r| r.starts_with("TooManyIncomplete(")),
        "{incomplete:?}"
    );
    assert!(complete[..6].iter().all(|r| r == "Grant"), "{complete:?}");
    assert!(
        complete[6..].iter().all(|r| r.starts_with("RateLimited(")),
        "{complete:?}"
    );
    let up = upload_tcp(relay.addr(), &[("honest.bin", bytes(1000, 3))], None);
    assert!(up.complete(), "{:?}\n{}", up.events, relay.log());
}

/// Figure (d): before, a never-uploaded batch lived for the codes' whole
/// lifetime (24 h). Now it expires after `incomplete_ttl_secs` without
/// progress, and its address may create batches again.
#[test]
fn incomplete_batches_without_progress_expire_after_the_incomplete_ttl() {
    let relay = RelayProcess::builder()
        .config(
            "sweep_interval_secs = 1\n[limits]\nmax_incomplete_batches_per_peer = 1\n\
             incomplete_ttl_secs = 2\n",
        )
        .start();
    let Reply::Grant(g) = declare(relay.addr(), 2, 1, 1000) else {
        panic!("the first batch is admitted");
    };
    let second = declare(relay.addr(), 2, 1, 1000);
    assert!(
        matches!(second, Reply::Error(ErrorCode::TooManyIncomplete, _)),
        "{second:?}"
    );
    let fetch = |code: Code| {
        ask(relay.addr(), 5, |raw| {
            raw.send(Message::Fetch(Fetch { code }))
        })
    };
    assert_eq!(short(&fetch(g.code)), "Manifest(not ready)");
    let start = Instant::now();
    let mut seen = Vec::new();
    for _ in 0..40 {
        let r = short(&fetch(g.code));
        if seen.last() != Some(&r) {
            seen.push(r.clone());
        }
        if r.starts_with("Expired(") {
            break;
        }
        thread::sleep(Duration::from_millis(250));
    }
    let took = start.elapsed();
    println!("an untouched incomplete batch: {seen:?}, expired after {took:?}");
    assert!(
        seen.last().is_some_and(|r| r.starts_with("Expired(")),
        "{seen:?}\n{}",
        relay.log()
    );
    assert_eq!(short(&declare(relay.addr(), 2, 1, 1000)), "Grant");
}

/// Figure (e): before, `pickup send` to a relay answering `Busy` waited
/// without a word. Now it prints why it waits and what the relay said.
#[test]
fn pickup_send_says_why_it_waits() {
    let relay = RelayProcess::builder()
        .config("[limits]\nmax_live_batches = 1\n")
        .start();
    // Another address takes the one batch slot.
    assert_eq!(short(&declare(relay.addr(), 2, 1, 1000)), "Grant");
    let work = TempDir::new("relay-quota");
    let file = work.path().join("letter.txt");
    std::fs::write(&file, b"dear relay").unwrap();
    let mut child = pickup(&work.path().join("state"))
        .args(["send", "--relay", &relay.tcp(), file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let line = rx.recv_timeout(Duration::from_secs(20));
    let took = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    println!("pickup send against a full relay printed {line:?} after {took:?}");
    let line = line.expect("pickup send said nothing within 20 s");
    assert!(line.contains("relay is busy"), "{line}");
    assert!(line.contains("60.0 s"), "{line}");
}
