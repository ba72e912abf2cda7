//! What an upload is given: its tuning ([`Config`]) and the files ([`FileMeta`]).

use crate::hash::Sha1Digest;
use crate::time::Duration;

/// Tuning for a session. [`Config::default`] suits TCP; serial links at low
/// baud rates want longer timeouts.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Largest raw frame this side accepts (its decoder buffer size).
    pub max_frame: u32,
    /// Without ack progress for this long, resend from the last acked offset.
    pub retransmit_timeout: Duration,
    /// Without any frame from the relay for this long, the link is lost.
    pub idle_timeout: Duration,
    /// Send a keepalive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Answer the relay's challenges to link content it already holds.
    pub instant_upload: bool,
    /// Upper bound on bytes in flight, whatever the relay offers (32 MiB by
    /// default). It costs the terminal no memory: unacknowledged bytes are
    /// read again from the source if they must be resent. A wide window
    /// lets a fast link ride out the relay's disk flushes; a serial relay
    /// offers far less anyway.
    pub max_window: u32,
    /// Ask the relay where its download pages are (`CAP_PAGE_LINK`) and
    /// keep its answer for `Session::page_link`.
    /// Off by default: only a terminal that shows the link to a person
    /// should make the relay send it. Has effect only with the feature
    /// `page-link` (which `std` brings).
    pub page_link: bool,
    /// Ask the relay for its batch limits (`CAP_RELAY_LIMITS`) and keep
    /// them for `Session::relay_limits`. Off by default, for the same
    /// reason; has effect only with the feature `relay-limits` (which
    /// `std` brings).
    pub relay_limits: bool,
    /// Offer the length-prefixed framing (`CAP_LENGTH_PREFIX`,
    /// PROTOCOL.md §2.1): set it on a reliable link (TCP, TLS), never on a
    /// serial line. Once the relay agrees, every frame after its `Welcome`
    /// goes without COBS, and the driver's decoder follows
    /// [`Machine::framing`](crate::drive::Machine::framing). Off by
    /// default; has effect only with the feature `length-prefixed` (which
    /// `std` brings).
    pub length_prefix: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: 16 * 1024,
            retransmit_timeout: Duration::from_millis(2_000),
            idle_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(5),
            instant_upload: true,
            max_window: 32 * 1024 * 1024,
            page_link: false,
            relay_limits: false,
            length_prefix: false,
        }
    }
}

/// One file to upload. The name is borrowed for the session's lifetime (a
/// `&'static str` in firmware, a `String` the driver keeps on a host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileMeta<'n> {
    /// Name as downloaders will see it (see [`message::validate_name`]).
    ///
    /// [`message::validate_name`]: crate::message::validate_name
    pub name: &'n str,
    /// Size in bytes.
    pub size: u64,
    /// SHA-1 of the whole file (see [`storage::sha1_of`](crate::storage::sha1_of)).
    pub sha1: Sha1Digest,
}
