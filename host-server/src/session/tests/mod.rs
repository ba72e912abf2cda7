//! Session logic against the in-memory store, driven by the terminals' own
//! state machines from `pickup-proto` (or by hand-made messages where a
//! well-behaved terminal would never send them). Time is stepped by hand.

use std::sync::Arc;

use pickup_proto::download::{self, Sink};
use pickup_proto::frame::Decoder;
use pickup_proto::hash::ProofHasher;
use pickup_proto::message::{
    Ack, BatchOpen, Data, Fetch, FileAnnounce, FileAttrs, FilePlan, FileRejected, Grant, Hello,
    Manifest, ManifestEntry, Message, Plan, Proof, Read, Resume, ResumeToken, Rewind, Role,
    CAP_INSTANT_UPLOAD,
};
use pickup_proto::storage::{ReadAt, WriteAt};
use pickup_proto::upload::{self, FileMeta};
use pickup_proto::{Code, Duration, ErrorCode, Instant, Sha1Digest};

use super::*;
use crate::disclosure::{DisclosureMode, DisclosureSettings};
use crate::random::SeededRandom;
use crate::relay::Relay;
use crate::settings::{Link, Settings, MIN_ACK_WINDOW};
use crate::store::memory::MemoryStore;
use crate::store::{FileContent, Lookup, Store};

const T0: u64 = 1_700_000_000_000;

struct World {
    store: Arc<MemoryStore>,
    relay: Arc<Relay>,
    now: u64,
}

impl World {
    fn new(settings: Settings) -> World {
        let store = Arc::new(MemoryStore::new());
        let relay = Relay::new(
            settings,
            store.clone(),
            Box::new(SeededRandom::new(42)),
            Instant::from_millis(T0),
        );
        World {
            store,
            relay,
            now: T0,
        }
    }

    /// A relay over a memory store whose accounts are `directory`.
    fn with_directory(
        settings: Settings,
        directory: Arc<crate::directory::MemoryDirectory>,
    ) -> World {
        let store = Arc::new(MemoryStore::new());
        let relay = Relay::with_directory(
            settings,
            store.clone(),
            directory,
            Box::new(SeededRandom::new(42)),
            Instant::from_millis(T0),
        );
        World {
            store,
            relay,
            now: T0,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.now)
    }

    fn session(&self, peer: u64, link: Link) -> Session {
        Session::new(self.relay.clone(), Peer::Sim(peer), link, self.now()).unwrap()
    }

    /// The relay restarts: sessions are gone, unsynced bytes are lost.
    fn crash(&mut self) {
        self.store.crash();
        self.relay = Relay::new(
            self.relay.settings.clone(),
            self.store.clone(),
            Box::new(SeededRandom::new(43)),
            self.now(),
        );
    }
}

/// What the relay said, owned.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Welcome,
    PageLink(String),
    RelayLimits(message::RelayLimits),
    Error(ErrorCode, u32),
    Grant(Grant),
    Plan(FilePlan),
    Ack(Ack),
    Rewind(Rewind),
    Verified(u16),
    Rejected(FileRejected),
    Complete,
    Manifest(Manifest),
    Entry(u16, String, u64),
    Attrs(FileAttrs),
    Data(u16, u64, Vec<u8>),
    Keepalive,
    Authenticated {
        user: String,
        terminal: String,
        token: pickup_proto::message::AuthToken,
    },
    Challenge([u8; 16]),
    Done(u8),
    Delivery {
        push_id: u64,
        terminal: String,
        state: pickup_proto::message::DeliveryState,
        bytes: u64,
        total: u64,
    },
    Inbox(u16),
    Notice {
        id: u64,
        code: Code,
        sender: String,
    },
    Settled(u64),
    ForwardAccepted(u64),
    ForwardStatus(pickup_proto::message::ForwardStatus),
}

fn to_reply(msg: Message<'_>) -> Reply {
    match msg {
        Message::Welcome(_) => Reply::Welcome,
        Message::PageLink(p) => Reply::PageLink(p.base_url.to_owned()),
        Message::RelayLimits(l) => Reply::RelayLimits(l),
        Message::Error(e) => Reply::Error(e.code, e.retry_after_ms),
        Message::Grant(g) => Reply::Grant(g),
        Message::FilePlan(p) => Reply::Plan(p),
        Message::Ack(a) => Reply::Ack(a),
        Message::Rewind(r) => Reply::Rewind(r),
        Message::FileVerified(v) => Reply::Verified(v.index),
        Message::FileRejected(r) => Reply::Rejected(r),
        Message::BatchComplete(_) => Reply::Complete,
        Message::Manifest(m) => Reply::Manifest(m),
        Message::ManifestEntry(e) => Reply::Entry(e.index, e.name.to_owned(), e.received),
        Message::Data(d) => Reply::Data(d.file, d.offset, d.bytes.to_vec()),
        Message::FileAttrs(a) => Reply::Attrs(a),
        Message::Keepalive => Reply::Keepalive,
        Message::Authenticated(a) => Reply::Authenticated {
            user: a.user.to_owned(),
            terminal: a.terminal.to_owned(),
            token: a.token,
        },
        Message::Challenge(c) => Reply::Challenge(c.nonce),
        Message::Done(d) => Reply::Done(d.kind),
        Message::Delivery(d) => Reply::Delivery {
            push_id: d.push_id,
            terminal: d.terminal.to_owned(),
            state: d.state,
            bytes: d.bytes,
            total: d.total,
        },
        Message::Inbox(i) => Reply::Inbox(i.count),
        Message::Notice(n) => Reply::Notice {
            id: n.id,
            code: n.code,
            sender: n.sender.to_owned(),
        },
        Message::Settled(s) => Reply::Settled(s.id),
        Message::ForwardAccepted(a) => Reply::ForwardAccepted(a.id),
        Message::ForwardStatus(s) => Reply::ForwardStatus(s),
        other => panic!("relay sent {other:?}"),
    }
}

/// Runs the session's jobs at once, in order, as a driver with a fast disk
/// would; `true` if there were any.
fn pump(s: &mut Session, now: Instant) -> bool {
    let relay = s.relay.clone();
    let mut ran = false;
    for _ in 0..100_000 {
        let Some(job) = s.poll_job() else {
            return ran;
        };
        ran = true;
        let done = job.run(&relay);
        s.handle_job_done(now, done);
    }
    panic!("the session never stops giving out jobs");
}

/// Hands `msg` to the session and runs the jobs it gives out.
fn send(s: &mut Session, now: Instant, msg: Message<'_>) {
    send_only(s, now, msg);
    pump(s, now);
}

/// Hands `msg` to the session, leaving its jobs to the test.
fn send_only(s: &mut Session, now: Instant, msg: Message<'_>) {
    let mut buf = vec![0u8; 70_000];
    let n = msg.encode(65_536, &mut buf).unwrap();
    let mut dec = Decoder::new(vec![0u8; 65_536]);
    let mut input = &buf[..n];
    let frame = dec.feed(&mut input).unwrap().unwrap();
    s.handle_frame(now, frame);
}

/// Everything the session says, running its jobs as they come.
fn drain(s: &mut Session) -> Vec<Reply> {
    let now = s.clock;
    drain_with(s, |s| pump(s, now))
}

/// Everything the session says without running a job.
fn drain_only(s: &mut Session) -> Vec<Reply> {
    drain_with(s, |_| false)
}

fn drain_with(s: &mut Session, mut pump: impl FnMut(&mut Session) -> bool) -> Vec<Reply> {
    let mut out = vec![0u8; s.transmit_buffer_len()];
    let mut dec = Decoder::new(vec![0u8; 65_536]);
    let mut replies = Vec::new();
    for _ in 0..1_000_000 {
        pump(s);
        let Some(n) = s.poll_transmit(&mut out) else {
            return replies;
        };
        let mut input = &out[..n];
        let frame = dec.feed(&mut input).unwrap().unwrap();
        replies.push(to_reply(Message::decode(frame).unwrap()));
    }
    panic!("the session never stops talking");
}

fn hello(caps: u32) -> Message<'static> {
    Message::Hello(Hello {
        version: 1,
        role: Role::Terminal,
        max_frame: 65_536,
        window: 1 << 20,
        caps,
    })
}

fn open(w: &World, peer: u64) -> Session {
    let mut s = w.session(peer, Link::TCP);
    send(&mut s, w.now(), hello(CAP_INSTANT_UPLOAD));
    assert_eq!(drain(&mut s), [Reply::Welcome]);
    s
}

/// A session logged in as `name`, whose password the directory holds as
/// `{name}-pw` (the identity, notice and forward tests' users).
fn user(w: &World, peer: u64, name: &str) -> Session {
    let mut s = open(w, peer);
    let password = format!("{name}-pw");
    send(
        &mut s,
        w.now(),
        Message::Login(pickup_proto::message::Login {
            user: name,
            password: &password,
        }),
    );
    assert!(matches!(&drain(&mut s)[..], [Reply::Authenticated { .. }]));
    s
}

/// Announces `files` (name, size, sha1) by hand and returns the replies.
fn announce(s: &mut Session, now: Instant, files: &[(&str, u64, Sha1Digest)]) -> Vec<Reply> {
    send(
        s,
        now,
        Message::BatchOpen(BatchOpen {
            files: files.len() as u16,
            total_size: files.iter().map(|f| f.1).sum(),
        }),
    );
    for (i, (name, size, sha1)) in files.iter().enumerate() {
        send(
            s,
            now,
            Message::FileAnnounce(FileAnnounce {
                index: i as u16,
                size: *size,
                sha1: *sha1,
                name,
            }),
        );
    }
    drain(s)
}

/// Announces one file, `name` holding `data`: the grant.
fn grant_one(s: &mut Session, now: Instant, name: &str, data: &[u8]) -> Grant {
    grant_of(&announce(
        s,
        now,
        &[(name, data.len() as u64, Sha1Digest::of(data))],
    ))
}

fn grant_of(replies: &[Reply]) -> Grant {
    replies
        .iter()
        .find_map(|r| match r {
            Reply::Grant(g) => Some(*g),
            _ => None,
        })
        .expect("a grant")
}

/// Moves frames between a terminal and a relay session until `done`, or
/// until `steps` rounds have passed. Time advances to the next timer when
/// both sides are quiet.
struct Wire {
    relay_dec: Decoder<Vec<u8>>,
    term_dec: Decoder<Vec<u8>>,
    buf: Vec<u8>,
}

impl Wire {
    fn new() -> Self {
        Wire {
            relay_dec: Decoder::new(vec![0u8; 65_536]),
            term_dec: Decoder::new(vec![0u8; 65_536]),
            buf: vec![0u8; 70_000],
        }
    }
}

/// The most a test terminal has in flight: less than the larger files
/// here, so they are sent in several windows, and than the relay's TCP
/// window, so acks must come within the terminal's window.
const TERMINAL_WINDOW: u32 = 8 << 20;

/// Runs an upload of `data` to completion (or until `stop(acked)` says to
/// stop); returns the grant and the events seen.
fn upload(
    w: &mut World,
    s: &mut Session,
    names: &[&str],
    data: &[Vec<u8>],
    token: Option<ResumeToken>,
    stop: impl FnMut(u64) -> bool,
) -> (
    Option<Grant>,
    Vec<upload::Event>,
    upload::Session<'static, 8>,
) {
    let config = upload::Config {
        max_frame: 65_536,
        max_window: TERMINAL_WINDOW,
        ..upload::Config::default()
    };
    upload_with(w, s, config, names, data, token, stop)
}

/// [`upload`] by a terminal with `config`.
fn upload_with(
    w: &mut World,
    s: &mut Session,
    config: upload::Config,
    names: &[&str],
    data: &[Vec<u8>],
    token: Option<ResumeToken>,
    stop: impl FnMut(u64) -> bool,
) -> (
    Option<Grant>,
    Vec<upload::Event>,
    upload::Session<'static, 8>,
) {
    let metas: Vec<FileMeta<'static>> = names
        .iter()
        .zip(data)
        .map(|(n, d)| FileMeta {
            name: Box::leak(n.to_string().into_boxed_str()),
            size: d.len() as u64,
            sha1: Sha1Digest::of(d),
        })
        .collect();
    let c = match token {
        Some(t) => upload::Session::<8>::resume(config, &metas, t).unwrap(),
        None => upload::Session::<8>::new(config, &metas).unwrap(),
    };
    drive_upload(w, s, c, data, stop)
}

/// Runs the terminal's upload machine `c` against `s` until it finishes
/// or `stop(acked)`.
fn drive_upload(
    w: &mut World,
    s: &mut Session,
    mut c: upload::Session<'static, 8>,
    data: &[Vec<u8>],
    mut stop: impl FnMut(u64) -> bool,
) -> (
    Option<Grant>,
    Vec<upload::Event>,
    upload::Session<'static, 8>,
) {
    let mut wire = Wire::new();
    let mut events = Vec::new();
    c.handle_connected(w.now());
    for _ in 0..100_000 {
        let now = w.now();
        let mut moved = false;
        let mut source: &[Vec<u8>] = data;
        while let Some(n) = c.poll_transmit(now, &mut source, &mut wire.buf).unwrap() {
            moved = true;
            let mut input = &wire.buf[..n];
            while let Some(f) = wire.relay_dec.feed(&mut input) {
                s.handle_frame(now, f.unwrap());
            }
        }
        moved |= pump(s, now);
        let mut out = vec![0u8; s.transmit_buffer_len()];
        while let Some(n) = s.poll_transmit(&mut out) {
            moved = true;
            let mut input = &out[..n];
            while let Some(f) = wire.term_dec.feed(&mut input) {
                c.handle_frame(now, f.unwrap());
            }
        }
        while let Some(e) = c.poll_event() {
            events.push(e);
        }
        if c.is_finished() || stop(c.acked()) {
            return (c.grant().copied(), events, c);
        }
        if !moved {
            let next = [c.poll_timeout(), s.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .expect("a timer");
            w.now = next.as_millis().max(w.now + 1);
            c.handle_timeout(w.now());
            s.handle_timeout(w.now());
        }
    }
    panic!("upload did not finish: {events:?}");
}

#[derive(Default)]
struct MemSink {
    files: Vec<Vec<u8>>,
    names: Vec<String>,
}

impl ReadAt for MemSink {
    type Error = core::convert::Infallible;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let d = &self.files[usize::from(file)];
        let start = (offset as usize).min(d.len());
        let n = buf.len().min(d.len() - start);
        buf[..n].copy_from_slice(&d[start..start + n]);
        Ok(n)
    }
}

impl WriteAt for MemSink {
    type Error = core::convert::Infallible;
    fn write_at(
        &mut self,
        file: u16,
        offset: u64,
        data: &[u8],
    ) -> Result<(), core::convert::Infallible> {
        let d = &mut self.files[usize::from(file)];
        let end = offset as usize + data.len();
        if d.len() < end {
            d.resize(end, 0);
        }
        d[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

impl Sink for MemSink {
    fn open(&mut self, entry: &ManifestEntry<'_>) -> Result<u64, core::convert::Infallible> {
        self.files.push(Vec::new());
        self.names.push(entry.name.to_owned());
        Ok(0)
    }
    fn truncate(&mut self, file: u16) -> Result<(), core::convert::Infallible> {
        self.files[usize::from(file)].clear();
        Ok(())
    }
    fn finish(&mut self, _file: u16) -> Result<(), core::convert::Infallible> {
        Ok(())
    }
}

/// Downloads the batch behind `code`; `Err` carries the failure.
fn download(w: &mut World, s: &mut Session, code: Code) -> Result<MemSink, download::Error> {
    let config = download::Config {
        max_frame: 65_536,
        window: 256 * 1024,
        ..download::Config::default()
    };
    let mut c = download::Session::<16>::new(config, code);
    let mut sink = MemSink::default();
    let mut wire = Wire::new();
    c.handle_connected(w.now());
    for _ in 0..100_000 {
        let now = w.now();
        let mut moved = false;
        while let Some(n) = c.poll_transmit(now, &mut sink, &mut wire.buf).unwrap() {
            moved = true;
            let mut input = &wire.buf[..n];
            while let Some(f) = wire.relay_dec.feed(&mut input) {
                s.handle_frame(now, f.unwrap());
            }
        }
        moved |= pump(s, now);
        let mut out = vec![0u8; s.transmit_buffer_len()];
        while let Some(n) = s.poll_transmit(&mut out) {
            moved = true;
            let mut input = &out[..n];
            while let Some(f) = wire.term_dec.feed(&mut input) {
                c.handle_frame(now, f.unwrap(), &mut sink).unwrap();
            }
            pump(s, now);
        }
        while c.poll_event().is_some() {}
        if c.is_finished() {
            return match c.error() {
                Some(e) => Err(e),
                None => Ok(sink),
            };
        }
        if !moved {
            let next = [c.poll_timeout(), s.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .expect("a timer");
            w.now = next.as_millis().max(w.now + 1);
            c.handle_timeout(w.now());
            s.handle_timeout(w.now());
        }
    }
    panic!("download did not finish");
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn data_msg(offset: usize, bytes: &[u8]) -> Message<'_> {
    Message::Data(Data {
        file: 0,
        offset: offset as u64,
        bytes,
    })
}

fn durable(w: &World, code: &Code) -> u64 {
    match w
        .store
        .find_by_code(&crate::codes::code_key(code), T0 / 1000)
        .unwrap()
    {
        Lookup::Live(b) => b.received(),
        other => panic!("{other:?}"),
    }
}

/// Settings whose instant upload challenges any held content, for tests of
/// proofs made in a session other than the uploader's (a stranger to it,
/// to which the default rule reveals nothing: `dedup.rs`).
fn open_disclosure() -> Settings {
    Settings {
        disclosure: DisclosureSettings {
            mode: DisclosureMode::Open,
            ..DisclosureSettings::default()
        },
        ..Settings::default()
    }
}

/// Runs `jobs` (given out together) and hands their results back in the
/// order given.
fn run_all(w: &World, s: &mut Session, jobs: Vec<Job>) {
    for job in jobs {
        let done = job.run(&w.relay);
        s.handle_job_done(w.now(), done);
    }
}

mod acks;
mod attrs;
mod dedup;
mod downloads;
mod forwards;
mod identity;
mod instant_upload;
mod jobs;
mod limits;
mod lookups;
mod notices;
mod page_link;
mod peer_push;
mod peers;
mod proofs;
mod quota;
mod relay_limits;
mod uploads;
