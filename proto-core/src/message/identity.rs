//! Identity and named-file messages (kinds `0x50..0x5F`): logging in as a
//! user, authenticating a registered terminal by challenge-response, and
//! the requests on a user's named files.
//!
//! A relay that predates these kinds answers each with
//! `Error{UnknownKind}`, so a client learns at its first request that the
//! relay has no accounts; terminals that never send them see nothing new.
//! PROTOCOL.md §8 has the exchange, its state diagram and its security
//! argument.

use serde::{Deserialize, Serialize};

use crate::hash::Sha1Digest;

/// A login's bearer secret (128 random bits): what a client keeps instead
/// of the password. The relay stores only a hash of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AuthToken(#[serde(with = "crate::fixed_bytes")] pub [u8; 16]);

impl core::fmt::Debug for AuthToken {
    /// Tokens are secrets: debug output never shows them.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AuthToken(..)")
    }
}

impl AuthToken {
    /// The all-zero token: "no token" in [`Authenticated`].
    pub const NONE: AuthToken = AuthToken([0; 16]);

    /// Whether this is [`AuthToken::NONE`].
    pub fn is_none(&self) -> bool {
        self.0 == [0; 16]
    }
}

/// 0x50, terminal → relay: log in as `user` with a password. Answered by
/// [`Authenticated`] carrying a fresh token, or `Error{AuthFailed}` (the
/// same for an unknown user and a wrong password), `Error{RateLimited}`,
/// or `Error{InsecureLink}` on a plain TCP link from a non-loopback peer.
// No defmt::Format either: a firmware log must not carry the password.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login<'a> {
    /// The user name.
    pub user: &'a str,
    /// The password, as typed.
    pub password: &'a str,
}

impl core::fmt::Debug for Login<'_> {
    /// Passwords are secrets: debug output never shows them.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// 0x51, terminal → relay: act for the user an earlier [`Login`] gave this
/// token to. Answered by [`Authenticated`] (with [`AuthToken::NONE`]) or
/// `Error{AuthFailed}` for a token that is unknown, expired or revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Authenticate {
    /// The token.
    pub token: AuthToken,
}

/// 0x52, terminal → relay: "I am the registered terminal `terminal`".
/// Answered by a [`Challenge`], also for a name the relay does not know
/// (so that names cannot be probed); the answer then never verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TerminalAuth<'a> {
    /// The terminal's registered name.
    pub terminal: &'a str,
}

/// 0x53, relay → terminal: a fresh random nonce to answer with
/// [`ChallengeAnswer`]. Each challenge is good for one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Challenge {
    /// 128 random bits, never repeated by this relay.
    #[serde(with = "crate::fixed_bytes")]
    pub nonce: [u8; 16],
}

/// 0x54, terminal → relay: the answer to the last [`Challenge`]:
/// [`terminal_mac`](crate::identity::terminal_mac) of the nonce and the
/// terminal's name under its device key. Answered by [`Authenticated`] or
/// `Error{AuthFailed}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChallengeAnswer {
    /// HMAC-SHA1 over the challenge (see `identity`).
    pub mac: Sha1Digest,
}

/// 0x55, relay → terminal: the session now acts for `user` (and, for a
/// terminal, as `terminal`). Named-file requests are allowed from here on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Authenticated<'a> {
    /// The user the session acts for (a terminal's owner).
    pub user: &'a str,
    /// The terminal's name, or empty for a user's login.
    pub terminal: &'a str,
    /// After [`Login`]: the new token to keep. Otherwise [`AuthToken::NONE`].
    pub token: AuthToken,
    /// When the token stops working, seconds since the Unix epoch; 0 for a
    /// terminal (its key works until the terminal is removed).
    pub expires_at: u64,
}

/// 0x58, terminal → relay: look up the named file `owner/name` to download
/// it. Answered like a [`Fetch`](super::Fetch): a [`Manifest`](super::Manifest)
/// of one file and its [`ManifestEntry`](super::ManifestEntry). The
/// manifest's `code` is a read handle valid on this session only: `Read`s
/// name it. A name that does not exist and one the session may not read
/// both get `Error{UnknownCode}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FetchNamed<'a> {
    /// The user whose namespace holds the name.
    pub owner: &'a str,
    /// The file's name within it.
    pub name: &'a str,
}

/// 0x5A, terminal → relay: delete one of the session user's names. The
/// content stays while a batch or another name holds it. Answered by
/// [`Done`], or `Error{UnknownCode}` if there is no such name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RemoveNamed<'a> {
    /// The name.
    pub name: &'a str,
}

/// 0x5B, terminal → relay: let `with` read one of the session user's names
/// (`allow`), or stop letting it (`!allow`). `with` is a user name, or
/// `@` and a terminal's name. Answered by [`Done`], or
/// `Error{UnknownCode}` if there is no such name or no such user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ShareNamed<'a> {
    /// The name.
    pub name: &'a str,
    /// Who gets (or loses) read access.
    pub with: &'a str,
    /// Grant (`true`) or revoke (`false`).
    pub allow: bool,
}

/// 0x5C, relay → terminal: the request of kind `kind` succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Done {
    /// The kind byte of the request.
    pub kind: u8,
}
