//! The HTTP face: a page per code, its files and the whole batch as one
//! ZIP, for people with a browser and no `pickup` CLI.
//!
//! ```text
//!   GET /c/{CODE}          page.rs   the batch: names, sizes, SHA-1, expiry, links
//!   GET /c/{CODE}/{INDEX}  files.rs  one file by position (0, 1, ...)
//!   GET /c/{CODE}/zip      zip.rs    every file in one stored ZIP, {CODE}.zip
//!   GET /c/{CODE}/{NAME}   files.rs  one file by its name, percent-decoded, matched exactly
//!                          range.rs  Range, If-Range, If-None-Match for both downloads
//!   GET /                  upload_page/  the browser upload page and its script and style
//! ```
//!
//! The last segment is read in that order: all digits is an index, `zip`
//! is the archive, anything else a name (so a file named `zip` or `7` is
//! reached by its index, as the page links every file). HEAD is answered
//! like GET without a body: the code is looked up, no content is read.
//! A code that is no code or finds nothing gets 404, an expired one 410,
//! a batch still uploading 409 (its page shows the progress), each with a
//! plain page of its own.
//!
//! HTTP is one more driver over the relay's services: every request that
//! names a code looks it up through the same failed-lookup rate limiter as
//! a `Fetch` on the wire (`Relay::check_lookup`, per peer IP address), so
//! a guess over HTTP spends the same budget, and a limited peer gets 429
//! with `Retry-After`. Store calls are synchronous and run on tokio's
//! blocking pool, a bounded chunk at a time, and a connection buffers at
//! most [`WRITE_BUFFER`] bytes of response ahead of its socket, so a
//! download holds about [`CHUNK`] + [`WRITE_BUFFER`] bytes of its file in
//! memory however large the file and however slowly it is read.
//!
//! Each connection holds a session slot while it lasts and is closed
//! after the relay's idle timeout without traffic (`conn`), so browsers
//! and terminals share one connection budget.
//!
//! Every response carries `Content-Security-Policy: default-src 'none';
//! style-src 'unsafe-inline'` (no script runs, nothing is loaded from
//! elsewhere; the upload page alone, whose script is its purpose, has
//! [`upload_page::PAGE_POLICY`]), `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer` (a code in the address never leaks to
//! another site).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use pickup_proto::Code;
use tokio::sync::watch;

use crate::metrics::Lookup as Looked;
use crate::rate_limit::Peer;
use crate::relay::{unix_secs, Relay};
use crate::store::{Batch, BlobId, Lookup, Store, StoreError};
use crate::transport::Clock;

mod conn;
mod files;
mod page;
pub mod range;
mod tus;
pub mod upload_page;
mod zip;

/// Bytes read from the store per step of a download. A connection holds
/// one chunk while its client is slow to read, so it stays small (a
/// thousand slow readers hold 1 GiB at 1 MiB, `tests/http_large.rs`); it
/// is under the length the store reads past the page cache.
pub const CHUNK: usize = 64 * 1024;

/// Most response bytes a connection queues ahead of its socket before it
/// stops reading the body (hyper's `max_buf_size`; its default, ~400 KiB,
/// made each slow reader of a large file cost about 500 KiB of relay
/// memory). Also the limit on a request's head.
pub const WRITE_BUFFER: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct HttpState {
    relay: Arc<Relay>,
    clock: Clock,
    crcs: Arc<zip::CrcCache>,
}

impl core::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HttpState").finish_non_exhaustive()
    }
}

impl HttpState {
    /// The state of the HTTP face of `relay`.
    pub fn new(relay: Arc<Relay>, clock: Clock) -> HttpState {
        HttpState {
            relay,
            clock,
            crcs: Arc::new(zip::CrcCache::default()),
        }
    }
}

/// The public routes: pages, files and ZIPs.
///
/// Operational routes (metrics, health) are another router, merged beside
/// this one where the listener is built (`router.merge(metrics::router())`)
/// or served on an address of their own.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/c/{code}", get(page_route))
        .route("/c/{code}/{*file}", get(file_route))
        .merge(tus::router())
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "Not found", "There is nothing here.") })
        .layer(axum::middleware::map_response(secure))
        .with_state(state)
}

/// Serves `router` on `listener`, with TLS under `tls` if given, until
/// `shutdown` turns true; each connection holds one of `relay`'s session
/// slots while it lasts, and is closed after the relay's idle timeout
/// without traffic.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    relay: Arc<Relay>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut listener = conn::Listener::new(listener, relay, tls);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        tokio::spawn(conn::serve(io, addr, router.clone(), shutdown.clone()));
    }
}

/// Adds the headers every response carries.
async fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn page_route(
    State(state): State<HttpState>,
    ConnectInfo(conn::PeerAddr(addr)): ConnectInfo<conn::PeerAddr>,
    Path(code): Path<String>,
) -> Response {
    match lookup(&state, &addr, &code).await {
        Ok(batch) => page::batch_page(&batch, unix_secs(state.clock.now())),
        Err(refusal) => refusal,
    }
}

async fn file_route(
    State(state): State<HttpState>,
    ConnectInfo(conn::PeerAddr(addr)): ConnectInfo<conn::PeerAddr>,
    Path((code, file)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let batch = match lookup(&state, &addr, &code).await {
        Ok(batch) => batch,
        Err(refusal) => return refusal,
    };
    if !batch.ready() {
        return page::not_ready(&batch);
    }
    // A GET of a file or the ZIP is a download; a HEAD (or a page, which
    // link previews fetch) is not.
    if method == Method::GET {
        state.relay.metrics().download_started();
    }
    if file == "zip" {
        return zip::download(&state, batch, &headers);
    }
    let index = if !file.is_empty() && file.bytes().all(|b| b.is_ascii_digit()) {
        file.parse::<usize>().ok()
    } else {
        batch.files.iter().position(|f| f.name == file)
    };
    match index.filter(|&i| i < batch.files.len()) {
        Some(i) => files::download(&state, &batch, i, &headers),
        None => plain(
            StatusCode::NOT_FOUND,
            "No such file",
            "This batch has no such file.",
        ),
    }
}

/// The live batch behind `text`, looked up as the wire protocol does; or
/// the response that refuses it (404 unknown or malformed, 410 expired,
/// 429 rate limited, 500 store failure).
async fn lookup(state: &HttpState, addr: &SocketAddr, text: &str) -> Result<Batch, Response> {
    let unknown = || {
        plain(
            StatusCode::NOT_FOUND,
            "Unknown code",
            "No batch has this code. Check it and try again.",
        )
    };
    // Text that is no code at all cannot find a batch: answered without a
    // lookup, so it costs the store nothing and the limiter nothing.
    let Ok(code) = Code::parse(text) else {
        return Err(unknown());
    };
    let peer = Peer::for_tcp(addr.ip());
    let now = state.clock.now();
    if let Err(wait_ms) = state.relay.check_lookup(&peer, now) {
        state.relay.metrics().lookup(Looked::RateLimited);
        let secs = u64::from(wait_ms).div_ceil(1000).max(1);
        let mut r = plain(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "Too many unknown codes were tried from your address. Wait a little and try again.",
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(r);
    }
    let relay = state.relay.clone();
    let now_secs = unix_secs(now);
    let found = tokio::task::spawn_blocking(move || {
        relay
            .store()
            .find_by_code(&crate::codes::code_key(&code), now_secs)
    })
    .await;
    match found {
        Ok(Ok(Lookup::Live(batch))) => {
            state.relay.metrics().lookup(Looked::Ok);
            Ok(batch)
        }
        Ok(Ok(Lookup::Expired)) => {
            state.relay.metrics().lookup(Looked::Expired);
            state.relay.failed_lookup(&peer, now);
            Err(plain(
                StatusCode::GONE,
                "Expired",
                "This code has expired; its files are gone.",
            ))
        }
        Ok(Ok(Lookup::Unknown)) => {
            state.relay.metrics().lookup(Looked::Unknown);
            state.relay.failed_lookup(&peer, now);
            Err(unknown())
        }
        Ok(Err(e)) => Err(internal(&e)),
        Err(e) => Err(internal(&e)),
    }
}

/// A 500, logged; the page says nothing of the cause.
fn internal(e: &dyn core::fmt::Display) -> Response {
    tracing::error!("HTTP request failed: {e}");
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error",
        "The relay failed to answer. Try again later.",
    )
}

/// A small page with a title and one sentence (both plain text).
fn plain(status: StatusCode, title: &str, text: &str) -> Response {
    let body = page::document(
        title,
        &format!(
            "<h1>{}</h1><p>{}</p>",
            page::escape(title),
            page::escape(text)
        ),
    );
    html(status, body)
}

/// An HTML response that no cache keeps (the address holds a secret code,
/// and a page's progress changes).
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `len` bytes of `blob` from `offset`, read from the store on the
/// blocking pool [`CHUNK`] at a time as the client takes them.
fn blob_body(store: Arc<Relay>, blob: BlobId, offset: u64, len: u64) -> Body {
    Body::from_stream(blob_chunks(store, blob, offset, len))
}

/// The chunks of [`blob_body`].
fn blob_chunks(
    relay: Arc<Relay>,
    blob: BlobId,
    offset: u64,
    len: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let end = offset.saturating_add(len);
    futures_util::stream::unfold(offset, move |at| {
        let relay = relay.clone();
        async move {
            if at >= end {
                return None;
            }
            let n = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
            let read =
                tokio::task::spawn_blocking(move || read_exact(relay.store(), blob, at, n)).await;
            Some(match read {
                Ok(Ok(bytes)) => (Ok(Bytes::from(bytes)), at + n as u64),
                // An error ends the body early: the client sees a short
                // download, never wrong bytes.
                Ok(Err(e)) => (Err(std::io::Error::other(e.to_string())), end),
                Err(e) => (Err(std::io::Error::other(e.to_string())), end),
            })
        }
    })
}

/// Exactly `n` bytes of `blob` from `offset`.
fn read_exact(
    store: &dyn Store,
    blob: BlobId,
    offset: u64,
    n: usize,
) -> Result<Vec<u8>, StoreError> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match store.read_blob(blob, offset + got as u64, &mut buf[got..])? {
            0 => return Err(StoreError::Corrupt(format!("blob {} is short", blob.0))),
            k => got += k,
        }
    }
    Ok(buf)
}

/// An HTTP date (`Fri, 04 Dec 2026 16:07:01 GMT`) of Unix seconds.
fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}
