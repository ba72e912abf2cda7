//! Serial ports: one thread per port, one device session at a time.
//!
//! A port that cannot be opened, or vanishes (a USB adapter unplugged, a
//! pseudo-terminal's other end closed), is reopened with exponential backoff
//! while the rest of the relay keeps running. When a session ends (the
//! device said goodbye, or went quiet past the idle timeout) the next bytes
//! start a new one on the same port.
//!
//! The session's jobs (writes, syncs, lookups; see [`crate::jobs`]) run on a
//! worker thread per port, so the port keeps being read while received
//! bytes are written and made durable; while one runs, reads wait at most
//! `JOB_POLL` so its result (an `Ack`, a `Grant`) goes out promptly. While
//! the session asks for no input the port is not read: the device's bytes
//! wait in the line's buffers.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pickup_proto::frame::Decoder;
use pickup_proto::Instant;
use serialport::{SerialPort, TTYPort};

use super::Clock;
use crate::config::SerialPortSpec;
use crate::jobs::{Job, JobDone};
use crate::metrics::{Bytes, OpenSession, Transport};
use crate::rate_limit::Peer;
use crate::relay::Relay;
use crate::session::{refusal, Session};
use crate::settings::Link;

/// How long a read waits before timers and the stop flag are checked.
const POLL: Duration = Duration::from_millis(50);
/// How long a read waits while a job runs.
const JOB_POLL: Duration = Duration::from_millis(1);
/// A device that accepts no bytes for this long is treated as gone.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// Bytes read per call.
const READ_CHUNK: usize = 64 * 1024;

/// Runs a port's session jobs on a thread of its own, one at a time.
struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<JobDone>,
    /// Jobs sent and not yet reported.
    in_flight: usize,
}

impl Worker {
    fn start(port: &str, relay: Arc<Relay>) -> std::io::Result<Worker> {
        let (jobs, todo) = mpsc::channel::<Job>();
        let (finished, done) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("jobs {port}"))
            .spawn(move || {
                // Ends when the port's loop drops `jobs`.
                for job in todo {
                    if finished.send(job.run(&relay)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Worker {
            jobs,
            done,
            in_flight: 0,
        })
    }

    /// Hands `session` the results of its jobs that are in (waiting up to
    /// `wait` for one), and the worker the jobs it gives out next.
    fn turn(&mut self, session: &mut Session, clock: &Clock, wait: Duration) {
        if self.in_flight > 0 {
            let done = if wait.is_zero() {
                self.done.try_recv().ok()
            } else {
                self.done.recv_timeout(wait).ok()
            };
            if let Some(done) = done {
                self.in_flight -= 1;
                session.handle_job_done(clock.now(), done);
                while let Ok(done) = self.done.try_recv() {
                    self.in_flight -= 1;
                    session.handle_job_done(clock.now(), done);
                }
            }
        }
        while let Some(job) = session.poll_job() {
            if self.jobs.send(job).is_err() {
                break;
            }
            self.in_flight += 1;
        }
    }

    /// Runs every job the session has left, so what it received is made
    /// durable before it goes.
    fn finish(&mut self, session: &mut Session, clock: &Clock) {
        for _ in 0..1_000_000 {
            self.turn(session, clock, POLL);
            if self.in_flight == 0 {
                break;
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

fn write_all(port: &mut TTYPort, mut bytes: &[u8], count: &Bytes) -> std::io::Result<()> {
    let started = std::time::Instant::now();
    while !bytes.is_empty() {
        match port.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                count.sent(n);
                bytes = &bytes[n..];
            }
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
    // Bytes read and not yet fed: the session asked for no input meanwhile.
    let mut unfed: Vec<u8> = Vec::new();
    let mut wbuf = Vec::new();
    let mut session: Option<Session> = None;
    // Counts `session` as open in the metrics while it is `Some`.
    let mut open: Option<OpenSession> = None;
    let count = relay.metrics().bytes(Transport::Serial);
    let mut worker = Worker::start(&spec.path, relay.clone())?;
    let mut stopping = false;
    let result = 'serve: loop {
        let now = clock.now();
        if let Some(s) = session.as_mut() {
            // A push to the terminal this session listens for: the loop
            // comes by at least every `POLL`, soon enough for a notice.
            if s.doorbell().rung() {
                s.handle_wake(now);
            }
            worker.turn(s, clock, Duration::ZERO);
            if stop.load(Ordering::Acquire) && !stopping {
                stopping = true;
                s.shutdown(now);
            }
            while s.wants_transmit() {
                wbuf.resize(s.transmit_buffer_len(), 0);
                let Some(n) = s.poll_transmit(&mut wbuf) else {
                    break;
                };
                if let Err(e) = write_all(&mut port, &wbuf[..n], &count) {
                    break 'serve Err(e);
                }
            }
            if s.is_closed() {
                // The device is done (goodbye or idle): its next bytes open a new session.
                session = None;
                open = None;
                decoder.reset();
                unfed.clear();
                continue;
            }
            if s.poll_timeout().is_some_and(|t| now >= t) {
                s.handle_timeout(now);
                continue;
            }
            if !s.wants_input() {
                worker.turn(s, clock, POLL);
                continue;
            }
            if !unfed.is_empty() {
                let rest = feed(s, &mut decoder, &unfed, now);
                unfed.drain(..unfed.len() - rest);
                continue;
            }
        } else if stop.load(Ordering::Acquire) {
            break Ok(());
        }
        let _ = port.set_timeout(if worker.in_flight > 0 { JOB_POLL } else { POLL });
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
            Err(e) => break Err(e),
        };
        count.received(n);
        let now = clock.now();
        let s = match session.as_mut() {
            Some(s) => s,
            None => match Session::new(relay.clone(), peer.clone(), link, now) {
                Ok(s) => {
                    open = Some(relay.metrics().session_opened(Transport::Serial));
                    session.insert(s)
                }
                Err(code) => {
                    let mut buf = [0u8; 64];
                    if let Some(n) = refusal(code, &mut buf) {
                        if let Err(e) = write_all(&mut port, &buf[..n], &count) {
                            break Err(e);
                        }
                    }
                    continue;
                }
            },
        };
        let rest = feed(s, &mut decoder, &rbuf[..n], now);
        unfed.extend_from_slice(&rbuf[n - rest..n]);
    };
    if let Some(s) = session.as_mut() {
        if result.is_err() {
            s.handle_disconnected(clock.now());
        }
        worker.finish(s, clock);
    }
    drop(open);
    result
}

/// Feeds `input` to the session while it asks for input; returns how many
/// bytes at the end it did not take.
fn feed(
    s: &mut Session,
    decoder: &mut Decoder<Box<[u8]>>,
    mut input: &[u8],
    now: Instant,
) -> usize {
    while s.wants_input() {
        match decoder.feed(&mut input) {
            Some(Ok(frame)) => s.handle_frame(now, frame),
            Some(Err(dropped)) => s.handle_dropped(now, dropped),
            None => break,
        }
    }
    input.len()
}
