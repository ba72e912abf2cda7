//! A small test client for the real `pickup-relay` binary: it starts the
//! relay on a free port with a temporary data directory, and drives the
//! terminals' state machines from `pickup-proto` over a byte stream (a
//! `TcpStream` or a pseudo-terminal).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant as StdInstant};

use pickup_proto::download::{self, Sink};
use pickup_proto::frame::Decoder;
use pickup_proto::message::{
    Ack, FilePlan, FileRejected, Grant, Hello, Manifest, ManifestEntry, Message, ResumeToken, Role,
    CAP_INSTANT_UPLOAD,
};
use pickup_proto::storage::{ReadAt, WriteAt};
use pickup_proto::upload::{self, FileMeta};
use pickup_proto::{Code, ErrorCode, Instant, Sha1Digest};

/// Every wait in these tests is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A running relay process.
pub struct Relay {
    child: Child,
    pub addr: SocketAddr,
    pub data: PathBuf,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Relay {
    /// Starts `pickup-relay serve` on 127.0.0.1 (port chosen by the OS) with
    /// `data` as its data directory, an optional TOML config and extra flags.
    pub fn start(data: &Path, config: Option<&str>, extra: &[&str]) -> Relay {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pickup-relay"));
        cmd.arg("serve")
            .args(["--tcp", "127.0.0.1:0", "--data"])
            .arg(data);
        if let Some(text) = config {
            let path = data.with_extension("toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        cmd.args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut relay = Relay {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            data: data.to_owned(),
            lines,
            log: Vec::new(),
        };
        let line = relay.wait_for_log("listening:");
        let tcp = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("tcp="))
            .unwrap_or_else(|| panic!("no tcp listener in {line:?}"));
        relay.addr = tcp.parse().unwrap();
        relay
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let end = StdInstant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(StdInstant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("relay never logged {needle:?}; log so far: {:#?}", self.log),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit (bounded).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let end = StdInstant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(StdInstant::now() < end, "relay did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A byte stream the drivers can use: reads time out instead of blocking.
pub trait Wire: Read + Write {}
impl<T: Read + Write> Wire for T {}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    s.set_nodelay(true).unwrap();
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
pub struct UploadRun {
    pub grant: Option<Grant>,
    pub events: Vec<upload::Event>,
    pub acked: u64,
    pub error: Option<upload::Error>,
    pub finished: bool,
}

impl UploadRun {
    pub fn code(&self) -> Code {
        self.grant.expect("a grant").code
    }
    pub fn token(&self) -> ResumeToken {
        self.grant.expect("a grant").token
    }
    pub fn resumed_at(&self) -> Option<u64> {
        self.events.iter().find_map(|e| match e {
            upload::Event::Uploading { offset, .. } => Some(*offset),
            _ => None,
        })
    }
    pub fn linked(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, upload::Event::Linked { .. }))
    }
    pub fn complete(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, upload::Event::Complete { .. }))
    }
}

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
    let data: Vec<Vec<u8>> = files.iter().map(|f| f.1.clone()).collect();
    let mut c = match token {
        Some(t) => upload::Session::<'_, 16>::resume(config, &metas, t).unwrap(),
        None => upload::Session::<'_, 16>::new(config, &metas).unwrap(),
    };
    let start = StdInstant::now();
    let mut dec = Decoder::new(vec![0u8; config.max_frame as usize]);
    let mut out = vec![0u8; 70_000];
    let mut rbuf = vec![0u8; 65_536];
    let mut events = Vec::new();
    c.handle_connected(now(start));
    loop {
        assert!(start.elapsed() < DEADLINE, "upload timed out: {events:?}");
        let mut source: &[Vec<u8>] = &data;
        while let Some(n) = c.poll_transmit(now(start), &mut source, &mut out).unwrap() {
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

/// An in-memory download sink.
#[derive(Default)]
pub struct MemSink {
    pub files: Vec<Vec<u8>>,
    pub names: Vec<String>,
}

impl ReadAt for MemSink {
    type Error = std::convert::Infallible;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let d = &self.files[usize::from(file)];
        let start = (offset as usize).min(d.len());
        let n = buf.len().min(d.len() - start);
        buf[..n].copy_from_slice(&d[start..start + n]);
        Ok(n)
    }
}

impl WriteAt for MemSink {
    type Error = std::convert::Infallible;
    fn write_at(&mut self, file: u16, offset: u64, data: &[u8]) -> Result<(), Self::Error> {
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
    fn open(&mut self, entry: &ManifestEntry<'_>) -> Result<u64, std::convert::Infallible> {
        self.files.push(Vec::new());
        self.names.push(entry.name.to_owned());
        Ok(0)
    }
    fn truncate(&mut self, file: u16) -> Result<(), std::convert::Infallible> {
        self.files[usize::from(file)].clear();
        Ok(())
    }
    fn finish(&mut self, _file: u16) -> Result<(), std::convert::Infallible> {
        Ok(())
    }
}

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
) -> Result<MemSink, download::Error> {
    let mut c = download::Session::<64>::new(config, code);
    let mut sink = MemSink::default();
    let start = StdInstant::now();
    let mut dec = Decoder::new(vec![0u8; config.max_frame as usize]);
    let mut out = vec![0u8; 70_000];
    let mut rbuf = vec![0u8; 65_536];
    c.handle_connected(now(start));
    loop {
        assert!(start.elapsed() < DEADLINE, "download timed out");
        while let Some(n) = c.poll_transmit(now(start), &mut sink, &mut out).unwrap() {
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
                        c.handle_frame(now(start), f, &mut sink).unwrap();
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
pub fn download_tcp(addr: SocketAddr, code: Code) -> Result<MemSink, download::Error> {
    download(&mut connect(addr), download_config(65_536, 1 << 20), code)
}

/// A message from the relay, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Welcome,
    Error(ErrorCode, u32),
    Grant(Grant),
    Plan(FilePlan),
    Ack(Ack),
    Verified(u16),
    Rejected(FileRejected),
    Complete,
    Manifest(Manifest),
    Entry(u16, String),
    Data(u16, u64, usize),
    Keepalive,
    Other(u8),
}

/// A hand-driven connection for messages a well-behaved terminal never sends.
pub struct Raw {
    pub stream: TcpStream,
    dec: Decoder<Vec<u8>>,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<Reply>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: connect(addr),
            dec: Decoder::new(vec![0u8; 65_536]),
            buf: vec![0u8; 70_000],
            pending: Default::default(),
        }
    }

    pub fn send(&mut self, msg: Message<'_>) {
        let n = msg.encode(65_536, &mut self.buf).unwrap();
        self.stream.write_all(&self.buf[..n]).unwrap();
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn hello(&mut self) {
        self.send(Message::Hello(Hello {
            version: 1,
            role: Role::Terminal,
            max_frame: 65_536,
            window: 1 << 20,
            caps: CAP_INSTANT_UPLOAD,
        }));
        assert_eq!(self.recv(), Reply::Welcome);
    }

    /// The next message from the relay (bounded wait).
    pub fn recv(&mut self) -> Reply {
        let start = StdInstant::now();
        let mut rbuf = vec![0u8; 65_536];
        while self.pending.is_empty() {
            assert!(start.elapsed() < DEADLINE, "no reply from the relay");
            let n = read_some(&mut self.stream, &mut rbuf).expect("connection closed");
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
                    Ok(other) => Reply::Other(other.kind() as u8),
                    Err(e) => panic!("undecodable reply: {e}"),
                };
                self.pending.push_back(reply);
            }
        }
        self.pending.pop_front().unwrap()
    }
}

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
    let read = |n: &str| std::fs::read(format!("{dir}{n}")).unwrap();
    vec![
        (read("shattered-1.pdf"), read("shattered-2.pdf")),
        (read("sha-mbles-1.bin"), read("sha-mbles-2.bin")),
    ]
}
