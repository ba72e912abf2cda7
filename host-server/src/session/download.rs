//! The download half of a session: lookups by code, manifests, and the
//! credit-based stream of `Data` frames.
//!
//! Every `Fetch` and `Read` looks the code up again (reads are authorised
//! per request), through the rate limiter: a lookup runs only while the
//! peer's and the relay's buckets hold a token, and a failed one spends it.
//! A `Fetch` of a ready batch whose manifest some session is sending is
//! answered with that shared manifest instead of a store lookup (after the
//! limiter all the same, so a limited guesser learns nothing from it).
//! A stream's bytes are read ahead of its frames by jobs, [`READ_LEN`]
//! bytes per job while less than [`READ_AHEAD`] bytes wait, whatever
//! credit the terminal grants.
//! On a length-prefixed link the driver may take each `Data` frame as a
//! [`Transmit::Split`]: its payload a slice of the read-ahead buffer, so
//! the bytes go from there to the socket with no copy into a frame.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use pickup_proto::frame::Framing;
use pickup_proto::message::{self, Ack, Fetch, Kind, Read};
use pickup_proto::{Code, ErrorCode, Instant};

use super::{Out, Session, Transmit};
use crate::jobs::{BlobRead, Found, LookupFor, ReadBlob, ReadBuf, Work};
use crate::metrics::Lookup;
use crate::relay::unix_secs;
use crate::store::{Batch, BatchId, BlobId, FileContent, StoreError};

/// Bytes of a stream read ahead of its frames: a new read is queued while
/// less than this waits in memory beyond the frame being sent.
const READ_AHEAD: usize = 4 * 1024 * 1024;

/// Bytes read per read job.
const READ_LEN: usize = 2 * 1024 * 1024;

/// The file offsets reads end at a multiple of.
const READ_ALIGN: u64 = 4096;

/// Sent read-ahead buffers kept to read into again once the driver has
/// written their last split frame (a buffer read into again costs no
/// zeroing; see `jobs::read`).
const RETIRED: usize = 2;

/// A download stream: `Data` frames of one blob from `next` up to the credit.
#[derive(Debug)]
pub(super) struct Stream {
    /// Tells this stream's reads from an earlier one's.
    pub(super) id: u64,
    file: u16,
    blob: BlobId,
    size: u64,
    next: u64,
    credit_end: u64,
    /// The batch's expiry (Unix seconds): nothing is served from then on.
    expires_at: u64,
    /// The stored batch read (`None` for named files): what a terminal's
    /// progress on a delivery is recorded against.
    pub(super) batch: Option<BatchId>,
    /// Bytes read ahead, in order from `next`: (offset, bytes).
    chunks: VecDeque<(u64, Bytes)>,
    /// The end of what is read or being read.
    read_end: u64,
    /// A read job is queued or running.
    reading: bool,
    /// The buffers of `chunks`, in the same order.
    bufs: VecDeque<Arc<ReadBuf>>,
    /// Sent chunks' buffers, oldest first: read into again once nothing
    /// else holds them (split frames the driver has not written yet may).
    retired: VecDeque<Arc<ReadBuf>>,
}

impl Stream {
    /// Bytes read ahead from `next` on.
    fn ready(&self) -> u64 {
        self.chunks
            .back()
            .map_or(0, |(at, b)| at + b.len() as u64 - self.next)
    }

    /// Whether a `Data` frame can be sent now.
    pub(super) fn can_send(&self) -> bool {
        self.next < self.credit_end.min(self.size) && self.ready() > 0
    }
}

impl Session {
    /// Tells the operator a download begins: once per session and ready
    /// batch, however often the terminal fetches it again. The batch is
    /// named by its id; its code is a secret and never logged.
    fn log_fetch(&mut self, batch: &Batch) {
        if batch.ready() && self.fetch_logged != Some(batch.id) {
            self.fetch_logged = Some(batch.id);
            self.relay.metrics().download_started();
            tracing::info!(
                session = self.id,
                peer = %self.peer,
                batch = batch.id.0,
                files = batch.files.len(),
                bytes = batch.total_size(),
                "batch fetched"
            );
        }
    }

    /// Queues a lookup of `code` for `to`, or the refusal if the rate limit says no.
    fn lookup_code(&mut self, now: Instant, code: Code, to: LookupFor) {
        let kind = lookup_kind(to);
        if let Err(wait) = self.relay.check_lookup(&self.peer, now) {
            self.relay.metrics().lookup(Lookup::RateLimited);
            return self.out.error_retry(ErrorCode::RateLimited, kind, wait);
        }
        self.work.push(Work::FindCode {
            code,
            now_secs: unix_secs(now),
            to,
        });
    }

    pub(super) fn on_fetch(&mut self, now: Instant, f: Fetch) {
        if let Err(wait) = self.relay.check_lookup(&self.peer, now) {
            self.relay.metrics().lookup(Lookup::RateLimited);
            return self
                .out
                .error_retry(ErrorCode::RateLimited, Kind::Fetch, wait);
        }
        // A ready batch whose manifest is being sent right now (to this
        // peer or another) is served from memory: a terminal that asks
        // again and again costs no store lookup and no copy.
        if let Some(batch) = self.relay.sending_manifest(&f.code, unix_secs(now)) {
            self.relay.metrics().lookup(Lookup::Ok);
            self.started = true;
            self.found_code = Some(f.code);
            self.log_fetch(&batch);
            return self.out.push(Out::Manifest {
                batch,
                next: 0,
                attrs_sent: false,
            });
        }
        self.work.push(Work::FindCode {
            code: f.code,
            now_secs: unix_secs(now),
            to: LookupFor::Fetch,
        });
    }

    pub(super) fn on_read(&mut self, now: Instant, r: Read) {
        // A new Read ends the stream before it, refused or not: the terminal
        // has asked for something else, and data for the old read would
        // answer a question it no longer asks.
        self.stream = None;
        self.lookup_code(now, r.code, LookupFor::Read(r));
    }

    /// A code was looked up for a `Fetch` or a `Read`.
    pub(super) fn on_found_code(&mut self, to: LookupFor, found: Result<Found, StoreError>) {
        let kind = lookup_kind(to);
        let batch = match found {
            Ok(Found::Live(batch, _)) => batch,
            Ok(found) => {
                self.relay.failed_lookup(&self.peer, self.clock);
                let refusal = if matches!(found, Found::Expired) {
                    ErrorCode::Expired
                } else {
                    ErrorCode::UnknownCode
                };
                return self.out.error(refusal, kind);
            }
            Err(e) => return self.internal(kind, &e),
        };
        let r = match to {
            LookupFor::Fetch => {
                self.log_fetch(&batch);
                return self.out.push(Out::Manifest {
                    batch: self.relay.share_manifest(batch),
                    next: 0,
                    attrs_sent: false,
                });
            }
            LookupFor::Read(r) => r,
        };
        self.start_stream(&batch, r);
    }

    /// Starts streaming the file a `Read` asks for, from a batch the
    /// session may read.
    pub(super) fn start_stream(&mut self, batch: &Batch, r: Read) {
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
        self.next_stream += 1;
        self.stream = Some(Stream {
            id: self.next_stream,
            file: r.file,
            blob,
            size: f.size,
            next: r.offset,
            credit_end: r.offset.saturating_add(u64::from(r.len)),
            expires_at: batch.expires_at,
            batch: Some(batch.id),
            chunks: VecDeque::new(),
            bufs: VecDeque::new(),
            read_end: r.offset,
            reading: false,
            retired: VecDeque::new(),
        });
        self.read_ahead();
    }

    /// `batch` is kept until `expires_at` now (its target is reading it):
    /// a stream of it serves until then.
    pub(super) fn extend_stream(&mut self, batch: BatchId, expires_at: u64) {
        if let Some(s) = self.stream.as_mut().filter(|s| s.batch == Some(batch)) {
            s.expires_at = s.expires_at.max(expires_at);
        }
    }

    /// A downloader's `Ack` extends the credit of the current stream.
    pub(super) fn on_download_ack(&mut self, a: Ack) {
        if let Some(s) = self.stream.as_mut().filter(|s| s.file == a.file) {
            s.credit_end = s
                .credit_end
                .max(a.offset.saturating_add(u64::from(a.window)));
        }
    }

    /// Queues the next read of the stream once less than [`READ_AHEAD`]
    /// bytes wait to be sent.
    fn read_ahead(&mut self) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        if s.reading || s.read_end >= s.size || s.ready() >= READ_AHEAD as u64 {
            return;
        }
        // Reads end on a 4 KiB boundary of the file (a stream resumed at
        // any offset reads up to the next one first), so a store that reads
        // past the page cache reads the rest straight into the buffers.
        let len = usize::try_from(s.size - s.read_end)
            .unwrap_or(usize::MAX)
            .min(READ_LEN - (s.read_end % READ_ALIGN) as usize);
        s.reading = true;
        let buf = s.reclaim();
        self.work.push(Work::ReadBlob(ReadBlob {
            stream: s.id,
            blob: s.blob,
            offset: s.read_end,
            len,
            buf,
        }));
        s.read_end += len as u64;
    }

    /// A read ahead has finished.
    pub(super) fn on_blob_read(&mut self, read: BlobRead) {
        let Some(s) = self.stream.as_mut().filter(|s| s.id == read.stream) else {
            return;
        };
        s.reading = false;
        if let Err(e) = read.result {
            self.stream = None;
            // The blob went away under the stream: its batch expired.
            let code = match e {
                StoreError::NotFound => ErrorCode::Expired,
                e => {
                    tracing::error!(session = self.id, "read failed: {e}");
                    ErrorCode::Internal
                }
            };
            return self.out.error(code, Kind::Read);
        }
        if !read.bytes.bytes().is_empty() {
            let (bytes, buf) = read.bytes.share();
            s.chunks.push_back((read.offset, bytes));
            s.bufs.push_back(buf);
        }
        self.read_ahead();
    }

    /// The next `Data` frame of the stream, from the bytes read ahead:
    /// encoded into `out` whole, or, with `split` on a length-prefixed
    /// link, as a head in `out` around a slice of the read-ahead buffer.
    pub(super) fn poll_data(&mut self, out: &mut [u8], split: bool) -> Option<Transmit> {
        let format = self.format();
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
            return self.transmit(out, split);
        }
        let (at, chunk) = s.chunks.front()?;
        let from = usize::try_from(s.next - at).ok()?;
        let avail = &chunk[from..];
        let want = usize::try_from(end - s.next)
            .unwrap_or(usize::MAX)
            .min(avail.len());
        let encoded = if split && format.framing == Framing::LengthPrefixed {
            message::encode_data_split(s.file, s.next, &avail[..want], format.max_frame, out).map(
                |f| {
                    let payload = chunk.slice(from..from + f.payload_len);
                    let frame = Transmit::Split {
                        head_len: f.head_len,
                        payload,
                        trailer: f.trailer,
                    };
                    (f.payload_len, frame)
                },
            )
        } else {
            let mut sent = 0;
            message::encode_data_with(s.file, s.next, want, format, out, |room| {
                room.copy_from_slice(&avail[..room.len()]);
                sent = room.len();
                Some(sent)
            })
            .map(|n| (sent, Transmit::Whole(n)))
        };
        match encoded {
            Ok((sent, frame)) => {
                let chunk_done = from + sent == chunk.len();
                s.next += sent as u64;
                let progress = s.batch.map(|b| (b, s.file, s.next));
                if s.next == s.size {
                    self.relay.metrics().file_downloaded();
                }
                if chunk_done {
                    s.retire_front();
                }
                if let Some((batch, file, end)) = progress {
                    self.note_progress(batch, file, end);
                }
                self.read_ahead();
                Some(frame)
            }
            Err(_) => {
                self.stream = None;
                self.out.error(ErrorCode::Internal, Kind::Read);
                self.transmit(out, split)
            }
        }
    }
}

impl Stream {
    /// The front chunk is sent: keep its buffer to read into again.
    fn retire_front(&mut self) {
        self.chunks.pop_front();
        if let Some(buf) = self.bufs.pop_front() {
            if self.retired.len() == RETIRED {
                self.retired.pop_front();
            }
            self.retired.push_back(buf);
        }
    }

    /// A retired buffer nothing else holds any more, to read into again;
    /// an empty one (the read job allocates) if every one is still held.
    fn reclaim(&mut self) -> ReadBuf {
        for _ in 0..self.retired.len() {
            let Some(buf) = self.retired.pop_front() else {
                break;
            };
            match Arc::try_unwrap(buf) {
                Ok(buf) => return buf,
                Err(held) => self.retired.push_back(held),
            }
        }
        ReadBuf::default()
    }
}

fn lookup_kind(to: LookupFor) -> Kind {
    match to {
        LookupFor::Fetch => Kind::Fetch,
        LookupFor::Read(_) => Kind::Read,
    }
}
