//! `[[peers]]`: the relays this one forwards to and accepts forwards from
//! (docs/design/forwarding.md §2).
//!
//! ```text
//!   [[peers]] name, addr, key_file, ca | pin
//!     ── Config::validate ──► names and addresses checked (no I/O)
//!     ── Config::load_peers ─► Peers { name → PeerRelay { addr, key } }   (reads each key file)
//!                                   └─► Settings::peers: the session looks a
//!                                       `Role::Relay` session's name up here
//! ```
//!
//! Two relays accept each other only if each lists the other under the
//! name it authenticates with, with the same key: a relay that does not
//! list a peer gives it a challenge that never verifies, so "relays that
//! do not list each other refuse each other" is the key check itself.
//!
//! The key file holds the 16-byte shared key as 32 hex digits (the form of
//! a terminal's device key file, [`parse_key`]) and must be private to the
//! relay's user (no group or other permission bits): a peer's key lets
//! anyone who reads it forward into this relay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pickup_proto::identity::DeviceKey;
use serde::Deserialize;

use crate::directory::validate_account_name;

/// One `[[peers]]` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's name: the name this relay authenticates it under, and the
    /// name it authenticates this relay under in its own `[[peers]]`. The
    /// rules of terminal names (`validate_account_name`), 32 bytes at
    /// most: terminals hold a remote sender `user@pair` in 65 bytes
    /// (pickup-proto's `MAX_SENDER_NAME_LEN`).
    pub name: String,
    /// Where the peer listens: `tcp://HOST:PORT` or `tls://HOST:PORT`.
    pub addr: String,
    /// The shared key's file: 32 hex digits, mode 0600 (or stricter).
    pub key_file: PathBuf,
    /// For a `tls://` peer: trust the certificates this CA file (PEM)
    /// signed, instead of the system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// For a `tls://` peer: trust exactly the certificate with this
    /// fingerprint, `sha256:` and 64 hex digits (as `pickup-relay cert
    /// self-signed` prints it); the host name is not checked.
    #[serde(default)]
    pub pin: Option<String>,
}

/// How a `tls://` peer's certificate is trusted (as the CLI's `--ca`,
/// `--pin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTrust {
    /// The system's root certificates.
    Roots,
    /// Certificates signed by the CA in this PEM file.
    Ca(PathBuf),
    /// Exactly the certificate with this SHA-256 of its DER encoding.
    Pin([u8; 32]),
}

/// Where a peer listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    /// `tcp://HOST:PORT`.
    Tcp(String),
    /// `tls://HOST:PORT` and how its certificate is trusted.
    Tls {
        /// `HOST:PORT`, the host also the name the certificate must carry
        /// (unless pinned).
        hostport: String,
        /// How the certificate is trusted.
        trust: PeerTrust,
    },
}

/// A peer relay, checked and with its key read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRelay {
    /// Its name (see [`PeerConfig::name`]).
    pub name: String,
    /// Where it listens.
    pub addr: PeerAddr,
    /// The key both relays hold (`pickup_proto::identity::relay_mac`).
    pub key: DeviceKey,
}

/// The peer relays by name: what a `Role::Relay` session authenticates
/// against. Empty by default: a relay with no `[[peers]]` accepts no relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    by_name: BTreeMap<String, PeerRelay>,
}

impl Peers {
    /// The table of `peers`; `Err` (naming the entry) if two share a name.
    pub fn new(peers: impl IntoIterator<Item = PeerRelay>) -> Result<Peers, String> {
        let mut by_name = BTreeMap::new();
        for peer in peers {
            if by_name.contains_key(&peer.name) {
                return Err(format!("peers: the name {:?} is listed twice", peer.name));
            }
            by_name.insert(peer.name.clone(), peer);
        }
        Ok(Peers { by_name })
    }

    /// The peer called `name`, if listed.
    pub fn get(&self, name: &str) -> Option<&PeerRelay> {
        self.by_name.get(name)
    }

    /// Every peer, by name.
    pub fn iter(&self) -> impl Iterator<Item = &PeerRelay> {
        self.by_name.values()
    }

    /// No peer is listed.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl PeerConfig {
    /// The entry's address, checked: a scheme, a host, a port; `ca` or
    /// `pin` (not both) only for `tls://`.
    pub fn peer_addr(&self) -> Result<PeerAddr, String> {
        let what = || format!("peers {:?}: addr {:?}", self.name, self.addr);
        let (tls, rest) = if let Some(rest) = self.addr.strip_prefix("tls://") {
            (true, rest)
        } else if let Some(rest) = self.addr.strip_prefix("tcp://") {
            (false, rest)
        } else {
            return Err(format!(
                "{}: use tcp://HOST:PORT or tls://HOST:PORT",
                what()
            ));
        };
        let hostport = host_port(rest).ok_or_else(|| {
            format!(
                "{}: use tcp://HOST:PORT or tls://HOST:PORT with a port",
                what()
            )
        })?;
        let trust = match (&self.ca, &self.pin) {
            (Some(_), Some(_)) => {
                return Err(format!("peers {:?}: give ca or pin, not both", self.name))
            }
            (Some(ca), None) => PeerTrust::Ca(ca.clone()),
            (None, Some(pin)) => {
                PeerTrust::Pin(parse_pin(pin).map_err(|e| format!("peers {:?}: {e}", self.name))?)
            }
            (None, None) => PeerTrust::Roots,
        };
        if tls {
            Ok(PeerAddr::Tls { hostport, trust })
        } else if trust == PeerTrust::Roots {
            Ok(PeerAddr::Tcp(hostport))
        } else {
            Err(format!(
                "peers {:?}: ca and pin are for tls:// peers, not {}",
                self.name, self.addr
            ))
        }
    }

    /// Checks what can be checked without reading files: the name and the
    /// address.
    pub fn check(&self) -> Result<(), String> {
        validate_account_name(&self.name).map_err(|e| format!("peers: {e}"))?;
        self.peer_addr().map(|_| ())
    }

    /// The checked entry with its key read from `key_file`.
    pub fn load(&self) -> Result<PeerRelay, String> {
        self.check()?;
        Ok(PeerRelay {
            name: self.name.clone(),
            addr: self.peer_addr()?,
            key: read_private_key(&self.key_file)
                .map_err(|e| format!("peers {:?}: {e}", self.name))?,
        })
    }
}

/// The synthetic owner a peer relay's session acts for (its batches'
/// owner family, docs/design/forwarding.md §2): `peer:` and its name.
/// Account names never hold a `:`, so it is no user's or terminal's.
pub fn peer_owner(name: &str) -> String {
    format!("peer:{name}")
}

/// Checks every entry and that no name is listed twice (no I/O).
pub fn check(peers: &[PeerConfig]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for peer in peers {
        peer.check()?;
        if !seen.insert(peer.name.as_str()) {
            return Err(format!("peers: the name {:?} is listed twice", peer.name));
        }
    }
    Ok(())
}

/// `HOST:PORT` with a non-empty host (a plain name, an IPv4 address or a
/// bracketed IPv6 one) and a port; nothing after it.
fn host_port(text: &str) -> Option<String> {
    let (host, port) = text.rsplit_once(':')?;
    let bracketed_v6 = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    let plain = !host.is_empty() && !host.contains([':', '/', '[', ']']);
    let ok = (bracketed_v6 || plain) && port.parse::<u16>().is_ok_and(|p| p > 0);
    ok.then(|| text.to_owned())
}

/// `sha256:` and 64 hex digits, either case.
fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    let bad = || format!("invalid pin {text:?}: expected sha256: and 64 hex digits");
    let hex = text.strip_prefix("sha256:").ok_or_else(bad)?;
    let mut digest = [0u8; 32];
    parse_hex(hex, &mut digest)
        .then_some(digest)
        .ok_or_else(bad)
}

/// Fills `out` from exactly `2 * out.len()` hex digits; `false` otherwise.
fn parse_hex(hex: &str, out: &mut [u8]) -> bool {
    hex.len() == 2 * out.len()
        && hex.is_ascii()
        && out.iter_mut().enumerate().all(|(i, b)| {
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map(|v| *b = v)
                .is_ok()
        })
}

/// A 128-bit key written as 32 hex digits, surrounding whitespace ignored:
/// the form of a terminal's device key file (what `pickup-relay terminal
/// add` prints) and of a peer's shared key file.
pub fn parse_key(text: &str) -> Option<DeviceKey> {
    let mut key = [0u8; 16];
    parse_hex(text.trim(), &mut key).then_some(DeviceKey(key))
}

/// Reads a key file that only its owner may read or write: a key file
/// with any group or other permission bit is refused (its key may have
/// leaked; make a new one), as is one that does not hold a key.
pub fn read_private_key(path: &Path) -> Result<DeviceKey, String> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the key file {} is readable by other users (mode {mode:o}): chmod 600 it",
            path.display()
        ));
    }
    // A key file is 33 bytes; reading more than a few lines of it would
    // only mean it is the wrong file.
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, 1024), &mut text)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    parse_key(&text).ok_or_else(|| {
        format!(
            "the key file {} does not hold a key (32 hex digits)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn entry(name: &str, addr: &str) -> PeerConfig {
        PeerConfig {
            name: name.into(),
            addr: addr.into(),
            key_file: PathBuf::from("/nonexistent"),
            ca: None,
            pin: None,
        }
    }

    const PIN: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    #[test]
    fn addresses_read_as_the_clis() {
        assert_eq!(
            entry("b", "tcp://relay-b.example:7425").peer_addr(),
            Ok(PeerAddr::Tcp("relay-b.example:7425".into()))
        );
        assert_eq!(
            entry("b", "tls://[::1]:7426").peer_addr(),
            Ok(PeerAddr::Tls {
                hostport: "[::1]:7426".into(),
                trust: PeerTrust::Roots
            })
        );
        let mut pinned = entry("b", "tls://10.0.0.2:7426");
        pinned.pin = Some(PIN.into());
        let Ok(PeerAddr::Tls {
            trust: PeerTrust::Pin(p),
            ..
        }) = pinned.peer_addr()
        else {
            panic!("not pinned: {:?}", pinned.peer_addr());
        };
        assert_eq!((p[0], p[31]), (0x00, 0xff));
        let mut with_ca = entry("b", "tls://b.example:7426");
        with_ca.ca = Some("/etc/pickup/ca.pem".into());
        assert!(matches!(
            with_ca.peer_addr(),
            Ok(PeerAddr::Tls {
                trust: PeerTrust::Ca(_),
                ..
            })
        ));
        for bad in [
            "relay-b:7425",
            "udp://b:1",
            "tcp://b",
            "tcp://:7425",
            "tcp://b:0",
            "tcp://b:70000",
            "tcp://b:7425/x",
            "tls://::1:7426",
        ] {
            let e = entry("b", bad).peer_addr().unwrap_err();
            assert!(e.contains("tcp://HOST:PORT"), "{bad}: {e}");
        }
        let mut both = with_ca.clone();
        both.pin = Some(PIN.into());
        assert!(both.peer_addr().unwrap_err().contains("not both"));
        let mut tcp_pinned = entry("b", "tcp://b:1");
        tcp_pinned.pin = Some(PIN.into());
        assert!(tcp_pinned.peer_addr().unwrap_err().contains("tls://"));
        let mut bad_pin = pinned.clone();
        bad_pin.pin = Some("sha256:00".into());
        assert!(bad_pin.peer_addr().unwrap_err().contains("invalid pin"));
    }

    #[test]
    fn names_follow_the_terminal_rules_and_are_unique() {
        assert_eq!(
            check(&[entry("b", "tcp://b:1"), entry("c.2", "tcp://c:1")]),
            Ok(())
        );
        for bad in ["", "B", "-b", "peer:b", "b/c"] {
            assert!(check(&[entry(bad, "tcp://b:1")]).is_err(), "{bad:?}");
        }
        // As long as an account name and no longer, so that `user@pair`
        // fits the 65 bytes a terminal holds a sender in.
        assert_eq!(check(&[entry(&"p".repeat(32), "tcp://b:1")]), Ok(()));
        let long = check(&[entry(&"p".repeat(33), "tcp://b:1")]);
        assert!(long.unwrap_err().contains("1 to 32"));
        let twice = check(&[entry("b", "tcp://b:1"), entry("b", "tcp://c:1")]);
        assert!(twice.unwrap_err().contains("listed twice"));
    }

    fn key_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn keys_are_private_files_of_32_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "000102030405060708090a0b0c0d0e0f";
        let mut want = [0u8; 16];
        for (i, b) in want.iter_mut().enumerate() {
            *b = i as u8;
        }
        let good = key_file(dir.path(), "good", &format!("{hex}\n"), 0o600);
        assert_eq!(read_private_key(&good), Ok(DeviceKey(want)));
        let owner_only = key_file(dir.path(), "ro", hex, 0o400);
        assert_eq!(read_private_key(&owner_only), Ok(DeviceKey(want)));
        let wide = key_file(dir.path(), "wide", hex, 0o640);
        assert!(read_private_key(&wide)
            .unwrap_err()
            .contains("readable by other users (mode 640)"));
        for (name, text) in [("short", &hex[..30]), ("junk", "zz"), ("empty", "")] {
            let path = key_file(dir.path(), name, text, 0o600);
            assert!(read_private_key(&path)
                .unwrap_err()
                .contains("does not hold a key"));
        }
        let missing = read_private_key(&dir.path().join("missing")).unwrap_err();
        assert!(missing.contains("cannot read the key file"));
        let mut b = entry("b", "tcp://b:1");
        b.key_file = good;
        let peer = b.load().unwrap();
        assert_eq!((peer.name.as_str(), peer.key), ("b", DeviceKey(want)));
        let table = Peers::new([peer.clone()]).unwrap();
        assert_eq!(table.get("b"), Some(&peer));
        assert_eq!(table.get("c"), None);
        assert!(Peers::new([peer.clone(), peer]).is_err());
    }
}
