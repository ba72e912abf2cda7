//! [`Store::scan_blob`] on every store: each byte once, in order, up to the
//! length asked for, and a blob shorter than that is an error.

use pickup_proto::Sha1Digest;

use super::memory::MemoryStore;
use super::tests::{content, new_batch, partial_of, reopen};
use super::*;

/// Long enough for the SQLite store to read it past the page cache
/// (`contents::direct`), and not a whole number of pages.
const DIRECT_LEN: usize = (1 << 20) + 4321;

/// Completes a one-file batch `n` holding `data`; its blob.
fn blob_of<S: Store>(store: &S, n: u8, data: &[u8]) -> BlobId {
    let files = [NewFile {
        name: "s",
        size: data.len() as u64,
        sha1: Sha1Digest::of(data),
        attrs: None,
    }];
    let b = store.create_batch(&new_batch(n, &files, 1000)).unwrap();
    let p = partial_of(&b, 0);
    store.write_partial(p, 0, data).unwrap();
    store.sync_partial(p, data.len() as u64, None).unwrap();
    let file = FileRef {
        batch: b.id,
        index: 0,
    };
    store.complete_file(file, p, &content(data)).unwrap()
}

fn scanned<S: Store>(store: &S, blob: BlobId, len: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    store.scan_blob(blob, len, &mut |b| out.extend_from_slice(b))?;
    Ok(out)
}

fn scans<S: Store>(store: &S) {
    let long: Vec<u8> = (0..DIRECT_LEN as u32)
        .map(|i| (i * 31 % 253) as u8)
        .collect();
    let short = b"a blob under a page".to_vec();
    for (n, data) in [(1, &long), (2, &short)] {
        let blob = blob_of(store, n, data);
        let len = data.len() as u64;
        assert_eq!(scanned(store, blob, len).unwrap(), *data);
        assert_eq!(
            scanned(store, blob, len - 3).unwrap(),
            data[..data.len() - 3]
        );
        assert_eq!(scanned(store, blob, 0).unwrap(), b"");
        assert!(
            matches!(scanned(store, blob, len + 1), Err(StoreError::Corrupt(_))),
            "a scan past the blob's end is an error"
        );
    }
    assert_eq!(scanned(store, BlobId::EMPTY, 0).unwrap(), b"");
    assert!(scanned(store, BlobId::EMPTY, 1).is_err());
}

#[test]
fn memory_store_scans_blobs() {
    scans(&MemoryStore::new());
}

#[test]
fn sqlite_store_scans_blobs_direct_and_read() {
    let dir = tempfile::tempdir().unwrap();
    scans(&reopen(dir.path()));
}

#[test]
fn pg_store_scans_blobs() {
    let Some(fx) = crate::store::postgres::tests::Fixture::new("pg_store_scans_blobs") else {
        return;
    };
    scans(&fx.open());
}
