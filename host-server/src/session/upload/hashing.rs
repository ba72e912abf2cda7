//! How an upload's SHA-1 is computed: in line as bytes arrive, by a
//! follower thread reading the partial back, or by re-hashing a resumed
//! upload's durable prefix.

use std::sync::Arc;

use pickup_proto::hash::Sha1Hasher;
use pickup_proto::message::Kind;
use pickup_proto::ErrorCode;

use super::super::outbox::Outbox;
#[cfg(doc)]
use super::super::Session;
use super::file::Receiving;
use super::Reply;
use crate::relay::Relay;
use crate::store::{PartialId, Store, StoreError};

/// Buffer for re-hashing a resumed prefix or checking a proof.
pub(super) const READ_CHUNK: usize = 256 * 1024;

/// SHA-1 of the bytes received so far, checked against the announcement at
/// the end. (Deduplication compares bytes, so nothing else is hashed.)
#[derive(Clone, Default)]
pub(super) struct Hashers {
    pub(super) sha1: Sha1Hasher,
}

impl Hashers {
    pub(super) fn update(&mut self, data: &[u8]) {
        self.sha1.update(data);
    }
}

/// How a file's SHA-1 is being computed.
pub(super) enum Hashing {
    /// Not yet: a resumed upload's durable prefix is re-hashed first.
    Unknown,
    /// In line, as bytes are written.
    Inline(Box<Hashers>),
    /// By a [`Follower`] thread reading the bytes back.
    Behind(Follower),
}

/// Files at least this large are hashed by a [`Follower`] when the driver
/// allows it ([`Session::offload_hashing`]): hashing is the largest cost of
/// receiving, and a second core can do it while this one receives.
pub(super) const FOLLOW_MIN_SIZE: u64 = 8 << 20;

/// Bytes the follower reads per call.
pub(super) const FOLLOW_CHUNK: usize = 1 << 20;

/// A thread that hashes a partial upload by reading back what the session
/// wrote, up to what it was told is written. The file is the queue: no byte
/// is copied between the threads, and the pages are still in the cache.
pub(super) struct Follower {
    pub(super) shared: Arc<FollowShared>,
    pub(super) thread: Option<std::thread::JoinHandle<Result<(Sha1Hasher, u64), StoreError>>>,
    /// `written` when the thread was last woken.
    pub(super) woken_at: u64,
}

pub(super) struct FollowShared {
    /// Bytes the thread may hash (written, contiguous from 0).
    pub(super) written: core::sync::atomic::AtomicU64,
    /// Hash up to `written`, then stop.
    pub(super) finish: core::sync::atomic::AtomicBool,
    /// Stop now; the result is not wanted.
    pub(super) stop: core::sync::atomic::AtomicBool,
}

impl Follower {
    pub(super) fn start(store: Arc<dyn Store>, partial: PartialId) -> std::io::Result<Follower> {
        use core::sync::atomic::{AtomicBool, AtomicU64};
        let shared = Arc::new(FollowShared {
            written: AtomicU64::new(0),
            finish: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("pickup-hash".into())
            .spawn(move || follow(&*store, partial, &theirs))?;
        Ok(Follower {
            shared,
            thread: Some(thread),
            woken_at: 0,
        })
    }

    /// The first `written` bytes are in the store.
    pub(super) fn advance(&mut self, written: u64) {
        use core::sync::atomic::Ordering;
        self.shared.written.store(written, Ordering::Release);
        // Waking costs a system call: do it once per chunk's worth.
        if written - self.woken_at >= FOLLOW_CHUNK as u64 {
            self.woken_at = written;
            self.wake();
        }
    }

    pub(super) fn wake(&self) {
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Waits for the digest of the first `size` bytes.
    pub(super) fn finish(mut self, size: u64) -> Result<Sha1Hasher, StoreError> {
        use core::sync::atomic::Ordering;
        self.shared.written.store(size, Ordering::Release);
        self.shared.finish.store(true, Ordering::Release);
        self.wake();
        let Some(thread) = self.thread.take() else {
            return Err(StoreError::Corrupt("hash follower gone".into()));
        };
        match thread.join() {
            Ok(Ok((h, hashed))) if hashed == size => Ok(h),
            Ok(Ok((_, hashed))) => Err(StoreError::Corrupt(format!(
                "hashed {hashed} of {size} bytes"
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Corrupt("hash follower panicked".into())),
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        // Not finished (rejected, taken over, session gone): let the thread
        // end on its own; nobody waits for it.
        self.shared
            .stop
            .store(true, core::sync::atomic::Ordering::Release);
        self.wake();
    }
}

/// The follower thread: hashes `partial` up to `written` as it grows.
pub(super) fn follow(
    store: &dyn Store,
    partial: PartialId,
    shared: &FollowShared,
) -> Result<(Sha1Hasher, u64), StoreError> {
    use core::sync::atomic::Ordering;
    let mut h = Sha1Hasher::new();
    let mut buf = vec![0u8; FOLLOW_CHUNK];
    let mut hashed = 0u64;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return Ok((h, hashed));
        }
        // Read `finish` before `written`: once finishing, `written` is final.
        let finishing = shared.finish.load(Ordering::Acquire);
        let written = shared.written.load(Ordering::Acquire);
        if hashed < written {
            let want = usize::try_from(written - hashed)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = store.read_partial(partial, hashed, &mut buf[..want])?;
            if n == 0 {
                return Err(StoreError::Corrupt(format!(
                    "partial {} ends at {hashed}, {written} were written",
                    partial.0
                )));
            }
            h.update(&buf[..n]);
            hashed += n as u64;
        } else if finishing {
            return Ok((h, hashed));
        } else {
            std::thread::park();
        }
    }
}

/// Rebuilds the hash state of a resumed upload from its durable prefix.
/// `false` if the prefix could not be read back whole: the upload then
/// continues from what is there, and the terminal is told to rewind.
pub(super) fn rehash(relay: &Relay, index: usize, r: &mut Receiving, out: &mut Outbox) -> bool {
    let mut h = Hashers::default();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut offset = 0u64;
    while offset < r.received {
        let want = usize::try_from(r.received - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        match relay
            .store
            .read_partial(r.partial, offset, &mut buf[..want])
        {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                offset += n as u64;
            }
            Err(e) => {
                tracing::error!(file = index, "re-hashing failed: {e}");
                out.error(ErrorCode::Internal, Kind::Data);
                return false;
            }
        }
    }
    r.hash = Hashing::Inline(Box::new(h));
    if offset == r.received {
        return true;
    }
    tracing::error!(
        file = index,
        durable = r.received,
        found = offset,
        "partial upload is shorter than its durable offset"
    );
    r.received = offset;
    r.acked = r.acked.min(offset);
    r.rewound_at = Some(offset);
    out.upload(Reply::Rewind {
        file: index as u16,
        offset,
    });
    false
}
