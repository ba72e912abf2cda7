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
//!    ▲                             │                     │ Manifest + one ManifestEntry per file
//!    │                             │ Welcome, whole      ▼
//!    │                             └─ manifest held ─► Reading ──(last file verified)──► Done
//!    │ handle_disconnected / idle timeout                │
//!    └───────────────────────────────────────────────────┘
//! ```
//!
//! A reconnect fetches the manifest again only if the session does not hold
//! all of it, ready: a ready batch never changes, and every `Read` is
//! authorised on its own, so the session reads right after `Welcome`.
//!
//! With the feature `auth`, a session given a credential
//! (`Session::authenticate`) runs the handshake of PROTOCOL.md §8 after
//! every `Welcome`, before its `Fetch`. A named download
//! (`Session::named`) sends `FetchNamed{owner, name}` instead, and its
//! `Read`s name the manifest's `code`: a read handle valid on that link
//! only, so every link fetches the name again and takes the new handle. If
//! the name now holds other content (another SHA-1), the file's bytes so
//! far are thrown away ([`Sink::truncate`], [`Event::Replaced`]) and it is
//! read from 0, never mixed.
//!
//! Flow control: a [`Read`](crate::message::Read) starts (or restarts) the
//! relay's stream of one file at an offset with a credit of up to `window`
//! bytes; the terminal extends the credit with an
//! [`Ack`](crate::message::Ack) of its contiguous offset each time a
//! quarter of the credit has arrived. Data at any other offset than the
//! next expected byte is dropped (it is a duplicate, or follows a loss); a
//! gap or [`Config::retransmit_timeout`] without progress restarts the
//! stream with a new `Read` at the first missing byte. Until the restarted
//! stream's data arrives, the old stream's frames still in flight come at
//! rising offsets; one at an offset below those is a later stream, and a
//! gap in it restarts it again. On a new link, in a new file and after a
//! timeout with nothing heard no older stream can arrive, so the first gap
//! restarts.
//!
//! The credit is the whole window while nothing is lost. Each loss halves
//! it, down to eight of the largest frames the terminal accepts, and each
//! credit's worth arriving in order doubles it again: the old stream a
//! restart waits behind is then at most one credit long, not the rest of
//! the file.
//!
//! Resume: for each file the sink reports how many bytes it already has
//! from an earlier attempt ([`Sink::open`]); the session re-hashes that
//! prefix through [`ReadAt`] and continues after it. If the finished file's
//! SHA-1 does not match and a prefix was reused, the file is truncated
//! ([`Sink::truncate`]) and fetched once more from 0 before the session gives up.
//!
//! The session's parts: [`Config`] (its tuning), [`Sink`] and [`Hashing`]
//! (where bytes go and who hashes them), [`Event`] and [`Error`] (what it
//! reports); `receive` handles the relay's replies, `verify` moves from
//! file to file and checks each one's SHA-1, `transmit` writes what goes
//! out, `credit` sizes what it grants and `timers` owns retries,
//! keepalives and the idle timeout. This file holds the state they share.

use core::marker::PhantomData;

use heapless::{Deque, Vec};

use crate::code::Code;
use crate::drive::{Machine, Progress};
use crate::frame::{self, Frame};
use crate::hash::{Sha1Digest, Sha1Hasher};
use crate::storage::ReadAt;
use crate::time::Instant;
#[cfg(any(test, feature = "auth"))]
use crate::{auth::Handshake, identity::Credential};

mod config;
mod credit;
mod event;
mod receive;
mod sink;
mod timers;
mod transmit;
mod verify;

pub use config::Config;
pub use event::{Error, Event};
pub use sink::{Hashing, Sink};

use credit::Credit;

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
    /// The credential's handshake runs; the fetch follows it.
    #[cfg(any(test, feature = "auth"))]
    Authenticating,
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

/// A named file: the user whose namespace holds it, and its name there.
#[cfg(any(test, feature = "auth"))]
#[derive(Debug, Clone, Copy)]
struct Named<'a> {
    owner: &'a str,
    name: &'a str,
}

/// A download of a batch of up to `F` files. See the module docs. `'a`
/// is the lifetime of the credential's name and of a named file's owner
/// and name (feature `auth`), which the session borrows.
#[derive(Debug)]
pub struct Session<'a, const F: usize> {
    config: Config,
    /// What `Read`s name: the code, or a named file's current read handle.
    code: Code,
    /// The file to fetch by name rather than by code.
    #[cfg(any(test, feature = "auth"))]
    named: Option<Named<'a>>,
    /// The credential's handshake, run after every `Welcome`.
    #[cfg(any(test, feature = "auth"))]
    auth: Option<Handshake<'a>>,
    /// Without the feature `auth` the session borrows nothing.
    _borrows: PhantomData<&'a str>,
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
    /// What the next `Read` or `Ack` grants, adapted to loss.
    credit: Credit,
    /// A restart was requested: gaps are expected until its data arrives.
    restart_pending: bool,
    /// The highest offset of data past a gap seen since the last progress:
    /// a later frame below it belongs to a stream that began after it, at
    /// or before `received`, and lost its first bytes. `u64::MAX` while no
    /// older stream of the file can still arrive (a new link, a new file).
    stale_until: u64,
    peer_max_frame: usize,
    /// How frames go to the relay: COBS until a `Welcome` agrees otherwise.
    framing: frame::Framing,
    control: Deque<Control, 6>,
    events: Deque<Event, 8>,
    progress_dirty: bool,
    /// When to resend the current request if nothing moves.
    retry_at: Option<Instant>,
    last_sent: Instant,
    last_heard: Instant,
    error: Option<Error>,
}

impl<'a, const F: usize> Session<'a, F> {
    /// A download of the batch behind `code`.
    pub fn new(config: Config, code: Code) -> Self {
        Session {
            config,
            code,
            #[cfg(any(test, feature = "auth"))]
            named: None,
            #[cfg(any(test, feature = "auth"))]
            auth: None,
            _borrows: PhantomData,
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
            credit: Credit::new(config.window, config.max_frame),
            restart_pending: false,
            stale_until: 0,
            peer_max_frame: frame::MIN_FRAME_LEN,
            framing: frame::Framing::Cobs,
            control: Deque::new(),
            events: Deque::new(),
            progress_dirty: false,
            retry_at: None,
            last_sent: Instant::ZERO,
            last_heard: Instant::ZERO,
            error: None,
        }
    }

    /// A download of the file `name` in the namespace of the user `owner`
    /// (`FetchNamed`, PROTOCOL.md §8): a manifest of one file, read through
    /// the handle it carries. Reading another user's file needs a
    /// credential ([`authenticate`](Self::authenticate)) that the owner
    /// shared it with; a name that does not exist, or may not be read,
    /// fails with `Relay(UnknownCode)`. With the feature `auth`.
    #[cfg(any(test, feature = "auth"))]
    pub fn named(config: Config, owner: &'a str, name: &'a str) -> Self {
        // Reads name the manifest's handle; none goes out before it arrives.
        let mut s = Self::new(config, Code::from_random([0; 16], Code::MIN_LEN));
        s.named = Some(Named { owner, name });
        s
    }

    /// Authenticates every link with `credential` right after `Welcome`,
    /// before the fetch (PROTOCOL.md §8): a refusal fails the session with
    /// [`Error::Auth`]. Call before the session connects. A setter rather
    /// than a [`Config`] field: the credential borrows the terminal's name,
    /// and `Config` is a plain `Copy` value without a lifetime. With the
    /// feature `auth`.
    #[cfg(any(test, feature = "auth"))]
    pub fn authenticate(&mut self, credential: Credential<'a>) {
        self.auth = Some(Handshake::new(credential));
    }

    /// The code being downloaded; for a named download (`Session::named`), the
    /// read handle of the latest manifest (meaningless before one).
    pub fn code(&self) -> Code {
        self.code
    }

    /// Whether the file is fetched by name (its handle changes per link).
    fn is_named(&self) -> bool {
        #[cfg(any(test, feature = "auth"))]
        {
            self.named.is_some()
        }
        #[cfg(not(any(test, feature = "auth")))]
        {
            false
        }
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
        // Every link starts in COBS (PROTOCOL.md §2.1).
        self.framing = frame::Framing::Cobs;
        self.stale_until = u64::MAX;
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

    fn link_lost(&mut self) {
        self.phase = Phase::Idle;
        self.retry_at = None;
        self.control.clear();
        self.push_event(Event::LinkLost);
    }

    /// Something was lost: restart the stream, granting less.
    fn restart_after_loss(&mut self, now: Instant) {
        self.credit.lost();
        self.request_read(now);
    }

    fn request_read(&mut self, now: Instant) {
        self.push_control(Control::Read);
        self.restart_pending = true;
        self.retry_at = Some(now + self.config.retransmit_timeout);
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
}

impl<const F: usize, S: Sink + ?Sized> Machine<S> for Session<'_, F> {
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
    fn framing(&self) -> frame::Framing {
        self.framing
    }
    fn keep_cobs(&mut self) {
        self.config.length_prefix = false;
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
mod attrs_tests;
#[cfg(test)]
mod auth_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod timer_tests;
