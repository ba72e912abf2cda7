//! `std::io` streams as driver links.
//!
//! The drivers want reads that return within a short timeout with kind
//! `TimedOut` (see [`crate::link`]). Sockets report a read timeout as
//! `WouldBlock` on Unix, which `embedded-io` would call `Other`, so the
//! adapter renames it. Writes that time out are retried until a longer
//! deadline: a slow serial line or a full socket buffer is not a lost link.

use std::io::{self, ErrorKind};
use std::time::Instant;

/// Anything a link can be built on.
pub(crate) trait Stream: io::Read + io::Write + Send {}
impl<T: io::Read + io::Write + Send> Stream for T {}

/// A `std::io` stream as an `embedded_io` link.
pub(crate) struct StdLink {
    inner: Box<dyn Stream>,
    write_patience: core::time::Duration,
}

impl StdLink {
    pub fn new(inner: Box<dyn Stream>, write_patience: core::time::Duration) -> StdLink {
        StdLink {
            inner,
            write_patience,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

impl embedded_io::ErrorType for StdLink {
    type Error = io::Error;
}

impl embedded_io::Read for StdLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, io::Error> {
        match self.inner.read(buf) {
            Err(e) if is_timeout(&e) => Err(io::Error::from(ErrorKind::TimedOut)),
            other => other,
        }
    }
}

impl embedded_io::Write for StdLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, io::Error> {
        let deadline = Instant::now() + self.write_patience;
        loop {
            match self.inner.write(buf) {
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::from(ErrorKind::TimedOut));
                    }
                }
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> Result<(), io::Error> {
        let deadline = Instant::now() + self.write_patience;
        loop {
            match self.inner.flush() {
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::from(ErrorKind::TimedOut));
                    }
                }
                other => return other,
            }
        }
    }
}
