//! The forwarder's tests: settling failed attempts, the bytes a resumed
//! run writes, and attempts of claimed forwards against a peer that does
//! not listen (a copy that cannot start, a push forward that only pushes).

use super::*;
use crate::config::Peers;
use crate::random::SeededRandom;
use crate::store::forwards::{Created, NewForward, PushTarget};
use crate::store::memory::MemoryStore;
use crate::store::{Forwards, Store};
use pickup_device::cli::dial::PeerError;
use pickup_proto::identity::AuthError;

/// A relay over a memory store that lists the peer of the runner's
/// tests (nothing listens there).
fn relay(store: &Arc<MemoryStore>) -> Arc<Relay> {
    let settings = crate::settings::Settings {
        peers: Peers::new([super::super::tests::peer()]).unwrap(),
        ..Default::default()
    };
    Relay::new(
        settings,
        store.clone(),
        Box::new(SeededRandom::new(1)),
        pickup_proto::Instant::from_millis(unix_now() * 1000),
    )
}

/// Claims the one forward due and runs its attempt, as `serve` does.
fn attempt_once(relay: &Relay) -> ForwardRecord {
    let now = unix_now();
    let mut claimed = relay.store.claim_forwards(now, now + 60, 4).unwrap();
    assert_eq!(claimed.len(), 1);
    let record = claimed.remove(0);
    let a = Attempt {
        written: Mutex::new((record.state, record.sent, record.peer_token)),
        record,
        stop: AtomicBool::new(false),
    };
    attempt(relay, &a);
    relay.store.forward(a.record.id).unwrap().unwrap()
}

#[test]
fn a_batch_no_longer_live_or_a_peer_no_longer_listed_fails_the_forward() {
    let store = Arc::new(MemoryStore::new());
    let relay = relay(&store);
    let b = super::super::tests::batch(&store, 1, true);
    let new = |peer| NewForward {
        batch: b.id,
        code: b.code,
        requester: "ada",
        peer,
        total: b.total_size(),
        now: unix_now(),
        push: None,
        max_open: 64,
    };
    // The owner ended the batch after the request.
    let stored = |new: &NewForward<'_>| match store.create_forward(new).unwrap() {
        Created::New(f) => f,
        other => panic!("not stored: {other:?}"),
    };
    let f = stored(&new("pair-ab"));
    store.end_batch(b.id, unix_now()).unwrap();
    let r = attempt_once(&relay);
    assert_eq!(r.id, f.id);
    assert_eq!(
        (r.state, r.last_error),
        (ForwardState::Failed, Some(ErrorCode::Expired))
    );
    // A peer removed from [[peers]] since the request.
    let live = super::super::tests::batch(&store, 2, true);
    let f = stored(&NewForward {
        batch: live.id,
        code: live.code,
        ..new("site-gone")
    });
    let r = attempt_once(&relay);
    assert_eq!(r.id, f.id);
    assert_eq!(
        (r.state, r.last_error),
        (ForwardState::Failed, Some(ErrorCode::UnknownPeer))
    );
    // Nothing is left running on the board.
    assert_eq!(relay.forward_board().status(&r).rate, 0);
}

#[test]
fn a_push_forward_with_its_copy_recorded_only_pushes_and_keeps_the_copy_on_failure() {
    let store = Arc::new(MemoryStore::new());
    let relay = relay(&store);
    let b = super::super::tests::batch(&store, 1, true);
    let created = store.create_forward(&NewForward {
        batch: b.id,
        code: b.code,
        requester: "ada",
        peer: "pair-ab",
        total: b.total_size(),
        now: unix_now(),
        push: Some(PushTarget {
            terminal: "phone".into(),
            push_id: 9,
        }),
        max_open: 64,
    });
    let Ok(Created::New(f)) = created else {
        panic!("not stored: {created:?}");
    };
    // An earlier attempt's copy, verified by the peer.
    let now = unix_now();
    let c = store.claim_forwards(now, now + 60, 1).unwrap().remove(0);
    let peer_code = pickup_proto::Code::from_parts(13, 77).unwrap();
    let pushed = ForwardChange::Pushed {
        peer_code,
        peer_expires_at: now + 3600,
        peer_token: ResumeToken([6; 16]),
        lease_until: now,
    };
    store.advance_forward(f.id, c.claim, &pushed, now).unwrap();
    // The source batch is gone: a copy would fail with Expired; the
    // push only dials the peer (nothing listens there).
    store.end_batch(b.id, now).unwrap();
    let r = attempt_once(&relay);
    assert_eq!(
        (r.state, r.last_error, r.peer_code, r.sent),
        (
            ForwardState::Retrying,
            Some(ErrorCode::PeerUnreachable),
            Some(peer_code),
            b.total_size()
        )
    );
}

#[test]
fn a_push_the_peer_refuses_fails_and_one_that_may_pass_retries() {
    let s = ForwardSettings::default();
    let push = |error| ForwardError::Push {
        peer: "b".into(),
        error,
    };
    for code in [
        ErrorCode::UnknownTerminal,
        ErrorCode::UnknownCode,
        ErrorCode::Expired,
        ErrorCode::QueueFull,
        ErrorCode::AuthFailed,
        ErrorCode::UnknownKind,
    ] {
        assert_eq!(
            settle(&push(PeerError::Refused(code)), 1, &s, 100),
            ForwardChange::Fail {
                reason: code,
                peer_token: None
            }
        );
    }
    for (error, reason) in [
        (PeerError::Refused(ErrorCode::Busy), ErrorCode::Busy),
        (PeerError::Refused(ErrorCode::Internal), ErrorCode::Internal),
        (PeerError::Link("reset".into()), ErrorCode::PeerUnreachable),
    ] {
        assert_eq!(
            settle(&push(error), 1, &s, 100),
            ForwardChange::Retry {
                reason,
                peer_token: None,
                next_attempt_at: 102
            }
        );
    }
}

#[test]
fn a_resumed_run_never_writes_fewer_bytes_than_the_peer_held_under_its_token() {
    let store = Arc::new(MemoryStore::new());
    let b = super::super::tests::batch(&store, 1, true);
    let token = ResumeToken([3; 16]);
    let created = store.create_forward(&NewForward {
        batch: b.id,
        code: b.code,
        requester: "ada",
        peer: "pair-ab",
        total: 1_000_000,
        now: unix_now(),
        push: None,
        max_open: 64,
    });
    let Ok(Created::New(mut r)) = created else {
        panic!("not stored: {created:?}");
    };
    r.sent = 660_000;
    r.peer_token = Some(token);
    let p = |sent, token| Progress {
        state: ForwardState::Transferring,
        sent,
        total: 1_000_000,
        token,
    };
    // Before the peer's offsets arrive, and after them.
    assert_eq!(to_write(&r, &p(0, Some(token))).1, 660_000);
    assert_eq!(to_write(&r, &p(940_000, Some(token))).1, 940_000);
    // Another grant is another copy at the peer: its own bytes.
    let other = Some(ResumeToken([4; 16]));
    assert_eq!(
        to_write(&r, &p(0, other)),
        (ForwardState::Transferring, 0, other)
    );
    r.peer_token = None;
    assert_eq!(to_write(&r, &p(0, None)).1, 0);
}

#[test]
fn failures_that_may_pass_retry_with_capped_backoff_until_the_last_attempt() {
    let s = ForwardSettings {
        max_attempts: 4,
        backoff_cap_secs: 5,
        ..ForwardSettings::default()
    };
    let lost = ForwardError::LinkLost {
        peer: "b".into(),
        reason: "reset".into(),
        token: Some(ResumeToken([1; 16])),
    };
    let waits: Vec<ForwardChange> = (1..=4).map(|n| settle(&lost, n, &s, 100)).collect();
    let at = |c: &ForwardChange| match c {
        ForwardChange::Retry {
            next_attempt_at,
            peer_token,
            reason,
        } => {
            assert_eq!(
                (*peer_token, *reason),
                (Some(ResumeToken([1; 16])), ErrorCode::PeerUnreachable)
            );
            Some(*next_attempt_at)
        }
        _ => None,
    };
    assert_eq!(
        waits.iter().map(at).collect::<Vec<_>>(),
        [Some(102), Some(104), Some(105), None]
    );
    assert_eq!(
        waits[3],
        ForwardChange::Fail {
            reason: ErrorCode::PeerUnreachable,
            peer_token: Some(ResumeToken([1; 16]))
        }
    );
}

#[test]
fn a_wrong_key_or_an_expired_batch_fails_at_once_and_a_stop_is_due_again_now() {
    let s = ForwardSettings::default();
    let refused = ForwardError::Refused {
        peer: "b".into(),
        error: upload::Error::Auth(AuthError::Refused),
    };
    assert_eq!(
        settle(&refused, 1, &s, 100),
        ForwardChange::Fail {
            reason: ErrorCode::AuthFailed,
            peer_token: None
        }
    );
    let expired = ForwardError::SourceExpired { token: None };
    assert!(matches!(
        settle(&expired, 1, &s, 100),
        ForwardChange::Fail {
            reason: ErrorCode::Expired,
            ..
        }
    ));
    // A peer that lost the partial copy: the next attempt starts over.
    let forgotten = ForwardError::Refused {
        peer: "b".into(),
        error: upload::Error::Relay(ErrorCode::UnknownToken),
    };
    assert_eq!(
        settle(&forgotten, 1, &s, 100),
        ForwardChange::Restart {
            reason: ErrorCode::UnknownToken,
            next_attempt_at: 102
        }
    );
    let stopped = ForwardError::Stopped { token: None };
    assert!(matches!(
        settle(&stopped, 8, &s, 100),
        ForwardChange::Retry {
            next_attempt_at: 100,
            ..
        }
    ));
}
