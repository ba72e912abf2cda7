//! SHA-1 on another core, for hosts (feature `std`).
//!
//! Verifying a download means hashing every byte, which costs a host about
//! as much CPU as receiving, decoding and writing it together. A sink that
//! feeds a [`HashThread`] from `write_at` and answers
//! [`Sink::digest`](pickup_proto::download::Sink::digest) from it, with
//! [`Hashing::BySink`](pickup_proto::download::Hashing::BySink) in the
//! session's config, lets both run at once.

use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use pickup_proto::hash::Sha1Hasher;
use pickup_proto::Sha1Digest;

/// Bytes gathered before they are handed over: one hand-over per this many
/// bytes, however small the frames (a serial link's are 1 KiB).
const BATCH: usize = 256 * 1024;

/// Batches in flight before `update` blocks: bounds the memory held for a
/// hasher that falls behind (at 4 MiB).
const QUEUE: usize = 16;

enum Job {
    Bytes(Vec<u8>),
    /// Send the digest of everything so far, then start over.
    Finish,
}

/// A streaming SHA-1 whose hashing runs on its own thread.
///
/// [`update`](HashThread::update) copies the bytes and returns (blocking only
/// when 4 MiB are already queued); [`finish`](HashThread::finish) waits for
/// the digest and readies the hasher for the next stream.
pub struct HashThread {
    jobs: Option<SyncSender<Job>>,
    digests: Receiver<Sha1Digest>,
    /// Hashed batches coming back, to be filled again: a fresh buffer of
    /// this size would be mapped and faulted in page by page each time.
    spare: Receiver<Vec<u8>>,
    pending: Vec<u8>,
    thread: Option<JoinHandle<()>>,
}

fn stopped() -> io::Error {
    io::Error::other("the hashing thread stopped")
}

impl HashThread {
    /// Starts the thread (named `pickup-verify`).
    pub fn new() -> io::Result<HashThread> {
        let (jobs, inbox) = mpsc::sync_channel::<Job>(QUEUE);
        let (reply, digests) = mpsc::channel();
        let (give_back, spare) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pickup-verify".into())
            .spawn(move || {
                let mut h = Sha1Hasher::new();
                for job in inbox {
                    match job {
                        Job::Bytes(mut bytes) => {
                            h.update(&bytes);
                            bytes.clear();
                            // Unwanted once the owner is gone: dropped.
                            let _ = give_back.send(bytes);
                        }
                        Job::Finish => {
                            if reply.send(h.digest()).is_err() {
                                return;
                            }
                            h = Sha1Hasher::new();
                        }
                    }
                }
            })?;
        Ok(HashThread {
            jobs: Some(jobs),
            digests,
            spare,
            pending: Vec::with_capacity(BATCH),
            thread: Some(thread),
        })
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let full = std::mem::replace(&mut self.pending, next);
        self.send(Job::Bytes(full))
    }

    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, data: &[u8]) -> io::Result<()> {
        // Hand the batch over before it would outgrow its buffer: growing
        // it would copy everything gathered so far once more.
        if self.pending.len() + data.len() > self.pending.capacity() {
            self.flush()?;
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }

    /// The digest of everything fed since the last `finish` (or `new`);
    /// the next byte fed starts a new stream.
    pub fn finish(&mut self) -> io::Result<Sha1Digest> {
        self.flush()?;
        self.send(Job::Finish)?;
        self.digests.recv().map_err(|_| stopped())
    }
}

impl Drop for HashThread {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has hashed what is
        // queued (at most 4 MiB).
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_match_the_one_shot_digest_in_any_split() {
        let data: Vec<u8> = (0..3 * BATCH + 12_345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut t = HashThread::new().unwrap();
        for piece in [1usize, 1000, BATCH, BATCH + 1] {
            for chunk in data.chunks(piece) {
                t.update(chunk).unwrap();
            }
            assert_eq!(
                t.finish().unwrap(),
                Sha1Digest::of(&data),
                "pieces of {piece}"
            );
        }
        // Nothing fed: the empty stream.
        assert_eq!(t.finish().unwrap(), Sha1Digest::EMPTY);
    }
}
