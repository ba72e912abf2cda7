//! The notice drivers (feature `notices`) against the in-memory relay:
//! push after an upload, listen, download as the terminal, confirm;
//! losses, a reboot that forgot the ledger, deadlines and refusals.

use std::vec::Vec;

use pickup_proto::identity::{DeviceKey, TerminalIdentity};
use pickup_proto::message::{AuthToken, DeliveryState, RefuseReason};
use pickup_proto::notice::{
    ListenConfig, ListenEvent, SendConfig, SendEvent, Verdict, MAX_ACCOUNT_NAME_LEN,
    MAX_PAIR_NAME_LEN, MAX_SENDER_NAME_LEN,
};
use pickup_proto::{download, Code, Duration, ErrorCode, Instant};

use super::relay::{MemConnector, TestClock};
use super::{quick_policy, setup, Batch, RX, TX};
use crate::clock::Clock;
use crate::notice::RequestFailure;
use crate::{Downloader, Event, NoticeListener, NoticeSender};
use pickup_tests::mem_files::MemFiles;

const KEY: DeviceKey = DeviceKey([0x5a; 16]);
const TOKEN: AuthToken = AuthToken([0x33; 16]);
const TERMINAL: &str = "sensor-1";

fn me() -> TerminalIdentity<'static> {
    TerminalIdentity {
        name: TERMINAL,
        key: KEY,
    }
}

type Listener = NoticeListener<'static, 4, RX, TX>;
type Pusher = NoticeSender<'static, RX, TX>;

fn listener() -> Listener {
    NoticeListener::new(ListenConfig::default(), me(), quick_policy())
}

fn pusher() -> Pusher {
    NoticeSender::new(
        SendConfig::default(),
        pickup_proto::identity::Credential::Token(TOKEN),
        quick_policy(),
    )
}

/// A relay with accounts, and one uploaded batch: its code.
fn relay_with_batch() -> (
    std::rc::Rc<std::cell::RefCell<super::relay::Relay>>,
    MemConnector,
    TestClock,
    Batch,
    Code,
) {
    let (relay, mut connector, clock) = setup(128);
    {
        let mut r = relay.borrow_mut();
        r.terminal_key = Some(KEY);
        r.user_token = Some(TOKEN);
        r.desk.terminals.push(TERMINAL.into());
    }
    // Uploads need a terminal's authentication on this relay.
    let batch = Batch::new();
    let metas = batch.metas();
    let mut up: crate::Uploader<'_, 4, RX, TX> = crate::Uploader::new(
        pickup_proto::upload::Config::default(),
        &metas,
        quick_policy(),
    )
    .unwrap();
    up.authenticate(pickup_proto::identity::Credential::Terminal(me()));
    let mut source = batch.data.as_slice();
    let code = up.run(&mut connector, &clock, &mut source, |_| {}).unwrap();
    (relay, connector, clock, batch, code)
}

fn later(clock: &TestClock, ms: u64) -> Option<Instant> {
    Some(clock.now() + Duration::from_millis(ms))
}

#[test]
fn a_pushed_batch_is_listened_for_downloaded_as_the_terminal_and_confirmed() {
    let (relay, mut connector, clock, batch, code) = relay_with_batch();
    let mut push = pusher();
    let d = push
        .push(&mut connector, &clock, 0xfeed, code, TERMINAL, None, |_| {})
        .unwrap();
    assert_eq!(
        (d.push_id, d.code, d.state),
        (0xfeed, code, DeliveryState::Queued)
    );
    assert_eq!(d.terminal.as_str(), TERMINAL);
    // A retry of the same push creates no second delivery.
    push.push(&mut connector, &clock, 0xfeed, code, TERMINAL, None, |_| {})
        .unwrap();
    assert_eq!(relay.borrow().desk.deliveries.len(), 1);

    let mut inbox = listener();
    let mut events = Vec::new();
    let notice = inbox
        .listen(&mut connector, &clock, None, |e| events.push(e))
        .unwrap()
        .expect("a notice");
    assert_eq!((notice.code, notice.files), (code, 3));
    assert_eq!(notice.sender.as_str(), "owner");
    assert!(events.contains(&Event::Session(ListenEvent::Authenticated)));
    assert_eq!(
        relay.borrow().desk.deliveries[0].state,
        DeliveryState::Notified,
        "acknowledged before listen returned"
    );

    let mut down: Downloader<'_, 4, RX, TX> =
        Downloader::new(download::Config::default(), notice.code, quick_policy());
    down.authenticate(inbox.credential());
    let mut sink = MemFiles::default();
    down.run(&mut connector, &clock, &mut sink, |_| {}).unwrap();
    assert_eq!(sink.files, batch.data);

    inbox.confirm(notice.id).unwrap();
    let mut settled = Vec::new();
    let all = inbox
        .settle(&mut connector, &clock, None, |e| {
            if let Event::Session(ListenEvent::Settled { id }) = e {
                settled.push(id);
            }
        })
        .unwrap();
    assert!(all);
    assert_eq!(settled, [notice.id]);
    assert_eq!(
        relay.borrow().desk.deliveries[0].state,
        DeliveryState::Delivered
    );

    // The sender sees it delivered.
    let mut lines = Vec::new();
    push.status(&mut connector, &clock, code, None, |e| {
        if let Event::Session(SendEvent::Delivery(d)) = e {
            lines.push(d.state);
        }
    })
    .unwrap();
    assert_eq!(lines, [DeliveryState::Delivered]);

    // Nothing more for the terminal: listen runs to its deadline.
    let deadline = later(&clock, 3_000);
    assert_eq!(
        inbox.listen(&mut connector, &clock, deadline, |_| {}),
        Ok(None)
    );
    assert!(clock.now() >= deadline.unwrap());
}

#[test]
fn lost_notices_and_a_cut_link_still_bring_each_notice_once() {
    let (relay, mut connector, clock, _, code) = relay_with_batch();
    let mut push = pusher();
    for id in [1, 2] {
        push.push(&mut connector, &clock, id, code, TERMINAL, None, |_| {})
            .unwrap();
    }
    relay.borrow_mut().desk.drop_notices = 1;
    let mut inbox = listener();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let n = inbox
            .listen(&mut connector, &clock, None, |_| {})
            .unwrap()
            .unwrap();
        seen.push(n.id);
    }
    seen.sort();
    assert_eq!(seen, [100, 101]);
    // Both are open at the relay and sent after every Listen: never
    // returned again.
    relay.borrow_mut().cut_every = Some(400);
    let deadline = later(&clock, 45_000);
    assert_eq!(
        inbox.listen(&mut connector, &clock, deadline, |_| {}),
        Ok(None)
    );
    assert!(
        relay.borrow().desk.notices_sent >= 4,
        "sent again and again"
    );
    relay.borrow_mut().cut_every = None;
    inbox.refuse(100, RefuseReason::Declined).unwrap();
    inbox.confirm(101).unwrap();
    relay.borrow_mut().desk.drop_settled = 1;
    assert_eq!(inbox.settle(&mut connector, &clock, None, |_| {}), Ok(true));
    let r = relay.borrow();
    assert_eq!(r.desk.deliveries[0].state, DeliveryState::Refused);
    assert_eq!(r.desk.deliveries[1].state, DeliveryState::Delivered);
    assert!(
        r.desk.verdicts.len() >= 3,
        "the unsettled verdict was repeated"
    );
}

#[test]
fn after_a_reboot_the_remembered_verdict_is_repeated_not_shown() {
    let (relay, mut connector, clock, _, code) = relay_with_batch();
    pusher()
        .push(&mut connector, &clock, 9, code, TERMINAL, None, |_| {})
        .unwrap();
    let mut inbox = listener();
    let n = inbox
        .listen(&mut connector, &clock, None, |_| {})
        .unwrap()
        .unwrap();
    // Confirmed and persisted, but the device reboots before the
    // relay's Settled arrives.
    inbox.confirm(n.id).unwrap();
    relay.borrow_mut().desk.drop_settled = 1;
    let deadline = later(&clock, 100);
    let _ = inbox.settle(&mut connector, &clock, deadline, |_| {});
    drop(inbox);
    let mut rebooted = listener();
    rebooted.remember_settled(n.id, Verdict::Confirmed).unwrap();
    let deadline = later(&clock, 5_000);
    let mut events = Vec::new();
    assert_eq!(
        rebooted.listen(&mut connector, &clock, deadline, |e| events.push(e)),
        Ok(None)
    );
    assert_eq!(
        relay.borrow().desk.deliveries[0].state,
        DeliveryState::Delivered
    );
    assert!(relay
        .borrow()
        .desk
        .verdicts
        .iter()
        .all(|v| *v == (n.id, true)));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::Session(ListenEvent::Notice(_)))));
}

#[test]
fn refusals_come_back_per_request_and_a_wrong_key_fails_the_listener() {
    let (_relay, mut connector, clock, _, code) = relay_with_batch();
    let mut push = pusher();
    assert_eq!(
        push.push(&mut connector, &clock, 1, code, "nobody", None, |_| {}),
        Err(RequestFailure::Refused {
            code: ErrorCode::UnknownTerminal,
            retry_after_ms: 0
        })
    );
    let unknown = Code::from_parts(Code::DEFAULT_LEN, 5).unwrap();
    assert!(matches!(
        push.push(&mut connector, &clock, 2, unknown, TERMINAL, None, |_| {}),
        Err(RequestFailure::Refused {
            code: ErrorCode::UnknownCode,
            ..
        })
    ));
    push.allow_sender(&mut connector, &clock, "bob", true, None, |_| {})
        .unwrap();
    // A user of a peer relay, at the longest a relay names.
    let remote = format!("{}@{}", "u".repeat(32), "p".repeat(32));
    push.allow_sender(&mut connector, &clock, &remote, true, None, |_| {})
        .unwrap();
    assert_eq!(
        _relay.borrow().desk.allowed,
        [("bob".to_string(), true), (remote, true)]
    );

    let wrong = TerminalIdentity {
        name: TERMINAL,
        key: DeviceKey([0; 16]),
    };
    let mut inbox: Listener = NoticeListener::new(ListenConfig::default(), wrong, quick_policy());
    assert!(matches!(
        inbox.listen(&mut connector, &clock, None, |_| {}),
        Err(crate::RunError::Session(_))
    ));
}

#[test]
fn a_relay_that_never_answers_times_the_push_out_and_the_same_id_can_be_repeated() {
    let (relay, mut connector, clock, _, code) = relay_with_batch();
    relay.borrow_mut().mute_after_welcome = true;
    let mut push = pusher();
    let deadline = later(&clock, 10_000);
    assert_eq!(
        push.push(&mut connector, &clock, 5, code, TERMINAL, deadline, |_| {}),
        Err(RequestFailure::TimedOut)
    );
    assert!(clock.now() >= deadline.unwrap());
    assert!(
        !push.sender().is_busy(),
        "given up: a new request may be made"
    );
    relay.borrow_mut().mute_after_welcome = false;
    let d = push
        .push(&mut connector, &clock, 5, code, TERMINAL, None, |_| {})
        .unwrap();
    assert_eq!(d.push_id, 5);
    assert_eq!(relay.borrow().desk.deliveries.len(), 1);
}

/// Links cut at many points of the exchange, settlements lost: every
/// notice still reaches the application exactly once, and every delivery
/// ends confirmed.
#[test]
fn exactly_once_over_links_cut_anywhere() {
    for cut in [170, 260, 333, 420, 555, 700] {
        let (relay, mut connector, clock, _, code) = relay_with_batch();
        let mut push = pusher();
        for id in 0..5 {
            push.push(&mut connector, &clock, id, code, TERMINAL, None, |_| {})
                .unwrap();
        }
        {
            let mut r = relay.borrow_mut();
            r.cut_every = Some(cut);
            r.desk.drop_settled = 2;
            r.desk.drop_notices = 1;
        }
        let mut inbox = listener();
        let mut policy = quick_policy();
        policy.max_attempts = None;
        policy.give_up_after = None;
        inbox.set_policy(policy);
        let mut returned = Vec::new();
        let deadline = later(&clock, 600_000);
        while let Some(n) = inbox
            .listen(&mut connector, &clock, deadline, |_| {})
            .unwrap()
        {
            returned.push(n.id);
            inbox.confirm(n.id).unwrap();
            assert!(inbox
                .settle(&mut connector, &clock, deadline, |_| {})
                .unwrap());
            if returned.len() == 5 {
                break;
            }
        }
        returned.sort();
        assert_eq!(returned, [100, 101, 102, 103, 104], "cut every {cut}");
        let r = relay.borrow();
        assert!(
            r.desk
                .deliveries
                .iter()
                .all(|d| d.state == DeliveryState::Delivered),
            "cut every {cut}"
        );
    }
}

#[test]
fn a_notice_from_a_peer_relays_longest_user_name_reaches_the_device_whole() {
    // `user@pair` with both at their longest (PROTOCOL.md §12.1): the
    // notice fits 128-byte frames and its sender is returned whole.
    let user = "u".repeat(MAX_ACCOUNT_NAME_LEN);
    let pair = "p".repeat(MAX_PAIR_NAME_LEN);
    let sender = format!("{user}@{pair}");
    assert_eq!(sender.len(), MAX_SENDER_NAME_LEN);
    let (relay, mut connector, clock, _, code) = relay_with_batch();
    relay.borrow_mut().desk.notice_sender = Some(sender.clone());
    pusher()
        .push(&mut connector, &clock, 9, code, TERMINAL, None, |_| {})
        .unwrap();
    let mut inbox = listener();
    let notice = inbox
        .listen(&mut connector, &clock, later(&clock, 600_000), |_| {})
        .unwrap()
        .expect("a notice");
    assert_eq!(notice.sender.as_str(), sender);
    inbox.confirm(notice.id).unwrap();
    assert_eq!(inbox.settle(&mut connector, &clock, None, |_| {}), Ok(true));
    assert_eq!(
        relay.borrow().desk.deliveries[0].state,
        DeliveryState::Delivered
    );
}

#[test]
fn a_notice_the_policy_refuses_ends_listen_at_once() {
    // `pickup listen --once --max-size` waited for a second notice that
    // never came: an auto-refusal did not end `listen`.
    let (relay, mut connector, clock, _, code) = relay_with_batch();
    pusher()
        .push(&mut connector, &clock, 7, code, TERMINAL, None, |_| {})
        .unwrap();
    let config = ListenConfig {
        policy: pickup_proto::notice::Policy {
            max_size: 1,
            accept_from: pickup_proto::notice::AcceptFrom::Any,
        },
        ..ListenConfig::default()
    };
    let mut inbox: Listener = NoticeListener::new(config, me(), quick_policy());
    let deadline = later(&clock, 600_000);
    let mut refused = Vec::new();
    let got = inbox.listen(&mut connector, &clock, deadline, |e| {
        if let Event::Session(ListenEvent::AutoRefused { id, reason }) = e {
            refused.push((id, reason));
        }
    });
    assert_eq!(got, Ok(None));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        clock.now() < deadline.unwrap(),
        "listen returned on the refusal, not at its deadline"
    );
    assert_eq!(inbox.settle(&mut connector, &clock, None, |_| {}), Ok(true));
    assert_eq!(
        relay.borrow().desk.deliveries[0].state,
        DeliveryState::Refused
    );
}
