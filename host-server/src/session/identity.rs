//! Authentication on a session (PROTOCOL.md §8): a user's password or
//! token, a terminal's answer to a challenge, a peer relay's answer to one.
//!
//! ```text
//!   Login ──(InsecureLink? limiter?)──► job: argon2id, store token ──► Authenticated | AuthFailed
//!   Authenticate ──(limiter?)──► job: token lookup ──► Authenticated | AuthFailed
//!   TerminalAuth ──(limiter?)──► job: key lookup ──► Challenge
//!   TerminalAuth, Role::Relay ──(limiter?)──► Settings::peers ──► Challenge
//!   ChallengeAnswer ──(the challenge, once)──► HMAC check ──► Authenticated | AuthFailed
//!   Logout ──► job: revoke the token ──► Done
//! ```
//!
//! A session whose `Hello` says `Role::Relay` is a peer relay's: its
//! `TerminalAuth` names the relay as this relay's `[[peers]]` list it,
//! the answer is `relay_mac` under the shared key (never `terminal_mac`,
//! so neither kind of key opens the other door), and a name not listed
//! gets a challenge that never verifies, as an unknown terminal does.
//! Until it has authenticated, a relay-role session is answered
//! `AuthRequired` to everything but the session's own messages and the
//! challenge; after, it may upload (what forwarding needs) and push to a
//! terminal for one of its users (`PeerPush`, `peer_push.rs`), and nothing
//! else a user or terminal does ([`Session::relay_refusal`]).
//!
//! Every failure is charged to the account and the peer
//! ([`crate::auth_limit`]); while either is over its limit the request
//! is refused with `RateLimited` before any check runs, so a guesser gets
//! no answer at all from a locked account.

use pickup_proto::identity::{macs_equal, relay_mac, terminal_mac, DeviceKey};
use pickup_proto::message::{
    AuthToken, Authenticate, ChallengeAnswer, Kind, Login, Message, Role, TerminalAuth,
};
use pickup_proto::{ErrorCode, Instant};

use super::{Out, Session};
use crate::config::peers::peer_owner;
use crate::directory::{validate_account_name, DirectoryError, TokenInfo};
use crate::jobs::{self, LoggedIn, Work};
use crate::rate_limit::Peer;
use crate::relay::{lock, unix_secs};

/// Whom an authenticated session acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    /// The user (a terminal's owner), or `peer:NAME` for a peer relay ([`peer_owner`]).
    pub(super) user: String,
    /// The terminal, if a terminal authenticated.
    pub(super) terminal: Option<String>,
    /// The peer relay's name (`[[peers]]`), if a peer relay authenticated.
    pub(super) peer: Option<String>,
    /// The token the session logged in or authenticated with (what
    /// `Logout` revokes).
    pub(super) token: Option<AuthToken>,
}

impl Identity {
    /// As a reader of named files.
    pub(super) fn reader(&self) -> jobs::Reader {
        jobs::Reader {
            user: self.user.clone(),
            terminal: self.terminal.clone(),
        }
    }
}

/// Challenges replaced by a newer one whose answers are still taken: a
/// request sent again (or duplicated by the link) puts two challenges in
/// flight, and the terminal answers each as it arrives, so the answer to
/// the older one reaches the relay after the newer one replaced it.
/// Refusing it would fail an honest terminal for good (`AuthFailed`).
const EARLIER_KEPT: usize = 3;

/// Which kind of key a challenge's answer is checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    /// A terminal's device key, from the directory: `terminal_mac`.
    Terminal,
    /// A peer relay's shared key, from `Settings::peers`: `relay_mac`.
    Relay,
}

impl Domain {
    /// The account the limiter charges for `name`: peers apart from
    /// terminals, so guesses at a terminal's key never lock a peer out.
    fn account(self, name: &str) -> String {
        match self {
            Domain::Terminal => name.to_owned(),
            Domain::Relay => peer_owner(name),
        }
    }

    fn mac(self, key: &DeviceKey, nonce: &[u8; 16], name: &str) -> pickup_proto::Sha1Digest {
        match self {
            Domain::Terminal => terminal_mac(key, nonce, name),
            Domain::Relay => relay_mac(key, nonce, name),
        }
    }
}

/// A challenge sent and not yet answered.
#[derive(Clone)]
pub(super) struct Pending {
    nonce: [u8; 16],
    /// Up to [`EARLIER_KEPT`] challenges this one replaced, for the same
    /// terminal (or peer) on this session, newest first. All of them go
    /// with the first answer, right or wrong: each is good for one answer.
    earlier: Vec<[u8; 16]>,
    terminal: String,
    domain: Domain,
    /// The owner and key, `None` for a name not registered (its challenge
    /// goes out all the same and never verifies).
    holder: Option<(String, DeviceKey)>,
}

impl core::fmt::Debug for Pending {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pending")
            .field("terminal", &self.terminal)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// The limiter's account for token guesses: none. A token names no
/// account, and one shared account would let anyone lock every user's
/// tokens out with a few wrong ones; the per-peer limit applies.
const TOKEN_ACCOUNT: &str = "";

/// Passwords may cross only a link an eavesdropper cannot read: TLS, a
/// serial line, or loopback.
fn may_carry_passwords(peer: &Peer, encrypted: bool) -> bool {
    encrypted
        || match peer {
            Peer::Ip(ip) => ip.is_loopback(),
            Peer::Serial(_) => true,
            #[cfg(any(test, feature = "test-support"))]
            Peer::Sim(_) => true,
        }
}

impl Session {
    /// Why a relay-role session may not send `msg` now, if it may not: a
    /// peer relay authenticates before anything else (`AuthRequired`), and
    /// then uploads and pushes for its users only (`UnexpectedMessage` for
    /// the rest: a peer is no user, and `Login` or `Authenticate` would
    /// make it one).
    pub(super) fn relay_refusal(&self, msg: &Message<'_>) -> Option<ErrorCode> {
        let authenticated = self.identity.as_ref().is_some_and(|i| i.peer.is_some());
        match msg {
            Message::Hello(_)
            | Message::Keepalive
            | Message::Goodbye
            | Message::Error(_)
            | Message::TerminalAuth(_)
            | Message::ChallengeAnswer(_) => None,
            _ if !authenticated => Some(ErrorCode::AuthRequired),
            Message::BatchOpen(_)
            | Message::FileAnnounce(_)
            | Message::Proof(_)
            | Message::Data(_)
            | Message::Resume(_)
            | Message::Join(_)
            | Message::FileAttrs(_)
            | Message::PeerPush(_)
            | Message::Logout => None,
            _ => Some(ErrorCode::UnexpectedMessage),
        }
    }

    /// Refuses `kind` if the account or the peer has failed too often.
    fn auth_limited(&mut self, account: &str, kind: Kind, now: Instant) -> bool {
        let checked = lock(&self.relay.auth_limit).check(account, &self.peer, now);
        match checked {
            Ok(()) => false,
            Err(wait) => {
                self.out.error_retry(ErrorCode::RateLimited, kind, wait);
                true
            }
        }
    }

    fn auth_failed(&mut self, account: &str, kind: Kind) {
        lock(&self.relay.auth_limit).failed(account, &self.peer, self.clock);
        self.relay.metrics().login(false);
        tracing::info!(session = self.id, peer = %self.peer, kind = ?kind, "authentication failed");
        self.out.error(ErrorCode::AuthFailed, kind);
    }

    fn authenticated(&mut self, identity: Identity, token: AuthToken, expires_at: u64) {
        // The account failures were charged to: a terminal's name, a user's
        // or a peer's owner name.
        lock(&self.relay.auth_limit)
            .succeeded(identity.terminal.as_deref().unwrap_or(&identity.user));
        self.relay.metrics().login(true);
        tracing::info!(
            session = self.id,
            peer = %self.peer,
            user = %identity.user,
            terminal = identity.terminal.as_deref().unwrap_or(""),
            peer_relay = identity.peer.as_deref().unwrap_or(""),
            "authenticated"
        );
        if self.identity.as_ref() != Some(&identity) {
            // Live notices were for whom the session acted for before.
            self.stop_listening();
            self.stop_watching();
        }
        self.out.push(Out::Authenticated {
            user: identity.user.clone(),
            // A peer is told the name it authenticated as, as a terminal is.
            terminal: identity
                .terminal
                .clone()
                .or_else(|| identity.peer.clone())
                .unwrap_or_default(),
            token,
            expires_at,
        });
        self.identity = Some(identity);
    }

    fn directory_failed(&mut self, kind: Kind, e: &DirectoryError) {
        tracing::error!(session = self.id, "directory error on {kind:?}: {e}");
        self.out.error(ErrorCode::Internal, kind);
    }

    pub(super) fn on_login(&mut self, now: Instant, l: Login<'_>) {
        self.challenge = None;
        if !may_carry_passwords(&self.peer, self.link.encrypted) {
            // Refused before the password is looked at: it has crossed
            // the link already, but the relay will not make it worth
            // reading there.
            return self.out.error(ErrorCode::InsecureLink, Kind::Login);
        }
        if validate_account_name(l.user).is_err() {
            return self.auth_failed("", Kind::Login);
        }
        if self.auth_limited(l.user, Kind::Login, now) {
            return;
        }
        let mut token = AuthToken::NONE;
        while token.is_none() {
            if !lock(&self.relay.rng).fill(&mut token.0) {
                return self.out.error(ErrorCode::Internal, Kind::Login);
            }
        }
        let ttl = self.relay.settings.auth.token_ttl_secs;
        self.work.push(Work::Login(jobs::Login {
            user: l.user.to_owned(),
            password: l.password.to_owned(),
            token,
            expires_at: unix_secs(now).saturating_add(ttl),
        }));
    }

    pub(super) fn on_logged_in(&mut self, done: LoggedIn) {
        match done.result {
            Ok(true) => {
                let identity = Identity {
                    user: done.user,
                    terminal: None,
                    peer: None,
                    token: Some(done.token),
                };
                self.authenticated(identity, done.token, done.expires_at);
            }
            Ok(false) => self.auth_failed(&done.user, Kind::Login),
            Err(e) => self.directory_failed(Kind::Login, &e),
        }
    }

    pub(super) fn on_authenticate(&mut self, now: Instant, a: Authenticate) {
        self.challenge = None;
        if self.auth_limited(TOKEN_ACCOUNT, Kind::Authenticate, now) {
            return;
        }
        self.pending_token = Some(a.token);
        self.work.push(Work::CheckToken {
            token: a.token,
            now_secs: unix_secs(now),
        });
    }

    pub(super) fn on_token_checked(&mut self, result: Result<Option<TokenInfo>, DirectoryError>) {
        let token = self.pending_token.take();
        match (result, token) {
            (Ok(Some(info)), Some(token)) => {
                let identity = Identity {
                    user: info.user,
                    terminal: None,
                    peer: None,
                    token: Some(token),
                };
                self.authenticated(identity, AuthToken::NONE, info.expires_at);
            }
            (Ok(_), _) => self.auth_failed(TOKEN_ACCOUNT, Kind::Authenticate),
            (Err(e), _) => self.directory_failed(Kind::Authenticate, &e),
        }
    }

    pub(super) fn on_terminal_auth(&mut self, now: Instant, t: TerminalAuth<'_>) {
        // The pending challenge stays until the new one replaces it (see
        // `EARLIER_KEPT`): its answer may be on its way.
        if validate_account_name(t.terminal).is_err() {
            self.challenge = None;
            return self.auth_failed("", Kind::TerminalAuth);
        }
        let domain = match self.role {
            Role::Terminal => Domain::Terminal,
            Role::Relay => Domain::Relay,
        };
        if self.auth_limited(&domain.account(t.terminal), Kind::TerminalAuth, now) {
            return;
        }
        match domain {
            Domain::Terminal => self.work.push(Work::FindTerminal {
                name: t.terminal.to_owned(),
            }),
            // Peers are in memory: no job, and an unlisted name is
            // challenged all the same.
            Domain::Relay => {
                let holder = self.relay.settings.peers.get(t.terminal).map(|p| {
                    let owner = peer_owner(&p.name);
                    (owner, p.key)
                });
                self.challenge_for(t.terminal.to_owned(), Domain::Relay, holder);
            }
        }
    }

    pub(super) fn on_terminal_found(
        &mut self,
        name: String,
        result: Result<Option<(String, DeviceKey)>, DirectoryError>,
    ) {
        match result {
            Ok(holder) => self.challenge_for(name, Domain::Terminal, holder),
            Err(e) => self.directory_failed(Kind::TerminalAuth, &e),
        }
    }

    /// Sends a fresh challenge to `name`, answerable under `holder`'s key
    /// in `domain` (never, without a holder).
    fn challenge_for(&mut self, name: String, domain: Domain, holder: Option<(String, DeviceKey)>) {
        let mut nonce = [0u8; 16];
        if !lock(&self.relay.rng).fill(&mut nonce) {
            return self.out.error(ErrorCode::Internal, Kind::TerminalAuth);
        }
        let earlier = match self.challenge.take() {
            Some(old) if old.terminal == name && old.domain == domain => {
                core::iter::once(old.nonce)
                    .chain(old.earlier)
                    .take(EARLIER_KEPT)
                    .collect()
            }
            _ => Vec::new(),
        };
        self.challenge = Some(Box::new(Pending {
            nonce,
            earlier,
            terminal: name,
            domain,
            holder,
        }));
        self.out.push(Out::Challenge { nonce });
    }

    pub(super) fn on_challenge_answer(&mut self, now: Instant, a: ChallengeAnswer) {
        // One answer per challenge: a second (or a replay) finds none.
        let Some(pending) = self.challenge.take() else {
            return self
                .out
                .error(ErrorCode::UnexpectedMessage, Kind::ChallengeAnswer);
        };
        let account = pending.domain.account(&pending.terminal);
        if self.auth_limited(&account, Kind::ChallengeAnswer, now) {
            return;
        }
        let verified = pending.holder.as_ref().and_then(|(owner, key)| {
            let expected = |nonce: &[u8; 16]| pending.domain.mac(key, nonce, &pending.terminal);
            let answers = |nonce: &[u8; 16]| macs_equal(&expected(nonce), &a.mac);
            let nonces = core::iter::once(&pending.nonce).chain(&pending.earlier);
            // Every nonce is checked, so the time does not tell which matched.
            let matched = nonces.fold(false, |any, n| answers(n) | any);
            matched.then(|| owner.clone())
        });
        match (verified, pending.domain) {
            (Some(owner), Domain::Terminal) => {
                let identity = Identity {
                    user: owner,
                    terminal: Some(pending.terminal),
                    peer: None,
                    token: None,
                };
                self.authenticated(identity, AuthToken::NONE, 0);
            }
            (Some(owner), Domain::Relay) => {
                let identity = Identity {
                    user: owner,
                    terminal: None,
                    peer: Some(pending.terminal),
                    token: None,
                };
                self.authenticated(identity, AuthToken::NONE, 0);
            }
            (None, _) => self.auth_failed(&account, Kind::ChallengeAnswer),
        }
    }

    pub(super) fn on_logout(&mut self) {
        let Some(identity) = self.identity.take() else {
            return self.out.error(ErrorCode::AuthRequired, Kind::Logout);
        };
        // What was fetched as the user is not read after it, and notices
        // for its terminal stop.
        self.stop_listening();
        self.stop_watching();
        self.named_reads.clear();
        self.named_put = false;
        match identity.token {
            Some(token) => self.work.push(Work::RevokeToken { token }),
            // A terminal has no token: it is simply no longer authenticated.
            None => self.out.push(Out::Done(Kind::Logout)),
        }
    }

    pub(super) fn on_token_revoked(&mut self, result: Result<bool, DirectoryError>) {
        match result {
            Ok(_) => self.out.push(Out::Done(Kind::Logout)),
            Err(e) => self.directory_failed(Kind::Logout, &e),
        }
    }
}
