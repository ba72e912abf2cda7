//! Links over TLS (`tls://HOST:PORT`): a TCP link with rustls on top.
//!
//! The relay is trusted by one of three means ([`Trust`]): the system's CA
//! store (Mozilla's roots compiled into `webpki-roots` where there is
//! none, as in a minimal container), the CA certificates of a PEM file (`--ca`), or one
//! certificate named by its SHA-256 (`--pin`, for a relay's self-signed
//! certificate; its host name is not checked then, only that the peer
//! holds that certificate's key).
//!
//! The handshake is finished inside [`TlsConnector::connect`], so a
//! certificate that is not trusted fails the first dial with one line
//! ([`TlsFailure`]) instead of looking like a dropped link.

use std::fmt;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, OtherError,
    RootCertStore, SignatureScheme, StreamOwned,
};
use sha2::{Digest, Sha256};

use super::io::StdLink;
use super::tcp::{self, TcpConnector};

/// How long the TLS handshake may take once TCP is up: a peer that is not
/// a TLS relay (a plain one answers nothing to a ClientHello) fails after
/// this instead of hanging.
const HANDSHAKE_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(10);

/// How the relay's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trust {
    /// The system's roots (else those compiled in), and the host name checked.
    Roots,
    /// The CA certificates of this PEM file, and the host name checked.
    Ca(PathBuf),
    /// Exactly the certificate with this SHA-256 (of its DER encoding).
    Pin(Pin),
}

/// A pinned certificate fingerprint: SHA-256 of its DER encoding, written
/// `sha256:` and 64 hex digits (as `pickup-relay cert self-signed` prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pin(pub [u8; 32]);

impl Pin {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Pin {
        Pin(Sha256::digest(der).into())
    }

    /// Parses `sha256:` and 64 hex digits, either case.
    pub fn parse(text: &str) -> Result<Pin, String> {
        let bad = || format!("invalid pin {text:?}: expected sha256: and 64 hex digits");
        let hex = text.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
            let pair = core::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Pin(digest))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Why a TLS link could not be set up, as the one line the user sees
/// (after `TLS: `). Carried inside an `io::Error` so the dialler can tell
/// it from an unreachable relay.
#[derive(Debug)]
pub(crate) struct TlsFailure(pub String);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TlsFailure {}

/// The certificate the pin refused, for the message.
#[derive(Debug)]
struct PinMismatch(Pin);

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the certificate is {}", self.0)
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts exactly the pinned certificate. The handshake's signatures are
/// still verified with the provider's algorithms, so the peer must hold
/// that certificate's private key; validity dates and the host name are not
/// checked (a self-signed certificate is trusted for what it is).
#[derive(Debug)]
struct PinnedCert {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Pin::of(end_entity);
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch(seen))),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Dials `host:port` afresh for every link, and handshakes.
pub(crate) struct TlsConnector {
    tcp: TcpConnector,
    /// The host as dialled, for messages.
    host: String,
    name: ServerName<'static>,
    trust: Trust,
    config: Arc<ClientConfig>,
}

impl TlsConnector {
    /// A connector for `hostport` (`HOST:PORT`, `[V6]:PORT`). Fails with
    /// the one-line reason if the CA file cannot be used or the host is no
    /// valid name.
    pub fn new(hostport: &str, trust: &Trust) -> Result<TlsConnector, String> {
        let host = hostport
            .rsplit_once(':')
            .map_or(hostport, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = ServerName::try_from(host.clone())
            .map_err(|_| format!("TLS: {host:?} is not a valid host name"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let config = match trust {
            Trust::Roots => builder.with_root_certificates(system_roots()),
            Trust::Ca(path) => builder.with_root_certificates(ca_roots(path)?),
            Trust::Pin(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCert {
                    pin: *pin,
                    algorithms,
                })),
        }
        .with_no_client_auth();
        Ok(TlsConnector {
            tcp: TcpConnector::new(hostport.to_string()),
            host,
            name,
            trust: trust.clone(),
            config: Arc::new(config),
        })
    }

    pub fn connect(&mut self) -> io::Result<StdLink> {
        let mut socket = self.tcp.socket()?;
        let mut conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| self.failure(&e))?;
        // The handshake blocks, bounded; the link's short read timeout comes
        // after it.
        socket.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        socket.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        while conn.is_handshaking() {
            match conn.complete_io(&mut socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.handshake_error(e)),
            }
        }
        tcp::link_timeouts(&socket)?;
        let stream: StreamOwned<ClientConnection, TcpStream> = StreamOwned::new(conn, socket);
        Ok(StdLink::new(Box::new(stream), tcp::WRITE_PATIENCE))
    }

    /// An error of the handshake as the user's one line.
    fn handshake_error(&self, e: io::Error) -> io::Error {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match (tls, e.kind()) {
            (Some(tls), _) => self.failure(tls),
            (None, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                io::Error::other(TlsFailure(format!(
                    "no handshake with {} within {}s \u{2014} is that a TLS port of `pickup-relay serve --tls`?",
                    self.host,
                    HANDSHAKE_TIMEOUT.as_secs()
                )))
            }
            (None, io::ErrorKind::UnexpectedEof) => io::Error::other(TlsFailure(format!(
                "{} closed the connection during the handshake \u{2014} is that a TLS port?",
                self.host
            ))),
            _ => io::Error::other(TlsFailure(format!(
                "handshake with {} failed: {e}",
                self.host
            ))),
        }
    }

    fn failure(&self, e: &rustls::Error) -> io::Error {
        let host = &self.host;
        let message = match (e, &self.trust) {
            (rustls::Error::InvalidCertificate(CertificateError::Other(other)), Trust::Pin(pin)) => {
                match other.0.downcast_ref::<PinMismatch>() {
                    Some(seen) => {
                        format!("certificate for {host} does not match pinned {pin} ({seen})")
                    }
                    None => format!("certificate for {host} refused: {e}"),
                }
            }
            (rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), Trust::Ca(ca)) => {
                format!(
                    "certificate for {host} is not signed by a CA of {}",
                    ca.display()
                )
            }
            (rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), _) => format!(
                "certificate for {host} is not signed by a known CA \u{2014} use --ca FILE or --pin sha256:HEX"
            ),
            (rustls::Error::InvalidCertificate(CertificateError::NotValidForName), _)
            | (rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }), _) => {
                format!("certificate is not valid for {host}")
            }
            (rustls::Error::InvalidMessage(_), _) => format!(
                "{host} does not speak TLS ({e}) \u{2014} is that a plain tcp:// port?"
            ),
            _ => format!("handshake with {host} failed: {e}"),
        };
        io::Error::other(TlsFailure(message))
    }
}

/// The operating system's trusted CAs (as `rustls-native-certs` finds
/// them: the distribution's bundle, `SSL_CERT_FILE`, `SSL_CERT_DIR`); on a
/// system that has none (a minimal container), Mozilla's list compiled in.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        roots.roots = webpki_roots::TLS_SERVER_ROOTS.to_vec();
    }
    roots
}

/// The CA certificates of a PEM file.
fn ca_roots(path: &Path) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--ca {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "--ca {}: no usable CA certificate in the file",
            path.display()
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn pins_parse_in_either_case_and_print_in_lowercase() {
        let pin = Pin::parse(EMPTY_SHA256).unwrap();
        assert_eq!(pin, Pin::of(b""));
        assert_eq!(pin.to_string(), EMPTY_SHA256);
        assert_eq!(
            Pin::parse(&EMPTY_SHA256.to_uppercase().replace("SHA256", "sha256")),
            Ok(pin)
        );
    }

    #[test]
    fn malformed_pins_are_refused() {
        let hex = &EMPTY_SHA256["sha256:".len()..];
        for bad in [
            "",
            hex,
            "sha256:",
            &format!("sha1:{hex}"),
            &format!("SHA256:{hex}"),
            &format!("sha256:{}", &hex[1..]),
            &format!("sha256:{hex}0"),
            &format!("sha256:{}g", &hex[1..]),
            &format!("sha256: {}", &hex[1..]),
            &format!("sha256:{}é", &hex[2..]),
        ] {
            assert!(Pin::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_host_is_taken_from_the_address() {
        let pin = Trust::Pin(Pin::of(b""));
        assert_eq!(
            TlsConnector::new("127.0.0.1:7426", &pin).unwrap().host,
            "127.0.0.1"
        );
        assert_eq!(TlsConnector::new("[::1]:7426", &pin).unwrap().host, "::1");
        assert_eq!(
            TlsConnector::new("relay.example:1", &Trust::Roots)
                .unwrap()
                .host,
            "relay.example"
        );
        let missing = TlsConnector::new("relay.example:1", &Trust::Ca("/nonexistent.pem".into()));
        assert!(missing.is_err());
    }
}
