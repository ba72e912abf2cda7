//! The same contract checked against both stores. "Crash" is
//! [`MemoryStore::crash`] for the memory store and closing and reopening
//! the directory for SQLite (whose recovery then runs).

use std::path::Path;

use pickup_proto::{Code, Sha1Digest};

use super::memory::MemoryStore;
use super::sqlite::SqliteStore;
use super::*;

pub(super) fn key(n: u8) -> LookupKey {
    LookupKey([n; 32])
}

/// Batch `n`: code key `n`, token key `100 + n`, owner `n`.
pub(crate) fn new_batch<'a>(n: u8, files: &'a [NewFile<'a>], expires_at: u64) -> NewBatch<'a> {
    NewBatch {
        code: Code::from_parts(13, u128::from(n)).unwrap(),
        code_key: key(n),
        token_key: key(100 + n),
        owner: OwnerId([n; 32]),
        created_at: 0,
        expires_at,
        // Tests of staleness set their own.
        stale_at: expires_at,
        files,
        open: false,
    }
}

pub(super) fn live(l: Lookup) -> Batch {
    match l {
        Lookup::Live(b) => b,
        other => panic!("expected a live batch, got {other:?}"),
    }
}

pub(crate) fn partial_of(b: &Batch, i: usize) -> PartialId {
    match b.files[i].content {
        FileContent::Partial { id, .. } => id,
        FileContent::Blob(_) => panic!("file {i} is complete"),
    }
}

/// The content identity of `data` (the SHA-1 the session verified).
pub(super) fn content(data: &[u8]) -> Content {
    Content {
        size: data.len() as u64,
        sha1: Sha1Digest::of(data),
        threshold: 2,
    }
}

fn read_all_blob(s: &dyn Store, id: BlobId, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len + 10];
    let n = s.read_blob(id, 0, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Runs the contract; `crash` turns the store into its state after a crash.
fn contract<S: Store>(mut store: S, crash: impl Fn(S) -> S) {
    let files = [
        NewFile {
            name: "a",
            size: 6,
            sha1: Sha1Digest::of(b"abcdef"),
            attrs: None,
        },
        NewFile {
            name: "b",
            size: 0,
            sha1: Sha1Digest::EMPTY,
            attrs: None,
        },
    ];
    let b = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    assert_eq!(b.files.len(), 2);
    assert!(!b.ready());
    // The empty file is complete from the start, with no blob of its own.
    assert_eq!(b.files[1].content, FileContent::Blob(BlobId::EMPTY));
    assert!(store.code_taken(&key(1)).unwrap());
    assert!(!store.code_taken(&key(2)).unwrap());
    assert_eq!(live(store.find_by_code(&key(1), 10).unwrap()), b);
    assert_eq!(live(store.find_by_token(&key(101), 10).unwrap()).id, b.id);
    assert_eq!(store.find_by_code(&key(1), 1000).unwrap(), Lookup::Expired);
    assert_eq!(store.find_by_code(&key(9), 10).unwrap(), Lookup::Unknown);
    assert_eq!(store.find_by_token(&key(1), 10).unwrap(), Lookup::Unknown);
    // Announced bytes are not stored bytes: nothing is held yet.
    assert_eq!(
        store.usage().unwrap(),
        Usage {
            bytes: 0,
            batches: 1
        }
    );

    // Only synced bytes survive a crash.
    let p = partial_of(&b, 0);
    store.write_partial(p, 0, b"abc").unwrap();
    store.sync_partial(p, 3, None).unwrap();
    assert_eq!(store.usage().unwrap().bytes, 3, "durable bytes are stored");
    store.write_partial(p, 3, b"de").unwrap();
    store = crash(store);
    let b = live(store.find_by_code(&key(1), 10).unwrap());
    assert_eq!(
        b.files[0].content,
        FileContent::Partial { id: p, durable: 3 }
    );
    assert_eq!(b.received(), 3);
    let mut buf = [0u8; 10];
    assert_eq!(store.read_partial(p, 0, &mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");

    // Reset throws everything away. Pieces are written one after another
    // (an empty one is nothing).
    store.reset_partial(p).unwrap();
    assert_eq!(store.read_partial(p, 0, &mut buf).unwrap(), 0);
    store
        .write_partial_pieces(p, 0, &[b"ab", b"", b"cde"])
        .unwrap();
    store.write_partial_pieces(p, 5, &[b"f"]).unwrap();
    let blob_a = store
        .complete_file(
            FileRef {
                batch: b.id,
                index: 0,
            },
            p,
            &content(b"abcdef"),
        )
        .unwrap();
    let blob_e = BlobId::EMPTY;
    store = crash(store);
    let b = live(store.find_by_code(&key(1), 10).unwrap());
    assert!(b.ready());
    assert_eq!(b.files[0].content, FileContent::Blob(blob_a));
    assert_eq!(read_all_blob(&store, blob_a, 6), b"abcdef");
    assert_eq!(read_all_blob(&store, blob_e, 0), b"");
    assert_eq!(store.usage().unwrap().bytes, 6);

    // A second batch: the same bytes share the blob; the same size and
    // SHA-1 over other bytes (as a collision would be) gets its own; a
    // proof links.
    let files2 = [
        NewFile {
            name: "same",
            size: 6,
            sha1: Sha1Digest::of(b"abcdef"),
            attrs: None,
        },
        NewFile {
            name: "collides",
            size: 6,
            sha1: Sha1Digest::of(b"abcdef"),
            attrs: None,
        },
        NewFile {
            name: "linked",
            size: 6,
            sha1: Sha1Digest::of(b"abcdef"),
            attrs: None,
        },
    ];
    let b2 = store.create_batch(&new_batch(2, &files2, 2000)).unwrap();
    let (q0, q1, q2) = (partial_of(&b2, 0), partial_of(&b2, 1), partial_of(&b2, 2));
    store.write_partial(q0, 0, b"abcdef").unwrap();
    let shared = store
        .complete_file(
            FileRef {
                batch: b2.id,
                index: 0,
            },
            q0,
            &content(b"abcdef"),
        )
        .unwrap();
    assert_eq!(shared, blob_a);
    store.write_partial(q1, 0, b"ABCDEF").unwrap();
    let other = store
        .complete_file(
            FileRef {
                batch: b2.id,
                index: 1,
            },
            q1,
            &content(b"abcdef"),
        )
        .unwrap();
    assert_ne!(other, blob_a);
    assert_eq!(read_all_blob(&store, other, 6), b"ABCDEF");
    let cands = store.candidates(6, &Sha1Digest::of(b"abcdef"), 4).unwrap();
    assert_eq!(cands.len(), 2);
    assert_eq!(
        store
            .candidates(6, &Sha1Digest::of(b"abcdef"), 1)
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .link_file(
            FileRef {
                batch: b2.id,
                index: 2
            },
            blob_a
        )
        .unwrap());
    assert!(live(store.find_by_code(&key(2), 10).unwrap()).ready());
    // Completing or linking a file twice is refused.
    assert!(store
        .link_file(
            FileRef {
                batch: b2.id,
                index: 2
            },
            blob_a
        )
        .is_err());
    assert!(store
        .complete_file(
            FileRef {
                batch: b2.id,
                index: 0
            },
            q0,
            &content(b"abcdef")
        )
        .is_err());
    let _ = q2;

    // Expiry: batch 1 goes; blob_a stays (batch 2 refers to it), and the
    // empty content is no blob to collect.
    let stats = store.sweep(1500, 0).unwrap();
    assert_eq!((stats.batches, stats.blobs, stats.partials), (1, 0, 0));
    assert_eq!(store.find_by_code(&key(1), 1500).unwrap(), Lookup::Expired);
    assert!(store.code_taken(&key(1)).unwrap());
    assert_eq!(read_all_blob(&store, blob_a, 6), b"abcdef");
    assert_eq!(store.read_blob(blob_e, 0, &mut buf).unwrap(), 0);
    // A batch with an unfinished upload: its partial goes with it.
    let b3 = store
        .create_batch(&new_batch(3, &files[..1], 1800))
        .unwrap();
    store.write_partial(partial_of(&b3, 0), 0, b"ab").unwrap();
    store.sync_partial(partial_of(&b3, 0), 2, None).unwrap();
    let stats = store.sweep(2500, 0).unwrap();
    assert_eq!((stats.batches, stats.blobs, stats.partials), (2, 2, 1));
    assert!(store
        .candidates(6, &Sha1Digest::of(b"abcdef"), 4)
        .unwrap()
        .is_empty());
    assert!(!store
        .link_file(
            FileRef {
                batch: b3.id,
                index: 0
            },
            blob_a
        )
        .unwrap_or(false));
    assert_eq!(
        store.usage().unwrap(),
        Usage {
            bytes: 0,
            batches: 0
        }
    );
    // Expired codes are forgotten after a while.
    let stats = store.sweep(2500, 1900).unwrap();
    assert_eq!(stats.forgotten, 2);
    assert_eq!(store.find_by_code(&key(1), 2500).unwrap(), Lookup::Unknown);
    assert_eq!(store.find_by_code(&key(2), 2500).unwrap(), Lookup::Expired);
    store = crash(store);
    assert_eq!(store.find_by_code(&key(2), 2500).unwrap(), Lookup::Expired);
}

/// Empty files: 1,000 of them in one batch are complete at creation and
/// share [`BlobId::EMPTY`] (no blob each); an empty file announced with
/// another SHA-1 stays a partial upload; one that a relay kept as a partial
/// upload (before empty content was shared) completes as the empty content.
fn empty_files<S: Store>(store: &S, blobs: impl Fn() -> usize) {
    let names: Vec<String> = (0..1000).map(|i| format!("e{i}")).collect();
    let files: Vec<NewFile<'_>> = names
        .iter()
        .map(|name| NewFile {
            name,
            size: 0,
            sha1: Sha1Digest::EMPTY,
            attrs: None,
        })
        .collect();
    let b = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    assert!(b.ready());
    assert!(b
        .files
        .iter()
        .all(|f| f.content == FileContent::Blob(BlobId::EMPTY)));
    assert_eq!(live(store.find_by_code(&key(1), 10).unwrap()), b);
    assert_eq!(read_all_blob(store, BlobId::EMPTY, 0), b"");
    assert_eq!(blobs(), 0);
    assert!(store
        .candidates(0, &Sha1Digest::EMPTY, 4)
        .unwrap()
        .is_empty());
    let odd = [NewFile {
        name: "odd",
        size: 0,
        sha1: Sha1Digest::of(b"not empty"),
        attrs: None,
    }];
    let b2 = store.create_batch(&new_batch(2, &odd, 1000)).unwrap();
    let p = partial_of(&b2, 0);
    let file = FileRef {
        batch: b2.id,
        index: 0,
    };
    // The store does not verify: completing it as the empty content (as
    // the session would after checking an empty file's SHA-1) shares it.
    assert_eq!(
        store.complete_file(file, p, &content(b"")).unwrap(),
        BlobId::EMPTY
    );
    assert!(live(store.find_by_code(&key(2), 10).unwrap()).ready());
    assert_eq!(blobs(), 0);
    assert_eq!(store.usage().unwrap().bytes, 0);
    let stats = store.sweep(1000, 0).unwrap();
    assert_eq!((stats.batches, stats.blobs, stats.partials), (2, 0, 0));
    assert_eq!(read_all_blob(store, BlobId::EMPTY, 0), b"");
}

#[test]
fn empty_files_share_the_empty_content() {
    let memory = MemoryStore::new();
    empty_files(&memory, || memory.blob_count());
    let dir = tempfile::tempdir().unwrap();
    let sqlite = reopen(dir.path());
    let blob_dir = dir.path().join("blobs");
    empty_files(&sqlite, || std::fs::read_dir(&blob_dir).unwrap().count());
}

/// Candidates come at most `limit` at a time, however many blobs share a
/// size and SHA-1 (as SHA-1 collisions would).
fn candidates_are_limited<S: Store>(store: &S) {
    let sha1 = Sha1Digest::of(b"abcd");
    let files: Vec<NewFile<'_>> = (0..10)
        .map(|_| NewFile {
            name: "c",
            size: 4,
            sha1,
            attrs: None,
        })
        .collect();
    let b = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    for i in 0..10u8 {
        let p = partial_of(&b, usize::from(i));
        store.write_partial(p, 0, &[i; 4]).unwrap();
        let file = FileRef {
            batch: b.id,
            index: u16::from(i),
        };
        store.complete_file(file, p, &content(b"abcd")).unwrap();
    }
    assert_eq!(store.candidates(4, &sha1, 4).unwrap().len(), 4);
    assert_eq!(store.candidates(4, &sha1, 100).unwrap().len(), 10);
}

#[test]
fn candidates_are_fetched_up_to_a_limit() {
    candidates_are_limited(&MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    candidates_are_limited(&reopen(dir.path()));
}

/// Taking an upload returns the batch with what was made durable, and the
/// taker's own steps go on; an unknown batch is `NotFound`.
fn take_upload<S: Store>(store: &S) {
    let files = [NewFile {
        name: "t",
        size: 4,
        sha1: Sha1Digest::of(b"abcd"),
        attrs: None,
    }];
    let b = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    let p = partial_of(&b, 0);
    store.write_partial(p, 0, b"abcd").unwrap();
    store.sync_partial(p, 3, None).unwrap();
    let taken = store.take_upload(b.id).unwrap();
    assert_eq!(taken.files[0].received(), 3);
    assert_eq!(taken.id, b.id);
    store.sync_partial(p, 4, None).unwrap();
    let file = FileRef {
        batch: b.id,
        index: 0,
    };
    store.complete_file(file, p, &content(b"abcd")).unwrap();
    assert!(store.take_upload(b.id).unwrap().ready());
    assert!(matches!(
        store.take_upload(BatchId(9999)),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn taking_an_upload_reloads_its_batch() {
    take_upload(&MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    take_upload(&reopen(dir.path()));
}

/// The SHA-1 state recorded with a durable offset survives a crash, stays
/// when a sync records none, and is gone after a reset.
fn hash_states<S: Store>(mut store: S, crash: impl Fn(S) -> S) {
    use crate::running_sha1::{Midstate, RunningSha1};
    let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let files = [NewFile {
        name: "a",
        size: 300,
        sha1: Sha1Digest::of(&data),
        attrs: None,
    }];
    let b = store.create_batch(&new_batch(7, &files, 1000)).unwrap();
    let p = partial_of(&b, 0);
    let mut h = RunningSha1::new();
    h.update(&data[..200]);
    let m = h.midstate();
    assert_eq!(m.len, 192);
    store.write_partial(p, 0, &data[..250]).unwrap();
    // A state past the durable offset would describe bytes a crash drops.
    assert!(store.sync_partial(p, 100, Some(&m)).is_err());
    store.sync_partial(p, 200, Some(&m)).unwrap();
    store.sync_partial(p, 250, None).unwrap();
    store = crash(store);
    assert_eq!(store.partial_hash_state(p).unwrap(), Some(m));
    let mut again = RunningSha1::from_midstate(m);
    again.update(&data[192..]);
    assert_eq!(again.digest(), Sha1Digest::of(&data));
    store.reset_partial(p).unwrap();
    let after_reset = store.partial_hash_state(p).unwrap();
    assert!(
        after_reset.is_none_or(|s| s == Midstate::START),
        "{after_reset:?}"
    );
    assert!(store.partial_hash_state(PartialId(9_999)).is_err());
}

#[test]
fn memory_store_keeps_the_contract() {
    contract(MemoryStore::new(), |s| {
        s.crash();
        s
    });
    hash_states(MemoryStore::new(), |s| {
        s.crash();
        s
    });
}

pub(super) fn reopen(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir).unwrap().0
}

#[test]
fn sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    contract(reopen(&path), |s| {
        drop(s);
        reopen(&path)
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    hash_states(reopen(&path), |s| {
        drop(s);
        reopen(&path)
    });
}

#[test]
fn sqlite_recovery_truncates_moves_back_and_removes_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(dir.path());
    let files = [
        NewFile {
            name: "a",
            size: 4,
            sha1: Sha1Digest::of(b"abcd"),
            attrs: None,
        },
        NewFile {
            name: "b",
            size: 2,
            sha1: Sha1Digest::of(b"xy"),
            attrs: None,
        },
    ];
    let b = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    let (p0, p1) = (partial_of(&b, 0), partial_of(&b, 1));
    store.write_partial(p0, 0, b"abcd").unwrap();
    store.sync_partial(p0, 2, None).unwrap();
    store.write_partial(p1, 0, b"xy").unwrap();
    store.sync_partial(p1, 2, None).unwrap();
    drop(store);
    // A crash between rename and commit of file 1's completion, and junk.
    let partial_dir = dir.path().join("partial");
    let blob_dir = dir.path().join("blobs");
    std::fs::rename(
        partial_dir.join(p1.0.to_string()),
        blob_dir.join(p1.0.to_string()),
    )
    .unwrap();
    std::fs::write(partial_dir.join("999"), b"junk").unwrap();
    std::fs::write(blob_dir.join("not-a-number"), b"junk").unwrap();
    let (store, rec) = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(
        (rec.truncated, rec.moved_back, rec.orphans, rec.partials),
        (1, 1, 2, 2)
    );
    assert_eq!(
        std::fs::metadata(partial_dir.join(p0.0.to_string()))
            .unwrap()
            .len(),
        2
    );
    let mut buf = [0u8; 8];
    assert_eq!(store.read_partial(p1, 0, &mut buf).unwrap(), 2);
    assert!(!partial_dir.join("999").exists());
    // Names never reach the disk: only ids do.
    let names: Vec<String> = std::fs::read_dir(&partial_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.parse::<u64>().is_ok()), "{names:?}");
}

#[test]
fn sqlite_store_opens_a_database_of_an_earlier_relay() {
    // Blobs used to carry a SHA-256 column; deduplication compares bytes now.
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(dir.path());
    let files = [NewFile {
        name: "a",
        size: 4,
        sha1: Sha1Digest::of(b"abcd"),
        attrs: None,
    }];
    let b = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    let p = partial_of(&b, 0);
    store.write_partial(p, 0, b"abcd").unwrap();
    let file = FileRef {
        batch: b.id,
        index: 0,
    };
    let blob = store.complete_file(file, p, &content(b"abcd")).unwrap();
    drop(store);
    let db = rusqlite::Connection::open(dir.path().join("relay.sqlite")).unwrap();
    db.execute_batch(
        "ALTER TABLE blobs ADD COLUMN sha256 BLOB NOT NULL DEFAULT x'00';
         UPDATE blobs SET sha256 = zeroblob(32);
         ALTER TABLE partials DROP COLUMN hashed;",
    )
    .unwrap();
    drop(db);
    let store = reopen(dir.path());
    assert_eq!(read_all_blob(&store, blob, 4), b"abcd");
    // New blobs are written without the old column.
    let b2 = store.create_batch(&new_batch(2, &files, 1000)).unwrap();
    let p2 = partial_of(&b2, 0);
    store.write_partial(p2, 0, b"wxyz").unwrap();
    let file2 = FileRef {
        batch: b2.id,
        index: 0,
    };
    let blob2 = store.complete_file(file2, p2, &content(b"abcd")).unwrap();
    assert_ne!(
        blob2, blob,
        "other bytes under the same SHA-1 get their own blob"
    );
    assert_eq!(read_all_blob(&store, blob2, 4), b"wxyz");
    assert_eq!(store.usage().unwrap().bytes, 8);
    // Partials of an earlier relay gained a hash state, none at first.
    let b3 = store.create_batch(&new_batch(3, &files, 1000)).unwrap();
    assert_eq!(store.partial_hash_state(partial_of(&b3, 0)).unwrap(), None);
}

#[test]
fn sqlite_usage_counters_match_a_recount() {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(dir.path());
    let files = [
        NewFile {
            name: "a",
            size: 3,
            sha1: Sha1Digest::of(b"abc"),
            attrs: None,
        },
        NewFile {
            name: "b",
            size: 3,
            sha1: Sha1Digest::of(b"abc"),
            attrs: None,
        },
    ];
    let b = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    let (p0, p1) = (partial_of(&b, 0), partial_of(&b, 1));
    store.write_partial(p0, 0, b"abc").unwrap();
    store.write_partial(p1, 0, b"abc").unwrap();
    let f = |index| FileRef { batch: b.id, index };
    let blob = store.complete_file(f(0), p0, &content(b"abc")).unwrap();
    // Same bytes: shared, so 3 bytes are held, not 6.
    assert_eq!(
        store.complete_file(f(1), p1, &content(b"abc")).unwrap(),
        blob
    );
    let b2 = store.create_batch(&new_batch(2, &files[..1], 500)).unwrap();
    assert!(store
        .link_file(
            FileRef {
                batch: b2.id,
                index: 0
            },
            blob
        )
        .unwrap());
    let b3 = store.create_batch(&new_batch(3, &files[..1], 500)).unwrap();
    // Durable bytes of a partial upload count; announced ones do not.
    let p3 = partial_of(&b3, 0);
    store.write_partial(p3, 0, b"ab").unwrap();
    store.sync_partial(p3, 2, None).unwrap();
    let live = store.usage().unwrap();
    assert_eq!(
        live,
        Usage {
            bytes: 5,
            batches: 3
        }
    );
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(store.usage().unwrap(), live);
    store.sweep(600, 0).unwrap();
    assert_eq!(
        store.usage().unwrap(),
        Usage {
            bytes: 3,
            batches: 1
        }
    );
    let _ = b3;
}

/// Incomplete batches go at `stale_at` unless kept; complete ones stay
/// until `expires_at`.
fn stale_batches<S: Store>(store: &S) {
    let files = [NewFile {
        name: "a",
        size: 3,
        sha1: Sha1Digest::of(b"abc"),
        attrs: None,
    }];
    let mut stalled = new_batch(1, &files, 1000);
    stalled.stale_at = 100;
    let stalled = store.create_batch(&stalled).unwrap();
    let mut kept = new_batch(2, &files, 1000);
    kept.stale_at = 100;
    let kept = store.create_batch(&kept).unwrap();
    let mut done = new_batch(3, &files, 1000);
    done.stale_at = 100;
    let done = store.create_batch(&done).unwrap();
    let p = partial_of(&done, 0);
    store.write_partial(p, 0, b"abc").unwrap();
    let file = FileRef {
        batch: done.id,
        index: 0,
    };
    store.complete_file(file, p, &content(b"abc")).unwrap();

    assert_eq!(store.sweep(99, 0).unwrap().batches, 0);
    store.keep_incomplete(kept.id, 200).unwrap();
    // An earlier time never brings it forward.
    store.keep_incomplete(kept.id, 50).unwrap();
    assert_eq!(store.sweep(100, 0).unwrap().batches, 1);
    assert_eq!(store.find_by_code(&key(1), 100).unwrap(), Lookup::Expired);
    assert_eq!(live(store.find_by_code(&key(2), 150).unwrap()).id, kept.id);
    assert!(live(store.find_by_code(&key(3), 150).unwrap()).ready());
    assert_eq!(store.sweep(200, 0).unwrap().batches, 1);
    assert_eq!(store.find_by_code(&key(2), 200).unwrap(), Lookup::Expired);
    assert!(live(store.find_by_code(&key(3), 200).unwrap()).ready());
    assert_eq!(stalled.files.len(), 1);
}

#[test]
fn incomplete_batches_without_progress_go_stale() {
    stale_batches(&MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    stale_batches(&reopen(dir.path()));
}

#[test]
fn pg_store_keeps_the_contract() {
    let Some(fx) = crate::store::postgres::tests::Fixture::new("pg_store_keeps_the_contract")
    else {
        return;
    };
    contract(fx.open(), |s| {
        drop(s);
        fx.open()
    });
    let Some(fx) = crate::store::postgres::tests::Fixture::new("pg_store_keeps_hash_states") else {
        return;
    };
    hash_states(fx.open(), |s| {
        drop(s);
        fx.open()
    });
}

#[test]
fn pg_store_shares_empty_content_and_limits_candidates() {
    let Some(fx) = crate::store::postgres::tests::Fixture::new("pg_store_shares_empty_content")
    else {
        return;
    };
    empty_files(&fx.open(), || fx.blob_files());
    let Some(fx) = crate::store::postgres::tests::Fixture::new("pg_store_limits_candidates") else {
        return;
    };
    candidates_are_limited(&fx.open());
}

#[test]
fn pg_store_takes_uploads_and_sweeps_stale_batches() {
    let Some(fx) = crate::store::postgres::tests::Fixture::new("pg_store_takes_uploads") else {
        return;
    };
    take_upload(&fx.open());
    let Some(fx) = crate::store::postgres::tests::Fixture::new("pg_store_sweeps_stale_batches")
    else {
        return;
    };
    stale_batches(&fx.open());
}
