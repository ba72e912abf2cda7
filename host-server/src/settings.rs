//! What every session of a relay shares and what each link announces: the
//! one place their defaults are written.
//!
//! [`crate::config::Config`] reads them from a file and flags; sessions,
//! drivers and tests take them from here.

use pickup_proto::{frame, Duration};

use crate::config::{ForwardSettings, Peers};
use crate::directory::AuthSettings;
use crate::disclosure::DisclosureSettings;
use crate::mailbox::PushSettings;
use crate::proof_budget::ProofSettings;
use crate::quota::QuotaSettings;
use crate::rate_limit::RateSettings;

/// Settings every session of a relay shares (see [`crate::config::Config`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Symbols per pickup code.
    pub code_len: usize,
    /// Batch lifetime in seconds.
    pub code_ttl_secs: u64,
    /// How long an expired code answers `Expired` rather than `UnknownCode`.
    pub expired_memory_secs: u64,
    /// Largest file.
    pub max_file_size: u64,
    /// Most files per batch.
    pub max_files_per_batch: u16,
    /// Largest batch.
    pub max_batch_size: u64,
    /// Most batches alive at once.
    pub max_live_batches: u64,
    /// Storage reservations and per-peer batch limits (admission).
    pub quota: QuotaSettings,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Most sessions at once from one peer.
    pub max_sessions_per_peer: usize,
    /// Close a session that sends nothing for this long.
    pub idle_timeout: Duration,
    /// Close a session that sends nothing for this long before it has a
    /// batch (created, resumed or found by its code): connections that
    /// never start anything give their descriptor back sooner.
    pub idle_timeout_before_transfer: Duration,
    /// Acknowledge received bytes after this long without more data.
    pub ack_delay: Duration,
    /// Failed-lookup limits.
    pub rate: RateSettings,
    /// What challenges (proofs of ownership) may cost.
    pub proof: ProofSettings,
    /// Offer instant upload.
    pub instant_upload: bool,
    /// Which held content instant upload may reveal.
    pub disclosure: DisclosureSettings,
    /// Logins, tokens, failure limits and anonymous access.
    pub auth: AuthSettings,
    /// Addressed delivery: deadlines and caps ([`crate::mailbox`]).
    pub push: PushSettings,
    /// Where browsers reach the download pages (`[http].public_url`,
    /// checked by `validate_page_url`, no trailing `/`): sent as a
    /// `PageLink` to terminals that ask with `CAP_PAGE_LINK`. `None`: the
    /// relay sends none (it cannot know its public address by itself).
    pub page_url: Option<String>,
    /// The peer relays a `Role::Relay` session may authenticate as
    /// (`[[peers]]`, [`crate::config::Config::load_peers`]); none by default.
    pub peers: Peers,
    /// Forwards to peer relays (`[forward]`, [`crate::forward::service`]).
    pub forward: ForwardSettings,
}

/// Link parameters, per transport: what the relay announces in `Welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Largest raw frame the relay accepts on this link (its decoder size).
    pub max_frame: u32,
    /// Upload bytes a terminal may have in flight.
    pub window: u32,
    /// The link is encrypted and the relay authenticated (TLS): secrets such
    /// as passwords may cross it even from a non-loopback peer.
    pub encrypted: bool,
    /// The transport loses, corrupts and reorders no byte (TCP, TLS): the
    /// relay offers the length-prefixed framing (`CAP_LENGTH_PREFIX`,
    /// PROTOCOL.md §2.1). Never on a serial line, which needs COBS to
    /// find frames again after noise.
    pub reliable: bool,
}

/// The smallest terminal window the relay paces its acks by (syncs then come
/// every 1 KiB at most); a smaller announced window counts as this.
pub const MIN_ACK_WINDOW: u32 = 4096;

impl Link {
    /// The TCP defaults: 64 KiB frames, 32 MiB window (what terminals accept at most by default).
    pub const TCP: Link = Link {
        max_frame: frame::MAX_FRAME_LEN as u32,
        window: 32 * 1024 * 1024,
        encrypted: false,
        reliable: true,
    };
    /// The serial defaults: 4 KiB frames, 8 MiB window.
    pub const SERIAL: Link = Link {
        max_frame: 4096,
        window: 8 * 1024 * 1024,
        encrypted: false,
        reliable: false,
    };

    /// The decoder buffer a driver needs for this link.
    pub fn max_frame(&self) -> usize {
        self.max_frame as usize
    }
}
