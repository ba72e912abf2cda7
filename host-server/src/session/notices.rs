//! Addressed delivery on a session (PROTOCOL.md §11): `Push`,
//! `DeliveryStatus`, `Listen` and the notices that follow it, `NoticeAck`,
//! `Receipt`, `NoticeRefuse`, `AllowSender`, and the target's download
//! progress. A peer relay's `PeerPush` (PROTOCOL.md §12.1) is decided in
//! `peer_push.rs` and then runs as a `Push`.
//!
//! ```text
//!   Push ──(user? name? limiter?)──► job: retry? directory? batch? caps? store ──► Delivery | Error
//!   PeerPush ──(peer relay? sender?)──► as Push, from `user@relay` (peer_push.rs)
//!   DeliveryStatus ──► job ──► Delivery ×n, Done
//!   Listen ──(terminal?)──► register as the terminal's listener; job ──► Inbox{n}, Notice ×n
//!   doorbell (a push committed) ──► handle_wake ──► job: notices above the last sent ──► Notice ×k
//!   NoticeAck ──► job (no answer)        Receipt / NoticeRefuse ──► job ──► Settled | UnknownNotice
//!   Data sent as the target ──► Progress ──(≤ once a second, and at the end)──► job   (progress.rs)
//! ```
//!
//! Every store access is a job; this file only decides and answers.

use std::collections::VecDeque;
use std::sync::Arc;

use pickup_proto::message::{
    self, AllowSender, Delivery, DeliveryStatus, Inbox, Kind, Message, Notice, NoticeAck,
    NoticeRefuse, Push, Receipt,
};
use pickup_proto::{ErrorCode, Instant};

use super::progress::Progress;
use super::{Out, Phase, Session};
use crate::directory::{validate_account_name, DirectoryError};
use crate::jobs::{NoticeDone, NoticeWork, PushAnswer, PushWork, Work};
use crate::mailbox::{DeliveryRecord, Doorbell, PushRefusal, Pushed, Settle, Settled};
use crate::metrics::{DeliveryOutcome, PushResult};
use crate::relay::unix_secs;
use crate::store::StoreError;

/// The notices side of a session.
#[derive(Debug)]
pub(super) struct Notices {
    /// Rung when a push to this session's terminal is committed.
    pub(super) bell: Arc<Doorbell>,
    /// The terminal this session listens for (it sent `Listen`).
    listening: Option<String>,
    /// The highest notice id this session sent: a wake loads those above.
    newest_sent: u64,
    /// A wake's load is queued or running; `reload`: another wake came
    /// meanwhile.
    loading: bool,
    reload: bool,
    pub(super) progress: Progress,
}

impl Notices {
    pub(super) fn new() -> Notices {
        Notices {
            bell: Arc::new(Doorbell::default()),
            listening: None,
            newest_sent: 0,
            loading: false,
            reload: false,
            progress: Progress::default(),
        }
    }
}

impl Session {
    /// The doorbell a push to this session's terminal rings: a driver
    /// waits on it (or checks it) and then calls
    /// [`handle_wake`](Self::handle_wake).
    pub fn doorbell(&self) -> Arc<Doorbell> {
        self.notices.bell.clone()
    }

    /// The doorbell rang: if this session still listens for its
    /// terminal, it loads the notices it has not sent yet (by a job); if
    /// it watches a forward, its status (PROTOCOL.md §12).
    pub fn handle_wake(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if self.phase == Phase::Open {
            self.wake_watch(now);
        }
        let Some(terminal) = self.notices.listening.clone() else {
            return;
        };
        if self.phase != Phase::Open {
            return;
        }
        if !self.relay.is_listening(&terminal, self.id) {
            // A newer Listen of the terminal took the live notices over.
            self.notices.listening = None;
            return;
        }
        if self.notices.loading {
            self.notices.reload = true;
            return;
        }
        self.notices.loading = true;
        self.work.push(Work::Notice(NoticeWork::Load {
            terminal,
            after: self.notices.newest_sent,
            listen: false,
        }));
    }

    /// This session no longer listens (it logged out, or now acts for
    /// someone else).
    pub(super) fn stop_listening(&mut self) {
        if let Some(t) = self.notices.listening.take() {
            self.relay.stop_listening(&t, self.id);
        }
    }

    /// The session's terminal, or the `AuthRequired` refusal of `kind`.
    fn terminal_or_refuse(&mut self, kind: Kind) -> Option<String> {
        match self.identity.as_ref().and_then(|i| i.terminal.clone()) {
            Some(t) => Some(t),
            None => {
                self.out.error(ErrorCode::AuthRequired, kind);
                None
            }
        }
    }

    /// Refuses a push (`kind`: `Push` or `PeerPush`), counted as `r`.
    pub(super) fn push_refused(&mut self, kind: Kind, r: PushResult, code: ErrorCode) {
        self.relay.metrics().push(r);
        self.out.error(code, kind);
    }

    pub(super) fn on_push(&mut self, now: Instant, p: Push<'_>) {
        let Some(sender) = self.identity.as_ref().map(|i| i.user.clone()) else {
            return self.out.error(ErrorCode::AuthRequired, Kind::Push);
        };
        self.start_push(now, Kind::Push, sender, p.push_id, p.code, p.terminal);
    }

    /// A push of `code` to `terminal` by `sender`, answered as `kind`:
    /// what `Push` and a peer relay's `PeerPush` (`peer_push.rs`) share
    /// once the sender is known.
    pub(super) fn start_push(
        &mut self,
        now: Instant,
        kind: Kind,
        sender: String,
        push_id: u64,
        code: pickup_proto::Code,
        terminal: &str,
    ) {
        if validate_account_name(terminal).is_err() {
            return self.push_refused(
                kind,
                PushResult::UnknownTerminal,
                ErrorCode::UnknownTerminal,
            );
        }
        // The code is looked up: a push is one more way to guess codes.
        if let Err(wait) = self.relay.check_lookup(&self.peer, now) {
            return self.out.error_retry(ErrorCode::RateLimited, kind, wait);
        }
        self.work.push(Work::Push(PushWork {
            kind,
            sender,
            push_id,
            code,
            terminal: terminal.to_owned(),
            now_secs: unix_secs(now),
        }));
    }

    pub(super) fn on_pushed(&mut self, push: &PushWork, answer: PushAnswer) {
        let kind = push.kind;
        let pushed = match answer {
            PushAnswer::Stored(p) => p,
            PushAnswer::UnknownTerminal => {
                return self.push_refused(
                    kind,
                    PushResult::UnknownTerminal,
                    ErrorCode::UnknownTerminal,
                )
            }
            PushAnswer::Failed => {
                return self.push_refused(kind, PushResult::Failed, ErrorCode::Internal)
            }
        };
        let (d, result) = match pushed {
            Pushed::Queued(d) => (d, PushResult::Queued),
            Pushed::Again(d) => (d, PushResult::Retried),
            Pushed::Refused(why) => {
                let (r, code) = match why {
                    PushRefusal::UnknownCode => (PushResult::UnknownCode, ErrorCode::UnknownCode),
                    PushRefusal::Expired => (PushResult::Expired, ErrorCode::Expired),
                    PushRefusal::NotReady => (PushResult::NotReady, ErrorCode::NotReady),
                    PushRefusal::Full(cap) => {
                        tracing::info!(session = self.id, sender = %push.sender, terminal = %push.terminal, ?cap, "push refused: queue full");
                        (PushResult::QueueFull, ErrorCode::QueueFull)
                    }
                };
                if matches!(why, PushRefusal::UnknownCode | PushRefusal::Expired) {
                    self.relay.failed_lookup(&self.peer, self.clock);
                }
                return self.push_refused(kind, r, code);
            }
        };
        self.relay.metrics().push(result);
        self.out.push(Out::Deliveries(VecDeque::from([d])));
    }

    pub(super) fn on_delivery_status(&mut self, s: DeliveryStatus) {
        let Some(sender) = self.identity.as_ref().map(|i| i.user.clone()) else {
            return self
                .out
                .error(ErrorCode::AuthRequired, Kind::DeliveryStatus);
        };
        self.work.push(Work::Notice(NoticeWork::Status {
            sender,
            code: s.code,
        }));
    }

    pub(super) fn on_listen(&mut self) {
        let Some(terminal) = self.terminal_or_refuse(Kind::Listen) else {
            return;
        };
        // The newest Listen of a terminal gets its live notices.
        self.relay
            .listen(&terminal, self.id, self.notices.bell.clone());
        self.notices.listening = Some(terminal.clone());
        self.started = true;
        self.work.push(Work::Notice(NoticeWork::Load {
            terminal,
            after: 0,
            listen: true,
        }));
    }

    pub(super) fn on_notice_ack(&mut self, now: Instant, a: NoticeAck) {
        // Not answered (PROTOCOL.md §11), not even refused: a session
        // with no terminal has nothing to acknowledge.
        let Some(terminal) = self.identity.as_ref().and_then(|i| i.terminal.clone()) else {
            return;
        };
        self.work.push(Work::Notice(NoticeWork::Ack {
            terminal,
            id: a.id,
            now_secs: unix_secs(now),
        }));
    }

    pub(super) fn on_settle(&mut self, now: Instant, id: u64, how: Settle) {
        let kind = match how {
            Settle::Receipt => Kind::Receipt,
            Settle::Refuse => Kind::NoticeRefuse,
        };
        let Some(terminal) = self.terminal_or_refuse(kind) else {
            return;
        };
        self.work.push(Work::Notice(NoticeWork::Settle {
            terminal,
            id,
            how,
            now_secs: unix_secs(now),
        }));
    }

    pub(super) fn on_receipt(&mut self, now: Instant, r: Receipt) {
        self.on_settle(now, r.id, Settle::Receipt);
    }

    pub(super) fn on_notice_refuse(&mut self, now: Instant, r: NoticeRefuse) {
        tracing::debug!(session = self.id, id = r.id, reason = ?r.reason, "notice refused");
        self.on_settle(now, r.id, Settle::Refuse);
    }

    pub(super) fn on_allow_sender(&mut self, a: AllowSender<'_>) {
        let Some(owner) = self.identity.as_ref().map(|i| i.user.clone()) else {
            return self.out.error(ErrorCode::AuthRequired, Kind::AllowSender);
        };
        if a.sender.contains('@') {
            // A peer relay's user (PROTOCOL.md §12.1).
            if a.allow && !self.names_a_peer_user(a.sender) {
                return self.out.error(ErrorCode::UnknownPeer, Kind::AllowSender);
            }
        } else if validate_account_name(a.sender).is_err() || a.sender == owner {
            // A name that cannot be a user's, or the owner's own (always
            // allowed), changes nothing and is answered alike.
            return self.out.push(Out::Done(Kind::AllowSender));
        }
        self.work.push(Work::Notice(NoticeWork::Allow {
            owner,
            sender: a.sender.to_owned(),
            allow: a.allow,
        }));
    }

    fn notice_failed(&mut self, kind: Kind, e: &dyn core::fmt::Display) {
        tracing::error!(session = self.id, "{kind:?} failed: {e}");
        self.out.error(ErrorCode::Internal, kind);
    }

    /// A notices job is done; `open`: the conversation it answers goes on.
    pub(super) fn on_notice_done(&mut self, open: bool, done: NoticeDone) {
        match done {
            NoticeDone::Progress { batch, result } => self.on_progress_recorded(batch, result),
            NoticeDone::Loaded {
                listen: false,
                result,
            } => {
                self.notices.loading = false;
                if open {
                    self.send_notices(None, result);
                }
                if std::mem::take(&mut self.notices.reload) {
                    self.handle_wake(self.clock);
                }
            }
            _ if !open => {}
            NoticeDone::Loaded { result, .. } => self.send_notices(Some(()), result),
            NoticeDone::Status(Ok(list)) => {
                self.out.push(Out::Deliveries(list.into()));
                self.out.push(Out::Done(Kind::DeliveryStatus));
            }
            NoticeDone::Status(Err(e)) => self.notice_failed(Kind::DeliveryStatus, &e),
            NoticeDone::Acked(Ok(_)) => {}
            NoticeDone::Acked(Err(e)) => {
                // Nothing to answer: the next acknowledgement tries again.
                tracing::error!(session = self.id, "NoticeAck failed: {e}");
            }
            NoticeDone::Settled { id, how, result } => {
                let kind = match how {
                    Settle::Receipt => Kind::Receipt,
                    Settle::Refuse => Kind::NoticeRefuse,
                };
                match result {
                    Ok(Settled::Unknown) => self.out.error(ErrorCode::UnknownNotice, kind),
                    Ok(Settled::Now(state)) => {
                        let outcome = match how {
                            Settle::Receipt => DeliveryOutcome::Delivered,
                            Settle::Refuse => DeliveryOutcome::Refused,
                        };
                        self.relay.metrics().delivery(outcome);
                        tracing::info!(
                            session = self.id,
                            delivery = id,
                            ?state,
                            "delivery settled"
                        );
                        self.out.push(Out::Settled(id));
                    }
                    // Settled before (a receipt repeated because its
                    // Settled was lost), or expired meanwhile: nothing
                    // more will be sent for it, which is what the
                    // terminal needs to hear.
                    Ok(Settled::Already(_)) => self.out.push(Out::Settled(id)),
                    Err(e) => self.notice_failed(kind, &e),
                }
            }
            NoticeDone::Allowed(Ok(())) => self.out.push(Out::Done(Kind::AllowSender)),
            NoticeDone::Allowed(Err(DirectoryError::Full(_))) => {
                self.out.error(ErrorCode::QueueFull, Kind::AllowSender)
            }
            NoticeDone::Allowed(Err(e)) => self.notice_failed(Kind::AllowSender, &e),
        }
    }

    /// Sends loaded notices: after an `Inbox` (`inbox`), all of them; live
    /// ones, only those above the last sent (a Listen may have sent them).
    fn send_notices(&mut self, inbox: Option<()>, result: Result<Vec<DeliveryRecord>, StoreError>) {
        let list = match result {
            Ok(list) => list,
            Err(e) if inbox.is_some() => return self.notice_failed(Kind::Listen, &e),
            Err(e) => return tracing::error!(session = self.id, "loading notices failed: {e}"),
        };
        let newest = self.notices.newest_sent;
        // A batch past its expiry is expired for every lookup, whether or
        // not a sweep has marked its deliveries yet: its notice is not
        // open (PROTOCOL.md §11), and the code would only answer Expired.
        let now_secs = unix_secs(self.clock);
        // An Inbox counts in 16 bits (the config keeps the cap below;
        // settings made in code might not): never more than it says.
        let list: VecDeque<DeliveryRecord> = list
            .into_iter()
            .filter(|d| d.until > now_secs)
            .filter(|d| inbox.is_some() || d.id > newest)
            .take(usize::from(u16::MAX))
            .collect();
        for d in &list {
            // A batch read before its notice came is followed again.
            if let Some(t) = self
                .notices
                .progress
                .tracked
                .iter_mut()
                .find(|t| t.batch == d.batch)
            {
                t.untracked = false;
            }
        }
        if let Some(top) = list.iter().map(|d| d.id).max() {
            self.notices.newest_sent = self.notices.newest_sent.max(top);
        }
        let count = u16::try_from(list.len()).unwrap_or(u16::MAX);
        if inbox.is_some() || !list.is_empty() {
            self.out.push(Out::Notices {
                inbox: inbox.map(|()| count),
                list,
            });
        }
    }
}

impl Session {
    /// Encodes the next frame of a notices reply; re-queues the rest.
    pub(super) fn render_notices(&mut self, item: Out, out: &mut [u8]) -> Option<usize> {
        let max = self.format();
        let encoded = match item {
            Out::Settled(id) => Message::Settled(message::Settled { id }).encode(max, out),
            Out::Notices {
                inbox: Some(count),
                list,
            } => {
                self.out.push_front(Out::Notices { inbox: None, list });
                Message::Inbox(Inbox { count }).encode(max, out)
            }
            Out::Notices {
                inbox: None,
                mut list,
            } => {
                let d = list.pop_front()?;
                if !list.is_empty() {
                    self.out.push_front(Out::Notices { inbox: None, list });
                }
                Message::Notice(Notice {
                    id: d.id,
                    code: d.code,
                    sender: &d.sender,
                    files: d.files,
                    total_size: d.total,
                    expires_at: d.until,
                })
                .encode(max, out)
            }
            Out::Deliveries(mut list) => {
                let d = list.pop_front()?;
                if !list.is_empty() {
                    self.out.push_front(Out::Deliveries(list));
                }
                Message::Delivery(Delivery {
                    push_id: d.push_id,
                    code: d.code,
                    terminal: &d.terminal,
                    state: d.state,
                    bytes: d.bytes,
                    total: d.total,
                    at: d.at,
                    until: d.until,
                })
                .encode(max, out)
            }
            _ => return None,
        };
        match encoded {
            Ok(n) => Some(n),
            Err(_) => {
                // Only a peer frame near the protocol's minimum (64
                // bytes) refuses one: a `Notice` from a long sender name
                // (an account's 32 bytes, a peer's user's `user@relay` up
                // to 65) takes up to about 100 bytes.
                tracing::warn!(
                    session = self.id,
                    "a notices reply does not fit the peer's frame"
                );
                None
            }
        }
    }
}
