//! Upload messages (kinds `0x10..0x1F`) but [`Data`](super::Data): announcing a
//! batch, its grant and per-file plans, proofs, acks, rewinds, verdicts, resuming.

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::error::ErrorCode;
use crate::hash::{Nonce, Sha1Digest};

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
    /// File name: UTF-8, 1..=255 bytes, a `/`-separated relative path (see
    /// [`validate_name`]).
    ///
    /// [`validate_name`]: super::validate_name
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

/// 0x1C, terminal → relay: the batches this session creates from now on
/// belong to the same owner as the batch of `token` (its token family),
/// so the relay may offer instant upload of content that family stored
/// before (PROTOCOL.md §7.1). No reply; a token the relay does not know
/// (expired, or never given) leaves the batches a family of their own, and
/// a relay that does not know this kind answers `Error{UnknownKind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Join {
    /// A token of an earlier batch of the family.
    pub token: ResumeToken,
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

/// 0x1D, either way: what a file system keeps about a file besides its name
/// and bytes, for the file of `index`. Sent only to a peer whose `Hello` or
/// `Welcome` had [`CAP_FILE_ATTRS`](super::CAP_FILE_ATTRS), and always just
/// before that file's [`FileAnnounce`] (terminal → relay) or
/// [`ManifestEntry`](super::ManifestEntry) (relay → terminal): a separate
/// kind rather than a trailing field, because decoders of version 1 refuse
/// trailing bytes. A file without one has no attributes to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileAttrs {
    /// File index.
    pub index: u16,
    /// Whether the file is executable (on Unix: any `x` bit was set).
    pub executable: bool,
    /// Last modification, in seconds since the Unix epoch; signed, because
    /// files older than 1970 exist (zigzag varint on the wire).
    pub mtime: i64,
}
