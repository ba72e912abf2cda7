//! A hand-driven protocol connection for the attacks: frames built with
//! `pickup_proto`'s encoders and sent from a chosen loopback address, replies
//! decoded into an owned [`Reply`]. Nothing here panics on what the relay
//! sends; every wait is bounded.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pickup_proto::frame::{max_encoded_len, Decoder, MAX_FRAME_LEN};
use pickup_proto::message::{
    BatchOpen, FileAnnounce, FilePlan, Grant, Hello, Message, Role, CAP_INSTANT_UPLOAD,
};
use pickup_proto::{ErrorCode, Sha1Digest};

/// How long connecting, a blocked write and [`Conn::expect`] wait (so [`Conn::open`]
/// waits this long for `Welcome`).
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A message from the relay, owned, reduced to what the attacks look at.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `Welcome`.
    Welcome,
    /// `Error`: its code and `retry_after_ms`.
    Error(ErrorCode, u32),
    /// `Grant`.
    Grant(Grant),
    /// `FilePlan`.
    Plan(FilePlan),
    /// `Ack`: file and durable offset.
    Ack(u16, u64),
    /// `BatchComplete`.
    Complete,
    /// `Manifest`: whether the batch is ready.
    Manifest(bool),
    /// Any other kind, by its byte.
    Other(u8),
}

/// Opens a TCP connection to the loopback `relay` from the loopback address
/// `source`: the relay counts each source address as one peer, so binding
/// 127.0.0.2 before connecting makes an attacker the relay tells apart from
/// the honest terminal on 127.0.0.1.
pub fn connect_from(relay: SocketAddr, source: Ipv4Addr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    if !relay.ip().is_loopback() || !source.is_loopback() {
        return Err(io::Error::other(format!(
            "attacks stay on loopback: {source} -> {relay}"
        )));
    }
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((source, 0)).into())?;
    s.connect_timeout(&relay.into(), PATIENCE)?;
    let s: TcpStream = s.into();
    s.set_nodelay(true)?;
    // Short reads let every loop look at its stop flag and its deadline.
    s.set_read_timeout(Some(Duration::from_millis(20)))?;
    s.set_write_timeout(Some(PATIENCE))?;
    Ok(s)
}

/// One attacking session.
pub struct Conn {
    /// The connection.
    pub stream: TcpStream,
    decoder: Decoder<Vec<u8>>,
    tx: Vec<u8>,
    rx: Vec<u8>,
    pending: VecDeque<Reply>,
    /// Bytes written to the relay so far.
    pub sent: u64,
}

impl Conn {
    /// Connects from `source` and says hello as a terminal that offers
    /// instant upload (so held content draws challenges).
    pub fn open(relay: SocketAddr, source: Ipv4Addr) -> io::Result<Conn> {
        let mut c = Conn {
            stream: connect_from(relay, source)?,
            decoder: Decoder::new(vec![0u8; MAX_FRAME_LEN]),
            tx: vec![0u8; max_encoded_len(MAX_FRAME_LEN)],
            rx: vec![0u8; 64 * 1024],
            pending: VecDeque::new(),
            sent: 0,
        };
        c.send(Message::Hello(Hello {
            version: pickup_proto::PROTOCOL_VERSION,
            role: Role::Terminal,
            max_frame: MAX_FRAME_LEN as u32,
            window: 1 << 20,
            caps: CAP_INSTANT_UPLOAD,
        }))?;
        match c.expect(|r| matches!(r, Reply::Welcome).then_some(()))? {
            Ok(()) => Ok(c),
            // E.g. `Busy`: the address has used its sessions.
            Err(code) => Err(io::Error::other(format!("hello refused: {code:?}"))),
        }
    }

    /// Encodes `msg` into a frame.
    pub fn frame(msg: Message<'_>) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; max_encoded_len(MAX_FRAME_LEN)];
        let n = msg
            .encode(MAX_FRAME_LEN, &mut buf)
            .map_err(|e| io::Error::other(format!("encode {:?}: {e:?}", msg.kind())))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Sends one message.
    pub fn send(&mut self, msg: Message<'_>) -> io::Result<()> {
        let n = msg
            .encode(MAX_FRAME_LEN, &mut self.tx)
            .map_err(|e| io::Error::other(format!("encode {:?}: {e:?}", msg.kind())))?;
        self.stream.write_all(&self.tx[..n])?;
        self.sent += n as u64;
        Ok(())
    }

    /// Sends frames already encoded.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.sent += bytes.len() as u64;
        Ok(())
    }

    /// Announces a batch of `files` (name, size, SHA-1), one message each.
    pub fn announce(&mut self, files: &[(String, u64, Sha1Digest)]) -> io::Result<()> {
        self.send(Message::BatchOpen(BatchOpen {
            files: files.len() as u16,
            total_size: files.iter().map(|f| f.1).sum(),
        }))?;
        for (i, (name, size, sha1)) in files.iter().enumerate() {
            self.send(Message::FileAnnounce(FileAnnounce {
                index: i as u16,
                size: *size,
                sha1: *sha1,
                name,
            }))?;
        }
        Ok(())
    }

    /// The next reply, or `None` if nothing came within `wait`; an error if
    /// the relay closed the connection.
    pub fn recv_within(&mut self, wait: Duration) -> io::Result<Option<Reply>> {
        let start = Instant::now();
        while self.pending.is_empty() {
            let n = match self.stream.read(&mut self.rx) {
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "the relay closed the connection",
                    ))
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    0
                }
                Err(e) => return Err(e),
            };
            let mut input = &self.rx[..n];
            while let Some(r) = self.decoder.feed(&mut input) {
                // A damaged frame says nothing an attacker needs.
                let Ok(frame) = r else { continue };
                let reply = match Message::decode(frame) {
                    Ok(Message::Welcome(_)) => Reply::Welcome,
                    Ok(Message::Error(e)) => Reply::Error(e.code, e.retry_after_ms),
                    Ok(Message::Grant(g)) => Reply::Grant(g),
                    Ok(Message::FilePlan(p)) => Reply::Plan(p),
                    Ok(Message::Ack(a)) => Reply::Ack(a.file, a.offset),
                    Ok(Message::BatchComplete(_)) => Reply::Complete,
                    Ok(Message::Manifest(m)) => Reply::Manifest(m.ready),
                    Ok(other) => Reply::Other(other.kind() as u8),
                    Err(_) => continue,
                };
                self.pending.push_back(reply);
            }
            if self.pending.is_empty() && start.elapsed() >= wait {
                return Ok(None);
            }
        }
        Ok(self.pending.pop_front())
    }

    /// Reads replies until `pick` takes one or an `Error` arrives, within
    /// [`PATIENCE`]. `Ok(Err(code))` is the relay's refusal.
    pub fn expect<T>(
        &mut self,
        mut pick: impl FnMut(&Reply) -> Option<T>,
    ) -> io::Result<Result<T, ErrorCode>> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left)? {
                Some(Reply::Error(code, _)) => return Ok(Err(code)),
                Some(r) => {
                    if let Some(t) = pick(&r) {
                        return Ok(Ok(t));
                    }
                }
                None => {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        format!("no answer from the relay within {PATIENCE:?}"),
                    ))
                }
            }
        }
    }

    /// The grant and the first file's plan of a batch just announced (or
    /// resumed), or the relay's refusal.
    pub fn grant_and_plan(&mut self) -> io::Result<Result<(Grant, FilePlan), ErrorCode>> {
        let grant = match self.expect(|r| match r {
            Reply::Grant(g) => Some(*g),
            _ => None,
        })? {
            Ok(g) => g,
            Err(code) => return Ok(Err(code)),
        };
        let plan = self.expect(|r| match r {
            Reply::Plan(p) if p.index == 0 => Some(*p),
            _ => None,
        })?;
        Ok(plan.map(|p| (grant, p)))
    }

    /// Reads and drops whatever has arrived (a session that stays open
    /// must not let the relay's replies pile up, unless that is the attack).
    pub fn drain(&mut self) -> io::Result<()> {
        while self.recv_within(Duration::ZERO)?.is_some() {}
        Ok(())
    }
}
