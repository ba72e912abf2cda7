//! The sender against a relay played by hand: pushes retried with the
//! same id, status lines not reported twice, refusals per request.

use std::vec::Vec;

use super::*;
use crate::auth::tests::{authenticated, refusal, TOKEN};
use crate::error::ErrorCode;
use crate::frame::Decoder;
use crate::identity::AuthError;
use crate::message::{Delivery, DeliveryState, Done, Kind, Message, Role, Welcome};
use std::string::String;

const T0: Instant = Instant::from_millis(1_000);
const RTO: Duration = Duration::from_millis(2_000);

#[derive(Debug, Clone, PartialEq)]
enum Out {
    Hello,
    Authenticate,
    Push(u64, Code, String),
    Status(Code),
    Allow(String, bool),
    Keepalive,
    Other(Kind),
}

fn decode(frame: &[u8]) -> Out {
    let mut dec = Decoder::new([0u8; 600]);
    let mut input = frame;
    let f = dec.feed(&mut input).unwrap().unwrap();
    match Message::decode(f).unwrap() {
        Message::Hello(h) => {
            assert_eq!(h.caps, crate::message::CAP_PUSH_NOTICE);
            Out::Hello
        }
        Message::Authenticate(a) => {
            assert_eq!(a.token, TOKEN);
            Out::Authenticate
        }
        Message::Push(p) => Out::Push(p.push_id, p.code, p.terminal.into()),
        Message::DeliveryStatus(s) => Out::Status(s.code),
        Message::AllowSender(a) => Out::Allow(a.sender.into(), a.allow),
        Message::Keepalive => Out::Keepalive,
        m => Out::Other(m.kind()),
    }
}

fn drain(s: &mut Sender<'_>, now: Instant) -> Vec<Out> {
    let mut out = Vec::new();
    let mut buf = [0u8; 600];
    while let Some(n) = s.poll_transmit(now, &mut buf) {
        out.push(decode(&buf[..n]));
    }
    out
}

fn events(s: &mut Sender<'_>) -> Vec<SendEvent> {
    core::iter::from_fn(|| s.poll_event()).collect()
}

fn code(n: u128) -> Code {
    Code::from_parts(Code::DEFAULT_LEN, n).unwrap()
}

fn delivery(push_id: u64, code: Code, state: DeliveryState) -> Message<'static> {
    Message::Delivery(Delivery {
        push_id,
        code,
        terminal: "sensor-1",
        state,
        bytes: 0,
        total: 500,
        at: 1_800_000_000,
        until: 1_900_000_000,
    })
}

fn link_up(s: &mut Sender<'_>, now: Instant) {
    link_up_with_frames(s, now, 4096);
}

/// Connects to a relay that takes frames of up to `max_frame` bytes.
fn link_up_with_frames(s: &mut Sender<'_>, now: Instant, max_frame: u32) {
    s.handle_connected(now);
    assert_eq!(drain(s, now), [Out::Hello]);
    s.handle_message(
        now,
        Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame,
            window: 0,
            caps: crate::message::CAP_PUSH_NOTICE,
        }),
    );
    assert_eq!(drain(s, now), [Out::Authenticate]);
    s.handle_message(now, authenticated());
    assert!(s.is_ready());
}

fn sender() -> Sender<'static> {
    Sender::new(SendConfig::default(), Credential::Token(TOKEN))
}

#[test]
fn a_push_is_retried_with_the_same_id_until_its_delivery_comes() {
    let mut s = sender();
    s.push(77, code(1), "sensor-1").unwrap();
    assert_eq!(s.push(78, code(1), "x"), Err(RequestError::Busy));
    link_up(&mut s, T0);
    let push = Out::Push(77, code(1), "sensor-1".into());
    assert_eq!(drain(&mut s, T0), core::slice::from_ref(&push));
    let t = T0 + RTO;
    assert_eq!(s.poll_timeout(), Some(t));
    s.handle_timeout(t);
    assert_eq!(drain(&mut s, t), core::slice::from_ref(&push));
    // The link breaks; the push goes out again after authenticating.
    s.handle_disconnected(t);
    link_up(&mut s, t);
    assert_eq!(drain(&mut s, t), [push]);
    // Another push's delivery is not the answer.
    s.handle_message(t, delivery(5, code(1), DeliveryState::Queued));
    assert!(s.is_busy());
    s.handle_message(t, delivery(77, code(1), DeliveryState::Queued));
    let evs = events(&mut s);
    let [.., SendEvent::Delivery(d), SendEvent::Done(RequestKind::Push)] = evs.as_slice() else {
        panic!("{evs:?}")
    };
    assert_eq!(
        (d.push_id, d.state, d.terminal.as_str()),
        (77, DeliveryState::Queued, "sensor-1")
    );
    assert!(!s.is_busy());
    // The late answer to a retry changes nothing.
    s.handle_message(t, delivery(77, code(1), DeliveryState::Queued));
    assert!(events(&mut s).is_empty());
}

#[test]
fn a_status_reports_each_line_once_then_done() {
    let mut s = sender();
    link_up(&mut s, T0);
    s.status(code(2)).unwrap();
    assert_eq!(drain(&mut s, T0), [Out::Status(code(2))]);
    s.handle_message(T0, delivery(1, code(2), DeliveryState::Delivered));
    // The second line is lost; the timer asks again.
    let t = T0 + RTO;
    s.handle_timeout(t);
    assert_eq!(drain(&mut s, t), [Out::Status(code(2))]);
    s.handle_message(t, delivery(1, code(2), DeliveryState::Delivered));
    s.handle_message(t, delivery(2, code(2), DeliveryState::Receiving));
    s.handle_message(
        t,
        Message::Done(Done {
            kind: Kind::DeliveryStatus as u8,
        }),
    );
    let lines: Vec<u64> = events(&mut s)
        .iter()
        .filter_map(|e| match e {
            SendEvent::Delivery(d) => Some(d.push_id),
            _ => None,
        })
        .collect();
    assert_eq!(lines, [1, 2]);
    assert!(!s.is_busy());
}

#[test]
fn allow_sender_is_done_and_refusals_end_the_request_only() {
    let mut s = sender();
    link_up(&mut s, T0);
    // Terminals are account names; senders may be `user@pair`.
    assert_eq!(
        s.push(1, code(1), &"t".repeat(33)),
        Err(RequestError::NameTooLong)
    );
    assert_eq!(
        s.allow_sender(&(longest_remote_sender() + "x"), true),
        Err(RequestError::NameTooLong)
    );
    s.allow_sender("bob", true).unwrap();
    assert_eq!(drain(&mut s, T0), [Out::Allow("bob".into(), true)]);
    // A Done for another kind is not this one's.
    s.handle_message(T0, Message::Done(Done { kind: 0x57 }));
    assert!(s.is_busy());
    s.handle_message(
        T0,
        Message::Done(Done {
            kind: Kind::AllowSender as u8,
        }),
    );
    assert!(events(&mut s).contains(&SendEvent::Done(RequestKind::AllowSender)));

    for (error, hint) in [
        (ErrorCode::UnknownTerminal, 0),
        (ErrorCode::QueueFull, 60_000),
        (ErrorCode::NotReady, 0),
        (ErrorCode::UnknownCode, 0),
        (ErrorCode::Expired, 0),
        (ErrorCode::AuthRequired, 0),
    ] {
        s.push(9, code(3), "sensor-9").unwrap();
        drain(&mut s, T0);
        s.handle_message(T0, refusal(error, Kind::Push, hint));
        assert_eq!(
            events(&mut s),
            [SendEvent::Refused {
                request: RequestKind::Push,
                code: error,
                retry_after_ms: hint
            }]
        );
        assert!(!s.is_busy() && !s.is_finished());
    }
}

/// `user@pair` with both names at their longest (PROTOCOL.md §12.1).
fn longest_remote_sender() -> String {
    let user = "u".repeat(crate::notice::MAX_ACCOUNT_NAME_LEN);
    let pair = "p".repeat(crate::notice::MAX_PAIR_NAME_LEN);
    std::format!("{user}@{pair}")
}

#[test]
fn the_longest_user_at_pair_is_allowed_or_refused_as_too_large_for_small_frames() {
    let remote = longest_remote_sender();
    let mut s = sender();
    link_up(&mut s, T0);
    s.allow_sender(&remote, true).unwrap();
    assert_eq!(drain(&mut s, T0), [Out::Allow(remote.clone(), true)]);

    // 73 bytes in a frame: more than a relay of 64-byte frames takes. The
    // request ends at once instead of waiting for an answer that cannot
    // come.
    let mut s = sender();
    link_up_with_frames(&mut s, T0, 64);
    events(&mut s);
    s.allow_sender(&remote, true).unwrap();
    assert_eq!(drain(&mut s, T0), []);
    assert_eq!(
        events(&mut s),
        [SendEvent::Refused {
            request: RequestKind::AllowSender,
            code: ErrorCode::TooLarge,
            retry_after_ms: 0
        }]
    );
    assert!(!s.is_busy() && !s.is_finished());
    // Nothing of it goes out later either; a shorter name does.
    let later = T0 + RTO + RTO;
    s.handle_timeout(later);
    assert!(!drain(&mut s, later)
        .iter()
        .any(|o| matches!(o, Out::Allow(..))));
    s.allow_sender("ada@site-b", true).unwrap();
    assert_eq!(
        drain(&mut s, later),
        [Out::Allow("ada@site-b".into(), true)]
    );
}

#[test]
fn waits_hold_the_request_and_auth_failures_are_fatal() {
    let mut s = sender();
    link_up(&mut s, T0);
    s.push(1, code(1), "t").unwrap();
    drain(&mut s, T0);
    s.handle_message(T0, refusal(ErrorCode::Busy, Kind::Push, 9_000));
    assert!(events(&mut s).contains(&SendEvent::Waiting {
        reason: ErrorCode::Busy,
        retry_in_ms: 9_000
    }));
    let t = T0 + Duration::from_millis(5_000);
    s.handle_timeout(t);
    assert!(!drain(&mut s, t).iter().any(|o| matches!(o, Out::Push(..))));
    let t = T0 + Duration::from_millis(9_000);
    s.handle_timeout(t);
    assert!(drain(&mut s, t).contains(&Out::Push(1, code(1), "t".into())));

    let mut s = sender();
    s.handle_connected(T0);
    drain(&mut s, T0);
    s.handle_message(
        T0,
        Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 4096,
            window: 0,
            caps: 0,
        }),
    );
    drain(&mut s, T0);
    s.handle_message(T0, refusal(ErrorCode::AuthFailed, Kind::Authenticate, 0));
    assert_eq!(s.error(), Some(SendError::Auth(AuthError::Refused)));
    assert_eq!(s.push(1, code(1), "t"), Err(RequestError::Failed));
}

#[test]
fn keepalives_while_idle_and_no_deadline_left_behind() {
    let mut s = sender();
    link_up(&mut s, T0);
    let mut now = T0;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..500u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        now = now + Duration::from_millis(x % 4_000);
        match x % 7 {
            0 if !s.is_busy() => {
                let _ = s.push(i, code(1), "t");
            }
            1 => s.handle_message(now, Message::Keepalive),
            2 => s.handle_message(
                now,
                delivery(i.saturating_sub(1), code(1), DeliveryState::Queued),
            ),
            3 if s.is_idle() => link_up(&mut s, now),
            _ => {}
        }
        drain(&mut s, now);
        events(&mut s);
        if s.poll_timeout().is_some_and(|t| now >= t) {
            s.handle_timeout(now);
            if let Some(t) = s.poll_timeout() {
                assert!(t > now);
            }
        }
    }
}

#[test]
fn a_relay_without_notices_refuses_the_request_and_cancel_frees_the_sender() {
    let mut s = sender();
    link_up(&mut s, T0);
    s.status(code(4)).unwrap();
    drain(&mut s, T0);
    events(&mut s);
    // Transient trouble at the relay: asked again on the timer.
    s.handle_message(T0, refusal(ErrorCode::Internal, Kind::DeliveryStatus, 0));
    assert!(s.is_busy() && events(&mut s).is_empty());
    let t = T0 + RTO;
    s.handle_timeout(t);
    assert_eq!(drain(&mut s, t), [Out::Status(code(4))]);
    s.handle_message(t, refusal(ErrorCode::UnknownKind, Kind::DeliveryStatus, 0));
    assert_eq!(
        events(&mut s),
        [SendEvent::Refused {
            request: RequestKind::Status,
            code: ErrorCode::UnknownKind,
            retry_after_ms: 0
        }]
    );
    s.allow_sender("carol", false).unwrap();
    s.cancel();
    assert!(!s.is_busy());
    assert!(
        drain(&mut s, t).is_empty(),
        "a cancelled request is not sent"
    );
    // Its answer, should it come, is not news.
    s.handle_message(
        t,
        Message::Done(Done {
            kind: Kind::AllowSender as u8,
        }),
    );
    assert!(events(&mut s).is_empty());
}
