//! The listeners' sections (`[tcp]`, `[tls]`, `[http]`, `[metrics]`,
//! `[serial]`) and which listeners start ([`Config::choose_listeners`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::Config;
use crate::settings::Link;

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

/// The TCP listener when no listener is given anywhere (config or flags).
pub const DEFAULT_TCP_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    pickup_proto::DEFAULT_TCP_PORT,
));

/// TLS listeners: TCP with TLS, their sessions' link parameters those of
/// `[tcp]` ([`Config::tls_link`]).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses to listen on; none by default.
    pub listen: Vec<SocketAddr>,
    /// The certificate chain, PEM; by default [`DEFAULT_TLS_CERT`] in the
    /// data directory ([`Config::tls_files`]).
    pub cert: Option<PathBuf>,
    /// The certificate's private key, PEM; by default [`DEFAULT_TLS_KEY`]
    /// in the data directory.
    pub key: Option<PathBuf>,
}

/// The certificate's file name in the data directory, when none is given.
pub const DEFAULT_TLS_CERT: &str = "tls-cert.pem";

/// The key's file name in the data directory, when none is given.
pub const DEFAULT_TLS_KEY: &str = "tls-key.pem";

/// HTTP listeners: a page per code, its files and a ZIP of the batch
/// ([`crate::http`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Addresses to listen on; none by default (HTTP is off).
    pub listen: Vec<SocketAddr>,
    /// Addresses to serve the same with TLS on, with `[tls]`'s certificate
    /// and key ([`Config::tls_files`]); none by default.
    pub https: Vec<SocketAddr>,
    /// Where browsers reach these pages from outside (behind a proxy it
    /// differs from `listen`), sent to terminals that print links
    /// (PROTOCOL.md §5.1). A trailing `/` is dropped; the rest must pass
    /// `pickup_proto::message::validate_page_url`. None by default.
    pub public_url: Option<String>,
    /// Serve the upload page at `/` ([`crate::http::upload_page`]); on by
    /// default. Off, `GET /` is 404; the tus endpoint answers either way.
    pub upload_page: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Vec::new(),
            https: Vec::new(),
            public_url: None,
            upload_page: true,
        }
    }
}

impl HttpConfig {
    /// `public_url` without its trailing `/`s, as the relay sends it.
    pub fn page_url(&self) -> Option<&str> {
        self.public_url.as_deref().map(|u| u.trim_end_matches('/'))
    }
}

/// The operations listener: `/metrics`, `/healthz`, `/readyz`
/// ([`crate::metrics::http`]), apart from the listeners terminals use.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve them on; none (no listener) by default, as they
    /// tell anyone who can reach them how busy the relay is.
    pub listen: Option<SocketAddr>,
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

/// The listeners named on a command line ([`Config::choose_listeners`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Listeners<'a> {
    /// `--tcp`.
    pub tcp: &'a [SocketAddr],
    /// `--tls`.
    pub tls: &'a [SocketAddr],
    /// `--serial`.
    pub serial: &'a [String],
    /// `--http`.
    pub http: &'a [SocketAddr],
    /// `--https`.
    pub https: &'a [SocketAddr],
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
    /// Settles which listeners start, given those of the command line.
    ///
    /// Listeners are all-or-nothing per source: when the command line names
    /// any (`--tcp`, `--tls`, `--serial`, `--http` or `--https`), exactly
    /// those start and the config file's `[tcp].listen`, `[tls].listen`,
    /// `[serial].ports`, `[http].listen` and `[http].https` are ignored; otherwise the
    /// file's start. Only when neither names a wire listener (TCP, TLS or
    /// serial) does [`DEFAULT_TCP_LISTEN`] start, so `--serial` or `--tls`
    /// alone never binds a plain TCP port, and `--http` alone still serves
    /// terminals on the default port (pages without uploads would be empty).
    pub fn choose_listeners(&mut self, given: &Listeners) {
        if !given.tcp.is_empty()
            || !given.tls.is_empty()
            || !given.serial.is_empty()
            || !given.http.is_empty()
            || !given.https.is_empty()
        {
            self.tcp.listen = given.tcp.to_vec();
            self.tls.listen = given.tls.to_vec();
            self.serial.ports = given.serial.to_vec();
            self.http.listen = given.http.to_vec();
            self.http.https = given.https.to_vec();
        }
        if self.tcp.listen.is_empty() && self.tls.listen.is_empty() && self.serial.ports.is_empty()
        {
            self.tcp.listen = vec![DEFAULT_TCP_LISTEN];
        }
    }

    /// The TLS certificate and key files: those configured, else
    /// [`DEFAULT_TLS_CERT`] and [`DEFAULT_TLS_KEY`] in the data directory
    /// (where `pickup-relay cert self-signed` writes them by default).
    pub fn tls_files(&self) -> (PathBuf, PathBuf) {
        let or_data = |given: &Option<PathBuf>, name: &str| {
            given.clone().unwrap_or_else(|| self.data.join(name))
        };
        (
            or_data(&self.tls.cert, DEFAULT_TLS_CERT),
            or_data(&self.tls.key, DEFAULT_TLS_KEY),
        )
    }

    /// The serial ports to serve.
    pub fn serial_ports(&self) -> Result<Vec<SerialPortSpec>, String> {
        self.serial
            .ports
            .iter()
            .map(|p| SerialPortSpec::parse(p, self.serial.baud))
            .collect()
    }

    /// Link parameters of TCP sessions.
    pub fn tcp_link(&self) -> Link {
        Link {
            max_frame: self.tcp.max_frame,
            window: self.tcp.window,
            encrypted: false,
            reliable: true,
        }
    }

    /// Link parameters of TLS sessions: those of TCP, encrypted.
    pub fn tls_link(&self) -> Link {
        Link {
            encrypted: true,
            ..self.tcp_link()
        }
    }

    /// Link parameters of serial sessions.
    pub fn serial_link(&self) -> Link {
        Link {
            max_frame: self.serial.max_frame,
            window: self.serial.window,
            encrypted: false,
            reliable: false,
        }
    }
}
