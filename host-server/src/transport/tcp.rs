//! TCP: a tokio task per connection, each driving one [`Session`].
//!
//! Idle connections are cheap: a session holds no frame buffer until bytes
//! arrive. The read buffer is one per worker thread (bytes are fed to the
//! decoder before the next `await`), the 64 KiB decoder buffer exists only
//! while a frame is partly received, and the write buffer only while
//! something waits to be sent. Session work that may touch the disk (frames,
//! timers, reading blob bytes into data frames) runs in `block_in_place`, so
//! a slow disk never stalls the other connections of a worker.
//!
//! Syncs are deferred ([`Session::defer_syncs`]): the fsync and commit
//! behind each upload `Ack` run on the blocking pool while the connection
//! keeps reading, so a fast uploader's window stays open during the flush.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;

use pickup_proto::frame::Decoder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{block_in_place, JoinHandle};

use super::Clock;
use crate::rate_limit::Peer;
use crate::relay::Relay;
use crate::session::{refusal, Session};
use crate::settings::Link;

/// Bytes read per `read` call (one buffer per worker thread, not per
/// connection).
const READ_CHUNK: usize = 256 * 1024;
/// Encoded frames buffered before the connection waits for the socket.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Read calls per wake-up before pending writes get their turn.
const READS_PER_TURN: usize = 4;

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; READ_CHUNK]);
}

/// Accepts connections until `shutdown` turns true; each gets its own task.
pub async fn serve(
    listener: TcpListener,
    relay: Arc<Relay>,
    link: Link,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let task = connection(stream, addr, relay.clone(), link, clock, shutdown.clone());
                    tokio::spawn(task);
                }
                Err(e) => {
                    // Out of descriptors, usually: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

type FrameDecoder = Decoder<Box<[u8]>>;

/// Whether a second core can hash while the first receives.
fn spare_cores() -> bool {
    static SPARE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SPARE.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

enum ReadOutcome {
    /// Nothing more to read now.
    Drained,
    /// The peer closed the connection.
    Eof,
    Failed(std::io::Error),
}

/// Feeds bytes to the session through a decoder allocated on demand and
/// released between frames.
fn feed(
    session: &mut Session,
    decoder: &mut Option<FrameDecoder>,
    mut input: &[u8],
    clock: &Clock,
) {
    let now = clock.now();
    let max_frame = session.max_frame();
    let dec = decoder.get_or_insert_with(|| Decoder::new(vec![0u8; max_frame].into_boxed_slice()));
    while let Some(result) = dec.feed(&mut input) {
        match result {
            Ok(frame) => session.handle_frame(now, frame),
            Err(dropped) => session.handle_dropped(now, dropped),
        }
    }
    if !dec.in_frame() {
        *decoder = None;
    }
}

/// Reads and handles what has arrived, until the session has something to
/// say or its deferred sync has finished (so the `Ack` goes out at once).
fn read_burst(
    stream: &TcpStream,
    session: &mut Session,
    decoder: &mut Option<FrameDecoder>,
    clock: &Clock,
    syncing: &Option<JoinHandle<()>>,
) -> ReadOutcome {
    READ_BUF.with_borrow_mut(|buf| {
        for _ in 0..READS_PER_TURN {
            match stream.try_read(buf) {
                Ok(0) => return ReadOutcome::Eof,
                Ok(n) => feed(session, decoder, &buf[..n], clock),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return ReadOutcome::Failed(e),
            }
            if session.wants_transmit() || syncing.as_ref().is_some_and(JoinHandle::is_finished) {
                break;
            }
        }
        ReadOutcome::Drained
    })
}

/// Encodes frames into `wbuf` until it holds [`WRITE_HIGH_WATER`] bytes or
/// the session has nothing more to say.
fn fill(session: &mut Session, wbuf: &mut Vec<u8>) {
    while wbuf.len() < WRITE_HIGH_WATER && session.wants_transmit() {
        let start = wbuf.len();
        wbuf.resize(start + session.transmit_buffer_len(), 0);
        match session.poll_transmit(&mut wbuf[start..]) {
            Some(n) => wbuf.truncate(start + n),
            None => {
                wbuf.truncate(start);
                break;
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    relay: Arc<Relay>,
    link: Link,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let peer = Peer::for_tcp(addr.ip());
    let mut session = match Session::new(relay, peer, link, clock.now()) {
        Ok(s) => s,
        Err(code) => {
            tracing::info!(%addr, "connection refused: {code}");
            let mut buf = [0u8; 64];
            if let Some(n) = refusal(code, &mut buf) {
                let _ = stream.try_write(&buf[..n]);
            }
            return;
        }
    };
    session.defer_syncs();
    if spare_cores() {
        session.offload_hashing();
    }
    let id = session.id();
    tracing::debug!(session = id, %addr, "connected");
    // The deferred sync running on the blocking pool, if any.
    let mut syncing: Option<JoinHandle<()>> = None;
    let mut decoder: Option<FrameDecoder> = None;
    let mut wbuf: Vec<u8> = Vec::new();
    let mut written = 0usize;
    let mut stopping = *shutdown.borrow();
    if stopping {
        session.shutdown(clock.now());
    }
    loop {
        if syncing.as_ref().is_some_and(JoinHandle::is_finished) {
            // Acknowledge now rather than when `select!` gets to it.
            syncing = None;
            session.handle_synced(clock.now());
        }
        if syncing.is_none() {
            if let Some(job) = session.poll_sync() {
                syncing = Some(tokio::task::spawn_blocking(move || job.run()));
            }
        }
        if written == wbuf.len() {
            wbuf.clear();
            written = 0;
            if session.wants_transmit() {
                block_in_place(|| fill(&mut session, &mut wbuf));
            }
            if wbuf.is_empty() {
                if session.is_closed() {
                    break;
                }
                // Idle: give the buffer back.
                wbuf = Vec::new();
            }
        }
        let deadline = session
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(clock.deadline(t)));
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        tokio::select! {
            ready = stream.readable() => {
                if let Err(e) = ready {
                    tracing::debug!(session = id, "read readiness failed: {e}");
                    block_in_place(|| session.handle_disconnected(clock.now()));
                    break;
                }
                match block_in_place(|| read_burst(&stream, &mut session, &mut decoder, &clock, &syncing)) {
                    ReadOutcome::Drained => {}
                    ReadOutcome::Eof => {
                        tracing::debug!(session = id, "peer closed");
                        block_in_place(|| session.handle_disconnected(clock.now()));
                        break;
                    }
                    ReadOutcome::Failed(e) => {
                        tracing::debug!(session = id, "read failed: {e}");
                        block_in_place(|| session.handle_disconnected(clock.now()));
                        break;
                    }
                }
            }
            ready = stream.writable(), if written < wbuf.len() => {
                let result = match ready {
                    Ok(()) => stream.try_write(&wbuf[written..]),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => {
                        tracing::debug!(session = id, "write failed: {e}");
                        block_in_place(|| session.handle_disconnected(clock.now()));
                        break;
                    }
                }
            }
            _ = async {
                if let Some(job) = syncing.as_mut() {
                    let _ = job.await;
                }
            }, if syncing.is_some() => {
                syncing = None;
                session.handle_synced(clock.now());
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                block_in_place(|| session.handle_timeout(clock.now()));
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                block_in_place(|| session.shutdown(clock.now()));
            }
        }
    }
    tracing::debug!(session = id, "closed");
}
