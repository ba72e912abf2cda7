//! The relay's limits ([`Config::relay_limits`]): the `Hello` asks for
//! them only when configured, and a `RelayLimits` after `Welcome` is kept;
//! otherwise it is ignored like any unexpected message.

use super::attrs_tests::hello_caps;
use super::tests::{drain, metas, welcome, Out, T0};
use super::*;
use crate::message::{Message, RelayLimits, CAP_PAGE_LINK, CAP_RELAY_LIMITS};

const LIMITS: RelayLimits = RelayLimits {
    max_file_size: 1 << 30,
    max_batch_size: 3 << 30,
    max_files: 1000,
};

fn config(relay_limits: bool) -> Config {
    Config {
        relay_limits,
        ..Config::default()
    }
}

#[test]
fn the_hello_asks_for_the_limits_only_when_configured() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    for asked in [false, true] {
        let mut s = Session::<4>::new(config(asked), &metas).unwrap();
        s.handle_connected(T0);
        let caps = hello_caps(&mut s, &files);
        assert_eq!(caps & CAP_RELAY_LIMITS != 0, asked);
        // Its own bit: asking for limits is not asking for a page link.
        assert_eq!(caps & CAP_PAGE_LINK, 0);
    }
}

#[test]
fn limits_after_welcome_are_kept_and_change_nothing_of_the_exchange() {
    let mut files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(config(true), &metas).unwrap();
    s.handle_connected(T0);
    assert_eq!(drain(&mut s, T0, &mut files), [Out::Hello]);
    // Before the welcome it answers nothing of ours.
    s.handle_message(T0, Message::RelayLimits(LIMITS));
    assert_eq!(s.relay_limits(), None);
    s.handle_message(T0, welcome(100_000));
    s.handle_message(T0, Message::RelayLimits(LIMITS));
    assert_eq!(s.relay_limits(), Some(LIMITS));
    assert_eq!(
        drain(&mut s, T0, &mut files),
        [Out::BatchOpen(1, 10), Out::Announce(0, 10, "a.bin".into())]
    );
    // A reconnect keeps them until the relay says again.
    s.handle_disconnected(T0);
    s.handle_connected(T0);
    assert_eq!(s.relay_limits(), Some(LIMITS));
}

#[test]
fn limits_nobody_asked_for_are_ignored() {
    let mut files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.handle_connected(T0);
    drain(&mut s, T0, &mut files);
    s.handle_message(T0, welcome(100_000));
    s.handle_message(T0, Message::RelayLimits(LIMITS));
    assert_eq!(s.relay_limits(), None);
    assert_eq!(
        drain(&mut s, T0, &mut files),
        [Out::BatchOpen(1, 10), Out::Announce(0, 10, "a.bin".into())]
    );
}
