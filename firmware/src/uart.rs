//! A polled driver for the ARM PL011 UART (UART0 of the LM3S6965 at
//! `0x4000_C000`), with the `embedded-io` traits pickup's drivers take.
//!
//! Polled, not interrupt driven: the blocking pickup loop reads whenever it
//! has nothing to send, and the 16-byte receive FIFO covers the time it
//! spends between two reads (hashing and encoding one 256-byte frame takes
//! tens of microseconds; 16 bytes at 115200 baud last 1.4 ms). At higher baud
//! rates, or when the application does other work between reads, move the
//! FIFO into a ring buffer from the receive interrupt and implement the same
//! three traits over the ring buffer.

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};

use embedded_io::{ErrorType, Read, ReadReady, Write};

/// Base address of UART0.
const UART0_BASE: usize = 0x4000_C000;

// PL011 register offsets.
const DR: usize = 0x000;
const FR: usize = 0x018;
const IBRD: usize = 0x024;
const FBRD: usize = 0x028;
const LCRH: usize = 0x02C;
const CR: usize = 0x030;

// Flag register bits.
const FR_BUSY: u32 = 1 << 3;
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;

// Data register: the error flags that come with each received byte
// (framing, parity, break, overrun).
const DR_ERRORS: u32 = 0xF00;

// Line control: 8 data bits, no parity, one stop bit, FIFOs on. Without
// FEN the receive "FIFO" is one byte deep.
const LCRH_8N1_FIFO: u32 = (0b11 << 5) | (1 << 4);

// Control: UART, transmitter and receiver enabled.
const CR_ENABLE: u32 = (1 << 0) | (1 << 8) | (1 << 9);

// LM3S6965 system control and GPIO port A (UART0 is on PA0/PA1).
const RCGC1: usize = 0x400F_E104;
const RCGC2: usize = 0x400F_E108;
const GPIOA_AFSEL: usize = 0x4000_4420;
const GPIOA_DEN: usize = 0x4000_451C;

static UART0_TAKEN: AtomicBool = AtomicBool::new(false);

/// UART0, configured for 8N1 with FIFOs.
///
/// Reads block until at least one byte is there ([`Read`]), and
/// [`ReadReady`] says whether one is; wrap it in
/// [`pickup_device::link::Polled`] to give the pickup drivers reads that
/// return at once when the line is quiet.
#[derive(Debug)]
pub struct Pl011 {
    base: usize,
    line_errors: u32,
}

impl Pl011 {
    /// Takes UART0 (once: `None` afterwards, so two owners can never
    /// interleave register accesses) and configures it for `baud` given the
    /// UART's input clock `clock_hz`.
    pub fn take_uart0(clock_hz: u32, baud: u32) -> Option<Self> {
        if UART0_TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the addresses are the LM3S6965's clock-gating and GPIO
        // port A registers; setting the UART0/GPIOA gates and PA0/PA1's
        // alternate function only affects the pins UART0 owns, and
        // `UART0_TAKEN` makes this the only place that touches them.
        unsafe {
            write_volatile(RCGC1 as *mut u32, read_volatile(RCGC1 as *const u32) | 1);
            write_volatile(RCGC2 as *mut u32, read_volatile(RCGC2 as *const u32) | 1);
            write_volatile(
                GPIOA_AFSEL as *mut u32,
                read_volatile(GPIOA_AFSEL as *const u32) | 0b11,
            );
            write_volatile(
                GPIOA_DEN as *mut u32,
                read_volatile(GPIOA_DEN as *const u32) | 0b11,
            );
        }
        let mut uart = Pl011 {
            base: UART0_BASE,
            line_errors: 0,
        };
        // Baud divisor in 1/64ths: clock / (16 * baud), rounded.
        let div64 = (u64::from(clock_hz) * 4 + u64::from(baud) / 2) / u64::from(baud.max(1));
        uart.write_reg(CR, 0);
        uart.write_reg(IBRD, (div64 >> 6) as u32);
        uart.write_reg(FBRD, (div64 & 0x3F) as u32);
        uart.write_reg(LCRH, LCRH_8N1_FIFO);
        uart.write_reg(CR, CR_ENABLE);
        Some(uart)
    }

    /// Bytes received with a framing, parity, break or overrun error so far.
    /// They are passed on anyway: the frame CRC catches the damage and the
    /// protocol resends.
    pub fn line_errors(&self) -> u32 {
        self.line_errors
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `base` is UART0's register block (only `take_uart0` makes
        // a `Pl011`), `offset` is one of the register constants above, and
        // the `Pl011` is the block's only owner.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write_reg(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read_reg`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    fn flags(&self) -> u32 {
        self.read_reg(FR)
    }
}

impl ErrorType for Pl011 {
    type Error = Infallible;
}

impl Read for Pl011 {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.flags() & FR_RXFE != 0 {
            core::hint::spin_loop();
        }
        let mut n = 0;
        while n < buf.len() && self.flags() & FR_RXFE == 0 {
            let word = self.read_reg(DR);
            if word & DR_ERRORS != 0 {
                self.line_errors = self.line_errors.wrapping_add(1);
            }
            buf[n] = word as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl ReadReady for Pl011 {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.flags() & FR_RXFE == 0)
    }
}

impl Write for Pl011 {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.flags() & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        let mut n = 0;
        while n < buf.len() && self.flags() & FR_TXFF == 0 {
            self.write_reg(DR, u32::from(buf[n]));
            n += 1;
        }
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        while self.flags() & FR_BUSY != 0 {
            core::hint::spin_loop();
        }
        Ok(())
    }
}
