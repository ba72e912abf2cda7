//! tus 1.0.0 resumable uploads on the HTTP face (docs/tus.md).
//!
//! ```text
//!   OPTIONS /tus/                   capabilities
//!   POST    /tus/                   creation.rs  a file: a one-file batch, or one more of an open one
//!   POST    /tus/batches            batches.rs   an open batch, for several files under one code
//!   GET     /tus/batches/{handle}   batches.rs   its files and their progress
//!   POST    /tus/batches/{handle}/close  batches.rs  closed: its code serves its files
//!   HEAD    /tus/{handle}/{index}   upload.rs    durable offset, length, code
//!   PATCH   /tus/{handle}/{index}   patch.rs     bytes at the durable offset
//!   DELETE  /tus/{handle}/{index}   upload.rs    termination
//! ```
//!
//! An upload is one file of one Pickup batch, created through the same
//! job as a wire `BatchOpen` (limits, quotas, name rules, owner). The
//! handle in its URL is the batch's resume token in lowercase hex: the
//! relay stores only its lookup key, and a handle is looked up through the
//! same failed-lookup limiter as a code. PATCH bodies go to the store a
//! chunk at a time on the blocking pool, hashed as they arrive, under the
//! batch's upload lease, so a wire resume and a second PATCH never
//! interleave with one in progress.

// Handlers return their refusal as the `Err` of a `Result<_, Response>`:
// one per request, on the way out, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, head, options, post};
use axum::Router;
use base64::Engine;
use pickup_proto::message::ResumeToken;
use pickup_proto::{ErrorCode, Sha1Digest};

use super::HttpState;
use crate::codes::token_key;
use crate::rate_limit::Peer;
use crate::relay::unix_secs;
use crate::store::{Batch, Lookup};

mod batches;
pub mod checksum;
mod creation;
pub mod metadata;
mod patch;
mod upload;

/// The protocol version spoken, and the only one accepted.
const VERSION: &str = "1.0.0";

/// The extensions offered.
const EXTENSIONS: &str = "creation,creation-with-upload,expiration,checksum,termination";

/// The SHA-1 a file is created with when the uploader declared none: no
/// content has it (finding a preimage of the zero digest is beyond
/// anyone), so completion takes the SHA-1 the relay computed instead of
/// checking against it, and the record then holds that one.
const UNDECLARED: Sha1Digest = Sha1Digest([0; 20]);

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const TUS_VERSION: HeaderName = HeaderName::from_static("tus-version");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const PICKUP_CODE: HeaderName = HeaderName::from_static("pickup-code");
const PICKUP_LINK: HeaderName = HeaderName::from_static("pickup-link");

/// The `Content-Type` of PATCH bodies.
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// The tus routes, merged into the HTTP face's router.
pub(super) fn router() -> Router<HttpState> {
    Router::new()
        .route("/tus/", post(creation::create).options(capabilities))
        .route("/tus", options(capabilities))
        .route("/tus/batches", post(batches::open))
        .route("/tus/batches/{handle}", get(batches::status))
        .route("/tus/batches/{handle}/close", post(batches::close))
        .route(
            "/tus/{handle}/{index}",
            head(upload::head)
                .patch(patch::patch)
                .delete(upload::terminate),
        )
        .route("/tus/{handle}/{index}/", delete(upload::terminate))
        .route_layer(axum::middleware::from_fn(resumable))
}

/// Refuses requests of another protocol version (412) and marks every
/// answer with the version.
async fn resumable(request: Request, next: Next) -> Response {
    let version_ok = request
        .headers()
        .get(&TUS_RESUMABLE)
        .is_some_and(|v| v.as_bytes() == VERSION.as_bytes());
    let mut response = if version_ok || request.method() == Method::OPTIONS {
        next.run(request).await
    } else {
        let mut r = text(
            StatusCode::PRECONDITION_FAILED,
            "Tus-Resumable: 1.0.0 is required",
        );
        r.headers_mut()
            .insert(TUS_VERSION, HeaderValue::from_static(VERSION));
        r
    };
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(VERSION));
    response
}

/// `OPTIONS /tus/`: what the relay offers.
async fn capabilities(axum::extract::State(state): axum::extract::State<HttpState>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(TUS_VERSION, HeaderValue::from_static(VERSION));
    h.insert(
        HeaderName::from_static("tus-extension"),
        HeaderValue::from_static(EXTENSIONS),
    );
    h.insert(
        HeaderName::from_static("tus-checksum-algorithm"),
        HeaderValue::from_static("sha1"),
    );
    h.insert(
        HeaderName::from_static("tus-max-size"),
        HeaderValue::from(state.relay.settings().max_file_size),
    );
    r
}

/// A plain-text answer (tus clients show the body of a refusal).
fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// A 500, logged; the answer says nothing of the cause.
fn internal(e: &dyn core::fmt::Display) -> Response {
    tracing::error!("tus request failed: {e}");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the relay failed; try again later",
    )
}

/// The answer to a refusal of the relay's limits, as the wire would give
/// `code`: 413 for what is too large for a limit or quota, 507 when the
/// relay's storage is full, 429 (with `Retry-After`) to try later.
fn refused(code: ErrorCode, retry_after_ms: u32) -> Response {
    let (status, what) = match code {
        ErrorCode::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the relay's limit",
        ),
        ErrorCode::TooManyFiles => (StatusCode::PAYLOAD_TOO_LARGE, "too many files"),
        ErrorCode::PeerQuota => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "over your share of the relay's storage",
        ),
        ErrorCode::Quota => (
            StatusCode::INSUFFICIENT_STORAGE,
            "the relay's storage is full",
        ),
        ErrorCode::RateLimited | ErrorCode::TooManyIncomplete | ErrorCode::Busy => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many uploads; try again later",
        ),
        _ => return internal(&format!("creation refused with {code:?}")),
    };
    let mut r = text(status, what);
    if retry_after_ms > 0 || status == StatusCode::TOO_MANY_REQUESTS {
        let secs = u64::from(retry_after_ms).div_ceil(1000).max(1);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// A handle as a resume token: 32 lowercase hex digits.
fn parse_handle(text: &str) -> Option<ResumeToken> {
    let digits = text.as_bytes();
    if digits.len() != 32
        || !digits
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut token = [0u8; 16];
    for (out, pair) in token.iter_mut().zip(digits.chunks_exact(2)) {
        let s = core::str::from_utf8(pair).ok()?;
        *out = u8::from_str_radix(s, 16).ok()?;
    }
    Some(ResumeToken(token))
}

/// A token as a handle.
fn handle_of(token: &ResumeToken) -> String {
    token.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// An upload found by its URL.
pub(super) struct Found {
    pub(super) token: ResumeToken,
    pub(super) batch: Batch,
    pub(super) index: usize,
}

/// The live batch and file index behind `/tus/{handle}/{index}`, looked
/// up through the failed-lookup limiter; or the refusal (404 unknown or
/// malformed, 410 expired, 429 limited, 500).
async fn find(
    state: &HttpState,
    addr: &SocketAddr,
    handle: &str,
    index: &str,
) -> Result<Found, Response> {
    // Malformed URLs find nothing: answered without a lookup.
    let Ok(index) = index.parse::<u16>() else {
        return Err(text(StatusCode::NOT_FOUND, "no such upload"));
    };
    let (token, batch) = find_batch(state, addr, handle).await?;
    if usize::from(index) >= batch.files.len() {
        return Err(text(StatusCode::NOT_FOUND, "no such upload"));
    }
    Ok(Found {
        token,
        batch,
        index: usize::from(index),
    })
}

/// The live batch behind a handle, as [`find`] looks it up.
async fn find_batch(
    state: &HttpState,
    addr: &SocketAddr,
    handle: &str,
) -> Result<(ResumeToken, Batch), Response> {
    let unknown = || text(StatusCode::NOT_FOUND, "no such upload");
    let Some(token) = parse_handle(handle) else {
        return Err(unknown());
    };
    let peer = Peer::for_tcp(addr.ip());
    let now = state.clock.now();
    if let Err(wait_ms) = state.relay.check_lookup(&peer, now) {
        return Err(refused(ErrorCode::RateLimited, wait_ms));
    }
    let relay = state.relay.clone();
    let found = tokio::task::spawn_blocking(move || {
        relay
            .store()
            .find_by_token(&token_key(&token), unix_secs(now))
    })
    .await;
    match found {
        Ok(Ok(Lookup::Live(batch))) => Ok((token, batch)),
        Ok(Ok(Lookup::Expired)) => {
            state.relay.failed_lookup(&peer, now);
            Err(text(StatusCode::GONE, "this upload has expired"))
        }
        Ok(Ok(Lookup::Unknown)) => {
            state.relay.failed_lookup(&peer, now);
            Err(unknown())
        }
        Ok(Err(e)) => Err(internal(&e)),
        Err(e) => Err(internal(&e)),
    }
}

/// Adds what every answer about an upload of `batch` carries: its expiry
/// and, once the batch is closed, its pickup code (an open batch's code
/// is revealed by its close).
fn describe(h: &mut HeaderMap, batch: &Batch) {
    if let Ok(v) = HeaderValue::from_str(&super::http_date(batch.expires_at)) {
        h.insert(UPLOAD_EXPIRES, v);
    }
    if batch.open {
        return;
    }
    let code = batch.code.to_string();
    if let (Ok(c), Ok(l)) = (
        HeaderValue::from_str(&code),
        HeaderValue::from_str(&format!("/c/{code}")),
    ) {
        h.insert(PICKUP_CODE, c);
        h.insert(PICKUP_LINK, l);
    }
}

/// `Upload-Metadata` as HEAD gives it back: the file's name.
fn metadata_of(name: &str) -> Option<HeaderValue> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(name.as_bytes());
    HeaderValue::from_str(&format!("filename {b64}")).ok()
}

/// A header's value as text; `None` if absent or not visible ASCII.
fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An `Upload-Offset` or `Upload-Length`: decimal digits only (no sign,
/// no space), within `u64`.
fn parse_length(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether the request's body is an upload (`Content-Type:
/// application/offset+octet-stream`, parameters ignored).
fn is_offset_stream(headers: &HeaderMap) -> bool {
    header_text(headers, &header::CONTENT_TYPE).is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
    })
}

/// The request body's declared length, if it has a valid one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_text(headers, &header::CONTENT_LENGTH).and_then(parse_length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_32_lowercase_hex_digits() {
        let t = ResumeToken([0xab; 16]);
        assert_eq!(parse_handle(&handle_of(&t)), Some(t));
        assert_eq!(parse_handle(&handle_of(&t).to_uppercase()), None);
        assert_eq!(parse_handle("ab"), None);
        assert_eq!(parse_handle(&"g".repeat(32)), None);
    }

    #[test]
    fn lengths_are_plain_decimal() {
        assert_eq!(parse_length("0"), Some(0));
        assert_eq!(parse_length("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1e3",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }
}
