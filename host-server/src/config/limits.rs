//! `[limits]` and `[codes]`: what one relay holds and serves at most, and
//! how long its codes are and live.

use serde::Deserialize;

/// Resource limits; each refusal carries its own error code.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest file (`TooLarge`).
    pub max_file_size: u64,
    /// Most files in one batch (`TooManyFiles`).
    pub max_files_per_batch: u16,
    /// Largest batch (`TooLarge`).
    pub max_batch_size: u64,
    /// Bytes of content the relay holds at most (`Quota`).
    pub disk_quota: u64,
    /// Sessions at once (`Busy`).
    pub max_sessions: usize,
    /// Sessions at once from one peer (`Busy`).
    pub max_sessions_per_peer: usize,
    /// Batches alive at once (`Busy`); an input of the guessing bound.
    pub max_live_batches: u64,
    /// Bytes one peer's uploads may reserve at once (`PeerQuota`); by
    /// default a quarter of `disk_quota`, at least `max_batch_size`.
    pub max_reserved_per_peer: Option<u64>,
    /// Unsent bytes of an upload without progress for this long stop
    /// holding quota; the upload reserves again when it resumes.
    pub reservation_timeout_secs: u64,
    /// Incomplete batches one peer may have at once (`TooManyIncomplete`).
    pub max_incomplete_batches_per_peer: u32,
    /// Batches one peer may create at once (`RateLimited`) ...
    pub new_batch_burst_per_peer: u32,
    /// ... and per hour, sustained.
    pub new_batches_per_hour_per_peer: u32,
    /// An incomplete batch without progress for this long is deleted
    /// (its code then answers `Expired`).
    pub incomplete_ttl_secs: u64,
    /// A session that sends nothing for this long is closed (`IdleTimeout`).
    pub idle_timeout_secs: u64,
    /// A session that sends nothing for this long before it has a batch
    /// (created, resumed or found by its code) is closed (`IdleTimeout`).
    pub idle_timeout_before_transfer_secs: u64,
    /// Received bytes not yet acknowledged are made durable and acknowledged
    /// after this long without more data.
    pub ack_delay_ms: u64,
    /// Connections the kernel queues for each TCP listener before the
    /// relay accepts them ([`crate::transport::listen`]); Linux caps it at
    /// `net.core.somaxconn`.
    pub listen_backlog: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: 4 << 30,
            max_files_per_batch: 1000,
            max_batch_size: 8 << 30,
            disk_quota: 32 << 30,
            max_sessions: 16_384,
            max_sessions_per_peer: 64,
            max_live_batches: 100_000,
            max_reserved_per_peer: None,
            reservation_timeout_secs: 600,
            max_incomplete_batches_per_peer: 16,
            new_batch_burst_per_peer: 30,
            new_batches_per_hour_per_peer: 60,
            incomplete_ttl_secs: 3600,
            idle_timeout_secs: 120,
            idle_timeout_before_transfer_secs: 30,
            ack_delay_ms: 200,
            listen_backlog: crate::transport::listen::DEFAULT_BACKLOG,
        }
    }
}

/// Pickup codes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeConfig {
    /// How long a batch lives.
    pub ttl_secs: u64,
    /// Code length in symbols; by default the shortest that keeps the
    /// guessing bound below one in a million per year.
    pub length: Option<usize>,
    /// How long an expired code answers `Expired` rather than `UnknownCode`.
    pub expired_memory_secs: u64,
}

impl Default for CodeConfig {
    fn default() -> Self {
        CodeConfig {
            ttl_secs: 24 * 3600,
            length: None,
            expired_memory_secs: 7 * 24 * 3600,
        }
    }
}
