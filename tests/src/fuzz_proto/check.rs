//! What the client sessions may do: checks on every frame they send and
//! every event they report, and [`FuzzSink`], a download target that
//! checks how the session uses it (only a whole, verified file is finished).

use pickup_proto::download::{self, Sink};
use pickup_proto::frame::{self, Decoder, Frame};
use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::{ManifestEntry, Message, ResumeToken, Role};
use pickup_proto::storage::{ReadAt, WriteAt};
use pickup_proto::upload;

use super::{code, display, CHECK_FRAME, CONTENTS, NAMES, TOKEN};

/// Decodes one frame a session sent, checking it is a whole valid frame.
pub(super) fn sent_frame<'b>(wire: &[u8], buf: &'b mut [u8; CHECK_FRAME]) -> (Message<'b>, usize) {
    let mut decoder = Decoder::new(&mut buf[..]);
    let mut input = wire;
    let raw = match decoder.feed(&mut input) {
        Some(Ok(f)) => (f.version, f.kind, f.body.len()),
        other => panic!("a session sent a broken frame: {other:?}"),
    };
    assert!(input.is_empty(), "one frame per poll_transmit");
    let (version, kind, len) = raw;
    let body = &buf[frame::HEADER_LEN..frame::HEADER_LEN + len];
    let msg = Message::decode(Frame {
        version,
        kind,
        body,
    })
    .expect("sessions send only valid messages");
    (msg, len + frame::OVERHEAD)
}

/// Checks frames from the upload session against the files and the relay's limit.
pub(super) struct UploadChecker {
    pub(super) files: usize,
    /// Largest `max_frame` any welcome offered (clamped like the session does).
    pub(super) max_frame: usize,
    /// Tokens of the grants the relay sent, besides [`TOKEN`] (the first
    /// few; `None` slots are free).
    pub(super) tokens: [Option<ResumeToken>; 8],
    /// More distinct tokens came than `tokens` holds: resumes go unchecked.
    pub(super) tokens_overflow: bool,
    pub(super) buf: [u8; CHECK_FRAME],
}

impl UploadChecker {
    /// Notes what the relay said that limits what the terminal may send.
    pub(super) fn heard(&mut self, msg: &Message<'_>) {
        match msg {
            Message::Welcome(w) => self.max_frame = self.max_frame.max(clamp_frame(w.max_frame)),
            // A session keeps the token of the first grant it accepts, and
            // ignores grants it does not expect: remember every token seen.
            Message::Grant(g) if !self.tokens.contains(&Some(g.token)) => {
                match self.tokens.iter_mut().find(|t| t.is_none()) {
                    Some(slot) => *slot = Some(g.token),
                    None => self.tokens_overflow = true,
                }
            }
            _ => {}
        }
    }

    /// Checks one sent frame; returns the data bytes it carried.
    pub(super) fn check(&mut self, wire: &[u8]) -> u64 {
        let files = self.files;
        let max_frame = self.max_frame;
        let (msg, raw) = sent_frame(wire, &mut self.buf);
        let limit = if matches!(msg, Message::Hello(_)) {
            frame::MIN_FRAME_LEN
        } else {
            max_frame
        };
        assert!(raw <= limit, "{raw}-byte frame over the limit {limit}");
        match msg {
            Message::Hello(h) => assert_eq!(h.role, Role::Terminal),
            Message::BatchOpen(b) => assert_eq!(usize::from(b.files), files),
            Message::FileAnnounce(a) => {
                let i = usize::from(a.index);
                assert!(i < files, "announce of file {i}");
                assert_eq!(a.size, CONTENTS[i].len() as u64);
                assert_eq!(a.sha1, Sha1Digest::of(CONTENTS[i]));
                assert_eq!(a.name, NAMES[i]);
            }
            Message::Data(d) => {
                let i = usize::from(d.file);
                assert!(i < files, "data for file {i}");
                let content = CONTENTS[i];
                let start = usize::try_from(d.offset).unwrap_or(usize::MAX);
                assert!(!d.bytes.is_empty(), "empty data frame");
                assert!(
                    start <= content.len() && d.bytes.len() <= content.len() - start,
                    "data at {start}+{} past the end of file {i}",
                    d.bytes.len()
                );
                assert_eq!(
                    d.bytes,
                    &content[start..start + d.bytes.len()],
                    "data differs from file {i} at {start}"
                );
                return d.bytes.len() as u64;
            }
            Message::Proof(p) => assert!(usize::from(p.index) < files),
            Message::Resume(r) => assert!(
                r.token == TOKEN || self.tokens_overflow || self.tokens.contains(&Some(r.token)),
                "resume with a token no grant gave"
            ),
            Message::Keepalive | Message::Goodbye => {}
            other => panic!("a terminal never sends {other:?}"),
        }
        0
    }
}

fn clamp_frame(max_frame: u32) -> usize {
    (max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN)
}

pub(super) fn check_upload_event(e: upload::Event, total: u64) {
    match e {
        upload::Event::Progress { acked, total: t } => {
            assert_eq!(t, total);
            assert!(acked <= total, "progress {acked} of {total}");
        }
        upload::Event::Uploading { file, offset } | upload::Event::Retransmit { file, offset } => {
            let size = CONTENTS[usize::from(file)].len() as u64;
            assert!(offset <= size, "offset {offset} past file {file}");
        }
        upload::Event::Failed(err) => {
            display(&err);
        }
        _ => {}
    }
}

/// Capacity of each file in [`FuzzSink`].
pub(super) const SINK_CAP: usize = 1024;

/// What [`FuzzSink`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SinkFull;

#[derive(Clone, Copy)]
pub(super) struct SinkFile {
    pub(super) bytes: [u8; SINK_CAP],
    pub(super) len: usize,
    /// Size and SHA-1 from the manifest entry the file was opened with.
    pub(super) entry: Option<(u64, Sha1Digest)>,
    pub(super) finished: bool,
}

/// An in-memory download target that checks how the session uses it.
pub(super) struct FuzzSink {
    pub(super) files: [SinkFile; 4],
    /// `open` fails, as on a disk that refuses to create the file.
    pub(super) refuse_open: bool,
    pub(super) written: u64,
}

impl ReadAt for FuzzSink {
    type Error = SinkFull;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> Result<usize, SinkFull> {
        let f = self.files.get(usize::from(file)).ok_or(SinkFull)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(f.len);
        let n = buf.len().min(f.len - start);
        buf[..n].copy_from_slice(&f.bytes[start..start + n]);
        Ok(n)
    }
}

impl WriteAt for FuzzSink {
    type Error = SinkFull;
    fn write_at(&mut self, file: u16, offset: u64, data: &[u8]) -> Result<(), SinkFull> {
        let f = self.files.get_mut(usize::from(file)).ok_or(SinkFull)?;
        let (size, _) = f.entry.expect("write to a file that was never opened");
        assert!(!f.finished, "write to file {file} after it was finished");
        let end = offset.saturating_add(data.len() as u64);
        assert!(end <= size, "write up to {end} past the size {size}");
        let start = usize::try_from(offset).map_err(|_| SinkFull)?;
        let dst = f
            .bytes
            .get_mut(start..start.saturating_add(data.len()))
            .ok_or(SinkFull)?;
        dst.copy_from_slice(data);
        f.len = f.len.max(start + data.len());
        self.written += data.len() as u64;
        Ok(())
    }
}

impl Sink for FuzzSink {
    fn open(&mut self, entry: &ManifestEntry<'_>) -> Result<u64, SinkFull> {
        if self.refuse_open {
            return Err(SinkFull);
        }
        let f = self
            .files
            .get_mut(usize::from(entry.index))
            .expect("the session opens only files it can hold");
        assert!(f.entry.is_none(), "file {} opened twice", entry.index);
        f.entry = Some((entry.size, entry.sha1));
        Ok(f.len as u64)
    }

    fn truncate(&mut self, file: u16) -> Result<(), SinkFull> {
        let f = self.files.get_mut(usize::from(file)).ok_or(SinkFull)?;
        assert!(!f.finished, "truncate after finish");
        f.len = 0;
        Ok(())
    }

    fn finish(&mut self, file: u16) -> Result<(), SinkFull> {
        let f = self.files.get_mut(usize::from(file)).ok_or(SinkFull)?;
        let (size, sha1) = f.entry.expect("finish of a file that was never opened");
        // The promise a downloader relies on: a finished file is the whole
        // file and matches its SHA-1.
        assert_eq!(
            f.len as u64, size,
            "finished file {file} has the wrong size"
        );
        assert_eq!(
            Sha1Digest::of(&f.bytes[..f.len]),
            sha1,
            "finished file {file} does not match its SHA-1"
        );
        f.finished = true;
        Ok(())
    }
}

/// Checks one frame the download sends.
pub(super) fn check_download_frame(wire: &[u8], window: u32, buf: &mut [u8; CHECK_FRAME]) {
    let (msg, raw) = sent_frame(wire, buf);
    match msg {
        Message::Hello(h) => {
            assert_eq!(h.role, Role::Terminal);
            assert!(raw <= frame::MIN_FRAME_LEN, "hello over 64 bytes");
        }
        Message::Fetch(x) => assert_eq!(x.code, code()),
        Message::Read(r) => {
            assert_eq!(r.code, code());
            // The credit shrinks after losses and grows back (download::credit),
            // never past the window.
            assert!(
                r.len > 0 && r.len <= window,
                "Read for {} of {window}",
                r.len
            );
            assert!(usize::from(r.file) < 4);
        }
        Message::Ack(a) => assert!(
            a.window > 0 && a.window <= window,
            "Ack for {} of {window}",
            a.window
        ),
        Message::Keepalive | Message::Goodbye => {}
        other => panic!("a downloader never sends {other:?}"),
    }
}

pub(super) fn check_download_event(e: download::Event, sink: &FuzzSink, manifest_only: bool) {
    match e {
        download::Event::Verified { file } => {
            let f = &sink.files[usize::from(file)];
            assert!(f.finished, "file {file} reported verified but not finished");
        }
        download::Event::Complete if !manifest_only => {
            for (i, f) in sink.files.iter().enumerate() {
                assert!(
                    f.entry.is_none() || f.finished,
                    "complete, but file {i} is not finished"
                );
            }
        }
        download::Event::Progress { done, total } => {
            assert!(done <= total, "progress {done} of {total}");
        }
        download::Event::Failed(err) => {
            display(&err);
        }
        _ => {}
    }
}
