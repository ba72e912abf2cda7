//! The relay's configuration: a TOML file for every limit and setting,
//! overridden by command-line flags.
//!
//! ```toml
//! data = "./pickup-data"
//! instant_upload = true
//! dedup_disclosure = "threshold"   # or "owner-only", "open": what instant upload reveals
//! dedup_threshold_max = 20   # cross-owner content is challenged after 2..=20 owners
//! sweep_interval_secs = 60
//! shutdown_grace_secs = 5
//!
//! [tcp]
//! listen = ["127.0.0.1:7425"]   # default: none; see `Config::choose_listeners`
//! max_frame = 65536          # largest raw frame accepted
//! window = 33554432          # upload bytes in flight (terminals cap it, at 32 MiB by default)
//!
//! [serial]
//! ports = ["/dev/ttyUSB0@115200"]
//! baud = 115200              # for ports given without @BAUD
//! max_frame = 4096
//! window = 8388608           # upload bytes in flight (terminals cap it)
//! reopen_min_ms = 250        # backoff when a port vanishes
//! reopen_max_ms = 10000
//!
//! [limits]
//! max_file_size = 4294967296
//! max_files_per_batch = 1000
//! max_batch_size = 8589934592
//! disk_quota = 34359738368
//! max_sessions = 16384
//! max_sessions_per_peer = 64
//! max_live_batches = 100000
//! # max_reserved_per_peer = 8589934592   # default: disk_quota / 4, at least max_batch_size
//! reservation_timeout_secs = 600     # a stalled upload's unsent bytes stop holding quota
//! max_incomplete_batches_per_peer = 16
//! new_batch_burst_per_peer = 30      # batches one peer may create at once ...
//! new_batches_per_hour_per_peer = 60 # ... and per hour
//! incomplete_ttl_secs = 3600         # an incomplete batch without progress is deleted
//! idle_timeout_secs = 120
//! idle_timeout_before_transfer_secs = 30   # before a batch is created, resumed or found
//! ack_delay_ms = 200         # acknowledge a quiet partial window after this
//!
//! [codes]
//! ttl_secs = 86400
//! # length = 13             # default: the shortest meeting the guessing bound
//! expired_memory_secs = 604800   # expired codes answer Expired this long
//!
//! [rate_limit]               # failed lookups
//! peer_burst = 10
//! peer_per_sec = 0.5
//! global_burst = 100
//! global_per_sec = 10.0
//! reserved_share = 0.2       # of the global bucket, for peers with no recent failure
//! suspect_secs = 600         # a failed lookup makes its peer a suspect this long
//!
//! [proof]                    # the hashing challenges cost the relay
//! challenges_per_file = 3    # per file of a batch (per resume token) ...
//! file_window_secs = 3600    # ... within this window
//! peer_burst_bytes = 4294967296   # held bytes one peer may have hashed at once
//! peer_bytes_per_sec = 16777216   # and sustained
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pickup_proto::{frame, Code, Duration};
use serde::Deserialize;

use crate::codes::{self, GuessInputs};
use crate::disclosure::{DisclosureMode, DisclosureSettings, DEFAULT_THRESHOLD_MAX};
use crate::proof_budget::ProofSettings;
use crate::quota::QuotaSettings;
use crate::rate_limit::RateSettings;
use crate::settings::{Link, Settings};

/// Everything the relay can be told.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Data directory: the SQLite database and the content files.
    pub data: PathBuf,
    /// Offer instant upload (proof of ownership) to terminals.
    pub instant_upload: bool,
    /// Which held content a challenge may reveal ([`crate::disclosure`]).
    pub dedup_disclosure: DisclosureMode,
    /// The largest per-content threshold of owners in `threshold` mode.
    pub dedup_threshold_max: u32,
    /// How often expired batches are deleted and unreferenced blobs collected.
    pub sweep_interval_secs: u64,
    /// On SIGINT/SIGTERM, how long sessions get to flush before the relay exits.
    pub shutdown_grace_secs: u64,
    /// TCP listeners.
    pub tcp: TcpConfig,
    /// Serial ports.
    pub serial: SerialConfig,
    /// Resource limits.
    pub limits: Limits,
    /// Pickup codes.
    pub codes: CodeConfig,
    /// Failed-lookup rate limits.
    pub rate_limit: RateSettings,
    /// What challenges may cost.
    pub proof: ProofSettings,
}

/// TCP listeners and their link parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpConfig {
    /// Addresses to listen on; none by default (which listeners start is
    /// settled by [`Config::choose_listeners`]).
    pub listen: Vec<SocketAddr>,
    /// Largest raw frame accepted (announced in Welcome).
    pub max_frame: u32,
    /// Upload bytes a terminal may have in flight (announced in Welcome and Acks).
    pub window: u32,
}

/// Serial ports and their link parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SerialConfig {
    /// Ports, as `PATH` or `PATH@BAUD`.
    pub ports: Vec<String>,
    /// Baud rate for ports given without one.
    pub baud: u32,
    /// Largest raw frame accepted.
    pub max_frame: u32,
    /// Upload bytes in flight. Wide by default: it costs no memory on either
    /// side (terminals re-read unacknowledged bytes from their source and
    /// cap it themselves), a fast link (USB CDC, a pseudo-terminal) keeps
    /// sending through the relay's fsyncs, and a slow line is still
    /// acknowledged at least every half second, not every quarter window.
    pub window: u32,
    /// First wait before reopening a port that vanished, doubling up to `reopen_max_ms`.
    pub reopen_min_ms: u64,
    /// Longest wait between reopen attempts.
    pub reopen_max_ms: u64,
}

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

/// The settings of a relay with no configuration.
impl Default for Settings {
    fn default() -> Self {
        Config::default().settings()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: PathBuf::from("./pickup-data"),
            instant_upload: true,
            dedup_disclosure: DisclosureMode::default(),
            dedup_threshold_max: DEFAULT_THRESHOLD_MAX,
            sweep_interval_secs: 60,
            shutdown_grace_secs: 5,
            tcp: TcpConfig::default(),
            serial: SerialConfig::default(),
            limits: Limits::default(),
            codes: CodeConfig::default(),
            rate_limit: RateSettings::default(),
            proof: ProofSettings::default(),
        }
    }
}

/// The TCP listener when no listener is given anywhere (config or flags).
pub const DEFAULT_TCP_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    pickup_proto::DEFAULT_TCP_PORT,
));

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            // Empty: the default listener is decided once every source is
            // known (`Config::choose_listeners`), so a config that names
            // only serial ports does not also bind the default TCP port.
            listen: Vec::new(),
            max_frame: Link::TCP.max_frame,
            window: Link::TCP.window,
        }
    }
}

impl Default for SerialConfig {
    fn default() -> Self {
        SerialConfig {
            ports: Vec::new(),
            baud: 115_200,
            max_frame: Link::SERIAL.max_frame,
            window: Link::SERIAL.window,
            reopen_min_ms: 250,
            reopen_max_ms: 10_000,
        }
    }
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
        }
    }
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

/// A serial port to serve: `PATH` or `PATH@BAUD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialPortSpec {
    /// Device path.
    pub path: String,
    /// Baud rate.
    pub baud: u32,
}

impl SerialPortSpec {
    /// Parses `PATH[@BAUD]`, using `default_baud` when no rate is given.
    pub fn parse(spec: &str, default_baud: u32) -> Result<Self, String> {
        let (path, baud) = match spec.rsplit_once('@') {
            Some((path, baud)) => (
                path,
                baud.parse::<u32>()
                    .map_err(|_| format!("{spec:?}: baud rate {baud:?} is not a number"))?,
            ),
            None => (spec, default_baud),
        };
        if path.is_empty() || baud == 0 {
            return Err(format!("{spec:?}: expected PATH or PATH@BAUD"));
        }
        Ok(SerialPortSpec {
            path: path.to_owned(),
            baud,
        })
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are errors.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The inputs of [`codes::guess_bound`] under these settings.
    pub fn guess_inputs(&self) -> GuessInputs {
        GuessInputs {
            global_rate_per_sec: self.rate_limit.global_per_sec,
            global_burst: self.rate_limit.global_burst,
            max_live_batches: self.limits.max_live_batches,
        }
    }

    /// The code length in force: configured, or the shortest meeting the bound.
    pub fn code_len(&self) -> usize {
        self.codes
            .length
            .unwrap_or_else(|| codes::min_code_len(&self.guess_inputs(), codes::TARGET_GUESS_BOUND))
    }

    /// Settles which listeners start, given those of the command line.
    ///
    /// Listeners are all-or-nothing per source: when the command line names
    /// any (`--tcp` or `--serial`), exactly those start and the config
    /// file's `[tcp].listen` and `[serial].ports` are ignored; otherwise the
    /// file's start. Only when neither names one does [`DEFAULT_TCP_LISTEN`]
    /// start, so `--serial` alone never binds a TCP port.
    pub fn choose_listeners(&mut self, tcp: &[SocketAddr], serial: &[String]) {
        if !tcp.is_empty() || !serial.is_empty() {
            self.tcp.listen = tcp.to_vec();
            self.serial.ports = serial.to_vec();
        }
        if self.tcp.listen.is_empty() && self.serial.ports.is_empty() {
            self.tcp.listen = vec![DEFAULT_TCP_LISTEN];
        }
    }

    /// The serial ports to serve.
    pub fn serial_ports(&self) -> Result<Vec<SerialPortSpec>, String> {
        self.serial
            .ports
            .iter()
            .map(|p| SerialPortSpec::parse(p, self.serial.baud))
            .collect()
    }

    /// Checks ranges that would otherwise fail later or silently.
    pub fn validate(&self) -> Result<(), String> {
        let frame_range = frame::MIN_FRAME_LEN as u32..=frame::MAX_FRAME_LEN as u32;
        for (what, max_frame, window) in [
            ("tcp", self.tcp.max_frame, self.tcp.window),
            ("serial", self.serial.max_frame, self.serial.window),
        ] {
            if !frame_range.contains(&max_frame) {
                return Err(format!(
                    "{what}.max_frame must be within {}..={}",
                    frame_range.start(),
                    frame_range.end()
                ));
            }
            if window < max_frame {
                return Err(format!("{what}.window must be at least {what}.max_frame"));
            }
        }
        if let Some(len) = self.codes.length {
            if !(Code::MIN_LEN..=Code::MAX_LEN).contains(&len) {
                return Err(format!(
                    "codes.length must be within {}..={}",
                    Code::MIN_LEN,
                    Code::MAX_LEN
                ));
            }
        }
        let r = &self.rate_limit;
        // NaN fails every comparison, so it is refused too.
        if !(r.peer_per_sec > 0.0 && r.global_per_sec > 0.0) {
            return Err("rate_limit rates must be positive".into());
        }
        if r.peer_burst == 0 || r.global_burst == 0 {
            return Err("rate_limit bursts must be at least 1".into());
        }
        if !(0.0..1.0).contains(&r.reserved_share) {
            return Err("rate_limit.reserved_share must be within 0.0..1.0".into());
        }
        if self.limits.max_files_per_batch == 0 || self.limits.max_sessions == 0 {
            return Err("limits must allow at least one file and one session".into());
        }
        if self.dedup_threshold_max < 2 {
            return Err("dedup_threshold_max must be at least 2".into());
        }
        if self.limits.max_incomplete_batches_per_peer == 0
            || self.limits.new_batch_burst_per_peer == 0
            || self.limits.incomplete_ttl_secs == 0
        {
            return Err("limits must allow each peer at least one incomplete batch".into());
        }
        if self.codes.ttl_secs == 0 {
            return Err("codes.ttl_secs must be positive".into());
        }
        self.serial_ports().map(|_| ())
    }

    /// The settings every session shares.
    pub fn settings(&self) -> Settings {
        Settings {
            code_len: self.code_len(),
            code_ttl_secs: self.codes.ttl_secs,
            expired_memory_secs: self.codes.expired_memory_secs,
            max_file_size: self.limits.max_file_size,
            max_files_per_batch: self.limits.max_files_per_batch,
            max_batch_size: self.limits.max_batch_size,
            max_live_batches: self.limits.max_live_batches,
            quota: QuotaSettings {
                disk_quota: self.limits.disk_quota,
                max_reserved_per_peer: self
                    .limits
                    .max_reserved_per_peer
                    .unwrap_or((self.limits.disk_quota / 4).max(self.limits.max_batch_size)),
                reservation_timeout_secs: self.limits.reservation_timeout_secs,
                max_incomplete_batches_per_peer: self.limits.max_incomplete_batches_per_peer,
                new_batch_burst_per_peer: self.limits.new_batch_burst_per_peer,
                new_batches_per_hour_per_peer: self.limits.new_batches_per_hour_per_peer,
                incomplete_ttl_secs: self.limits.incomplete_ttl_secs,
            },
            max_sessions: self.limits.max_sessions,
            max_sessions_per_peer: self.limits.max_sessions_per_peer,
            idle_timeout: Duration::from_secs(self.limits.idle_timeout_secs),
            idle_timeout_before_transfer: Duration::from_secs(
                self.limits.idle_timeout_before_transfer_secs,
            ),
            ack_delay: Duration::from_millis(self.limits.ack_delay_ms),
            rate: self.rate_limit,
            proof: self.proof,
            instant_upload: self.instant_upload,
            disclosure: DisclosureSettings {
                mode: self.dedup_disclosure,
                threshold_max: self.dedup_threshold_max,
            },
        }
    }

    /// Link parameters of TCP sessions.
    pub fn tcp_link(&self) -> Link {
        Link {
            max_frame: self.tcp.max_frame,
            window: self.tcp.window,
        }
    }

    /// Link parameters of serial sessions.
    pub fn serial_link(&self) -> Link {
        Link {
            max_frame: self.serial.max_frame,
            window: self.serial.window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_defaults_validate() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
        assert_eq!(c.tcp.max_frame, 65_536);
        assert_eq!(c.serial.max_frame, 4096);
        assert_eq!(c.serial.window, 8 << 20);
        assert_eq!(c.code_len(), 13);
    }

    #[test]
    fn every_section_parses_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str(
            r#"
            data = "/tmp/x"
            [tcp]
            listen = ["127.0.0.1:1", "[::1]:2"]
            [serial]
            ports = ["/dev/ttyUSB0@9600", "/dev/ttyACM0"]
            [limits]
            max_file_size = 10
            [codes]
            ttl_secs = 5
            length = 20
            [rate_limit]
            peer_burst = 2
            "#,
        )
        .unwrap();
        assert_eq!(c.tcp.listen.len(), 2);
        let mut flags = c.clone();
        flags.choose_listeners(&[], &["/dev/ttyS0".into()]);
        assert!(
            flags.tcp.listen.is_empty(),
            "flags replace every file listener"
        );
        assert_eq!(flags.serial.ports, ["/dev/ttyS0"]);
        let mut none = Config::default();
        none.choose_listeners(&[], &[]);
        assert_eq!(none.tcp.listen, [DEFAULT_TCP_LISTEN]);
        assert_eq!(c.limits.max_file_size, 10);
        assert_eq!(c.limits.max_files_per_batch, 1000);
        assert_eq!(c.code_len(), 20);
        assert_eq!(c.rate_limit.peer_burst, 2);
        assert_eq!(
            c.serial_ports().unwrap(),
            [
                SerialPortSpec {
                    path: "/dev/ttyUSB0".into(),
                    baud: 9600
                },
                SerialPortSpec {
                    path: "/dev/ttyACM0".into(),
                    baud: 115_200
                },
            ]
        );
        assert!(toml::from_str::<Config>("[limits]\nmax_flies = 3").is_err());
        assert!(toml::from_str::<Config>("colour = 1").is_err());
    }

    #[test]
    fn the_per_peer_reservation_defaults_to_a_quarter_of_the_quota_but_one_batch_at_least() {
        let s = Config::default().settings();
        assert_eq!(s.quota.max_reserved_per_peer, 8 << 30);
        assert_eq!(s.quota.max_incomplete_batches_per_peer, 16);
        assert_eq!(s.quota.incomplete_ttl_secs, 3600);
        let small = |extra: &str| -> Settings {
            let text = format!("[limits]\ndisk_quota = 4000\nmax_batch_size = 2000\n{extra}");
            toml::from_str::<Config>(&text).unwrap().settings()
        };
        assert_eq!(small("").quota.max_reserved_per_peer, 2000);
        assert_eq!(
            small("max_reserved_per_peer = 3000\n")
                .quota
                .max_reserved_per_peer,
            3000
        );
        let mut c = Config::default();
        c.limits.max_incomplete_batches_per_peer = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn validation_catches_bad_ranges() {
        let mut c = Config::default();
        c.tcp.max_frame = 10;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.rate_limit.global_per_sec = 0.0;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.rate_limit.reserved_share = 1.0;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.codes.length = Some(30);
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.serial.ports = vec!["/dev/x@fast".into()];
        assert!(c.validate().is_err());
    }
}
