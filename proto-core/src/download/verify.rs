//! File by file: starting the next file (reusing a local prefix), re-hashing
//! that prefix, and checking each finished file's SHA-1 (refetching from 0
//! once if a reused prefix was wrong).

use super::{Error, Event, Hashing, Session, Sink};
use crate::hash::Sha1Hasher;
use crate::storage::ReadAt;
use crate::time::Instant;

impl<const F: usize> Session<'_, F> {
    /// Moves to the first unfinished file and starts it.
    pub(super) fn advance<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        let Some(next) = self.files.iter().position(|f| !f.done) else {
            self.finish_session(now);
            return Ok(());
        };
        let f = self.files[next];
        self.current = next as u16;
        self.received = 0;
        self.hasher = Sha1Hasher::new();
        self.credit_end = 0;
        // Frames of the file before are told apart by their index.
        self.stale_until = u64::MAX;
        if f.local > 0 {
            if self.config.hashing == Hashing::BySink {
                // The sink hashes what it holds; nothing to read back.
                self.received = f.local.min(f.size);
                self.progress_dirty = true;
                if self.received == f.size {
                    return self.complete_file(now, sink);
                }
                self.request_read(now);
                return Ok(());
            }
            // Re-hashed in poll_transmit, which has a buffer to read into.
            self.prefix_pending = true;
            return Ok(());
        }
        if f.size == 0 {
            return self.complete_file(now, sink);
        }
        self.request_read(now);
        Ok(())
    }

    /// The current file has all its bytes: verify and finish it, or retry.
    pub(super) fn complete_file<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        let i = usize::from(self.current);
        let Some(f) = self.files.get(i).copied() else {
            return Ok(());
        };
        let digest = match self.config.hashing {
            Hashing::InSession => self.hasher.digest(),
            Hashing::BySink => sink.digest(self.current, f.size)?,
        };
        if digest == f.sha1 {
            sink.finish(self.current)?;
            self.files[i].done = true;
            self.progress_dirty = true;
            self.push_event(Event::Verified { file: self.current });
            return self.advance(now, sink);
        }
        if f.local > 0 {
            sink.truncate(self.current)?;
            self.files[i].local = 0;
            self.push_event(Event::Refetch { file: self.current });
            return self.advance(now, sink);
        }
        self.fail(Error::HashMismatch { file: self.current });
        Ok(())
    }

    pub(super) fn rehash_prefix<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
        buf: &mut [u8],
    ) -> Result<(), <S as ReadAt>::Error> {
        let i = usize::from(self.current);
        let Some(f) = self.files.get(i).copied() else {
            return Ok(());
        };
        let mut hasher = Sha1Hasher::new();
        let mut offset = 0u64;
        while offset < f.local {
            let want = usize::try_from(f.local - offset)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = sink.read_at(self.current, offset, &mut buf[..want])?;
            if n == 0 || n > want {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        self.prefix_pending = false;
        self.hasher = hasher;
        self.received = offset;
        if offset < f.local {
            // The local file is shorter than the sink said: use what is there.
            self.files[i].local = offset;
        }
        self.progress_dirty = true;
        if self.received == f.size {
            self.complete_file(now, sink)
        } else {
            self.request_read(now);
            Ok(())
        }
    }
}
