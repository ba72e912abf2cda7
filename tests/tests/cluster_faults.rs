//! Relays of one `postgres` cluster (issue 16) under the faults a shared
//! PostgreSQL + S3 deployment meets: the database restarted, the object
//! store frozen, a download from one instance of a batch still arriving
//! at another.
//!
//! ```text
//!   pickup send ──► throttling proxy ──► relay A ─┐
//!   pickup get  ──────────────────────► relay B ─┴─► PostgreSQL + S3 (moto)
//! ```
//!
//! Real binaries on loopback; a test that restarts or freezes a server
//! starts a private one. Every wait is bounded ([`PATIENCE`](pickup_tests::e2e::PATIENCE)
//! through `wait_for`, `run` and `Running::finish`). Without PostgreSQL or
//! moto a test skips with one `skipped:` line.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use pickup_test_servers::{require, Postgres, S3};
use pickup_tests::e2e::faulty::{LinkFaults, Proxy};
use pickup_tests::e2e::{
    pickup, received, resume_states, run, run_json, same_file, stderr, wait_for, write_random,
    Running, TempDir,
};
use pickup_tests::relay_process::{Backend, RelayProcess};

const MIB: u64 = 1024 * 1024;
/// Large enough that the throttled upload is still running when the fault
/// comes.
const SIZE: u64 = 32 * MIB;
/// Throttle of the upload: 32 MiB take 16 s.
const SLOW: u64 = 2 * MIB;
/// The fault comes once this much of the upload is at the relay.
const PROGRESS: u64 = 2 * MIB;

/// A throttled `pickup send -v --relay RELAYS FILE` of a fresh `SIZE`-byte
/// file (state in `work/state`), once `relay` (the one behind the first
/// reachable address) holds `PROGRESS` bytes of it: the running send, its
/// code and the file.
fn send_under_way(
    work: &TempDir,
    relays: &str,
    relay: &RelayProcess,
    seed: u64,
) -> (Running, String, PathBuf) {
    let state = work.path().join("state");
    let file = work.path().join("video.mp4");
    write_random(&file, SIZE as usize, seed);
    let send = Running::spawn(
        pickup(&state)
            .args(["send", "-v", "--relay", relays])
            .arg(&file),
    );
    // The code is printed as soon as the relay grants the batch.
    let code = send.next_line();
    let addr = relay.tcp();
    wait_for("upload progress at the relay", || {
        received(&state, &addr, &code).filter(|r| *r >= PROGRESS)
    });
    (send, code, file)
}

/// `pickup get --json --relay RELAY CODE -o work/DEST`; asserts the file
/// `name` came back byte-identical to `file`.
fn get_identical(work: &TempDir, relay: &RelayProcess, code: &str, file: &Path, dest: &str) {
    let dest = work.path().join(dest);
    run_json(pickup(&work.path().join("state")).args([
        "get",
        "--json",
        "--relay",
        &relay.tcp(),
        code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    let name = file.file_name().unwrap();
    assert!(same_file(file, &dest.join(name)), "{dest:?}");
}

/// (1) PostgreSQL restarted (fast shutdown: every connection closed)
/// while an upload runs: the relay reconnects to it, the upload completes
/// with the same code, and the file comes back byte-identical.
#[test]
fn an_upload_survives_a_postgres_restart() {
    let test = "an_upload_survives_a_postgres_restart";
    let Some(pg) = require(test, Postgres::start()) else {
        return;
    };
    let Some(s3) = require(test, S3::shared()) else {
        return;
    };
    let backend = Backend::Postgres {
        url: pg.database().unwrap(),
        bucket: s3.bucket().unwrap(),
    };
    let relay = RelayProcess::builder().backend(&backend).start();
    let proxy = Proxy::start(relay.port(), LinkFaults::default(), 1);
    proxy.rate.store(SLOW, Ordering::SeqCst);
    let work = TempDir::new("cluster-faults");
    let (send, code, file) = send_under_way(&work, &proxy.addr(), &relay, 1);

    pg.restart().unwrap();
    let (status, out, err) = send.finish();
    assert_eq!(status.code(), Some(0), "{err}\nrelay log:\n{}", relay.log());
    assert!(out.contains(&code) || out.is_empty(), "{out}");
    assert_eq!(resume_states(&work.path().join("state")), 0, "{err}");
    get_identical(&work, &relay, &code, &file, "dest");
}

/// (2) The S3 server frozen for 10 s while an upload runs: the client
/// waits, nothing acknowledged is lost, the upload completes and the file
/// comes back byte-identical. A download of another, complete batch
/// started during the freeze either waits and succeeds or fails; whatever
/// it wrote is the batch's bytes.
#[test]
fn an_upload_survives_a_frozen_object_store() {
    let test = "an_upload_survives_a_frozen_object_store";
    let Some(s3) = require(test, S3::start()) else {
        return;
    };
    let Some(pg) = require(test, Postgres::shared()) else {
        return;
    };
    let backend = Backend::Postgres {
        url: pg.database().unwrap(),
        bucket: s3.bucket().unwrap(),
    };
    let relay = RelayProcess::builder().backend(&backend).start();
    let work = TempDir::new("cluster-faults");
    let state = work.path().join("state");

    // A complete batch, to download while the store is frozen.
    let other = work.path().join("other.bin");
    write_random(&other, (4 * MIB) as usize, 7);
    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&other),
    );
    let other_code = sent["code"].as_str().unwrap().to_owned();

    let proxy = Proxy::start(relay.port(), LinkFaults::default(), 2);
    proxy.rate.store(SLOW, Ordering::SeqCst);
    let (send, code, file) = send_under_way(&work, &proxy.addr(), &relay, 2);

    s3.pause().unwrap();
    let during = work.path().join("during");
    let get = Running::spawn(pickup(&state).args([
        "get",
        "--relay",
        &relay.tcp(),
        &other_code,
        "-o",
        during.to_str().unwrap(),
    ]));
    std::thread::sleep(Duration::from_secs(10));
    s3.resume().unwrap();

    let (status, out, err) = send.finish();
    assert_eq!(status.code(), Some(0), "{err}\nrelay log:\n{}", relay.log());
    assert!(out.contains(&code) || out.is_empty(), "{out}");
    assert_eq!(resume_states(&state), 0, "{err}");

    let (got, _, got_err) = get.finish();
    let written = during.join("other.bin");
    if got.success() {
        assert!(same_file(&other, &written), "{got_err}");
    } else {
        assert!(!got_err.contains("panicked"), "{got_err}");
        assert!(
            !written.exists(),
            "a failed get left {written:?}: {got_err}"
        );
    }
    // Whatever the download during the freeze did, nothing partial stays
    // beside the result.
    if during.exists() {
        for entry in std::fs::read_dir(&during).unwrap().flatten() {
            let path = entry.path();
            assert!(
                path == written
                    || path
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".pickup-"),
                "unexpected {path:?}"
            );
        }
    }

    get_identical(&work, &relay, &code, &file, "dest");
    get_identical(&work, &relay, &other_code, &other, "other-dest");
}

/// (3) A download from instance B of a batch still being uploaded through
/// instance A: without `--wait` it is refused as not ready (exit 2,
/// nothing written); with `--wait` it waits, and once the upload completes
/// B serves the file byte-identical.
#[test]
fn a_batch_still_uploading_elsewhere_is_not_ready_then_served() {
    let Some(backend) =
        Backend::postgres("a_batch_still_uploading_elsewhere_is_not_ready_then_served")
    else {
        return;
    };
    let first = RelayProcess::builder().backend(&backend).start();
    let second = RelayProcess::builder().backend(&backend).start();
    let work = TempDir::new("cluster-faults");
    let state = work.path().join("state");
    let proxy = Proxy::start(first.port(), LinkFaults::default(), 6);
    proxy.rate.store(SLOW, Ordering::SeqCst);
    let (send, code, file) = send_under_way(&work, &proxy.addr(), &first, 6);

    let early = work.path().join("early");
    let out = run(pickup(&state).args([
        "get",
        "--relay",
        &second.tcp(),
        &code,
        "-o",
        early.to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the batch is still being uploaded (use --wait to wait for it)"),
        "{}",
        stderr(&out)
    );
    assert!(!early.exists(), "{} left behind", early.display());

    let waited = work.path().join("waited");
    let get = Running::spawn(pickup(&state).args([
        "get",
        "--wait",
        "--relay",
        &second.tcp(),
        &code,
        "-o",
        waited.to_str().unwrap(),
    ]));
    let (status, _, err) = send.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    let (got, _, got_err) = get.finish();
    assert_eq!(got.code(), Some(0), "{got_err}");
    assert!(
        got_err.contains("waiting: the batch is still being uploaded"),
        "{got_err}"
    );
    assert!(same_file(&file, &waited.join("video.mp4")));
}

/// Copies the files of directory `from` into a new directory `to` (the
/// CLI's state: resume records, family tokens), keeping their modes.
fn copy_state(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// (4) Two clients resume the same token on two instances at once (one
/// resume state copied, as a user who ran the same interrupted send from
/// two shells might): the later resume takes the upload; the earlier
/// client is told so and stops with a clear error (exit 2) instead of
/// taking it back, and the other completes it. The file comes back
/// byte-identical from both instances.
#[test]
fn two_clients_resuming_one_token_on_two_instances_end_with_one_winner() {
    let Some(backend) =
        Backend::postgres("two_clients_resuming_one_token_on_two_instances_end_with_one_winner")
    else {
        return;
    };
    let first = RelayProcess::builder().backend(&backend).start();
    let second = RelayProcess::builder().backend(&backend).start();
    let work = TempDir::new("cluster-faults");
    // Both clients dial the same address (the resume record is per
    // address): the proxy sends new connections to A, then to B.
    let proxy = Proxy::start(first.port(), LinkFaults::default(), 8);
    proxy.rate.store(SLOW, Ordering::SeqCst);
    let (interrupted, code, file) = send_under_way(&work, &proxy.addr(), &first, 8);
    interrupted.kill();
    let state = work.path().join("state");
    let twin = work.path().join("twin-state");
    copy_state(&state, &twin);
    assert_eq!(resume_states(&twin), 1);

    let resume = |state: &Path| {
        Running::spawn(
            pickup(state)
                .args(["send", "-v", "--relay", &proxy.addr()])
                .arg(&file),
        )
    };
    // The code is printed once the relay has answered the resume.
    let at_first = resume(&state);
    assert_eq!(at_first.next_line(), code);
    proxy.retarget(second.port());
    let at_second = resume(&twin);
    assert_eq!(at_second.next_line(), code);

    let (lost, _, lost_err) = at_first.finish();
    let (won, _, won_err) = at_second.finish();
    assert_eq!(won.code(), Some(0), "{won_err}");
    assert_eq!(lost.code(), Some(2), "{lost_err}");
    assert_eq!(
        lost_err.lines().last().unwrap_or_default(),
        format!(
            "pickup: error: another connection resumed this upload at tcp://{} (the same resume state used by two runs?); this run stops and the other one goes on",
            proxy.addr()
        ),
        "{lost_err}"
    );
    assert!(!lost_err.contains("panicked"), "{lost_err}");
    // The winner's record is gone; the loser's stays for a later run.
    assert_eq!(resume_states(&twin), 0);
    assert_eq!(resume_states(&state), 1);
    assert!(
        first.log().contains("upload taken over by a newer session"),
        "{}",
        first.log()
    );
    get_identical(&work, &second, &code, &file, "from-second");
    get_identical(&work, &first, &code, &file, "from-first");
}
