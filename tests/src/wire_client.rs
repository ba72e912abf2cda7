//! A terminal for tests of the real relay process: the client machines
//! of `pickup-proto` driven over a blocking byte stream (a `TcpStream` to a
//! [`RelayProcess`](crate::relay_process::RelayProcess), or a
//! pseudo-terminal it serves), and [`Raw`], a hand-driven connection for
//! the messages a well-behaved terminal never sends.
//!
//! Every wait is bounded by [`PATIENCE`]; connections go to loopback only.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant as StdInstant};

use pickup_proto::download;
use pickup_proto::frame::Decoder;
use pickup_proto::identity::{terminal_mac, DeviceKey};
use pickup_proto::message::{
    Ack, BatchOpen, ChallengeAnswer, FileAnnounce, FilePlan, FileRejected, Grant, Hello, Manifest,
    Message, ResumeToken, Role, TerminalAuth, CAP_INSTANT_UPLOAD,
};
use pickup_proto::upload::{self, FileMeta};
use pickup_proto::{Code, ErrorCode, Instant, Sha1Digest};

use crate::e2e::PATIENCE;
use crate::mem_files::MemFiles;

/// A byte stream the drivers can use: reads time out instead of blocking.
pub trait Wire: Read + Write {}
impl<T: Read + Write> Wire for T {}

/// A TCP connection to `addr` whose reads time out after 5 ms.
pub fn connect(addr: SocketAddr) -> TcpStream {
    assert!(addr.ip().is_loopback(), "tests stay on loopback: {addr}");
    let s = TcpStream::connect(addr).expect("connect to the relay");
    tune(s)
}

/// Like [`connect`], from the loopback address `source` (127.0.0.2 and up
/// are as local as 127.0.0.1 on Linux): a peer the relay tells apart.
pub fn connect_from(addr: SocketAddr, source: Ipv4Addr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    assert!(addr.ip().is_loopback(), "tests stay on loopback: {addr}");
    assert!(source.is_loopback(), "tests stay on loopback: {source}");
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    s.bind(&SocketAddr::from((source, 0)).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    s.connect(&addr.into()).expect("connect to the relay");
    tune(s.into())
}

fn tune(s: TcpStream) -> TcpStream {
    s.set_read_timeout(Some(Duration::from_millis(5)))
        .expect("read timeout");
    s.set_nodelay(true).expect("no delay");
    s
}

fn now(start: StdInstant) -> Instant {
    Instant::from_millis(start.elapsed().as_millis() as u64 + 1)
}

/// Reads what is there (up to a short timeout); `Err` if the stream ended.
fn read_some(wire: &mut dyn Wire, buf: &mut [u8]) -> Result<usize, ()> {
    match wire.read(buf) {
        Ok(0) => Err(()),
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        Err(_) => Err(()),
    }
}

/// What an upload run saw.
#[derive(Debug)]
pub struct UploadRun {
    /// The relay's grant, if it came.
    pub grant: Option<Grant>,
    /// Every event of the session, in order.
    pub events: Vec<upload::Event>,
    /// Bytes the relay acknowledged as durable.
    pub acked: u64,
    /// Why the session failed, if it did.
    pub error: Option<upload::Error>,
    /// Whether the session reached its end (done or failed).
    pub finished: bool,
}

impl UploadRun {
    /// The batch's code (panics without a grant).
    pub fn code(&self) -> Code {
        self.grant.expect("a grant").code
    }
    /// The resume token (panics without a grant).
    pub fn token(&self) -> ResumeToken {
        self.grant.expect("a grant").token
    }
    /// Where the first file's upload started (its first `Uploading` event).
    pub fn resumed_at(&self) -> Option<u64> {
        self.events.iter().find_map(|e| match e {
            upload::Event::Uploading { offset, .. } => Some(*offset),
            _ => None,
        })
    }
    /// Whether a file was linked to content the relay held (instant upload).
    pub fn linked(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, upload::Event::Linked { .. }))
    }
    /// Whether the relay completed the batch.
    pub fn complete(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, upload::Event::Complete { .. }))
    }
}

/// The default upload config with this frame size.
pub fn upload_config(max_frame: u32) -> upload::Config {
    upload::Config {
        max_frame,
        ..upload::Config::default()
    }
}

/// Uploads `files` over `wire` until done, or until `stop(acked)`.
pub fn upload(
    wire: &mut dyn Wire,
    config: upload::Config,
    files: &[(&str, Vec<u8>)],
    token: Option<ResumeToken>,
    mut stop: impl FnMut(u64) -> bool,
) -> UploadRun {
    let metas: Vec<FileMeta<'_>> = files
        .iter()
        .map(|(n, d)| FileMeta {
            name: n,
            size: d.len() as u64,
            sha1: Sha1Digest::of(d),
        })
        .collect();
    let mut source = MemFiles::with_contents(files.iter().map(|f| f.1.clone()).collect());
    let mut c = match token {
        Some(t) => upload::Session::<'_, 16>::resume(config, &metas, t).expect("a session"),
        None => upload::Session::<'_, 16>::new(config, &metas).expect("a session"),
    };
    let start = StdInstant::now();
    let mut dec = Decoder::new(vec![0u8; config.max_frame as usize]);
    let mut out = vec![0u8; 70_000];
    let mut rbuf = vec![0u8; 65_536];
    let mut events = Vec::new();
    c.handle_connected(now(start));
    loop {
        assert!(start.elapsed() < PATIENCE, "upload timed out: {events:?}");
        while let Some(n) = c
            .poll_transmit(now(start), &mut source, &mut out)
            .expect("infallible")
        {
            if wire.write_all(&out[..n]).is_err() {
                break;
            }
        }
        while let Some(e) = c.poll_event() {
            events.push(e);
        }
        if c.is_finished() || stop(c.acked()) || events.contains(&upload::Event::LinkLost) {
            let _ = wire.flush();
            return UploadRun {
                grant: c.grant().copied(),
                acked: c.acked(),
                error: c.error(),
                finished: c.is_finished(),
                events,
            };
        }
        match read_some(wire, &mut rbuf) {
            Ok(n) => {
                let mut input = &rbuf[..n];
                while let Some(r) = dec.feed(&mut input) {
                    if let Ok(f) = r {
                        c.handle_frame(now(start), f);
                    }
                }
            }
            Err(()) => c.handle_disconnected(now(start)),
        }
        if c.poll_timeout().is_some_and(|t| now(start) >= t) {
            c.handle_timeout(now(start));
        }
    }
}

/// The default download config with this frame size and window.
pub fn download_config(max_frame: u32, window: u32) -> download::Config {
    download::Config {
        max_frame,
        window,
        ..download::Config::default()
    }
}

/// Downloads the batch behind `code` over `wire`.
pub fn download(
    wire: &mut dyn Wire,
    config: download::Config,
    code: Code,
) -> Result<MemFiles, download::Error> {
    let mut c = download::Session::<64>::new(config, code);
    let mut sink = MemFiles::default();
    let start = StdInstant::now();
    let mut dec = Decoder::new(vec![0u8; config.max_frame as usize]);
    let mut out = vec![0u8; 70_000];
    let mut rbuf = vec![0u8; 65_536];
    c.handle_connected(now(start));
    loop {
        assert!(start.elapsed() < PATIENCE, "download timed out");
        while let Some(n) = c
            .poll_transmit(now(start), &mut sink, &mut out)
            .expect("infallible")
        {
            if wire.write_all(&out[..n]).is_err() {
                break;
            }
        }
        while c.poll_event().is_some() {}
        if c.is_finished() {
            let _ = wire.flush();
            return match c.error() {
                Some(e) => Err(e),
                None => Ok(sink),
            };
        }
        match read_some(wire, &mut rbuf) {
            Ok(n) => {
                let mut input = &rbuf[..n];
                while let Some(r) = dec.feed(&mut input) {
                    if let Ok(f) = r {
                        c.handle_frame(now(start), f, &mut sink)
                            .expect("infallible");
                    }
                }
            }
            Err(()) => c.handle_disconnected(now(start)),
        }
        if c.poll_timeout().is_some_and(|t| now(start) >= t) {
            c.handle_timeout(now(start));
        }
    }
}

/// Uploads over a fresh TCP connection.
pub fn upload_tcp(
    addr: SocketAddr,
    files: &[(&str, Vec<u8>)],
    token: Option<ResumeToken>,
) -> UploadRun {
    upload(
        &mut connect(addr),
        upload_config(65_536),
        files,
        token,
        |_| false,
    )
}

/// Downloads over a fresh TCP connection.
pub fn download_tcp(addr: SocketAddr, code: Code) -> Result<MemFiles, download::Error> {
    download(&mut connect(addr), download_config(65_536, 1 << 20), code)
}

/// A message from the relay, owned.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // One variant per message, named after it.
pub enum Reply {
    Welcome,
    /// Code and `retry_after_ms`.
    Error(ErrorCode, u32),
    Grant(Grant),
    Plan(FilePlan),
    Ack(Ack),
    /// The verified file's index.
    Verified(u16),
    Rejected(FileRejected),
    Complete,
    Manifest(Manifest),
    /// Index and name.
    Entry(u16, String),
    /// File, offset and length.
    Data(u16, u64, usize),
    Keepalive,
    /// A terminal authentication's nonce.
    Challenge([u8; 16]),
    /// `Authenticated`: the user the session acts for.
    Authenticated(String),
    /// `Inbox`: how many notices follow.
    Inbox(u16),
    /// `Notice`: its id and code.
    Notice(u64, Code),
    /// `Settled`: the notice's id.
    Settled(u64),
    /// Any other kind, by its byte.
    Other(u8),
}

/// A hand-driven connection for messages a well-behaved terminal never sends.
pub struct Raw {
    /// The connection.
    pub stream: TcpStream,
    dec: Decoder<Vec<u8>>,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<Reply>,
}

impl Raw {
    /// Connects to the relay at `addr`.
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::over(connect(addr))
    }

    /// Connects to the relay at `addr` from the loopback address `source`.
    pub fn connect_from(addr: SocketAddr, source: Ipv4Addr) -> Raw {
        Raw::over(connect_from(addr, source))
    }

    fn over(stream: TcpStream) -> Raw {
        Raw {
            stream,
            dec: Decoder::new(vec![0u8; 65_536]),
            buf: vec![0u8; 70_000],
            pending: Default::default(),
        }
    }

    /// Sends one message.
    pub fn send(&mut self, msg: Message<'_>) {
        let n = msg.encode(65_536, &mut self.buf).expect("encode");
        self.stream.write_all(&self.buf[..n]).expect("send");
    }

    /// Sends raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Announces a batch of `files` (name, size, SHA-1) by hand.
    pub fn announce<S: AsRef<str>>(&mut self, files: &[(S, u64, Sha1Digest)]) {
        self.send(Message::BatchOpen(BatchOpen {
            files: files.len() as u16,
            total_size: files.iter().map(|f| f.1).sum(),
        }));
        for (i, (name, size, sha1)) in files.iter().enumerate() {
            self.send(Message::FileAnnounce(FileAnnounce {
                index: i as u16,
                size: *size,
                sha1: *sha1,
                name: name.as_ref(),
            }));
        }
    }

    /// Says hello as a terminal (64 KiB frames) and expects a welcome.
    pub fn hello(&mut self) {
        self.hello_as(Role::Terminal);
    }

    /// Says hello in `role` (a peer relay says `Role::Relay`) and expects
    /// a welcome.
    pub fn hello_as(&mut self, role: Role) {
        self.send(Message::Hello(Hello {
            version: 1,
            role,
            max_frame: 65_536,
            window: 1 << 20,
            caps: CAP_INSTANT_UPLOAD,
        }));
        assert_eq!(self.recv(), Reply::Welcome);
    }

    /// Authenticates as terminal `name` with its device `key`
    /// (`TerminalAuth`, then the answer to the relay's challenge) and
    /// expects `Authenticated`. Call after [`Raw::hello`].
    pub fn terminal_auth(&mut self, name: &str, key: &DeviceKey) {
        self.send(Message::TerminalAuth(TerminalAuth { terminal: name }));
        let nonce = match self.recv() {
            Reply::Challenge(nonce) => nonce,
            other => panic!("expected a challenge, got {other:?}"),
        };
        let mac = terminal_mac(key, &nonce, name);
        self.send(Message::ChallengeAnswer(ChallengeAnswer { mac }));
        match self.recv() {
            Reply::Authenticated(_) => {}
            other => panic!("expected Authenticated as {name}, got {other:?}"),
        }
    }

    /// The next message from the relay (bounded wait).
    pub fn recv(&mut self) -> Reply {
        match self.recv_within(PATIENCE) {
            Some(Ok(reply)) => reply,
            Some(Err(Closed)) => panic!("connection closed"),
            None => panic!("no reply from the relay"),
        }
    }

    /// The next message from the relay, `Err(Closed)` if the connection
    /// ended first, or `None` if nothing came within `wait`.
    pub fn recv_within(&mut self, wait: Duration) -> Option<Result<Reply, Closed>> {
        let start = StdInstant::now();
        let mut rbuf = vec![0u8; 65_536];
        while self.pending.is_empty() {
            if start.elapsed() >= wait {
                return None;
            }
            let Ok(n) = read_some(&mut self.stream, &mut rbuf) else {
                return Some(Err(Closed));
            };
            let mut input = &rbuf[..n];
            while let Some(r) = self.dec.feed(&mut input) {
                let Ok(f) = r else { continue };
                let reply = match Message::decode(f) {
                    Ok(Message::Welcome(_)) => Reply::Welcome,
                    Ok(Message::Error(e)) => Reply::Error(e.code, e.retry_after_ms),
                    Ok(Message::Grant(g)) => Reply::Grant(g),
                    Ok(Message::FilePlan(p)) => Reply::Plan(p),
                    Ok(Message::Ack(a)) => Reply::Ack(a),
                    Ok(Message::FileVerified(v)) => Reply::Verified(v.index),
                    Ok(Message::FileRejected(r)) => Reply::Rejected(r),
                    Ok(Message::BatchComplete(_)) => Reply::Complete,
                    Ok(Message::Manifest(m)) => Reply::Manifest(m),
                    Ok(Message::ManifestEntry(e)) => Reply::Entry(e.index, e.name.to_owned()),
                    Ok(Message::Data(d)) => Reply::Data(d.file, d.offset, d.bytes.len()),
                    Ok(Message::Keepalive) => Reply::Keepalive,
                    Ok(Message::Challenge(c)) => Reply::Challenge(c.nonce),
                    Ok(Message::Authenticated(a)) => Reply::Authenticated(a.user.to_owned()),
                    Ok(Message::Inbox(i)) => Reply::Inbox(i.count),
                    Ok(Message::Notice(n)) => Reply::Notice(n.id, n.code),
                    Ok(Message::Settled(s)) => Reply::Settled(s.id),
                    Ok(other) => Reply::Other(other.kind() as u8),
                    Err(e) => panic!("undecodable reply: {e}"),
                };
                self.pending.push_back(reply);
            }
        }
        self.pending.pop_front().map(Ok)
    }
}

/// The relay closed the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Deterministic test content.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The SHA-1 collision pairs from `testdata/sha1-collisions/`.
pub fn collision_pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/sha1-collisions/");
    let read =
        |n: &str| std::fs::read(format!("{dir}{n}")).unwrap_or_else(|e| panic!("{dir}{n}: {e}"));
    vec![
        (read("shattered-1.pdf"), read("shattered-2.pdf")),
        (read("sha-mbles-1.bin"), read("sha-mbles-2.bin")),
    ]
}
