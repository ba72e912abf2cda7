//! Page links ([`Config::page_link`]): the `Hello` asks for one only when
//! configured, and a `PageLink` after `Welcome` is kept; otherwise it is
//! ignored like any unexpected message.

use super::attrs_tests::hello_caps;
use super::tests::{drain, grant, metas, plan, welcome, Out, T0};
use super::*;
use crate::message::{Message, PageLink, Plan, CAP_PAGE_LINK};

fn link(base_url: &str) -> Message<'_> {
    Message::PageLink(PageLink { base_url })
}

fn config(page_link: bool) -> Config {
    Config {
        page_link,
        ..Config::default()
    }
}

#[test]
fn the_hello_asks_for_a_page_link_only_when_configured() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    for asked in [false, true] {
        let mut s = Session::<4>::new(config(asked), &metas).unwrap();
        s.handle_connected(T0);
        assert_eq!(hello_caps(&mut s, &files) & CAP_PAGE_LINK != 0, asked);
    }
}

#[test]
fn a_page_link_after_welcome_is_kept_in_any_phase_and_replaced_by_a_newer() {
    let mut files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(config(true), &metas).unwrap();
    s.handle_connected(T0);
    assert_eq!(drain(&mut s, T0, &mut files), [Out::Hello]);
    // Before the welcome it answers nothing of ours.
    s.handle_message(T0, link("https://early.example"));
    assert_eq!(s.page_link(), None);
    s.handle_message(T0, welcome(100_000));
    s.handle_message(T0, link("https://pickup.example.org"));
    assert_eq!(s.page_link(), Some("https://pickup.example.org"));
    // It changes nothing of the exchange.
    assert_eq!(
        drain(&mut s, T0, &mut files),
        [Out::BatchOpen(1, 10), Out::Announce(0, 10, "a.bin".into())]
    );
    s.handle_message(T0, grant(1));
    s.handle_message(T0, plan(0, Plan::Upload { offset: 0 }));
    s.handle_message(T0, link("http://10.0.0.1:8080/p"));
    assert_eq!(s.page_link(), Some("http://10.0.0.1:8080/p"));
    // A URL that would not be inert on a terminal is never kept, even
    // from a driver that built the message itself.
    s.handle_message(T0, link("https://evil.example/\u{1b}]8;;x"));
    assert_eq!(s.page_link(), Some("http://10.0.0.1:8080/p"));
    // A reconnect keeps the last one until the relay says again.
    s.handle_disconnected(T0);
    s.handle_connected(T0);
    assert_eq!(s.page_link(), Some("http://10.0.0.1:8080/p"));
}

#[test]
fn a_page_link_nobody_asked_for_is_ignored() {
    let mut files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.handle_connected(T0);
    drain(&mut s, T0, &mut files);
    s.handle_message(T0, welcome(100_000));
    s.handle_message(T0, link("https://pickup.example.org"));
    assert_eq!(s.page_link(), None);
    assert_eq!(
        drain(&mut s, T0, &mut files),
        [Out::BatchOpen(1, 10), Out::Announce(0, 10, "a.bin".into())]
    );
}

#[test]
fn a_page_link_during_authentication_is_kept_and_the_handshake_goes_on() {
    use crate::auth::tests::{authenticated, terminal};
    let mut files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(config(true), &metas).unwrap();
    s.authenticate(terminal());
    s.handle_connected(T0);
    s.handle_message(T0, welcome(100_000));
    // The relay sends it right after the welcome, before any challenge.
    s.handle_message(T0, link("https://pickup.example.org"));
    assert_eq!(s.page_link(), Some("https://pickup.example.org"));
    s.handle_message(T0, authenticated());
    assert!(s.error().is_none(), "{:?}", s.error());
    let out = drain(&mut s, T0, &mut files);
    assert!(
        out.ends_with(&[Out::BatchOpen(1, 10), Out::Announce(0, 10, "a.bin".into())]),
        "{out:?}"
    );
}
