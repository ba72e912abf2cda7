//! The relay's session logic driven by fuzzer bytes (the `relay_session`
//! fuzz target is a one-liner over [`drive_relay`]).
//!
//! Up to three terminals talk to one [`Relay`] over a [`MemoryStore`]; the
//! input decides who says what and when, including crashes of the relay
//! (which lose every byte not made durable). Plausible messages are built
//! from what the relay said so far (its codes, tokens and challenge
//! nonces), so the fuzzer reaches uploads, resumes, proofs and downloads
//! without guessing secrets.
//!
//! Invariants, checked on every frame the relay sends:
//! - it is one valid frame within the terminal's announced `max_frame`
//!   (64 bytes before the terminal's hello);
//! - an `Ack` or `FilePlan::Upload` offset never exceeds the durable bytes
//!   in the store, and a crash never loses bytes an ack promised;
//! - data served to a `Read` is exactly the announced file's content
//!   (uploads announce SHA-1s of fixed contents, so anything else means the
//!   relay verified or served wrong bytes), and only from a complete batch;
//! - a session's timer is never left in the past after `handle_timeout`,
//!   and its output always runs dry;
//! - identity and named files keep theirs (the `identity` module's doc).

use std::collections::BTreeMap;
use std::sync::Arc;

use pickup_proto::code::Code;
use pickup_proto::frame::{self, Decoder, Frame};
use pickup_proto::hash::{Nonce, ProofHasher, Sha1Digest};
use pickup_proto::message::{
    Ack, BatchOpen, Fetch, FileAnnounce, Hello, Message, Plan, Proof, Read, Resume, ResumeToken,
    Role, CAP_INSTANT_UPLOAD,
};
use pickup_proto::{Duration, Instant};
use pickup_relay::codes::code_key;
use pickup_relay::directory::MemoryDirectory;
use pickup_relay::disclosure::{DisclosureMode, DisclosureSettings};
use pickup_relay::random::SeededRandom;
use pickup_relay::rate_limit::Peer;
use pickup_relay::store::memory::MemoryStore;
use pickup_relay::store::{FileContent, Lookup, Store};
use pickup_relay::{Job, Link, Relay, Session, Settings};

mod identity;
mod notices;

/// File contents the terminals announce: their SHA-1s are honest.
const CONTENTS: [&[u8]; 4] = [
    &CONTENT_A,
    b"pickup",
    b"",
    b"the same six bytes are not needed twice",
];
const NAMES: [&str; 6] = ["a.bin", "b.txt", "empty", "../up", "", "c:d"];
const CONTENT_A: [u8; 700] = {
    let mut a = [0u8; 700];
    let mut i = 0;
    while i < a.len() {
        a[i] = (i * 13 + 5) as u8;
        i += 1;
    }
    a
};
/// Where the clock starts (Unix milliseconds).
const START: Instant = Instant::from_millis(1_790_000_000_000);
/// Terminals at once.
const TERMINALS: usize = 3;
/// Frames drained per transmit operation before it counts as endless.
const MAX_DRAIN: usize = 20_000;

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

/// What one terminal's connection knows.
struct Terminal {
    session: Session,
    decoder: Decoder<Vec<u8>>,
    /// The terminal's `max_frame` from its hello (64 until then).
    max_frame: usize,
    /// The batch of the last grant on this connection.
    code: Option<Code>,
    /// Challenge nonces by file index.
    nonces: BTreeMap<u16, Nonce>,
    /// The batch and file of the last `Read`, to check served data.
    reading: Option<(Code, u16)>,
    /// A job taken from the session and not yet run (deferred mode).
    job: Option<Job>,
    /// When the session last took any input: replies waiting in its outbox
    /// were produced no later than this.
    last_input: Instant,
    /// What the connection said and was told about identity.
    id: identity::Conn,
    /// What the connection said and was told about notices.
    notices: notices::Conn,
}

impl Terminal {
    /// Notes what the terminal sent, however it was made (plausible, raw
    /// frame or noise: the fuzzer may find a handle or a credential).
    fn sent(
        &mut self,
        ids: &identity::Run,
        book: &mut notices::Book,
        now: Instant,
        msg: &Message<'_>,
    ) {
        if let Message::Read(r) = msg {
            self.reading = Some((r.code, r.file));
        }
        identity::note_sent(&mut self.id, ids, msg);
        self.notices.may_be_terminal |= self.id.answered_as_terminal();
        notices::note_sent(&mut self.notices, book, now.as_millis() / 1000, msg);
    }

    /// Runs the job taken and every job the session gives out, at once.
    fn run_jobs(&mut self, relay: &Relay, now: Instant) {
        for _ in 0..MAX_DRAIN {
            let Some(job) = self.job.take().or_else(|| self.session.poll_job()) else {
                return;
            };
            self.last_input = now;
            self.session.handle_job_done(now, job.run(relay));
        }
        panic!("the session never stops giving out jobs");
    }

    /// As a transport does before it reads more: runs jobs until the
    /// session asks for input again.
    fn wait_for_input(&mut self, relay: &Relay, now: Instant) {
        for _ in 0..MAX_DRAIN {
            if self.session.wants_input() {
                return;
            }
            let Some(job) = self.job.take().or_else(|| self.session.poll_job()) else {
                // No job and no input wanted: its replies wait to be read
                // (over the outbox's bound). A transport would write them
                // before it reads again; this terminal sends before it
                // reads, and the session must survive that too.
                return;
            };
            self.last_input = now;
            self.session.handle_job_done(now, job.run(relay));
        }
        panic!("the session never asks for input again");
    }
}

/// What the run knows about a batch the relay granted.
#[derive(Debug, Clone)]
struct Batch {
    token: ResumeToken,
    /// Expiry from the grant, seconds since the Unix epoch.
    expires_at: u64,
    /// Number of files.
    files: u16,
    /// Each file's announced SHA-1, from the store at the grant.
    sha1s: Vec<Sha1Digest>,
}

struct Fuzz {
    now: Instant,
    settings: Settings,
    link: Link,
    store: Arc<MemoryStore>,
    /// Users and terminals: outlive a crash, as a database would.
    directory: Arc<MemoryDirectory>,
    relay: Arc<Relay>,
    terminals: [Option<Terminal>; TERMINALS],
    /// What each terminal announced last, by file index: which of
    /// [`CONTENTS`]. A terminal knows its files across connections.
    announced: [Vec<usize>; TERMINALS],
    batches: BTreeMap<Code, Batch>,
    /// Tokens given out, across connections.
    ids: identity::Run,
    /// Deliveries, receipts and refusals, across connections and crashes.
    book: notices::Book,
    out: Vec<u8>,
    seed: u64,
    trace: bool,
    /// Session jobs run at the next `timers` operation (as on TCP's
    /// blocking pool) rather than right after each operation.
    deferred: bool,
}

/// What a run did, so tests can check that an input got somewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelaySummary {
    /// Batches granted.
    pub grants: u32,
    /// Files verified.
    pub verified: u32,
    /// Data bytes served to downloaders.
    pub served: u64,
    /// Relay crashes.
    pub crashes: u32,
    /// Challenges (instant upload) the relay issued.
    pub challenges: u32,
    /// `Authenticated` answers.
    pub authenticated: u32,
    /// `AuthFailed` refusals.
    pub auth_failed: u32,
    /// `RateLimited` refusals (of any request).
    pub rate_limited: u32,
    /// Manifests under a read handle (`FetchNamed`, `ListNamed`).
    pub named_manifests: u32,
    /// Data bytes served through read handles.
    pub named_served: u64,
    /// `Delivery` answers (to `Push` and `DeliveryStatus`).
    pub deliveries: u32,
    /// `Inbox` answers to `Listen`.
    pub inboxes: u32,
    /// `Notice`s sent (in an inbox or live).
    pub notices: u32,
    /// `Settled` answers.
    pub settled: u32,
}

/// Runs the relay session logic on fuzzer bytes; panics if an invariant breaks.
///
/// Setup byte: `bits 0-1` link frame size (64, 256, 1024, 4096), `bit 2`
/// instant upload off, `bit 3` tight limits (2 files, 1000-byte files and
/// a 2000-byte quota), `bit 4` a 60-second code lifetime, `bit 5` deferred
/// jobs (run at the next `timers` operation, or when the session waits for
/// one before it takes more input), `bits 6-7` what instant upload may
/// reveal (0 a threshold of 2 owners, 1 owner only, 2-3 open; 3 also
/// refuses anonymous uploads and downloads). Then operations,
/// one byte each (`op % 10`) with the terminal in the top bits
/// (`op / 10 % 3`), and operands after them.
///
/// Every run starts with users ada (password `ada-pw`) and bob (`bob-pw`)
/// and terminal t1 of ada's (key 16 × 7). A plausible message (`say`)
/// picks its request by a selector byte: below 224 transfers, 224..240
/// addressed delivery and doorbell wakes (the `notices` module), 240 and
/// up identity and named files (the `identity` module).
pub fn drive_relay(data: &[u8]) -> RelaySummary {
    run(data, false)
}

/// [`drive_relay`], printing every operation and every relay message to
/// stderr: for reading a crash input (`cargo run -p pickup-tests --example
/// replay_fuzz -- relay_session FILE`).
pub fn drive_relay_traced(data: &[u8]) -> RelaySummary {
    run(data, true)
}

fn run(data: &[u8], trace: bool) -> RelaySummary {
    let mut input = Input(data);
    let mut summary = RelaySummary::default();
    let Some(setup) = input.byte() else {
        return summary;
    };
    let mut settings = Settings {
        instant_upload: setup & 0x04 == 0,
        ack_delay: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(60),
        ..Settings::default()
    };
    if setup & 0x08 != 0 {
        settings.max_files_per_batch = 2;
        settings.max_file_size = 1000;
        settings.max_batch_size = 1500;
        settings.quota.disk_quota = 2000;
    }
    settings.disclosure = DisclosureSettings {
        mode: match setup >> 6 {
            0 => DisclosureMode::Threshold,
            1 => DisclosureMode::OwnerOnly,
            _ => DisclosureMode::Open,
        },
        threshold_max: 2,
    };
    if setup >> 6 == 3 {
        settings.auth.allow_anonymous_upload = false;
        settings.auth.allow_anonymous_download = false;
    }
    settings.push = notices::push_settings();
    if setup & 0x10 != 0 {
        settings.code_ttl_secs = 60;
        settings.expired_memory_secs = 120;
    }
    let link = Link {
        max_frame: [64, 256, 1024, 4096][usize::from(setup & 3)],
        window: 1024,
        encrypted: false,
    };
    let store = Arc::new(MemoryStore::new());
    let directory = identity::directory();
    let relay = Relay::with_directory(
        settings.clone(),
        store.clone(),
        directory.clone(),
        Box::new(SeededRandom::new(u64::from(setup))),
        START,
    );
    let mut fuzz = Fuzz {
        now: START,
        settings,
        link,
        store,
        directory,
        relay,
        terminals: [None, None, None],
        announced: [Vec::new(), Vec::new(), Vec::new()],
        batches: BTreeMap::new(),
        ids: identity::Run::default(),
        book: notices::Book::default(),
        out: vec![0; frame::max_encoded_len(frame::MAX_FRAME_LEN)],
        seed: u64::from(setup),
        trace,
        deferred: setup & 0x20 != 0,
    };
    fuzz.log(format_args!(
        "setup {setup:#04x}: {:?}, link {:?}",
        fuzz.settings, fuzz.link
    ));
    while let Some(op) = input.byte() {
        let t = usize::from(op / 10) % TERMINALS;
        let name = [
            "connect",
            "disconnect",
            "advance",
            "frame",
            "say",
            "noise",
            "crash",
            "sweep",
            "transmit",
            "timers",
        ];
        fuzz.log(format_args!(
            "op {} for terminal {t}",
            name[usize::from(op % 10)]
        ));
        let done = match op % 10 {
            0 => fuzz.connect(t),
            1 => {
                if let Some(mut term) = fuzz.terminals[t].take() {
                    term.session.handle_disconnected(fuzz.now);
                }
                Some(())
            }
            2 => input.u16().map(|ms| {
                // Large steps reach expiry: the high bit means seconds.
                let d = if ms & 0x8000 != 0 {
                    Duration::from_secs(u64::from(ms & 0x7fff))
                } else {
                    Duration::from_millis(u64::from(ms))
                };
                fuzz.now = fuzz.now + d;
            }),
            3 => {
                let frame = (|| {
                    let kind = input.byte()?;
                    let len = input.byte()?;
                    Some((kind, input.bytes(usize::from(len))?))
                })();
                frame.map(|(kind, body)| {
                    fuzz.frame(
                        t,
                        Frame {
                            version: 1,
                            kind,
                            body,
                        },
                    )
                })
            }
            4 => fuzz.plausible(t, &mut input),
            5 => {
                let noise = (|| {
                    let len = input.byte()?;
                    input.bytes(usize::from(len))
                })();
                noise.map(|n| fuzz.noise(t, n))
            }
            6 => {
                summary.crashes += 1;
                fuzz.crash();
                Some(())
            }
            7 => {
                let _ = fuzz.relay.sweep(fuzz.now);
                Some(())
            }
            8 => {
                fuzz.transmit(t, &mut summary);
                Some(())
            }
            _ => {
                fuzz.timers(&mut summary);
                Some(())
            }
        };
        if done.is_none() {
            break;
        }
        let (relay, now, deferred) = (fuzz.relay.clone(), fuzz.now, fuzz.deferred);
        for term in fuzz.terminals.iter_mut().flatten() {
            if deferred {
                if term.job.is_none() {
                    term.job = term.session.poll_job();
                }
            } else {
                term.run_jobs(&relay, now);
            }
        }
        fuzz.check_deliveries();
    }
    // Whatever is left must drain: the driver runs every job it is given.
    for t in 0..TERMINALS {
        let (relay, now) = (fuzz.relay.clone(), fuzz.now);
        if let Some(term) = fuzz.terminals[t].as_mut() {
            term.run_jobs(&relay, now);
        }
        fuzz.transmit(t, &mut summary);
    }
    summary
}

impl Fuzz {
    fn log(&self, args: core::fmt::Arguments<'_>) {
        if self.trace {
            eprintln!("[{:>8} ms] {args}", (self.now - START).as_millis());
        }
    }

    fn connect(&mut self, t: usize) -> Option<()> {
        if let Some(mut old) = self.terminals[t].take() {
            // The transport finishes the session's jobs after the link is
            // gone: what it received becomes durable.
            old.session.handle_disconnected(self.now);
            old.run_jobs(&self.relay, self.now);
        }
        if let Ok(session) =
            Session::new(self.relay.clone(), Peer::Sim(t as u64), self.link, self.now)
        {
            self.terminals[t] = Some(Terminal {
                session,
                decoder: Decoder::new(vec![0; frame::MAX_FRAME_LEN]),
                max_frame: frame::MIN_FRAME_LEN,
                code: None,
                nonces: BTreeMap::new(),
                reading: None,
                job: None,
                last_input: self.now,
                id: identity::Conn::default(),
                notices: notices::Conn::default(),
            });
        }
        Some(())
    }

    fn frame(&mut self, t: usize, f: Frame<'_>) {
        let now = self.now;
        if let Some(term) = self.terminals[t].as_mut() {
            let msg = Message::decode(f);
            if let Ok(Message::Hello(h)) = msg {
                term.max_frame =
                    (h.max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN);
            }
            if let Ok(msg) = msg {
                term.sent(&self.ids, &mut self.book, now, &msg);
            }
            term.wait_for_input(&self.relay, now);
            term.last_input = now;
            term.session.handle_frame(now, f);
        }
    }

    fn message(&mut self, t: usize, msg: &Message<'_>) {
        let mut wire = vec![0u8; frame::max_encoded_len(frame::MAX_FRAME_LEN)];
        let Ok(n) = msg.encode(frame::MAX_FRAME_LEN, &mut wire) else {
            return;
        };
        let mut decoder = Decoder::new(vec![0u8; frame::MAX_FRAME_LEN]);
        let mut input = &wire[..n];
        if let Some(Ok(f)) = decoder.feed(&mut input) {
            if let Message::FileAnnounce(a) = msg {
                let content = CONTENTS
                    .iter()
                    .position(|c| Sha1Digest::of(c) == a.sha1 && c.len() as u64 == a.size);
                if let Some(c) = content {
                    let i = usize::from(a.index);
                    let announced = &mut self.announced[t];
                    if announced.len() <= i {
                        announced.resize(i + 1, usize::MAX);
                    }
                    announced[i] = c;
                }
            }
            if let Message::BatchOpen(_) = msg {
                self.announced[t].clear();
            }
            self.log(format_args!("terminal {t} says {msg:?}"));
            self.frame(t, f);
        }
    }

    fn noise(&mut self, t: usize, bytes: &[u8]) {
        let now = self.now;
        if let Some(term) = self.terminals[t].as_mut() {
            // The relay's own decoder, sized as its link says.
            let mut decoder = Decoder::new(vec![0u8; term.session.max_frame()]);
            let mut input = bytes;
            while let Some(r) = decoder.feed(&mut input) {
                term.wait_for_input(&self.relay, now);
                term.last_input = now;
                match r {
                    Ok(f) => {
                        // Noise may hold a whole credential: it counts.
                        if let Ok(msg) = Message::decode(f) {
                            term.sent(&self.ids, &mut self.book, now, &msg);
                        }
                        term.session.handle_frame(now, f)
                    }
                    Err(why) => term.session.handle_dropped(now, why),
                }
            }
        }
    }

    /// A plausible terminal message from the operands.
    fn plausible(&mut self, t: usize, input: &mut Input<'_>) -> Option<()> {
        let sel = input.byte()?;
        let arg = input.byte()?;
        if sel >= 240 {
            return self.plausible_identity(t, sel, arg, input);
        }
        let known: Vec<Code> = self.batches.keys().copied().collect();
        let code = if known.is_empty() || arg % 8 == 7 {
            // A code nobody was given (almost surely).
            Code::from_parts(13, u128::from(arg) << 40).ok()?
        } else {
            known[usize::from(arg) % known.len()]
        };
        if (224..240).contains(&sel) {
            return self.plausible_notice(t, sel, arg, code, input);
        }
        let term_code = self.terminals[t].as_ref().and_then(|x| x.code);
        let file = u16::from(arg % 4);
        let msg_owned: Message<'static> = match sel % 12 {
            0 => Message::Hello(Hello {
                version: 1,
                role: Role::Terminal,
                max_frame: [64, 300, 4096, 65_536][usize::from(arg % 4)],
                window: 4096,
                caps: if arg & 0x10 != 0 {
                    0
                } else {
                    CAP_INSTANT_UPLOAD
                },
            }),
            1 => Message::BatchOpen(BatchOpen {
                files: u16::from(arg % 4),
                total_size: u64::from(input.u16()?),
            }),
            2 => {
                let c = usize::from(input.byte()? % 4);
                let name = NAMES[usize::from(arg / 4) % NAMES.len()];
                let msg = Message::FileAnnounce(FileAnnounce {
                    index: file,
                    size: CONTENTS[c].len() as u64,
                    sha1: Sha1Digest::of(CONTENTS[c]),
                    name,
                });
                self.message(t, &msg);
                return Some(());
            }
            3 => {
                // Data for the announced file at an offset, honest or not.
                let offset = usize::from(input.u16()?);
                let len = usize::from(input.byte()?);
                let corrupt = input.byte()? == 0;
                let content = self.announced[t]
                    .get(usize::from(file))
                    .and_then(|&c| CONTENTS.get(c).copied())
                    .unwrap_or(b"");
                let start = offset.min(content.len());
                let end = (start + len).min(content.len());
                let bytes = if corrupt {
                    input.bytes(len)?
                } else {
                    &content[start..end]
                };
                let msg = Message::Data(pickup_proto::message::Data {
                    file,
                    offset: offset as u64,
                    bytes,
                });
                self.message(t, &msg);
                return Some(());
            }
            4 => {
                let nonce = self.terminals[t]
                    .as_ref()
                    .and_then(|x| x.nonces.get(&file).copied())
                    .unwrap_or([0; 32]);
                let content = self.announced[t]
                    .get(usize::from(file))
                    .and_then(|&c| CONTENTS.get(c).copied())
                    .unwrap_or(b"");
                let mut h = ProofHasher::new(&nonce);
                h.update(content);
                let proof = if arg & 0x80 != 0 {
                    Sha1Digest([arg; 20])
                } else {
                    h.finish()
                };
                Message::Proof(Proof { index: file, proof })
            }
            5 => {
                let token = term_code
                    .and_then(|c| self.batches.get(&c))
                    .or_else(|| self.batches.get(&code))
                    .map_or(ResumeToken([arg; 16]), |b| b.token);
                Message::Resume(Resume { token })
            }
            6 => Message::Fetch(Fetch { code }),
            7 => Message::Read(Read {
                code,
                file,
                offset: u64::from(input.u16()?),
                len: u32::from(input.u16()?),
            }),
            8 => Message::Ack(Ack {
                file,
                offset: u64::from(input.u16()?),
                window: u32::from(input.u16()?),
            }),
            9 => Message::Keepalive,
            10 => Message::Goodbye,
            _ => Message::Error(pickup_proto::message::Error {
                code: pickup_proto::ErrorCode::BadFrame,
                kind: arg,
                retry_after_ms: 0,
            }),
        };
        self.message(t, &msg_owned);
        Some(())
    }

    fn lookup(&self, code: Code) -> Option<pickup_relay::store::Batch> {
        self.lookup_at(code, self.now.as_millis() / 1000)
    }

    /// The batch behind `code` as it stood at `secs` (Unix seconds).
    fn lookup_at(&self, code: Code, secs: u64) -> Option<pickup_relay::store::Batch> {
        match self.store.find_by_code(&code_key(&code), secs) {
            Ok(Lookup::Live(b)) => Some(b),
            _ => None,
        }
    }

    /// Drains terminal `t`'s output, checking each frame.
    fn transmit(&mut self, t: usize, summary: &mut RelaySummary) {
        for _ in 0..MAX_DRAIN {
            let Some(term) = self.terminals[t].as_mut() else {
                return;
            };
            let need = term.session.transmit_buffer_len();
            if self.out.len() < need {
                self.out.resize(need, 0);
            }
            let Some(n) = term.session.poll_transmit(&mut self.out) else {
                if term.session.is_closed() {
                    self.terminals[t] = None;
                }
                return;
            };
            let wire = self.out[..n].to_vec();
            self.check(t, &wire, summary);
        }
        panic!("the relay's output never ran dry");
    }

    fn check(&mut self, t: usize, wire: &[u8], summary: &mut RelaySummary) {
        let Some(term) = self.terminals[t].as_mut() else {
            return;
        };
        let max_frame = term.max_frame;
        let mut input = wire;
        let (version, kind, body) = match term.decoder.feed(&mut input) {
            Some(Ok(f)) => (f.version, f.kind, f.body.to_vec()),
            other => panic!("the relay sent a broken frame: {other:?}"),
        };
        let f = Frame {
            version,
            kind,
            body: &body,
        };
        assert!(input.is_empty(), "one frame per poll_transmit");
        let raw = f.body.len() + frame::OVERHEAD;
        assert!(
            raw <= max_frame,
            "a {raw}-byte frame to a terminal that takes {max_frame}"
        );
        let msg = Message::decode(f).unwrap_or_else(|e| panic!("the relay sent {e}"));
        let conn_code = term.code;
        let reading = term.reading;
        let produced_secs = term.last_input.as_millis() / 1000;
        self.log(format_args!("relay tells terminal {t}: {msg:?}"));
        match msg {
            Message::Grant(g) => {
                summary.grants += 1;
                if let Some(term) = self.terminals[t].as_mut() {
                    term.code = Some(g.code);
                    term.nonces.clear();
                }
                let sha1s = self
                    .lookup(g.code)
                    .map(|b| b.files.iter().map(|f| f.sha1).collect())
                    .unwrap_or_default();
                let entry = self.batches.entry(g.code).or_insert_with(|| Batch {
                    token: g.token,
                    expires_at: g.expires_at,
                    files: g.files,
                    sha1s,
                });
                assert!(entry.token == g.token, "one code, two tokens");
                assert_eq!(entry.files, g.files, "a batch changed its file count");
            }
            Message::FilePlan(p) => {
                if let Plan::Challenge { nonce } = p.plan {
                    summary.challenges += 1;
                    if let Some(term) = self.terminals[t].as_mut() {
                        term.nonces.insert(p.index, nonce);
                    }
                }
                if let (Plan::Upload { offset }, Some(code)) = (p.plan, conn_code) {
                    self.check_durable(code, p.index, offset, "plan");
                }
            }
            Message::Ack(a) => {
                if let Some(code) = conn_code {
                    self.check_durable(code, a.file, a.offset, "ack");
                }
            }
            Message::FileVerified(v) => {
                summary.verified += 1;
                let code = conn_code.expect("a verdict follows a grant");
                let Some(batch) = self.lookup(code) else {
                    // A verdict that waited in the outbox while the run did
                    // not drain it was produced at the session's last input;
                    // the batch must have been live then.
                    let expires_at = self.batches.get(&code).map_or(0, |b| b.expires_at);
                    assert!(
                        produced_secs < expires_at,
                        "the relay verified file {} of batch {code} after it expired: \
                         the uploader is told it succeeded with a dead code",
                        v.index
                    );
                    return;
                };
                let record = &batch.files[usize::from(v.index)];
                let FileContent::Blob(id) = record.content else {
                    panic!(
                        "the relay says file {} of batch {code} is verified, but the store holds {:?}",
                        v.index, record.content
                    );
                };
                let bytes = self.store.blob_bytes(id).expect("a verified blob exists");
                assert_eq!(
                    Sha1Digest::of(&bytes),
                    record.sha1,
                    "verified bytes differ from the SHA-1"
                );
            }
            Message::Data(d) if reading.is_some_and(|(code, _)| !self.is_batch(code)) => {
                let (code, file) = reading.expect("data only after a read");
                assert_eq!(d.file, file, "data for another file than read");
                self.check_named_data(t, code, &d, summary);
            }
            Message::Data(d) => {
                let (code, file) = reading.expect("data only after a read");
                assert_eq!(d.file, file, "data for another file than read");
                // Like a verdict, data waiting in the outbox was produced at
                // the session's last input: the batch must have been live
                // then (a session that hears nothing does not know the time).
                // (A delivery may have moved the expiry past the grant's:
                // offline files and the target's reads keep a batch longer.)
                let known = self.batches.get(&code).expect("data for a granted code");
                assert!(
                    produced_secs < known.expires_at
                        || self.lookup_at(code, produced_secs).is_some(),
                    "data from a batch expired when it was produced"
                );
                let content: Vec<u8> = match self.lookup_at(code, produced_secs) {
                    Some(batch) => {
                        assert!(batch.ready(), "data served from a batch still uploading");
                        let record = &batch.files[usize::from(d.file)];
                        let FileContent::Blob(id) = record.content else {
                            panic!(
                                "data served from file {} that is {:?}",
                                d.file, record.content
                            );
                        };
                        let content = self.store.blob_bytes(id).expect("a served blob exists");
                        assert_eq!(
                            Sha1Digest::of(&content),
                            record.sha1,
                            "served a blob that fails its SHA-1"
                        );
                        content
                    }
                    // Swept since it was read ahead: the bytes must still be
                    // the file's announced (and verified) content.
                    None => {
                        let sha1 = known.sha1s[usize::from(d.file)];
                        CONTENTS
                            .iter()
                            .find(|c| Sha1Digest::of(c) == sha1)
                            .expect("data of a file whose content no terminal has")
                            .to_vec()
                    }
                };
                let start = d.offset as usize;
                assert!(
                    !d.bytes.is_empty() && start + d.bytes.len() <= content.len(),
                    "served {} bytes at {start} of a {}-byte file",
                    d.bytes.len(),
                    content.len()
                );
                assert_eq!(
                    d.bytes,
                    &content[start..start + d.bytes.len()],
                    "served wrong bytes"
                );
                summary.served += d.bytes.len() as u64;
            }
            Message::Manifest(m) => {
                let known = self.is_batch(m.code);
                self.check_identity(t, &msg, known, summary);
            }
            other => {
                self.check_notice(t, &other, summary);
                self.check_identity(t, &other, false, summary)
            }
        }
    }

    /// Whether `code` is a batch's (granted to the run, or in the store):
    /// anything else the relay names is a read handle.
    fn is_batch(&self, code: Code) -> bool {
        self.batches.contains_key(&code) || self.store.code_taken(&code_key(&code)).unwrap_or(false)
    }

    fn check_durable(&self, code: Code, file: u16, offset: u64, what: &str) {
        let Some(batch) = self.lookup(code) else {
            return;
        };
        let Some(record) = batch.files.get(usize::from(file)) else {
            panic!(
                "{what} for file {file} of a {}-file batch",
                batch.files.len()
            );
        };
        let durable = record.received();
        assert!(
            offset <= durable,
            "{what} says {offset} bytes of file {file} are durable, the store has {durable}"
        );
    }

    /// Fires every due timer, then checks none is left in the past.
    fn timers(&mut self, summary: &mut RelaySummary) {
        // The disk thread finishes the jobs it was given.
        for t in 0..TERMINALS {
            let now = self.now;
            if let Some(term) = self.terminals[t].as_mut() {
                if let Some(job) = term.job.take() {
                    term.last_input = now;
                    term.session.handle_job_done(now, job.run(&self.relay));
                }
            }
        }
        // A driver wakes a session whose doorbell rang.
        for term in self.terminals.iter_mut().flatten() {
            if term.session.doorbell().rung() {
                term.last_input = self.now;
                term.session.handle_wake(self.now);
            }
        }
        for t in 0..TERMINALS {
            for _ in 0..4 {
                let now = self.now;
                let Some(term) = self.terminals[t].as_mut() else {
                    break;
                };
                match term.session.poll_timeout() {
                    Some(due) if due <= now => {
                        term.last_input = now;
                        term.session.handle_timeout(now)
                    }
                    _ => break,
                }
                self.transmit(t, summary);
            }
            if let Some(term) = self.terminals[t].as_ref() {
                if let Some(due) = term.session.poll_timeout() {
                    assert!(due > self.now, "timer stuck at {due:?}: busy loop");
                }
            }
        }
    }

    /// The relay dies: sessions vanish, the store keeps only what is durable.
    ///
    /// Every ack was checked against the durable offset when it was sent;
    /// here the crash must keep every durable offset and exactly that many
    /// bytes. (A rejected file legitimately drops bytes it had acked, so
    /// offsets are compared with the store just before the crash.)
    fn crash(&mut self) {
        let before: Vec<(Code, Vec<u64>)> = self
            .batches
            .keys()
            .filter_map(|code| {
                let batch = self.lookup(*code)?;
                Some((*code, batch.files.iter().map(|f| f.received()).collect()))
            })
            .collect();
        for t in self.terminals.iter_mut() {
            *t = None;
        }
        self.store.crash();
        for (code, durable_before) in before {
            let batch = self.lookup(code).expect("a crash keeps live batches");
            for (f, record) in batch.files.iter().enumerate() {
                let kept = record.received();
                assert_eq!(
                    kept, durable_before[f],
                    "a crash changed file {f}'s durable offset"
                );
                if let FileContent::Partial { id, durable } = record.content {
                    let mut buf = vec![0u8; durable as usize + 1];
                    let n = self
                        .store
                        .read_partial(id, 0, &mut buf)
                        .expect("partial readable");
                    assert_eq!(
                        n as u64, durable,
                        "a crashed partial must hold exactly its durable bytes"
                    );
                }
            }
        }
        self.seed = self.seed.wrapping_add(1);
        self.relay = Relay::with_directory(
            self.settings.clone(),
            self.store.clone(),
            self.directory.clone(),
            Box::new(SeededRandom::new(self.seed)),
            self.now,
        );
    }
}

/// Writes [`drive_relay`] inputs operation by operation (seeds and tests).
#[derive(Debug, Clone)]
pub struct RelayScript(Vec<u8>);

impl RelayScript {
    /// A script with the given setup byte (see [`drive_relay`]).
    pub fn new(setup: u8) -> Self {
        RelayScript(vec![setup])
    }

    fn op(&mut self, t: u8, op: u8, operands: &[u8]) -> &mut Self {
        self.0.push(t * 10 + op);
        self.0.extend_from_slice(operands);
        self
    }

    fn say(&mut self, t: u8, sel: u8, arg: u8, more: &[u8]) -> &mut Self {
        self.op(t, 4, &[[sel, arg].as_slice(), more].concat())
    }

    /// Terminal `t` connects.
    pub fn connect(&mut self, t: u8) -> &mut Self {
        self.op(t, 0, &[])
    }

    /// Terminal `t` disconnects.
    pub fn disconnect(&mut self, t: u8) -> &mut Self {
        self.op(t, 1, &[])
    }

    /// The clock moves on by `ms` (below 32768).
    pub fn advance_ms(&mut self, ms: u16) -> &mut Self {
        self.op(0, 2, &(ms & 0x7fff).to_le_bytes())
    }

    /// The clock moves on by `secs` (below 32768).
    pub fn advance_secs(&mut self, secs: u16) -> &mut Self {
        self.op(0, 2, &(secs | 0x8000).to_le_bytes())
    }

    /// Terminal `t` says hello with `max_frame` 64, 300, 4096 or 65536 (`size` 0..4).
    pub fn hello(&mut self, t: u8, size: u8) -> &mut Self {
        self.say(t, 0, size % 4, &[])
    }

    /// Terminal `t` opens a batch of `files` (below 4) totalling `total` bytes.
    pub fn batch_open(&mut self, t: u8, files: u8, total: u16) -> &mut Self {
        self.say(t, 1, files % 4, &total.to_le_bytes())
    }

    /// Terminal `t` announces file `index` (below 4) with content `content`
    /// (index into the driver's contents: 700 bytes, "pickup", empty, a sentence).
    pub fn announce(&mut self, t: u8, index: u8, content: u8) -> &mut Self {
        self.say(t, 2, index % 4, &[content])
    }

    /// [`announce`](Self::announce) under the driver's name `name` (0 is
    /// `a.bin`, 1 `b.txt`...): another batch with the same content, where
    /// the same names would be a repeated announcement.
    pub fn announce_as(&mut self, t: u8, index: u8, content: u8, name: u8) -> &mut Self {
        self.say(t, 2, (name % 6) * 4 + index % 4, &[content])
    }

    /// Terminal `t` sends `len` honest bytes of file `index` at `offset`.
    pub fn data(&mut self, t: u8, index: u8, offset: u16, len: u8) -> &mut Self {
        let [a, b] = offset.to_le_bytes();
        self.say(t, 3, index % 4, &[a, b, len, 1])
    }

    /// Terminal `t` proves it holds file `index`.
    pub fn proof(&mut self, t: u8, index: u8) -> &mut Self {
        self.say(t, 4, index % 4, &[])
    }

    /// Terminal `t` resumes its batch with the token the relay gave.
    pub fn resume(&mut self, t: u8) -> &mut Self {
        self.say(t, 5, 0, &[])
    }

    /// Terminal `t` fetches the first batch the relay granted (`known`), or
    /// a code nobody was given.
    pub fn fetch(&mut self, t: u8, known: bool) -> &mut Self {
        self.say(t, 6, if known { 0 } else { 7 }, &[])
    }

    /// Terminal `t` reads `len` bytes of file `index` of the first batch from `offset`.
    pub fn read(&mut self, t: u8, index: u8, offset: u16, len: u16) -> &mut Self {
        let [a, b] = offset.to_le_bytes();
        let [c, d] = len.to_le_bytes();
        // arg picks the code (known[arg % n]) and the file (arg % 4): 8 * k + index.
        self.say(t, 7, index % 4, &[a, b, c, d])
    }

    /// Terminal `t` acknowledges file `index` up to `offset`, with `window`
    /// bytes more of credit (a downloader's `Ack`).
    pub fn ack(&mut self, t: u8, index: u8, offset: u16, window: u16) -> &mut Self {
        let [a, b] = offset.to_le_bytes();
        let [c, d] = window.to_le_bytes();
        self.say(t, 8, index % 4, &[a, b, c, d])
    }

    /// The driver takes terminal `t`'s output.
    pub fn transmit(&mut self, t: u8) -> &mut Self {
        self.op(t, 8, &[])
    }

    /// Due timers fire.
    pub fn timers(&mut self) -> &mut Self {
        self.op(0, 9, &[])
    }

    /// The relay crashes and restarts.
    pub fn crash(&mut self) -> &mut Self {
        self.op(0, 6, &[])
    }

    /// The relay sweeps expired batches.
    pub fn sweep(&mut self) -> &mut Self {
        self.op(0, 7, &[])
    }

    /// The input so far.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Terminal `t` uploads file A (700 bytes) as a one-file batch in
    /// `chunk`-byte data frames.
    pub fn upload_a(&mut self, t: u8, chunk: u8) -> &mut Self {
        self.hello(t, 2).transmit(t);
        self.batch_open(t, 1, 700).announce(t, 0, 0).transmit(t);
        let mut off = 0u16;
        while off < 700 {
            let len = u16::from(chunk).min(700 - off) as u8;
            self.data(t, 0, off, len);
            off += u16::from(len);
        }
        self.transmit(t).timers().transmit(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Terminal 0 uploads file A (700 bytes) in three data frames;
    /// terminal 1 fetches and reads it.
    fn upload_then_download(setup: u8) -> Vec<u8> {
        let mut o = RelayScript::new(setup);
        o.connect(0).upload_a(0, 255);
        o.connect(1).hello(1, 2).fetch(1, true).transmit(1);
        o.read(1, 0, 0, 4096).transmit(1);
        o.0
    }

    #[test]
    fn a_scripted_upload_and_download_reach_the_checks() {
        let summary = drive_relay(&upload_then_download(3));
        assert_eq!(summary.grants, 1, "{summary:?}");
        assert_eq!(summary.verified, 1, "{summary:?}");
        assert_eq!(summary.served, 700, "{summary:?}");
    }

    #[test]
    fn corrupt_data_is_never_verified_or_served() {
        let mut input = upload_then_download(3);
        // Flip the "honest" flag of the second data frame: its bytes come
        // from the input instead (255 of them follow).
        let honest = input
            .windows(4)
            .position(|w| w == [0xff, 0x00, 0xff, 1])
            .expect("the second data op");
        input[honest + 3] = 0;
        input.splice(honest + 4..honest + 4, vec![0x42; 255]);
        let summary = drive_relay(&input);
        assert_eq!(summary.verified, 0, "{summary:?}");
        assert_eq!(summary.served, 0, "{summary:?}");
    }

    #[test]
    fn a_crash_mid_upload_keeps_what_was_acknowledged() {
        let mut input = upload_then_download(3);
        // Crash right after the first transmit that carried acks, then go on.
        let pos = input.len() / 2;
        input.insert(pos, 6);
        drive_relay(&input);
    }

    #[test]
    fn random_inputs_do_not_break_the_relay() {
        let mut rng = crate::sim::rng::SimRng::new(77);
        for _ in 0..1500 {
            let len = rng.below(300) as usize;
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            drive_relay(&data);
        }
        // The scripted run with each setup, and mutated copies of it.
        for setup in 0..64u8 {
            let base = upload_then_download(setup);
            drive_relay(&base);
            for _ in 0..20 {
                let mut m = base.clone();
                let i = rng.below(m.len() as u64) as usize;
                m[i] = rng.next_u64() as u8;
                drive_relay(&m);
            }
        }
    }
}
