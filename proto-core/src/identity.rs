//! The terminal's proof of identity: HMAC-SHA1 (RFC 2104) over a relay's
//! challenge, keyed by the device key the relay's operator issued.
//!
//! Built on the crate's own SHA-1, so a terminal that already hashes its
//! uploads pays about 300 bytes of flash for it. HMAC needs only that the
//! compression function is a PRF, which SHA-1's collision attacks do not
//! touch.
//!
//! What is authenticated is [`terminal_mac`]`(key, nonce, name)`: the
//! domain label keeps the MAC from meaning anything in another protocol,
//! the relay's fresh nonce makes every answer single-use, and the name
//! binds the answer to the identity claimed.
//!
//! A relay that forwards to a peer relay answers the same challenge with
//! [`relay_mac`]: the same construction under its own label, so a
//! terminal's key never authenticates a relay and a relay's shared key
//! never authenticates a terminal, even where an operator reused one.

use crate::hash::{Sha1Digest, Sha1Hasher};
use crate::message::{AuthToken, Role};

/// A terminal's device key: 128 random bits shared by the terminal and
/// its relay, never sent over the link. Two peer relays share a key of
/// the same shape ([`relay_mac`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceKey(pub [u8; 16]);

impl core::fmt::Debug for DeviceKey {
    /// Keys are secrets: debug output never shows them.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

/// A terminal's identity as its client holds it: its registered name and
/// its device key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalIdentity<'a> {
    /// The name the relay's operator registered.
    pub name: &'a str,
    /// The key the operator printed for it.
    pub key: DeviceKey,
}

/// A relay's identity towards one peer relay: the name that peer's
/// operator lists it under (the peer's `[[peers]]`) and the key the two
/// relays share. What the relay's forwarder uploads with
/// ([`Credential::Relay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayIdentity<'a> {
    /// The name the peer knows this relay by.
    pub name: &'a str,
    /// The key both relays hold.
    pub key: DeviceKey,
}

/// What a session authenticates with, right after `Welcome` and before its
/// first request (PROTOCOL.md §8): given to `upload::Session::authenticate`
/// or `download::Session::authenticate` (feature `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A registered terminal: `TerminalAuth`, then the answer to the
    /// relay's challenge under its device key.
    Terminal(TerminalIdentity<'a>),
    /// A token an earlier `Login` returned: `Authenticate`.
    Token(AuthToken),
    /// A relay forwarding to a peer relay: its `Hello` says
    /// [`Role::Relay`], then `TerminalAuth` with the name the peer lists
    /// it under and the answer [`relay_mac`]. A peer relay's session may
    /// only upload, so only `upload::Session` has a use for it.
    Relay(RelayIdentity<'a>),
}

impl Credential<'_> {
    /// The role a session with this credential says in its `Hello`: the
    /// relay reads the `TerminalAuth` that follows by it (PROTOCOL.md §8).
    pub fn role(&self) -> Role {
        match self {
            Credential::Terminal(_) | Credential::Token(_) => Role::Terminal,
            Credential::Relay(_) => Role::Relay,
        }
    }
}

/// Why a session could not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AuthError {
    /// The relay did not accept the credential: a wrong key or unknown
    /// terminal name, or a token that is unknown, expired or revoked (the
    /// relay does not say which).
    Refused,
    /// The relay predates accounts (it answered `Error{UnknownKind}`).
    RelayHasNoAccounts,
    /// The terminal's name does not fit the relay's frames.
    NameTooLong,
}

impl core::fmt::Display for AuthError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AuthError::Refused => "the relay refused the credential (authentication failed)",
            AuthError::RelayHasNoAccounts => "the relay has no accounts (it predates them)",
            AuthError::NameTooLong => "the terminal's name does not fit the relay's frames",
        })
    }
}

/// The label every terminal MAC starts with.
pub const TERMINAL_MAC_LABEL: &[u8] = b"pickup terminal auth v1\0";

/// The label every relay MAC starts with: a relay authenticating to a
/// peer relay (its `Hello` says `Role::Relay`).
pub const RELAY_MAC_LABEL: &[u8] = b"pickup relay auth v1\0";

const BLOCK: usize = 64;

/// HMAC-SHA1 of the concatenation of `parts`, keyed by `key` (at most one
/// SHA-1 block; longer keys are not needed here and are hashed first, as
/// RFC 2104 says).
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Sha1Digest {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..20].copy_from_slice(&Sha1Digest::of(key).0);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha1Hasher::new();
    let mut pad = [0u8; BLOCK];
    for (p, k) in pad.iter_mut().zip(block) {
        *p = k ^ 0x36;
    }
    inner.update(&pad);
    for part in parts {
        inner.update(part);
    }
    let inner = inner.digest();
    let mut outer = Sha1Hasher::new();
    for (p, k) in pad.iter_mut().zip(block) {
        *p = k ^ 0x5c;
    }
    outer.update(&pad);
    outer.update(&inner.0);
    outer.digest()
}

/// The answer to a challenge: HMAC-SHA1 under the device key of
/// [`TERMINAL_MAC_LABEL`] ‖ nonce ‖ the terminal's name.
pub fn terminal_mac(key: &DeviceKey, nonce: &[u8; 16], terminal: &str) -> Sha1Digest {
    hmac_sha1(&key.0, &[TERMINAL_MAC_LABEL, nonce, terminal.as_bytes()])
}

/// A relay's answer to a peer relay's challenge: HMAC-SHA1 under the key
/// the two relays share of [`RELAY_MAC_LABEL`] ‖ nonce ‖ the name the
/// peer lists the answering relay under.
pub fn relay_mac(key: &DeviceKey, nonce: &[u8; 16], relay: &str) -> Sha1Digest {
    hmac_sha1(&key.0, &[RELAY_MAC_LABEL, nonce, relay.as_bytes()])
}

/// Compares two MACs in time independent of where they differ, so a
/// relay's answer time does not tell an attacker how many bytes it got right.
pub fn macs_equal(a: &Sha1Digest, b: &Sha1Digest) -> bool {
    a.0.iter()
        .zip(b.0.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &Sha1Digest) -> std::string::String {
        d.0.iter().map(|b| std::format!("{b:02x}")).collect()
    }

    /// RFC 2202's HMAC-SHA1 test cases 1, 2, 3, 6 and 7.
    #[test]
    fn matches_rfc_2202() {
        assert_eq!(
            hex(&hmac_sha1(&[0x0b; 20], &[b"Hi There"])),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hex(&hmac_sha1(&[0xaa; 20], &[&[0xdd; 50]])),
            "125d7342b9ac11cd91a39af48aa17b4f63f175d3"
        );
        assert_eq!(
            hex(&hmac_sha1(
                &[0xaa; 80],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
        assert_eq!(
            hex(&hmac_sha1(
                &[0xaa; 80],
                &[b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data"]
            )),
            "e8e99d0f45237d786d6bbaa7965c7808bbff1a91"
        );
    }

    #[test]
    fn the_answer_depends_on_key_nonce_and_name() {
        let key = DeviceKey([7; 16]);
        let mac = terminal_mac(&key, &[1; 16], "sensor-1");
        assert!(macs_equal(&mac, &terminal_mac(&key, &[1; 16], "sensor-1")));
        assert!(!macs_equal(&mac, &terminal_mac(&key, &[2; 16], "sensor-1")));
        assert!(!macs_equal(&mac, &terminal_mac(&key, &[1; 16], "sensor-2")));
        assert!(!macs_equal(
            &mac,
            &terminal_mac(&DeviceKey([8; 16]), &[1; 16], "sensor-1")
        ));
    }

    #[test]
    fn a_terminal_answer_never_authenticates_a_relay() {
        for (key, nonce, name) in [
            (DeviceKey([7; 16]), [1; 16], "sensor-1"),
            (DeviceKey([0; 16]), [0; 16], ""),
            (DeviceKey([0xff; 16]), [0xaa; 16], "relay-b"),
        ] {
            let terminal = terminal_mac(&key, &nonce, name);
            let relay = relay_mac(&key, &nonce, name);
            assert!(!macs_equal(&terminal, &relay));
            assert!(macs_equal(&relay, &relay_mac(&key, &nonce, name)));
        }
        // The labels differ within their common length, so the two MACs'
        // inputs differ whatever the nonce and name.
        let n = TERMINAL_MAC_LABEL.len().min(RELAY_MAC_LABEL.len());
        assert_ne!(TERMINAL_MAC_LABEL[..n], RELAY_MAC_LABEL[..n]);
    }
}
