//! The monotonic clock the drivers read.
//!
//! The protocol machines take time as an argument; the blocking drivers need
//! a source for it and a way to wait out a reconnect backoff. Firmware
//! implements [`Clock`] over a hardware timer (SysTick, RTC, an `embassy-time`
//! driver), a host over `std::time::Instant` (`StdClock`, feature `std`),
//! and tests over a counter they advance by hand.

use pickup_proto::Instant;

/// A monotonic millisecond clock.
pub trait Clock {
    /// The current time. Must never go backwards.
    fn now(&self) -> Instant;

    /// Blocks until `now() >= deadline`. Used only for reconnect backoff.
    ///
    /// The default spins on [`now`](Self::now); firmware that can sleep (WFI
    /// until a timer interrupt) should override it.
    fn wait_until(&self, deadline: Instant) {
        while self.now() < deadline {
            core::hint::spin_loop();
        }
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn wait_until(&self, deadline: Instant) {
        (**self).wait_until(deadline)
    }
}

/// A clock over `std::time::Instant`, with its epoch at creation.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct StdClock {
    epoch: std::time::Instant,
}

#[cfg(feature = "std")]
impl StdClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        StdClock {
            epoch: std::time::Instant::now(),
        }
    }
}

#[cfg(feature = "std")]
impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "std")]
impl Clock for StdClock {
    fn now(&self) -> Instant {
        let ms = self.epoch.elapsed().as_millis();
        Instant::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    fn wait_until(&self, deadline: Instant) {
        let now = self.now();
        if deadline > now {
            let wait = deadline.saturating_since(now).as_millis();
            std::thread::sleep(core::time::Duration::from_millis(wait));
        }
    }
}
