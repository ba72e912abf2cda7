//! Accounts on a session (PROTOCOL.md §8): logins, tokens, terminal
//! challenges, and named files with their access rules.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::directory::memory::MemoryDirectory;
use crate::directory::{Directory, PasswordParams};
use pickup_proto::identity::{terminal_mac, Credential, DeviceKey};
use pickup_proto::message::{
    AuthToken, Authenticate, ChallengeAnswer, FetchNamed, Kind, Login, RemoveNamed, ShareNamed,
    TerminalAuth,
};

const KEY: DeviceKey = DeviceKey([7; 16]);

/// A world with users ada and bob (passwords "ada-pw", "bob-pw") and
/// ada's terminal sensor-1.
fn accounts(settings: Settings) -> World {
    let dir = Arc::new(MemoryDirectory::new(PasswordParams::FAST_FOR_TESTS));
    let t = T0 / 1000;
    dir.add_user("ada", "ada-pw", t).unwrap();
    dir.add_user("bob", "bob-pw", t).unwrap();
    dir.add_terminal("sensor-1", "ada", KEY, t).unwrap();
    World::with_directory(settings, dir)
}

fn login(s: &mut Session, now: Instant, user: &str, password: &str) -> Vec<Reply> {
    send(s, now, Message::Login(Login { user, password }));
    drain(s)
}

/// A session logged in as `user`; its token.
fn logged_in(w: &World, peer: u64, user: &str) -> (Session, AuthToken) {
    let mut s = open(w, peer);
    let replies = login(&mut s, w.now(), user, &format!("{user}-pw"));
    match &replies[..] {
        [Reply::Authenticated { user: u, token, .. }] if u == user => (s, *token),
        other => panic!("login failed: {other:?}"),
    }
}

fn error_of(replies: &[Reply]) -> ErrorCode {
    replies
        .iter()
        .find_map(|r| match r {
            Reply::Error(code, _) => Some(*code),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no error in {replies:?}"))
}

/// Puts `content` under `name` in the namespace of the user `token`
/// belongs to, as a terminal's machine does: authenticate after
/// `Welcome`, `NamedPut` before `BatchOpen`.
fn put(
    w: &mut World,
    s: &mut Session,
    token: AuthToken,
    name: &str,
    content: &[u8],
) -> Vec<upload::Event> {
    let metas = [FileMeta {
        name: Box::leak(name.to_string().into_boxed_str()),
        size: content.len() as u64,
        sha1: Sha1Digest::of(content),
    }];
    let config = upload::Config {
        max_frame: 65_536,
        max_window: TERMINAL_WINDOW,
        ..upload::Config::default()
    };
    let mut c = upload::Session::<8>::new(config, &metas).unwrap();
    c.authenticate(Credential::Token(token));
    c.set_named(true);
    let (_, events, _) = drive_upload(w, s, c, &[content.to_vec()], |_| false);
    events
}

fn completed(events: &[upload::Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, upload::Event::Complete { .. }))
}

/// Fetches `owner/name` and reads it whole through the read handle.
fn get_named(s: &mut Session, now: Instant, owner: &str, name: &str) -> Result<Vec<u8>, ErrorCode> {
    send(s, now, Message::FetchNamed(FetchNamed { owner, name }));
    let replies = drain(s);
    let (manifest, size) = match &replies[..] {
        [Reply::Manifest(m), Reply::Entry(0, _, size)] => (*m, *size),
        other => return Err(error_of(other)),
    };
    send(
        s,
        now,
        Message::Read(Read {
            code: manifest.code,
            file: 0,
            offset: 0,
            len: size as u32,
        }),
    );
    let mut bytes = Vec::new();
    for r in drain(s) {
        match r {
            Reply::Data(0, at, d) if at == bytes.len() as u64 => bytes.extend(d),
            other => panic!("unexpected {other:?}"),
        }
    }
    Ok(bytes)
}

#[test]
fn a_login_gives_a_token_that_authenticates_until_logout() {
    let w = accounts(Settings::default());
    let (mut s, token) = logged_in(&w, 1, "ada");
    assert!(!token.is_none());
    let mut s2 = open(&w, 2);
    send(
        &mut s2,
        w.now(),
        Message::Authenticate(Authenticate { token }),
    );
    assert!(
        matches!(&drain(&mut s2)[..], [Reply::Authenticated { user, token, .. }] if user == "ada" && token.is_none())
    );
    send(&mut s, w.now(), Message::Logout);
    assert_eq!(drain(&mut s), [Reply::Done(Kind::Logout as u8)]);
    let mut s3 = open(&w, 3);
    send(
        &mut s3,
        w.now(),
        Message::Authenticate(Authenticate { token }),
    );
    assert_eq!(error_of(&drain(&mut s3)), ErrorCode::AuthFailed);
    // A token from another relay means nothing here.
    let other = accounts(Settings::default());
    let (_, foreign) = logged_in(&other, 1, "ada");
    let mut s4 = open(&w, 4);
    send(
        &mut s4,
        w.now(),
        Message::Authenticate(Authenticate { token: foreign }),
    );
    assert_eq!(error_of(&drain(&mut s4)), ErrorCode::AuthFailed);
}

#[test]
fn wrong_passwords_lock_the_account_only_for_a_while() {
    let mut w = accounts(Settings::default());
    let mut s = open(&w, 1);
    let limit = w.relay.settings.auth.account_failures;
    for _ in 0..limit {
        assert_eq!(
            error_of(&login(&mut s, w.now(), "ada", "guess")),
            ErrorCode::AuthFailed
        );
    }
    // Locked: even the right password is refused, without being checked.
    let locked = login(&mut s, w.now(), "ada", "ada-pw");
    assert_eq!(error_of(&locked), ErrorCode::RateLimited);
    // An unknown user fails exactly like a wrong password.
    assert_eq!(
        error_of(&login(&mut s, w.now(), "nobody", "x")),
        ErrorCode::AuthFailed
    );
    w.now += w.relay.settings.auth.account_lock_secs * 1000 + 1;
    let mut s = open(&w, 2);
    assert!(matches!(
        &login(&mut s, w.now(), "ada", "ada-pw")[..],
        [Reply::Authenticated { .. }]
    ));
}

#[test]
fn passwords_are_refused_on_plain_links_from_afar() {
    let w = accounts(Settings::default());
    let far = Peer::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    let mut s = Session::new(w.relay.clone(), far.clone(), Link::TCP, w.now()).unwrap();
    send(&mut s, w.now(), hello(0));
    drain(&mut s);
    assert_eq!(
        error_of(&login(&mut s, w.now(), "ada", "ada-pw")),
        ErrorCode::InsecureLink
    );
    let tls = Link {
        encrypted: true,
        ..Link::TCP
    };
    let mut s = Session::new(w.relay.clone(), far, tls, w.now()).unwrap();
    send(&mut s, w.now(), hello(0));
    drain(&mut s);
    assert!(matches!(
        &login(&mut s, w.now(), "ada", "ada-pw")[..],
        [Reply::Authenticated { .. }]
    ));
    let local = Peer::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut s = Session::new(w.relay.clone(), local, Link::TCP, w.now()).unwrap();
    send(&mut s, w.now(), hello(0));
    drain(&mut s);
    assert!(matches!(
        &login(&mut s, w.now(), "ada", "ada-pw")[..],
        [Reply::Authenticated { .. }]
    ));
}

fn challenge(s: &mut Session, now: Instant, terminal: &str) -> [u8; 16] {
    send(s, now, Message::TerminalAuth(TerminalAuth { terminal }));
    match &drain(s)[..] {
        [Reply::Challenge(n)] => *n,
        other => panic!("no challenge: {other:?}"),
    }
}

#[test]
fn a_terminal_answers_its_challenge_once() {
    let w = accounts(Settings::default());
    let mut s = open(&w, 1);
    let nonce = challenge(&mut s, w.now(), "sensor-1");
    let mac = terminal_mac(&KEY, &nonce, "sensor-1");
    send(
        &mut s,
        w.now(),
        Message::ChallengeAnswer(ChallengeAnswer { mac }),
    );
    assert!(
        matches!(&drain(&mut s)[..], [Reply::Authenticated { user, terminal, .. }] if user == "ada" && terminal == "sensor-1")
    );
    // The same answer again: there is no challenge to answer any more.
    send(
        &mut s,
        w.now(),
        Message::ChallengeAnswer(ChallengeAnswer { mac }),
    );
    assert_eq!(error_of(&drain(&mut s)), ErrorCode::UnexpectedMessage);
    // Replayed against a fresh challenge, on another connection: refused.
    let mut s2 = open(&w, 2);
    let fresh = challenge(&mut s2, w.now(), "sensor-1");
    assert_ne!(fresh, nonce);
    send(
        &mut s2,
        w.now(),
        Message::ChallengeAnswer(ChallengeAnswer { mac }),
    );
    assert_eq!(error_of(&drain(&mut s2)), ErrorCode::AuthFailed);
    // The wrong key, and a name nobody registered: a challenge all the
    // same, and a failure.
    let mut s3 = open(&w, 3);
    for name in ["sensor-1", "sensor-9"] {
        let n = challenge(&mut s3, w.now(), name);
        let mac = terminal_mac(&DeviceKey([8; 16]), &n, name);
        send(
            &mut s3,
            w.now(),
            Message::ChallengeAnswer(ChallengeAnswer { mac }),
        );
        assert_eq!(error_of(&drain(&mut s3)), ErrorCode::AuthFailed);
    }
}

#[test]
fn named_files_are_read_by_their_owner_and_whom_the_owner_shares_with() {
    let mut w = accounts(Settings::default());
    let content = bytes(50_000, 3);
    let (mut ada, ada_token) = logged_in(&w, 1, "ada");
    assert!(completed(&put(
        &mut w, &mut ada, ada_token, "fw.bin", &content
    )));
    let now = w.now();
    assert_eq!(
        get_named(&mut ada, now, "ada", "fw.bin"),
        Ok(content.clone())
    );
    let (mut bob, _) = logged_in(&w, 2, "bob");
    // Bob cannot tell ada's name from nothing, nor list, remove or share it.
    assert_eq!(
        get_named(&mut bob, now, "ada", "fw.bin"),
        Err(ErrorCode::UnknownCode)
    );
    assert_eq!(
        get_named(&mut bob, now, "ada", "nothing"),
        Err(ErrorCode::UnknownCode)
    );
    send(
        &mut bob,
        now,
        Message::RemoveNamed(RemoveNamed { name: "fw.bin" }),
    );
    assert_eq!(error_of(&drain(&mut bob)), ErrorCode::UnknownCode);
    send(&mut bob, now, Message::ListNamed);
    assert!(matches!(&drain(&mut bob)[..], [Reply::Manifest(m)] if m.files == 0));
    // Shared, then revoked.
    let share = |allow| {
        Message::ShareNamed(ShareNamed {
            name: "fw.bin",
            with: "bob",
            allow,
        })
    };
    send(&mut ada, now, share(true));
    assert_eq!(drain(&mut ada), [Reply::Done(Kind::ShareNamed as u8)]);
    assert_eq!(
        get_named(&mut bob, now, "ada", "fw.bin"),
        Ok(content.clone())
    );
    send(&mut ada, now, share(false));
    assert_eq!(drain(&mut ada), [Reply::Done(Kind::ShareNamed as u8)]);
    assert_eq!(
        get_named(&mut bob, now, "ada", "fw.bin"),
        Err(ErrorCode::UnknownCode)
    );
    // Sharing with a user who does not exist looks like a missing name.
    send(
        &mut ada,
        now,
        Message::ShareNamed(ShareNamed {
            name: "fw.bin",
            with: "carol",
            allow: true,
        }),
    );
    assert_eq!(error_of(&drain(&mut ada)), ErrorCode::UnknownCode);
    // Ada's terminal reads her names.
    let mut term = open(&w, 3);
    let nonce = challenge(&mut term, now, "sensor-1");
    let mac = terminal_mac(&KEY, &nonce, "sensor-1");
    send(
        &mut term,
        now,
        Message::ChallengeAnswer(ChallengeAnswer { mac }),
    );
    drain(&mut term);
    assert_eq!(
        get_named(&mut term, now, "ada", "fw.bin"),
        Ok(content.clone())
    );
    // Bob's own fw.bin is his: Ada's stays as it was.
    let (_, bob_token) = logged_in(&w, 4, "bob");
    let mut bob2 = open(&w, 5);
    send(
        &mut bob2,
        w.now(),
        Message::Authenticate(Authenticate { token: bob_token }),
    );
    drain(&mut bob2);
    assert!(completed(&put(
        &mut w, &mut bob2, bob_token, "fw.bin", b"bob's"
    )));
    let now = w.now();
    assert_eq!(
        get_named(&mut ada, now, "ada", "fw.bin"),
        Ok(content.clone())
    );
    assert_eq!(
        get_named(&mut bob2, now, "bob", "fw.bin"),
        Ok(b"bob's".to_vec())
    );
    // Removed: gone for everyone.
    send(
        &mut ada,
        now,
        Message::RemoveNamed(RemoveNamed { name: "fw.bin" }),
    );
    assert_eq!(drain(&mut ada), [Reply::Done(Kind::RemoveNamed as u8)]);
    assert_eq!(
        get_named(&mut ada, now, "ada", "fw.bin"),
        Err(ErrorCode::UnknownCode)
    );
}

#[test]
fn a_replaced_name_serves_new_readers_the_new_content_and_old_readers_the_old() {
    let mut w = accounts(Settings::default());
    let (old, new) = (bytes(40_000, 1), bytes(30_000, 2));
    let (mut ada, ada_token) = logged_in(&w, 1, "ada");
    assert!(completed(&put(&mut w, &mut ada, ada_token, "cfg", &old)));
    // A reader fetches the name (its handle pins the content)...
    let (mut reader, _) = logged_in(&w, 2, "ada");
    let now = w.now();
    let handle = fetch_handle(&mut reader, now, "ada", "cfg");
    // ...the name is replaced...
    assert!(completed(&put(&mut w, &mut ada, ada_token, "cfg", &new)));
    // ...and the reader still reads what it fetched.
    let now = w.now();
    assert_eq!(read_handle(&mut reader, now, handle, 40_000), old);
    assert_eq!(get_named(&mut reader, now, "ada", "cfg"), Ok(new));
}

/// `FetchNamed` of `owner/name`: the read handle of the manifest.
fn fetch_handle(s: &mut Session, now: Instant, owner: &str, name: &str) -> Code {
    send(s, now, Message::FetchNamed(FetchNamed { owner, name }));
    match &drain(s)[..] {
        [Reply::Manifest(m), Reply::Entry(..)] => m.code,
        other => panic!("{other:?}"),
    }
}

/// Reads the first `len` bytes of the one file under `handle`.
fn read_handle(s: &mut Session, now: Instant, handle: Code, len: u32) -> Vec<u8> {
    send(
        s,
        now,
        Message::Read(Read {
            code: handle,
            file: 0,
            offset: 0,
            len,
        }),
    );
    drain(s)
        .into_iter()
        .flat_map(|r| match r {
            Reply::Data(_, _, d) => d,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_fetch_repeated_after_the_name_was_replaced_leaves_the_first_handle_readable() {
    // The terminal's timer repeats a FetchNamed whose manifest is on its
    // way; between the two the name gets new content. The terminal reads
    // with the first manifest it gets (found by the simulator).
    let mut w = accounts(Settings::default());
    let (old, new) = (bytes(40_000, 1), bytes(30_000, 2));
    let (mut ada, ada_token) = logged_in(&w, 1, "ada");
    assert!(completed(&put(&mut w, &mut ada, ada_token, "cfg", &old)));
    let (mut reader, _) = logged_in(&w, 2, "ada");
    let first = fetch_handle(&mut reader, w.now(), "ada", "cfg");
    assert!(completed(&put(&mut w, &mut ada, ada_token, "cfg", &new)));
    let now = w.now();
    let second = fetch_handle(&mut reader, now, "ada", "cfg");
    assert_ne!(first, second, "other content, another handle");
    assert_eq!(read_handle(&mut reader, now, first, 40_000), old);
    assert_eq!(read_handle(&mut reader, now, second, 30_000), new);
}

#[test]
fn quotas_and_name_rules_refuse_before_a_byte_is_stored() {
    let mut w = accounts(Settings::default());
    w.relay
        .directory()
        .set_quota("ada", Some(100_000), Some(2))
        .unwrap();
    let (mut ada, ada_token) = logged_in(&w, 1, "ada");
    let first = bytes(60_000, 1);
    assert!(completed(&put(&mut w, &mut ada, ada_token, "a", &first)));
    let usage = w.store.usage().unwrap().bytes;
    // 60 000 + 60 000 is over 100 000: refused at the announcement.
    send(&mut ada, w.now(), Message::NamedPut);
    let big = bytes(60_000, 2);
    let replies = announce(&mut ada, w.now(), &[("b", 60_000, Sha1Digest::of(&big))]);
    assert_eq!(error_of(&replies), ErrorCode::UserQuota);
    assert_eq!(w.store.usage().unwrap().bytes, usage, "nothing stored");
    // Replacing "a" with as much is within the quota.
    assert!(completed(&put(&mut w, &mut ada, ada_token, "a", &big)));
    let now = w.now();
    assert_eq!(get_named(&mut ada, now, "ada", "a"), Ok(big));
    // Names are one component: no directories, no tricks.
    for name in ["dir/x", "..", "a\u{1}b", &"n".repeat(4096)] {
        send(&mut ada, now, Message::NamedPut);
        let replies = announce(&mut ada, now, &[(name, 3, Sha1Digest::of(b"abc"))]);
        assert!(
            matches!(
                error_of(&replies),
                ErrorCode::InvalidName | ErrorCode::BadFrame
            ),
            "{name:?}: {replies:?}"
        );
    }
}

#[test]
fn named_files_and_closed_relays_need_a_login() {
    let w = accounts(Settings {
        auth: crate::directory::AuthSettings {
            allow_anonymous_upload: false,
            allow_anonymous_download: false,
            ..Default::default()
        },
        ..Settings::default()
    });
    let mut s = open(&w, 1);
    let now = w.now();
    for msg in [
        Message::NamedPut,
        Message::ListNamed,
        Message::FetchNamed(FetchNamed {
            owner: "ada",
            name: "x",
        }),
        Message::BatchOpen(BatchOpen {
            files: 1,
            total_size: 3,
        }),
        Message::Fetch(Fetch {
            code: Code::parse("7KQ4-M2XD-9RTA").unwrap(),
        }),
        Message::Logout,
    ] {
        send(&mut s, now, msg);
        assert_eq!(error_of(&drain(&mut s)), ErrorCode::AuthRequired, "{msg:?}");
    }
    let (mut ada, _) = logged_in(&w, 2, "ada");
    send(
        &mut ada,
        now,
        Message::BatchOpen(BatchOpen {
            files: 1,
            total_size: 3,
        }),
    );
    assert_eq!(drain(&mut ada), []);
}

#[test]
fn wrong_answers_lock_a_terminal_only_for_a_while() {
    let mut w = accounts(Settings::default());
    let limit = w.relay.settings.auth.account_failures;
    let mut s = open(&w, 1);
    for _ in 0..limit {
        let n = challenge(&mut s, w.now(), "sensor-1");
        let mac = terminal_mac(&DeviceKey([9; 16]), &n, "sensor-1");
        send(
            &mut s,
            w.now(),
            Message::ChallengeAnswer(ChallengeAnswer { mac }),
        );
        assert_eq!(error_of(&drain(&mut s)), ErrorCode::AuthFailed);
    }
    // Locked: no challenge is even sent.
    send(
        &mut s,
        w.now(),
        Message::TerminalAuth(TerminalAuth {
            terminal: "sensor-1",
        }),
    );
    assert_eq!(error_of(&drain(&mut s)), ErrorCode::RateLimited);
    w.now += w.relay.settings.auth.account_lock_secs * 1000 + 1;
    let mut s = open(&w, 2);
    let n = challenge(&mut s, w.now(), "sensor-1");
    let mac = terminal_mac(&KEY, &n, "sensor-1");
    send(
        &mut s,
        w.now(),
        Message::ChallengeAnswer(ChallengeAnswer { mac }),
    );
    assert!(matches!(&drain(&mut s)[..], [Reply::Authenticated { .. }]));
}

#[test]
fn wrong_tokens_limit_their_peer_not_everyone_elses_tokens() {
    let w = accounts(Settings::default());
    let (_, token) = logged_in(&w, 1, "ada");
    let limit = w.relay.settings.auth.account_failures;
    let mut guesser = open(&w, 66);
    for i in 0..limit + 1 {
        let guess = AuthToken([i as u8 + 1; 16]);
        send(
            &mut guesser,
            w.now(),
            Message::Authenticate(Authenticate { token: guess }),
        );
        assert_eq!(error_of(&drain(&mut guesser)), ErrorCode::AuthFailed);
    }
    // Another peer's real token still works at once.
    let mut s = open(&w, 2);
    send(
        &mut s,
        w.now(),
        Message::Authenticate(Authenticate { token }),
    );
    assert!(matches!(&drain(&mut s)[..], [Reply::Authenticated { .. }]));
}
