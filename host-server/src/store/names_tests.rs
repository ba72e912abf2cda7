//! Users' named files (PROTOCOL.md §8) checked against both stores: binding,
//! atomic replacement with the old content kept for its readers, removal,
//! shares, usage, removal of a user, and the blob references that decide
//! what a sweep may collect. "Crash" is as in `tests.rs`.

use pickup_proto::Sha1Digest;

use super::memory::MemoryStore;
use super::postgres::PgStore;
use super::tests::{content, key, live, new_batch, partial_of, reopen};
use super::*;

/// A file's bytes and attributes, as a batch announces them.
struct Upload {
    name: &'static str,
    data: &'static [u8],
    attrs: Option<Attrs>,
}

fn up(name: &'static str, data: &'static [u8]) -> Upload {
    Upload {
        name,
        data,
        attrs: None,
    }
}

/// Creates batch `n` (owner `n`) expiring at `expires_at` and uploads the
/// first `complete` files; the rest stay partial.
fn upload_some<S: Store>(
    store: &S,
    n: u8,
    files: &[Upload],
    expires_at: u64,
    complete: usize,
) -> Batch {
    let new: Vec<NewFile<'_>> = files
        .iter()
        .map(|f| NewFile {
            name: f.name,
            size: f.data.len() as u64,
            sha1: Sha1Digest::of(f.data),
            attrs: f.attrs,
        })
        .collect();
    let b = store.create_batch(&new_batch(n, &new, expires_at)).unwrap();
    for (i, f) in files.iter().enumerate().take(complete) {
        if f.data.is_empty() {
            continue;
        }
        let p = partial_of(&b, i);
        store.write_partial(p, 0, f.data).unwrap();
        let file = FileRef {
            batch: b.id,
            index: i as u16,
        };
        store.complete_file(file, p, &content(f.data)).unwrap();
    }
    b
}

/// Batch `n` with every file uploaded.
fn upload<S: Store>(store: &S, n: u8, files: &[Upload], expires_at: u64) -> Batch {
    upload_some(store, n, files, expires_at, files.len())
}

/// A blob's whole content, or `NotFound` once collected.
fn read<S: Store>(store: &S, blob: BlobId) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = store.read_blob(blob, out.len() as u64, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn names<S: Store>(store: &S, owner: &str) -> Vec<String> {
    store
        .list_names(owner)
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect()
}

fn blob_of<S: Store>(store: &S, owner: &str, name: &str) -> BlobId {
    store.find_name(owner, name).unwrap().unwrap().blob
}

const RUN: Attrs = Attrs {
    executable: true,
    mtime: 1_700_000_000,
};

/// Bind, find, list, usage; the batch expires and the names stay; a
/// replacement is seen at once while the old content stays readable until
/// its keep time, then goes; names survive a crash; removal keeps the
/// content for its readers too.
fn bind_replace_remove<S: Store>(mut store: S, crash: impl Fn(S) -> S) -> S {
    let files = [
        Upload {
            attrs: Some(RUN),
            ..up("b.sh", b"hello")
        },
        up("a.txt", b"abc"),
        up("empty", b""),
    ];
    let b1 = upload(&store, 1, &files, 150);
    assert_eq!(store.bind_names("alice", b1.id, 100, 60).unwrap(), 3);
    assert_eq!(names(&store, "alice"), ["a.txt", "b.sh", "empty"]);
    assert!(store.list_names("bob").unwrap().is_empty());
    assert_eq!(store.find_name("bob", "a.txt").unwrap(), None);
    assert_eq!(store.find_name("alice", "c").unwrap(), None);
    let a = store.find_name("alice", "a.txt").unwrap().unwrap();
    let uploaded = live(store.find_by_code(&key(1), 10).unwrap());
    let FileContent::Blob(abc) = uploaded.files[1].content else {
        panic!("uploaded")
    };
    assert_eq!(
        a,
        NamedFile {
            owner: "alice".into(),
            name: "a.txt".into(),
            blob: abc,
            size: 3,
            sha1: Sha1Digest::of(b"abc"),
            attrs: None,
            updated_at: 100,
        }
    );
    assert_eq!(
        store.find_name("alice", "b.sh").unwrap().unwrap().attrs,
        Some(RUN)
    );
    assert_eq!(blob_of(&store, "alice", "empty"), BlobId::EMPTY);
    assert_eq!(
        store.name_usage("alice").unwrap(),
        NameUsage { bytes: 8, files: 3 }
    );
    assert_eq!(store.name_usage("bob").unwrap(), NameUsage::default());

    // The uploading batch expires: the named content stays, and counts.
    let stats = store.sweep(150, 0).unwrap();
    assert_eq!((stats.batches, stats.blobs), (1, 0));
    assert_eq!(read(&store, abc).unwrap(), b"abc");
    assert_eq!(
        read(&store, blob_of(&store, "alice", "b.sh")).unwrap(),
        b"hello"
    );
    assert_eq!(store.usage().unwrap().bytes, 8);
    assert!(matches!(
        store.bind_names("alice", b1.id, 160, 60),
        Err(StoreError::NotFound)
    ));

    // Replaced at 200: the new content is found at once; the old one is
    // kept for its readers until 260.
    let b2 = upload(&store, 2, &[up("a.txt", b"ABCD!")], 1000);
    assert_eq!(store.bind_names("alice", b2.id, 200, 60).unwrap(), 1);
    let a2 = store.find_name("alice", "a.txt").unwrap().unwrap();
    assert_ne!(a2.blob, abc);
    assert_eq!((a2.size, a2.sha1), (5, Sha1Digest::of(b"ABCD!")));
    assert_eq!(a2.updated_at, 200);
    assert_eq!(read(&store, a2.blob).unwrap(), b"ABCD!");
    assert_eq!(names(&store, "alice"), ["a.txt", "b.sh", "empty"]);
    assert_eq!(store.name_usage("alice").unwrap().bytes, 10);
    store = crash(store);
    let stats = store.sweep(259, 0).unwrap();
    assert_eq!((stats.released, stats.blobs), (0, 0));
    assert_eq!(
        read(&store, abc).unwrap(),
        b"abc",
        "readers of the old content finish"
    );
    let stats = store.sweep(260, 0).unwrap();
    assert_eq!((stats.released, stats.blobs), (1, 1));
    assert!(matches!(read(&store, abc), Err(StoreError::NotFound)));
    assert_eq!(read(&store, a2.blob).unwrap(), b"ABCD!");

    // Names survive a crash exactly.
    let before = store.list_names("alice").unwrap();
    store = crash(store);
    assert_eq!(store.list_names("alice").unwrap(), before);

    // Removed at 300, kept for 10 seconds.
    let hello = blob_of(&store, "alice", "b.sh");
    assert!(store.remove_name("alice", "b.sh", 300, 10).unwrap());
    assert!(!store.remove_name("alice", "b.sh", 300, 10).unwrap());
    assert!(!store.remove_name("bob", "a.txt", 300, 10).unwrap());
    assert_eq!(store.find_name("alice", "b.sh").unwrap(), None);
    assert_eq!(
        store.name_usage("alice").unwrap(),
        NameUsage { bytes: 5, files: 2 }
    );
    store = crash(store);
    assert_eq!(store.sweep(309, 0).unwrap().blobs, 0);
    assert_eq!(read(&store, hello).unwrap(), b"hello");
    let stats = store.sweep(310, 0).unwrap();
    assert_eq!((stats.released, stats.blobs), (1, 1));
    assert!(matches!(read(&store, hello), Err(StoreError::NotFound)));
    // The empty content is no blob: removing its name keeps nothing.
    assert!(store.remove_name("alice", "empty", 400, 10).unwrap());
    assert_eq!(store.sweep(410, 0).unwrap().released, 0);
    assert_eq!(read(&store, BlobId::EMPTY).unwrap(), b"");
    // The batch that still holds a2's content goes; the name keeps it.
    assert_eq!(store.sweep(1000, 0).unwrap().blobs, 0);
    assert_eq!(read(&store, a2.blob).unwrap(), b"ABCD!");
    assert_eq!(store.usage().unwrap().bytes, 5);
    store
}

/// Blobs of a SQLite store whose reference count differs from the rows
/// that hold them (files, names, kept blobs): empty when consistent.
fn sqlite_miscounted_blobs(dir: &std::path::Path) -> Vec<i64> {
    let db = rusqlite::Connection::open(dir.join("relay.sqlite")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT id FROM blobs WHERE refs !=
             (SELECT COUNT(*) FROM files WHERE blob = blobs.id)
           + (SELECT COUNT(*) FROM names WHERE blob = blobs.id)
           + (SELECT COUNT(*) FROM kept_blobs WHERE blob = blobs.id)",
        )
        .unwrap();
    let ids = stmt.query_map([], |r| r.get(0)).unwrap();
    ids.collect::<std::result::Result<_, _>>().unwrap()
}

#[test]
fn memory_store_binds_replaces_and_removes_names() {
    let store = bind_replace_remove(MemoryStore::new(), |s| {
        s.crash();
        s
    });
    assert_eq!(store.miscounted_blobs(), []);
}

#[test]
fn sqlite_store_binds_replaces_and_removes_names_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    drop(bind_replace_remove(reopen(&path), |s| {
        drop(s);
        reopen(&path)
    }));
    assert_eq!(sqlite_miscounted_blobs(&path), Vec::<i64>::new());
}

/// A batch with a file still uploading binds nothing, not even its
/// complete files; once complete it binds. A batch named twice binds its
/// last file.
fn incomplete_batches<S: Store>(store: &S) {
    let files = [up("done", b"done"), up("busy", b"busy")];
    let b = upload_some(store, 1, &files, 1000, 1);
    assert!(matches!(
        store.bind_names("alice", b.id, 10, 60),
        Err(StoreError::Incomplete)
    ));
    assert!(store.list_names("alice").unwrap().is_empty());
    assert_eq!(store.name_usage("alice").unwrap(), NameUsage::default());
    assert!(matches!(
        store.bind_names("alice", BatchId(9_999), 10, 60),
        Err(StoreError::NotFound)
    ));
    let p = partial_of(&b, 1);
    store.write_partial(p, 0, b"busy").unwrap();
    let file = FileRef {
        batch: b.id,
        index: 1,
    };
    store.complete_file(file, p, &content(b"busy")).unwrap();
    assert_eq!(store.bind_names("alice", b.id, 10, 60).unwrap(), 2);
    assert_eq!(names(store, "alice"), ["busy", "done"]);

    let twice = upload(store, 2, &[up("x", b"first"), up("x", b"second")], 1000);
    assert_eq!(store.bind_names("bob", twice.id, 10, 0).unwrap(), 1);
    let x = store.find_name("bob", "x").unwrap().unwrap();
    assert_eq!(read(store, x.blob).unwrap(), b"second");
    // Only the batch held "first": it goes with it, nothing was kept.
    let stats = store.sweep(1000, 0).unwrap();
    assert_eq!((stats.released, stats.blobs), (0, 1));
    assert_eq!(read(store, x.blob).unwrap(), b"second");
}

#[test]
fn incomplete_batches_bind_nothing() {
    let memory = MemoryStore::new();
    incomplete_batches(&memory);
    assert_eq!(memory.miscounted_blobs(), []);
    let dir = tempfile::tempdir().unwrap();
    incomplete_batches(&reopen(dir.path()));
    assert_eq!(sqlite_miscounted_blobs(dir.path()), Vec::<i64>::new());
}

/// Grants and revocations, for users and terminals; they follow the name
/// through a replacement, survive a crash and go with the name.
fn shares<S: Store>(mut store: S, crash: impl Fn(S) -> S) -> S {
    let b1 = upload(&store, 1, &[up("doc", b"v1"), up("other", b"o")], 1000);
    store.bind_names("alice", b1.id, 10, 60).unwrap();
    assert!(store.share_name("alice", "doc", "bob", true).unwrap());
    assert!(store.share_name("alice", "doc", "bob", true).unwrap());
    assert!(store.share_name("alice", "doc", "@kiosk", true).unwrap());
    assert!(!store.share_name("alice", "nothing", "bob", true).unwrap());
    assert!(!store.share_name("carol", "doc", "bob", true).unwrap());
    assert!(store.is_shared("alice", "doc", "bob").unwrap());
    assert!(store.is_shared("alice", "doc", "@kiosk").unwrap());
    assert!(!store.is_shared("alice", "other", "bob").unwrap());
    assert!(!store.is_shared("alice", "doc", "carol").unwrap());
    assert!(!store.is_shared("alice", "doc", "alice").unwrap());
    assert!(!store.is_shared("alice", "nothing", "bob").unwrap());
    store = crash(store);
    assert!(store.is_shared("alice", "doc", "bob").unwrap());
    // Revoking: once, or never granted, the answer is the name's existence.
    assert!(store.share_name("alice", "doc", "bob", false).unwrap());
    assert!(store.share_name("alice", "doc", "bob", false).unwrap());
    assert!(!store.is_shared("alice", "doc", "bob").unwrap());
    assert!(store.is_shared("alice", "doc", "@kiosk").unwrap());
    // A replacement keeps the name's shares.
    let b2 = upload(&store, 2, &[up("doc", b"v2")], 1000);
    store.bind_names("alice", b2.id, 20, 60).unwrap();
    assert!(store.is_shared("alice", "doc", "@kiosk").unwrap());
    // Removal takes them: a new name of the same spelling starts unshared.
    assert!(store.remove_name("alice", "doc", 30, 60).unwrap());
    assert!(!store.is_shared("alice", "doc", "@kiosk").unwrap());
    store.bind_names("alice", b2.id, 40, 60).unwrap();
    assert!(!store.is_shared("alice", "doc", "@kiosk").unwrap());
    store
}

#[test]
fn memory_store_shares_names() {
    let store = shares(MemoryStore::new(), |s| {
        s.crash();
        s
    });
    assert_eq!(store.miscounted_blobs(), []);
}

#[test]
fn sqlite_store_shares_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    drop(shares(reopen(&path), |s| {
        drop(s);
        reopen(&path)
    }));
    assert_eq!(sqlite_miscounted_blobs(&path), Vec::<i64>::new());
}

/// Two owners binding the same content share one blob: removing one
/// owner's name (or the owner) keeps the other's, and the blob goes only
/// when no name, batch or keep time holds it.
fn shared_content<S: Store>(store: &S) {
    let ba = upload(store, 1, &[up("mine", b"same bytes")], 100);
    let bb = upload(store, 2, &[up("yours", b"same bytes")], 100);
    store.bind_names("alice", ba.id, 10, 0).unwrap();
    store.bind_names("bob", bb.id, 10, 0).unwrap();
    // Bob binds alice's batch too, twice (a rebind to the same content).
    store.bind_names("bob", ba.id, 10, 0).unwrap();
    store.bind_names("bob", ba.id, 11, 0).unwrap();
    let blob = blob_of(store, "alice", "mine");
    assert_eq!(blob_of(store, "bob", "yours"), blob, "deduplicated");
    assert_eq!(blob_of(store, "bob", "mine"), blob);
    assert_eq!(store.sweep(100, 0).unwrap().blobs, 0);
    assert!(store.remove_name("alice", "mine", 200, 0).unwrap());
    let stats = store.sweep(200, 0).unwrap();
    assert_eq!((stats.released, stats.blobs), (1, 0));
    assert_eq!(read(store, blob).unwrap(), b"same bytes");
    // Alice shares something with bob, then bob is removed: his names go,
    // and so does the share he was granted; alice's names stay.
    let bc = upload(store, 3, &[up("note", b"for bob")], 1000);
    store.bind_names("alice", bc.id, 210, 0).unwrap();
    assert!(store.share_name("alice", "note", "bob", true).unwrap());
    assert!(store.share_name("alice", "note", "carol", true).unwrap());
    store.bind_names("bob", bc.id, 210, 0).unwrap();
    assert!(store.share_name("bob", "note", "carol", true).unwrap());
    store.remove_owner("bob").unwrap();
    assert!(store.list_names("bob").unwrap().is_empty());
    assert_eq!(store.name_usage("bob").unwrap(), NameUsage::default());
    assert!(!store.is_shared("alice", "note", "bob").unwrap());
    assert!(store.is_shared("alice", "note", "carol").unwrap());
    assert!(!store.is_shared("bob", "note", "carol").unwrap());
    assert_eq!(names(store, "alice"), ["note"]);
    // Bob's two names were the last holders of the shared bytes.
    assert_eq!(store.sweep(210, 0).unwrap().blobs, 1);
    assert!(matches!(read(store, blob), Err(StoreError::NotFound)));
    // A removed terminal's grants go the same way; its owner's names stay.
    assert!(store.share_name("alice", "note", "@kiosk", true).unwrap());
    store.remove_owner("@kiosk").unwrap();
    assert!(!store.is_shared("alice", "note", "@kiosk").unwrap());
    assert_eq!(names(store, "alice"), ["note"]);
    // Removing a user who never bound anything changes nothing.
    store.remove_owner("nobody").unwrap();
    assert_eq!(store.sweep(1000, 0).unwrap().blobs, 0);
    assert_eq!(
        read(store, blob_of(store, "alice", "note")).unwrap(),
        b"for bob"
    );
}

#[test]
fn owners_share_content_and_keep_each_others() {
    let memory = MemoryStore::new();
    shared_content(&memory);
    assert_eq!(memory.miscounted_blobs(), []);
    let dir = tempfile::tempdir().unwrap();
    shared_content(&reopen(dir.path()));
    assert_eq!(sqlite_miscounted_blobs(dir.path()), Vec::<i64>::new());
}

#[test]
fn sqlite_store_gives_a_database_of_an_earlier_relay_named_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(dir.path());
    let b = upload(&store, 1, &[up("a", b"abcd")], 1000);
    drop(store);
    // The database as a relay before named files left it.
    let db = rusqlite::Connection::open(dir.path().join("relay.sqlite")).unwrap();
    db.execute_batch(
        "DROP TABLE names;
         DROP TABLE name_shares;
         DROP TABLE kept_blobs;",
    )
    .unwrap();
    drop(db);
    let store = reopen(dir.path());
    assert!(store.list_names("alice").unwrap().is_empty());
    assert_eq!(store.bind_names("alice", b.id, 10, 60).unwrap(), 1);
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(names(&store, "alice"), ["a"]);
    // The batch's expiry leaves the content to the name.
    assert_eq!(store.sweep(1000, 0).unwrap().blobs, 0);
    assert_eq!(
        read(&store, blob_of(&store, "alice", "a")).unwrap(),
        b"abcd"
    );
}

/// The directory's tables share the database file: made outside the
/// store's schema, they neither collide with it nor disturb its names.
#[test]
fn sqlite_store_opens_beside_the_user_directory_tables() {
    let dir = tempfile::tempdir().unwrap();
    drop(reopen(dir.path()));
    let db = rusqlite::Connection::open(dir.path().join("relay.sqlite")).unwrap();
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS auth_tokens(hash BLOB PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS terminals(name TEXT PRIMARY KEY);",
    )
    .unwrap();
    drop(db);
    let store = reopen(dir.path());
    let b = upload(&store, 1, &[up("a", b"abcd")], 1000);
    assert_eq!(store.bind_names("alice", b.id, 10, 60).unwrap(), 1);
}

/// More kept blobs than one sweep transaction releases are all released
/// (and collected) by one sweep.
fn many_kept_blobs<S: Store>(store: &S) {
    let data: Vec<[u8; 2]> = (0..300u16).map(u16::to_le_bytes).collect();
    let names: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    let files: Vec<NewFile<'_>> = names
        .iter()
        .zip(&data)
        .map(|(name, d)| NewFile {
            name,
            size: 2,
            sha1: Sha1Digest::of(d),
            attrs: None,
        })
        .collect();
    let b = store.create_batch(&new_batch(1, &files, 100)).unwrap();
    for (i, d) in data.iter().enumerate() {
        let p = partial_of(&b, i);
        store.write_partial(p, 0, d).unwrap();
        let file = FileRef {
            batch: b.id,
            index: i as u16,
        };
        store.complete_file(file, p, &content(d)).unwrap();
    }
    assert_eq!(store.bind_names("alice", b.id, 10, 0).unwrap(), 300);
    for name in &names {
        assert!(store.remove_name("alice", name, 20, 30).unwrap());
    }
    let stats = store.sweep(100, 0).unwrap();
    assert_eq!((stats.batches, stats.released, stats.blobs), (1, 300, 300));
    assert_eq!(store.usage().unwrap().bytes, 0);
}

#[test]
fn a_sweep_releases_every_kept_blob_whose_time_passed() {
    let memory = MemoryStore::new();
    many_kept_blobs(&memory);
    assert_eq!(memory.blob_count(), 0);
    let dir = tempfile::tempdir().unwrap();
    many_kept_blobs(&reopen(dir.path()));
    assert_eq!(sqlite_miscounted_blobs(dir.path()), Vec::<i64>::new());
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
        0
    );
}

#[test]
fn pg_store_keeps_names_across_reopens() {
    type Fx = crate::store::postgres::tests::Fixture;
    let Some(fx) = Fx::new("pg_store_binds_replaces_and_removes_names") else {
        return;
    };
    drop(bind_replace_remove(fx.open(), |s| {
        drop(s);
        fx.open()
    }));
    assert_eq!(fx.miscounted_blobs(), Vec::<i64>::new());
    let Some(fx) = Fx::new("pg_store_shares_names") else {
        return;
    };
    drop(shares(fx.open(), |s| {
        drop(s);
        fx.open()
    }));
    for (test, body) in [
        (
            "pg_incomplete_batches_bind_nothing",
            incomplete_batches::<PgStore> as fn(&PgStore),
        ),
        ("pg_owners_share_content", shared_content::<PgStore>),
        (
            "pg_a_sweep_releases_every_kept_blob",
            many_kept_blobs::<PgStore>,
        ),
    ] {
        let Some(fx) = Fx::new(test) else {
            return;
        };
        body(&fx.open());
        assert_eq!(fx.miscounted_blobs(), Vec::<i64>::new(), "{test}");
    }
}
