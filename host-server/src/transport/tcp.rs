//! TCP: a tokio task per connection, each driving one [`Session`].
//!
//! The driving ([`drive`]) takes any tokio byte stream, so TLS
//! ([`super::tls`]) runs the same loop over its decrypted stream.
//!
//! Idle connections are cheap: a session holds no frame buffer until bytes
//! arrive. The read buffer is one per worker thread (bytes are fed to the
//! decoder before the next `await`), the 64 KiB decoder buffer exists only
//! while a frame is partly received, and the write buffer only while
//! something waits to be sent. A connection that streams length-prefixed
//! frames in large reads reads into buffers of its own instead
//! (`transport::rx`), so the session can keep its data frames' bytes where
//! they were read until they are written.
//!
//! The session's jobs (writes that hash what they write, syncs, lookups,
//! verdicts, blob reads; see [`crate::jobs`]) run on tokio's blocking pool,
//! as many at once as the session gives out (its ordered work, and a sync
//! beside it), while the connection keeps reading and writing: a slow disk
//! never stalls the other connections of a worker, and a fast uploader's
//! window stays open while its bytes are written and made durable. While
//! the session asks for no input the socket is not read, so a peer that
//! outpaces the disk waits in TCP's own flow control.

use std::cell::RefCell;
use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use pickup_proto::frame::{length_prefixed, Decoder, Framing};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::counted::Counted;
use super::rx::{self, Bulk};
use super::tx::{self, Outgoing};
use super::Clock;
use crate::jobs::JobDone;
use crate::metrics::Transport;
use crate::rate_limit::Peer;
use crate::relay::Relay;
use crate::session::{refusal, Session};
use crate::settings::Link;

/// Bytes read per `read` call (one buffer per worker thread, not per
/// connection).
const READ_CHUNK: usize = 256 * 1024;
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
                    let _ = stream.set_nodelay(true);
                    let task = drive(stream, addr, Transport::Tcp, relay.clone(), link, clock, shutdown.clone());
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

/// The decoder, allocated only while a frame is partly read; whether the
/// terminal's frames have turned length-prefixed (which outlives the
/// decoder); and the connection's own read buffers while frames stream in
/// ([`Bulk`]).
#[derive(Default)]
struct Inbound {
    decoder: Option<FrameDecoder>,
    prefixed: bool,
    bulk: Option<Bulk>,
}

enum ReadOutcome {
    /// Nothing more to read now, or the session wants no more for now.
    Drained,
    /// The peer closed the connection.
    Eof,
    Failed(std::io::Error),
}

/// Feeds bytes to the session, while it asks for input, through a decoder
/// allocated on demand and released between frames. Returns how many bytes
/// at the end it did not take.
///
/// Frames lie in `backing`, if given, which the session may keep slices
/// of. With `whole_only`, a length-prefixed frame that `input` does not
/// hold whole is not started: its bytes are left over, for a read to
/// complete in place.
fn feed(
    session: &mut Session,
    inbound: &mut Inbound,
    mut input: &[u8],
    backing: Option<&Bytes>,
    whole_only: bool,
    clock: &Clock,
) -> usize {
    let now = clock.now();
    let max_frame = session.max_frame();
    let dec = inbound
        .decoder
        .get_or_insert_with(|| Decoder::new(vec![0u8; max_frame].into_boxed_slice()));
    if inbound.prefixed {
        dec.set_framing(Framing::LengthPrefixed);
    } else if session.framing() == Framing::LengthPrefixed {
        // The Welcome that agreed on it is out: the terminal's frames turn
        // length-prefixed at its first marker (PROTOCOL.md §2.1).
        dec.switch_at_marker();
    }
    // How many bytes of `input` to offer: found once the decoder is
    // between frames, and good until `input` is used up.
    let mut offer = (!whole_only).then_some(input.len());
    while session.wants_input() {
        let prefixed = dec.framing() == Framing::LengthPrefixed && !dec.awaiting_marker();
        if offer.is_none() && (!prefixed || !dec.in_frame()) {
            offer = Some(if prefixed {
                length_prefixed::whole_frames(input, max_frame)
            } else {
                input.len()
            });
        }
        let mut part = &input[..offer.map_or(input.len(), |o| o.min(input.len()))];
        let offered = part.len();
        let found = dec.feed(&mut part);
        let used = offered - part.len();
        input = &input[used..];
        if let Some(o) = offer.as_mut() {
            *o -= used.min(*o);
        }
        match found {
            Some(Ok(frame)) => match backing {
                Some(b) => session.handle_frame_in(now, frame, b),
                None => session.handle_frame(now, frame),
            },
            Some(Err(dropped)) => session.handle_dropped(now, dropped),
            None => break,
        }
    }
    if dec.framing() == Framing::LengthPrefixed && !dec.awaiting_marker() {
        inbound.prefixed = true;
    }
    if !dec.in_frame() {
        inbound.decoder = None;
    }
    input.len()
}

/// Reads into the worker thread's buffer: one `poll_read`, as a future for
/// `select!`. Its bytes are in [`READ_BUF`] when it completes; they are
/// still there when the branch's handler runs, since nothing awaits in
/// between, and no other task can run on this thread meanwhile.
fn poll_read_buf<R: AsyncRead + Unpin>(
    reader: &mut R,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    READ_BUF.with_borrow_mut(|buf| {
        let mut read = ReadBuf::new(buf);
        match Pin::new(reader).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Reads once: into the connection's [`Bulk`] buffer while frames stream
/// in, else into the worker thread's buffer ([`poll_read_buf`]).
fn poll_read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    inbound: &mut Inbound,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    match inbound.bulk.as_mut() {
        Some(bulk) => bulk.poll_read(reader, cx),
        None => poll_read_buf(reader, cx),
    }
}

/// Handles the `first` bytes a read brought, then reads on while more has
/// arrived, until the session has something to say, asks for no more
/// input, or its job has finished (so its result goes out at once). Bytes
/// read and not taken are kept in `unfed`.
///
/// The reads after the first poll with a no-op waker: they only take what
/// is there already; the next `select!` poll registers the real waker.
fn read_burst<R: AsyncRead + Unpin>(
    reader: &mut R,
    first: usize,
    session: &mut Session,
    inbound: &mut Inbound,
    unfed: &mut Bytes,
    clock: &Clock,
    jobs: &Jobs,
) -> ReadOutcome {
    let mut cx = Context::from_waker(Waker::noop());
    let mut n = first;
    for turn in 0..READS_PER_TURN {
        if turn > 0 {
            match poll_read_into(reader, inbound, &mut cx) {
                Poll::Ready(Ok(read)) => n = read,
                Poll::Ready(Err(e)) if e.kind() == ErrorKind::Interrupted => continue,
                Poll::Ready(Err(e)) => return ReadOutcome::Failed(e),
                Poll::Pending => return ReadOutcome::Drained,
            }
        }
        if n == 0 {
            return ReadOutcome::Eof;
        }
        if inbound.bulk.is_some() {
            feed_bulk(session, inbound, unfed, n, clock);
        } else {
            feed_read(session, inbound, unfed, n, clock);
        }
        if !unfed.is_empty()
            || !session.wants_input()
            || session.wants_transmit()
            || jobs.any_finished()
        {
            break;
        }
    }
    ReadOutcome::Drained
}

/// Feeds the `n` bytes a read left in [`READ_BUF`]. A large read of a
/// length-prefixed stream switches the connection to a [`Bulk`] buffer,
/// which the frame it read in part then starts.
fn feed_read(
    session: &mut Session,
    inbound: &mut Inbound,
    unfed: &mut Bytes,
    n: usize,
    clock: &Clock,
) {
    READ_BUF.with_borrow(|buf| {
        let input = &buf[..n];
        let streaming = inbound.prefixed && n >= rx::BULK_ENTER;
        let rest = feed(session, inbound, input, None, streaming, clock);
        let tail = &input[n - rest..];
        if streaming && session.wants_input() && inbound.decoder.is_none() {
            inbound.bulk = Some(Bulk::starting_with(tail));
        } else if rest > 0 {
            *unfed = Bytes::copy_from_slice(tail);
        }
    });
}

/// Feeds the whole frames in the [`Bulk`] buffer, which a read of `n`
/// bytes just added to, as a buffer the session may keep slices of; the
/// incomplete frame at the end stays for the next read to complete. A
/// short read ends bulk reading: what was not fed moves to `unfed`.
fn feed_bulk(
    session: &mut Session,
    inbound: &mut Inbound,
    unfed: &mut Bytes,
    n: usize,
    clock: &Clock,
) {
    let Some(bulk) = inbound.bulk.as_mut() else {
        return;
    };
    // A decoder that holds part of a frame (a frame dropped for its
    // length is being skipped) takes what it needs of everything read.
    let len = match inbound.decoder {
        Some(_) => bulk.unread().len(),
        None => length_prefixed::whole_frames(bulk.unread(), session.max_frame()),
    };
    let chunk = bulk.take(len);
    let shared = bulk.shareable().then_some(&chunk);
    let rest = feed(session, inbound, &chunk, shared, true, clock);
    let Some(bulk) = inbound.bulk.as_mut() else {
        return;
    };
    if rest > 0 && session.wants_input() {
        // The decoder finished its frame, and the next is not whole.
        bulk.put_back(&chunk[len - rest..]);
    } else if rest > 0 {
        *unfed = chunk.slice(len - rest..);
    }
    if n < rx::BULK_LEAVE && unfed.is_empty() {
        *unfed = Bytes::copy_from_slice(bulk.unread());
        inbound.bulk = None;
    }
}

/// The session's running jobs (at most two: its ordered work, and a sync
/// beside it): their results are handed over as they come in, and the
/// next ones started.
struct Jobs {
    relay: Arc<Relay>,
    running: Vec<JoinHandle<JobDone>>,
}

impl Jobs {
    /// Starts every job the session gives out.
    fn start(&mut self, session: &mut Session) {
        while let Some(job) = session.poll_job() {
            let relay = self.relay.clone();
            self.running
                .push(tokio::task::spawn_blocking(move || job.run(&relay)));
        }
    }

    /// Whether a running job has finished.
    fn any_finished(&self) -> bool {
        self.running.iter().any(JoinHandle::is_finished)
    }

    /// Waits for the first running job to finish and hands its result over.
    /// `false` if a job died (a bug: its result will never come).
    async fn finish(&mut self, session: &mut Session, clock: &Clock) -> bool {
        if self.running.is_empty() {
            return true;
        }
        let (done, index) = {
            let first = std::future::poll_fn(|cx| {
                for (i, job) in self.running.iter_mut().enumerate() {
                    if let std::task::Poll::Ready(done) = std::pin::Pin::new(job).poll(cx) {
                        return std::task::Poll::Ready((done, i));
                    }
                }
                std::task::Poll::Pending
            });
            first.await
        };
        self.running.swap_remove(index);
        match done {
            Ok(done) => {
                session.handle_job_done(clock.now(), done);
                true
            }
            Err(e) => {
                tracing::error!(session = session.id(), "a session job died: {e}");
                false
            }
        }
    }

    /// Runs every job the session has left (after a disconnect, what it
    /// received is still made durable).
    async fn drain(&mut self, session: &mut Session, clock: &Clock) {
        for _ in 0..1_000_000 {
            self.start(session);
            if self.running.is_empty() || !self.finish(session, clock).await {
                return;
            }
        }
    }
}

/// Drives one session over `stream` (a TCP socket, or a TLS stream over
/// one) from the peer at `addr` until either side closes; its bytes and
/// the session count in the metrics of `transport`.
pub async fn drive<S: AsyncRead + AsyncWrite + Send + Unpin>(
    stream: S,
    addr: SocketAddr,
    transport: Transport,
    relay: Arc<Relay>,
    link: Link,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
) {
    let stream = Counted::new(stream, relay.metrics().bytes(transport));
    let (mut reader, mut writer): (ReadHalf<Counted<S>>, WriteHalf<Counted<S>>) =
        tokio::io::split(stream);
    let peer = Peer::for_tcp(addr.ip());
    let mut session = match Session::new(relay.clone(), peer, link, clock.now()) {
        Ok(s) => s,
        Err(code) => {
            tracing::info!(%addr, reason = ?code, "connection refused");
            let mut buf = [0u8; 64];
            if let Some(n) = refusal(code, &mut buf) {
                // One small frame: it fits the socket's buffer, and a peer
                // that does not read it must not hold the task.
                let bounded = std::time::Duration::from_secs(1);
                let send = async {
                    writer.write_all(&buf[..n]).await?;
                    writer.shutdown().await
                };
                let _ = tokio::time::timeout(bounded, send).await;
            }
            return;
        }
    };
    let id = session.id();
    // Rung when a push to the terminal this session listens for is stored.
    let bell = session.doorbell();
    // Open until the end of this function, its jobs drained.
    let _open = relay.metrics().session_opened(transport);
    tracing::debug!(session = id, %addr, "connected");
    let mut jobs = Jobs {
        relay,
        running: Vec::with_capacity(2),
    };
    let mut inbound = Inbound::default();
    // Bytes read that the session did not take yet (it asked for no input).
    let mut unfed = Bytes::new();
    let mut out = Outgoing::default();
    // Download payloads go from the read-ahead buffers to the socket in
    // vectored writes where the stream takes them whole (TCP, TLS).
    let split = writer.is_write_vectored();
    // Bytes handed to the stream may wait in it (TLS records), so a flush
    // follows the last write of a burst.
    let mut unflushed = false;
    let mut stopping = *shutdown.borrow();
    if stopping {
        session.shutdown(clock.now());
    }
    loop {
        if jobs.any_finished() {
            // Hand the result over now rather than when `select!` gets to it.
            if !jobs.finish(&mut session, &clock).await {
                break;
            }
        }
        jobs.start(&mut session);
        if !unfed.is_empty() && session.wants_input() {
            // Frames in `unfed` may be kept where they lie, unless the
            // connection's bulk buffers are already kept to their bound.
            let shared = inbound.bulk.as_mut().is_none_or(Bulk::shareable);
            let backing = shared.then_some(&unfed);
            let rest = feed(&mut session, &mut inbound, &unfed, backing, false, &clock);
            unfed = unfed.slice(unfed.len() - rest..);
            continue;
        }
        if out.is_empty() {
            if session.wants_transmit() {
                out.fill(&mut session, split);
            }
            if out.is_empty() && !unflushed {
                if session.is_closed() {
                    break;
                }
                // Idle: give the buffer back.
                out = Outgoing::default();
            }
        }
        let reading = unfed.is_empty() && session.wants_input();
        let deadline = session
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(clock.deadline(t)));
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        tokio::select! {
            read = std::future::poll_fn(|cx| poll_read_into(&mut reader, &mut inbound, cx)), if reading => {
                let outcome = match read {
                    Ok(n) => read_burst(&mut reader, n, &mut session, &mut inbound, &mut unfed, &clock, &jobs),
                    Err(e) if e.kind() == ErrorKind::Interrupted => ReadOutcome::Drained,
                    Err(e) => ReadOutcome::Failed(e),
                };
                match outcome {
                    ReadOutcome::Drained => {}
                    ReadOutcome::Eof => {
                        tracing::debug!(session = id, "peer closed");
                        session.handle_disconnected(clock.now());
                        break;
                    }
                    ReadOutcome::Failed(e) => {
                        tracing::debug!(session = id, "read failed: {e}");
                        session.handle_disconnected(clock.now());
                        break;
                    }
                }
            }
            written = tx::write_or_flush(&mut writer, &out), if !out.is_empty() || unflushed => {
                match written {
                    Ok(0) if !out.is_empty() => {
                        tracing::debug!(session = id, "write failed: the stream takes no more bytes");
                        session.handle_disconnected(clock.now());
                        break;
                    }
                    Ok(n) => {
                        out.advance(n);
                        unflushed = n > 0;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!(session = id, "write failed: {e}");
                        session.handle_disconnected(clock.now());
                        break;
                    }
                }
            }
            alive = jobs.finish(&mut session, &clock), if !jobs.running.is_empty() => {
                if !alive {
                    break;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                session.handle_timeout(clock.now());
            }
            () = bell.wait() => {
                if bell.rung() {
                    session.handle_wake(clock.now());
                }
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                session.shutdown(clock.now());
            }
        }
    }
    // What was received is made durable even though the peer is gone.
    jobs.drain(&mut session, &clock).await;
    // A clean end for TLS (close_notify); bounded, the peer may be gone.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writer.shutdown()).await;
    tracing::debug!(session = id, "closed");
}

#[cfg(test)]
mod bulk_tests;
