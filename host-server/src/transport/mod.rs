//! Drivers that move bytes between a link and a [`Session`](crate::session::Session).
//!
//! One file per transport; each feeds a [`frame::Decoder`](pickup_proto::frame::Decoder)
//! and passes time as milliseconds since the Unix epoch ([`Clock`]).

use pickup_proto::Instant;

pub mod counted;
pub mod listen;
mod rx;
pub mod serial;
pub mod tcp;
pub mod tls;
mod tx;

#[cfg(test)]
mod framing_tests;
#[cfg(test)]
mod tcp_tests;

/// The relay's clock: Unix time at start plus a monotonic elapsed time, so
/// `now` never goes backwards while expiry still follows wall time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start_unix_ms: u64,
    start: std::time::Instant,
}

impl Clock {
    /// A clock anchored at the current wall time.
    pub fn new() -> Self {
        let start_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock {
            start_unix_ms,
            start: std::time::Instant::now(),
        }
    }

    /// Now, for the sessions.
    pub fn now(&self) -> Instant {
        Instant::from_millis(self.start_unix_ms + self.start.elapsed().as_millis() as u64)
    }

    /// The `std` instant at which `at` falls (for timers).
    pub fn deadline(&self, at: Instant) -> std::time::Instant {
        let offset = at.as_millis().saturating_sub(self.start_unix_ms);
        self.start + std::time::Duration::from_millis(offset)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
