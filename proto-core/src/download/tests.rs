//! The download machine stepped by hand against a scripted relay: loss,
//! duplication, reordering, reconnects and resumed local files.

use super::*;
use crate::error::ErrorCode;
use crate::message::{self, Data, Kind, Manifest, ManifestEntry, Message, Role, Welcome};
use crate::storage::{ReadAt, WriteAt};
use crate::time::Duration;
use std::string::String;
use std::vec::Vec;

pub(super) const T0: Instant = Instant::from_millis(5_000);

/// An in-memory sink that records what the machine asked of it.
#[derive(Default)]
pub(crate) struct MemSink {
    pub(super) files: Vec<Vec<u8>>,
    pub(super) names: Vec<String>,
    /// Bytes present before the download started, by index.
    preexisting: Vec<Vec<u8>>,
    pub(super) finished: Vec<u16>,
    pub(super) truncated: Vec<u16>,
    /// Calls to `read_at` (re-hashing reads back).
    reads: usize,
    /// What `Sink::attrs` was given, in order.
    pub(super) attrs: Vec<message::FileAttrs>,
}

impl ReadAt for MemSink {
    type Error = ();
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> Result<usize, ()> {
        self.reads += 1;
        let f = self.files.get(file as usize).ok_or(())?;
        let start = (offset as usize).min(f.len());
        let n = buf.len().min(f.len() - start);
        buf[..n].copy_from_slice(&f[start..start + n]);
        Ok(n)
    }
}

impl WriteAt for MemSink {
    type Error = ();
    fn write_at(&mut self, file: u16, offset: u64, data: &[u8]) -> Result<(), ()> {
        let f = self.files.get_mut(file as usize).ok_or(())?;
        let end = offset as usize + data.len();
        if f.len() < end {
            f.resize(end, 0);
        }
        f[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

impl Sink for MemSink {
    fn open(&mut self, entry: &ManifestEntry<'_>) -> Result<u64, ()> {
        assert_eq!(entry.index as usize, self.files.len());
        let pre = self
            .preexisting
            .get(entry.index as usize)
            .cloned()
            .unwrap_or_default();
        let len = pre.len() as u64;
        self.files.push(pre);
        self.names.push(entry.name.into());
        Ok(len)
    }
    fn attrs(&mut self, attrs: &message::FileAttrs) {
        self.attrs.push(*attrs);
    }
    fn truncate(&mut self, file: u16) -> Result<(), ()> {
        self.truncated.push(file);
        self.files[file as usize].clear();
        Ok(())
    }
    fn finish(&mut self, file: u16) -> Result<(), ()> {
        self.finished.push(file);
        Ok(())
    }
}

pub(super) fn code() -> Code {
    Code::parse("ABCD-EFGH-JKMN").unwrap()
}

/// What the scripted relay serves.
pub(super) struct Batch {
    files: Vec<(String, Vec<u8>)>,
}

impl Batch {
    pub(super) fn new(files: &[(&str, &[u8])]) -> Self {
        Batch {
            files: files
                .iter()
                .map(|(n, b)| (String::from(*n), b.to_vec()))
                .collect(),
        }
    }

    pub(super) fn manifest(
        &self,
        s: &mut Session<4>,
        now: Instant,
        sink: &mut MemSink,
        ready: bool,
    ) {
        let total: u64 = self.files.iter().map(|f| f.1.len() as u64).sum();
        s.handle_message(
            now,
            Message::Manifest(Manifest {
                code: code(),
                expires_at: 2_000_000_000,
                files: self.files.len() as u16,
                total_size: total,
                received: total,
                ready,
            }),
            sink,
        )
        .unwrap();
        for (i, (name, bytes)) in self.files.iter().enumerate() {
            s.handle_message(
                now,
                Message::ManifestEntry(ManifestEntry {
                    index: i as u16,
                    size: bytes.len() as u64,
                    sha1: Sha1Digest::of(bytes),
                    received: bytes.len() as u64,
                    name,
                }),
                sink,
            )
            .unwrap();
        }
    }

    /// Data frames for `file` from `offset`, `chunk` bytes each, up to `end`.
    pub(super) fn data(
        &self,
        file: u16,
        offset: u64,
        end: u64,
        chunk: usize,
    ) -> Vec<(u16, u64, Vec<u8>)> {
        let bytes = &self.files[file as usize].1;
        let end = (end as usize).min(bytes.len());
        let mut out = Vec::new();
        let mut at = offset as usize;
        while at < end {
            let n = chunk.min(end - at);
            out.push((file, at as u64, bytes[at..at + n].to_vec()));
            at += n;
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Out {
    Hello,
    Fetch,
    Read(u16, u64, u32),
    Ack(u16, u64, u32),
    Keepalive,
    Goodbye,
    Other(Kind),
}

pub(super) fn drain(s: &mut Session<4>, now: Instant, sink: &mut MemSink) -> Vec<Out> {
    let mut out = Vec::new();
    let mut buf = [0u8; 300];
    for _ in 0..1000 {
        let Some(n) = s.poll_transmit(now, sink, &mut buf).unwrap() else {
            break;
        };
        let mut dec = crate::frame::Decoder::new([0u8; 300]);
        let mut input = &buf[..n];
        let frame = dec.feed(&mut input).unwrap().unwrap();
        out.push(match Message::decode(frame).unwrap() {
            Message::Hello(_) => Out::Hello,
            Message::Fetch(f) => {
                assert_eq!(f.code, code());
                Out::Fetch
            }
            Message::Read(r) => Out::Read(r.file, r.offset, r.len),
            Message::Ack(a) => Out::Ack(a.file, a.offset, a.window),
            Message::Keepalive => Out::Keepalive,
            Message::Goodbye => Out::Goodbye,
            m => Out::Other(m.kind()),
        });
    }
    out
}

pub(super) fn events(s: &mut Session<4>) -> Vec<Event> {
    core::iter::from_fn(|| s.poll_event()).collect()
}

pub(super) fn send(
    s: &mut Session<4>,
    now: Instant,
    sink: &mut MemSink,
    frames: &[(u16, u64, Vec<u8>)],
) {
    for (file, offset, bytes) in frames {
        s.handle_message(
            now,
            Message::Data(Data {
                file: *file,
                offset: *offset,
                bytes,
            }),
            sink,
        )
        .unwrap();
    }
}

pub(super) fn config(window: u32) -> Config {
    Config {
        window,
        ..Config::default()
    }
}

pub(super) fn connected(batch: &Batch, window: u32, sink: &mut MemSink) -> Session<'static, 4> {
    connected_with(batch, config(window), sink)
}

fn connected_with(batch: &Batch, config: Config, sink: &mut MemSink) -> Session<'static, 4> {
    let mut s = Session::<4>::new(config, code());
    s.handle_connected(T0);
    assert_eq!(drain(&mut s, T0, sink), [Out::Hello]);
    s.handle_message(
        T0,
        Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 4096,
            window: 0,
            caps: 0,
        }),
        sink,
    )
    .unwrap();
    assert_eq!(drain(&mut s, T0, sink), [Out::Fetch]);
    batch.manifest(&mut s, T0, sink, true);
    s
}

#[test]
fn clean_download_with_an_empty_file_and_credit() {
    let big: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let batch = Batch::new(&[("a.bin", &big), ("empty", b""), ("c.txt", b"hello")]);
    let mut sink = MemSink::default();
    let mut s = connected(&batch, 1000, &mut sink);
    assert_eq!(sink.names, ["a.bin", "empty", "c.txt"]);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 0, 1000)]);
    // The relay sends the credit; past a quarter of it the terminal extends it.
    send(&mut s, T0, &mut sink, &batch.data(0, 0, 600, 200));
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Ack(0, 600, 1000)]);
    send(&mut s, T0, &mut sink, &batch.data(0, 600, 3000, 200));
    // File 0 verified, the empty file finished at once, file 2 requested.
    assert_eq!(sink.finished, [0, 1]);
    let out = drain(&mut s, T0, &mut sink);
    assert!(out.contains(&Out::Read(2, 0, 1000)), "{out:?}");
    send(&mut s, T0, &mut sink, &batch.data(2, 0, 5, 200));
    assert!(s.is_finished());
    assert_eq!(s.error(), None);
    assert_eq!(sink.finished, [0, 1, 2]);
    assert_eq!(sink.files[0], big);
    assert_eq!(sink.files[2], b"hello");
    let ev = events(&mut s);
    assert!(ev.contains(&Event::Complete));
    assert!(ev.contains(&Event::Verified { file: 0 }));
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Goodbye]);
}

#[test]
fn loss_duplication_and_reordering_of_data() {
    let body: Vec<u8> = (0..2000u32).map(|i| (i % 253) as u8).collect();
    let batch = Batch::new(&[("f", &body)]);
    let mut sink = MemSink::default();
    let mut s = connected(&batch, 100_000, &mut sink);
    let _ = drain(&mut s, T0, &mut sink);
    let frames = batch.data(0, 0, 2000, 100);
    // Frame 3 is lost: the gap triggers exactly one restart at 300.
    send(&mut s, T0, &mut sink, &frames[..3]);
    send(&mut s, T0, &mut sink, &frames[4..8]);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 300, 100_000)]);
    // Frames from the old stream arrive late, then duplicates, then the restart.
    send(&mut s, T0, &mut sink, &frames[8..10]);
    send(&mut s, T0, &mut sink, &frames[0..2]);
    assert!(drain(&mut s, T0, &mut sink).is_empty());
    send(&mut s, T0, &mut sink, &frames[3..]);
    send(&mut s, T0, &mut sink, &frames[5..7]);
    assert!(s.is_finished());
    assert_eq!(s.error(), None);
    assert_eq!(sink.files[0], body);
}

#[test]
fn credit_is_extended_every_quarter_window() {
    let body = [7u8; 3000];
    let batch = Batch::new(&[("f", &body)]);
    let mut sink = MemSink::default();
    let mut s = connected(&batch, 1000, &mut sink);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 0, 1000)]);
    let mut acks = Vec::new();
    for frame in batch.data(0, 0, 3000, 100) {
        send(&mut s, T0, &mut sink, &[frame]);
        acks.extend(drain(&mut s, T0, &mut sink));
    }
    // One Ack per 250 bytes, each for a whole window: losing one leaves
    // the relay credit for the next.
    let at = |o| Out::Ack(0, o, 1000);
    let mut expected = [300, 600, 900, 1200, 1500, 1800, 2100].map(at).to_vec();
    expected.push(Out::Goodbye);
    assert_eq!(acks, expected);
    assert!(s.is_finished());
}

#[test]
fn a_gap_at_the_start_of_a_restarted_stream_restarts_it_again() {
    let body: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    let batch = Batch::new(&[("f", &body)]);
    let mut sink = MemSink::default();
    let mut s = connected(&batch, 100_000, &mut sink);
    let _ = drain(&mut s, T0, &mut sink);
    let frames = batch.data(0, 0, 2000, 100);
    // Frame 2 is lost: one restart at 200; the old stream goes on.
    send(&mut s, T0, &mut sink, &frames[..2]);
    send(&mut s, T0, &mut sink, &frames[3..9]);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 200, 100_000)]);
    // The restarted stream loses its first frame: its second, at an offset
    // below the old stream's, shows it, without waiting for the timer.
    send(&mut s, T0, &mut sink, &frames[3..4]);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 200, 100_000)]);
    send(&mut s, T0, &mut sink, &frames[2..]);
    assert!(s.is_finished());
    assert_eq!(sink.files[0], body);
}

#[test]
fn each_loss_halves_the_credit_and_clean_data_doubles_it_back() {
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 249) as u8).collect();
    let batch = Batch::new(&[("f", &body)]);
    let mut sink = MemSink::default();
    // 64-byte frames carry at least 45 bytes: the credit never drops
    // below eight of them, 360 bytes.
    let config = Config {
        max_frame: 64,
        ..config(4096)
    };
    let mut s = connected_with(&batch, config, &mut sink);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 0, 4096)]);
    let frames = batch.data(0, 0, 20_000, 40);
    // Every loss restarts the stream with half the credit, down to the floor.
    let mut at = 0;
    for len in [2048, 1024, 512, 360, 360] {
        send(&mut s, T0, &mut sink, &frames[at + 1..at + 2]);
        assert_eq!(
            drain(&mut s, T0, &mut sink),
            [Out::Read(0, at as u64 * 40, len)]
        );
        // The restarted stream's first frame arrives, then the next is lost.
        send(&mut s, T0, &mut sink, &frames[at..at + 1]);
        at += 1;
    }
    // A credit's worth in order doubles it; the Acks grant what it is now.
    let mut grants = Vec::new();
    for frame in &frames[at..at + 30] {
        send(&mut s, T0, &mut sink, core::slice::from_ref(frame));
        for out in drain(&mut s, T0, &mut sink) {
            let Out::Ack(0, _, window) = out else {
                panic!("{out:?}")
            };
            grants.push(window);
        }
    }
    assert_eq!(grants.first(), Some(&360));
    assert!(
        grants.contains(&720) && grants.contains(&1440),
        "{grants:?}"
    );
    assert!(grants.windows(2).all(|w| w[0] <= w[1]), "{grants:?}");
}

#[test]
fn a_restart_after_silence_treats_any_gap_as_the_new_streams() {
    let body: Vec<u8> = (0..2000u32).map(|i| (i % 247) as u8).collect();
    let batch = Batch::new(&[("f", &body)]);
    let mut sink = MemSink::default();
    let mut s = connected(&batch, 100_000, &mut sink);
    let _ = drain(&mut s, T0, &mut sink);
    let frames = batch.data(0, 0, 2000, 100);
    send(&mut s, T0, &mut sink, &frames[..2]);
    // Everything after frame 1 is lost and nothing arrives for the
    // retransmit timeout: no older stream is on its way any more.
    let t1 = s.poll_timeout().unwrap();
    s.handle_timeout(t1);
    assert_eq!(drain(&mut s, t1, &mut sink), [Out::Read(0, 200, 100_000)]);
    // The restarted stream loses its first frame: its second restarts it
    // at once, not a timeout later.
    send(&mut s, t1, &mut sink, &frames[3..4]);
    assert_eq!(drain(&mut s, t1, &mut sink), [Out::Read(0, 200, 100_000)]);
    // The rest of that stream is not taken for yet another restart.
    send(&mut s, t1, &mut sink, &frames[4..6]);
    assert!(drain(&mut s, t1, &mut sink).is_empty());
    send(&mut s, t1, &mut sink, &frames[2..]);
    assert!(s.is_finished());
    assert_eq!(sink.files[0], body);
}

#[test]
fn the_first_stream_on_a_new_link_restarts_at_its_first_gap() {
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 241) as u8).collect();
    let batch = Batch::new(&[("f", &body)]);
    let mut sink = MemSink::default();
    let mut s = connected(&batch, 100_000, &mut sink);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 0, 100_000)]);
    // Nothing of an older stream can come on a new link: the gap left by
    // a lost first frame restarts the read at once.
    send(&mut s, T0, &mut sink, &batch.data(0, 100, 300, 100));
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 0, 100_000)]);
    send(&mut s, T0, &mut sink, &batch.data(0, 0, 1000, 100));
    assert!(s.is_finished());
    assert_eq!(sink.files[0], body);
}

#[test]
fn reconnect_continues_mid_file_without_reopening() {
    let body: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let batch = Batch::new(&[("f", &body), ("g", b"second")]);
    let mut sink = MemSink::default();
    let mut s = connected(&batch, 10_000, &mut sink);
    let _ = drain(&mut s, T0, &mut sink);
    send(&mut s, T0, &mut sink, &batch.data(0, 0, 400, 100));
    s.handle_disconnected(T0);
    let t1 = T0 + Duration::from_secs(3);
    s.handle_connected(t1);
    assert_eq!(drain(&mut s, t1, &mut sink), [Out::Hello]);
    s.handle_message(
        t1,
        Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 4096,
            window: 0,
            caps: 0,
        }),
        &mut sink,
    )
    .unwrap();
    // The manifest of the ready batch is held: no Fetch, files are opened
    // once, and reading continues at 400.
    assert_eq!(drain(&mut s, t1, &mut sink), [Out::Read(0, 400, 10_000)]);
    assert_eq!(sink.names.len(), 2);
    send(&mut s, t1, &mut sink, &batch.data(0, 400, 1000, 100));
    send(&mut s, t1, &mut sink, &batch.data(1, 0, 6, 100));
    assert!(s.is_finished());
    assert_eq!(sink.files[0], body);
}

#[test]
fn a_manifest_missing_an_entry_is_fetched_again_after_reconnect() {
    let batch = Batch::new(&[("f", b"one"), ("g", b"two")]);
    let mut sink = MemSink::default();
    let mut s = Session::<4>::new(config(1000), code());
    s.handle_connected(T0);
    let welcome = Message::Welcome(Welcome {
        version: 1,
        role: Role::Relay,
        max_frame: 4096,
        window: 0,
        caps: 0,
    });
    s.handle_message(T0, welcome, &mut sink).unwrap();
    let _ = drain(&mut s, T0, &mut sink);
    // The manifest arrives, its second entry does not.
    let manifest = Manifest {
        code: code(),
        expires_at: 2_000_000_000,
        files: 2,
        total_size: 6,
        received: 6,
        ready: true,
    };
    s.handle_message(T0, Message::Manifest(manifest), &mut sink)
        .unwrap();
    let entry = ManifestEntry {
        index: 0,
        size: 3,
        sha1: Sha1Digest::of(b"one"),
        received: 3,
        name: "f",
    };
    s.handle_message(T0, Message::ManifestEntry(entry), &mut sink)
        .unwrap();
    s.handle_disconnected(T0);
    s.handle_connected(T0);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Hello]);
    s.handle_message(T0, welcome, &mut sink).unwrap();
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Fetch]);
    batch.manifest(&mut s, T0, &mut sink, true);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 0, 1000)]);
}

#[test]
fn a_changed_manifest_after_reconnect_is_refused() {
    // Only a manifest that is not complete and ready is fetched again: here
    // the batch was still uploading.
    let batch = Batch::new(&[("f", b"one")]);
    let mut sink = MemSink::default();
    let mut s = Session::<4>::new(
        Config {
            wait_until_ready: Some(Duration::from_secs(1)),
            ..config(1000)
        },
        code(),
    );
    s.handle_connected(T0);
    let welcome = Message::Welcome(Welcome {
        version: 1,
        role: Role::Relay,
        max_frame: 4096,
        window: 0,
        caps: 0,
    });
    s.handle_message(T0, welcome, &mut sink).unwrap();
    batch.manifest(&mut s, T0, &mut sink, false);
    s.handle_disconnected(T0);
    s.handle_connected(T0);
    s.handle_message(
        T0,
        Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 4096,
            window: 0,
            caps: 0,
        }),
        &mut sink,
    )
    .unwrap();
    Batch::new(&[("f", b"two")]).manifest(&mut s, T0, &mut sink, true);
    assert_eq!(s.error(), Some(Error::ManifestChanged));
}

#[test]
fn resumed_local_prefix_is_rehashed_and_reused() {
    let body: Vec<u8> = (0..1000u32).map(|i| (i * 3) as u8).collect();
    let batch = Batch::new(&[("f", &body)]);
    let mut sink = MemSink {
        preexisting: std::vec![body[..700].to_vec()],
        ..MemSink::default()
    };
    let mut s = connected(&batch, 10_000, &mut sink);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 700, 10_000)]);
    send(&mut s, T0, &mut sink, &batch.data(0, 700, 1000, 100));
    assert!(s.is_finished());
    assert_eq!(s.error(), None);
    assert_eq!(sink.files[0], body);
    assert!(events(&mut s)
        .iter()
        .any(|e| matches!(e, Event::Entry { local: 700, .. })));
}

#[test]
fn a_corrupt_local_prefix_is_thrown_away_and_refetched() {
    let body = std::vec![8u8; 500];
    let batch = Batch::new(&[("f", &body)]);
    let mut sink = MemSink {
        preexisting: std::vec![std::vec![9u8; 200]],
        ..MemSink::default()
    };
    let mut s = connected(&batch, 10_000, &mut sink);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 200, 10_000)]);
    send(&mut s, T0, &mut sink, &batch.data(0, 200, 500, 100));
    assert_eq!(sink.truncated, [0]);
    assert!(!s.is_finished());
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 0, 10_000)]);
    send(&mut s, T0, &mut sink, &batch.data(0, 0, 500, 100));
    assert!(s.is_finished());
    assert_eq!(s.error(), None);
    assert_eq!(sink.files[0], body);
}

/// `Hashing::BySink`: the session reads nothing back for a resumed prefix
/// and asks the sink for the digest (here `Sink::digest`'s default, which
/// reads the file back) once the file is complete.
#[test]
fn the_sink_verifies_when_asked_to() {
    let body: Vec<u8> = (0..1000u32).map(|i| (i * 5) as u8).collect();
    let batch = Batch::new(&[("f", &body), ("g", b"tail")]);
    let by_sink = Config {
        hashing: Hashing::BySink,
        ..config(10_000)
    };
    let mut sink = MemSink {
        preexisting: std::vec![body[..700].to_vec()],
        ..MemSink::default()
    };
    let mut s = connected_with(&batch, by_sink, &mut sink);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 700, 10_000)]);
    assert_eq!(sink.reads, 0, "the prefix was read back");
    send(&mut s, T0, &mut sink, &batch.data(0, 700, 1000, 100));
    assert_eq!(sink.finished, [0]);
    assert!(sink.reads > 0, "nothing was verified");
    let _ = drain(&mut s, T0, &mut sink);
    send(&mut s, T0, &mut sink, &batch.data(1, 0, 4, 100));
    assert!(s.is_finished());
    assert_eq!(s.error(), None);
    assert_eq!(sink.files, [body, b"tail".to_vec()]);

    // A corrupt prefix fails the sink's digest: thrown away and refetched.
    let body = std::vec![8u8; 500];
    let batch = Batch::new(&[("f", &body)]);
    let mut sink = MemSink {
        preexisting: std::vec![std::vec![9u8; 200]],
        ..MemSink::default()
    };
    let mut s = connected_with(&batch, by_sink, &mut sink);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 200, 10_000)]);
    send(&mut s, T0, &mut sink, &batch.data(0, 200, 500, 100));
    assert_eq!(sink.truncated, [0]);
    assert_eq!(drain(&mut s, T0, &mut sink), [Out::Read(0, 0, 10_000)]);
    send(&mut s, T0, &mut sink, &batch.data(0, 0, 500, 100));
    assert!(s.is_finished());
    assert_eq!(s.error(), None);
    assert_eq!(sink.files[0], body);

    // Wrong bytes from the relay fail the download, as in the session.
    let batch = Batch::new(&[("f", b"expected")]);
    let mut sink = MemSink::default();
    let mut s = connected_with(&batch, by_sink, &mut sink);
    let _ = drain(&mut s, T0, &mut sink);
    send(&mut s, T0, &mut sink, &[(0, 0, b"tampered".to_vec())]);
    assert_eq!(s.error(), Some(Error::HashMismatch { file: 0 }));
    assert!(sink.finished.is_empty());
}

#[test]
fn wrong_bytes_from_the_relay_fail_verification() {
    let batch = Batch::new(&[("f", b"expected")]);
    let mut sink = MemSink::default();
    let mut s = connected(&batch, 1000, &mut sink);
    let _ = drain(&mut s, T0, &mut sink);
    send(&mut s, T0, &mut sink, &[(0, 0, b"tampered".to_vec())]);
    assert_eq!(s.error(), Some(Error::HashMismatch { file: 0 }));
    assert!(sink.finished.is_empty());
}

#[test]
fn manifest_only_stops_after_the_entries() {
    let batch = Batch::new(&[("one", b"1"), ("two", b"22")]);
    let mut sink = MemSink::default();
    let mut s = Session::<4>::new(
        Config {
            manifest_only: true,
            ..config(1000)
        },
        code(),
    );
    s.handle_connected(T0);
    s.handle_message(
        T0,
        Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 4096,
            window: 0,
            caps: 0,
        }),
        &mut sink,
    )
    .unwrap();
    batch.manifest(&mut s, T0, &mut sink, false);
    assert!(s.is_finished());
    assert_eq!(s.error(), None);
    assert_eq!(sink.names, ["one", "two"]);
    assert!(sink.files.iter().all(|f| f.is_empty()));
}

#[test]
fn hostile_names_and_oversized_batches_are_refused() {
    let batch = Batch::new(&[("../../etc/passwd", b"x")]);
    let mut sink = MemSink::default();
    let s = connected(&batch, 1000, &mut sink);
    assert_eq!(s.error(), Some(Error::Relay(ErrorCode::InvalidName)));
    assert!(sink.names.is_empty());

    let five: Vec<(&str, &[u8])> = std::vec![("a", b"1"); 5];
    let batch = Batch::new(&five);
    let mut sink = MemSink::default();
    let s = connected(&batch, 1000, &mut sink);
    assert_eq!(s.error(), Some(Error::TooManyFiles));
}

#[test]
fn data_outside_the_file_is_ignored() {
    let batch = Batch::new(&[("f", b"abc")]);
    let mut sink = MemSink::default();
    let mut s = connected(&batch, 1000, &mut sink);
    let _ = drain(&mut s, T0, &mut sink);
    send(
        &mut s,
        T0,
        &mut sink,
        &[(0, 0, b"abcdef".to_vec()), (7, 0, b"abc".to_vec())],
    );
    assert!(!s.is_finished());
    send(&mut s, T0, &mut sink, &[(0, 0, b"abc".to_vec())]);
    assert!(s.is_finished());
    assert_eq!(s.error(), None);
}
