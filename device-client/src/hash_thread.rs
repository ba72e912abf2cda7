//! SHA-1 on another core, for hosts (feature `std`).
//!
//! Verifying a download means hashing every byte, which costs a host about
//! as much CPU as receiving, decoding and writing it together. A sink that
//! feeds a [`HashThread`] from `write_at` and answers
//! [`Sink::digest`](pickup_proto::download::Sink::digest) from it, with
//! [`Hashing::BySink`](pickup_proto::download::Hashing::BySink) in the
//! session's config, lets both run at once. It is fed either the bytes
//! themselves ([`update`](HashThread::update)) or a range of a file to read
//! back ([`update_from_file`](HashThread::update_from_file)): the CLI's sink
//! does the latter, so what it verifies is what is on disk, and the reading
//! happens on the hashing core too.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use pickup_proto::hash::Sha1Hasher;
use pickup_proto::Sha1Digest;

/// Bytes gathered before they are handed over: one hand-over per this many
/// bytes, however small the frames (a serial link's are 1 KiB).
const BATCH: usize = 256 * 1024;

/// Batches in flight before `update` blocks: bounds the memory held for a
/// hasher that falls behind (at 4 MiB).
const QUEUE: usize = 16;

/// Read-back buffer of the hashing thread, allocated on first use.
const READ_BACK: usize = 1 << 20;

enum Job {
    Bytes(Vec<u8>),
    /// Read `start..end` of the file back and hash it.
    File {
        file: Arc<File>,
        start: u64,
        end: u64,
    },
    /// Send the digest of everything so far, then start over.
    Finish,
}

#[cfg(unix)]
fn pread(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn pread(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

/// Reads at `offset` without moving a cursor (the file is shared), retried
/// when interrupted; 0 at the end of the file.
pub(crate) fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match pread(file, offset, buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The thread's side of one stream.
struct Stream {
    hasher: Sha1Hasher,
    /// A read-back failed: what the stream's digest is answered with.
    failed: Option<io::Error>,
    /// A read-back found the file shorter than asked: the rest of the
    /// stream is not hashed (its digest is a prefix's and cannot match).
    short: bool,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            hasher: Sha1Hasher::new(),
            failed: None,
            short: false,
        }
    }

    fn read_back(&mut self, buf: &mut Vec<u8>, file: &File, mut offset: u64, end: u64) {
        if self.failed.is_some() || self.short {
            return;
        }
        if buf.is_empty() {
            buf.resize(READ_BACK, 0);
        }
        while offset < end {
            let want = usize::try_from(end - offset).map_or(buf.len(), |w| w.min(buf.len()));
            match read_at(file, offset, &mut buf[..want]) {
                Ok(0) => {
                    self.short = true;
                    return;
                }
                Ok(n) => {
                    self.hasher.update(&buf[..n]);
                    offset += n as u64;
                }
                Err(e) => {
                    self.failed = Some(e);
                    return;
                }
            }
        }
    }

    fn digest(self) -> io::Result<Sha1Digest> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self.hasher.digest()),
        }
    }
}

/// A streaming SHA-1 whose hashing runs on its own thread.
///
/// [`update`](HashThread::update) copies the bytes and returns (blocking only
/// when 4 MiB are already queued); [`update_from_file`](HashThread::update_from_file)
/// queues a range to read back (blocking only when 16 jobs are queued);
/// [`finish`](HashThread::finish) waits for the digest and readies the
/// hasher for the next stream.
pub struct HashThread {
    jobs: Option<SyncSender<Job>>,
    digests: Receiver<io::Result<Sha1Digest>>,
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
                let mut stream = Stream::new();
                let mut buf = Vec::new();
                for job in inbox {
                    match job {
                        Job::Bytes(mut bytes) => {
                            if !stream.short {
                                stream.hasher.update(&bytes);
                            }
                            bytes.clear();
                            // Unwanted once the owner is gone: dropped.
                            let _ = give_back.send(bytes);
                        }
                        Job::File { file, start, end } => {
                            stream.read_back(&mut buf, &file, start, end);
                        }
                        Job::Finish => {
                            let done = std::mem::replace(&mut stream, Stream::new());
                            if reply.send(done.digest()).is_err() {
                                return;
                            }
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

    /// Feeds the bytes `start..end` of `file` as they are on disk, read
    /// back on the hashing thread. The bytes fed before come first. A read
    /// that fails makes [`finish`](HashThread::finish) return its error; a
    /// file that ends before `end` leaves the rest of the stream unhashed,
    /// so its digest is that of a prefix.
    pub fn update_from_file(&mut self, file: Arc<File>, start: u64, end: u64) -> io::Result<()> {
        self.flush()?;
        self.send(Job::File { file, start, end })
    }

    /// The digest of everything fed since the last `finish` (or `new`);
    /// the next byte fed starts a new stream.
    pub fn finish(&mut self) -> io::Result<Sha1Digest> {
        self.flush()?;
        self.send(Job::Finish)?;
        self.digests.recv().map_err(|_| stopped())?
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

    #[test]
    fn file_ranges_are_read_back_in_order_with_fed_bytes() {
        let data: Vec<u8> = (0..READ_BACK * 2 + 7).map(|i| (i % 253) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, &data[100..]).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let mut t = HashThread::new().unwrap();
        t.update(&data[..100]).unwrap();
        t.update_from_file(Arc::clone(&file), 0, 5).unwrap();
        t.update_from_file(Arc::clone(&file), 5, data.len() as u64 - 100)
            .unwrap();
        assert_eq!(t.finish().unwrap(), Sha1Digest::of(&data));

        // Past the end: the rest of the stream is not hashed.
        t.update_from_file(Arc::clone(&file), 0, data.len() as u64)
            .unwrap();
        t.update(b"more").unwrap();
        assert_eq!(t.finish().unwrap(), Sha1Digest::of(&data[100..]));
        // And the next stream is whole again.
        t.update(b"abc").unwrap();
        assert_eq!(t.finish().unwrap(), Sha1Digest::of(b"abc"));
    }
}
