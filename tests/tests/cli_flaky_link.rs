//! A link that drops over and over: with automatic retransfer on, `send`
//! and `get` still complete without any user action; with it off, each run
//! fails with exit 4 and running again continues.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;

use pickup_tests::e2e::faulty::{LinkFaults, Proxy};
use pickup_tests::e2e::{pickup, run, run_json, same_file, stderr, write_random, TempDir};
use pickup_tests::relay_process::RelayProcess;

/// A clean link cut after every 3 MiB (both directions counted).
fn cut_every_3_mib() -> LinkFaults {
    LinkFaults {
        cut_after: Some((3 * MIB, 3 * MIB)),
        ..LinkFaults::default()
    }
}

const MIB: u64 = 1024 * 1024;

#[test]
fn transfers_complete_over_a_link_cut_every_3_mib() {
    let relay = RelayProcess::start();
    // More than the relay's largest ack step (PROTOCOL.md §5.4), so
    // every connection gets something durable through before the cut.
    let proxy = Proxy::start(relay.port(), cut_every_3_mib(), 1);
    let work = TempDir::new("cli-flaky");
    let state = work.path().join("state");
    let a = work.path().join("a.bin");
    let b = work.path().join("b.bin");
    write_random(&a, (10 * MIB) as usize, 21);
    write_random(&b, (2 * MIB + 3) as usize, 22);

    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "-v", "--relay", &proxy.addr()])
            .arg(&a)
            .arg(&b),
    );
    let code = sent["code"].as_str().unwrap().to_string();
    let upload_cuts = proxy.stats.cuts.load(Ordering::SeqCst);
    assert!(
        upload_cuts >= 3,
        "the proxy cut the upload {upload_cuts} times"
    );
    assert_eq!(sent["resumed"], false, "one run, no user action");

    let dest = work.path().join("dest");
    run_json(pickup(&state).args([
        "get",
        "--json",
        "--relay",
        &proxy.addr(),
        &code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    let download_cuts = proxy.stats.cuts.load(Ordering::SeqCst) - upload_cuts;
    assert!(
        download_cuts >= 3,
        "the proxy cut the download {download_cuts} times"
    );
    assert!(same_file(&a, &dest.join("a.bin")));
    assert!(same_file(&b, &dest.join("b.bin")));
}

#[test]
fn without_retransfer_a_cut_fails_and_the_next_run_continues() {
    let relay = RelayProcess::start();
    let proxy = Proxy::start(relay.port(), cut_every_3_mib(), 1);
    let work = TempDir::new("cli-flaky");
    let state = work.path().join("state");
    let a = work.path().join("a.bin");
    write_random(&a, (8 * MIB) as usize, 23);

    let mut runs = 0;
    let code = loop {
        runs += 1;
        assert!(runs <= 10, "each run must get further");
        let out = run(pickup(&state)
            .args([
                "send",
                "--json",
                "--no-retransfer",
                "--relay",
                &proxy.addr(),
            ])
            .arg(&a));
        match out.status.code() {
            Some(0) => {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                break v["code"].as_str().unwrap().to_string();
            }
            Some(4) => {
                // With --json the error is a JSON object on stdout.
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let err = v["error"]["message"].as_str().unwrap_or_default();
                assert!(err.contains("run again to resume"), "{v}");
            }
            other => panic!("unexpected exit {other:?}: {}", stderr(&out)),
        }
    };
    assert!(runs >= 2, "the link was cut at least once");
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
    assert!(same_file(&a, &dest.join("a.bin")));
}
