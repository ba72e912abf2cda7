//! Deliveries (PROTOCOL.md §11, [`crate::mailbox`]) checked against both
//! stores: a push and its retry, durability across a crash (for SQLite a
//! close and reopen, as a relay crash), who may settle what, progress,
//! caps, and the sweep's deadlines. "Crash" is as in `tests.rs`.

use pickup_proto::message::DeliveryState;
use pickup_proto::Sha1Digest;

use super::memory::MemoryStore;
use super::postgres::PgStore;
use super::tests::{content, key, new_batch, partial_of, reopen};
use super::*;
use crate::mailbox::rules::Cap;
use crate::mailbox::{DeliveryRecord, NewPush, PushRefusal, PushSettings, Pushed, Settle, Settled};

/// Batch `n` of one file of `data`, complete unless `complete` is false.
fn batch<S: Store>(
    store: &S,
    n: u8,
    data: &'static [u8],
    expires_at: u64,
    complete: bool,
) -> Batch {
    let files = [NewFile {
        name: "f",
        size: data.len() as u64,
        sha1: Sha1Digest::of(data),
        attrs: None,
    }];
    let b = store
        .create_batch(&new_batch(n, &files, expires_at))
        .unwrap();
    if complete {
        let p = partial_of(&b, 0);
        store.write_partial(p, 0, data).unwrap();
        let file = FileRef {
            batch: b.id,
            index: 0,
        };
        store.complete_file(file, p, &content(data)).unwrap();
    }
    b
}

fn push_of<'a>(sender: &'a str, push_id: u64, n: u8, terminal: &'a str, now: u64) -> NewPush<'a> {
    NewPush {
        sender,
        push_id,
        code: Code::from_parts(13, u128::from(n)).unwrap(),
        code_key: key(n),
        terminal,
        now,
    }
}

fn queued<S: Store>(store: &S, p: &NewPush<'_>) -> DeliveryRecord {
    match store.push(p, &PushSettings::default()).unwrap() {
        Pushed::Queued(d) => d,
        other => panic!("expected a new delivery, got {other:?}"),
    }
}

fn state<S: Store>(store: &S, sender: &str, push_id: u64) -> DeliveryState {
    store
        .delivery_by_push(sender, push_id)
        .unwrap()
        .unwrap()
        .state
}

/// A push, its retry, a crash, acknowledgements and receipts from the
/// right and the wrong terminal, and progress.
fn lifecycle<S: Store>(mut store: S, crash: impl Fn(S) -> S) -> S {
    let p = PushSettings::default();
    let b = batch(&store, 1, b"hello", 1000, true);
    batch(&store, 2, b"busy", 1000, false);
    let refused = |s: &S, n| match s.push(&push_of("ada", 50, n, "desk", 10), &p).unwrap() {
        Pushed::Refused(why) => why,
        other => panic!("{other:?}"),
    };
    assert_eq!(refused(&store, 2), PushRefusal::NotReady);
    assert_eq!(refused(&store, 9), PushRefusal::UnknownCode);
    let d = queued(&store, &push_of("ada", 1, 1, "desk", 10));
    assert_eq!(
        (d.state, d.total, d.files, d.until, d.at, d.code.value()),
        (DeliveryState::Queued, 5, 1, 1000, 10, 1)
    );
    // The same push again, even naming something else, is the same one.
    let again = store.push(&push_of("ada", 1, 2, "phone", 11), &p).unwrap();
    assert_eq!(again, Pushed::Again(d.clone()));
    // Another sender's push_id 1 is another push.
    let other = queued(&store, &push_of("bob", 1, 1, "desk", 12));
    assert!(other.id > d.id);

    // Stored before the answer: a crash keeps it.
    store = crash(store);
    assert_eq!(store.delivery_by_push("ada", 1).unwrap(), Some(d.clone()));
    let inbox = store.inbox("desk", 0, 100).unwrap();
    assert_eq!(
        inbox.iter().map(|x| x.id).collect::<Vec<_>>(),
        [d.id, other.id]
    );
    assert_eq!(
        store.inbox("desk", d.id, 100).unwrap(),
        std::slice::from_ref(&other)
    );
    assert_eq!(store.inbox("desk", 0, 1).unwrap().len(), 1, "bounded");
    assert!(store.inbox("phone", 0, 100).unwrap().is_empty());

    // Only the target acknowledges or settles.
    assert!(!store.acknowledge("phone", d.id, 20).unwrap());
    assert_eq!(state(&store, "ada", 1), DeliveryState::Queued);
    assert!(store.acknowledge("desk", d.id, 20).unwrap());
    assert_eq!(state(&store, "ada", 1), DeliveryState::Notified);
    assert_eq!(
        store.settle("phone", d.id, Settle::Receipt, 21).unwrap(),
        Settled::Unknown
    );
    assert_eq!(
        store.settle("desk", u64::MAX, Settle::Receipt, 21).unwrap(),
        Settled::Unknown
    );
    assert_eq!(state(&store, "ada", 1), DeliveryState::Notified);

    // Progress: the furthest end per file, never counted twice.
    let kept = store
        .record_progress("desk", b.id, &[(0, 3)], 30, 300)
        .unwrap();
    assert_eq!(kept, Some(1000), "the code outlives the grace already");
    let r = store.delivery_by_push("ada", 1).unwrap().unwrap();
    assert_eq!(
        (r.state, r.bytes, r.last_read_at, r.at),
        (DeliveryState::Receiving, 3, Some(30), 30)
    );
    store
        .record_progress("desk", b.id, &[(0, 2)], 31, 300)
        .unwrap();
    assert_eq!(store.delivery_by_push("ada", 1).unwrap().unwrap().bytes, 3);
    store
        .record_progress("desk", b.id, &[(0, 5), (7, 99)], 32, 300)
        .unwrap();
    assert_eq!(
        store.delivery_by_push("ada", 1).unwrap().unwrap().bytes,
        5,
        "capped at the total"
    );
    assert_eq!(
        store
            .record_progress("phone", b.id, &[(0, 5)], 33, 300)
            .unwrap(),
        None
    );
    // A read near the expiry keeps the batch for the grace.
    assert_eq!(
        store.record_progress("desk", b.id, &[], 900, 300).unwrap(),
        Some(1200)
    );
    assert!(matches!(
        store.find_by_code(&key(1), 1100).unwrap(),
        Lookup::Live(_)
    ));

    // A receipt settles once; repeated, it finds it settled.
    assert_eq!(
        store.settle("desk", d.id, Settle::Receipt, 40).unwrap(),
        Settled::Now(DeliveryState::Delivered)
    );
    assert_eq!(
        store.settle("desk", d.id, Settle::Refuse, 41).unwrap(),
        Settled::Already(DeliveryState::Delivered)
    );
    assert!(!store.acknowledge("phone", d.id, 42).unwrap());
    assert!(store.acknowledge("desk", d.id, 42).unwrap());
    assert_eq!(
        state(&store, "ada", 1),
        DeliveryState::Delivered,
        "an ack after is nothing"
    );
    assert_eq!(
        store.settle("desk", other.id, Settle::Refuse, 43).unwrap(),
        Settled::Now(DeliveryState::Refused)
    );
    assert!(store.inbox("desk", 0, 100).unwrap().is_empty());
    store = crash(store);
    assert_eq!(state(&store, "ada", 1), DeliveryState::Delivered);
    assert_eq!(state(&store, "bob", 1), DeliveryState::Refused);
    // Status: the sender's pushes of the code only.
    assert_eq!(store.deliveries_of("ada", &key(1), 10).unwrap().len(), 1);
    assert_eq!(
        store.deliveries_of("bob", &key(1), 10).unwrap()[0].id,
        other.id
    );
    assert!(store.deliveries_of("cy", &key(1), 10).unwrap().is_empty());
    store
}

#[test]
fn memory_store_keeps_deliveries_through_a_crash() {
    lifecycle(MemoryStore::new(), |s| {
        s.crash();
        s
    });
}

#[test]
fn sqlite_store_keeps_deliveries_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    drop(lifecycle(reopen(&path), |s| {
        drop(s);
        reopen(&path)
    }));
}

/// Each cap refuses the push past it; the per-sender-and-terminal one
/// leaves room for other senders.
fn caps<S: Store>(store: &S) {
    let p = PushSettings {
        max_open_per_terminal: 3,
        max_open_per_sender_terminal: 2,
        max_open_per_sender: 4,
        max_offline_bytes_per_sender: 12,
        ..PushSettings::default()
    };
    batch(store, 1, b"12345", 1000, true);
    batch(store, 2, b"6789012", 1000, true);
    let push = |sender, id, n, terminal| {
        store
            .push(&push_of(sender, id, n, terminal, 1), &p)
            .unwrap()
    };
    let full = |c| Pushed::Refused(PushRefusal::Full(c));
    assert!(matches!(push("ada", 1, 1, "desk"), Pushed::Queued(_)));
    assert!(matches!(push("ada", 2, 1, "desk"), Pushed::Queued(_)));
    assert_eq!(push("ada", 3, 1, "desk"), full(Cap::SenderTerminal));
    assert!(matches!(push("bob", 1, 1, "desk"), Pushed::Queued(_)));
    assert_eq!(push("cy", 1, 1, "desk"), full(Cap::Terminal));
    // 5 + 7 bytes of distinct batches: the same batch again costs nothing.
    assert!(matches!(push("ada", 4, 2, "phone"), Pushed::Queued(_)));
    assert!(matches!(push("ada", 5, 1, "tv"), Pushed::Queued(_)));
    assert_eq!(push("ada", 6, 1, "pad"), full(Cap::Sender));
    let small = PushSettings {
        max_offline_bytes_per_sender: 11,
        ..p
    };
    assert_eq!(
        store
            .push(&push_of("bob", 2, 2, "phone", 1), &small)
            .unwrap(),
        full(Cap::OfflineBytes)
    );
    // A settled delivery no longer counts.
    let id = store.delivery_by_push("ada", 1).unwrap().unwrap().id;
    store.settle("desk", id, Settle::Refuse, 2).unwrap();
    assert!(matches!(push("ada", 7, 1, "desk"), Pushed::Queued(_)));
}

#[test]
fn caps_hold_in_both_stores() {
    caps(&MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    caps(&reopen(dir.path()));
}

/// Offline after the confirm deadline (once, with the batch kept), the
/// receiving grace, and expiry with the batch.
fn deadlines<S: Store>(store: &S) {
    let p = PushSettings::default();
    let ttl = p.offline_ttl_secs;
    batch(store, 1, b"offline", 1000, true);
    let d = queued(store, &push_of("ada", 1, 1, "desk", 0));
    assert_eq!(store.sweep_deliveries(599, &p).unwrap().offline, 0);
    assert_eq!(store.sweep_deliveries(600, &p).unwrap().offline, 1);
    let r = store.delivery_by_push("ada", 1).unwrap().unwrap();
    assert_eq!(
        (r.state, r.at, r.until),
        (DeliveryState::Offline, 600, 600 + ttl)
    );
    let Lookup::Live(b) = store.find_by_code(&key(1), 1000).unwrap() else {
        panic!("an offline file outlives its code");
    };
    assert_eq!(b.expires_at, 600 + ttl);
    // The target comes back: Receiving, and no second Offline.
    store
        .record_progress("desk", d.batch, &[(0, 1)], 700, 300)
        .unwrap();
    assert_eq!(store.sweep_deliveries(800, &p).unwrap().offline, 0);
    assert_eq!(state(store, "ada", 1), DeliveryState::Receiving);
    // Still offline-kept, so the store sweep at the old expiry keeps it.
    assert_eq!(store.sweep(1000, 0).unwrap().deliveries_expired, 0);

    // The receiving grace, found by the sweep (no extension at the read).
    batch(store, 2, b"reading", 1000, true);
    let r2 = queued(store, &push_of("ada", 2, 2, "desk", 900));
    store
        .record_progress("desk", r2.batch, &[(0, 3)], 950, 0)
        .unwrap();
    let swept = store.sweep_deliveries(1010, &p).unwrap();
    assert_eq!(swept.kept_receiving, 1);
    assert!(matches!(
        store.find_by_code(&key(2), 1010).unwrap(),
        Lookup::Live(_)
    ));
    assert_eq!(store.sweep(1010, 0).unwrap().deliveries_expired, 0);
    // Past the grace: expired with the batch, kept for status, then forgotten.
    batch(store, 3, b"expires", 1000, true);
    let e = queued(store, &push_of("bob", 1, 3, "phone", 990));
    store.sweep_deliveries(1300, &p).unwrap();
    let stats = store.sweep(1300, 0).unwrap();
    assert_eq!(stats.deliveries_expired, 2, "batches 2 and 3");
    let r = store.delivery_by_push("bob", 1).unwrap().unwrap();
    assert_eq!((r.state, r.at), (DeliveryState::Expired, 1000));
    assert!(store.inbox("phone", 0, 10).unwrap().is_empty());
    assert_eq!(store.deliveries_of("bob", &key(3), 10).unwrap()[0].id, e.id);
    assert_eq!(
        store.settle("phone", e.id, Settle::Receipt, 1301).unwrap(),
        Settled::Already(DeliveryState::Expired)
    );
    let stats = store.sweep(5000, 1251).unwrap();
    assert_eq!(stats.deliveries_forgotten, 2);
    assert_eq!(store.delivery_by_push("bob", 1).unwrap(), None);
    assert!(
        store.delivery_by_push("ada", 1).unwrap().is_some(),
        "its batch lives"
    );
}

#[test]
fn deadlines_hold_in_both_stores() {
    deadlines(&MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    deadlines(&reopen(dir.path()));
}

/// More deliveries than one sweep transaction takes all go offline.
fn many_go_offline<S: Store>(store: &S) {
    let p = PushSettings {
        max_open_per_sender_terminal: 1000,
        max_open_per_terminal: 1000,
        ..PushSettings::default()
    };
    batch(store, 1, b"many", 10_000, true);
    for id in 0..600 {
        let pushed = store.push(&push_of("ada", id, 1, "desk", 0), &p).unwrap();
        assert!(matches!(pushed, Pushed::Queued(_)));
    }
    assert_eq!(store.sweep_deliveries(600, &p).unwrap().offline, 600);
    assert_eq!(store.sweep_deliveries(601, &p).unwrap().offline, 0);
}

#[test]
fn a_sweep_takes_every_due_delivery_offline_in_chunks() {
    many_go_offline(&MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    many_go_offline(&reopen(dir.path()));
}

#[test]
fn pg_store_keeps_deliveries_across_a_reopen() {
    type Fx = crate::store::postgres::tests::Fixture;
    let Some(fx) = Fx::new("pg_store_keeps_deliveries_across_a_reopen") else {
        return;
    };
    drop(lifecycle(fx.open(), |s| {
        drop(s);
        fx.open()
    }));
    for (test, body) in [
        ("pg_caps_hold", caps::<PgStore> as fn(&PgStore)),
        ("pg_deadlines_hold", deadlines::<PgStore>),
        (
            "pg_a_sweep_takes_every_due_delivery_offline",
            many_go_offline::<PgStore>,
        ),
    ] {
        let Some(fx) = Fx::new(test) else {
            return;
        };
        body(&fx.open());
    }
}
