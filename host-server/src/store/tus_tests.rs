//! What tus needs of both stores: a completion records the verified
//! SHA-1, and a batch can be ended now.

use pickup_proto::Sha1Digest;

use super::memory::MemoryStore;
use super::tests::{content, live, new_batch, partial_of};
use super::*;

/// A file announced without its SHA-1 (a placeholder) gets the verified
/// one when it completes, as the store shows it afterwards.
fn completion_records_the_sha1<S: Store>(store: &S) {
    let files = [NewFile {
        name: "t",
        size: 5,
        sha1: Sha1Digest([0; 20]),
        attrs: None,
    }];
    let b = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    let p = partial_of(&b, 0);
    store.write_partial(p, 0, b"hello").unwrap();
    store.sync_partial(p, 5, None).unwrap();
    let file = FileRef {
        batch: b.id,
        index: 0,
    };
    store.complete_file(file, p, &content(b"hello")).unwrap();
    let b = live(store.find_by_code(&super::tests::key(1), 0).unwrap());
    assert_eq!(b.files[0].sha1, Sha1Digest::of(b"hello"));
    assert!(b.ready());
}

/// An ended batch answers as expired by code and by token at once, and
/// the next sweep deletes it; ending an unknown batch is `NotFound`.
fn ended_batches_expire_now<S: Store>(store: &S) {
    let files = [NewFile {
        name: "t",
        size: 5,
        sha1: Sha1Digest::of(b"hello"),
        attrs: None,
    }];
    let b = store.create_batch(&new_batch(2, &files, 1000)).unwrap();
    store.end_batch(b.id, 10).unwrap();
    let key = super::tests::key;
    assert_eq!(store.find_by_code(&key(2), 10).unwrap(), Lookup::Expired);
    assert_eq!(store.find_by_token(&key(102), 10).unwrap(), Lookup::Expired);
    // Before the end it was live: ending never moves expiry later.
    store.end_batch(b.id, 500).unwrap();
    assert_eq!(store.find_by_code(&key(2), 10).unwrap(), Lookup::Expired);
    let swept = store.sweep(10, 0).unwrap();
    assert_eq!(swept.batches, 1);
    assert!(matches!(
        store.end_batch(b.id, 10),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn memory_store_records_sha1_and_ends_batches() {
    completion_records_the_sha1(&MemoryStore::new());
    ended_batches_expire_now(&MemoryStore::new());
}

#[test]
fn sqlite_store_records_sha1_and_ends_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::tests::reopen(dir.path());
    completion_records_the_sha1(&store);
    ended_batches_expire_now(&store);
}

/// An open batch: files are added at the next index (empty content
/// complete at once), it serves nothing until closed even with every file
/// complete, refuses files once closed, and goes stale without progress.
fn open_batches<S: Store>(store: &S) {
    let mut new = new_batch(3, &[], 1000);
    new.open = true;
    new.stale_at = 100;
    let b = store.create_batch(&new).unwrap();
    assert!(b.open && b.files.is_empty() && !b.ready());
    let file = |name, data: &[u8]| NewFile {
        name,
        size: data.len() as u64,
        sha1: Sha1Digest::of(data),
        attrs: None,
    };
    let first = store.add_file(b.id, &file("a", b"abc")).unwrap();
    let empty = store.add_file(b.id, &file("e", b"")).unwrap();
    assert_eq!((first.index, empty.index), (0, 1));
    let got = live(store.find_by_token(&super::tests::key(103), 0).unwrap());
    assert!(got.open);
    assert_eq!(got.files[1].content, FileContent::Blob(BlobId::EMPTY));
    let p = partial_of(&got, 0);
    store.write_partial(p, 0, b"abc").unwrap();
    store.sync_partial(p, 3, None).unwrap();
    store.complete_file(first, p, &content(b"abc")).unwrap();
    let got = live(store.find_by_code(&super::tests::key(3), 0).unwrap());
    assert!(!got.ready(), "an open batch serves nothing");
    store.close_batch(b.id).unwrap();
    store.close_batch(b.id).unwrap();
    let got = live(store.find_by_code(&super::tests::key(3), 0).unwrap());
    assert!(!got.open && got.ready());
    assert!(matches!(
        store.add_file(b.id, &file("late", b"x")),
        Err(StoreError::NotFound)
    ));
    // Closed and complete: not stale. An open one without progress is.
    assert_eq!(store.sweep(150, 0).unwrap().batches, 0);
    let mut idle = new_batch(4, &[], 1000);
    idle.open = true;
    idle.stale_at = 100;
    let idle = store.create_batch(&idle).unwrap();
    assert_eq!(store.sweep(150, 0).unwrap().batches, 1);
    assert!(matches!(
        store.add_file(idle.id, &file("x", b"x")),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.close_batch(idle.id),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn open_batches_take_files_until_closed() {
    open_batches(&MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    open_batches(&super::tests::reopen(dir.path()));
}

/// A database of a relay before open batches gains the column, and its
/// batches read as closed.
#[test]
fn sqlite_batches_of_an_earlier_relay_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::tests::reopen(dir.path());
    let files = [NewFile {
        name: "a",
        size: 3,
        sha1: Sha1Digest::of(b"abc"),
        attrs: None,
    }];
    store.create_batch(&new_batch(5, &files, 1000)).unwrap();
    drop(store);
    let db = rusqlite::Connection::open(dir.path().join("relay.sqlite")).unwrap();
    db.execute_batch("ALTER TABLE batches DROP COLUMN open")
        .unwrap();
    drop(db);
    let store = super::tests::reopen(dir.path());
    let b = live(store.find_by_code(&super::tests::key(5), 0).unwrap());
    assert!(!b.open);
    let mut new = new_batch(6, &[], 1000);
    new.open = true;
    let open = store.create_batch(&new).unwrap();
    store.add_file(open.id, &files[0]).unwrap();
    assert!(live(store.find_by_code(&super::tests::key(6), 0).unwrap()).open);
}

#[test]
fn pg_store_records_sha1_ends_batches_and_takes_files_until_closed() {
    let Some(fx) =
        crate::store::postgres::tests::Fixture::new("pg_store_records_sha1_and_ends_batches")
    else {
        return;
    };
    let store = fx.open();
    completion_records_the_sha1(&store);
    ended_batches_expire_now(&store);
    let Some(fx) =
        crate::store::postgres::tests::Fixture::new("pg_open_batches_take_files_until_closed")
    else {
        return;
    };
    open_batches(&fx.open());
}
