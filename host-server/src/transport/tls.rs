//! TLS over TCP: each accepted socket is handshaken, then driven like a
//! plain TCP connection ([`tcp::drive`]) over the decrypted stream, with a
//! [`Link`] that says it is encrypted.
//!
//! A handshake has [`HANDSHAKE_TIMEOUT`] to finish: no session exists
//! before it does, so only that bound keeps a silent peer from holding a
//! descriptor and a task. A failed handshake is one log line.
//!
//! rustls runs on its `ring` provider, which builds with a C compiler alone.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{tcp, Clock};
use crate::metrics::Transport;
use crate::relay::Relay;
use crate::settings::Link;

/// How long a peer has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of TLS: a certificate chain and its key, read from PEM
/// files (the chain's first certificate is the relay's own).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificate {}: no certificate in the file",
            cert.display()
        ));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "TLS certificate {} and key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// A certificate's fingerprint as clients pin it: `sha256:` and the
/// lowercase hex of SHA-256 over its DER encoding.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The fingerprint of the first certificate of a PEM file.
pub fn fingerprint_of_file(cert: &Path) -> Result<String, String> {
    let der = CertificateDer::from_pem_file(cert)
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    Ok(fingerprint(&der))
}

/// Writes a new self-signed certificate for `name` (a host name or an IP
/// address) and its key as PEM files, and returns its [`fingerprint`].
///
/// The key file is created with mode 0600. Existing files are replaced
/// only with `force`: a new certificate changes the fingerprint every
/// client has pinned.
pub fn write_self_signed(
    name: &str,
    cert: &Path,
    key: &Path,
    force: bool,
) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

    let made = rcgen::generate_simple_self_signed(vec![name.to_owned()])
        .map_err(|e| format!("cannot make a certificate for {name:?}: {e}"))?;
    let write = |path: &Path, text: &str, mode: u32| -> Result<(), String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).mode(mode);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        let mut file = options.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{} exists (--force replaces it)", path.display())
            }
            _ => format!("cannot create {}: {e}", path.display()),
        })?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    // The key first: a certificate without its key is of no use.
    write(key, &made.signing_key.serialize_pem(), 0o600)?;
    write(cert, &made.cert.pem(), 0o644)?;
    Ok(fingerprint(made.cert.der()))
}

/// Accepts connections until `shutdown` turns true; each gets its own task,
/// which handshakes and then drives a session (`link` with `encrypted` set).
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    relay: Arc<Relay>,
    link: Link,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(config);
    let link = Link {
        encrypted: true,
        ..link
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let task = connection(acceptor.clone(), stream, addr, relay.clone(), link, clock, shutdown.clone());
                    tokio::spawn(task);
                }
                Err(e) => {
                    // Out of descriptors, usually: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn connection(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
    relay: Arc<Relay>,
    link: Link,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::info!(%addr, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::info!(%addr, "TLS handshake timed out after {}s", HANDSHAKE_TIMEOUT.as_secs());
                return;
            }
        },
        // A relay shutting down starts no new session.
        _ = shutdown.changed() => return,
    };
    tcp::drive(stream, addr, Transport::Tls, relay, link, clock, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_serves_and_its_fingerprint_is_that_of_the_file() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let printed = write_self_signed("127.0.0.1", &cert, &key, false).unwrap();
        assert_eq!(printed, fingerprint_of_file(&cert).unwrap());
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        server_config(&cert, &key).unwrap();
        let again = write_self_signed("127.0.0.1", &cert, &key, false).unwrap_err();
        assert!(again.contains("--force"), "{again}");
        let replaced = write_self_signed("relay.example", &cert, &key, true).unwrap();
        assert_ne!(replaced, printed);
        assert!(
            server_config(&key, &key).is_err(),
            "a key is no certificate"
        );
    }

    #[test]
    fn fingerprints_are_sha256_in_lowercase_hex() {
        // SHA-256 of the empty string, a known vector.
        assert_eq!(
            fingerprint(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let f = fingerprint(b"any certificate");
        assert_eq!(f.len(), "sha256:".len() + 64);
        assert!(f["sha256:".len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
}
