//! The end of a forward's row ([`crate::store::forwards`]) checked
//! against every store: the sweep of finished forwards after `[forward]
//! keep_finished_secs`, and the cap on open forwards that a retry by
//! command reopening a failed forward counts against. For SQLite and
//! PostgreSQL a crash is a close and reopen.

use pickup_proto::error::ErrorCode;
use pickup_proto::message::{ForwardState, ResumeToken};

use super::forwards::{Created, ForwardChange, ForwardRecord, NewForward, Retried};
use super::forwards_tests::{claim_one, code, create, new_forward, progress};
use super::memory::MemoryStore;
use super::tests::reopen;
use super::*;

/// The sweep of finished forwards: only `Done` and `Failed` ones that
/// finished before the cut-off, at most `limit` a transaction; open
/// forwards stay whatever their age; a swept id reads as unknown and is
/// never given again.
fn sweeps_finished<S: Store>(mut store: S, crash: impl Fn(S) -> S) -> S {
    let done = |n: u8| ForwardChange::Done {
        peer_code: code(n),
        peer_expires_at: 9000,
        peer_token: ResumeToken([n; 16]),
    };
    let fail = ForwardChange::Fail {
        reason: ErrorCode::PeerUnreachable,
        peer_token: None,
    };
    let a1 = create(&store, &new_forward(1, "ada", 100)).id;
    let a2 = create(&store, &new_forward(2, "ada", 100)).id;
    let a3 = create(&store, &new_forward(3, "ada", 100)).id;
    let a4 = create(&store, &new_forward(4, "ada", 100)).id;
    let b5 = create(&store, &new_forward(5, "bob", 100)).id;
    // Leased past every time below: none is due again.
    assert_eq!(store.claim_forwards(100, 10_000, 5).unwrap().len(), 5);
    let advance = |id, change: &ForwardChange, now| {
        store.advance_forward(id, 1, change, now).unwrap().unwrap();
    };
    advance(a1, &done(1), 110);
    advance(a2, &fail, 120);
    // Finished at the cut-off itself: not before it, kept.
    advance(a3, &done(3), 121);
    // Open, and changed long before the cut-off.
    advance(a4, &progress(ForwardState::Transferring, 10, None), 105);
    let retry_later = ForwardChange::Retry {
        reason: ErrorCode::PeerUnreachable,
        peer_token: None,
        next_attempt_at: 10_000,
    };
    advance(b5, &retry_later, 115);
    let q = create(&store, &new_forward(6, "bob", 100)).id;
    // The newest id, finished and swept: ids must not come back.
    let last = create(&store, &new_forward(7, "carl", 50)).id;
    assert_eq!(claim_one(&store, 100).id, last, "due first");
    store.advance_forward(last, 1, &fail, 101).unwrap().unwrap();
    store = crash(store);
    let kept: Vec<ForwardRecord> = [a3, a4, b5, q]
        .iter()
        .map(|&id| store.forward(id).unwrap().unwrap())
        .collect();
    assert_eq!(
        kept.iter().map(|r| r.state).collect::<Vec<_>>(),
        [
            ForwardState::Done,
            ForwardState::Transferring,
            ForwardState::Retrying,
            ForwardState::Queued
        ]
    );

    // Three finished before 121, two a transaction.
    assert_eq!(store.sweep_forwards(121, 2).unwrap(), 2);
    assert_eq!(store.sweep_forwards(121, 2).unwrap(), 1);
    assert_eq!(store.sweep_forwards(121, 2).unwrap(), 0);
    for id in [a1, a2, last] {
        assert_eq!(store.forward(id).unwrap(), None, "forward {id} swept");
    }
    for r in &kept {
        assert_eq!(store.forward(r.id).unwrap().as_ref(), Some(r), "{}", r.id);
    }
    // A swept failed forward is unknown to a retry.
    assert_eq!(store.retry_forward(a2, "ada", 130, 64).unwrap(), None);
    store = crash(store);
    assert_eq!(store.forward(a1).unwrap(), None, "deleted durably");
    let next = create(&store, &new_forward(8, "ada", 130));
    assert!(next.id > last, "id {} given again", next.id);
    // The whole sweep: what finished before 122, then nothing open.
    assert_eq!(store.sweep_finished(122).unwrap(), 1);
    assert_eq!(store.forward(a3).unwrap(), None);
    assert_eq!(store.sweep_finished(1_000_000).unwrap(), 0);
    for id in [a4, b5, q, next.id] {
        assert!(store.forward(id).unwrap().is_some_and(|r| r.is_open()));
    }
    store
}

/// A retry by command that reopens a `Failed` forward counts against
/// `max_open` in its transaction, as a create does; a `Retrying` one
/// counts already, and a refused retry changes nothing.
fn retries_and_caps<S: Store>(mut store: S, crash: impl Fn(S) -> S) -> S {
    let fail = ForwardChange::Fail {
        reason: ErrorCode::PeerUnreachable,
        peer_token: None,
    };
    let f = create(&store, &new_forward(1, "ada", 100)).id;
    let open = create(&store, &new_forward(2, "ada", 100)).id;
    let b = create(&store, &new_forward(3, "bob", 100)).id;
    assert_eq!(store.claim_forwards(100, 10_000, 5).unwrap().len(), 3);
    store.advance_forward(f, 1, &fail, 101).unwrap().unwrap();
    let retry_later = ForwardChange::Retry {
        reason: ErrorCode::PeerUnreachable,
        peer_token: None,
        next_attempt_at: 10_000,
    };
    store
        .advance_forward(b, 1, &retry_later, 101)
        .unwrap()
        .unwrap();
    let failed = store.forward(f).unwrap().unwrap();
    // ada: one open (running), one failed. At a cap of one: refused.
    assert_eq!(
        store.retry_forward(f, "ada", 110, 1).unwrap(),
        Some(Retried::Full(failed.clone()))
    );
    store = crash(store);
    assert_eq!(store.forward(f).unwrap(), Some(failed.clone()), "unchanged");
    // Another user's id is unknown, whatever the cap.
    assert_eq!(store.retry_forward(f, "bob", 110, 1).unwrap(), None);
    // Under the cap: queued again, now open.
    let Some(Retried::Record(r)) = store.retry_forward(f, "ada", 111, 2).unwrap() else {
        panic!("a retry under the cap refused");
    };
    assert_eq!(
        (r.state, r.attempts, r.updated_at),
        (ForwardState::Queued, 0, 111)
    );
    // Now at the cap: a queued forward's retry only reports it.
    assert_eq!(
        store.retry_forward(f, "ada", 112, 2).unwrap(),
        Some(Retried::Record(r))
    );
    assert_eq!(
        store
            .create_forward(&NewForward {
                max_open: 2,
                ..new_forward(4, "ada", 112)
            })
            .unwrap(),
        Created::Full,
        "the retried forward counts"
    );
    // bob's Retrying forward counts already: queued at his cap of one.
    let Some(Retried::Record(r)) = store.retry_forward(b, "bob", 113, 1).unwrap() else {
        panic!("a retrying forward's retry refused at the cap");
    };
    assert_eq!(r.state, ForwardState::Queued);
    // A finished forward of ada's frees room for the failed one's retry.
    let claimed = store.claim_forwards(120, 10_000, 5).unwrap();
    let c = claimed.iter().find(|c| c.id == f).unwrap();
    store
        .advance_forward(f, c.claim, &fail, 121)
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            store.retry_forward(f, "ada", 122, 1).unwrap(),
            Some(Retried::Full(r)) if r.state == ForwardState::Failed
        ),
        "{open} still running"
    );
    let done = ForwardChange::Done {
        peer_code: code(9),
        peer_expires_at: 9000,
        peer_token: ResumeToken([9; 16]),
    };
    store.advance_forward(open, 1, &done, 123).unwrap().unwrap();
    assert!(matches!(
        store.retry_forward(f, "ada", 124, 1).unwrap(),
        Some(Retried::Record(r)) if r.state == ForwardState::Queued
    ));
    store
}

#[test]
fn memory_store_sweeps_finished_forwards_and_caps_retries() {
    sweeps_finished(MemoryStore::new(), |s| {
        s.crash();
        s
    });
    retries_and_caps(MemoryStore::new(), |s| {
        s.crash();
        s
    });
}

#[test]
fn sqlite_store_sweeps_finished_forwards_and_caps_retries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    drop(sweeps_finished(reopen(&path), |s| {
        drop(s);
        reopen(&path)
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    drop(retries_and_caps(reopen(&path), |s| {
        drop(s);
        reopen(&path)
    }));
}

#[test]
fn pg_store_sweeps_finished_forwards_and_caps_retries() {
    type Fx = crate::store::postgres::tests::Fixture;
    let Some(fx) = Fx::new("pg_store_sweeps_finished_forwards") else {
        return;
    };
    drop(sweeps_finished(fx.open(), |s| {
        drop(s);
        fx.open()
    }));
    let Some(fx) = Fx::new("pg_store_caps_retries") else {
        return;
    };
    drop(retries_and_caps(fx.open(), |s| {
        drop(s);
        fx.open()
    }));
}

/// A retry that reopens a failed forward takes its requester's turn, as
/// a create does, and counts after it: while another transaction (an
/// instance creating one) holds ada's turn and stores an open forward of
/// hers, the retry waits, then sees that forward and is refused.
#[test]
fn pg_a_retry_counts_after_the_requesters_turn() {
    type Fx = crate::store::postgres::tests::Fixture;
    use crate::store::postgres::db::Db;
    let Some(fx) = Fx::new("pg_a_retry_counts_after_the_requesters_turn") else {
        return;
    };
    let store = fx.open();
    let f = create(&store, &new_forward(1, "ada", 100)).id;
    let c = claim_one(&store, 100);
    let fail = ForwardChange::Fail {
        reason: ErrorCode::PeerUnreachable,
        peer_token: None,
    };
    store
        .advance_forward(f, c.claim, &fail, 101)
        .unwrap()
        .unwrap();
    let db = Db::connect(fx.url(), 1).unwrap();
    let queued = i64::from(ForwardState::Queued.number());
    let (go, started) = std::sync::mpsc::channel();
    let retried = std::thread::scope(|s| {
        let store = &store;
        let retry = s.spawn(move || {
            started.recv().unwrap();
            store.retry_forward(f, "ada", 110, 1).unwrap()
        });
        db.block_on(db.transaction(async |tx| {
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('forward-requester:' || $1, 0))",
                &[&"ada"],
            )
            .await?;
            let _ = go.send(());
            // Until the retry waits for the turn (at most 10 s: a retry
            // that does not wait has finished by then, and is refused
            // below only if it counted after this commit).
            for _ in 0..1000 {
                let waiting: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                         AND NOT granted
                         AND database = (SELECT oid FROM pg_database
                                         WHERE datname = current_database())",
                        &[],
                    )
                    .await?
                    .get(0);
                if waiting > 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tx.execute(
                "INSERT INTO forwards(batch, code_len, code_value, requester, peer, state,
                     sent, total, attempts, next_attempt_at, peer_expires_at, claim,
                     lease_until, created_at, updated_at)
                 VALUES (2, 13, decode(repeat('00', 16), 'hex'), 'ada', 'site-b', $1,
                     0, 1, 0, 105, 0, 0, 0, 105, 105)",
                &[&queued],
            )
            .await?;
            Ok(())
        }))
        .unwrap();
        retry.join().unwrap()
    });
    let failed = store.forward(f).unwrap().unwrap();
    assert_eq!(failed.state, ForwardState::Failed);
    assert_eq!(retried, Some(Retried::Full(failed)));
}
