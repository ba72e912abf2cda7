//! The page link (PROTOCOL.md §5.1): a `PageLink` right after `Welcome`,
//! only to a terminal whose `Hello` asked and only from a relay that knows
//! its public URL.

use super::*;
use pickup_proto::message::CAP_PAGE_LINK;

const URL: &str = "https://pickup.example.org";

fn world(page_url: Option<&str>) -> World {
    World::new(Settings {
        page_url: page_url.map(str::to_owned),
        ..Settings::default()
    })
}

fn welcome_replies(w: &World, caps: u32) -> Vec<Reply> {
    let mut s = w.session(1, Link::TCP);
    send(&mut s, w.now(), hello(caps));
    drain(&mut s)
}

#[test]
fn a_terminal_that_asks_gets_the_link_right_after_the_welcome() {
    let w = world(Some(URL));
    assert_eq!(
        welcome_replies(&w, CAP_INSTANT_UPLOAD | CAP_PAGE_LINK),
        [Reply::Welcome, Reply::PageLink(URL.into())]
    );
    // A repeated Hello (the first Welcome was lost) gets both again.
    let mut s = w.session(2, Link::TCP);
    send(&mut s, w.now(), hello(CAP_PAGE_LINK));
    send(&mut s, w.now(), hello(CAP_PAGE_LINK));
    assert_eq!(drain(&mut s), [Reply::Welcome, Reply::PageLink(URL.into())]);
}

#[test]
fn no_link_to_a_terminal_that_does_not_ask() {
    let w = world(Some(URL));
    assert_eq!(welcome_replies(&w, CAP_INSTANT_UPLOAD), [Reply::Welcome]);
}

#[test]
fn no_link_from_a_relay_without_a_public_url() {
    let w = world(None);
    assert_eq!(
        welcome_replies(&w, CAP_INSTANT_UPLOAD | CAP_PAGE_LINK),
        [Reply::Welcome]
    );
}
