//! Entry points for fuzz targets and property tests.
//!
//! Each function takes arbitrary bytes, drives a part of the crate with them
//! and panics only when an invariant that users rely on is broken, so a fuzz
//! target is a one-liner (`fuzz_target!(|d: &[u8]| { decode_stream(d); })`)
//! and the same code runs in unit tests:
//!
//! | function           | drives                                      | checks                                             |
//! |--------------------|---------------------------------------------|----------------------------------------------------|
//! | [`decode_stream`]  | [`frame::Decoder`] over a byte stream       | any split gives the same frames; message round trip |
//! | [`decode_message`] | [`Message::decode`] of one frame body       | round trip through [`Message::encode`]             |
//! | [`drive_upload`]   | [`upload::Session`] against a fuzzed relay  | sent data is the file's, no busy loop, …           |
//! | [`drive_download`] | [`download::Session`] against a fuzzed relay | only verified content is finished, no busy loop, … |
//!
//! The drivers read their input as a setup prefix and then a list of
//! operations (one byte each, operands after it). [`Script`] writes such
//! inputs by name, for seed corpora and tests.
//!
//! Everything here is `no_std` and allocation-free because the module is in
//! every build; buffers are fixed arrays on the stack (the drivers use about
//! 80 KiB of it).

// Panicking on a broken invariant is what this module is for.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use crate::code::Code;
use crate::download::{self, Sink};
use crate::error::ErrorCode;
use crate::frame::{self, Decoder, Frame};
use crate::hash::Sha1Digest;
use crate::message::{
    self, Ack, BatchComplete, FilePlan, FileRejected, FileVerified, Grant, Kind, Manifest,
    ManifestEntry, Message, Plan, ResumeToken, Rewind, Role, Welcome,
};
use crate::storage::{ReadAt, WriteAt};
use crate::time::{Duration, Instant};
use crate::upload;

/// Largest raw frame the decoder in [`decode_stream`] accepts: small, so
/// the fuzzer reaches the oversize path easily.
const STREAM_FRAME: usize = 512;
/// Largest raw frame [`decode_message`] tries (fuzz inputs are shorter).
const MESSAGE_FRAME: usize = 8192;
/// Buffer for frames the sessions transmit: the documented minimum for the
/// largest `max_frame` a relay may announce.
const TX_BUF: usize = frame::max_encoded_len(frame::MAX_FRAME_LEN);
/// Largest frame a session here can send: the files are small.
const CHECK_FRAME: usize = 2048;
/// Rounds of `handle_timeout` + transmit after which a timer still in the
/// past is a busy loop.
const MAX_TIMER_ROUNDS: usize = 8;
/// Frames drained per transmit operation; sessions send a bounded amount.
const MAX_DRAIN: usize = 64;

/// Operation bytes of the drivers' input (taken modulo [`OP_COUNT`]).
const OP_CONNECT: u8 = 0;
const OP_DISCONNECT: u8 = 1;
const OP_ADVANCE: u8 = 2;
const OP_FIRE_TIMER: u8 = 3;
const OP_FRAME: u8 = 4;
const OP_RELAY: u8 = 5;
const OP_TRANSMIT: u8 = 6;
const OP_EVENTS: u8 = 7;
const OP_SETTLE: u8 = 8;
const OP_COUNT: u8 = 9;

/// Setup bit for [`drive_upload`]: resume with a token instead of announcing.
pub const UPLOAD_RESUME: u8 = 0x04;
/// Setup bit for [`drive_upload`]: answer challenges (instant upload).
pub const UPLOAD_INSTANT: u8 = 0x08;
/// Setup bit for [`drive_upload`]: cap the window at 256 bytes.
pub const UPLOAD_SMALL_WINDOW: u8 = 0x10;
/// Setup bit for [`drive_download`]: stop after the manifest.
pub const DOWNLOAD_MANIFEST_ONLY: u8 = 0x04;
/// Setup bit for [`drive_download`]: wait for a batch that is not ready.
pub const DOWNLOAD_WAIT: u8 = 0x08;
/// Setup bit for [`drive_download`]: the sink verifies ([`download::Hashing::BySink`]).
pub const DOWNLOAD_SINK_HASHES: u8 = 0x40;

/// The files both fake ends agree on: 700 patterned bytes, `pickup`, empty.
pub const CONTENTS: [&[u8]; 3] = [&CONTENT_A, b"pickup", b""];
/// Names the drivers announce and the fake relay lists (the last three are
/// for nonsense manifests; two are invalid).
pub const NAMES: [&str; 6] = ["a.bin", "b.txt", "empty", "../up", "", "ok name"];
/// The resume token the fake relay grants.
pub const TOKEN: ResumeToken = ResumeToken([0x5a; 16]);

const CONTENT_A: [u8; 700] = {
    let mut a = [0u8; 700];
    let mut i = 0;
    while i < a.len() {
        a[i] = (i * 7 + 3) as u8;
        i += 1;
    }
    a
};

/// The pickup code the fake relay grants and the download asks for.
pub fn code() -> Code {
    Code::from_parts(8, 0x12_3456_789a).expect("the fuzzers' code fits 8 symbols")
}

/// Reads operands from fuzzer bytes. Running out of input ends the run:
/// every reader returns `None` then.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u16()?) | u32::from(self.u16()?) << 16)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from(self.u32()?) | u64::from(self.u32()?) << 32)
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    fn error_code(&mut self) -> Option<ErrorCode> {
        let b = self.byte()?;
        Some(ErrorCode::ALL[usize::from(b) % ErrorCode::ALL.len()])
    }

    /// A frame for `OP_FRAME`: kind, body length, body.
    fn frame(&mut self) -> Option<Frame<'a>> {
        let kind = self.byte()?;
        let len = self.byte()?;
        Some(Frame {
            version: crate::PROTOCOL_VERSION,
            kind,
            body: self.bytes(usize::from(len))?,
        })
    }
}

/// A `fmt::Write` that only counts, so `Display` impls run without allocating.
struct Discard(usize);

impl core::fmt::Write for Discard {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn display(value: &dyn core::fmt::Display) -> usize {
    use core::fmt::Write;
    let mut d = Discard(0);
    let _ = write!(d, "{value}");
    d.0
}

/// Writes driver inputs operation by operation: the seed corpora and the
/// tests use it so that they say what they do.
///
/// `N` is the capacity in bytes; going past it panics (this is for seeds
/// and tests, which know their size).
///
/// ```
/// # use pickup_proto::fuzzing::{drive_upload, Script};
/// let mut s = Script::<64>::new(&[0]);
/// s.connect().transmit().advance(20_000).settle();
/// drive_upload(s.as_bytes());
/// ```
#[derive(Debug, Clone)]
pub struct Script<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Script<N> {
    /// A script that starts with the driver's setup bytes.
    pub fn new(setup: &[u8]) -> Self {
        let mut s = Script {
            buf: [0; N],
            len: 0,
        };
        s.push(setup);
        s
    }

    fn push(&mut self, bytes: &[u8]) -> &mut Self {
        let end = self.len + bytes.len();
        assert!(end <= N, "script longer than its {N}-byte buffer");
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
        self
    }

    /// The link comes up: `handle_connected`.
    pub fn connect(&mut self) -> &mut Self {
        self.push(&[OP_CONNECT])
    }

    /// The link goes down: `handle_disconnected`.
    pub fn disconnect(&mut self) -> &mut Self {
        self.push(&[OP_DISCONNECT])
    }

    /// The clock moves on by `ms` milliseconds (no timer runs).
    pub fn advance(&mut self, ms: u16) -> &mut Self {
        let [a, b] = ms.to_le_bytes();
        self.push(&[OP_ADVANCE, a, b])
    }

    /// The clock jumps to the session's next timer, which fires.
    pub fn fire_timer(&mut self) -> &mut Self {
        self.push(&[OP_FIRE_TIMER])
    }

    /// The relay sends a frame of `kind` with `body` (at most 255 bytes).
    pub fn frame(&mut self, kind: u8, body: &[u8]) -> &mut Self {
        let len = u8::try_from(body.len()).expect("a script frame body is at most 255 bytes");
        self.push(&[OP_FRAME, kind, len]).push(body)
    }

    /// The relay sends `msg`, in its real wire encoding (body at most 255 bytes).
    pub fn message(&mut self, msg: &Message<'_>) -> &mut Self {
        let mut wire = [0u8; frame::max_encoded_len(512)];
        let n = msg
            .encode(512, &mut wire)
            .expect("a script message fits 512 bytes");
        let mut decoder = Decoder::new([0u8; 512]);
        let mut input = &wire[..n];
        match decoder.feed(&mut input) {
            Some(Ok(f)) => {
                let (kind, body) = (f.kind, f.body);
                self.frame(kind, body)
            }
            other => panic!("an encoded message does not decode: {other:?}"),
        }
    }

    /// Operand bytes for the driver's built-in relay messages (see the driver).
    pub fn relay(&mut self, operands: &[u8]) -> &mut Self {
        self.push(&[OP_RELAY]).push(operands)
    }

    /// The driver sends everything the session has to send.
    pub fn transmit(&mut self) -> &mut Self {
        self.push(&[OP_TRANSMIT])
    }

    /// The driver takes every pending event.
    pub fn events(&mut self) -> &mut Self {
        self.push(&[OP_EVENTS])
    }

    /// The driver runs due timers and transmits until none is due.
    pub fn settle(&mut self) -> &mut Self {
        self.push(&[OP_SETTLE])
    }

    /// The input written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What a driver run did, so tests can check that an input got somewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Operations executed.
    pub ops: u32,
    /// Frames the session transmitted.
    pub frames_sent: u32,
    /// Data bytes the session sent (upload) or wrote (download).
    pub data_bytes: u64,
    /// The session finished successfully.
    pub completed: bool,
    /// The session failed.
    pub failed: bool,
}

/// A fingerprint of everything a decoder produced, to compare two runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamDigest {
    crc: u32,
    frames: u64,
    messages: u64,
    drops: u64,
    stats: frame::Stats,
}

/// Feeds `stream` to a decoder in chunks whose lengths cycle through
/// `splits` (each plus one; empty means all at once) and fingerprints the
/// frames and drops, round-tripping every frame that decodes as a message.
fn run_decoder(stream: &[u8], splits: &[u8]) -> StreamDigest {
    let mut decoder = Decoder::new([0u8; STREAM_FRAME]);
    let mut record = [0u8; STREAM_FRAME + 3];
    let mut wire = [0u8; frame::max_encoded_len(STREAM_FRAME)];
    let mut scratch = [0u8; STREAM_FRAME];
    let mut digest = StreamDigest {
        crc: 0,
        frames: 0,
        messages: 0,
        drops: 0,
        stats: frame::Stats::default(),
    };
    let mut rest = stream;
    let mut turn = 0usize;
    while !rest.is_empty() {
        let take = match splits.get(turn % splits.len().max(1)) {
            Some(&s) => usize::from(s) + 1,
            None => rest.len(),
        }
        .min(rest.len());
        turn += 1;
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        let mut input = chunk;
        while let Some(result) = decoder.feed(&mut input) {
            match result {
                Ok(f) => {
                    digest.frames += 1;
                    if check_round_trip(f, &mut wire, &mut scratch) {
                        digest.messages += 1;
                    }
                    let n = f.body.len();
                    record[0] = f.version;
                    record[1] = f.kind;
                    record[2] = (n % 251) as u8;
                    record[3..3 + n].copy_from_slice(f.body);
                    digest.crc = frame::crc32c(&record[..3 + n]) ^ digest.crc.rotate_left(5);
                }
                Err(why) => {
                    digest.drops += 1;
                    digest.crc = digest.crc.rotate_left(3) ^ why as u32;
                }
            }
        }
    }
    digest.stats = decoder.stats();
    digest
}

/// Decodes a frame as a message; if it is one, encodes it again into
/// `wire`, decodes that through a decoder over `scratch` and checks that the
/// same message comes back. Returns whether the frame was a message.
fn check_round_trip(f: Frame<'_>, wire: &mut [u8], scratch: &mut [u8]) -> bool {
    let msg = match Message::decode(f) {
        Ok(m) => m,
        Err(e) => {
            // Every decode error maps to an answer for the peer.
            let _ = (e.code(), e.kind(), display(&e));
            return false;
        }
    };
    assert_eq!(msg.kind() as u8, f.kind);
    // Re-encoding never needs more room than the frame it came from:
    // postcard writes canonical varints, never longer than what it accepts.
    let raw_len = frame::OVERHEAD + f.body.len();
    let n = match msg.encode(raw_len, wire) {
        Ok(n) => n,
        Err(e) => panic!("{msg:?} decoded from {raw_len} raw bytes does not re-encode: {e:?}"),
    };
    let mut decoder = Decoder::new(scratch);
    let mut input = &wire[..n];
    let again = match decoder.feed(&mut input) {
        Some(Ok(g)) => g,
        other => panic!("re-encoded {msg:?} does not decode as a frame: {other:?}"),
    };
    assert!(input.is_empty(), "one message encodes as exactly one frame");
    let back = Message::decode(again).expect("a re-encoded message decodes");
    assert_eq!(back, msg, "message round trip");
    match msg {
        Message::FileAnnounce(a) => {
            let _ = message::validate_name(a.name);
        }
        Message::Grant(g) => {
            display(&g.code);
        }
        Message::Error(e) => {
            display(&e.code);
        }
        _ => {}
    }
    true
}

/// Feeds arbitrary bytes to a [`frame::Decoder`] and checks what comes out.
///
/// The first four bytes (if present) choose the split: the rest is fed in
/// chunks of `byte + 1` bytes cycling through them. The same stream is also
/// fed in one piece; both runs must produce the same frames, drops and
/// statistics. Every frame that decodes as a [`Message`] must survive an
/// encode / decode round trip. Returns how many frames decoded.
pub fn decode_stream(data: &[u8]) -> u64 {
    let (splits, stream) = data.split_at(data.len().min(4));
    let whole = run_decoder(stream, &[]);
    let split = run_decoder(stream, splits);
    assert_eq!(whole, split, "the split of the input changed the result");
    let stats = whole.stats;
    assert_eq!(stats.frames, whole.frames);
    assert_eq!(stats.dropped_frames, whole.drops);
    assert!(stats.dropped_bytes <= stream.len() as u64);
    whole.frames
}

/// Decodes `data[1..]` as the body of a frame of kind `data[0]` and, if it
/// is a valid message, checks the encode / decode round trip. Returns
/// whether it was a valid message.
pub fn decode_message(data: &[u8]) -> bool {
    let Some((&kind, body)) = data.split_first() else {
        return false;
    };
    if body.len() + frame::OVERHEAD > MESSAGE_FRAME {
        return false;
    }
    let mut wire = [0u8; frame::max_encoded_len(MESSAGE_FRAME)];
    let mut scratch = [0u8; MESSAGE_FRAME];
    let f = Frame {
        version: crate::PROTOCOL_VERSION,
        kind,
        body,
    };
    check_round_trip(f, &mut wire, &mut scratch)
}

/// Decodes one frame a session sent, checking it is a whole valid frame.
fn sent_frame<'b>(wire: &[u8], buf: &'b mut [u8; CHECK_FRAME]) -> (Message<'b>, usize) {
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
struct UploadChecker {
    files: usize,
    /// Largest `max_frame` any welcome offered (clamped like the session does).
    max_frame: usize,
    /// Tokens of the grants the relay sent, besides [`TOKEN`] (the first
    /// few; `None` slots are free).
    tokens: [Option<ResumeToken>; 8],
    /// More distinct tokens came than `tokens` holds: resumes go unchecked.
    tokens_overflow: bool,
    buf: [u8; CHECK_FRAME],
}

impl UploadChecker {
    /// Checks one sent frame; returns the data bytes it carried.
    /// Notes what the relay said that limits what the terminal may send.
    fn heard(&mut self, msg: &Message<'_>) {
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

    fn check(&mut self, wire: &[u8]) -> u64 {
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

/// The token of a grant for some other batch.
const OTHER_TOKEN: ResumeToken = ResumeToken([0xee; 16]);

/// A relay message built from fuzzer bytes for [`drive_upload`]: mostly
/// plausible values so the session gets far, with room for nonsense.
///
/// Operands: file (mod 4), selector (mod 12), then the selected message's fields.
fn relay_message_for_upload<'a>(input: &mut Input<'a>, files: u16) -> Option<Message<'a>> {
    let file = u16::from(input.byte()? % 4);
    Some(match input.byte()? % 12 {
        0 => Message::Welcome(Welcome {
            version: if input.byte()? == 0xff { 2 } else { 1 },
            role: Role::Relay,
            max_frame: u32::from(input.u16()?),
            window: u32::from(input.u16()?) << (input.byte()? % 12),
            caps: u32::from(input.byte()? & 1),
        }),
        1 => Message::Grant(Grant {
            code: code(),
            expires_at: 1_800_000_000,
            token: if input.byte()? % 8 == 0 {
                OTHER_TOKEN
            } else {
                TOKEN
            },
            files: if input.byte()? % 8 == 0 {
                files + 1
            } else {
                files
            },
        }),
        2 => Message::FilePlan(FilePlan {
            index: file,
            plan: match input.byte()? % 3 {
                0 => Plan::Held,
                1 => Plan::Upload {
                    offset: u64::from(input.u16()?),
                },
                _ => Plan::Challenge {
                    nonce: [input.byte()?; 32],
                },
            },
        }),
        3 => Message::Ack(Ack {
            file,
            offset: u64::from(input.u16()?),
            window: u32::from(input.u16()?),
        }),
        4 => Message::Rewind(Rewind {
            file,
            offset: u64::from(input.u16()?),
        }),
        5 => Message::FileVerified(FileVerified { index: file }),
        6 => Message::FileRejected(FileRejected {
            index: file,
            reason: input.error_code()?,
        }),
        7 => Message::Error(message::Error {
            code: input.error_code()?,
            kind: input.byte()?,
            retry_after_ms: u32::from(input.u16()?),
        }),
        8 => Message::BatchComplete(BatchComplete { code: code() }),
        9 => Message::Keepalive,
        10 => Message::Goodbye,
        // An ack of the whole file: lets the fuzzer finish files.
        _ => Message::Ack(Ack {
            file,
            offset: CONTENTS
                .get(usize::from(file))
                .map_or(0, |c| c.len() as u64),
            window: 4096,
        }),
    })
}

fn clamp_frame(max_frame: u32) -> usize {
    (max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN)
}

fn check_upload_event(e: upload::Event, total: u64) {
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

/// Runs an [`upload::Session`] against a relay whose every word comes from
/// `data`, and checks what the session does.
///
/// Setup byte: `bits 0-1` → 1 to 3 files of [`CONTENTS`] (3 means 3), plus
/// [`UPLOAD_RESUME`], [`UPLOAD_INSTANT`], [`UPLOAD_SMALL_WINDOW`]. Then each
/// operation is one byte (see [`Script`]) plus operands: connect,
/// disconnect, advance the clock, fire the next timer, handle a frame (kind
/// and body from the data, built directly so no CRC stands in the way),
/// handle a plausible relay message, transmit, poll events, settle timers.
///
/// Invariants: every frame sent is a valid terminal message within the
/// relay's frame limit; every data frame carries the file's true bytes;
/// acknowledged bytes never exceed the batch, and a success means all of
/// it; a finished session stays finished with the same outcome and no
/// timers; timers are never further out than the idle timeout; and once the
/// due timers ran and the output is sent, no timer is left in the past.
pub fn drive_upload(data: &[u8]) -> Summary {
    let mut input = Input { data };
    let mut summary = Summary::default();
    let Some(setup) = input.byte() else {
        return summary;
    };
    let nfiles = usize::from((setup & 3).min(2)) + 1;
    let metas = [0, 1, 2].map(|i| upload::FileMeta {
        name: NAMES[i],
        size: CONTENTS[i].len() as u64,
        sha1: Sha1Digest::of(CONTENTS[i]),
    });
    let config = upload::Config {
        max_frame: 1024,
        instant_upload: setup & UPLOAD_INSTANT != 0,
        max_window: if setup & UPLOAD_SMALL_WINDOW != 0 {
            256
        } else {
            1 << 20
        },
        ..upload::Config::default()
    };
    let made = if setup & UPLOAD_RESUME != 0 {
        upload::Session::<'static, 4>::resume(config, &metas[..nfiles], TOKEN)
    } else {
        upload::Session::<'static, 4>::new(config, &metas[..nfiles])
    };
    let mut session = made.expect("the fixed batch is valid");
    let total: u64 = CONTENTS[..nfiles].iter().map(|c| c.len() as u64).sum();
    assert_eq!(session.total_size(), total);
    let mut checker = UploadChecker {
        files: nfiles,
        max_frame: frame::MIN_FRAME_LEN,
        tokens: [None; 8],
        tokens_overflow: false,
        buf: [0; CHECK_FRAME],
    };
    let mut out = [0u8; TX_BUF];
    let mut now = Instant::from_millis(1_000);
    let mut finished: Option<Option<upload::Error>> = None;

    fn transmit(
        session: &mut upload::Session<'static, 4>,
        checker: &mut UploadChecker,
        now: Instant,
        out: &mut [u8],
        summary: &mut Summary,
    ) {
        for _ in 0..MAX_DRAIN {
            let mut source = CONTENTS;
            match session.poll_transmit(now, &mut source, out) {
                Ok(Some(n)) => {
                    summary.frames_sent += 1;
                    summary.data_bytes += checker.check(&out[..n]);
                }
                Ok(None) => return,
                Err(never) => match never {},
            }
        }
    }

    while let Some(op) = input.byte() {
        summary.ops += 1;
        match op % OP_COUNT {
            OP_CONNECT => session.handle_connected(now),
            OP_DISCONNECT => session.handle_disconnected(now),
            OP_ADVANCE => {
                let Some(ms) = input.u16() else { break };
                now = now + Duration::from_millis(u64::from(ms));
            }
            OP_FIRE_TIMER => {
                if let Some(t) = session.poll_timeout() {
                    now = now.max(t);
                    session.handle_timeout(now);
                }
            }
            OP_FRAME => {
                let Some(f) = input.frame() else { break };
                if let Ok(msg) = Message::decode(f) {
                    checker.heard(&msg);
                }
                session.handle_frame(now, f);
            }
            OP_RELAY => {
                let Some(msg) = relay_message_for_upload(&mut input, nfiles as u16) else {
                    break;
                };
                checker.heard(&msg);
                session.handle_message(now, msg);
            }
            OP_TRANSMIT => transmit(&mut session, &mut checker, now, &mut out, &mut summary),
            OP_EVENTS => {
                for _ in 0..MAX_DRAIN {
                    let Some(e) = session.poll_event() else { break };
                    check_upload_event(e, total);
                }
            }
            _ => {
                for round in 0..=MAX_TIMER_ROUNDS {
                    match session.poll_timeout() {
                        Some(t) if t <= now => {
                            assert!(round < MAX_TIMER_ROUNDS, "timer stuck at {t:?}: busy loop");
                            session.handle_timeout(now);
                            transmit(&mut session, &mut checker, now, &mut out, &mut summary);
                        }
                        _ => break,
                    }
                }
            }
        }
        let acked = session.acked();
        assert!(acked <= total, "acked {acked} of {total} bytes");
        if let Some(t) = session.poll_timeout() {
            assert!(
                t <= now + config.idle_timeout,
                "timer {t:?} beyond the idle timeout at {now:?}"
            );
        }
        match finished {
            Some(outcome) => {
                assert!(session.is_finished(), "a finished upload came back to life");
                assert_eq!(
                    session.error(),
                    outcome,
                    "a finished upload changed outcome"
                );
                assert_eq!(session.poll_timeout(), None, "a finished upload has timers");
            }
            None if session.is_finished() => {
                finished = Some(session.error());
                if session.error().is_none() {
                    assert_eq!(acked, total, "completed without every byte held");
                }
            }
            None => {}
        }
    }
    summary.completed = finished == Some(None);
    summary.failed = matches!(finished, Some(Some(_)));
    summary
}

/// Capacity of each file in [`FuzzSink`].
const SINK_CAP: usize = 1024;

/// What [`FuzzSink`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SinkFull;

#[derive(Clone, Copy)]
struct SinkFile {
    bytes: [u8; SINK_CAP],
    len: usize,
    /// Size and SHA-1 from the manifest entry the file was opened with.
    entry: Option<(u64, Sha1Digest)>,
    finished: bool,
}

/// An in-memory download target that checks how the session uses it.
struct FuzzSink {
    files: [SinkFile; 4],
    /// `open` fails, as on a disk that refuses to create the file.
    refuse_open: bool,
    written: u64,
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

/// A relay message built from fuzzer bytes for [`drive_download`].
///
/// Operands: file (mod 4), selector (mod 10), then the selected message's fields.
fn relay_message_for_download<'a>(input: &mut Input<'a>) -> Option<Message<'a>> {
    let file = u16::from(input.byte()? % 4);
    let content = CONTENTS.get(usize::from(file)).copied().unwrap_or(b"?");
    Some(match input.byte()? % 10 {
        0 => Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: u32::from(input.u16()?),
            window: 0,
            caps: 0,
        }),
        1 => {
            let flags = input.byte()?;
            Message::Manifest(Manifest {
                code: if flags & 0x80 != 0 {
                    Code::from_parts(4, 1).expect("fits")
                } else {
                    code()
                },
                expires_at: 1_800_000_000,
                files: u16::from(flags & 0x07),
                total_size: input.u64()?,
                received: 0,
                ready: flags & 0x08 == 0,
            })
        }
        2 => {
            let flags = input.byte()?;
            Message::ManifestEntry(ManifestEntry {
                index: file,
                size: match flags % 4 {
                    0 => input.u64()?,
                    1 => content.len() as u64 + 1,
                    _ => content.len() as u64,
                },
                sha1: if flags & 0x10 != 0 {
                    Sha1Digest([flags; 20])
                } else {
                    Sha1Digest::of(content)
                },
                received: 0,
                name: NAMES[usize::from(flags >> 5) % NAMES.len()],
            })
        }
        3..=5 => {
            let offset = usize::from(input.u16()?) % (content.len() + 2);
            let len = usize::from(input.byte()?);
            let corrupt = input.byte()? == 0;
            let start = offset.min(content.len());
            let end = (start + len).min(content.len());
            let bytes = if corrupt {
                input.bytes(len)?
            } else {
                &content[start..end]
            };
            Message::Data(message::Data {
                file,
                offset: offset as u64,
                bytes,
            })
        }
        6 => Message::Error(message::Error {
            code: input.error_code()?,
            kind: Kind::Read as u8,
            retry_after_ms: u32::from(input.u16()?),
        }),
        7 => Message::Keepalive,
        8 => Message::Goodbye,
        _ => {
            let offset = u64::from(input.u32()?) << 16;
            let len = usize::from(input.byte()? % 8);
            Message::Data(message::Data {
                file,
                offset,
                bytes: input.bytes(len)?,
            })
        }
    })
}

/// Checks one frame the download sends.
fn check_download_frame(wire: &[u8], window: u32, buf: &mut [u8; CHECK_FRAME]) {
    let (msg, raw) = sent_frame(wire, buf);
    match msg {
        Message::Hello(h) => {
            assert_eq!(h.role, Role::Terminal);
            assert!(raw <= frame::MIN_FRAME_LEN, "hello over 64 bytes");
        }
        Message::Fetch(x) => assert_eq!(x.code, code()),
        Message::Read(r) => {
            assert_eq!(r.code, code());
            assert_eq!(r.len, window);
            assert!(usize::from(r.file) < 4);
        }
        Message::Ack(a) => assert_eq!(a.window, window),
        Message::Keepalive | Message::Goodbye => {}
        other => panic!("a downloader never sends {other:?}"),
    }
}

fn check_download_event(e: download::Event, sink: &FuzzSink, manifest_only: bool) {
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

/// Runs a [`download::Session`] against a relay whose every word comes from
/// `data`, writing into an in-memory sink that checks how it is used.
///
/// Setup bytes: first `bits 0-1` → window 64, 300, 4096 or 1 MiB, plus
/// [`DOWNLOAD_MANIFEST_ONLY`], [`DOWNLOAD_WAIT`], [`DOWNLOAD_SINK_HASHES`],
/// and `bits 4-5 == 3` makes
/// the sink refuse to open files; second: two bits per file of
/// [`CONTENTS`] for what is already on disk (nothing, half, half with a
/// corrupt first byte, all), to exercise resume and refetch. Operations as
/// in [`drive_upload`].
///
/// Invariants: only a complete file whose bytes match the manifest's SHA-1
/// is ever finished (the sink checks at `finish`); nothing is written past
/// a file's size or after it was finished; a verified or complete event
/// means finished files; progress never exceeds the batch; frames sent are
/// valid terminal messages; a finished session stays finished; timers are
/// never further out than the idle timeout and none is left in the past
/// once the due timers ran.
pub fn drive_download(data: &[u8]) -> Summary {
    let mut input = Input { data };
    let mut summary = Summary::default();
    let (Some(setup), Some(prefill)) = (input.byte(), input.byte()) else {
        return summary;
    };
    let window = [64u32, 300, 4096, 1 << 20][usize::from(setup & 3)];
    let config = download::Config {
        max_frame: 1024,
        window,
        manifest_only: setup & DOWNLOAD_MANIFEST_ONLY != 0,
        wait_until_ready: (setup & DOWNLOAD_WAIT != 0).then_some(Duration::from_millis(3_000)),
        hashing: if setup & DOWNLOAD_SINK_HASHES != 0 {
            download::Hashing::BySink
        } else {
            download::Hashing::InSession
        },
        ..download::Config::default()
    };
    let mut session = download::Session::<4>::new(config, code());
    let empty = SinkFile {
        bytes: [0; SINK_CAP],
        len: 0,
        entry: None,
        finished: false,
    };
    let mut sink = FuzzSink {
        files: [empty; 4],
        refuse_open: setup & 0x30 == 0x30,
        written: 0,
    };
    for (i, f) in sink.files.iter_mut().enumerate().take(CONTENTS.len()) {
        let content = CONTENTS[i];
        let mode = (prefill >> (2 * i)) & 3;
        let n = match mode {
            0 => 0,
            3 => content.len(),
            _ => content.len() / 2,
        };
        f.bytes[..n].copy_from_slice(&content[..n]);
        if mode == 2 && n > 0 {
            f.bytes[0] ^= 0xff;
        }
        f.len = n;
    }
    let mut out = [0u8; TX_BUF];
    let mut check_buf = [0u8; CHECK_FRAME];
    let mut now = Instant::from_millis(1_000);
    let mut finished: Option<Option<download::Error>> = None;

    fn transmit(
        session: &mut download::Session<4>,
        sink: &mut FuzzSink,
        now: Instant,
        out: &mut [u8],
        check_buf: &mut [u8; CHECK_FRAME],
        summary: &mut Summary,
        window: u32,
    ) {
        for _ in 0..MAX_DRAIN {
            match session.poll_transmit(now, sink, out) {
                Ok(Some(n)) => {
                    summary.frames_sent += 1;
                    check_download_frame(&out[..n], window, check_buf);
                }
                Ok(None) | Err(SinkFull) => return,
            }
        }
    }

    while let Some(op) = input.byte() {
        summary.ops += 1;
        match op % OP_COUNT {
            OP_CONNECT => session.handle_connected(now),
            OP_DISCONNECT => session.handle_disconnected(now),
            OP_ADVANCE => {
                let Some(ms) = input.u16() else { break };
                now = now + Duration::from_millis(u64::from(ms));
            }
            OP_FIRE_TIMER => {
                if let Some(t) = session.poll_timeout() {
                    now = now.max(t);
                    session.handle_timeout(now);
                }
            }
            OP_FRAME => {
                let Some(f) = input.frame() else { break };
                // Storage errors are the sink's; the session retries on its timers.
                let _ = session.handle_frame(now, f, &mut sink);
            }
            OP_RELAY => {
                let Some(msg) = relay_message_for_download(&mut input) else {
                    break;
                };
                let _ = session.handle_message(now, msg, &mut sink);
            }
            OP_TRANSMIT => transmit(
                &mut session,
                &mut sink,
                now,
                &mut out,
                &mut check_buf,
                &mut summary,
                window,
            ),
            OP_EVENTS => {
                for _ in 0..MAX_DRAIN {
                    let Some(e) = session.poll_event() else { break };
                    check_download_event(e, &sink, config.manifest_only);
                }
            }
            _ => {
                for round in 0..=MAX_TIMER_ROUNDS {
                    match session.poll_timeout() {
                        Some(t) if t <= now => {
                            assert!(round < MAX_TIMER_ROUNDS, "timer stuck at {t:?}: busy loop");
                            session.handle_timeout(now);
                            transmit(
                                &mut session,
                                &mut sink,
                                now,
                                &mut out,
                                &mut check_buf,
                                &mut summary,
                                window,
                            );
                        }
                        _ => break,
                    }
                }
            }
        }
        let (done, total) = (session.done_bytes(), session.total_size());
        assert!(done <= total, "done {done} of {total} bytes");
        if let Some(t) = session.poll_timeout() {
            assert!(
                t <= now + config.idle_timeout,
                "timer {t:?} beyond the idle timeout at {now:?}"
            );
        }
        match finished {
            Some(outcome) => {
                assert!(
                    session.is_finished(),
                    "a finished download came back to life"
                );
                assert_eq!(
                    session.error(),
                    outcome,
                    "a finished download changed outcome"
                );
                assert_eq!(
                    session.poll_timeout(),
                    None,
                    "a finished download has timers"
                );
            }
            None if session.is_finished() => finished = Some(session.error()),
            None => {}
        }
    }
    summary.data_bytes = sink.written;
    summary.completed = finished == Some(None);
    summary.failed = matches!(finished, Some(Some(_)));
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{BatchOpen, Fetch, FileAnnounce, Hello, Proof, Read, Resume};
    use std::vec::Vec;

    /// A xorshift generator: deterministic pseudo-random inputs for the
    /// in-tree smoke runs of every driver.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn random_inputs(seed: u64, count: usize, max_len: usize) -> Vec<Vec<u8>> {
        let mut s = seed;
        (0..count)
            .map(|_| {
                let len = (xorshift(&mut s) as usize) % max_len;
                (0..len).map(|_| xorshift(&mut s) as u8).collect()
            })
            .collect()
    }

    fn wire(msg: &Message<'_>) -> Vec<u8> {
        let mut out = std::vec![0u8; 2048];
        let n = msg.encode(1024, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn all_kinds() -> Vec<Message<'static>> {
        std::vec![
            Message::Hello(Hello {
                version: 1,
                role: Role::Terminal,
                max_frame: 300,
                window: 70_000,
                caps: 1,
            }),
            Message::Keepalive,
            Message::BatchOpen(BatchOpen {
                files: 2,
                total_size: 1 << 40,
            }),
            Message::FileAnnounce(FileAnnounce {
                index: 1,
                size: 6,
                sha1: Sha1Digest::of(b"pickup"),
                name: "b.txt",
            }),
            Message::Grant(Grant {
                code: code(),
                expires_at: 1_800_000_000,
                token: TOKEN,
                files: 2,
            }),
            Message::FilePlan(FilePlan {
                index: 0,
                plan: Plan::Challenge { nonce: [9; 32] },
            }),
            Message::Proof(Proof {
                index: 0,
                proof: Sha1Digest([3; 20]),
            }),
            Message::Data(message::Data {
                file: 0,
                offset: 300,
                bytes: &[0, 1, 2, 0, 0],
            }),
            Message::Resume(Resume { token: TOKEN }),
            Message::Fetch(Fetch { code: code() }),
            Message::Read(Read {
                code: code(),
                file: 1,
                offset: 0,
                len: 4096,
            }),
            Message::Error(message::Error {
                code: ErrorCode::RateLimited,
                kind: 0x20,
                retry_after_ms: 1500,
            }),
        ]
    }

    #[test]
    fn decode_stream_finds_every_frame_in_any_split() {
        let msgs = all_kinds();
        let mut stream = std::vec![1u8, 0, 6, 250];
        for m in &msgs {
            stream.extend(wire(m));
        }
        assert_eq!(decode_stream(&stream), msgs.len() as u64);
        // Garbage in front and a cut frame in the middle lose only what they hit.
        let mut noisy = std::vec![3u8, 1, 4, 1];
        noisy.extend_from_slice(b"\x07garbage");
        noisy.push(0);
        noisy.extend(wire(&msgs[0]));
        let cut = wire(&msgs[3]);
        noisy.extend_from_slice(&cut[..cut.len() / 2]);
        noisy.push(0);
        noisy.extend(wire(&msgs[4]));
        assert_eq!(decode_stream(&noisy), 2);
        let digest = run_decoder(&noisy[4..], &[]);
        assert_eq!(digest.messages, 2);
        assert_eq!(digest.drops, 2);
    }

    #[test]
    fn decode_message_round_trips_every_kind_and_refuses_nonsense() {
        for m in all_kinds() {
            let w = wire(&m);
            let mut dec = Decoder::new([0u8; 1024]);
            let mut input = &w[..];
            let f = dec.feed(&mut input).unwrap().unwrap();
            let mut data = std::vec![f.kind];
            data.extend_from_slice(f.body);
            assert!(decode_message(&data), "{m:?}");
        }
        assert!(!decode_message(&[]));
        assert!(!decode_message(&[0x7f, 1, 2]), "unknown kind");
        assert!(
            !decode_message(&[Kind::Keepalive as u8, 0]),
            "trailing byte"
        );
        assert!(!decode_message(&[Kind::Hello as u8, 1, 9]), "bad role");
    }

    #[test]
    fn decoders_survive_random_input() {
        for data in random_inputs(0x9e37_79b9_7f4a_7c15, 3000, 600) {
            decode_stream(&data);
            decode_message(&data);
        }
    }

    /// Relay messages for a plain upload of all three files with a
    /// 256-byte frame limit.
    fn upload_script(setup: u8) -> Script<4096> {
        let mut s = Script::<4096>::new(&[setup]);
        s.connect().transmit();
        s.message(&Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 256,
            window: 4096,
            caps: 1,
        }));
        s.transmit().events();
        s
    }

    fn grant_and_plans(s: &mut Script<4096>, plans: [Plan; 3]) {
        s.message(&Message::Grant(Grant {
            code: code(),
            expires_at: 1_800_000_000,
            token: TOKEN,
            files: 3,
        }));
        for (i, plan) in plans.into_iter().enumerate() {
            s.message(&Message::FilePlan(FilePlan {
                index: i as u16,
                plan,
            }));
        }
    }

    fn ack_and_verify(s: &mut Script<4096>, file: u16) {
        s.message(&Message::Ack(Ack {
            file,
            offset: CONTENTS[usize::from(file)].len() as u64,
            window: 4096,
        }));
        s.message(&Message::FileVerified(FileVerified { index: file }));
    }

    #[test]
    fn a_scripted_upload_completes() {
        let mut s = upload_script(2);
        grant_and_plans(
            &mut s,
            [
                Plan::Upload { offset: 0 },
                Plan::Upload { offset: 0 },
                Plan::Held,
            ],
        );
        s.transmit().events();
        ack_and_verify(&mut s, 0);
        ack_and_verify(&mut s, 1);
        s.events().transmit();
        let summary = drive_upload(s.as_bytes());
        assert!(summary.completed, "{summary:?}");
        assert_eq!(summary.data_bytes, 706);
        // hello, open, 3 announces, 3+1 data frames, goodbye
        assert_eq!(summary.frames_sent, 10);
    }

    #[test]
    fn a_scripted_upload_resumes_after_a_lost_link() {
        let mut s = upload_script(2);
        grant_and_plans(&mut s, [Plan::Upload { offset: 0 }, Plan::Held, Plan::Held]);
        s.transmit();
        // Only the first 237 bytes became durable before the link dropped.
        s.message(&Message::Ack(Ack {
            file: 0,
            offset: 237,
            window: 4096,
        }));
        s.disconnect().advance(500).connect().transmit();
        s.message(&Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 256,
            window: 4096,
            caps: 1,
        }));
        s.transmit(); // Resume
        grant_and_plans(
            &mut s,
            [Plan::Upload { offset: 237 }, Plan::Held, Plan::Held],
        );
        s.transmit();
        ack_and_verify(&mut s, 0);
        s.events();
        let summary = drive_upload(s.as_bytes());
        assert!(summary.completed, "{summary:?}");
        assert_eq!(summary.data_bytes, 700 + 700 - 237);
    }

    #[test]
    fn a_scripted_upload_answers_a_challenge_and_times_out_cleanly() {
        let mut s = upload_script(2 | UPLOAD_INSTANT);
        grant_and_plans(
            &mut s,
            [
                Plan::Challenge { nonce: [7; 32] },
                Plan::Upload { offset: 0 },
                Plan::Held,
            ],
        );
        s.transmit();
        s.message(&Message::FilePlan(FilePlan {
            index: 0,
            plan: Plan::Held,
        }));
        // The relay falls silent: retransmit, keepalive, then link lost.
        for _ in 0..12 {
            s.advance(2_500).settle().events();
        }
        let summary = drive_upload(s.as_bytes());
        assert!(!summary.completed && !summary.failed, "{summary:?}");
        assert!(
            summary.data_bytes >= 12,
            "file 1 sent and resent: {summary:?}"
        );
    }

    /// Fuzzer input from CI: a grant sent as a raw frame carries a token of
    /// its own, and the session rightly resumes with it later.
    #[test]
    fn a_resume_may_carry_the_token_of_a_raw_grant() {
        let other = ResumeToken([0x77; 16]);
        let mut s = upload_script(0);
        s.message(&Message::Grant(Grant {
            code: code(),
            expires_at: 1_800_000_000,
            token: other,
            files: 1,
        }));
        s.message(&Message::FilePlan(FilePlan {
            index: 0,
            plan: Plan::Upload { offset: 0 },
        }));
        s.transmit();
        // Silence: the retransmission timer resumes with the granted token.
        for _ in 0..3 {
            s.advance(2_100).settle();
        }
        let summary = drive_upload(s.as_bytes());
        assert!(summary.frames_sent > 6, "{summary:?}");
    }

    #[test]
    #[should_panic(expected = "data differs")]
    fn the_upload_checker_catches_wrong_bytes() {
        let mut checker = UploadChecker {
            files: 2,
            max_frame: 1024,
            tokens: [None; 8],
            tokens_overflow: false,
            buf: [0; CHECK_FRAME],
        };
        let good = wire(&Message::Data(message::Data {
            file: 1,
            offset: 1,
            bytes: b"ick",
        }));
        assert_eq!(checker.check(&good), 3);
        checker.check(&wire(&Message::Data(message::Data {
            file: 1,
            offset: 1,
            bytes: b"ack",
        })));
    }

    #[test]
    #[should_panic(expected = "over the limit")]
    fn the_upload_checker_catches_oversize_frames() {
        let mut checker = UploadChecker {
            files: 1,
            max_frame: 64,
            tokens: [None; 8],
            tokens_overflow: false,
            buf: [0; CHECK_FRAME],
        };
        checker.check(&wire(&Message::Data(message::Data {
            file: 0,
            offset: 0,
            bytes: &CONTENT_A[..100],
        })));
    }

    fn download_script(setup: u8, prefill: u8, ready: bool) -> Script<4096> {
        let mut s = Script::<4096>::new(&[setup, prefill]);
        s.connect().transmit();
        s.message(&Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 1024,
            window: 0,
            caps: 0,
        }));
        s.transmit();
        manifest(&mut s, ready);
        s
    }

    fn manifest(s: &mut Script<4096>, ready: bool) {
        s.message(&Message::Manifest(Manifest {
            code: code(),
            expires_at: 1_800_000_000,
            files: 3,
            total_size: 706,
            received: if ready { 706 } else { 100 },
            ready,
        }));
        for (i, c) in CONTENTS.iter().enumerate() {
            s.message(&Message::ManifestEntry(ManifestEntry {
                index: i as u16,
                size: c.len() as u64,
                sha1: Sha1Digest::of(c),
                received: c.len() as u64,
                name: NAMES[i],
            }));
        }
    }

    fn data(s: &mut Script<4096>, file: u16, from: usize, to: usize) {
        let content = CONTENTS[usize::from(file)];
        let mut at = from;
        while at < to {
            let end = (at + 200).min(to);
            s.message(&Message::Data(message::Data {
                file,
                offset: at as u64,
                bytes: &content[at..end],
            }));
            at = end;
        }
    }

    #[test]
    fn a_scripted_download_completes() {
        let mut s = download_script(2, 0, true);
        s.transmit(); // Read file 0
        data(&mut s, 0, 0, 700);
        s.transmit(); // Read file 1
        data(&mut s, 1, 0, 6);
        s.events().transmit();
        let summary = drive_download(s.as_bytes());
        assert!(summary.completed, "{summary:?}");
        assert_eq!(summary.data_bytes, 706);
        // hello, fetch, read, read, goodbye
        assert_eq!(summary.frames_sent, 5);
    }

    #[test]
    fn a_scripted_download_refetches_a_corrupt_prefix_and_uses_a_good_one() {
        // File 0: half present with a corrupt first byte; file 1 half present, intact.
        let mut s = download_script(2, 0b0110, true);
        s.transmit(); // re-hash, Read file 0 from 350
        data(&mut s, 0, 350, 700); // hash mismatch: truncate, Refetch
        s.transmit(); // Read file 0 from 0
        data(&mut s, 0, 0, 700);
        s.transmit(); // re-hash file 1's prefix, Read from 3
        data(&mut s, 1, 3, 6);
        s.events().transmit();
        let summary = drive_download(s.as_bytes());
        assert!(summary.completed, "{summary:?}");
        assert_eq!(summary.data_bytes, 350 + 700 + 3);
    }

    #[test]
    fn a_scripted_download_with_small_window_acks_and_survives_a_gap() {
        let mut s = download_script(0, 0, true); // window 64
        s.transmit();
        // 40 bytes, then a gap (40..80 lost), then the restart.
        s.message(&Message::Data(message::Data {
            file: 0,
            offset: 0,
            bytes: &CONTENT_A[..40],
        }));
        s.transmit(); // Ack: 24 bytes of credit left
        s.message(&Message::Data(message::Data {
            file: 0,
            offset: 80,
            bytes: &CONTENT_A[80..100],
        }));
        s.transmit(); // Read from 40
        data(&mut s, 0, 40, 700);
        s.transmit();
        data(&mut s, 1, 0, 6);
        s.events();
        let summary = drive_download(s.as_bytes());
        assert!(summary.completed, "{summary:?}");
        assert_eq!(summary.data_bytes, 706);
    }

    #[test]
    fn a_scripted_download_waits_for_a_batch_that_is_not_ready() {
        let mut s = download_script(2 | DOWNLOAD_WAIT, 0, false);
        // The relay answers every fetch: still uploading, for 30 seconds.
        for _ in 0..10 {
            s.advance(3_000).settle();
            manifest(&mut s, false);
        }
        manifest(&mut s, true);
        s.transmit();
        data(&mut s, 0, 0, 700);
        s.transmit();
        data(&mut s, 1, 0, 6);
        let summary = drive_download(s.as_bytes());
        assert!(summary.completed, "{summary:?}");
    }

    #[test]
    fn a_download_rejects_a_wrong_file_and_never_finishes_it() {
        let mut s = download_script(2, 0, true);
        s.transmit();
        s.message(&Message::Data(message::Data {
            file: 0,
            offset: 0,
            bytes: &[0u8; 200],
        }));
        data(&mut s, 0, 200, 700);
        s.events();
        let summary = drive_download(s.as_bytes());
        assert!(summary.failed, "{summary:?}");
    }

    #[test]
    #[should_panic(expected = "does not match its SHA-1")]
    fn the_sink_refuses_to_finish_wrong_content() {
        let empty = SinkFile {
            bytes: [0; SINK_CAP],
            len: 0,
            entry: None,
            finished: false,
        };
        let mut sink = FuzzSink {
            files: [empty; 4],
            refuse_open: false,
            written: 0,
        };
        let entry = ManifestEntry {
            index: 1,
            size: 6,
            sha1: Sha1Digest::of(b"pickup"),
            received: 6,
            name: "b.txt",
        };
        assert_eq!(sink.open(&entry), Ok(0));
        sink.write_at(1, 0, b"pickup").unwrap();
        sink.write_at(1, 0, b"P").unwrap();
        sink.finish(1).unwrap();
    }

    #[test]
    fn drivers_survive_random_operations() {
        // Uniform bytes: one operation in nine is a built-in relay message,
        // enough to get past the handshake now and then.
        for data in random_inputs(0x5eed, 2000, 400) {
            drive_upload(&data);
            drive_download(&data);
        }
    }

    #[test]
    fn scripts_write_what_the_drivers_read() {
        let mut s = Script::<32>::new(&[7]);
        s.connect()
            .advance(0x0102)
            .frame(0x20, b"ab")
            .relay(&[1, 2])
            .settle();
        assert_eq!(
            s.as_bytes(),
            [
                7, OP_CONNECT, OP_ADVANCE, 2, 1, OP_FRAME, 0x20, 2, b'a', b'b', OP_RELAY, 1, 2,
                OP_SETTLE
            ]
        );
        let mut input = Input {
            data: &s.as_bytes()[6..],
        };
        let f = input.frame().unwrap();
        assert_eq!((f.kind, f.body), (0x20, &b"ab"[..]));
    }
}
