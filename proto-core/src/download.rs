//! The downloading terminal's state machine.
//!
//! [`Session`] fetches a batch by code, file by file in index order, and
//! verifies each file's SHA-1 before it reports it done. Like
//! [`upload::Session`](crate::upload::Session) it does no I/O of its own: the
//! driver moves frames and time through the same [`Machine`] contract
//! (call order in [`crate::drive`]), and file bytes go through a [`Sink`].
//!
//! ```text
//!            handle_connected
//!   Idle ──────────────────► AwaitWelcome ──Welcome──► AwaitManifest (Fetch sent)
//!    ▲                                                   │ Manifest + one ManifestEntry per file
//!    │ handle_disconnected / idle timeout                ▼
//!    └─────────────────────────────────────────────── Reading ──(last file verified)──► Done
//! ```
//!
//! Flow control: a [`Read`] starts (or restarts) the
//! relay's stream of one file at an offset with a credit of `window` bytes;
//! the terminal extends the credit with an [`Ack`] of
//! its contiguous offset once half the window has arrived. Data at any
//! other offset than the next expected byte is dropped (it is a duplicate, or
//! follows a loss); a gap or [`Config::retransmit_timeout`] without progress
//! restarts the stream with a new `Read` at the first missing byte.
//!
//! Resume: for each file the sink reports how many bytes it already has
//! from an earlier attempt ([`Sink::open`]); the session re-hashes that
//! prefix through [`ReadAt`] and continues after it. If the finished file's
//! SHA-1 does not match and a prefix was reused, the file is truncated
//! ([`Sink::truncate`]) and fetched once more from 0 before the session gives up.

use heapless::{Deque, Vec};

use crate::code::Code;
use crate::drive::{Machine, Progress};
use crate::error::ErrorCode;
use crate::frame::{self, Frame};
use crate::hash::{Sha1Digest, Sha1Hasher};
use crate::message::{self, Ack, Fetch, Hello, ManifestEntry, Message, Read, Role};
use crate::storage::{ReadAt, WriteAt};
use crate::time::{Duration, Instant};
use crate::PROTOCOL_VERSION;

/// Tuning for a session.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Largest raw frame this side accepts (its decoder buffer size).
    pub max_frame: u32,
    /// Bytes the relay may send ahead of what was acknowledged.
    pub window: u32,
    /// Without progress for this long, ask again.
    pub retransmit_timeout: Duration,
    /// Without any frame from the relay for this long, the link is lost.
    pub idle_timeout: Duration,
    /// Send a keepalive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Stop after the manifest (for `pickup info`): no file is opened.
    pub manifest_only: bool,
    /// If the batch is still uploading, ask again every this long instead of
    /// failing with [`ErrorCode::NotReady`]. `None` fails at once.
    pub wait_until_ready: Option<Duration>,
    /// Who computes each file's SHA-1 for verification.
    pub hashing: Hashing,
}

/// Who hashes a file's bytes to verify it against the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Hashing {
    /// The session, in line with each write (the default; what an MCU
    /// wants). A resumed file's prefix is read back and hashed first.
    #[default]
    InSession,
    /// The sink, through [`Sink::digest`]. On a host, verifying is the
    /// costliest work per byte; a sink that hashes on another core lets the
    /// session keep receiving meanwhile. The session then trusts the prefix
    /// length [`Sink::open`] reported and reads nothing back; a wrong
    /// prefix fails verification and the file is fetched again.
    BySink,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: 16 * 1024,
            window: 1024 * 1024,
            retransmit_timeout: Duration::from_millis(2_000),
            idle_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(5),
            manifest_only: false,
            wait_until_ready: None,
            hashing: Hashing::InSession,
        }
    }
}

/// Where downloaded bytes go: random-access writes, reads back for resume,
/// and a few file-level steps.
pub trait Sink: ReadAt + WriteAt<Error = <Self as ReadAt>::Error> {
    /// A file of the batch, as the manifest describes it. Validate the name
    /// (again) with [`message::validate_name`] before using it on disk, and
    /// return how many leading bytes of it are already present from an
    /// earlier attempt (0 for a new file).
    fn open(&mut self, entry: &ManifestEntry<'_>) -> Result<u64, <Self as ReadAt>::Error>;
    /// Throw away a file's bytes (its reused prefix did not verify).
    fn truncate(&mut self, file: u16) -> Result<(), <Self as ReadAt>::Error>;
    /// The file is complete and verified: make it final (e.g. rename `.part`).
    fn finish(&mut self, file: u16) -> Result<(), <Self as ReadAt>::Error>;
    /// With [`Hashing::BySink`]: the SHA-1 of the first `size` bytes of
    /// `file` as the sink holds them, once all of them are written. The
    /// default reads them back through [`ReadAt`] in small pieces (correct,
    /// and slow); a sink worth using with `BySink` hashes the bytes as they
    /// are written, elsewhere. Never called with [`Hashing::InSession`].
    fn digest(&mut self, file: u16, size: u64) -> Result<Sha1Digest, <Self as ReadAt>::Error> {
        let mut hasher = Sha1Hasher::new();
        let mut buf = [0u8; 256];
        let mut offset = 0u64;
        while offset < size {
            let want = usize::try_from(size - offset)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = self.read_at(file, offset, &mut buf[..want])?;
            if n == 0 || n > want {
                // Short: whatever was hashed cannot match a `size`-byte file.
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok(hasher.digest())
    }
}

/// What the driver should know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event {
    /// The relay accepted the session.
    Connected,
    /// The manifest arrived (entries go to [`Sink::open`] as they come).
    Manifest {
        /// Number of files.
        files: u16,
        /// Sum of sizes.
        total_size: u64,
        /// Bytes the relay holds so far.
        received: u64,
        /// Whether the batch can be read now.
        ready: bool,
        /// Expiry, seconds since the Unix epoch.
        expires_at: u64,
    },
    /// One file's description (the name went to [`Sink::open`]).
    Entry {
        /// File index.
        file: u16,
        /// Size in bytes.
        size: u64,
        /// Expected SHA-1.
        sha1: Sha1Digest,
        /// Bytes the relay holds so far.
        received: u64,
        /// Bytes already present locally, reused.
        local: u64,
    },
    /// The batch is still uploading; asking again later.
    NotReady {
        /// Bytes the relay holds so far.
        received: u64,
        /// Total bytes.
        total: u64,
    },
    /// Contiguous bytes written, over the whole batch.
    Progress {
        /// Bytes written and hashed.
        done: u64,
        /// Total bytes of the batch.
        total: u64,
    },
    /// One file is complete and its SHA-1 matched.
    Verified {
        /// File index.
        file: u16,
    },
    /// A reused prefix did not verify; the file is fetched again from 0.
    Refetch {
        /// File index.
        file: u16,
    },
    /// Nothing heard for the idle timeout: reconnect and call
    /// [`Session::handle_connected`].
    LinkLost,
    /// Every file is written and verified (or the manifest is in, with
    /// [`Config::manifest_only`]).
    Complete,
    /// The download cannot succeed.
    Failed(Error),
}

/// Why a download failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The relay refused: unknown code, expired, not ready, rate limited…
    Relay(ErrorCode),
    /// A file's bytes did not match its SHA-1 even when fetched from 0.
    HashMismatch {
        /// File index.
        file: u16,
    },
    /// The batch has more files than this session's capacity.
    TooManyFiles,
    /// The manifest changed between connections, or is inconsistent.
    ManifestChanged,
    /// The sink refused a file (e.g. it exists and overwriting is not allowed).
    Sink {
        /// File index.
        file: u16,
    },
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Relay(code) => write!(f, "relay refused: {code}"),
            Error::HashMismatch { file } => write!(f, "file {file} does not match its SHA-1"),
            Error::TooManyFiles => {
                f.write_str("the batch has more files than this client can hold")
            }
            Error::ManifestChanged => f.write_str("the batch changed during the download"),
            Error::Sink { file } => write!(f, "file {file} could not be stored"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct File {
    size: u64,
    sha1: Sha1Digest,
    /// Bytes already present locally when the file was opened.
    local: u64,
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    AwaitWelcome,
    AwaitManifest,
    Reading,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Hello,
    Fetch,
    /// Start or restart the stream of the current file at `received`.
    Read,
    /// Extend the credit.
    Ack,
    Keepalive,
    Goodbye,
}

/// A download of a batch of up to `F` files. See the module docs.
#[derive(Debug)]
pub struct Session<const F: usize> {
    config: Config,
    code: Code,
    phase: Phase,
    /// Files as the first manifest described them.
    files: Vec<File, F>,
    /// The file count of the first manifest.
    expected_files: Option<u16>,
    /// Whether the latest manifest said the batch is ready.
    manifest_ready: bool,
    /// Entries of the current manifest seen so far (they repeat on reconnect).
    entries_seen: u16,
    /// The file being read, its contiguous received bytes and their hash.
    current: u16,
    received: u64,
    hasher: Sha1Hasher,
    /// The current file's local prefix still has to be re-hashed.
    prefix_pending: bool,
    /// The relay may send the current file up to here.
    credit_end: u64,
    /// A restart was requested: gaps are expected until its data arrives.
    restart_pending: bool,
    peer_max_frame: usize,
    control: Deque<Control, 6>,
    events: Deque<Event, 8>,
    progress_dirty: bool,
    /// When to resend the current request if nothing moves.
    retry_at: Option<Instant>,
    last_sent: Instant,
    last_heard: Instant,
    error: Option<Error>,
}

impl<const F: usize> Session<F> {
    /// A download of the batch behind `code`.
    pub fn new(config: Config, code: Code) -> Self {
        Session {
            config,
            code,
            phase: Phase::Idle,
            files: Vec::new(),
            expected_files: None,
            manifest_ready: false,
            entries_seen: 0,
            current: 0,
            received: 0,
            hasher: Sha1Hasher::new(),
            prefix_pending: false,
            credit_end: 0,
            restart_pending: false,
            peer_max_frame: frame::MIN_FRAME_LEN,
            control: Deque::new(),
            events: Deque::new(),
            progress_dirty: false,
            retry_at: None,
            last_sent: Instant::ZERO,
            last_heard: Instant::ZERO,
            error: None,
        }
    }

    /// The code being downloaded.
    pub fn code(&self) -> Code {
        self.code
    }

    /// Whether the download finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }

    /// Whether no exchange runs (see [`Machine::is_idle`]).
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// How far the download has come: the manifest, bytes written.
    pub fn progress(&self) -> Progress {
        Progress {
            started: self.expected_files.is_some(),
            done: self.done_bytes(),
            total: self.total_size(),
        }
    }

    /// The failure, if the download failed.
    pub fn error(&self) -> Option<Error> {
        self.error
    }

    /// Total bytes of the batch (0 before the manifest).
    pub fn total_size(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |t, f| t.saturating_add(f.size))
    }

    /// Bytes written and verified or hashed so far.
    pub fn done_bytes(&self) -> u64 {
        let finished = self
            .files
            .iter()
            .filter(|f| f.done)
            .fold(0u64, |t, f| t.saturating_add(f.size));
        let current_done = self
            .files
            .get(usize::from(self.current))
            .is_some_and(|f| f.done);
        finished.saturating_add(if current_done { 0 } else { self.received })
    }

    /// A new link is up: start (or restart) the exchange.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.is_finished() {
            return;
        }
        self.control.clear();
        self.push_control(Control::Hello);
        self.phase = Phase::AwaitWelcome;
        self.retry_at = Some(now + self.config.retransmit_timeout);
        self.last_heard = now;
        self.last_sent = now;
    }

    /// The link went away.
    pub fn handle_disconnected(&mut self, _now: Instant) {
        if !self.is_finished() {
            self.phase = Phase::Idle;
            self.retry_at = None;
            self.control.clear();
        }
    }

    /// Handles one frame from the relay (see [`Machine::handle_frame`]);
    /// undecodable frames are ignored.
    pub fn handle_frame<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        frame: Frame<'_>,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        match Message::decode_from_relay(frame) {
            Ok(msg) => self.handle_message(now, msg, sink),
            Err(_) => Ok(()),
        }
    }

    /// Handles one decoded message. Storage errors are returned as they are;
    /// the session stays consistent and the timers retry.
    pub fn handle_message<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        msg: Message<'_>,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return Ok(());
        }
        self.last_heard = now;
        match msg {
            Message::Welcome(w) if self.phase == Phase::AwaitWelcome => {
                if w.version != PROTOCOL_VERSION {
                    self.fail(Error::Relay(ErrorCode::UnsupportedVersion));
                    return Ok(());
                }
                self.peer_max_frame =
                    (w.max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN);
                self.push_event(Event::Connected);
                self.phase = Phase::AwaitManifest;
                self.push_control(Control::Fetch);
                self.retry_at = Some(now + self.config.retransmit_timeout);
            }
            Message::Manifest(m) if self.phase == Phase::AwaitManifest && m.code == self.code => {
                match self.expected_files {
                    Some(n) if n != m.files => {
                        self.fail(Error::ManifestChanged);
                        return Ok(());
                    }
                    Some(_) => {}
                    None if m.files == 0 => {
                        self.fail(Error::ManifestChanged);
                        return Ok(());
                    }
                    None if usize::from(m.files) > F => {
                        self.fail(Error::TooManyFiles);
                        return Ok(());
                    }
                    None => self.expected_files = Some(m.files),
                }
                self.entries_seen = 0;
                self.manifest_ready = m.ready;
                self.push_event(Event::Manifest {
                    files: m.files,
                    total_size: m.total_size,
                    received: m.received,
                    ready: m.ready,
                    expires_at: m.expires_at,
                });
                self.retry_at = Some(now + self.config.retransmit_timeout);
            }
            Message::ManifestEntry(e) if self.phase == Phase::AwaitManifest => {
                self.on_entry(now, e, sink)?
            }
            Message::Data(d) if self.phase == Phase::Reading => self.on_data(now, d, sink)?,
            Message::Error(e) => self.on_error(now, e),
            Message::Goodbye => self.link_lost(),
            _ => {}
        }
        Ok(())
    }

    fn link_lost(&mut self) {
        self.phase = Phase::Idle;
        self.retry_at = None;
        self.control.clear();
        self.push_event(Event::LinkLost);
    }

    fn on_error(&mut self, now: Instant, e: message::Error) {
        if crate::upload::noise(&e) {
            return;
        }
        match e.code {
            ErrorCode::RateLimited
            | ErrorCode::Busy
            | ErrorCode::Internal
            | ErrorCode::BadFrame => {
                // Transient: retry on the timer, no earlier than the relay asks.
                let wait = Duration::from_millis(u64::from(e.retry_after_ms))
                    .max(self.config.retransmit_timeout);
                self.retry_at = Some(now + wait);
            }
            ErrorCode::NotReady
                if self.config.wait_until_ready.is_some() && self.phase == Phase::Reading =>
            {
                self.phase = Phase::AwaitManifest;
                self.retry_at = Some(now + self.config.wait_until_ready.unwrap_or(Duration::ZERO));
            }
            ErrorCode::UnexpectedMessage | ErrorCode::IdleTimeout | ErrorCode::ShuttingDown => {
                self.link_lost()
            }
            code => self.fail(Error::Relay(code)),
        }
    }

    fn on_entry<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        e: ManifestEntry<'_>,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        let Some(expected) = self.expected_files else {
            return Ok(());
        };
        if e.index != self.entries_seen || e.index >= expected {
            // Out of order (an entry was lost): the timer fetches the manifest again.
            return Ok(());
        }
        match self.files.get(usize::from(e.index)) {
            Some(f) if f.size != e.size || f.sha1 != e.sha1 => {
                self.fail(Error::ManifestChanged);
                return Ok(());
            }
            Some(_) => {}
            None => {
                if !self.config.manifest_only && message::validate_name(e.name).is_err() {
                    self.fail(Error::Relay(ErrorCode::InvalidName));
                    return Ok(());
                }
                let local = sink.open(&e)?.min(e.size);
                // Entries arrive in index order and `expected <= F`, so this fits.
                let _ = self.files.push(File {
                    size: e.size,
                    sha1: e.sha1,
                    local,
                    done: false,
                });
                self.push_event(Event::Entry {
                    file: e.index,
                    size: e.size,
                    sha1: e.sha1,
                    received: e.received,
                    local,
                });
            }
        }
        self.entries_seen += 1;
        if self.entries_seen < expected {
            return Ok(());
        }
        if self.config.manifest_only {
            self.finish_session(now);
        } else if !self.manifest_ready {
            match self.config.wait_until_ready {
                Some(wait) => {
                    self.push_event(Event::NotReady {
                        received: 0,
                        total: self.total_size(),
                    });
                    self.retry_at = Some(now + wait);
                }
                None => self.fail(Error::Relay(ErrorCode::NotReady)),
            }
        } else {
            self.phase = Phase::Reading;
            let resuming = self
                .files
                .get(usize::from(self.current))
                .is_some_and(|f| !f.done)
                && (self.received > 0 || self.prefix_pending);
            if resuming {
                // Reconnected mid-file: continue where the bytes stopped.
                self.request_read(now);
            } else {
                self.advance(now, sink)?;
            }
        }
        Ok(())
    }

    /// Moves to the first unfinished file and starts it.
    fn advance<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        let Some(next) = self.files.iter().position(|f| !f.done) else {
            self.finish_session(now);
            return Ok(());
        };
        let f = self.files[next];
        self.current = next as u16;
        self.received = 0;
        self.hasher = Sha1Hasher::new();
        self.credit_end = 0;
        if f.local > 0 {
            if self.config.hashing == Hashing::BySink {
                // The sink hashes what it holds; nothing to read back.
                self.received = f.local.min(f.size);
                self.progress_dirty = true;
                if self.received == f.size {
                    return self.complete_file(now, sink);
                }
                self.request_read(now);
                return Ok(());
            }
            // Re-hashed in poll_transmit, which has a buffer to read into.
            self.prefix_pending = true;
            return Ok(());
        }
        if f.size == 0 {
            return self.complete_file(now, sink);
        }
        self.request_read(now);
        Ok(())
    }

    fn request_read(&mut self, now: Instant) {
        self.push_control(Control::Read);
        self.restart_pending = true;
        self.retry_at = Some(now + self.config.retransmit_timeout);
    }

    fn on_data<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        d: message::Data<'_>,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        if d.file != self.current || self.prefix_pending {
            return Ok(());
        }
        let Some(f) = self.files.get(usize::from(self.current)).copied() else {
            return Ok(());
        };
        if d.offset != self.received {
            if d.offset > self.received && !self.restart_pending {
                // A gap: something was lost. Restart at the first missing byte.
                self.request_read(now);
            }
            return Ok(());
        }
        let end = self.received.saturating_add(d.bytes.len() as u64);
        if end > f.size || d.bytes.is_empty() {
            return Ok(());
        }
        sink.write_at(self.current, self.received, d.bytes)?;
        if self.config.hashing == Hashing::InSession {
            self.hasher.update(d.bytes);
        }
        self.received = end;
        self.restart_pending = false;
        self.progress_dirty = true;
        self.retry_at = Some(now + self.config.retransmit_timeout);
        if self.received == f.size {
            return self.complete_file(now, sink);
        }
        let window = u64::from(self.config.window);
        if self.credit_end < f.size && self.credit_end.saturating_sub(self.received) <= window / 2 {
            self.push_control(Control::Ack);
        }
        Ok(())
    }

    /// The current file has all its bytes: verify and finish it, or retry.
    fn complete_file<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        let i = usize::from(self.current);
        let Some(f) = self.files.get(i).copied() else {
            return Ok(());
        };
        let digest = match self.config.hashing {
            Hashing::InSession => self.hasher.digest(),
            Hashing::BySink => sink.digest(self.current, f.size)?,
        };
        if digest == f.sha1 {
            sink.finish(self.current)?;
            self.files[i].done = true;
            self.progress_dirty = true;
            self.push_event(Event::Verified { file: self.current });
            return self.advance(now, sink);
        }
        if f.local > 0 {
            sink.truncate(self.current)?;
            self.files[i].local = 0;
            self.push_event(Event::Refetch { file: self.current });
            return self.advance(now, sink);
        }
        self.fail(Error::HashMismatch { file: self.current });
        Ok(())
    }

    fn finish_session(&mut self, _now: Instant) {
        self.phase = Phase::Done;
        self.retry_at = None;
        self.push_control(Control::Goodbye);
        self.push_event(Event::Complete);
    }

    fn fail(&mut self, e: Error) {
        self.phase = Phase::Failed;
        self.error = Some(e);
        self.retry_at = None;
        self.push_event(Event::Failed(e));
    }

    fn push_control(&mut self, c: Control) {
        if !self.control.iter().any(|x| *x == c) {
            // One slot per kind: never full.
            let _ = self.control.push_back(c);
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(e);
    }

    /// The next event for the driver.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        if self.progress_dirty {
            self.progress_dirty = false;
            return Some(Event::Progress {
                done: self.done_bytes(),
                total: self.total_size(),
            });
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return None;
        }
        let mut t = (self.last_heard + self.config.idle_timeout)
            .min(self.last_sent + self.config.keepalive_interval);
        if let Some(r) = self.retry_at {
            t = t.min(r);
        }
        Some(t)
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return;
        }
        // While polling a batch that is not ready, silence is expected.
        let polling =
            self.phase == Phase::AwaitManifest && self.entries_seen > 0 && !self.manifest_ready;
        if !polling && now >= self.last_heard + self.config.idle_timeout {
            return self.link_lost();
        }
        if now >= self.last_sent + self.config.keepalive_interval {
            self.push_control(Control::Keepalive);
        }
        match self.retry_at {
            Some(r) if now >= r => {}
            _ => return,
        }
        self.retry_at = Some(now + self.config.retransmit_timeout);
        match self.phase {
            Phase::AwaitWelcome => self.push_control(Control::Hello),
            Phase::AwaitManifest => {
                self.entries_seen = 0;
                self.push_control(Control::Fetch);
                if polling {
                    self.last_heard = now;
                }
            }
            Phase::Reading if !self.prefix_pending => self.request_read(now),
            _ => {}
        }
    }

    /// Writes the next frame to send into `out` and returns its length, or
    /// `None` if there is nothing to send now. `out` must hold at least
    /// [`frame::max_encoded_len`] of [`frame::MIN_FRAME_LEN`]; it is also
    /// the buffer through which a resumed file's prefix is re-hashed.
    #[must_use = "a frame written to `out` must be sent"]
    pub fn poll_transmit<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
        out: &mut [u8],
    ) -> Result<Option<usize>, <S as ReadAt>::Error> {
        if self.phase == Phase::Reading && self.prefix_pending {
            self.rehash_prefix(now, sink, out)?;
        }
        let Some(c) = self.control.pop_front() else {
            return Ok(None);
        };
        let window = self.config.window;
        let max = self.peer_max_frame;
        let encoded = match c {
            // Hello must fit the smallest frame any relay accepts.
            Control::Hello => message::encode(
                &Hello {
                    version: PROTOCOL_VERSION,
                    role: Role::Terminal,
                    max_frame: self.config.max_frame,
                    window,
                    caps: 0,
                },
                frame::MIN_FRAME_LEN,
                out,
            ),
            Control::Fetch => message::encode(&Fetch { code: self.code }, max, out),
            Control::Read | Control::Ack if self.phase != Phase::Reading => return Ok(None),
            Control::Read => {
                self.credit_end = self.received.saturating_add(u64::from(window));
                let read = Read {
                    code: self.code,
                    file: self.current,
                    offset: self.received,
                    len: window,
                };
                message::encode(&read, max, out)
            }
            Control::Ack => {
                self.credit_end = self.received.saturating_add(u64::from(window));
                let ack = Ack {
                    file: self.current,
                    offset: self.received,
                    window,
                };
                message::encode(&ack, max, out)
            }
            Control::Keepalive => message::encode_empty(message::Kind::Keepalive, max, out),
            Control::Goodbye => message::encode_empty(message::Kind::Goodbye, max, out),
        };
        let n = encoded.ok();
        if n.is_some() {
            self.last_sent = now;
        }
        Ok(n)
    }

    fn rehash_prefix<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
        buf: &mut [u8],
    ) -> Result<(), <S as ReadAt>::Error> {
        let i = usize::from(self.current);
        let Some(f) = self.files.get(i).copied() else {
            return Ok(());
        };
        let mut hasher = Sha1Hasher::new();
        let mut offset = 0u64;
        while offset < f.local {
            let want = usize::try_from(f.local - offset)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = sink.read_at(self.current, offset, &mut buf[..want])?;
            if n == 0 || n > want {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        self.prefix_pending = false;
        self.hasher = hasher;
        self.received = offset;
        if offset < f.local {
            // The local file is shorter than the sink said: use what is there.
            self.files[i].local = offset;
        }
        self.progress_dirty = true;
        if self.received == f.size {
            self.complete_file(now, sink)
        } else {
            self.request_read(now);
            Ok(())
        }
    }
}

impl<const F: usize, S: Sink + ?Sized> Machine<S> for Session<F> {
    type Event = Event;
    type Error = Error;
    fn handle_connected(&mut self, now: Instant) {
        Session::handle_connected(self, now)
    }
    fn handle_disconnected(&mut self, now: Instant) {
        Session::handle_disconnected(self, now)
    }
    fn handle_frame(
        &mut self,
        now: Instant,
        frame: Frame<'_>,
        files: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        Session::handle_frame(self, now, frame, files)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Session::handle_timeout(self, now)
    }
    fn poll_transmit(
        &mut self,
        now: Instant,
        files: &mut S,
        out: &mut [u8],
    ) -> Result<Option<usize>, <S as ReadAt>::Error> {
        Session::poll_transmit(self, now, files, out)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Session::poll_timeout(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Session::poll_event(self)
    }
    fn is_idle(&self) -> bool {
        Session::is_idle(self)
    }
    fn is_finished(&self) -> bool {
        Session::is_finished(self)
    }
    fn error(&self) -> Option<Error> {
        Session::error(self)
    }
    fn progress(&self) -> Progress {
        Session::progress(self)
    }
}

#[cfg(test)]
pub(crate) mod tests;
