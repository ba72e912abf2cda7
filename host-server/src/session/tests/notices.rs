//! Addressed delivery on sessions (PROTOCOL.md §11): pushes and their
//! permissions, listening, notices, receipts, caps, status, live notices
//! between two sessions of one relay, and the target's progress.

use pickup_proto::identity::{terminal_mac, DeviceKey};
use pickup_proto::message::{
    AllowSender, ChallengeAnswer, DeliveryState, DeliveryStatus, Kind, NoticeAck, NoticeRefuse,
    Push, Receipt, RefuseReason, TerminalAuth,
};

use super::*;
use crate::directory::memory::MemoryDirectory;
use crate::directory::{Directory, PasswordParams};
use crate::mailbox::Mailbox;

const DESK: DeviceKey = DeviceKey([1; 16]);
const PHONE: DeviceKey = DeviceKey([2; 16]);

/// Users ada, bob and cy (passwords "NAME-pw"); ada's terminal desk,
/// bob's terminal phone.
fn world(settings: Settings) -> World {
    let dir = Arc::new(MemoryDirectory::new(PasswordParams::FAST_FOR_TESTS));
    let t = T0 / 1000;
    for user in ["ada", "bob", "cy"] {
        dir.add_user(user, &format!("{user}-pw"), t).unwrap();
    }
    dir.add_terminal("desk", "ada", DESK, t).unwrap();
    dir.add_terminal("phone", "bob", PHONE, t).unwrap();
    World::with_directory(settings, dir)
}

pub(super) fn terminal(w: &World, peer: u64, name: &str, key: DeviceKey) -> Session {
    let mut s = open(w, peer);
    send(
        &mut s,
        w.now(),
        Message::TerminalAuth(TerminalAuth { terminal: name }),
    );
    let [Reply::Challenge(nonce)] = drain(&mut s)[..] else {
        panic!("no challenge");
    };
    let mac = terminal_mac(&key, &nonce, name);
    send(
        &mut s,
        w.now(),
        Message::ChallengeAnswer(ChallengeAnswer { mac }),
    );
    assert!(matches!(&drain(&mut s)[..], [Reply::Authenticated { .. }]));
    s
}

/// A complete batch of `data`, uploaded anonymously; its code.
fn uploaded(w: &mut World, peer: u64, data: &[u8]) -> Code {
    let mut s = open(w, peer);
    let (grant, events, _) = upload(w, &mut s, &["f"], &[data.to_vec()], None, |_| false);
    assert!(events
        .iter()
        .any(|e| matches!(e, upload::Event::Complete { .. })));
    grant.unwrap().code
}

fn push(s: &mut Session, now: Instant, push_id: u64, code: Code, terminal: &str) -> Vec<Reply> {
    send(
        s,
        now,
        Message::Push(Push {
            push_id,
            code,
            terminal,
        }),
    );
    drain(s)
}

fn state_of(replies: &[Reply]) -> DeliveryState {
    match replies {
        [Reply::Delivery { state, .. }] => *state,
        other => panic!("no delivery: {other:?}"),
    }
}

fn error_of(replies: &[Reply]) -> ErrorCode {
    match replies {
        [Reply::Error(code, _)] => *code,
        other => panic!("no single error: {other:?}"),
    }
}

/// `Listen`: the count the `Inbox` said and the notices' ids.
fn listen(s: &mut Session, now: Instant) -> (u16, Vec<u64>) {
    send(s, now, Message::Listen);
    match &drain(s)[..] {
        [Reply::Inbox(n), rest @ ..] => (
            *n,
            rest.iter()
                .map(|r| match r {
                    Reply::Notice { id, .. } => *id,
                    other => panic!("not a notice: {other:?}"),
                })
                .collect(),
        ),
        other => panic!("no inbox: {other:?}"),
    }
}

fn status(s: &mut Session, now: Instant, code: Code) -> Vec<Reply> {
    send(s, now, Message::DeliveryStatus(DeliveryStatus { code }));
    drain(s)
}

#[test]
fn a_push_to_an_own_terminal_is_queued_once_however_often_it_is_sent() {
    let mut w = world(Settings::default());
    let code = uploaded(&mut w, 9, b"for the desk");
    let mut ada = user(&w, 1, "ada");
    let first = push(&mut ada, w.now(), 77, code, "desk");
    assert!(
        matches!(&first[..], [Reply::Delivery { push_id: 77, terminal, state: DeliveryState::Queued, bytes: 0, total: 12 }] if terminal == "desk"),
        "{first:?}"
    );
    assert_eq!(push(&mut ada, w.now(), 77, code, "desk"), first);
    let mut desk = terminal(&w, 2, "desk", DESK);
    let (count, ids) = listen(&mut desk, w.now());
    assert_eq!((count, ids.len()), (1, 1), "one delivery, one notice");
}

#[test]
fn unknown_and_forbidden_terminals_are_answered_alike_until_allowed() {
    let mut w = world(Settings::default());
    let code = uploaded(&mut w, 9, b"data");
    let mut bob = user(&w, 1, "bob");
    let forbidden = push(&mut bob, w.now(), 1, code, "desk");
    assert_eq!(error_of(&forbidden), ErrorCode::UnknownTerminal);
    assert_eq!(push(&mut bob, w.now(), 2, code, "nowhere"), forbidden);
    assert_eq!(push(&mut bob, w.now(), 3, code, "../desk\u{7f}"), forbidden);
    assert_eq!(
        push(&mut bob, w.now(), 4, code, &"x".repeat(300)),
        forbidden
    );
    let mut ada = user(&w, 2, "ada");
    send(
        &mut ada,
        w.now(),
        Message::AllowSender(AllowSender {
            sender: "bob",
            allow: true,
        }),
    );
    assert_eq!(drain(&mut ada), [Reply::Done(Kind::AllowSender as u8)]);
    assert_eq!(
        state_of(&push(&mut bob, w.now(), 1, code, "desk")),
        DeliveryState::Queued
    );
    // A user that does not exist is answered alike, and can never push.
    send(
        &mut ada,
        w.now(),
        Message::AllowSender(AllowSender {
            sender: "nobody",
            allow: true,
        }),
    );
    assert_eq!(drain(&mut ada), [Reply::Done(Kind::AllowSender as u8)]);
    // Withdrawn: bob's next push is refused again.
    send(
        &mut ada,
        w.now(),
        Message::AllowSender(AllowSender {
            sender: "bob",
            allow: false,
        }),
    );
    drain(&mut ada);
    assert_eq!(
        error_of(&push(&mut bob, w.now(), 5, code, "desk")),
        ErrorCode::UnknownTerminal
    );
    // Anonymous sessions may do neither.
    let mut anon = open(&w, 3);
    assert_eq!(
        error_of(&push(&mut anon, w.now(), 1, code, "desk")),
        ErrorCode::AuthRequired
    );
    send(
        &mut anon,
        w.now(),
        Message::AllowSender(AllowSender {
            sender: "bob",
            allow: true,
        }),
    );
    assert_eq!(error_of(&drain(&mut anon)), ErrorCode::AuthRequired);
}

#[test]
fn only_complete_live_batches_are_pushed() {
    let mut w = world(Settings::default());
    let mut up = open(&w, 9);
    let busy = grant_of(&announce(
        &mut up,
        w.now(),
        &[("f", 10, Sha1Digest::of(&[0; 10]))],
    ))
    .code;
    let mut ada = user(&w, 1, "ada");
    assert_eq!(
        error_of(&push(&mut ada, w.now(), 1, busy, "desk")),
        ErrorCode::NotReady
    );
    let unknown = Code::from_parts(busy.len(), busy.value() ^ 1).unwrap();
    assert_eq!(
        error_of(&push(&mut ada, w.now(), 2, unknown, "desk")),
        ErrorCode::UnknownCode
    );
    let code = uploaded(&mut w, 8, b"soon gone");
    w.now += w.relay.settings.code_ttl_secs * 1000;
    assert_eq!(
        error_of(&push(&mut ada, w.now(), 3, code, "desk")),
        ErrorCode::Expired
    );
}

#[test]
fn listening_needs_a_terminal_and_gets_the_open_notices_oldest_first() {
    let mut w = world(Settings::default());
    let mut ada = user(&w, 1, "ada");
    send(&mut ada, w.now(), Message::Listen);
    assert_eq!(error_of(&drain(&mut ada)), ErrorCode::AuthRequired);
    let mut anon = open(&w, 2);
    send(&mut anon, w.now(), Message::Listen);
    assert_eq!(error_of(&drain(&mut anon)), ErrorCode::AuthRequired);
    let codes: Vec<Code> = (0..3)
        .map(|i| uploaded(&mut w, 10 + i, &[i as u8; 5]))
        .collect();
    for (i, code) in codes.iter().enumerate() {
        push(&mut ada, w.now(), 100 - i as u64, *code, "desk");
    }
    let mut desk = terminal(&w, 3, "desk", DESK);
    send(&mut desk, w.now(), Message::Listen);
    let replies = drain(&mut desk);
    let notices: Vec<(u64, Code)> = replies[1..]
        .iter()
        .map(|r| match r {
            Reply::Notice { id, code, sender } if sender == "ada" => (*id, *code),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(replies[0], Reply::Inbox(3));
    assert_eq!(
        notices.iter().map(|n| n.1).collect::<Vec<_>>(),
        codes,
        "oldest first"
    );
    assert!(notices.windows(2).all(|p| p[0].0 < p[1].0));
    // Sent again after every Listen until settled.
    assert_eq!(listen(&mut desk, w.now()).0, 3);
}

#[test]
fn a_forged_receipt_changes_nothing_and_a_true_one_settles_once() {
    let mut w = world(Settings::default());
    let code = uploaded(&mut w, 9, b"private");
    let mut ada = user(&w, 1, "ada");
    push(&mut ada, w.now(), 1, code, "desk");
    let mut desk = terminal(&w, 2, "desk", DESK);
    let (_, ids) = listen(&mut desk, w.now());
    let id = ids[0];
    let mut phone = terminal(&w, 3, "phone", PHONE);
    send(&mut phone, w.now(), Message::Receipt(Receipt { id }));
    assert_eq!(error_of(&drain(&mut phone)), ErrorCode::UnknownNotice);
    send(
        &mut phone,
        w.now(),
        Message::NoticeRefuse(NoticeRefuse {
            id,
            reason: RefuseReason::Declined,
        }),
    );
    assert_eq!(error_of(&drain(&mut phone)), ErrorCode::UnknownNotice);
    send(
        &mut desk,
        w.now(),
        Message::Receipt(Receipt { id: u64::MAX }),
    );
    assert_eq!(error_of(&drain(&mut desk)), ErrorCode::UnknownNotice);
    // A user session is no terminal: nothing is addressed to it.
    send(&mut ada, w.now(), Message::Receipt(Receipt { id }));
    assert_eq!(error_of(&drain(&mut ada)), ErrorCode::AuthRequired);
    assert_eq!(
        state_of(&status(&mut ada, w.now(), code)[..1]),
        DeliveryState::Queued
    );

    send(&mut desk, w.now(), Message::NoticeAck(NoticeAck { id }));
    assert_eq!(drain(&mut desk), [], "an acknowledgement is not answered");
    assert_eq!(
        state_of(&status(&mut ada, w.now(), code)[..1]),
        DeliveryState::Notified
    );
    send(&mut desk, w.now(), Message::Receipt(Receipt { id }));
    assert_eq!(drain(&mut desk), [Reply::Settled(id)]);
    assert_eq!(
        status(&mut ada, w.now(), code),
        [
            Reply::Delivery {
                push_id: 1,
                terminal: "desk".into(),
                state: DeliveryState::Delivered,
                bytes: 0,
                total: 7
            },
            Reply::Done(Kind::DeliveryStatus as u8)
        ]
    );
    assert_eq!(listen(&mut desk, w.now()), (0, vec![]));
    // The Settled was lost: the repeated receipt hears it again.
    send(&mut desk, w.now(), Message::Receipt(Receipt { id }));
    assert_eq!(drain(&mut desk), [Reply::Settled(id)]);
}

#[test]
fn a_refused_notice_is_refused_for_the_sender() {
    let mut w = world(Settings::default());
    let code = uploaded(&mut w, 9, b"unwanted");
    let mut ada = user(&w, 1, "ada");
    push(&mut ada, w.now(), 1, code, "desk");
    let mut desk = terminal(&w, 2, "desk", DESK);
    let (_, ids) = listen(&mut desk, w.now());
    send(
        &mut desk,
        w.now(),
        Message::NoticeRefuse(NoticeRefuse {
            id: ids[0],
            reason: RefuseReason::TooLarge,
        }),
    );
    assert_eq!(drain(&mut desk), [Reply::Settled(ids[0])]);
    assert_eq!(
        state_of(&status(&mut ada, w.now(), code)[..1]),
        DeliveryState::Refused
    );
    assert_eq!(listen(&mut desk, w.now()).0, 0);
}

#[test]
fn a_flooding_sender_fills_its_own_share_of_a_terminal_only() {
    let mut w = world(Settings::default());
    let cap = w.relay.settings.push.max_open_per_sender_terminal as u64;
    let code = uploaded(&mut w, 9, b"again and again");
    let mut ada = user(&w, 1, "ada");
    let mut bob = user(&w, 2, "bob");
    send(
        &mut ada,
        w.now(),
        Message::AllowSender(AllowSender {
            sender: "bob",
            allow: true,
        }),
    );
    drain(&mut ada);
    for id in 0..cap {
        assert_eq!(
            state_of(&push(&mut bob, w.now(), id, code, "desk")),
            DeliveryState::Queued
        );
    }
    let refused = push(&mut bob, w.now(), cap, code, "desk");
    assert_eq!(refused, [Reply::Error(ErrorCode::QueueFull, 0)]);
    assert_eq!(
        state_of(&push(&mut ada, w.now(), 1, code, "desk")),
        DeliveryState::Queued
    );
}

#[test]
fn delivery_status_lists_only_the_callers_pushes() {
    let mut w = world(Settings::default());
    let code = uploaded(&mut w, 9, b"shared code");
    let mut ada = user(&w, 1, "ada");
    let mut bob = user(&w, 2, "bob");
    push(&mut ada, w.now(), 1, code, "desk");
    push(&mut ada, w.now(), 2, code, "desk");
    push(&mut bob, w.now(), 1, code, "phone");
    let mine = status(&mut ada, w.now(), code);
    assert_eq!(mine.len(), 3, "two deliveries and Done: {mine:?}");
    assert!(mine[..2]
        .iter()
        .all(|r| matches!(r, Reply::Delivery { terminal, .. } if terminal == "desk")));
    let bobs = status(&mut bob, w.now(), code);
    assert!(
        matches!(&bobs[..], [Reply::Delivery { terminal, .. }, Reply::Done(_)] if terminal == "phone")
    );
    let mut cy = user(&w, 3, "cy");
    assert_eq!(
        status(&mut cy, w.now(), code),
        [Reply::Done(Kind::DeliveryStatus as u8)]
    );
    let mut anon = open(&w, 4);
    assert_eq!(
        error_of(&status(&mut anon, w.now(), code)),
        ErrorCode::AuthRequired
    );
}

#[test]
fn a_push_reaches_the_listening_session_at_once_and_the_newest_listener_only() {
    let mut w = world(Settings::default());
    let code = uploaded(&mut w, 9, b"live");
    let mut old = terminal(&w, 1, "desk", DESK);
    assert_eq!(listen(&mut old, w.now()), (0, vec![]));
    let mut desk = terminal(&w, 2, "desk", DESK);
    assert_eq!(listen(&mut desk, w.now()), (0, vec![]));
    let (old_bell, bell) = (old.doorbell(), desk.doorbell());
    let mut ada = user(&w, 3, "ada");
    push(&mut ada, w.now(), 1, code, "desk");
    assert!(bell.rung(), "the push rings the listener");
    assert!(
        !old_bell.rung(),
        "a newer Listen took the live notices over"
    );
    desk.handle_wake(w.now());
    let live = drain(&mut desk);
    assert!(
        matches!(&live[..], [Reply::Notice { code: c, sender, .. }] if *c == code && sender == "ada"),
        "{live:?}"
    );
    // A retry rings nobody, and a wake sends nothing already sent.
    push(&mut ada, w.now(), 1, code, "desk");
    assert!(!bell.rung());
    desk.handle_wake(w.now());
    assert_eq!(drain(&mut desk), []);
    // A session that goes away stops listening.
    drop(desk);
    push(&mut ada, w.now(), 2, code, "desk");
    assert!(!bell.rung() && !old_bell.rung());
}

#[test]
fn the_targets_download_makes_the_delivery_receiving_and_keeps_the_batch() {
    let mut w = world(Settings::default());
    let data = bytes(300_000, 3);
    let code = uploaded(&mut w, 9, &data);
    let mut ada = user(&w, 1, "ada");
    push(&mut ada, w.now(), 1, code, "desk");
    // A stranger's download is not the target's.
    let mut anon = open(&w, 2);
    download(&mut w, &mut anon, code).unwrap();
    drop(anon);
    assert_eq!(
        state_of(&status(&mut ada, w.now(), code)[..1]),
        DeliveryState::Queued
    );
    let mut desk = terminal(&w, 3, "desk", DESK);
    let sink = download(&mut w, &mut desk, code).unwrap();
    assert_eq!(sink.files[0], data);
    desk.handle_disconnected(w.now());
    pump(&mut desk, w.now());
    let replies = status(&mut ada, w.now(), code);
    assert!(
        matches!(
            &replies[..],
            [
                Reply::Delivery {
                    state: DeliveryState::Receiving,
                    bytes: 300_000,
                    total: 300_000,
                    ..
                },
                Reply::Done(_)
            ]
        ),
        "{replies:?}"
    );
    let d = w.store.delivery_by_push("ada", 1).unwrap().unwrap();
    let grace = w.relay.settings.push.receiving_grace_secs;
    assert!(d.until >= d.last_read_at.unwrap() + grace);
}

#[test]
fn progress_is_written_at_most_once_a_second() {
    let mut w = world(Settings::default());
    let data = bytes(200_000, 5);
    let code = uploaded(&mut w, 9, &data);
    let mut ada = user(&w, 1, "ada");
    push(&mut ada, w.now(), 1, code, "desk");
    let mut desk = terminal(&w, 2, "desk", DESK);
    let read = |s: &mut Session, now, offset, len| {
        send(
            s,
            now,
            Message::Read(Read {
                code,
                file: 0,
                offset,
                len,
            }),
        );
        drain(s)
    };
    let bytes_now = |w: &World| w.store.delivery_by_push("ada", 1).unwrap().unwrap().bytes;
    read(&mut desk, w.now(), 0, 1000);
    assert_eq!(bytes_now(&w), 1000, "the first read is written at once");
    read(&mut desk, w.now(), 1000, 1000);
    read(&mut desk, w.now(), 2000, 1000);
    assert_eq!(bytes_now(&w), 1000, "then not within the second");
    let due = desk.poll_timeout().unwrap();
    assert!(due <= w.now() + Duration::from_secs(1));
    w.now = due.as_millis();
    desk.handle_timeout(w.now());
    pump(&mut desk, w.now());
    assert_eq!(bytes_now(&w), 3000, "and once it has passed");
}

#[test]
fn a_due_progress_write_moves_its_timer_on_by_itself() {
    // Found by the simulator (seed 155): a driver that calls `poll_job`
    // only once its job in flight is done saw `poll_timeout` stay at the
    // progress deadline after `handle_timeout`, and spun on it.
    let mut w = world(Settings::default());
    let code = uploaded(&mut w, 9, &bytes(200_000, 5));
    let mut ada = user(&w, 1, "ada");
    push(&mut ada, w.now(), 1, code, "desk");
    let mut desk = terminal(&w, 2, "desk", DESK);
    for offset in [0, 1000, 2000] {
        let read = Read {
            code,
            file: 0,
            offset,
            len: 1000,
        };
        send(&mut desk, w.now(), Message::Read(read));
        drain(&mut desk);
    }
    let due = desk.poll_timeout().unwrap();
    w.now = due.as_millis();
    desk.handle_timeout(w.now());
    assert!(desk.poll_timeout().unwrap() > due, "the timer did not move");
    pump(&mut desk, w.now());
    assert_eq!(
        w.store.delivery_by_push("ada", 1).unwrap().unwrap().bytes,
        3000
    );
}

#[test]
fn the_relays_sweep_takes_deliveries_offline_then_expires_them_and_counts_both() {
    let mut w = world(Settings::default());
    let p = w.relay.settings.push;
    let code = uploaded(&mut w, 9, b"offline file");
    let mut ada = user(&w, 1, "ada");
    push(&mut ada, w.now(), 1, code, "desk");
    assert_eq!(w.relay.sweep(w.now()).unwrap().deliveries_offline, 0);
    w.now += p.confirm_deadline_secs * 1000;
    assert_eq!(w.relay.sweep(w.now()).unwrap().deliveries_offline, 1);
    assert_eq!(
        state_of(&status(&mut ada, w.now(), code)[..1]),
        DeliveryState::Offline
    );
    // Kept past the code's own lifetime, as an offline file.
    w.now += w.relay.settings.code_ttl_secs * 1000;
    let mut desk = terminal(&w, 2, "desk", DESK);
    assert_eq!(listen(&mut desk, w.now()).0, 1, "the notice stays queued");
    assert!(download(&mut w, &mut desk, code).is_ok());
    drop(desk);
    w.now += (p.offline_ttl_secs + p.receiving_grace_secs) * 1000;
    let stats = w.relay.sweep(w.now()).unwrap();
    assert_eq!((stats.batches, stats.deliveries_expired), (1, 1));
    assert_eq!(
        state_of(&status(&mut ada, w.now(), code)[..1]),
        DeliveryState::Expired
    );
    let text = w.relay.metrics().encode();
    for line in [
        "pickup_pushes_total{result=\"queued\"} 1",
        "pickup_deliveries_total{state=\"offline\"} 1",
        "pickup_deliveries_total{state=\"expired\"} 1",
        "pickup_deliveries_total{state=\"delivered\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

/// Found by the relay_session fuzzer: between a batch's expiry and the
/// sweep that marks its deliveries, a `Listen` listed the notice of a
/// batch every lookup already calls expired.
#[test]
fn a_notice_whose_batch_expired_is_not_listed_before_the_sweep() {
    let settings = Settings {
        code_ttl_secs: 60,
        ..Settings::default()
    };
    let mut w = world(settings);
    let code = uploaded(&mut w, 9, b"short-lived");
    let mut ada = user(&w, 1, "ada");
    assert_eq!(
        state_of(&push(&mut ada, w.now(), 1, code, "desk")),
        DeliveryState::Queued
    );
    let mut desk = terminal(&w, 2, "desk", DESK);
    assert_eq!(listen(&mut desk, w.now()), (1, vec![1]));
    w.now += 60 * 1000;
    let mut desk = terminal(&w, 3, "desk", DESK);
    assert_eq!(listen(&mut desk, w.now()), (0, vec![]));
}
