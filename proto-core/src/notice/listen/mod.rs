//! The listening terminal's state machine.
//!
//! ```text
//!          handle_connected
//!   Idle ───────────────► AwaitWelcome ──Welcome──► Authenticating ──Authenticated──► AwaitInbox
//!    ▲                                              (TerminalAuth,                     │  ▲ Listen: no Inbox within the
//!    │                                               ChallengeAnswer)            Inbox │  │ retransmit timeout, fewer
//!    │ handle_disconnected / idle timeout / Goodbye                                    ▼  │ notices than it said, or
//!    └────────────────────────────────────────────────────────────────────────── Listening  every relisten_interval
//!   AuthFailed, AuthRequired, a relay without notices ──► Failed
//! ```
//!
//! Notices arrive after each `Inbox` and, while the session lasts, one by
//! one as they are pushed. The listener records every id it sees in a
//! fixed-capacity ledger of `N` ids (see `ledger`), which is what makes a
//! notice reach the application once although the relay sends it after
//! every `Listen` until it is settled:
//!
//! | the id is           | a notice for it                                    |
//! |---------------------|----------------------------------------------------|
//! | new, within policy  | [`ListenEvent::Notice`], `NoticeAck`               |
//! | new, outside policy | `NoticeRefuse` (`TooLarge`, `Sender`), [`ListenEvent::AutoRefused`] |
//! | shown, undecided    | `NoticeAck` again (the first may have been lost)   |
//! | decided, unsettled  | its verdict, now if no other is in flight, else on the timer |
//! | settled             | the same verdict again, until `Settled` again      |
//!
//! Verdicts ([`confirm`](Listener::confirm), [`refuse`](Listener::refuse))
//! go out one at a time, oldest first, each repeated on the retransmit
//! timer until its `Settled`: the relay's `Error{UnknownNotice}` carries
//! no id, and with one verdict in flight it can only be that one's. A
//! verdict refused so is held back, not forgotten: if the relay later
//! sends the notice after all, the verdict goes out again.
//!
//! The application persists what it settled (a reboot empties the ledger)
//! and seeds a new listener with it through
//! [`remember_settled`](Listener::remember_settled).
//!
//! The listener's parts: `receive` handles the relay's messages,
//! `transmit` writes what goes out, `timers` owns retries, relistening
//! and the idle timeout, `event` what it reports. This file holds the
//! state they share and the application's calls.

use heapless::Deque;

use super::config::{at_least_1ms, ListenConfig};
use super::ledger::{Ledger, Mark, Verdict, VerdictError};
use crate::auth::Handshake;
use crate::drive::{Machine, Progress};
use crate::frame::{self, Frame};
use crate::identity::{Credential, TerminalIdentity};
use crate::message::RefuseReason;
use crate::storage::ReadAt;
use crate::time::{Duration, Instant};

mod event;
mod receive;
mod timers;
mod transmit;

pub use event::{ListenError, ListenEvent, NoticeInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    AwaitWelcome,
    Authenticating,
    /// `Listen` is sent; its `Inbox` has not come.
    AwaitInbox,
    /// The `Inbox` came; `inbox_left` of its notices are still to come.
    Listening,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Hello,
    Listen,
}

/// Events held for the driver. A `Notice` is never dropped to make room
/// (its id is marked shown when it is queued); a full queue of them makes
/// the listener leave the next new notice for a later `Listen`.
const EVENTS: usize = 6;
/// `NoticeAck`s waiting to go out; one lost for want of room is repaired
/// when the relay sends the notice again.
const ACKS: usize = 4;

/// A terminal listening for notices, recording up to `N` ids (`N > 0`).
/// See the module docs. `'a` is the lifetime of the terminal's name and
/// of the policy's list of senders.
///
/// `N` bounds the notices open at once (shown and undecided, or decided
/// and not settled): with `N` open, a new notice is left queued at the
/// relay until one settles. Settled ids fill the rest and are forgotten
/// oldest first when room is needed.
///
/// ```
/// # use pickup_proto::identity::{DeviceKey, TerminalIdentity};
/// # use pickup_proto::notice::{ListenConfig, ListenEvent, Listener};
/// # use pickup_proto::Instant;
/// let me = TerminalIdentity { name: "sensor-1", key: DeviceKey([7; 16]) };
/// let mut l = Listener::<8>::new(ListenConfig::default(), me);
/// l.handle_connected(Instant::ZERO); // then: poll_transmit, handle_frame, …
/// while let Some(e) = l.poll_event() {
///     if let ListenEvent::Notice(n) = e { /* download n.code, then */ l.confirm(n.id).unwrap(); }
/// }
/// ```
#[derive(Debug)]
pub struct Listener<'a, const N: usize> {
    config: ListenConfig<'a>,
    auth: Handshake<'a>,
    phase: Phase,
    peer_max_frame: usize,
    ledger: Ledger<N>,
    /// Notices the last `Inbox` announced that have not arrived.
    inbox_left: u16,
    control: Deque<Control, 2>,
    acks: Deque<u64, ACKS>,
    /// The verdict sent last and not answered yet.
    in_flight: Option<u64>,
    /// A verdict is to be sent now (the next, or `in_flight` again).
    verdict_due: bool,
    events: Deque<ListenEvent, EVENTS>,
    /// When to resend `Hello`, the handshake's request or `Listen`.
    retry_at: Option<Instant>,
    /// When to send `Listen` while idle.
    relisten_at: Option<Instant>,
    /// When to resend the verdict in flight.
    verdict_at: Option<Instant>,
    last_heard: Instant,
    /// Answers that moved the listener on (`Inbox`, `Settled`): its
    /// progress for a driver's reconnect policy.
    answers: u64,
    error: Option<ListenError>,
}

impl<'a, const N: usize> Listener<'a, N> {
    const CAPACITY: () = assert!(N > 0, "a listener records at least one id");

    /// A listener that authenticates as `terminal` on every link (only a
    /// terminal's own session may listen).
    pub fn new(config: ListenConfig<'a>, terminal: TerminalIdentity<'a>) -> Self {
        let () = Self::CAPACITY;
        Listener {
            config,
            auth: Handshake::new(Credential::Terminal(terminal)),
            phase: Phase::Idle,
            peer_max_frame: frame::MIN_FRAME_LEN,
            ledger: Ledger::new(),
            inbox_left: 0,
            control: Deque::new(),
            acks: Deque::new(),
            in_flight: None,
            verdict_due: false,
            events: Deque::new(),
            retry_at: None,
            relisten_at: None,
            verdict_at: None,
            last_heard: Instant::ZERO,
            answers: 0,
            error: None,
        }
    }

    /// Seeds the ledger with a notice the application settled before (on
    /// an earlier run: the ledger does not survive a reboot). Should the
    /// relay send it again, `verdict` is repeated, and the notice is not
    /// handed out. `Err` when the ledger is full of open notices.
    pub fn remember_settled(&mut self, id: u64, verdict: Verdict) -> Result<(), VerdictError> {
        self.ledger.set(id, Mark::Settled(Some(verdict)))
    }

    /// Every file of notice `id`'s batch is stored and verified: sends
    /// `Receipt`, repeated until the relay answers `Settled`
    /// ([`ListenEvent::Settled`]). Also for an id this listener never
    /// showed (one from before a reboot).
    pub fn confirm(&mut self, id: u64) -> Result<(), VerdictError> {
        self.decide(id, Verdict::Confirmed)
    }

    /// The terminal will not take notice `id`: sends `NoticeRefuse`,
    /// repeated until the relay answers `Settled`.
    pub fn refuse(&mut self, id: u64, reason: RefuseReason) -> Result<(), VerdictError> {
        self.decide(id, Verdict::Refused(reason))
    }

    fn decide(&mut self, id: u64, verdict: Verdict) -> Result<(), VerdictError> {
        let mark = self.ledger.get(id);
        match mark.and_then(Mark::verdict) {
            Some(v) if v != verdict => return Err(VerdictError::Decided(v)),
            // Held after an `UnknownNotice`, which names no id and may have
            // answered another verdict: given again, it is sent again.
            Some(_) if matches!(mark, Some(Mark::Orphaned(_))) => {
                self.ledger.set(id, Mark::Pending(verdict))?;
                self.kick_verdicts();
                return Ok(());
            }
            // Given already: it is on its way or settled.
            Some(_) => return Ok(()),
            None => {}
        }
        let mark = match mark {
            // Settled by another session of this terminal: nothing to say.
            Some(Mark::Settled(None)) => return Ok(()),
            _ => Mark::Pending(verdict),
        };
        self.ledger.set(id, mark)?;
        self.kick_verdicts();
        Ok(())
    }

    /// The verdict given on notice `id`, if any (settled or not).
    pub fn verdict(&self, id: u64) -> Option<Verdict> {
        self.ledger.get(id).and_then(Mark::verdict)
    }

    /// Whether the relay answered `Settled` for notice `id`.
    pub fn is_settled(&self, id: u64) -> bool {
        matches!(self.ledger.get(id), Some(Mark::Settled(_)))
    }

    /// Verdicts given and not yet settled.
    pub fn unsettled(&self) -> usize {
        self.ledger.due_count()
    }

    /// Whether the relay has answered this link's `Listen`: new notices
    /// now arrive as they are pushed.
    pub fn is_listening(&self) -> bool {
        self.phase == Phase::Listening
    }

    /// Whether no exchange runs (see [`Machine::is_idle`]).
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Whether the listener failed for good.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Failed
    }

    /// The failure, if the listener failed.
    pub fn error(&self) -> Option<ListenError> {
        self.error
    }

    /// A new link is up: start (or restart) the exchange.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.is_finished() {
            return;
        }
        self.reset_link();
        self.push_control(Control::Hello);
        self.phase = Phase::AwaitWelcome;
        self.retry_at = Some(now + self.rto());
        self.last_heard = now;
    }

    /// The link went away.
    pub fn handle_disconnected(&mut self, _now: Instant) {
        if !self.is_finished() {
            self.phase = Phase::Idle;
            self.reset_link();
        }
    }

    /// Forgets everything that belonged to the link (the ledger stays).
    fn reset_link(&mut self) {
        self.control.clear();
        self.acks.clear();
        self.in_flight = None;
        self.verdict_due = false;
        self.inbox_left = 0;
        self.retry_at = None;
        self.relisten_at = None;
        self.verdict_at = None;
    }

    fn link_lost(&mut self) {
        self.phase = Phase::Idle;
        self.reset_link();
        self.push_event(ListenEvent::LinkLost);
    }

    fn fail(&mut self, e: ListenError) {
        self.phase = Phase::Failed;
        self.error = Some(e);
        self.reset_link();
        self.push_event(ListenEvent::Failed(e));
    }

    /// Whether the relay authenticated this link (verdicts may go out).
    fn authenticated(&self) -> bool {
        matches!(self.phase, Phase::AwaitInbox | Phase::Listening)
    }

    /// Sends the next verdict if none is in flight.
    fn kick_verdicts(&mut self) {
        if self.in_flight.is_none() && self.ledger.first_due().is_some() {
            self.verdict_due = true;
        }
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

    /// Queues `e`, dropping the oldest event that is not a notice if the
    /// queue is full. `false` if it is full of notices (`e` is dropped).
    fn push_event(&mut self, e: ListenEvent) -> bool {
        if self.events.is_full() {
            let Some(i) = self
                .events
                .iter()
                .position(|x| !matches!(x, ListenEvent::Notice(_)))
            else {
                return false;
            };
            // Rotate the queue once, leaving the droppable one out: the
            // others keep their order.
            for j in 0..self.events.len() {
                if let Some(x) = self.events.pop_front() {
                    if j != i {
                        let _ = self.events.push_back(x);
                    }
                }
            }
        }
        self.events.push_back(e).is_ok()
    }

    /// Whether a `Notice` event would be queued now.
    fn room_for_notice(&self) -> bool {
        !self.events.is_full()
            || self
                .events
                .iter()
                .any(|x| !matches!(x, ListenEvent::Notice(_)))
    }

    /// The next event for the driver. Poll it after every input: a
    /// notice waiting here holds back the next.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ListenEvent> {
        self.events.pop_front()
    }

    /// Answers and inboxes so far (see [`Progress`]).
    pub fn progress(&self) -> Progress {
        Progress {
            started: self.answers > 0,
            done: self.answers,
            total: 0,
        }
    }
}

/// The listener touches no files: any `Files` type drives it.
impl<const N: usize, F: ReadAt + ?Sized> Machine<F> for Listener<'_, N> {
    type Event = ListenEvent;
    type Error = ListenError;
    fn handle_connected(&mut self, now: Instant) {
        Listener::handle_connected(self, now)
    }
    fn handle_disconnected(&mut self, now: Instant) {
        Listener::handle_disconnected(self, now)
    }
    fn handle_frame(&mut self, now: Instant, frame: Frame<'_>, _: &mut F) -> Result<(), F::Error> {
        Listener::handle_frame(self, now, frame);
        Ok(())
    }
    fn handle_timeout(&mut self, now: Instant) {
        Listener::handle_timeout(self, now)
    }
    fn poll_transmit(
        &mut self,
        now: Instant,
        _: &mut F,
        out: &mut [u8],
    ) -> Result<Option<usize>, F::Error> {
        Ok(Listener::poll_transmit(self, now, out))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Listener::poll_timeout(self)
    }
    fn poll_event(&mut self) -> Option<ListenEvent> {
        Listener::poll_event(self)
    }
    fn is_idle(&self) -> bool {
        Listener::is_idle(self)
    }
    fn is_finished(&self) -> bool {
        Listener::is_finished(self)
    }
    fn error(&self) -> Option<ListenError> {
        Listener::error(self)
    }
    fn progress(&self) -> Progress {
        Listener::progress(self)
    }
}

#[cfg(test)]
mod tests;
