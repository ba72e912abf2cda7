//! Forwarding between two relay processes (issue 17): a batch uploaded to
//! relay A with `pickup send` is forwarded to relay B, by `pickup forward`
//! through A's forwarder (the first tests), or by the forward runner
//! (`pickup_relay::forward::run`, in-process over A's data directory once
//! A stopped), and `pickup get` at B returns the same bytes. Every byte
//! towards B crosses a counting proxy: a second forward of the same
//! content crosses as proofs only, and a forward cut mid-way resumes with
//! the peer's token from B's durable offsets. A `tls://` peer is trusted
//! by its pin, as `pickup --pin` trusts a relay; a source batch ended
//! mid-forward ends the forward with `SourceExpired`; a peer that is down
//! makes the forwarder retry until it is back.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use pickup_proto::identity::{AuthError, DeviceKey};
use pickup_proto::upload;
use pickup_proto::Code;
use pickup_relay::config::peers::PeerConfig;
use pickup_relay::forward::{self, ForwardError, ForwardState, Progress, RetransferPolicy};
use pickup_relay::store::sqlite::SqliteStore;
use pickup_relay::store::{Lookup, Store};
use pickup_tests::e2e::faulty::LinkFaults;
use pickup_tests::e2e::relay_pair::{ada_at_a, user_at_a, Pair, Setup, PAIR};
use pickup_tests::e2e::{relay_bin, run, run_json, stderr, stdout, TempDir};

/// Runs one forward; every progress report, in order, beside the result.
fn forward_once(
    store: &SqliteStore,
    pair: &Pair,
    code: Code,
    resume: Option<pickup_proto::message::ResumeToken>,
    policy: RetransferPolicy,
) -> (Result<forward::Forwarded, ForwardError>, Vec<Progress>) {
    let mut heard = Vec::new();
    let job = forward::Forward {
        store,
        code,
        peer: &pair.peer,
        resume,
        policy,
        stop: None,
    };
    let result = forward::run(&job, |p| heard.push(*p));
    (result, heard)
}

/// The reports say what a forward did: bytes durable at the peer never
/// go back, and a finished one ends `Done` with every byte.
fn check_reports(heard: &[Progress], total: u64) {
    assert_eq!(
        heard.first().map(|p| p.state),
        Some(ForwardState::Connecting)
    );
    for w in heard.windows(2) {
        assert!(w[1].sent >= w[0].sent, "progress went back: {heard:?}");
        assert_eq!(w[1].total, total);
    }
    let last = heard.last().unwrap();
    assert_eq!(
        (last.state, last.sent),
        (ForwardState::Done, total),
        "{heard:?}"
    );
}

#[test]
fn a_batch_forwarded_to_a_peer_is_served_there_and_its_content_crosses_once() {
    let mut pair = Pair::start(LinkFaults::default());
    let sizes = [300_000, 1_200_000, 17];
    let total: u64 = sizes.iter().map(|&s| s as u64).sum();
    let (paths, code) = pair.send_to_a(sizes);
    let store = pair.stop_a();

    // A key B does not share: a clear refusal, nothing granted.
    let right = pair.peer.key;
    pair.peer.key = DeviceKey([0x11; 16]);
    let (refused, _) = forward_once(&store, &pair, code, None, RetransferPolicy::DISABLED);
    assert!(
        matches!(
            refused,
            Err(ForwardError::Refused {
                error: upload::Error::Auth(AuthError::Refused),
                ..
            })
        ),
        "{refused:?}"
    );
    pair.peer.key = right;

    let policy = RetransferPolicy::default();
    let (first, heard) = forward_once(&store, &pair, code, None, policy);
    let first = first.unwrap();
    check_reports(&heard, total);
    assert!(heard.iter().any(|p| p.state == ForwardState::Transferring));
    assert_eq!(first.total, total);
    assert_ne!(first.code, code, "B issues its own code");
    let crossed = pair.up();
    assert!(crossed >= total, "only {crossed} of {total} bytes crossed");
    pair.get_from_b(&first.code, &paths, "first");

    // The same content again: B holds it from this relay, so each file
    // crosses as a proof of ownership, not as its bytes.
    let (second, heard) = forward_once(&store, &pair, code, None, policy);
    let second = second.unwrap();
    check_reports(&heard, total);
    assert_ne!(second.code, first.code, "a forward is a new batch at B");
    let again = pair.up() - crossed;
    assert!(
        again * 100 < total,
        "the second forward sent {again} bytes of {total}"
    );
    pair.get_from_b(&second.code, &paths, "second");
}

#[test]
fn a_forward_cut_mid_way_resumes_with_the_peers_token() {
    let sizes = [2_000_000, 3_000_000, 1_000_000];
    let total: u64 = sizes.iter().map(|&s| s as u64).sum();
    // Every connection is cut after about two thirds of the batch.
    let cut = total * 2 / 3;
    let mut pair = Pair::start(LinkFaults {
        cut_after: Some((cut, cut + 1)),
        ..LinkFaults::default()
    });
    let (paths, code) = pair.send_to_a(sizes);
    let store = pair.stop_a();

    // Paced, so that B's acks (a sync every 2 MiB at most) come back
    // before the cut on a loopback that would otherwise outrun them.
    pair.proxy.rate.store(8_000_000, Ordering::SeqCst);
    pair.proxy.set_faults(true);
    let (cut_short, heard) = forward_once(&store, &pair, code, None, RetransferPolicy::DISABLED);
    let token = match cut_short {
        Err(ForwardError::LinkLost {
            token: Some(token), ..
        }) => token,
        other => panic!("expected a lost link with the peer's token, got {other:?}"),
    };
    let durable = heard.last().unwrap().sent;
    assert!(durable > 0 && durable < total, "{heard:?}");
    assert_eq!(heard.iter().rev().find_map(|p| p.token), Some(token));
    assert_eq!(pair.proxy.stats.cuts.load(Ordering::SeqCst), 1);

    // The link is whole again: the forward resumes from B's durable
    // offsets and sends only what B did not hold.
    pair.proxy.set_faults(false);
    let before = pair.up();
    let (resumed, heard) = forward_once(
        &store,
        &pair,
        code,
        Some(token),
        RetransferPolicy::default(),
    );
    let resumed = resumed.unwrap();
    check_reports(&heard, total);
    assert_eq!(resumed.token, token, "the same batch at B");
    let sent = pair.up() - before;
    // At most the bytes not yet acknowledged, and framing (B may hold
    // more than it acknowledged before the cut: then less crosses).
    assert!(
        sent < total - durable + total / 50,
        "the resumed forward sent {sent} bytes; {durable} of {total} were durable"
    );
    pair.get_from_b(&resumed.code, &paths, "resumed");
}

/// `pickup-relay cert self-signed` for 127.0.0.1 in `dir`: (cert, key, pin).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = run(Command::new(relay_bin())
        .args(["cert", "self-signed", "--name", "127.0.0.1", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key));
    assert!(out.status.success(), "cert self-signed: {}", stderr(&out));
    let pin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    (cert, key, pin)
}

#[test]
fn a_tls_peer_is_trusted_by_its_pin_and_a_wrong_pin_fails_the_dial() {
    let certs = TempDir::new("forward-tls");
    let (cert, key, pin) = self_signed(certs.path());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let tls_args = ["--tls", "127.0.0.1:0", "--cert", cert, "--key", key];
    let mut pair = Pair::start_with(LinkFaults::default(), &tls_args);
    let (paths, code) = pair.send_to_a([1000, 70_000, 0]);
    let store = pair.stop_a();
    let tls = pair.b.listener("tls");
    let mut entry = PeerConfig {
        name: PAIR.into(),
        addr: format!("tls://{tls}"),
        key_file: pair.work.path().join("pair.key"),
        ca: None,
        pin: Some(pin.clone()),
    };

    // Another certificate's pin: the dial fails with the TLS reason.
    let wrong = format!("sha256:{}", "0".repeat(64));
    entry.pin = Some(wrong);
    pair.peer = entry.load().unwrap();
    let (refused, _) = forward_once(&store, &pair, code, None, RetransferPolicy::DISABLED);
    match refused {
        Err(ForwardError::Dial { reason, .. }) => assert!(reason.contains("TLS"), "{reason}"),
        other => panic!("expected a TLS refusal, got {other:?}"),
    }

    entry.pin = Some(pin);
    pair.peer = entry.load().unwrap();
    let (forwarded, heard) = forward_once(&store, &pair, code, None, RetransferPolicy::default());
    check_reports(&heard, 71_000);
    pair.get_from_b(&forwarded.unwrap().code, &paths, "over-tls");
}

#[test]
fn a_source_batch_ended_mid_forward_ends_it_with_source_expired() {
    let mut pair = Pair::start(LinkFaults::default());
    let (_, code) = pair.send_to_a([2_000_000, 2_000_000, 2_000_000]);
    let store = pair.stop_a();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let id = match store
        .find_by_code(&pickup_relay::codes::code_key(&code), now())
        .unwrap()
    {
        Lookup::Live(b) => b.id,
        other => panic!("A lost the batch: {other:?}"),
    };
    // Slow enough that the forward still reads a while after the end.
    pair.proxy.rate.store(1_000_000, Ordering::SeqCst);
    let job = forward::Forward {
        store: &store,
        code,
        peer: &pair.peer,
        resume: None,
        policy: RetransferPolicy::default(),
        stop: None,
    };
    // The owner ends the batch once the peer granted it.
    let mut ended = false;
    let result = forward::run(&job, |p| {
        if p.state == ForwardState::Transferring && !ended {
            store.end_batch(id, now()).unwrap();
            ended = true;
        }
    });
    assert!(ended);
    assert!(
        matches!(result, Err(ForwardError::SourceExpired { token: Some(_) })),
        "{result:?}"
    );
}

/// `pickup forward CODE --to PAIR --json` at A as ada: the statuses it
/// printed (one JSON object a line), and the process's output.
fn forward_cli(
    pair: &Pair,
    state: &Path,
    code: &Code,
) -> (Vec<serde_json::Value>, std::process::Output) {
    let out = run(&mut pair.forward_cmd(state, &[&code.to_string(), "--to", PAIR, "--json"]));
    // A failure's error object follows the statuses.
    let statuses = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .filter(|v| v.get("error").is_none())
        .collect();
    (statuses, out)
}

/// The statuses of one forward: one id, bytes that never go back, and
/// the last one `Done` with every byte and the peer's code.
fn check_statuses(statuses: &[serde_json::Value], total: u64) -> (u64, Code) {
    let id = statuses[0]["id"].as_u64().unwrap();
    for w in statuses.windows(2) {
        assert_eq!(w[1]["id"].as_u64(), Some(id));
        assert!(
            w[1]["sent"].as_u64() >= w[0]["sent"].as_u64(),
            "progress went back: {statuses:?}"
        );
    }
    let last = statuses.last().unwrap();
    assert_eq!(last["state"], "done", "{statuses:?}");
    assert_eq!(
        (last["sent"].as_u64(), last["total"].as_u64()),
        (Some(total), Some(total))
    );
    (
        id,
        Code::parse(last["peer_code"].as_str().unwrap()).unwrap(),
    )
}

#[test]
fn pickup_forward_copies_a_batch_to_the_peer_and_the_same_content_crosses_as_proofs() {
    let pair = Pair::start(LinkFaults::default());
    let state = ada_at_a(&pair);
    let sizes = [300_000, 1_200_000, 17];
    let total: u64 = sizes.iter().map(|&s| s as u64).sum();
    let (paths, code) = pair.send_to_a(sizes);

    let (statuses, out) = forward_cli(&pair, &state, &code);
    assert!(out.status.success(), "forward: {}", stderr(&out));
    let (id, first) = check_statuses(&statuses, total);
    assert_ne!(first, code, "B issues its own code");
    let crossed = pair.up();
    assert!(crossed >= total, "only {crossed} of {total} bytes crossed");
    pair.get_from_b(&first, &paths, "cli-first");

    // The same content again: B holds it from A, so each file crosses as
    // a proof of ownership, not as its bytes.
    let (statuses, out) = forward_cli(&pair, &state, &code);
    assert!(out.status.success(), "forward: {}", stderr(&out));
    let (second_id, second) = check_statuses(&statuses, total);
    assert!(second_id > id, "ids are never reused");
    assert_ne!(second, first, "a forward is a new batch at B");
    let again = pair.up() - crossed;
    assert!(
        again * 100 < total,
        "the second forward sent {again} bytes of {total}"
    );
    pair.get_from_b(&second, &paths, "cli-second");

    // Later, from another process: the first forward as it ended.
    let shown = run_json(&mut pair.forward_cmd(&state, &["--status", &id.to_string(), "--json"]));
    assert_eq!(
        (shown["state"].as_str(), shown["peer_code"].as_str()),
        (Some("done"), Some(first.to_string().as_str()))
    );
    // Another user of A is told nothing about it.
    let bob = user_at_a(&pair, "bob", "state-bob");
    let out = run(&mut pair.forward_cmd(&bob, &["--status", &id.to_string()]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

/// A pair whose A holds a key B does not share (`a_toml` leads A's
/// configuration), and a three-file forward ada asked A for with the CLI,
/// failed: the pair, ada's state at A, the statuses the CLI printed and
/// its output.
fn a_failed_forward(
    a_toml: &str,
) -> (
    Pair,
    std::path::PathBuf,
    Vec<serde_json::Value>,
    std::process::Output,
) {
    let pair = Setup {
        a_key: DeviceKey([0x11; 16]),
        a_toml,
        ..Setup::default()
    }
    .start();
    let state = ada_at_a(&pair);
    let (_, code) = pair.send_to_a([1000, 2000, 3000]);
    let (statuses, out) = forward_cli(&pair, &state, &code);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let last = statuses.last().unwrap();
    assert_eq!(last["state"], "failed", "{statuses:?}");
    (pair, state, statuses, out)
}

#[test]
fn a_peer_that_does_not_share_the_key_fails_the_forward_with_a_clear_reason() {
    let (pair, state, statuses, out) = a_failed_forward("");
    let last = statuses.last().unwrap();
    assert_eq!(last["reason"], "authentication failed", "{statuses:?}");
    assert_eq!(last["attempts"], 1, "a wrong key is not retried");
    // The failure is one JSON error object after the statuses.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("failed: authentication failed"),
        "{}",
        stdout(&out)
    );
    let id = last["id"].as_u64().unwrap();
    // Retried by command: queued again, and it fails the same way.
    let out = run(&mut pair.forward_cmd(&state, &["--retry", &id.to_string()]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );
}

/// A failed forward is kept `forward.keep_finished_secs` after it ended,
/// then A's sweep deletes it: `--status` and `--retry` then say it is not
/// found (exit 2), as of an id that never existed.
#[test]
fn a_finished_forward_is_forgotten_after_keep_finished_secs() {
    let (pair, state, statuses, _) =
        a_failed_forward("sweep_interval_secs = 1\n[forward]\nkeep_finished_secs = 3\n");
    let id = statuses.last().unwrap()["id"].as_u64().unwrap().to_string();
    // Gone within a few sweeps (bounded: 20 s).
    let status = || run(&mut pair.forward_cmd(&state, &["--status", &id]));
    let gone = (0..200)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            status()
        })
        .find(|out| !out.status.success())
        .expect("the failed forward was never swept");
    let not_found = format!("forward {id}: not found");
    assert_eq!(gone.status.code(), Some(2), "{}", stderr(&gone));
    assert!(stderr(&gone).contains(&not_found), "{}", stderr(&gone));
    assert!(
        stderr(&gone).contains("keep_finished_secs"),
        "{}",
        stderr(&gone)
    );
    let retry = run(&mut pair.forward_cmd(&state, &["--retry", &id]));
    assert_eq!(retry.status.code(), Some(2), "{}", stderr(&retry));
    assert!(stderr(&retry).contains(&not_found), "{}", stderr(&retry));
}

/// A loopback port nothing listens on (one we bound and closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `pickup forward --status ID --json` at A as the user of `state`;
/// `None` while A knows no such forward (not requested yet).
fn status_json(pair: &Pair, state: &Path, id: u64) -> Option<serde_json::Value> {
    let out = run(&mut pair.forward_cmd(state, &["--status", &id.to_string(), "--json"]));
    out.status.success().then(|| pickup_tests::e2e::json(&out))
}

#[test]
fn a_forward_to_a_peer_that_is_down_retries_and_completes_once_it_is_back() {
    let pair = Pair::start(LinkFaults::default());
    let state = ada_at_a(&pair);
    let sizes = [100_000, 200_000, 300_000];
    let total: u64 = sizes.iter().map(|&s| s as u64).sum();
    let (paths, code) = pair.send_to_a(sizes);
    // B is unreachable behind the proxy's address.
    pair.proxy.retarget(closed_port());
    let (statuses, out) = std::thread::scope(|s| {
        let cli = s.spawn(|| forward_cli(&pair, &state, &code));
        // A fresh relay's first forward is 1. Wait (bounded) for its
        // first failed attempt, then bring B back.
        let mut seen = None;
        for _ in 0..300 {
            if let Some(st) = status_json(&pair, &state, 1) {
                if st["state"] == "retrying" {
                    seen = Some(st);
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let retrying = seen.expect("the forward never went to retrying");
        assert_eq!(retrying["reason"], "the peer relay could not be reached");
        pair.proxy.retarget(pair.b.port());
        cli.join().unwrap()
    });
    assert!(out.status.success(), "forward: {}", stderr(&out));
    let (_, peer_code) = check_statuses(&statuses, total);
    assert!(
        statuses.iter().any(|s| s["state"] == "retrying"),
        "the watch never showed the retry: {statuses:?}"
    );
    let attempts = statuses.last().unwrap()["attempts"].as_u64().unwrap();
    assert!(attempts >= 2, "{statuses:?}");
    pair.get_from_b(&peer_code, &paths, "after-outage");
}

/// `[forward] users` lists who may forward: bob, logged in but not
/// listed, is refused at once with a clear line (exit 2) and no forward
/// is stored; ada, listed, forwards.
#[test]
fn only_the_users_the_relay_lets_forward_may() {
    let pair = Setup {
        a_toml: "[forward]\nusers = [\"ada\"]\n",
        ..Setup::default()
    }
    .start();
    let ada = ada_at_a(&pair);
    let (_, code) = pair.send_to_a([1000, 2000, 3000]);
    let bob = user_at_a(&pair, "bob", "state-bob");
    let (statuses, out) = forward_cli(&pair, &bob, &code);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(statuses.is_empty(), "{statuses:?}");
    assert!(
        stdout(&out).contains("your account may not do this on this relay"),
        "{}",
        stdout(&out)
    );
    let (statuses, out) = forward_cli(&pair, &ada, &code);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(statuses.last().unwrap()["state"], "done", "{statuses:?}");
}
