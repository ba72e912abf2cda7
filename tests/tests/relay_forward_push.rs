//! Pushing across relays (PROTOCOL.md §12.1) with the real binaries:
//! alice, a user of relay A, runs `pickup send FILE --to phone@pair-ab`;
//! A forwards the batch to its peer B and asks B (`PeerPush`) to queue a
//! push to B's terminal `phone`, whose owner bob allowed `alice@pair-ab`.
//! `pickup listen` as `phone` at B gets the notice from `alice@pair-ab`
//! and the same bytes. Without the owner's permission the send fails
//! with B's reason, and a second send of the same content crosses to B
//! as proofs only.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use pickup_tests::e2e::faulty::LinkFaults;
use pickup_tests::e2e::push::{add_user, event, login, Terminal};
use pickup_tests::e2e::relay_pair::{user_at_a, Pair, PAIR};
use pickup_tests::e2e::{pickup, run, same_file, stderr, stdout, write_random};

/// A user of B, logged in there with a state directory of its own.
fn user_at_b(pair: &Pair, name: &str) -> PathBuf {
    add_user(pair.b.data(), name);
    let state = pair.work.path().join(format!("state-b-{name}"));
    login(&state, &pair.b.tcp(), name);
    state
}

/// `pickup allow SENDER` at B as the user of `state`; must succeed.
fn allow_at_b(pair: &Pair, state: &Path, sender: &str) {
    let out = run(pickup(state).args(["--relay", &pair.b.tcp(), "allow", sender]));
    assert!(out.status.success(), "allow {sender}: {}", stderr(&out));
}

/// `pickup send FILE --to TARGET --json` at A as the user of `state`.
fn send_across(pair: &Pair, state: &Path, file: &Path, target: &str) -> Output {
    run(pickup(state)
        .args(["--relay", &pair.a.tcp(), "send", "--json"])
        .arg(file)
        .args(["--to", target]))
}

/// The JSON lines of a `send --json` across relays: the forward's
/// statuses, then the send's own document.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out).lines().map(event).collect()
}

/// A random file of `len` bytes in the pair's work directory.
fn file(pair: &Pair, name: &str, len: usize, seed: u64) -> PathBuf {
    let path = pair.work.path().join(name);
    write_random(&path, len, seed);
    path
}

#[test]
fn a_send_to_a_terminal_at_the_peer_is_pushed_there_and_fetched_byte_identical() {
    let pair = Pair::start(LinkFaults::default());
    let bob = user_at_b(&pair, "bob");
    let phone = Terminal::add(pair.b.data(), pair.work.path(), "phone", "bob");
    let sender = format!("alice@{PAIR}");
    allow_at_b(&pair, &bob, &sender);
    let alice = user_at_a(&pair, "alice", "state-alice");
    let len = 1_500_000;
    let fw = file(&pair, "fw.bin", len, 7);

    let target = format!("phone@{PAIR}");
    let out = send_across(&pair, &alice, &fw, &target);
    assert!(
        out.status.success(),
        "send: {} {}",
        stdout(&out),
        stderr(&out)
    );
    let lines = json_lines(&out);
    let (doc, statuses) = lines.split_last().unwrap();
    assert!(
        statuses.iter().all(|s| s["id"] == statuses[0]["id"]),
        "one forward's statuses: {statuses:?}"
    );
    let forward = &doc["forwards"][0];
    assert_eq!(
        (forward["target"].as_str(), forward["state"].as_str()),
        (Some(target.as_str()), Some("done")),
        "{doc}"
    );
    assert_eq!(forward["sent"].as_u64(), Some(len as u64), "{doc}");
    let peer_code = forward["peer_code"].as_str().unwrap().to_owned();
    assert_ne!(doc["code"].as_str(), Some(peer_code.as_str()));

    // The terminal at B hears of it from alice of A, and fetches it.
    let dest = pair.work.path().join("phone-got");
    let heard = run(phone.listen(&pair.b.tcp(), &dest).arg("--once"));
    assert!(heard.status.success(), "listen: {}", stderr(&heard));
    let text = stdout(&heard);
    let [line] = text.lines().collect::<Vec<_>>()[..] else {
        panic!("one delivery: {text:?}");
    };
    let ev = event(line);
    assert_eq!(
        (
            ev["event"].as_str(),
            ev["sender"].as_str(),
            ev["code"].as_str()
        ),
        (
            Some("delivered"),
            Some(sender.as_str()),
            Some(peer_code.as_str())
        ),
        "{ev}"
    );
    assert!(same_file(&fw, &dest.join("fw.bin")));

    // The same content again: B holds it from A, so it crosses as proofs.
    let before = pair.up();
    let again = send_across(&pair, &alice, &fw, &target);
    assert!(again.status.success(), "second send: {}", stderr(&again));
    let crossed = pair.up() - before;
    assert!(
        crossed * 100 < len as u64,
        "the second send crossed {crossed} of {len} bytes"
    );
}

#[test]
fn a_send_to_a_terminal_whose_owner_did_not_allow_the_sender_fails_with_the_peers_reason() {
    let pair = Pair::start(LinkFaults::default());
    user_at_b(&pair, "carol");
    Terminal::add(pair.b.data(), pair.work.path(), "watch", "carol");
    let alice = user_at_a(&pair, "alice", "state-alice");
    let fw = file(&pair, "fw.bin", 40_000, 8);

    let out = run(pickup(&alice)
        .args(["--relay", &pair.a.tcp(), "send"])
        .arg(&fw)
        .args(["--to", &format!("watch@{PAIR}")]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("watch@{PAIR}: copied to {PAIR}"))
            && err.contains("the notice failed: unknown terminal"),
        "{err}"
    );
}
