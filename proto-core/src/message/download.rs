//! Download messages (kinds `0x20..0x2F`): fetch, manifest and its entries, read.

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::hash::Sha1Digest;

/// 0x20, terminal → relay: look up a batch by code. Answered by a
/// [`Manifest`] and one [`ManifestEntry`] per file, or an [`Error`](super::Error).
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
/// [`Data`](super::Data) messages. A new `Read` replaces any earlier one.
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
