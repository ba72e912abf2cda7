//! The one blocking loop of the upload and download drivers, generic over
//! [`pickup_proto::drive::Machine`] and following its call order.
//!
//! One iteration: send everything the machine has, report its events, read
//! once from the link (a read returns within the link's timeout, see
//! [`crate::link`]), feed the bytes through the frame decoder into the
//! machine, fire due timers. A lost link ends the inner loop; the outer loop
//! asks [`Retransfer`] whether and when to connect again.

use embedded_io::{Error as _, Read, Write};
use pickup_proto::drive::Machine;
use pickup_proto::frame::{Decoder, Frame, Framing};
use pickup_proto::message::{Kind, Message};
use pickup_proto::storage::ReadAt;
use pickup_proto::{ErrorCode, Instant};

use crate::clock::Clock;
use crate::link::{is_quiet, Connector, LinkLoss};
use crate::retransfer::{Decision, LinkEvent, Retransfer, RetransferPolicy};

/// What a driver reports to its observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<E> {
    /// An event of the protocol session (progress, verdicts, the code…).
    Session(E),
    /// A change of the link: lost, reconnecting, reconnected, gave up.
    Link(LinkEvent),
}

/// Why a driver's `run` returned without finishing the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError<F, S> {
    /// The session failed for good (a refusal from the relay, a file that
    /// does not verify…); running again does not help.
    Session(F),
    /// Local storage failed; the session is intact and `run` may be called
    /// again once the cause is fixed.
    Storage(S),
    /// The link was lost and the retransfer policy is exhausted (or
    /// disabled). The relay keeps what it has: `run` again resumes.
    GaveUp {
        /// Attempts made in the last outage.
        attempts: u32,
        /// The last reason the link was lost.
        last: LinkLoss,
    },
}

impl<F: core::fmt::Display, S: core::fmt::Debug> core::fmt::Display for RunError<F, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RunError::Session(e) => write!(f, "{e}"),
            RunError::Storage(e) => write!(f, "local storage failed: {e:?}"),
            RunError::GaveUp { attempts, last } => {
                write!(
                    f,
                    "link lost ({last}), gave up after {attempts} reconnect attempts"
                )
            }
        }
    }
}

/// A number that grows whenever the transfer moves forward (see
/// [`Retransfer`]): the bytes done, and the grant or manifest before any.
fn progress<M: Machine<Io>, Io: ReadAt + ?Sized>(machine: &M) -> u64 {
    let p = machine.progress();
    p.done
        .saturating_mul(2)
        .saturating_add(u64::from(p.started))
}

/// The buffers and policy a driver lends to one `run`.
pub(crate) struct Parts<'a, B> {
    pub decoder: &'a mut Decoder<B>,
    /// Encodes outgoing frames and, between them, receives link reads.
    pub tx: &'a mut [u8],
    pub policy: RetransferPolicy,
}

/// Runs `machine` to completion over links from `connector`. The observer
/// sees the machine beside each event, as it stood when the event came.
#[cfg(any(feature = "upload", feature = "download"))]
pub(crate) fn run<M, Io, B, C, K, O>(
    machine: &mut M,
    io: &mut Io,
    parts: Parts<'_, B>,
    connector: &mut C,
    clock: &K,
    observer: &mut O,
) -> Result<(), RunError<M::Error, Io::Error>>
where
    M: Machine<Io>,
    Io: ReadAt + ?Sized,
    B: AsMut<[u8]> + AsRef<[u8]>,
    C: Connector,
    K: Clock,
    O: FnMut(&M, Event<M::Event>),
{
    let mut until = Until {
        stop: |_: &M| false,
        deadline: None,
    };
    run_until(machine, io, parts, connector, clock, observer, &mut until).map(|_| ())
}

/// When a long-lived machine (a notice listener, a sender between
/// requests) is to be given back to the caller before it finishes.
pub(crate) struct Until<S> {
    /// Asked after everything the machine had to send is sent and its
    /// events are reported: whether the caller has what it waited for.
    pub stop: S,
    /// The caller's deadline: no reconnect backoff runs past it.
    pub deadline: Option<Instant>,
}

impl<S> Until<S> {
    /// Reads the clock only with a deadline: the transfers' `run` has
    /// none, and pays nothing for this check.
    fn reached<M, K: Clock>(&mut self, machine: &M, clock: &K) -> bool
    where
        S: FnMut(&M) -> bool,
    {
        (self.stop)(machine) || self.deadline.is_some_and(|d| clock.now() >= d)
    }
}

/// How [`run_until`] ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The machine finished.
    Finished,
    /// The [`Until`] was reached; the link (if any) was dropped.
    Stopped,
}

/// Runs `machine` over links from `connector` until it finishes or
/// `until` is reached, whichever comes first.
pub(crate) fn run_until<M, Io, B, C, K, O, S>(
    machine: &mut M,
    io: &mut Io,
    parts: Parts<'_, B>,
    connector: &mut C,
    clock: &K,
    observer: &mut O,
    until: &mut Until<S>,
) -> Result<Ended, RunError<M::Error, Io::Error>>
where
    M: Machine<Io>,
    Io: ReadAt + ?Sized,
    B: AsMut<[u8]> + AsRef<[u8]>,
    C: Connector,
    K: Clock,
    O: FnMut(&M, Event<M::Event>),
    S: FnMut(&M) -> bool,
{
    let Parts {
        decoder,
        tx,
        policy,
    } = parts;
    let mut retransfer = Retransfer::new(policy);
    let mut best = progress(machine);
    // Number of the attempt the next connect makes (0: the first link).
    let mut attempt = 0u32;
    loop {
        if machine.is_finished() {
            return match machine.error() {
                Some(f) => Err(RunError::Session(f)),
                None => Ok(Ended::Finished),
            };
        }
        if until.reached(machine, clock) {
            return Ok(Ended::Stopped);
        }
        let loss = match connector.connect() {
            Err(_) => LinkLoss::Connect,
            Ok(mut link) => {
                if attempt > 0 {
                    observer(machine, Event::Link(LinkEvent::Reconnected { attempt }));
                }
                decoder.reset();
                machine.handle_connected(clock.now());
                // Every link starts in COBS (PROTOCOL.md §2.1).
                decoder.set_framing(machine.framing());
                let outcome = exchange(
                    machine,
                    io,
                    decoder,
                    tx,
                    &mut link,
                    clock,
                    &mut retransfer,
                    &mut best,
                    observer,
                    until,
                );
                machine.handle_disconnected(clock.now());
                // Events raised just before the loss (a grant read in the
                // same batch of frames as the last write failed) still count.
                drain(machine, &mut retransfer, &mut best, observer);
                match outcome {
                    Ok(None) => continue,
                    Ok(Some(loss)) => loss,
                    Err(e) => return Err(RunError::Storage(e)),
                }
            }
        };
        observer(machine, Event::Link(LinkEvent::Lost(loss)));
        let now = clock.now();
        let decision = if loss == LinkLoss::Connect && connector.given_up() {
            // Dialling again would only wait out backoffs for nothing.
            Decision::GiveUp { attempts: attempt }
        } else {
            retransfer.on_loss(now)
        };
        match decision {
            Decision::GiveUp { attempts } => {
                observer(
                    machine,
                    Event::Link(LinkEvent::GaveUp {
                        attempts,
                        last: loss,
                    }),
                );
                return Err(RunError::GaveUp {
                    attempts,
                    last: loss,
                });
            }
            Decision::Retry { attempt: a, after } => {
                observer(
                    machine,
                    Event::Link(LinkEvent::Reconnecting { attempt: a, after }),
                );
                attempt = a;
                let mut wake = now + after;
                if let Some(d) = until.deadline {
                    wake = wake.min(d);
                }
                clock.wait_until(wake);
            }
        }
    }
}

/// Whether `frame` is the relay's notice that it is shutting down.
fn is_shutdown_notice(frame: Frame<'_>) -> bool {
    frame.kind == Kind::Error as u8
        && matches!(
            Message::decode_from_relay(frame),
            Ok(Message::Error(e)) if e.code == ErrorCode::ShuttingDown
        )
}

/// One link's worth of exchange. `Ok(None)`: the machine finished, or
/// `until` was reached;
/// `Ok(Some(loss))`: the link is gone. After the relay's shutdown notice
/// whatever ends the link (a broken pipe, EOF) is reported as
/// [`LinkLoss::ShuttingDown`], which is what the user needs to hear.
#[allow(clippy::too_many_arguments)]
fn exchange<M, Io, B, L, K, O, S>(
    machine: &mut M,
    io: &mut Io,
    decoder: &mut Decoder<B>,
    tx: &mut [u8],
    link: &mut L,
    clock: &K,
    retransfer: &mut Retransfer,
    best: &mut u64,
    observer: &mut O,
    until: &mut Until<S>,
) -> Result<Option<LinkLoss>, Io::Error>
where
    M: Machine<Io>,
    Io: ReadAt + ?Sized,
    B: AsMut<[u8]> + AsRef<[u8]>,
    L: Read + Write,
    K: Clock,
    O: FnMut(&M, Event<M::Event>),
    S: FnMut(&M) -> bool,
{
    let mut closing = false;
    let outcome = exchange_frames(
        machine,
        io,
        decoder,
        tx,
        link,
        clock,
        retransfer,
        best,
        observer,
        until,
        &mut closing,
    )?;
    Ok(outcome.map(|loss| {
        if closing {
            LinkLoss::ShuttingDown
        } else {
            loss
        }
    }))
}

/// [`exchange`]'s loop; sets `closing` when the relay says it shuts down.
#[allow(clippy::too_many_arguments)]
fn exchange_frames<M, Io, B, L, K, O, S>(
    machine: &mut M,
    io: &mut Io,
    decoder: &mut Decoder<B>,
    tx: &mut [u8],
    link: &mut L,
    clock: &K,
    retransfer: &mut Retransfer,
    best: &mut u64,
    observer: &mut O,
    until: &mut Until<S>,
    closing: &mut bool,
) -> Result<Option<LinkLoss>, Io::Error>
where
    M: Machine<Io>,
    Io: ReadAt + ?Sized,
    B: AsMut<[u8]> + AsRef<[u8]>,
    L: Read + Write,
    K: Clock,
    O: FnMut(&M, Event<M::Event>),
    S: FnMut(&M) -> bool,
{
    // Consecutive reads that filled the whole buffer (see below).
    let mut full_reads = 0u32;
    loop {
        let now = clock.now();
        while let Some(n) = machine.poll_transmit(now, io, tx)? {
            if let Err(e) = link.write_all(&tx[..n]) {
                return Ok(Some(LinkLoss::Write(e.kind())));
            }
        }
        if let Err(e) = link.flush() {
            return Ok(Some(LinkLoss::Write(e.kind())));
        }
        drain(machine, retransfer, best, observer);
        // Checked only here, once what the machine had to say is sent (a
        // listener's acknowledgement of the notice the caller waits for).
        if machine.is_finished() || until.reached(machine, clock) {
            return Ok(None);
        }
        if machine.is_idle() {
            return Ok(Some(LinkLoss::Silent));
        }
        // `tx` is free until the next transmit: it doubles as the read buffer.
        let mut caught_up = true;
        match link.read(tx) {
            Ok(0) => return Ok(Some(LinkLoss::Eof)),
            Ok(n) => {
                caught_up = n < tx.len();
                let now = clock.now();
                let mut input = &tx[..n];
                let mut prefixed = machine.framing() != Framing::Cobs;
                while let Some(result) = decoder.feed(&mut input) {
                    // Dropped frames are counted by the decoder; in COBS
                    // the machine's timers recover whatever they carried.
                    // A length-prefixed stream that drops one may have
                    // lost its place: start over on a new link.
                    if result.is_err() && prefixed {
                        machine.keep_cobs();
                        return Ok(Some(LinkLoss::Garbled));
                    }
                    if let Ok(frame) = result {
                        *closing |= is_shutdown_notice(frame);
                        machine.handle_frame(now, frame, io)?;
                        // A Welcome that agreed on the length prefix turns
                        // the relay's next frame, in this same read, to it.
                        decoder.set_framing(machine.framing());
                        prefixed = machine.framing() != Framing::Cobs;
                        // The machines keep a short event queue: empty it
                        // after every input so a burst of frames loses none.
                        drain(machine, retransfer, best, observer);
                    }
                }
            }
            Err(e) if is_quiet(e.kind()) => {}
            Err(e) => return Ok(Some(LinkLoss::Read(e.kind()))),
        }
        if machine.is_finished() {
            continue;
        }
        if machine.is_idle() {
            return Ok(Some(LinkLoss::Silent));
        }
        // After a long burst of sending, acks may be queued behind the read
        // just made: a read that filled the buffer is followed by another
        // before the timers fire, so they do not mistake the backlog for a
        // loss. A bounded number, so a chatty peer cannot starve them.
        if caught_up || full_reads >= 8 {
            full_reads = 0;
        } else {
            full_reads += 1;
            continue;
        }
        let now = clock.now();
        if machine.poll_timeout().is_some_and(|t| now >= t) {
            machine.handle_timeout(now);
        }
    }
}

/// Reports the machine's pending events and notes progress.
fn drain<M, Io, O>(machine: &mut M, retransfer: &mut Retransfer, best: &mut u64, observer: &mut O)
where
    M: Machine<Io>,
    Io: ReadAt + ?Sized,
    O: FnMut(&M, Event<M::Event>),
{
    while let Some(e) = machine.poll_event() {
        observer(machine, Event::Session(e));
    }
    let p = progress(machine);
    if p > *best {
        *best = p;
        retransfer.on_progress();
    }
}
