//! The `pickup` CLI as a new user meets it (issue 18, items 1, 2, 4, 5 and
//! 9): an unreachable relay, a closed stdout, options before the
//! subcommand, codes typed by hand, and errors under `--json`. Real
//! binaries, loopback only, every wait bounded.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use pickup_tests::e2e::{json, pickup, run, run_json, stderr, stdout, TempDir, PATIENCE};
use pickup_tests::relay_process::RelayProcess;

/// A loopback port nothing listens on (one we bound and closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Sends one small file and returns its code as printed.
fn send_one(state: &Path, relay: &RelayProcess, dir: &Path) -> String {
    let file = dir.join("notes.txt");
    std::fs::write(&file, "remember the milk\n").unwrap();
    let sent = run_json(
        pickup(state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&file),
    );
    sent["code"].as_str().unwrap().to_string()
}

/// Runs `cmd` with its stdout a pipe whose reader is already gone, as
/// `cmd | head -0` does; returns the exit code and stderr.
fn with_closed_stdout(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut { err }, &mut text);
        text
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {PATIENCE:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap())
}

/// Item 1: the first connection fails at once, with one line that names
/// the address and what to check, and exit code 4 (link). The default
/// policy would retry ten times over about 48 s; a bounded run that ends
/// with this message shows the retrying was skipped.
#[test]
fn unreachable_relay_fails_at_once_with_one_line() {
    let work = TempDir::new("cli-ux");
    let state = work.path().join("state");
    let file = work.path().join("x");
    std::fs::write(&file, b"x").unwrap();
    let port = closed_port();
    let tcp = format!("127.0.0.1:{port}");
    let want = format!(
        "pickup: error: cannot reach the relay at tcp://{tcp}: connection refused \u{2014} is `pickup-relay serve` running there?\n"
    );
    for args in [
        vec!["send", "--relay", &tcp, file.to_str().unwrap()],
        vec![
            "get",
            "--relay",
            &tcp,
            "ZZZZZ-ZZZZ-ZZZZ",
            "-o",
            work.path().to_str().unwrap(),
        ],
        vec!["info", "--relay", &tcp, "ZZZZZ-ZZZZ-ZZZZ"],
    ] {
        let out = run(pickup(&state).args(&args));
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), want, "{args:?}");
        assert_eq!(stdout(&out), "", "{args:?}");
    }
    // A serial port that does not exist is the same kind of failure.
    let missing = work.path().join("no-such-tty");
    let serial = format!("serial:{}", missing.display());
    let out = run(pickup(&state).args(["send", "--relay", &serial, file.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "pickup: error: cannot reach the relay at {serial}@115200: "
        )),
        "{err}"
    );
    assert!(err.contains("is the device plugged in"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Item 2: a reader that went away (`| head -0`) ends the command quietly
/// with exit code 0, not a panic with 101.
#[test]
fn closed_stdout_exits_quietly() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-ux");
    let state = work.path().join("state");
    let code = send_one(&state, &relay, work.path());
    let dest = work.path().join("dest");
    for args in [
        vec!["info", "--relay", &relay.tcp(), &code],
        vec!["info", "--json", "--relay", &relay.tcp(), &code],
        vec![
            "get",
            "--relay",
            &relay.tcp(),
            &code,
            "-o",
            dest.to_str().unwrap(),
            "--force",
        ],
    ] {
        let (status, err) = with_closed_stdout(pickup(&state).args(&args));
        assert_eq!(status, Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
    // The download itself was done before the listing was cut short.
    assert!(dest.join("notes.txt").exists());
}

/// Item 4: global options go before or after the subcommand.
#[test]
fn global_options_before_the_subcommand() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-ux");
    let state = work.path().join("state");
    let file = work.path().join("a.txt");
    std::fs::write(&file, "a\n").unwrap();
    let other_state = work.path().join("other-state");
    // --state-dir, --relay, --json and -v all before `send`.
    let sent = run_json(
        pickup(&state)
            .args(["--state-dir", other_state.to_str().unwrap()])
            .args(["--relay", &relay.tcp(), "--json", "-v", "send"])
            .arg(&file),
    );
    let code = sent["code"].as_str().unwrap().to_string();
    // The family file is written in the state directory named up front.
    assert!(other_state.exists(), "--state-dir before send was not used");
    let info =
        run_json(pickup(&state).args(["-v", "--relay", &relay.tcp(), "--json", "info", &code]));
    assert_eq!(info["code"], code.as_str());
    // Mixed: some before, some after.
    let dest = work.path().join("dest");
    let got = run_json(pickup(&state).args([
        "--relay",
        &relay.tcp(),
        "get",
        &code,
        "--json",
        "-o",
        dest.to_str().unwrap(),
    ]));
    assert_eq!(got["files"].as_array().unwrap().len(), 1);
    // PICKUP_RELAY still works, and --relay after the subcommand still wins.
    let info = run_json(
        pickup(&state)
            .env("PICKUP_RELAY", format!("127.0.0.1:{}", closed_port()))
            .args(["info", "--json", "--relay", &relay.tcp(), &code]),
    );
    assert_eq!(info["ready"], true);
}

/// Item 5: codes are printed in groups without a dangling symbol, typed
/// back with spaces in any case and grouping, and a mistyped code says
/// what is wrong with it.
#[test]
fn codes_typed_by_hand() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-ux");
    let state = work.path().join("state");
    let code = send_one(&state, &relay, work.path());
    let symbols: String = code.chars().filter(|&c| c != '-').collect();
    assert_eq!(symbols.len(), 13, "{code}");
    let groups: Vec<&str> = code.split('-').collect();
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        [5, 4, 4],
        "{code}"
    );
    // Groups of four with spaces, as the issue typed it, in lower case.
    let spaced: String = symbols
        .to_lowercase()
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let info = run_json(pickup(&state).args(["info", "--json", "--relay", &relay.tcp(), &spaced]));
    assert_eq!(info["code"], code.as_str());
    // One symbol missing: the relay knows no such code, and pickup says
    // why that is likely.
    let short = &symbols[..12];
    let out = run(pickup(&state).args(["info", "--relay", &relay.tcp(), short]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("too short"), "{}", stderr(&out));
    // One symbol too many, the same way.
    let long = format!("{symbols}7");
    let out = run(pickup(&state).args(["info", "--relay", &relay.tcp(), &long]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("too long"), "{}", stderr(&out));
    // A symbol outside the alphabet is named.
    let typo = format!("{}U{}", &symbols[..6], &symbols[7..]);
    let out = run(pickup(&state).args(["info", "--relay", &relay.tcp(), &typo]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "pickup: error: invalid pickup code: invalid symbol 'U'\n"
    );
    let out = run(pickup(&state).args(["info", "--relay", &relay.tcp(), "AB C"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("too short"), "{}", stderr(&out));
}

/// Item 9: with `--json`, an error is one JSON object on stdout, and
/// stderr carries no error line.
#[test]
fn json_errors_are_json() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-ux");
    let state = work.path().join("state");
    let check = |args: &[&str], kind: &str, exit: i32| {
        let out = run(pickup(&state).args(args));
        assert_eq!(out.status.code(), Some(exit), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stdout(&out).lines().count(),
            1,
            "{args:?}: {}",
            stdout(&out)
        );
        let doc = json(&out);
        assert_eq!(doc["error"]["kind"], kind, "{doc}");
        assert_eq!(doc["error"]["exit"], exit, "{doc}");
        assert!(doc["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(
            !stderr(&out).contains("error"),
            "{args:?}: {}",
            stderr(&out)
        );
        doc
    };
    let doc = check(
        &["info", "--json", "--relay", &relay.tcp(), "ZZZZZ-ZZZZ-ZZZZ"],
        "refused",
        2,
    );
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown"));
    let closed = format!("127.0.0.1:{}", closed_port());
    check(
        &["--json", "info", "--relay", &closed, "ZZZZZ-ZZZZ-ZZZZ"],
        "link",
        4,
    );
    check(
        &["--json", "info", "--relay", &relay.tcp(), "NOT-A-CODE!"],
        "usage",
        1,
    );
    // clap's own errors too: a missing argument, an unknown option.
    check(&["--json", "info"], "usage", 1);
    check(&["info", "--json", "--bogus", "X"], "usage", 1);
    let missing = work.path().join("missing.bin");
    check(
        &[
            "send",
            "--json",
            "--relay",
            &relay.tcp(),
            missing.to_str().unwrap(),
        ],
        "local",
        5,
    );
}
