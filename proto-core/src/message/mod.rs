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
//! [`ErrorCode::UnknownKind`](crate::error::ErrorCode::UnknownKind), never a crash:
//!
//! | range        | purpose                                                    |
//! |--------------|------------------------------------------------------------|
//! | `0x01..0x0F` | session: hello, welcome, keepalive, goodbye, error, page link, limits |
//! | `0x10..0x1F` | upload: announce, grant, plan, proof, data, ack, verdicts  |
//! | `0x20..0x2F` | download: fetch, manifest, read                            |
//! | `0x30..0x3F` | notices: push to a terminal, listen, receipts, delivery state |
//! | `0x40..0x4F` | forwarding: copy a batch to a peer relay, its progress     |
//! | `0x50..0x5F` | identity: login, terminal challenge-response, named files |
//!
//! `PROTOCOL.md` at the repository root has the byte layouts, the state
//! diagrams and a hex test vector for every kind; `tests::VECTORS` below
//! asserts the same bytes.
//!
//! The message types live by kind range (`session`, `upload`, `download`,
//! `notice`, `forward`, `identity`;
//! `data` for the zero-copy [`Data`]), with `kind` for the kind byte,
//! `decode` and `encode` for the two directions of the wire, `names`
//! for the file-name rule and `page_url` for the page link's.

mod data;
mod decode;
mod download;
mod encode;
mod forward;
mod identity;
mod kind;
mod names;
mod notice;
mod page_url;
mod session;
mod upload;

#[cfg(any(test, feature = "length-prefixed"))]
pub use data::{encode_data_split, DATA_SPLIT_HEAD_LEN};
pub use data::{encode_data_with, Data, DATA_PREFIX_MAX};
pub use decode::DecodeError;
pub use download::{Fetch, Manifest, ManifestEntry, Read};
pub use encode::{encode, encode_empty, Body};
pub use forward::{
    ForwardAccepted, ForwardPush, ForwardRequest, ForwardRetry, ForwardState, ForwardStatus,
    ForwardWatch, PeerPush,
};
pub use identity::{
    AuthToken, Authenticate, Authenticated, Challenge, ChallengeAnswer, Done, FetchNamed, Login,
    RemoveNamed, ShareNamed, TerminalAuth,
};
pub use kind::Kind;
pub use names::{names_conflict, validate_name, MAX_NAME_LEN, SEPARATOR};
pub use notice::{
    AllowSender, Delivery, DeliveryState, DeliveryStatus, Inbox, Notice, NoticeAck, NoticeRefuse,
    Push, Receipt, RefuseReason, Settled,
};
pub use page_url::{validate_page_url, PageUrlError, MAX_PAGE_URL_LEN};
pub use session::{Error, Hello, PageLink, RelayLimits, Role, Welcome};
pub use upload::{
    Ack, BatchComplete, BatchOpen, FileAnnounce, FileAttrs, FilePlan, FileRejected, FileVerified,
    Grant, Join, Plan, Proof, Resume, ResumeToken, Rewind,
};

/// Capability bit: the peer can link held content after a proof of ownership.
pub const CAP_INSTANT_UPLOAD: u32 = 1 << 0;
/// Capability bit: the peer sends and accepts [`FileAttrs`] (executable bit
/// and modification time). Without it in the peer's `Hello` or `Welcome`, a
/// side sends none, so peers that predate attributes never see the kind.
pub const CAP_FILE_ATTRS: u32 = 1 << 1;
/// Capability bit: the terminal prints a browser link for its code; a relay
/// with a public URL answers its `Hello` with a [`PageLink`] right after
/// the [`Welcome`]. Only terminals set it (a relay's `Welcome` never does).
pub const CAP_PAGE_LINK: u32 = 1 << 2;
/// Capability bit: the terminal wants the relay's batch limits; the relay
/// answers its `Hello` with a [`RelayLimits`] right after the [`Welcome`]
/// (and the [`PageLink`], if any). Only terminals set it, and only hosts:
/// an MCU image built without the feature `relay-limits` never does, so it
/// never receives the kind.
pub const CAP_RELAY_LIMITS: u32 = 1 << 3;
/// Capability bit: the sender can switch to the length-prefixed framing
/// ([`frame::Framing::LengthPrefixed`](crate::frame::Framing)) on this
/// link, which it offers only on a reliable transport (TCP, TLS; never a
/// serial line). When the terminal's `Hello` and the relay's `Welcome` both
/// carry it, each side sends every frame after the `Welcome` length-prefixed
/// and reads every frame after it that way (PROTOCOL.md §2.1).
pub const CAP_LENGTH_PREFIX: u32 = 1 << 4;
/// Capability bit: the relay keeps and delivers notices (kinds
/// `0x30..0x3F`, PROTOCOL.md §11); a relay without it answers them with
/// `Error{UnknownKind}`.
pub const CAP_PUSH_NOTICE: u32 = 1 << 8;
/// Capability bit: the relay forwards batches to peer relays on a user's
/// request (kinds `0x40..0x4F`, PROTOCOL.md §12); a relay without it
/// answers them with `Error{UnknownKind}`.
pub const CAP_FORWARD: u32 = 1 << 9;

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
    PageLink(PageLink<'a>),
    RelayLimits(RelayLimits),
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
    Join(Join),
    FileAttrs(FileAttrs),
    Fetch(Fetch),
    Manifest(Manifest),
    ManifestEntry(ManifestEntry<'a>),
    Read(Read),
    Push(Push<'a>),
    Delivery(Delivery<'a>),
    DeliveryStatus(DeliveryStatus),
    /// 0x33, terminal → relay: this session's terminal receives notices.
    /// Answered by an [`Inbox`] and its notices; later pushes follow while
    /// the session lasts. Repeated at will (a terminal that missed a
    /// notice sends it again). Needs a terminal identity. Empty body.
    Listen,
    Inbox(Inbox),
    Notice(Notice<'a>),
    NoticeAck(NoticeAck),
    NoticeRefuse(NoticeRefuse),
    Receipt(Receipt),
    Settled(Settled),
    AllowSender(AllowSender<'a>),
    ForwardRequest(ForwardRequest<'a>),
    ForwardAccepted(ForwardAccepted),
    ForwardWatch(ForwardWatch),
    ForwardStatus(ForwardStatus),
    ForwardRetry(ForwardRetry),
    ForwardPush(ForwardPush<'a>),
    PeerPush(PeerPush<'a>),
    Login(Login<'a>),
    Authenticate(Authenticate),
    TerminalAuth(TerminalAuth<'a>),
    Challenge(Challenge),
    ChallengeAnswer(ChallengeAnswer),
    Authenticated(Authenticated<'a>),
    /// 0x56, terminal → relay: revoke the token this session authenticated
    /// with. Answered by [`Done`]. Empty body.
    Logout,
    /// 0x57, terminal → relay: the next batch this session opens or
    /// resumes stores its files under the session user's names (all bound
    /// in one step once every file is verified, before `BatchComplete`)
    /// rather than only under a code. Needs an authenticated session.
    /// Answered by [`Done`], which the terminal must see before the
    /// batch's `BatchComplete` to know its names are bound. Empty body.
    NamedPut,
    FetchNamed(FetchNamed<'a>),
    /// 0x59, terminal → relay: list the session user's names. Answered by a
    /// [`Manifest`] and one [`ManifestEntry`] per name. Empty body.
    ListNamed,
    RemoveNamed(RemoveNamed<'a>),
    ShareNamed(ShareNamed<'a>),
    Done(Done),
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
            Message::PageLink(_) => Kind::PageLink,
            Message::RelayLimits(_) => Kind::RelayLimits,
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
            Message::Join(_) => Kind::Join,
            Message::FileAttrs(_) => Kind::FileAttrs,
            Message::Fetch(_) => Kind::Fetch,
            Message::Manifest(_) => Kind::Manifest,
            Message::ManifestEntry(_) => Kind::ManifestEntry,
            Message::Read(_) => Kind::Read,
            Message::Push(_) => Kind::Push,
            Message::Delivery(_) => Kind::Delivery,
            Message::DeliveryStatus(_) => Kind::DeliveryStatus,
            Message::Listen => Kind::Listen,
            Message::Inbox(_) => Kind::Inbox,
            Message::Notice(_) => Kind::Notice,
            Message::NoticeAck(_) => Kind::NoticeAck,
            Message::NoticeRefuse(_) => Kind::NoticeRefuse,
            Message::Receipt(_) => Kind::Receipt,
            Message::Settled(_) => Kind::Settled,
            Message::AllowSender(_) => Kind::AllowSender,
            Message::ForwardRequest(_) => Kind::ForwardRequest,
            Message::ForwardAccepted(_) => Kind::ForwardAccepted,
            Message::ForwardWatch(_) => Kind::ForwardWatch,
            Message::ForwardStatus(_) => Kind::ForwardStatus,
            Message::ForwardRetry(_) => Kind::ForwardRetry,
            Message::ForwardPush(_) => Kind::ForwardPush,
            Message::PeerPush(_) => Kind::PeerPush,
            Message::Login(_) => Kind::Login,
            Message::Authenticate(_) => Kind::Authenticate,
            Message::TerminalAuth(_) => Kind::TerminalAuth,
            Message::Challenge(_) => Kind::Challenge,
            Message::ChallengeAnswer(_) => Kind::ChallengeAnswer,
            Message::Authenticated(_) => Kind::Authenticated,
            Message::Logout => Kind::Logout,
            Message::NamedPut => Kind::NamedPut,
            Message::FetchNamed(_) => Kind::FetchNamed,
            Message::ListNamed => Kind::ListNamed,
            Message::RemoveNamed(_) => Kind::RemoveNamed,
            Message::ShareNamed(_) => Kind::ShareNamed,
            Message::Done(_) => Kind::Done,
        }
    }
}

#[cfg(test)]
mod tests;
