//! The pickup side of the example: what a firmware writes to embed
//! `pickup-device`. Three things come from the application:
//!
//! - a [`Connector`] that lends out the byte link (here UART0, wrapped in
//!   [`Polled`] so reads return at once when the line is quiet);
//! - a [`Clock`](pickup_device::Clock) (here [`SysTickClock`]);
//! - storage: [`ReadAt`] for the files to upload (a slice of byte slices in
//!   flash implements it already) and a [`Sink`] for downloads (here one
//!   that hashes the bytes as they arrive and keeps none of them).

use core::convert::Infallible;

use cortex_m_semihosting::hprintln;
use pickup_device::link::{Connector, Polled, PolledError};
#[cfg(feature = "download")]
use pickup_device::Downloader;
#[cfg(feature = "upload")]
use pickup_device::Uploader;
use pickup_device::{Event, LinkEvent, RetransferPolicy, RunError};
#[cfg(feature = "download")]
use pickup_proto::download::{self, Sink};
#[cfg(feature = "download")]
use pickup_proto::hash::Sha1Hasher;
#[cfg(feature = "download")]
use pickup_proto::message::ManifestEntry;
#[cfg(feature = "download")]
use pickup_proto::storage::{ReadAt, WriteAt};
#[cfg(feature = "upload")]
use pickup_proto::upload::{self, FileMeta};
use pickup_proto::{frame, Code, Duration, Sha1Digest};

use crate::clock::SysTickClock;
use crate::data;
use crate::uart::Pl011;

/// Largest raw frame either way: the decoder buffer, and what the relay is
/// told it may send.
const FRAME: usize = 256;

/// The transmit buffer holds one encoded frame of `FRAME` raw bytes.
const TX: usize = frame::max_encoded_len(FRAME);

/// Files per batch this firmware handles.
const FILES: usize = 2;

/// The link to the relay is UART0, the same one after every loss: a serial
/// line has nothing to dial. The session's Hello after a reconnect is what
/// re-synchronises both ends.
pub struct UartConnector<'u> {
    uart: &'u mut Pl011,
}

impl<'u> UartConnector<'u> {
    /// Lends `uart` to the pickup drivers.
    pub fn new(uart: &'u mut Pl011) -> Self {
        UartConnector { uart }
    }
}

impl Connector for UartConnector<'_> {
    type IoError = PolledError<Infallible>;
    type Link<'a>
        = Polled<&'a mut Pl011>
    where
        Self: 'a;
    type ConnectError = Infallible;

    fn connect(&mut self) -> Result<Self::Link<'_>, Infallible> {
        Ok(Polled(&mut *self.uart))
    }
}

/// The files, in index order, as stored in flash.
fn files() -> [&'static [u8]; FILES] {
    [&data::PATTERN, &data::ONE_BYTE]
}

/// Retries for a link that may come up late (the relay opens the serial
/// port after the device boots): reconnect without limit on attempts, for
/// at most two minutes per outage.
fn policy() -> RetransferPolicy {
    RetransferPolicy {
        max_attempts: None,
        ..RetransferPolicy::default()
    }
}

/// Reports link trouble; the rest of the events only matter to a display.
fn log_link<E>(event: Event<E>) {
    match event {
        Event::Link(LinkEvent::Lost(_)) => hprintln!("link lost"),
        Event::Link(LinkEvent::Reconnecting { attempt, .. }) => {
            hprintln!("reconnecting (attempt {})", attempt)
        }
        _ => {}
    }
}

/// Prints the RAM the pickup objects take (they live on the stack, in
/// `upload` and `download` in turn).
#[cfg(feature = "paint-stack")]
pub fn memory_report() {
    use core::mem::size_of;
    #[cfg(feature = "upload")]
    hprintln!(
        "size_of: Uploader {} (session {})",
        size_of::<Uploader<'static, FILES, FRAME, TX>>(),
        size_of::<pickup_proto::upload::Session<'static, FILES>>(),
    );
    #[cfg(feature = "download")]
    hprintln!(
        "size_of: Downloader {} (session {}), HashSink {}",
        size_of::<Downloader<FILES, FRAME, TX>>(),
        size_of::<pickup_proto::download::Session<FILES>>(),
        size_of::<HashSink>()
    );
}

/// The code to download, from the semihosting command line (its last
/// word: QEMU's `-semihosting-config enable=on,arg=pickup-firmware,arg=CODE`).
/// What a download-only terminal gets from its user (a keypad, a QR code)
/// or from another device.
#[cfg(all(feature = "download", not(feature = "upload")))]
pub fn code_from_host() -> Option<Code> {
    let mut line = [0u8; 80];
    // SAFETY: GET_CMDLINE writes at most `line.len()` bytes, NUL-terminated,
    // into `line`, which outlives the call; the block is two words as the
    // semihosting specification asks.
    let failed = unsafe {
        cortex_m_semihosting::syscall(
            cortex_m_semihosting::nr::GET_CMDLINE,
            &[line.as_mut_ptr() as usize, line.len() - 1],
        )
    };
    if failed != 0 {
        return None;
    }
    let end = line.iter().position(|&b| b == 0)?;
    let text = core::str::from_utf8(&line[..end]).ok()?;
    Code::parse(text.split(' ').next_back()?).ok()
}

/// The code's display form (`8M80X-5J1X-XP84`) in `out`. `Code`'s own
/// `Display` does the same through `core::fmt`; this avoids its padding and
/// UTF-8 checks in flash.
#[cfg(feature = "upload")]
pub fn display<'b>(code: &Code, out: &'b mut [u8; Code::MAX_TEXT_LEN]) -> &'b str {
    let mut symbols = [0u8; Code::MAX_LEN];
    let symbols = code.write_symbols(&mut symbols).as_bytes();
    let mut n = 0;
    for (i, &symbol) in symbols.iter().enumerate() {
        if code.hyphen_before(i) {
            out[n] = b'-';
            n += 1;
        }
        out[n] = symbol;
        n += 1;
    }
    // Only ASCII symbols and hyphens were written.
    core::str::from_utf8(&out[..n]).unwrap_or("")
}

/// A session failure, reduced to what fits on a line without pulling every
/// error message of the protocol into flash: the relay's error numbers are
/// those of `pickup_proto::ErrorCode` (see PROTOCOL.md).
trait Failure {
    /// The relay's error code, if the relay refused.
    fn relay_code(&self) -> Option<u8>;
    /// The relay refused the terminal's credential, or has no accounts.
    fn auth_refused(&self) -> bool;
}

#[cfg(feature = "upload")]
impl Failure for upload::Error {
    fn relay_code(&self) -> Option<u8> {
        match *self {
            upload::Error::Relay(code) | upload::Error::Rejected { reason: code, .. } => {
                Some(code as u8)
            }
            _ => None,
        }
    }
    fn auth_refused(&self) -> bool {
        matches!(self, upload::Error::Auth(_))
    }
}

#[cfg(feature = "download")]
impl Failure for download::Error {
    fn relay_code(&self) -> Option<u8> {
        match *self {
            download::Error::Relay(code) => Some(code as u8),
            _ => None,
        }
    }
    fn auth_refused(&self) -> bool {
        matches!(self, download::Error::Auth(_))
    }
}

/// Prints why `what` failed. Generic only as far as sorting the failure:
/// the printing is one copy for every direction.
fn report<F: Failure, S>(what: &str, error: RunError<F, S>) {
    let (why, number) = match error {
        RunError::Session(f) => match f.relay_code() {
            Some(code) => ("relay error", Some(u32::from(code))),
            // Is the terminal registered with the key in `credential.rs`?
            // (`cfg!`: an image without `auth` keeps no text for it)
            None if cfg!(feature = "auth") && f.auth_refused() => ("authentication failed", None),
            None => ("session failed", None),
        },
        RunError::Storage(_) => ("storage failed", None),
        RunError::GaveUp { attempts, .. } => ("link lost, gave up; attempts", Some(attempts)),
    };
    print_failure(what, why, number);
}

#[inline(never)]
fn print_failure(what: &str, why: &str, number: Option<u32>) {
    match number {
        Some(n) => hprintln!("{}: {} {}", what, why, n),
        None => hprintln!("{}: {}", what, why),
    }
}

/// Uploads the batch; `None` after printing why it failed.
#[cfg(feature = "upload")]
#[inline(never)] // Its buffers share stack space with `download`'s.
pub fn upload(link: &mut UartConnector<'_>, clock: &SysTickClock) -> Option<Code> {
    let mut files = files();
    let mut meta = [FileMeta {
        name: "",
        size: 0,
        sha1: Sha1Digest::EMPTY,
    }; FILES];
    for ((m, name), bytes) in meta.iter_mut().zip(data::NAMES).zip(files) {
        *m = FileMeta {
            name,
            size: bytes.len() as u64,
            sha1: Sha1Digest::of(bytes),
        };
    }
    let config = upload::Config {
        max_frame: FRAME as u32,
        // A serial line is slow: give a lost frame time to be missed.
        retransmit_timeout: Duration::from_secs(3),
        max_window: 8 * 1024,
        ..upload::Config::default()
    };
    let mut uploader = match Uploader::<FILES, FRAME, TX>::new(config, &meta, policy()) {
        Ok(u) => u,
        Err(e) => {
            report(
                "upload refused locally",
                RunError::<_, Infallible>::Session(e),
            );
            return None;
        }
    };
    #[cfg(feature = "auth")]
    uploader.authenticate(crate::credential::terminal());
    match uploader.run(link, clock, &mut files, log_link) {
        Ok(code) => Some(code),
        Err(e) => {
            report("upload failed", e);
            None
        }
    }
}

/// Downloads the batch behind `code` and checks it against the files in
/// flash; `false` after printing what did not match.
#[cfg(feature = "download")]
#[inline(never)] // Its buffers share stack space with `upload`'s.
pub fn download(link: &mut UartConnector<'_>, clock: &SysTickClock, code: Code) -> bool {
    let config = download::Config {
        max_frame: FRAME as u32,
        // What the relay may send ahead of our acks; the UART's FIFO (and,
        // under QEMU, the pseudo-terminal) holds what we have not read yet.
        window: 4 * 1024,
        retransmit_timeout: Duration::from_secs(3),
        ..download::Config::default()
    };
    let mut downloader = Downloader::<FILES, FRAME, TX>::new(config, code, policy());
    #[cfg(feature = "auth")]
    downloader.authenticate(crate::credential::terminal());
    let mut sink = HashSink::new(Some(&data::NAMES));
    if let Err(e) = downloader.run(link, clock, &mut sink, log_link) {
        report("download failed", e);
        return false;
    }
    let mut ok = true;
    for (i, bytes) in files().iter().enumerate() {
        let got = &sink.files[i];
        if !got.finished
            || got.written != bytes.len() as u64
            || got.hasher.digest() != Sha1Digest::of(bytes)
        {
            hprintln!("file {} differs from the uploaded one", i);
            ok = false;
        }
    }
    ok
}

/// A download sink that hashes each file's bytes as they arrive and keeps
/// none of them: how a device checks a download bigger than its RAM, and the
/// shape of a sink that streams into a flash writer or a decoder.
#[cfg(feature = "download")]
struct HashSink {
    files: [Received; FILES],
    /// The names the batch must have (the uploaded files'), or any.
    names: Option<&'static [&'static str]>,
}

#[cfg(feature = "download")]
#[derive(Clone)]
struct Received {
    hasher: Sha1Hasher,
    /// Bytes written so far; the next write must start here.
    written: u64,
    finished: bool,
}

/// Why the sink refused a step; the session reports it as a storage error.
#[cfg(feature = "download")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinkError {
    /// A file index beyond [`FILES`].
    NoSuchFile,
    /// The manifest names a file differently from what was uploaded.
    WrongName,
    /// A write that does not continue the file where it stands.
    OutOfOrder,
    /// The sink keeps no bytes, so it has no prefix to read back.
    NothingStored,
}

#[cfg(feature = "download")]
impl HashSink {
    fn new(names: Option<&'static [&'static str]>) -> Self {
        let fresh = Received {
            hasher: Sha1Hasher::new(),
            written: 0,
            finished: false,
        };
        HashSink {
            files: [fresh.clone(), fresh],
            names,
        }
    }

    fn file(&mut self, file: u16) -> Result<&mut Received, SinkError> {
        self.files
            .get_mut(usize::from(file))
            .ok_or(SinkError::NoSuchFile)
    }
}

#[cfg(feature = "download")]
impl ReadAt for HashSink {
    type Error = SinkError;
    fn read_at(&mut self, _: u16, _: u64, _: &mut [u8]) -> Result<usize, SinkError> {
        // `open` always reports an empty local file, so the session never
        // re-hashes a prefix and never reads.
        Err(SinkError::NothingStored)
    }
}

#[cfg(feature = "download")]
impl WriteAt for HashSink {
    type Error = SinkError;
    fn write_at(&mut self, file: u16, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let f = self.file(file)?;
        if offset != f.written {
            return Err(SinkError::OutOfOrder);
        }
        f.hasher.update(data);
        f.written += data.len() as u64;
        Ok(())
    }
}

#[cfg(feature = "download")]
impl Sink for HashSink {
    fn open(&mut self, entry: &ManifestEntry<'_>) -> Result<u64, SinkError> {
        if let Some(names) = self.names {
            if names.get(usize::from(entry.index)) != Some(&entry.name) {
                return Err(SinkError::WrongName);
            }
        }
        // The session opens each file once and resumes it from its own
        // offset after a reconnect; nothing is kept locally, so report 0.
        *self.file(entry.index)? = Received {
            hasher: Sha1Hasher::new(),
            written: 0,
            finished: false,
        };
        Ok(0)
    }

    fn truncate(&mut self, file: u16) -> Result<(), SinkError> {
        let f = self.file(file)?;
        f.hasher = Sha1Hasher::new();
        f.written = 0;
        Ok(())
    }

    fn finish(&mut self, file: u16) -> Result<(), SinkError> {
        self.file(file)?.finished = true;
        Ok(())
    }
}

/// Waits five seconds for a batch pushed to this terminal (feature
/// `notices`), downloads it as this terminal into a [`HashSink`] (the
/// session checks every file's SHA-1; up to [`FILES`] files), and
/// confirms it, or refuses it if it cannot be received. A device that
/// keeps what it receives persists each settled id and hands them back
/// through `remember_settled` after a reboot; this example starts fresh.
/// A relay without notices ends this quietly.
#[cfg(feature = "notices")]
#[inline(never)] // Its buffers share stack space with the transfers'.
pub fn listen(link: &mut UartConnector<'_>, clock: &SysTickClock) -> bool {
    use pickup_device::{Clock, NoticeListener};
    use pickup_proto::message::RefuseReason;
    use pickup_proto::notice::ListenConfig;

    let config = ListenConfig {
        max_frame: FRAME as u32,
        retransmit_timeout: Duration::from_secs(3),
        ..ListenConfig::default()
    };
    let mut inbox =
        NoticeListener::<'_, 4, FRAME, TX>::new(config, crate::credential::identity(), policy());
    let deadline = Some(clock.now() + Duration::from_secs(5));
    let notice = match inbox.listen(link, clock, deadline, log_link) {
        Ok(Some(notice)) => notice,
        Ok(None) => {
            hprintln!("no notice");
            return true;
        }
        Err(_) => {
            hprintln!("listening failed");
            return false;
        }
    };
    // No number: formatting a u64 would link ~1 KiB of division.
    hprintln!("notice from {}", notice.sender.as_str());
    let received = receive_pushed(link, clock, notice.code);
    let verdict = if received {
        inbox.confirm(notice.id)
    } else {
        inbox.refuse(notice.id, RefuseReason::Declined)
    };
    let deadline = Some(clock.now() + Duration::from_secs(10));
    let settled =
        verdict.is_ok() && matches!(inbox.settle(link, clock, deadline, log_link), Ok(true));
    if received && settled {
        hprintln!("pushed batch verified, receipt settled");
    }
    received && settled
}

/// Downloads the pushed batch `code` as this terminal; whether every file
/// arrived and matched its SHA-1.
#[cfg(feature = "notices")]
#[inline(never)]
fn receive_pushed(link: &mut UartConnector<'_>, clock: &SysTickClock, code: Code) -> bool {
    let config = download::Config {
        max_frame: FRAME as u32,
        window: 4 * 1024,
        retransmit_timeout: Duration::from_secs(3),
        ..download::Config::default()
    };
    let mut downloader = Downloader::<FILES, FRAME, TX>::new(config, code, policy());
    // The relay counts only the target's own download towards the delivery.
    downloader.authenticate(crate::credential::terminal());
    let mut sink = HashSink::new(None);
    match downloader.run(link, clock, &mut sink, log_link) {
        // The session hashed every file and compared it with the
        // manifest's SHA-1 before it finished (`Hashing::InSession`).
        Ok(()) => true,
        Err(e) => {
            report("pushed batch failed", e);
            false
        }
    }
}
