//! Addressed delivery with the real binaries (issue 13's acceptance,
//! PROTOCOL.md §11): `pickup send --to` to a terminal that is offline
//! across relay restarts, that never connects within the confirm
//! deadline, to 100 listening terminals at once, and `--wait`'s exit codes.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use pickup_tests::e2e::push::{
    add_user, code_of, delivery, event, login, push, send_to, status_json, status_text, unix_now,
    wait_for_state, Terminal,
};
use pickup_tests::e2e::{json, run, same_file, stderr, stdout, write_random, Running, TempDir};
use pickup_tests::relay_process::RelayProcess;

/// A relay with user `ada` logged in from `work/ada` and her terminal
/// `sensor-1`.
struct Setup {
    relay: RelayProcess,
    work: TempDir,
    sensor: Terminal,
}

impl Setup {
    fn start(config: &str) -> Setup {
        let relay = RelayProcess::builder().config(config).start();
        let work = TempDir::new("cli-push");
        add_user(relay.data(), "ada");
        let sensor = Terminal::add(relay.data(), work.path(), "sensor-1", "ada");
        login(&work.path().join("ada"), &relay.tcp(), "ada");
        Setup {
            relay,
            work,
            sensor,
        }
    }

    fn ada(&self) -> std::path::PathBuf {
        self.work.path().join("ada")
    }

    fn tcp(&self) -> String {
        self.relay.tcp()
    }

    fn file(&self, name: &str, len: usize, seed: u64) -> std::path::PathBuf {
        let path = self.work.path().join(name);
        write_random(&path, len, seed);
        path
    }
}

/// `pickup listen --once` ran to its end: exactly one stdout line, a
/// delivery of `code`; the line.
fn one_delivery(out: &std::process::Output, code: &str) -> serde_json::Value {
    assert!(out.status.success(), "listen failed: {}", stderr(out));
    let text = stdout(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line per delivery: {text:?}");
    let ev = event(lines[0]);
    assert_eq!(ev["event"], "delivered", "{ev}");
    assert_eq!(ev["code"], code, "{ev}");
    assert_eq!(ev["sender"], "ada", "{ev}");
    ev
}

/// Pushes to an offline terminal, restarts the relay (`graceful`: SIGTERM;
/// else SIGKILL right after `send --to` returned), then the terminal
/// listens once and gets the batch.
fn offline_push_survives_a_restart(graceful: bool, seed: u64) {
    let mut s = Setup::start("");
    let tcp = s.tcp();
    let fw = s.file("fw.bin", (3 << 20) + 17, seed);
    let sent = send_to(&s.ada(), &tcp, &[&fw], &["sensor-1"], &[]);
    let code = code_of(&sent);
    let deliveries = &json(&sent)["deliveries"];
    assert_eq!(deliveries[0]["state"], "queued", "{deliveries}");
    assert_eq!(deliveries[0]["terminal"], "sensor-1", "{deliveries}");

    if graceful {
        assert!(s.relay.terminate().success(), "{}", s.relay.log());
    }
    // Without SIGTERM first this is `kill -9`: the delivery must already
    // be durable when `send --to` returns.
    s.relay.restart();
    assert_eq!(
        delivery(&s.ada(), &tcp, &code, "sensor-1")["state"],
        "queued",
        "the delivery outlived the restart"
    );

    let dest = s.work.path().join("dest");
    let out = run(s.sensor.listen(&tcp, &dest).arg("--once"));
    let ev = one_delivery(&out, &code);
    assert_eq!(ev["files"][0]["name"], "fw.bin", "{ev}");
    assert!(same_file(&fw, &dest.join("fw.bin")));

    let d = delivery(&s.ada(), &tcp, &code, "sensor-1");
    assert_eq!(d["state"], "delivered", "{d}");
    assert_eq!(d["code"], code.as_str());
    assert_eq!(d["bytes"], d["total"], "{d}");
    let text = status_text(&s.ada(), &tcp, &code);
    assert!(text.starts_with("sensor-1: delivered 20"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn an_offline_push_survives_a_graceful_restart() {
    offline_push_survives_a_restart(true, 131);
}

#[test]
fn an_offline_push_survives_kill_9_right_after_send() {
    offline_push_survives_a_restart(false, 132);
}

#[test]
fn an_unconfirmed_push_is_kept_offline_then_delivered() {
    // The offline retention is longer than the code's day, so the batch's
    // expiry moves to it.
    const OFFLINE_TTL: u64 = 200_000;
    let s = Setup::start(&format!(
        "sweep_interval_secs = 1\n\
         [push]\n\
         confirm_deadline_secs = 2\n\
         offline_ttl_secs = {OFFLINE_TTL}\n"
    ));
    let tcp = s.tcp();
    let log = s.file("log.txt", 200_000, 141);
    let code = push(&s.ada(), &tcp, &log, &["sensor-1"]);

    let d = wait_for_state(&s.ada(), &tcp, &code, "sensor-1", "offline");
    let until = d["until"].as_u64().unwrap();
    let expected = unix_now() + OFFLINE_TTL;
    assert!(
        until.abs_diff(expected) <= 120,
        "offline until {until}, expected about {expected}: {d}"
    );
    let text = status_text(&s.ada(), &tcp, &code);
    assert!(
        text.starts_with("sensor-1: stored offline until 20") && text.contains("UTC"),
        "{text}"
    );

    let dest = s.work.path().join("dest");
    let out = run(s.sensor.listen(&tcp, &dest).arg("--once"));
    one_delivery(&out, &code);
    assert!(same_file(&log, &dest.join("log.txt")));
    let d = delivery(&s.ada(), &tcp, &code, "sensor-1");
    assert_eq!(d["state"], "delivered", "{d}");
}

/// Listeners and files in the many-terminals test.
const TERMINALS: usize = 100;
const PUSHES: usize = 10;

#[test]
fn a_hundred_listening_terminals_each_get_ten_pushes_once() {
    // Every listener and every `send` comes from 127.0.0.1: one peer.
    let s = Setup::start(
        "[limits]\n\
         max_sessions_per_peer = 1000\n\
         [push]\n\
         max_open_per_sender = 5000\n",
    );
    let tcp = s.tcp();
    let data = s.relay.data().to_path_buf();
    let names: Vec<String> = (1..=TERMINALS).map(|i| format!("t{i}")).collect();
    let terminals: Vec<Terminal> = names
        .iter()
        .map(|n| Terminal::add(&data, s.work.path(), n, "ada"))
        .collect();
    let dir = |t: &Terminal| s.work.path().join(format!("in-{}", t.name));
    let listeners: Vec<Running> = terminals
        .iter()
        .map(|t| Running::spawn(&mut t.listen(&tcp, &dir(t))))
        .collect();

    let targets: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut files = Vec::new();
    let mut codes = Vec::new();
    for i in 0..PUSHES {
        let file = s.file(&format!("f{i}.bin"), 20_000 + 1_000 * i, 150 + i as u64);
        let sent = send_to(&s.ada(), &tcp, &[&file], &targets, &[]);
        let code = code_of(&sent);
        let listed = json(&sent)["deliveries"].as_array().unwrap().len();
        assert_eq!(listed, TERMINALS, "one delivery per --to");
        files.push(file);
        codes.push(code);
    }
    let expected: BTreeSet<&str> = codes.iter().map(String::as_str).collect();

    for (t, listener) in terminals.iter().zip(&listeners) {
        let mut got = BTreeSet::new();
        for _ in 0..PUSHES {
            let ev = event(&listener.next_line());
            assert_eq!(ev["event"], "delivered", "{}: {ev}", t.name);
            let code = ev["code"].as_str().unwrap().to_owned();
            assert!(got.insert(code), "{} got a push twice: {ev}", t.name);
        }
        let got: BTreeSet<&str> = got.iter().map(String::as_str).collect();
        assert_eq!(got, expected, "{}", t.name);
    }
    // Nothing more comes: no delivery twice (each listener had time to
    // repeat one while the others were read).
    for (t, listener) in terminals.iter().zip(&listeners) {
        let extra = listener.next_line_within(std::time::Duration::from_millis(20));
        assert_eq!(extra, None, "{} printed an eleventh line", t.name);
    }
    drop(listeners);
    for t in &terminals {
        for f in &files {
            assert!(same_file(f, &dir(t).join(f.file_name().unwrap())));
        }
    }
    for code in &codes {
        let doc = status_json(&s.ada(), &tcp, code);
        let list = doc["deliveries"].as_array().unwrap();
        assert_eq!(list.len(), TERMINALS, "{code}");
        assert!(
            list.iter().all(|d| d["state"] == "delivered"),
            "{code}: {doc}"
        );
    }
}

/// `send --to sensor-1 --wait` of `file`; its output.
fn send_and_wait(s: &Setup, file: &Path) -> std::process::Output {
    send_to(&s.ada(), &s.tcp(), &[file], &["sensor-1"], &["--wait"])
}

/// The JSON error `send --json` printed, after checking its exit code.
fn json_error(out: &std::process::Output, exit: i32) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(exit), "{out:?}");
    let err = json(out)["error"].clone();
    assert_eq!(err["exit"], exit, "{err}");
    err
}

#[test]
fn send_wait_exits_0_when_confirmed_and_6_when_refused() {
    let s = Setup::start("");
    let tcp = s.tcp();

    let dest = s.work.path().join("dest");
    let listener = Running::spawn(s.sensor.listen(&tcp, &dest).arg("--once"));
    let small = s.file("small.bin", 50_000, 161);
    let out = send_and_wait(&s, &small);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["deliveries"][0]["state"], "delivered", "{doc}");
    let (status, lines, err) = listener.finish();
    assert!(status.success(), "{err}");
    one_delivery_line(&lines, doc["code"].as_str().unwrap());
    assert!(same_file(&small, &dest.join("small.bin")));

    let listener =
        Running::spawn(
            s.sensor
                .listen(&tcp, &dest)
                .args(["--once", "--max-size", "10000"]),
        );
    let big = s.file("big.bin", 60_000, 162);
    let out = send_and_wait(&s, &big);
    let err = json_error(&out, 6);
    assert_eq!(err["kind"], "declined", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("refused by the terminal"),
        "{err}"
    );
    let (status, lines, stderr) = listener.finish();
    assert!(status.success(), "{stderr}");
    let ev = event(lines.trim());
    assert_eq!(ev["event"], "refused", "{ev}");
    assert!(
        !dest.join("big.bin").exists(),
        "a refused batch is not fetched"
    );
}

fn one_delivery_line(lines: &str, code: &str) {
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let ev = event(lines[0]);
    assert_eq!(ev["event"], "delivered", "{ev}");
    assert_eq!(ev["code"], code, "{ev}");
}

#[test]
fn send_wait_exits_7_when_the_delivery_expires() {
    let s = Setup::start(
        "sweep_interval_secs = 1\n\
         [codes]\n\
         ttl_secs = 5\n",
    );
    let file = s.file("late.bin", 10_000, 171);
    let out = send_and_wait(&s, &file);
    let err = json_error(&out, 7);
    assert!(
        err["message"].as_str().unwrap().contains("expired"),
        "{err}"
    );
}
