//! Peer relays on a session (docs/design/forwarding.md §2): a `Hello` with
//! `Role::Relay` authenticates against `Settings::peers` with `relay_mac`,
//! and nothing else until it has.

use super::*;
use crate::config::{PeerAddr, PeerRelay, Peers};
use crate::directory::memory::MemoryDirectory;
use crate::directory::{Directory, PasswordParams};
use pickup_proto::identity::{relay_mac, terminal_mac, DeviceKey};
use pickup_proto::message::{AuthToken, ChallengeAnswer, Login, TerminalAuth};

/// The key relay-b shares with this relay; the terminal called relay-b
/// (an operator's unlucky choice) holds the same key.
const PEER_KEY: DeviceKey = DeviceKey([0x42; 16]);
const SENSOR_KEY: DeviceKey = DeviceKey([7; 16]);

/// A relay that lists the peer relay-b, and whose directory holds ada's
/// terminals sensor-1 and relay-b.
fn peered() -> World {
    let peer = PeerRelay {
        name: "relay-b".into(),
        addr: PeerAddr::Tcp("127.0.0.1:7425".into()),
        key: PEER_KEY,
    };
    let settings = Settings {
        peers: Peers::new([peer]).unwrap(),
        ..Settings::default()
    };
    let dir = Arc::new(MemoryDirectory::new(PasswordParams::FAST_FOR_TESTS));
    let t = T0 / 1000;
    dir.add_user("ada", "ada-pw", t).unwrap();
    dir.add_terminal("sensor-1", "ada", SENSOR_KEY, t).unwrap();
    dir.add_terminal("relay-b", "ada", PEER_KEY, t).unwrap();
    World::with_directory(settings, dir)
}

fn hello_as(role: Role) -> Message<'static> {
    Message::Hello(Hello {
        version: 1,
        role,
        max_frame: 65_536,
        window: 1 << 20,
        caps: CAP_INSTANT_UPLOAD,
    })
}

pub(super) fn open_as(w: &World, peer: u64, role: Role) -> Session {
    let mut s = w.session(peer, Link::TCP);
    send(&mut s, w.now(), hello_as(role));
    assert_eq!(drain(&mut s), [Reply::Welcome]);
    s
}

/// `TerminalAuth{name}` and an answer made by `mac` from the challenge;
/// the replies to the answer (the challenge itself is checked).
pub(super) fn answer(
    s: &mut Session,
    now: Instant,
    name: &str,
    mac: impl Fn(&[u8; 16]) -> Sha1Digest,
) -> Vec<Reply> {
    send(
        s,
        now,
        Message::TerminalAuth(TerminalAuth { terminal: name }),
    );
    let nonce = match &drain(s)[..] {
        [Reply::Challenge(n)] => *n,
        other => panic!("no challenge for {name}: {other:?}"),
    };
    send(
        s,
        now,
        Message::ChallengeAnswer(ChallengeAnswer { mac: mac(&nonce) }),
    );
    drain(s)
}

pub(super) fn as_relay(key: DeviceKey, name: &str) -> impl Fn(&[u8; 16]) -> Sha1Digest + '_ {
    move |n| relay_mac(&key, n, name)
}

fn as_terminal(key: DeviceKey, name: &str) -> impl Fn(&[u8; 16]) -> Sha1Digest + '_ {
    move |n| terminal_mac(&key, n, name)
}

const REFUSED: [Reply; 1] = [Reply::Error(ErrorCode::AuthFailed, 0)];

#[test]
fn a_listed_peer_with_its_key_acts_for_its_peer_owner() {
    let w = peered();
    let mut s = open_as(&w, 1, Role::Relay);
    assert_eq!(
        answer(&mut s, w.now(), "relay-b", as_relay(PEER_KEY, "relay-b")),
        [Reply::Authenticated {
            user: "peer:relay-b".into(),
            terminal: "relay-b".into(),
            token: AuthToken::NONE,
        }]
    );
    let identity = s.identity.clone().unwrap();
    assert_eq!(identity.peer.as_deref(), Some("relay-b"));
    assert_eq!(
        (identity.user.as_str(), identity.terminal),
        ("peer:relay-b", None)
    );
    // It may upload, as a forward does ...
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("a.bin", 10, Sha1Digest::of(&[0; 10]))],
    ));
    assert_eq!(g.files, 1);
    // ... and do nothing a user does, nor become one.
    send(&mut s, w.now(), Message::ListNamed);
    assert_eq!(
        drain(&mut s),
        [Reply::Error(ErrorCode::UnexpectedMessage, 0)]
    );
    send(
        &mut s,
        w.now(),
        Message::Login(Login {
            user: "ada",
            password: "ada-pw",
        }),
    );
    assert_eq!(
        drain(&mut s),
        [Reply::Error(ErrorCode::UnexpectedMessage, 0)]
    );
    assert_eq!(
        s.identity.as_ref().unwrap().peer.as_deref(),
        Some("relay-b")
    );
}

#[test]
fn a_relay_role_session_authenticates_before_anything_else() {
    let w = peered();
    let mut s = open_as(&w, 1, Role::Relay);
    let file = [("a.bin", 10, Sha1Digest::of(&[0; 10]))];
    // Anonymous uploads are allowed to terminals, not to relays.
    assert!(w.relay.settings.auth.allow_anonymous_upload);
    let replies = announce(&mut s, w.now(), &file);
    assert!(
        replies
            .iter()
            .all(|r| *r == Reply::Error(ErrorCode::AuthRequired, 0)),
        "{replies:?}"
    );
    for msg in [
        Message::Fetch(Fetch {
            code: Code::parse("0000000000000").unwrap(),
        }),
        Message::Listen,
        Message::ListNamed,
        Message::Login(Login {
            user: "ada",
            password: "ada-pw",
        }),
    ] {
        send(&mut s, w.now(), msg);
        assert_eq!(drain(&mut s), [Reply::Error(ErrorCode::AuthRequired, 0)]);
    }
    send(&mut s, w.now(), Message::Keepalive);
    assert_eq!(drain(&mut s), [Reply::Keepalive]);
    // A terminal's authentication does not count: relay-b's terminal key
    // answers as a terminal would, and fails.
    assert_eq!(
        answer(&mut s, w.now(), "relay-b", as_terminal(PEER_KEY, "relay-b")),
        REFUSED
    );
    let replies = announce(&mut s, w.now(), &file);
    assert_eq!(replies[0], Reply::Error(ErrorCode::AuthRequired, 0));
}

#[test]
fn a_wrong_key_and_an_unlisted_name_are_refused_as_a_wrong_terminal_key_is() {
    let w = peered();
    let wrong = DeviceKey([9; 16]);
    let mut t = open_as(&w, 1, Role::Terminal);
    let terminal_refusal = answer(&mut t, w.now(), "sensor-1", as_terminal(wrong, "sensor-1"));
    assert_eq!(terminal_refusal, REFUSED);
    let mut s = open_as(&w, 2, Role::Relay);
    assert_eq!(
        answer(&mut s, w.now(), "relay-b", as_relay(wrong, "relay-b")),
        terminal_refusal
    );
    // A relay this one does not list gets a challenge all the same, even
    // with the key of a peer it does list.
    assert_eq!(
        answer(&mut s, w.now(), "relay-c", as_relay(PEER_KEY, "relay-c")),
        terminal_refusal
    );
    // The name is bound into the answer: relay-b's key for another name fails.
    assert_eq!(
        answer(&mut s, w.now(), "relay-b", as_relay(PEER_KEY, "relay-c")),
        terminal_refusal
    );
    assert_eq!(s.identity, None);
}

#[test]
fn a_terminal_key_never_authenticates_a_relay_nor_a_relay_key_a_terminal() {
    let w = peered();
    // relay-b is both a listed peer and a terminal, with the same key:
    // only the label tells the two answers apart, and it is enough.
    let mut s = open_as(&w, 1, Role::Relay);
    for (name, key) in [("relay-b", PEER_KEY), ("sensor-1", SENSOR_KEY)] {
        assert_eq!(
            answer(&mut s, w.now(), name, as_terminal(key, name)),
            REFUSED
        );
    }
    let mut t = open_as(&w, 2, Role::Terminal);
    assert_eq!(
        answer(&mut t, w.now(), "relay-b", as_relay(PEER_KEY, "relay-b")),
        REFUSED
    );
    assert_eq!((s.identity.clone(), t.identity.clone()), (None, None));
    // Each in its own domain, the same key opens the matching door.
    assert!(matches!(
        &answer(&mut t, w.now(), "relay-b", as_terminal(PEER_KEY, "relay-b"))[..],
        [Reply::Authenticated { user, .. }] if user == "ada"
    ));
    assert_eq!(t.identity.as_ref().unwrap().peer, None);
    assert!(matches!(
        &answer(&mut s, w.now(), "relay-b", as_relay(PEER_KEY, "relay-b"))[..],
        [Reply::Authenticated { user, .. }] if user == "peer:relay-b"
    ));
    // A terminal's identity does not survive a Hello as a relay.
    send(&mut t, w.now(), hello_as(Role::Relay));
    assert_eq!(drain(&mut t), [Reply::Welcome]);
    assert_eq!(t.identity, None);
    send(&mut t, w.now(), Message::ListNamed);
    assert_eq!(drain(&mut t), [Reply::Error(ErrorCode::AuthRequired, 0)]);
}

#[test]
fn peer_failures_count_in_the_limiter_apart_from_terminals() {
    let w = peered();
    let failures = w.relay.settings.auth.account_failures;
    let wrong = DeviceKey([9; 16]);
    let mut s = open_as(&w, 1, Role::Relay);
    for _ in 0..failures {
        assert_eq!(
            answer(&mut s, w.now(), "relay-b", as_relay(wrong, "relay-b")),
            REFUSED
        );
    }
    // The peer's account is locked: no challenge, not even for the right key.
    send(
        &mut s,
        w.now(),
        Message::TerminalAuth(TerminalAuth {
            terminal: "relay-b",
        }),
    );
    assert!(matches!(
        &drain(&mut s)[..],
        [Reply::Error(ErrorCode::RateLimited, wait)] if *wait > 0
    ));
    // The terminal of the same name is another account.
    let mut t = open_as(&w, 2, Role::Terminal);
    assert!(matches!(
        &answer(&mut t, w.now(), "relay-b", as_terminal(PEER_KEY, "relay-b"))[..],
        [Reply::Authenticated { .. }]
    ));
}
