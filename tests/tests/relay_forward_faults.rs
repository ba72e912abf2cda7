//! Faults of forwarding between two relay processes (issue 17, "Faults"):
//! each test starts relay A (the source, holding the batch) and relay B
//! (the peer), listing each other as `[[peers]]` under one name and key,
//! with every byte from A to B through a counting proxy (the shared
//! [`relay_pair`] harness, which also kills and restarts either relay on
//! its data directory and port). The forward
//! is asked for and followed with the real CLI (`pickup forward CODE --to
//! PEER --json`, `pickup forward --status ID --json`) by a user logged in
//! at A, and a finished copy is checked byte for byte with `pickup get` at
//! B.
//!
//! ```text
//!   pickup send ──► A ──forwarder──► Proxy (rate, bytes counted) ──► B ◄── pickup get
//!   pickup forward CODE --to pair-ab --json ──► A (statuses, JSON lines)
//! ```
//!
//! - kill -9 of A, and separately of B, once 30% of a 256 MiB file crossed
//!   the proxy: after the restart the forward completes from B's durable
//!   offsets, and at most the file, one window (B offers [`WINDOW`]) and
//!   the framing ([`overhead_margin`]) cross in all;
//! - a peer whose key differs: `Failed` at once, reason "authentication
//!   failed", exit code 2;
//! - a peer down for a minute: `Retrying` with growing attempts under the
//!   forwarder's backoff, then `Done`;
//! - the batch expiring at A mid-forward: `Failed` with reason "pickup
//!   code has expired", no code for the requester, and B's partial copy
//!   refused by its code, then swept.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pickup_proto::identity::DeviceKey;
use pickup_proto::Code;
use pickup_relay::codes::token_key;
use pickup_relay::store::forwards::Forwards;
use pickup_relay::store::sqlite::SqliteStore;
use pickup_relay::store::{Lookup, Store};
use pickup_tests::e2e::push::unix_now;
use pickup_tests::e2e::relay_pair::{self, user_at_a, Pair, Setup, PAIR};
use pickup_tests::e2e::{run, run_json, stderr, wait_for, Running, PATIENCE};
use serde_json::Value;

/// The user who asks for the forwards, logged in at A.
const USER: &str = "ada";
/// The window B offers (`[tcp] window`): at most this many bytes are in
/// flight unacknowledged, so at most this many cross twice after a crash.
const WINDOW: u64 = 8 << 20;
/// The large file of the crash tests.
const BIG: usize = 256 << 20;
/// The link to B while the crash tests wait for 30%: slow enough that
/// the kill lands mid-way, fast enough that 30% takes seconds.
const THROTTLE: u64 = 16 << 20;
/// Most status lines a test reads from one `pickup forward` (statuses
/// come at most every 250 ms: this is far more than any test needs).
const MAX_LINES: usize = 100_000;

/// `[forward]` of A in every test: a dead instance's lease runs out in
/// 4 s, failed attempts wait 2, 4, then 8 s, and a minute's outage does
/// not use up the attempts.
const FORWARD: &str = "[forward]\nmax_active = 2\nmax_attempts = 30\n\
                       backoff_cap_secs = 8\nlease_secs = 4\n";

/// The pair with A's [`FORWARD`] after `a_toml` and B's [`WINDOW`] after
/// `b_toml`, A's entry for B holding `a_key`; and [`USER`]'s state,
/// logged in at A.
fn start(a_key: DeviceKey, a_toml: &str, b_toml: &str) -> (Pair, PathBuf) {
    let pair = Setup {
        a_key,
        a_toml: &format!("{a_toml}{FORWARD}"),
        b_toml: &format!("{b_toml}[tcp]\nwindow = {WINDOW}\n"),
        ..Setup::default()
    }
    .start();
    let state = user_at_a(&pair, USER, "state-ada");
    (pair, state)
}

/// [`start`] with the pair's own key and nothing else set.
fn start_plain() -> (Pair, PathBuf) {
    start(relay_pair::KEY, "", "")
}

/// `pickup forward CODE --to PAIR --json` as `state`, followed as it runs.
fn forward(pair: &Pair, state: &Path, code: &Code) -> Watch {
    let mut cmd = pair.forward_cmd(state, &[&code.to_string(), "--to", PAIR, "--json"]);
    Watch {
        run: Running::spawn(&mut cmd),
        seen: Vec::new(),
    }
}

/// `pickup forward --status ID --json` as `state`: where forward `id` stands.
fn status(pair: &Pair, state: &Path, id: u64) -> Value {
    run_json(&mut pair.forward_cmd(state, &["--status", &id.to_string(), "--json"]))
}

/// A running `pickup forward … --json` and every status it printed.
struct Watch {
    run: Running,
    seen: Vec<Value>,
}

impl Watch {
    /// Reads statuses until one satisfies `want` and returns it; panics
    /// if the command ends (or says nothing for [`PATIENCE`]) first.
    fn until(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        for _ in 0..MAX_LINES {
            let left = PATIENCE.saturating_sub(start.elapsed());
            let Some(line) = self.run.next_line_within(left) else {
                break;
            };
            let status: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON status ({e}): {line}"));
            self.seen.push(status.clone());
            if want(&status) {
                return status;
            }
        }
        panic!("no status {what}; seen: {:?}", self.seen);
    }

    /// Reads statuses until `deadline`, whatever they say; panics if the
    /// command ends first.
    fn read_until(&mut self, deadline: Instant) {
        for _ in 0..MAX_LINES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if let Some(line) = self.run.next_line_within(left) {
                let status = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON status ({e}): {line}"));
                self.seen.push(status);
            } else if Instant::now() < deadline {
                panic!("pickup forward ended early; seen: {:?}", self.seen);
            }
        }
    }

    /// The forward's id, from the first status.
    fn id(&mut self) -> u64 {
        let first = self.until("at all", |_| true);
        first["id"].as_u64().unwrap()
    }

    /// Follows to the end: the final status, the exit code and every
    /// status printed.
    fn end(mut self) -> (Value, Option<i32>, Vec<Value>) {
        let last = self.until("final", |s| s["state"] == "done" || s["state"] == "failed");
        let (status, _, err) = self.run.finish();
        assert!(
            status.code() == Some(0) || last["state"] == "failed",
            "exit {status} after {last}: {err}"
        );
        (last, status.code(), self.seen)
    }
}

/// State of a status.
fn state(s: &Value) -> &str {
    s["state"].as_str().unwrap_or("?")
}

/// What may cross to B beyond the file and one window, and why: every
/// `Data` frame adds at most 27 bytes (a 4-byte length prefix, the 2-byte
/// header and 4-byte CRC, a 13-byte file and offset prefix, and COBS's
/// few bytes on a link that did not agree on length prefixes) to at least
/// 16 KiB of payload, which is under 0.2%: a quarter of a percent covers
/// it; 256 KiB covers the hellos, authentications, announcements,
/// resumes and keepalives of the few connections a test makes.
fn overhead_margin(total: u64) -> u64 {
    total / 400 + (256 << 10)
}

/// Statuses' bytes never go back, except `fallbacks` times, and every
/// one counts the whole batch. A source killed -9 loses what its
/// forwarder had not yet written of the peer's acknowledgements (it
/// writes them at most once a second, `forward::service::WRITE_EVERY`):
/// a watcher that follows the forward across the restart hears the bytes
/// as last written once, then the peer's durable offsets again.
fn check_monotonic(seen: &[Value], total: u64, fallbacks: usize) {
    let back: Vec<(&Value, &Value)> = seen
        .windows(2)
        .filter(|w| w[1]["sent"].as_u64() < w[0]["sent"].as_u64())
        .map(|w| (&w[0], &w[1]))
        .collect();
    assert!(
        back.len() <= fallbacks,
        "progress went back {} times: {back:?}",
        back.len()
    );
    for s in seen {
        assert_eq!(s["total"].as_u64(), Some(total), "{s}");
    }
}

/// Which relay a crash test kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Source,
    Peer,
}

/// kill -9 of `victim` once 30% of a 256 MiB forward crossed to B, a
/// restart, and the forward completing from B's durable offsets.
fn killed_at_30_percent(victim: Victim, seed: u64) {
    let (mut pair, ada) = start_plain();
    let (paths, code) = pair.send_seeded(&[BIG], seed);
    let total = BIG as u64;
    pair.proxy.rate.store(THROTTLE, Ordering::SeqCst);
    let started = Instant::now();
    let mut watch = forward(&pair, &ada, &code);
    let id = watch.id();

    wait_for("30% of the file at B", || {
        (pair.up() >= total * 3 / 10).then_some(())
    });
    let at_kill = pair.up();
    match victim {
        Victim::Source => pair.a.kill9(),
        Victim::Peer => pair.b.kill9(),
    }
    eprintln!(
        "{victim:?} killed after {:?}: {at_kill} of {total} bytes had crossed",
        started.elapsed()
    );
    // The rest need not be slow: the fault has happened.
    pair.proxy.rate.store(0, Ordering::SeqCst);
    match victim {
        Victim::Source => pair.a.restart(),
        Victim::Peer => pair.b.restart(),
    }
    let resumed = wait_for("the forward moving on after the restart", || {
        let s = status(&pair, &ada, id);
        (s["sent"].as_u64() > Some(at_kill) || state(&s) == "done").then_some(s)
    });
    eprintln!("after the restart: {resumed}");

    // The watcher rode out the restart (of A: it dialled again).
    let (last, code_exit, seen) = watch.end();
    assert_eq!((state(&last), code_exit), ("done", Some(0)), "{last}");
    let fallbacks = match victim {
        Victim::Source => 1,
        Victim::Peer => 0,
    };
    check_monotonic(&seen, total, fallbacks);
    let crossed = pair.up();
    eprintln!(
        "done after {:?}: {crossed} bytes crossed for a {total}-byte file \
         (window {WINDOW}, margin {})",
        started.elapsed(),
        overhead_margin(total)
    );
    assert!(crossed >= total, "only {crossed} of {total} bytes crossed");
    assert!(
        crossed <= total + WINDOW + overhead_margin(total),
        "{crossed} bytes crossed for {total}: more than one window ({WINDOW}) again"
    );
    let peer_code = Code::parse(last["peer_code"].as_str().unwrap()).unwrap();
    assert_ne!(peer_code, code, "B issues its own code");
    pair.get_from_b(&peer_code, &paths, "got");
}

#[test]
fn the_sending_relay_killed_at_30_percent_resumes_from_the_durable_offset() {
    killed_at_30_percent(Victim::Source, 1000);
}

#[test]
fn the_receiving_relay_killed_at_30_percent_resumes_from_the_durable_offset() {
    killed_at_30_percent(Victim::Peer, 2000);
}

#[test]
fn a_peer_with_another_key_fails_the_forward_with_a_clear_reason() {
    let (pair, ada) = start(DeviceKey([0x11; 16]), "", "");
    let (_, code) = pair.send_seeded(&[100_000, 20], 3000);
    let code = code.to_string();

    // As a person runs it: the reason on stderr, exit code 2.
    let out = run(&mut pair.forward_cmd(&ada, &[&code, "--to", PAIR]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("failed: authentication failed"),
        "no clear reason: {err}"
    );
    let id: u64 = err
        .split("forward ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no forward id in {err}"));

    // Later, by id: failed after one attempt (a refused key is not retried).
    let s = status(&pair, &ada, id);
    assert_eq!(
        (state(&s), s["reason"].as_str(), s["attempts"].as_u64()),
        ("failed", Some("authentication failed"), Some(1)),
        "{s}"
    );
    assert!(s["peer_code"].is_null(), "{s}");
    assert!(
        pair.b.log().contains("authentication failed"),
        "B logged no refusal: {}",
        pair.b.log()
    );
    eprintln!("pickup forward: {}; status {s}", err.trim());

    // With --json: the statuses end in `failed` with the reason, then
    // the error object.
    let out = run(&mut pair.forward_cmd(&ada, &[&code, "--to", PAIR, "--json"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let [.., status, error] = lines.as_slice() else {
        panic!("no status and error in {text}");
    };
    assert_eq!(
        (state(status), status["reason"].as_str()),
        ("failed", Some("authentication failed")),
        "{text}"
    );
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.ends_with("failed: authentication failed") && error["error"]["exit"] == 2,
        "{text}"
    );
}

/// How long the peer stays down.
const OUTAGE: Duration = Duration::from_secs(60);

#[test]
fn a_peer_down_for_a_minute_is_retried_with_backoff_then_the_forward_completes() {
    let (mut pair, ada) = start_plain();
    let sizes = [3_000_000, 1_000_000, 17];
    let total: u64 = sizes.iter().map(|&s| s as u64).sum();
    let (paths, code) = pair.send_seeded(&sizes, 4000);
    assert!(pair.b.terminate().success());
    let down = Instant::now();

    let mut watch = forward(&pair, &ada, &code);
    let id = watch.id();
    let retrying = watch.until("retrying", |s| state(s) == "retrying");
    assert_eq!(
        retrying["reason"].as_str(),
        Some("the peer relay could not be reached"),
        "{retrying}"
    );
    // Also seen from another command, by id.
    let s = status(&pair, &ada, id);
    assert!(
        matches!(state(&s), "retrying" | "connecting"),
        "{s} while the peer is down"
    );
    let second = watch.until("a second failed attempt", |s| {
        state(s) == "retrying" && s["attempts"].as_u64() >= Some(2)
    });
    eprintln!("after {:?}: {second}", down.elapsed());

    // The rest of the minute, reading statuses as they come.
    watch.read_until(down + OUTAGE);
    let before = status(&pair, &ada, id);
    eprintln!("B back after {:?}; last status {before}", down.elapsed());
    pair.b.restart();

    let (last, exit, seen) = watch.end();
    assert_eq!((state(&last), exit), ("done", Some(0)), "{last}");
    check_monotonic(&seen, total, 0);
    let attempts = before["attempts"].as_u64().unwrap();
    // Without backoff a failing attempt (three dials a few hundred
    // milliseconds apart) would come round about every second: dozens in
    // a minute. With 2, 4, then 8 s between them there are about ten.
    assert!(
        (2..=20).contains(&attempts),
        "{attempts} attempts in a minute's outage: {before}"
    );
    eprintln!("done after {:?}: {last}", down.elapsed());
    let peer_code = Code::parse(last["peer_code"].as_str().unwrap()).unwrap();
    pair.get_from_b(&peer_code, &paths, "got");
}

#[test]
fn a_batch_expiring_at_the_source_mid_forward_fails_it_and_b_keeps_nothing_by_code() {
    // A's codes last 20 s; 24 MiB at 512 KiB/s take 48 s: the batch
    // expires about 20 s into the forward.
    let (mut pair, ada) = start(
        relay_pair::KEY,
        "[codes]\nttl_secs = 20\n",
        "sweep_interval_secs = 1\n[limits]\nincomplete_ttl_secs = 10\n",
    );
    let sent_at = Instant::now();
    let (_, code) = pair.send_seeded(&[24 << 20], 5000);
    pair.proxy.rate.store(512 << 10, Ordering::SeqCst);
    let mut watch = forward(&pair, &ada, &code);
    let id = watch.id();
    watch.until("transferring", |s| {
        state(s) == "transferring" && s["sent"].as_u64() > Some(0)
    });
    let (last, exit, _) = watch.end();
    assert_eq!(
        (state(&last), last["reason"].as_str(), exit),
        ("failed", Some("pickup code has expired"), Some(2)),
        "{last}"
    );
    assert!(last["peer_code"].is_null(), "{last}");
    let s = status(&pair, &ada, id);
    assert_eq!(
        (state(&s), s["attempts"].as_u64()),
        ("failed", Some(1)),
        "{s}"
    );
    let sent = s["sent"].as_u64().unwrap();
    assert!(sent > 0 && sent < (24 << 20), "{s}");

    eprintln!(
        "failed {:?} after the send began: {last}",
        sent_at.elapsed()
    );

    // B granted the batch (A kept its token): the partial copy's code,
    // read from B's store, must not serve it. B is stopped first, so
    // that it does not sweep the copy before the test found it.
    pair.b.kill9();
    pair.a.kill9();
    let (a_store, _) = SqliteStore::open(pair.a.data()).unwrap();
    let token = a_store.forward(id).unwrap().unwrap().peer_token;
    let token = token.expect("B granted the batch before the source expired");
    drop(a_store);
    let (b_store, _) = SqliteStore::open(pair.b.data()).unwrap();
    let partial = match b_store
        .find_by_token(&token_key(&token), unix_now())
        .unwrap()
    {
        Lookup::Live(batch) => batch,
        other => panic!("B lost the partial copy before its sweep: {other:?}"),
    };
    assert!(!partial.ready(), "B holds a complete copy: {partial:?}");
    drop(b_store);
    pair.b.restart();
    let peer_code = partial.code;
    let (out, dest) = pair.get_at_b(&peer_code, "partial");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none());
    eprintln!("B's partial copy by its code: {}", err.trim());

    // B sweeps the stale partial copy: then its code is gone there.
    let gone = wait_for("B sweeping the partial copy", || {
        let (out, _) = pair.get_at_b(&peer_code, "swept");
        let err = stderr(&out);
        (out.status.code() == Some(2) && !err.contains("still being uploaded")).then_some(err)
    });
    assert!(
        gone.contains("expired") || gone.contains("unknown"),
        "{gone}"
    );
    eprintln!(
        "B {:?} after the send began, after its sweep: {}",
        sent_at.elapsed(),
        gone.trim()
    );
}
