//! Directories, standard input and standard output (issue 18, item 3):
//! `pickup send DIR` sends the tree as `/`-separated paths, `get` recreates
//! it inside `-o`; `send - --name` and `get -o -` for one file; paths that
//! could climb out or collide are refused by the relay and by the client.
#![allow(clippy::unwrap_used)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use pickup_proto::{ErrorCode, Sha1Digest};
use pickup_tests::e2e::{pickup, run, run_json, stderr, write_random, TempDir};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::{Raw, Reply};

/// Every regular file below `dir` as (path from `dir`, bytes), sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(root, &path, out);
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into();
                out.push((rel, fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `src/photos` with nested directories, an empty file and a symlink.
fn make_tree(src: &Path) -> PathBuf {
    let top = src.join("photos");
    fs::create_dir_all(top.join("2026/winter/deep")).unwrap();
    fs::create_dir_all(top.join("empty-dir")).unwrap();
    write_random(&top.join("2026/winter/deep/a.jpg"), 200_000, 31);
    write_random(&top.join("2026/b.jpg"), 1_000, 32);
    fs::write(top.join("2026/winter/notes.txt"), "snow\n").unwrap();
    fs::write(top.join("empty"), b"").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc/passwd", top.join("link")).unwrap();
    top
}

/// Gets `code` into `dest`; returns the names `get --json` reported.
fn get_into(state: &Path, relay: &RelayProcess, code: &str, dest: &Path) -> Vec<String> {
    let got = run_json(pickup(state).args([
        "get",
        "--json",
        "--relay",
        &relay.tcp(),
        code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    got["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_directory_tree_round_trips_inside_the_output_directory() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-dirs-tree");
    let state = work.path().join("state");
    let top = make_tree(&work.path().join("src"));

    let out = run(pickup(&state)
        .args(["send", "--json", "--relay", &relay.tcp()])
        .arg(&top));
    assert!(out.status.success(), "{}", stderr(&out));
    // The symbolic link is left out, with one line saying so.
    #[cfg(unix)]
    assert_eq!(
        stderr(&out).matches("a symbolic link").count(),
        1,
        "{}",
        stderr(&out)
    );
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = sent["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    // Sorted at every level, named from the directory's parent.
    assert_eq!(
        names,
        [
            "photos/2026/b.jpg",
            "photos/2026/winter/deep/a.jpg",
            "photos/2026/winter/notes.txt",
            "photos/empty",
        ]
    );

    let dest = work.path().join("dest");
    let got = get_into(&state, &relay, sent["code"].as_str().unwrap(), &dest);
    assert_eq!(got, names, "get names files as the batch does");
    assert_eq!(tree(&dest.join("photos")), tree(&top));
    // Nothing but the tree: no temporary file left at the top.
    let top_level: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top_level, ["photos"]);
}

#[test]
fn send_dot_sends_the_current_directory() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-dirs-dot");
    let state = work.path().join("state");
    let top = make_tree(&work.path().join("src"));

    let sent = run_json(pickup(&state).current_dir(&top).args([
        "send",
        "--json",
        "--relay",
        &relay.tcp(),
        ".",
    ]));
    assert_eq!(sent["files"][0]["name"], "photos/2026/b.jpg");
    let dest = work.path().join("dest");
    get_into(&state, &relay, sent["code"].as_str().unwrap(), &dest);
    assert_eq!(tree(&dest.join("photos")), tree(&top));

    // An empty directory is an error of its own, not an empty batch.
    let empty = work.path().join("nothing");
    fs::create_dir(&empty).unwrap();
    let out = run(pickup(&state)
        .args(["send", "--relay", &relay.tcp()])
        .arg(&empty));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no files to send"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn hostile_or_colliding_paths_are_refused_by_the_relay() {
    let relay = RelayProcess::start();
    let mut raw = Raw::connect(relay.addr());
    raw.hello();
    let x = Sha1Digest::of(b"x");
    for name in [
        "../x", "a//b", "/abs", "a/./b", "a/../b", "a/", "a\\b", "a/b\\c",
    ] {
        raw.announce(&[(name, 1, x)]);
        assert_eq!(
            raw.recv(),
            Reply::Error(ErrorCode::InvalidName, 0),
            "{name:?}"
        );
    }
    // A file that is another's directory, in either order, and one path twice.
    for pair in [["a", "a/b"], ["a/b", "a"], ["d/e", "d/e"]] {
        raw.announce(&[(pair[0], 1, x), (pair[1], 1, x)]);
        assert!(
            matches!(raw.recv(), Reply::Error(ErrorCode::InvalidName, _)),
            "{pair:?}"
        );
    }
    // Paths that are fine still make a batch on the same connection.
    raw.announce(&[("a/b", 1, x), ("a/c/d", 1, x), ("ab", 1, x)]);
    assert!(matches!(raw.recv(), Reply::Grant(_)));
}

#[test]
fn hostile_or_colliding_paths_are_refused_by_the_client() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-dirs-refused");
    let state = work.path().join("state");
    let src = work.path().join("src");
    // `a` as a file and `a/b` from a directory named `a`.
    fs::create_dir_all(src.join("one")).unwrap();
    fs::write(src.join("one/a"), b"file").unwrap();
    fs::create_dir_all(src.join("two/a")).unwrap();
    fs::write(src.join("two/a/b"), b"below").unwrap();
    let out = run(pickup(&state)
        .args(["send", "--relay", &relay.tcp()])
        .args([src.join("one/a"), src.join("two/a")]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("one is the other's directory"),
        "{}",
        stderr(&out)
    );
    // A backslash is a separator elsewhere: not sendable as part of a name.
    #[cfg(unix)]
    {
        let dir = src.join("bs");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("a\\b"), b"x").unwrap();
        let out = run(pickup(&state)
            .args(["send", "--relay", &relay.tcp()])
            .arg(&dir));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot be sent as a file name"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn stdin_send_and_stdout_get_round_trip() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-dirs-stdio");
    let state = work.path().join("state");
    let input = work.path().join("input.bin");
    let data = write_random(&input, 300_000, 33);

    // `-` needs a name, and a name needs `-`.
    let out = run(pickup(&state).args(["send", "--relay", &relay.tcp(), "-"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--name"), "{}", stderr(&out));

    let sent = run_json(pickup(&state).stdin(File::open(&input).unwrap()).args([
        "send",
        "--json",
        "--relay",
        &relay.tcp(),
        "-",
        "--name",
        "dump.bin",
    ]));
    assert_eq!(sent["files"][0]["name"], "dump.bin");
    assert_eq!(sent["files"][0]["sha1"], Sha1Digest::of(&data).to_string());
    // The spooled copy is gone once the batch is sent.
    let spooled = fs::read_dir(&state)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("stdin")
        })
        .count();
    assert_eq!(spooled, 0);

    let code = sent["code"].as_str().unwrap();
    let out = run(pickup(&state).args(["get", "--relay", &relay.tcp(), code, "-o", "-"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "stdout differs from what was sent");

    // A JSON report would be mixed into the file's bytes.
    let out = run(pickup(&state).args(["get", "--json", "--relay", &relay.tcp(), code, "-o", "-"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--json and -o -")
            || String::from_utf8_lossy(&out.stdout).contains("--json and -o -")
    );

    // A batch of two files cannot go to stdout: refused, nothing written.
    let two = work.path().join("two");
    fs::create_dir(&two).unwrap();
    fs::write(two.join("a"), b"a").unwrap();
    fs::write(two.join("b"), b"b").unwrap();
    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&two),
    );
    let code = sent["code"].as_str().unwrap();
    let out = run(pickup(&state).args(["get", "--relay", &relay.tcp(), code, "-o", "-"]));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("more than one file"),
        "{}",
        stderr(&out)
    );
}
