//! `pickup --relay A,B` (issue 16, item 3): several relay addresses tried
//! in order, for relay instances without a load balancer or a fallback.
//!
//! Real binaries on loopback. "Closed" addresses are ports we bound and
//! closed (refused at once); a relay that dies mid-upload is a throttling
//! proxy dropped together with the relay behind it, so its address
//! refuses too. Every wait is bounded.
//!
//! What the failover tests saw: two relays cannot serve one data directory
//! at once (SQLite locking), so a second relay either has its own data (the
//! upload cannot continue there: a clear error, exit 2) or takes over the
//! data of one that died (the upload resumes there and completes). Relays
//! of one `postgres` cluster (one database, one bucket) share everything
//! but their data directories: the upload resumes on any of them.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pickup_tests::e2e::faulty::{LinkFaults, Proxy};
use pickup_tests::e2e::{
    pickup, pickup_bin, received, resume_states, run, run_json, same_file, stderr, wait_for,
    write_random, Running, TempDir,
};
use pickup_tests::relay_process::{Backend, RelayProcess};

const MIB: u64 = 1024 * 1024;
/// Large enough that the throttled upload is still running when the
/// relay is killed.
const SIZE: u64 = 32 * MIB;
/// Throttle while waiting to kill: 32 MiB would take 16 s.
const SLOW: u64 = 2 * MIB;
/// The relay is killed once this much is durable.
const PROGRESS: u64 = 2 * MIB;

/// A loopback port nothing listens on (one we bound and closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// (1) The first address refuses, the second is a relay: send and get both
/// go through the second, with nothing said about the first.
#[test]
fn a_refused_first_address_falls_through_to_the_next() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-relays");
    let state = work.path().join("state");
    let file = work.path().join("notes.txt");
    std::fs::write(&file, "remember the milk\n").unwrap();
    let relays = format!("127.0.0.1:{},{}", closed_port(), relay.tcp());

    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relays])
            .arg(&file),
    );
    let code = sent["code"].as_str().unwrap();
    assert_eq!(resume_states(&state), 0, "upload finished");

    // The environment variable takes the same list, spaces and all.
    let dest = work.path().join("dest");
    let out = run(pickup(&state)
        .env("PICKUP_RELAY", relays.replace(',', " , "))
        .args(["get", code, "-o", dest.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(same_file(&file, &dest.join("notes.txt")));
}

/// (2) No address connects: exit 4 at once (no reconnect backoff), one
/// line naming each address with its reason.
#[test]
fn all_addresses_refused_fail_at_once_naming_each() {
    let work = TempDir::new("cli-relays");
    let state = work.path().join("state");
    let file = work.path().join("x");
    std::fs::write(&file, b"x").unwrap();
    let (a, b) = (closed_port(), closed_port());
    let relays = format!("127.0.0.1:{a},tcp://127.0.0.1:{b}");
    let want = format!(
        "pickup: error: cannot reach any of the relays: tcp://127.0.0.1:{a}: connection refused; tcp://127.0.0.1:{b}: connection refused \u{2014} is `pickup-relay serve` running there?\n"
    );
    // Built (on first use) before the clock starts.
    pickup_bin();
    for args in [
        vec!["send", "--relay", &relays, file.to_str().unwrap()],
        vec!["info", "--relay", &relays, "7KQ4-M2XD-9RTA"],
        vec!["get", "--relay", &relays, "7KQ4-M2XD-9RTA"],
    ] {
        let started = Instant::now();
        let out = run(pickup(&state).args(&args));
        // The default policy would back off for about 48 s before giving up.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), want, "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // A bad element is a usage error naming which one.
    let out = run(pickup(&state).args(["info", "--relay", "127.0.0.1:1,,x", "7KQ4-M2XD-9RTA"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "pickup: error: relay address 2 of 3 is empty (a stray comma?)\n"
    );
}

/// Starts `pickup send --relay A,B FILE` with A a throttled proxy to
/// `first`, waits until `first` holds some of the upload, then kills it
/// and closes A. Returns the running send, its code and the file.
fn send_until_the_first_relay_dies(
    work: &TempDir,
    first: &mut RelayProcess,
    second: &str,
) -> (Running, String, std::path::PathBuf) {
    let state = work.path().join("state");
    let file = work.path().join("video.mp4");
    write_random(&file, SIZE as usize, 16);
    let proxy = Proxy::start(first.port(), LinkFaults::default(), 3);
    proxy.rate.store(SLOW, Ordering::SeqCst);
    let relays = format!("{},{second}", proxy.addr());
    let send = Running::spawn(
        pickup(&state)
            .args(["send", "-v", "--relay", &relays])
            .arg(&file),
    );
    // The code is printed as soon as the relay grants the batch.
    let code = send.next_line();
    let first_addr = first.tcp();
    wait_for("upload progress at the first relay", || {
        received(&state, &first_addr, &code).filter(|r| *r >= PROGRESS)
    });
    first.kill9();
    // Its address now refuses, as a dead host's would.
    drop(proxy);
    (send, code, file)
}

/// (3a) The relay serving an upload dies; the reconnect moves on to the
/// next address, a relay with its own data that does not know the upload:
/// the command ends with a clear error (exit 2), not a panic or endless
/// retrying, and keeps the resume state.
#[test]
fn an_upload_moved_to_a_relay_that_does_not_know_it_fails_clearly() {
    let mut first = RelayProcess::start();
    let second = RelayProcess::start();
    let work = TempDir::new("cli-relays");
    let (send, _code, _file) = send_until_the_first_relay_dies(&work, &mut first, &second.tcp());
    let (status, _, err) = send.finish();
    assert_eq!(status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "pickup: error: after reconnecting, the relay at tcp://{} does not know this upload (relays that do not share storage cannot resume each other's uploads); run again to resume or start over",
            second.tcp()
        ),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(resume_states(&work.path().join("state")), 1);
}

/// (3b) The relay serving an upload dies and another takes over its data
/// directory (started once the first is gone: two relays on one directory
/// at once are not supported) behind the list's second address. The
/// reconnect moves on to it and the upload resumes there: same code, and
/// the file comes back byte-identical.
#[test]
fn an_upload_resumes_on_the_next_address_when_it_serves_the_same_data() {
    let mut first = RelayProcess::start();
    let work = TempDir::new("cli-relays");
    // The second address: a proxy that resets connections until the
    // second relay is up behind it.
    let second_proxy = Proxy::start(closed_port(), LinkFaults::default(), 4);
    let (send, code, file) =
        send_until_the_first_relay_dies(&work, &mut first, &second_proxy.addr());
    let second = RelayProcess::builder().data(first.data()).start();
    second_proxy.retarget(second.port());

    let (status, out, err) = send.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.contains(&code) || out.is_empty(), "{out}");
    assert_eq!(resume_states(&work.path().join("state")), 0, "{err}");

    let state = work.path().join("state");
    let dest = work.path().join("dest");
    run_json(pickup(&state).args([
        "get",
        "--json",
        "--relay",
        &second.tcp(),
        &code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    assert!(same_file(&file, &dest.join("video.mp4")));
}

/// (3c) Two relays of one cluster (one PostgreSQL database, one bucket,
/// each its own data directory) both running: the one serving an upload
/// dies by `kill -9`, the reconnect moves on to the other, which takes the
/// upload over from what the first made durable (segments in S3, the hash
/// state in PostgreSQL) and completes it. The file comes back
/// byte-identical from the survivor, and from the first once restarted.
#[test]
fn an_upload_resumes_on_another_instance_of_the_cluster() {
    let Some(backend) = Backend::postgres("an_upload_resumes_on_another_instance_of_the_cluster")
    else {
        return;
    };
    let mut first = RelayProcess::builder().backend(&backend).start();
    let second = RelayProcess::builder().backend(&backend).start();
    assert_ne!(first.data(), second.data());
    let work = TempDir::new("cli-relays");
    let (send, code, file) = send_until_the_first_relay_dies(&work, &mut first, &second.tcp());
    let (status, out, err) = send.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.contains(&code) || out.is_empty(), "{out}");
    assert_eq!(resume_states(&work.path().join("state")), 0, "{err}");
    // The second relay continued from what the first made durable.
    let log = second.log();
    let resumed_at = log
        .lines()
        .filter(|l| l.contains("upload resumed"))
        .filter_map(|l| l.split("received=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .max();
    assert!(
        resumed_at.is_some_and(|r| r >= PROGRESS),
        "the second relay did not resume from the first's progress: {log}"
    );

    let state = work.path().join("state");
    first.restart();
    for (relay, dest) in [(&second, "from-second"), (&first, "from-first")] {
        let dest = work.path().join(dest);
        run_json(pickup(&state).args([
            "get",
            "--json",
            "--relay",
            &relay.tcp(),
            &code,
            "-o",
            dest.to_str().unwrap(),
        ]));
        assert!(same_file(&file, &dest.join("video.mp4")), "{dest:?}");
    }
}
