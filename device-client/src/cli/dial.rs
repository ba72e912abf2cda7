//! Dialling a relay exactly as `pickup` does, for other programs that
//! drive an [`Uploader`](crate::Uploader): the relay's forwarder
//! (`pickup_relay::forward`) uploads to a peer relay over the same TCP and
//! TLS links, with the same certificate rules (`--ca`, `--pin`) and the
//! same session tuning as `pickup send`, so a fix to either reaches both.
//!
//! ```text
//!   RelayDial::new("tls://b.example:7426", PeerTrust::Pin(..))
//!     ── dial() ──► Dialled (a Connector whose first link is up) ──► Uploader::run
//!     ── upload_config() ─► upload::Config (frame size, length-prefixed framing)
//!     ── peer_session(RelayIdentity) ──► PeerSession (Hello{role: Relay}, authenticated)
//!          ── peer_push(PeerPush) ──► Delivery state | the peer's ErrorCode
//! ```
//!
//! A [`PeerSession`] is the CLI's request exchange (the one `pickup
//! login` and `pickup send --to` talk over) opened in the relay role: one
//! request at a time, each answer awaited at most 20 s.

use std::io;
use std::path::PathBuf;

use pickup_proto::identity::RelayIdentity;
use pickup_proto::message::{DeliveryState, Message, PeerPush, Role};
use pickup_proto::{upload, ErrorCode};

use super::account::{Credential, Exchange, Reply};
use super::addr::{RelayConnector, Relays};
use super::io::StdLink;
use super::tls::{Pin, Trust};
use crate::link::Connector;

/// The largest frame the CLI's sessions accept: the `RX` of an
/// [`Uploader`](crate::Uploader) that dials with [`RelayDial`].
pub const RX: usize = super::RX;
/// The encode buffer for frames up to [`RX`]: the matching `TX`.
pub const TX: usize = super::TX;

/// How a `tls://` relay's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTrust {
    /// The system's roots, and the host name checked.
    Roots,
    /// The CA certificates of this PEM file, and the host name checked.
    Ca(PathBuf),
    /// Exactly the certificate whose DER encoding has this SHA-256.
    Pin([u8; 32]),
}

/// One relay address (`tcp://HOST:PORT`, `HOST:PORT` or `tls://HOST:PORT`)
/// with the trust for its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayDial {
    relays: Relays,
}

impl RelayDial {
    /// Reads `addr` as `--relay` does; `ca` and `pin` are refused for an
    /// address that is not `tls://`, as `--ca` and `--pin` are.
    pub fn new(addr: &str, trust: PeerTrust) -> Result<RelayDial, String> {
        let trust = match trust {
            PeerTrust::Roots => Trust::Roots,
            PeerTrust::Ca(path) => Trust::Ca(path),
            PeerTrust::Pin(digest) => Trust::Pin(Pin(digest)),
        };
        Ok(RelayDial {
            relays: Relays::parse(addr)?.with_trust(trust)?,
        })
    }

    /// A connector whose first link is up, or the one-line reason it is
    /// not (unreachable, TLS not trusted, unusable CA file).
    pub fn dial(&self) -> Result<Dialled, String> {
        self.relays
            .dial()
            .map(Dialled)
            .map_err(|failure| failure.message)
    }

    /// The session tuning `pickup send` uses for this address.
    pub fn upload_config(&self) -> upload::Config {
        self.relays.upload_config()
    }

    /// The address as `pickup` spells it in messages.
    pub fn canonical(&self) -> String {
        self.relays.canonical()
    }

    /// Dials the relay and authenticates as its peer relay `me`.
    pub fn peer_session(&self, me: RelayIdentity<'_>) -> Result<PeerSession, PeerError> {
        let mut ex = Exchange::open_as(&self.relays, Role::Relay).map_err(PeerError::link)?;
        let who = Credential::Relay {
            name: me.name.to_owned(),
            key: me.key,
        };
        match ex.try_authenticate(&who).map_err(PeerError::link)? {
            Ok(_) => Ok(PeerSession(ex)),
            Err(code) => Err(PeerError::Refused(code)),
        }
    }
}

/// Why a request to a peer relay got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// The peer could not be reached, the link failed, or it did not
    /// answer in time: one line saying which.
    Link(String),
    /// The peer refused (authentication or the request): its code.
    Refused(ErrorCode),
}

impl PeerError {
    fn link(f: super::Failure) -> PeerError {
        PeerError::Link(f.message)
    }
}

impl core::fmt::Display for PeerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PeerError::Link(why) => f.write_str(why),
            PeerError::Refused(code) => write!(f, "refused: {code}"),
        }
    }
}

/// An authenticated session with a peer relay, in the relay role
/// ([`RelayDial::peer_session`]).
pub struct PeerSession(Exchange);

impl PeerSession {
    /// Asks the peer to push its batch to one of its terminals; the
    /// delivery's state there (a retry with the same push id answers the
    /// same delivery).
    pub fn peer_push(&mut self, push: &PeerPush<'_>) -> Result<DeliveryState, PeerError> {
        match self
            .0
            .ask(&Message::PeerPush(*push))
            .map_err(PeerError::link)?
        {
            Ok(Reply::Delivery(d)) => Ok(d.state),
            Ok(_) => Err(PeerError::Link("the peer sent no delivery".into())),
            Err(code) => Err(PeerError::Refused(code)),
        }
    }

    /// Ends the session politely.
    pub fn close(self) {
        self.0.close();
    }
}

impl core::fmt::Debug for PeerSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PeerSession")
    }
}

/// The links to a dialled relay: the first one, then a fresh one per
/// reconnect (see [`Connector`]).
pub struct Dialled(RelayConnector);

impl Dialled {
    /// Why the latest reconnect failed, if one did.
    pub fn last_error(&self) -> Option<&io::Error> {
        self.0.last_error.as_ref()
    }
}

impl core::fmt::Debug for Dialled {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Dialled").field(&self.0.current()).finish()
    }
}

/// The link a [`Dialled`] connector hands out.
pub struct DialledLink(StdLink);

impl embedded_io::ErrorType for DialledLink {
    type Error = io::Error;
}

impl embedded_io::Read for DialledLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, io::Error> {
        self.0.read(buf)
    }
}

impl embedded_io::Write for DialledLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, io::Error> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> Result<(), io::Error> {
        self.0.flush()
    }
}

impl Connector for Dialled {
    type IoError = io::Error;
    type Link<'a> = DialledLink;
    type ConnectError = ();

    fn connect(&mut self) -> Result<DialledLink, ()> {
        self.0.connect().map(DialledLink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_trust_read_as_the_clis_relay_ca_and_pin() {
        let tcp = RelayDial::new("tcp://127.0.0.1:7425", PeerTrust::Roots).unwrap();
        assert_eq!(tcp.canonical(), "tcp://127.0.0.1:7425");
        assert!(tcp.upload_config().length_prefix);
        assert_eq!(tcp.upload_config().max_frame, RX as u32);
        let pinned = RelayDial::new("tls://relay-b.example:7426", PeerTrust::Pin([1; 32]));
        assert_eq!(pinned.unwrap().canonical(), "tls://relay-b.example:7426");
        // As `--pin` with a tcp:// relay: refused, not ignored.
        let e = RelayDial::new("tcp://127.0.0.1:7425", PeerTrust::Pin([1; 32])).unwrap_err();
        assert!(e.contains("tls://"), "{e}");
        assert!(RelayDial::new("tcp://", PeerTrust::Roots).is_err());
    }

    #[test]
    fn an_unreachable_relay_is_one_line_naming_it() {
        // Port 1 on loopback: nothing listens (connection refused).
        let e = RelayDial::new("127.0.0.1:1", PeerTrust::Roots)
            .unwrap()
            .dial()
            .unwrap_err();
        assert!(e.contains("127.0.0.1:1") && !e.contains('\n'), "{e}");
    }
}
