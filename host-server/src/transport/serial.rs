//! Serial ports: one thread per port, one device session at a time.
//!
//! A port that cannot be opened, or vanishes (a USB adapter unplugged, a
//! pseudo-terminal's other end closed), is reopened with exponential backoff
//! while the rest of the relay keeps running. When a session ends (the
//! device said goodbye, or went quiet past the idle timeout) the next bytes
//! start a new one on the same port.
//!
//! Syncs are deferred ([`Session::defer_syncs`]) to a helper thread per
//! port, so the port keeps being read while an acknowledged window is made
//! durable; while one runs, reads wait at most `SYNC_POLL` so its `Ack`
//! goes out promptly.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pickup_proto::frame::Decoder;
use serialport::{SerialPort, TTYPort};

use super::Clock;
use crate::config::SerialPortSpec;
use crate::rate_limit::Peer;
use crate::relay::Relay;
use crate::session::{refusal, Session, SyncJob};
use crate::settings::Link;

/// How long a read waits before timers and the stop flag are checked.
const POLL: Duration = Duration::from_millis(50);
/// How long a read waits while a deferred sync runs.
const SYNC_POLL: Duration = Duration::from_millis(1);
/// A device that accepts no bytes for this long is treated as gone.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// Bytes read per call.
const READ_CHUNK: usize = 64 * 1024;

/// Runs a port's deferred syncs on a thread of its own, one at a time.
struct Syncer {
    jobs: mpsc::Sender<SyncJob>,
    done: mpsc::Receiver<()>,
    in_flight: bool,
}

impl Syncer {
    fn start(port: &str) -> std::io::Result<Syncer> {
        let (jobs, todo) = mpsc::channel::<SyncJob>();
        let (finished, done) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("sync {port}"))
            .spawn(move || {
                // Ends when the port's loop drops `jobs`.
                for job in todo {
                    job.run();
                    if finished.send(()).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Syncer {
            jobs,
            done,
            in_flight: false,
        })
    }

    /// Reports a finished job to `session`, and hands it the next one.
    fn turn(&mut self, session: &mut Session, clock: &Clock) {
        if self.in_flight && self.done.try_recv().is_ok() {
            self.in_flight = false;
            session.handle_synced(clock.now());
        }
        if !self.in_flight {
            if let Some(job) = session.poll_sync() {
                // If the thread is gone the session runs the job itself
                // when it next needs it.
                self.in_flight = self.jobs.send(job).is_ok();
            }
        }
    }
}

/// Reopen backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First wait.
    pub min: Duration,
    /// Longest wait.
    pub max: Duration,
}

/// Starts serving `spec` on its own thread until `stop` is set.
pub fn spawn(
    spec: SerialPortSpec,
    relay: Arc<Relay>,
    link: Link,
    clock: Clock,
    backoff: Backoff,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("serial {}", spec.path))
        .spawn(move || run(&spec, &relay, link, &clock, backoff, &stop))
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::Acquire) {
        let d = left.min(step);
        std::thread::sleep(d);
        left -= d;
    }
}

fn run(
    spec: &SerialPortSpec,
    relay: &Arc<Relay>,
    link: Link,
    clock: &Clock,
    backoff: Backoff,
    stop: &AtomicBool,
) {
    let mut wait = backoff.min;
    let mut reported = false;
    while !stop.load(Ordering::Acquire) {
        match serialport::new(&spec.path, spec.baud)
            .timeout(POLL)
            .open_native()
        {
            Ok(port) => {
                tracing::info!(port = %spec.path, baud = spec.baud, "serial port open");
                wait = backoff.min;
                reported = false;
                match serve_port(port, spec, relay, link, clock, stop) {
                    Ok(()) => break,
                    Err(e) => tracing::warn!(port = %spec.path, "serial port lost: {e}; reopening"),
                }
            }
            Err(e) => {
                // Say it once per outage, not once per attempt.
                if !reported {
                    tracing::warn!(port = %spec.path, "cannot open serial port: {e}; retrying");
                    reported = true;
                }
            }
        }
        sleep_unless_stopped(wait, stop);
        wait = (wait * 2).min(backoff.max);
    }
    tracing::info!(port = %spec.path, "serial port closed");
}

fn write_all(port: &mut TTYPort, mut bytes: &[u8]) -> std::io::Result<()> {
    let started = std::time::Instant::now();
    while !bytes.is_empty() {
        match port.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                if started.elapsed() > WRITE_STALL {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Serves one open port until it fails (`Err`) or the relay stops (`Ok`).
fn serve_port(
    mut port: TTYPort,
    spec: &SerialPortSpec,
    relay: &Arc<Relay>,
    link: Link,
    clock: &Clock,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let peer = Peer::Serial(spec.path.as_str().into());
    let mut decoder = Decoder::new(vec![0u8; link.max_frame()].into_boxed_slice());
    let mut rbuf = vec![0u8; READ_CHUNK];
    let mut wbuf = Vec::new();
    let mut session: Option<Session> = None;
    let mut syncer = Syncer::start(&spec.path)?;
    let mut stopping = false;
    loop {
        let now = clock.now();
        if let Some(s) = session.as_mut() {
            syncer.turn(s, clock);
            if stop.load(Ordering::Acquire) && !stopping {
                stopping = true;
                s.shutdown(now);
            }
            while s.wants_transmit() {
                wbuf.resize(s.transmit_buffer_len(), 0);
                let Some(n) = s.poll_transmit(&mut wbuf) else {
                    break;
                };
                if let Err(e) = write_all(&mut port, &wbuf[..n]) {
                    s.handle_disconnected(clock.now());
                    return Err(e);
                }
            }
            if s.is_closed() {
                // The device is done (goodbye or idle): its next bytes open a new session.
                session = None;
                if syncer.in_flight {
                    // The session finished its job before closing; take the
                    // thread's report so the next session starts clean.
                    let _ = syncer.done.recv();
                    syncer.in_flight = false;
                }
                decoder.reset();
                continue;
            }
            if s.poll_timeout().is_some_and(|t| now >= t) {
                s.handle_timeout(now);
                continue;
            }
        } else if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let _ = port.set_timeout(if syncer.in_flight { SYNC_POLL } else { POLL });
        let n = match port.read(&mut rbuf) {
            Ok(0) => Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::TimedOut | ErrorKind::Interrupted | ErrorKind::WouldBlock
                ) =>
            {
                continue
            }
            Err(e) => Err(e),
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                if let Some(s) = session.as_mut() {
                    s.handle_disconnected(clock.now());
                }
                return Err(e);
            }
        };
        let now = clock.now();
        let s = match session.as_mut() {
            Some(s) => s,
            None => match Session::new(relay.clone(), peer.clone(), link, now) {
                Ok(mut s) => {
                    s.defer_syncs();
                    session.insert(s)
                }
                Err(code) => {
                    let mut buf = [0u8; 64];
                    if let Some(n) = refusal(code, &mut buf) {
                        write_all(&mut port, &buf[..n])?;
                    }
                    continue;
                }
            },
        };
        let mut input = &rbuf[..n];
        while let Some(result) = decoder.feed(&mut input) {
            match result {
                Ok(frame) => s.handle_frame(now, frame),
                Err(dropped) => s.handle_dropped(now, dropped),
            }
        }
    }
}
