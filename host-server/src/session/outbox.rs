//! Replies waiting for [`Session::poll_transmit`](super::Session::poll_transmit),
//! and the frame that refuses a connection outright.

use std::collections::VecDeque;
use std::sync::Arc;

use pickup_proto::frame;
use pickup_proto::message::{self, Kind, Message};
use pickup_proto::ErrorCode;

use super::oplog::OpLog;
use super::upload::Reply;
use crate::mailbox::DeliveryRecord;
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
    /// The relay's `PageLink`, right after a `Welcome` (PROTOCOL.md §5.1).
    PageLink,
    /// The relay's `RelayLimits`, right after a `Welcome` (and its
    /// `PageLink`), PROTOCOL.md §5.1.
    RelayLimits,
    Keepalive,
    Error {
        code: ErrorCode,
        kind: u8,
        retry_after_ms: u32,
    },
    /// A reply about the current upload, rendered from it when sent.
    Upload(Reply),
    /// `next == 0`: the Manifest; `next == i + 1`: entry `i`, preceded by
    /// its `FileAttrs` (PROTOCOL.md §5.5) unless `attrs_sent`, when the
    /// peer asked for them and the file has them.
    Manifest {
        batch: Arc<Batch>,
        next: u32,
        attrs_sent: bool,
    },
    /// The session now acts for this user (and terminal).
    Authenticated {
        user: String,
        terminal: String,
        token: pickup_proto::message::AuthToken,
        expires_at: u64,
    },
    /// A terminal's challenge.
    Challenge {
        nonce: [u8; 16],
    },
    /// The request of this kind succeeded.
    Done(Kind),
    /// `Delivery` frames, one per record (the answer to a `Push`, or a
    /// `DeliveryStatus`'s list, which a `Done` follows).
    Deliveries(VecDeque<DeliveryRecord>),
    /// `Inbox{count}` first if `inbox` is `Some(count)`, then one
    /// `Notice` per record.
    Notices {
        inbox: Option<u16>,
        list: VecDeque<DeliveryRecord>,
    },
    /// A notice's receipt or refusal is stored.
    Settled(u64),
    /// A forward request is stored under this id (PROTOCOL.md §12).
    ForwardAccepted(u64),
    /// Where a forward stands.
    ForwardStatus(message::ForwardStatus),
}

/// Replies waiting to be sent, bounded twice. In entries: a peer that sends
/// requests without reading replies loses replies, not relay memory. And in
/// bytes, more tightly: while more than [`MAX_QUEUED_BYTES`] wait, the
/// session asks for no input ([`Session::wants_input`](super::Session::wants_input)),
/// so the relay stops reading a peer whose replies do not drain.
///
/// Every error reply passes through [`Outbox::push`], which is why the
/// operator's log of refusals and garbage ([`OpLog`]) lives here.
#[derive(Debug)]
pub(super) struct Outbox {
    queue: VecDeque<Out>,
    /// What the queued replies take on the wire, at most ([`wire_cost`]).
    bytes: usize,
    pub(super) log: OpLog,
}

/// Most queued replies per session.
const MAX_QUEUED: usize = 256;

/// Bytes of queued replies above which the session takes no input: one
/// manifest of a large batch goes over it, so a peer that asks for it again
/// before reading it waits until it has.
pub(super) const MAX_QUEUED_BYTES: usize = 64 * 1024;

/// The most a reply other than a manifest entry takes on the wire (a grant
/// and its plans count as one: they are rendered from the upload, and an
/// upload has one at a time).
const REPLY_MAX: usize = 64;

/// The most a `ManifestEntry` takes on the wire, with the `FileAttrs`
/// that may precede it (about 20 bytes).
const ENTRY_MAX: usize = message::MAX_NAME_LEN + 96;

/// An upper bound on the bytes `out` takes on the wire.
fn wire_cost(out: &Out) -> usize {
    match out {
        Out::Manifest { batch, next, .. } => {
            (batch.files.len() + 1).saturating_sub(*next as usize) * ENTRY_MAX
        }
        // Two account names of at most 32 bytes, a token, an expiry.
        Out::Authenticated { .. } => 2 * REPLY_MAX,
        // A code, an account name and a few numbers each.
        Out::Deliveries(list) => list.len() * 2 * REPLY_MAX,
        Out::Notices { list, .. } => (list.len() + 1) * 2 * REPLY_MAX,
        // The URL and a frame's header, CRC and COBS.
        Out::PageLink => message::MAX_PAGE_URL_LEN + 16,
        _ => REPLY_MAX,
    }
}

impl Outbox {
    pub(super) fn new(log: OpLog) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            bytes: 0,
            log,
        }
    }

    /// Forgets replies that describe the current upload. They are rendered
    /// from the upload when sent, so once it is replaced they would describe
    /// the new batch instead (found by the relay_session fuzzer).
    pub(super) fn forget_upload_replies(&mut self) {
        self.queue.retain(|o| !matches!(o, Out::Upload(_)));
        self.bytes = self.queue.iter().map(wire_cost).sum();
    }

    /// Nothing waits to be sent.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether so much waits that the session should take no input.
    pub(super) fn is_full(&self) -> bool {
        self.bytes > MAX_QUEUED_BYTES
    }

    /// Forgets every queued reply.
    pub(super) fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }

    /// The next reply to send.
    pub(super) fn pop(&mut self) -> Option<Out> {
        let out = self.queue.pop_front()?;
        self.bytes = self.bytes.saturating_sub(wire_cost(&out));
        Some(out)
    }

    /// Puts the rest of a multi-frame reply back at the head.
    pub(super) fn push_front(&mut self, out: Out) {
        self.bytes += wire_cost(&out);
        self.queue.push_front(out);
    }

    pub(super) fn push(&mut self, out: Out) {
        if let Out::Error {
            code,
            kind,
            retry_after_ms,
        } = out
        {
            self.log.error(code, kind, retry_after_ms);
        }
        if self.queue.len() < MAX_QUEUED {
            self.bytes += wire_cost(&out);
            self.queue.push_back(out);
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
            .queue
            .iter()
            .any(|o| matches!(o, Out::Upload(Reply::Ack(f)) if *f == file))
        {
            self.push(Out::Upload(Reply::Ack(file)));
        }
    }
}
