//! Blob owners and thresholds ([`Store::holders`]), the input of the
//! disclosure rule, checked against both stores.

use pickup_proto::Sha1Digest;

use super::memory::MemoryStore;
use super::sqlite::SqliteStore;
use super::tests::{content, key, live, new_batch, partial_of, reopen};
use super::*;

fn owner(n: u8) -> OwnerId {
    OwnerId([n; 32])
}

fn file(batch: &Batch) -> FileRef {
    FileRef {
        batch: batch.id,
        index: 0,
    }
}

/// Owners are counted once each, by completion (new blob or shared bytes)
/// and by link; the threshold is the first completion's; they survive a
/// crash and go with the blob.
fn owners<S: Store>(mut store: S, crash: impl Fn(S) -> S) {
    let files = [NewFile {
        name: "letter",
        size: 6,
        sha1: Sha1Digest::of(b"PIN=42"),
        attrs: None,
    }];
    // Owner 1 uploads: a new blob with threshold 7.
    let b1 = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    assert_eq!(b1.owner, owner(1));
    store
        .write_partial(partial_of(&b1, 0), 0, b"PIN=42")
        .unwrap();
    let first = Content {
        threshold: 7,
        ..content(b"PIN=42")
    };
    let blob = store
        .complete_file(file(&b1), partial_of(&b1, 0), &first)
        .unwrap();
    let held = |s: &S, n: u8| s.holders(blob, &owner(n)).unwrap();
    assert_eq!(
        held(&store, 1),
        Holders {
            owned: true,
            owners: 1,
            threshold: 7
        }
    );
    assert!(!held(&store, 2).owned);
    // Owner 2 uploads the same bytes: shared, counted, threshold kept.
    let b2 = store.create_batch(&new_batch(2, &files, 1000)).unwrap();
    store
        .write_partial(partial_of(&b2, 0), 0, b"PIN=42")
        .unwrap();
    let again = Content {
        threshold: 3,
        ..content(b"PIN=42")
    };
    let shared = store
        .complete_file(file(&b2), partial_of(&b2, 0), &again)
        .unwrap();
    assert_eq!(shared, blob);
    assert_eq!(
        held(&store, 2),
        Holders {
            owned: true,
            owners: 2,
            threshold: 7
        }
    );
    // A second batch of owner 2 links: no new owner. Owner 3 links: one more.
    let mut b3 = new_batch(3, &files, 1000);
    b3.owner = owner(2);
    let b3 = store.create_batch(&b3).unwrap();
    assert!(store.link_file(file(&b3), blob).unwrap());
    assert_eq!(held(&store, 3).owners, 2);
    let b4 = store.create_batch(&new_batch(4, &files, 1000)).unwrap();
    assert!(store.link_file(file(&b4), blob).unwrap());
    store = crash(store);
    assert_eq!(
        held(&store, 4),
        Holders {
            owned: true,
            owners: 3,
            threshold: 7
        }
    );
    assert_eq!(
        live(store.find_by_token(&key(103), 10).unwrap()).owner,
        owner(2)
    );
    // Collected with its blob.
    store.sweep(1000, 0).unwrap();
    assert!(matches!(
        store.holders(blob, &owner(1)),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn memory_store_counts_owners() {
    owners(MemoryStore::new(), |s| {
        s.crash();
        s
    });
}

#[test]
fn sqlite_store_counts_owners() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    owners(reopen(&path), |s| {
        drop(s);
        reopen(&path)
    });
}

#[test]
fn sqlite_store_gives_batches_and_blobs_of_an_earlier_relay_an_owner_and_no_threshold() {
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
    let blob = store.complete_file(file(&b), p, &content(b"abcd")).unwrap();
    drop(store);
    // The tables as a relay before owners left them.
    let db = rusqlite::Connection::open(dir.path().join("relay.sqlite")).unwrap();
    db.execute_batch(
        "ALTER TABLE batches DROP COLUMN owner;
         ALTER TABLE blobs DROP COLUMN threshold;
         DROP TABLE blob_owners;",
    )
    .unwrap();
    drop(db);
    let store: SqliteStore = reopen(dir.path());
    // The old batch is a family of its own, named by its token key.
    let old = live(store.find_by_token(&key(101), 10).unwrap());
    assert_eq!(old.owner.0, key(101).0);
    assert_eq!(
        store.holders(blob, &old.owner).unwrap(),
        Holders {
            owned: false,
            owners: 0,
            threshold: 0
        }
    );
    // New uploads of the same bytes are counted.
    let b2 = store.create_batch(&new_batch(2, &files, 1000)).unwrap();
    store.write_partial(partial_of(&b2, 0), 0, b"abcd").unwrap();
    let shared = store
        .complete_file(file(&b2), partial_of(&b2, 0), &content(b"abcd"))
        .unwrap();
    assert_eq!(shared, blob);
    let h = store.holders(blob, &owner(2)).unwrap();
    assert_eq!((h.owned, h.owners, h.threshold), (true, 1, 0));
}

#[test]
fn pg_store_counts_owners() {
    let Some(fx) = crate::store::postgres::tests::Fixture::new("pg_store_counts_owners") else {
        return;
    };
    owners(fx.open(), |s| {
        drop(s);
        fx.open()
    });
}
