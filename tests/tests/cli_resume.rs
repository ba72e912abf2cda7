//! An interrupted `pickup send` or `pickup get` (the process killed
//! mid-transfer) continues where it stopped when run again.
//!
//! A throttling proxy between client and relay makes sure the kill lands
//! mid-transfer; progress is observed (relay manifest, temporary file size)
//! before the kill, and the rerun is checked to move only the missing bytes.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;

use pickup_tests::e2e::faulty::{LinkFaults, Proxy};
use pickup_tests::e2e::{
    pickup, received, resume_states, run, run_json, same_file, stderr, wait_for, write_random,
    Running, TempDir,
};
use pickup_tests::relay_process::RelayProcess;

const SIZE: u64 = 64 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;
/// Throttle while waiting to kill: 64 MiB would take 16 s.
const SLOW: u64 = 4 * MIB;
/// Killed once this much is durable / written.
const PROGRESS: u64 = 8 * MIB;
/// What may be in flight and lost at the kill (the relay's TCP window is
/// 4 MiB), plus socket buffers.
const SLACK: u64 = 8 * MIB;

#[test]
fn send_resumes_after_the_process_is_killed() {
    let relay = RelayProcess::start();
    let proxy = Proxy::start(relay.port(), LinkFaults::default(), 1);
    proxy.rate.store(SLOW, Ordering::SeqCst);
    let work = TempDir::new("cli-resume");
    let state = work.path().join("state");
    let file = work.path().join("video.mp4");
    write_random(&file, SIZE as usize, 11);

    let first = Running::spawn(
        pickup(&state)
            .args(["send", "--relay", &proxy.addr()])
            .arg(&file),
    );
    // The code is printed as soon as the relay grants the batch.
    let code = first.next_line();
    let durable = wait_for("upload progress at the relay", || {
        received(&state, &relay.tcp(), &code).filter(|r| *r >= PROGRESS)
    });
    first.kill();
    let at_kill = received(&state, &relay.tcp(), &code).unwrap();
    assert!(at_kill >= durable && at_kill < SIZE, "{at_kill}");
    assert_eq!(resume_states(&state), 1, "resume state kept");

    // Meanwhile the batch cannot be downloaded yet, and nothing is written.
    let early = work.path().join("early");
    let out = run(pickup(&state).args([
        "get",
        "--relay",
        &relay.tcp(),
        &code,
        "-o",
        early.to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("still being uploaded"),
        "{}",
        stderr(&out)
    );
    // Nothing written, and the directory it made for `-o` is gone again
    // (issue 18, item 6).
    assert!(!early.exists(), "{} left behind", early.display());

    proxy.rate.store(0, Ordering::SeqCst);
    let up_before = proxy.stats.up.load(Ordering::SeqCst);
    let second = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &proxy.addr()])
            .arg(&file),
    );
    assert_eq!(second["code"], code.as_str(), "same batch, same code");
    assert_eq!(second["resumed"], true);
    let sent_again = proxy.stats.up.load(Ordering::SeqCst) - up_before;
    assert!(
        sent_again < SIZE - at_kill + SLACK,
        "resent {sent_again} bytes of {SIZE}, {at_kill} were durable"
    );
    assert_eq!(resume_states(&state), 0, "state removed");

    let dest = work.path().join("dest");
    run_json(pickup(&state).args([
        "get",
        "--json",
        "--relay",
        &relay.tcp(),
        &code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    assert!(same_file(&file, &dest.join("video.mp4")));
}

#[test]
fn get_resumes_after_the_process_is_killed() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-resume");
    let state = work.path().join("state");
    let file = work.path().join("dataset.tar");
    write_random(&file, SIZE as usize, 12);
    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&file),
    );
    let code = sent["code"].as_str().unwrap().to_string();

    let proxy = Proxy::start(relay.port(), LinkFaults::default(), 1);
    proxy.rate.store(SLOW, Ordering::SeqCst);
    let dest = work.path().join("dest");
    // `pickup get`'s own temporary file: hidden, named by the entry.
    let temp = || {
        let found: Vec<_> = std::fs::read_dir(&dest)
            .ok()?
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with(".pickup-") && name.ends_with(".part")
            })
            .collect();
        assert!(found.len() <= 1, "{found:?}");
        found.into_iter().next()
    };
    let first = Running::spawn(pickup(&state).args([
        "get",
        "--relay",
        &proxy.addr(),
        &code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    let seen = wait_for("a partial download", || {
        std::fs::metadata(temp()?)
            .ok()
            .map(|m| m.len())
            .filter(|len| *len >= PROGRESS)
    });
    first.kill();
    assert!(!dest.join("dataset.tar").exists());
    let part = temp().unwrap();
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept >= seen && kept < SIZE);

    proxy.rate.store(0, Ordering::SeqCst);
    let down_before = proxy.stats.down.load(Ordering::SeqCst);
    let got = run_json(pickup(&state).args([
        "get",
        "--json",
        "--relay",
        &proxy.addr(),
        &code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    let reused = got["files"][0]["reused"].as_u64().unwrap();
    assert_eq!(reused, kept, "the whole partial file was reused");
    let fetched = proxy.stats.down.load(Ordering::SeqCst) - down_before;
    assert!(
        fetched < SIZE - kept + SLACK,
        "fetched {fetched} bytes of {SIZE}, {kept} were local"
    );
    assert!(same_file(&file, &dest.join("dataset.tar")));
    assert!(!part.exists());
}

#[test]
fn send_starts_over_when_the_relay_forgot_the_upload() {
    let relay = RelayProcess::start();
    let proxy = Proxy::start(relay.port(), LinkFaults::default(), 1);
    proxy.rate.store(MIB, Ordering::SeqCst);
    let work = TempDir::new("cli-resume");
    let state = work.path().join("state");
    let file = work.path().join("notes.bin");
    write_random(&file, (4 * MIB) as usize, 13);

    let first = Running::spawn(
        pickup(&state)
            .args(["send", "--relay", &proxy.addr()])
            .arg(&file),
    );
    let old_code = first.next_line();
    // The resume state is written when the relay grants the batch.
    wait_for("the resume state", || {
        (resume_states(&state) == 1).then_some(())
    });
    first.kill();

    // Same address, but a relay with empty storage behind it.
    let fresh = RelayProcess::start();
    proxy.retarget(fresh.port());
    proxy.rate.store(0, Ordering::SeqCst);
    drop(relay);
    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &proxy.addr()])
            .arg(&file),
    );
    assert_ne!(sent["code"], old_code.as_str());
    assert_eq!(sent["resumed"], false);
    assert_eq!(resume_states(&state), 0);
    let dest = work.path().join("dest");
    run_json(pickup(&state).args([
        "get",
        "--json",
        "--relay",
        &fresh.tcp(),
        sent["code"].as_str().unwrap(),
        "-o",
        dest.to_str().unwrap(),
    ]));
    assert!(same_file(&file, &dest.join("notes.bin")));
}
