//! Addressed delivery in the `relay_session` harness (PROTOCOL.md §11):
//! plausible `Push`, `DeliveryStatus`, `Listen`, `NoticeAck`, `Receipt`,
//! `NoticeRefuse` and `AllowSender` (ids the relay gave or forged ones),
//! a peer relay's `PeerPush` (PROTOCOL.md §12.1) for its users, doorbell
//! wakes, and the checks on what the relay answers and stores.
//!
//! The run's relay has short push deadlines and small caps (see
//! [`push_settings`]), so a few operations reach `Offline`, `Expired` and
//! `QueueFull`.
//!
//! Invariants:
//! - the store (read after every operation) holds deliveries only to the
//!   registered terminal t1, from ada, or from a sender an `AllowSender`
//!   named: bob, or a user of the peer r1 (`alice@r1`, and then only after
//!   a connection that answered r1's challenge sent a `PeerPush` for
//!   alice; a grant to the local bob or to `alice@r9` lets no user of r1
//!   through), and from a local user only after a connection that may act
//!   for that user sent a `Push`; a delivery is `Delivered` only after
//!   a `Receipt` of its id from a connection that answered t1's
//!   challenge, `Refused` only after such a `NoticeRefuse`, and a final
//!   state never changes;
//! - `Inbox` answers a `Listen` the connection sent, counts at most the
//!   per-terminal cap, and the notices that follow it list no delivery
//!   that was final (settled or expired) when that `Listen` was sent;
//! - a `Notice` goes only to a connection that sent `Listen` and answered
//!   t1's challenge, and says what the store says of its delivery (t1's,
//!   same code, sender, files and size);
//! - `Settled` answers a `Receipt` or `NoticeRefuse` of that id sent on
//!   the connection; `Delivery` answers a `Push`, `PeerPush` or
//!   `DeliveryStatus` and names t1.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use pickup_proto::code::Code;
use pickup_proto::message::{
    AllowSender, DeliveryState, DeliveryStatus, Message, NoticeAck, NoticeRefuse, PeerPush, Push,
    Receipt, RefuseReason,
};
use pickup_relay::codes::code_key;
use pickup_relay::mailbox::{DeliveryRecord, Mailbox, PushSettings};

use super::{Fuzz, Input, RelaySummary};

/// Whom a `Push` names: the terminal, an unknown one, a user, a hostile name.
const PUSH_TARGETS: [&str; 4] = ["t1", "t9", "ada", "../t1"];
/// Whom `AllowSender` names: a user, the owner, an unknown one, a hostile
/// name, a user of the peer r1, one of a relay not listed.
const SENDERS: [&str; 6] = ["bob", "ada", "carol", "../bob", "alice@r1", "alice@r9"];
/// Whom r1's `PeerPush` names as its sender: a user it may be allowed
/// for, users named as local ones are, a hostile name.
const REMOTE_USERS: [&str; 4] = ["alice", "bob", "ada", "../alice"];
/// The senders the store is read for: the users, and r1's users as the
/// relay names them.
const PUSHERS: [&str; 5] = ["ada", "bob", "alice@r1", "bob@r1", "ada@r1"];
const REASONS: [RefuseReason; 4] = [
    RefuseReason::TooLarge,
    RefuseReason::Sender,
    RefuseReason::NoSpace,
    RefuseReason::Declined,
];

/// The run's `[push]` settings: deadlines a few operations reach, caps a
/// few pushes pass.
pub(super) fn push_settings() -> PushSettings {
    PushSettings {
        confirm_deadline_secs: 60,
        offline_ttl_secs: 900,
        receiving_grace_secs: 30,
        max_open_per_terminal: 4,
        max_open_per_sender_terminal: 3,
        max_open_per_sender: 6,
        max_offline_bytes_per_sender: 2000,
    }
}

/// What one connection said and was told about notices.
#[derive(Debug, Default)]
pub(super) struct Conn {
    /// Per `Listen` sent and not yet answered by an `Inbox`: the ids that
    /// were final then, and the time (Unix seconds); oldest first (one
    /// refused or forgotten only weakens the check, as final sets only
    /// grow and time only passes).
    listens: VecDeque<(BTreeSet<u64>, u64)>,
    /// Notices still to come after the last `Inbox`, the ids they must
    /// not name and the time they must not have expired at.
    inbox_left: u16,
    inbox_final: BTreeSet<u64>,
    inbox_secs: u64,
    /// It sent `Listen`.
    listened: bool,
    /// It sent a right challenge answer of t1's.
    pub(super) may_be_terminal: bool,
    /// It sent a right challenge answer of r1's (as a relay).
    pub(super) may_be_peer: bool,
    /// The users it may act for (identity's `Conn::users`).
    pub(super) users: BTreeSet<String>,
    /// Notice ids it was sent, in order.
    seen: Vec<u64>,
    /// Ids of the `Receipt`s and `NoticeRefuse`s it sent.
    verdicts: BTreeSet<u64>,
    /// It sent a `Push`, `PeerPush` or `DeliveryStatus`.
    asked: bool,
}

/// What the run knows of deliveries, across connections and crashes.
#[derive(Debug, Default)]
pub(super) struct Book {
    /// Ids a connection that may be t1 sent a `Receipt` or `NoticeRefuse` for.
    receipts: BTreeSet<u64>,
    refusals: BTreeSet<u64>,
    /// Final deliveries seen in the store, with their state.
    finals: BTreeMap<u64, DeliveryState>,
    /// Every delivery id seen in the store or in a notice.
    ids: BTreeSet<u64>,
    /// Senders an `AllowSender` (allowing) was sent for.
    allowed: BTreeSet<String>,
    /// Users a connection that may act for them sent a `Push` as.
    pushed_as: BTreeSet<String>,
    /// r1's users a connection that may be r1 sent a `PeerPush` for, as
    /// the relay names them (`alice@r1`).
    peer_pushed: BTreeSet<String>,
}

/// Notes what a connection sends.
pub(super) fn note_sent(conn: &mut Conn, book: &mut Book, now_secs: u64, msg: &Message<'_>) {
    match msg {
        Message::Listen => {
            conn.listened = true;
            conn.listens
                .push_back((book.finals.keys().copied().collect(), now_secs));
        }
        Message::Receipt(r) => {
            conn.verdicts.insert(r.id);
            if conn.may_be_terminal {
                book.receipts.insert(r.id);
            }
        }
        Message::NoticeRefuse(r) => {
            conn.verdicts.insert(r.id);
            if conn.may_be_terminal {
                book.refusals.insert(r.id);
            }
        }
        Message::Push(_) => {
            conn.asked = true;
            book.pushed_as.extend(conn.users.iter().cloned());
        }
        Message::DeliveryStatus(_) => conn.asked = true,
        Message::PeerPush(p) => {
            conn.asked = true;
            if conn.may_be_peer {
                book.peer_pushed.insert(format!("{}@r1", p.sender));
            }
        }
        Message::AllowSender(a) if a.allow => {
            book.allowed.insert(a.sender.to_owned());
        }
        _ => {}
    }
}

impl Fuzz {
    /// A plausible addressed-delivery message, or a wake (`sel` 224..240).
    pub(super) fn plausible_notice(
        &mut self,
        t: usize,
        sel: u8,
        arg: u8,
        code: Code,
        input: &mut Input<'_>,
    ) -> Option<()> {
        let msg: Message<'static> = match (sel - 224) % 10 {
            // 234: the one selector past the ten below.
            0 if sel == 234 => Message::PeerPush(PeerPush {
                push_id: u64::from(input.byte()? % 8),
                code,
                terminal: PUSH_TARGETS[usize::from(arg >> 5) % PUSH_TARGETS.len()],
                sender: REMOTE_USERS[usize::from(input.byte()?) % REMOTE_USERS.len()],
            }),
            0 => Message::Push(Push {
                push_id: u64::from(input.byte()? % 8),
                code,
                terminal: PUSH_TARGETS[usize::from(arg >> 5) % PUSH_TARGETS.len()],
            }),
            1 => Message::DeliveryStatus(DeliveryStatus { code }),
            2 => Message::Listen,
            3 => Message::NoticeAck(NoticeAck {
                id: self.pick_id(t, arg),
            }),
            4 => Message::Receipt(Receipt {
                id: self.pick_id(t, arg),
            }),
            5 => Message::NoticeRefuse(NoticeRefuse {
                id: self.pick_id(t, arg),
                reason: REASONS[usize::from(input.byte()?) % REASONS.len()],
            }),
            6 => Message::AllowSender(AllowSender {
                sender: SENDERS[usize::from(arg & 0x7f) % SENDERS.len()],
                allow: arg & 0x80 == 0,
            }),
            k => {
                // The doorbell: 7 as a driver that checks it, 8 a wake
                // nobody rang for, 9 every session's rung bell.
                let now = self.now;
                for (i, term) in self.terminals.iter_mut().enumerate() {
                    let Some(term) = term.as_mut() else { continue };
                    let wake = match k {
                        7 => i == t && term.session.doorbell().rung(),
                        8 => i == t,
                        _ => term.session.doorbell().rung(),
                    };
                    if wake {
                        term.wait_for_input(&self.relay, now);
                        term.last_input = now;
                        term.session.handle_wake(now);
                    }
                }
                return Some(());
            }
        };
        self.message(t, &msg);
        Some(())
    }

    /// A notice id: one this connection was sent, one the store holds, or
    /// a forged one (`arg` bit 7: small ids hit other terminals' and
    /// settled deliveries, 0xff is the largest).
    fn pick_id(&self, t: usize, arg: u8) -> u64 {
        if arg & 0x80 != 0 {
            return match arg & 0x7f {
                0x7f => u64::MAX,
                n => u64::from(n),
            };
        }
        let seen = self.terminals[t]
            .as_ref()
            .map(|x| x.notices.seen.as_slice())
            .unwrap_or_default();
        if !seen.is_empty() {
            return seen[seen.len() - 1 - usize::from(arg) % seen.len()];
        }
        let ids: Vec<u64> = self.book.ids.iter().copied().collect();
        if ids.is_empty() {
            return 1;
        }
        ids[usize::from(arg) % ids.len()]
    }

    /// Every delivery in the store (of the codes the run knows).
    fn deliveries(&self) -> Vec<DeliveryRecord> {
        let mut all = Vec::new();
        for code in self.batches.keys() {
            for sender in PUSHERS {
                if let Ok(list) = self
                    .store
                    .deliveries_of(sender, &code_key(code), usize::MAX)
                {
                    all.extend(list);
                }
            }
        }
        all
    }

    /// Reads the store's deliveries after an operation and checks them.
    pub(super) fn check_deliveries(&mut self) {
        for d in self.deliveries() {
            assert_eq!(d.terminal, "t1", "a delivery to {:?}: {d:?}", d.terminal);
            assert!(
                d.sender == "ada" || self.book.allowed.contains(&d.sender),
                "a delivery from {} whom ada never allowed: {d:?}",
                d.sender
            );
            let (pushed, by) = if d.sender.contains('@') {
                (&self.book.peer_pushed, "r1")
            } else {
                (&self.book.pushed_as, "a connection that may act for them")
            };
            assert!(
                pushed.contains(&d.sender),
                "a delivery from {}, for whom {by} never pushed: {d:?}",
                d.sender
            );
            match d.state {
                DeliveryState::Delivered => assert!(
                    self.book.receipts.contains(&d.id),
                    "delivery {} is Delivered, but t1 sent no Receipt for it: {d:?}",
                    d.id
                ),
                DeliveryState::Refused => assert!(
                    self.book.refusals.contains(&d.id),
                    "delivery {} is Refused, but t1 sent no NoticeRefuse for it: {d:?}",
                    d.id
                ),
                _ => {}
            }
            if let Some(was) = self.book.finals.get(&d.id) {
                assert_eq!(*was, d.state, "final delivery {} changed: {d:?}", d.id);
            } else if d.state.is_final() {
                self.book.finals.insert(d.id, d.state);
            }
            self.book.ids.insert(d.id);
            // Offline files and the target's reads move the batch's expiry.
            if let Some(b) = self.batches.get_mut(&d.code) {
                b.expires_at = b.expires_at.max(d.until);
            }
        }
    }

    /// Checks an addressed-delivery message the relay sent terminal `t`.
    pub(super) fn check_notice(&mut self, t: usize, msg: &Message<'_>, summary: &mut RelaySummary) {
        let cap = self.settings.push.max_open_per_terminal;
        let stored = match msg {
            Message::Notice(n) => self.deliveries().into_iter().find(|d| d.id == n.id),
            _ => None,
        };
        let Some(term) = self.terminals[t].as_mut() else {
            return;
        };
        let conn = &mut term.notices;
        match msg {
            Message::Inbox(i) => {
                let Some((finals, secs)) = conn.listens.pop_front() else {
                    panic!("an Inbox to terminal {t}, which sent no Listen for it");
                };
                assert!(
                    u32::from(i.count) <= cap,
                    "an Inbox of {} notices: the cap is {cap}",
                    i.count
                );
                conn.inbox_left = i.count;
                conn.inbox_final = finals;
                conn.inbox_secs = secs;
                summary.inboxes += 1;
            }
            Message::Notice(n) => {
                assert!(
                    conn.listened && conn.may_be_terminal,
                    "a Notice to terminal {t}, which never listened as t1"
                );
                if conn.inbox_left > 0 {
                    conn.inbox_left -= 1;
                    assert!(
                        !conn.inbox_final.contains(&n.id),
                        "an Inbox lists notice {}, final when the terminal sent Listen",
                        n.id
                    );
                    assert!(
                        n.expires_at > conn.inbox_secs,
                        "an Inbox lists notice {}, expired at {} when the terminal sent Listen at {}",
                        n.id,
                        n.expires_at,
                        conn.inbox_secs
                    );
                }
                match stored {
                    Some(d) => {
                        assert_eq!(d.terminal, "t1", "a notice of another terminal's delivery");
                        assert!(
                            d.code == n.code
                                && d.sender == n.sender
                                && d.files == n.files
                                && d.total == n.total_size,
                            "notice {n:?} differs from its delivery {d:?}"
                        );
                    }
                    None => assert!(
                        self.book.ids.contains(&n.id),
                        "a notice of delivery {}, which the store never held",
                        n.id
                    ),
                }
                conn.seen.push(n.id);
                self.book.ids.insert(n.id);
                summary.notices += 1;
            }
            Message::Settled(s) => {
                assert!(
                    conn.verdicts.contains(&s.id),
                    "Settled {{ id: {} }} to terminal {t}, which sent no Receipt or NoticeRefuse for it",
                    s.id
                );
                summary.settled += 1;
            }
            Message::Delivery(d) => {
                assert!(
                    conn.asked,
                    "a Delivery to terminal {t}, which sent no Push, PeerPush or DeliveryStatus"
                );
                assert_eq!(d.terminal, "t1", "a delivery to {:?}", d.terminal);
                summary.deliveries += 1;
            }
            _ => {}
        }
    }
}

/// Addressed-delivery operations (`sel` 224 + the request's number).
impl super::RelayScript {
    /// Terminal `t` pushes the first batch the relay granted (`known`), or
    /// a code nobody was given, to t1 (`target` 0), t9 (1), ada (2) or a
    /// hostile name (3), as push `push_id` (below 8).
    pub fn push(&mut self, t: u8, known: bool, target: u8, push_id: u8) -> &mut Self {
        let code = if known { 0 } else { 7 };
        self.say(t, 224, ((target % 4) << 5) | code, &[push_id % 8])
    }

    /// Terminal `t` asks how the deliveries of the first batch stand.
    pub fn delivery_status(&mut self, t: u8) -> &mut Self {
        self.say(t, 225, 0, &[])
    }

    /// Terminal `t` listens for notices.
    pub fn listen(&mut self, t: u8) -> &mut Self {
        self.say(t, 226, 0, &[])
    }

    /// Terminal `t` acknowledges notice `id` (see [`receipt`](Self::receipt)).
    pub fn notice_ack(&mut self, t: u8, id: u8) -> &mut Self {
        self.say(t, 227, id, &[])
    }

    /// Terminal `t` confirms a notice: with `id` below 0x80 the newest it
    /// was sent but `id` (or one the store holds), else the forged id
    /// `id & 0x7f` (0xff: the largest).
    pub fn receipt(&mut self, t: u8, id: u8) -> &mut Self {
        self.say(t, 228, id, &[])
    }

    /// Terminal `t` refuses a notice (`id` as in [`receipt`](Self::receipt)).
    pub fn notice_refuse(&mut self, t: u8, id: u8) -> &mut Self {
        self.say(t, 229, id, &[3])
    }

    /// Terminal `t`'s user lets bob (`who` 0), itself (1), carol (2), a
    /// hostile name (3), r1's alice (4, `alice@r1`) or alice of the
    /// unlisted r9 (5) push to its terminals, or stops letting them.
    pub fn allow_sender(&mut self, t: u8, who: u8, allow: bool) -> &mut Self {
        let revoke = if allow { 0 } else { 0x80 };
        self.say(t, 230, (who % 6) | revoke, &[])
    }

    /// Terminal `t`'s driver checks its session's doorbell and wakes it if it rang.
    pub fn wake(&mut self, t: u8) -> &mut Self {
        self.say(t, 231, 0, &[])
    }

    /// Terminal `t` (a peer relay's connection) pushes the first batch
    /// the relay granted (`known`), or a code nobody was given, to a
    /// target as in [`push`](Self::push), for r1's user alice (`who` 0),
    /// bob (1), ada (2) or a hostile name (3), as push `push_id` (below 8).
    pub fn peer_push(&mut self, t: u8, known: bool, target: u8, who: u8, push_id: u8) -> &mut Self {
        let code = if known { 0 } else { 7 };
        self.say(t, 234, ((target % 4) << 5) | code, &[push_id % 8, who % 4])
    }
}

/// Script pieces for the seeds and tests.
impl super::RelayScript {
    /// Terminal `t` connects as t1: hello, `TerminalAuth`, the right answer.
    pub fn connect_as_t1(&mut self, t: u8) -> &mut Self {
        self.connect(t).hello(t, 2).transmit(t);
        self.terminal_auth(t, true).transmit(t);
        self.challenge_answer(t, true).transmit(t)
    }

    /// Terminal `t` uploads "pickup" (6 bytes) as a one-file batch, on the
    /// session as it stands (no second hello, which would forget a login).
    pub fn upload_small(&mut self, t: u8) -> &mut Self {
        self.batch_open(t, 1, 6).announce(t, 0, 1).transmit(t);
        self.data(t, 0, 0, 6).transmit(t).timers().transmit(t)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{drive_relay, RelayScript};

    /// t1 listens on connection 0; ada logs in on connection 1, uploads
    /// and pushes to t1; t1 is woken, downloads, and confirms.
    pub(crate) fn push_listen_receipt() -> RelayScript {
        let mut s = RelayScript::new(3);
        s.connect_as_t1(0).listen(0).transmit(0);
        s.connect(1).hello(1, 2).login(1, 0, true).transmit(1);
        s.upload_small(1);
        s.push(1, true, 0, 1).transmit(1);
        s.wake(0).transmit(0);
        s.notice_ack(0, 0).transmit(0);
        s.fetch(0, true).transmit(0).read(0, 0, 0, 100).transmit(0);
        s.receipt(0, 0).transmit(0);
        s.delivery_status(1).transmit(1);
        s
    }

    #[test]
    fn a_push_wakes_the_listener_and_its_receipt_delivers() {
        let summary = drive_relay(push_listen_receipt().bytes());
        assert_eq!(
            (
                summary.authenticated,
                summary.inboxes,
                summary.notices,
                summary.settled,
                summary.deliveries
            ),
            (2, 1, 1, 1, 2),
            "{summary:?}"
        );
    }

    /// ada lets r1's alice push to her terminals; r1 authenticates,
    /// uploads and pushes for alice (and for bob, whom ada allowed only
    /// as her relay's bob); t1 listens.
    pub(crate) fn peer_push_listen(allow_alice: bool) -> RelayScript {
        let mut s = RelayScript::new(3);
        s.connect(1).hello(1, 2).login(1, 0, true).transmit(1);
        s.allow_sender(1, 0, true).transmit(1);
        if allow_alice {
            s.allow_sender(1, 4, true).transmit(1);
        }
        s.peer_signs_in(0);
        s.upload_small(0);
        s.peer_push(0, true, 0, 0, 1)
            .peer_push(0, true, 0, 0, 1)
            .peer_push(0, true, 0, 1, 2)
            .transmit(0);
        s.connect_as_t1(2).listen(2).transmit(2);
        s
    }

    #[test]
    fn a_peers_push_reaches_t1_only_for_a_user_the_owner_allowed() {
        let allowed = drive_relay(peer_push_listen(true).bytes());
        // ada's login, r1 and t1 authenticated; alice's push and its
        // retry answered, bob@r1 refused; one notice.
        assert_eq!(
            (
                allowed.authenticated,
                allowed.deliveries,
                allowed.inboxes,
                allowed.notices
            ),
            (3, 2, 1, 1),
            "{allowed:?}"
        );
        let refused = drive_relay(peer_push_listen(false).bytes());
        assert_eq!((refused.deliveries, refused.notices), (0, 0), "{refused:?}");
    }

    #[test]
    fn forged_receipts_deliver_nothing() {
        let mut s = RelayScript::new(3);
        s.connect_as_t1(0).listen(0).transmit(0);
        s.connect(1).hello(1, 2).login(1, 0, true).transmit(1);
        s.upload_small(1);
        s.push(1, true, 0, 1).transmit(1);
        // A receipt from ada's session, then forged ids from t1's.
        s.receipt(1, 0).transmit(1);
        s.receipt(0, 0x85).receipt(0, 0xff).transmit(0);
        s.listen(0).transmit(0);
        let summary = drive_relay(s.bytes());
        assert_eq!(
            (summary.inboxes, summary.notices, summary.settled),
            (2, 1, 0),
            "{summary:?}"
        );
    }

    /// A 60-second code pushed, and t1 listening 61 s later, before any
    /// sweep: the notice of the expired batch is not in the inbox.
    #[test]
    fn an_inbox_lists_no_notice_whose_batch_expired_before_the_sweep() {
        let mut s = RelayScript::new(0x10 | 3);
        s.connect(1).hello(1, 2).login(1, 0, true).transmit(1);
        s.upload_small(1);
        s.push(1, true, 0, 1).transmit(1);
        s.advance_secs(61);
        s.connect_as_t1(0).listen(0).transmit(0);
        let summary = drive_relay(s.bytes());
        assert_eq!((summary.inboxes, summary.notices), (1, 0), "{summary:?}");
    }

    /// Found by the fuzzer: an unconfirmed delivery made its 60-second
    /// batch an offline file (kept 900 s); data read after the grant's
    /// expiry is served rightly, and the harness must not hold the
    /// grant's expiry against it.
    #[test]
    fn an_offline_file_is_served_past_its_grants_expiry() {
        let data = include_bytes!(
            "../../../fuzz/corpus/relay_session/regression-offline-file-served-past-grant-expiry"
        );
        let summary = drive_relay(data);
        assert_eq!(summary.served, 6, "{summary:?}");
    }

    #[test]
    fn mutated_notice_seeds_do_not_break_the_relay() {
        let mut rng = crate::sim::rng::SimRng::new(79);
        for base in [push_listen_receipt(), peer_push_listen(true)] {
            for _ in 0..300 {
                let mut m = base.bytes().to_vec();
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(m.len() as u64) as usize;
                    m[i] = rng.next_u64() as u8;
                }
                drive_relay(&m);
            }
        }
    }
}
