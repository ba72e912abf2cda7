//! What a listener reports to its driver: [`ListenEvent`]s, and the
//! [`ListenError`] it fails with.

use crate::code::Code;
use crate::error::ErrorCode;
use crate::identity::AuthError;
use crate::message::RefuseReason;
use crate::notice::SenderName;

/// A notice as the application sees it: a batch pushed to this terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NoticeInfo {
    /// The relay's id for the delivery: what
    /// [`Listener::confirm`](super::Listener::confirm) and
    /// [`Listener::refuse`](super::Listener::refuse) name, and what an
    /// application persists once settled.
    pub id: u64,
    /// The batch, to download like any code (as this terminal).
    pub code: Code,
    /// The user who pushed it: a user of the relay, or `user@pair` for a
    /// user of a peer relay (PROTOCOL.md §12.1).
    pub sender: SenderName,
    /// Files in the batch.
    pub files: u16,
    /// The batch's total size in bytes.
    pub total_size: u64,
    /// When the batch expires, Unix seconds.
    pub expires_at: u64,
}

/// What the driver should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ListenEvent {
    /// The relay accepted the session.
    Connected,
    /// The relay accepted the terminal's identity; `Listen` follows.
    Authenticated,
    /// The relay answered a `Listen`: `waiting` notices follow.
    Inbox {
        /// Notices still open for this terminal.
        waiting: u16,
    },
    /// A notice the application has not seen: download its batch, then
    /// [`confirm`](super::Listener::confirm) or
    /// [`refuse`](super::Listener::refuse) it. Each id is reported once.
    Notice(NoticeInfo),
    /// A notice outside the [`Policy`](crate::notice::Policy) was refused
    /// without reaching the application (for logs).
    AutoRefused {
        /// The notice.
        id: u64,
        /// Why.
        reason: RefuseReason,
    },
    /// The relay stored the verdict on notice `id`: persist it (see
    /// [`Listener::remember_settled`](super::Listener::remember_settled)).
    Settled {
        /// The notice.
        id: u64,
    },
    /// The relay knows no notice `id` for this terminal (`UnknownNotice`):
    /// the verdict is no longer sent.
    UnknownNotice {
        /// The notice.
        id: u64,
    },
    /// The relay refused for now (`RateLimited`, `Busy`); the listener
    /// asks again by itself after `retry_in_ms`.
    Waiting {
        /// The relay's reason.
        reason: ErrorCode,
        /// Milliseconds until the listener asks again.
        retry_in_ms: u32,
    },
    /// Nothing heard for the idle timeout, or the relay closed the
    /// session: reconnect and call
    /// [`Listener::handle_connected`](super::Listener::handle_connected).
    LinkLost,
    /// The listener cannot go on.
    Failed(ListenError),
}

/// Why a listener stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ListenError {
    /// The relay refused `Listen`: `AuthRequired`, or `UnknownKind` from
    /// a relay without notices.
    Relay(ErrorCode),
    /// The terminal could not authenticate.
    Auth(AuthError),
}

impl core::fmt::Display for ListenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ListenError::Relay(ErrorCode::UnknownKind) => {
                f.write_str("the relay does not deliver notices (it predates them)")
            }
            ListenError::Relay(code) => write!(f, "relay refused: {code}"),
            ListenError::Auth(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for ListenError {}
