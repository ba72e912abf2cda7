//! File attributes (PROTOCOL.md §5.5) kept by both stores, across a
//! reopen, and absent for files of a relay that predates them.

use pickup_proto::Sha1Digest;

use super::memory::MemoryStore;
use super::tests::{live, new_batch, reopen};
use super::*;

fn files() -> [NewFile<'static>; 3] {
    [
        NewFile {
            name: "run.sh",
            size: 4,
            sha1: Sha1Digest::of(b"abcd"),
            attrs: Some(Attrs {
                executable: true,
                mtime: 1_000_000_000,
            }),
        },
        NewFile {
            name: "old.txt",
            size: 0,
            sha1: Sha1Digest::EMPTY,
            // Before 1970: signed seconds survive the store.
            attrs: Some(Attrs {
                executable: false,
                mtime: -86_400,
            }),
        },
        NewFile {
            name: "plain",
            size: 3,
            sha1: Sha1Digest::of(b"xyz"),
            attrs: None,
        },
    ]
}

/// Creates a batch with attributes and checks both lookups return them.
fn keeps_attributes<S: Store>(store: &S) {
    let files = files();
    let b = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    let want: Vec<Option<Attrs>> = files.iter().map(|f| f.attrs).collect();
    let got = |b: &Batch| b.files.iter().map(|f| f.attrs).collect::<Vec<_>>();
    assert_eq!(got(&b), want);
    assert_eq!(
        got(&live(store.find_by_code(&tests::key(1), 10).unwrap())),
        want
    );
    assert_eq!(
        got(&live(store.find_by_token(&tests::key(101), 10).unwrap())),
        want
    );
}

#[test]
fn memory_store_keeps_attributes() {
    keeps_attributes(&MemoryStore::new());
}

#[test]
fn sqlite_store_keeps_attributes_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    keeps_attributes(&reopen(dir.path()));
    let store = reopen(dir.path());
    let b = live(store.find_by_code(&tests::key(1), 10).unwrap());
    assert_eq!(b.files[0].attrs, files()[0].attrs);
    assert_eq!(b.files[2].attrs, None);
}

#[test]
fn sqlite_store_migrates_files_of_an_earlier_relay_to_no_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(dir.path());
    let plain = [NewFile {
        attrs: None,
        ..files()[0]
    }];
    store.create_batch(&new_batch(1, &plain, 1000)).unwrap();
    drop(store);
    // The files table as a relay before attributes made it.
    let db = rusqlite::Connection::open(dir.path().join("relay.sqlite")).unwrap();
    db.execute_batch(
        "ALTER TABLE files DROP COLUMN executable;
         ALTER TABLE files DROP COLUMN mtime;",
    )
    .unwrap();
    drop(db);
    let store = reopen(dir.path());
    let old = live(store.find_by_code(&tests::key(1), 10).unwrap());
    assert_eq!(old.files[0].attrs, None);
    // New batches keep theirs.
    let files = files();
    let b = store.create_batch(&new_batch(2, &files, 1000)).unwrap();
    assert_eq!(
        live(store.find_by_code(&tests::key(2), 10).unwrap()).files,
        b.files
    );
    assert_eq!(b.files[0].attrs, files[0].attrs);
}

#[test]
fn pg_store_keeps_attributes_across_a_reopen() {
    let Some(fx) = crate::store::postgres::tests::Fixture::new("pg_store_keeps_attributes") else {
        return;
    };
    keeps_attributes(&fx.open());
    let b = live(fx.open().find_by_code(&tests::key(1), 10).unwrap());
    assert_eq!(b.files[0].attrs, files()[0].attrs);
    assert_eq!(b.files[2].attrs, None);
}
