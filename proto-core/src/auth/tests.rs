//! The relay's side of the handshake played by hand: what both sessions'
//! authentication tests send and check (`upload/auth_tests.rs`,
//! `download/auth_tests.rs`), and the handshake's own rules.

use super::*;
use crate::code::Code;
use crate::frame::Decoder;
use crate::hash::Sha1Digest;
use crate::identity::{DeviceKey, TerminalIdentity};
use crate::message::{AuthToken, Authenticated, Challenge};
use std::string::String;

/// The terminal every test authenticates as.
pub(crate) const NAME: &str = "sensor-1";
/// Its device key.
pub(crate) const KEY: DeviceKey = DeviceKey([0x42; 16]);
/// A user's token.
pub(crate) const TOKEN: AuthToken = AuthToken([0x17; 16]);

pub(crate) fn terminal() -> Credential<'static> {
    Credential::Terminal(TerminalIdentity {
        name: NAME,
        key: KEY,
    })
}

pub(crate) fn challenge(byte: u8) -> Message<'static> {
    Message::Challenge(Challenge { nonce: [byte; 16] })
}

pub(crate) fn authenticated() -> Message<'static> {
    Message::Authenticated(Authenticated {
        user: "alice",
        terminal: NAME,
        token: AuthToken::NONE,
        expires_at: 0,
    })
}

/// The relay's `Error{code}` answering a request of `kind`.
pub(crate) fn refusal(code: ErrorCode, kind: Kind, retry_after_ms: u32) -> Message<'static> {
    Message::Error(message::Error {
        code,
        kind: kind as u8,
        retry_after_ms,
    })
}

/// A frame a session sent, decoded and owned so a test can compare it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sent {
    Hello,
    TerminalAuth(String),
    Answer(Sha1Digest),
    Authenticate(AuthToken),
    NamedPut,
    BatchOpen,
    Announce(u16),
    Resume,
    Fetch(Code),
    FetchNamed(String, String),
    /// code, file, offset
    Read(Code, u16, u64),
    Other(Kind),
}

/// Decodes one encoded frame a session wrote.
pub(crate) fn sent(frame: &[u8]) -> Sent {
    let mut dec = Decoder::new([0u8; 600]);
    let mut input = frame;
    let frame = dec.feed(&mut input).unwrap().unwrap();
    match Message::decode(frame).unwrap() {
        Message::Hello(_) => Sent::Hello,
        Message::TerminalAuth(t) => Sent::TerminalAuth(t.terminal.into()),
        Message::ChallengeAnswer(a) => Sent::Answer(a.mac),
        Message::Authenticate(a) => Sent::Authenticate(a.token),
        Message::NamedPut => Sent::NamedPut,
        Message::BatchOpen(_) => Sent::BatchOpen,
        Message::FileAnnounce(a) => Sent::Announce(a.index),
        Message::Resume(_) => Sent::Resume,
        Message::Fetch(f) => Sent::Fetch(f.code),
        Message::FetchNamed(f) => Sent::FetchNamed(f.owner.into(), f.name.into()),
        Message::Read(r) => Sent::Read(r.code, r.file, r.offset),
        m => Sent::Other(m.kind()),
    }
}

/// The answer the relay expects to challenge `byte`.
pub(crate) fn expected_answer(byte: u8) -> Sent {
    Sent::Answer(terminal_mac(&KEY, &[byte; 16], NAME))
}

fn step(h: &mut Handshake<'_>) -> Option<Sent> {
    let mut out = [0u8; 300];
    h.poll_transmit(256, &mut out)
        .map(|r| sent(&out[..r.unwrap()]))
}

#[test]
fn a_terminal_answers_the_latest_challenge_with_its_mac() {
    let mut h = Handshake::new(terminal());
    assert_eq!(step(&mut h), Some(Sent::TerminalAuth(NAME.into())));
    assert_eq!(step(&mut h), None, "one request per wait");
    assert_eq!(h.handle(&challenge(1)), Some(Outcome::Pending));
    // A request sent again was answered by a second challenge, which
    // replaced the first at the relay: the answer is to the second.
    assert_eq!(h.handle(&challenge(2)), Some(Outcome::Pending));
    assert_eq!(step(&mut h), Some(expected_answer(2)));
    assert_eq!(step(&mut h), None);
    assert_eq!(h.handle(&authenticated()), Some(Outcome::Authenticated));
    // Done: nothing more is the handshake's.
    assert_eq!(h.handle(&challenge(3)), None);
    h.retransmit();
    assert_eq!(step(&mut h), None);
    // A new link starts over.
    h.restart();
    assert_eq!(step(&mut h), Some(Sent::TerminalAuth(NAME.into())));
}

#[test]
fn refusals_of_its_requests_are_the_handshakes_and_others_the_sessions() {
    let mut h = Handshake::new(Credential::Token(TOKEN));
    assert_eq!(step(&mut h), Some(Sent::Authenticate(TOKEN)));
    // A token asks no challenge.
    assert_eq!(h.handle(&challenge(1)), None);
    let cases = [
        (
            ErrorCode::AuthFailed,
            Kind::Authenticate,
            Some(Outcome::Failed(AuthError::Refused)),
        ),
        (
            ErrorCode::UnknownKind,
            Kind::TerminalAuth,
            Some(Outcome::Failed(AuthError::RelayHasNoAccounts)),
        ),
        (
            ErrorCode::UnexpectedMessage,
            Kind::ChallengeAnswer,
            Some(Outcome::Pending),
        ),
        (
            ErrorCode::UnexpectedMessage,
            Kind::Authenticate,
            Some(Outcome::Failed(AuthError::RelayHasNoAccounts)),
        ),
        (ErrorCode::RateLimited, Kind::TerminalAuth, None),
        (ErrorCode::AuthFailed, Kind::BatchOpen, None),
    ];
    for (code, kind, outcome) in cases {
        assert_eq!(
            h.handle(&refusal(code, kind, 0)),
            outcome,
            "{code:?} {kind:?}"
        );
    }
    // UnexpectedMessage to an answer waits for the timer to ask again.
    assert_eq!(step(&mut h), None);
    h.retransmit();
    assert_eq!(step(&mut h), Some(Sent::Authenticate(TOKEN)));
}

#[test]
fn a_name_too_long_for_the_relays_frames_is_a_failure_not_a_retry() {
    let name = "n".repeat(80);
    let mut h = Handshake::new(Credential::Terminal(TerminalIdentity {
        name: &name,
        key: KEY,
    }));
    let mut out = [0u8; 300];
    assert_eq!(
        h.poll_transmit(64, &mut out),
        Some(Err(AuthError::NameTooLong))
    );
}
