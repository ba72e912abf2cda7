//! Example firmware: a Cortex-M3 terminal that uploads two files from flash
//! to a Pickup relay over UART0, prints the pickup code, downloads the batch
//! back by its code and checks every byte's SHA-1.
//!
//! ```text
//!   flash: PATTERN (48 KiB), ONE_BYTE      RAM: Uploader / Downloader (~2 KiB, on the stack)
//!        │                                       ▲
//!        ▼ ReadAt                                │ Sink (hash and discard)
//!   ┌──────────────────────────────────────────────────────┐
//!   │ pickup-device: Uploader::run / Downloader::run        │ ← SysTickClock (1 kHz)
//!   └──────────────────────────────────────────────────────┘
//!        │ Polled<&mut Pl011>   (embedded-io Read + Write)
//!        ▼
//!   UART0 (PL011) ══ QEMU -serial pty ══ pickup-relay serve --serial /dev/pts/N
//! ```
//!
//! Built with `--no-default-features --features upload` it only uploads and
//! prints the code; with `--no-default-features --features download` it only
//! downloads the code given on the semihosting command line and verifies it.
//! Built with `--features baseline` it keeps the hardware (UART, clock,
//! semihosting, the files in flash) and leaves pickup out, so that the size
//! difference between the two builds is pickup's share; see `README.md`.
#![no_std]
#![no_main]

mod clock;
#[cfg(all(feature = "auth", not(feature = "baseline")))]
mod credential;
mod data;
#[cfg(not(feature = "baseline"))]
mod transfer;
mod uart;

// The baseline links no pickup code but keeps the dependency, so that
// both builds resolve the same crates (nightly cargo warns otherwise).
#[cfg(feature = "baseline")]
use pickup_device as _;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

use crate::clock::SysTickClock;
use crate::uart::Pl011;

/// Core clock of the LM3S6965 as it comes out of reset (and as QEMU's
/// `lm3s6965evb` runs it): the 12 MHz main oscillator.
const CORE_HZ: u32 = 12_000_000;

/// UART0 line rate. QEMU ignores it; on a board it must match the relay's
/// `--baud`.
const BAUD: u32 = 115_200;

#[entry]
fn main() -> ! {
    let ok = match cortex_m::Peripherals::take() {
        Some(core) => {
            let clock = SysTickClock::start(core.SYST, CORE_HZ);
            match Pl011::take_uart0(CORE_HZ, BAUD) {
                Some(mut uart) => run(&clock, &mut uart),
                None => false,
            }
        }
        None => false,
    };
    #[cfg(feature = "paint-stack")]
    {
        #[cfg(not(feature = "baseline"))]
        transfer::memory_report();
        hprintln!("stack high-water mark: {} bytes", stack_high_water());
    }
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Without a debugger attached `exit` returns: park the core.
    loop {
        cortex_m::asm::wfi();
    }
}

/// Upload, print the code, download and verify; an image with one
/// direction does its half (the download-only one takes the code from the
/// semihosting command line).
#[cfg(not(feature = "baseline"))]
fn run(clock: &SysTickClock, uart: &mut Pl011) -> bool {
    let mut link = transfer::UartConnector::new(uart);
    #[cfg(feature = "upload")]
    let code = {
        let Some(code) = transfer::upload(&mut link, clock) else {
            return false;
        };
        let mut text = [0u8; pickup_proto::Code::MAX_TEXT_LEN];
        hprintln!("pickup code: {}", transfer::display(&code, &mut text));
        code
    };
    #[cfg(not(feature = "upload"))]
    let Some(code) = transfer::code_from_host() else {
        hprintln!("no pickup code on the semihosting command line");
        return false;
    };
    #[cfg(feature = "download")]
    let ok = transfer::download(&mut link, clock, code);
    #[cfg(feature = "download")]
    if ok {
        hprintln!("download verified");
    }
    #[cfg(not(feature = "download"))]
    let ok = {
        let _ = code;
        true
    };
    #[cfg(feature = "notices")]
    let ok = transfer::listen(&mut link, clock) && ok;
    hprintln!("uart line errors: {}", uart.line_errors());
    ok
}

#[cfg(not(any(feature = "baseline", feature = "upload", feature = "download")))]
compile_error!("build with `upload`, `download` (the default: both) or `baseline`");

/// The same hardware work without pickup: send both files raw over UART0 and
/// drain whatever arrives for 100 ms.
#[cfg(feature = "baseline")]
fn run(clock: &SysTickClock, uart: &mut Pl011) -> bool {
    use embedded_io::{Read, ReadReady, Write};

    let files: [&[u8]; 2] = [&data::PATTERN, &data::ONE_BYTE];
    for (name, bytes) in data::NAMES.iter().zip(files) {
        if uart.write_all(bytes).is_err() || uart.flush().is_err() {
            return false;
        }
        hprintln!("sent {} ({} bytes)", name, bytes.len());
    }
    let mut buf = [0u8; 64];
    let mut received = 0usize;
    let deadline = clock.millis() + 100;
    while clock.millis() < deadline {
        if uart.read_ready() == Ok(true) {
            received += uart.read(&mut buf).unwrap_or(0);
        }
    }
    links_what_any_firmware_does(&mut buf, received);
    hprintln!(
        "received {} bytes, {} line errors",
        received,
        uart.line_errors()
    );
    true
}

/// What any firmware links whether or not it uses pickup: the compiler's
/// `memcpy`, `memset` and `memcmp` on data only known at run time, and
/// `core::str::from_utf8`. The baseline calls them here (through
/// `black_box`, so they are not folded away) so that pickup's share counts
/// only what pickup adds.
#[cfg(feature = "baseline")]
fn links_what_any_firmware_does(buf: &mut [u8; 64], received: usize) {
    use core::hint::black_box;

    // Lengths and offsets the compiler cannot know: the built-ins for any
    // alignment (`__aeabi_memcpy`, `__aeabi_memclr`, `__aeabi_memset`).
    let n = black_box(received) % buf.len();
    let at = black_box(n / 2);
    let mut copy = [0u8; 64];
    copy[at..n].copy_from_slice(&buf[..n - at]); // memcpy
    buf[n..].fill(0); // memclr
    copy[n..].fill(black_box(0xa5)); // memset
    let same = black_box(&copy[..n]) == black_box(&buf[..n]); // memcmp (bcmp)
    let text = core::str::from_utf8(black_box(&buf[..n])).is_ok();
    black_box((same, text));
}

/// Bytes of stack ever used: the stack was painted with
/// `cortex_m_rt::STACK_PAINT_VALUE` before `main`; count from the bottom the
/// words that still hold it.
#[cfg(feature = "paint-stack")]
fn stack_high_water() -> usize {
    extern "C" {
        static _stack_end: u32;
        static _stack_start: u32;
    }
    let bottom = core::ptr::addr_of!(_stack_end) as usize;
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let mut p = bottom;
    // SAFETY: every word from `_stack_end` to `_stack_start` is RAM that
    // cortex-m-rt reserved for the stack; reading it has no side effects.
    while p < top
        && unsafe { core::ptr::read_volatile(p as *const u32) } == cortex_m_rt::STACK_PAINT_VALUE
    {
        p += 4;
    }
    top - p
}

/// Fails the run. It reports neither the panic's message nor its location on
/// purpose: either keeps every panic site's text (source paths, messages and
/// their formatting code) in flash, about 2 KiB here. Pickup does not panic
/// on input; to find a bug, set a breakpoint on `rust_begin_unwind`.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("panicked");
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
