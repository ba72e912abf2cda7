//! What a download reports to its driver: [`Event`]s, and the [`Error`] it fails with.

use crate::error::ErrorCode;
use crate::hash::Sha1Digest;
use crate::identity::AuthError;

/// What the driver should know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event {
    /// The relay accepted the session.
    Connected,
    /// The relay accepted the session's credential (feature `auth`); the
    /// fetch follows.
    Authenticated,
    /// The manifest arrived (entries go to [`Sink::open`](super::Sink::open) as they come).
    Manifest {
        /// Number of files.
        files: u16,
        /// Sum of sizes.
        total_size: u64,
        /// Bytes the relay holds so far.
        received: u64,
        /// Whether the batch can be read now.
        ready: bool,
        /// Expiry, seconds since the Unix epoch.
        expires_at: u64,
    },
    /// One file's description (the name went to [`Sink::open`](super::Sink::open)).
    Entry {
        /// File index.
        file: u16,
        /// Size in bytes.
        size: u64,
        /// Expected SHA-1.
        sha1: Sha1Digest,
        /// Bytes the relay holds so far.
        received: u64,
        /// Bytes already present locally, reused.
        local: u64,
    },
    /// The batch is still uploading; asking again later.
    NotReady {
        /// Bytes the relay holds so far.
        received: u64,
        /// Total bytes.
        total: u64,
    },
    /// Contiguous bytes written, over the whole batch.
    Progress {
        /// Bytes written and hashed.
        done: u64,
        /// Total bytes of the batch.
        total: u64,
    },
    /// One file is complete and its SHA-1 matched.
    Verified {
        /// File index.
        file: u16,
    },
    /// A reused prefix did not verify; the file is fetched again from 0.
    Refetch {
        /// File index.
        file: u16,
    },
    /// The named file holds other content than on an earlier link (it was
    /// replaced): its bytes so far are discarded and it is read from 0.
    Replaced {
        /// File index.
        file: u16,
    },
    /// The relay refused for now (`RateLimited`, `Busy`): the session asks
    /// again by itself after `retry_in_ms`; a driver should say why it waits.
    Waiting {
        /// The relay's reason.
        reason: ErrorCode,
        /// Milliseconds until the session asks again.
        retry_in_ms: u32,
    },
    /// Nothing heard for the idle timeout: reconnect and call
    /// [`Session::handle_connected`](super::Session::handle_connected).
    LinkLost,
    /// Every file is written and verified (or the manifest is in, with
    /// [`Config::manifest_only`](super::Config::manifest_only)).
    Complete,
    /// The download cannot succeed.
    Failed(Error),
}

/// Why a download failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The relay refused: unknown code, expired, not ready, rate limited…
    Relay(ErrorCode),
    /// A file's bytes did not match its SHA-1 even when fetched from 0.
    HashMismatch {
        /// File index.
        file: u16,
    },
    /// The batch has more files than this session's capacity.
    TooManyFiles,
    /// The manifest changed between connections, or is inconsistent.
    ManifestChanged,
    /// The sink refused a file (e.g. it exists and overwriting is not allowed).
    Sink {
        /// File index.
        file: u16,
    },
    /// The session could not authenticate (feature `auth`).
    Auth(AuthError),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Relay(code) => write!(f, "relay refused: {code}"),
            Error::HashMismatch { file } => write!(f, "file {file} does not match its SHA-1"),
            Error::TooManyFiles => {
                f.write_str("the batch has more files than this client can hold")
            }
            Error::ManifestChanged => f.write_str("the batch changed during the download"),
            Error::Sink { file } => write!(f, "file {file} could not be stored"),
            Error::Auth(e) => write!(f, "{e}"),
        }
    }
}
