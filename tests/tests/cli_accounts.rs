//! Accounts, terminals and named files with the real binaries (issue 12's
//! acceptance): an operator adds users and a terminal; users log in, put
//! files under their names, share and revoke them; a second put of held
//! content sends almost nothing; a terminal with its device key works over
//! a serial line; no secret reaches the relay's log.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;
use std::sync::atomic::Ordering;

use pickup_tests::e2e::faulty::{Cable, LinkFaults, Proxy};
use pickup_tests::e2e::push::admin;
use pickup_tests::e2e::{pickup, run, run_with_input, stderr, stdout, write_random, TempDir};
use pickup_tests::relay_process::RelayProcess;

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}): {}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

/// A failure with exit code `exit` and one line on stderr, returned.
fn fails(out: Output, exit: i32) -> String {
    assert_eq!(out.status.code(), Some(exit), "{out:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    err
}

fn login(state: &Path, relay: &str, user: &str, password: &str) -> Output {
    run_with_input(
        pickup(state).args(["--relay", relay, "login", user, "--password-stdin"]),
        &format!("{password}\n"),
    )
}

#[test]
fn users_put_share_revoke_and_never_leak_secrets() {
    let relay = RelayProcess::start();
    let data = relay.data().to_path_buf();
    admin(
        &data,
        &["user", "add", "ada", "--password-stdin"],
        "ada secret 1\n",
    );
    admin(
        &data,
        &["user", "add", "bob", "--password-stdin"],
        "bob secret 2\n",
    );
    let work = TempDir::new("cli-accounts");
    let (ada, bob) = (work.path().join("ada"), work.path().join("bob"));
    let tcp = relay.tcp();

    // Wrong password: refused, one line, exit 2; nothing kept.
    let err = fails(login(&ada, &tcp, "ada", "wrong-guess-42"), 2);
    assert!(err.contains("authentication failed"), "{err}");
    ok(login(&ada, &tcp, "ada", "ada secret 1"));
    ok(login(&bob, &tcp, "bob", "bob secret 2"));
    let who = ok(run(pickup(&ada).args(["--relay", &tcp, "whoami"])));
    assert!(who.starts_with("ada at "), "{who}");

    // Put, then get by USER/NAME.
    let fw = work.path().join("fw.bin");
    let content = write_random(&fw, 3 << 20, 5);
    let names = ok(run(pickup(&ada).args(["--relay", &tcp, "put"]).arg(&fw)));
    assert_eq!(names.trim(), "fw.bin");
    let out_a = work.path().join("out-a");
    ok(run(pickup(&ada)
        .args(["--relay", &tcp, "get", "ada/fw.bin", "-o"])
        .arg(&out_a)));
    assert_eq!(std::fs::read(out_a.join("fw.bin")).unwrap(), content);

    // Bob cannot tell it from nothing.
    let get_bob = |dir: &str| {
        run(pickup(&bob)
            .args(["--relay", &tcp, "get", "ada/fw.bin", "-o"])
            .arg(work.path().join(dir)))
    };
    let not_found = fails(get_bob("out-b1"), 2);
    assert!(not_found.contains("not found: ada/fw.bin"), "{not_found}");
    let nothing = fails(
        run(pickup(&bob).args(["--relay", &tcp, "get", "ada/none.bin"])),
        2,
    );
    assert_eq!(
        not_found.replace("fw.bin", "X"),
        nothing.replace("none.bin", "X"),
        "a hidden name and a missing one read alike"
    );
    let rm = fails(run(pickup(&bob).args(["--relay", &tcp, "rm", "fw.bin"])), 2);
    assert!(rm.contains("not found"), "{rm}");

    // Shared: bob gets it. Revoked: not found again.
    ok(run(pickup(&ada).args([
        "--relay", &tcp, "share", "fw.bin", "--with", "bob",
    ])));
    ok(get_bob("out-b2"));
    assert_eq!(
        std::fs::read(work.path().join("out-b2/fw.bin")).unwrap(),
        content
    );
    ok(run(pickup(&ada).args([
        "--relay", &tcp, "share", "fw.bin", "--with", "bob", "--revoke",
    ])));
    assert!(fails(get_bob("out-b3"), 2).contains("not found"));

    // A second put of held content, through a counting proxy: the proof
    // of ownership replaces the bytes.
    let proxy = Proxy::start(relay.port(), LinkFaults::default(), 1);
    // Logins are kept per relay address, and the proxy is another one.
    ok(login(&ada, &proxy.addr(), "ada", "ada secret 1"));
    proxy.stats.up.store(0, Ordering::Relaxed);
    let copy = work.path().join("copy.bin");
    std::fs::write(&copy, &content).unwrap();
    ok(run(pickup(&ada)
        .args(["--relay", &proxy.addr(), "put", "--name", "copy.bin"])
        .arg(&copy)));
    let up = proxy.stats.up.load(Ordering::Relaxed);
    assert!(
        up * 100 < content.len() as u64,
        "a held 3 MiB file sent {up} bytes up (more than 1%)"
    );
    let listed = ok(run(pickup(&ada).args(["--relay", &tcp, "ls"])));
    assert!(
        listed.contains("copy.bin") && listed.contains("fw.bin"),
        "{listed}"
    );

    // Hostile names are refused before anything is sent.
    for name in ["a/b", "..", "x\u{1}y"] {
        let out = run(pickup(&ada)
            .args(["--relay", &tcp, "put", "--name", name])
            .arg(&copy));
        assert!(!out.status.success(), "{name:?} was accepted");
    }

    // rm, then a quota: a put over it is refused before a byte is stored,
    // and what the user holds stays.
    ok(run(pickup(&ada).args(["--relay", &tcp, "rm", "copy.bin"])));
    admin(&data, &["user", "quota", "ada", "--bytes", "4000000"], "");
    let big = work.path().join("big.bin");
    write_random(&big, 2 << 20, 6);
    let over = fails(
        run(pickup(&ada).args(["--relay", &tcp, "put"]).arg(&big)),
        2,
    );
    assert!(over.contains("quota"), "{over}");
    let listed = ok(run(pickup(&ada).args(["--relay", &tcp, "ls"])));
    assert!(
        listed.contains("fw.bin") && !listed.contains("big.bin"),
        "{listed}"
    );

    // Logout: the token dies at the relay.
    let token_file = std::fs::read_dir(&ada)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("login-"))
        // One login per relay address: this relay's, not the proxy's.
        .find(|e| {
            std::fs::read_to_string(e.path())
                .unwrap()
                .contains(&format!("\"tcp://{tcp}\""))
        })
        .expect("a kept login")
        .path();
    let kept = std::fs::read_to_string(&token_file).unwrap();
    let token: serde_json::Value = serde_json::from_str(&kept).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    ok(run(pickup(&ada).args(["--relay", &tcp, "logout"])));
    assert!(!token_file.exists());
    let after = fails(run(pickup(&ada).args(["--relay", &tcp, "whoami"])), 2);
    assert!(after.contains("not logged in"), "{after}");

    // No password and no token in the relay's log.
    let log = relay.log();
    for secret in [
        "ada secret 1",
        "bob secret 2",
        "wrong-guess-42",
        token.as_str(),
    ] {
        assert!(!log.contains(secret), "the relay logged a secret: {secret}");
    }
    assert!(log.contains("authenticated"), "{log}");
}

#[test]
fn a_terminal_with_its_device_key_puts_and_gets_over_serial() {
    let cable = Cable::new(LinkFaults::default(), 2);
    let relay = RelayProcess::builder().serial(&cable.relay_end).start();
    let data = relay.data().to_path_buf();
    admin(
        &data,
        &["user", "add", "ada", "--password-stdin"],
        "pw-ada-77\n",
    );
    let key = admin(
        &data,
        &["terminal", "add", "sensor-1", "--owner", "ada"],
        "",
    );
    let key = key.trim().to_owned();
    assert_eq!(key.len(), 32);
    let work = TempDir::new("cli-terminal");
    let state = work.path().join("state");
    let key_file = work.path().join("sensor-1.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let serial = format!("serial:{}@115200", cable.client_end);
    let as_terminal = |args: &[&str]| {
        let mut c = pickup(&state);
        c.args(["--relay", &serial, "--terminal", "sensor-1", "--key-file"])
            .arg(&key_file)
            .args(args);
        c
    };
    let log_file = work.path().join("log.txt");
    let content = write_random(&log_file, 60_000, 9);
    let put = ok(run(as_terminal(&["put"]).arg(&log_file)));
    assert_eq!(put.trim(), "log.txt");
    let out = work.path().join("out");
    ok(run(as_terminal(&["get", "ada/log.txt", "-o"]).arg(&out)));
    assert_eq!(std::fs::read(out.join("log.txt")).unwrap(), content);
    let who = ok(run(&mut as_terminal(&["whoami"])));
    assert!(who.starts_with("ada (terminal sensor-1)"), "{who}");

    // The wrong key: refused with one line, nothing stored.
    std::fs::write(&key_file, "00112233445566778899aabbccddeeff\n").unwrap();
    let err = fails(
        run(as_terminal(&["put", "--name", "other.txt"]).arg(&log_file)),
        2,
    );
    assert!(err.contains("authentication"), "{err}");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let listed = ok(run(&mut as_terminal(&["ls"])));
    assert!(!listed.contains("other.txt"), "{listed}");

    assert!(
        !relay.log().contains(&key),
        "the relay logged the device key"
    );
}
