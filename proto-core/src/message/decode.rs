//! From a checked frame to a [`Message`]: per direction, so a terminal links
//! no decoder for what it never receives, and never panicking on input.

use serde::Deserialize;

use super::{Data, Kind, Message};
use crate::error::ErrorCode;
use crate::frame::Frame;
use crate::PROTOCOL_VERSION;

/// Why a CRC-valid frame is not a message this side can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame header names a protocol version this side does not speak.
    UnsupportedVersion(u8),
    /// The kind byte is not one this version knows.
    UnknownKind(u8),
    /// The body does not decode as the kind's message, has trailing bytes,
    /// or breaks the kind's own rule (a [`PageLink`](super::PageLink)'s URL).
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

/// A [`Data`] body: file and offset, then the payload to the end (no
/// length prefix). Either direction carries it: a terminal's upload, a
/// relay's download.
fn data(k: u8, b: &[u8]) -> Result<Message<'_>, DecodeError> {
    let ((file, offset), bytes) =
        postcard::take_from_bytes::<(u16, u64)>(b).map_err(|_| DecodeError::BadBody(k))?;
    Ok(Message::Data(Data {
        file,
        offset,
        bytes,
    }))
}

impl<'a> Message<'a> {
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
    /// receives (about 1 KiB of flash). Without the feature `auth` that
    /// includes the answers to authentication (`Challenge`,
    /// `Authenticated`, `Done`), and without `notices` the relay's notice
    /// kinds (`Delivery`, `Inbox`, `Notice`, `Settled`): they decode to
    /// [`DecodeError::WrongDirection`], here and in [`Message::decode`]
    /// (and so do `ForwardAccepted` and `ForwardStatus` without `forward`);
    /// so does `PageLink` without the feature `page-link`, `RelayLimits`
    /// without `relay-limits`, what only an uploader receives (`Grant`,
    /// `FilePlan`, `Ack`, `Rewind`, the verdicts, `BatchComplete`) without
    /// `upload`, and what only a downloader receives (`Manifest`,
    /// `ManifestEntry`, `Data`) without `download`. `Ack` and `Data` flow
    /// both ways, but each direction's entry decodes them only for the
    /// machine that receives them.
    pub fn decode_from_relay(frame: Frame<'a>) -> Result<Message<'a>, DecodeError> {
        let (kind, k, b) = header(frame)?;
        Ok(match kind {
            Kind::Welcome => Message::Welcome(body(k, b)?),
            // Only an uploading terminal receives them: an image built
            // without `upload` has no decoder for them.
            #[cfg(any(test, feature = "upload"))]
            Kind::Grant => Message::Grant(body(k, b)?),
            #[cfg(any(test, feature = "upload"))]
            Kind::FilePlan => Message::FilePlan(body(k, b)?),
            #[cfg(any(test, feature = "upload"))]
            Kind::Ack => Message::Ack(body(k, b)?),
            #[cfg(any(test, feature = "upload"))]
            Kind::Rewind => Message::Rewind(body(k, b)?),
            #[cfg(any(test, feature = "upload"))]
            Kind::FileVerified => Message::FileVerified(body(k, b)?),
            #[cfg(any(test, feature = "upload"))]
            Kind::FileRejected => Message::FileRejected(body(k, b)?),
            #[cfg(any(test, feature = "upload"))]
            Kind::BatchComplete => Message::BatchComplete(body(k, b)?),
            // Only a downloading terminal receives them: an image built
            // without `download` has no decoder for them.
            #[cfg(any(test, feature = "download"))]
            Kind::Manifest => Message::Manifest(body(k, b)?),
            #[cfg(any(test, feature = "download"))]
            Kind::ManifestEntry => Message::ManifestEntry(body(k, b)?),
            #[cfg(any(test, feature = "download"))]
            Kind::Data => data(k, b)?,
            // Only a terminal that prints links asks for it: one built
            // without `page-link` has no decoder for it.
            #[cfg(any(test, feature = "page-link"))]
            Kind::PageLink => {
                let link: super::PageLink<'a> = body(k, b)?;
                // It is printed on a terminal: refused unless inert there.
                super::validate_page_url(link.base_url).map_err(|_| DecodeError::BadBody(k))?;
                Message::PageLink(link)
            }
            // Only a terminal that asks for them (a host) receives them.
            #[cfg(any(test, feature = "relay-limits"))]
            Kind::RelayLimits => Message::RelayLimits(body(k, b)?),
            // Only a session that authenticates receives them: a terminal
            // built without `auth` has no decoder for them.
            #[cfg(any(test, feature = "auth"))]
            Kind::Challenge => Message::Challenge(body(k, b)?),
            #[cfg(any(test, feature = "auth"))]
            Kind::Authenticated => Message::Authenticated(body(k, b)?),
            #[cfg(any(test, feature = "auth"))]
            Kind::Done => Message::Done(body(k, b)?),
            // Only a listening terminal or a sender that pushes receives
            // them: an image built without `notices` has no decoder.
            #[cfg(any(test, feature = "notices"))]
            Kind::Delivery => Message::Delivery(body(k, b)?),
            #[cfg(any(test, feature = "notices"))]
            Kind::Inbox => Message::Inbox(body(k, b)?),
            #[cfg(any(test, feature = "notices"))]
            Kind::Notice => Message::Notice(body(k, b)?),
            #[cfg(any(test, feature = "notices"))]
            Kind::Settled => Message::Settled(body(k, b)?),
            // Only a host that forwards receives them.
            #[cfg(any(test, feature = "forward"))]
            Kind::ForwardAccepted => Message::ForwardAccepted(body(k, b)?),
            #[cfg(any(test, feature = "forward"))]
            Kind::ForwardStatus => Message::ForwardStatus(body(k, b)?),
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
            Kind::Join => Message::Join(body(k, b)?),
            Kind::Fetch => Message::Fetch(body(k, b)?),
            Kind::Read => Message::Read(body(k, b)?),
            Kind::Ack => Message::Ack(body(k, b)?),
            Kind::Data => data(k, b)?,
            Kind::Push => Message::Push(body(k, b)?),
            Kind::DeliveryStatus => Message::DeliveryStatus(body(k, b)?),
            Kind::Listen => {
                empty(k, b)?;
                Message::Listen
            }
            Kind::NoticeAck => Message::NoticeAck(body(k, b)?),
            Kind::NoticeRefuse => Message::NoticeRefuse(body(k, b)?),
            Kind::Receipt => Message::Receipt(body(k, b)?),
            Kind::AllowSender => Message::AllowSender(body(k, b)?),
            Kind::ForwardRequest => Message::ForwardRequest(body(k, b)?),
            Kind::ForwardWatch => Message::ForwardWatch(body(k, b)?),
            Kind::ForwardRetry => Message::ForwardRetry(body(k, b)?),
            Kind::ForwardPush => Message::ForwardPush(body(k, b)?),
            Kind::PeerPush => Message::PeerPush(body(k, b)?),
            Kind::Login => Message::Login(body(k, b)?),
            Kind::Authenticate => Message::Authenticate(body(k, b)?),
            Kind::TerminalAuth => Message::TerminalAuth(body(k, b)?),
            Kind::ChallengeAnswer => Message::ChallengeAnswer(body(k, b)?),
            Kind::Logout => {
                empty(k, b)?;
                Message::Logout
            }
            Kind::NamedPut => {
                empty(k, b)?;
                Message::NamedPut
            }
            Kind::FetchNamed => Message::FetchNamed(body(k, b)?),
            Kind::ListNamed => {
                empty(k, b)?;
                Message::ListNamed
            }
            Kind::RemoveNamed => Message::RemoveNamed(body(k, b)?),
            Kind::ShareNamed => Message::ShareNamed(body(k, b)?),
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
            // Only a peer that offered CAP_FILE_ATTRS receives it: a
            // terminal built without the feature has no decoder for it.
            #[cfg(any(test, feature = "file-attrs"))]
            Kind::FileAttrs => Message::FileAttrs(body(k, b)?),
            _ => return Err(DecodeError::WrongDirection(k)),
        })
    }
}
