//! The relay's limits (PROTOCOL.md §5.1): a `RelayLimits` right after
//! `Welcome` (and the `PageLink`), only to a terminal whose `Hello` asked,
//! carrying the limits its `TooLarge` and `TooManyFiles` refusals enforce.

use super::*;
use pickup_proto::message::{RelayLimits, CAP_PAGE_LINK, CAP_RELAY_LIMITS};

const URL: &str = "https://pickup.example.org";

fn world(page_url: Option<&str>) -> World {
    World::new(Settings {
        max_file_size: 1000,
        max_batch_size: 1500,
        max_files_per_batch: 3,
        page_url: page_url.map(str::to_owned),
        ..Settings::default()
    })
}

const LIMITS: RelayLimits = RelayLimits {
    max_file_size: 1000,
    max_batch_size: 1500,
    max_files: 3,
};

fn welcome_replies(w: &World, caps: u32) -> Vec<Reply> {
    let mut s = w.session(1, Link::TCP);
    send(&mut s, w.now(), hello(caps));
    drain(&mut s)
}

#[test]
fn a_terminal_that_asks_gets_the_limits_right_after_the_welcome() {
    let w = world(None);
    assert_eq!(
        welcome_replies(&w, CAP_INSTANT_UPLOAD | CAP_RELAY_LIMITS),
        [Reply::Welcome, Reply::RelayLimits(LIMITS)]
    );
    // A repeated Hello (the first Welcome was lost) gets them again.
    let mut s = w.session(2, Link::TCP);
    send(&mut s, w.now(), hello(CAP_RELAY_LIMITS));
    send(&mut s, w.now(), hello(CAP_RELAY_LIMITS));
    assert_eq!(drain(&mut s), [Reply::Welcome, Reply::RelayLimits(LIMITS)]);
}

#[test]
fn the_limits_follow_the_page_link_when_both_are_asked_for() {
    let w = world(Some(URL));
    assert_eq!(
        welcome_replies(&w, CAP_PAGE_LINK | CAP_RELAY_LIMITS),
        [
            Reply::Welcome,
            Reply::PageLink(URL.into()),
            Reply::RelayLimits(LIMITS)
        ]
    );
}

#[test]
fn no_limits_to_a_terminal_that_does_not_ask() {
    // An MCU or an older terminal: nothing it would not understand.
    let w = world(Some(URL));
    assert_eq!(welcome_replies(&w, CAP_INSTANT_UPLOAD), [Reply::Welcome]);
    assert_eq!(
        welcome_replies(&w, CAP_PAGE_LINK),
        [Reply::Welcome, Reply::PageLink(URL.into())]
    );
}
