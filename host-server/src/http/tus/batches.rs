//! Several files under one code: an open batch (`POST /tus/batches`)
//! takes one tus upload per file (a creation with `Upload-Metadata` key
//! `batch`) until its close, which reveals its code once every file is
//! complete. Until then its code serves nothing and is told to nobody.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pickup_proto::message;
use serde_json::json;

use super::super::{conn, HttpState};
use super::creation::{login, Wanted};
use super::{find_batch, handle_of, internal, refused, text, Found, PICKUP_CODE, UNDECLARED};
use crate::jobs::{self, CreateBatch};
use crate::quota::Owner;
use crate::rate_limit::Peer;
use crate::relay::unix_secs;
use crate::store::{FileContent, NewFile, StoreError};

const PICKUP_BATCH: HeaderName = HeaderName::from_static("pickup-batch");

/// A JSON answer that no cache keeps.
fn json_answer(status: StatusCode, value: &serde_json::Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        value.to_string(),
    )
        .into_response()
}

/// `POST /tus/batches`: an open batch with no file yet, created through
/// the same job, limits and login as any upload.
pub(super) async fn open(
    State(state): State<HttpState>,
    ConnectInfo(conn::PeerAddr(addr)): ConnectInfo<conn::PeerAddr>,
    headers: HeaderMap,
) -> Response {
    let user = match login(&state, &addr, &headers).await {
        Ok(user) => user,
        Err(refusal) => return refusal,
    };
    let work = CreateBatch {
        files: Vec::new(),
        total: 0,
        owner: Owner::Peer(Peer::for_tcp(addr.ip())),
        now: state.clock.now(),
        family: user.as_deref().map(crate::codes::user_owner),
        join: None,
        named: None,
        open: true,
    };
    let relay = state.relay.clone();
    let created = match tokio::task::spawn_blocking(move || jobs::create_batch(&relay, work)).await
    {
        Ok(Ok(created)) => created,
        Ok(Err(r)) => return refused(r.code, r.retry_after_ms),
        Err(e) => return internal(&e),
    };
    state.relay.metrics().upload_started();
    tracing::info!(peer = %addr.ip(), batch = created.batch.id.0, "tus batch opened");
    let handle = handle_of(&created.token);
    let mut r = json_answer(
        StatusCode::CREATED,
        &json!({
            "batch": handle,
            "expires": crate::relay::utc_text(created.batch.expires_at),
        }),
    );
    let h = r.headers_mut();
    if let (Ok(loc), Ok(b)) = (
        HeaderValue::from_str(&format!("/tus/batches/{handle}")),
        HeaderValue::from_str(&handle),
    ) {
        h.insert(header::LOCATION, loc);
        h.insert(PICKUP_BATCH, b);
    }
    r
}

/// `GET /tus/batches/{handle}`: the batch's files and their progress, and
/// its code once closed.
pub(super) async fn status(
    State(state): State<HttpState>,
    ConnectInfo(conn::PeerAddr(addr)): ConnectInfo<conn::PeerAddr>,
    Path(handle): Path<String>,
) -> Response {
    let (token, batch) = match find_batch(&state, &addr, &handle).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let files: Vec<serde_json::Value> = batch
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({
                "index": i,
                "name": f.name,
                "size": f.size,
                "offset": f.received(),
                "complete": matches!(f.content, FileContent::Blob(_)),
            })
        })
        .collect();
    let mut body = json!({
        "batch": handle_of(&token),
        "open": batch.open,
        "files": files,
    });
    if !batch.open {
        body["code"] = json!(batch.code.to_string());
    }
    json_answer(StatusCode::OK, &body)
}

/// `POST /tus/batches/{handle}/close`: 200 with the code when every file
/// is complete (again on a closed batch), 409 listing the incomplete
/// files, 422 for a batch without files.
pub(super) async fn close(
    State(state): State<HttpState>,
    ConnectInfo(conn::PeerAddr(addr)): ConnectInfo<conn::PeerAddr>,
    Path(handle): Path<String>,
) -> Response {
    let (_, batch) = match find_batch(&state, &addr, &handle).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    if batch.open {
        if batch.files.is_empty() {
            return json_answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"error": "the batch has no file"}),
            );
        }
        let incomplete: Vec<usize> = batch
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| !matches!(f.content, FileContent::Blob(_)))
            .map(|(i, _)| i)
            .collect();
        if !incomplete.is_empty() {
            return json_answer(
                StatusCode::CONFLICT,
                &json!({"error": "some files are incomplete", "incomplete": incomplete}),
            );
        }
        let relay = state.relay.clone();
        let id = batch.id;
        match tokio::task::spawn_blocking(move || relay.store().close_batch(id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return internal(&e),
            Err(e) => return internal(&e),
        }
        state.relay.quotas().finished(batch.id);
        state.relay.metrics().upload_completed();
        tracing::info!(
            batch = batch.id.0,
            files = batch.files.len(),
            "tus batch closed"
        );
    }
    let code = batch.code.to_string();
    let mut r = json_answer(
        StatusCode::OK,
        &json!({"code": code, "link": format!("/c/{code}"), "files": batch.files.len()}),
    );
    if let Ok(v) = HeaderValue::from_str(&code) {
        r.headers_mut().insert(PICKUP_CODE, v);
    }
    r
}

/// Adds the file `wanted` to the open batch behind `handle` (a creation
/// with `batch` metadata): the batch's limits, name rules across its
/// files and its quota apply as if it had been announced whole. The
/// upload of the new file, or the refusal (404/410 unknown or expired,
/// 409 closed, 400 a name that conflicts, 413/429/507 limits).
pub(super) async fn add(
    state: &HttpState,
    addr: &SocketAddr,
    handle: &str,
    wanted: Wanted,
) -> Result<Found, Response> {
    let (token, batch) = find_batch(state, addr, handle).await?;
    let closed = || text(StatusCode::CONFLICT, "the batch is closed");
    if !batch.open {
        return Err(closed());
    }
    let settings = state.relay.settings();
    let files = u16::try_from(batch.files.len() + 1).unwrap_or(u16::MAX);
    let total = batch.total_size().saturating_add(wanted.size);
    if let Err(code) = jobs::check_batch(settings, files, total) {
        return Err(refused(code, 0));
    }
    if batch
        .files
        .iter()
        .any(|f| message::names_conflict(&f.name, &wanted.name))
    {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "file name refused: it conflicts with a file of the batch (the same path, or one is the other's directory)",
        ));
    }
    let relay = state.relay.clone();
    let owner = Owner::Peer(Peer::for_tcp(addr.ip()));
    let now = state.clock.now();
    let unsent = batch.total_size().saturating_sub(batch.received());
    let added = tokio::task::spawn_blocking(move || {
        jobs::reserve_again(&relay, &owner, &batch, now)
            .and_then(|()| {
                let stored = relay.store().usage().map(|u| u.bytes).unwrap_or(0);
                relay.quotas().grow(batch.id, wanted.size, stored)
            })
            .map_err(|r| refused(r.code, r.retry_after_ms))?;
        let sha1 = wanted.sha1.unwrap_or(if wanted.size == 0 {
            pickup_proto::Sha1Digest::EMPTY
        } else {
            UNDECLARED
        });
        let file = NewFile {
            name: &wanted.name,
            size: wanted.size,
            sha1,
            attrs: None,
        };
        let at = match relay.store().add_file(batch.id, &file) {
            Ok(at) => at,
            Err(StoreError::NotFound) => {
                // Closed meanwhile: the grown reservation shrinks back.
                relay.quotas().progress(batch.id, unsent, now);
                return Err(closed());
            }
            Err(e) => return Err(internal(&e)),
        };
        // A file added is progress: the batch does not go stale sooner.
        let keep = unix_secs(now).saturating_add(relay.settings().quota.incomplete_ttl_secs);
        if let Err(e) = relay.store().keep_incomplete(batch.id, keep) {
            tracing::warn!("cannot record a tus batch's progress: {e}");
        }
        let key = crate::codes::token_key(&token);
        match relay.store().find_by_token(&key, unix_secs(now)) {
            Ok(crate::store::Lookup::Live(batch)) => Ok(Found {
                token,
                batch,
                index: usize::from(at.index),
            }),
            Ok(_) => Err(text(StatusCode::GONE, "this upload has expired")),
            Err(e) => Err(internal(&e)),
        }
    })
    .await;
    match added {
        Ok(found) => found,
        Err(e) => Err(internal(&e)),
    }
}
