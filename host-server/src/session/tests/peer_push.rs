//! Pushes from users of peer relays (PROTOCOL.md §12.1): a listed peer's
//! `PeerPush`, the `user@relay` grants an owner makes with `AllowSender`,
//! and who may not pass for whom.

use pickup_proto::identity::{Credential, DeviceKey, RelayIdentity};
use pickup_proto::message::{AllowSender, DeliveryState, Kind, PeerPush, Push};

use super::notices::terminal;
use super::peers::open_as;
use super::*;
use crate::config::{PeerAddr, PeerRelay, Peers};
use crate::directory::memory::MemoryDirectory;
use crate::directory::{Directory, PasswordParams};
use crate::mailbox::Mailbox;

const DESK: DeviceKey = DeviceKey([1; 16]);
const SITE_A: DeviceKey = DeviceKey([0xa; 16]);
const SITE_B: DeviceKey = DeviceKey([0xb; 16]);

/// A relay that lists the peers site-a and site-b; users ada (terminal
/// desk) and alice, passwords "NAME-pw".
fn world(push: crate::mailbox::PushSettings) -> World {
    let peer = |name: &str, key| PeerRelay {
        name: name.into(),
        addr: PeerAddr::Tcp("127.0.0.1:7425".into()),
        key,
    };
    let settings = Settings {
        peers: Peers::new([peer("site-a", SITE_A), peer("site-b", SITE_B)]).unwrap(),
        push,
        ..Settings::default()
    };
    let dir = Arc::new(MemoryDirectory::new(PasswordParams::FAST_FOR_TESTS));
    let t = T0 / 1000;
    for user in ["ada", "alice"] {
        dir.add_user(user, &format!("{user}-pw"), t).unwrap();
    }
    dir.add_terminal("desk", "ada", DESK, t).unwrap();
    World::with_directory(settings, dir)
}

/// A session on which the peer `name` authenticated and uploaded a batch
/// of `data`, as a forward does; it and the batch's code.
fn forwarded(
    w: &mut World,
    id: u64,
    name: &'static str,
    key: DeviceKey,
    data: &[u8],
) -> (Session, Code) {
    let mut s = w.session(id, Link::TCP);
    let config = upload::Config {
        max_frame: 65_536,
        max_window: TERMINAL_WINDOW,
        ..upload::Config::default()
    };
    let metas = [FileMeta {
        name: "f",
        size: data.len() as u64,
        sha1: Sha1Digest::of(data),
    }];
    let mut c = upload::Session::<8>::new(config, &metas).unwrap();
    c.authenticate(Credential::Relay(RelayIdentity { name, key }));
    let (grant, events, _) = drive_upload(w, &mut s, c, &[data.to_vec()], |_| false);
    assert!(events
        .iter()
        .any(|e| matches!(e, upload::Event::Complete { .. })));
    assert_eq!(s.identity.as_ref().unwrap().peer.as_deref(), Some(name));
    (s, grant.unwrap().code)
}

fn peer_push(
    s: &mut Session,
    now: Instant,
    push_id: u64,
    code: Code,
    terminal: &str,
    sender: &str,
) -> Vec<Reply> {
    send(
        s,
        now,
        Message::PeerPush(PeerPush {
            push_id,
            code,
            terminal,
            sender,
        }),
    );
    drain(s)
}

/// `AllowSender` on `s`; the one reply.
fn allow(s: &mut Session, now: Instant, sender: &str, allow: bool) -> Vec<Reply> {
    send(s, now, Message::AllowSender(AllowSender { sender, allow }));
    drain(s)
}

const ALLOWED: [Reply; 1] = [Reply::Done(Kind::AllowSender as u8)];

/// The session's one answer, an error: its code and the kind it names
/// (`Reply::Error` leaves the kind out).
fn error_with_kind(s: &mut Session) -> (ErrorCode, u8) {
    let now = s.clock;
    pump(s, now);
    let mut out = vec![0u8; s.transmit_buffer_len()];
    let n = s.poll_transmit(&mut out).expect("an answer");
    let mut dec = Decoder::new(vec![0u8; 65_536]);
    let mut input = &out[..n];
    let frame = dec.feed(&mut input).unwrap().unwrap();
    let Message::Error(e) = Message::decode(frame).unwrap() else {
        panic!("not an error");
    };
    assert_eq!(s.poll_transmit(&mut out), None, "a second answer");
    (e.code, e.kind)
}

/// The push id of the pushes a test expects refused.
const REFUSED_ID: u64 = 999;

/// A `PeerPush` (id [`REFUSED_ID`]) that is refused: the error and its kind.
fn peer_push_error(
    s: &mut Session,
    now: Instant,
    code: Code,
    terminal: &str,
    sender: &str,
) -> (ErrorCode, u8) {
    send_only(
        s,
        now,
        Message::PeerPush(PeerPush {
            push_id: REFUSED_ID,
            code,
            terminal,
            sender,
        }),
    );
    error_with_kind(s)
}

const PEER_PUSH: u8 = Kind::PeerPush as u8;

#[test]
fn a_peers_push_to_an_allowing_owners_terminal_is_noticed_as_from_user_at_peer() {
    let mut w = world(Default::default());
    let mut ada = user(&w, 1, "ada");
    assert_eq!(allow(&mut ada, w.now(), "alice@site-a", true), ALLOWED);
    let (mut site_a, code) = forwarded(&mut w, 2, "site-a", SITE_A, b"from site-a");
    let first = peer_push(&mut site_a, w.now(), 41, code, "desk", "alice");
    assert!(
        matches!(&first[..], [Reply::Delivery { push_id: 41, terminal, state: DeliveryState::Queued, bytes: 0, total: 11 }] if terminal == "desk"),
        "{first:?}"
    );
    // A retry (its answer lost) is answered with the same delivery.
    assert_eq!(
        peer_push(&mut site_a, w.now(), 41, code, "desk", "alice"),
        first
    );
    let mut desk = terminal(&w, 3, "desk", DESK);
    send(&mut desk, w.now(), Message::Listen);
    let listened = drain(&mut desk);
    assert!(
        matches!(&listened[..], [Reply::Inbox(1), Reply::Notice { code: c, sender, .. }] if *c == code && sender == "alice@site-a"),
        "{listened:?}"
    );
    let stored = w.store.delivery_by_push("alice@site-a", 41).unwrap();
    assert_eq!(stored.map(|d| d.terminal), Some("desk".to_owned()));
    // Counted as pushes are.
    let text = w.relay.metrics().encode();
    for line in [
        "pickup_pushes_total{result=\"queued\"} 1",
        "pickup_pushes_total{result=\"retried\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[test]
fn without_the_owners_grant_for_that_relays_user_the_terminal_is_unknown() {
    let mut w = world(Default::default());
    let (mut site_a, code) = forwarded(&mut w, 1, "site-a", SITE_A, b"unasked for");
    let unknown = (ErrorCode::UnknownTerminal, PEER_PUSH);
    assert_eq!(
        peer_push_error(&mut site_a, w.now(), code, "desk", "alice"),
        unknown
    );
    // A grant to alice of another peer, or to the local alice, is not
    // one to site-a's alice.
    let mut ada = user(&w, 2, "ada");
    assert_eq!(allow(&mut ada, w.now(), "alice@site-b", true), ALLOWED);
    assert_eq!(allow(&mut ada, w.now(), "alice", true), ALLOWED);
    assert_eq!(
        peer_push_error(&mut site_a, w.now(), code, "desk", "alice"),
        unknown
    );
    // A peer names its own users: the relay in the name is its own.
    assert_eq!(
        peer_push_error(&mut site_a, w.now(), code, "desk", "alice@site-b"),
        unknown
    );
    // A terminal of no such name, or a sender that is no name, is told alike.
    assert_eq!(allow(&mut ada, w.now(), "alice@site-a", true), ALLOWED);
    assert_eq!(
        peer_push_error(&mut site_a, w.now(), code, "nowhere", "alice"),
        unknown
    );
    assert_eq!(
        peer_push_error(&mut site_a, w.now(), code, "desk", "Alice"),
        unknown
    );
    // Withdrawn, the grant lets no new push through.
    assert_eq!(allow(&mut ada, w.now(), "alice@site-a", false), ALLOWED);
    assert_eq!(
        peer_push_error(&mut site_a, w.now(), code, "desk", "alice"),
        unknown
    );
    // The batch's own refusals come as a Push's do.
    assert_eq!(allow(&mut ada, w.now(), "alice@site-a", true), ALLOWED);
    let missing = Code::parse("7KQ4-M2XD-9RTA").unwrap();
    assert_eq!(
        peer_push_error(&mut site_a, w.now(), missing, "desk", "alice"),
        (ErrorCode::UnknownCode, PEER_PUSH)
    );
}

#[test]
fn only_a_peer_relays_session_may_push_for_a_peers_user() {
    let mut w = world(Default::default());
    let (mut site_a, code) = forwarded(&mut w, 1, "site-a", SITE_A, b"asked by the wrong side");
    let mut ada = user(&w, 2, "ada");
    assert_eq!(allow(&mut ada, w.now(), "alice@site-a", true), ALLOWED);
    let required = (ErrorCode::AuthRequired, PEER_PUSH);
    assert_eq!(
        peer_push_error(&mut ada, w.now(), code, "desk", "alice"),
        required
    );
    let mut desk = terminal(&w, 3, "desk", DESK);
    assert_eq!(
        peer_push_error(&mut desk, w.now(), code, "desk", "alice"),
        required
    );
    let mut anonymous = open(&w, 4);
    assert_eq!(
        peer_push_error(&mut anonymous, w.now(), code, "desk", "alice"),
        required
    );
    let mut unauthenticated_relay = open_as(&w, 5, Role::Relay);
    assert_eq!(
        peer_push_error(&mut unauthenticated_relay, w.now(), code, "desk", "alice"),
        required
    );
    // A peer's session that says hello as a terminal is no peer's any more.
    send(&mut site_a, w.now(), hello(CAP_INSTANT_UPLOAD));
    assert_eq!(drain(&mut site_a), [Reply::Welcome]);
    assert_eq!(
        peer_push_error(&mut site_a, w.now(), code, "desk", "alice"),
        required
    );
    assert!(w
        .store
        .delivery_by_push("alice@site-a", REFUSED_ID)
        .unwrap()
        .is_none());
}

#[test]
fn only_a_user_of_a_listed_peer_may_be_allowed() {
    let w = world(Default::default());
    let mut ada = user(&w, 1, "ada");
    for name in [
        "alice@site-c",
        "Alice@site-a",
        "alice@",
        "@site-a",
        "a@b@site-a",
    ] {
        send(
            &mut ada,
            w.now(),
            Message::AllowSender(AllowSender {
                sender: name,
                allow: true,
            }),
        );
        assert_eq!(
            error_with_kind(&mut ada),
            (ErrorCode::UnknownPeer, Kind::AllowSender as u8),
            "{name}"
        );
    }
    // Withdrawing works whatever the name (a peer may have left the list).
    assert_eq!(allow(&mut ada, w.now(), "alice@site-c", false), ALLOWED);
    assert_eq!(allow(&mut ada, w.now(), "alice@site-a", true), ALLOWED);
    assert_eq!(
        w.relay.directory.allowed_senders("ada").unwrap(),
        ["alice@site-a"]
    );
}

/// Past the cap on remote grants, a new one is refused as a full queue,
/// not as a failure of the relay.
#[test]
fn a_grant_past_the_cap_on_peers_users_is_refused_as_full() {
    let w = world(Default::default());
    for i in 0..crate::directory::MAX_REMOTE_SENDERS {
        w.relay
            .directory
            .allow_sender("ada", &format!("u{i}@site-a"), true)
            .unwrap();
    }
    let mut ada = user(&w, 1, "ada");
    send(
        &mut ada,
        w.now(),
        Message::AllowSender(AllowSender {
            sender: "alice@site-a",
            allow: true,
        }),
    );
    assert_eq!(
        error_with_kind(&mut ada),
        (ErrorCode::QueueFull, Kind::AllowSender as u8)
    );
    assert!(!w
        .relay
        .directory
        .allows_sender("ada", "alice@site-a")
        .unwrap());
}

#[test]
fn a_grant_to_a_peers_user_lets_no_local_user_push() {
    let mut w = world(Default::default());
    let (_, code) = forwarded(&mut w, 1, "site-a", SITE_A, b"for alice@site-a only");
    let mut ada = user(&w, 2, "ada");
    assert_eq!(allow(&mut ada, w.now(), "alice@site-a", true), ALLOWED);
    let mut alice = user(&w, 3, "alice");
    send(
        &mut alice,
        w.now(),
        Message::Push(Push {
            push_id: 1,
            code,
            terminal: "desk",
        }),
    );
    assert_eq!(
        error_with_kind(&mut alice),
        (ErrorCode::UnknownTerminal, Kind::Push as u8)
    );
    assert!(w.store.delivery_by_push("alice", 1).unwrap().is_none());
}

#[test]
fn a_peers_users_have_caps_of_their_own() {
    let push = crate::mailbox::PushSettings {
        max_open_per_sender_terminal: 2,
        ..Default::default()
    };
    let mut w = world(push);
    let mut ada = user(&w, 1, "ada");
    for sender in ["alice@site-a", "bob@site-a"] {
        assert_eq!(allow(&mut ada, w.now(), sender, true), ALLOWED);
    }
    let (mut site_a, code) = forwarded(&mut w, 2, "site-a", SITE_A, b"again and again");
    for id in 0..2 {
        let replies = peer_push(&mut site_a, w.now(), id, code, "desk", "alice");
        assert!(
            matches!(
                &replies[..],
                [Reply::Delivery {
                    state: DeliveryState::Queued,
                    ..
                }]
            ),
            "{replies:?}"
        );
    }
    assert_eq!(
        peer_push_error(&mut site_a, w.now(), code, "desk", "alice"),
        (ErrorCode::QueueFull, PEER_PUSH)
    );
    let text = w.relay.metrics().encode();
    let full = "pickup_pushes_total{result=\"queue_full\"} 1";
    assert!(text.contains(full), "{full} missing from\n{text}");
    // Another user of the same peer is another sender.
    let replies = peer_push(&mut site_a, w.now(), 0, code, "desk", "bob");
    assert!(
        matches!(&replies[..], [Reply::Delivery { push_id: 0, .. }]),
        "{replies:?}"
    );
}
