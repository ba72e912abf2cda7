//! Forwarding on sessions (PROTOCOL.md §12): requests and their
//! refusals, who sees a forward, a watch woken by the board with statuses
//! spaced 250 ms apart and ended by a final one, and retries; push
//! forwards (§12.1) and the cap on a user's open forwards, also on a
//! retry; a forward swept after `keep_finished_secs` reads as unknown.
//! The forwarder is played by hand against the store and the board.

use pickup_proto::message::{
    ForwardPush, ForwardRequest, ForwardRetry, ForwardState, ForwardStatus, ForwardWatch,
};

use super::*;
use crate::config::{PeerAddr, PeerRelay, Peers};
use crate::directory::memory::MemoryDirectory;
use crate::directory::{Directory, PasswordParams};
use crate::store::forwards::ForwardChange;
use crate::store::Forwards;

/// Users ada and bob; the relay lists the peer site-b.
fn world() -> World {
    world_with(crate::config::ForwardSettings::default())
}

/// [`world`] with `forward` as the relay's `[forward]`.
fn world_with(forward: crate::config::ForwardSettings) -> World {
    let peer = PeerRelay {
        name: "site-b".into(),
        addr: PeerAddr::Tcp("127.0.0.1:7425".into()),
        key: pickup_proto::identity::DeviceKey([0x42; 16]),
    };
    let settings = Settings {
        peers: Peers::new([peer]).unwrap(),
        forward,
        ..Settings::default()
    };
    let dir = Arc::new(MemoryDirectory::new(PasswordParams::FAST_FOR_TESTS));
    for user in ["ada", "bob"] {
        dir.add_user(user, &format!("{user}-pw"), T0 / 1000)
            .unwrap();
    }
    World::with_directory(settings, dir)
}

fn uploaded(w: &mut World, peer: u64, data: &[u8]) -> Code {
    let mut s = open(w, peer);
    let (grant, _, _) = upload(w, &mut s, &["f"], &[data.to_vec()], None, |_| false);
    grant.unwrap().code
}

fn request(s: &mut Session, now: Instant, code: Code, peer: &str) -> Vec<Reply> {
    send(
        s,
        now,
        Message::ForwardRequest(ForwardRequest { code, peer }),
    );
    drain(s)
}

fn push(
    s: &mut Session,
    now: Instant,
    code: Code,
    peer: &str,
    terminal: &str,
    push_id: u64,
) -> Vec<Reply> {
    send(
        s,
        now,
        Message::ForwardPush(ForwardPush {
            code,
            peer,
            terminal,
            push_id,
        }),
    );
    drain(s)
}

fn watch(s: &mut Session, now: Instant, id: u64, once: bool) -> Vec<Reply> {
    send(s, now, Message::ForwardWatch(ForwardWatch { id, once }));
    drain(s)
}

fn status_of(replies: &[Reply]) -> ForwardStatus {
    match replies {
        [Reply::ForwardStatus(s)] => *s,
        other => panic!("no single status: {other:?}"),
    }
}

#[test]
fn a_request_is_stored_and_only_its_requester_sees_it() {
    let mut w = world();
    let code = uploaded(&mut w, 1, b"forward me");
    let mut anon = open(&w, 2);
    assert_eq!(
        request(&mut anon, w.now(), code, "site-b"),
        [Reply::Error(ErrorCode::AuthRequired, 0)]
    );
    let mut ada = user(&w, 3, "ada");
    assert_eq!(
        request(&mut ada, w.now(), code, "site-c"),
        [Reply::Error(ErrorCode::UnknownPeer, 0)]
    );
    let unknown = Code::from_parts(code.len(), 1).unwrap();
    assert_eq!(
        request(&mut ada, w.now(), unknown, "site-b"),
        [Reply::Error(ErrorCode::UnknownCode, 0)]
    );
    let [Reply::ForwardAccepted(id)] = request(&mut ada, w.now(), code, "site-b")[..] else {
        panic!("not accepted");
    };
    let s = status_of(&watch(&mut ada, w.now(), id, true));
    assert_eq!(
        (s.id, s.state, s.sent, s.total),
        (id, ForwardState::Queued, 0, 10)
    );
    assert_eq!((s.reason, s.peer_code), (None, None));
    // Another user's id and an unknown id are answered alike.
    let mut bob = user(&w, 4, "bob");
    for (s, id) in [(&mut bob, id), (&mut ada, id + 100)] {
        assert_eq!(
            watch(s, w.now(), id, true),
            [Reply::Error(ErrorCode::UnknownCode, 0)]
        );
        send(s, w.now(), Message::ForwardRetry(ForwardRetry { id }));
        assert_eq!(drain(s), [Reply::Error(ErrorCode::UnknownCode, 0)]);
    }
    let stored = w.store.forward(id).unwrap().unwrap();
    assert_eq!(
        (stored.requester.as_str(), stored.peer.as_str()),
        ("ada", "site-b")
    );
}

#[test]
fn a_watch_reports_changes_at_most_every_250_ms_and_ends_with_the_final_status() {
    let mut w = world();
    let code = uploaded(&mut w, 1, &[7u8; 5000]);
    let mut ada = user(&w, 2, "ada");
    let [Reply::ForwardAccepted(id)] = request(&mut ada, w.now(), code, "site-b")[..] else {
        panic!("not accepted");
    };
    assert_eq!(
        status_of(&watch(&mut ada, w.now(), id, false)).state,
        ForwardState::Queued
    );
    // The forwarder claims it and reports progress.
    let now_secs = w.now / 1000;
    let claimed = w.store.claim_forwards(now_secs, now_secs + 60, 4).unwrap();
    let board = w.relay.forward_board();
    let t = std::time::Instant::now();
    board.update(id, ForwardState::Transferring, 1000, t);
    assert!(ada.doorbell().rung());
    w.now += 250;
    ada.handle_wake(w.now());
    let s = status_of(&drain(&mut ada));
    assert_eq!(
        (s.state, s.sent, s.attempts),
        (ForwardState::Transferring, 1000, 1)
    );
    // 100 ms later: held back until 250 ms after the last status.
    w.now += 100;
    board.update(id, ForwardState::Transferring, 3000, t);
    ada.handle_wake(w.now());
    assert_eq!(drain(&mut ada), []);
    let due = ada.poll_timeout().unwrap();
    assert_eq!(due, Instant::from_millis(w.now + 150));
    w.now += 150;
    ada.handle_timeout(w.now());
    pump(&mut ada, w.now());
    assert_eq!(status_of(&drain(&mut ada)).sent, 3000);
    // Nothing changed but the rate: nothing is sent.
    w.now += 300;
    board.update(id, ForwardState::Transferring, 3000, t);
    ada.handle_wake(w.now());
    assert_eq!(drain(&mut ada), []);
    // Done: the final status, and the watch ends.
    let done = ForwardChange::Done {
        peer_code: code,
        peer_expires_at: 1_800_000_000,
        peer_token: ResumeToken([3; 16]),
    };
    w.store
        .advance_forward(id, claimed[0].claim, &done, now_secs)
        .unwrap()
        .unwrap();
    board.finish(id);
    w.now += 300;
    ada.handle_wake(w.now());
    let s = status_of(&drain(&mut ada));
    assert_eq!(
        (s.state, s.sent, s.peer_code),
        (ForwardState::Done, 5000, Some(code))
    );
    assert_eq!(s.peer_expires_at, 1_800_000_000);
    // (As a driver does, the ring that woke it is taken first.)
    assert!(ada.doorbell().rung());
    board.ring(id);
    assert!(!ada.doorbell().rung(), "no longer watching");
}

#[test]
fn a_failed_forward_reports_its_reason_and_a_retry_queues_it_again() {
    let mut w = world();
    let code = uploaded(&mut w, 1, b"to a peer that refuses");
    let mut ada = user(&w, 2, "ada");
    let [Reply::ForwardAccepted(id)] = request(&mut ada, w.now(), code, "site-b")[..] else {
        panic!("not accepted");
    };
    let now_secs = w.now / 1000;
    let claimed = w.store.claim_forwards(now_secs, now_secs + 60, 4).unwrap();
    let fail = ForwardChange::Fail {
        reason: ErrorCode::AuthFailed,
        peer_token: None,
    };
    w.store
        .advance_forward(id, claimed[0].claim, &fail, now_secs)
        .unwrap();
    let s = status_of(&watch(&mut ada, w.now(), id, true));
    assert_eq!(
        (s.state, s.reason, s.attempts),
        (ForwardState::Failed, Some(ErrorCode::AuthFailed), 1)
    );
    send(
        &mut ada,
        w.now(),
        Message::ForwardRetry(ForwardRetry { id }),
    );
    let s = status_of(&drain(&mut ada));
    assert_eq!(
        (s.state, s.reason, s.attempts),
        (ForwardState::Queued, None, 0)
    );
    // Retrying a queued forward only reports it.
    send(
        &mut ada,
        w.now(),
        Message::ForwardRetry(ForwardRetry { id }),
    );
    assert_eq!(status_of(&drain(&mut ada)).state, ForwardState::Queued);
}

#[test]
fn a_hello_again_ends_the_watch_and_a_new_one_starts_clean() {
    let mut w = world();
    let code = uploaded(&mut w, 1, b"watched twice");
    let mut ada = user(&w, 2, "ada");
    let [Reply::ForwardAccepted(id)] = request(&mut ada, w.now(), code, "site-b")[..] else {
        panic!("not accepted");
    };
    // The watch's first load is queued, not yet run, when the terminal
    // starts over: nothing of the old watch is said or kept.
    send_only(
        &mut ada,
        w.now(),
        Message::ForwardWatch(ForwardWatch { id, once: false }),
    );
    send(&mut ada, w.now(), hello(CAP_INSTANT_UPLOAD));
    assert_eq!(drain(&mut ada), [Reply::Welcome]);
    w.relay.forward_board().ring(id);
    assert!(!ada.doorbell().rung(), "the old watch is gone");
    // Identity stays across a Hello: a new watch works.
    assert_eq!(
        status_of(&watch(&mut ada, w.now(), id, false)).state,
        ForwardState::Queued
    );
    w.relay.forward_board().ring(id);
    assert!(ada.doorbell().rung());
}

#[test]
fn only_the_users_forward_users_lists_may_request_or_retry() {
    let mut w = world_with(crate::config::ForwardSettings {
        users: Some(vec!["ada".into()]),
        ..crate::config::ForwardSettings::default()
    });
    let code = uploaded(&mut w, 1, b"forward me");
    let mut bob = user(&w, 2, "bob");
    assert_eq!(
        request(&mut bob, w.now(), code, "site-b"),
        [Reply::Error(ErrorCode::NotAllowed, 0)]
    );
    send(
        &mut bob,
        w.now(),
        Message::ForwardRetry(ForwardRetry { id: 1 }),
    );
    assert_eq!(drain(&mut bob), [Reply::Error(ErrorCode::NotAllowed, 0)]);
    let mut ada = user(&w, 3, "ada");
    assert!(matches!(
        request(&mut ada, w.now(), code, "site-b")[..],
        [Reply::ForwardAccepted(_)]
    ));
}

#[test]
fn a_push_is_checked_as_a_request_and_its_retry_answers_the_same_forward() {
    let mut w = world_with(crate::config::ForwardSettings {
        users: Some(vec!["ada".into()]),
        ..crate::config::ForwardSettings::default()
    });
    let code = uploaded(&mut w, 1, b"push me across");
    let mut anon = open(&w, 2);
    assert_eq!(
        push(&mut anon, w.now(), code, "site-b", "phone", 1),
        [Reply::Error(ErrorCode::AuthRequired, 0)]
    );
    let mut bob = user(&w, 3, "bob");
    assert_eq!(
        push(&mut bob, w.now(), code, "site-b", "phone", 1),
        [Reply::Error(ErrorCode::NotAllowed, 0)]
    );
    let mut ada = user(&w, 4, "ada");
    assert_eq!(
        push(&mut ada, w.now(), code, "site-c", "phone", 1),
        [Reply::Error(ErrorCode::UnknownPeer, 0)]
    );
    for bad in ["Phone", "", "a b", "phone@site-b"] {
        assert_eq!(
            push(&mut ada, w.now(), code, "site-b", bad, 1),
            [Reply::Error(ErrorCode::UnknownTerminal, 0)],
            "{bad:?}"
        );
    }
    let unknown = Code::from_parts(code.len(), 1).unwrap();
    assert_eq!(
        push(&mut ada, w.now(), unknown, "site-b", "phone", 1),
        [Reply::Error(ErrorCode::UnknownCode, 0)]
    );
    let [Reply::ForwardAccepted(id)] = push(&mut ada, w.now(), code, "site-b", "phone", 1)[..]
    else {
        panic!("not accepted");
    };
    // A retry (the same push id) is the same forward; another push another.
    assert_eq!(
        push(&mut ada, w.now(), code, "site-b", "phone", 1),
        [Reply::ForwardAccepted(id)]
    );
    let [Reply::ForwardAccepted(other)] = push(&mut ada, w.now(), code, "site-b", "tablet", 2)[..]
    else {
        panic!("not accepted");
    };
    assert_ne!(other, id);
    let stored = w.store.forward(id).unwrap().unwrap();
    assert_eq!(
        stored.push,
        Some(crate::store::forwards::PushTarget {
            terminal: "phone".into(),
            push_id: 1
        })
    );
    assert_eq!(
        status_of(&watch(&mut ada, w.now(), id, true)).state,
        ForwardState::Queued
    );
    // The batch ended since: a retry still gets the forward it made.
    let key = crate::codes::code_key(&code);
    let crate::store::Lookup::Live(batch) = w.store.find_by_code(&key, w.now / 1000).unwrap()
    else {
        panic!("the batch is live");
    };
    w.store.end_batch(batch.id, w.now / 1000).unwrap();
    assert_eq!(
        push(&mut ada, w.now(), code, "site-b", "phone", 1),
        [Reply::ForwardAccepted(id)]
    );
    assert_eq!(
        push(&mut ada, w.now(), code, "site-b", "phone", 3),
        [Reply::Error(ErrorCode::Expired, 0)]
    );
}

#[test]
fn past_max_open_per_user_requests_and_pushes_are_refused_with_queue_full() {
    let mut w = world_with(crate::config::ForwardSettings {
        max_open_per_user: 1,
        ..crate::config::ForwardSettings::default()
    });
    let code = uploaded(&mut w, 1, b"one at a time");
    let mut ada = user(&w, 2, "ada");
    let [Reply::ForwardAccepted(id)] = push(&mut ada, w.now(), code, "site-b", "phone", 1)[..]
    else {
        panic!("not accepted");
    };
    assert_eq!(
        request(&mut ada, w.now(), code, "site-b"),
        [Reply::Error(ErrorCode::QueueFull, 0)]
    );
    assert_eq!(
        push(&mut ada, w.now(), code, "site-b", "tablet", 2),
        [Reply::Error(ErrorCode::QueueFull, 0)]
    );
    // The retry of the open push is still answered; another user has room.
    assert_eq!(
        push(&mut ada, w.now(), code, "site-b", "phone", 1),
        [Reply::ForwardAccepted(id)]
    );
    let mut bob = user(&w, 3, "bob");
    assert!(matches!(
        request(&mut bob, w.now(), code, "site-b")[..],
        [Reply::ForwardAccepted(_)]
    ));
}

/// The forwarder, by hand: claims `id` (due now) and ends it with
/// `change`.
fn finish(w: &World, id: u64, change: &ForwardChange) {
    let now_secs = w.now / 1000;
    let claimed = w.store.claim_forwards(now_secs, now_secs + 60, 4).unwrap();
    let c = claimed.iter().find(|c| c.id == id).expect("claimed");
    w.store
        .advance_forward(id, c.claim, change, now_secs)
        .unwrap()
        .unwrap();
}

const FAIL: ForwardChange = ForwardChange::Fail {
    reason: ErrorCode::PeerUnreachable,
    peer_token: None,
};

#[test]
fn a_retry_that_would_pass_max_open_per_user_is_refused_with_queue_full() {
    let mut w = world_with(crate::config::ForwardSettings {
        max_open_per_user: 1,
        ..crate::config::ForwardSettings::default()
    });
    let code = uploaded(&mut w, 1, b"one at a time, also retried");
    let mut ada = user(&w, 2, "ada");
    let [Reply::ForwardAccepted(failed)] = request(&mut ada, w.now(), code, "site-b")[..] else {
        panic!("not accepted");
    };
    finish(&w, failed, &FAIL);
    // A failed forward is not open: room for another, which fills the cap.
    let [Reply::ForwardAccepted(open)] = request(&mut ada, w.now(), code, "site-b")[..] else {
        panic!("not accepted");
    };
    send(
        &mut ada,
        w.now(),
        Message::ForwardRetry(ForwardRetry { id: failed }),
    );
    assert_eq!(drain(&mut ada), [Reply::Error(ErrorCode::QueueFull, 0)]);
    assert_eq!(
        status_of(&watch(&mut ada, w.now(), failed, true)).state,
        ForwardState::Failed,
        "a refused retry changes nothing"
    );
    // The open one ends: the retry has room.
    let done = ForwardChange::Done {
        peer_code: code,
        peer_expires_at: 1_800_000_000,
        peer_token: ResumeToken([3; 16]),
    };
    finish(&w, open, &done);
    send(
        &mut ada,
        w.now(),
        Message::ForwardRetry(ForwardRetry { id: failed }),
    );
    assert_eq!(status_of(&drain(&mut ada)).state, ForwardState::Queued);
}

#[test]
fn a_forward_swept_after_keep_finished_secs_reads_as_unknown() {
    let mut w = world_with(crate::config::ForwardSettings {
        keep_finished_secs: 60,
        ..crate::config::ForwardSettings::default()
    });
    let code = uploaded(&mut w, 1, b"kept a minute once failed");
    let mut ada = user(&w, 2, "ada");
    let [Reply::ForwardAccepted(failed)] = request(&mut ada, w.now(), code, "site-b")[..] else {
        panic!("not accepted");
    };
    let [Reply::ForwardAccepted(open)] = request(&mut ada, w.now(), code, "site-b")[..] else {
        panic!("not accepted");
    };
    finish(&w, failed, &FAIL);
    // 60 s after it failed: still kept.
    w.now += 60_000;
    assert_eq!(w.relay.sweep(w.now()).unwrap().forwards, 0);
    assert_eq!(
        status_of(&watch(&mut ada, w.now(), failed, true)).state,
        ForwardState::Failed
    );
    w.now += 1000;
    assert_eq!(w.relay.sweep(w.now()).unwrap().forwards, 1);
    // Its status and its retry answer as an id that never existed.
    assert_eq!(
        watch(&mut ada, w.now(), failed, true),
        [Reply::Error(ErrorCode::UnknownCode, 0)]
    );
    assert_eq!(
        watch(&mut ada, w.now(), failed, false),
        [Reply::Error(ErrorCode::UnknownCode, 0)]
    );
    send(
        &mut ada,
        w.now(),
        Message::ForwardRetry(ForwardRetry { id: failed }),
    );
    assert_eq!(drain(&mut ada), [Reply::Error(ErrorCode::UnknownCode, 0)]);
    // The other, claimed with it and never ended, is open: kept.
    assert_eq!(
        status_of(&watch(&mut ada, w.now(), open, true)).state,
        ForwardState::Connecting
    );
}

#[test]
fn a_push_the_peer_refused_fails_with_the_reason_and_names_the_copy() {
    let mut w = world();
    let code = uploaded(&mut w, 1, b"copied, not pushed");
    let mut ada = user(&w, 2, "ada");
    let [Reply::ForwardAccepted(id)] = push(&mut ada, w.now(), code, "site-b", "phone", 1)[..]
    else {
        panic!("not accepted");
    };
    let now_secs = w.now / 1000;
    let claim = w.store.claim_forwards(now_secs, now_secs + 60, 4).unwrap()[0].claim;
    let peer_code = Code::from_parts(code.len(), 99).unwrap();
    let pushed = ForwardChange::Pushed {
        peer_code,
        peer_expires_at: 1_800_000_000,
        peer_token: ResumeToken([3; 16]),
        lease_until: now_secs + 60,
    };
    w.store
        .advance_forward(id, claim, &pushed, now_secs)
        .unwrap();
    // Copied and pushing: not done yet, no code shown.
    let s = status_of(&watch(&mut ada, w.now(), id, true));
    assert_eq!(
        (s.state, s.sent, s.peer_code),
        (ForwardState::Verifying, 18, None)
    );
    let fail = ForwardChange::Fail {
        reason: ErrorCode::UnknownTerminal,
        peer_token: None,
    };
    w.store.advance_forward(id, claim, &fail, now_secs).unwrap();
    let s = status_of(&watch(&mut ada, w.now(), id, true));
    assert_eq!(
        (s.state, s.reason, s.peer_code, s.peer_expires_at),
        (
            ForwardState::Failed,
            Some(ErrorCode::UnknownTerminal),
            Some(peer_code),
            1_800_000_000
        )
    );
}
