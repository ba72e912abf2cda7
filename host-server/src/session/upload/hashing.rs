//! Where each receiving file's SHA-1 is.
//!
//! The hasher travels with the file's writes: a write job takes it when the
//! driver is given the job, hashes the bytes it writes (on the driver's
//! thread, so hashing runs beside receiving) and brings it back. A resumed
//! upload's durable prefix is re-hashed from the store by a job before more
//! bytes count, and so is a file whose hash was lost to a failure.

use pickup_proto::hash::Sha1Hasher;
use pickup_proto::message::Kind;
use pickup_proto::ErrorCode;

use super::file::{FileState, Hashing, Receiving};
use super::{Ctx, Reply, Upload};
use crate::jobs::{Complete, HashPrefix, Hashed, Work};

/// Queues a re-hash of the bytes of `r` given to writes so far; writes
/// queued after it take the hasher it brings back.
pub(super) fn rehash(cx: &mut Ctx<'_>, epoch: u64, index: usize, r: &mut Receiving) {
    cx.work.push(Work::HashPrefix(HashPrefix {
        epoch,
        file: index as u16,
        partial: r.partial,
        len: r.received - r.buf.len() as u64,
    }));
    r.hash = Hashing::Rehashing;
}

/// A re-hash has finished.
pub(super) fn on_hashed(up: &mut Upload, cx: &mut Ctx<'_>, h: Hashed) {
    let index = usize::from(h.file);
    let Some(f) = up.files.get_mut(index) else {
        return;
    };
    match &mut f.state {
        FileState::Receiving(r) if r.partial == h.partial => match h.hasher {
            Ok((hasher, found)) if found == h.len => r.hash = Hashing::Home(hasher),
            Ok((hasher, found)) => {
                tracing::error!(
                    file = index,
                    durable = h.len,
                    found,
                    "partial upload is shorter than its durable offset"
                );
                // Continue from what is there; what was taken after it is
                // no longer contiguous.
                up.pending_bytes = up.pending_bytes.saturating_sub(r.buf.len());
                r.buf.clear();
                r.hash = Hashing::Home(hasher);
                r.received = found;
                r.acked = r.acked.min(found);
                r.written = r.written.min(found);
                r.sync_wanted = r.sync_wanted.min(found);
                r.syncing_to = r.syncing_to.min(found);
                r.rewound_at = Some(found);
                let (epoch, file) = (up.epoch, h.file);
                up.pending_bytes = up
                    .pending_bytes
                    .saturating_sub(cx.work.forget(|q| super::is_write_of(q, epoch, file)));
                cx.out.upload(Reply::Rewind {
                    file: h.file,
                    offset: found,
                });
            }
            Err(e) => {
                tracing::error!(file = index, "re-hashing failed: {e}");
                cx.out.error(ErrorCode::Internal, Kind::Data);
                up.pending_bytes = up.pending_bytes.saturating_sub(r.buf.len());
                r.buf.clear();
                r.received = r.acked.min(h.len);
                r.written = r.written.min(r.received);
                r.sync_wanted = r.sync_wanted.min(r.received);
                r.syncing_to = r.syncing_to.min(r.received);
                r.hash = Hashing::Unknown;
                let (epoch, file) = (up.epoch, h.file);
                up.pending_bytes = up
                    .pending_bytes
                    .saturating_sub(cx.work.forget(|q| super::is_write_of(q, epoch, file)));
            }
        },
        FileState::Verifying {
            partial,
            hash,
            acked,
        } if *partial == h.partial => match h.hasher {
            // The prefix a resumed file's writes continue, or the whole file.
            Ok((hasher, found)) if found == h.len => *hash = Hashing::Home(hasher),
            // A short file: its SHA-1 cannot match, and the verdict says so.
            Ok(_) => *hash = Hashing::Home(Box::new(Sha1Hasher::new())),
            Err(e) => {
                tracing::error!(file = index, "re-hashing failed: {e}");
                cx.out.error(ErrorCode::Internal, Kind::Data);
                let (epoch, file) = (up.epoch, h.file);
                cx.work.forget(
                    |q| matches!(q, Work::Complete(c) if c.epoch == epoch && c.file.index == file),
                );
                f.state = FileState::Receiving(Receiving::resumed(*partial, *acked));
            }
        },
        _ => {}
    }
}

impl Upload {
    /// The hasher a write of `file` takes along, if it is here.
    pub(in crate::session) fn lend_hasher(&mut self, file: u16) -> Option<Box<Sha1Hasher>> {
        let hash = match &mut self.files.get_mut(usize::from(file))?.state {
            FileState::Receiving(r) => &mut r.hash,
            FileState::Verifying { hash, .. } => hash,
            _ => return None,
        };
        match core::mem::replace(hash, Hashing::Away) {
            Hashing::Home(h) => Some(h),
            other => {
                // Bytes written without it: their hash must be rebuilt.
                *hash = match other {
                    Hashing::Rehashing => Hashing::Rehashing,
                    _ => Hashing::Unknown,
                };
                None
            }
        }
    }

    /// Gives a verdict job its hasher, or, if the hash is not here, the
    /// re-hash of the whole file to run first.
    pub(in crate::session) fn arm_complete(&mut self, c: &mut Complete) -> Option<HashPrefix> {
        let size = self.files.get(usize::from(c.file.index))?.size;
        let f = self.files.get_mut(usize::from(c.file.index))?;
        let FileState::Verifying { hash, .. } = &mut f.state else {
            return None;
        };
        match core::mem::replace(hash, Hashing::Away) {
            Hashing::Home(h) => {
                c.hasher = Some(h);
                None
            }
            _ => {
                *hash = Hashing::Rehashing;
                Some(HashPrefix {
                    epoch: c.epoch,
                    file: c.file.index,
                    partial: c.partial,
                    len: size,
                })
            }
        }
    }
}
