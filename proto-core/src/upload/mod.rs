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
//!            handle_connected                       (credential: Authenticating ─Authenticated─┐)
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
//!   [`Ack`](crate::message::Ack) is cumulative and means *durable*;
//! - a [`Rewind`](crate::message::Rewind), or no ack progress for
//!   [`Config::retransmit_timeout`], resends from the last acknowledged offset;
//! - a lost control message (hello, announce, plan, proof, verdict) is
//!   recovered by resending the request on the same timer: announcing is
//!   restarted before a grant, and after a grant a
//!   [`Resume`](crate::message::Resume) asks the relay for every file's state
//!   again (the relay answers it idempotently);
//! - hearing nothing for [`Config::idle_timeout`] means the link is gone:
//!   [`Event::LinkLost`], and the driver reconnects.
//!
//! With the feature `auth`, a session given a credential
//! (`Session::authenticate`) runs the handshake of PROTOCOL.md §8 after
//! every `Welcome`, before anything else; `Session::set_named` stores
//! the batch under the user's names (`NamedPut` before `BatchOpen`).
//!
//! With the feature `page-link` and [`Config::page_link`], the `Hello`
//! offers `CAP_PAGE_LINK` and a `PageLink` from the relay, in any phase
//! after `Welcome`, is kept for `Session::page_link`. Likewise with
//! `relay-limits` and [`Config::relay_limits`]: `CAP_RELAY_LIMITS`, and
//! the relay's `RelayLimits` kept for `Session::relay_limits`.
//!
//! The session's parts: [`Config`] and [`FileMeta`] (its inputs), [`Event`]
//! and [`Error`] (what it reports); `receive` handles the relay's replies,
//! `transmit` writes what goes out (control messages, announcements,
//! proofs, data within the window) and `timers` owns retransmission,
//! keepalives and the idle timeout. This file holds the state they share.

use heapless::{Deque, Vec};

use crate::drive::{Machine, Progress};
use crate::frame::{self, Frame};
use crate::hash::Nonce;
#[cfg(any(test, feature = "file-attrs"))]
use crate::message::FileAttrs;
use crate::message::{self, Grant, ResumeToken};
use crate::storage::ReadAt;
use crate::time::Instant;
#[cfg(any(test, feature = "auth"))]
use crate::{auth::Handshake, identity::Credential};

mod config;
mod event;
mod receive;
mod timers;
mod transmit;

pub use config::{Config, FileMeta};
pub use event::{Error, Event};

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
    /// Sent before the file's announcement to a relay that accepts them.
    #[cfg(any(test, feature = "file-attrs"))]
    attrs: Option<FileAttrs>,
    state: FileState,
    acked: u64,
    sent: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    AwaitWelcome,
    /// The credential's handshake runs; the exchange starts after it.
    #[cfg(any(test, feature = "auth"))]
    Authenticating,
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
    Join,
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
    /// A token of an earlier batch whose owner a new batch joins
    /// ([`Session::join_family`]).
    family: Option<ResumeToken>,
    grant: Option<Grant>,
    /// Relay's frame and window limits, from the welcome and acks.
    peer_max_frame: usize,
    /// How frames go to the relay: COBS until a `Welcome` agrees otherwise.
    framing: frame::Framing,
    peer_window: u64,
    instant_allowed: bool,
    /// The relay's welcome had `CAP_FILE_ATTRS`.
    #[cfg(any(test, feature = "file-attrs"))]
    attrs_allowed: bool,
    /// The current file's `FileAttrs` went out; its `FileAnnounce` is next.
    #[cfg(any(test, feature = "file-attrs"))]
    attrs_sent: bool,
    /// The credential's handshake, run after every `Welcome`.
    #[cfg(any(test, feature = "auth"))]
    auth: Option<Handshake<'n>>,
    /// The batch goes under the user's names: `NamedPut` before `BatchOpen`.
    #[cfg(any(test, feature = "auth"))]
    named: bool,
    /// This announcement's `NamedPut` went out; its `BatchOpen` is next.
    #[cfg(any(test, feature = "auth"))]
    named_sent: bool,
    /// The relay acknowledged the latest `NamedPut` (`Done`): the batch
    /// this link opens or resumes binds its names.
    #[cfg(any(test, feature = "auth"))]
    named_acked: bool,
    /// A `BatchComplete` came after an acknowledged `NamedPut`: the names
    /// are bound. A named upload is complete only then.
    #[cfg(any(test, feature = "auth"))]
    names_bound: bool,
    /// The relay's download pages, from its latest `PageLink`.
    #[cfg(any(test, feature = "page-link"))]
    page_link: Option<heapless::String<{ message::MAX_PAGE_URL_LEN }>>,
    /// The relay's batch limits, from its latest `RelayLimits`.
    #[cfg(any(test, feature = "relay-limits"))]
    relay_limits: Option<message::RelayLimits>,
    control: Deque<Control, 5>,
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
        if files.is_empty() || files.len() > F || files.len() > usize::from(u16::MAX) {
            return Err(Error::TooManyFiles);
        }
        let mut list = Vec::new();
        for (i, meta) in files.iter().enumerate() {
            message::validate_name(meta.name).map_err(|_| Error::InvalidName { file: i as u16 })?;
            // The relay refuses such a batch too; say which file first.
            if files[..i]
                .iter()
                .any(|m| message::names_conflict(m.name, meta.name))
            {
                return Err(Error::InvalidName { file: i as u16 });
            }
            list.push(File {
                meta: *meta,
                #[cfg(any(test, feature = "file-attrs"))]
                attrs: None,
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
            family: None,
            grant: None,
            peer_max_frame: frame::MIN_FRAME_LEN,
            framing: frame::Framing::Cobs,
            peer_window: 0,
            instant_allowed: false,
            #[cfg(any(test, feature = "file-attrs"))]
            attrs_allowed: false,
            #[cfg(any(test, feature = "file-attrs"))]
            attrs_sent: false,
            #[cfg(any(test, feature = "auth"))]
            auth: None,
            #[cfg(any(test, feature = "auth"))]
            named: false,
            #[cfg(any(test, feature = "auth"))]
            named_sent: false,
            #[cfg(any(test, feature = "auth"))]
            named_acked: false,
            #[cfg(any(test, feature = "auth"))]
            names_bound: false,
            #[cfg(any(test, feature = "page-link"))]
            page_link: None,
            #[cfg(any(test, feature = "relay-limits"))]
            relay_limits: None,
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

    /// Asks the relay to count the new batch as stored by the same owner as
    /// the earlier batch of `token` (a `Join` before announcing, PROTOCOL.md
    /// §7.1), so content that batch's family stored is uploaded instantly.
    /// Keep the token of any batch of the family: each joins it. Has no
    /// effect on a resumed upload (its batch already has an owner). A relay
    /// that does not know the token, or `Join`, lets the batch start a
    /// family of its own; nothing else changes.
    pub fn join_family(&mut self, token: ResumeToken) {
        self.family = Some(token);
    }

    /// Attributes (executable bit, modification time) for the file of
    /// `attrs.index`, sent before its announcement if the relay accepts
    /// them (`CAP_FILE_ATTRS`); a relay that does not never sees them.
    /// Call before the session connects. Returns `false` for an index
    /// outside the batch. With the feature `file-attrs` (or `std`).
    #[cfg(any(test, feature = "file-attrs"))]
    pub fn set_attrs(&mut self, attrs: FileAttrs) -> bool {
        match self.files.get_mut(usize::from(attrs.index)) {
            Some(f) => {
                f.attrs = Some(attrs);
                true
            }
            None => false,
        }
    }

    /// Authenticates every link with `credential` right after `Welcome`,
    /// before the batch is announced or resumed (PROTOCOL.md §8): a
    /// refusal fails the session with [`Error::Auth`]. Call before the
    /// session connects. A setter rather than a [`Config`] field: the
    /// credential borrows the terminal's name, and `Config` is a plain
    /// `Copy` value without a lifetime. With the feature `auth`.
    #[cfg(any(test, feature = "auth"))]
    pub fn authenticate(&mut self, credential: Credential<'n>) {
        self.auth = Some(Handshake::new(credential));
    }

    /// Stores the batch's files under the session user's names as well as
    /// under a code: a `NamedPut` goes right before the `BatchOpen`, and
    /// each name is bound to its file as the file verifies. Needs
    /// [`authenticate`](Self::authenticate) (the relay refuses the batch
    /// with `AuthRequired` otherwise); no effect on a resumed upload, whose
    /// batch is named or not already. With the feature `auth`.
    #[cfg(any(test, feature = "auth"))]
    pub fn set_named(&mut self, named: bool) {
        self.named = named;
    }

    /// The base URL of the relay's download pages, once it sent one: the
    /// page of this batch is `{base}/c/{CODE}`. `None` unless
    /// [`Config::page_link`] asked for it and the relay has a public URL.
    /// Checked by [`message::validate_page_url`], so safe to print. With
    /// the feature `page-link`.
    #[cfg(any(test, feature = "page-link"))]
    pub fn page_link(&self) -> Option<&str> {
        self.page_link.as_deref()
    }

    /// The relay's batch limits, once it sent them: what a `TooLarge` or
    /// `TooManyFiles` refusal broke. `None` unless
    /// [`Config::relay_limits`] asked for them and the relay says them.
    /// With the feature `relay-limits`.
    #[cfg(any(test, feature = "relay-limits"))]
    pub fn relay_limits(&self) -> Option<message::RelayLimits> {
        self.relay_limits
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
        // Every link starts in COBS (PROTOCOL.md §2.1).
        self.framing = frame::Framing::Cobs;
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

    fn check_complete(&mut self, now: Instant) {
        if self.phase == Phase::Transfer
            && self.files.iter().all(|f| f.state == FileState::Done)
            && self.names_settled()
        {
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

    /// Whether a named upload's names are bound (always, unnamed): every
    /// file verified is not enough, the relay binds the names after that
    /// and says so with `BatchComplete` (PROTOCOL.md §8).
    fn names_settled(&self) -> bool {
        #[cfg(any(test, feature = "auth"))]
        if self.named {
            return self.names_bound;
        }
        true
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
            // A driver that has not polled for a while loses the oldest
            // report, never what it must act on (the grant, a lost link,
            // the end): a grant arrives with a plan (a report) per file, so
            // a batch of 8 or more files fills the queue at once.
            match self.events.iter().position(Event::is_report) {
                Some(at) => {
                    let mut kept = Deque::new();
                    for (i, e) in self.events.iter().enumerate() {
                        if i != at {
                            let _ = kept.push_back(*e);
                        }
                    }
                    self.events = kept;
                }
                None => {
                    self.events.pop_front();
                }
            }
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
    fn framing(&self) -> frame::Framing {
        self.framing
    }
    fn keep_cobs(&mut self) {
        self.config.length_prefix = false;
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

#[cfg(test)]
mod attrs_tests;
#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod family_tests;
#[cfg(test)]
mod framing_tests;
#[cfg(test)]
mod page_link_tests;
#[cfg(test)]
mod relay_limits_tests;
#[cfg(test)]
mod tests;
