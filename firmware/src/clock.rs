//! The pickup clock: milliseconds counted by the SysTick interrupt.

use core::cell::Cell;

use cortex_m::interrupt::{self, Mutex};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;

/// Milliseconds since [`SysTickClock::start`]. A `u64` never wraps; on a
/// Cortex-M3 it cannot be read in one instruction, hence the critical section.
static MILLIS: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));

#[exception]
fn SysTick() {
    interrupt::free(|cs| {
        let millis = MILLIS.borrow(cs);
        millis.set(millis.get() + 1);
    });
}

/// A millisecond clock over SysTick, which interrupts once per millisecond.
#[allow(missing_debug_implementations)]
pub struct SysTickClock {
    _syst: SYST,
}

impl SysTickClock {
    /// Starts SysTick at 1 kHz from the core clock of `core_hz`.
    pub fn start(mut syst: SYST, core_hz: u32) -> Self {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(core_hz / 1_000 - 1);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        SysTickClock { _syst: syst }
    }

    /// Milliseconds since the clock started.
    pub fn millis(&self) -> u64 {
        interrupt::free(|cs| MILLIS.borrow(cs).get())
    }

    /// Sleeps until at least `millis()` is `deadline`.
    #[cfg_attr(feature = "baseline", allow(dead_code))]
    pub fn sleep_until(&self, deadline: u64) {
        while self.millis() < deadline {
            // SysTick wakes the core every millisecond.
            cortex_m::asm::wfi();
        }
    }
}

#[cfg(not(feature = "baseline"))]
impl pickup_device::Clock for SysTickClock {
    fn now(&self) -> pickup_proto::Instant {
        pickup_proto::Instant::from_millis(self.millis())
    }

    fn wait_until(&self, deadline: pickup_proto::Instant) {
        self.sleep_until(deadline.as_millis())
    }
}
