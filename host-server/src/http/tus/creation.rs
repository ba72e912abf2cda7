//! `POST /tus/`: a one-file batch under a fresh code and handle, through
//! the same job, limits and name rules as a wire announcement; a body
//! (creation-with-upload) is its first PATCH.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use pickup_proto::message::AuthToken;
use pickup_proto::{ErrorCode, Sha1Digest};

use super::super::{conn, HttpState};
use super::metadata::{self, parse_sha1};
use super::patch::{self, Patch};
use super::{
    content_length, describe, handle_of, header_text, internal, is_offset_stream, parse_length,
    refused, text, Found, UNDECLARED, UPLOAD_LENGTH, UPLOAD_METADATA, UPLOAD_OFFSET,
};
use crate::jobs::{self, Announced, CreateBatch};
use crate::quota::Owner;
use crate::rate_limit::Peer;
use crate::relay::{lock, unix_secs};

/// The limiter account of token guesses, as the wire's `Authenticate`
/// uses: a token names no account.
const TOKEN_ACCOUNT: &str = "";

/// What a creation asks for, read from its headers.
pub(super) struct Wanted {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha1: Option<Sha1Digest>,
    /// The open batch to add the file to (`batch` metadata), if any.
    pub(super) batch: Option<String>,
}

pub(super) async fn create(
    State(state): State<HttpState>,
    ConnectInfo(conn::PeerAddr(addr)): ConnectInfo<conn::PeerAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let wanted = match read_headers(&state, &headers) {
        Ok(w) => w,
        Err(refusal) => return refusal,
    };
    let user = match login(&state, &addr, &headers).await {
        Ok(user) => user,
        Err(refusal) => return refusal,
    };
    let found = match wanted.batch.clone() {
        Some(handle) => match super::batches::add(&state, &addr, &handle, wanted).await {
            Ok(found) => found,
            Err(refusal) => return refusal,
        },
        None => match create_single(&state, &addr, wanted, user).await {
            Ok(found) => found,
            Err(refusal) => return refusal,
        },
    };
    let location = format!("/tus/{}/{}", handle_of(&found.token), found.index);
    created(&state, &addr, &headers, body, found, location).await
}

/// A batch of the one file `wanted`, closed from the start.
async fn create_single(
    state: &HttpState,
    addr: &SocketAddr,
    wanted: Wanted,
    user: Option<String>,
) -> Result<Found, Response> {
    let now = state.clock.now();
    let size = wanted.size;
    let work = CreateBatch {
        files: vec![Announced {
            name: wanted.name,
            size: wanted.size,
            sha1: wanted.sha1.unwrap_or(if wanted.size == 0 {
                // An empty file is complete at once, as on the wire.
                Sha1Digest::EMPTY
            } else {
                UNDECLARED
            }),
            attrs: None,
        }],
        total: wanted.size,
        owner: Owner::Peer(Peer::for_tcp(addr.ip())),
        now,
        family: user.as_deref().map(crate::codes::user_owner),
        join: None,
        named: None,
        open: false,
    };
    let relay = state.relay.clone();
    let created = match tokio::task::spawn_blocking(move || jobs::create_batch(&relay, work)).await
    {
        Ok(Ok(created)) => created,
        Ok(Err(r)) => return Err(refused(r.code, r.retry_after_ms)),
        Err(e) => return Err(internal(&e)),
    };
    state.relay.metrics().upload_started();
    tracing::info!(peer = %addr.ip(), batch = created.batch.id.0, bytes = size, "tus upload created");
    Ok(Found {
        token: created.token,
        batch: created.batch,
        index: 0,
    })
}

/// Answers a creation whose upload is `found`, taking its body as the
/// first PATCH if it has one.
async fn created(
    state: &HttpState,
    addr: &SocketAddr,
    headers: &HeaderMap,
    body: Body,
    found: Found,
    location: String,
) -> Response {
    let mut offset = None;
    let batch = found.batch.clone();
    if is_offset_stream(headers) {
        // creation-with-upload: the body is a PATCH at offset 0. Whatever
        // it ends in, the upload exists: the answer is 201 with the
        // offset that is durable, and the client goes on from there.
        let p = Patch {
            offset: 0,
            content_length: content_length(headers),
            checksum: None,
        };
        offset = Some(patch::receive(state, addr, found, p, body).await.offset);
    }
    let mut r = text(StatusCode::CREATED, "created");
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Some(offset) = offset {
        h.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    }
    describe(h, &batch);
    r
}

/// The file a creation asks for, or the refusal: 400 for a missing or
/// malformed length or metadata and for names the wire refuses too (the
/// rule named), 413 above the relay's limits.
fn read_headers(state: &HttpState, headers: &HeaderMap) -> Result<Wanted, Response> {
    let bad = |why: &str| text(StatusCode::BAD_REQUEST, why);
    let Some(length) = header_text(headers, &UPLOAD_LENGTH) else {
        return Err(bad(
            "Upload-Length is required (deferred lengths are not offered)",
        ));
    };
    let size = parse_length(length).ok_or_else(|| bad("Upload-Length is not a byte count"))?;
    let meta = match header_text(headers, &UPLOAD_METADATA) {
        Some(m) => metadata::parse(m).map_err(|e| bad(&e.to_string()))?,
        None if headers.contains_key(&UPLOAD_METADATA) => {
            return Err(bad("Upload-Metadata is not ASCII"))
        }
        None => Default::default(),
    };
    let batch = match meta.get("batch") {
        Some(h) => Some(String::from_utf8(h.clone()).map_err(|_| bad("batch is not a handle"))?),
        None => None,
    };
    let name = meta
        .get("filename")
        .or_else(|| meta.get("name"))
        .ok_or_else(|| bad("Upload-Metadata must give a filename"))?;
    let name = String::from_utf8(name.clone()).map_err(|_| bad("the filename is not UTF-8"))?;
    let sha1 = match meta.get("sha1") {
        Some(v) => Some(
            parse_sha1(v)
                .ok_or_else(|| bad("sha1 is neither 40 hex digits nor base64 of 20 bytes"))?,
        ),
        None => None,
    };
    let settings = state.relay.settings();
    jobs::check_batch(settings, 1, size)
        .and_then(|()| jobs::check_file(settings, &name, size))
        .map_err(|code| match code {
            ErrorCode::TooLarge | ErrorCode::TooManyFiles => refused(code, 0),
            code => bad(&format!("file name refused: {code:?} (names are relative paths of / separated parts, no empty, . or .. part, no control characters or backslash)")),
        })?;
    Ok(Wanted {
        name,
        size,
        sha1,
        batch,
    })
}

/// The user an `Authorization: Bearer TOKEN` (a token from `pickup
/// login`, in hex) authenticates, or `None` for an anonymous upload; the
/// refusal (401) when a token is wrong or anonymous uploads are off. Token
/// guesses spend the same limiter as the wire's `Authenticate` (429).
pub(super) async fn login(
    state: &HttpState,
    addr: &SocketAddr,
    headers: &HeaderMap,
) -> Result<Option<String>, Response> {
    let unauthorized = |why: &str| {
        let mut r = text(StatusCode::UNAUTHORIZED, why);
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    };
    let relay = &state.relay;
    let Some(auth) = headers.get(header::AUTHORIZATION) else {
        return if relay.settings().auth.allow_anonymous_upload {
            Ok(None)
        } else {
            Err(unauthorized(
                "this relay takes uploads from logged-in users only",
            ))
        };
    };
    let peer = Peer::for_tcp(addr.ip());
    let now = state.clock.now();
    if let Err(wait) = lock(&relay.auth_limit).check(TOKEN_ACCOUNT, &peer, now) {
        return Err(refused(ErrorCode::RateLimited, wait));
    }
    let token = auth
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| super::parse_handle(t.trim()))
        .map(|t| AuthToken(t.0));
    let checked = match token {
        Some(token) => {
            let relay = relay.clone();
            match tokio::task::spawn_blocking(move || {
                relay.directory().check_token(&token, unix_secs(now))
            })
            .await
            {
                Ok(Ok(info)) => info,
                Ok(Err(e)) => return Err(internal(&e)),
                Err(e) => return Err(internal(&e)),
            }
        }
        None => None,
    };
    match checked {
        Some(info) => {
            lock(&relay.auth_limit).succeeded(&info.user);
            relay.metrics().login(true);
            Ok(Some(info.user))
        }
        None => {
            lock(&relay.auth_limit).failed(TOKEN_ACCOUNT, &peer, now);
            relay.metrics().login(false);
            Err(unauthorized(
                "the token is unknown or expired; log in again",
            ))
        }
    }
}
