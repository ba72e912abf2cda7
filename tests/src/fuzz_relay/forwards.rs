//! Forwarding in the `relay_session` harness (PROTOCOL.md §12): plausible
//! `ForwardRequest` (to the run's peer r1 or to one it does not list),
//! `ForwardWatch` (once or watching) and `ForwardRetry`, for ids the relay
//! gave or forged ones. No forwarder runs: forwards stay queued, which is
//! what the session sees of them until one runs.
//!
//! Invariants:
//! - a `ForwardAccepted` or `ForwardStatus` goes only to a connection that
//!   sent a forward request, watch or retry, and names a stored forward
//!   whose requester the connection authenticated as (only the requester
//!   sees a forward);
//! - the store holds forwards only to r1, of batches that were complete.

use std::collections::BTreeSet;

use pickup_proto::code::Code;
use pickup_proto::message::{ForwardRequest, ForwardRetry, ForwardWatch, Message};
use pickup_relay::store::Forwards;

use super::{Fuzz, RelayScript, RelaySummary};

/// Whom a `ForwardRequest` names: the run's peer, one it does not list.
const PEERS: [&str; 2] = ["r1", "r9"];

/// What one connection said and was told about forwards.
#[derive(Debug, Default)]
pub(super) struct Conn {
    /// Forward requests, watches and retries sent (answers may be cleared
    /// from the outbox by a repeated `Hello`: that only weakens the check).
    asked: u32,
    /// Users the relay said the connection acts for, ever.
    users: BTreeSet<String>,
}

/// Forward ids the relay gave, across connections and crashes.
#[derive(Debug, Default)]
pub(super) struct Book {
    ids: Vec<u64>,
}

/// Notes what a terminal sent.
pub(super) fn note_sent(conn: &mut Conn, msg: &Message<'_>) {
    if matches!(
        msg,
        Message::ForwardRequest(_) | Message::ForwardWatch(_) | Message::ForwardRetry(_)
    ) {
        conn.asked += 1;
    }
}

impl Fuzz {
    /// A plausible forward message (selectors 251..=255).
    pub(super) fn plausible_forward(&mut self, t: usize, sel: u8, arg: u8, code: Code) {
        let ids = &self.forwards.ids;
        let id = if arg & 0x80 != 0 || ids.is_empty() {
            // Made up (or another user's: the relay must not tell).
            u64::from(arg & 0x7f) + 1
        } else {
            ids[usize::from(arg) % ids.len()]
        };
        let msg = match sel - 251 {
            0 | 1 => Message::ForwardRequest(ForwardRequest {
                code,
                peer: PEERS[usize::from(sel - 251)],
            }),
            2 => Message::ForwardWatch(ForwardWatch { id, once: true }),
            3 => Message::ForwardWatch(ForwardWatch { id, once: false }),
            _ => Message::ForwardRetry(ForwardRetry { id }),
        };
        self.message(t, &msg);
    }

    /// Checks a forward message the relay sent terminal `t`.
    pub(super) fn check_forward(
        &mut self,
        t: usize,
        msg: &Message<'_>,
        summary: &mut RelaySummary,
    ) {
        if let Message::Authenticated(a) = msg {
            if let Some(term) = self.terminals[t].as_mut() {
                term.forwards.users.insert(a.user.to_owned());
            }
            return;
        }
        let id = match msg {
            Message::ForwardAccepted(a) => {
                self.forwards.ids.push(a.id);
                a.id
            }
            Message::ForwardStatus(s) => s.id,
            _ => return,
        };
        summary.forward_answers += 1;
        let stored = self
            .store
            .forward(id)
            .expect("the memory store answers")
            .unwrap_or_else(|| panic!("forward {id} named to terminal {t} is not stored"));
        assert_eq!(
            stored.peer, "r1",
            "a forward to a peer the relay does not list"
        );
        let Some(term) = self.terminals[t].as_ref() else {
            return;
        };
        assert!(
            term.forwards.asked > 0,
            "forward {id} named to terminal {t}, which asked nothing about forwards"
        );
        assert!(
            term.forwards.users.contains(&stored.requester),
            "forward {id} of {:?} shown to terminal {t}, which acted for {:?}",
            stored.requester,
            term.forwards.users
        );
    }
}

impl RelayScript {
    /// Terminal `t` asks to forward the first batch (`known`) or an
    /// unknown code to r1 (`listed`) or to r9.
    pub fn forward_request(&mut self, t: u8, known: bool, listed: bool) -> &mut Self {
        self.say(
            t,
            if listed { 251 } else { 252 },
            if known { 0 } else { 7 },
            &[],
        )
    }

    /// Terminal `t` asks for the status of the `n`-th forward the relay
    /// gave (`known`) or of a made-up id, `once` or watching.
    pub fn forward_watch(&mut self, t: u8, n: u8, known: bool, once: bool) -> &mut Self {
        let arg = if known { n & 0x7f } else { 0x80 | n };
        self.say(t, if once { 253 } else { 254 }, arg, &[])
    }

    /// Terminal `t` retries the `n`-th forward the relay gave.
    pub fn forward_retry(&mut self, t: u8, n: u8) -> &mut Self {
        self.say(t, 255, n & 0x7f, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::super::{drive_relay, RelayScript};

    #[test]
    fn a_scripted_forward_reaches_the_checks() {
        let mut s = RelayScript::new(3);
        s.connect(0).hello(0, 2).login(0, 0, true).transmit(0);
        s.upload_small(0);
        s.forward_request(0, true, true)
            .forward_request(0, true, false)
            .forward_request(0, false, true)
            .transmit(0);
        s.forward_watch(0, 0, true, true)
            .forward_watch(0, 0, true, false)
            .forward_retry(0, 0)
            .transmit(0);
        s.connect(1).hello(1, 2).login(1, 1, true).transmit(1);
        s.forward_watch(1, 0, true, true).transmit(1);
        let summary = drive_relay(s.bytes());
        // Accepted, two statuses and the retry's status; bob sees nothing.
        assert_eq!(summary.forward_answers, 4, "{summary:?}");
    }
}
