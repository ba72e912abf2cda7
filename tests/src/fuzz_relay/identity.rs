//! Identity and named files in the `relay_session` harness (PROTOCOL.md §8):
//! the accounts every run starts with, plausible `Login`s, challenge
//! answers and named-file requests, and the checks on what the relay
//! answers them.
//!
//! Invariants:
//! - `Authenticated` goes to a connection only for a credential it sent
//!   that could be valid and that no earlier `Authenticated` answered: the
//!   right password of an existing user, a token this run was given, or
//!   the right MAC for a challenge the connection received. Its `user` and
//!   `terminal` are the ones that credential names (terminal t1 acts for
//!   ada, peer relay r1 for `peer:r1`), a login carries a fresh token and
//!   the others none. Which answer is right depends on the connection's
//!   role: t1's `terminal_mac` as a terminal, r1's `relay_mac` as a relay
//!   (never the other), and a relay-role connection has no other credential;
//! - `Challenge` answers a `TerminalAuth` the connection sent;
//! - a `Manifest` under a code that is no batch's (a named file's read
//!   handle) goes only to a connection that authenticated, and says the
//!   files never expire (`expires_at` 2^64 − 1);
//! - data read through a handle is exactly one of the fixed contents, the
//!   one whose SHA-1 the handle's manifest named, and only on the
//!   connection that was given the handle.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use pickup_proto::code::Code;
use pickup_proto::hash::Sha1Digest;
use pickup_proto::identity::{relay_mac, terminal_mac, DeviceKey};
use pickup_proto::message::{
    AuthToken, Authenticate, ChallengeAnswer, FetchNamed, Login, Message, Read, RemoveNamed, Role,
    ShareNamed, TerminalAuth,
};
use pickup_proto::ErrorCode;
use pickup_relay::config::{PeerAddr, PeerRelay, Peers};
use pickup_relay::directory::{Directory, MemoryDirectory, PasswordParams};

use super::{Fuzz, Input, RelaySummary, CONTENTS, START};

/// The users every run starts with, and their passwords.
const USERS: [(&str, &str); 2] = [("ada", "ada-pw"), ("bob", "bob-pw")];
/// The one registered terminal, its owner and its device key.
const TERMINAL: &str = "t1";
const TERMINAL_OWNER: &str = "ada";
const TERMINAL_KEY: DeviceKey = DeviceKey([7; 16]);
/// The one peer relay the relay lists, the owner it acts for, and the key
/// they share.
const PEER: &str = "r1";
const PEER_OWNER: &str = "peer:r1";
const PEER_KEY: DeviceKey = DeviceKey([0x42; 16]);

/// Whom `Login` names: the users, one nobody registered, and names the
/// directory must refuse (a path, a control character, empty, too long).
const LOGIN_USERS: [&str; 6] = [
    "ada",
    "bob",
    "carol",
    "../ada",
    "ada\u{0}",
    "an-account-name-longer-than-32-characters",
];
/// What `TerminalAuth` names: the terminal, an unknown one, a user (not a
/// terminal), hostile names, and the peer relay.
const TERMINAL_NAMES: [&str; 5] = [TERMINAL, "t9", "ada", "-t1", PEER];
/// Whose names `FetchNamed` asks for.
const OWNERS: [&str; 4] = ["ada", "bob", "carol", "../ada"];
/// Named files asked for: the upload names the driver announces (a.bin,
/// b.txt, empty), one never bound, and names a namespace must refuse.
const NAMED: [&str; 8] = [
    "a.bin", "b.txt", "empty", "notes", "../up", "", "a/b", "x\u{0}y",
];
/// Whom a name is shared with: a user, the terminal, unknown accounts and
/// the owner herself.
const GRANTEES: [&str; 5] = ["bob", "@t1", "carol", "@t9", "ada"];

/// The directory a run starts with: ada and bob, and t1 owned by ada.
/// Cheap argon2 parameters: every run hashes two passwords.
pub(super) fn directory() -> Arc<MemoryDirectory> {
    let dir = MemoryDirectory::new(PasswordParams::FAST_FOR_TESTS);
    let now = START.as_millis() / 1000;
    for (user, password) in USERS {
        dir.add_user(user, password, now).expect("add a user");
    }
    dir.add_terminal(TERMINAL, TERMINAL_OWNER, TERMINAL_KEY, now)
        .expect("add the terminal");
    Arc::new(dir)
}

/// The peer relays a run's relay lists: r1.
pub(super) fn peers() -> Peers {
    Peers::new([PeerRelay {
        name: PEER.to_owned(),
        addr: PeerAddr::Tcp("127.0.0.1:7425".to_owned()),
        key: PEER_KEY,
    }])
    .expect("one peer")
}

/// How a credential authenticates, which decides the answer's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// A password: the answer carries a fresh token.
    Login,
    /// A token: the answer carries none.
    Token,
    /// A terminal's challenge answer: no token and no expiry.
    Terminal,
    /// A peer relay's challenge answer: no token and no expiry.
    Peer,
}

/// An identity a credential the connection sent could authenticate.
#[derive(Debug, Clone)]
struct Expected {
    user: String,
    terminal: &'static str,
    via: Via,
}

/// What one connection said and was told about identity (a new
/// connection starts over).
#[derive(Debug, Default)]
pub(super) struct Conn {
    /// Credentials sent that could be valid and are not yet answered by an
    /// `Authenticated`; each such answer takes one. (Answers the relay
    /// refused or forgot on a repeated `Hello` stay here: that only
    /// weakens the check.)
    expected: Vec<Expected>,
    /// `TerminalAuth`s sent and not yet answered by a `Challenge`.
    terminal_auths: u32,
    /// Challenge nonces received, newest last.
    nonces: Vec<[u8; 16]>,
    /// Whether an `Authenticated` came, or a credential that could be
    /// valid went out (its answer may have been cleared from the outbox
    /// by a repeated `Hello`, while the identity stays).
    maybe_authenticated: bool,
    /// The code of the last manifest, while it is a read handle: the
    /// entries that follow belong to it.
    manifest: Option<Code>,
    /// Read handles given to this connection: each file's SHA-1.
    handles: BTreeMap<Code, BTreeMap<u16, Sha1Digest>>,
    /// A right challenge answer of t1's went out.
    terminal_answer: bool,
    /// A right challenge answer of r1's went out (as a relay).
    peer_answer: bool,
    /// The users a credential the connection sent could authenticate as
    /// (a login's, a token's, t1's owner), ever.
    users: BTreeSet<String>,
    /// The last `Hello` said `Role::Relay`.
    relay_role: bool,
}

impl Conn {
    /// Whether the connection may act as t1 (it sent a right answer to
    /// one of t1's challenges).
    pub(super) fn answered_as_terminal(&self) -> bool {
        self.terminal_answer
    }

    /// Whether the connection may act as the peer r1 (it sent a right
    /// answer to one of r1's challenges as a relay).
    pub(super) fn answered_as_peer(&self) -> bool {
        self.peer_answer
    }

    /// The users the connection may act for.
    pub(super) fn users(&self) -> &BTreeSet<String> {
        &self.users
    }
}

/// What the run knows across connections.
#[derive(Debug, Default)]
pub(super) struct Run {
    /// Tokens the relay gave out, with their user.
    tokens: Vec<(AuthToken, String)>,
}

/// Notes what a connection sends: the credentials that could be valid,
/// and `TerminalAuth`s.
pub(super) fn note_sent(conn: &mut Conn, run: &Run, msg: &Message<'_>) {
    let expected = match msg {
        Message::Hello(h) => {
            conn.relay_role = h.role == Role::Relay;
            None
        }
        // A relay-role connection authenticates as a peer or not at all.
        Message::Login(_) | Message::Authenticate(_) if conn.relay_role => None,
        Message::ChallengeAnswer(a) if conn.relay_role => conn
            .nonces
            .iter()
            .any(|n| relay_mac(&PEER_KEY, n, PEER) == a.mac)
            .then(|| Expected {
                user: PEER_OWNER.to_owned(),
                terminal: PEER,
                via: Via::Peer,
            }),
        Message::Login(l) => USERS
            .iter()
            .any(|&(u, p)| u == l.user && p == l.password)
            .then(|| Expected {
                user: l.user.to_owned(),
                terminal: "",
                via: Via::Login,
            }),
        Message::Authenticate(a) => {
            run.tokens
                .iter()
                .find(|(token, _)| *token == a.token)
                .map(|(_, user)| Expected {
                    user: user.clone(),
                    terminal: "",
                    via: Via::Token,
                })
        }
        Message::ChallengeAnswer(a) => conn
            .nonces
            .iter()
            .any(|n| terminal_mac(&TERMINAL_KEY, n, TERMINAL) == a.mac)
            .then(|| Expected {
                user: TERMINAL_OWNER.to_owned(),
                terminal: TERMINAL,
                via: Via::Terminal,
            }),
        Message::TerminalAuth(_) => {
            conn.terminal_auths += 1;
            None
        }
        _ => None,
    };
    if let Some(e) = expected {
        conn.terminal_answer |= e.via == Via::Terminal;
        conn.peer_answer |= e.via == Via::Peer;
        if e.via != Via::Peer {
            conn.users.insert(e.user.clone());
        }
        conn.maybe_authenticated = true;
        conn.expected.push(e);
    }
}

impl Fuzz {
    /// A plausible identity or named-file message (`sel` 240 and up).
    pub(super) fn plausible_identity(
        &mut self,
        t: usize,
        sel: u8,
        arg: u8,
        input: &mut Input<'_>,
    ) -> Option<()> {
        let conn = self.terminals[t].as_ref().map(|x| &x.id);
        let msg: Message<'static> = match (sel - 240) % 11 {
            0 => {
                let user = LOGIN_USERS[usize::from(arg & 0x7f) % LOGIN_USERS.len()];
                let right = USERS.iter().find(|(u, _)| *u == user).map(|(_, p)| *p);
                let password = match right {
                    Some(p) if arg & 0x80 == 0 => p,
                    _ => "hunter2",
                };
                Message::Login(Login { user, password })
            }
            1 => {
                let given = &self.ids.tokens;
                let token = if arg & 0x80 != 0 || given.is_empty() {
                    // Made up (never zero, which means "no token").
                    AuthToken([arg | 1; 16])
                } else {
                    given[usize::from(arg) % given.len()].0
                };
                Message::Authenticate(Authenticate { token })
            }
            2 => Message::TerminalAuth(TerminalAuth {
                terminal: TERMINAL_NAMES[usize::from(arg) % TERMINAL_NAMES.len()],
            }),
            3 => {
                let nonce = conn
                    .and_then(|c| c.nonces.last().copied())
                    .unwrap_or([0; 16]);
                // As the connection's role asks (or, with 0x40, as the
                // other role would: a key that must not open this door).
                let as_relay = conn.is_some_and(|c| c.relay_role) != (arg & 0x40 != 0);
                let mut mac = if as_relay {
                    relay_mac(&PEER_KEY, &nonce, PEER)
                } else {
                    terminal_mac(&TERMINAL_KEY, &nonce, TERMINAL)
                };
                if arg & 0x80 != 0 {
                    mac.0[usize::from(arg) % 20] ^= 1 | arg;
                }
                Message::ChallengeAnswer(ChallengeAnswer { mac })
            }
            4 => Message::Logout,
            5 => Message::NamedPut,
            6 => Message::FetchNamed(FetchNamed {
                owner: OWNERS[usize::from(arg) % OWNERS.len()],
                name: NAMED[usize::from(arg / 4) % NAMED.len()],
            }),
            7 => Message::ListNamed,
            8 => Message::RemoveNamed(RemoveNamed {
                name: NAMED[usize::from(arg) % NAMED.len()],
            }),
            9 => Message::ShareNamed(ShareNamed {
                name: NAMED[usize::from(arg) % NAMED.len()],
                with: GRANTEES[usize::from((arg >> 3) & 0x0f) % GRANTEES.len()],
                allow: arg & 0x80 == 0,
            }),
            _ => {
                // A read of the newest handle this connection was given
                // (or of another connection's, when `arg` says so: it
                // must not be served here).
                let own = conn.and_then(|c| c.handles.keys().next_back().copied());
                let other = self
                    .terminals
                    .iter()
                    .flatten()
                    .filter_map(|x| x.id.handles.keys().next_back().copied())
                    .next();
                let code = if arg & 0x80 != 0 { other } else { own };
                let code = code.or_else(|| Code::from_parts(13, u128::from(arg) << 40).ok())?;
                Message::Read(Read {
                    code,
                    file: u16::from(arg % 4),
                    offset: u64::from(input.u16()?),
                    len: u32::from(input.u16()?),
                })
            }
        };
        self.message(t, &msg);
        Some(())
    }

    /// Checks an identity or named-file message the relay sent terminal
    /// `t`; `known_batch` says whether a manifest's code is a batch's.
    pub(super) fn check_identity(
        &mut self,
        t: usize,
        msg: &Message<'_>,
        known_batch: bool,
        summary: &mut RelaySummary,
    ) {
        let Some(term) = self.terminals[t].as_mut() else {
            return;
        };
        let conn = &mut term.id;
        match msg {
            Message::Authenticated(a) => {
                let pos = conn
                    .expected
                    .iter()
                    .position(|e| {
                        e.user == a.user
                            && e.terminal == a.terminal
                            && (e.via == Via::Login) != a.token.is_none()
                    })
                    .unwrap_or_else(|| {
                        panic!(
                            "Authenticated {{ user: {:?}, terminal: {:?} }} to terminal {t}, \
                             which sent no credential for it that could be valid \
                             (unanswered: {:?})",
                            a.user, a.terminal, conn.expected
                        )
                    });
                let e = conn.expected.remove(pos);
                match e.via {
                    Via::Login => {
                        assert!(a.expires_at > 0, "a login's token never expires");
                        self.ids.tokens.push((a.token, e.user));
                    }
                    Via::Token => assert!(a.expires_at > 0, "a token with no expiry"),
                    Via::Terminal => assert_eq!(a.expires_at, 0, "a terminal's expiry"),
                    Via::Peer => assert_eq!(a.expires_at, 0, "a peer's expiry"),
                }
                conn.maybe_authenticated = true;
                summary.authenticated += 1;
            }
            Message::Challenge(c) => {
                assert!(
                    conn.terminal_auths > 0,
                    "a Challenge to terminal {t}, which sent no TerminalAuth for it"
                );
                conn.terminal_auths -= 1;
                conn.nonces.push(c.nonce);
            }
            Message::Manifest(m) => {
                conn.manifest = None;
                if !known_batch {
                    assert!(
                        conn.maybe_authenticated,
                        "a read handle's manifest to terminal {t}, which never authenticated"
                    );
                    assert_eq!(
                        m.expires_at,
                        u64::MAX,
                        "a read handle's manifest: named files do not expire"
                    );
                    summary.named_manifests += 1;
                    conn.manifest = Some(m.code);
                    conn.handles.insert(m.code, BTreeMap::new());
                }
            }
            Message::ManifestEntry(e) => {
                if let Some(code) = conn.manifest {
                    let files = conn.handles.entry(code).or_default();
                    files.insert(e.index, e.sha1);
                }
            }
            Message::Error(e) => match e.code {
                ErrorCode::RateLimited => summary.rate_limited += 1,
                ErrorCode::AuthFailed => summary.auth_failed += 1,
                _ => {}
            },
            _ => {}
        }
    }

    /// Checks data served for `code`, which is no batch's: it must be a
    /// read handle this connection was given, and the bytes the named
    /// content's.
    pub(super) fn check_named_data(
        &mut self,
        t: usize,
        code: Code,
        d: &pickup_proto::message::Data<'_>,
        summary: &mut RelaySummary,
    ) {
        let conn = &self.terminals[t].as_ref().expect("a connection").id;
        let files = conn.handles.get(&code).unwrap_or_else(|| {
            panic!("data for {code} to terminal {t}, which was given no such batch or handle")
        });
        let sha1 = files.get(&d.file).unwrap_or_else(|| {
            panic!(
                "data for file {} of handle {code}, whose manifest has no such entry",
                d.file
            )
        });
        let content = CONTENTS
            .iter()
            .find(|c| Sha1Digest::of(c) == *sha1)
            .expect("a named file whose content no terminal has");
        let start = d.offset as usize;
        assert!(
            !d.bytes.is_empty() && start + d.bytes.len() <= content.len(),
            "served {} bytes at {start} of a {}-byte named file",
            d.bytes.len(),
            content.len()
        );
        assert_eq!(
            d.bytes,
            &content[start..start + d.bytes.len()],
            "served wrong bytes of a named file"
        );
        summary.named_served += d.bytes.len() as u64;
    }
}

/// Identity and named-file operations (`sel` 240 + the request's number).
impl super::RelayScript {
    /// Terminal `t` logs in as ada (`user` 0), bob (1), carol (unknown, 2)
    /// or a hostile name (3..6), with the right password or not.
    pub fn login(&mut self, t: u8, user: u8, right: bool) -> &mut Self {
        let wrong = if right { 0 } else { 0x80 };
        self.say(t, 240, (user % 6) | wrong, &[])
    }

    /// Terminal `t` authenticates with the first token the relay gave
    /// (`known`) or a made-up one.
    pub fn authenticate(&mut self, t: u8, known: bool) -> &mut Self {
        self.say(t, 241, if known { 0 } else { 0x80 }, &[])
    }

    /// Terminal `t` names itself t1 (`known`) or t9.
    pub fn terminal_auth(&mut self, t: u8, known: bool) -> &mut Self {
        self.say(t, 242, if known { 0 } else { 1 }, &[])
    }

    /// Terminal `t` answers its last challenge as t1 would (as r1, on a
    /// relay-role connection), rightly or not.
    pub fn challenge_answer(&mut self, t: u8, right: bool) -> &mut Self {
        self.say(t, 243, if right { 0 } else { 0x80 }, &[])
    }

    /// Terminal `t` names itself r1, the peer relay.
    pub fn peer_auth(&mut self, t: u8) -> &mut Self {
        self.say(t, 242, 4, &[])
    }

    /// Terminal `t` answers its last challenge rightly, but as the other
    /// role would: r1's relay MAC on a terminal connection, t1's terminal
    /// MAC on a relay one.
    pub fn cross_answer(&mut self, t: u8) -> &mut Self {
        self.say(t, 243, 0x40, &[])
    }

    /// Terminal `t` logs out.
    pub fn logout(&mut self, t: u8) -> &mut Self {
        self.say(t, 244, 0, &[])
    }

    /// Terminal `t`'s next batch binds its names for its user.
    pub fn named_put(&mut self, t: u8) -> &mut Self {
        self.say(t, 245, 0, &[])
    }

    /// Terminal `t` fetches `owner`'s (0 ada, 1 bob, 2 carol) file `name`
    /// (0 a.bin, 1 b.txt, 2 empty, 3 notes, then hostile names).
    pub fn fetch_named(&mut self, t: u8, owner: u8, name: u8) -> &mut Self {
        self.say(t, 246, (name % 8) * 4 + owner % 4, &[])
    }

    /// Terminal `t` lists its user's names.
    pub fn list_named(&mut self, t: u8) -> &mut Self {
        self.say(t, 247, 0, &[])
    }

    /// Terminal `t` removes its user's file `name` (as in [`fetch_named`](Self::fetch_named)).
    pub fn remove_named(&mut self, t: u8, name: u8) -> &mut Self {
        self.say(t, 248, name % 8, &[])
    }

    /// Terminal `t` shares (`allow`) or stops sharing its file `name` with
    /// bob (`with` 0), terminal t1 (1), carol (2), t9 (3) or ada (4).
    pub fn share_named(&mut self, t: u8, name: u8, with: u8, allow: bool) -> &mut Self {
        let revoke = if allow { 0 } else { 0x80 };
        self.say(t, 249, ((with % 5) << 3) | (name % 8) | revoke, &[])
    }

    /// Terminal `t` reads `len` bytes of file `index` from `offset` through
    /// the newest read handle it was given.
    pub fn read_named(&mut self, t: u8, index: u8, offset: u16, len: u16) -> &mut Self {
        let [a, b] = offset.to_le_bytes();
        let [c, d] = len.to_le_bytes();
        self.say(t, 250, index % 4, &[a, b, c, d])
    }
}

#[cfg(test)]
mod tests {
    use super::super::{drive_relay, RelayScript};

    /// t1 is challenged; `right` says whether its answer is t1's MAC.
    fn terminal_answers(right: bool) -> RelayScript {
        let mut s = RelayScript::new(0xc3);
        s.connect(0).hello(0, 2).transmit(0);
        s.terminal_auth(0, true).transmit(0);
        s.challenge_answer(0, right).transmit(0);
        // One answer per challenge: the right one again finds none.
        s.challenge_answer(0, true).transmit(0);
        s
    }

    #[test]
    fn only_the_right_mac_authenticates_a_terminal() {
        let right = drive_relay(terminal_answers(true).bytes());
        assert_eq!(right.authenticated, 1, "{right:?}");
        let wrong = drive_relay(terminal_answers(false).bytes());
        assert_eq!(
            (wrong.authenticated, wrong.auth_failed),
            (0, 1),
            "{wrong:?}"
        );
    }

    #[test]
    fn a_handle_is_read_on_its_own_connection_only() {
        let mut s = RelayScript::new(3);
        s.connect(0).hello(0, 2).login(0, 0, true).transmit(0);
        s.named_put(0)
            .batch_open(0, 1, 6)
            .announce(0, 0, 1)
            .transmit(0);
        s.data(0, 0, 0, 6).transmit(0).timers().transmit(0);
        s.fetch_named(0, 0, 0).transmit(0);
        // Terminal 1 is ada too, and reads terminal 0's handle.
        s.connect(1).hello(1, 2).login(1, 0, true).transmit(1);
        let mut other = s.clone();
        s.read_named(0, 0, 0, 100).transmit(0);
        let own = drive_relay(s.bytes());
        assert_eq!(own.named_served, 6, "{own:?}");
        // `read_named` reads another connection's handle with arg bit 7.
        other.say(1, 250, 0x80, &[0, 0, 100, 0]).transmit(1);
        let theirs = drive_relay(other.bytes());
        assert_eq!(theirs.named_served, 0, "{theirs:?}");
    }

    #[test]
    fn mutated_identity_seeds_do_not_break_the_relay() {
        let mut rng = crate::sim::rng::SimRng::new(78);
        let seeds = crate::fuzz_seeds::all_relay_seeds();
        for s in seeds.iter().filter(|s| s.bytes.first() == Some(&0xc3)) {
            drive_relay(&s.bytes);
            for _ in 0..80 {
                let mut m = s.bytes.clone();
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(m.len() as u64) as usize;
                    m[i] = rng.next_u64() as u8;
                }
                drive_relay(&m);
            }
        }
    }
}
