//! Blocking drivers for addressed delivery (PROTOCOL.md §11, feature
//! `notices`): [`NoticeListener`] on the terminal batches are pushed to,
//! [`NoticeSender`] on whoever pushes.
//!
//! A listening terminal's loop:
//!
//! ```ignore
//! let me = TerminalIdentity { name: "sensor-1", key };
//! let mut inbox: NoticeListener<'_, 8, 256, 258> =
//!     NoticeListener::new(ListenConfig::default(), me, RetransferPolicy::default());
//! for (id, verdict) in settled_ids_from_flash() { inbox.remember_settled(id, verdict)?; }
//! loop {
//!     let Some(notice) = inbox.listen(&mut connector, &clock, None, |_| {})? else { continue };
//!     let mut down: Downloader<'_, 4, 256, 258> =
//!         Downloader::new(download::Config::default(), notice.code, RetransferPolicy::default());
//!     down.authenticate(inbox.credential());
//!     match down.run(&mut connector, &clock, &mut sink, |_| {}) {
//!         Ok(()) => inbox.confirm(notice.id)?,
//!         Err(_) => inbox.refuse(notice.id, RefuseReason::NoSpace)?,
//!     }
//!     inbox.settle(&mut connector, &clock, None, |e| persist_settled(e))?;
//! }
//! ```
//!
//! Each call runs on links of its own from the [`Connector`]: [`listen`]
//! returns once a notice arrived and its acknowledgement went out, and
//! drops the link, so the download that follows can use the same
//! connector (a UART serves one session at a time). The next call
//! connects, authenticates and sends `Listen` again; the listener's
//! ledger keeps the application from seeing a notice twice.
//!
//! [`listen`]: NoticeListener::listen

use core::cell::Cell;
use core::convert::Infallible;

use heapless::Deque;
use pickup_proto::frame::{self, Decoder};
use pickup_proto::identity::{Credential, TerminalIdentity};
use pickup_proto::message::RefuseReason;
use pickup_proto::notice::{
    DeliveryInfo, ListenConfig, ListenError, ListenEvent, Listener, NoticeInfo, RequestError,
    RequestKind, SendConfig, SendError, SendEvent, Sender, Verdict, VerdictError,
};
use pickup_proto::storage::ReadAt;
use pickup_proto::{Code, ErrorCode, Instant};

use crate::clock::Clock;
use crate::driver::{self, Ended, Event, Parts, RunError, Until};
use crate::link::Connector;
use crate::retransfer::RetransferPolicy;

/// The notice machines touch no files: what the drivers lend them.
struct NoFiles;

impl ReadAt for NoFiles {
    type Error = Infallible;
    fn read_at(&mut self, _: u16, _: u64, _: &mut [u8]) -> Result<usize, Infallible> {
        Ok(0)
    }
}

/// Why a [`NoticeListener`] call returned without its result.
pub type ListenRunError = RunError<ListenError, Infallible>;

/// Listens for batches pushed to this terminal, as a
/// [`Listener`] recording up to `N` notice ids, over links from a
/// [`Connector`]; see the module docs for the loop around it.
///
/// `RX` and `TX` are the frame buffers as for a
/// [`Downloader`](crate::Downloader) (`RX >= 64`, `TX >= 66`; a notice
/// from the longest sender a relay names, a 65-byte `user@pair`, is at
/// most 124 bytes, so 128 and 130 are enough). Notices handed out by the
/// machine but not yet returned by [`listen`](Self::listen) wait in a
/// queue of `N` (a notice takes 128 bytes on 32-bit targets, most of it
/// the sender's name): never more than the ledger holds open, so none is
/// lost.
#[derive(Debug)]
pub struct NoticeListener<'a, const N: usize, const RX: usize, const TX: usize> {
    listener: Listener<'a, N>,
    terminal: TerminalIdentity<'a>,
    waiting: Deque<NoticeInfo, N>,
    decoder: Decoder<[u8; RX]>,
    tx: [u8; TX],
    policy: RetransferPolicy,
}

impl<'a, const N: usize, const RX: usize, const TX: usize> NoticeListener<'a, N, RX, TX> {
    const BUFFERS_FIT: () = assert!(
        RX >= frame::MIN_FRAME_LEN && TX >= frame::max_encoded_len(frame::MIN_FRAME_LEN),
        "RX must hold a 64-byte frame and TX its encoded form (66 bytes)"
    );

    /// A listener that authenticates as `terminal` on every link.
    /// Listening is long-lived: a policy without a limit
    /// (`max_attempts: None, give_up_after: None`) keeps it reconnecting
    /// through any outage.
    pub fn new(
        mut config: ListenConfig<'a>,
        terminal: TerminalIdentity<'a>,
        policy: RetransferPolicy,
    ) -> Self {
        let () = Self::BUFFERS_FIT;
        config.max_frame = config.max_frame.min(RX as u32);
        NoticeListener {
            listener: Listener::new(config, terminal),
            terminal,
            waiting: Deque::new(),
            decoder: Decoder::new([0; RX]),
            tx: [0; TX],
            policy,
        }
    }

    /// The terminal's credential: what the [`Downloader`](crate::Downloader)
    /// of a notice's batch authenticates with (the relay counts only a
    /// download by the target towards the delivery).
    pub fn credential(&self) -> Credential<'a> {
        Credential::Terminal(self.terminal)
    }

    /// The protocol machine (its ledger, its error).
    pub fn listener(&self) -> &Listener<'a, N> {
        &self.listener
    }

    /// See [`Listener::remember_settled`]: call before the first
    /// [`listen`](Self::listen) with what the application persisted.
    pub fn remember_settled(&mut self, id: u64, verdict: Verdict) -> Result<(), VerdictError> {
        self.listener.remember_settled(id, verdict)
    }

    /// Every file of notice `id`'s batch is stored and verified: the
    /// `Receipt` goes out on the next [`settle`](Self::settle) or
    /// [`listen`](Self::listen), repeated until settled.
    pub fn confirm(&mut self, id: u64) -> Result<(), VerdictError> {
        self.listener.confirm(id)
    }

    /// The terminal will not take notice `id` (see [`confirm`](Self::confirm)).
    pub fn refuse(&mut self, id: u64, reason: RefuseReason) -> Result<(), VerdictError> {
        self.listener.refuse(id, reason)
    }

    /// Changes the retransfer policy for the next calls.
    pub fn set_policy(&mut self, policy: RetransferPolicy) {
        self.policy = policy;
    }

    /// Listens until a notice the application has not seen arrives and
    /// returns it, or until `deadline` (then `Ok(None)`). A notice the
    /// [`Policy`](pickup_proto::notice::Policy) refused on its own also
    /// ends the call (`Ok(None)`, after its `AutoRefused` event). Verdicts not yet
    /// settled go out on the way. Every session and link event goes to
    /// `observer` (`Settled` among them: the moment to persist an id).
    pub fn listen<C, K>(
        &mut self,
        connector: &mut C,
        clock: &K,
        deadline: Option<Instant>,
        mut observer: impl FnMut(Event<ListenEvent>),
    ) -> Result<Option<NoticeInfo>, ListenRunError>
    where
        C: Connector,
        K: Clock,
    {
        if let Some(n) = self.waiting.pop_front() {
            return Ok(Some(n));
        }
        self.run(connector, clock, deadline, &mut observer, Wait::Notice)?;
        Ok(self.waiting.pop_front())
    }

    /// Runs until every verdict given is settled (`Ok(true)`) or until
    /// `deadline` (`Ok(false)`). Notices that arrive meanwhile are kept
    /// for the next [`listen`](Self::listen).
    pub fn settle<C, K>(
        &mut self,
        connector: &mut C,
        clock: &K,
        deadline: Option<Instant>,
        mut observer: impl FnMut(Event<ListenEvent>),
    ) -> Result<bool, ListenRunError>
    where
        C: Connector,
        K: Clock,
    {
        if self.listener.unsettled() == 0 {
            return Ok(true);
        }
        self.run(connector, clock, deadline, &mut observer, Wait::Settled)?;
        Ok(self.listener.unsettled() == 0)
    }

    /// Drives the listener until what `wait` says, or `deadline`.
    fn run<C, K, O>(
        &mut self,
        connector: &mut C,
        clock: &K,
        deadline: Option<Instant>,
        observer: &mut O,
        wait: Wait,
    ) -> Result<(), ListenRunError>
    where
        C: Connector,
        K: Clock,
        O: FnMut(Event<ListenEvent>),
    {
        // The driver borrows the machine: notices are taken from its
        // events as they are reported.
        let arrived = Cell::new(false);
        let waiting = &mut self.waiting;
        let mut observe = |_: &Listener<'a, N>, e: Event<ListenEvent>| {
            match &e {
                Event::Session(ListenEvent::Notice(n)) => {
                    // At most N open notices exist, so this never fails.
                    let _ = waiting.push_back(n.clone());
                    arrived.set(true);
                }
                // The application hears of it now, not with the next
                // notice that may never come.
                Event::Session(ListenEvent::AutoRefused { .. }) => arrived.set(true),
                _ => {}
            }
            observer(e);
        };
        let mut until = Until {
            stop: |l: &Listener<'a, N>| match wait {
                Wait::Notice => arrived.get(),
                Wait::Settled => l.unsettled() == 0,
            },
            deadline,
        };
        let parts = Parts {
            decoder: &mut self.decoder,
            tx: &mut self.tx,
            policy: self.policy,
        };
        driver::run_until(
            &mut self.listener,
            &mut NoFiles,
            parts,
            connector,
            clock,
            &mut observe,
            &mut until,
        )
        .map(|_| ())
    }
}

/// What a [`NoticeListener`] call runs until.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A notice the application has not seen.
    Notice,
    /// Every verdict settled.
    Settled,
}

/// Why a [`NoticeSender`] request did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestFailure {
    /// The relay refused the request: `UnknownTerminal`, `QueueFull`
    /// (with `retry_after_ms` when waiting helps), `NotReady`,
    /// `UnknownCode`, `Expired`, `AuthRequired`…
    Refused {
        /// Why.
        code: ErrorCode,
        /// The relay's retry hint in milliseconds; 0 when waiting does not
        /// help.
        retry_after_ms: u32,
    },
    /// The request could not be made (a name too long).
    Request(RequestError),
    /// The session failed or the link was given up on.
    Run(RunError<SendError, Infallible>),
    /// `deadline` passed before the answer (a push may still be stored:
    /// repeat it with the same `push_id`).
    TimedOut,
}

impl core::fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RequestFailure::Refused { code, .. } => write!(f, "relay refused: {code}"),
            RequestFailure::Request(e) => write!(f, "{e}"),
            RequestFailure::Run(e) => write!(f, "{e}"),
            RequestFailure::TimedOut => f.write_str("no answer before the deadline"),
        }
    }
}

/// Pushes batches to terminals and follows their deliveries: a
/// [`Sender`] over links from a [`Connector`], one blocking call per
/// request. Each call connects, authenticates with the credential, sends
/// the request (again on every new link and retransmit timeout, a push
/// with the same `push_id`) and returns with the answer.
///
/// ```ignore
/// let mut push: NoticeSender<'_, 256, 258> =
///     NoticeSender::new(SendConfig::default(), Credential::Token(token), RetransferPolicy::default());
/// let delivery = push.push(&mut connector, &clock, random_u64(), code, "sensor-1", None, |_| {})?;
/// ```
#[derive(Debug)]
pub struct NoticeSender<'a, const RX: usize, const TX: usize> {
    sender: Sender<'a>,
    decoder: Decoder<[u8; RX]>,
    tx: [u8; TX],
    policy: RetransferPolicy,
}

/// What a request ended with, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Done(Option<DeliveryInfo>),
    Refused {
        code: ErrorCode,
        retry_after_ms: u32,
    },
}

impl<'a, const RX: usize, const TX: usize> NoticeSender<'a, RX, TX> {
    const BUFFERS_FIT: () = assert!(
        RX >= frame::MIN_FRAME_LEN && TX >= frame::max_encoded_len(frame::MIN_FRAME_LEN),
        "RX must hold a 64-byte frame and TX its encoded form (66 bytes)"
    );

    /// A sender authenticating with `credential` (a user's token, or a
    /// terminal pushing for its owner).
    pub fn new(
        mut config: SendConfig,
        credential: Credential<'a>,
        policy: RetransferPolicy,
    ) -> Self {
        let () = Self::BUFFERS_FIT;
        config.max_frame = config.max_frame.min(RX as u32);
        NoticeSender {
            sender: Sender::new(config, credential),
            decoder: Decoder::new([0; RX]),
            tx: [0; TX],
            policy,
        }
    }

    /// The protocol machine.
    pub fn sender(&self) -> &Sender<'a> {
        &self.sender
    }

    /// Pushes the complete batch `code` to `terminal` (see
    /// [`Sender::push`]) and returns the delivery as the relay stored it.
    /// `push_id` is random, once per push: after an error, repeating the
    /// call with the same id never pushes twice.
    #[allow(clippy::too_many_arguments)]
    pub fn push<C: Connector, K: Clock>(
        &mut self,
        connector: &mut C,
        clock: &K,
        push_id: u64,
        code: Code,
        terminal: &str,
        deadline: Option<Instant>,
        observer: impl FnMut(Event<SendEvent>),
    ) -> Result<DeliveryInfo, RequestFailure> {
        self.sender
            .push(push_id, code, terminal)
            .map_err(RequestFailure::Request)?;
        match self.run(connector, clock, deadline, observer)? {
            Some(d) => Ok(d),
            // A push is done only with its delivery.
            None => Err(RequestFailure::TimedOut),
        }
    }

    /// The deliveries of `code` this user pushed (see [`Sender::status`]):
    /// each reaches `observer` as `Event::Session(SendEvent::Delivery(_))`,
    /// oldest first.
    pub fn status<C: Connector, K: Clock>(
        &mut self,
        connector: &mut C,
        clock: &K,
        code: Code,
        deadline: Option<Instant>,
        observer: impl FnMut(Event<SendEvent>),
    ) -> Result<(), RequestFailure> {
        self.sender.status(code).map_err(RequestFailure::Request)?;
        self.run(connector, clock, deadline, observer).map(|_| ())
    }

    /// Lets `sender` push to this user's terminals, or no longer (see
    /// [`Sender::allow_sender`]).
    pub fn allow_sender<C: Connector, K: Clock>(
        &mut self,
        connector: &mut C,
        clock: &K,
        sender: &str,
        allow: bool,
        deadline: Option<Instant>,
        observer: impl FnMut(Event<SendEvent>),
    ) -> Result<(), RequestFailure> {
        self.sender
            .allow_sender(sender, allow)
            .map_err(RequestFailure::Request)?;
        self.run(connector, clock, deadline, observer).map(|_| ())
    }

    /// Runs the request made until it is answered; a push's delivery comes
    /// back.
    fn run<C: Connector, K: Clock>(
        &mut self,
        connector: &mut C,
        clock: &K,
        deadline: Option<Instant>,
        mut observer: impl FnMut(Event<SendEvent>),
    ) -> Result<Option<DeliveryInfo>, RequestFailure> {
        let answer: Cell<Option<Answer>> = Cell::new(None);
        // The latest delivery reported: a push's answer, once `Done` says so.
        let delivery = Cell::new(None);
        let mut observe = |_: &Sender<'a>, e: Event<SendEvent>| {
            match &e {
                Event::Session(SendEvent::Delivery(d)) => delivery.set(Some(d.clone())),
                Event::Session(SendEvent::Done(k)) => {
                    let pushed = delivery.take().filter(|_| *k == RequestKind::Push);
                    answer.set(Some(Answer::Done(pushed)));
                }
                Event::Session(SendEvent::Refused {
                    code,
                    retry_after_ms,
                    ..
                }) => answer.set(Some(Answer::Refused {
                    code: *code,
                    retry_after_ms: *retry_after_ms,
                })),
                _ => {}
            }
            observer(e);
        };
        let mut until = Until {
            stop: |s: &Sender<'a>| !s.is_busy(),
            deadline,
        };
        let parts = Parts {
            decoder: &mut self.decoder,
            tx: &mut self.tx,
            policy: self.policy,
        };
        let ended = driver::run_until(
            &mut self.sender,
            &mut NoFiles,
            parts,
            connector,
            clock,
            &mut observe,
            &mut until,
        );
        let ended = match ended {
            Ok(e) => e,
            Err(e) => {
                self.sender.cancel();
                return Err(RequestFailure::Run(e));
            }
        };
        debug_assert_eq!(ended, Ended::Stopped, "a sender finishes only by failing");
        match answer.take() {
            Some(Answer::Done(d)) => Ok(d),
            Some(Answer::Refused {
                code,
                retry_after_ms,
            }) => Err(RequestFailure::Refused {
                code,
                retry_after_ms,
            }),
            None => {
                // The deadline: the request is given up here.
                self.sender.cancel();
                Err(RequestFailure::TimedOut)
            }
        }
    }
}
