//! The relay's messages to a listener: welcome, the handshake's answers,
//! inbox, notices, settlements and errors.

use super::{Control, ListenError, ListenEvent, Listener, NoticeInfo, Phase};
use crate::auth::Outcome;
use crate::error::ErrorCode;
use crate::frame::{self, Frame};
use crate::message::{self, Kind, Message, Notice, RefuseReason};
use crate::notice::config::AcceptFrom;
use crate::notice::ledger::{Mark, Verdict};
use crate::notice::sender_name;
use crate::time::{Duration, Instant};
use crate::PROTOCOL_VERSION;

impl<const N: usize> Listener<'_, N> {
    /// Handles one frame from the relay (see
    /// [`Machine::handle_frame`](crate::drive::Machine::handle_frame));
    /// undecodable frames are ignored.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) {
        if let Ok(msg) = Message::decode_from_relay(frame) {
            self.handle_message(now, msg);
        }
    }

    /// Handles one decoded message.
    pub fn handle_message(&mut self, now: Instant, msg: Message<'_>) {
        if matches!(self.phase, Phase::Idle | Phase::Failed) {
            return;
        }
        self.last_heard = now;
        if self.phase == Phase::Authenticating {
            match self.auth.handle(&msg) {
                Some(Outcome::Pending) => {
                    self.retry_at = Some(now + self.rto());
                    return;
                }
                Some(Outcome::Authenticated) => {
                    self.push_event(ListenEvent::Authenticated);
                    self.listen(now);
                    // Verdicts the last link left unsettled go out again.
                    self.kick_verdicts();
                    return;
                }
                Some(Outcome::Failed(e)) => return self.fail(ListenError::Auth(e)),
                None => {}
            }
        }
        match msg {
            Message::Welcome(w) if self.phase == Phase::AwaitWelcome => {
                if w.version != PROTOCOL_VERSION {
                    return self.fail(ListenError::Relay(ErrorCode::UnsupportedVersion));
                }
                self.peer_max_frame =
                    (w.max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN);
                self.push_event(ListenEvent::Connected);
                self.auth.restart();
                self.phase = Phase::Authenticating;
                self.retry_at = Some(now + self.rto());
            }
            Message::Inbox(i) if self.authenticated() => {
                self.phase = Phase::Listening;
                self.inbox_left = i.count;
                self.answers = self.answers.saturating_add(1);
                self.retry_at = (i.count > 0).then(|| now + self.rto());
                self.relisten_at = Some(now + self.relisten());
                self.push_event(ListenEvent::Inbox { waiting: i.count });
            }
            Message::Notice(n) if self.authenticated() => self.on_notice(now, n),
            Message::Settled(s) if self.authenticated() => self.on_settled(s.id),
            Message::Error(e) => self.on_error(now, e),
            Message::Goodbye => self.link_lost(),
            _ => {}
        }
    }

    /// Sends `Listen` and waits for its `Inbox`.
    pub(super) fn listen(&mut self, now: Instant) {
        self.phase = Phase::AwaitInbox;
        self.inbox_left = 0;
        self.relisten_at = None;
        self.push_control(Control::Listen);
        self.retry_at = Some(now + self.rto());
    }

    fn relisten(&self) -> Duration {
        crate::notice::config::at_least_1ms(self.config.relisten_interval)
    }

    fn on_notice(&mut self, now: Instant, n: Notice<'_>) {
        if self.phase == Phase::Listening && self.inbox_left > 0 {
            // One more of the inbox arrived: wait for the rest anew.
            self.inbox_left -= 1;
            self.retry_at = (self.inbox_left > 0).then(|| now + self.rto());
        }
        match self.ledger.get(n.id) {
            None => self.on_new_notice(n),
            // The relay may not have the first acknowledgement.
            Some(Mark::Shown) => self.ack(n.id),
            Some(Mark::Pending(_) | Mark::Resend(_)) => self.kick_verdicts(),
            // Settled, yet sent again (it crossed the `Settled`, or the
            // relay lost the verdict): the same verdict again.
            Some(Mark::Settled(Some(v))) => {
                let _ = self.ledger.set(n.id, Mark::Resend(v));
                self.kick_verdicts();
            }
            Some(Mark::Settled(None)) => {}
            // The relay knows the id after all.
            Some(Mark::Orphaned(v)) => {
                let _ = self.ledger.set(n.id, Mark::Pending(v));
                self.kick_verdicts();
            }
        }
    }

    fn on_new_notice(&mut self, n: Notice<'_>) {
        let sender = sender_name(n.sender);
        let refusal = match (&sender, self.config.policy.accept_from) {
            // Longer than any sender a relay names (`user@pair` with both
            // at their longest): no one it may come from.
            (None, _) => Some(RefuseReason::Sender),
            (Some(_), AcceptFrom::Only(list)) if !list.contains(&n.sender) => {
                Some(RefuseReason::Sender)
            }
            _ if n.total_size > self.config.policy.max_size => Some(RefuseReason::TooLarge),
            _ => None,
        };
        if let Some(reason) = refusal {
            // Without room the notice is left for a later `Listen`.
            if self
                .ledger
                .set(n.id, Mark::Pending(Verdict::Refused(reason)))
                .is_ok()
            {
                self.push_event(ListenEvent::AutoRefused { id: n.id, reason });
                self.kick_verdicts();
            }
            return;
        }
        let Some(sender) = sender else { return };
        // A notice is shown once: it must not be recorded as shown unless
        // its event is sure to reach the driver.
        if !self.room_for_notice() || self.ledger.set(n.id, Mark::Shown).is_err() {
            return;
        }
        self.push_event(ListenEvent::Notice(NoticeInfo {
            id: n.id,
            code: n.code,
            sender,
            files: n.files,
            total_size: n.total_size,
            expires_at: n.expires_at,
        }));
        self.ack(n.id);
    }

    fn ack(&mut self, id: u64) {
        if !self.acks.iter().any(|x| *x == id) {
            // Full: the notice comes again, and is acknowledged then.
            let _ = self.acks.push_back(id);
        }
    }

    fn on_settled(&mut self, id: u64) {
        let settled = match self.ledger.get(id) {
            Some(Mark::Pending(v) | Mark::Orphaned(v)) => Some((Some(v), true)),
            // The application heard of it the first time.
            Some(Mark::Resend(v)) => Some((Some(v), false)),
            // Another session of this terminal gave the verdict.
            Some(Mark::Shown) => Some((None, true)),
            Some(Mark::Settled(_)) | None => None,
        };
        if let Some((verdict, news)) = settled {
            let _ = self.ledger.set(id, Mark::Settled(verdict));
            self.answers = self.answers.saturating_add(1);
            if news {
                self.push_event(ListenEvent::Settled { id });
            }
        }
        if self.in_flight == Some(id) {
            self.in_flight = None;
            self.verdict_at = None;
        }
        self.kick_verdicts();
    }

    fn on_error(&mut self, now: Instant, e: message::Error) {
        if crate::drive::noise(&e) || crate::drive::surplus_answer(&e) {
            return;
        }
        let verdict_kind = e.kind == Kind::Receipt as u8 || e.kind == Kind::NoticeRefuse as u8;
        match e.code {
            ErrorCode::RateLimited | ErrorCode::Busy => {
                let wait = self.hold(now, e.retry_after_ms);
                self.push_event(ListenEvent::Waiting {
                    reason: e.code,
                    retry_in_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
                });
            }
            // Transient: the timers ask again.
            ErrorCode::Internal | ErrorCode::BadFrame => {
                self.hold(now, 0);
            }
            ErrorCode::UnknownNotice if verdict_kind => self.on_unknown_notice(),
            ErrorCode::UnexpectedMessage | ErrorCode::IdleTimeout | ErrorCode::ShuttingDown => {
                self.link_lost()
            }
            ErrorCode::AuthRequired | ErrorCode::AuthFailed => {
                self.fail(ListenError::Relay(e.code))
            }
            code if e.kind == Kind::Listen as u8 => self.fail(ListenError::Relay(code)),
            // Not about anything a listener asked.
            _ => {}
        }
    }

    /// `UnknownNotice` answers the one verdict in flight.
    fn on_unknown_notice(&mut self) {
        let Some(id) = self.in_flight.take() else {
            return;
        };
        self.verdict_at = None;
        if let Some(v) = self.ledger.get(id).and_then(|m| m.due()) {
            let _ = self.ledger.set(id, Mark::Orphaned(v));
            self.push_event(ListenEvent::UnknownNotice { id });
        }
        self.kick_verdicts();
    }

    /// The relay asks to wait: nothing is asked again before
    /// `retry_after_ms` (and never before the retransmit timeout).
    /// Returns the wait.
    fn hold(&mut self, now: Instant, retry_after_ms: u32) -> Duration {
        let wait = Duration::from_millis(u64::from(retry_after_ms)).max(self.rto());
        let until = now + wait;
        self.control.clear();
        for t in [&mut self.retry_at, &mut self.relisten_at] {
            if let Some(t) = t.as_mut() {
                *t = (*t).max(until);
            }
        }
        if self.phase == Phase::AwaitInbox || self.phase == Phase::AwaitWelcome {
            self.retry_at = Some(until);
        }
        if self.in_flight.is_some() || self.verdict_due {
            self.verdict_due = false;
            self.verdict_at = Some(until);
        }
        wait
    }
}
