//! What the CLI says about the link while a transfer recovers and resumes
//! (issue 18, item 7): after a reconnect the "retry #N" state ends once
//! bytes flow again, and a resumed `get` reports this run's bytes and rate,
//! not the whole file's. The real `pickup` and `pickup-relay` binaries,
//! through a proxy that cuts or paces the link and counts what crosses it.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;

use pickup_tests::e2e::faulty::{LinkFaults, Proxy};
use pickup_tests::e2e::{
    partial_name, pickup, run, run_json, same_file, stderr, write_random, TempDir,
};
use pickup_tests::relay_process::RelayProcess;

const MIB: u64 = 1024 * 1024;

/// The link lines of a `-v` run's stderr: each reconnect ("reconnecting
/// in") and each end of one ("link restored"), in order.
fn link_lines(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.starts_with("reconnecting in") || l.starts_with("link restored"))
        .collect()
}

/// Every reconnect is followed by a "link restored" once bytes flow again,
/// and the last link line is one: no retry state outlives the recovery.
fn assert_recovered(what: &str, err: &str) {
    let lines = link_lines(err);
    assert!(
        lines.iter().any(|l| l.starts_with("reconnecting in")),
        "{what}: the link never dropped: {err}"
    );
    assert!(
        lines.last().is_some_and(|l| l.starts_with("link restored")),
        "{what}: the retry state outlived the recovery: {lines:?}"
    );
    for pair in lines.windows(2) {
        if let [a, b] = pair {
            // A failed attempt may follow another; a restored link is
            // never said twice without a drop in between.
            assert!(
                !(a.starts_with("link restored") && b.starts_with("link restored")),
                "{what}: {lines:?}"
            );
        }
    }
}

/// Item 7: a send and a get through a link cut every 3 MiB complete, and
/// each drop ends, once the transfer flows again, with "link restored"
/// (where the bar's "retry #N" label goes back to "sending"/"receiving").
#[test]
fn after_a_reconnect_the_retry_state_ends_once_bytes_flow_again() {
    let relay = RelayProcess::start();
    let proxy = Proxy::start(
        relay.port(),
        LinkFaults {
            cut_after: Some((3 * MIB, 3 * MIB)),
            ..LinkFaults::default()
        },
        5,
    );
    let work = TempDir::new("cli-link-feedback");
    let state = work.path().join("state");
    let a = work.path().join("a.bin");
    // Not a multiple of the cut: the last connection carries data.
    write_random(&a, (10 * MIB + MIB / 2) as usize, 41);

    let out = run(pickup(&state)
        .args(["send", "--json", "-v", "--relay", &proxy.addr()])
        .arg(&a));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(proxy.stats.cuts.load(Ordering::SeqCst) >= 2, "{err}");
    assert_recovered("send", &err);
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let code = sent["code"].as_str().unwrap().to_string();

    let dest = work.path().join("dest");
    let out = run(pickup(&state).args([
        "get",
        "--json",
        "-v",
        "--relay",
        &proxy.addr(),
        &code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_recovered("get", &err);
    assert!(same_file(&a, &dest.join("a.bin")));
}

/// Item 7: a `get` that resumes a file of which most was fetched before
/// reports the bytes of this run and their rate: the bytes match what
/// crossed the proxy, and the rate is no faster than the proxy lets bytes
/// through (a rate from the whole file would be eight times that).
#[test]
fn a_resumed_get_reports_the_rate_of_this_runs_bytes() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-link-feedback");
    let state = work.path().join("state");
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let size = 16 * MIB;
    let body = write_random(&src.join("movie.bin"), size as usize, 42);
    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(src.join("movie.bin")),
    );
    let code = sent["code"].as_str().unwrap().to_string();

    // What an interrupted earlier run left: all but the last 2 MiB.
    let kept = size - 2 * MIB;
    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(
        dest.join(partial_name("movie.bin", &body)),
        &body[..kept as usize],
    )
    .unwrap();

    // Paced, so this run's rate is known: 4 MiB/s towards the client.
    let limit = 4 * MIB;
    let proxy = Proxy::start(relay.port(), LinkFaults::default(), 6);
    proxy.rate.store(limit, Ordering::SeqCst);
    let out = run(pickup(&state).args([
        "get",
        "--json",
        "-v",
        "--relay",
        &proxy.addr(),
        &code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(same_file(&src.join("movie.bin"), &dest.join("movie.bin")));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fetched = doc["fetched"].as_u64().unwrap();
    let rate = doc["rate"].as_u64().unwrap();
    let elapsed_ms = doc["elapsed_ms"].as_u64().unwrap();
    assert_eq!(doc["files"][0]["reused"].as_u64(), Some(kept), "{doc}");
    assert_eq!(fetched, size - kept, "{doc}");

    // The bytes are those that crossed the wire: frames add a little.
    let down = proxy.stats.down.load(Ordering::SeqCst);
    assert!(
        down >= fetched && down < fetched + fetched / 10 + 64 * 1024,
        "fetched {fetched}, the proxy carried {down}"
    );
    // The rate is this run's bytes over this run's time ...
    assert!(elapsed_ms > 0, "{doc}");
    let expected = fetched * 1000 / elapsed_ms;
    assert!(rate.abs_diff(expected) <= 1, "{doc}");
    // ... so no faster than the proxy let them through (with slack for
    // the pacing's granularity), where the whole file's would be 8x.
    assert!(
        rate <= limit + limit / 2,
        "{rate} B/s through a {limit} B/s link: {doc}"
    );
    assert!(
        err.contains("received 2.00 MiB in ")
            && err.contains("; 14.00 MiB kept from an earlier run"),
        "{err}"
    );
}
