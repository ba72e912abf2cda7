//! Seeds of the `notice_session` target: the relay's side of a listener
//! (authentication, inbox, notices, settlements) and of a sender's pushes.

use super::{seed, welcome, Seed};
use crate::fuzz_proto::{self, Script};
use pickup_proto::message::{
    AuthToken, Authenticated, Challenge, Delivery, DeliveryState, Done, Error, Inbox, Kind,
    Message, Notice, Settled,
};
use pickup_proto::ErrorCode;

/// The relay's side of a listener's start: welcome, challenge, the
/// terminal authenticated.
fn listener_start(setup: u8) -> Script<4096> {
    let mut s = Script::<4096>::new(&[setup]);
    s.connect().transmit().message(&welcome(1024, 0)).transmit();
    s.message(&Message::Challenge(Challenge { nonce: [3; 16] }))
        .transmit();
    s.message(&Message::Authenticated(Authenticated {
        user: "ada",
        terminal: "sensor-1",
        token: AuthToken([0; 16]),
        expires_at: 0,
    }))
    .transmit();
    s
}

fn notice(id: u64, sender: &str, total_size: u64) -> Message<'_> {
    Message::Notice(Notice {
        id,
        code: fuzz_proto::code(),
        sender,
        files: 1,
        total_size,
        expires_at: 1_800_000_000,
    })
}

pub(super) fn notice_session_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    // An inbox of two: both handed out and acknowledged; the first
    // confirmed and settled, the second refused, its Settled lost and
    // the refusal repeated on the timer.
    let mut s = listener_start(0);
    s.message(&Message::Inbox(Inbox { count: 2 }));
    s.message(&notice(1, "ada", 6))
        .message(&notice(2, "bob", 700));
    s.events().transmit();
    s.app(0, 0).transmit();
    s.message(&Message::Settled(Settled { id: 1 })).events();
    s.app(2, 1).transmit().advance(2_500).timers();
    s.message(&Message::Settled(Settled { id: 2 })).events();
    seeds.push(seed(
        "notice_session",
        "inbox-confirm-refuse",
        s.as_bytes().to_vec(),
    ));

    // Ids 1 and 2 remembered as settled; only ada's notices of at most
    // 100 bytes taken: 1 again gets its Receipt, bob's and a large one
    // are refused by the policy, an UnknownNotice orphans a verdict.
    let mut s =
        listener_start(fuzz_proto::NOTICE_REMEMBER | (3 << fuzz_proto::NOTICE_POLICY_SHIFT));
    s.message(&Message::Inbox(Inbox { count: 3 }));
    s.message(&notice(1, "ada", 6)).transmit();
    s.message(&notice(3, "bob", 6))
        .message(&notice(4, "ada", 700));
    s.events().transmit();
    s.message(&Message::Error(Error {
        code: ErrorCode::UnknownNotice,
        kind: Kind::Receipt as u8,
        retry_after_ms: 0,
    }));
    s.events().transmit().advance(2_500).timers().events();
    seeds.push(seed(
        "notice_session",
        "remembered-and-policy",
        s.as_bytes().to_vec(),
    ));

    // A ledger of two ids: a third notice waits for a settlement; a
    // settled id forgotten comes back; the link drops and comes back.
    let mut s = listener_start(fuzz_proto::NOTICE_SMALL_LEDGER);
    s.message(&Message::Inbox(Inbox { count: 3 }));
    s.message(&notice(1, "ada", 6))
        .message(&notice(2, "ada", 6));
    s.message(&notice(3, "ada", 6)).events().transmit();
    s.app(0, 0)
        .transmit()
        .message(&Message::Settled(Settled { id: 1 }));
    s.message(&notice(3, "ada", 6)).events().transmit();
    s.disconnect()
        .connect()
        .transmit()
        .message(&welcome(1024, 0))
        .transmit();
    s.message(&Message::Challenge(Challenge { nonce: [4; 16] }))
        .transmit();
    s.advance(20_000).timers().advance(40_000).timers();
    seeds.push(seed(
        "notice_session",
        "small-ledger-relink",
        s.as_bytes().to_vec(),
    ));

    // Tiny timers: relisten and retransmit at 1 ms.
    let mut s = listener_start(fuzz_proto::NOTICE_TINY_TIMERS);
    s.message(&Message::Inbox(Inbox { count: 1 }))
        .advance(5)
        .timers();
    s.message(&notice(5, "ada", 6))
        .events()
        .app(0, 4)
        .transmit();
    s.advance(3).timers().fire_timer().transmit();
    seeds.push(seed("notice_session", "tiny-timers", s.as_bytes().to_vec()));

    // A sender with a token: push (answered), status (two deliveries and
    // Done), allow bob (Done), then a push refused as rate-limited.
    let mut s = Script::<4096>::new(&[fuzz_proto::NOTICE_SENDER]);
    s.connect().transmit().message(&welcome(1024, 0)).transmit();
    s.message(&Message::Authenticated(Authenticated {
        user: "ada",
        terminal: "",
        token: AuthToken([0; 16]),
        expires_at: 0,
    }));
    s.app_raw(1 << 5).transmit();
    let delivery = |push_id: u64, state: DeliveryState| {
        Message::Delivery(Delivery {
            push_id,
            code: fuzz_proto::code(),
            terminal: "sensor-1",
            state,
            bytes: 0,
            total: 6,
            at: 1_790_000_000,
            until: 1_800_000_000,
        })
    };
    s.message(&delivery(1, DeliveryState::Queued)).events();
    s.app_raw(2).transmit();
    s.message(&delivery(1, DeliveryState::Notified));
    s.message(&delivery(2, DeliveryState::Delivered));
    s.message(&Message::Done(Done {
        kind: Kind::DeliveryStatus as u8,
    }))
    .events();
    s.app_raw(3 | 0x08).transmit();
    s.message(&Message::Done(Done {
        kind: Kind::AllowSender as u8,
    }))
    .events();
    s.app_raw(2 << 5).transmit();
    s.message(&Message::Error(Error {
        code: ErrorCode::RateLimited,
        kind: Kind::Push as u8,
        retry_after_ms: 3_000,
    }));
    s.events()
        .advance(3_000)
        .timers()
        .app_raw(4)
        .advance(20_000)
        .timers();
    seeds.push(seed(
        "notice_session",
        "sender-push-status-allow",
        s.as_bytes().to_vec(),
    ));
    seeds
}
