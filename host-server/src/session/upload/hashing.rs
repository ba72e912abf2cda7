//! Where each receiving file's SHA-1 is, and how received bytes get hashed.
//!
//! A file's running SHA-1 covers its bytes in order, and knows how many
//! ([`Hashing::Home`]). While it is here and covers every byte taken, the
//! session hashes each frame's bytes as it takes them, while they are in
//! the CPU's cache from the socket, and the writes only write. A sync
//! records the hasher's state when it is wanted.
//!
//! When the hash is not here, bytes taken meanwhile wait: a resumed
//! upload's durable prefix is re-hashed by a job before more bytes count,
//! and so is a file whose hash was lost, before its verdict. A write given
//! out while the hasher is here covering the bytes before the write's (or
//! some of the write's) takes it and hashes its bytes right after writing
//! them (`jobs::receive`); its result brings the hasher back. A file's
//! writes run one at a time, in order, so the writes after a re-hash carry
//! the hasher until it has caught up with the bytes given to writes; it
//! then hashes what is buffered, and the session takes over again. A write
//! given out while the hash is being rebuilt, or lost to a failure, leaves
//! its bytes unhashed, and the hash is rebuilt from the store before the
//! verdict.

use crate::running_sha1::RunningSha1;
use pickup_proto::message::Kind;
use pickup_proto::ErrorCode;

use super::durability::release;
use super::file::{FileState, Hashing, Receiving};
use super::{Ctx, Reply, Upload};
use crate::jobs::{Complete, HashPrefix, Hashed, Work, Write};
use crate::store::PartialId;

/// Whether a verdict job can start ([`Upload::arm_complete`]).
pub(in crate::session) enum Armed {
    /// It carries the file's hasher (or none, if the file is no longer
    /// being verified: the verdict is then a mismatch).
    Ready,
    /// The hash is not here: re-hash the whole file first.
    Rehash(HashPrefix),
}

/// Queues a re-hash of the bytes of `r` given to writes so far (the writes
/// queued before it run first; the later ones find the hasher here).
pub(super) fn rehash(cx: &mut Ctx<'_>, epoch: u64, index: usize, r: &mut Receiving) {
    cx.work.push(Work::HashPrefix(HashPrefix {
        epoch,
        file: index as u16,
        partial: r.partial,
        len: r.received - r.taken.len() as u64,
    }));
    r.hash = Hashing::Rehashing;
}

impl Upload {
    /// Gives a write that is being given out the file's hasher, if it is
    /// here and covers the bytes before the write's, or some of them.
    /// A hasher short of the write's first byte can no longer cover the
    /// file (bytes before it were dropped): the hash is rebuilt before the
    /// verdict. One already past the write's bytes stays here.
    pub(in crate::session) fn arm_write(&mut self, w: &mut Write) {
        if w.epoch != self.epoch || w.len() == 0 {
            return;
        }
        let hash = match self
            .files
            .get_mut(usize::from(w.file))
            .map(|f| &mut f.state)
        {
            Some(FileState::Receiving(r)) if r.partial == w.partial => &mut r.hash,
            Some(FileState::Verifying { partial, hash, .. }) if *partial == w.partial => hash,
            _ => return,
        };
        let end = w.end();
        match hash {
            Hashing::Home { at, .. } if *at < w.offset => *hash = Hashing::Unknown,
            Hashing::Home { at, .. } if *at < end => {
                let at = *at;
                if let Hashing::Home { hasher, .. } = core::mem::replace(hash, Hashing::Away) {
                    w.hasher = Some((hasher, at));
                }
            }
            _ => {}
        }
    }

    /// A write brings back `file`'s hasher, covering the first `end` bytes.
    pub(super) fn hasher_home(
        &mut self,
        file: u16,
        partial: PartialId,
        hasher: Box<RunningSha1>,
        end: u64,
    ) {
        match self.files.get_mut(usize::from(file)).map(|f| &mut f.state) {
            Some(FileState::Receiving(r))
                if r.partial == partial && matches!(r.hash, Hashing::Away) =>
            {
                r.hash = if end <= r.received {
                    r.midstate = hasher.midstate();
                    Hashing::Home { hasher, at: end }
                } else {
                    // The file went back to an earlier offset (a failed
                    // write) while these bytes were hashed: they may be
                    // sent anew.
                    Hashing::Unknown
                };
                catch_up(r);
            }
            Some(FileState::Verifying {
                partial: p, hash, ..
            }) if *p == partial && matches!(hash, Hashing::Away) => {
                *hash = Hashing::Home { hasher, at: end };
            }
            _ => {}
        }
    }

    /// Gives a verdict job its hasher once the file's every byte is hashed,
    /// or says what must happen first.
    pub(in crate::session) fn arm_complete(&mut self, c: &mut Complete) -> Armed {
        let Some(f) = self.files.get_mut(usize::from(c.file.index)) else {
            return Armed::Ready;
        };
        let size = f.size;
        let FileState::Verifying { hash, .. } = &mut f.state else {
            return Armed::Ready;
        };
        if matches!(hash, Hashing::Home { at, .. } if *at == size) {
            if let Hashing::Home { hasher, .. } = core::mem::replace(hash, Hashing::Away) {
                c.hasher = Some(hasher);
            }
            return Armed::Ready;
        }
        // Not here, or not over every byte (the file's writes, which run
        // before the verdict, brought back what they had).
        *hash = Hashing::Rehashing;
        Armed::Rehash(HashPrefix {
            epoch: c.epoch,
            file: c.file.index,
            partial: c.partial,
            len: size,
        })
    }
}

/// A hasher here that covers every byte given to writes hashes the bytes
/// still buffered, so the session hashes the next ones as it takes them
/// (until then, the writes that follow carry it).
fn catch_up(r: &mut Receiving) {
    if let Hashing::Home { hasher, at } = &mut r.hash {
        if !r.taken.is_empty() && *at == r.received - r.taken.len() as u64 {
            for piece in r.taken.iter() {
                hasher.update(piece);
            }
            *at = r.received;
        }
    }
}

/// A re-hash has finished.
pub(super) fn on_hashed(up: &mut Upload, cx: &mut Ctx<'_>, h: Hashed) {
    let index = usize::from(h.file);
    let Some(f) = up.files.get_mut(index) else {
        return;
    };
    match &mut f.state {
        FileState::Receiving(r) if r.partial == h.partial => match h.hasher {
            Ok((hasher, found)) if found == h.len => {
                r.midstate = hasher.midstate();
                r.hash = Hashing::Home { hasher, at: found };
                catch_up(r);
            }
            Ok((hasher, found)) => {
                tracing::error!(
                    file = index,
                    durable = h.len,
                    found,
                    "partial upload is shorter than its durable offset"
                );
                // Continue from what is there; what was taken after it is
                // no longer contiguous.
                release(&mut up.pending_bytes, &mut up.spare, &mut r.taken);
                r.midstate = hasher.midstate();
                r.hash = Hashing::Home { hasher, at: found };
                r.received = found;
                r.forget_midstate_past_received();
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
                release(&mut up.pending_bytes, &mut up.spare, &mut r.taken);
                r.received = r.acked.min(h.len);
                r.forget_midstate_past_received();
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
            Ok((hasher, found)) if found == h.len => *hash = Hashing::Home { hasher, at: found },
            // A short file: its SHA-1 cannot match, and the verdict says so.
            Ok(_) => {
                *hash = Hashing::Home {
                    hasher: Box::new(RunningSha1::new()),
                    at: h.len,
                }
            }
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
