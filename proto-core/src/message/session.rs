//! Session messages (kinds `0x01..0x0F`): hello, welcome, error, the
//! page link and the relay's limits; keepalive and goodbye have no body.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// Who is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// 0: a terminal that uploads and/or downloads.
    Terminal,
    /// 1: a relay (in a welcome, or another relay forwarding to this one).
    Relay,
}

/// 0x01, terminal → relay: opens a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello {
    /// Highest protocol version the sender speaks.
    pub version: u8,
    /// The sender's role.
    pub role: Role,
    /// Largest raw frame the sender accepts.
    pub max_frame: u32,
    /// Most bytes of data the sender keeps in flight: a downloading
    /// terminal's credit for the relay, an uploading terminal's own cap
    /// (the relay paces its acks by it); 0 if the sender does not say.
    pub window: u32,
    /// `CAP_*` bits.
    pub caps: u32,
}

/// 0x02, relay → terminal: accepts a session and states the relay's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Welcome {
    /// The protocol version both sides will speak.
    pub version: u8,
    /// The relay's role (always `Relay`).
    pub role: Role,
    /// Largest raw frame the relay accepts.
    pub max_frame: u32,
    /// Most bytes of upload data the relay accepts in flight.
    pub window: u32,
    /// `CAP_*` bits.
    pub caps: u32,
}

/// 0x05, either way: a request failed, or the session is being closed for a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Error {
    /// Why.
    pub code: ErrorCode,
    /// The kind of the message that caused it, 0 if none.
    pub kind: u8,
    /// For `RateLimited` and `Busy`: milliseconds to wait before retrying; else 0.
    pub retry_after_ms: u32,
}

/// 0x06, relay → terminal: where the relay's download pages are, so the
/// terminal can print a browser link for its code: `{base_url}/c/{CODE}`.
/// Sent once, right after [`Welcome`], only to a terminal whose [`Hello`]
/// had [`CAP_PAGE_LINK`](super::CAP_PAGE_LINK), and only by a relay with a
/// public URL configured. The decoder refuses a `base_url` that breaks
/// [`validate_page_url`](super::validate_page_url): it ends up on a
/// terminal, so it must be inert there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PageLink<'a> {
    /// `http://` or `https://`, a host and perhaps a path, no trailing `/`.
    pub base_url: &'a str,
}

/// 0x07, relay → terminal: the largest batch the relay takes, so a
/// terminal can say which limit a refusal broke, or check before it sends.
/// Sent once, right after [`Welcome`] (after a [`PageLink`] if any), only
/// to a terminal whose [`Hello`] had
/// [`CAP_RELAY_LIMITS`](super::CAP_RELAY_LIMITS). Informative: the relay
/// still refuses what breaks them (`TooLarge`, `TooManyFiles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RelayLimits {
    /// Largest file, in bytes.
    pub max_file_size: u64,
    /// Largest batch (the sum of its files' sizes), in bytes.
    pub max_batch_size: u64,
    /// Most files in one batch.
    pub max_files: u16,
}
