//! A download's tuning: timeouts, window, waiting for a batch still uploading.

use super::Hashing;
use crate::time::Duration;

/// Tuning for a session.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Largest raw frame this side accepts (its decoder buffer size).
    pub max_frame: u32,
    /// Bytes the relay may send ahead of what was acknowledged: the credit
    /// on a link that loses nothing (a lossy one gets less, see the
    /// session's docs).
    pub window: u32,
    /// Without progress for this long, ask again.
    pub retransmit_timeout: Duration,
    /// Without any frame from the relay for this long, the link is lost.
    pub idle_timeout: Duration,
    /// Send a keepalive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Stop after the manifest (for `pickup info`): no file is opened.
    pub manifest_only: bool,
    /// If the batch is still uploading, ask again every this long instead of
    /// failing with [`ErrorCode::NotReady`]. `None` fails at once.
    ///
    /// [`ErrorCode::NotReady`]: crate::error::ErrorCode::NotReady
    pub wait_until_ready: Option<Duration>,
    /// Who computes each file's SHA-1 for verification.
    pub hashing: Hashing,
    /// Ask for files' attributes (`CAP_FILE_ATTRS`) and hand them to
    /// [`Sink::attrs`](super::Sink::attrs). Off by default: a terminal that
    /// cannot apply them should not make the relay send them. Has effect
    /// only with the feature `file-attrs` (which `std` brings).
    pub file_attrs: bool,
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
            window: 1024 * 1024,
            retransmit_timeout: Duration::from_millis(2_000),
            idle_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(5),
            manifest_only: false,
            wait_until_ready: None,
            hashing: Hashing::InSession,
            file_attrs: false,
            length_prefix: false,
        }
    }
}
