//! Pushes from users of peer relays (PROTOCOL.md §12.1): a peer relay's
//! `PeerPush` on its relay-role session, and the remote sender names
//! (`user@relay`) an owner allows with `AllowSender`.
//!
//! ```text
//!   PeerPush ──(a listed peer authenticated? sender a name?)──► as Push (notices.rs),
//!       from `sender@relay` ──► job: retry? terminal? owner allows `sender@relay`? batch? caps? ──► Delivery | Error{…, PeerPush}
//!   AllowSender{user@relay} ──(relay listed, user a name?)──► as AllowSender (notices.rs) | Error{UnknownPeer}
//! ```
//!
//! The relay in the name is the `[[peers]]` name the asking relay
//! authenticated under, never one it says: a peer speaks only for its own
//! users. Account names hold no `@`, so a remote sender never owns a
//! terminal here nor passes for a local user; only its owner's grant
//! lets its push through, and its caps are its own.

use pickup_proto::message::{Kind, PeerPush};
use pickup_proto::{ErrorCode, Instant};

use super::Session;
use crate::directory::{remote_sender, split_remote_sender, validate_account_name};
use crate::metrics::PushResult;

impl Session {
    pub(super) fn on_peer_push(&mut self, now: Instant, p: PeerPush<'_>) {
        let Some(relay) = self.identity.as_ref().and_then(|i| i.peer.clone()) else {
            return self.out.error(ErrorCode::AuthRequired, Kind::PeerPush);
        };
        // No grant can name a sender that is no user name, so it may push
        // to no terminal: the answer to a sender without a grant, and
        // nothing about the terminal is told.
        if validate_account_name(p.sender).is_err() {
            return self.push_refused(
                Kind::PeerPush,
                PushResult::UnknownTerminal,
                ErrorCode::UnknownTerminal,
            );
        }
        let sender = remote_sender(p.sender, &relay);
        self.start_push(now, Kind::PeerPush, sender, p.push_id, p.code, p.terminal);
    }

    /// Whether `name` is `user@relay` with `relay` a peer this relay
    /// lists: a sender that may be allowed. Any other name with an `@`
    /// could never push here.
    pub(super) fn names_a_peer_user(&self, name: &str) -> bool {
        split_remote_sender(name)
            .is_some_and(|(_, relay)| self.relay.settings.peers.get(relay).is_some())
    }
}
