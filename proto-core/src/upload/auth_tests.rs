//! An upload that authenticates ([`Session::authenticate`]) and one that
//! stores its batch under names ([`Session::set_named`]), against a relay
//! played by hand (PROTOCOL.md §8).

use super::tests::{grant, metas, plan, welcome, T0};
use super::*;
use crate::auth::tests::{
    authenticated, challenge, expected_answer, refusal, sent, terminal, Sent, NAME, TOKEN,
};
use crate::error::ErrorCode;
use crate::identity::{AuthError, Credential};
use crate::message::{self, Kind, Plan, Role};
use std::vec::Vec;

/// What the session sends now, decoded.
fn drain<const F: usize>(s: &mut Session<'_, F>, now: Instant, files: &[Vec<u8>]) -> Vec<Sent> {
    let mut out = Vec::new();
    let mut buf = [0u8; 600];
    while let Some(n) = s.poll_transmit(now, &mut &*files, &mut buf).unwrap() {
        out.push(sent(&buf[..n]));
    }
    out
}

fn events<const F: usize>(s: &mut Session<'_, F>) -> Vec<Event> {
    core::iter::from_fn(|| s.poll_event()).collect()
}

fn welcomed<'n>(metas: &'n [FileMeta<'n>], credential: Credential<'n>) -> Session<'n, 4> {
    let mut s = Session::<4>::new(Config::default(), metas).unwrap();
    s.authenticate(credential);
    s.handle_connected(T0);
    s.handle_message(T0, welcome(100_000));
    s
}

#[test]
fn a_terminal_authenticates_with_the_mac_of_the_challenge_then_uploads() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = welcomed(&metas, terminal());
    // Nothing of the batch goes out before the relay accepts the terminal.
    assert_eq!(
        drain(&mut s, T0, &files),
        [Sent::Hello, Sent::TerminalAuth(NAME.into())]
    );
    s.handle_message(T0, challenge(7));
    assert_eq!(drain(&mut s, T0, &files), [expected_answer(7)]);
    assert!(!events(&mut s).contains(&Event::Authenticated));
    s.handle_message(T0, authenticated());
    assert!(events(&mut s).contains(&Event::Authenticated));
    assert_eq!(
        drain(&mut s, T0, &files),
        [Sent::BatchOpen, Sent::Announce(0)]
    );
    s.handle_message(T0, grant(1));
    s.handle_message(T0, plan(0, Plan::Held));
    assert!(s.is_finished() && s.error().is_none(), "{:?}", s.error());
}

#[test]
fn a_wrong_answer_fails_the_upload_with_auth_refused() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = welcomed(&metas, terminal());
    drain(&mut s, T0, &files);
    s.handle_message(T0, challenge(7));
    drain(&mut s, T0, &files);
    s.handle_message(T0, refusal(ErrorCode::AuthFailed, Kind::ChallengeAnswer, 0));
    assert!(s.is_finished());
    assert_eq!(s.error(), Some(Error::Auth(AuthError::Refused)));
    assert!(events(&mut s).contains(&Event::Failed(Error::Auth(AuthError::Refused))));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn an_old_relay_without_accounts_is_a_clear_failure() {
    // A relay that predates the kinds says UnknownKind; one whose messages
    // know them but whose sessions do not says UnexpectedMessage. Neither
    // is asked again (that would ping-pong with it).
    for code in [ErrorCode::UnknownKind, ErrorCode::UnexpectedMessage] {
        let files = std::vec![std::vec![1u8; 10]];
        let metas = metas(&files);
        let mut s = welcomed(&metas, terminal());
        drain(&mut s, T0, &files);
        s.handle_message(T0, refusal(code, Kind::TerminalAuth, 0));
        assert_eq!(s.error(), Some(Error::Auth(AuthError::RelayHasNoAccounts)));
        assert!(drain(&mut s, T0, &files).is_empty());
    }
}

#[test]
fn a_lost_challenge_or_verdict_sends_the_request_again() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = welcomed(&metas, terminal());
    drain(&mut s, T0, &files);
    let rto = Config::default().retransmit_timeout;
    // The challenge is lost: after the retransmit timeout, a new request.
    let t1 = T0 + rto;
    assert_eq!(s.poll_timeout(), Some(t1));
    s.handle_timeout(t1);
    assert_eq!(drain(&mut s, t1, &files), [Sent::TerminalAuth(NAME.into())]);
    s.handle_message(t1, challenge(8));
    assert_eq!(drain(&mut s, t1, &files), [expected_answer(8)]);
    // The verdict is lost too: the request again, never the old answer.
    let t2 = t1 + rto;
    s.handle_timeout(t2);
    assert_eq!(drain(&mut s, t2, &files), [Sent::TerminalAuth(NAME.into())]);
    s.handle_message(t2, challenge(9));
    assert_eq!(drain(&mut s, t2, &files), [expected_answer(9)]);
    s.handle_message(t2, authenticated());
    assert_eq!(
        drain(&mut s, t2, &files),
        [Sent::BatchOpen, Sent::Announce(0)]
    );
}

#[test]
fn a_rate_limited_terminal_waits_and_asks_again() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = welcomed(&metas, terminal());
    drain(&mut s, T0, &files);
    s.handle_message(
        T0,
        refusal(ErrorCode::RateLimited, Kind::TerminalAuth, 5_000),
    );
    assert!(!s.is_finished());
    assert!(events(&mut s).contains(&Event::Waiting {
        reason: ErrorCode::RateLimited,
        retry_after_ms: 5_000
    }));
    let t = s.poll_timeout().unwrap();
    assert!(t >= T0 + crate::time::Duration::from_millis(5_000));
    s.handle_timeout(t);
    // (after a keepalive: the wait was longer than its interval)
    assert!(drain(&mut s, t, &files).ends_with(&[Sent::TerminalAuth(NAME.into())]));
}

#[test]
fn a_token_authenticates_and_a_named_batch_says_so_before_every_batch_open() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.authenticate(Credential::Token(TOKEN));
    s.set_named(true);
    s.handle_connected(T0);
    s.handle_message(T0, welcome(100_000));
    assert_eq!(
        drain(&mut s, T0, &files),
        [Sent::Hello, Sent::Authenticate(TOKEN)]
    );
    s.handle_message(T0, authenticated());
    assert_eq!(
        drain(&mut s, T0, &files),
        [Sent::NamedPut, Sent::BatchOpen, Sent::Announce(0)]
    );
    // No grant: the announcement starts over, named again.
    let t = T0 + Config::default().retransmit_timeout;
    s.handle_timeout(t);
    assert_eq!(
        drain(&mut s, t, &files),
        [Sent::NamedPut, Sent::BatchOpen, Sent::Announce(0)]
    );
}

#[test]
fn every_new_link_authenticates_again_before_resuming() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = welcomed(&metas, Credential::Token(TOKEN));
    s.set_named(true);
    drain(&mut s, T0, &files);
    s.handle_message(T0, authenticated());
    drain(&mut s, T0, &files);
    s.handle_message(T0, grant(1));
    s.handle_message(T0, plan(0, Plan::Upload { offset: 0 }));
    s.handle_disconnected(T0);
    s.handle_connected(T0);
    s.handle_message(T0, welcome(100_000));
    assert_eq!(
        drain(&mut s, T0, &files),
        [Sent::Hello, Sent::Authenticate(TOKEN)]
    );
    s.handle_message(T0, authenticated());
    // The batch exists: it is resumed, named again so that the relay binds
    // its names when it completes.
    assert_eq!(drain(&mut s, T0, &files), [Sent::NamedPut, Sent::Resume]);
    // And again after the next cut.
    s.handle_disconnected(T0);
    s.handle_connected(T0);
    s.handle_message(T0, welcome(100_000));
    drain(&mut s, T0, &files);
    s.handle_message(T0, authenticated());
    assert_eq!(drain(&mut s, T0, &files), [Sent::NamedPut, Sent::Resume]);
}

/// Two challenges (a duplicated `TerminalAuth`), two answers: the relay
/// refuses the second as unexpected once the first authenticated the link.
/// In the transfer that refusal used to end the link like a `Data` the
/// relay had no upload for; it names `ChallengeAnswer`, and the upload goes
/// on (PROTOCOL.md §8).
#[test]
fn a_surplus_answers_refusal_keeps_the_upload_on_its_link() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = welcomed(&metas, terminal());
    drain(&mut s, T0, &files);
    s.handle_message(T0, challenge(7));
    assert_eq!(drain(&mut s, T0, &files), [expected_answer(7)]);
    s.handle_message(T0, challenge(8));
    assert_eq!(drain(&mut s, T0, &files), [expected_answer(8)]);
    s.handle_message(T0, authenticated());
    drain(&mut s, T0, &files);
    s.handle_message(T0, grant(1));
    s.handle_message(T0, plan(0, Plan::Upload { offset: 0 }));
    events(&mut s);
    s.handle_message(
        T0,
        refusal(ErrorCode::UnexpectedMessage, Kind::ChallengeAnswer, 0),
    );
    assert!(!events(&mut s).contains(&Event::LinkLost));
    assert!(!s.is_idle(), "the link is still up");
    assert!(s.error().is_none());
}

#[test]
fn an_anonymous_unnamed_upload_sends_nothing_new() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.handle_connected(T0);
    s.handle_message(T0, welcome(100_000));
    assert_eq!(
        drain(&mut s, T0, &files),
        [Sent::Hello, Sent::BatchOpen, Sent::Announce(0)]
    );
}

/// The role in the `Hello` a session sends first on a new link.
fn hello_role<const F: usize>(s: &mut Session<'_, F>, files: &[Vec<u8>]) -> Role {
    let mut buf = [0u8; 600];
    let n = s
        .poll_transmit(T0, &mut &*files, &mut buf)
        .unwrap()
        .unwrap();
    let mut dec = crate::frame::Decoder::new([0u8; 600]);
    let mut input = &buf[..n];
    let frame = dec.feed(&mut input).unwrap().unwrap();
    match message::Message::decode(frame).unwrap() {
        message::Message::Hello(h) => h.role,
        m => panic!("not a Hello: {m:?}"),
    }
}

#[test]
fn a_relay_says_its_role_and_answers_with_the_relay_mac() {
    use crate::identity::{relay_mac, terminal_mac, RelayIdentity};
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let me = RelayIdentity {
        name: "relay-a",
        key: crate::auth::tests::KEY,
    };
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.authenticate(Credential::Relay(me));
    for _link in 0..2 {
        s.handle_connected(T0);
        assert_eq!(hello_role(&mut s, &files), Role::Relay);
        s.handle_message(T0, welcome(100_000));
        // The relay's name goes in a TerminalAuth, as a terminal's does.
        assert_eq!(
            drain(&mut s, T0, &files),
            [Sent::TerminalAuth("relay-a".into())]
        );
        s.handle_message(T0, challenge(7));
        let answer = drain(&mut s, T0, &files);
        // Under the relay label, never the terminal one.
        assert_eq!(
            answer,
            [Sent::Answer(relay_mac(&me.key, &[7; 16], "relay-a"))]
        );
        assert_ne!(
            answer,
            [Sent::Answer(terminal_mac(&me.key, &[7; 16], "relay-a"))]
        );
        s.handle_message(T0, authenticated());
        assert!(events(&mut s).contains(&Event::Authenticated));
        s.handle_disconnected(T0);
    }
    // With a terminal's credential, or none, the Hello says Terminal.
    for credential in [Some(terminal()), Some(Credential::Token(TOKEN)), None] {
        let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
        if let Some(c) = credential {
            s.authenticate(c);
        }
        s.handle_connected(T0);
        assert_eq!(hello_role(&mut s, &files), Role::Terminal);
    }
}

#[test]
fn a_refused_relay_fails_with_auth_refused() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let me = crate::identity::RelayIdentity {
        name: "relay-a",
        key: crate::auth::tests::KEY,
    };
    let mut s = welcomed(&metas, Credential::Relay(me));
    drain(&mut s, T0, &files);
    s.handle_message(T0, challenge(1));
    drain(&mut s, T0, &files);
    s.handle_message(T0, refusal(ErrorCode::AuthFailed, Kind::ChallengeAnswer, 0));
    assert_eq!(s.error(), Some(Error::Auth(AuthError::Refused)));
}
