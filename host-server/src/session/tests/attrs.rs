//! File attributes through a session (PROTOCOL.md §5.5): kept from the
//! `FileAttrs` before each `FileAnnounce`, served before each
//! `ManifestEntry` only to a terminal whose `Hello` offered the bit.

use super::*;
use pickup_proto::message::CAP_FILE_ATTRS;

fn attrs(index: u16, executable: bool) -> FileAttrs {
    FileAttrs {
        index,
        executable,
        mtime: 1_000_000_000 + i64::from(index),
    }
}

/// Announces two empty files (complete at once), the first with
/// attributes, plus a stray `FileAttrs` for an index never announced next;
/// returns the code.
fn announce_with_attrs(w: &World) -> Code {
    let mut s = open(w, 1);
    let empty = Sha1Digest::EMPTY;
    send(
        &mut s,
        w.now(),
        Message::BatchOpen(BatchOpen {
            files: 2,
            total_size: 0,
        }),
    );
    send(&mut s, w.now(), Message::FileAttrs(attrs(0, true)));
    let announce = |index, name| FileAnnounce {
        index,
        size: 0,
        sha1: empty,
        name,
    };
    send(
        &mut s,
        w.now(),
        Message::FileAnnounce(announce(0, "run.sh")),
    );
    // Attributes naming another file than the next announced are dropped.
    send(&mut s, w.now(), Message::FileAttrs(attrs(5, true)));
    send(&mut s, w.now(), Message::FileAnnounce(announce(1, "b.txt")));
    let replies = drain(&mut s);
    assert!(
        !replies.iter().any(|r| matches!(r, Reply::Error(..))),
        "{replies:?}"
    );
    grant_of(&replies).code
}

fn fetch(w: &World, caps: u32, code: Code) -> Vec<Reply> {
    let mut s = w.session(2, Link::TCP);
    send(&mut s, w.now(), hello(caps));
    assert_eq!(drain(&mut s), [Reply::Welcome]);
    send(&mut s, w.now(), Message::Fetch(Fetch { code }));
    drain(&mut s)
}

#[test]
fn attributes_are_kept_and_served_only_to_terminals_that_ask() {
    let w = World::new(Settings::default());
    let code = announce_with_attrs(&w);
    let with = fetch(&w, CAP_FILE_ATTRS, code);
    assert!(matches!(with[0], Reply::Manifest(_)), "{with:?}");
    assert_eq!(
        with[1..],
        [
            Reply::Attrs(attrs(0, true)),
            Reply::Entry(0, "run.sh".into(), 0),
            Reply::Entry(1, "b.txt".into(), 0),
        ]
    );
    // A terminal that predates attributes never sees the kind.
    let without = fetch(&w, CAP_INSTANT_UPLOAD, code);
    assert_eq!(
        without[1..],
        [
            Reply::Entry(0, "run.sh".into(), 0),
            Reply::Entry(1, "b.txt".into(), 0),
        ]
    );
}

#[test]
fn the_welcome_offers_attributes_and_stray_attributes_are_ignored() {
    let w = World::new(Settings::default());
    let mut s = w.session(1, Link::TCP);
    send(&mut s, w.now(), hello(0));
    let mut out = [0u8; 256];
    let n = s.poll_transmit(&mut out).expect("a welcome");
    let mut dec = Decoder::new([0u8; 256]);
    let mut input = &out[..n];
    let Ok(Message::Welcome(welcome)) = Message::decode(dec.feed(&mut input).unwrap().unwrap())
    else {
        panic!("not a welcome")
    };
    assert_ne!(welcome.caps & CAP_FILE_ATTRS, 0);
    // Outside an announcement: no error, no reply.
    send(&mut s, w.now(), Message::FileAttrs(attrs(0, false)));
    assert_eq!(drain(&mut s), []);
}
