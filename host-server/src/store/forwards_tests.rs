//! The queue of forwards ([`crate::store::forwards`]) checked against
//! every store: a forward's whole life across a crash (for SQLite and
//! PostgreSQL a close and reopen), claims and their fences, due times and
//! leases, and who may retry what (the cap on retries and the sweep of
//! finished forwards: forwards_retention_tests.rs).

use pickup_proto::error::ErrorCode;
use pickup_proto::message::{ForwardState, ResumeToken};

use super::forwards::{Created, ForwardChange, ForwardRecord, NewForward, PushTarget, Retried};
use super::memory::MemoryStore;
use super::postgres::PgStore;
use super::tests::reopen;
use super::*;

pub(super) fn code(n: u8) -> Code {
    Code::from_parts(13, u128::from(n)).unwrap()
}

pub(super) fn new_forward(n: u8, requester: &str, now: u64) -> NewForward<'_> {
    NewForward {
        batch: BatchId(u64::from(n)),
        code: code(n),
        requester,
        peer: "site-b",
        total: 1000 + u64::from(n),
        now,
        push: None,
        max_open: 64,
    }
}

/// A new forward the test expects stored.
pub(super) fn create<S: Store>(store: &S, new: &NewForward<'_>) -> ForwardRecord {
    match store.create_forward(new).unwrap() {
        Created::New(r) => r,
        other => panic!("not stored: {other:?}"),
    }
}

/// A retry by command with room under the cap: the forward as it stands
/// after, `None` if it is not `requester`'s.
fn retry_by<S: Store>(store: &S, id: u64, requester: &str, now: u64) -> Option<ForwardRecord> {
    match store.retry_forward(id, requester, now, 64).unwrap() {
        Some(Retried::Record(r)) => Some(r),
        Some(Retried::Full(_)) => panic!("forward {id}: full under the cap"),
        None => None,
    }
}

pub(super) fn progress(
    state: ForwardState,
    sent: u64,
    token: Option<ResumeToken>,
) -> ForwardChange {
    ForwardChange::Progress {
        state,
        sent,
        peer_token: token,
        lease_until: 10_000,
    }
}

pub(super) fn claim_one<S: Store>(store: &S, now: u64) -> ForwardRecord {
    let mut claimed = store.claim_forwards(now, now + 30, 1).unwrap();
    assert_eq!(claimed.len(), 1, "one forward due at {now}");
    claimed.remove(0)
}

/// Request, claim, progress, a failed attempt, a fenced runner, the next
/// claim, done; `crash` between steps keeps every change.
fn lifecycle<S: Store>(mut store: S, crash: impl Fn(S) -> S) -> S {
    let f = create(&store, &new_forward(1, "ada", 100));
    assert_eq!((f.state, f.attempts, f.claim), (ForwardState::Queued, 0, 0));
    assert_eq!((f.sent, f.total, f.requester.as_str()), (0, 1001, "ada"));
    let second = create(&store, &new_forward(2, "bob", 100));
    assert!(second.id > f.id);
    store = crash(store);
    assert_eq!(store.forward(f.id).unwrap(), Some(f.clone()));

    // Oldest first, one at a time.
    let c = claim_one(&store, 100);
    assert_eq!(
        (c.id, c.state, c.attempts, c.claim),
        (f.id, ForwardState::Connecting, 1, 1)
    );
    assert_eq!(c.lease_until, 130);
    let token = ResumeToken([9; 16]);
    let p = store
        .advance_forward(
            f.id,
            1,
            &progress(ForwardState::Transferring, 400, Some(token)),
            101,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (p.state, p.sent, p.peer_token),
        (ForwardState::Transferring, 400, Some(token))
    );
    store = crash(store);
    let r = store.forward(f.id).unwrap().unwrap();
    assert_eq!(
        (r.state, r.sent, r.peer_token, r.updated_at),
        (ForwardState::Transferring, 400, Some(token), 101)
    );

    // The attempt fails; the forward is not due before its next attempt.
    let retry = ForwardChange::Retry {
        reason: ErrorCode::PeerUnreachable,
        peer_token: None,
        next_attempt_at: 200,
    };
    let r = store
        .advance_forward(f.id, 1, &retry, 102)
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.state, r.last_error),
        (ForwardState::Retrying, Some(ErrorCode::PeerUnreachable))
    );
    assert_eq!(
        r.peer_token,
        Some(token),
        "a failed attempt keeps the peer's token"
    );
    // Not running any more: the old claim changes nothing.
    assert_eq!(
        store
            .advance_forward(f.id, 1, &progress(ForwardState::Verifying, 900, None), 103)
            .unwrap(),
        None
    );
    let c = claim_one(&store, 150);
    assert_eq!(c.id, second.id, "the retrying forward waits for its time");
    let fail = ForwardChange::Fail {
        reason: ErrorCode::Expired,
        peer_token: None,
    };
    let failed = store
        .advance_forward(second.id, c.claim, &fail, 150)
        .unwrap()
        .unwrap();
    assert_eq!(failed.state, ForwardState::Failed);
    store = crash(store);
    assert!(store.claim_forwards(199, 230, 5).unwrap().is_empty());
    let again = claim_one(&store, 200);
    assert_eq!(
        (again.id, again.attempts, again.claim, again.sent),
        (f.id, 2, 2, 400)
    );
    // The first claim is fenced off.
    assert_eq!(
        store
            .advance_forward(f.id, 1, &progress(ForwardState::Verifying, 900, None), 201)
            .unwrap(),
        None
    );
    let done = ForwardChange::Done {
        peer_code: code(77),
        peer_expires_at: 5000,
        peer_token: token,
    };
    let d = store.advance_forward(f.id, 2, &done, 202).unwrap().unwrap();
    assert_eq!(
        (d.state, d.sent, d.peer_code, d.peer_expires_at),
        (ForwardState::Done, 1001, Some(code(77)), 5000)
    );
    store = crash(store);
    assert_eq!(store.forward(f.id).unwrap(), Some(d));
    // Done and Failed are final: no claim; no retry of a done forward.
    assert!(store.claim_forwards(10_000, 10_030, 5).unwrap().is_empty());
    let r = retry_by(&store, f.id, "ada", 300).unwrap();
    assert_eq!(r.state, ForwardState::Done);
    assert_eq!(store.forward(999).unwrap(), None);
    store
}

/// A running forward whose lease ran out is due again (its instance
/// crashed); failures and retries by command, by the requester only.
fn leases_and_retries<S: Store>(store: &S) {
    let f = create(store, &new_forward(3, "ada", 100));
    let c = claim_one(store, 100);
    assert_eq!(c.id, f.id);
    assert!(
        store.claim_forwards(129, 160, 5).unwrap().is_empty(),
        "leased"
    );
    let c = claim_one(store, 130);
    assert_eq!(
        (c.claim, c.attempts, c.state),
        (2, 2, ForwardState::Connecting)
    );
    let fail = ForwardChange::Fail {
        reason: ErrorCode::AuthFailed,
        peer_token: None,
    };
    let r = store.advance_forward(f.id, 2, &fail, 131).unwrap().unwrap();
    assert_eq!(
        (r.state, r.last_error),
        (ForwardState::Failed, Some(ErrorCode::AuthFailed))
    );
    assert!(store.claim_forwards(10_000, 10_030, 5).unwrap().is_empty());
    // Another user sees nothing, and changes nothing.
    assert_eq!(retry_by(store, f.id, "bob", 140), None);
    assert_eq!(
        store.forward(f.id).unwrap().unwrap().state,
        ForwardState::Failed
    );
    let r = retry_by(store, f.id, "ada", 140).unwrap();
    assert_eq!(
        (r.state, r.attempts, r.last_error, r.next_attempt_at),
        (ForwardState::Queued, 0, None, 140)
    );
    // A queued forward is reported as it is.
    assert_eq!(retry_by(store, f.id, "ada", 141), Some(r));
    let c = claim_one(store, 141);
    assert_eq!((c.id, c.attempts, c.claim), (f.id, 1, 3));
    // The peer lost its partial copy: the token and bytes go.
    let p = progress(ForwardState::Transferring, 700, Some(ResumeToken([4; 16])));
    store.advance_forward(f.id, 3, &p, 142).unwrap().unwrap();
    let restart = ForwardChange::Restart {
        reason: ErrorCode::UnknownToken,
        next_attempt_at: 150,
    };
    let r = store
        .advance_forward(f.id, 3, &restart, 143)
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.state, r.sent, r.peer_token),
        (ForwardState::Retrying, 0, None)
    );
    assert_eq!(store.forward(f.id).unwrap().unwrap(), r);
}

/// Push forwards: one per requester and push id (a retry finds it, also
/// when the requester is at the cap), the copy recorded while the push
/// runs and kept when the push fails; at most `max_open` open forwards
/// per requester, a final one no longer counting.
fn pushes_and_caps<S: Store>(mut store: S, crash: impl Fn(S) -> S) -> S {
    let push = |n: u8, requester, push_id, max_open| NewForward {
        push: Some(PushTarget {
            terminal: "phone".into(),
            push_id,
        }),
        max_open,
        ..new_forward(n, requester, 100)
    };
    let p = create(&store, &push(1, "ada", 7, 2));
    assert_eq!(
        p.push,
        Some(PushTarget {
            terminal: "phone".into(),
            push_id: 7
        })
    );
    assert_eq!(
        store.create_forward(&push(1, "ada", 7, 2)).unwrap(),
        Created::Again(p.clone())
    );
    // Push ids are the requester's own.
    let theirs = create(&store, &push(1, "bob", 7, 2));
    assert_ne!(theirs.id, p.id);
    assert_eq!(store.forward_by_push("ada", 7).unwrap(), Some(p.clone()));
    assert_eq!(
        store.forward_by_push("bob", 7).unwrap(),
        Some(theirs.clone())
    );
    assert_eq!(store.forward_by_push("ada", 8).unwrap(), None);
    assert_eq!(store.forward_by_push("carl", 7).unwrap(), None);
    store = crash(store);
    assert_eq!(store.forward(p.id).unwrap(), Some(p.clone()));

    // The peer verified the copy: recorded, still running.
    let claimed = store.claim_forwards(100, 130, 5).unwrap();
    assert_eq!(claimed.len(), 2);
    let token = ResumeToken([5; 16]);
    let pushed = ForwardChange::Pushed {
        peer_code: code(50),
        peer_expires_at: 5000,
        peer_token: token,
        lease_until: 160,
    };
    let r = store
        .advance_forward(p.id, 1, &pushed, 101)
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            r.state,
            r.sent,
            r.peer_code,
            r.peer_expires_at,
            r.lease_until
        ),
        (ForwardState::Verifying, 1001, Some(code(50)), 5000, 160)
    );
    store = crash(store);
    assert_eq!(store.forward(p.id).unwrap(), Some(r));
    // The peer refused the push: failed, the copy still named.
    let fail = ForwardChange::Fail {
        reason: ErrorCode::UnknownTerminal,
        peer_token: None,
    };
    let r = store.advance_forward(p.id, 1, &fail, 102).unwrap().unwrap();
    assert_eq!(
        (r.state, r.last_error, r.peer_code, r.peer_token),
        (
            ForwardState::Failed,
            Some(ErrorCode::UnknownTerminal),
            Some(code(50)),
            Some(token)
        )
    );
    assert_eq!(r.verified_copy(4999), Some(code(50)));
    assert_eq!(r.verified_copy(5000), None, "expired at the peer");

    // Failed is not open: ada has none, bob one (claimed, running).
    let a2 = create(
        &store,
        &NewForward {
            max_open: 2,
            ..new_forward(2, "ada", 110)
        },
    );
    let _a3 = create(
        &store,
        &NewForward {
            max_open: 2,
            ..new_forward(3, "ada", 110)
        },
    );
    let full = NewForward {
        max_open: 2,
        ..new_forward(4, "ada", 110)
    };
    assert_eq!(store.create_forward(&full).unwrap(), Created::Full);
    // A retried push is found at the cap; another requester has room.
    assert!(matches!(
        store.create_forward(&push(1, "ada", 7, 2)).unwrap(),
        Created::Again(f) if f.id == p.id
    ));
    create(
        &store,
        &NewForward {
            max_open: 2,
            ..new_forward(4, "bob", 110)
        },
    );
    assert_eq!(
        store.create_forward(&push(5, "bob", 8, 2)).unwrap(),
        Created::Full,
        "a push counts as any forward"
    );
    store = crash(store);
    assert_eq!(store.create_forward(&full).unwrap(), Created::Full);
    // One of ada's done: room for one more.
    let claimed = store.claim_forwards(130, 160, 10).unwrap();
    let c = claimed.iter().find(|c| c.id == a2.id).unwrap();
    let done = ForwardChange::Done {
        peer_code: code(60),
        peer_expires_at: 6000,
        peer_token: token,
    };
    store
        .advance_forward(a2.id, c.claim, &done, 131)
        .unwrap()
        .unwrap();
    assert!(matches!(
        store.create_forward(&full).unwrap(),
        Created::New(f) if f.requester == "ada"
    ));
    // The retry by command queues the failed push again, copy kept.
    let r = retry_by(&store, p.id, "ada", 140).unwrap();
    assert_eq!(
        (r.state, r.peer_code, r.peer_token),
        (ForwardState::Queued, Some(code(50)), Some(token))
    );
    store
}

#[test]
fn memory_store_keeps_forwards_through_a_crash() {
    lifecycle(MemoryStore::new(), |s| {
        s.crash();
        s
    });
    leases_and_retries(&MemoryStore::new());
    pushes_and_caps(MemoryStore::new(), |s| {
        s.crash();
        s
    });
}

#[test]
fn sqlite_store_keeps_forwards_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    drop(lifecycle(reopen(&path), |s| {
        drop(s);
        reopen(&path)
    }));
    let dir = tempfile::tempdir().unwrap();
    leases_and_retries(&reopen(dir.path()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    drop(pushes_and_caps(reopen(&path), |s| {
        drop(s);
        reopen(&path)
    }));
}

#[test]
fn pg_store_keeps_forwards_across_a_reopen() {
    type Fx = crate::store::postgres::tests::Fixture;
    let Some(fx) = Fx::new("pg_store_keeps_forwards_across_a_reopen") else {
        return;
    };
    drop(lifecycle(fx.open(), |s| {
        drop(s);
        fx.open()
    }));
    let Some(fx) = Fx::new("pg_forward_leases_and_retries") else {
        return;
    };
    leases_and_retries::<PgStore>(&fx.open());
    let Some(fx) = Fx::new("pg_forward_pushes_and_caps") else {
        return;
    };
    drop(pushes_and_caps(fx.open(), |s| {
        drop(s);
        fx.open()
    }));
}

/// Two instances claiming at once never take the same forward.
#[test]
fn pg_instances_claim_disjoint_forwards() {
    type Fx = crate::store::postgres::tests::Fixture;
    let Some(fx) = Fx::new("pg_instances_claim_disjoint_forwards") else {
        return;
    };
    let first = fx.open();
    let other_dir = tempfile::tempdir().unwrap();
    let second = fx.open_in(other_dir.path());
    for n in 0..40 {
        create(&first, &new_forward(n, "ada", 100));
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            (0..20)
                .flat_map(|_| first.claim_forwards(100, 200, 3).unwrap())
                .collect::<Vec<_>>()
        });
        let b = s.spawn(|| {
            (0..20)
                .flat_map(|_| second.claim_forwards(100, 200, 3).unwrap())
                .collect::<Vec<_>>()
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut ids: Vec<u64> = a.iter().chain(&b).map(|r| r.id).collect();
    ids.sort();
    let claimed = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), claimed, "a forward claimed twice");
    assert_eq!(claimed, 40, "every due forward claimed once");
    assert!(a.iter().chain(&b).all(|r| r.claim == 1));
}
