//! The relay's answers to a sender: welcome, the handshake's answers,
//! deliveries, `Done` and errors.

use super::{DeliveryInfo, Phase, Request, RequestKind, SendError, SendEvent, Sender};
use crate::auth::Outcome;
use crate::error::ErrorCode;
use crate::frame::{self, Frame};
use crate::message::{self, Delivery, Kind, Message};
use crate::notice::account_name_lossy;
use crate::time::{Duration, Instant};
use crate::PROTOCOL_VERSION;

impl Sender<'_> {
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
                    self.phase = Phase::Ready;
                    self.retry_at = None;
                    self.push_event(SendEvent::Authenticated);
                    if let Some(p) = self.pending.as_mut() {
                        p.due = true;
                    }
                    return;
                }
                Some(Outcome::Failed(e)) => return self.fail(SendError::Auth(e)),
                None => {}
            }
        }
        match msg {
            Message::Welcome(w) if self.phase == Phase::AwaitWelcome => {
                if w.version != PROTOCOL_VERSION {
                    return self.fail(SendError::Relay(ErrorCode::UnsupportedVersion));
                }
                self.peer_max_frame =
                    (w.max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN);
                self.push_event(SendEvent::Connected);
                self.auth.restart();
                self.phase = Phase::Authenticating;
                self.retry_at = Some(now + self.rto());
            }
            Message::Delivery(d) if self.phase == Phase::Ready => self.on_delivery(now, d),
            Message::Done(d) if self.phase == Phase::Ready => {
                let done = match self.pending.as_ref().map(|p| &p.request) {
                    Some(Request::Status { .. }) => d.kind == Kind::DeliveryStatus as u8,
                    Some(Request::AllowSender { .. }) => d.kind == Kind::AllowSender as u8,
                    _ => false,
                };
                if done {
                    self.finish(None);
                }
            }
            Message::Error(e) => self.on_error(now, e),
            Message::Goodbye => self.link_lost(),
            _ => {}
        }
    }

    fn on_delivery(&mut self, now: Instant, d: Delivery<'_>) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        let info = || DeliveryInfo {
            push_id: d.push_id,
            code: d.code,
            terminal: account_name_lossy(d.terminal),
            state: d.state,
            bytes: d.bytes,
            total: d.total,
            at: d.at,
            until: d.until,
        };
        match p.request {
            Request::Push { push_id, code, .. } if d.push_id == push_id && d.code == code => {
                let info = info();
                self.finish(Some(info));
            }
            Request::Status { code } if d.code == code => {
                p.seen = p.seen.saturating_add(1);
                // Lines an earlier answer reported already.
                if p.seen <= p.reported {
                    return;
                }
                p.reported = p.seen;
                self.retry_at = Some(now + self.rto());
                self.answers = self.answers.saturating_add(1);
                self.push_event(SendEvent::Delivery(info()));
            }
            _ => {}
        }
    }

    /// The request in progress is answered (with `delivery` for a push).
    fn finish(&mut self, delivery: Option<DeliveryInfo>) {
        let Some(p) = self.pending.take() else {
            return;
        };
        self.retry_at = None;
        self.answers = self.answers.saturating_add(1);
        if let Some(d) = delivery {
            self.push_event(SendEvent::Delivery(d));
        }
        self.push_event(SendEvent::Done(p.request.kind()));
    }

    fn on_error(&mut self, now: Instant, e: message::Error) {
        if crate::drive::noise(&e) || crate::drive::surplus_answer(&e) {
            return;
        }
        let ours = self
            .pending
            .as_ref()
            .map(|p| p.request.kind())
            .filter(|k| e.kind == request_kind_byte(*k));
        match e.code {
            ErrorCode::RateLimited | ErrorCode::Busy => {
                let wait = Duration::from_millis(u64::from(e.retry_after_ms)).max(self.rto());
                self.retry_at = Some(now + wait);
                if let Some(p) = self.pending.as_mut() {
                    p.due = false;
                }
                self.push_event(SendEvent::Waiting {
                    reason: e.code,
                    retry_in_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
                });
            }
            // Transient: the timer asks again.
            ErrorCode::Internal | ErrorCode::BadFrame => {}
            ErrorCode::UnexpectedMessage | ErrorCode::IdleTimeout | ErrorCode::ShuttingDown => {
                self.link_lost()
            }
            code => {
                // Anything else about another request is not this one's.
                if let Some(request) = ours {
                    self.pending = None;
                    self.retry_at = None;
                    self.answers = self.answers.saturating_add(1);
                    self.push_event(SendEvent::Refused {
                        request,
                        code,
                        retry_after_ms: e.retry_after_ms,
                    });
                }
            }
        }
    }
}

/// The kind byte a request is sent as.
fn request_kind_byte(k: RequestKind) -> u8 {
    (match k {
        RequestKind::Push => Kind::Push,
        RequestKind::Status => Kind::DeliveryStatus,
        RequestKind::AllowSender => Kind::AllowSender,
    }) as u8
}
