//! Relay addresses and the connector behind each kind.

use std::io;

use pickup_proto::{download, upload, Duration, DEFAULT_TCP_PORT};

use super::io::StdLink;
use super::serial::SerialConnector;
use super::tcp::TcpConnector;
use super::tls::{TlsConnector, TlsFailure, Trust};
use super::{Exit, Failure};
use crate::link::Connector;

/// Serial speed when the address does not name one.
const DEFAULT_BAUD: u32 = 115_200;

/// Where the relay is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addr {
    /// `HOST:PORT` (or `tcp://HOST:PORT`).
    Tcp(String),
    /// `tls://HOST:PORT`, and how its certificate is trusted.
    Tls { hostport: String, trust: Trust },
    /// `serial:PATH[@BAUD]`.
    Serial { path: String, baud: u32 },
}

impl Addr {
    pub fn parse(text: &str) -> Result<Addr, String> {
        if let Some(rest) = text.strip_prefix("serial:") {
            let (path, baud) = match rest.rsplit_once('@') {
                Some((p, b)) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
                    let baud = b
                        .parse::<u32>()
                        .ok()
                        .filter(|b| *b > 0)
                        .ok_or_else(|| format!("invalid baud rate {b:?}"))?;
                    (p, baud)
                }
                _ => (rest, DEFAULT_BAUD),
            };
            if path.is_empty() {
                return Err("serial address needs a device path: serial:PATH[@BAUD]".into());
            }
            return Ok(Addr::Serial {
                path: path.to_string(),
                baud,
            });
        }
        if let Some(rest) = text.strip_prefix("tls://") {
            return Ok(Addr::Tls {
                hostport: host_port(text, rest)?,
                trust: Trust::Roots,
            });
        }
        let hostport = text.strip_prefix("tcp://").unwrap_or(text);
        Ok(Addr::Tcp(host_port(text, hostport)?))
    }

    /// This address with `trust` for its certificate: only a `tls://`
    /// address has one, so anything but the default is refused for others.
    pub fn with_trust(self, trust: Trust) -> Result<Addr, String> {
        match self {
            Addr::Tls { hostport, .. } => Ok(Addr::Tls { hostport, trust }),
            other if trust == Trust::Roots => Ok(other),
            other => Err(format!(
                "--ca and --pin are for tls:// relays, not {}",
                other.canonical()
            )),
        }
    }
}

/// `HOST:PORT` of an address (`text`, for messages) without its scheme: a
/// bare host gets the default port; `[v6]` and `host:port` are kept.
fn host_port(text: &str, hostport: &str) -> Result<String, String> {
    let hostport = hostport.strip_suffix('/').unwrap_or(hostport);
    if hostport.is_empty() || hostport.contains('/') {
        return Err(format!(
            "invalid relay address {text:?}: use HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or serial:PATH[@BAUD]"
        ));
    }
    // A bare host gets the default port; `[v6]` and `host:port` are kept.
    let has_port = match hostport.rsplit_once(':') {
        Some((host, port)) => {
            let bracketed_v6 = host.starts_with('[') && host.ends_with(']');
            let plain = !host.contains(':');
            if (bracketed_v6 || plain) && !host.is_empty() {
                port.parse::<u16>()
                    .map_err(|_| format!("invalid port {port:?} in relay address"))?;
                true
            } else {
                false
            }
        }
        None => false,
    };
    Ok(if has_port {
        hostport.to_string()
    } else {
        format!("{hostport}:{DEFAULT_TCP_PORT}")
    })
}

impl Addr {
    /// A stable spelling, for keys and messages.
    pub fn canonical(&self) -> String {
        match self {
            Addr::Tcp(a) => format!("tcp://{a}"),
            Addr::Tls { hostport, .. } => format!("tls://{hostport}"),
            Addr::Serial { path, baud } => format!("serial:{path}@{baud}"),
        }
    }

    /// A connector whose first link is already up, or the one-line failure
    /// (exit code 4) if the relay cannot be reached or its TLS certificate
    /// is not trusted (exit code 1 if the `--ca` file is unusable).
    ///
    /// Why dial before the driver does: the driver's retransfer treats a
    /// failed connect like a dropped link and backs off for up to minutes,
    /// which is right for a link that worked, but a wrong address or a relay
    /// that is not running should be reported at once.
    pub fn dial(&self) -> Result<RelayConnector, Failure> {
        let mut inner = match self {
            Addr::Tcp(a) => Inner::Tcp(TcpConnector::new(a.clone())),
            Addr::Tls { hostport, trust } => Inner::Tls(Box::new(
                TlsConnector::new(hostport, trust).map_err(|e| Failure::new(Exit::Usage, e))?,
            )),
            Addr::Serial { path, baud } => Inner::Serial(SerialConnector::new(path.clone(), *baud)),
        };
        match inner.connect() {
            Ok(link) => Ok(RelayConnector {
                inner,
                first: Some(link),
                last_error: None,
            }),
            Err(e) => Err(Failure::new(Exit::Link, self.unreachable(&e))),
        }
    }

    /// "cannot reach the relay at ADDR: REASON — HINT", or "TLS: REASON"
    /// for a relay that answered but could not be trusted.
    fn unreachable(&self, e: &io::Error) -> String {
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<TlsFailure>()) {
            return format!("TLS: {tls}");
        }
        let reason = match e.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            io::ErrorKind::TimedOut => "timed out".to_string(),
            io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            io::ErrorKind::NotFound if matches!(self, Addr::Serial { .. }) => {
                "no such device".to_string()
            }
            _ => e.to_string(),
        };
        let hint = match self {
            Addr::Tcp(_) => "is `pickup-relay serve` running there?",
            Addr::Tls { .. } => "is `pickup-relay serve --tls` running there?",
            Addr::Serial { .. } => {
                "is the device plugged in and `pickup-relay serve --serial` on its other end?"
            }
        };
        format!(
            "cannot reach the relay at {}: {reason} \u{2014} {hint}",
            self.canonical()
        )
    }

    /// Session tuning for this kind of link: serial lines are slower and
    /// smaller frames lose less to noise.
    pub fn upload_config(&self) -> upload::Config {
        let base = upload::Config {
            max_frame: super::RX as u32,
            ..upload::Config::default()
        };
        match self {
            Addr::Tcp(_) | Addr::Tls { .. } => base,
            Addr::Serial { .. } => upload::Config {
                max_frame: 1024,
                retransmit_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(30),
                ..base
            },
        }
    }

    pub fn download_config(&self) -> download::Config {
        let base = download::Config {
            max_frame: super::RX as u32,
            // Reading never waits for the disk: a wide window keeps a fast
            // link busy through the client's own write stalls.
            window: 8 * 1024 * 1024,
            // get restores them; info shows them.
            file_attrs: true,
            ..download::Config::default()
        };
        match self {
            Addr::Tcp(_) | Addr::Tls { .. } => base,
            Addr::Serial { .. } => download::Config {
                max_frame: 1024,
                window: 64 * 1024,
                retransmit_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(30),
                ..base
            },
        }
    }
}

enum Inner {
    Tcp(TcpConnector),
    Tls(Box<TlsConnector>),
    Serial(SerialConnector),
}

impl Inner {
    fn connect(&mut self) -> io::Result<StdLink> {
        match self {
            Inner::Tcp(c) => c.connect(),
            Inner::Tls(c) => c.connect(),
            Inner::Serial(c) => c.connect(),
        }
    }
}

/// A connector for either kind of address; hands out the link
/// [`Addr::dial`] opened first, and remembers the last connection error for
/// the one-line message when the driver gives up.
pub(crate) struct RelayConnector {
    inner: Inner,
    first: Option<StdLink>,
    pub last_error: Option<io::Error>,
}

impl Connector for RelayConnector {
    type IoError = io::Error;
    type Link<'a> = StdLink;
    type ConnectError = ();

    fn connect(&mut self) -> Result<StdLink, ()> {
        if let Some(link) = self.first.take() {
            return Ok(link);
        }
        self.inner.connect().map_err(|e| self.last_error = Some(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Addr::parse("127.0.0.1:7425"),
            Ok(Addr::Tcp("127.0.0.1:7425".into()))
        );
        assert_eq!(
            Addr::parse("tcp://relay.example:9000"),
            Ok(Addr::Tcp("relay.example:9000".into()))
        );
        assert_eq!(
            Addr::parse("relay.example"),
            Ok(Addr::Tcp("relay.example:7425".into()))
        );
        assert_eq!(Addr::parse("[::1]:80"), Ok(Addr::Tcp("[::1]:80".into())));
        assert_eq!(
            Addr::parse("serial:/dev/ttyUSB0@9600"),
            Ok(Addr::Serial {
                path: "/dev/ttyUSB0".into(),
                baud: 9600
            })
        );
        assert_eq!(
            Addr::parse("serial:/dev/pts/3"),
            Ok(Addr::Serial {
                path: "/dev/pts/3".into(),
                baud: 115_200
            })
        );
        assert_eq!(
            Addr::parse("tls://127.0.0.1:7426"),
            Ok(Addr::Tls {
                hostport: "127.0.0.1:7426".into(),
                trust: Trust::Roots
            })
        );
        let tls = Addr::parse("tls://relay.example").unwrap();
        assert_eq!(tls.canonical(), "tls://relay.example:7425");
        let pin = Trust::Pin(super::super::tls::Pin::of(b""));
        assert!(matches!(tls.with_trust(pin.clone()), Ok(Addr::Tls { trust, .. }) if trust == pin));
        assert!(Addr::parse("1.2.3.4:5").unwrap().with_trust(pin).is_err());
        assert!(Addr::parse("tls://").is_err());
        assert!(Addr::parse("serial:").is_err());
        assert!(Addr::parse("serial:/dev/x@0").is_err());
        assert!(Addr::parse("host:99999").is_err());
        assert!(Addr::parse("http://x/y").is_err());
        assert!(Addr::parse("").is_err());
    }
}
