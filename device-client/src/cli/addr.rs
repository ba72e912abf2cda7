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

    /// The connector behind this address; a usage error (exit code 1) if
    /// the `--ca` file is unusable.
    fn connector(&self) -> Result<Inner, Failure> {
        Ok(match self {
            Addr::Tcp(a) => Inner::Tcp(TcpConnector::new(a.clone())),
            Addr::Tls { hostport, trust } => Inner::Tls(Box::new(
                TlsConnector::new(hostport, trust).map_err(|e| Failure::new(Exit::Usage, e))?,
            )),
            Addr::Serial { path, baud } => Inner::Serial(SerialConnector::new(path.clone(), *baud)),
        })
    }

    /// Why connecting failed, in a few words: "connection refused", or
    /// "TLS: REASON" for a relay that answered but could not be trusted.
    fn reason(&self, e: &io::Error) -> String {
        if let Some(tls) = tls_failure(e) {
            return format!("TLS: {tls}");
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            io::ErrorKind::TimedOut => "timed out".to_string(),
            io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            io::ErrorKind::NotFound if matches!(self, Addr::Serial { .. }) => {
                "no such device".to_string()
            }
            _ => e.to_string(),
        }
    }

    /// What to check when this kind of relay cannot be reached.
    fn hint(&self) -> &'static str {
        match self {
            Addr::Tcp(_) => "is `pickup-relay serve` running there?",
            Addr::Tls { .. } => "is `pickup-relay serve --tls` running there?",
            Addr::Serial { .. } => {
                "is the device plugged in and `pickup-relay serve --serial` on its other end?"
            }
        }
    }

    /// "cannot reach the relay at ADDR: REASON — HINT", or "TLS: REASON"
    /// for a relay that answered but could not be trusted.
    fn unreachable(&self, e: &io::Error) -> String {
        let reason = self.reason(e);
        if is_tls_failure(e) {
            return reason;
        }
        format!(
            "cannot reach the relay at {}: {reason} \u{2014} {}",
            self.canonical(),
            self.hint()
        )
    }

    /// Session tuning for this kind of link: serial lines are slower and
    /// smaller frames lose less to noise. TCP and TLS ask for the
    /// length-prefixed framing, which spares both ends a COBS pass over
    /// every byte; a serial line keeps COBS, which finds frames again
    /// after noise (PROTOCOL.md §2.1).
    pub fn upload_config(&self) -> upload::Config {
        let base = upload::Config {
            max_frame: super::RX as u32,
            length_prefix: true,
            ..upload::Config::default()
        };
        match self {
            Addr::Tcp(_) | Addr::Tls { .. } => base,
            Addr::Serial { .. } => upload::Config {
                max_frame: 1024,
                retransmit_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(30),
                length_prefix: false,
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
            length_prefix: true,
            ..download::Config::default()
        };
        match self {
            Addr::Tcp(_) | Addr::Tls { .. } => base,
            Addr::Serial { .. } => download::Config {
                max_frame: 1024,
                window: 64 * 1024,
                retransmit_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(30),
                length_prefix: false,
                ..base
            },
        }
    }
}

fn tls_failure(e: &io::Error) -> Option<&TlsFailure> {
    e.get_ref().and_then(|i| i.downcast_ref::<TlsFailure>())
}

fn is_tls_failure(e: &io::Error) -> bool {
    tls_failure(e).is_some()
}

/// Most addresses one `--relay` list may hold: trying them is sequential,
/// each up to the connect timeout, so a long list would stall a command.
pub(crate) const MAX_RELAYS: usize = 16;

/// The relays a command may use: one address, or several (`--relay A,B`)
/// tried in order until one connects.
///
/// Several addresses are taken to be one relay reached several ways (the
/// instances of a cluster sharing storage, or a fallback): state kept per
/// relay (resume state, the login, the token family) is keyed by the
/// first address only ([`Relays::key`]), so a single address keeps its
/// key and adding a fallback keeps the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relays {
    /// Never empty.
    addrs: Vec<Addr>,
}

impl Relays {
    /// Parses `text` (the `--relay` value), a comma-separated list of
    /// addresses; elements are trimmed, and an empty or invalid one is an
    /// error naming its position.
    pub fn parse(text: &str) -> Result<Relays, String> {
        let elements: Vec<&str> = text.split(',').map(str::trim).collect();
        if let [only] = elements.as_slice() {
            // One address: today's messages, word for word.
            return Addr::parse(only).map(|a| Relays { addrs: vec![a] });
        }
        if elements.len() > MAX_RELAYS {
            return Err(format!(
                "too many relay addresses ({}; at most {MAX_RELAYS})",
                elements.len()
            ));
        }
        let n = elements.len();
        let addrs = elements
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let which = i + 1;
                if text.is_empty() {
                    return Err(format!(
                        "relay address {which} of {n} is empty (a stray comma?)"
                    ));
                }
                Addr::parse(text)
                    .map_err(|e| format!("relay address {which} of {n} ({text:?}): {e}"))
            })
            .collect::<Result<Vec<Addr>, String>>()?;
        Ok(Relays { addrs })
    }

    /// These addresses with `trust` for the `tls://` ones; anything but the
    /// default trust with no `tls://` address among them is refused (as
    /// for one address: `--ca` or `--pin` would be ignored).
    pub fn with_trust(self, trust: Trust) -> Result<Relays, String> {
        let any_tls = self.addrs.iter().any(|a| matches!(a, Addr::Tls { .. }));
        if !any_tls || self.addrs.len() == 1 {
            let addrs = self
                .addrs
                .into_iter()
                .map(|a| a.with_trust(trust.clone()))
                .collect::<Result<_, _>>()?;
            return Ok(Relays { addrs });
        }
        let addrs = self
            .addrs
            .into_iter()
            .map(|a| match a {
                Addr::Tls { hostport, .. } => Addr::Tls {
                    hostport,
                    trust: trust.clone(),
                },
                other => other,
            })
            .collect();
        Ok(Relays { addrs })
    }

    /// The key of state kept per relay: the first address's canonical
    /// spelling (see the type's docs).
    pub fn key(&self) -> String {
        self.addrs[0].canonical()
    }

    /// The addresses' canonical spellings joined by commas, for messages
    /// (and a `--relay` value that means the same).
    pub fn canonical(&self) -> String {
        let all: Vec<String> = self.addrs.iter().map(Addr::canonical).collect();
        all.join(",")
    }

    /// A connector whose first link is already up: the first address, in
    /// order, that connects (and, for TLS, is trusted). If none does, the
    /// one-line failure (exit code 4) naming each address and its reason;
    /// exit code 1 if a `--ca` file is unusable.
    ///
    /// Why dial before the driver does: the driver's retransfer treats a
    /// failed connect like a dropped link and backs off for up to minutes,
    /// which is right for a link that worked, but a wrong address or a relay
    /// that is not running should be reported at once.
    pub fn dial(&self) -> Result<RelayConnector, Failure> {
        let inners = self
            .addrs
            .iter()
            .map(Addr::connector)
            .collect::<Result<Vec<_>, _>>()?;
        let mut connector = RelayConnector {
            addrs: self.addrs.clone(),
            inners,
            current: 0,
            first: None,
            last_error: None,
        };
        match connector.try_each() {
            Ok(link) => {
                connector.first = Some(link);
                Ok(connector)
            }
            Err(errors) => Err(Failure::new(Exit::Link, self.unreachable(&errors))),
        }
    }

    /// The message for a first connection that failed everywhere: one
    /// address says it as before; several are named each with its reason.
    fn unreachable(&self, errors: &[io::Error]) -> String {
        if let ([addr], [e]) = (self.addrs.as_slice(), errors) {
            return addr.unreachable(e);
        }
        let each: Vec<String> = self
            .addrs
            .iter()
            .zip(errors)
            .map(|(a, e)| format!("{}: {}", a.canonical(), a.reason(e)))
            .collect();
        // A hint only if it fits them all.
        let hint = self.addrs[0].hint();
        let hint = if self.addrs.iter().all(|a| a.hint() == hint) {
            format!(" \u{2014} {hint}")
        } else {
            String::new()
        };
        format!("cannot reach any of the relays: {}{hint}", each.join("; "))
    }

    /// Session tuning: a list holding a serial address gets the serial
    /// tuning throughout, which a network link also takes (smaller frames,
    /// longer timeouts), whereas the network's would not work on a serial
    /// line the command may move to.
    pub fn upload_config(&self) -> upload::Config {
        self.slowest().upload_config()
    }

    /// See [`Relays::upload_config`].
    pub fn download_config(&self) -> download::Config {
        self.slowest().download_config()
    }

    fn slowest(&self) -> &Addr {
        self.addrs
            .iter()
            .find(|a| matches!(a, Addr::Serial { .. }))
            .unwrap_or(&self.addrs[0])
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

/// A connector over one or several addresses; hands out the link
/// [`Relays::dial`] opened first, and remembers the last connection error
/// for the one-line message when the driver gives up.
pub(crate) struct RelayConnector {
    addrs: Vec<Addr>,
    /// One per address, in the same order.
    inners: Vec<Inner>,
    /// The address that connected last: a reconnect tries it first, since
    /// the instance that served the transfer is the likeliest to know it.
    current: usize,
    first: Option<StdLink>,
    pub last_error: Option<io::Error>,
}

impl RelayConnector {
    /// Tries each address once, starting with [`Self::current`]; the
    /// errors, in address order, if none connects.
    fn try_each(&mut self) -> Result<StdLink, Vec<io::Error>> {
        let n = self.inners.len();
        let mut errors: Vec<Option<io::Error>> = (0..n).map(|_| None).collect();
        for step in 0..n {
            let i = (self.current + step) % n;
            match self.inners[i].connect() {
                Ok(link) => {
                    self.current = i;
                    return Ok(link);
                }
                Err(e) => errors[i] = Some(e),
            }
        }
        Err(errors
            .into_iter()
            .map(|e| e.unwrap_or_else(|| io::Error::other("not tried")))
            .collect())
    }

    /// The canonical spelling of the address the latest link went to.
    pub fn current(&self) -> String {
        self.addrs[self.current].canonical()
    }
}

impl Connector for RelayConnector {
    type IoError = io::Error;
    type Link<'a> = StdLink;
    type ConnectError = ();

    fn connect(&mut self) -> Result<StdLink, ()> {
        if let Some(link) = self.first.take() {
            return Ok(link);
        }
        self.try_each().map_err(|mut errors| {
            self.last_error = Some(if errors.len() == 1 {
                // One address: its own error, as before.
                errors.remove(0)
            } else {
                let each: Vec<String> = self
                    .addrs
                    .iter()
                    .zip(&errors)
                    .map(|(a, e)| format!("{}: {}", a.canonical(), a.reason(e)))
                    .collect();
                io::Error::other(each.join("; "))
            });
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tls::Pin;
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
        let pin = Trust::Pin(Pin::of(b""));
        assert!(matches!(tls.with_trust(pin.clone()), Ok(Addr::Tls { trust, .. }) if trust == pin));
        assert!(Addr::parse("1.2.3.4:5").unwrap().with_trust(pin).is_err());
        assert!(Addr::parse("tls://").is_err());
        assert!(Addr::parse("serial:").is_err());
        assert!(Addr::parse("serial:/dev/x@0").is_err());
        assert!(Addr::parse("host:99999").is_err());
        assert!(Addr::parse("http://x/y").is_err());
        assert!(Addr::parse("").is_err());
    }

    fn tcp(a: &str) -> Addr {
        Addr::Tcp(a.into())
    }

    #[test]
    fn a_list_splits_on_commas_and_repeats_trimmed() {
        let r = Relays::parse("tcp://a:1, b:2 ,tls://c").unwrap();
        assert_eq!(r.addrs.len(), 3);
        assert_eq!(r.addrs[0], tcp("a:1"));
        assert_eq!(r.addrs[1], tcp("b:2"));
        assert_eq!(r.canonical(), "tcp://a:1,tcp://b:2,tls://c:7425");
    }

    #[test]
    fn one_address_keeps_its_key_and_messages() {
        let r = Relays::parse("127.0.0.1:7425").unwrap();
        assert_eq!(r.key(), "tcp://127.0.0.1:7425");
        assert_eq!(r.canonical(), r.key());
        assert_eq!(
            Relays::parse(" relay.example ").unwrap().key(),
            "tcp://relay.example:7425"
        );
        // The error of one bad address is today's, word for word.
        assert_eq!(
            Relays::parse("host:99999"),
            Err(Addr::parse("host:99999").unwrap_err())
        );
        assert!(Relays::parse("").is_err());
    }

    #[test]
    fn a_list_is_keyed_by_its_first_address() {
        let r = Relays::parse("b:2,a:1").unwrap();
        assert_eq!(r.key(), "tcp://b:2");
        assert_eq!(r.key(), Relays::parse("b:2").unwrap().key());
    }

    #[test]
    fn a_bad_element_is_named() {
        assert_eq!(
            Relays::parse("a:1,,b:2").unwrap_err(),
            "relay address 2 of 3 is empty (a stray comma?)"
        );
        assert_eq!(
            Relays::parse("a:1,").unwrap_err(),
            "relay address 2 of 2 is empty (a stray comma?)"
        );
        assert_eq!(
            Relays::parse(" , a:1").unwrap_err(),
            "relay address 1 of 2 is empty (a stray comma?)"
        );
        let e = Relays::parse("a:1,host:99999").unwrap_err();
        assert!(
            e.starts_with("relay address 2 of 2 (\"host:99999\"): invalid port"),
            "{e}"
        );
        let e = Relays::parse("a:1,http://x/y").unwrap_err();
        assert!(
            e.starts_with("relay address 2 of 2 (\"http://x/y\"): invalid relay address"),
            "{e}"
        );
        let many = vec!["a:1"; MAX_RELAYS + 1].join(",");
        assert!(Relays::parse(&many)
            .unwrap_err()
            .contains("too many relay addresses"));
    }

    #[test]
    fn trust_goes_to_the_tls_addresses() {
        let pin = Trust::Pin(Pin::of(b""));
        let r = Relays::parse("a:1,tls://b:2")
            .unwrap()
            .with_trust(pin.clone())
            .unwrap();
        assert_eq!(r.addrs[0], tcp("a:1"));
        assert!(matches!(&r.addrs[1], Addr::Tls { trust, .. } if *trust == pin));
        // With no tls:// address, --ca/--pin would be ignored: refused.
        assert!(Relays::parse("a:1,b:2")
            .unwrap()
            .with_trust(pin.clone())
            .is_err());
        assert!(Relays::parse("a:1").unwrap().with_trust(pin).is_err());
    }

    #[test]
    fn a_serial_address_sets_the_tuning_of_a_list() {
        let r = Relays::parse("a:1,serial:/dev/ttyUSB0").unwrap();
        assert_eq!(r.upload_config().max_frame, 1024);
        let r = Relays::parse("a:1,b:2").unwrap();
        assert_eq!(r.upload_config().max_frame, super::super::RX as u32);
    }

    #[test]
    fn every_address_is_tried_and_named_when_none_connects() {
        // Two ports nothing listens on: bound, then closed.
        let closed = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let (a, b) = (closed(), closed());
        let one = Relays::parse(&a).unwrap();
        let Err(f) = one.dial() else {
            panic!("connected to {a}")
        };
        assert_eq!(
            f.message,
            format!("cannot reach the relay at tcp://{a}: connection refused \u{2014} is `pickup-relay serve` running there?")
        );
        let two = Relays::parse(&format!("{a},{b}")).unwrap();
        let Err(f) = two.dial() else {
            panic!("connected")
        };
        assert_eq!(f.exit, Exit::Link);
        assert_eq!(
            f.message,
            format!("cannot reach any of the relays: tcp://{a}: connection refused; tcp://{b}: connection refused \u{2014} is `pickup-relay serve` running there?")
        );
        // A live one after a closed one is used, and stays first to retry.
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live_addr = live.local_addr().unwrap().to_string();
        let mixed = Relays::parse(&format!("{a},{live_addr}")).unwrap();
        let mut c = mixed.dial().unwrap();
        assert_eq!(c.current(), format!("tcp://{live_addr}"));
        assert!(c.connect().is_ok());
        assert!(c.connect().is_ok());
        assert_eq!(c.current(), format!("tcp://{live_addr}"));
        drop(live);
        assert!(c.connect().is_err());
        let e = c.last_error.as_ref().unwrap().to_string();
        assert!(e.contains(&format!("tcp://{a}: connection refused")), "{e}");
        assert!(
            e.contains(&format!("tcp://{live_addr}: connection refused")),
            "{e}"
        );
    }
}
