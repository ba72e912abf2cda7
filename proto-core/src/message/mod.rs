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
//! | `0x01..0x0F` | session: hello, welcome, keepalive, goodbye, error         |
//! | `0x10..0x1F` | upload: announce, grant, plan, proof, data, ack, verdicts  |
//! | `0x20..0x2F` | download: fetch, manifest, read                            |
//! | `0x30..0x3F` | reserved: push notice to a target terminal, store-and-forward |
//! | `0x40..0x4F` | reserved: relay-to-relay forwarding with progress reports  |
//!
//! `PROTOCOL.md` at the repository root has the byte layouts, the state
//! diagrams and a hex test vector for every kind; `tests::VECTORS` below
//! asserts the same bytes.
//!
//! The message types live by kind range (`session`, `upload`, `download`;
//! `data` for the zero-copy [`Data`]), with `kind` for the kind byte,
//! `decode` and `encode` for the two directions of the wire, and `names`
//! for the file-name rule.

mod data;
mod decode;
mod download;
mod encode;
mod kind;
mod names;
mod session;
mod upload;

pub use data::{encode_data_with, Data, DATA_PREFIX_MAX};
pub use decode::DecodeError;
pub use download::{Fetch, Manifest, ManifestEntry, Read};
pub use encode::{encode, encode_empty, Body};
pub use kind::Kind;
pub use names::{names_conflict, validate_name, MAX_NAME_LEN, SEPARATOR};
pub use session::{Error, Hello, Role, Welcome};
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
/// Capability bit (reserved): push notices to a named target terminal.
pub const CAP_PUSH_NOTICE: u32 = 1 << 8;
/// Capability bit (reserved): relay-to-relay forwarding.
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
            Message::Join(_) => Kind::Join,
            Message::FileAttrs(_) => Kind::FileAttrs,
            Message::Fetch(_) => Kind::Fetch,
            Message::Manifest(_) => Kind::Manifest,
            Message::ManifestEntry(_) => Kind::ManifestEntry,
            Message::Read(_) => Kind::Read,
        }
    }
}

#[cfg(test)]
mod tests;
