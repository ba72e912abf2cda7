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
