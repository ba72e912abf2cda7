//! Issue 18, item 8: `pickup send` keeps a file's executable bit and
//! modification time, `pickup get` restores them on the verified file and
//! `pickup info` shows them; an announcement without them (an older
//! terminal, the firmware) still works and downloads with none applied.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pickup_proto::message::{Data, Fetch, FilePlan, Message, Plan};
use pickup_proto::{Code, Sha1Digest};
use pickup_tests::e2e::{pickup, run_json, TempDir};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::{Raw, Reply};

/// 2001-09-09 01:46:40 UTC: a time no file of this run has by chance.
const OLD: i64 = 1_000_000_000;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

fn get(state: &Path, relay: &RelayProcess, code: &str, dest: &Path) {
    run_json(pickup(state).args([
        "get",
        "--json",
        "--relay",
        &relay.tcp(),
        code,
        "-o",
        dest.to_str().unwrap(),
    ]));
}

fn info(state: &Path, relay: &RelayProcess, code: &str) -> serde_json::Value {
    run_json(pickup(state).args(["info", "--json", "--relay", &relay.tcp(), code]))
}

#[test]
fn an_old_executable_and_a_plain_file_keep_their_mode_and_time() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-meta");
    let state = work.path().join("state");
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let tool = src.join("tool.sh");
    fs::write(&tool, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o700)).unwrap();
    let old = UNIX_EPOCH + Duration::from_secs(OLD as u64);
    File::options()
        .write(true)
        .open(&tool)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let notes = src.join("notes.txt");
    fs::write(&notes, "remember the milk\n").unwrap();
    fs::set_permissions(&notes, fs::Permissions::from_mode(0o644)).unwrap();
    let notes_mtime = mtime(&notes);

    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&tool)
            .arg(&notes),
    );
    let code = sent["code"].as_str().unwrap().to_string();

    let shown = info(&state, &relay, &code);
    let files = shown["files"].as_array().unwrap();
    assert_eq!(files[0]["executable"], true);
    assert_eq!(files[0]["mtime"], OLD);
    assert_eq!(files[1]["executable"], false);

    // A terminal that predates attributes fetches the same batch: the relay
    // sends it nothing it cannot decode.
    let mut old_terminal = Raw::connect(relay.addr());
    old_terminal.hello();
    old_terminal.send(Message::Fetch(Fetch {
        code: Code::parse(&code).unwrap(),
    }));
    assert!(matches!(old_terminal.recv(), Reply::Manifest(_)));
    assert_eq!(old_terminal.recv(), Reply::Entry(0, "tool.sh".into()));
    assert_eq!(old_terminal.recv(), Reply::Entry(1, "notes.txt".into()));

    let dest = work.path().join("dest");
    get(&state, &relay, &code, &dest);
    let got_tool = dest.join("tool.sh");
    let got_notes = dest.join("notes.txt");
    assert_eq!(fs::read(&got_tool).unwrap(), fs::read(&tool).unwrap());
    // Executable for whoever the umask lets read it; never more.
    let m = mode(&got_tool);
    assert_eq!(m & 0o100, 0o100, "{m:o}");
    assert_eq!(m & 0o111, (m & 0o444) >> 2, "x where r: {m:o}");
    assert_eq!(mtime(&got_tool), old);
    // A plain file stays plain, and keeps its own time too.
    assert_eq!(mode(&got_notes) & 0o111, 0, "{:o}", mode(&got_notes));
    assert_eq!(
        mtime(&got_notes)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        notes_mtime.duration_since(UNIX_EPOCH).unwrap().as_secs()
    );
}

#[test]
fn an_announcement_without_attributes_still_works_and_applies_none() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-meta");
    let state = work.path().join("state");
    // An older terminal: no CAP_FILE_ATTRS in its Hello, no FileAttrs.
    let content = b"made by an older terminal\n";
    let mut raw = Raw::connect(relay.addr());
    raw.hello();
    raw.announce(&[("old.txt", content.len() as u64, Sha1Digest::of(content))]);
    let code = match raw.recv() {
        Reply::Grant(g) => g.code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        raw.recv(),
        Reply::Plan(FilePlan {
            index: 0,
            plan: Plan::Upload { offset: 0 }
        })
    );
    raw.send(Message::Data(Data {
        file: 0,
        offset: 0,
        bytes: content,
    }));
    for _ in 0..100 {
        match raw.recv() {
            Reply::Ack(_) | Reply::Verified(0) => {}
            Reply::Complete => break,
            other => panic!("{other:?}"),
        }
    }
    let code = code.to_string();

    let shown = info(&state, &relay, &code);
    let file = &shown["files"][0];
    assert_eq!(file["name"], "old.txt");
    assert!(
        file["executable"].is_null() && file["mtime"].is_null(),
        "{file}"
    );

    // Nothing is applied: the file keeps the time it was written at (no
    // earlier than a file made just before) and the mode it was created with.
    let dest = work.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let before = dest.join("before");
    fs::write(&before, b"").unwrap();
    get(&state, &relay, &code, &dest);
    let got = dest.join("old.txt");
    assert_eq!(fs::read(&got).unwrap(), content);
    assert!(mtime(&got) >= mtime(&before));
    assert_eq!(mode(&got) & 0o111, 0, "{:o}", mode(&got));
}
