//! From a message to a delimited frame: typed per body ([`Body`], [`encode`]),
//! so a program links the encoders of only what it sends.

use serde::Serialize;

use super::{
    encode_data_with, Ack, BatchComplete, BatchOpen, Error, Fetch, FileAnnounce, FileAttrs,
    FilePlan, FileRejected, FileVerified, Grant, Hello, Join, Kind, Manifest, ManifestEntry,
    Message, PageLink, Proof, Read, RelayLimits, Resume, Rewind, Welcome,
};
use super::{
    AllowSender, Delivery, DeliveryStatus, Inbox, Notice, NoticeAck, NoticeRefuse, Push, Receipt,
    Settled,
};
use super::{
    Authenticate, Authenticated, Challenge, ChallengeAnswer, Done, FetchNamed, Login, RemoveNamed,
    ShareNamed, TerminalAuth,
};
use super::{
    ForwardAccepted, ForwardPush, ForwardRequest, ForwardRetry, ForwardStatus, ForwardWatch,
    PeerPush,
};
use crate::frame::{self, EncodeError};
use crate::PROTOCOL_VERSION;

impl Message<'_> {
    /// Encodes the message as one delimited frame into `out`, refusing to
    /// exceed `max_frame` raw bytes (the peer's limit; a
    /// [`frame::Format`] also names the framing, a bare `usize` means
    /// COBS). Returns the number of bytes to send.
    #[inline]
    pub fn encode(
        &self,
        max_frame: impl Into<frame::Format>,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        self.encode_as(max_frame.into(), out)
    }

    // The generic `encode` only converts, inlined: a program that passes
    // both a `usize` and a `Format` links one copy of this.
    fn encode_as(&self, max_frame: frame::Format, out: &mut [u8]) -> Result<usize, EncodeError> {
        match self {
            Message::Hello(m) => encode(m, max_frame, out),
            Message::Welcome(m) => encode(m, max_frame, out),
            Message::Keepalive => encode_empty(Kind::Keepalive, max_frame, out),
            Message::Goodbye => encode_empty(Kind::Goodbye, max_frame, out),
            Message::Error(m) => encode(m, max_frame, out),
            Message::PageLink(m) => encode(m, max_frame, out),
            Message::RelayLimits(m) => encode(m, max_frame, out),
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
            Message::Join(m) => encode(m, max_frame, out),
            Message::FileAttrs(m) => encode(m, max_frame, out),
            Message::Fetch(m) => encode(m, max_frame, out),
            Message::Manifest(m) => encode(m, max_frame, out),
            Message::ManifestEntry(m) => encode(m, max_frame, out),
            Message::Read(m) => encode(m, max_frame, out),
            Message::Push(m) => encode(m, max_frame, out),
            Message::Delivery(m) => encode(m, max_frame, out),
            Message::DeliveryStatus(m) => encode(m, max_frame, out),
            Message::Listen => encode_empty(Kind::Listen, max_frame, out),
            Message::Inbox(m) => encode(m, max_frame, out),
            Message::Notice(m) => encode(m, max_frame, out),
            Message::NoticeAck(m) => encode(m, max_frame, out),
            Message::NoticeRefuse(m) => encode(m, max_frame, out),
            Message::Receipt(m) => encode(m, max_frame, out),
            Message::Settled(m) => encode(m, max_frame, out),
            Message::AllowSender(m) => encode(m, max_frame, out),
            Message::ForwardRequest(m) => encode(m, max_frame, out),
            Message::ForwardAccepted(m) => encode(m, max_frame, out),
            Message::ForwardWatch(m) => encode(m, max_frame, out),
            Message::ForwardStatus(m) => encode(m, max_frame, out),
            Message::ForwardRetry(m) => encode(m, max_frame, out),
            Message::ForwardPush(m) => encode(m, max_frame, out),
            Message::PeerPush(m) => encode(m, max_frame, out),
            Message::Login(m) => encode(m, max_frame, out),
            Message::Authenticate(m) => encode(m, max_frame, out),
            Message::TerminalAuth(m) => encode(m, max_frame, out),
            Message::Challenge(m) => encode(m, max_frame, out),
            Message::ChallengeAnswer(m) => encode(m, max_frame, out),
            Message::Authenticated(m) => encode(m, max_frame, out),
            Message::Logout => encode_empty(Kind::Logout, max_frame, out),
            Message::NamedPut => encode_empty(Kind::NamedPut, max_frame, out),
            Message::FetchNamed(m) => encode(m, max_frame, out),
            Message::ListNamed => encode_empty(Kind::ListNamed, max_frame, out),
            Message::RemoveNamed(m) => encode(m, max_frame, out),
            Message::ShareNamed(m) => encode(m, max_frame, out),
            Message::Done(m) => encode(m, max_frame, out),
        }
    }
}

/// A message body with its kind: every message type but [`Data`](super::Data) and the
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
    RelayLimits,
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
    Join,
    FileAttrs,
    Fetch,
    Manifest,
    Read,
    DeliveryStatus,
    Inbox,
    NoticeAck,
    NoticeRefuse,
    Receipt,
    Settled,
    ForwardAccepted,
    ForwardWatch,
    ForwardStatus,
    ForwardRetry,
    Authenticate,
    Challenge,
    ChallengeAnswer,
    Done,
);

macro_rules! borrowing_bodies {
    ($($ty:ident),* $(,)?) => {
        $(impl Body for $ty<'_> { const KIND: Kind = Kind::$ty; })*
    };
}

borrowing_bodies!(
    AllowSender,
    ForwardRequest,
    ForwardPush,
    PeerPush,
    Push,
    Delivery,
    Notice,
    PageLink,
    Login,
    TerminalAuth,
    Authenticated,
    FetchNamed,
    RemoveNamed,
    ShareNamed,
);

impl Body for FileAnnounce<'_> {
    const KIND: Kind = Kind::FileAnnounce;
}

impl Body for ManifestEntry<'_> {
    const KIND: Kind = Kind::ManifestEntry;
}

/// Encodes one message as a delimited frame into `out` (at most `max_frame`
/// raw bytes, in COBS or the framing a [`frame::Format`] names). Typed, so
/// a program links the encoders of only the messages it sends: what keeps
/// a terminal's image small.
#[inline]
pub fn encode<T: Body>(
    body: &T,
    max_frame: impl Into<frame::Format>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    encode_as(body, max_frame.into(), out)
}

/// [`encode`] past the conversion, so each body type's encoder is linked
/// once whatever its callers pass.
fn encode_as<T: Body>(
    body: &T,
    max_frame: frame::Format,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    frame::encode_with(PROTOCOL_VERSION, T::KIND as u8, max_frame, out, |buf| {
        postcard::to_slice(body, buf).ok().map(|s| s.len())
    })
}

/// Encodes a message with an empty body (`Keepalive`, `Goodbye`).
#[inline]
pub fn encode_empty(
    kind: Kind,
    max_frame: impl Into<frame::Format>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    encode_empty_as(kind, max_frame.into(), out)
}

fn encode_empty_as(
    kind: Kind,
    max_frame: frame::Format,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    frame::encode_with(PROTOCOL_VERSION, kind as u8, max_frame, out, |_| Some(0))
}
