//! The forwarded batch's bytes, read from the store, and the check that
//! the batch is still live.
//!
//! [`Liveness`] answers "may this forward go on?": the batch's expiry
//! against the wall clock on every call (no I/O), and the store's record of
//! the code at most once per [`RECHECK`] and before every connect (an
//! owner may end a batch before it expires). [`BatchSource`] is the
//! upload machine's `ReadAt` over the batch's blobs, asking [`Liveness`]
//! before each read, so data frames and proofs of ownership alike stop
//! when the batch goes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pickup_proto::storage::ReadAt;

use crate::store::{Batch, BatchId, BlobId, FileContent, Lookup, LookupKey, Store, StoreError};

/// How often a read looks the batch up again in the store.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Why the source could not give the upload machine its bytes.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source batch expired or was ended: the forward cannot finish.
    #[error("the source batch expired or was ended")]
    Expired,
    /// The store failed.
    #[error("the source store failed: {0}")]
    Store(#[from] StoreError),
    /// The forward was told to stop ([`Forward::stop`](super::Forward::stop)).
    #[error("the forward was stopped")]
    Stopped,
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether one batch is still live (see the module docs).
#[derive(Debug)]
pub struct Liveness<'a, S: ?Sized> {
    store: &'a S,
    key: LookupKey,
    id: BatchId,
    expires_at: u64,
    /// When the store last said the batch is live.
    checked_at: Instant,
}

impl<'a, S: Store + ?Sized> Liveness<'a, S> {
    /// Watches `batch`, found in `store` under the code key `key`.
    pub fn new(store: &'a S, key: LookupKey, batch: &Batch) -> Self {
        Liveness {
            store,
            key,
            id: batch.id,
            expires_at: batch.expires_at,
            checked_at: Instant::now(),
        }
    }

    /// `Err(Expired)` once the batch is past its expiry or gone from the
    /// store; the store is asked only if `force` or [`RECHECK`] passed.
    pub fn check(&mut self, force: bool) -> Result<(), SourceError> {
        let now = unix_now();
        if now >= self.expires_at {
            return Err(SourceError::Expired);
        }
        if force || self.checked_at.elapsed() >= RECHECK {
            match self.store.find_by_code(&self.key, now)? {
                // The code names this batch still (a code is never reused
                // while its batch is known, but say so rather than assume).
                Lookup::Live(b) if b.id == self.id => self.expires_at = b.expires_at,
                _ => return Err(SourceError::Expired),
            }
            self.checked_at = Instant::now();
        }
        Ok(())
    }
}

/// The batch's files as the upload machine reads them: by index, from
/// their blobs. Every file is a complete blob (the batch is ready).
#[derive(Debug)]
pub struct BatchSource<'a, S: ?Sized> {
    store: &'a S,
    blobs: Vec<BlobId>,
    live: Liveness<'a, S>,
    stop: Option<&'a AtomicBool>,
}

impl<'a, S: Store + ?Sized> BatchSource<'a, S> {
    /// The source of `batch`; `None` if a file is not complete.
    pub fn new(store: &'a S, key: LookupKey, batch: &Batch) -> Option<Self> {
        let blobs = batch
            .files
            .iter()
            .map(|f| match f.content {
                FileContent::Blob(b) => Some(b),
                FileContent::Partial { .. } => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(BatchSource {
            store,
            blobs,
            live: Liveness::new(store, key, batch),
            stop: None,
        })
    }

    /// Reads fail with [`SourceError::Stopped`] once `stop` is set.
    pub fn stop_on(mut self, stop: Option<&'a AtomicBool>) -> Self {
        self.stop = stop;
        self
    }
}

impl<S: Store + ?Sized> ReadAt for BatchSource<'_, S> {
    type Error = SourceError;

    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        if self.stop.is_some_and(|s| s.load(Ordering::Acquire)) {
            return Err(SourceError::Stopped);
        }
        self.live.check(false)?;
        match self.blobs.get(usize::from(file)) {
            Some(blob) => Ok(self.store.read_blob(*blob, offset, buf)?),
            // The machine reads only the files it was given.
            None => Ok(0),
        }
    }
}
