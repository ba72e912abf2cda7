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
//! [tls]                      # TLS over TCP; frames and window as [tcp]
//! listen = ["0.0.0.0:7426"]  # default: none
//! cert = "/etc/pickup/cert.pem"   # default: DATA/tls-cert.pem
//! key = "/etc/pickup/key.pem"     # default: DATA/tls-key.pem
//!
//! [http]                     # pages, files and ZIPs for browsers (`crate::http`)
//! listen = ["0.0.0.0:8080"]  # default: none
//! https = ["0.0.0.0:8443"]   # the same with TLS, [tls] cert and key; default: none
//! public_url = "https://pickup.example.org"   # default: none; terminals that
//!                            # ask get it and print `{public_url}/c/{CODE}`
//! upload_page = true         # GET / serves the browser upload page (tus); default: true
//!
//! [metrics]                  # GET /metrics, /healthz, /readyz (crate::metrics)
//! listen = "127.0.0.1:9425"  # default: none, no metrics listener
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
//!
//! [auth]                     # users, tokens and terminals (PROTOCOL.md §8)
//! token_ttl_secs = 2592000   # a login token lasts 30 days
//! account_failures = 5       # failures that lock a user or terminal ...
//! account_lock_secs = 60     # ... for this long at most
//! peer_failures = 20         # failures one peer may make ...
//! peer_window_secs = 600     # ... in any such window
//! allow_anonymous_upload = true
//! allow_anonymous_download = true
//! keep_replaced_secs = 86400 # replaced named content stays readable a day
//!
//! [auth.password]            # argon2id cost of new password hashes
//! memory_kib = 19456
//! iterations = 2
//!
//! [push]                     # addressed delivery (PROTOCOL.md §11, `crate::mailbox`)
//! confirm_deadline_secs = 600          # no receipt by then: Offline
//! offline_ttl_secs = 604800            # an offline file is kept a week
//! receiving_grace_secs = 300           # a read by the target keeps the batch this long
//! max_open_per_terminal = 100          # open deliveries to one terminal ...
//! max_open_per_sender_terminal = 20    # ... from one sender
//! max_open_per_sender = 1000
//! max_offline_bytes_per_sender = 4294967296
//!
//! [store]                    # where state is kept (`crate::store`)
//! backend = "sqlite"         # or "postgres": PostgreSQL + S3, shared by instances
//! # postgres_url = "host=/run/postgresql dbname=pickup user=pickup"
//! # postgres_connections = 32
//!
//! [store.s3]                 # contents, with backend = "postgres"; unset keys
//! # endpoint = "http://127.0.0.1:9000"   # from the AWS_* variables
//! # region = "us-east-1"
//! # bucket = "pickup"
//! # prefix = "relay-1"
//!
//! [forward]                  # forwards to peer relays (`crate::forward::service`)
//! max_active = 4             # run at once by this instance
//! max_attempts = 8           # then Failed
//! backoff_cap_secs = 300     # the n-th failure waits 2^n s, at most this
//! lease_secs = 60            # a dead instance's forward is taken up after this
//! max_open_per_user = 64     # a user's forwards not Done/Failed; past it Error{QueueFull}
//! keep_finished_secs = 604800  # a Done/Failed forward is kept this long, then swept (at least 1)
//!
//! [[peers]]                  # a relay this one forwards to and accepts forwards from
//! name = "relay-b"           # its name here, and this relay's name in its [[peers]]: terminal-name rules
//! addr = "tls://relay-b.example.org:7426"   # or tcp://HOST:PORT
//! key_file = "/etc/pickup/relay-b.key"      # the shared key, 32 hex digits, mode 0600
//! # ca = "/etc/pickup/ca.pem"               # tls:// only: trust this CA, or
//! # pin = "sha256:…"                        # exactly this certificate
//! ```

//!
//! The sections live by concern: `listeners` (`[tcp]`, `[tls]`, `[http]`,
//! `[metrics]`, `[serial]` and which of them start), `limits` (`[limits]`,
//! `[codes]`), `store` (`[store]`), `peers` (`[[peers]]`), `forward` (`[forward]`); the other sections' types belong to the module they
//! configure (`[rate_limit]`, `[proof]`, `[auth]`).

mod forward;
mod limits;
mod listeners;
pub mod peers;
mod store;

use std::path::{Path, PathBuf};

use pickup_proto::{frame, Code, Duration};
use serde::Deserialize;

use crate::codes::{self, GuessInputs};
use crate::directory::AuthSettings;
use crate::disclosure::{DisclosureMode, DisclosureSettings, DEFAULT_THRESHOLD_MAX};
use crate::mailbox::PushSettings;
use crate::proof_budget::ProofSettings;
use crate::quota::QuotaSettings;
use crate::rate_limit::RateSettings;
use crate::settings::Settings;

pub use forward::ForwardSettings;
pub use limits::{CodeConfig, Limits};
pub use listeners::{
    HttpConfig, Listeners, MetricsConfig, SerialConfig, SerialPortSpec, TcpConfig, TlsConfig,
    DEFAULT_TCP_LISTEN, DEFAULT_TLS_CERT, DEFAULT_TLS_KEY,
};
pub use peers::{PeerAddr, PeerConfig, PeerRelay, PeerTrust, Peers};
pub use store::{Backend, S3Config, StoreConfig, DEFAULT_POSTGRES_CONNECTIONS};

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
    /// TLS listeners.
    pub tls: TlsConfig,
    /// HTTP listeners (download pages).
    pub http: HttpConfig,
    /// Serial ports.
    pub serial: SerialConfig,
    /// The operations listener.
    pub metrics: MetricsConfig,
    /// Resource limits.
    pub limits: Limits,
    /// Pickup codes.
    pub codes: CodeConfig,
    /// Failed-lookup rate limits.
    pub rate_limit: RateSettings,
    /// What challenges may cost.
    pub proof: ProofSettings,
    /// Logins, tokens, failure limits and anonymous access.
    pub auth: AuthSettings,
    /// Addressed delivery: deadlines and caps.
    pub push: PushSettings,
    /// Where state is kept: SQLite (default) or PostgreSQL + S3.
    pub store: StoreConfig,
    /// Peer relays (`[[peers]]`): their keys are read by
    /// [`Config::load_peers`], not by [`Config::settings`].
    pub peers: Vec<PeerConfig>,
    /// Forwards to peer relays: how many at once, attempts, backoff.
    pub forward: ForwardSettings,
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
            tls: TlsConfig::default(),
            http: HttpConfig::default(),
            serial: SerialConfig::default(),
            metrics: MetricsConfig::default(),
            limits: Limits::default(),
            codes: CodeConfig::default(),
            rate_limit: RateSettings::default(),
            proof: ProofSettings::default(),
            auth: AuthSettings::default(),
            push: PushSettings::default(),
            store: StoreConfig::default(),
            peers: Vec::new(),
            forward: ForwardSettings::default(),
        }
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

    /// Checks ranges that would otherwise fail later or silently.
    pub fn validate(&self) -> Result<(), String> {
        self.store.check()?;
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
        if self.limits.listen_backlog == 0 {
            return Err("limits.listen_backlog must be at least 1".into());
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
        if let Some(url) = self.http.page_url() {
            pickup_proto::message::validate_page_url(url)
                .map_err(|e| format!("http.public_url {url:?}: {e}"))?;
        }
        self.auth.validate()?;
        self.push.validate()?;
        self.forward.validate()?;
        peers::check(&self.peers)?;
        self.serial_ports().map(|_| ())
    }

    /// The peer relays with their keys read from their key files: what
    /// goes into [`Settings::peers`]. `Err` names the entry and the file.
    pub fn load_peers(&self) -> Result<Peers, String> {
        peers::check(&self.peers)?;
        Peers::new(
            self.peers
                .iter()
                .map(PeerConfig::load)
                .collect::<Result<Vec<_>, _>>()?,
        )
    }

    /// The settings every session shares, with no peer relays: reading
    /// their keys takes I/O that may fail, so the caller puts
    /// [`Config::load_peers`] into [`Settings::peers`].
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
            auth: self.auth,
            push: self.push,
            page_url: self.http.page_url().map(str::to_owned),
            peers: Peers::default(),
            forward: self.forward.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
