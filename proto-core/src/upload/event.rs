//! What an upload reports to its driver: [`Event`]s, and the [`Error`] it fails with.

use crate::code::Code;
use crate::error::ErrorCode;
use crate::identity::AuthError;
use crate::message::ResumeToken;

/// What the driver should know about. Progress is coalesced: at most one
/// [`Event::Progress`] is pending at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event {
    /// The relay accepted the session.
    Connected,
    /// The relay accepted the session's credential (feature `auth`); the
    /// batch is announced or resumed next.
    Authenticated,
    /// The batch exists: show the code; keep the token to resume later.
    Granted {
        /// The pickup code.
        code: Code,
        /// Expiry, seconds since the Unix epoch.
        expires_at: u64,
        /// The resume token (secret).
        token: ResumeToken,
    },
    /// The relay will take `file` from `offset` (0 for new content, more on resume).
    Uploading {
        /// File index.
        file: u16,
        /// First byte to send.
        offset: u64,
    },
    /// The relay holds `file`'s content and asks us to prove we hold it
    /// too: the session reads the whole file once (in `poll_transmit`) to
    /// answer, then expects [`Event::Linked`]. Reading a large file takes a
    /// while, so a driver should say what it is doing.
    Proving {
        /// File index.
        file: u16,
    },
    /// The relay already held `file`'s content and linked it after our proof
    /// (or it was complete from an earlier session).
    Linked {
        /// File index.
        file: u16,
    },
    /// The relay verified `file` (size and SHA-1).
    Verified {
        /// File index.
        file: u16,
    },
    /// Bytes acknowledged (durable at the relay) over the whole batch.
    Progress {
        /// Durable bytes.
        acked: u64,
        /// Total bytes of the batch.
        total: u64,
    },
    /// Data is being resent from `offset` after a loss.
    Retransmit {
        /// File index.
        file: u16,
        /// Resent from here.
        offset: u64,
    },
    /// Nothing heard for the idle timeout: the driver should reconnect and
    /// call [`Session::handle_connected`](super::Session::handle_connected).
    LinkLost,
    /// The relay refused the request for now (`Busy`, `RateLimited`,
    /// `TooManyIncomplete`, `PeerQuota`, or `Quota` with a hint): the
    /// session asks again by itself; a driver should say why it waits.
    Waiting {
        /// Why the relay refused.
        reason: ErrorCode,
        /// The relay's hint, in milliseconds (0: none).
        retry_after_ms: u32,
    },
    /// Every file is at the relay; the code serves the batch.
    Complete {
        /// The pickup code.
        code: Code,
    },
    /// The upload cannot succeed; see the error.
    Failed(Error),
}

impl Event {
    /// Whether the event only reports progress (the driver may show it, but
    /// need not act on it): these are what a full event queue drops first.
    pub(crate) fn is_report(&self) -> bool {
        matches!(
            self,
            Event::Connected
                | Event::Authenticated
                | Event::Uploading { .. }
                | Event::Proving { .. }
                | Event::Linked { .. }
                | Event::Verified { .. }
                | Event::Progress { .. }
                | Event::Retransmit { .. }
                | Event::Waiting { .. }
        )
    }
}

/// Why an upload failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The relay refused the session or the batch.
    Relay(ErrorCode),
    /// The relay rejected one file (its bytes do not match size or SHA-1).
    Rejected {
        /// File index.
        file: u16,
        /// Why.
        reason: ErrorCode,
    },
    /// More files than this session's capacity, none at all, or more than a `u16` counts.
    TooManyFiles,
    /// A file name is invalid, does not fit the relay's frame size, or
    /// conflicts with an earlier file's (the same path, or `a` and `a/b`).
    InvalidName {
        /// File index.
        file: u16,
    },
    /// The relay's grant did not match the batch (a token for another batch).
    Mismatch,
    /// The session could not authenticate (feature `auth`).
    Auth(AuthError),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Relay(code) => write!(f, "relay refused: {code}"),
            Error::Rejected { file, reason } => write!(f, "file {file} rejected: {reason}"),
            Error::TooManyFiles => f.write_str("no files, or too many files for one batch"),
            Error::InvalidName { file } => write!(f, "file {file} has an invalid or too long name"),
            Error::Mismatch => f.write_str("the relay's batch does not match these files"),
            Error::Auth(e) => write!(f, "{e}"),
        }
    }
}
