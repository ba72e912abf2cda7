//! Every message of the Pickup exchange.
//!
//! A message is a frame's kind byte plus its body. Bodies are postcard
//! encodings of the structs below, field by field in declaration order,
//! except [`Data`], whose payload runs to the end of the body (no length
//! prefix) so a sender can read file bytes straight into the frame.
//!
//! Kinds are grouped by range so that a newer peer's additions land in known
//! places; a kind this side does not know decodes to
//! [`DecodeError::UnknownKind`] and is answered with
//! [`ErrorCode::UnknownKind`], never a crash:
//!
//! | range        | purpose                                                    |
//! |--------------|------------------------------------------------------------|
//! | `0x01..0x0F` | session: hello, welcome, keepalive, goodbye, error         |
//! | `0x10..0x1F` | upload: announce, grant, plan, proof, data, ack, verdicts  |
//! | `0x20..0x2F` | download: fetch, manifest, read                            |
//! | `0x30..0x3F` | reserved: push notice to a target terminal, store-and-forward |
//! | `0x40..0x4F` | reserved: relay-to-relay forwarding with progress reports  |
//!
//! `PROTOCOL.md` at the repository root has the byte layouts, the state
//! diagrams and a hex test vector for every kind; `tests::VECTORS` below
//! asserts the same bytes.

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::error::ErrorCode;
use crate::frame::{self, EncodeError, Frame};
use crate::hash::{Nonce, Sha1Digest};
use crate::PROTOCOL_VERSION;

/// Capability bit: the peer can link held content after a proof of ownership.
pub const CAP_INSTANT_UPLOAD: u32 = 1 << 0;
/// Capability bit (reserved): push notices to a named target terminal.
pub const CAP_PUSH_NOTICE: u32 = 1 << 8;
/// Capability bit (reserved): relay-to-relay forwarding.
pub const CAP_FORWARD: u32 = 1 << 9;

/// The longest file name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 255;

/// The secret that lets an uploader continue or change its upload. The code
/// only reads; only the token writes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ResumeToken(#[serde(with = "crate::fixed_bytes")] pub [u8; 16]);

impl core::fmt::Debug for ResumeToken {
    /// Tokens are secrets: debug output never shows them.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ResumeToken(..)")
    }
}

/// Who is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// 0: a terminal that uploads and/or downloads.
    Terminal,
    /// 1: a relay (in a welcome, or another relay forwarding to this one).
    Relay,
}

/// 0x01, terminal → relay: opens a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello {
    /// Highest protocol version the sender speaks.
    pub version: u8,
    /// The sender's role.
    pub role: Role,
    /// Largest raw frame the sender accepts.
    pub max_frame: u32,
    /// Most bytes of data the sender keeps in flight: a downloading
    /// terminal's credit for the relay, an uploading terminal's own cap
    /// (the relay paces its acks by it); 0 if the sender does not say.
    pub window: u32,
    /// `CAP_*` bits.
    pub caps: u32,
}

/// 0x02, relay → terminal: accepts a session and states the relay's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Welcome {
    /// The protocol version both sides will speak.
    pub version: u8,
    /// The relay's role (always `Relay`).
    pub role: Role,
    /// Largest raw frame the relay accepts.
    pub max_frame: u32,
    /// Most bytes of upload data the relay accepts in flight.
    pub window: u32,
    /// `CAP_*` bits.
    pub caps: u32,
}

/// 0x05, either way: a request failed, or the session is being closed for a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Error {
    /// Why.
    pub code: ErrorCode,
    /// The kind of the message that caused it, 0 if none.
    pub kind: u8,
    /// For `RateLimited` and `Busy`: milliseconds to wait before retrying; else 0.
    pub retry_after_ms: u32,
}

/// 0x10, terminal → relay: starts a new batch of `files` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BatchOpen {
    /// How many [`FileAnnounce`] messages follow (at least 1).
    pub files: u16,
    /// Sum of the announced sizes, so the relay can refuse early.
    pub total_size: u64,
}

/// 0x11, terminal → relay: one file of the batch being opened. Files are
/// announced one per message, in index order, so a batch of any size fits
/// any frame size that holds its longest name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileAnnounce<'a> {
    /// Position in the batch, from 0.
    pub index: u16,
    /// Size in bytes.
    pub size: u64,
    /// SHA-1 of the whole content.
    pub sha1: Sha1Digest,
    /// File name: UTF-8, 1..=255 bytes, one path component (see [`validate_name`]).
    pub name: &'a str,
}

/// 0x12, relay → terminal: the batch exists. Sent after the last
/// [`FileAnnounce`], or in answer to [`Resume`]; one [`FilePlan`] per file follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Grant {
    /// The pickup code for downloaders.
    pub code: Code,
    /// When the batch expires, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// The uploader's secret for resuming; never shown to downloaders.
    pub token: ResumeToken,
    /// Number of files in the batch.
    pub files: u16,
}

/// What the relay wants for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Plan {
    /// 0: the relay holds this file completely; send nothing.
    Held,
    /// 1: send data from this offset (0 for a new file, the durable offset
    /// for a resumed one).
    Upload {
        /// First byte the relay needs.
        offset: u64,
    },
    /// 2: the relay holds content with this size and SHA-1; prove you own it
    /// with a [`Proof`] over this nonce, or ignore the challenge and wait for
    /// an `Upload` plan after a wrong proof.
    Challenge {
        /// Fresh random bytes.
        #[serde(with = "crate::fixed_bytes")]
        nonce: Nonce,
    },
}

/// 0x13, relay → terminal: the plan for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FilePlan {
    /// File index.
    pub index: u16,
    /// What to do.
    pub plan: Plan,
}

/// 0x14, terminal → relay: proof of ownership for a challenged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Proof {
    /// File index.
    pub index: u16,
    /// [`ProofHasher`](crate::hash::ProofHasher) over the nonce and the whole file.
    pub proof: Sha1Digest,
}

/// 0x15, either way: file bytes at an offset. Upload data flows terminal →
/// relay; download data relay → terminal in answer to [`Read`].
///
/// Body layout: `varint(file) ‖ varint(offset) ‖ bytes…` to the end of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    /// File index.
    pub file: u16,
    /// Offset of the first byte.
    pub offset: u64,
    /// The bytes.
    pub bytes: &'a [u8],
}

/// The most bytes of `(file, offset)` prefix a [`Data`] body can have.
pub const DATA_PREFIX_MAX: usize = 3 + 10;

impl Data<'_> {
    /// The largest payload that always fits a raw frame of `max_frame` bytes.
    pub const fn max_payload(max_frame: usize) -> usize {
        max_frame.saturating_sub(frame::OVERHEAD + DATA_PREFIX_MAX)
    }
}

/// 0x16, relay → terminal: every byte of `file` before `offset` is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ack {
    /// File index.
    pub file: u16,
    /// Cumulative durable offset.
    pub offset: u64,
    /// Bytes the terminal may have in flight beyond `offset`.
    pub window: u32,
}

/// 0x17, relay → terminal: data past `offset` was lost (a gap); resend from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rewind {
    /// File index.
    pub file: u16,
    /// The next byte the relay expects.
    pub offset: u64,
}

/// 0x18, relay → terminal: the file is complete and its size and SHA-1 matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileVerified {
    /// File index.
    pub index: u16,
}

/// 0x19, relay → terminal: the file failed verification; its bytes are gone
/// and its upload restarts from 0 if the terminal sends it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileRejected {
    /// File index.
    pub index: u16,
    /// `HashMismatch`, `SizeMismatch`, `Quota`, …
    pub reason: ErrorCode,
}

/// 0x1A, relay → terminal: every file is verified; the code now serves the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BatchComplete {
    /// The batch's pickup code.
    pub code: Code,
}

/// 0x1B, terminal → relay: continue the upload this token belongs to. The
/// relay answers with a [`Grant`] and one [`FilePlan`] per file carrying its
/// durable offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Resume {
    /// The token from the original grant.
    pub token: ResumeToken,
}

/// 0x20, terminal → relay: look up a batch by code. Answered by a
/// [`Manifest`] and one [`ManifestEntry`] per file, or an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Fetch {
    /// The pickup code.
    pub code: Code,
}

/// 0x21, relay → terminal: the batch behind a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Manifest {
    /// The code asked for.
    pub code: Code,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// Number of files; that many [`ManifestEntry`] messages follow.
    pub files: u16,
    /// Sum of the file sizes.
    pub total_size: u64,
    /// Bytes durably received so far, over all files.
    pub received: u64,
    /// Whether every file is verified and the batch can be read.
    pub ready: bool,
}

/// 0x22, relay → terminal: one file of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ManifestEntry<'a> {
    /// File index.
    pub index: u16,
    /// Size in bytes.
    pub size: u64,
    /// SHA-1 of the content.
    pub sha1: Sha1Digest,
    /// Bytes durably received so far.
    pub received: u64,
    /// File name as announced (validated by the relay; check again before use).
    pub name: &'a str,
}

/// 0x23, terminal → relay: send `len` bytes of `file` from `offset` as
/// [`Data`] messages. A new `Read` replaces any earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Read {
    /// The pickup code (reads are authorised by the code, per request).
    pub code: Code,
    /// File index.
    pub file: u16,
    /// First byte wanted.
    pub offset: u64,
    /// How many bytes, at most the terminal's window.
    pub len: u32,
}

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
#[allow(missing_docs)] // each variant is documented on its message type
pub enum Kind {
    Hello = 0x01,
    Welcome = 0x02,
    Keepalive = 0x03,
    Goodbye = 0x04,
    Error = 0x05,
    BatchOpen = 0x10,
    FileAnnounce = 0x11,
    Grant = 0x12,
    FilePlan = 0x13,
    Proof = 0x14,
    Data = 0x15,
    Ack = 0x16,
    Rewind = 0x17,
    FileVerified = 0x18,
    FileRejected = 0x19,
    BatchComplete = 0x1A,
    Resume = 0x1B,
    Fetch = 0x20,
    Manifest = 0x21,
    ManifestEntry = 0x22,
    Read = 0x23,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 21] = [
        Kind::Hello,
        Kind::Welcome,
        Kind::Keepalive,
        Kind::Goodbye,
        Kind::Error,
        Kind::BatchOpen,
        Kind::FileAnnounce,
        Kind::Grant,
        Kind::FilePlan,
        Kind::Proof,
        Kind::Data,
        Kind::Ack,
        Kind::Rewind,
        Kind::FileVerified,
        Kind::FileRejected,
        Kind::BatchComplete,
        Kind::Resume,
        Kind::Fetch,
        Kind::Manifest,
        Kind::ManifestEntry,
        Kind::Read,
    ];

    /// The kind for a byte, if this version knows it.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| *k as u8 == byte)
    }
}

/// Any message, borrowing names and data from the frame it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // each variant is documented on its payload type
pub enum Message<'a> {
    Hello(Hello),
    Welcome(Welcome),
    /// 0x03, either way: nothing to say, but the link is alive. Empty body.
    Keepalive,
    /// 0x04, either way: the sender is closing the session cleanly. Empty body.
    Goodbye,
    Error(Error),
    BatchOpen(BatchOpen),
    FileAnnounce(FileAnnounce<'a>),
    Grant(Grant),
    FilePlan(FilePlan),
    Proof(Proof),
    Data(Data<'a>),
    Ack(Ack),
    Rewind(Rewind),
    FileVerified(FileVerified),
    FileRejected(FileRejected),
    BatchComplete(BatchComplete),
    Resume(Resume),
    Fetch(Fetch),
    Manifest(Manifest),
    ManifestEntry(ManifestEntry<'a>),
    Read(Read),
}

/// Why a CRC-valid frame is not a message this side can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame header names a protocol version this side does not speak.
    UnsupportedVersion(u8),
    /// The kind byte is not one this version knows.
    UnknownKind(u8),
    /// The body does not decode as the kind's message, or has trailing bytes.
    BadBody(u8),
    /// A known kind that only flows the other way (e.g. a `Fetch` sent to a
    /// terminal), from [`Message::decode_from_relay`] or
    /// [`Message::decode_from_terminal`].
    WrongDirection(u8),
}

impl DecodeError {
    /// The error code to answer the peer with.
    pub fn code(self) -> ErrorCode {
        match self {
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownKind(_) => ErrorCode::UnknownKind,
            DecodeError::BadBody(_) => ErrorCode::BadFrame,
            DecodeError::WrongDirection(_) => ErrorCode::UnexpectedMessage,
        }
    }

    /// The kind byte of the offending frame (0 when the version was wrong).
    pub fn kind(self) -> u8 {
        match self {
            DecodeError::UnsupportedVersion(_) => 0,
            DecodeError::UnknownKind(k)
            | DecodeError::BadBody(k)
            | DecodeError::WrongDirection(k) => k,
        }
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            DecodeError::UnknownKind(k) => write!(f, "unknown message kind {k:#04x}"),
            DecodeError::BadBody(k) => write!(f, "malformed body for message kind {k:#04x}"),
            DecodeError::WrongDirection(k) => {
                write!(f, "message kind {k:#04x} does not flow this way")
            }
        }
    }
}

fn body<'a, T: Deserialize<'a>>(kind: u8, bytes: &'a [u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(DecodeError::BadBody(kind)),
    }
}

/// Checks the version and looks up the kind.
fn header(frame: Frame<'_>) -> Result<(Kind, u8, &[u8]), DecodeError> {
    if frame.version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(frame.version));
    }
    let kind = Kind::from_u8(frame.kind).ok_or(DecodeError::UnknownKind(frame.kind))?;
    Ok((kind, frame.kind, frame.body))
}

fn empty(kind: u8, bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::BadBody(kind))
    }
}

impl<'a> Message<'a> {
    /// The message's kind byte.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::Welcome(_) => Kind::Welcome,
            Message::Keepalive => Kind::Keepalive,
            Message::Goodbye => Kind::Goodbye,
            Message::Error(_) => Kind::Error,
            Message::BatchOpen(_) => Kind::BatchOpen,
            Message::FileAnnounce(_) => Kind::FileAnnounce,
            Message::Grant(_) => Kind::Grant,
            Message::FilePlan(_) => Kind::FilePlan,
            Message::Proof(_) => Kind::Proof,
            Message::Data(_) => Kind::Data,
            Message::Ack(_) => Kind::Ack,
            Message::Rewind(_) => Kind::Rewind,
            Message::FileVerified(_) => Kind::FileVerified,
            Message::FileRejected(_) => Kind::FileRejected,
            Message::BatchComplete(_) => Kind::BatchComplete,
            Message::Resume(_) => Kind::Resume,
            Message::Fetch(_) => Kind::Fetch,
            Message::Manifest(_) => Kind::Manifest,
            Message::ManifestEntry(_) => Kind::ManifestEntry,
            Message::Read(_) => Kind::Read,
        }
    }

    /// Decodes a CRC-checked frame of any kind (what a relay receives is a
    /// subset, but a relay also decodes for logs and tests). Never panics;
    /// every field is checked by postcard, and trailing bytes are an error.
    pub fn decode(frame: Frame<'a>) -> Result<Message<'a>, DecodeError> {
        match Self::decode_from_relay(frame) {
            Err(DecodeError::WrongDirection(_)) => Self::decode_from_terminal(frame),
            other => other,
        }
    }

    /// Decodes only the kinds a relay sends to a terminal, and the kinds that
    /// flow both ways. A terminal uses this rather than [`Message::decode`]
    /// so that an MCU image carries no decoder for messages it never
    /// receives (about 1 KiB of flash).
    pub fn decode_from_relay(frame: Frame<'a>) -> Result<Message<'a>, DecodeError> {
        let (kind, k, b) = header(frame)?;
        Ok(match kind {
            Kind::Welcome => Message::Welcome(body(k, b)?),
            Kind::Grant => Message::Grant(body(k, b)?),
            Kind::FilePlan => Message::FilePlan(body(k, b)?),
            Kind::Rewind => Message::Rewind(body(k, b)?),
            Kind::FileVerified => Message::FileVerified(body(k, b)?),
            Kind::FileRejected => Message::FileRejected(body(k, b)?),
            Kind::BatchComplete => Message::BatchComplete(body(k, b)?),
            Kind::Manifest => Message::Manifest(body(k, b)?),
            Kind::ManifestEntry => Message::ManifestEntry(body(k, b)?),
            _ => return Self::decode_both_ways(kind, k, b),
        })
    }

    /// Decodes only the kinds a terminal sends to a relay, and the kinds that
    /// flow both ways.
    pub fn decode_from_terminal(frame: Frame<'a>) -> Result<Message<'a>, DecodeError> {
        let (kind, k, b) = header(frame)?;
        Ok(match kind {
            Kind::Hello => Message::Hello(body(k, b)?),
            Kind::BatchOpen => Message::BatchOpen(body(k, b)?),
            Kind::FileAnnounce => Message::FileAnnounce(body(k, b)?),
            Kind::Proof => Message::Proof(body(k, b)?),
            Kind::Resume => Message::Resume(body(k, b)?),
            Kind::Fetch => Message::Fetch(body(k, b)?),
            Kind::Read => Message::Read(body(k, b)?),
            _ => return Self::decode_both_ways(kind, k, b),
        })
    }

    fn decode_both_ways(kind: Kind, k: u8, b: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        Ok(match kind {
            Kind::Keepalive => {
                empty(k, b)?;
                Message::Keepalive
            }
            Kind::Goodbye => {
                empty(k, b)?;
                Message::Goodbye
            }
            Kind::Error => Message::Error(body(k, b)?),
            Kind::Ack => Message::Ack(body(k, b)?),
            Kind::Data => {
                let ((file, offset), bytes) = postcard::take_from_bytes::<(u16, u64)>(b)
                    .map_err(|_| DecodeError::BadBody(k))?;
                Message::Data(Data {
                    file,
                    offset,
                    bytes,
                })
            }
            _ => return Err(DecodeError::WrongDirection(k)),
        })
    }

    /// Encodes the message as one delimited frame into `out`, refusing to
    /// exceed `max_frame` raw bytes (the peer's limit). Returns the number of
    /// bytes to send.
    pub fn encode(&self, max_frame: usize, out: &mut [u8]) -> Result<usize, EncodeError> {
        match self {
            Message::Hello(m) => encode(m, max_frame, out),
            Message::Welcome(m) => encode(m, max_frame, out),
            Message::Keepalive => encode_empty(Kind::Keepalive, max_frame, out),
            Message::Goodbye => encode_empty(Kind::Goodbye, max_frame, out),
            Message::Error(m) => encode(m, max_frame, out),
            Message::BatchOpen(m) => encode(m, max_frame, out),
            Message::FileAnnounce(m) => encode(m, max_frame, out),
            Message::Grant(m) => encode(m, max_frame, out),
            Message::FilePlan(m) => encode(m, max_frame, out),
            Message::Proof(m) => encode(m, max_frame, out),
            Message::Data(d) => {
                encode_data_with(d.file, d.offset, d.bytes.len(), max_frame, out, |room| {
                    let dst = room.get_mut(..d.bytes.len())?;
                    dst.copy_from_slice(d.bytes);
                    Some(d.bytes.len())
                })
            }
            Message::Ack(m) => encode(m, max_frame, out),
            Message::Rewind(m) => encode(m, max_frame, out),
            Message::FileVerified(m) => encode(m, max_frame, out),
            Message::FileRejected(m) => encode(m, max_frame, out),
            Message::BatchComplete(m) => encode(m, max_frame, out),
            Message::Resume(m) => encode(m, max_frame, out),
            Message::Fetch(m) => encode(m, max_frame, out),
            Message::Manifest(m) => encode(m, max_frame, out),
            Message::ManifestEntry(m) => encode(m, max_frame, out),
            Message::Read(m) => encode(m, max_frame, out),
        }
    }
}

/// A message body with its kind: every message type but [`Data`] and the
/// empty ones.
pub trait Body: Serialize {
    /// The kind byte that goes with this body.
    const KIND: Kind;
}

macro_rules! bodies {
    ($($ty:ident),* $(,)?) => {
        $(impl Body for $ty { const KIND: Kind = Kind::$ty; })*
    };
}

bodies!(
    Hello,
    Welcome,
    Error,
    BatchOpen,
    Grant,
    FilePlan,
    Proof,
    Ack,
    Rewind,
    FileVerified,
    FileRejected,
    BatchComplete,
    Resume,
    Fetch,
    Manifest,
    Read,
);

impl Body for FileAnnounce<'_> {
    const KIND: Kind = Kind::FileAnnounce;
}

impl Body for ManifestEntry<'_> {
    const KIND: Kind = Kind::ManifestEntry;
}

/// Encodes one message as a delimited frame into `out` (at most `max_frame`
/// raw bytes). Typed, so a program links the encoders of only the messages
/// it sends: what keeps a terminal's image small.
pub fn encode<T: Body>(body: &T, max_frame: usize, out: &mut [u8]) -> Result<usize, EncodeError> {
    frame::encode_with(PROTOCOL_VERSION, T::KIND as u8, max_frame, out, |buf| {
        postcard::to_slice(body, buf).ok().map(|s| s.len())
    })
}

/// Encodes a message with an empty body (`Keepalive`, `Goodbye`).
pub fn encode_empty(kind: Kind, max_frame: usize, out: &mut [u8]) -> Result<usize, EncodeError> {
    frame::encode_with(PROTOCOL_VERSION, kind as u8, max_frame, out, |_| Some(0))
}

/// Encodes a [`Data`] frame whose payload `fill` writes straight into the
/// frame (e.g. a file read), so the bytes are copied once. `fill` gets at
/// most `max_len` bytes of room and returns how many it wrote.
pub fn encode_data_with(
    file: u16,
    offset: u64,
    max_len: usize,
    max_frame: usize,
    out: &mut [u8],
    fill: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> Result<usize, EncodeError> {
    frame::encode_with(PROTOCOL_VERSION, Kind::Data as u8, max_frame, out, |buf| {
        let n = postcard::to_slice(&(file, offset), buf).ok()?.len();
        let room = buf.len().checked_sub(n)?.min(max_len);
        let written = fill(buf.get_mut(n..n + room)?)?;
        (written <= room).then_some(n + written)
    })
}

/// Checks a file name from the wire: 1..=255 bytes of UTF-8, no control
/// characters, no `/`, `\` or `:`, and not `.` or `..`. A name that passes is
/// a single path component on Unix and Windows, so it can never climb out of
/// a download directory. The relay never uses names on disk at all.
pub fn validate_name(name: &str) -> Result<(), ErrorCode> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::InvalidName)
    }
}

#[cfg(test)]
mod tests;
