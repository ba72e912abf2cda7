//! The uploading terminal's state machine.
//!
//! [`Session`] holds everything an upload needs to survive a lossy link, a
//! dropped connection or a restart of either side, and nothing that touches
//! I/O. A driver (the `pickup-device` blocking client, the `pickup` CLI, the
//! simulator, a fuzzer) moves bytes and time in and out through the
//! [`Machine`] contract it shares with
//! [`download::Session`](crate::download::Session), with file bytes read
//! through a [`ReadAt`] source; [`crate::drive`] has the call order.
//!
//! ```text
//!            handle_connected
//!   Idle ───────────────────────► AwaitWelcome ──Welcome──┬─(no token)──► Announcing ──► AwaitGrant
//!    ▲                                                     └─(token)─────► AwaitGrant (Resume sent)
//!    │ handle_disconnected / idle timeout                                       │ Grant + FilePlans
//!    └──────────────────────────────────────────── Transfer ◄───────────────────┘
//!                                                       │ every file Verified or Held
//!                                                       ▼
//!                                                     Done        (Failed on a refusal)
//! ```
//!
//! Reliability rules, all driven by [`Instant`]s the caller passes in:
//! - data is sent in order per file within the relay's window; the relay's
//!   [`Ack`] is cumulative and means *durable*;
//! - a [`Rewind`], or no ack progress for
//!   [`Config::retransmit_timeout`], resends from the last acknowledged offset;
//! - a lost control message (hello, announce, plan, proof, verdict) is
//!   recovered by resending the request on the same timer: announcing is
//!   restarted before a grant, and after a grant a
//!   [`Resume`](crate::message::Resume) asks the relay for every file's state
//!   again (the relay answers it idempotently);
//! - hearing nothing for [`Config::idle_timeout`] means the link is gone:
//!   [`Event::LinkLost`], and the driver reconnects.

use heapless::{Deque, Vec};

use crate::code::Code;
use crate::drive::{Machine, Progress};
use crate::error::ErrorCode;
use crate::frame::{self, EncodeError, Frame};
use crate::hash::{Nonce, Sha1Digest};
use crate::message::{
    self, Ack, BatchOpen, FileAnnounce, FilePlan, Grant, Hello, Message, Plan, Proof, ResumeToken,
    Rewind, Role, CAP_INSTANT_UPLOAD,
};
use crate::storage::{self, ReadAt};
use crate::time::{Duration, Instant};
use crate::PROTOCOL_VERSION;

/// Tuning for a session. [`Config::default`] suits TCP; serial links at low
/// baud rates want longer timeouts.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Largest raw frame this side accepts (its decoder buffer size).
    pub max_frame: u32,
    /// Without ack progress for this long, resend from the last acked offset.
    pub retransmit_timeout: Duration,
    /// Without any frame from the relay for this long, the link is lost.
    pub idle_timeout: Duration,
    /// Send a keepalive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Answer the relay's challenges to link content it already holds.
    pub instant_upload: bool,
    /// Upper bound on bytes in flight, whatever the relay offers (32 MiB by
    /// default). It costs the terminal no memory: unacknowledged bytes are
    /// read again from the source if they must be resent. A wide window
    /// lets a fast link ride out the relay's disk flushes; a serial relay
    /// offers far less anyway.
    pub max_window: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: 16 * 1024,
            retransmit_timeout: Duration::from_millis(2_000),
            idle_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(5),
            instant_upload: true,
            max_window: 32 * 1024 * 1024,
        }
    }
}

/// One file to upload. The name is borrowed for the session's lifetime (a
/// `&'static str` in firmware, a `String` the driver keeps on a host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileMeta<'n> {
    /// Name as downloaders will see it (see [`message::validate_name`]).
    pub name: &'n str,
    /// Size in bytes.
    pub size: u64,
    /// SHA-1 of the whole file (see [`storage::sha1_of`]).
    pub sha1: Sha1Digest,
}

/// What the driver should know about. Progress is coalesced: at most one
/// [`Event::Progress`] is pending at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event {
    /// The relay accepted the session.
    Connected,
    /// The batch exists: show the code; keep the token to resume later.
    Granted {
        /// The pickup code.
        code: Code,
        /// Expiry, seconds since the Unix epoch.
        expires_at: u64,
        /// The resume token (secret).
        token: ResumeToken,
    },
    /// The relay will take `file` from `offset` (0 for new content, more on resume).
    Uploading {
        /// File index.
        file: u16,
        /// First byte to send.
        offset: u64,
    },
    /// The relay already held `file`'s content and linked it after our proof
    /// (or it was complete from an earlier session).
    Linked {
        /// File index.
        file: u16,
    },
    /// The relay verified `file` (size and SHA-1).
    Verified {
        /// File index.
        file: u16,
    },
    /// Bytes acknowledged (durable at the relay) over the whole batch.
    Progress {
        /// Durable bytes.
        acked: u64,
        /// Total bytes of the batch.
        total: u64,
    },
    /// Data is being resent from `offset` after a loss.
    Retransmit {
        /// File index.
        file: u16,
        /// Resent from here.
        offset: u64,
    },
    /// Nothing heard for the idle timeout: the driver should reconnect and
    /// call [`Session::handle_connected`].
    LinkLost,
    /// Every file is at the relay; the code serves the batch.
    Complete {
        /// The pickup code.
        code: Code,
    },
    /// The upload cannot succeed; see the error.
    Failed(Error),
}

/// Why an upload failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The relay refused the session or the batch.
    Relay(ErrorCode),
    /// The relay rejected one file (its bytes do not match size or SHA-1).
    Rejected {
        /// File index.
        file: u16,
        /// Why.
        reason: ErrorCode,
    },
    /// More files than this session's capacity, none at all, or more than a `u16` counts.
    TooManyFiles,
    /// A file name is invalid or does not fit the relay's frame size.
    InvalidName {
        /// File index.
        file: u16,
    },
    /// The relay's grant did not match the batch (a token for another batch).
    Mismatch,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Relay(code) => write!(f, "relay refused: {code}"),
            Error::Rejected { file, reason } => write!(f, "file {file} rejected: {reason}"),
            Error::TooManyFiles => f.write_str("no files, or too many files for one batch"),
            Error::InvalidName { file } => write!(f, "file {file} has an invalid or too long name"),
            Error::Mismatch => f.write_str("the relay's batch does not match these files"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    /// Waiting for the relay's plan.
    Unplanned,
    /// Sending data; `acked..sent` is in flight.
    Sending,
    /// The relay challenged; a proof is to be sent.
    ProofDue(Nonce),
    /// The proof is sent; waiting for the relay's verdict (Held or Upload).
    ProofSent,
    /// The relay verified or already held the file.
    Done,
}

#[derive(Debug, Clone, Copy)]
struct File<'n> {
    meta: FileMeta<'n>,
    state: FileState,
    acked: u64,
    sent: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    AwaitWelcome,
    /// Sending `BatchOpen` (`next == None`) then each `FileAnnounce`.
    Announcing {
        next: Option<u16>,
    },
    AwaitGrant,
    Transfer,
    Done,
    Failed,
}

/// Control messages that wait for `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Hello,
    Resume,
    Keepalive,
    Goodbye,
}

/// An upload of up to `F` files, as a sans-IO state machine. See the module docs.
#[derive(Debug)]
pub struct Session<'n, const F: usize> {
    config: Config,
    files: Vec<File<'n>, F>,
    phase: Phase,
    /// The token, from the grant or from [`Session::resume`].
    token: Option<ResumeToken>,
    grant: Option<Grant>,
    /// Relay's frame and window limits, from the welcome and acks.
    peer_max_frame: usize,
    peer_window: u64,
    instant_allowed: bool,
    control: Deque<Control, 4>,
    events: Deque<Event, 8>,
    progress_dirty: bool,
    /// When the current wait (for a reply or for ack progress) started.
    waiting_since: Option<Instant>,
    last_sent: Instant,
    last_heard: Instant,
    error: Option<Error>,
}

impl<'n, const F: usize> Session<'n, F> {
    /// A new upload of `files`. Fails if there are none or more than `F`.
    pub fn new(config: Config, files: &[FileMeta<'n>]) -> Result<Self, Error> {
        if files.is_empty() || files.len() > usize::from(u16::MAX) {
            return Err(Error::TooManyFiles);
        }
        let mut list = Vec::new();
        for (i, meta) in files.iter().enumerate() {
            message::validate_name(meta.name).map_err(|_| Error::InvalidName { file: i as u16 })?;
            list.push(File {
                meta: *meta,
                state: FileState::Unplanned,
                acked: 0,
                sent: 0,
            })
            .map_err(|_| Error::TooManyFiles)?;
        }
        Ok(Session {
            config,
            files: list,
            phase: Phase::Idle,
            token: None,
            grant: None,
            peer_max_frame: frame::MIN_FRAME_LEN,
            peer_window: 0,
            instant_allowed: false,
            control: Deque::new(),
            events: Deque::new(),
            progress_dirty: false,
            waiting_since: None,
            last_sent: Instant::ZERO,
            last_heard: Instant::ZERO,
            error: None,
        })
    }

    /// Continues an earlier upload of the same `files` with its resume token
    /// (after a restart of the terminal). The relay says where each file stands.
    pub fn resume(
        config: Config,
        files: &[FileMeta<'n>],
        token: ResumeToken,
    ) -> Result<Self, Error> {
        let mut s = Self::new(config, files)?;
        s.token = Some(token);
        Ok(s)
    }

    /// The grant, once the relay has sent it.
    pub fn grant(&self) -> Option<&Grant> {
        self.grant.as_ref()
    }

    /// Whether the upload finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }

    /// Whether no exchange runs (see [`Machine::is_idle`]).
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// The failure, if the upload failed.
    pub fn error(&self) -> Option<Error> {
        self.error
    }

    /// Total bytes of the batch.
    pub fn total_size(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |t, f| t.saturating_add(f.meta.size))
    }

    /// How far the upload has come: granted, bytes durable at the relay.
    pub fn progress(&self) -> Progress {
        Progress {
            started: self.grant.is_some(),
            done: self.acked(),
            total: self.total_size(),
        }
    }

    /// Bytes the relay holds durably (acked, linked or verified).
    pub fn acked(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |t, f| t.saturating_add(f.acked))
    }

    /// A new link is up: start (or restart) the exchange.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.is_finished() {
            return;
        }
        self.control.clear();
        self.push_control(Control::Hello);
        self.phase = Phase::AwaitWelcome;
        self.waiting_since = Some(now);
        self.last_heard = now;
        self.last_sent = now;
        // Everything unacknowledged must be sent again on the new link.
        for f in self.files.iter_mut() {
            f.sent = f.acked;
            if matches!(f.state, FileState::ProofSent) {
                f.state = FileState::Unplanned;
            }
        }
    }

    /// The link went away (the driver noticed: EOF, error, port gone).
    pub fn handle_disconnected(&mut self, _now: Instant) {
        if !self.is_finished() {
            self.phase = Phase::Idle;
            self.waiting_since = None;
            self.control.clear();
        }
    }

    /// Handles one frame from the relay. Frames that do not decode, or are
    /// not expected now, are ignored: the timers recover from whatever they
    /// were meant to say.
    ///
    /// An upload reads no file bytes on input, so this needs no source; a
    /// driver written for both machines calls [`Machine::handle_frame`],
    /// which takes one like the download's.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) {
        if let Ok(msg) = Message::decode_from_relay(frame) {
            self.handle_message(now, msg);
        }
    }

    /// Handles one decoded message from the relay.
    pub fn handle_message(&mut self, now: Instant, msg: Message<'_>) {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return;
        }
        self.last_heard = now;
        match msg {
            Message::Welcome(w) if self.phase == Phase::AwaitWelcome => {
                if w.version != PROTOCOL_VERSION {
                    return self.fail(Error::Relay(ErrorCode::UnsupportedVersion));
                }
                self.peer_max_frame =
                    (w.max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN);
                self.peer_window = u64::from(w.window.min(self.config.max_window));
                self.instant_allowed =
                    self.config.instant_upload && w.caps & CAP_INSTANT_UPLOAD != 0;
                self.push_event(Event::Connected);
                if self.token.is_some() {
                    self.push_control(Control::Resume);
                    self.phase = Phase::AwaitGrant;
                } else {
                    self.phase = Phase::Announcing { next: None };
                }
                self.waiting_since = Some(now);
            }
            Message::Grant(g) => self.on_grant(now, g),
            Message::FilePlan(p) => self.on_plan(now, p),
            Message::Ack(a) => self.on_ack(now, a),
            Message::Rewind(r) => self.on_rewind(r),
            Message::FileVerified(v) if self.phase == Phase::Transfer => {
                if let Some(f) = self.files.get_mut(usize::from(v.index)) {
                    if f.state != FileState::Done && f.acked == f.meta.size {
                        f.state = FileState::Done;
                        self.push_event(Event::Verified { file: v.index });
                        self.check_complete(now);
                    }
                }
            }
            Message::FileRejected(r) if usize::from(r.index) < self.files.len() => {
                self.fail(Error::Rejected {
                    file: r.index,
                    reason: r.reason,
                });
            }
            Message::BatchComplete(_) => {
                // Only a confirmation: completion is decided per file above,
                // so a lost BatchComplete costs nothing.
            }
            Message::Error(e) => self.on_error(now, e),
            Message::Keepalive => {}
            Message::Goodbye => {
                self.phase = Phase::Idle;
                self.push_event(Event::LinkLost);
            }
            _ => {}
        }
    }

    fn on_error(&mut self, now: Instant, e: message::Error) {
        if noise(&e) {
            return;
        }
        match e.code {
            // Transient: keep the state, back off through the normal timers.
            ErrorCode::RateLimited
            | ErrorCode::Busy
            | ErrorCode::Internal
            | ErrorCode::BadFrame => {
                self.waiting_since = Some(now);
            }
            ErrorCode::UnexpectedMessage if self.phase != Phase::Transfer => {
                // Our view and the relay's diverged (a lost frame during
                // announcing): start the request over on the timer.
                self.waiting_since = Some(now);
            }
            ErrorCode::UnexpectedMessage | ErrorCode::IdleTimeout | ErrorCode::ShuttingDown => {
                self.phase = Phase::Idle;
                self.push_event(Event::LinkLost);
            }
            other => self.fail(Error::Relay(other)),
        }
    }

    fn on_grant(&mut self, now: Instant, g: Grant) {
        if !matches!(
            self.phase,
            Phase::AwaitGrant | Phase::Announcing { .. } | Phase::Transfer
        ) {
            return;
        }
        if usize::from(g.files) != self.files.len() {
            return self.fail(Error::Mismatch);
        }
        let first = self.grant.is_none();
        match self.token {
            Some(token) if token != g.token => return self.fail(Error::Mismatch),
            _ => self.token = Some(g.token),
        }
        self.grant = Some(g);
        if first {
            self.push_event(Event::Granted {
                code: g.code,
                expires_at: g.expires_at,
                token: g.token,
            });
        }
        self.phase = Phase::Transfer;
        self.waiting_since = Some(now);
        // Plans and verdicts of an earlier exchange may already have
        // finished every file (a resumed batch, a repeated grant).
        self.check_complete(now);
    }

    fn on_plan(&mut self, now: Instant, p: FilePlan) {
        if self.phase != Phase::Transfer {
            return;
        }
        let index = p.index;
        let Some(f) = self.files.get_mut(usize::from(index)) else {
            return;
        };
        if f.state == FileState::Done {
            return self.check_complete(now);
        }
        let event = match p.plan {
            Plan::Held => {
                f.state = FileState::Done;
                f.acked = f.meta.size;
                f.sent = f.meta.size;
                self.progress_dirty = true;
                Some(Event::Linked { file: index })
            }
            Plan::Upload { offset } => {
                // The relay's durable offset is the truth, even if it is
                // below what it acked before (it never should be).
                let offset = offset.min(f.meta.size);
                let was = f.state;
                f.state = FileState::Sending;
                f.acked = offset;
                f.sent = offset;
                self.progress_dirty = true;
                (was != FileState::Sending).then_some(Event::Uploading {
                    file: index,
                    offset,
                })
            }
            Plan::Challenge { nonce } => {
                if self.instant_allowed {
                    f.state = FileState::ProofDue(nonce);
                } else {
                    // Not answering: the relay treats silence like a wrong
                    // proof once we send data instead. Ask for the upload plan
                    // with a proof that cannot match.
                    f.state = FileState::ProofDue([0; 32]);
                }
                None
            }
        };
        if let Some(e) = event {
            self.push_event(e);
        }
        self.waiting_since = Some(now);
        self.check_complete(now);
    }

    fn on_ack(&mut self, now: Instant, a: Ack) {
        if self.phase != Phase::Transfer {
            return;
        }
        let Some(f) = self.files.get_mut(usize::from(a.file)) else {
            return;
        };
        let offset = a.offset.min(f.meta.size);
        self.peer_window = u64::from(a.window.min(self.config.max_window));
        if offset > f.acked {
            f.acked = offset;
            if f.sent < offset {
                f.sent = offset;
            }
            self.progress_dirty = true;
            self.waiting_since = Some(now);
        }
    }

    fn on_rewind(&mut self, r: Rewind) {
        if self.phase != Phase::Transfer {
            return;
        }
        let Some(f) = self.files.get_mut(usize::from(r.file)) else {
            return;
        };
        if f.state != FileState::Sending {
            return;
        }
        let offset = r.offset.min(f.meta.size);
        if offset < f.sent {
            if offset < f.acked {
                f.acked = offset;
                self.progress_dirty = true;
            }
            f.sent = offset;
            self.push_event(Event::Retransmit {
                file: r.file,
                offset,
            });
        }
    }

    fn check_complete(&mut self, now: Instant) {
        if self.phase == Phase::Transfer && self.files.iter().all(|f| f.state == FileState::Done) {
            if let Some(g) = self.grant {
                let code = g.code;
                self.phase = Phase::Done;
                self.waiting_since = None;
                self.last_sent = now;
                self.push_control(Control::Goodbye);
                self.progress_dirty = true;
                self.push_event(Event::Complete { code });
            }
        }
    }

    fn fail(&mut self, e: Error) {
        self.phase = Phase::Failed;
        self.error = Some(e);
        self.waiting_since = None;
        self.push_event(Event::Failed(e));
    }

    fn push_control(&mut self, c: Control) {
        if !self.control.iter().any(|x| *x == c) {
            // Capacity covers one of each kind, so this never drops.
            let _ = self.control.push_back(c);
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.events.is_full() {
            // A driver that never polls events loses the oldest, not the newest.
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
                acked: self.acked(),
                total: self.total_size(),
            });
        }
        None
    }

    fn bytes_in_flight(&self) -> u64 {
        self.files.iter().fold(0u64, |t, f| {
            t.saturating_add(f.sent.saturating_sub(f.acked))
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return None;
        }
        let mut t = self.last_heard + self.config.idle_timeout;
        t = t.min(self.last_sent + self.config.keepalive_interval);
        if let Some(w) = self.waiting_since {
            t = t.min(w + self.config.retransmit_timeout);
        }
        Some(t)
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return;
        }
        if now >= self.last_heard + self.config.idle_timeout {
            self.phase = Phase::Idle;
            self.waiting_since = None;
            self.control.clear();
            self.push_event(Event::LinkLost);
            return;
        }
        if now >= self.last_sent + self.config.keepalive_interval {
            self.push_control(Control::Keepalive);
        }
        let Some(since) = self.waiting_since else {
            return;
        };
        if now < since + self.config.retransmit_timeout {
            return;
        }
        self.waiting_since = Some(now);
        match self.phase {
            Phase::AwaitWelcome => self.push_control(Control::Hello),
            Phase::Announcing { .. } => self.phase = Phase::Announcing { next: None },
            Phase::AwaitGrant => {
                if self.token.is_some() {
                    self.push_control(Control::Resume)
                } else {
                    self.phase = Phase::Announcing { next: None }
                }
            }
            Phase::Transfer => {
                // Nothing moved for a whole retransmit timeout: resend what
                // is unacknowledged, and ask the relay where every file
                // stands. Resending alone is not enough: if the relay holds
                // the bytes and only its ack or verdict was lost, it ignores
                // the duplicates, and the answer to `Resume` is what moves
                // the upload on (durable offsets, `Held`).
                let mut waiting = false;
                for (i, f) in self.files.iter_mut().enumerate() {
                    if f.state == FileState::Sending && f.sent > f.acked {
                        f.sent = f.acked;
                        if self.events.is_full() {
                            self.events.pop_front();
                        }
                        let _ = self.events.push_back(Event::Retransmit {
                            file: i as u16,
                            offset: f.acked,
                        });
                    }
                    // ProofDue only waits for our own transmit.
                    waiting |= !matches!(f.state, FileState::Done | FileState::ProofDue(_));
                }
                if waiting {
                    self.push_control(Control::Resume);
                }
            }
            Phase::Idle | Phase::Done | Phase::Failed => {}
        }
    }

    /// Writes the next frame to send into `out` (at least
    /// [`frame::max_encoded_len`] of the relay's frame size, and of
    /// `config.max_frame`) and returns its length, or `None` if there is
    /// nothing to send now. Reads file bytes through `source`; a read error
    /// is returned as is and nothing is marked sent.
    #[must_use = "a frame written to `out` must be sent"]
    pub fn poll_transmit<R: ReadAt + ?Sized>(
        &mut self,
        now: Instant,
        source: &mut R,
        out: &mut [u8],
    ) -> Result<Option<usize>, R::Error> {
        let n = self.next_frame(source, out)?;
        if n.is_some() {
            self.last_sent = now;
        }
        Ok(n)
    }

    fn next_frame<R: ReadAt + ?Sized>(
        &mut self,
        source: &mut R,
        out: &mut [u8],
    ) -> Result<Option<usize>, R::Error> {
        let max = self.peer_max_frame;
        if let Some(c) = self.control.pop_front() {
            let encoded = match c {
                // Hello must fit the smallest frame any relay accepts.
                Control::Hello => message::encode(
                    &Hello {
                        version: PROTOCOL_VERSION,
                        role: Role::Terminal,
                        max_frame: self.config.max_frame,
                        // The relay paces its acks to fit what we keep in flight.
                        window: self.config.max_window,
                        caps: if self.config.instant_upload {
                            CAP_INSTANT_UPLOAD
                        } else {
                            0
                        },
                    },
                    frame::MIN_FRAME_LEN,
                    out,
                ),
                Control::Resume => match self.token {
                    Some(token) => message::encode(&message::Resume { token }, max, out),
                    None => return Ok(None),
                },
                Control::Keepalive => message::encode_empty(message::Kind::Keepalive, max, out),
                Control::Goodbye => message::encode_empty(message::Kind::Goodbye, max, out),
            };
            return Ok(encoded.ok());
        }
        match self.phase {
            Phase::Announcing { next } => return Ok(self.announce(next, out)),
            Phase::Transfer => {}
            _ => return Ok(None),
        }
        // Proofs first: they unblock whole files.
        for i in 0..self.files.len() {
            if let FileState::ProofDue(nonce) = self.files[i].state {
                let size = self.files[i].meta.size;
                // `out` doubles as the read buffer; the proof is 20 bytes.
                let proof = match storage::proof_of(source, i as u16, size, &nonce, out) {
                    Ok(p) => p,
                    Err(storage::ReadError::Storage(e)) => return Err(e),
                    // The file shrank under us: send a proof that fails, so
                    // the relay asks for a normal upload, which will be
                    // rejected with a clear reason.
                    Err(storage::ReadError::ShortFile) => Sha1Digest::default(),
                };
                self.files[i].state = FileState::ProofSent;
                let proof = Proof {
                    index: i as u16,
                    proof,
                };
                return Ok(message::encode(&proof, max, out).ok());
            }
        }
        let budget = self.peer_window.saturating_sub(self.bytes_in_flight());
        for i in 0..self.files.len() {
            let f = self.files[i];
            if f.state != FileState::Sending {
                continue;
            }
            if f.sent >= f.meta.size {
                continue;
            }
            if budget == 0 {
                return Ok(None);
            }
            let want = (f.meta.size - f.sent).min(budget);
            let want = usize::try_from(want).unwrap_or(usize::MAX);
            let mut read_result = Ok(0usize);
            let encoded = message::encode_data_with(i as u16, f.sent, want, max, out, |room| {
                read_result = source.read_at(i as u16, f.sent, room);
                match read_result {
                    Ok(n) if n > 0 => Some(n),
                    _ => None,
                }
            });
            match (encoded, read_result) {
                (Ok(len), Ok(n)) => {
                    self.files[i].sent += n as u64;
                    if self.waiting_since.is_none() {
                        self.waiting_since = Some(self.last_sent);
                    }
                    return Ok(Some(len));
                }
                (_, Err(e)) => return Err(e),
                // A read of 0 bytes before the announced end: the file
                // shrank. Send nothing more; the relay's verification of
                // what it has will reject the file with a clear reason.
                (Err(_), Ok(_)) => {
                    self.files[i].sent = f.meta.size;
                    continue;
                }
            }
        }
        Ok(None)
    }

    fn announce(&mut self, next: Option<u16>, out: &mut [u8]) -> Option<usize> {
        let max = self.peer_max_frame;
        let (encoded, following) = match next {
            None => (
                message::encode(
                    &BatchOpen {
                        files: self.files.len() as u16,
                        total_size: self.total_size(),
                    },
                    max,
                    out,
                ),
                Phase::Announcing { next: Some(0) },
            ),
            Some(i) => {
                let f = self.files.get(usize::from(i))?;
                let following = if usize::from(i) + 1 < self.files.len() {
                    Phase::Announcing { next: Some(i + 1) }
                } else {
                    Phase::AwaitGrant
                };
                let announce = FileAnnounce {
                    index: i,
                    size: f.meta.size,
                    sha1: f.meta.sha1,
                    name: f.meta.name,
                };
                (message::encode(&announce, max, out), following)
            }
        };
        match encoded {
            Ok(n) => {
                self.phase = following;
                Some(n)
            }
            Err(EncodeError::TooLarge) => {
                self.fail(Error::InvalidName {
                    file: next.unwrap_or(0),
                });
                None
            }
        }
    }
}

impl<const F: usize, R: ReadAt + ?Sized> Machine<R> for Session<'_, F> {
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
        _files: &mut R,
    ) -> Result<(), R::Error> {
        Session::handle_frame(self, now, frame);
        Ok(())
    }
    fn handle_timeout(&mut self, now: Instant) {
        Session::handle_timeout(self, now)
    }
    fn poll_transmit(
        &mut self,
        now: Instant,
        files: &mut R,
        out: &mut [u8],
    ) -> Result<Option<usize>, R::Error> {
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

/// Whether an error answers no message of ours but a frame the relay could
/// not take apart (kind 0: oversize, undecodable). On a noisy serial line
/// that is garbage that happened to look like a frame; the timers recover
/// whatever was lost, so it must not end the transfer.
pub(crate) fn noise(e: &message::Error) -> bool {
    e.kind == 0
        && matches!(
            e.code,
            ErrorCode::TooLarge | ErrorCode::BadFrame | ErrorCode::UnknownKind
        )
}

#[cfg(test)]
mod tests;
