//! One request at a time over a fresh link: what the account and
//! named-file commands need (a login, a listing, a removal), which have
//! no bytes to move and nothing to resume; and what a relay asks a peer
//! relay beyond uploads (`PeerPush`, through `cli::dial::PeerSession`).
//!
//! ```text
//!   dial ──Hello{role}──► Welcome ──[authenticate]──► request ──► reply | Error
//! ```
//!
//! Every wait is bounded ([`REPLY_TIMEOUT`]); a relay that does not answer
//! is a link failure (exit code 4), an `Error` naming the request a refusal.

use std::time::{Duration, Instant};

use embedded_io::{Read, Write};
use pickup_proto::frame::Decoder;
use pickup_proto::identity::{relay_mac, terminal_mac, RelayIdentity, TerminalIdentity};
use pickup_proto::message::{
    AuthToken, Authenticate, ChallengeAnswer, DeliveryState, ForwardStatus, Hello, Kind, Message,
    Role, TerminalAuth,
};
use pickup_proto::{Code, ErrorCode, Sha1Digest, PROTOCOL_VERSION};

use crate::cli::addr::{RelayConnector, Relays};
use crate::cli::io::StdLink;
use crate::cli::{Exit, Failure, RX, TX};
use crate::link::{is_quiet, Connector};

/// Most deliveries of one code a status listing keeps.
const MAX_DELIVERIES: usize = 4096;

/// How long the relay may take to answer one request (a password check
/// costs it tens of milliseconds; a busy relay more).
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A relay's answer to one request, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Authenticated {
        user: String,
        terminal: String,
        token: AuthToken,
        expires_at: u64,
    },
    Challenge([u8; 16]),
    Done,
    /// A manifest and its entries.
    Listing(Vec<Listed>),
    /// Where one delivery stands (the answer to a `Push` or a `PeerPush`).
    Delivery(Delivered),
    /// The deliveries of a code (the answer to a `DeliveryStatus`).
    Deliveries(Vec<Delivered>),
    /// The id of a forward the relay stored (the answer to a `ForwardRequest`).
    ForwardAccepted(u64),
    /// Where a forward stands (the answer to a `ForwardWatch` or `ForwardRetry`).
    ForwardStatus(ForwardStatus),
}

/// A `Delivery` message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub push_id: u64,
    pub code: Code,
    pub terminal: String,
    pub state: DeliveryState,
    pub bytes: u64,
    pub total: u64,
    pub at: u64,
    pub until: u64,
}

impl Delivered {
    fn of(d: &pickup_proto::message::Delivery<'_>) -> Delivered {
        Delivered {
            push_id: d.push_id,
            code: d.code,
            terminal: d.terminal.to_string(),
            state: d.state,
            bytes: d.bytes,
            total: d.total,
            at: d.at,
            until: d.until,
        }
    }
}

/// One named file of a listing: name, size, SHA-1.
pub(crate) type Listed = (String, u64, Sha1Digest);

/// One open session with the relay.
pub(crate) struct Exchange {
    link: StdLink,
    decoder: Decoder<Vec<u8>>,
    peer_max_frame: usize,
    tx: Vec<u8>,
    rx: Vec<u8>,
    /// Bytes read and not yet fed to the decoder.
    pending: Vec<u8>,
    relay: String,
}

impl Exchange {
    /// Dials `addr` and opens a terminal's session (Hello, Welcome).
    pub fn open(addr: &Relays) -> Result<Exchange, Failure> {
        Exchange::open_as(addr, Role::Terminal)
    }

    /// Dials `addr` and opens a session whose `Hello` says `role`: a
    /// relay's session to a peer says [`Role::Relay`] and authenticates
    /// with [`Credential::Relay`].
    pub fn open_as(addr: &Relays, role: Role) -> Result<Exchange, Failure> {
        let mut connector: RelayConnector = addr.dial()?;
        let link = connector
            .connect()
            .map_err(|()| Failure::new(Exit::Link, "the link to the relay failed"))?;
        let mut ex = Exchange {
            link,
            decoder: Decoder::new(vec![0u8; RX]),
            peer_max_frame: pickup_proto::frame::MIN_FRAME_LEN,
            tx: vec![0u8; TX],
            rx: vec![0u8; 4096],
            pending: Vec::new(),
            relay: addr.canonical(),
        };
        ex.send(&Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            role,
            max_frame: RX as u32,
            window: 0,
            caps: 0,
        }))?;
        ex.await_reply(Kind::Hello, |m| match m {
            Message::Welcome(w) => Some(Ok(w.max_frame)),
            _ => None,
        })
        .map(|max| ex.peer_max_frame = (max as usize).max(pickup_proto::frame::MIN_FRAME_LEN))?;
        Ok(ex)
    }

    fn send(&mut self, msg: &Message<'_>) -> Result<(), Failure> {
        let n = msg
            .encode(self.peer_max_frame, &mut self.tx)
            .map_err(|_| Failure::new(Exit::Usage, "request too long for the relay's frames"))?;
        self.link
            .write_all(&self.tx[..n])
            .and_then(|()| self.link.flush())
            .map_err(|e| self.lost(&e.to_string()))
    }

    fn lost(&self, why: &str) -> Failure {
        Failure::new(
            Exit::Link,
            format!("the link to the relay at {} failed: {why}", self.relay),
        )
    }

    /// Reads frames until `pick` takes one (or an `Error` about `kind`
    /// arrives), within [`REPLY_TIMEOUT`].
    fn await_reply<T>(
        &mut self,
        kind: Kind,
        pick: impl FnMut(Message<'_>) -> Option<Result<T, ErrorCode>>,
    ) -> Result<T, Failure> {
        self.await_answer(kind, pick)?
            .map_err(|code| refusal(code, &self.relay))
    }

    /// [`await_reply`](Self::await_reply) with the relay's refusal as
    /// its code.
    fn await_answer<T>(
        &mut self,
        kind: Kind,
        pick: impl FnMut(Message<'_>) -> Option<Result<T, ErrorCode>>,
    ) -> Result<Result<T, ErrorCode>, Failure> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        self.await_until(kind, deadline, pick)?
            .ok_or_else(|| self.lost("no answer"))
    }

    /// [`await_answer`](Self::await_answer) until `deadline`: `None` if
    /// nothing came by then.
    fn await_until<T>(
        &mut self,
        kind: Kind,
        deadline: Instant,
        mut pick: impl FnMut(Message<'_>) -> Option<Result<T, ErrorCode>>,
    ) -> Result<Option<Result<T, ErrorCode>>, Failure> {
        loop {
            // Decode what is buffered first.
            let mut input: &[u8] = &self.pending;
            let mut verdict = None;
            while !input.is_empty() && verdict.is_none() {
                let Some(Ok(frame)) = self.decoder.feed(&mut input) else {
                    continue;
                };
                let Ok(msg) = Message::decode_from_relay(frame) else {
                    continue;
                };
                verdict = match msg {
                    Message::Error(e) if e.kind == kind as u8 => Some(Err(e.code)),
                    Message::Error(e) if e.kind == 0 && is_fatal(e.code) => Some(Err(e.code)),
                    other => pick(other),
                };
            }
            let used = self.pending.len() - input.len();
            self.pending.drain(..used);
            if let Some(v) = verdict {
                return Ok(Some(v));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            match self.link.read(&mut self.rx) {
                Ok(0) => return Err(self.lost("connection closed by the relay")),
                Ok(n) => self.pending.extend_from_slice(&self.rx[..n]),
                Err(e) if is_quiet(embedded_io::Error::kind(&e)) => {}
                Err(e) => return Err(self.lost(&e.to_string())),
            }
        }
    }

    /// Sends `msg` and waits for its reply.
    pub fn request(&mut self, msg: &Message<'_>) -> Result<Reply, Failure> {
        self.ask(msg)?.map_err(|code| refusal(code, &self.relay))
    }

    /// Sends `msg` and waits for its reply, or the relay's refusal as its
    /// code (a failed link is the `Err`).
    pub fn ask(&mut self, msg: &Message<'_>) -> Result<Result<Reply, ErrorCode>, Failure> {
        let kind = msg.kind();
        self.send(msg)?;
        let mut listing: Option<(usize, Vec<Listed>)> = None;
        let mut deliveries = Vec::new();
        self.await_answer(kind, |m| match m {
            Message::Delivery(d) if matches!(kind, Kind::Push | Kind::PeerPush) => {
                Some(Ok(Reply::Delivery(Delivered::of(&d))))
            }
            Message::Delivery(d) if kind == Kind::DeliveryStatus => {
                // Bounded by what one relay keeps per sender and code.
                if deliveries.len() < MAX_DELIVERIES {
                    deliveries.push(Delivered::of(&d));
                }
                None
            }
            Message::Done(d) if kind == Kind::DeliveryStatus && d.kind == kind as u8 => {
                Some(Ok(Reply::Deliveries(core::mem::take(&mut deliveries))))
            }
            Message::Authenticated(a) => Some(Ok(Reply::Authenticated {
                user: a.user.to_string(),
                terminal: a.terminal.to_string(),
                token: a.token,
                expires_at: a.expires_at,
            })),
            Message::Challenge(c) => Some(Ok(Reply::Challenge(c.nonce))),
            Message::ForwardAccepted(a)
                if matches!(kind, Kind::ForwardRequest | Kind::ForwardPush) =>
            {
                Some(Ok(Reply::ForwardAccepted(a.id)))
            }
            Message::ForwardStatus(s)
                if matches!(kind, Kind::ForwardWatch | Kind::ForwardRetry) =>
            {
                Some(Ok(Reply::ForwardStatus(s)))
            }
            Message::Done(d) if d.kind == kind as u8 => Some(Ok(Reply::Done)),
            Message::Manifest(m) if m.files == 0 => Some(Ok(Reply::Listing(Vec::new()))),
            Message::Manifest(m) => {
                listing = Some((usize::from(m.files), Vec::new()));
                None
            }
            Message::ManifestEntry(e) => {
                let (want, files) = listing.as_mut()?;
                files.push((e.name.to_string(), e.size, e.sha1));
                (files.len() == *want).then(|| Ok(Reply::Listing(core::mem::take(files))))
            }
            _ => None,
        })
    }

    /// The next `ForwardStatus` of a watch (`ForwardWatch` without
    /// `once`, answered already), if one comes within `wait`. A quiet
    /// relay is asked with a `Keepalive` so the session stays open.
    pub fn next_status(&mut self, wait: Duration) -> Result<Option<ForwardStatus>, Failure> {
        let status = self
            .await_until(Kind::ForwardWatch, Instant::now() + wait, |m| match m {
                Message::ForwardStatus(s) => Some(Ok(s)),
                _ => None,
            })?
            .transpose()
            .map_err(|code| refusal(code, &self.relay))?;
        if status.is_none() {
            self.send(&Message::Keepalive)?;
        }
        Ok(status)
    }

    /// Authenticates the session as a terminal, a peer relay or with a
    /// kept token; the user the session now acts for.
    pub fn authenticate(&mut self, who: &Credential) -> Result<String, Failure> {
        self.try_authenticate(who)?
            .map_err(|code| refusal(code, &self.relay))
    }

    /// [`authenticate`](Self::authenticate), with the relay's refusal as
    /// its code.
    pub fn try_authenticate(
        &mut self,
        who: &Credential,
    ) -> Result<Result<String, ErrorCode>, Failure> {
        let reply = match who {
            Credential::Token(token) => {
                self.ask(&Message::Authenticate(Authenticate { token: *token }))?
            }
            Credential::Terminal { name, key } | Credential::Relay { name, key } => {
                let nonce =
                    match self.ask(&Message::TerminalAuth(TerminalAuth { terminal: name }))? {
                        Ok(Reply::Challenge(nonce)) => nonce,
                        Ok(_) => {
                            return Err(Failure::new(Exit::Refused, "the relay sent no challenge"))
                        }
                        Err(code) => return Ok(Err(code)),
                    };
                let mac = match who {
                    Credential::Relay { .. } => relay_mac(key, &nonce, name),
                    _ => terminal_mac(key, &nonce, name),
                };
                self.ask(&Message::ChallengeAnswer(ChallengeAnswer { mac }))?
            }
        };
        match reply {
            Ok(Reply::Authenticated { user, .. }) => Ok(Ok(user)),
            Ok(_) => Err(Failure::new(
                Exit::Refused,
                "the relay did not authenticate",
            )),
            Err(code) => Ok(Err(code)),
        }
    }

    /// Ends the session politely.
    pub fn close(mut self) {
        let _ = self.send(&Message::Goodbye);
    }
}

/// How a command authenticates.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// The token of a `pickup login`.
    Token(AuthToken),
    /// A registered terminal and its device key.
    Terminal {
        name: String,
        key: pickup_proto::identity::DeviceKey,
    },
    /// A relay towards its peer: the name the peer lists it under and
    /// the key the two share (the session's `Hello` says `Role::Relay`).
    Relay {
        name: String,
        key: pickup_proto::identity::DeviceKey,
    },
}

impl Credential {
    /// As the protocol machines take it.
    pub fn as_proto(&self) -> pickup_proto::identity::Credential<'_> {
        match self {
            Credential::Token(token) => pickup_proto::identity::Credential::Token(*token),
            Credential::Terminal { name, key } => {
                pickup_proto::identity::Credential::Terminal(TerminalIdentity { name, key: *key })
            }
            Credential::Relay { name, key } => {
                pickup_proto::identity::Credential::Relay(RelayIdentity { name, key: *key })
            }
        }
    }
}

/// Errors with no request to name that end the session.
fn is_fatal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::IdleTimeout
    )
}

/// The one line for a refusal.
pub(crate) fn refusal(code: ErrorCode, relay: &str) -> Failure {
    let text = match code {
        ErrorCode::AuthFailed => {
            "authentication failed: wrong user name, password, token or key".to_string()
        }
        ErrorCode::UnknownKind => format!("the relay at {relay} has no accounts (it is older)"),
        ErrorCode::UnknownCode => "not found".to_string(),
        ErrorCode::AuthRequired => {
            format!("not logged in to {relay}: run `pickup login USER` first")
        }
        ErrorCode::UnknownPeer => {
            "unknown peer relay: the relay lists no peer of this name in its [[peers]]".to_string()
        }
        ErrorCode::UnknownTerminal => {
            "unknown terminal, or not one you may send to (its owner can allow you with `pickup allow`)"
                .to_string()
        }
        code => code.describe().to_string(),
    };
    let exit = match code {
        ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::IdleTimeout => Exit::Link,
        _ => Exit::Refused,
    };
    Failure::new(exit, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_what_to_do() {
        let f = refusal(ErrorCode::AuthRequired, "tcp://r:1");
        assert_eq!(f.exit, Exit::Refused);
        assert!(f.message.contains("pickup login"), "{}", f.message);
        assert_eq!(refusal(ErrorCode::Busy, "x").exit, Exit::Link);
        assert_eq!(refusal(ErrorCode::UnknownCode, "x").message, "not found");
    }
}
