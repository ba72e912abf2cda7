//! Serial links made of pseudo-terminal pairs, and byte counting on them.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};

/// One end of a fresh pseudo-terminal pair, and the path of the other end
/// (closed, for another process to open).
pub fn pty() -> io::Result<(TTYPort, String)> {
    let (mut master, slave) = TTYPort::pair().map_err(io::Error::other)?;
    let path = slave
        .name()
        .ok_or_else(|| io::Error::other("pty without a name"))?;
    // The slave is opened exclusively; close it so the relay (or lrzsz) can
    // open it by path. The master keeps the pair alive.
    drop(slave);
    master
        .set_timeout(Duration::from_millis(20))
        .map_err(io::Error::other)?;
    Ok((master, path))
}

/// A link that counts the bytes that cross it in each direction.
pub struct Counted<L> {
    /// The link.
    pub inner: L,
    /// Bytes written.
    pub written: u64,
    /// Bytes read.
    pub read: u64,
}

impl<L: Read> Read for Counted<L> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// How long a write may keep timing out before the link counts as lost
/// (the CLI's serial links wait as long).
const WRITE_PATIENCE: Duration = Duration::from_secs(30);

impl<L: Write> Write for Counted<L> {
    /// A write that times out is retried, as the CLI's links do: a port
    /// whose reader is busy for a moment (a full pseudo-terminal buffer) is
    /// not a lost link.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let started = Instant::now();
        let n = loop {
            match self.inner.write(buf) {
                Err(e) if is_timeout(&e) && started.elapsed() < WRITE_PATIENCE => {}
                other => break other?,
            }
        };
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The result of one ZMODEM transfer.
pub struct Zmodem {
    /// Bytes on the wire, both directions.
    pub wire_bytes: u64,
    /// Wall time of the transfer.
    pub elapsed: Duration,
}

fn open_tty(path: &str) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Copies `from` to `to` until `stop`, counting bytes. A write that times
/// out (the reader is slow) is retried, never dropped: a lost byte would
/// make ZMODEM wait for its own timeouts and measure the harness.
fn forward(mut from: TTYPort, mut to: TTYPort, count: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(1)),
            Ok(n) => {
                let mut rest = &buf[..n];
                while !rest.is_empty() && !stop.load(Ordering::Relaxed) {
                    match to.write(rest) {
                        Ok(k) => rest = &rest[k..],
                        Err(e) if is_timeout(&e) => {}
                        // EIO when the other side's process has exited.
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if is_timeout(&e) => {}
            // EIO when the other side's process has exited: wait for stop.
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Sends `file` with `sz` to `rz` over two pty pairs joined by a counting
/// forwarder; `None` when lrzsz is not installed.
pub fn zmodem(file: &Path, out_dir: &Path) -> io::Result<Option<Zmodem>> {
    if Command::new("sz").arg("--version").output().is_err() {
        return Ok(None);
    }
    let (master_a, path_a) = pty()?;
    let (master_b, path_b) = pty()?;
    let a = open_tty(&path_a)?;
    let b = open_tty(&path_b)?;
    // Held open until the end: when a program exits and its terminal's last
    // descriptor closes, Linux may drop its last unread output (ZMODEM's
    // closing "OO") from the pseudo-terminal, and the other side would wait
    // out its timeouts, measuring the harness instead of the protocol.
    let _hold = (a.try_clone()?, b.try_clone()?);
    let stop = Arc::new(AtomicBool::new(false));
    let ab = Arc::new(AtomicU64::new(0));
    let ba = Arc::new(AtomicU64::new(0));
    let fa = {
        let (from, to) = (
            master_a.try_clone_native().map_err(io::Error::other)?,
            master_b.try_clone_native().map_err(io::Error::other)?,
        );
        let (count, stop) = (ab.clone(), stop.clone());
        std::thread::spawn(move || forward(from, to, count, stop))
    };
    let fb = {
        let (count, stop) = (ba.clone(), stop.clone());
        std::thread::spawn(move || forward(master_b, master_a, count, stop))
    };
    let start = Instant::now();
    let mut rz = Command::new("rz")
        .args(["-b", "-y", "-q"])
        .current_dir(out_dir)
        .stdin(Stdio::from(b.try_clone()?))
        .stdout(Stdio::from(b))
        .stderr(Stdio::null())
        .spawn()?;
    let mut sz = Command::new("sz")
        .args(["-b", "-q"])
        .arg(file)
        .stdin(Stdio::from(a.try_clone()?))
        .stdout(Stdio::from(a))
        .stderr(Stdio::null())
        .spawn()?;
    // The transfer is over when `sz` exits: it does so only after `rz` has
    // closed the file and answered ZFIN. `rz` then waits for sz's "OO";
    // lrzsz flushes its input before each ZFIN it sends, so on a link with
    // any latency that "OO" is regularly thrown away and `rz` waits out
    // three 10 s timeouts. That wait is teardown, not transfer: give `rz` a
    // moment, then end it; the received file is compared byte for byte.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut sz_done = None;
    let mut sz_at = None;
    let mut rz_done = None;
    while sz_done.is_none() || rz_done.is_none() {
        if sz_done.is_none() {
            sz_done = sz.try_wait()?;
            if sz_done.is_some() {
                sz_at = Some(start.elapsed());
            }
        }
        if rz_done.is_none() {
            rz_done = rz.try_wait()?;
        }
        let teardown_over = sz_at.is_some_and(|t| start.elapsed() > t + Duration::from_secs(1));
        if rz_done.is_none() && teardown_over {
            let _ = rz.kill();
            rz_done = Some(rz.wait()?);
            break;
        }
        if Instant::now() > deadline {
            let _ = sz.kill();
            let _ = rz.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = sz_at.unwrap_or_else(|| start.elapsed());
    stop.store(true, Ordering::Relaxed);
    let _ = fa.join();
    let _ = fb.join();
    if !sz_done.is_some_and(|s| s.success()) || rz_done.is_none() {
        return Err(io::Error::other("lrzsz transfer failed or timed out"));
    }
    Ok(Some(Zmodem {
        wire_bytes: ab.load(Ordering::Relaxed) + ba.load(Ordering::Relaxed),
        elapsed,
    }))
}
