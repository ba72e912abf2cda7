//! HEAD (where an upload stands) and DELETE (termination) of
//! `/tus/{handle}/{index}`.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::super::{conn, HttpState};
use super::{
    describe, find, internal, metadata_of, Found, UPLOAD_LENGTH, UPLOAD_METADATA, UPLOAD_OFFSET,
};
use crate::relay::unix_secs;

/// `HEAD`: the durable offset (what a PATCH must start at), the length,
/// the name, the expiry and the code.
pub(super) async fn head(
    State(state): State<HttpState>,
    ConnectInfo(conn::PeerAddr(addr)): ConnectInfo<conn::PeerAddr>,
    Path((handle, index)): Path<(String, String)>,
) -> Response {
    let Found { batch, index, .. } = match find(&state, &addr, &handle, &index).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let file = &batch.files[index];
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(file.received()));
    h.insert(UPLOAD_LENGTH, HeaderValue::from(file.size));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(m) = metadata_of(&file.name) {
        h.insert(UPLOAD_METADATA, m);
    }
    describe(h, &batch);
    r
}

/// `DELETE`: the upload's (closed) batch ends now (its code and handle then answer
/// as expired, and the next sweep deletes its bytes); its reservation is
/// given back.
pub(super) async fn terminate(
    State(state): State<HttpState>,
    ConnectInfo(conn::PeerAddr(addr)): ConnectInfo<conn::PeerAddr>,
    Path((handle, index)): Path<(String, String)>,
) -> Response {
    let Found { batch, .. } = match find(&state, &addr, &handle, &index).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    if batch.open {
        return super::text(
            StatusCode::CONFLICT,
            "a file of an open batch cannot be terminated alone; let the batch expire",
        );
    }
    let relay = state.relay.clone();
    let now = unix_secs(state.clock.now());
    let ended = tokio::task::spawn_blocking(move || relay.store().end_batch(batch.id, now)).await;
    match ended {
        Ok(Ok(())) => {
            state.relay.quotas().finished(batch.id);
            tracing::info!(batch = batch.id.0, "tus upload terminated");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) => internal(&e),
        Err(e) => internal(&e),
    }
}
