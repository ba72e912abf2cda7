//! `pickup send`'s hash cache (issue 19: a held file sent again costs one
//! pass over it, the proof, not two). Every check runs the real `pickup`
//! and `pickup-relay` binaries over loopback. What is observed is what the
//! CLI says with `-v` ("hash from cache") and what the receiver gets, never
//! timing.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

use std::path::Path;

use pickup_tests::e2e::{pickup, run, stderr, write_random, TempDir};
use pickup_tests::relay_process::RelayProcess;
use serde_json::Value;

/// `pickup send -v --json FILE`: the code and what was said on stderr.
fn send(state: &Path, relay: &RelayProcess, file: &Path) -> (String, String) {
    let out = run(pickup(state)
        .args(["send", "-v", "--json", "--relay", &relay.tcp()])
        .arg(file));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    (doc["code"].as_str().unwrap().to_string(), err)
}

/// The bytes of `name` in the batch `code`, fetched with `pickup get`
/// (which the relay serves only once every file is verified).
fn fetch(state: &Path, relay: &RelayProcess, code: &str, name: &str) -> Vec<u8> {
    let dest = state.with_extension(format!("got-{code}"));
    let out = run(pickup(state)
        .args(["get", "--relay", &relay.tcp(), code, "-o"])
        .arg(&dest));
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read(dest.join(name)).unwrap()
}

/// Item (1): the second send of a 64 MiB file takes its hash from the
/// cache, so the only pass over it is the proof the relay asks for.
#[test]
fn a_held_file_sent_again_is_read_once_for_its_proof() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-hash-cache");
    let state = work.path().join("state");
    let file = work.path().join("big.bin");
    let content = write_random(&file, 64 << 20, 19);
    let (_, first) = send(&state, &relay, &file);
    assert!(!first.contains("hash from cache"), "{first}");
    let (code, again) = send(&state, &relay, &file);
    assert_eq!(
        again.matches("big.bin: hash from cache").count(),
        1,
        "{again}"
    );
    assert_eq!(
        again
            .matches("big.bin: already at the relay, proving ownership")
            .count(),
        1,
        "{again}"
    );
    assert!(fetch(&state, &relay, &code, "big.bin") == content);
}

/// Writes `content` over `file` in place and sets its modification time
/// back to what it was: same size, same mtime, other bytes.
fn rewrite_keeping_mtime(file: &Path, content: &[u8]) {
    let mtime = std::fs::metadata(file).unwrap().modified().unwrap();
    std::fs::write(file, content).unwrap();
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(file).unwrap().modified().unwrap(), mtime);
}

/// Item (2), as a user meets it: a file rewritten with the same size and
/// its mtime set back is not taken from the cache (its status-change time
/// moved), and the batch carries the new bytes.
#[test]
fn a_file_rewritten_with_its_size_and_mtime_is_sent_with_its_new_bytes() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-hash-cache");
    let state = work.path().join("state");
    let file = work.path().join("notes.bin");
    write_random(&file, 3 << 20, 1);
    send(&state, &relay, &file);
    let new = {
        let mut b = std::fs::read(&file).unwrap();
        b[1_000_000] ^= 0xff;
        b
    };
    rewrite_keeping_mtime(&file, &new);
    let (code, said) = send(&state, &relay, &file);
    assert!(!said.contains("hash from cache"), "{said}");
    assert!(fetch(&state, &relay, &code, "notes.bin") == new);
}

/// Rewrites the cache entry of `file` to the file's current key with
/// `sha1`: what a filesystem that keeps every timestamp through a rewrite
/// would leave, or a hostile cache.
fn plant_stale_hash(state: &Path, file: &Path, sha1: &str) {
    use std::os::unix::fs::MetadataExt;
    let path = state.join("hash-cache.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let meta = std::fs::metadata(file).unwrap();
    let canonical = std::fs::canonicalize(file).unwrap();
    let entries = doc["entries"].as_array_mut().unwrap();
    let entry = entries
        .iter_mut()
        .find(|e| e["path"].as_str() == canonical.to_str())
        .unwrap();
    entry["ctime_ns"] = (i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()))
        .to_string()
        .into();
    entry["ino"] = meta.ino().into();
    entry["sha1"] = sha1.into();
    std::fs::write(&path, doc.to_string()).unwrap();
}

/// Item (2), the guarantee: a cached hash that is wrong for the file's
/// bytes, whether it names content the relay holds (the proof fails, the
/// upload that follows mismatches) or not (the upload mismatches), costs
/// one attempt: the entry is dropped, the file hashed again, and the new
/// batch arrives verified with the file's actual bytes.
#[test]
fn a_stale_cached_hash_is_dropped_and_the_file_hashed_again() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-hash-cache");
    let state = work.path().join("state");
    let file = work.path().join("data.bin");
    let old = write_random(&file, 2 << 20, 2);
    let old_sha1 = pickup_proto::Sha1Digest::of(&old).to_string();
    send(&state, &relay, &file);
    let cases = [(old_sha1.as_str(), true), (&"ab".repeat(20), false)];
    for (seed, (stale, held)) in (3..).zip(cases) {
        let new = {
            let mut b = old.clone();
            pickup_tests::sim::rng::SimRng::new(seed).fill(&mut b[..4096]);
            b
        };
        rewrite_keeping_mtime(&file, &new);
        send(&state, &relay, &file); // caches the new bytes' hash
        plant_stale_hash(&state, &file, stale);
        let (code, said) = send(&state, &relay, &file);
        assert!(said.contains("data.bin: hash from cache"), "{said}");
        // Held content is challenged before the mismatch (the new bytes
        // are held too, so the batch sent after it may be challenged).
        let before_retry = said.split("changed since").next().unwrap();
        assert_eq!(
            before_retry.contains("proving ownership"),
            held,
            "held {held}: {said}"
        );
        assert_eq!(
            said.matches("data.bin: changed since its hash was cached; hashing it again")
                .count(),
            1,
            "{said}"
        );
        assert!(
            fetch(&state, &relay, &code, "data.bin") == new,
            "held {held}"
        );
        // The entry now holds the right hash: the next send trusts it.
        let (_, next) = send(&state, &relay, &file);
        assert!(next.contains("data.bin: hash from cache"), "{next}");
        assert!(!next.contains("changed since"), "{next}");
    }
}

/// Item (3): a cache file that is not one is ignored (said with `-v`),
/// the send works, and a good cache replaces it.
#[test]
fn a_corrupt_hash_cache_is_ignored_and_replaced() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-hash-cache");
    let state = work.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let file = work.path().join("a.bin");
    let content = write_random(&file, 100_000, 4);
    let cache = state.join("hash-cache.json");
    let garbage: [&[u8]; 3] = [
        b"\xff\xfe{ not json",
        br#"{"version": 1, "entries": {"path": 7}}"#,
        br#"{"version": 1, "entries": [{"path": "/a", "sha1": 12}]}"#,
    ];
    for (i, bytes) in garbage.iter().enumerate() {
        std::fs::write(&cache, bytes).unwrap();
        let (code, said) = send(&state, &relay, &file);
        assert!(!said.contains("hash from cache"), "{said}");
        // A readable cache with unusable entries is no error to report.
        assert_eq!(said.contains("ignoring the hash cache"), i < 2, "{said}");
        assert!(fetch(&state, &relay, &code, "a.bin") == content);
        let (_, next) = send(&state, &relay, &file);
        assert!(next.contains("a.bin: hash from cache"), "{next}");
    }
}
