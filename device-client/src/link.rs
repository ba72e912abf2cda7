//! The byte link under a driver, and how a driver gets a new one.
//!
//! A link is anything with [`embedded_io::Read`] and [`embedded_io::Write`]:
//! a UART, a TCP stream, a pipe, an in-memory channel in a test. The
//! drivers need one property beyond that: **a read must not block forever**,
//! because the protocol's timers (retransmit, keepalive, idle) run between
//! reads. A read therefore returns one of
//!
//! | result                           | the driver                                  |
//! |----------------------------------|---------------------------------------------|
//! | `Ok(n)`, `n > 0`                 | feeds the bytes to the frame decoder        |
//! | `Err(e)`, `e.kind()` is `TimedOut` or `Interrupted` | runs its timers and reads again |
//! | `Ok(0)` (end of stream)          | treats the link as lost                     |
//! | any other `Err`                  | treats the link as lost                     |
//!
//! A host gets this from a socket or serial read timeout (tens of
//! milliseconds). A UART driver that blocks until a byte arrives can be
//! wrapped in [`Polled`], which uses [`embedded_io::ReadReady`] to read only
//! when bytes are waiting and reports `TimedOut` otherwise.
//!
//! A lost link is replaced through a [`Connector`]: it dials TCP again,
//! reopens a serial port, or hands out the same UART again.

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write};

/// Makes links: the first one, and a fresh one after each loss.
///
/// The link may borrow the connector (a UART owned by the connector is lent
/// out for as long as one session uses it), hence the lifetime.
pub trait Connector {
    /// The error of the links' reads and writes.
    type IoError: embedded_io::Error;
    /// A link to the relay.
    type Link<'a>: Read<Error = Self::IoError> + Write<Error = Self::IoError>
    where
        Self: 'a;
    /// Why a connection attempt failed (host unreachable, port missing…).
    type ConnectError: core::fmt::Debug;

    /// Establishes a new link. Called before the first exchange and after
    /// every loss, after the retransfer backoff.
    fn connect(&mut self) -> Result<Self::Link<'_>, Self::ConnectError>;

    /// Whether the connector makes no more links: asked after a connect
    /// failed. A connector whose owner stops it (a relay shutting down
    /// under its forwards) says so, and the driver ends at once with
    /// [`RunError::GaveUp`](crate::RunError::GaveUp) instead of dialling
    /// again until its [`RetransferPolicy`](crate::RetransferPolicy) gives
    /// up. By default, never.
    fn given_up(&self) -> bool {
        false
    }
}

/// Why a link was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkLoss {
    /// The connector could not establish a link.
    Connect,
    /// The link reported end of stream (the peer closed it).
    Eof,
    /// A read failed.
    Read(ErrorKind),
    /// A write or flush failed.
    Write(ErrorKind),
    /// The protocol machine declared the link dead: nothing heard for its
    /// idle timeout, or the relay said goodbye or closed the session.
    Silent,
    /// The relay said it is shutting down (`Error{ShuttingDown}`) before
    /// the link ended: an orderly stop, not a fault of the link.
    ShuttingDown,
    /// A length-prefixed frame arrived broken (PROTOCOL.md §2.1): the link
    /// is not the reliable stream it was taken for, and a broken length
    /// loses the stream's place. The next link starts over in COBS, which
    /// finds frames again after noise.
    Garbled,
}

impl core::fmt::Display for LinkLoss {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LinkLoss::Connect => f.write_str("could not connect"),
            LinkLoss::Eof => f.write_str("connection closed by the peer"),
            LinkLoss::Read(k) => write!(f, "read failed ({k:?})"),
            LinkLoss::Write(k) => write!(f, "write failed ({k:?})"),
            LinkLoss::Silent => f.write_str("no answer from the relay"),
            LinkLoss::ShuttingDown => f.write_str("relay shutting down"),
            LinkLoss::Garbled => f.write_str("garbled frames from the relay"),
        }
    }
}

/// Whether a read error only means "no bytes yet" (see the module docs).
pub fn is_quiet(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::TimedOut | ErrorKind::Interrupted)
}

/// Adapts a reader whose `read` blocks until data arrives into one the
/// drivers can poll: `read` only reads when [`ReadReady::read_ready`] says
/// bytes are waiting, and otherwise returns [`PolledError::Idle`] (kind
/// `TimedOut`) at once.
#[derive(Debug)]
pub struct Polled<L>(pub L);

/// The error of a [`Polled`] link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolledError<E> {
    /// Nothing to read right now.
    Idle,
    /// The underlying link failed.
    Link(E),
}

impl<E: core::fmt::Debug> core::fmt::Display for PolledError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PolledError::Idle => f.write_str("no bytes waiting"),
            PolledError::Link(e) => write!(f, "link error: {e:?}"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for PolledError<E> {}

impl<E: embedded_io::Error> embedded_io::Error for PolledError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            PolledError::Idle => ErrorKind::TimedOut,
            PolledError::Link(e) => e.kind(),
        }
    }
}

impl<L: ErrorType> ErrorType for Polled<L> {
    type Error = PolledError<L::Error>;
}

impl<L: Read + ReadReady> Read for Polled<L> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if self.0.read_ready().map_err(PolledError::Link)? {
            self.0.read(buf).map_err(PolledError::Link)
        } else {
            Err(PolledError::Idle)
        }
    }
}

impl<L: Write> Write for Polled<L> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.write(buf).map_err(PolledError::Link)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush().map_err(PolledError::Link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader with a fixed script of readiness and bytes.
    struct Uart {
        ready: bool,
        bytes: &'static [u8],
    }
    impl ErrorType for Uart {
        type Error = ErrorKind;
    }
    impl Read for Uart {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
            assert!(self.ready, "read while not ready would block");
            let n = buf.len().min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }
    impl ReadReady for Uart {
        fn read_ready(&mut self) -> Result<bool, ErrorKind> {
            Ok(self.ready)
        }
    }

    #[test]
    fn polled_reads_only_when_ready() {
        let mut link = Polled(Uart {
            ready: false,
            bytes: b"abc",
        });
        let mut buf = [0u8; 8];
        let idle = link.read(&mut buf).expect_err("nothing is ready");
        assert!(is_quiet(embedded_io::Error::kind(&idle)));
        link.0.ready = true;
        assert_eq!(link.read(&mut buf), Ok(3));
        assert_eq!(&buf[..3], b"abc");
    }
}
