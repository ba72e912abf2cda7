//! Replies waiting for [`Session::poll_transmit`](super::Session::poll_transmit),
//! and the frame that refuses a connection outright.

use std::collections::VecDeque;
use std::sync::Arc;

use pickup_proto::frame;
use pickup_proto::message::{self, Kind, Message};
use pickup_proto::ErrorCode;

use super::upload::Reply;
use crate::store::Batch;

/// How long a refused terminal should wait before trying again.
const BUSY_RETRY_MS: u32 = 1000;

/// Encodes the `Error` frame that answers a connection [`Session::new`](super::Session::new)
/// refused, into `out` (at least 64 bytes).
pub fn refusal(code: ErrorCode, out: &mut [u8]) -> Option<usize> {
    let retry_after_ms = if code == ErrorCode::Busy {
        BUSY_RETRY_MS
    } else {
        0
    };
    Message::Error(message::Error {
        code,
        kind: 0,
        retry_after_ms,
    })
    .encode(frame::MIN_FRAME_LEN, out)
    .ok()
}

/// A message waiting for [`Session::poll_transmit`]. Multi-frame replies
/// (a grant and its plans, a manifest and its entries) are one entry with a
/// cursor, so a queue entry stays small whatever the batch size.
#[derive(Debug, Clone)]
pub(super) enum Out {
    Welcome,
    Keepalive,
    Error {
        code: ErrorCode,
        kind: u8,
        retry_after_ms: u32,
    },
    /// A reply about the current upload, rendered from it when sent.
    Upload(Reply),
    /// `next == 0`: the Manifest; `next == i + 1`: entry `i`.
    Manifest {
        batch: Arc<Batch>,
        next: u32,
    },
}

/// Replies waiting to be sent. Bounded: a peer that sends requests without
/// reading replies loses replies, not relay memory.
#[derive(Debug, Default)]
pub(super) struct Outbox(pub(super) VecDeque<Out>);

/// Most queued replies per session.
const MAX_QUEUED: usize = 256;

impl Outbox {
    /// Forgets replies that describe the current upload. They are rendered
    /// from the upload when sent, so once it is replaced they would describe
    /// the new batch instead (found by the relay_session fuzzer).
    pub(super) fn forget_upload_replies(&mut self) {
        self.0.retain(|o| !matches!(o, Out::Upload(_)));
    }
}

impl Outbox {
    pub(super) fn push(&mut self, out: Out) {
        if self.0.len() < MAX_QUEUED {
            self.0.push_back(out);
        } else {
            tracing::debug!("reply queue full, dropping {out:?}");
        }
    }

    /// Queues a reply about the current upload.
    pub(super) fn upload(&mut self, reply: Reply) {
        self.push(Out::Upload(reply));
    }

    pub(super) fn error(&mut self, code: ErrorCode, kind: Kind) {
        self.error_retry(code, kind, 0);
    }

    pub(super) fn error_retry(&mut self, code: ErrorCode, kind: Kind, retry_after_ms: u32) {
        self.push(Out::Error {
            code,
            kind: kind as u8,
            retry_after_ms,
        });
    }

    /// Queues an Ack for `file` unless one is already waiting (it reads the
    /// offset when sent, so one is enough).
    pub(super) fn ack(&mut self, file: u16) {
        if !self
            .0
            .iter()
            .any(|o| matches!(o, Out::Upload(Reply::Ack(f)) if *f == file))
        {
            self.push(Out::Upload(Reply::Ack(file)));
        }
    }
}
