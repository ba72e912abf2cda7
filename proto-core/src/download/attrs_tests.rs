//! File attributes on download: asked for with `Config::file_attrs`, handed
//! to the sink before their file's entry, ignored when not asked for.

use super::tests::{code, drain, MemSink, Out, T0};
use super::*;
use crate::frame::Decoder;
use crate::message::{FileAttrs, Manifest, ManifestEntry, Message, Role, Welcome, CAP_FILE_ATTRS};

/// Connects a session, checks whether its Hello asks for attributes, and
/// serves it a one-file manifest preceded by `FileAttrs`.
fn fetch_with_attrs(file_attrs: bool) -> MemSink {
    let mut sink = MemSink::default();
    let config = Config {
        file_attrs,
        ..Config::default()
    };
    let mut s = Session::<4>::new(config, code());
    s.handle_connected(T0);
    let mut buf = [0u8; 300];
    let n = s.poll_transmit(T0, &mut sink, &mut buf).unwrap().unwrap();
    let mut input = &buf[..n];
    let mut dec = Decoder::new([0u8; 300]);
    let frame = dec.feed(&mut input).unwrap().unwrap();
    let Ok(Message::Hello(hello)) = Message::decode(frame) else {
        panic!("not a hello")
    };
    assert_eq!(hello.caps & CAP_FILE_ATTRS != 0, file_attrs);
    let welcome = Welcome {
        version: 1,
        role: Role::Relay,
        max_frame: 4096,
        window: 0,
        caps: CAP_FILE_ATTRS,
    };
    s.handle_message(T0, Message::Welcome(welcome), &mut sink)
        .unwrap();
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Fetch]);
    let manifest = Manifest {
        code: code(),
        expires_at: 2_000_000_000,
        files: 1,
        total_size: 2,
        received: 2,
        ready: true,
    };
    let attrs = FileAttrs {
        index: 0,
        executable: true,
        mtime: -5,
    };
    let entry = ManifestEntry {
        index: 0,
        size: 2,
        sha1: crate::hash::Sha1Digest::of(b"hi"),
        received: 2,
        name: "run.sh",
    };
    for m in [
        Message::Manifest(manifest),
        Message::FileAttrs(attrs),
        Message::ManifestEntry(entry),
    ] {
        s.handle_message(T0, m, &mut sink).unwrap();
    }
    assert!(s.error().is_none());
    sink
}

#[test]
fn attributes_reach_the_sink_only_when_asked_for() {
    let sink = fetch_with_attrs(true);
    assert_eq!(
        sink.attrs,
        [FileAttrs {
            index: 0,
            executable: true,
            mtime: -5
        }]
    );
    assert!(fetch_with_attrs(false).attrs.is_empty());
}
