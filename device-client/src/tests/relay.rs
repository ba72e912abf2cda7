//! An in-memory relay and link for the driver tests: enough of the relay's
//! side of the protocol contract to upload, resume, challenge and download,
//! with faults on demand (cut the link every N bytes, refuse connections,
//! fall silent after the welcome).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::vec::Vec;

use embedded_io::{ErrorKind, ErrorType, Read, Write};
use pickup_proto::frame::{self, Decoder};
use pickup_proto::hash::ProofHasher;
use pickup_proto::identity::{terminal_mac, DeviceKey};
use pickup_proto::message::{
    self, Ack, AuthToken, Authenticated, Challenge, Data, FilePlan, FileVerified, Grant, Kind,
    Manifest, ManifestEntry, Message, Plan, ResumeToken, Rewind, Role, Welcome, CAP_INSTANT_UPLOAD,
};
use pickup_proto::{Code, ErrorCode, Instant, Sha1Digest};

use crate::clock::Clock;
use crate::link::Connector;

#[cfg(feature = "notices")]
pub mod notices;

/// A millisecond counter shared by the clock and the link.
#[derive(Clone, Default)]
pub struct TestClock(pub Rc<Cell<u64>>);

impl Clock for TestClock {
    fn now(&self) -> Instant {
        Instant::from_millis(self.0.get())
    }
    fn wait_until(&self, deadline: Instant) {
        self.0.set(self.0.get().max(deadline.as_millis()));
    }
}

pub struct File {
    pub name: String,
    pub size: u64,
    pub sha1: Sha1Digest,
    pub data: Vec<u8>,
    pub verified: bool,
}

pub struct Batch {
    pub code: Code,
    pub token: ResumeToken,
    pub files: Vec<File>,
}

pub struct Relay {
    pub max_frame: usize,
    pub window: u32,
    pub batches: Vec<Batch>,
    /// Cut each link after this many bytes (both directions counted).
    pub cut_every: Option<usize>,
    /// Refuse this many upcoming connection attempts.
    pub refuse_connects: u32,
    /// What the test connector answers to `given_up`.
    pub connector_given_up: bool,
    /// Answer hellos, ignore everything else.
    pub mute_after_welcome: bool,
    pub connects: u32,
    /// Authenticate terminals holding this key (any name), and refuse
    /// batches and reads on a link that has not.
    pub terminal_key: Option<DeviceKey>,
    /// Links on which a terminal authenticated.
    pub authentications: u32,
    /// Names of user "owner": name, batch index.
    pub named: Vec<(String, usize)>,
    /// Upload payload bytes received, over all links.
    pub data_bytes_in: u64,
    /// Log in users presenting this token (as "owner").
    pub user_token: Option<AuthToken>,
    /// Addressed delivery (PROTOCOL.md §11).
    #[cfg(feature = "notices")]
    pub desk: notices::Desk,
    // Per link.
    generation: u32,
    decoder: Decoder<Vec<u8>>,
    out: VecDeque<u8>,
    link_bytes: usize,
    cut: bool,
    client_max_frame: usize,
    announcing: Option<(u16, Vec<File>)>,
    /// The challenge this link's terminal is to answer, and its name.
    challenge: Option<([u8; 16], String)>,
    authenticated: bool,
    /// The terminal this link authenticated as.
    link_terminal: Option<String>,
    /// The link acts for a user (a token, or a terminal for its owner).
    link_user: bool,
    /// The read handle `FetchNamed` gave on this link, and its batch.
    handle: Option<(Code, usize)>,
    /// Download stream: (batch, file, next offset, credit end).
    stream: Option<(usize, u16, u64, u64)>,
}

impl Relay {
    pub fn new(max_frame: usize) -> Rc<RefCell<Relay>> {
        Rc::new(RefCell::new(Relay {
            max_frame,
            window: 4096,
            batches: Vec::new(),
            cut_every: None,
            refuse_connects: 0,
            connector_given_up: false,
            mute_after_welcome: false,
            connects: 0,
            terminal_key: None,
            authentications: 0,
            named: Vec::new(),
            data_bytes_in: 0,
            user_token: None,
            #[cfg(feature = "notices")]
            desk: notices::Desk::default(),
            generation: 0,
            decoder: Decoder::new(vec![0; max_frame]),
            out: VecDeque::new(),
            link_bytes: 0,
            cut: false,
            client_max_frame: frame::MIN_FRAME_LEN,
            announcing: None,
            challenge: None,
            authenticated: false,
            link_terminal: None,
            link_user: false,
            handle: None,
            stream: None,
        }))
    }

    fn new_link(&mut self) {
        self.generation += 1;
        self.connects += 1;
        self.decoder.reset();
        self.out.clear();
        self.link_bytes = 0;
        self.cut = false;
        self.client_max_frame = frame::MIN_FRAME_LEN;
        self.announcing = None;
        self.challenge = None;
        self.authenticated = false;
        self.link_terminal = None;
        self.link_user = false;
        self.handle = None;
        self.stream = None;
    }

    /// The identity part of PROTOCOL.md §8 for terminals; `true` if `msg`
    /// was handled (or refused for want of authentication).
    fn identity(&mut self, msg: &Message<'_>) -> bool {
        if let Message::Authenticate(a) = *msg {
            if self.user_token.is_none() {
                return false;
            }
            if Some(a.token) == self.user_token {
                self.authenticated = true;
                self.link_user = true;
                self.send(Message::Authenticated(Authenticated {
                    user: "owner",
                    terminal: "",
                    token: AuthToken::NONE,
                    expires_at: 0,
                }));
            } else {
                self.error_for(ErrorCode::AuthFailed, Kind::Authenticate);
            }
            return true;
        }
        let Some(key) = self.terminal_key else {
            return false;
        };
        match *msg {
            Message::TerminalAuth(t) => {
                // Fresh per request: a generation and a counter.
                let mut nonce = [0u8; 16];
                nonce[..4].copy_from_slice(&self.generation.to_le_bytes());
                nonce[4..8].copy_from_slice(&self.authentications.to_le_bytes());
                nonce[8] = self.link_bytes as u8;
                self.challenge = Some((nonce, t.terminal.into()));
                self.send(Message::Challenge(Challenge { nonce }));
            }
            Message::ChallengeAnswer(a) => match self.challenge.take() {
                Some((nonce, name)) if a.mac == terminal_mac(&key, &nonce, &name) => {
                    self.authenticated = true;
                    self.link_terminal = Some(name.clone());
                    self.link_user = true;
                    self.authentications += 1;
                    self.send(Message::Authenticated(Authenticated {
                        user: "owner",
                        terminal: &name,
                        token: AuthToken::NONE,
                        expires_at: 0,
                    }));
                }
                _ => self.error_for(ErrorCode::AuthFailed, Kind::ChallengeAnswer),
            },
            Message::BatchOpen(_)
            | Message::Resume(_)
            | Message::Fetch(_)
            | Message::FetchNamed(_)
            | Message::Read(_)
                if !self.authenticated =>
            {
                self.error_for(ErrorCode::AuthRequired, msg.kind())
            }
            _ => return false,
        }
        true
    }

    fn error_for(&mut self, code: ErrorCode, kind: Kind) {
        self.send(Message::Error(message::Error {
            code,
            kind: kind as u8,
            retry_after_ms: 0,
        }));
    }

    fn count(&mut self, n: usize) {
        self.link_bytes += n;
        if self.cut_every.is_some_and(|c| self.link_bytes >= c) {
            self.cut = true;
        }
    }

    fn send(&mut self, msg: Message<'_>) {
        let mut buf = vec![0u8; frame::max_encoded_len(frame::MAX_FRAME_LEN)];
        let n = msg
            .encode(self.client_max_frame, &mut buf)
            .expect("relay message fits");
        self.out.extend(&buf[..n]);
    }

    fn receive(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        let mut frames = Vec::new();
        while let Some(r) = self.decoder.feed(&mut input) {
            if let Ok(f) = r {
                frames.push((f.version, f.kind, f.body.to_vec()));
            }
        }
        for (version, kind, body) in frames {
            let f = frame::Frame {
                version,
                kind,
                body: &body,
            };
            if let Ok(msg) = Message::decode(f) {
                self.handle(msg);
            }
        }
    }

    fn plans(&mut self, b: usize) {
        let batch = &self.batches[b];
        self.send(Message::Grant(Grant {
            code: batch.code,
            expires_at: 1_900_000_000,
            token: batch.token,
            files: batch.files.len() as u16,
        }));
        let mut plans = Vec::new();
        for (i, f) in self.batches[b].files.iter().enumerate() {
            let held = self.held(f.size, f.sha1).is_some();
            let plan = if f.verified || f.size == 0 {
                Plan::Held
            } else if held && f.data.is_empty() {
                Plan::Challenge { nonce: [9; 32] }
            } else {
                Plan::Upload {
                    offset: f.data.len() as u64,
                }
            };
            plans.push(FilePlan {
                index: i as u16,
                plan,
            });
        }
        for p in plans {
            self.send(Message::FilePlan(p));
        }
        self.complete_if_done(b);
    }

    /// `BatchComplete` once every file of batch `b` is verified (what a
    /// named upload waits for, PROTOCOL.md §8).
    fn complete_if_done(&mut self, b: usize) {
        let batch = &self.batches[b];
        if batch.files.iter().all(|f| f.verified || f.size == 0) {
            let code = batch.code;
            self.send(Message::BatchComplete(message::BatchComplete { code }));
        }
    }

    fn held(&self, size: u64, sha1: Sha1Digest) -> Option<Vec<u8>> {
        self.batches
            .iter()
            .flat_map(|b| b.files.iter())
            .find(|f| f.verified && f.size == size && f.sha1 == sha1 && size > 0)
            .map(|f| f.data.clone())
    }

    fn handle(&mut self, msg: Message<'_>) {
        if self.mute_after_welcome && !matches!(msg, Message::Hello(_)) {
            return;
        }
        if self.identity(&msg) {
            return;
        }
        #[cfg(feature = "notices")]
        if self.notices(&msg) {
            return;
        }
        match msg {
            Message::Hello(h) => {
                self.client_max_frame = h.max_frame as usize;
                self.send(Message::Welcome(Welcome {
                    version: 1,
                    role: Role::Relay,
                    max_frame: self.max_frame as u32,
                    window: self.window,
                    caps: CAP_INSTANT_UPLOAD | message::CAP_PUSH_NOTICE,
                }));
            }
            Message::BatchOpen(o) => self.announcing = Some((o.files, Vec::new())),
            Message::FileAnnounce(a) => {
                let Some((expected, files)) = self.announcing.as_mut() else {
                    return;
                };
                if usize::from(a.index) != files.len() {
                    return;
                }
                let verified = a.size == 0;
                files.push(File {
                    name: a.name.to_string(),
                    size: a.size,
                    sha1: a.sha1,
                    data: Vec::new(),
                    verified,
                });
                if files.len() == usize::from(*expected) {
                    let Some((_, files)) = self.announcing.take() else {
                        return;
                    };
                    let n = self.batches.len() as u8;
                    self.batches.push(Batch {
                        code: Code::from_random([n + 7; 16], 12),
                        token: ResumeToken([n + 1; 16]),
                        files,
                    });
                    self.plans(self.batches.len() - 1);
                }
            }
            Message::Resume(r) => match self.batches.iter().position(|b| b.token == r.token) {
                Some(b) => self.plans(b),
                None => self.error(ErrorCode::UnknownToken),
            },
            Message::Proof(p) => {
                let Some(b) = self.batches.len().checked_sub(1) else {
                    return;
                };
                let Some(f) = self.batches[b].files.get(usize::from(p.index)) else {
                    return;
                };
                let content = self.held(f.size, f.sha1).unwrap_or_default();
                let mut h = ProofHasher::new(&[9; 32]);
                h.update(&content);
                let plan = if h.finish() == p.proof {
                    let f = &mut self.batches[b].files[usize::from(p.index)];
                    f.data = content;
                    f.verified = true;
                    Plan::Held
                } else {
                    Plan::Upload { offset: 0 }
                };
                self.send(Message::FilePlan(FilePlan {
                    index: p.index,
                    plan,
                }));
                self.complete_if_done(b);
            }
            Message::Data(d) => self.on_data(d),
            // Acknowledged, as a relay does: the names of the batch are
            // then bound when it completes.
            Message::NamedPut => self.send(Message::Done(message::Done {
                kind: Kind::NamedPut as u8,
            })),
            Message::Fetch(f) => match self.batches.iter().position(|b| b.code == f.code) {
                Some(b) => self.manifest(b, f.code),
                None => self.error(ErrorCode::UnknownCode),
            },
            Message::FetchNamed(f) => match self.named.iter().position(|n| n.0 == f.name) {
                Some(i) if f.owner == "owner" => {
                    // A handle of this link only, as a real relay's.
                    let code =
                        Code::from_parts(Code::DEFAULT_LEN, 0x1000 + u128::from(self.generation))
                            .expect("a code");
                    self.handle = Some((code, self.named[i].1));
                    self.manifest(self.named[i].1, code);
                }
                _ => self.error(ErrorCode::UnknownCode),
            },
            Message::Read(r) => {
                let by_handle = self.handle.filter(|h| h.0 == r.code).map(|h| h.1);
                if let Some(b) =
                    by_handle.or_else(|| self.batches.iter().position(|b| b.code == r.code))
                {
                    self.stream = Some((b, r.file, r.offset, r.offset + u64::from(r.len)));
                }
            }
            Message::Ack(a) => {
                if let Some((_, file, _, credit)) = self.stream.as_mut() {
                    if *file == a.file {
                        *credit = (*credit).max(a.offset + u64::from(a.window));
                    }
                }
            }
            _ => {}
        }
    }

    /// The manifest of batch `b`, under `code`.
    fn manifest(&mut self, b: usize, code: Code) {
        let batch = &self.batches[b];
        let total: u64 = batch.files.iter().map(|f| f.size).sum();
        let received: u64 = batch.files.iter().map(|f| f.data.len() as u64).sum();
        let ready = batch.files.iter().all(|f| f.verified);
        let entries: Vec<(u64, Sha1Digest, u64, String)> = batch
            .files
            .iter()
            .map(|f| (f.size, f.sha1, f.data.len() as u64, f.name.clone()))
            .collect();
        self.send(Message::Manifest(Manifest {
            code,
            expires_at: 1_900_000_000,
            files: entries.len() as u16,
            total_size: total,
            received,
            ready,
        }));
        for (i, (size, sha1, received, name)) in entries.iter().enumerate() {
            self.send(Message::ManifestEntry(ManifestEntry {
                index: i as u16,
                size: *size,
                sha1: *sha1,
                received: *received,
                name,
            }));
        }
    }

    fn error(&mut self, code: ErrorCode) {
        self.send(Message::Error(message::Error {
            code,
            kind: 0,
            retry_after_ms: 0,
        }));
    }

    fn on_data(&mut self, d: Data<'_>) {
        let Some(b) = self.batches.len().checked_sub(1) else {
            return;
        };
        let Some(f) = self.batches[b].files.get_mut(usize::from(d.file)) else {
            return;
        };
        if f.verified {
            return;
        }
        let have = f.data.len() as u64;
        if d.offset > have {
            self.send(Message::Rewind(Rewind {
                file: d.file,
                offset: have,
            }));
            return;
        }
        let skip = (have - d.offset) as usize;
        if skip < d.bytes.len() {
            f.data.extend_from_slice(&d.bytes[skip..]);
            self.data_bytes_in += (d.bytes.len() - skip) as u64;
        }
        let offset = f.data.len() as u64;
        let done = offset >= f.size;
        let good = Sha1Digest::of(&f.data) == f.sha1;
        if done {
            f.verified = good;
        }
        let window = self.window;
        self.send(Message::Ack(Ack {
            file: d.file,
            offset,
            window,
        }));
        if done {
            assert!(good, "test uploads are never corrupt");
            self.send(Message::FileVerified(FileVerified { index: d.file }));
            self.complete_if_done(b);
        }
    }

    /// Next download data frame, if the stream has credit.
    fn stream_more(&mut self) {
        let Some((b, file, offset, credit)) = self.stream else {
            return;
        };
        let Some(f) = self.batches[b].files.get(usize::from(file)) else {
            return;
        };
        let end = (f.data.len() as u64).min(credit);
        if offset >= end {
            return;
        }
        let room = Data::max_payload(self.client_max_frame) as u64;
        let n = room.min(end - offset) as usize;
        let start = offset as usize;
        let bytes = f.data[start..start + n].to_vec();
        self.send(Message::Data(Data {
            file,
            offset,
            bytes: &bytes,
        }));
        self.stream = Some((b, file, offset + n as u64, credit));
    }
}

pub struct MemConnector {
    pub relay: Rc<RefCell<Relay>>,
    pub clock: TestClock,
}

pub struct MemLink<'a> {
    relay: &'a RefCell<Relay>,
    clock: &'a TestClock,
    generation: u32,
}

impl Connector for MemConnector {
    type IoError = ErrorKind;
    type Link<'a> = MemLink<'a>;
    type ConnectError = ();
    fn connect(&mut self) -> Result<MemLink<'_>, ()> {
        let mut r = self.relay.borrow_mut();
        if r.refuse_connects > 0 {
            r.refuse_connects -= 1;
            // A failed dial takes time too.
            self.clock.0.set(self.clock.0.get() + 1);
            return Err(());
        }
        r.new_link();
        Ok(MemLink {
            relay: &self.relay,
            clock: &self.clock,
            generation: r.generation,
        })
    }

    fn given_up(&self) -> bool {
        self.relay.borrow().connector_given_up
    }
}

impl ErrorType for MemLink<'_> {
    type Error = ErrorKind;
}

impl Write for MemLink<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        let mut r = self.relay.borrow_mut();
        if r.generation != self.generation || r.cut {
            return Err(ErrorKind::BrokenPipe);
        }
        r.count(buf.len());
        if !r.cut {
            r.receive(buf);
        }
        // Bytes written into a link that is being cut are simply lost.
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

impl Read for MemLink<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let mut r = self.relay.borrow_mut();
        if r.generation != self.generation || r.cut {
            return Ok(0);
        }
        if r.out.is_empty() {
            r.stream_more();
        }
        if r.out.is_empty() {
            // The read timeout of a real link.
            self.clock.0.set(self.clock.0.get() + 5);
            return Err(ErrorKind::TimedOut);
        }
        let n = buf.len().min(r.out.len());
        for (slot, byte) in buf.iter_mut().zip(r.out.drain(..n)) {
            *slot = byte;
        }
        r.count(n);
        Ok(n)
    }
}
