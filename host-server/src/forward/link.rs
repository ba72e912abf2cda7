//! The forwarder's link to the peer: the CLI's, with a stop check on every
//! read, so a relay that shuts down takes back a forward whose peer has
//! gone silent within a read timeout, not after the driver gives up.
//!
//! The driver reads with a short timeout (the CLI's 50 ms) while it waits
//! for acknowledgements, so a read that finds the stop flag set comes soon
//! after the flag: it fails as an aborted link, the driver dials again
//! after its first backoff, and the connector, which checks the same
//! flag, dials nothing and says it has given up
//! ([`Connector::given_up`](pickup_device::Connector::given_up)): the run
//! ends as stopped, without the policy's further attempts.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// A link whose reads fail with [`io::ErrorKind::ConnectionAborted`] once
/// `stop` is set.
pub(super) struct StopLink<'a, L> {
    pub(super) inner: L,
    pub(super) stop: Option<&'a AtomicBool>,
}

impl<L> StopLink<'_, L> {
    fn stopped(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::Acquire))
    }
}

impl<L: embedded_io::ErrorType<Error = io::Error>> embedded_io::ErrorType for StopLink<'_, L> {
    type Error = io::Error;
}

impl<L: embedded_io::Read + embedded_io::ErrorType<Error = io::Error>> embedded_io::Read
    for StopLink<'_, L>
{
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, io::Error> {
        if self.stopped() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the relay is stopping",
            ));
        }
        self.inner.read(buf)
    }
}

impl<L: embedded_io::Write + embedded_io::ErrorType<Error = io::Error>> embedded_io::Write
    for StopLink<'_, L>
{
    fn write(&mut self, buf: &[u8]) -> Result<usize, io::Error> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> Result<(), io::Error> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_io::{Read, Write};

    /// A link that always has one byte to read, and takes every write.
    struct Chatty;

    impl embedded_io::ErrorType for Chatty {
        type Error = io::Error;
    }

    impl Read for Chatty {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, io::Error> {
            buf[0] = 7;
            Ok(1)
        }
    }

    impl Write for Chatty {
        fn write(&mut self, buf: &[u8]) -> Result<usize, io::Error> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> Result<(), io::Error> {
            Ok(())
        }
    }

    #[test]
    fn reads_pass_until_the_stop_flag_and_fail_as_aborted_after_it() {
        let stop = AtomicBool::new(false);
        let mut link = StopLink {
            inner: Chatty,
            stop: Some(&stop),
        };
        let mut buf = [0u8; 4];
        assert_eq!(link.read(&mut buf).unwrap(), 1);
        stop.store(true, Ordering::Release);
        let e = link.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        // Writes still go out: what the driver says last is not cut short.
        assert_eq!(link.write(b"bye").unwrap(), 3);

        let mut unstoppable = StopLink {
            inner: Chatty,
            stop: None,
        };
        assert_eq!(unstoppable.read(&mut buf).unwrap(), 1);
    }
}
