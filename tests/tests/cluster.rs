//! Two relay instances of one `postgres` cluster (issue 16): one database,
//! one bucket, a data directory each, under load while each is killed.
//!
//! ```text
//!   8 × pickup send --relay PA,PB (or PB,PA) ──► proxy PA (throttled) ──► relay A ─┐
//!                                           └──► proxy PB (throttled) ──► relay B ─┴─► PostgreSQL + S3
//! ```
//!
//! The proxies stay up while the relay behind them is killed: a
//! connection to a dead instance is reset, as a dead host behind a port
//! forward would. Every phase waits (bounded) for progress measured at
//! whichever instance is up; both see every batch.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use pickup_tests::e2e::faulty::{LinkFaults, Proxy};
use pickup_tests::e2e::{json, pickup, run, same_file, wait_for, write_random, Running, TempDir};
use pickup_tests::relay_process::{Backend, RelayProcess};

const MIB: u64 = 1024 * 1024;
const CLIENTS: usize = 8;
/// Each client's file.
const SIZE: u64 = 64 * MIB;
/// Per connection and direction while instances are killed: slow enough
/// that every kill lands mid-upload.
const RATE: u64 = MIB;
/// Durable progress (all batches together) between two steps of the
/// kill schedule.
const STEP: u64 = 16 * MIB;

/// One `pickup send` of one file.
struct Client {
    send: Running,
    code: String,
    file: PathBuf,
}

/// Bytes durable over all `codes` and whether every batch is complete,
/// as the instance at `relay` answers `pickup info`; `None` if it cannot
/// answer for one of them.
fn progress(state: &Path, relay: &str, codes: &[&str]) -> Option<(u64, bool)> {
    let mut total = 0;
    let mut all_ready = true;
    for code in codes {
        let out = run(pickup(state).args(["info", "--json", "--relay", relay, code]));
        if !out.status.success() {
            return None;
        }
        let doc = json(&out);
        total += doc["received"].as_u64()?;
        all_ready &= doc["ready"].as_bool()?;
    }
    Some((total, all_ready))
}

/// Waits (bounded) until the instance at `relay` reports at least `at_least`
/// bytes durable over `codes`, with some batch still incomplete; returns
/// the bytes.
fn wait_for_progress(what: &str, state: &Path, relay: &str, codes: &[&str], at_least: u64) -> u64 {
    let (total, all_ready) = wait_for(what, || {
        progress(state, relay, codes).filter(|(total, _)| *total >= at_least)
    });
    assert!(
        !all_ready,
        "{what}: every upload finished before the step; the kills tested nothing"
    );
    eprintln!("{what}: {} MiB durable", total / MIB);
    total
}

#[test]
fn eight_uploads_survive_killing_each_instance_and_download_identical_from_the_other() {
    let Some(backend) = Backend::postgres(
        "eight_uploads_survive_killing_each_instance_and_download_identical_from_the_other",
    ) else {
        return;
    };
    let mut a = RelayProcess::builder().backend(&backend).start();
    let mut b = RelayProcess::builder().backend(&backend).start();
    assert_ne!(a.data(), b.data());
    let pa = Proxy::start(a.port(), LinkFaults::default(), 1);
    let pb = Proxy::start(b.port(), LinkFaults::default(), 2);
    pa.rate.store(RATE, Ordering::SeqCst);
    pb.rate.store(RATE, Ordering::SeqCst);

    let work = TempDir::new("cluster");
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let file = work.path().join(format!("upload-{i}.bin"));
            write_random(&file, SIZE as usize, 100 + i as u64);
            // Half the clients start on A, half on B.
            let relays = if i % 2 == 0 {
                format!("{},{}", pa.addr(), pb.addr())
            } else {
                format!("{},{}", pb.addr(), pa.addr())
            };
            let send = Running::spawn(
                pickup(&work.path().join(format!("state-{i}")))
                    .args(["send", "--relay", &relays, "--give-up-after", "150"])
                    .arg(&file),
            );
            // Without --json the code is the first line, printed at the grant.
            let code = send.next_line();
            Client { send, code, file }
        })
        .collect();
    let codes: Vec<&str> = clients.iter().map(|c| c.code.as_str()).collect();
    let info = work.path().join("info-state");

    // Kill A once some of the uploads is durable; B sees it all.
    let at = wait_for_progress("progress before killing A", &info, &a.tcp(), &codes, STEP);
    a.kill9();
    let at = wait_for_progress("progress with A down", &info, &b.tcp(), &codes, at + STEP);
    a.restart();
    let at = wait_for_progress(
        "progress after A's restart",
        &info,
        &a.tcp(),
        &codes,
        at + STEP,
    );
    b.kill9();
    wait_for_progress("progress with B down", &info, &a.tcp(), &codes, at + STEP);
    b.restart();

    // The kills are done: full speed to the end.
    pa.rate.store(0, Ordering::SeqCst);
    pb.rate.store(0, Ordering::SeqCst);
    let mut files = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (status, _, err) = client.send.finish();
        assert!(
            status.success(),
            "client {i} did not complete: {err}\nA: {}\nB: {}",
            a.log(),
            b.log()
        );
        files.push((client.code, client.file));
    }
    // Both instances resumed uploads begun on the other.
    for (name, relay) in [("A", &a), ("B", &b)] {
        assert!(
            relay.log().contains("upload resumed"),
            "{name} resumed no upload: {}",
            relay.log()
        );
    }

    // Each batch from the instance its client did not list first (even
    // clients started on A: they download from B), all at once.
    let gets: Vec<(Running, PathBuf, &PathBuf)> = files
        .iter()
        .enumerate()
        .map(|(i, (code, file))| {
            let from = if i % 2 == 0 { b.tcp() } else { a.tcp() };
            let dest = work.path().join(format!("dest-{i}"));
            let get = Running::spawn(pickup(&work.path().join(format!("get-{i}"))).args([
                "get",
                "--json",
                "--relay",
                &from,
                code,
                "-o",
                dest.to_str().unwrap(),
            ]));
            (get, dest, file)
        })
        .collect();
    for (get, dest, file) in gets {
        let (status, _, err) = get.finish();
        assert!(status.success(), "get into {dest:?}: {err}");
        let name = file.file_name().unwrap();
        assert!(same_file(file, &dest.join(name)), "{dest:?} differs");
    }
}
