//! The listener against a relay played by hand (PROTOCOL.md §11): lost
//! inboxes and notices, duplicates, settled ids answered again, the
//! policy, relay restarts and the timers.

use std::string::String;
use std::vec::Vec;

use super::*;
use crate::auth::tests::{
    authenticated, challenge, expected_answer, refusal, sent, Sent, KEY, NAME,
};
use crate::code::Code;
use crate::error::ErrorCode;
use crate::frame::Decoder;
use crate::identity::AuthError;
use crate::message::{Inbox, Kind, Message, Notice, Settled, Welcome};
use crate::notice::config::{AcceptFrom, Policy};
use crate::notice::{MAX_ACCOUNT_NAME_LEN, MAX_PAIR_NAME_LEN};

const T0: Instant = Instant::from_millis(1_000);
const RTO: Duration = Duration::from_millis(2_000);

/// What a listener sent, owned.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Hello { caps: u32 },
    Auth(Sent),
    Listen,
    Ack(u64),
    Receipt(u64),
    Refuse(u64, RefuseReason),
    Other(Kind),
}

fn decode(frame: &[u8]) -> Out {
    let mut dec = Decoder::new([0u8; 600]);
    let mut input = frame;
    let f = dec.feed(&mut input).unwrap().unwrap();
    match Message::decode(f).unwrap() {
        Message::Hello(h) => Out::Hello { caps: h.caps },
        Message::Listen => Out::Listen,
        Message::NoticeAck(a) => Out::Ack(a.id),
        Message::Receipt(r) => Out::Receipt(r.id),
        Message::NoticeRefuse(r) => Out::Refuse(r.id, r.reason),
        Message::TerminalAuth(_) | Message::ChallengeAnswer(_) => Out::Auth(sent(frame)),
        m => Out::Other(m.kind()),
    }
}

fn identity() -> TerminalIdentity<'static> {
    TerminalIdentity {
        name: NAME,
        key: KEY,
    }
}

fn listener() -> Listener<'static, 8> {
    Listener::new(ListenConfig::default(), identity())
}

fn drain(l: &mut Listener<'_, 8>, now: Instant) -> Vec<Out> {
    let mut out = Vec::new();
    let mut buf = [0u8; 600];
    while let Some(n) = l.poll_transmit(now, &mut buf) {
        out.push(decode(&buf[..n]));
    }
    out
}

fn events(l: &mut Listener<'_, 8>) -> Vec<ListenEvent> {
    core::iter::from_fn(|| l.poll_event()).collect()
}

fn welcome() -> Message<'static> {
    Message::Welcome(Welcome {
        version: 1,
        role: Role::Relay,
        max_frame: 4096,
        window: 0,
        caps: crate::message::CAP_PUSH_NOTICE,
    })
}

fn code(n: u128) -> Code {
    Code::from_parts(Code::DEFAULT_LEN, n).unwrap()
}

fn notice(id: u64, sender: &str, total_size: u64) -> Message<'_> {
    Message::Notice(Notice {
        id,
        code: code(u128::from(id)),
        sender,
        files: 2,
        total_size,
        expires_at: 1_900_000_000,
    })
}

fn inbox(count: u16) -> Message<'static> {
    Message::Inbox(Inbox { count })
}

fn settled(id: u64) -> Message<'static> {
    Message::Settled(Settled { id })
}

fn shown(evs: &[ListenEvent]) -> Vec<u64> {
    evs.iter()
        .filter_map(|e| match e {
            ListenEvent::Notice(n) => Some(n.id),
            _ => None,
        })
        .collect()
}

use crate::identity::TerminalIdentity;
use crate::message::Role;

/// Connects, authenticates as the terminal and checks `Listen` goes out.
fn link_up(l: &mut Listener<'_, 8>, now: Instant) {
    l.handle_connected(now);
    assert_eq!(
        drain(l, now),
        [Out::Hello {
            caps: crate::message::CAP_PUSH_NOTICE
        }]
    );
    l.handle_message(now, welcome());
    assert_eq!(drain(l, now), [Out::Auth(Sent::TerminalAuth(NAME.into()))]);
    l.handle_message(now, challenge(5));
    assert_eq!(drain(l, now), [Out::Auth(expected_answer(5))]);
    l.handle_message(now, authenticated());
    let evs = events(l);
    assert!(evs.contains(&ListenEvent::Connected));
    assert!(evs.contains(&ListenEvent::Authenticated));
    let out = drain(l, now);
    assert!(out.contains(&Out::Listen), "{out:?}");
}

#[test]
fn notices_reach_the_application_once_and_verdicts_go_out_until_settled() {
    let mut l = listener();
    link_up(&mut l, T0);
    l.handle_message(T0, inbox(2));
    l.handle_message(T0, notice(1, "alice", 100));
    l.handle_message(T0, notice(2, "bob", 200));
    let evs = events(&mut l);
    assert_eq!(evs[0], ListenEvent::Inbox { waiting: 2 });
    let ListenEvent::Notice(n) = &evs[1] else {
        panic!("{evs:?}")
    };
    assert_eq!((n.id, n.sender.as_str(), n.files), (1, "alice", 2));
    assert_eq!((n.code, n.total_size), (code(1), 100));
    assert_eq!(shown(&evs), [1, 2]);
    assert!(l.is_listening());
    assert_eq!(drain(&mut l, T0), [Out::Ack(1), Out::Ack(2)]);
    // The same notice again (a live push crossing the inbox): not shown.
    l.handle_message(T0, notice(1, "alice", 100));
    assert!(shown(&events(&mut l)).is_empty());
    assert_eq!(drain(&mut l, T0), [Out::Ack(1)], "acknowledged again");

    l.confirm(1).unwrap();
    l.refuse(2, RefuseReason::Declined).unwrap();
    assert_eq!(l.unsettled(), 2);
    // One verdict in flight: an UnknownNotice could name no other.
    assert_eq!(drain(&mut l, T0), [Out::Receipt(1)]);
    l.handle_message(T0, settled(1));
    assert_eq!(events(&mut l), [ListenEvent::Settled { id: 1 }]);
    assert_eq!(drain(&mut l, T0), [Out::Refuse(2, RefuseReason::Declined)]);
    l.handle_message(T0, settled(2));
    assert_eq!(events(&mut l), [ListenEvent::Settled { id: 2 }]);
    assert!(l.is_settled(1) && l.is_settled(2));
    assert_eq!(l.unsettled(), 0);
    assert_eq!(l.verdict(2), Some(Verdict::Refused(RefuseReason::Declined)));
    assert_eq!(
        l.confirm(2),
        Err(VerdictError::Decided(Verdict::Refused(
            RefuseReason::Declined
        )))
    );
    assert_eq!(
        l.refuse(2, RefuseReason::Declined),
        Ok(()),
        "the same again"
    );
    // A settled notice sent again is answered with its verdict, not shown.
    l.handle_message(T0, notice(1, "alice", 100));
    assert!(events(&mut l).is_empty());
    assert_eq!(drain(&mut l, T0), [Out::Receipt(1)]);
    l.handle_message(T0, settled(1));
    assert!(events(&mut l).is_empty(), "settled before: no news");
    assert!(drain(&mut l, T0).is_empty());
}

#[test]
fn a_lost_inbox_or_lost_notices_make_it_listen_again() {
    let mut l = listener();
    link_up(&mut l, T0);
    // No Inbox within the retransmit timeout.
    let t = T0 + RTO;
    assert_eq!(l.poll_timeout(), Some(t));
    l.handle_timeout(t);
    assert_eq!(drain(&mut l, t), [Out::Listen]);
    // An Inbox of three, of which one notice arrives.
    l.handle_message(t, inbox(3));
    l.handle_message(t, notice(10, "alice", 1));
    assert_eq!(drain(&mut l, t), [Out::Ack(10)]);
    let t2 = t + RTO;
    assert_eq!(l.poll_timeout(), Some(t2));
    l.handle_timeout(t2);
    assert_eq!(drain(&mut l, t2), [Out::Listen]);
    l.handle_message(t2, inbox(3));
    for id in [10, 11, 12] {
        l.handle_message(t2, notice(id, "alice", 1));
    }
    let evs = events(&mut l);
    assert_eq!(shown(&evs), [10, 11, 12]);
    assert_eq!(
        drain(&mut l, t2),
        [Out::Ack(10), Out::Ack(11), Out::Ack(12)]
    );
    // All came: the next Listen is the idle one.
    let next = t2 + ListenConfig::default().relisten_interval;
    assert_eq!(l.poll_timeout(), Some(next));
    l.handle_timeout(next);
    assert_eq!(drain(&mut l, next), [Out::Listen]);
}

#[test]
fn notices_outside_the_policy_are_refused_without_the_application() {
    let senders = ["alice"];
    let config = ListenConfig {
        policy: Policy {
            max_size: 1_000,
            accept_from: AcceptFrom::Only(&senders),
        },
        ..ListenConfig::default()
    };
    let mut l = Listener::<8>::new(config, identity());
    link_up(&mut l, T0);
    let long = too_long_sender();
    l.handle_message(T0, inbox(4));
    l.handle_message(T0, notice(1, "mallory", 10));
    l.handle_message(T0, notice(2, "alice", 1_001));
    l.handle_message(T0, notice(3, &long, 10));
    l.handle_message(T0, notice(4, "alice", 1_000));
    let evs = events(&mut l);
    assert_eq!(shown(&evs), [4]);
    assert!(evs.contains(&ListenEvent::AutoRefused {
        id: 1,
        reason: RefuseReason::Sender
    }));
    assert!(evs.contains(&ListenEvent::AutoRefused {
        id: 2,
        reason: RefuseReason::TooLarge
    }));
    assert!(evs.contains(&ListenEvent::AutoRefused {
        id: 3,
        reason: RefuseReason::Sender
    }));
    let out = drain(&mut l, T0);
    assert_eq!(out, [Out::Refuse(1, RefuseReason::Sender), Out::Ack(4)]);
    l.handle_message(T0, settled(1));
    assert_eq!(drain(&mut l, T0), [Out::Refuse(2, RefuseReason::TooLarge)]);
    l.handle_message(T0, settled(2));
    assert_eq!(drain(&mut l, T0), [Out::Refuse(3, RefuseReason::Sender)]);
    let evs = events(&mut l);
    assert!(evs.contains(&ListenEvent::Settled { id: 1 }));
    assert!(evs.contains(&ListenEvent::Settled { id: 2 }));
    // A refused notice sent again is refused again, never shown.
    l.handle_message(T0, settled(3));
    l.handle_message(T0, notice(2, "alice", 1_001));
    assert!(shown(&events(&mut l)).is_empty());
    assert_eq!(drain(&mut l, T0), [Out::Refuse(2, RefuseReason::TooLarge)]);
}

/// The longest sender a relay names: `user@pair` with both names at
/// their longest (PROTOCOL.md §12.1), 65 bytes.
fn longest_remote_sender() -> String {
    let user = "u".repeat(MAX_ACCOUNT_NAME_LEN);
    let pair = "p".repeat(MAX_PAIR_NAME_LEN);
    format!("{user}@{pair}")
}

/// One byte longer than any sender a relay names.
fn too_long_sender() -> String {
    longest_remote_sender() + "x"
}

#[test]
fn a_notice_from_the_longest_remote_sender_reaches_the_application_whole() {
    let remote = longest_remote_sender();
    assert_eq!(remote.len(), 65);
    // The policy names it as the notice does.
    let senders = [remote.as_str()];
    let config = ListenConfig {
        policy: Policy {
            max_size: u64::MAX,
            accept_from: AcceptFrom::Only(&senders),
        },
        ..ListenConfig::default()
    };
    let mut l = Listener::<8>::new(config, identity());
    link_up(&mut l, T0);
    l.handle_message(T0, inbox(1));
    l.handle_message(T0, notice(1, &remote, 10));
    let evs = events(&mut l);
    let Some(ListenEvent::Notice(n)) = evs.get(1) else {
        panic!("{evs:?}")
    };
    assert_eq!((n.id, n.sender.as_str()), (1, remote.as_str()));
    assert_eq!(drain(&mut l, T0), [Out::Ack(1)]);
    l.confirm(1).unwrap();
    assert_eq!(drain(&mut l, T0), [Out::Receipt(1)]);

    // Such a notice fits the 128-byte frames a device listens with
    // (pickup-device's `NoticeListener`), every field at its widest.
    let widest = Message::Notice(Notice {
        id: u64::MAX,
        code: Code::from_parts(Code::MAX_LEN, (1 << 120) - 1).unwrap(),
        sender: &remote,
        files: u16::MAX,
        total_size: u64::MAX,
        expires_at: u64::MAX,
    });
    let mut buf = [0u8; 200];
    assert!(widest.encode(128, &mut buf).is_ok());
}

#[test]
fn a_sender_longer_than_any_user_at_pair_is_refused_without_the_application() {
    let long = too_long_sender();
    let mut l = listener();
    link_up(&mut l, T0);
    l.handle_message(T0, inbox(1));
    l.handle_message(T0, notice(1, &long, 10));
    let evs = events(&mut l);
    assert!(shown(&evs).is_empty(), "{evs:?}");
    assert!(evs.contains(&ListenEvent::AutoRefused {
        id: 1,
        reason: RefuseReason::Sender
    }));
    assert_eq!(drain(&mut l, T0), [Out::Refuse(1, RefuseReason::Sender)]);
    l.handle_message(T0, settled(1));
    assert_eq!(events(&mut l), [ListenEvent::Settled { id: 1 }]);
    assert_eq!(l.verdict(1), Some(Verdict::Refused(RefuseReason::Sender)));
}

#[test]
fn a_relay_restart_resends_verdicts_after_auth_and_shows_nothing_twice() {
    let mut l = listener();
    link_up(&mut l, T0);
    l.handle_message(T0, inbox(2));
    l.handle_message(T0, notice(1, "alice", 1));
    l.handle_message(T0, notice(2, "alice", 1));
    assert_eq!(shown(&events(&mut l)), [1, 2]);
    drain(&mut l, T0);
    l.confirm(1).unwrap();
    // The relay restarts before the Receipt arrives: the link breaks.
    l.handle_disconnected(T0);
    assert!(l.is_idle() && l.poll_timeout().is_none());
    assert!(drain(&mut l, T0).is_empty(), "nothing without a link");
    let t = T0 + Duration::from_secs(3);
    link_up(&mut l, t);
    // Right after `Listen`: the unsettled verdict (as this link's first
    // verdict).
    l.handle_message(t, inbox(2));
    l.handle_message(t, notice(1, "alice", 1));
    l.handle_message(t, notice(2, "alice", 1));
    assert!(shown(&events(&mut l)).is_empty(), "no id shown twice");
    let out = drain(&mut l, t);
    assert!(out.contains(&Out::Ack(2)), "{out:?}");
    assert!(!out.contains(&Out::Ack(1)), "decided: no ack needed");
    l.handle_message(t, settled(1));
    assert_eq!(events(&mut l), [ListenEvent::Settled { id: 1 }]);
}

#[test]
fn an_unsettled_verdict_goes_out_right_after_authenticating_before_listen() {
    let mut l = listener();
    l.confirm(99).unwrap();
    l.handle_connected(T0);
    l.handle_message(T0, welcome());
    l.handle_message(T0, challenge(1));
    l.handle_message(T0, authenticated());
    let out: Vec<Out> = drain(&mut l, T0)
        .into_iter()
        .filter(|o| !matches!(o, Out::Hello { .. } | Out::Auth(_)))
        .collect();
    // The verdict first: its Settled comes before the inbox.
    assert_eq!(out, [Out::Receipt(99), Out::Listen]);
}

#[test]
fn verdicts_repeat_on_the_retransmit_timer_until_settled() {
    let mut l = listener();
    link_up(&mut l, T0);
    l.handle_message(T0, inbox(0));
    l.confirm(5).unwrap();
    assert_eq!(drain(&mut l, T0), [Out::Receipt(5)]);
    let mut t = T0;
    for _ in 0..3 {
        t = t + RTO;
        assert_eq!(l.poll_timeout(), Some(t));
        l.handle_timeout(t);
        assert_eq!(drain(&mut l, t), [Out::Receipt(5)]);
        l.handle_message(t, Message::Keepalive);
    }
    l.handle_message(t, settled(5));
    assert!(drain(&mut l, t).is_empty());
    let relisten = T0 + ListenConfig::default().relisten_interval;
    assert_eq!(
        l.poll_timeout(),
        Some(relisten),
        "only the idle Listen left"
    );
}

#[test]
fn an_unknown_notice_drops_the_verdict_in_flight_until_the_relay_shows_it() {
    let mut l = listener();
    link_up(&mut l, T0);
    l.handle_message(T0, inbox(0));
    events(&mut l);
    l.confirm(7).unwrap();
    l.confirm(8).unwrap();
    assert_eq!(drain(&mut l, T0), [Out::Receipt(7)]);
    l.handle_message(T0, refusal(ErrorCode::UnknownNotice, Kind::Receipt, 0));
    assert_eq!(events(&mut l), [ListenEvent::UnknownNotice { id: 7 }]);
    assert_eq!(drain(&mut l, T0), [Out::Receipt(8)], "the next one");
    l.handle_message(T0, settled(8));
    events(&mut l);
    assert!(drain(&mut l, T0).is_empty(), "7 is held back");
    // The relay sends notice 7 after all: it knows the id.
    l.handle_message(T0, notice(7, "alice", 1));
    assert!(shown(&events(&mut l)).is_empty());
    assert_eq!(drain(&mut l, T0), [Out::Receipt(7)]);
    l.handle_message(T0, settled(7));
    assert_eq!(events(&mut l), [ListenEvent::Settled { id: 7 }]);
}

/// An `Error` names no id: a late answer to a repeated guess is taken
/// for the verdict sent after it, and a `Settled` for that verdict may be
/// lost on the link. Given again by the application, the held verdict goes
/// out again and settles (simulator seed 150355328990986).
#[test]
fn a_verdict_held_by_an_unknown_notice_goes_out_again_when_given_again() {
    let mut l = listener();
    link_up(&mut l, T0);
    l.handle_message(T0, inbox(0));
    events(&mut l);
    l.confirm(2).unwrap();
    assert_eq!(drain(&mut l, T0), [Out::Receipt(2)]);
    // A stale UnknownNotice (answering an earlier guess) lands on it.
    l.handle_message(T0, refusal(ErrorCode::UnknownNotice, Kind::Receipt, 0));
    assert_eq!(events(&mut l), [ListenEvent::UnknownNotice { id: 2 }]);
    assert!(drain(&mut l, T0).is_empty(), "held back");
    // Its Settled was lost; the application confirms again.
    l.confirm(2).unwrap();
    assert_eq!(drain(&mut l, T0), [Out::Receipt(2)]);
    l.handle_message(T0, settled(2));
    assert_eq!(events(&mut l), [ListenEvent::Settled { id: 2 }]);
    assert_eq!(l.confirm(2), Ok(()), "settled: nothing more to send");
    assert!(drain(&mut l, T0).is_empty());
}

#[test]
fn refusals_of_the_session_are_fatal_and_waits_are_waited() {
    // A wrong key.
    let mut l = listener();
    l.handle_connected(T0);
    l.handle_message(T0, welcome());
    l.handle_message(T0, challenge(1));
    drain(&mut l, T0);
    l.handle_message(T0, refusal(ErrorCode::AuthFailed, Kind::ChallengeAnswer, 0));
    assert_eq!(l.error(), Some(ListenError::Auth(AuthError::Refused)));
    assert!(l.is_finished() && l.poll_timeout().is_none());
    l.handle_connected(T0);
    assert!(drain(&mut l, T0).is_empty(), "failed stays failed");

    // A relay without notices, and one that wants authentication.
    for code in [ErrorCode::UnknownKind, ErrorCode::AuthRequired] {
        let mut l = listener();
        link_up(&mut l, T0);
        l.handle_message(T0, refusal(code, Kind::Listen, 0));
        assert_eq!(l.error(), Some(ListenError::Relay(code)));
        assert!(events(&mut l).contains(&ListenEvent::Failed(ListenError::Relay(code))));
    }

    // Rate limited: nothing before the relay's wait.
    let mut l = listener();
    link_up(&mut l, T0);
    l.handle_message(T0, refusal(ErrorCode::RateLimited, Kind::Listen, 10_000));
    assert_eq!(
        events(&mut l),
        [ListenEvent::Waiting {
            reason: ErrorCode::RateLimited,
            retry_in_ms: 10_000
        }]
    );
    let until = T0 + Duration::from_secs(10);
    assert_eq!(l.poll_timeout(), Some(until));
    l.handle_timeout(until);
    assert_eq!(drain(&mut l, until), [Out::Listen]);
    // Noise (an undecodable frame at the relay) changes nothing.
    l.handle_message(until, refusal(ErrorCode::BadFrame, Kind::Hello, 0));
    assert!(!l.is_finished());
}

#[test]
fn silence_loses_the_link_and_goodbye_too() {
    let mut l = listener();
    link_up(&mut l, T0);
    l.handle_message(T0, inbox(0));
    let idle = T0 + ListenConfig::default().idle_timeout;
    let mut t = T0;
    // Relisten every interval, unanswered, until the idle timeout.
    while let Some(next) = l.poll_timeout() {
        assert!(next > t, "a deadline ahead of the last one");
        t = next;
        l.handle_timeout(t);
        drain(&mut l, t);
    }
    assert_eq!(t, idle);
    assert!(l.is_idle());
    assert!(events(&mut l).contains(&ListenEvent::LinkLost));

    link_up(&mut l, t);
    l.handle_message(t, Message::Goodbye);
    assert!(l.is_idle());
}

#[test]
fn a_full_ledger_leaves_new_notices_to_the_relay() {
    let mut l = Listener::<2>::new(ListenConfig::default(), identity());
    l.handle_connected(T0);
    l.handle_message(T0, welcome());
    l.handle_message(T0, authenticated());
    l.handle_message(T0, inbox(3));
    for id in 1..=3 {
        l.handle_message(T0, notice(id, "alice", 1));
    }
    let evs: Vec<ListenEvent> = core::iter::from_fn(|| l.poll_event()).collect();
    let ids: Vec<u64> = evs
        .iter()
        .filter_map(|e| match e {
            ListenEvent::Notice(n) => Some(n.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [1, 2], "3 stays queued at the relay");
    // Once 1 is settled, its slot takes 3 when the relay sends it again.
    l.confirm(1).unwrap();
    l.handle_message(T0, settled(1));
    l.handle_message(T0, notice(3, "alice", 1));
    assert!(matches!(
        l.poll_event(),
        Some(ListenEvent::Settled { id: 1 })
    ));
    assert!(matches!(l.poll_event(), Some(ListenEvent::Notice(n)) if n.id == 3));
    assert_eq!(l.refuse(4, RefuseReason::NoSpace), Err(VerdictError::Full));
}

#[test]
fn notice_events_are_never_dropped_for_room() {
    let mut l = listener();
    link_up(&mut l, T0);
    l.handle_message(T0, inbox(0));
    // The driver does not poll: the queue fills with notices, and the
    // inbox's event makes room for them.
    for id in 1..=(EVENTS as u64 + 3) {
        l.handle_message(T0, notice(id, "alice", 1));
    }
    let ids = shown(&events(&mut l));
    assert_eq!(ids, (1..=EVENTS as u64).collect::<Vec<_>>());
    // Those left out were not recorded: they are shown when sent again.
    l.handle_message(T0, notice(EVENTS as u64 + 1, "alice", 1));
    assert_eq!(shown(&events(&mut l)), [EVENTS as u64 + 1]);
}

/// Random messages and times in any order: nothing panics, the state
/// stays bounded, and no deadline is left in the past.
#[test]
fn random_input_never_panics_nor_leaves_a_deadline_behind() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let long = too_long_sender();
    let remote = longest_remote_sender();
    for _ in 0..200 {
        let mut l = Listener::<4>::new(ListenConfig::default(), identity());
        let mut now = T0;
        let mut buf = [0u8; 600];
        for _ in 0..200 {
            now = now + Duration::from_millis(rand() % 3_000);
            let id = rand() % 6;
            let msg = match rand() % 14 {
                0 => welcome(),
                1 => challenge(3),
                2 => authenticated(),
                3 => inbox((rand() % 4) as u16),
                4 | 5 => notice(id, "alice", rand() % 2_000),
                6 => notice(id, &long, 1),
                11 => notice(id, &remote, 1),
                7 => settled(id),
                8 => refusal(ErrorCode::UnknownNotice, Kind::Receipt, 0),
                9 => refusal(
                    ErrorCode::RateLimited,
                    Kind::Listen,
                    (rand() % 5_000) as u32,
                ),
                10 => Message::Goodbye,
                _ => Message::Keepalive,
            };
            match rand() % 10 {
                0 => l.handle_connected(now),
                1 => l.handle_disconnected(now),
                2 => {
                    let _ = l.confirm(id);
                }
                3 => {
                    let _ = l.refuse(id, RefuseReason::NoSpace);
                }
                4 => {
                    let _ = l.remember_settled(id, Verdict::Confirmed);
                }
                _ => l.handle_message(now, msg),
            }
            while l.poll_transmit(now, &mut buf).is_some() {}
            while l.poll_event().is_some() {}
            if l.poll_timeout().is_some_and(|t| now >= t) {
                l.handle_timeout(now);
                while l.poll_transmit(now, &mut buf).is_some() {}
                if let Some(t) = l.poll_timeout() {
                    assert!(t > now, "deadline {t:?} not after {now:?}");
                }
            }
        }
    }
    // Garbage frames are ignored, whatever their kind.
    let mut l = listener();
    link_up(&mut l, T0);
    let mut body = [0u8; 48];
    for _ in 0..20_000 {
        let kind = 0x30 + (rand() % 16) as u8;
        let len = (rand() % body.len() as u64) as usize;
        for b in body.iter_mut().take(len) {
            *b = rand() as u8;
        }
        let frame = crate::frame::Frame {
            version: 1,
            kind,
            body: &body[..len],
        };
        l.handle_frame(T0, frame);
        let mut buf = [0u8; 600];
        while l.poll_transmit(T0, &mut buf).is_some() {}
        while l.poll_event().is_some() {}
    }
    let mut l = listener();
    link_up(&mut l, T0);
    let frame = crate::frame::Frame {
        version: 1,
        kind: Kind::Notice as u8,
        body: &[0xff, 0xff, 0xff],
    };
    l.handle_frame(T0, frame);
    assert!(events(&mut l).is_empty());
}
