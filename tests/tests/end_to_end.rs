//! The real `pickup-relay` and `pickup` processes over damaged links (see
//! `pickup_tests::e2e`): round trips over TCP and over a pseudo-terminal
//! serial line through seeded faulty adapters, a relay killed with SIGKILL
//! mid-upload and restarted, and `get` of unknown and expired codes.
//!
//! The CLI's own end-to-end tests (`cli_*.rs`) cover link cuts,
//! throttling and killing the *client*; these add corruption, lost and
//! duplicated bytes, the relay's crash, and code lifetimes.
#![cfg(unix)]

use std::path::Path;
use std::sync::atomic::Ordering;

use pickup_tests::both_backends;
use pickup_tests::e2e::faulty::{Cable, LinkFaults, Proxy};
use pickup_tests::e2e::{json, pickup, run, wait_for, write_random, Running, TempDir};
use pickup_tests::relay_process::RelayProcess;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Writes a batch: a random file of `big` bytes, a short text, an empty file.
fn batch(dir: &Path, big: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let a = dir.join("payload.bin");
    files.push(("payload.bin".to_owned(), write_random(&a, big, seed)));
    let text = b"pickup end-to-end\n".repeat(40);
    std::fs::write(dir.join("notes.txt"), &text).expect("write notes");
    files.push(("notes.txt".to_owned(), text));
    std::fs::write(dir.join("empty.dat"), b"").expect("write empty");
    files.push(("empty.dat".to_owned(), Vec::new()));
    files
}

fn assert_downloaded(out: &Path, files: &[(String, Vec<u8>)]) {
    for (name, content) in files {
        let got = std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == *content, "{name} differs from what was sent");
    }
}

fn send_json(state: &Path, relay: &str, src: &Path, files: &[(String, Vec<u8>)]) -> String {
    let mut cmd = pickup(state);
    cmd.args(["send", "--json", "--relay", relay]);
    for (name, _) in files {
        cmd.arg(src.join(name));
    }
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "send failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)["code"]
        .as_str()
        .expect("a code in send's JSON")
        .to_owned()
}

fn get_json(state: &Path, relay: &str, code: &str, dest: &Path) {
    let out = run(pickup(state).args([
        "get",
        "--json",
        "--relay",
        relay,
        code,
        "-o",
        dest.to_str().expect("utf-8 path"),
    ]));
    assert!(
        out.status.success(),
        "get failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn round_trip_over_tcp_through_a_proxy_that_corrupts_drops_and_cuts() {
    let dir = TempDir::new("tcp-faulty");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let files = batch(&src, 3 * MIB + 17, 1);
    let relay = RelayProcess::start();
    let faults = LinkFaults {
        flip: 2_000,
        drop: 2_000,
        duplicate: 2_000,
        cut_after: Some((256 * KIB as u64, 2 * MIB as u64)),
    };
    let proxy = Proxy::start(relay.port(), faults, 0xface);
    let code = send_json(&dir.path().join("up-state"), &proxy.addr(), &src, &files);
    let dest = dir.path().join("dest");
    get_json(&dir.path().join("down-state"), &proxy.addr(), &code, &dest);
    assert_downloaded(&dest, &files);
    let s = &proxy.stats;
    assert!(
        s.cuts.load(Ordering::Relaxed) >= 2
            && s.flipped.load(Ordering::Relaxed) >= 5
            && s.dropped.load(Ordering::Relaxed) >= 5,
        "the proxy did too little damage to prove anything: {}",
        s.summary()
    );
}

#[test]
fn round_trip_over_a_noisy_serial_line() {
    let dir = TempDir::new("serial-noisy");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let files = batch(&src, 200 * KIB + 3, 2);
    // About one fault of each kind per 50 KiB.
    let faults = LinkFaults {
        flip: 10_000,
        drop: 10_000,
        duplicate: 10_000,
        cut_after: None,
    };
    let cable = Cable::new(faults, 0x5e71a1);
    let relay = RelayProcess::builder()
        .serial(&format!("{}@115200", cable.relay_end))
        .start();
    let line = format!("serial:{}", cable.client_end);
    let code = send_json(&dir.path().join("up-state"), &line, &src, &files);
    let dest = dir.path().join("dest");
    get_json(&dir.path().join("down-state"), &line, &code, &dest);
    assert_downloaded(&dest, &files);
    let s = &cable.stats;
    assert!(
        s.flipped.load(Ordering::Relaxed) >= 3 && s.dropped.load(Ordering::Relaxed) >= 3,
        "the cable did too little damage to prove anything: {}",
        s.summary()
    );
    drop(relay);
}

/// Durable bytes of the batch and whether it is complete, as `pickup info` reports.
fn info_received(state: &Path, relay: &str, code: &str) -> Option<(u64, bool)> {
    let out = run(pickup(state).args(["info", "--json", "--relay", relay, code]));
    if !out.status.success() {
        return None;
    }
    let doc = json(&out);
    Some((doc["received"].as_u64()?, doc["ready"].as_bool()?))
}

both_backends! {
    fn relay_killed_mid_upload_keeps_durable_bytes_and_the_upload_resumes(backend: Backend) {
        let dir = TempDir::new("relay-kill");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        let files = batch(&src, 24 * MIB, 3);
        let mut relay = RelayProcess::builder().backend(&backend).start();
        // A clean but slow path (8 MiB/s) so the kill lands mid-upload.
        let proxy = Proxy::start(relay.port(), LinkFaults::default(), 3);
        proxy.rate.store(8 * MIB as u64, Ordering::SeqCst);
        let state = dir.path().join("up-state");
        let mut cmd = pickup(&state);
        cmd.args(["send", "--relay", &proxy.addr(), "--give-up-after", "150"]);
        for (name, _) in &files {
            cmd.arg(src.join(name));
        }
        let sender = Running::spawn(&mut cmd);
        // Without --json the code is the first line, printed at the grant.
        let code = sender.next_line();
        let info_state = dir.path().join("info-state");
        let (before, ready) = wait_for("upload progress at the relay", || {
            info_received(&info_state, &relay.tcp(), &code).filter(|(r, _)| *r >= 4 * MIB as u64)
        });
        relay.kill9();
        assert!(
            !ready,
            "the upload finished before the kill; nothing was tested"
        );
        relay.restart();
        // What the relay called durable before the kill is still there.
        let (after, _) = info_received(&info_state, &relay.tcp(), &code)
            .expect("the batch survives the relay's crash");
        assert!(
            after >= before,
            "the relay lost durable bytes in the crash: {before} before, {after} after"
        );
        proxy.rate.store(0, Ordering::SeqCst);
        let (status, _stdout, stderr) = sender.finish();
        assert!(
            status.success(),
            "the upload did not survive the relay's crash: {stderr}\nrelay log: {}",
            relay.log()
        );
        let dest = dir.path().join("dest");
        get_json(&dir.path().join("down-state"), &relay.tcp(), &code, &dest);
        assert_downloaded(&dest, &files);
    }
}
both_backends! {
    fn get_of_unknown_and_expired_codes_fails_cleanly_and_writes_nothing(backend: Backend) {
        let dir = TempDir::new("codes");
        let relay = RelayProcess::builder()
            .config("sweep_interval_secs = 1\n[codes]\nttl_secs = 2\nexpired_memory_secs = 3600\n")
            .backend(&backend)
            .start();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        let files = batch(&src, 10 * KIB, 4);
        let state = dir.path().join("state");
        let code = send_json(&state, &relay.tcp(), &src, &files);

        // Wait (bounded) until the relay says the code expired.
        let expired = wait_for("the code to expire", || {
            let out = run(pickup(&state).args(["info", "--relay", &relay.tcp(), &code]));
            (out.status.code() == Some(2)).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
        });
        assert!(expired.contains("expired"), "info: {expired}");
        let dest = dir.path().join("expired-dest");
        let out = run(pickup(&state)
            .args(["get", "--relay", &relay.tcp(), &code, "-o"])
            .arg(&dest));
        assert_eq!(out.status.code(), Some(2), "get of an expired code");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("expired"), "get: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "one line of error: {stderr}"
        );
        assert_no_files(&dest);

        // A well-formed code nobody was given.
        let dest = dir.path().join("unknown-dest");
        let out = run(pickup(&state)
            .args(["get", "--relay", &relay.tcp(), "7KQ4-M2XD-9RTA-H5NE", "-o"])
            .arg(&dest));
        assert_eq!(out.status.code(), Some(2), "get of an unknown code");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("unknown"), "get: {stderr}");
        assert_no_files(&dest);
    }
}

/// Nothing was written under `dir` (it may not even exist).
fn assert_no_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    assert!(
        names.is_empty(),
        "files written for a refused code: {names:?}"
    );
}
