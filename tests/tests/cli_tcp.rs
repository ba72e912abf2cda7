//! `pickup send/get/info` against a real relay over TCP (moved from
//! pickup-device's own tests: every launcher now lives in pickup-tests).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use pickup_proto::{Code, Sha1Digest};
use pickup_tests::both_backends;
use pickup_tests::e2e::faulty::{LinkFaults, Proxy};
use pickup_tests::e2e::{
    pickup, resume_states, run, run_json, same_file, stderr, stdout, write_random, Running, TempDir,
};
use pickup_tests::relay_process::RelayProcess;

fn sha1_hex(path: &Path) -> String {
    Sha1Digest::of(&std::fs::read(path).unwrap()).to_string()
}

both_backends! {
    fn send_info_get_round_trip(backend: Backend) {
        let relay = RelayProcess::builder().backend(&backend).start();
        let work = TempDir::new("cli-tcp");
        let state = work.path().join("state");
        let src = work.path().join("src");
        std::fs::create_dir(&src).unwrap();
        write_random(&src.join("photo.jpg"), 3 * 1024 * 1024 + 17, 1);
        std::fs::write(src.join("empty"), b"").unwrap();
        std::fs::write(src.join("notes.txt"), "remember the milk\n").unwrap();
        let names = ["photo.jpg", "empty", "notes.txt"];

        let sent = run_json(
            pickup(&state)
                .args(["send", "--json", "--relay", &relay.tcp()])
                .args(names.iter().map(|n| src.join(n))),
        );
        let code = sent["code"].as_str().unwrap().to_string();
        Code::parse(&code).unwrap();
        assert_eq!(sent["resumed"], false);
        let files = sent["files"].as_array().unwrap();
        assert_eq!(files.len(), 3);
        for (f, name) in files.iter().zip(names) {
            assert_eq!(f["name"], name);
            assert_eq!(f["sha1"], sha1_hex(&src.join(name)));
        }
        // A completed upload leaves no resume state behind.
        assert_eq!(resume_states(&state), 0);

        let info = run_json(pickup(&state).args(["info", "--json", "--relay", &relay.tcp(), &code]));
        assert_eq!(info["code"], code.as_str());
        assert_eq!(info["ready"], true);
        let total: u64 = names
            .iter()
            .map(|n| std::fs::metadata(src.join(n)).unwrap().len())
            .sum();
        assert_eq!(info["total_size"], total);
        assert_eq!(info["received"], total);
        for (f, name) in info["files"].as_array().unwrap().iter().zip(names) {
            assert_eq!(f["name"], name);
            assert_eq!(f["sha1"], sha1_hex(&src.join(name)));
        }

        // The code is typed by humans: case and hyphens do not matter.
        let sloppy = code.to_lowercase().replace('-', "");
        let dest = work.path().join("dest");
        let got = run_json(pickup(&state).args([
            "get",
            "--json",
            "--relay",
            &relay.tcp(),
            &sloppy,
            "-o",
            dest.to_str().unwrap(),
        ]));
        assert_eq!(got["files"].as_array().unwrap().len(), 3);
        for name in names {
            assert!(same_file(&src.join(name), &dest.join(name)), "{name}");
        }
        let part_files = std::fs::read_dir(&dest)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".part")
            })
            .count();
        assert_eq!(part_files, 0);
    }
}

#[test]
fn plain_send_prints_the_code_first_for_scripts() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-tcp");
    let file = work.path().join("a.bin");
    write_random(&file, 10_000, 2);
    let out = run(pickup(&work.path().join("s"))
        .args(["send", "--relay", &relay.tcp()])
        .arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let first = text.lines().next().unwrap();
    let code = Code::parse(first).unwrap();
    assert_eq!(code.to_string(), first, "grouped form");

    // `get` without --json lists the saved paths, one per line.
    let dest = work.path().join("d");
    let out = run(pickup(&work.path().join("s")).args([
        "get",
        "--relay",
        &relay.tcp(),
        first,
        "-o",
        dest.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), dest.join("a.bin").to_str().unwrap());
}

#[test]
fn get_never_overwrites_without_force() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-tcp");
    let state = work.path().join("state");
    let file = work.path().join("report.pdf");
    write_random(&file, 50_000, 3);
    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&file),
    );
    let code = sent["code"].as_str().unwrap();
    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("report.pdf"), b"my own report").unwrap();

    let get = |force: bool| {
        let mut c = pickup(&state);
        c.args([
            "get",
            "--relay",
            &relay.tcp(),
            code,
            "-o",
            dest.to_str().unwrap(),
        ]);
        if force {
            c.arg("--force");
        }
        run(&mut c)
    };
    let out = get(false);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    assert_eq!(
        std::fs::read(dest.join("report.pdf")).unwrap(),
        b"my own report"
    );

    // A same-size file with other content is caught by the hash, and kept.
    let mut same_size = std::fs::read(&file).unwrap();
    same_size[100] ^= 1;
    std::fs::write(dest.join("report.pdf"), &same_size).unwrap();
    let out = get(false);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(std::fs::read(dest.join("report.pdf")).unwrap(), same_size);

    let out = get(true);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(same_file(&file, &dest.join("report.pdf")));

    // Getting again into a directory that already has the identical file
    // succeeds without touching it.
    let out = get(false);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn names_from_the_relay_are_escaped_when_printed() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-tcp");
    let state = work.path().join("state");
    // Right-to-left override: shows as "evilexe.txt" if printed raw.
    let name = "evil\u{202e}txt.exe";
    let file = work.path().join(name);
    std::fs::write(&file, b"MZ").unwrap();
    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&file),
    );
    let code = sent["code"].as_str().unwrap();
    let out = run(pickup(&state).args(["info", "--relay", &relay.tcp(), code]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("evil\\u{202e}txt.exe"), "{text}");
    assert!(!text.contains('\u{202e}'), "{text}");
    assert!(text.contains(code), "{text}");
    assert!(text.contains("ready"), "{text}");
}

#[test]
fn exit_codes() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-tcp");
    let state = work.path().join("state");
    let code_of = |args: &[&str]| {
        let out = run(pickup(&state).args(args));
        let err = stderr(&out);
        (out.status.code(), err)
    };
    // Usage: no command, bad code text, bad relay address.
    assert_eq!(code_of(&[]).0, Some(1));
    assert_eq!(
        code_of(&["get", "--relay", &relay.tcp(), "not a code!"]).0,
        Some(1)
    );
    assert_eq!(
        code_of(&["info", "--relay", "http://x/y", "ABCD-EFGH"]).0,
        Some(1)
    );
    // Refused: a well-formed code the relay does not know.
    let (status, err) = code_of(&["get", "--relay", &relay.tcp(), "ZZZZ-ZZZZ-ZZZZ-Z"]);
    assert_eq!(status, Some(2), "{err}");
    assert!(err.starts_with("pickup: error: "), "{err}");
    assert_eq!(
        code_of(&["info", "--relay", &relay.tcp(), "ZZZZ-ZZZZ-ZZZZ-Z"]).0,
        Some(2)
    );
    // Local I/O: a file that does not exist.
    let missing = work.path().join("missing.bin");
    let (status, err) = code_of(&["send", "--relay", &relay.tcp(), missing.to_str().unwrap()]);
    assert_eq!(status, Some(5), "{err}");
    // Link: nothing listens there (a port we just closed).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let file = work.path().join("x");
    std::fs::write(&file, b"x").unwrap();
    let (status, err) = code_of(&[
        "send",
        "--relay",
        &format!("127.0.0.1:{closed}"),
        "--max-attempts",
        "1",
        file.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(4), "{err}");
    assert!(err.contains("cannot reach the relay"), "{err}");
    // Help is not an error.
    assert_eq!(code_of(&["--help"]).0, Some(0));
}

both_backends! {
    fn content_the_relay_holds_is_not_sent_again(backend: Backend) {
        let relay = RelayProcess::builder().backend(&backend).start();
        let proxy = Proxy::start(relay.port(), LinkFaults::default(), 1);
        let work = TempDir::new("cli-tcp");
        let state = work.path().join("state");
        let original = work.path().join("original.iso");
        write_random(&original, 3 * 1024 * 1024, 9);
        let copy_dir = work.path().join("copy");
        std::fs::create_dir(&copy_dir).unwrap();
        let copy = copy_dir.join("same-bytes.iso");
        std::fs::copy(&original, &copy).unwrap();

        // Both sends from the same state directory to the same address: the
        // second joins the first's owner, to which the relay may reveal that it
        // holds the bytes (PROTOCOL.md §7.1).
        run_json(
            pickup(&state)
                .args(["send", "--json", "--relay", &proxy.addr()])
                .arg(&original),
        );
        let before = proxy.stats.up.load(std::sync::atomic::Ordering::SeqCst);
        let sent = run_json(
            pickup(&state)
                .args(["send", "--json", "--relay", &proxy.addr()])
                .arg(&copy),
        );
        let uploaded = proxy.stats.up.load(std::sync::atomic::Ordering::SeqCst) - before;
        assert!(
            uploaded < 64 * 1024,
            "{uploaded} bytes sent for a 3 MiB file the relay holds"
        );

        let dest = work.path().join("dest");
        run_json(pickup(&state).args([
            "get",
            "--json",
            "--relay",
            &relay.tcp(),
            sent["code"].as_str().unwrap(),
            "-o",
            dest.to_str().unwrap(),
        ]));
        assert!(same_file(&original, &dest.join("same-bytes.iso")));
    }
}
#[test]
fn get_wait_downloads_once_the_upload_finishes() {
    let relay = RelayProcess::start();
    let proxy = Proxy::start(relay.port(), LinkFaults::default(), 1);
    proxy
        .rate
        .store(2 * 1024 * 1024, std::sync::atomic::Ordering::SeqCst);
    let work = TempDir::new("cli-tcp");
    let state = work.path().join("state");
    let file = work.path().join("slow.bin");
    write_random(&file, 6 * 1024 * 1024, 10);
    let sender = Running::spawn(
        pickup(&state)
            .args(["send", "--relay", &proxy.addr()])
            .arg(&file),
    );
    let code = sender.next_line();
    let info = run_json(pickup(&state).args(["info", "--json", "--relay", &relay.tcp(), &code]));
    assert_eq!(info["ready"], false, "the upload is still running");
    let dest = work.path().join("dest");
    let got = run_json(pickup(&state).args([
        "get",
        "--json",
        "--wait",
        "--relay",
        &relay.tcp(),
        &code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    assert_eq!(got["files"][0]["name"], "slow.bin");
    assert!(same_file(&file, &dest.join("slow.bin")));
    drop(sender);
}
