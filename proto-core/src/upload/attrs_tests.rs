//! File attributes ([`Session::set_attrs`]): sent just before their file's
//! announcement to a relay that accepts them, and never to one that does not.

use super::tests::{drain, metas, welcome, Out, T0};
use super::*;
use crate::frame::Decoder;
use crate::message::{Kind, Message, Welcome, CAP_FILE_ATTRS};

fn attrs(index: u16) -> FileAttrs {
    FileAttrs {
        index,
        executable: true,
        mtime: 1_000_000_000,
    }
}

/// The caps of the first frame the session sends (its Hello).
pub(super) fn hello_caps<const F: usize>(
    s: &mut Session<'_, F>,
    files: &[std::vec::Vec<u8>],
) -> u32 {
    let mut buf = [0u8; 600];
    let mut source: &[std::vec::Vec<u8>] = files;
    let n = s.poll_transmit(T0, &mut source, &mut buf).unwrap().unwrap();
    let mut dec = Decoder::new([0u8; 300]);
    let mut input = &buf[..n];
    match Message::decode(dec.feed(&mut input).unwrap().unwrap()) {
        Ok(Message::Hello(h)) => h.caps,
        other => panic!("{other:?}"),
    }
}

#[test]
fn attributes_precede_their_announcement_when_the_relay_accepts_them() {
    let mut files = std::vec![std::vec![1u8; 10], std::vec![2u8; 20]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    assert!(s.set_attrs(attrs(1)));
    assert!(!s.set_attrs(attrs(2)), "no file 2");
    s.handle_connected(T0);
    assert_ne!(hello_caps(&mut s, &files) & CAP_FILE_ATTRS, 0);
    s.handle_message(
        T0,
        Message::Welcome(Welcome {
            version: 1,
            role: crate::message::Role::Relay,
            max_frame: 256,
            window: 100_000,
            caps: CAP_FILE_ATTRS,
        }),
    );
    let out = drain(&mut s, T0, &mut files);
    assert_eq!(
        out,
        [
            Out::BatchOpen(2, 30),
            Out::Announce(0, 10, "a.bin".into()),
            Out::Other(Kind::FileAttrs),
            Out::Announce(1, 20, "b.bin".into()),
        ]
    );
}

#[test]
fn an_old_relay_never_sees_attributes_and_a_batch_without_them_does_not_ask() {
    let mut files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.set_attrs(attrs(0));
    s.handle_connected(T0);
    hello_caps(&mut s, &files);
    // A relay that predates attributes: its welcome lacks the bit.
    s.handle_message(T0, welcome(100_000));
    assert_eq!(
        drain(&mut s, T0, &mut files),
        [Out::BatchOpen(1, 10), Out::Announce(0, 10, "a.bin".into())]
    );
    // Without attributes the Hello does not offer them (as the firmware's).
    let mut plain = Session::<4>::new(Config::default(), &metas).unwrap();
    plain.handle_connected(T0);
    assert_eq!(hello_caps(&mut plain, &files) & CAP_FILE_ATTRS, 0);
}
