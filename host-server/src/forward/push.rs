//! The push step of a push forward (`ForwardPush`, PROTOCOL.md §12.1):
//! once the peer verified the copy, this relay asks the peer, on a
//! session of its own in the relay role, to queue a push of the copy to
//! one of the peer's terminals.
//!
//! ```text
//!   dialler(peer) ── peer_session(RelayIdentity{name, key}) ──► Hello{role: Relay}, TerminalAuth, ChallengeAnswer
//!     ──► PeerPush{push_id, code: the peer's, terminal, sender: requester} ──► Delivery | Error{code}
//! ```
//!
//! The exchange is the CLI's request exchange
//! ([`pickup_device::cli::dial::PeerSession`]), as the copy is the CLI's
//! upload driver. The peer recognises a retry by the push id, so an
//! attempt whose answer was lost asks again and gets the same delivery.

use pickup_device::cli::dial::PeerError;
use pickup_proto::identity::RelayIdentity;
use pickup_proto::message::{DeliveryState, PeerPush};
use pickup_proto::ErrorCode;

use super::{dialler, ForwardError};
use crate::config::peers::PeerRelay;

/// What the push asks of the peer.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    /// The peer, as `[[peers]]` lists it.
    pub peer: &'a PeerRelay,
    /// The request's push id (the requester's, so the peer's retry key).
    pub push_id: u64,
    /// The peer's code for the copy.
    pub code: pickup_proto::Code,
    /// The terminal's registered name at the peer.
    pub terminal: &'a str,
    /// The user here who asked (the peer names them `user@our-name`).
    pub sender: &'a str,
}

/// Asks the peer to queue the push; the delivery's state there. Blocks
/// for at most a dial and two answers (each bounded by the exchange).
pub fn push(p: &Push<'_>) -> Result<DeliveryState, ForwardError> {
    let failed = |error| ForwardError::Push {
        peer: p.peer.name.clone(),
        error,
    };
    let dial = dialler(p.peer).map_err(|why| failed(PeerError::Link(why)))?;
    let mut session = dial
        .peer_session(RelayIdentity {
            name: &p.peer.name,
            key: p.peer.key,
        })
        .map_err(failed)?;
    let answer = session.peer_push(&PeerPush {
        push_id: p.push_id,
        code: p.code,
        terminal: p.terminal,
        sender: p.sender,
    });
    session.close();
    answer.map_err(failed)
}

/// Why a push failed, and whether another attempt may help: a lost link
/// and a peer that is busy, stopping or not ready yet may pass; a refusal
/// about the terminal, the copy, the sender or this relay's key will not.
pub fn reason(e: &PeerError) -> (ErrorCode, bool) {
    match e {
        PeerError::Link(_) => (ErrorCode::PeerUnreachable, true),
        PeerError::Refused(code) => (
            *code,
            super::peer_state_may_pass(*code) || *code == ErrorCode::NotReady,
        ),
    }
}
