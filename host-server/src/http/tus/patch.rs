//! `PATCH /tus/{handle}/{index}`: bytes at the durable offset, streamed to
//! the store a chunk at a time on the blocking pool, hashed as they
//! arrive, and made durable before the new offset is acknowledged.
//!
//! Without `Upload-Checksum` every byte that arrived counts: the partial
//! upload is synced every [`SYNC_EVERY`] bytes, at the end, and when the
//! body stops early (a dropped connection) or would go beyond
//! `Upload-Length` (the bytes within the length are kept, then 400). With
//! a checksum nothing of the PATCH counts until the whole body matched it:
//! its bytes are written past the durable offset and only a sync after
//! the check makes them part of the upload (a mismatch, 460, leaves the
//! offset and the recorded SHA-1 state where they were; the next PATCH
//! overwrites those bytes).
//!
//! The request holds the batch's upload lease ([`Relay::try_lease`])
//! while it writes: a second PATCH meanwhile gets 423, and a wire resume
//! that takes the lease over stops this one (its later writes are
//! refused, so the two never interleave). Across relay instances the
//! store's fence does the same: each PATCH takes the upload over
//! ([`Store::take_upload`](crate::store::Store::take_upload)) before it
//! reads the durable offset, and a PATCH whose steps the store refuses as
//! [`StoreError::Fenced`] ends as one whose lease was taken.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use pickup_proto::Sha1Digest;

use super::super::{conn, HttpState};
use super::{
    checksum, content_length, describe, find, header_text, internal, is_offset_stream,
    parse_length, refused, text, Found, UNDECLARED, UPLOAD_OFFSET,
};
use crate::codes::token_key;
use crate::quota::Owner;
use crate::rate_limit::Peer;
use crate::relay::{unix_secs, Lease, Relay};
use crate::running_sha1::{Midstate, RunningSha1};
use crate::store::{Content, FileContent, FileRef, Lookup, PartialId, StoreError};

/// Bytes of a body gathered before one blocking write: the most of a
/// request's body the relay holds in memory.
const CHUNK: usize = 256 * 1024;

/// Bytes written between syncs of a PATCH without a checksum. A sync is
/// an fsync and a database commit (milliseconds on a disk), so one per
/// 4 MiB costs a few percent of the time of writing them, and a dropped
/// connection that the relay could not sync in time (a crash) loses at
/// most this much to send again.
const SYNC_EVERY: u64 = 4 * 1024 * 1024;

const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");

/// 460, tus's "Checksum Mismatch".
const CHECKSUM_MISMATCH: u16 = 460;

/// A PATCH to apply.
pub(super) struct Patch {
    /// `Upload-Offset`.
    pub(super) offset: u64,
    /// The body's declared length, if any.
    pub(super) content_length: Option<u64>,
    /// `Upload-Checksum`.
    pub(super) checksum: Option<Sha1Digest>,
}

/// What a PATCH did.
pub(super) struct Done {
    /// The durable offset afterwards.
    pub(super) offset: u64,
    /// The refusal, if the PATCH (or part of it) was refused.
    pub(super) refusal: Option<Response>,
    /// This PATCH completed the file (verified and stored).
    pub(super) completed: bool,
}

impl Done {
    fn refused(offset: u64, refusal: Response) -> Done {
        Done {
            offset,
            refusal: Some(refusal),
            completed: false,
        }
    }
}

pub(super) async fn patch(
    State(state): State<HttpState>,
    ConnectInfo(conn::PeerAddr(addr)): ConnectInfo<conn::PeerAddr>,
    Path((handle, index)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match read_headers(&headers) {
        Err(refusal) => refusal,
        Ok(p) => {
            let found = match find(&state, &addr, &handle, &index).await {
                Ok(found) => found,
                Err(refusal) => return refusal,
            };
            let batch = found.batch.clone();
            let done = receive(&state, &addr, found, p, body).await;
            let mut r = done
                .refusal
                .unwrap_or_else(|| StatusCode::NO_CONTENT.into_response());
            r.headers_mut()
                .insert(UPLOAD_OFFSET, HeaderValue::from(done.offset));
            describe(r.headers_mut(), &batch);
            r
        }
    }
}

/// The PATCH's headers, or the refusal: 415 without the tus content type,
/// 400 for a malformed offset or checksum.
fn read_headers(headers: &HeaderMap) -> Result<Patch, Response> {
    if !is_offset_stream(headers) {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: application/offset+octet-stream is required",
        ));
    }
    let offset = header_text(headers, &UPLOAD_OFFSET)
        .and_then(parse_length)
        .ok_or_else(|| text(StatusCode::BAD_REQUEST, "Upload-Offset is not a byte count"))?;
    let checksum = match headers.get(&UPLOAD_CHECKSUM) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .ok_or(checksum::ChecksumError::Malformed)
                .and_then(checksum::parse)
                .map_err(|e| text(StatusCode::BAD_REQUEST, e.to_string()))?,
        ),
    };
    Ok(Patch {
        offset,
        content_length: content_length(headers),
        checksum,
    })
}

/// Applies `p` with `body` to the upload `found`. It runs as a task of its
/// own, so a client that drops the connection mid-body does not cancel
/// it: what arrived is synced, and the lease is given back.
pub(super) async fn receive(
    state: &HttpState,
    addr: &SocketAddr,
    found: Found,
    p: Patch,
    body: Body,
) -> Done {
    let (state, addr) = (state.clone(), *addr);
    match tokio::spawn(async move { receive_task(state, addr, found, p, body).await }).await {
        Ok(done) => done,
        Err(e) => Done::refused(0, internal(&e)),
    }
}

async fn receive_task(
    state: HttpState,
    addr: SocketAddr,
    found: Found,
    p: Patch,
    body: Body,
) -> Done {
    let file = &found.batch.files[found.index];
    let size = file.size;
    let (partial, durable) = match file.content {
        FileContent::Blob(_) => {
            // Complete: only the idempotent empty PATCH at its end is fine.
            let refusal = if p.offset != size {
                Some(text(StatusCode::CONFLICT, "the upload is complete"))
            } else if p.content_length.is_some_and(|n| n > 0) {
                Some(text(
                    StatusCode::BAD_REQUEST,
                    "the body goes beyond Upload-Length",
                ))
            } else {
                None
            };
            return Done {
                offset: size,
                refusal,
                completed: false,
            };
        }
        FileContent::Partial { id, durable } => (id, durable),
    };
    if p.offset != durable {
        return Done::refused(durable, offset_conflict(durable));
    }
    if p.content_length.is_some_and(|n| n > size - durable) {
        return Done::refused(
            durable,
            text(
                StatusCode::BAD_REQUEST,
                "the body goes beyond Upload-Length",
            ),
        );
    }
    let relay = state.relay.clone();
    let writer = relay.writer_id();
    let Some(lease) = relay.try_lease(found.batch.id, writer) else {
        return Done::refused(
            durable,
            text(
                StatusCode::LOCKED,
                "another upload of this file is in progress",
            ),
        );
    };
    let guard = Held {
        relay: relay.clone(),
        lease,
        writer,
    };
    let now = state.clock.now();
    let owner = Owner::Peer(Peer::for_tcp(addr.ip()));
    let prepared = {
        let (relay, token, batch) = (relay.clone(), found.token, found.batch.clone());
        tokio::task::spawn_blocking(move || {
            crate::jobs::reserve_again(&relay, &owner, &batch, now)
                .map_err(|r| refused(r.code, r.retry_after_ms))?;
            prepare(&relay, &token, found.index, partial, unix_secs(now))
        })
        .await
    };
    let (durable, hasher) = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(refusal)) => return Done::refused(durable, refusal),
        Err(e) => return Done::refused(durable, internal(&e)),
    };
    if p.offset != durable {
        return Done::refused(durable, offset_conflict(durable));
    }
    let w = Writer {
        held: guard,
        partial,
        hasher,
        body: p.checksum.map(|_| RunningSha1::new()),
        at: durable,
        synced: durable,
        checked: p.checksum.is_some(),
    };
    let fed = feed(w, body, size, p.content_length).await;
    let ending = Ending {
        file: FileRef {
            batch: found.batch.id,
            index: found.index as u16,
        },
        size,
        declared: (file.sha1 != UNDECLARED).then_some(file.sha1),
        keep_until: unix_secs(now).saturating_add(relay.settings().quota.incomplete_ttl_secs),
    };
    let checksum = p.checksum;
    let finished =
        tokio::task::spawn_blocking(move || finish(fed, checksum, ending, durable)).await;
    let done = match finished {
        Ok(done) => done,
        Err(e) => Done::refused(durable, internal(&e)),
    };
    // The batch is complete when this file completed it and no file can
    // be added any more (an open batch completes at its close).
    let others = found
        .batch
        .files
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != found.index);
    let others_done = others
        .clone()
        .all(|(_, f)| matches!(f.content, FileContent::Blob(_)));
    let others_unsent: u64 = others.map(|(_, f)| f.size - f.received()).sum();
    let mut quotas = relay.quotas();
    if done.completed && others_done && !found.batch.open {
        quotas.finished(found.batch.id);
        relay.metrics().upload_completed();
    } else {
        let unsent = others_unsent.saturating_add(size - done.offset);
        quotas.progress(found.batch.id, unsent, state.clock.now());
    }
    done
}

/// 409 naming the offset a PATCH must start at.
fn offset_conflict(durable: u64) -> Response {
    text(
        StatusCode::CONFLICT,
        format!("Upload-Offset must be the durable offset, {durable}"),
    )
}

/// The lease a PATCH holds, given back when it ends however it ends.
struct Held {
    relay: Arc<Relay>,
    lease: Arc<Lease>,
    writer: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.relay.release_lease(&self.lease, self.writer);
    }
}

/// The file's durable offset now (a PATCH may have ended since the
/// lookup) and its SHA-1 over those bytes: from the state recorded with
/// them, hashing from the store only the bytes that state does not cover
/// (a wire upload records its state less often).
fn prepare(
    relay: &Relay,
    token: &pickup_proto::message::ResumeToken,
    index: usize,
    partial: PartialId,
    now: u64,
) -> Result<(u64, Box<RunningSha1>), Response> {
    let store = relay.store();
    let found = match store.find_by_token(&token_key(token), now) {
        Ok(Lookup::Live(b)) => store.take_upload(b.id).map(Lookup::Live),
        other => other,
    };
    let durable = match found {
        Ok(Lookup::Live(b)) => match b.files.get(index).map(|f| f.content) {
            Some(FileContent::Partial { id, durable }) if id == partial => durable,
            _ => return Err(text(StatusCode::CONFLICT, "the upload changed; ask HEAD")),
        },
        Ok(_) | Err(StoreError::NotFound) => {
            return Err(text(StatusCode::GONE, "this upload has expired"))
        }
        Err(e) => return Err(internal(&e)),
    };
    let start = match store.partial_hash_state(partial) {
        Ok(Some(m)) if m.len <= durable => m,
        _ => Midstate::START,
    };
    let mut h = Box::new(RunningSha1::from_midstate(start));
    let mut buf = vec![0u8; CHUNK];
    let mut at = start.len;
    while at < durable {
        let want = usize::try_from(durable - at).unwrap_or(CHUNK).min(CHUNK);
        match store.read_partial(partial, at, &mut buf[..want]) {
            Ok(0) => {
                return Err(internal(
                    &"a partial upload is shorter than its durable offset",
                ))
            }
            Ok(n) => {
                h.update(&buf[..n]);
                at += n as u64;
            }
            Err(e) => return Err(internal(&e)),
        }
    }
    Ok((durable, h))
}

/// Why a body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// It ended where it said it would (or had no length and ended).
    Whole,
    /// The connection failed or closed before the body ended.
    Interrupted,
    /// It went on past `Upload-Length`.
    TooLong,
    /// The store failed, or a wire resume took the lease over.
    Failed,
}

/// A PATCH's writes in progress.
struct Writer {
    held: Held,
    partial: PartialId,
    /// The file's SHA-1 over `..at`.
    hasher: Box<RunningSha1>,
    /// The body's SHA-1, when a checksum is to be checked.
    body: Option<RunningSha1>,
    /// Bytes written (`..at`), and made durable (`..synced`).
    at: u64,
    synced: u64,
    /// A checksum decides: no sync before the whole body is checked.
    checked: bool,
}

/// Why a step of writing stopped.
#[derive(Debug)]
enum StepError {
    /// A wire resume took the lease over.
    Lost,
    Store(StoreError),
}

impl Writer {
    /// Writes `buf` at `at` and hashes it; syncs when [`SYNC_EVERY`] bytes
    /// are unsynced (unless a checksum is still to be checked).
    fn write(&mut self, buf: &[u8]) -> Result<(), StepError> {
        let relay = self.held.relay.clone();
        let lease = self.held.lease.clone();
        lease
            .run(self.held.writer, || {
                relay.store().write_partial(self.partial, self.at, buf)?;
                self.hasher.update(buf);
                if let Some(b) = &mut self.body {
                    b.update(buf);
                }
                self.at += buf.len() as u64;
                if !self.checked && self.at - self.synced >= SYNC_EVERY {
                    self.sync()?;
                }
                Ok(())
            })
            .ok_or(StepError::Lost)?
            .map_err(|e| match e {
                StoreError::Fenced => StepError::Lost,
                e => StepError::Store(e),
            })
    }

    /// Makes `..at` durable with the SHA-1 state over it.
    fn sync(&mut self) -> Result<(), StoreError> {
        let relay = &self.held.relay;
        relay
            .store()
            .sync_partial(self.partial, self.at, Some(&self.hasher.midstate()))?;
        relay.metrics().tus_received(self.at - self.synced);
        self.synced = self.at;
        Ok(())
    }
}

/// The body fed through the writer.
struct Fed {
    /// `None` if a write panicked.
    w: Option<Writer>,
    end: End,
    error: Option<StepError>,
}

/// Streams `body` into `w`, at most `size - w.at` bytes of it, a
/// [`CHUNK`] at a time.
async fn feed(mut w: Writer, body: Body, size: u64, declared: Option<u64>) -> Fed {
    let limit = size - w.at;
    let mut taken = 0u64;
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut end = End::Whole;
    loop {
        let mut data = match stream.next().await {
            None => {
                if declared.is_some_and(|n| taken < n) {
                    end = End::Interrupted;
                }
                break;
            }
            Some(Err(_)) => {
                end = End::Interrupted;
                break;
            }
            Some(Ok(data)) => data,
        };
        let room = limit - taken;
        if data.len() as u64 > room {
            data.truncate(usize::try_from(room).unwrap_or(0));
            end = End::TooLong;
        }
        taken += data.len() as u64;
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = (CHUNK - buf.len()).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if buf.len() == CHUNK {
                let Some((back, b, r)) = step(w, buf).await else {
                    return Fed::panicked();
                };
                (w, buf) = (back, b);
                if let Err(e) = r {
                    return Fed::failed(w, e);
                }
            }
        }
        if end == End::TooLong {
            break;
        }
    }
    if !buf.is_empty() {
        let Some((back, _, r)) = step(w, buf).await else {
            return Fed::panicked();
        };
        w = back;
        if let Err(e) = r {
            return Fed::failed(w, e);
        }
    }
    Fed {
        w: Some(w),
        end,
        error: None,
    }
}

impl Fed {
    fn failed(w: Writer, e: StepError) -> Fed {
        Fed {
            w: Some(w),
            end: End::Failed,
            error: Some(e),
        }
    }

    fn panicked() -> Fed {
        Fed {
            w: None,
            end: End::Failed,
            error: None,
        }
    }
}

/// One write on the blocking pool; the buffer comes back empty. `None`
/// only if the write panicked (a store bug): the writer, and with it the
/// lease, went with it.
async fn step(mut w: Writer, mut buf: Vec<u8>) -> Option<(Writer, Vec<u8>, Result<(), StepError>)> {
    tokio::task::spawn_blocking(move || {
        let r = w.write(&buf);
        buf.clear();
        (w, buf, r)
    })
    .await
    .ok()
}

/// After the body: checks the checksum, syncs what is to count, and
/// completes the file when every byte is durable (the declared SHA-1, if
/// any, checked first: a mismatch resets the upload to 0 and answers
/// 422). `start` is where the PATCH started, `keep_until` when the batch
/// would go stale now that it progressed.
fn finish(fed: Fed, checksum: Option<Sha1Digest>, end_state: Ending, start: u64) -> Done {
    let Fed { w, end, error } = fed;
    let Some(mut w) = w else {
        return Done::refused(start, internal(&"a write of a PATCH failed"));
    };
    let (relay, lease, writer) = (w.held.relay.clone(), w.held.lease.clone(), w.held.writer);
    let lost = |at| {
        Done::refused(
            at,
            text(StatusCode::LOCKED, "a resumed upload took this file over"),
        )
    };
    match error {
        Some(StepError::Lost) => return lost(w.synced),
        Some(StepError::Store(e)) => return Done::refused(w.synced, internal(&e)),
        None => {}
    }
    if let Some(want) = checksum {
        if end != End::Whole {
            return Done::refused(
                w.synced,
                text(
                    StatusCode::BAD_REQUEST,
                    "the body did not end where it should; with a checksum nothing of it is kept",
                ),
            );
        }
        if w.body.as_ref().map(RunningSha1::digest) != Some(want) {
            let mismatch =
                StatusCode::from_u16(CHECKSUM_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST);
            return Done::refused(
                w.synced,
                text(mismatch, "Checksum Mismatch: nothing of this PATCH is kept"),
            );
        }
    }
    if w.at > w.synced {
        match lease.run(writer, || w.sync()) {
            None | Some(Err(StoreError::Fenced)) => return lost(w.synced),
            Some(Err(e)) => return Done::refused(w.synced, internal(&e)),
            Some(Ok(())) => {}
        }
    }
    let store = relay.store();
    if w.synced > start {
        if let Err(e) = store.keep_incomplete(end_state.file.batch, end_state.keep_until) {
            tracing::warn!("cannot record a tus upload's progress: {e}");
        }
    }
    let mut refusal = match end {
        End::Interrupted => Some(text(
            StatusCode::BAD_REQUEST,
            format!("the body ended early; the upload holds {} bytes", w.synced),
        )),
        End::TooLong => Some(text(
            StatusCode::BAD_REQUEST,
            "the body goes beyond Upload-Length; the bytes within it are kept",
        )),
        End::Whole | End::Failed => None,
    };
    if w.synced < end_state.size {
        return Done {
            offset: w.synced,
            refusal,
            completed: false,
        };
    }
    let digest = w.hasher.digest();
    let completed = lease.run(writer, || {
        if let Some(declared) = end_state.declared.filter(|d| *d != digest) {
            store.reset_partial(w.partial)?;
            return Ok(Err(text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "SHA-1 mismatch: the bytes received hash to {}, not the declared {}; the upload was reset to 0",
                    hex(&digest),
                    hex(&declared)
                ),
            )));
        }
        let threshold = crate::disclosure::draw_threshold(
            &relay.settings().disclosure,
            &mut **crate::relay::lock(&relay.rng),
        );
        let content = Content {
            size: end_state.size,
            sha1: digest,
            threshold,
        };
        store.complete_file(end_state.file, w.partial, &content)?;
        Ok(Ok(()))
    });
    match completed {
        None | Some(Err(StoreError::Fenced)) => lost(w.synced),
        Some(Err::<_, StoreError>(e)) => Done::refused(w.synced, internal(&e)),
        Some(Ok(Err(mismatch))) => Done::refused(0, mismatch),
        Some(Ok(Ok(()))) => {
            relay.metrics().tus_completed();
            tracing::info!(
                batch = end_state.file.batch.0,
                bytes = end_state.size,
                "tus upload complete"
            );
            Done {
                offset: w.synced,
                refusal: refusal.take(),
                completed: true,
            }
        }
    }
}

/// What completing a file needs to know.
struct Ending {
    file: FileRef,
    size: u64,
    /// The SHA-1 the uploader declared, if any.
    declared: Option<Sha1Digest>,
    keep_until: u64,
}

/// A SHA-1 in lowercase hex.
fn hex(d: &Sha1Digest) -> String {
    d.0.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
