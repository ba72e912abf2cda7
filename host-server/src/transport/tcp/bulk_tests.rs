//! A length-prefixed upload through the TCP driver's reading, however its
//! bytes are cut into reads: the session gets every frame, data frames
//! are kept in the connection's bulk buffers where they were read
//! (`transport::rx`), and every byte stored is the byte sent.
//!
//! The driver's read steps run here on a real session, with byte slices
//! as the socket and the session's jobs run in place.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use pickup_proto::frame::{Decoder, Format, Framing, MAX_FRAME_LEN};
use pickup_proto::message::{
    BatchOpen, Data, FileAnnounce, Hello, Message, Role, CAP_LENGTH_PREFIX,
};
use pickup_proto::Sha1Digest;

use super::{poll_read_into, read_burst, Inbound, Jobs, ReadOutcome};
use crate::random::SeededRandom;
use crate::rate_limit::Peer;
use crate::relay::Relay;
use crate::session::Session;
use crate::settings::{Link, Settings};
use crate::store::memory::MemoryStore;
use crate::store::Store;
use crate::transport::Clock;

const PREFIXED: Format = Format {
    framing: Framing::LengthPrefixed,
    max_frame: MAX_FRAME_LEN,
};

/// One connection's reading, driven by hand.
struct Conn {
    relay: Arc<Relay>,
    store: Arc<MemoryStore>,
    session: Session,
    inbound: Inbound,
    unfed: Bytes,
    clock: Clock,
    /// Frames the relay sent, decoded as they come.
    replies: Vec<Vec<u8>>,
    out_dec: Decoder<Vec<u8>>,
    /// The most bulk buffers seen waiting for the session at once.
    most_kept: usize,
}

impl Conn {
    fn open() -> Conn {
        let store = Arc::new(MemoryStore::new());
        let clock = Clock::new();
        let relay = Relay::new(
            Settings::default(),
            store.clone(),
            Box::new(SeededRandom::new(5)),
            clock.now(),
        );
        let peer = Peer::for_tcp(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let session = Session::new(relay.clone(), peer, Link::TCP, clock.now()).unwrap();
        Conn {
            relay,
            store,
            session,
            inbound: Inbound::default(),
            unfed: Bytes::new(),
            clock,
            replies: Vec::new(),
            out_dec: {
                // The Welcome in COBS, the rest length-prefixed.
                let mut dec = Decoder::new(vec![0u8; MAX_FRAME_LEN]);
                dec.switch_at_marker();
                dec
            },
            most_kept: 0,
        }
    }

    /// The socket brings `bytes` in one go: the driver reads them as its
    /// loop would, feeding what it held back first. With `run_jobs`, the
    /// session's jobs then run (else they wait, and with them the bytes
    /// the session keeps).
    fn arrive(&mut self, bytes: &[u8], run_jobs: bool) {
        let mut socket = bytes;
        let mut cx = Context::from_waker(Waker::noop());
        let jobs = Jobs {
            relay: self.relay.clone(),
            running: Vec::new(),
        };
        for _ in 0..10_000 {
            if socket.is_empty() {
                break;
            }
            self.settle(run_jobs);
            if !self.session.wants_input() || !self.unfed.is_empty() {
                // Held up by its writes: they run now.
                self.settle(true);
                continue;
            }
            let first = match poll_read_into(&mut socket, &mut self.inbound, &mut cx) {
                Poll::Ready(Ok(n)) if n > 0 => n,
                other => panic!("a slice reads at once: {other:?}"),
            };
            let outcome = read_burst(
                &mut socket,
                first,
                &mut self.session,
                &mut self.inbound,
                &mut self.unfed,
                &self.clock,
                &jobs,
            );
            assert!(matches!(outcome, ReadOutcome::Drained | ReadOutcome::Eof));
            if let Some(bulk) = self.inbound.bulk.as_mut() {
                self.most_kept = self.most_kept.max(bulk.kept());
            }
        }
        assert!(socket.is_empty(), "the session stopped reading");
        self.settle(run_jobs);
    }

    /// What the driver's loop does between reads: feeds held-back bytes,
    /// runs jobs (if asked), and takes the relay's output.
    fn settle(&mut self, run_jobs: bool) {
        for _ in 0..100_000 {
            let mut moved = false;
            if !self.unfed.is_empty() && self.session.wants_input() {
                let unfed = self.unfed.clone();
                let rest = super::feed(
                    &mut self.session,
                    &mut self.inbound,
                    &unfed,
                    Some(&unfed),
                    false,
                    &self.clock,
                );
                self.unfed = unfed.slice(unfed.len() - rest..);
                moved = true;
            }
            if run_jobs {
                while let Some(job) = self.session.poll_job() {
                    let done = job.run(&self.relay);
                    self.session.handle_job_done(self.clock.now(), done);
                    moved = true;
                }
            }
            let mut out = vec![0u8; self.session.transmit_buffer_len()];
            while let Some(n) = self.session.poll_transmit(&mut out) {
                self.take_output(&out[..n]);
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the session never settled");
    }

    fn take_output(&mut self, mut wire: &[u8]) {
        while let Some(found) = self.out_dec.feed(&mut wire) {
            let frame = found.expect("the relay's frames are sound");
            let mut raw = vec![frame.kind];
            raw.extend_from_slice(frame.body);
            self.replies.push(raw);
        }
    }

    fn said(&self, kind: u8) -> bool {
        self.replies.iter().any(|r| r[0] == kind)
    }
}

fn encode(msg: &Message<'_>, format: impl Into<Format>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_FRAME_LEN + 16];
    let n = msg.encode(format, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// The wire bytes of a one-file upload of `data` after the Hello, in
/// data frames of `frame` bytes (with a few small ones among them).
fn upload_wire(data: &[u8], frame: usize) -> Vec<u8> {
    let sha1 = Sha1Digest::of(data);
    let mut wire = encode(
        &Message::BatchOpen(BatchOpen {
            files: 1,
            total_size: data.len() as u64,
        }),
        PREFIXED,
    );
    wire.extend(encode(
        &Message::FileAnnounce(FileAnnounce {
            index: 0,
            size: data.len() as u64,
            sha1,
            name: "bulk.bin",
        }),
        PREFIXED,
    ));
    let mut offset = 0;
    let mut i = 0;
    while offset < data.len() {
        // Every seventh frame small: copied, not shared.
        let len = if i % 7 == 3 { 1_000 } else { frame };
        let end = (offset + len).min(data.len());
        let msg = Message::Data(Data {
            file: 0,
            offset: offset as u64,
            bytes: &data[offset..end],
        });
        wire.extend(encode(&msg, PREFIXED));
        wire.extend(encode(&Message::Keepalive, PREFIXED));
        offset = end;
        i += 1;
    }
    wire
}

/// Uploads `data` with its bytes cut into arrivals of the sizes `cuts`
/// gives in turn; returns the connection once the file is verified.
fn upload(data: &[u8], cuts: &[usize], run_jobs_every: usize) -> Conn {
    let mut conn = Conn::open();
    let hello = Message::Hello(Hello {
        version: 1,
        role: Role::Terminal,
        max_frame: MAX_FRAME_LEN as u32,
        window: 64 << 20,
        caps: CAP_LENGTH_PREFIX,
    });
    conn.arrive(&encode(&hello, MAX_FRAME_LEN), true);
    assert_eq!(conn.session.framing(), Framing::LengthPrefixed);
    let wire = upload_wire(data, 65_000);
    let mut at = 0;
    for (i, &cut) in cuts.iter().cycle().enumerate().take(100_000) {
        if at == wire.len() {
            break;
        }
        let end = (at + cut).min(wire.len());
        conn.arrive(&wire[at..end], i % run_jobs_every == 0);
        at = end;
    }
    assert_eq!(at, wire.len());
    conn.settle(true);
    const FILE_VERIFIED: u8 = 0x18;
    assert!(conn.said(FILE_VERIFIED), "the file was verified");
    let blobs = conn
        .store
        .candidates(data.len() as u64, &Sha1Digest::of(data), 2)
        .unwrap();
    let mut stored = vec![0u8; data.len()];
    assert_eq!(
        conn.store.read_blob(blobs[0], 0, &mut stored).unwrap(),
        data.len()
    );
    assert!(stored == data, "every byte stored is the byte sent");
    conn
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
}

#[test]
fn frames_cut_anywhere_are_stored_whole_and_kept_where_they_were_read() {
    let data = data(6 << 20);
    // Large arrivals switch to bulk buffers, tiny ones back; frames are
    // cut at every kind of place. Jobs run at every third arrival, so the
    // session keeps data from several buffers at once.
    let cuts = [
        100_003, 70_000, 200_000, 65_540, 131_072, 300_001, 250_000, 3, 400_000, 2_000, 1, 99_999,
        5,
    ];
    let conn = upload(&data, &cuts, 3);
    assert!(
        conn.most_kept >= 2,
        "the session kept data in bulk buffers ({} at most)",
        conn.most_kept
    );
}

#[test]
fn a_stream_of_large_reads_is_stored_whole() {
    let data = data(5 << 20);
    upload(&data, &[256 * 1024], 1);
}

#[test]
fn small_reads_alone_never_switch_to_bulk_buffers() {
    let data = data(1 << 20);
    let conn = upload(&data, &[4_000, 60_000], 2);
    assert_eq!(conn.most_kept, 0);
    assert!(conn.inbound.bulk.is_none());
}
