//! Forwarding on a session (PROTOCOL.md §12): `ForwardRequest` and
//! `ForwardPush` (§12.1), `ForwardWatch` and the statuses that follow it,
//! `ForwardRetry`.
//!
//! ```text
//!   ForwardRequest ──(user? may forward? peer listed? limiter?)──► job: batch live and ready? store ──► ForwardAccepted | Error
//!   ForwardPush ──(the same, and a terminal name?)──► job: the same, with the push target; the same push id: that forward
//!                                                     more than forward.max_open_per_user open: Error{QueueFull}
//!   ForwardWatch{once} ──(user?)──► job ──► ForwardStatus | Error{UnknownCode}
//!   ForwardWatch ──► Board::watch(id, bell); job ──► ForwardStatus
//!   doorbell (the forward changed) ──► handle_wake ──(≥ 250 ms since the last status, else a timer)──►
//!       job (reload) ──► ForwardStatus if state, bytes, attempts or reason changed; a final one ends the watch
//!   ForwardRetry ──► job: queue again ──► ForwardStatus | Error{UnknownCode}
//!                    a failed one past forward.max_open_per_user open: Error{QueueFull}
//! ```
//!
//! Every store access is a job; this file only decides and answers. The
//! session shares its one doorbell between notices and the watch: a ring
//! for either wakes both, and each loads only what it follows.

use pickup_proto::message::{
    ForwardPush, ForwardRequest, ForwardRetry, ForwardStatus, ForwardWatch, Kind,
};
use pickup_proto::{Duration, ErrorCode, Instant};

use super::{Out, Session};
use crate::jobs::{ForwardDone, ForwardWork, Look, Work};
use crate::relay::unix_secs;
use crate::store::forwards::PushTarget;
use crate::store::StoreError;

/// The least time between two statuses of a watch.
pub(super) const STATUS_SPACING: Duration = Duration::from_millis(250);

/// The forward a session watches.
#[derive(Debug)]
pub(super) struct Watching {
    id: u64,
    user: String,
    /// The last status sent: a reload sends only a changed one.
    last: Option<ForwardStatus>,
    /// When it was sent.
    sent_at: Option<Instant>,
    /// A load is queued or running; `reload`: the bell rang meanwhile.
    loading: bool,
    reload: bool,
    /// A reload waits for the spacing until then.
    due: Option<Instant>,
}

/// Whether `b` says something `a` did not (the rate alone is no change).
fn changed(a: &ForwardStatus, b: &ForwardStatus) -> bool {
    (a.state, a.sent, a.attempts, a.reason, a.peer_code)
        != (b.state, b.sent, b.attempts, b.reason, b.peer_code)
}

impl Session {
    /// The user this session acts for (not a peer relay), or the
    /// `AuthRequired` refusal of `kind`.
    fn forward_user(&mut self, kind: Kind) -> Option<String> {
        match self.identity.as_ref().filter(|i| i.peer.is_none()) {
            Some(i) => Some(i.user.clone()),
            None => {
                self.out.error(ErrorCode::AuthRequired, kind);
                None
            }
        }
    }

    pub(super) fn on_forward_request(&mut self, now: Instant, r: ForwardRequest<'_>) {
        self.request_forward(now, Kind::ForwardRequest, r.code, r.peer, None);
    }

    pub(super) fn on_forward_push(&mut self, now: Instant, p: ForwardPush<'_>) {
        self.request_forward(
            now,
            Kind::ForwardPush,
            p.code,
            p.peer,
            Some((p.terminal, p.push_id)),
        );
    }

    /// A `ForwardRequest`, or with `push` (terminal, push id) a
    /// `ForwardPush`: the checks both take, then the store's job.
    fn request_forward(
        &mut self,
        now: Instant,
        kind: Kind,
        code: pickup_proto::Code,
        peer: &str,
        push: Option<(&str, u64)>,
    ) {
        let Some(requester) = self.forward_user(kind) else {
            return;
        };
        if !self.relay.settings.forward.may_forward(&requester) {
            return self.out.error(ErrorCode::NotAllowed, kind);
        }
        if self.relay.settings.peers.get(peer).is_none() {
            return self.out.error(ErrorCode::UnknownPeer, kind);
        }
        // The peer judges who the terminal is; a name no terminal can
        // have is refused here, before any byte crosses.
        if let Some((terminal, _)) = push {
            if crate::directory::validate_account_name(terminal).is_err() {
                return self.out.error(ErrorCode::UnknownTerminal, kind);
            }
        }
        // The code is looked up: a request is one more way to guess codes.
        if let Err(wait) = self.relay.check_lookup(&self.peer, now) {
            return self.out.error_retry(ErrorCode::RateLimited, kind, wait);
        }
        self.work.push(Work::Forward(ForwardWork::Request {
            requester,
            kind,
            code,
            peer: peer.to_owned(),
            push: push.map(|(terminal, push_id)| PushTarget {
                terminal: terminal.to_owned(),
                push_id,
            }),
            now_secs: unix_secs(now),
        }));
    }

    pub(super) fn on_forward_watch(&mut self, w: ForwardWatch) {
        let Some(user) = self.forward_user(Kind::ForwardWatch) else {
            return;
        };
        if w.once {
            self.work.push(Work::Forward(ForwardWork::Status {
                requester: user,
                id: w.id,
                look: Look::Once,
            }));
            return;
        }
        self.stop_watching();
        // Registered before the load: a change after it rings.
        self.relay
            .forward_board()
            .watch(w.id, self.id, &self.notices.bell);
        self.watching = Some(Watching {
            id: w.id,
            user: user.clone(),
            last: None,
            sent_at: None,
            loading: true,
            reload: false,
            due: None,
        });
        // A watch can last long with nothing said: the session is busy.
        self.started = true;
        self.work.push(Work::Forward(ForwardWork::Status {
            requester: user,
            id: w.id,
            look: Look::Watch,
        }));
    }

    pub(super) fn on_forward_retry(&mut self, now: Instant, r: ForwardRetry) {
        let Some(requester) = self.forward_user(Kind::ForwardRetry) else {
            return;
        };
        // A retry starts new traffic: a user taken off the list may still
        // watch a forward, not restart it.
        if !self.relay.settings.forward.may_forward(&requester) {
            return self.out.error(ErrorCode::NotAllowed, Kind::ForwardRetry);
        }
        self.work.push(Work::Forward(ForwardWork::Retry {
            requester,
            id: r.id,
            now_secs: unix_secs(now),
        }));
    }

    /// The session's doorbell rang: the watched forward may have changed.
    pub(super) fn wake_watch(&mut self, now: Instant) {
        let Some(w) = self.watching.as_mut() else {
            return;
        };
        if w.loading {
            w.reload = true;
            return;
        }
        if let Some(at) = w.sent_at.map(|t| t + STATUS_SPACING).filter(|at| *at > now) {
            w.due = Some(w.due.map_or(at, |d| d.min(at)));
            return;
        }
        w.due = None;
        w.loading = true;
        let (requester, id) = (w.user.clone(), w.id);
        self.work.push(Work::Forward(ForwardWork::Status {
            requester,
            id,
            look: Look::Reload,
        }));
    }

    /// When the watch's spaced reload is due, if one waits.
    pub(super) fn watch_deadline(&self) -> Option<Instant> {
        self.watching.as_ref().and_then(|w| w.due)
    }

    /// Fires the watch's spaced reload if it is due at `now`.
    pub(super) fn watch_timeout(&mut self, now: Instant) {
        if self.watch_deadline().is_some_and(|t| now >= t) {
            if let Some(w) = self.watching.as_mut() {
                w.due = None;
            }
            self.wake_watch(now);
        }
    }

    /// This session watches no forward any more.
    pub(super) fn stop_watching(&mut self) {
        if let Some(w) = self.watching.take() {
            self.relay.forward_board().unwatch(w.id, self.id);
        }
    }

    fn forward_failed(&mut self, kind: Kind, e: &StoreError) {
        tracing::error!(session = self.id, "{kind:?} failed: {e}");
        self.out.error(ErrorCode::Internal, kind);
    }

    /// A forwards job is done; `open`: the conversation it answers goes on.
    pub(super) fn on_forward_done(&mut self, open: bool, done: ForwardDone) {
        match done {
            ForwardDone::Status {
                id,
                look: Look::Reload,
                result,
            } => self.on_reloaded(open, id, result),
            _ if !open => {}
            ForwardDone::Requested {
                result: Ok(Ok(id)), ..
            } => self.out.push(Out::ForwardAccepted(id)),
            ForwardDone::Requested {
                kind,
                result: Ok(Err(code)),
            } => {
                if matches!(code, ErrorCode::UnknownCode | ErrorCode::Expired) {
                    self.relay.failed_lookup(&self.peer, self.clock);
                }
                self.out.error(code, kind);
            }
            ForwardDone::Requested {
                kind,
                result: Err(e),
            } => self.forward_failed(kind, &e),
            ForwardDone::Status {
                look: Look::Once,
                result,
                ..
            } => match result {
                Ok(Some(s)) => self.out.push(Out::ForwardStatus(s)),
                Ok(None) => self.out.error(ErrorCode::UnknownCode, Kind::ForwardWatch),
                Err(e) => self.forward_failed(Kind::ForwardWatch, &e),
            },
            ForwardDone::Status { id, result, .. } => self.on_reloaded(true, id, result),
            ForwardDone::Retried(Ok(Ok(s))) => self.out.push(Out::ForwardStatus(s)),
            ForwardDone::Retried(Ok(Err(code))) => self.out.error(code, Kind::ForwardRetry),
            ForwardDone::Retried(Err(e)) => self.forward_failed(Kind::ForwardRetry, &e),
        }
    }

    /// A watch's status was loaded (its first, or a reload).
    fn on_reloaded(
        &mut self,
        open: bool,
        id: u64,
        result: Result<Option<ForwardStatus>, StoreError>,
    ) {
        // A newer watch (or none) replaced the one this load was for.
        if self.watching.as_ref().is_none_or(|w| w.id != id) {
            return;
        }
        if !open {
            return self.stop_watching();
        }
        let status = match result {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.stop_watching();
                return self.out.error(ErrorCode::UnknownCode, Kind::ForwardWatch);
            }
            Err(e) => {
                self.stop_watching();
                return self.forward_failed(Kind::ForwardWatch, &e);
            }
        };
        let clock = self.clock;
        let Some(w) = self.watching.as_mut() else {
            return;
        };
        w.loading = false;
        if w.last.as_ref().is_none_or(|last| changed(last, &status)) {
            w.last = Some(status);
            w.sent_at = Some(clock);
            self.out.push(Out::ForwardStatus(status));
        }
        if status.state.is_final() {
            return self.stop_watching();
        }
        if std::mem::take(&mut w.reload) {
            self.wake_watch(clock);
        }
    }
}
