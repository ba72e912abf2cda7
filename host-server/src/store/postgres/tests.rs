//! The PostgreSQL store under test: a fresh database, bucket and data
//! directory per test ([`Fixture`], which the store contract tests of
//! `store/` open too), and what only shared storage has: fences across two
//! handles, sweeps of two instances at once, an upload continued by
//! another instance. Each test skips (passes with a line) when PostgreSQL
//! or the S3 server is absent, unless `PICKUP_NO_SKIP=1`.

use pickup_proto::Sha1Digest;
use pickup_test_servers::{require, Postgres, S3};

use super::objects::ObjectStoreConfig;
use super::PgStore;
use crate::store::tests::{content, key, live, new_batch, partial_of};
use crate::store::{FileContent, FileRef, NewFile, Store, StoreError};

/// A fresh database, bucket and data directory; "crash" is dropping a
/// store and [`Fixture::open`]ing another on all three.
pub(crate) struct Fixture {
    url: String,
    s3: ObjectStoreConfig,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// `None` (after the skip line) without PostgreSQL or S3.
    pub(crate) fn new(test: &str) -> Option<Fixture> {
        let pg = require(test, Postgres::shared())?;
        let s3 = require(test, S3::shared())?;
        let bucket = s3.bucket().expect("a bucket");
        Some(Fixture {
            url: pg.database().expect("a database"),
            s3: ObjectStoreConfig {
                endpoint: Some(bucket.endpoint),
                region: bucket.region,
                bucket: bucket.name,
                prefix: "relay".into(),
                access_key_id: Some(bucket.access_key_id),
                secret_access_key: Some(bucket.secret_access_key),
                allow_http: true,
            },
            dir: tempfile::tempdir().expect("a data directory"),
        })
    }

    /// The fixture's database, for a test's own connection.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A store on the fixture's database, bucket and data directory,
    /// deleting doomed objects at its next sweep.
    pub(crate) fn open(&self) -> PgStore {
        self.open_in(self.dir.path())
    }

    /// A store on the fixture's database and bucket with its own data
    /// directory: another instance.
    pub(crate) fn open_in(&self, dir: &std::path::Path) -> PgStore {
        let mut store = PgStore::open(&self.url, 4, dir, &self.s3).unwrap().0;
        store.set_collect_delay(0);
        store
    }

    /// Blobs whose reference count differs from the rows that hold them
    /// (files, names, kept blobs): empty when consistent.
    pub(crate) fn miscounted_blobs(&self) -> Vec<i64> {
        let store = self.open();
        store
            .run(async |tx| {
                let rows = tx
                    .query(
                        "SELECT id FROM blobs WHERE refs !=
                         (SELECT COUNT(*) FROM files WHERE blob = blobs.id)
                       + (SELECT COUNT(*) FROM names WHERE blob = blobs.id)
                       + (SELECT COUNT(*) FROM kept_blobs WHERE blob = blobs.id)",
                        &[],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
            .unwrap()
    }

    /// Objects in the bucket under `blobs/`.
    pub(crate) fn blob_files(&self) -> usize {
        let store = self.open();
        store.wait(store.objects.count_under("blobs")).unwrap()
    }

    /// Objects in the bucket: none once everything is swept.
    pub(crate) fn objects(&self) -> usize {
        let store = self.open();
        let blobs = store.wait(store.objects.count_under("blobs")).unwrap();
        blobs + store.wait(store.objects.count_under("tail")).unwrap()
    }
}

/// Two handles on one database are two instances: the later take wins,
/// and the older holder's sync is refused with nothing changed; the new
/// holder goes on and completes.
#[test]
fn a_taken_upload_fences_the_older_instance() {
    let Some(fx) = Fixture::new("a_taken_upload_fences_the_older_instance") else {
        return;
    };
    let (a, b) = (fx.open(), fx.open());
    let files = [NewFile {
        name: "f",
        size: 6,
        sha1: Sha1Digest::of(b"abcdef"),
        attrs: None,
    }];
    let batch = a.create_batch(&new_batch(1, &files, 1000)).unwrap();
    let p = partial_of(&batch, 0);
    a.write_partial(p, 0, b"abc").unwrap();
    a.sync_partial(p, 3, None).unwrap();
    let taken = b.take_upload(batch.id).unwrap();
    assert_eq!(taken.files[0].received(), 3);
    a.write_partial(p, 3, b"d").unwrap();
    assert!(matches!(
        a.sync_partial(p, 4, None),
        Err(StoreError::Fenced)
    ));
    assert!(matches!(a.reset_partial(p), Err(StoreError::Fenced)));
    let file = FileRef {
        batch: batch.id,
        index: 0,
    };
    assert!(matches!(
        a.complete_file(file, p, &content(b"abcdef")),
        Err(StoreError::Fenced)
    ));
    let seen = live(b.find_by_code(&key(1), 10).unwrap());
    assert_eq!(
        seen.files[0].content,
        FileContent::Partial { id: p, durable: 3 },
        "the fenced sync changed nothing"
    );
    b.write_partial(p, 3, b"def").unwrap();
    b.sync_partial(p, 6, None).unwrap();
    b.complete_file(file, p, &content(b"abcdef")).unwrap();
    assert!(live(a.find_by_code(&key(1), 10).unwrap()).ready());
    // Taking it back makes `a` the holder again.
    a.take_upload(batch.id).unwrap();
    assert!(matches!(
        b.link_file(file, crate::store::BlobId(1)),
        Err(StoreError::Fenced)
    ));
}

/// Two instances sweeping at once delete each expired batch once: their
/// counts add up to the batches there were, and everything is gone.
#[test]
fn sweeps_of_two_instances_do_disjoint_work() {
    let Some(fx) = Fixture::new("sweeps_of_two_instances_do_disjoint_work") else {
        return;
    };
    let (a, b) = (fx.open(), fx.open());
    let names: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
    let mut batches = 0u64;
    for n in 0..120u8 {
        let data = [n; 3];
        let files = [NewFile {
            name: &names[usize::from(n)],
            size: 3,
            sha1: Sha1Digest::of(&data),
            attrs: None,
        }];
        let made = a.create_batch(&new_batch(n, &files, 100)).unwrap();
        let p = partial_of(&made, 0);
        a.write_partial(p, 0, &data).unwrap();
        if n % 2 == 0 {
            let file = FileRef {
                batch: made.id,
                index: 0,
            };
            a.complete_file(file, p, &content(&data)).unwrap();
        } else {
            a.sync_partial(p, 3, None).unwrap();
        }
        batches += 1;
    }
    let (sa, sb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.sweep(100, 0).unwrap());
        let tb = s.spawn(|| b.sweep(100, 0).unwrap());
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(sa.batches + sb.batches, batches);
    assert_eq!(sa.blobs + sb.blobs, 60);
    assert_eq!(sa.partials + sb.partials, 60);
    assert_eq!(a.usage().unwrap(), Default::default());
    assert_eq!(
        fx.objects(),
        0,
        "every object of the swept uploads is deleted"
    );
    assert_eq!(a.sweep(100, 0).unwrap(), Default::default());
}

/// `pickup-relay migrate` applies every migration once and reports the
/// version; a store opens on the database it made.
#[test]
fn migrate_database_reports_the_schema_version() {
    let Some(fx) = Fixture::new("migrate_database_reports_the_schema_version") else {
        return;
    };
    let (applied, current) = super::migrate_database(&fx.url).unwrap();
    assert_eq!(current, super::migrations::MIGRATIONS.len() as i32);
    assert_eq!(applied.len(), super::migrations::MIGRATIONS.len());
    let (again, _) = super::migrate_database(&fx.url).unwrap();
    assert!(again.is_empty());
    drop(fx.open());
}

/// A session's task may ask for the usage on a runtime worker (a quota
/// checked again): the store waits without stalling that runtime, and
/// without tokio's panic at a runtime started within a runtime.
#[test]
fn a_call_from_a_runtime_worker_is_answered() {
    let Some(fx) = Fixture::new("a_call_from_a_runtime_worker_is_answered") else {
        return;
    };
    let store = std::sync::Arc::new(fx.open());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let task = {
        let store = store.clone();
        rt.spawn(async move { store.usage() })
    };
    let usage = rt.block_on(task).unwrap().unwrap();
    assert_eq!(usage, crate::store::Usage::default());
}

/// A step is tried again when its connection is lost, even after a
/// commit whose answer was lost: creating a batch again finds the batch
/// of its (random, never reused) token instead of failing.
#[test]
fn a_batch_created_again_is_the_batch_of_its_token() {
    let Some(fx) = Fixture::new("a_batch_created_again_is_the_batch_of_its_token") else {
        return;
    };
    let store = fx.open();
    let files = [NewFile {
        name: "f",
        size: 3,
        sha1: Sha1Digest::of(b"abc"),
        attrs: None,
    }];
    let first = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    let again = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    assert_eq!(again, first);
    assert_eq!(store.usage().unwrap().batches, 1);
    let mut other = new_batch(2, &files, 1000);
    other.token_key = key(101);
    assert!(store.create_batch(&other).is_err());
}

/// Two instances pushing to one terminal at once cannot both take its
/// last open place.
#[test]
fn caps_hold_across_instances_pushing_at_once() {
    use crate::mailbox::{Mailbox, NewPush, PushSettings, Pushed};
    let Some(fx) = Fixture::new("caps_hold_across_instances_pushing_at_once") else {
        return;
    };
    let (a, b) = (fx.open(), fx.open());
    let files = [NewFile {
        name: "e",
        size: 0,
        sha1: Sha1Digest::EMPTY,
        attrs: None,
    }];
    let batch = new_batch(1, &files, 1000);
    a.create_batch(&batch).unwrap();
    let limits = PushSettings {
        max_open_per_terminal: 1,
        ..PushSettings::default()
    };
    let push = |store: &PgStore, sender: &'static str| {
        let p = NewPush {
            sender,
            push_id: 1,
            code: batch.code,
            code_key: batch.code_key,
            terminal: "desk",
            now: 10,
        };
        store.push(&p, &limits).unwrap()
    };
    let (pa, pb) = std::thread::scope(|s| {
        let ta = s.spawn(|| push(&a, "ada"));
        let tb = s.spawn(|| push(&b, "bob"));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let queued = [&pa, &pb]
        .iter()
        .filter(|p| matches!(p, Pushed::Queued(_)))
        .count();
    assert_eq!(queued, 1, "{pa:?} {pb:?}");
}

/// Instances with separate data directories share everything through
/// PostgreSQL and S3: B, without A's spool, takes A's half-done upload,
/// rebuilds the SHA-1 from the recorded state and the bytes after it (all
/// in segments, invariant I2), continues and completes it; A's later sync
/// is fenced; the blob reads back identical from A.
#[test]
fn another_instance_continues_an_upload_from_shared_storage() {
    use crate::running_sha1::RunningSha1;
    let Some(fx) = Fixture::new("another_instance_continues_an_upload_from_shared_storage") else {
        return;
    };
    const MIB: usize = 1 << 20;
    let data: Vec<u8> = (0..20 * MIB as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let other_dir = tempfile::tempdir().unwrap();
    let (a, b) = (fx.open(), fx.open_in(other_dir.path()));
    let files = [NewFile {
        name: "big",
        size: data.len() as u64,
        sha1: Sha1Digest::of(&data),
        attrs: None,
    }];
    let batch = a.create_batch(&new_batch(1, &files, 1000)).unwrap();
    let p = partial_of(&batch, 0);
    // A: 11 MiB in 1 MiB writes, synced every 2 MiB with the hash state,
    // so the first 8 MiB fold into a part and the rest stay segments.
    let mut hash = RunningSha1::new();
    for (i, chunk) in data[..11 * MIB].chunks(MIB).enumerate() {
        let offset = (i * MIB) as u64;
        a.write_partial(p, offset, chunk).unwrap();
        hash.update(chunk);
        let end = offset + chunk.len() as u64;
        if end % (2 * MIB as u64) == 0 || end == 11 * MIB as u64 {
            a.sync_partial(p, end, Some(&hash.midstate())).unwrap();
        }
    }
    let parts_end: i64 = a
        .run(async |tx| {
            let row = tx
                .query_one(
                    "SELECT parts_end FROM partials WHERE id = $1",
                    &[&(p.0 as i64)],
                )
                .await?;
            Ok(row.get(0))
        })
        .unwrap();
    assert_eq!(parts_end, 8 * MIB as i64, "one part folded");

    // B takes over: durable offset and hash state from PostgreSQL, the
    // bytes after the state from the segments.
    let taken = b.take_upload(batch.id).unwrap();
    let durable = taken.files[0].received();
    assert_eq!(durable, 11 * MIB as u64);
    let state = b.partial_hash_state(p).unwrap().expect("a hash state");
    assert!(state.len >= parts_end as u64 && state.len <= durable);
    let mut resumed = RunningSha1::from_midstate(state);
    let mut buf = vec![0u8; MIB];
    let mut at = state.len;
    for _ in 0..100 {
        if at >= durable {
            break;
        }
        let want = (durable - at).min(MIB as u64) as usize;
        let n = b.read_partial(p, at, &mut buf[..want]).unwrap();
        assert!(n > 0, "B reads the durable bytes after the hash state");
        assert_eq!(buf[..n], data[at as usize..at as usize + n]);
        resumed.update(&buf[..n]);
        at += n as u64;
    }
    assert_eq!(at, durable);
    for (i, chunk) in data[durable as usize..].chunks(MIB).enumerate() {
        let offset = durable + (i * MIB) as u64;
        b.write_partial(p, offset, chunk).unwrap();
        resumed.update(chunk);
        b.sync_partial(p, offset + chunk.len() as u64, Some(&resumed.midstate()))
            .unwrap();
    }
    assert_eq!(resumed.digest(), Sha1Digest::of(&data));

    // A, fenced, can no longer record anything.
    a.write_partial(p, 11 * MIB as u64, &data[11 * MIB..12 * MIB])
        .unwrap();
    assert!(matches!(
        a.sync_partial(p, 12 * MIB as u64, None),
        Err(StoreError::Fenced)
    ));

    let file = FileRef {
        batch: batch.id,
        index: 0,
    };
    let blob = b.complete_file(file, p, &content(&data)).unwrap();
    assert!(live(a.find_by_code(&key(1), 10).unwrap()).ready());
    let mut back = Vec::with_capacity(data.len());
    for _ in 0..100 {
        let n = a.read_blob(blob, back.len() as u64, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        back.extend_from_slice(&buf[..n]);
    }
    assert!(back == data, "the blob reads back identical");
    // Swept, nothing stays in the bucket.
    a.sweep(1000, 0).unwrap();
    assert_eq!(fx.objects(), 0);
}

/// Two instances finishing the same bytes at once (design §4): the
/// content lock orders their decisions, the second compares with the
/// first's blob and shares it, and the copy it stored is collected.
#[test]
fn the_same_bytes_finished_on_two_instances_at_once_make_one_blob() {
    let Some(fx) = Fixture::new("the_same_bytes_finished_on_two_instances_at_once_make_one_blob")
    else {
        return;
    };
    let other_dir = tempfile::tempdir().unwrap();
    let (a, b) = (fx.open(), fx.open_in(other_dir.path()));
    let data = b"the same bytes, twice".repeat(1000);
    let files = [NewFile {
        name: "same",
        size: data.len() as u64,
        sha1: Sha1Digest::of(&data),
        attrs: None,
    }];
    let upload = |store: &PgStore, n: u8| {
        let batch = store.create_batch(&new_batch(n, &files, 1000)).unwrap();
        let p = partial_of(&batch, 0);
        store.write_partial(p, 0, &data).unwrap();
        let file = FileRef {
            batch: batch.id,
            index: 0,
        };
        (file, p)
    };
    let (fa, pa) = upload(&a, 1);
    let (fb, pb) = upload(&b, 2);
    let (ba, bb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.complete_file(fa, pa, &content(&data)).unwrap());
        let tb = s.spawn(|| b.complete_file(fb, pb, &content(&data)).unwrap());
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(ba, bb, "one blob, shared");
    assert_eq!(
        a.candidates(data.len() as u64, &Sha1Digest::of(&data), 4)
            .unwrap(),
        [ba]
    );
    assert!(fx.miscounted_blobs().is_empty());
    a.sweep(10, 0).unwrap();
    assert_eq!(fx.blob_files(), 1, "the second copy is collected");
    let mut buf = vec![0u8; data.len() + 1];
    assert_eq!(b.read_blob(ba, 0, &mut buf).unwrap(), data.len());
    assert!(buf[..data.len()] == data[..]);
}

/// A reset dooms the old segments, and the same ranges written again
/// after it are new objects: collecting the old ones leaves the new bytes
/// readable and the upload completes with them.
#[test]
fn bytes_synced_after_a_reset_survive_the_collection_of_the_old_ones() {
    let Some(fx) = Fixture::new("bytes_synced_after_a_reset_survive_the_collection") else {
        return;
    };
    let store = fx.open();
    let files = [NewFile {
        name: "f",
        size: 6,
        sha1: Sha1Digest::of(b"abcdef"),
        attrs: None,
    }];
    let batch = store.create_batch(&new_batch(1, &files, 1000)).unwrap();
    let p = partial_of(&batch, 0);
    store.write_partial(p, 0, b"XYZ").unwrap();
    store.sync_partial(p, 3, None).unwrap();
    store.reset_partial(p).unwrap();
    store.write_partial(p, 0, b"abc").unwrap();
    store.sync_partial(p, 3, None).unwrap();
    store.sweep(10, 0).unwrap();
    // A crash empties the spool: the bytes come from the new segment.
    // (The reset took the upload's fence again, so the restarted
    // instance takes it, as every resume does, before it goes on.)
    drop(store);
    let store = fx.open();
    store.take_upload(batch.id).unwrap();
    let mut buf = [0u8; 3];
    assert_eq!(store.read_partial(p, 0, &mut buf).unwrap(), 3);
    assert_eq!(&buf, b"abc");
    store.write_partial(p, 3, b"def").unwrap();
    let file = FileRef {
        batch: batch.id,
        index: 0,
    };
    let blob = store.complete_file(file, p, &content(b"abcdef")).unwrap();
    store.sweep(10, 0).unwrap();
    let mut all = [0u8; 7];
    assert_eq!(store.read_blob(blob, 0, &mut all).unwrap(), 6);
    assert_eq!(&all[..6], b"abcdef");
    assert_eq!(fx.objects(), 1, "only the blob is left");
}
