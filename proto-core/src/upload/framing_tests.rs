//! The length prefix ([`Config::length_prefix`], PROTOCOL.md §2.1): asked
//! for only when configured, used after a `Welcome` that agrees, and every
//! new link starts over in COBS.

use super::attrs_tests::hello_caps;
use super::tests::{metas, T0};
use super::*;
use crate::drive::Machine;
use crate::frame::{Decoder, Framing};
use crate::message::{Kind, Message, Role, Welcome, CAP_LENGTH_PREFIX};
use std::vec::Vec;

fn config(length_prefix: bool) -> Config {
    Config {
        length_prefix,
        ..Config::default()
    }
}

fn welcome(caps: u32) -> Message<'static> {
    Message::Welcome(Welcome {
        version: 1,
        role: Role::Relay,
        max_frame: 4096,
        window: 100_000,
        caps,
    })
}

/// The next frame's kind and framing, decoded as the relay would.
fn next_frame(s: &mut Session<'_, 4>, files: &[Vec<u8>]) -> Option<(Kind, Framing)> {
    let mut buf = [0u8; 5000];
    let mut source: &[Vec<u8>] = files;
    let n = s.poll_transmit(T0, &mut source, &mut buf).unwrap()?;
    let framing = if buf[0] == 0 {
        Framing::LengthPrefixed
    } else {
        Framing::Cobs
    };
    let mut dec = Decoder::new([0u8; 4096]);
    dec.set_framing(framing);
    let mut input = &buf[..n];
    let frame = dec.feed(&mut input).unwrap().unwrap();
    assert!(input.is_empty());
    Some((Message::decode(frame).unwrap().kind(), framing))
}

#[test]
fn the_hello_asks_for_the_prefix_only_when_configured() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    for asked in [false, true] {
        let mut s = Session::<4>::new(config(asked), &metas).unwrap();
        s.handle_connected(T0);
        assert_eq!(hello_caps(&mut s, &files) & CAP_LENGTH_PREFIX != 0, asked);
    }
}

#[test]
fn frames_after_an_agreeing_welcome_are_prefixed_and_a_new_link_starts_in_cobs() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    // Asked and agreed; asked and not agreed; agreed but not asked.
    for (asked, caps, expect) in [
        (true, CAP_LENGTH_PREFIX, Framing::LengthPrefixed),
        (true, 0, Framing::Cobs),
        (false, CAP_LENGTH_PREFIX, Framing::Cobs),
    ] {
        let mut s = Session::<4>::new(config(asked), &metas).unwrap();
        s.handle_connected(T0);
        assert_eq!(
            next_frame(&mut s, &files),
            Some((Kind::Hello, Framing::Cobs))
        );
        s.handle_message(T0, welcome(caps));
        assert_eq!(Machine::<&[Vec<u8>]>::framing(&s), expect);
        assert_eq!(next_frame(&mut s, &files), Some((Kind::BatchOpen, expect)));
        assert_eq!(
            next_frame(&mut s, &files),
            Some((Kind::FileAnnounce, expect))
        );
        s.handle_disconnected(T0);
        s.handle_connected(T0);
        assert_eq!(Machine::<&[Vec<u8>]>::framing(&s), Framing::Cobs);
        assert_eq!(
            next_frame(&mut s, &files),
            Some((Kind::Hello, Framing::Cobs))
        );
    }
}

#[test]
fn after_keep_cobs_the_next_hello_does_not_ask() {
    let files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(config(true), &metas).unwrap();
    s.handle_connected(T0);
    assert_ne!(hello_caps(&mut s, &files) & CAP_LENGTH_PREFIX, 0);
    Machine::<&[Vec<u8>]>::keep_cobs(&mut s);
    s.handle_disconnected(T0);
    s.handle_connected(T0);
    assert_eq!(hello_caps(&mut s, &files) & CAP_LENGTH_PREFIX, 0);
    s.handle_message(T0, welcome(CAP_LENGTH_PREFIX));
    assert_eq!(
        next_frame(&mut s, &files),
        Some((Kind::BatchOpen, Framing::Cobs))
    );
}
