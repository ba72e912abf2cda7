//! What a sender reports to its driver: [`SendEvent`]s, and the
//! [`SendError`] it fails with.

use crate::code::Code;
use crate::error::ErrorCode;
use crate::identity::AuthError;
use crate::message::DeliveryState;
use crate::notice::AccountName;

/// Which request an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RequestKind {
    /// [`Sender::push`](super::Sender::push).
    Push,
    /// [`Sender::status`](super::Sender::status).
    Status,
    /// [`Sender::allow_sender`](super::Sender::allow_sender).
    AllowSender,
}

/// One delivery as the relay tracks it (a `Delivery` message).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeliveryInfo {
    /// The sender's id for the push.
    pub push_id: u64,
    /// The batch.
    pub code: Code,
    /// The target terminal (cut to 32 bytes; a relay's names fit).
    pub terminal: AccountName,
    /// Where the delivery stands.
    pub state: DeliveryState,
    /// Bytes the target has downloaded.
    pub bytes: u64,
    /// The batch's total size.
    pub total: u64,
    /// When the delivery entered `state`, Unix seconds.
    pub at: u64,
    /// When the delivery expires, Unix seconds.
    pub until: u64,
}

/// What the driver should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SendEvent {
    /// The relay accepted the session.
    Connected,
    /// The relay accepted the credential; requests go out from now on.
    Authenticated,
    /// The answer to a push, or one line of a status (oldest first).
    Delivery(DeliveryInfo),
    /// The request finished: the push's `Delivery`, the status's last
    /// line, or the sender allowed came. A new request may be made.
    Done(RequestKind),
    /// The relay refused the request (`UnknownTerminal`, `QueueFull`,
    /// `NotReady`, `UnknownCode`, `Expired`, `AuthRequired`…); a new
    /// request may be made. `TooLarge` without asking the relay: the
    /// request does not fit a frame (the relay's, or the driver's buffer),
    /// as an `AllowSender` of a long `user@pair` may not fit 64-byte ones.
    Refused {
        /// The request.
        request: RequestKind,
        /// Why.
        code: ErrorCode,
        /// The relay's hint for `QueueFull`: milliseconds after which a
        /// retry may succeed; 0 when waiting does not help.
        retry_after_ms: u32,
    },
    /// The relay refused for now (`RateLimited`, `Busy`): the sender asks
    /// again by itself after `retry_in_ms`.
    Waiting {
        /// The relay's reason.
        reason: ErrorCode,
        /// Milliseconds until the sender asks again.
        retry_in_ms: u32,
    },
    /// Nothing heard for the idle timeout, or the relay closed the
    /// session: reconnect; the request in progress is sent again.
    LinkLost,
    /// The sender cannot go on.
    Failed(SendError),
}

/// Why a sender stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SendError {
    /// The relay refused the session (e.g. `UnsupportedVersion`).
    Relay(ErrorCode),
    /// The session could not authenticate.
    Auth(AuthError),
}

impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SendError::Relay(code) => write!(f, "relay refused: {code}"),
            SendError::Auth(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for SendError {}

/// Why a request was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RequestError {
    /// Another request is in progress: wait for its `Done` or `Refused`.
    Busy,
    /// The name is longer than any a relay gives: a terminal's 32 bytes
    /// ([`MAX_ACCOUNT_NAME_LEN`](crate::notice::MAX_ACCOUNT_NAME_LEN)),
    /// a sender's 65
    /// ([`MAX_SENDER_NAME_LEN`](crate::notice::MAX_SENDER_NAME_LEN)).
    NameTooLong,
    /// The sender failed for good.
    Failed,
}

impl core::fmt::Display for RequestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RequestError::Busy => "another request is in progress",
            RequestError::NameTooLong => "the name is longer than any a relay gives",
            RequestError::Failed => "the session failed",
        })
    }
}
