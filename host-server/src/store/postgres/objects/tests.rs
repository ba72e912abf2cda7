//! Against a real S3-compatible server (moto, from `pickup-test-servers`):
//! uploads folded into parts and segments, completed and read back; a
//! takeover by an instance without the spool; retries of every step; and
//! a server that stops answering for a while.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::ObjectStore;
use pickup_test_servers::{require, Bucket, S3};

use super::*;

const MIB: u64 = 1 << 20;

/// Hang guard for one test's async body (never reached when all is well).
const TEST_LIMIT: Duration = Duration::from_secs(300);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` on a fresh runtime, bounded by [`TEST_LIMIT`].
fn run<F: std::future::Future>(f: F) -> F::Output {
    runtime()
        .block_on(async { tokio::time::timeout(TEST_LIMIT, f).await })
        .expect("the test's object storage calls hung")
}

fn config(bucket: &Bucket) -> ObjectStoreConfig {
    ObjectStoreConfig {
        endpoint: Some(bucket.endpoint.clone()),
        region: bucket.region.clone(),
        bucket: bucket.name.clone(),
        prefix: "relay/a".into(),
        access_key_id: Some(bucket.access_key_id.clone()),
        secret_access_key: Some(bucket.secret_access_key.clone()),
        allow_http: true,
    }
}

/// One relay instance: its client and its own data directory (spool).
fn instance(bucket: &Bucket) -> (Objects, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Objects::connect(&config(bucket), dir.path()).unwrap(), dir)
}

/// A fresh bucket on the shared server, or `None` (skipped).
fn bucket(test: &str) -> Option<Bucket> {
    let s3 = require(test, S3::shared())?;
    Some(s3.bucket().unwrap())
}

/// Bytes that differ at every offset a mistake could shift them to.
fn content(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What the caller (the PostgreSQL side) does per acknowledgement step:
/// start the multipart upload when a fold needs one ("commit" its id),
/// sync, and "commit" the outcome.
async fn sync(objects: &Objects, layout: &mut PartialLayout, durable: u64, hashed: u64) -> Synced {
    if layout.sync_needs_multipart(durable, hashed) {
        layout.upload_id = Some(objects.start_multipart(layout).await.unwrap());
    }
    let synced = objects.sync(layout, durable, hashed).await.unwrap();
    layout.apply(&synced);
    synced
}

/// Writes `data[from..to]` in 1 MiB steps, syncing every 2 MiB (and at
/// `to`), with the SHA-1 state `hashed(durable)` bytes long.
async fn upload(
    objects: &Objects,
    layout: &mut PartialLayout,
    data: &[u8],
    from: u64,
    to: u64,
    hashed: impl Fn(u64) -> u64,
) {
    let mut offset = from;
    while offset < to {
        let end = to.min(offset + MIB);
        let chunk = &data[offset as usize..end as usize];
        objects.write_spool(layout.id, offset, chunk).await.unwrap();
        offset = end;
        if offset % (2 * MIB) == 0 || offset == to {
            sync(objects, layout, offset, hashed(offset)).await;
        }
    }
}

/// Completes the upload as the caller would.
async fn complete(objects: &Objects, layout: &mut PartialLayout, size: u64) {
    if layout.complete_needs_multipart(size) {
        layout.upload_id = Some(objects.start_multipart(layout).await.unwrap());
    }
    objects.complete(layout, size).await.unwrap();
    objects.drop_spool(layout.id).await.unwrap();
}

/// Stores `data` as blob `id` through a partial upload.
async fn store_blob(objects: &Objects, id: u64, data: &[u8]) {
    let size = data.len() as u64;
    let mut layout = PartialLayout::new(id, 1, size);
    upload(objects, &mut layout, data, 0, size, |d| d).await;
    complete(objects, &mut layout, size).await;
}

/// Blob `id` read back in 1 MiB ranged GETs, until a read returns 0.
async fn read_all(objects: &Objects, id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..1_000 {
        let n = objects
            .read_blob(id, out.len() as u64, &mut buf)
            .await
            .unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
    panic!("blob {id} did not end within 1,000 reads");
}

/// Every key under the instances' prefix.
async fn all_keys(objects: &Objects) -> Vec<String> {
    let metas: Vec<_> = objects
        .s3
        .list(Some(&objects.prefix))
        .try_collect()
        .await
        .unwrap();
    metas.into_iter().map(|m| m.location.to_string()).collect()
}

fn segment(start: u64, end: u64, fence: u64) -> Segment {
    Segment {
        start: start * MIB,
        end: end * MIB,
        fence,
    }
}

#[test]
fn part_sizes_keep_uploads_under_the_part_limit() {
    assert_eq!(part_size_for(0), 8 * MIB);
    assert_eq!(part_size_for(9_000 * 8 * MIB), 8 * MIB);
    assert_eq!(part_size_for(9_000 * 8 * MIB + 1), 9 * MIB);
    assert_eq!(part_size_for(100 << 30), 12 * MIB);
    for size in [1 << 40, 5 << 40, u64::MAX / 2] {
        assert!(size.div_ceil(part_size_for(size)) <= MAX_PARTS, "{size}");
    }
}

#[test]
fn a_layout_with_a_gap_is_refused() {
    let mut layout = PartialLayout::new(1, 1, 0);
    layout.segments = vec![segment(0, 2, 1), segment(3, 4, 1)];
    assert!(matches!(layout.check(), Err(Error::Corrupt(_))));
    layout.segments = vec![segment(0, 2, 1), segment(2, 4, 2)];
    assert!(layout.check().is_ok());
    layout.parts_end = 8 * MIB;
    assert!(matches!(layout.check(), Err(Error::Corrupt(_))));
}

#[test]
fn the_spool_serves_only_the_contiguous_range_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool::Spool::open(dir.path().join("spool")).unwrap();
    run(async {
        spool.write(7, 10, b"abcd").await.unwrap();
        spool.write(7, 14, b"ef").await.unwrap();
        spool.write(7, 8, b"xyab").await.unwrap();
        assert_eq!(spool.held(7), Some(8..16));
        assert_eq!(spool.read(7, 8, 8).await.unwrap(), b"xyabcdef");
        // A write past a gap: the bytes before it are no longer trusted.
        spool.write(7, 20, b"z").await.unwrap();
        assert_eq!(spool.held(7), Some(20..21));
        spool.remove(7).await.unwrap();
        assert_eq!(spool.held(7), None);
        spool.write(8, 0, b"q").await.unwrap();
        spool.clear().await.unwrap();
        assert_eq!(spool.held(8), None);
    });
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
        0
    );
}

#[test]
fn a_large_upload_folds_parts_and_reads_back_identical() {
    let Some(bucket) = bucket("objects large upload test") else {
        return;
    };
    let (objects, _dir) = instance(&bucket);
    let size = 20 * MIB;
    let data = content(size, 1);
    run(async {
        objects.clear_spool().await.unwrap();
        let mut layout = PartialLayout::new(11, 1, size);
        assert_eq!(layout.part_size, 8 * MIB);
        upload(&objects, &mut layout, &data, 0, size, |d| d).await;
        assert_eq!(layout.parts.len(), 2);
        assert_eq!(layout.parts_end, 16 * MIB);
        assert_eq!(layout.segments, [segment(16, 18, 1), segment(18, 20, 1)]);

        // The spool serves even bytes already in parts.
        let mut buf = vec![0u8; 3 * MIB as usize];
        let n = objects
            .read_partial(&layout, 15 * MIB, &mut buf)
            .await
            .unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(buf, data[15 * MIB as usize..18 * MIB as usize]);

        complete(&objects, &mut layout, size).await;
        assert!(read_all(&objects, 11).await == data);
        // Reads at and past the end are empty, a read across it is short.
        let mut buf = vec![0u8; 100];
        assert_eq!(objects.read_blob(11, size, &mut buf).await.unwrap(), 0);
        assert_eq!(objects.read_blob(11, size + 5, &mut buf).await.unwrap(), 0);
        assert_eq!(
            objects.read_blob(11, size - 40, &mut buf).await.unwrap(),
            40
        );
        assert_eq!(buf[..40], data[data.len() - 40..]);
    });
}

#[test]
fn another_instance_takes_over_from_segments_and_completes() {
    let Some(bucket) = bucket("objects takeover test") else {
        return;
    };
    let (a, _dir_a) = instance(&bucket);
    let (b, _dir_b) = instance(&bucket);
    let size = 20 * MIB;
    let data = content(size, 2);
    run(async {
        // Instance A: 10 MiB durable while its hashing lags (no part may
        // be folded past the SHA-1 state: I2), then 1 MiB never synced.
        let mut layout = PartialLayout::new(21, 1, size);
        upload(&a, &mut layout, &data, 0, 10 * MIB, |_| 0).await;
        a.write_spool(21, 10 * MIB, &data[10 * MIB as usize..11 * MIB as usize])
            .await
            .unwrap();
        assert_eq!(layout.upload_id, None);
        assert_eq!(layout.segments.len(), 5);

        // Instance B, with a newer fence and no spool, reads the durable
        // prefix back from the segments (a resume's hash_prefix).
        layout.fence = 2;
        let mut buf = vec![0u8; 12 * MIB as usize];
        let n = b.read_partial(&layout, 0, &mut buf).await.unwrap();
        assert_eq!(n, 10 * MIB as usize);
        assert_eq!(buf[..n], data[..n]);
        let n = b
            .read_partial(&layout, 3 * MIB + 7, &mut buf[..10])
            .await
            .unwrap();
        assert_eq!(buf[..n], data[3 * MIB as usize + 7..3 * MIB as usize + 17]);
        assert_eq!(
            b.read_partial(&layout, 10 * MIB, &mut buf).await.unwrap(),
            0
        );

        // Its first sync folds part 0 from A's segments alone.
        let synced = sync(&b, &mut layout, 10 * MIB, 10 * MIB).await;
        assert_eq!(synced.parts_end, 8 * MIB);
        assert_eq!(synced.new_segment, None);
        assert_eq!(
            synced.obsolete_segments,
            [
                segment(0, 2, 1),
                segment(2, 4, 1),
                segment(4, 6, 1),
                segment(6, 8, 1)
            ]
        );
        assert!(matches!(
            b.read_partial(&layout, 0, &mut buf).await,
            Err(Error::InParts { offset: 0, .. })
        ));

        // The client resumes at 10 MiB on B: part 1 takes A's last
        // segment and B's spool, segments now carry fence 2.
        upload(&b, &mut layout, &data, 10 * MIB, size, |d| d).await;
        assert_eq!(layout.parts_end, 16 * MIB);
        assert_eq!(layout.segments, [segment(16, 18, 2), segment(18, 20, 2)]);

        // Every segment either instance wrote is listed, committed or not.
        let tail = b.list_tail(21).await.unwrap();
        assert!(tail.contains(&b.segment_key(21, &segment(0, 2, 1))));
        assert!(tail.contains(&b.segment_key(21, &segment(18, 20, 2))));
        assert!(tail.iter().all(|k| k.starts_with("relay/a/tail/21/")));

        complete(&b, &mut layout, size).await;
        assert!(read_all(&a, 21).await == data);
    });
}

#[test]
fn a_small_file_is_one_put_and_its_completion_may_be_retried() {
    let Some(bucket) = bucket("objects small file test") else {
        return;
    };
    let (objects, _dir) = instance(&bucket);
    let size = 3 * MIB + 5;
    let data = content(size, 3);
    run(async {
        let mut layout = PartialLayout::new(31, 1, size);
        upload(&objects, &mut layout, &data, 0, size, |d| d).await;
        assert_eq!(layout.upload_id, None);
        assert!(!layout.complete_needs_multipart(size));
        objects.complete(&layout, size).await.unwrap();
        // The answer was lost: the same completion again finds it done.
        objects.complete(&layout, size).await.unwrap();
        // An object of another size at the key is not this upload's.
        assert!(matches!(
            objects.complete(&layout, size - 1).await,
            Err(Error::Conflict { found, .. }) if found == size
        ));
        assert!(read_all(&objects, 31).await == data);
        assert_eq!(all_keys(&objects).await.len(), 3, "the blob and 2 segments");
    });
}

#[test]
fn a_sync_retried_with_the_same_arguments_changes_nothing() {
    let Some(bucket) = bucket("objects sync retry test") else {
        return;
    };
    let (objects, _dir) = instance(&bucket);
    let size = 12 * MIB;
    let data = content(size, 4);
    run(async {
        let mut layout = PartialLayout::new(41, 1, size);
        objects
            .write_spool(41, 0, &data[..10 * MIB as usize])
            .await
            .unwrap();
        assert!(matches!(
            objects.sync(&layout, 10 * MIB, 10 * MIB).await,
            Err(Error::NoMultipart(41))
        ));
        layout.upload_id = Some(objects.start_multipart(&layout).await.unwrap());
        // The first outcome was lost before its commit: the same call again.
        let first = objects.sync(&layout, 10 * MIB, 10 * MIB).await.unwrap();
        let second = objects.sync(&layout, 10 * MIB, 10 * MIB).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(first.new_parts.len(), 1);
        assert_eq!(first.new_segment, Some(segment(8, 10, 1)));
        layout.apply(&first);
        layout.apply(&second);
        assert_eq!(layout.parts.len(), 1);
        assert_eq!(layout.segments, [segment(8, 10, 1)]);
        // And once committed, the same durable offset has nothing to add.
        let again = objects.sync(&layout, 10 * MIB, 10 * MIB).await.unwrap();
        assert_eq!((again.new_parts.len(), again.new_segment), (0, None));

        upload(&objects, &mut layout, &data, 10 * MIB, size, |d| d).await;
        complete(&objects, &mut layout, size).await;
        // The answer to the completion was lost: the upload is gone now,
        // the blob's size says it was completed.
        objects.complete(&layout, size).await.unwrap();
        assert!(read_all(&objects, 41).await == data);
    });
}

#[test]
fn same_bytes_compares_contents_and_sizes() {
    let Some(bucket) = bucket("objects same bytes test") else {
        return;
    };
    let (objects, _dir) = instance(&bucket);
    // Over one compare chunk, so the comparison takes two rounds.
    let size = 9 * MIB;
    let data = content(size, 5);
    let mut other = data.clone();
    other[(size - 1) as usize] ^= 1;
    run(async {
        store_blob(&objects, 51, &data).await;
        store_blob(&objects, 52, &data).await;
        store_blob(&objects, 53, &other).await;
        store_blob(&objects, 54, &data[..(size - 1) as usize]).await;
        store_blob(&objects, 55, &[]).await;
        store_blob(&objects, 56, &[]).await;
        assert!(objects.same_bytes(51, 52, size).await.unwrap());
        assert!(!objects.same_bytes(51, 53, size).await.unwrap());
        assert!(!objects.same_bytes(51, 54, size).await.unwrap());
        assert!(!objects.same_bytes(54, 51, size - 1).await.unwrap());
        assert!(objects.same_bytes(55, 56, 0).await.unwrap());
        assert!(!objects.same_bytes(55, 51, 0).await.unwrap());
        assert!(matches!(
            objects.same_bytes(51, 59, size).await,
            Err(Error::NotFound(_))
        ));
    });
}

#[test]
fn an_aborted_upload_leaves_nothing() {
    let Some(bucket) = bucket("objects abort test") else {
        return;
    };
    let (objects, _dir) = instance(&bucket);
    let size = 30 * MIB;
    let data = content(size, 6);
    run(async {
        let mut layout = PartialLayout::new(61, 1, size);
        upload(&objects, &mut layout, &data, 0, 10 * MIB, |d| d).await;
        let upload_id = layout.upload_id.clone().unwrap();
        let blob = objects.blob_key(61);
        objects.abort(&blob, &upload_id).await.unwrap();
        objects.abort(&blob, &upload_id).await.unwrap();
        for key in objects.list_tail(61).await.unwrap() {
            objects.delete(&key).await.unwrap();
        }
        assert!(all_keys(&objects).await.is_empty());
        assert!(matches!(
            objects.read_blob(61, 0, &mut [0u8; 4]).await,
            Err(Error::NotFound(_))
        ));
        // Keys outside the prefix are refused, not deleted.
        assert!(matches!(
            objects.delete("relay/b/blobs/61").await,
            Err(Error::Config(_))
        ));
        assert!(matches!(
            objects.delete("relay/a").await,
            Err(Error::Config(_))
        ));
    });
}

#[test]
fn a_sync_waits_out_a_paused_server() {
    // A server of its own: pausing the shared one would stall other tests.
    let Some(s3) = require("objects paused server test", S3::start()) else {
        return;
    };
    let bucket = s3.bucket().unwrap();
    let (objects, _dir) = instance(&bucket);
    let size = 4 * MIB;
    let data = content(size, 7);
    run(async {
        let mut layout = PartialLayout::new(71, 1, size);
        upload(&objects, &mut layout, &data, 0, 2 * MIB, |d| d).await;
        objects
            .write_spool(71, 2 * MIB, &data[2 * MIB as usize..])
            .await
            .unwrap();
        s3.pause().unwrap();
        let resume = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            s3.resume().unwrap();
        };
        let (synced, ()) = tokio::join!(objects.sync(&layout, size, size), resume);
        let synced = synced.unwrap();
        assert_eq!(synced.new_segment, Some(segment(2, 4, 1)));
        layout.apply(&synced);

        // What the sync wrote is there for another instance.
        let (other, _other_dir) = instance(&bucket);
        let mut buf = vec![0u8; size as usize];
        assert_eq!(
            other.read_partial(&layout, 0, &mut buf).await.unwrap(),
            buf.len()
        );
        assert!(buf == data);
    });
}
