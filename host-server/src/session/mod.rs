//! The relay's side of one connection, as a sans-IO state machine.
//!
//! A [`Session`] speaks the Pickup protocol with one terminal. It never
//! touches a socket, a clock, a thread or the store: drivers (the TCP and
//! serial transports, the simulator, a fuzzer) move bytes, time and job
//! results in and out. Everything that needs the store, the disk or a hash
//! over stored bytes leaves the session as a [`Job`] that the driver runs
//! where it likes and hands back ([`crate::jobs`]). Given the same inputs,
//! times, job results and random source it does the same thing.
//!
//! ```text
//!   Session::new(relay, peer, link, now)      refused with Busy / ShuttingDown
//!   loop {
//!       while let Some(job) = poll_job() { start job.run(&relay) }   (at most three out)
//!       while let Some(n) = poll_transmit(buf) { write buf[..n] }
//!       if is_closed() { break }
//!       wait for a job's result, bytes (only while wants_input()), or poll_timeout()
//!       result → handle_job_done(now, done)
//!       bytes → frame::Decoder → handle_frame(now, frame)   (handle_dropped on garbage)
//!       handle_timeout(now)
//!       doorbell() rung → handle_wake(now)      (a push to the terminal it listens for,
//!                                                 or a change of the forward it watches)
//!   }
//!   on EOF: handle_disconnected(now), then run its jobs until is_closed()
//!   on SIGTERM: shutdown(now), flush, close
//! ```
//!
//! Time: the relay's [`Instant`] counts milliseconds since the Unix epoch, so
//! that expiry times (Unix seconds on the wire) come from the same `now`.
//!
//! ```text
//!   AwaitHello ──Hello──► Open ──Goodbye / idle / shutdown──► Closing ──queue drained──► Closed
//!                          │ BatchOpen, FileAnnounce… ─► upload (Grant, FilePlans, Acks, verdicts)
//!                          │ Resume ─────────────────► upload continues from durable offsets
//!                          │ Fetch, Read, Ack ───────► download (Manifest, entries, Data)
//!                          │ Push, Listen, Receipt… ─► notices (Delivery, Inbox, Notice, Settled)
//!                          │ ForwardRequest, Watch… ─► forwards (ForwardAccepted, ForwardStatus)
//! ```
//!
//! A session that has no batch yet (none created, resumed or found by its
//! code) is closed after [`Settings::idle_timeout_before_transfer`] of
//! silence, one with a batch after [`Settings::idle_timeout`].
//!
//! [`Settings::idle_timeout_before_transfer`]: crate::settings::Settings::idle_timeout_before_transfer
//! [`Settings::idle_timeout`]: crate::settings::Settings::idle_timeout

use std::sync::Arc;

use bytes::Bytes;
use pickup_proto::frame::{self, Dropped, Frame, Framing};
use pickup_proto::message::{
    self, Kind, Message, ResumeToken, Role, CAP_INSTANT_UPLOAD, CAP_PAGE_LINK, CAP_RELAY_LIMITS,
};
use pickup_proto::{Code, Duration, ErrorCode, Instant};

use crate::rate_limit::Peer;
use crate::relay::Relay;
use crate::settings::{Link, MIN_ACK_WINDOW};
use crate::store::{BatchId, OwnerId};

mod download;
mod forwards;
mod identity;
mod lookups;
pub(crate) mod named;
mod notices;
mod oplog;
mod outbox;
mod peer_push;
mod progress;
mod render;
mod upload;
mod work;

#[cfg(test)]
mod tests;

pub use crate::jobs::{Job, JobDone};
use download::Stream;
pub use outbox::refusal;
use outbox::{Out, Outbox};
use upload::Upload;
use work::WorkQueue;

/// How often a session that waits for the store (and so reads nothing)
/// sends a `Keepalive`: a terminal sends its own every 5 s and gives the
/// link up after 15 s of silence by default.
pub const BUSY_KEEPALIVE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    Open,
    /// Sending what is queued, then closed.
    Closing,
    Closed,
}

/// The relay's side of one connection. See the module docs.
pub struct Session {
    relay: Arc<Relay>,
    id: u64,
    peer: Peer,
    link: Link,
    phase: Phase,
    peer_max_frame: usize,
    /// How frames go to the terminal: COBS until the `Welcome` that agrees
    /// on the length prefix is sent, then for good (PROTOCOL.md §2.1).
    framing: Framing,
    /// The last `Hello` asked for the length prefix on a reliable link:
    /// the framing switches once its `Welcome` is out.
    prefix_agreed: bool,
    peer_caps: u32,
    /// Who the last `Hello` said is speaking: a terminal, or a peer relay
    /// that must authenticate as one of `Settings::peers` first
    /// ([`Session::relay_refusal`]).
    role: Role,
    /// Upload bytes the terminal keeps in flight at most, from its `Hello`
    /// (0: it did not say).
    peer_window: u32,
    last_heard: Instant,
    /// When the session last gave the driver a frame: while it waits for
    /// the store it speaks at least every [`BUSY_KEEPALIVE`].
    last_said: Instant,
    /// A batch was created, resumed or found by its code: the session
    /// idles out after the transfer timeout, no longer the shorter one.
    started: bool,
    /// The code of the batch this session last found by its code: `Read`s
    /// within it are not guesses (see `lookups`).
    found_code: Option<Code>,
    /// The batch whose fetch this session last logged (once per batch).
    fetch_logged: Option<BatchId>,
    /// The latest `now` any input brought: replies rendered later are
    /// judged by it (a verdict for a batch that expired meanwhile is not sent).
    clock: Instant,
    out: Outbox,
    announcing: Option<Box<upload::Announcing>>,
    /// The last announcement was refused: its remaining `FileAnnounce`s are
    /// ignored (the refusal was said once) until the next `BatchOpen`.
    announce_refused: bool,
    upload: Option<Box<Upload>>,
    /// The token family this session's new batches join: that of the first
    /// batch it created or resumed ([`crate::disclosure`]).
    family: Option<OwnerId>,
    /// The token a `Join` named, until a batch is created: its family is
    /// looked up then, with the batch's creation.
    join: Option<ResumeToken>,
    stream: Option<Stream>,
    /// Numbers streams, so a read-ahead for an ended one is recognised.
    next_stream: u64,
    /// Numbers uploads, so a job for a replaced one is recognised.
    next_epoch: u64,
    /// Store work for the driver, in order.
    work: WorkQueue,
    /// Leases of replaced uploads, kept until their queued work is done (a
    /// terminal that takes an upload over still takes it at once).
    retired: Vec<Arc<crate::relay::Lease>>,
    /// Whom the session acts for, once authenticated (PROTOCOL.md §8).
    identity: Option<identity::Identity>,
    /// The challenge sent to a terminal, until its one answer.
    challenge: Option<Box<identity::Pending>>,
    /// The token an `Authenticate` is checking.
    pending_token: Option<pickup_proto::message::AuthToken>,
    /// A `NamedPut` came: the next batch created or resumed binds names.
    named_put: bool,
    /// The named files fetched or listed lately, under their read handles.
    named_reads: named::NamedReads,
    /// Listening for notices, and the progress of deliveries read.
    notices: notices::Notices,
    /// The forward this session reports (`ForwardWatch`).
    watching: Option<forwards::Watching>,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(up) = &self.upload {
            self.relay.release_lease(up.lease(), self.id);
        }
        for lease in &self.retired {
            self.relay.release_lease(lease, self.id);
        }
        self.stop_listening();
        self.stop_watching();
        self.relay.close_session(&self.peer);
    }
}

impl Session {
    /// A session for a new connection from `peer`, or the error code to
    /// refuse it with (`Busy` over the session limits, `ShuttingDown`).
    pub fn new(relay: Arc<Relay>, peer: Peer, link: Link, now: Instant) -> Result<Self, ErrorCode> {
        let id = relay.open_session(&peer)?;
        let out = Outbox::new(oplog::OpLog::new(id, peer.clone(), relay.metrics_handle()));
        Ok(Session {
            relay,
            id,
            peer,
            link,
            phase: Phase::AwaitHello,
            peer_max_frame: frame::MIN_FRAME_LEN,
            framing: Framing::Cobs,
            prefix_agreed: false,
            peer_caps: 0,
            role: Role::Terminal,
            peer_window: 0,
            last_heard: now,
            last_said: now,
            started: false,
            found_code: None,
            fetch_logged: None,
            clock: now,
            out,
            announcing: None,
            announce_refused: false,
            upload: None,
            family: None,
            join: None,
            stream: None,
            next_stream: 0,
            next_epoch: 0,
            work: WorkQueue::default(),
            retired: Vec::new(),
            identity: None,
            challenge: None,
            pending_token: None,
            named_put: false,
            named_reads: named::NamedReads::default(),
            notices: notices::Notices::new(),
            watching: None,
        })
    }

    /// The window acks are paced by: the link's, or the terminal's if its
    /// `Hello` said it keeps fewer bytes in flight. A terminal that stops at
    /// 8 KiB would otherwise wait for a step meant for megabytes and be
    /// acknowledged only after a pause in its data. Never below
    /// [`MIN_ACK_WINDOW`]: each ack costs an fsync, and a terminal must not
    /// buy one per few bytes by announcing a tiny window.
    pub(super) fn ack_window(&self) -> u32 {
        match self.peer_window {
            0 => self.link.window,
            w => w.max(MIN_ACK_WINDOW).min(self.link.window),
        }
    }

    /// This session's number, unique within the relay (for logs).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The peer.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The largest raw frame this session accepts: size the decoder with it.
    pub fn max_frame(&self) -> usize {
        self.link.max_frame()
    }

    /// The framing of what this session sends from now on, and of what the
    /// terminal sends once it has read the `Welcome`: when it is
    /// [`Framing::LengthPrefixed`], the driver calls
    /// [`Decoder::switch_at_marker`](frame::Decoder::switch_at_marker) on
    /// its decoder (PROTOCOL.md §2.1).
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// How frames go to the terminal now.
    pub(super) fn format(&self) -> frame::Format {
        frame::Format {
            framing: self.framing,
            max_frame: self.peer_max_frame,
        }
    }

    /// The smallest `out` buffer for [`poll_transmit`](Self::poll_transmit)
    /// that lets every frame reach the peer's frame size.
    pub fn transmit_buffer_len(&self) -> usize {
        frame::max_encoded_len(self.peer_max_frame)
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has something to send,
    /// so a driver can allocate its buffer only then.
    pub fn wants_transmit(&self) -> bool {
        !self.out.is_empty()
            || (self.phase == Phase::Open && self.stream.as_ref().is_some_and(Stream::can_send))
    }

    /// The session is over: the driver should close the connection once
    /// [`poll_transmit`](Self::poll_transmit) returns `None` and
    /// [`poll_job`](Self::poll_job) has nothing more (what was received
    /// is made durable by jobs, even after a disconnect).
    pub fn is_closed(&self) -> bool {
        self.work.is_idle()
            && !self.upload.as_ref().is_some_and(|u| u.sync_pending())
            && match self.phase {
                Phase::Closed => true,
                Phase::Closing => self.out.is_empty(),
                _ => false,
            }
    }

    fn instant_upload(&self) -> bool {
        self.relay.settings.instant_upload && self.peer_caps & CAP_INSTANT_UPLOAD != 0
    }

    /// Handles one CRC-checked frame from the terminal.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) {
        self.take_frame(now, frame, None);
    }

    /// Handles one CRC-checked frame from the terminal that lies in
    /// `backing`, a read buffer the driver gives up: a `Data` frame's bytes
    /// are kept as a slice of it until they are written, not copied.
    /// (A frame that does not lie in `backing` is copied as by
    /// [`handle_frame`](Self::handle_frame).)
    pub fn handle_frame_in(&mut self, now: Instant, frame: Frame<'_>, backing: &Bytes) {
        self.take_frame(now, frame, Some(backing));
    }

    fn take_frame(&mut self, now: Instant, frame: Frame<'_>, backing: Option<&Bytes>) {
        self.clock = self.clock.max(now);
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        let msg = match Message::decode(frame) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::debug!(session = self.id, "undecodable frame: {e}");
                return self.out.push(Out::Error {
                    code: e.code(),
                    kind: e.kind(),
                    retry_after_ms: 0,
                });
            }
        };
        self.last_heard = now;
        let kind = msg.kind();
        match msg {
            Message::Hello(h) => return self.on_hello(now, h),
            _ if self.phase == Phase::AwaitHello => {
                return self.out.error(ErrorCode::UnexpectedMessage, kind)
            }
            _ => {}
        }
        if self.role == Role::Relay {
            if let Some(code) = self.relay_refusal(&msg) {
                return self.out.error(code, kind);
            }
        }
        match msg {
            Message::Keepalive => self.out.push(Out::Keepalive),
            Message::Goodbye => {
                self.settle(now);
                self.phase = Phase::Closing;
            }
            Message::Error(e) => {
                tracing::debug!(
                    session = self.id,
                    "terminal reports {:?} about kind {:#04x}",
                    e.code,
                    e.kind
                );
            }
            Message::BatchOpen(_) | Message::Resume(_) if !self.may_upload() => {
                self.out.error(ErrorCode::AuthRequired, kind)
            }
            Message::Fetch(_) | Message::Read(_) if !self.may_download() => {
                self.out.error(ErrorCode::AuthRequired, kind)
            }
            Message::BatchOpen(b) => self.on_batch_open(b),
            Message::FileAnnounce(a) => self.on_file_announce(now, a),
            Message::Proof(p) => self.on_proof(p),
            Message::Data(d) => self.on_data(now, d, backing),
            Message::Resume(r) => self.on_resume(now, r),
            Message::Join(j) => self.on_join(j),
            Message::FileAttrs(a) => self.on_file_attrs(a),
            Message::Fetch(f) => self.on_fetch(now, f),
            Message::Read(r) if self.named_reads.get(&r.code).is_some() => self.on_read_named(r),
            Message::Read(r) if self.found_code == Some(r.code) => self.on_read_in_found(now, r),
            Message::Read(r) => self.on_read(now, r),
            Message::Ack(a) => self.on_download_ack(a),
            Message::Login(l) => self.on_login(now, l),
            Message::Authenticate(a) => self.on_authenticate(now, a),
            Message::TerminalAuth(t) => self.on_terminal_auth(now, t),
            Message::ChallengeAnswer(a) => self.on_challenge_answer(now, a),
            Message::Logout => self.on_logout(),
            Message::NamedPut => self.on_named_put(),
            Message::FetchNamed(f) => self.on_fetch_named(now, f),
            Message::ListNamed => self.on_list_named(),
            Message::RemoveNamed(r) => self.on_remove_named(now, r),
            Message::ShareNamed(s) => self.on_share_named(now, s),
            Message::Push(p) => self.on_push(now, p),
            Message::DeliveryStatus(s) => self.on_delivery_status(s),
            Message::Listen => self.on_listen(),
            Message::NoticeAck(a) => self.on_notice_ack(now, a),
            Message::NoticeRefuse(r) => self.on_notice_refuse(now, r),
            Message::Receipt(r) => self.on_receipt(now, r),
            Message::AllowSender(a) => self.on_allow_sender(a),
            Message::ForwardRequest(r) => self.on_forward_request(now, r),
            Message::ForwardWatch(w) => self.on_forward_watch(w),
            Message::ForwardRetry(r) => self.on_forward_retry(now, r),
            Message::ForwardPush(p) => self.on_forward_push(now, p),
            Message::PeerPush(p) => self.on_peer_push(now, p),
            // Relay-to-terminal kinds make no sense here.
            _ => self.out.error(ErrorCode::UnexpectedMessage, kind),
        }
    }

    /// Whether this session may upload: authenticated, or anonymous
    /// uploads allowed (`auth.allow_anonymous_upload`).
    fn may_upload(&self) -> bool {
        self.identity.is_some() || self.relay.settings.auth.allow_anonymous_upload
    }

    /// Whether this session may download by code: authenticated, or
    /// anonymous downloads allowed (`auth.allow_anonymous_download`).
    /// (Reads of a named file's handle need authentication anyway.)
    fn may_download(&self) -> bool {
        self.identity.is_some() || self.relay.settings.auth.allow_anonymous_download
    }

    /// The driver's decoder threw bytes away. Noise is normal on a serial
    /// line and is not answered, but a frame over the announced size is
    /// (the peer ignored `Welcome.max_frame`).
    pub fn handle_dropped(&mut self, now: Instant, why: Dropped) {
        self.clock = self.clock.max(now);
        self.out.log.dropped(why);
        if why == Dropped::WrongFraming && !matches!(self.phase, Phase::Closing | Phase::Closed) {
            // The terminal does not speak the framing it agreed to: nothing
            // more can be delimited on this link.
            tracing::debug!(
                session = self.id,
                "terminal ignored the length prefix it asked for"
            );
            return self.close_with(now, ErrorCode::BadFrame);
        }
        if why == Dropped::Oversize && self.phase == Phase::Open {
            self.out.push(Out::Error {
                code: ErrorCode::TooLarge,
                kind: 0,
                retry_after_ms: 0,
            });
        }
    }

    fn on_hello(&mut self, now: Instant, h: message::Hello) {
        if h.version == 0 {
            return self.out.error(ErrorCode::UnsupportedVersion, Kind::Hello);
        }
        if self.phase == Phase::Open {
            // The terminal started over (it restarted, or lost our Welcome):
            // make what it sent durable and forget the conversation.
            self.settle(now);
            self.drop_upload();
            self.announcing = None;
            self.stream = None;
            self.out.clear();
            // Whom the connection acts for stays (a lost Welcome loses no
            // state); the requests in flight go with the conversation.
            self.challenge = None;
            self.pending_token = None;
            self.named_put = false;
            self.named_reads.clear();
            // Lookups and creations for the old conversation would answer
            // questions nobody asks any more; so would a watch's statuses.
            self.work.forget_conversation();
            self.stop_watching();
        }
        self.peer_max_frame =
            (h.max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN);
        self.peer_caps = h.caps;
        if h.role != self.role {
            // A terminal's identity is no peer's and the reverse: whom the
            // connection acted for goes with the role it was gained in.
            if self.identity.take().is_some() {
                self.stop_listening();
                self.stop_watching();
            }
            self.challenge = None;
            self.role = h.role;
        }
        self.prefix_agreed =
            Framing::negotiated(self.link.reliable, h.caps) == Framing::LengthPrefixed;
        self.peer_window = h.window;
        self.phase = Phase::Open;
        self.out.push(Out::Welcome);
        // Only a terminal that prints links is told where the pages are;
        // after each Welcome, as a repeated Hello may have lost the first.
        if h.caps & CAP_PAGE_LINK != 0 && self.relay.settings.page_url.is_some() {
            self.out.push(Out::PageLink);
        }
        // Likewise the limits behind TooLarge and TooManyFiles, for a
        // terminal that names the one a batch breaks (PROTOCOL.md §5.1).
        if h.caps & CAP_RELAY_LIMITS != 0 {
            self.out.push(Out::RelayLimits);
        }
    }

    /// How long the session may stay silent: shorter until it has a batch.
    fn idle_timeout(&self) -> Duration {
        let s = &self.relay.settings;
        if self.started {
            s.idle_timeout
        } else {
            s.idle_timeout_before_transfer.min(s.idle_timeout)
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() || matches!(self.phase, Phase::Closing | Phase::Closed) {
            return None;
        }
        // Waiting for the store, the session reads nothing: the terminal's
        // silence is then ours, and the idle clock stops (`handle_timeout`).
        let silence = if self.work.blocked() {
            self.last_said + BUSY_KEEPALIVE
        } else {
            self.last_heard + self.idle_timeout()
        };
        let ack = self
            .upload
            .as_ref()
            .and_then(|u| u.ack_deadline(self.relay.settings.ack_delay));
        let soonest = [ack, self.progress_deadline(), self.watch_deadline()]
            .into_iter()
            .flatten()
            .fold(silence, Instant::min);
        Some(soonest)
    }

    /// Fires the timers due at `now`: idle timeout, delayed
    /// acknowledgements, and a `Keepalive` while the store keeps the
    /// session waiting.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        if self.work.blocked() {
            // A busy store (a creation behind hundreds of others, a
            // database failing over) can keep a reply for longer than a
            // terminal's idle timeout: say that the relay is alive, or
            // the terminal gives the link up and asks again, adding load.
            if now >= self.last_said + BUSY_KEEPALIVE {
                self.last_said = now;
                self.out.push(Out::Keepalive);
            }
        } else if now >= self.last_heard + self.idle_timeout() {
            tracing::debug!(session = self.id, peer = %self.peer, started = self.started, "idle timeout");
            return self.close_with(now, ErrorCode::IdleTimeout);
        }
        // Queued here, not only by `poll_job`: a driver may hold its
        // `poll_job` calls while a job runs, and the deadline must move
        // on now or it would fire again at once.
        self.flush_progress(false);
        self.watch_timeout(now);
        let due = self
            .upload
            .as_ref()
            .and_then(|u| u.ack_deadline(self.relay.settings.ack_delay))
            .is_some_and(|t| now >= t);
        if due {
            self.with_upload(|up, cx| {
                up.ack_all(cx);
                Ok(())
            });
        }
    }

    /// The relay is shutting down: make received bytes durable, tell the
    /// terminal (`Error{ShuttingDown}`), and close once that is sent.
    pub fn shutdown(&mut self, now: Instant) {
        if !self.is_closed() {
            self.close_with(now, ErrorCode::ShuttingDown);
        }
    }

    /// The connection is gone (EOF, reset, port removed): make received
    /// bytes durable so a resume continues after them.
    pub fn handle_disconnected(&mut self, now: Instant) {
        self.settle(now);
        self.drop_upload();
        self.phase = Phase::Closed;
    }

    fn close_with(&mut self, now: Instant, code: ErrorCode) {
        self.settle(now);
        self.stream = None;
        self.out.push(Out::Error {
            code,
            kind: 0,
            retry_after_ms: 0,
        });
        self.phase = Phase::Closing;
    }

    /// Writes the next frame into `out` (at least
    /// [`transmit_buffer_len`](Self::transmit_buffer_len) bytes) and returns
    /// its length, or `None` when there is nothing to send now.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.transmit(out, false)?.assemble(out)
    }

    /// As [`poll_transmit`](Self::poll_transmit), but on a length-prefixed
    /// link a `Data` frame comes as a [`Transmit::Split`] whose payload is
    /// a slice of the buffer the file was read into: a driver that writes
    /// it with one vectored write copies no download byte itself.
    #[must_use]
    pub fn poll_transmit_split(&mut self, out: &mut [u8]) -> Option<Transmit> {
        self.transmit(out, true)
    }

    fn transmit(&mut self, out: &mut [u8], split: bool) -> Option<Transmit> {
        let t = self.next_frame(out, split);
        if t.is_some() {
            self.last_said = self.clock;
        }
        t
    }

    fn next_frame(&mut self, out: &mut [u8], split: bool) -> Option<Transmit> {
        self.notice_taken_over();
        while let Some(item) = self.out.pop() {
            if let Some(n) = self.render(item, out) {
                return Some(Transmit::Whole(n));
            }
        }
        if self.phase == Phase::Open {
            return self.poll_data(out, split);
        }
        None
    }
}

/// A frame [`Session::poll_transmit_split`] gives out.
#[derive(Debug)]
pub enum Transmit {
    /// A whole frame: `out[..n]`.
    Whole(usize),
    /// A `Data` frame whose payload stays where the file was read into:
    /// on the wire it is `out[..head_len]`, `payload`, then `trailer`.
    Split {
        /// Bytes of `out` before the payload.
        head_len: usize,
        /// The frame's payload.
        payload: Bytes,
        /// The bytes after the payload (the frame's CRC).
        trailer: [u8; frame::CRC_LEN],
    },
}

impl Transmit {
    /// The whole frame in `out` (a split frame's payload and trailer copied
    /// after its head), returning its length; `None` if it does not fit.
    pub fn assemble(self, out: &mut [u8]) -> Option<usize> {
        match self {
            Transmit::Whole(n) => Some(n),
            Transmit::Split {
                head_len,
                payload,
                trailer,
            } => {
                let end = head_len + payload.len();
                out.get_mut(head_len..end)?.copy_from_slice(&payload);
                out.get_mut(end..end + trailer.len())?
                    .copy_from_slice(&trailer);
                Some(end + trailer.len())
            }
        }
    }
}
