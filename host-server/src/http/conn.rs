//! HTTP connections held to the relay's session limits.
//!
//! Each accepted connection takes a session slot ([`Relay`]'s
//! `open_session`, the same count and per-peer cap as a wire session),
//! so browsers and terminals share `max_sessions` and
//! `max_sessions_per_peer`, and with them the open-file budget the relay
//! planned at start. A connection over the limits, or during shutdown, is
//! closed at once. A connection that moves no byte either way for the
//! relay's `idle_timeout` is closed too: a client that opens connections
//! and sends nothing (or stops reading a download) cannot hold its slots.
//!
//! An HTTPS listener handshakes in a task per connection, holding the slot
//! and bounded by [`HANDSHAKE_TIMEOUT`], so a client that stalls its
//! handshake delays no one else's; finished connections are handed to the
//! HTTP server through a channel.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::metrics::{Bytes, OpenSession, Transport};
use crate::rate_limit::Peer;
use crate::relay::Relay;
use crate::transport::tls::HANDSHAKE_TIMEOUT;

/// HTTPS connections handshaken but not yet taken by the server: few, as
/// the server takes them as fast as they come.
const HANDSHAKEN_QUEUE: usize = 16;

/// A listener whose connections hold session slots: plain TCP, or TLS.
pub(super) enum Listener {
    /// HTTP: connections are served as accepted.
    Plain {
        /// The socket.
        inner: TcpListener,
        /// Whose slots the connections take.
        relay: Arc<Relay>,
    },
    /// HTTPS: [`handshakes`] accepts and handshakes; this end takes the
    /// results.
    Tls {
        /// Handshaken connections.
        ready: mpsc::Receiver<(Connection, SocketAddr)>,
    },
}

impl Listener {
    /// Serves `inner` as is, or with TLS under `tls` (then the handshakes
    /// run on tasks until the returned listener is dropped).
    pub(super) fn new(
        inner: TcpListener,
        relay: Arc<Relay>,
        tls: Option<Arc<ServerConfig>>,
    ) -> Listener {
        let Some(tls) = tls else {
            return Listener::Plain { inner, relay };
        };
        let (done, ready) = mpsc::channel(HANDSHAKEN_QUEUE);
        tokio::spawn(handshakes(inner, relay, TlsAcceptor::from(tls), done));
        Listener::Tls { ready }
    }
}

/// Accepts TLS connections on `listener` until `done` is closed: each takes
/// a slot, then handshakes on its own task within [`HANDSHAKE_TIMEOUT`].
async fn handshakes(
    listener: TcpListener,
    relay: Arc<Relay>,
    acceptor: TlsAcceptor,
    done: mpsc::Sender<(Connection, SocketAddr)>,
) {
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("HTTPS accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = done.closed() => return,
        };
        let Some(slot) = Slot::take(&relay, addr) else {
            continue;
        };
        let (acceptor, relay, done) = (acceptor.clone(), relay.clone(), done.clone());
        tokio::spawn(async move {
            let _ = io.set_nodelay(true);
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::info!(%addr, "HTTPS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(%addr, "HTTPS handshake timed out after {}s", HANDSHAKE_TIMEOUT.as_secs());
                    return;
                }
            };
            let connection = Connection::new(&relay, Stream::Tls(Box::new(stream)), slot);
            // The server is gone (shutdown): the connection closes unserved.
            let _ = done.send((connection, addr)).await;
        });
    }
}

/// The remote address of a connection, for handlers (`ConnectInfo`).
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerAddr(pub(super) SocketAddr);

/// Serves HTTP/1.1 on `io` with `router` until the client is done, the
/// connection idles out, or `shutdown` turns true (then the request in
/// progress is finished and the connection closed). At most
/// [`WRITE_BUFFER`](super::WRITE_BUFFER) bytes of response wait ahead of
/// the socket.
pub(super) async fn serve(
    io: Connection,
    addr: SocketAddr,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(PeerAddr(addr)));
        // A Router is always ready: no poll_ready needed before call.
        router.clone().call(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(super::WRITE_BUFFER)
        .timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return report(addr, result),
        _ = shutdown.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
    }
    report(addr, connection.await);
}

fn report(addr: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(%addr, "HTTP connection ended: {e}");
    }
}

impl Listener {
    /// The next connection that got a session slot (and, for HTTPS,
    /// finished its handshake).
    pub(super) async fn accept(&mut self) -> (Connection, SocketAddr) {
        let (inner, relay) = match self {
            Listener::Plain { inner, relay } => (inner, relay),
            Listener::Tls { ready } => match ready.recv().await {
                Some(accepted) => return accepted,
                // The handshake task only ends when this end is dropped.
                None => return std::future::pending().await,
            },
        };
        loop {
            let (io, addr) = match inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or memory: wait for some to be
                    // freed rather than spin (as axum's own listener does).
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Some(slot) = Slot::take(relay, addr) {
                return (Connection::new(relay, Stream::Plain(io), slot), addr);
            }
        }
    }
}

/// A session slot, given back when the connection is dropped.
struct Slot {
    relay: Arc<Relay>,
    peer: Peer,
}

impl Slot {
    /// A slot for a connection from `addr`, if the relay's limits allow.
    fn take(relay: &Arc<Relay>, addr: SocketAddr) -> Option<Slot> {
        let peer = Peer::for_tcp(addr.ip());
        match relay.open_session(&peer) {
            Ok(_) => Some(Slot {
                relay: relay.clone(),
                peer,
            }),
            Err(reason) => {
                tracing::info!(%addr, ?reason, "connection refused");
                None
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.relay.close_session(&self.peer);
    }
}

/// A connection's byte stream.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Calls `$f` on whichever stream `$s` (a `&mut Stream`) holds, pinned.
macro_rules! on_stream {
    ($s:expr, $io:ident => $f:expr) => {
        match $s {
            Stream::Plain(io) => {
                let $io = Pin::new(io);
                $f
            }
            Stream::Tls(io) => {
                let $io = Pin::new(io.as_mut());
                $f
            }
        }
    };
}

/// An accepted connection: its stream, its slot, and its idle deadline,
/// which any byte moved in either direction pushes back.
pub(super) struct Connection {
    io: Stream,
    /// HTTP's byte counters: request and response bytes, headers included.
    bytes: Bytes,
    _open: OpenSession,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl Connection {
    fn new(relay: &Relay, io: Stream, slot: Slot) -> Connection {
        let idle = Duration::from_millis(relay.settings().idle_timeout.as_millis());
        let metrics = relay.metrics();
        Connection {
            io,
            bytes: metrics.bytes(Transport::Http),
            _open: metrics.session_opened(Transport::Http),
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            _slot: slot,
        }
    }

    /// `ready` after a step of the stream: progress pushes the deadline
    /// back; waiting past it is an error that ends the connection.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        ready: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match ready {
            Poll::Ready(r) => {
                let next = Instant::now() + self.idle;
                self.deadline.as_mut().reset(next);
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "HTTP connection idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let ready = on_stream!(&mut this.io, io => io.poll_read(cx, buf));
        this.bytes
            .received(buf.filled().len().saturating_sub(before));
        this.watch(cx, ready)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let ready = on_stream!(&mut this.io, io => io.poll_write(cx, buf));
        if let Poll::Ready(Ok(n)) = ready {
            this.bytes.sent(n);
        }
        this.watch(cx, ready)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let ready = on_stream!(&mut this.io, io => io.poll_write_vectored(cx, bufs));
        if let Poll::Ready(Ok(n)) = ready {
            this.bytes.sent(n);
        }
        this.watch(cx, ready)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Stream::Plain(io) => io.is_write_vectored(),
            Stream::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let ready = on_stream!(&mut this.io, io => io.poll_flush(cx));
        this.watch(cx, ready)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(&mut self.get_mut().io, io => io.poll_shutdown(cx))
    }
}
