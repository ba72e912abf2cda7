//! A blocking client over any `std::io::{Read, Write}` link with a read
//! timeout (a `TcpStream`, a pseudo-terminal), running the same
//! `pickup_proto` upload and download machines as every other driver.
//!
//! It keeps the benchmark independent of the CLI's presentation (progress
//! bars, state files) so the figures measure the protocol, the relay and the
//! link, and lets one process run a thousand clients on threads.

use std::io::{self, Read, Write};
use std::time::Instant as StdInstant;

use pickup_device::hash_thread::HashThread;
use pickup_proto::download::{self, Sink};
use pickup_proto::drive::Machine;
use pickup_proto::frame::{max_encoded_len, Decoder, MAX_FRAME_LEN};
use pickup_proto::message::ManifestEntry;
use pickup_proto::storage::{ReadAt, WriteAt};
use pickup_proto::upload::{self, FileMeta};
use pickup_proto::{Code, Instant, Sha1Digest};

/// Converts wall time to protocol time.
struct Clock(StdInstant);

impl Clock {
    fn now(&self) -> Instant {
        Instant::from_millis(self.0.elapsed().as_millis() as u64)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What an upload produced.
pub struct Uploaded {
    /// The pickup code.
    pub code: Code,
    /// Whether every file was linked by proof instead of sent.
    pub all_linked: bool,
    /// From the start until the relay's `Welcome`, and until its `Grant`.
    pub welcomed_after: std::time::Duration,
    /// See `welcomed_after`.
    pub granted_after: std::time::Duration,
    /// Time spent blocked writing frames (the relay not reading), and
    /// waiting for the relay (its acknowledgements, with the window full).
    pub blocked_writing: std::time::Duration,
    /// See `blocked_writing`.
    pub waiting: std::time::Duration,
    /// For a one-file batch: how long after a byte was sent its durable
    /// acknowledgement arrived, per acknowledgement, sorted.
    pub ack_latencies: Vec<std::time::Duration>,
}

/// The files being uploaded, remembering when each byte of a one-file
/// batch was handed to the link (to time acknowledgements).
struct Source<'a> {
    files: &'a [Vec<u8>],
    /// (when, end offset of the bytes read), in order.
    sent: Vec<(StdInstant, u64)>,
}

impl ReadAt for Source<'_> {
    type Error = io::Error;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Ok(n) = self.files.read_at(file, offset, buf);
        if self.files.len() == 1 && n > 0 {
            self.sent.push((StdInstant::now(), offset + n as u64));
        }
        Ok(n)
    }
    fn in_place(&self, file: u16) -> Option<&[u8]> {
        self.files.in_place(file)
    }
}

/// Uploads `files` (kept in memory) and returns the code once every file is
/// verified or linked. The link must have a read timeout set.
pub fn upload<L: Read + Write>(
    link: &mut L,
    config: upload::Config,
    names: &[String],
    files: &[Vec<u8>],
    sha1s: &[pickup_proto::Sha1Digest],
) -> io::Result<Uploaded> {
    let metas: Vec<FileMeta<'_>> = names
        .iter()
        .zip(files)
        .zip(sha1s)
        .map(|((name, f), sha1)| FileMeta {
            name,
            size: f.len() as u64,
            sha1: *sha1,
        })
        .collect();
    let mut session = upload::Session::<'_, 16>::new(config, &metas)
        .map_err(|e| io::Error::other(format!("upload: {e}")))?;
    let start = StdInstant::now();
    let mut source = Source {
        files,
        sent: Vec::new(),
    };
    let mut linked = 0usize;
    let mut welcomed_after = std::time::Duration::ZERO;
    let mut granted_after = std::time::Duration::ZERO;
    let mut ack_latencies = Vec::new();
    let mut timed = 0usize;
    let max_frame = config.max_frame as usize;
    let waits = drive(
        link,
        &mut session,
        &mut source,
        max_frame,
        |source: &mut Source<'_>, event| match event {
            upload::Event::Linked { .. } => linked += 1,
            upload::Event::Connected => welcomed_after = start.elapsed(),
            upload::Event::Granted { .. } => granted_after = start.elapsed(),
            upload::Event::Progress { acked, .. } => {
                // The first send that this acknowledgement covers.
                while let Some(&(at, end)) = source.sent.get(timed) {
                    if end > acked {
                        break;
                    }
                    if end == acked || source.sent.get(timed + 1).is_none_or(|n| n.1 > acked) {
                        ack_latencies.push(at.elapsed());
                    }
                    timed += 1;
                }
            }
            _ => {}
        },
    )?;
    ack_latencies.sort();
    let code = session
        .grant()
        .map(|g| g.code)
        .ok_or_else(|| io::Error::other("upload finished without a grant"))?;
    Ok(Uploaded {
        code,
        all_linked: linked == files.len(),
        welcomed_after,
        granted_after,
        blocked_writing: waits.blocked_writing,
        waiting: waits.waiting,
        ack_latencies,
    })
}

/// Where a [`drive`] spent its time blocked.
struct Waits {
    /// Writing frames (the relay not reading).
    blocked_writing: std::time::Duration,
    /// Reading (waiting for the relay).
    waiting: std::time::Duration,
}

/// Runs `session` over one link until it finishes, following the
/// [`Machine`] call order; every event goes to `observe` with the files.
/// `max_frame` is the session's configured `max_frame` (its decoder size).
/// No reconnect: a lost link fails the run, as a benchmark wants.
fn drive<M, F, L>(
    link: &mut L,
    session: &mut M,
    files: &mut F,
    max_frame: usize,
    mut observe: impl FnMut(&mut F, M::Event),
) -> io::Result<Waits>
where
    M: Machine<F>,
    M::Error: std::fmt::Display,
    F: ReadAt<Error = io::Error> + ?Sized,
    L: Read + Write,
{
    let clock = Clock(StdInstant::now());
    let mut decoder = Decoder::new(vec![0u8; max_frame].into_boxed_slice());
    let mut tx = vec![0u8; max_encoded_len(MAX_FRAME_LEN)];
    let mut rx = vec![0u8; 256 * 1024];
    let mut waits = Waits {
        blocked_writing: std::time::Duration::ZERO,
        waiting: std::time::Duration::ZERO,
    };
    session.handle_connected(clock.now());
    loop {
        let now = clock.now();
        while let Some(n) = session.poll_transmit(now, files, &mut tx)? {
            let t = StdInstant::now();
            link.write_all(&tx[..n])?;
            waits.blocked_writing += t.elapsed();
        }
        while let Some(event) = session.poll_event() {
            observe(files, event);
        }
        if session.is_finished() {
            return match session.error() {
                Some(e) => Err(io::Error::other(format!("transfer failed: {e}"))),
                None => Ok(waits),
            };
        }
        if session.is_idle() {
            return Err(io::Error::other("link lost"));
        }
        let t = StdInstant::now();
        let got = link.read(&mut rx);
        waits.waiting += t.elapsed();
        match got {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "relay closed the link",
                ))
            }
            Ok(n) => {
                let now = clock.now();
                let mut input = &rx[..n];
                while let Some(result) = decoder.feed(&mut input) {
                    if let Ok(frame) = result {
                        session.handle_frame(now, frame, files)?;
                        decoder.set_framing(session.framing());
                    }
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
        if session.poll_timeout().is_some_and(|t| clock.now() >= t) {
            session.handle_timeout(clock.now());
        }
    }
}

/// A download sink that keeps no bytes (the benchmark measures transfer,
/// not the disk). With `Hashing::BySink` it verifies as the CLI's sink
/// does, hashing on a `HashThread` as bytes arrive; otherwise the session
/// hashes them in line.
pub struct CountingSink {
    /// Bytes written.
    pub bytes: u64,
    /// Files finished (verified).
    pub finished: usize,
    hasher: HashThread,
    /// The file being hashed and the end of the bytes fed so far.
    hashed: (u16, u64),
}

impl CountingSink {
    fn new() -> io::Result<Self> {
        Ok(CountingSink {
            bytes: 0,
            finished: 0,
            hasher: HashThread::new()?,
            hashed: (0, 0),
        })
    }
}

impl ReadAt for CountingSink {
    type Error = io::Error;
    fn read_at(&mut self, _file: u16, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl WriteAt for CountingSink {
    type Error = io::Error;
    fn write_at(&mut self, file: u16, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.hashed != (file, offset) {
            // Nothing is kept to hash a prefix again from.
            return Err(io::Error::other("writes out of order"));
        }
        self.hasher.update(data)?;
        self.hashed.1 += data.len() as u64;
        self.bytes += data.len() as u64;
        Ok(())
    }
}

impl Sink for CountingSink {
    fn open(&mut self, _entry: &ManifestEntry<'_>) -> io::Result<u64> {
        Ok(0)
    }
    fn truncate(&mut self, _file: u16) -> io::Result<()> {
        Ok(())
    }
    fn finish(&mut self, file: u16) -> io::Result<()> {
        self.finished += 1;
        self.hashed = (file.wrapping_add(1), 0);
        Ok(())
    }
    fn digest(&mut self, file: u16, size: u64) -> io::Result<Sha1Digest> {
        if self.hashed != (file, size) {
            return Err(io::Error::other("digest of bytes not all written"));
        }
        self.hasher.finish()
    }
}

/// Downloads the batch behind `code`, verifying every file; returns the
/// number of bytes received.
pub fn download<L: Read + Write>(
    link: &mut L,
    config: download::Config,
    code: Code,
) -> io::Result<u64> {
    let mut session = download::Session::<16>::new(config, code);
    let mut sink = CountingSink::new()?;
    drive(
        link,
        &mut session,
        &mut sink,
        config.max_frame as usize,
        |_, _| {},
    )?;
    Ok(sink.bytes)
}
