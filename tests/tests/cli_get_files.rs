//! What `pickup get` does to the output directory (issue 20, items 9 and
//! 10): its temporary files never share a name with an entry or a file it
//! did not create, and a file is reported only once the bytes on disk
//! verify.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use pickup_tests::e2e::{pickup, run, run_json, same_file, stderr, write_random, TempDir};
use pickup_tests::relay_process::RelayProcess;

/// Sends `names` from `src` in this order and returns the code.
fn send(state: &Path, relay: &RelayProcess, src: &Path, names: &[&str]) -> String {
    let sent = run_json(
        pickup(state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .args(names.iter().map(|n| src.join(n))),
    );
    sent["code"].as_str().unwrap().to_string()
}

fn get(state: &Path, relay: &RelayProcess, code: &str, dest: &Path) -> std::process::Output {
    run(pickup(state).args([
        "get",
        "--json",
        "--relay",
        &relay.tcp(),
        code,
        "-o",
        dest.to_str().unwrap(),
    ]))
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Item 9: `a.part` was `a`'s temporary name; in either order both files
/// arrive whole and nothing else is left.
#[test]
fn entries_named_like_temporary_files_arrive_whole() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-get-files");
    let state = work.path().join("state");
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // The longer one first: its bytes would be left behind the shorter's.
    write_random(&src.join("a.part"), 300_000, 21);
    write_random(&src.join("a"), 1_000, 22);
    for (i, order) in [["a.part", "a"], ["a", "a.part"]].iter().enumerate() {
        let code = send(&state, &relay, &src, order);
        let dest = work.path().join(format!("dest{i}"));
        let out = get(&state, &relay, &code, &dest);
        assert!(out.status.success(), "{order:?}: {}", stderr(&out));
        let wrong: Vec<String> = order
            .iter()
            .filter(|n| !dest.join(n).exists() || !same_file(&src.join(n), &dest.join(n)))
            .map(|n| match std::fs::metadata(dest.join(n)) {
                Ok(m) => format!("{n}: {} bytes on disk, {} sent", m.len(), len(&src.join(n))),
                Err(_) => format!("{n}: missing"),
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{order:?} reported verified, but {wrong:?}"
        );
        assert_eq!(listing(&dest), ["a", "a.part"], "{order:?}");
    }
}

/// Item 10: a `NAME.part` the command did not create (a browser's partial
/// download) is neither resumed from, truncated nor renamed, whether it is
/// longer than the file, shorter and different, or a true prefix of it.
#[test]
fn a_part_file_the_command_did_not_create_is_left_alone() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-get-files");
    let state = work.path().join("state");
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let names = ["longer.iso", "shorter.iso", "prefix.iso"];
    let mut bodies = Vec::new();
    for (i, name) in names.iter().enumerate() {
        bodies.push(write_random(&src.join(name), 100_000, 30 + i as u64));
    }
    let code = send(&state, &relay, &src, &names);

    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let theirs = [
        vec![7u8; 150_000],
        vec![7u8; 50_000],
        bodies[2][..40_000].to_vec(),
    ];
    for (name, bytes) in names.iter().zip(&theirs) {
        std::fs::write(dest.join(format!("{name}.part")), bytes).unwrap();
    }
    let out = get(&state, &relay, &code, &dest);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut wrong = Vec::new();
    for ((name, bytes), file) in names
        .iter()
        .zip(&theirs)
        .zip(got["files"].as_array().unwrap())
    {
        let part = dest.join(format!("{name}.part"));
        match std::fs::read(&part) {
            Err(_) => wrong.push(format!("{name}.part removed")),
            Ok(now) if now != *bytes => wrong.push(format!(
                "{name}.part changed ({} bytes, {} before)",
                now.len(),
                bytes.len()
            )),
            Ok(_) => {}
        }
        if file["reused"] != 0 {
            wrong.push(format!("{name}: {} bytes reused", file["reused"]));
        }
        assert!(same_file(&src.join(name), &dest.join(name)), "{name}");
    }
    assert!(wrong.is_empty(), "{wrong:?}");
    let mut expected: Vec<String> = names
        .iter()
        .flat_map(|n| [n.to_string(), format!("{n}.part")])
        .collect();
    expected.sort();
    assert_eq!(listing(&dest), expected);
}
