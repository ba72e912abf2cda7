//! The pushing side's state machine: one request at a time on an
//! authenticated session.
//!
//! ```text
//!          handle_connected
//!   Idle ───────────────► AwaitWelcome ──Welcome──► Authenticating ──Authenticated──► Ready
//!    ▲                                                                                  │ request ─► answer
//!    │ handle_disconnected / idle timeout / Goodbye                                     │ (event; the next
//!    └──────────────────────────────────────────────────────────────────────────────────┘  may be made)
//!   AuthFailed, UnsupportedVersion ──► Failed
//! ```
//!
//! | request                       | sent       | answered by                          |
//! |-------------------------------|------------|--------------------------------------|
//! | [`push`](Sender::push)        | `Push`     | `Delivery` (same `push_id`)          |
//! | [`status`](Sender::status)    | `DeliveryStatus` | one `Delivery` each, `Done{0x32}` |
//! | [`allow_sender`](Sender::allow_sender) | `AllowSender` | `Done{0x3A}`              |
//!
//! A request goes out once the session is authenticated, and again on the
//! retransmit timer (and on every new link) until it is answered: a `Push`
//! with the same `push_id`, which the relay answers with the same
//! delivery, so a retry never pushes twice. A status sent again is answered
//! from the start: the lines already reported are skipped by count (the
//! relay lists deliveries oldest first, so earlier lines do not move).
//! An `Error` naming the request's kind ends it with
//! [`SendEvent::Refused`], except the waits (`RateLimited`, `Busy`),
//! which hold it back as the relay asks.
//!
//! The sender touches no files; the driver moves frames and time through
//! the [`Machine`] contract as for a transfer.

use heapless::Deque;

use super::config::{at_least_1ms, SendConfig};
use super::{account_name, sender_name, AccountName, SenderName};
use crate::auth::Handshake;
use crate::code::Code;
use crate::drive::{Machine, Progress};
use crate::frame::{self, Frame};
use crate::identity::Credential;
use crate::storage::ReadAt;
use crate::time::{Duration, Instant};

mod event;
mod receive;
mod timers;
mod transmit;

pub use event::{DeliveryInfo, RequestError, RequestKind, SendError, SendEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    AwaitWelcome,
    Authenticating,
    Ready,
    Failed,
}

/// A request and what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Push {
        push_id: u64,
        code: Code,
        terminal: AccountName,
    },
    Status {
        code: Code,
    },
    AllowSender {
        sender: SenderName,
        allow: bool,
    },
}

impl Request {
    fn kind(&self) -> RequestKind {
        match self {
            Request::Push { .. } => RequestKind::Push,
            Request::Status { .. } => RequestKind::Status,
            Request::AllowSender { .. } => RequestKind::AllowSender,
        }
    }
}

/// The request in progress.
#[derive(Debug, Clone)]
struct Pending {
    request: Request,
    /// It is to be sent (again) now.
    due: bool,
    /// Status lines reported so far.
    reported: u16,
    /// Status lines of the current answer seen so far.
    seen: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Hello,
    Keepalive,
}

/// Events held for the driver; the oldest is dropped when full.
const EVENTS: usize = 4;

/// A session that pushes batches to terminals and follows their
/// deliveries. See the module docs. `'a` is the lifetime of the
/// credential's terminal name.
///
/// ```
/// # use pickup_proto::identity::Credential;
/// # use pickup_proto::message::AuthToken;
/// # use pickup_proto::notice::{SendConfig, Sender};
/// # use pickup_proto::{Code, Instant};
/// # let code = Code::from_parts(Code::DEFAULT_LEN, 1).unwrap();
/// let mut s = Sender::new(SendConfig::default(), Credential::Token(AuthToken([1; 16])));
/// s.push(0x5eed, code, "sensor-1").unwrap(); // answered by SendEvent::Delivery, then Done
/// s.handle_connected(Instant::ZERO); // then: poll_transmit, handle_frame, poll_event, …
/// ```
#[derive(Debug)]
pub struct Sender<'a> {
    config: SendConfig,
    auth: Handshake<'a>,
    phase: Phase,
    peer_max_frame: usize,
    pending: Option<Pending>,
    control: Deque<Control, 2>,
    events: Deque<SendEvent, EVENTS>,
    /// When to resend `Hello`, the handshake's request or the request.
    retry_at: Option<Instant>,
    last_sent: Instant,
    last_heard: Instant,
    /// Answers received: the sender's progress for a reconnect policy.
    answers: u64,
    error: Option<SendError>,
}

impl<'a> Sender<'a> {
    /// A sender that authenticates with `credential` (a user's token, or a
    /// terminal acting for its owner) on every link.
    pub fn new(config: SendConfig, credential: Credential<'a>) -> Self {
        Sender {
            config,
            auth: Handshake::new(credential),
            phase: Phase::Idle,
            peer_max_frame: frame::MIN_FRAME_LEN,
            pending: None,
            control: Deque::new(),
            events: Deque::new(),
            retry_at: None,
            last_sent: Instant::ZERO,
            last_heard: Instant::ZERO,
            answers: 0,
            error: None,
        }
    }

    /// Pushes the complete batch `code` to the terminal `terminal`.
    /// `push_id` is chosen at random once per push (a retry with the same
    /// id creates no second delivery, also across reboots). Answered by a
    /// [`SendEvent::Delivery`] and [`SendEvent::Done`], or
    /// [`SendEvent::Refused`].
    pub fn push(&mut self, push_id: u64, code: Code, terminal: &str) -> Result<(), RequestError> {
        let terminal = account_name(terminal).ok_or(RequestError::NameTooLong)?;
        self.start(Request::Push {
            push_id,
            code,
            terminal,
        })
    }

    /// The deliveries of `code` this session's user pushed: one
    /// [`SendEvent::Delivery`] each, then [`SendEvent::Done`].
    pub fn status(&mut self, code: Code) -> Result<(), RequestError> {
        self.start(Request::Status { code })
    }

    /// Lets the user `sender` push to this user's terminals (`allow`), or
    /// no longer: [`SendEvent::Done`] (also for a user that does not
    /// exist: the relay does not tell). `sender` is a user of the relay,
    /// or `user@pair` for a user of a peer relay (PROTOCOL.md §12.1); the
    /// relay answers `UnknownPeer` for a pair it does not list.
    pub fn allow_sender(&mut self, sender: &str, allow: bool) -> Result<(), RequestError> {
        let sender = sender_name(sender).ok_or(RequestError::NameTooLong)?;
        self.start(Request::AllowSender { sender, allow })
    }

    fn start(&mut self, request: Request) -> Result<(), RequestError> {
        if self.is_finished() {
            return Err(RequestError::Failed);
        }
        if self.pending.is_some() {
            return Err(RequestError::Busy);
        }
        self.pending = Some(Pending {
            request,
            due: self.phase == Phase::Ready,
            reported: 0,
            seen: 0,
        });
        Ok(())
    }

    /// Gives up the request in progress; its answer, should it come, is
    /// ignored (a push the relay stored stays stored).
    pub fn cancel(&mut self) {
        self.pending = None;
        if self.phase == Phase::Ready {
            self.retry_at = None;
        }
    }

    /// Whether a request is in progress.
    pub fn is_busy(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether the session is authenticated on the current link.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Whether no exchange runs (see [`Machine::is_idle`]).
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Whether the sender failed for good.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Failed
    }

    /// The failure, if the sender failed.
    pub fn error(&self) -> Option<SendError> {
        self.error
    }

    /// Answers received so far (see [`Progress`]).
    pub fn progress(&self) -> Progress {
        Progress {
            started: self.answers > 0,
            done: self.answers,
            total: 0,
        }
    }

    /// A new link is up: start (or restart) the exchange; the request in
    /// progress goes out again once authenticated.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.is_finished() {
            return;
        }
        self.control.clear();
        self.push_control(Control::Hello);
        self.phase = Phase::AwaitWelcome;
        self.retry_at = Some(now + self.rto());
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
        self.handle_disconnected(self.last_heard);
        self.push_event(SendEvent::LinkLost);
    }

    fn fail(&mut self, e: SendError) {
        self.phase = Phase::Failed;
        self.error = Some(e);
        self.retry_at = None;
        self.control.clear();
        self.push_event(SendEvent::Failed(e));
    }

    fn rto(&self) -> Duration {
        at_least_1ms(self.config.retransmit_timeout)
    }

    fn push_control(&mut self, c: Control) {
        if !self.control.iter().any(|x| *x == c) {
            // One slot per kind: never full.
            let _ = self.control.push_back(c);
        }
    }

    fn push_event(&mut self, e: SendEvent) {
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(e);
    }

    /// The next event for the driver. The queue is short and drops the
    /// oldest: poll it after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SendEvent> {
        self.events.pop_front()
    }
}

/// The sender touches no files: any `Files` type drives it.
impl<F: ReadAt + ?Sized> Machine<F> for Sender<'_> {
    type Event = SendEvent;
    type Error = SendError;
    fn handle_connected(&mut self, now: Instant) {
        Sender::handle_connected(self, now)
    }
    fn handle_disconnected(&mut self, now: Instant) {
        Sender::handle_disconnected(self, now)
    }
    fn handle_frame(&mut self, now: Instant, frame: Frame<'_>, _: &mut F) -> Result<(), F::Error> {
        Sender::handle_frame(self, now, frame);
        Ok(())
    }
    fn handle_timeout(&mut self, now: Instant) {
        Sender::handle_timeout(self, now)
    }
    fn poll_transmit(
        &mut self,
        now: Instant,
        _: &mut F,
        out: &mut [u8],
    ) -> Result<Option<usize>, F::Error> {
        Ok(Sender::poll_transmit(self, now, out))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Sender::poll_timeout(self)
    }
    fn poll_event(&mut self) -> Option<SendEvent> {
        Sender::poll_event(self)
    }
    fn is_idle(&self) -> bool {
        Sender::is_idle(self)
    }
    fn is_finished(&self) -> bool {
        Sender::is_finished(self)
    }
    fn error(&self) -> Option<SendError> {
        Sender::error(self)
    }
    fn progress(&self) -> Progress {
        Sender::progress(self)
    }
}

#[cfg(test)]
mod tests;
