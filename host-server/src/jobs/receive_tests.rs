//! Write jobs: every byte they write is hashed once, in order, whatever
//! part of the first buffer the hasher already covers.

use std::sync::Arc;

use pickup_proto::{Instant, Sha1Digest};

use bytes::Bytes;

use super::pieces::Pieces;
use super::receive::{write, Write};
use super::Held;
use crate::random::SeededRandom;
use crate::relay::Relay;
use crate::running_sha1::RunningSha1;
use crate::settings::Settings;
use crate::store::memory::MemoryStore;
use crate::store::tests::{new_batch, partial_of};
use crate::store::{NewFile, PartialId, Store};

/// A relay over a memory store holding one batch of one `size`-byte file,
/// and the file's partial upload.
fn one_file(size: u64) -> (Arc<Relay>, Held, PartialId) {
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::new(
        Settings::default(),
        store.clone(),
        Box::new(SeededRandom::new(7)),
        Instant::from_millis(0),
    );
    let files = [NewFile {
        name: "f",
        size,
        sha1: Sha1Digest([0; 20]),
        attrs: None,
    }];
    let batch = store.create_batch(&new_batch(1, &files, 1_000)).unwrap();
    let id = partial_of(&batch, 0);
    let held = Held {
        lease: relay.take_lease(batch.id, 1),
        session: 1,
    };
    (relay, held, id)
}

/// Writes `data[offset..]` as pieces of at most `chunk` bytes, with
/// a hasher that already covers `data[..hashed]`; returns what the hasher
/// then covers and its digest.
fn write_hashing(data: &[u8], offset: usize, hashed: usize, chunk: usize) -> (u64, Sha1Digest) {
    let (relay, held, partial) = one_file(data.len() as u64);
    let mut hasher = Box::new(RunningSha1::new());
    hasher.update(&data[..hashed]);
    let done = write(
        &*relay.store,
        Write {
            held,
            epoch: 0,
            file: 0,
            partial,
            offset: offset as u64,
            bufs: {
                // Copied and shared pieces in turn, as a stream switching
                // between its read buffers and the decoder's gives them.
                let mut bufs = Pieces::default();
                for (i, piece) in data[offset..].chunks(chunk).enumerate() {
                    if i % 2 == 0 {
                        bufs.append(Pieces::copied(piece.to_vec()));
                    } else {
                        bufs.push_shared(Bytes::copy_from_slice(piece));
                    }
                }
                bufs
            },
            hasher: Some((hasher, hashed as u64)),
        },
    );
    assert!(done.result.is_ok() && done.store.is_ok());
    let mut on_disk = vec![0u8; data.len() - offset];
    assert_eq!(
        relay
            .store
            .read_partial(partial, offset as u64, &mut on_disk)
            .unwrap(),
        on_disk.len()
    );
    assert_eq!(on_disk, data[offset..], "every buffer written, in order");
    let (hasher, at) = done.hasher.expect("the hasher comes back");
    (at, hasher.digest())
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

#[test]
fn one_buffer_is_hashed_after_its_write() {
    let data = data(100_000);
    assert_eq!(
        write_hashing(&data, 0, 0, 200_000),
        (100_000, Sha1Digest::of(&data))
    );
}

#[test]
fn several_buffers_are_each_hashed_after_their_write_in_order() {
    let data = data(1_000_003);
    assert_eq!(
        write_hashing(&data, 0, 0, 65_537),
        (1_000_003, Sha1Digest::of(&data))
    );
}

#[test]
fn bytes_the_hasher_already_covers_are_not_hashed_again() {
    let data = data(300_000);
    // The write starts at 100,000; the hasher already covers 150,000 (a
    // re-hash from the store got there first).
    for chunk in [40_000, 500_000] {
        assert_eq!(
            write_hashing(&data, 100_000, 150_000, chunk),
            (300_000, Sha1Digest::of(&data)),
            "chunk {chunk}"
        );
    }
}
