//! The download half of a session: lookups by code, manifests, and the
//! credit-based stream of `Data` frames.
//!
//! Every `Fetch` and `Read` looks the code up again (reads are authorised
//! per request), through the rate limiter: a lookup runs only while the
//! peer's and the relay's buckets hold a token, and a failed one spends it.

use std::sync::Arc;

use pickup_proto::message::{self, Ack, Fetch, Kind, Read};
use pickup_proto::{Code, ErrorCode, Instant};

use super::{Out, Session};
use crate::codes::code_key;
use crate::relay::unix_secs;
use crate::store::{Batch, BlobId, FileContent, Lookup, StoreError};

/// A download stream: `Data` frames of one blob from `next` up to the credit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stream {
    pub(super) file: u16,
    pub(super) blob: BlobId,
    pub(super) size: u64,
    pub(super) next: u64,
    pub(super) credit_end: u64,
    /// The batch's expiry (Unix seconds): nothing is served from then on.
    pub(super) expires_at: u64,
}

impl Session {
    /// The live batch behind `code`, or `None` with the refusal queued.
    fn lookup_code(&mut self, now: Instant, code: &Code, kind: Kind) -> Option<Batch> {
        let relay = self.relay.clone();
        if let Err(wait) = relay.check_lookup(&self.peer, now) {
            self.out.error_retry(ErrorCode::RateLimited, kind, wait);
            return None;
        }
        match relay.store.find_by_code(&code_key(code), unix_secs(now)) {
            Ok(Lookup::Live(batch)) => Some(batch),
            Ok(found) => {
                relay.failed_lookup(&self.peer, now);
                let refusal = if found == Lookup::Expired {
                    ErrorCode::Expired
                } else {
                    ErrorCode::UnknownCode
                };
                tracing::debug!(session = self.id, peer = %self.peer, "lookup failed: {refusal}");
                self.out.error(refusal, kind);
                None
            }
            Err(e) => {
                self.internal(kind, &e);
                None
            }
        }
    }

    pub(super) fn on_fetch(&mut self, now: Instant, f: Fetch) {
        if let Some(batch) = self.lookup_code(now, &f.code, Kind::Fetch) {
            self.out.push(Out::Manifest {
                batch: Arc::new(batch),
                next: 0,
            });
        }
    }

    pub(super) fn on_read(&mut self, now: Instant, r: Read) {
        // A new Read ends the stream before it, refused or not: the terminal
        // has asked for something else, and data for the old read would
        // answer a question it no longer asks.
        self.stream = None;
        let Some(batch) = self.lookup_code(now, &r.code, Kind::Read) else {
            return;
        };
        let Some(f) = batch.files.get(usize::from(r.file)) else {
            return self.out.error(ErrorCode::OutOfRange, Kind::Read);
        };
        let FileContent::Blob(blob) = f.content else {
            return self.out.error(ErrorCode::NotReady, Kind::Read);
        };
        if !batch.ready() {
            return self.out.error(ErrorCode::NotReady, Kind::Read);
        }
        if r.offset > f.size {
            return self.out.error(ErrorCode::OutOfRange, Kind::Read);
        }
        self.stream = Some(Stream {
            file: r.file,
            blob,
            size: f.size,
            next: r.offset,
            credit_end: r.offset.saturating_add(u64::from(r.len)),
            expires_at: batch.expires_at,
        });
    }

    /// A downloader's `Ack` extends the credit of the current stream.
    pub(super) fn on_download_ack(&mut self, a: Ack) {
        if let Some(s) = self.stream.as_mut().filter(|s| s.file == a.file) {
            s.credit_end = s
                .credit_end
                .max(a.offset.saturating_add(u64::from(a.window)));
        }
    }

    /// The next `Data` frame of the stream, read straight into `out`.
    pub(super) fn poll_data(&mut self, out: &mut [u8]) -> Option<usize> {
        let s = self.stream.as_mut()?;
        let end = s.credit_end.min(s.size);
        if s.next >= end {
            return None;
        }
        if unix_secs(self.clock) >= s.expires_at {
            // The code answers `Expired` to new lookups now; a stream that
            // began earlier ends too, as an upload's does, rather than
            // serve until the sweeper takes the blob.
            self.stream = None;
            self.out.error(ErrorCode::Expired, Kind::Read);
            return self.poll_transmit(out);
        }
        let want = usize::try_from(end - s.next).unwrap_or(usize::MAX);
        let store = &*self.relay.store;
        let (blob, at) = (s.blob, s.next);
        let mut failure = None;
        let mut read = 0;
        let encoded = message::encode_data_with(
            s.file,
            at,
            want,
            self.peer_max_frame,
            out,
            |room| match store.read_blob(blob, at, room) {
                Ok(0) => {
                    failure = Some(StoreError::Corrupt(format!("blob {} is short", blob.0)));
                    None
                }
                Ok(n) => {
                    read = n;
                    Some(n)
                }
                Err(e) => {
                    failure = Some(e);
                    None
                }
            },
        );
        match encoded {
            Ok(n) => {
                s.next += read as u64;
                Some(n)
            }
            Err(_) => {
                self.stream = None;
                // The blob went away under the stream: its batch expired.
                let code = match failure {
                    Some(StoreError::NotFound) => ErrorCode::Expired,
                    Some(e) => {
                        tracing::error!(session = self.id, blob = blob.0, "read failed: {e}");
                        ErrorCode::Internal
                    }
                    None => ErrorCode::Internal,
                };
                self.out.error(code, Kind::Read);
                self.poll_transmit(out)
            }
        }
    }
}
