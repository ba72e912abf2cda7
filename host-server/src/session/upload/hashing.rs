//! Where each receiving file's SHA-1 is, and hashing what was written.
//!
//! A file's running SHA-1 covers its bytes in order, and knows how many
//! ([`Hashing::Home`]). Bytes are hashed after their write has finished:
//! the write hands its buffer back to the upload's hash queue, and one job
//! at a time, beside the ordered work, takes a file's hasher and every
//! written buffer of it that follows on, and brings them back. So one
//! chunk is hashed while the next is written, and a hasher that fell
//! behind takes all that waits in one job (a round trip through the
//! session per buffer left the hashing thread idle between buffers). A buffer the hasher already covers (a re-hash from the
//! store overtook it) is skipped; one past it (bytes dropped after a
//! failure) makes the hash unknown. A resumed upload's durable prefix is
//! re-hashed from the store by a job before more bytes count, and so is a
//! file whose hash was lost to a failure.

use std::collections::VecDeque;

use crate::running_sha1::RunningSha1;
use pickup_proto::message::Kind;
use pickup_proto::ErrorCode;

use super::durability::{MAX_SPARE, WRITE_CHUNK};
use super::file::{FileState, Hashing, Receiving};
use super::{Ctx, Reply, Upload};
use crate::jobs::{BytesHashed, Complete, HashBytes, HashPrefix, Hashed, Work};
use crate::store::PartialId;

/// Written bytes of a file, waiting to be hashed.
#[derive(Debug)]
pub(super) struct ToHash {
    file: u16,
    partial: PartialId,
    /// The file offset of `bytes[0]`.
    offset: u64,
    bytes: Vec<u8>,
}

/// Whether a verdict job can start ([`Upload::arm_complete`]).
pub(in crate::session) enum Armed {
    /// It carries the file's hasher (or none, if the file is no longer
    /// being verified: the verdict is then a mismatch).
    Ready,
    /// The file's last bytes are still being hashed.
    Wait,
    /// The hash is not here: re-hash the whole file first.
    Rehash(HashPrefix),
}

/// Queues a re-hash of the bytes of `r` given to writes so far; written
/// bytes it covers are then skipped by the hash queue.
pub(super) fn rehash(cx: &mut Ctx<'_>, epoch: u64, index: usize, r: &mut Receiving) {
    cx.work.push(Work::HashPrefix(HashPrefix {
        epoch,
        file: index as u16,
        partial: r.partial,
        len: r.received - r.buf.len() as u64,
    }));
    r.hash = Hashing::Rehashing;
}

/// Gives a buffer back: its bytes no longer wait, and it may be filled again.
fn release(pending: &mut usize, spare: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    *pending = pending.saturating_sub(buf.len());
    buf.clear();
    if spare.len() < MAX_SPARE && buf.capacity() >= WRITE_CHUNK {
        spare.push(buf);
    }
}

/// What to do with the first written bytes of a file in the hash queue.
enum Next {
    /// Hash them: the file's hasher is here.
    Hash,
    /// Wait: the hasher is with a job.
    Wait,
    /// Drop them: already covered, or no longer wanted.
    Drop,
}

impl Upload {
    /// A write has finished: its bytes wait to be hashed.
    pub(super) fn queue_hash(
        &mut self,
        file: u16,
        partial: PartialId,
        offset: u64,
        bytes: Vec<u8>,
    ) {
        self.to_hash.push_back(ToHash {
            file,
            partial,
            offset,
            bytes,
        });
    }

    /// Gives back a buffer whose bytes are no longer wanted.
    pub(super) fn release(&mut self, buf: Vec<u8>) {
        release(&mut self.pending_bytes, &mut self.spare, buf);
    }

    /// Drops the written bytes of `file` waiting to be hashed (the file
    /// takes its bytes again from an earlier offset).
    pub(super) fn forget_hashes(&mut self, file: u16) {
        let (pending, spare) = (&mut self.pending_bytes, &mut self.spare);
        let queue = core::mem::take(&mut self.to_hash);
        self.to_hash = queue
            .into_iter()
            .filter_map(|t| {
                if t.file == file {
                    release(pending, spare, t.bytes);
                    None
                } else {
                    Some(t)
                }
            })
            .collect::<VecDeque<_>>();
    }

    /// Whether written bytes of `file` wait to be hashed.
    fn hash_queued(&self, file: u16) -> bool {
        self.to_hash.iter().any(|t| t.file == file)
    }

    /// The next hash job: the first written bytes of a file whose hasher is
    /// here (a file whose hasher is away keeps its later bytes waiting).
    pub(in crate::session) fn next_hash(&mut self) -> Option<HashBytes> {
        let mut waiting: Vec<u16> = Vec::new();
        let mut i = 0;
        while let Some(t) = self.to_hash.get(i) {
            if waiting.contains(&t.file) {
                i += 1;
                continue;
            }
            let (file, offset) = (t.file, t.offset);
            let end = offset + t.bytes.len() as u64;
            let hash = match self.files.get_mut(usize::from(file)).map(|f| &mut f.state) {
                Some(FileState::Receiving(r)) if r.partial == t.partial => Some(&mut r.hash),
                Some(FileState::Verifying { partial, hash, .. }) if *partial == t.partial => {
                    Some(hash)
                }
                _ => None,
            };
            let next = match hash {
                None | Some(Hashing::Unknown) => Next::Drop,
                Some(Hashing::Away | Hashing::Rehashing) => Next::Wait,
                Some(Hashing::Home { at, .. }) if *at >= end => Next::Drop,
                Some(h @ Hashing::Home { .. }) => {
                    if matches!(h, Hashing::Home { at, .. } if *at < offset) {
                        // Bytes before these were dropped: hash anew.
                        *h = Hashing::Unknown;
                        Next::Drop
                    } else {
                        Next::Hash
                    }
                }
            };
            match next {
                Next::Wait => {
                    waiting.push(file);
                    i += 1;
                }
                Next::Drop => {
                    let t = self.to_hash.remove(i)?;
                    self.release(t.bytes);
                }
                Next::Hash => {
                    let t = self.to_hash.remove(i)?;
                    let (partial, mut bufs) = (t.partial, vec![t.bytes]);
                    let mut next_at = end;
                    // The file's later buffers that follow on, in order:
                    // hashed by the same job.
                    let mut j = i;
                    while let Some(u) = self.to_hash.get(j) {
                        if u.file != file {
                            j += 1;
                            continue;
                        }
                        if u.partial != partial || u.offset != next_at {
                            break;
                        }
                        let u = self.to_hash.remove(j)?;
                        next_at += u.bytes.len() as u64;
                        bufs.push(u.bytes);
                    }
                    let hash = match &mut self.files[usize::from(file)].state {
                        FileState::Receiving(r) => &mut r.hash,
                        FileState::Verifying { hash, .. } => hash,
                        _ => return None,
                    };
                    let Hashing::Home { hasher, at } = core::mem::replace(hash, Hashing::Away)
                    else {
                        return None;
                    };
                    return Some(HashBytes {
                        epoch: self.epoch,
                        file,
                        partial,
                        offset,
                        skip: (at - offset) as usize,
                        bufs,
                        hasher,
                    });
                }
            }
        }
        None
    }

    /// Written bytes are hashed: the hasher comes home, the buffers are free.
    pub(super) fn on_bytes_hashed(&mut self, mut h: BytesHashed) {
        for buf in h.bufs.drain(..) {
            release(&mut self.pending_bytes, &mut self.spare, buf);
        }
        let (hash, taken, midstate) = match self
            .files
            .get_mut(usize::from(h.file))
            .map(|f| &mut f.state)
        {
            Some(FileState::Receiving(r)) if r.partial == h.partial => {
                (&mut r.hash, r.received, Some(&mut r.midstate))
            }
            Some(FileState::Verifying { partial, hash, .. }) if *partial == h.partial => {
                (hash, u64::MAX, None)
            }
            _ => return,
        };
        if matches!(hash, Hashing::Away) {
            *hash = if h.end <= taken {
                if let Some(m) = midstate {
                    *m = h.hasher.midstate();
                }
                Hashing::Home {
                    hasher: h.hasher,
                    at: h.end,
                }
            } else {
                // The file went back to an earlier offset (a failed write)
                // while these bytes were hashed: they may be sent anew.
                Hashing::Unknown
            };
        }
    }

    /// Gives a verdict job its hasher once the file's every byte is hashed,
    /// or says what must happen first.
    pub(in crate::session) fn arm_complete(&mut self, c: &mut Complete) -> Armed {
        let queued = self.hash_queued(c.file.index);
        let Some(f) = self.files.get_mut(usize::from(c.file.index)) else {
            return Armed::Ready;
        };
        let size = f.size;
        let FileState::Verifying { hash, .. } = &mut f.state else {
            return Armed::Ready;
        };
        match hash {
            Hashing::Away => return Armed::Wait,
            Hashing::Home { .. } if queued => return Armed::Wait,
            Hashing::Home { at, .. } if *at == size => {
                if let Hashing::Home { hasher, .. } = core::mem::replace(hash, Hashing::Away) {
                    c.hasher = Some(hasher);
                }
                return Armed::Ready;
            }
            _ => {}
        }
        *hash = Hashing::Rehashing;
        Armed::Rehash(HashPrefix {
            epoch: c.epoch,
            file: c.file.index,
            partial: c.partial,
            len: size,
        })
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
                up.pending_bytes = up.pending_bytes.saturating_sub(r.buf.len());
                r.buf.clear();
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
                up.forget_hashes(file);
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
                r.forget_midstate_past_received();
                r.written = r.written.min(r.received);
                r.sync_wanted = r.sync_wanted.min(r.received);
                r.syncing_to = r.syncing_to.min(r.received);
                r.hash = Hashing::Unknown;
                let (epoch, file) = (up.epoch, h.file);
                up.pending_bytes = up
                    .pending_bytes
                    .saturating_sub(cx.work.forget(|q| super::is_write_of(q, epoch, file)));
                up.forget_hashes(file);
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
                up.forget_hashes(file);
            }
        },
        _ => {}
    }
}
