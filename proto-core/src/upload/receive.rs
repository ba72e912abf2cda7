//! The relay's replies to an upload: welcome, grant, plans, acks, rewinds,
//! verdicts and errors, each moving the session's state.

use super::{Control, Error, Event, FileState, Phase, Session};
use crate::drive::{noise, surplus_answer};
use crate::error::ErrorCode;
use crate::frame::{self, Frame};
use crate::message::{self, Ack, FilePlan, Grant, Message, Plan, Rewind, CAP_INSTANT_UPLOAD};
use crate::time::{Duration, Instant};
use crate::PROTOCOL_VERSION;

impl<'n, const F: usize> Session<'n, F> {
    /// Handles one frame from the relay. Frames that do not decode, or are
    /// not expected now, are ignored: the timers recover from whatever they
    /// were meant to say.
    ///
    /// An upload reads no file bytes on input, so this needs no source; a
    /// driver written for both machines calls [`Machine::handle_frame`],
    /// which takes one like the download's.
    ///
    /// [`Machine::handle_frame`]: crate::drive::Machine::handle_frame
    pub fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) {
        if let Ok(msg) = Message::decode_from_relay(frame) {
            self.handle_message(now, msg);
        }
    }

    /// Handles one decoded message from the relay.
    pub fn handle_message(&mut self, now: Instant, msg: Message<'_>) {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return;
        }
        self.last_heard = now;
        #[cfg(any(test, feature = "auth"))]
        if self.phase == Phase::Authenticating {
            if let Some(outcome) = self.auth.as_mut().and_then(|h| h.handle(&msg)) {
                return self.on_auth(now, outcome);
            }
        }
        match msg {
            Message::Welcome(w) if self.phase == Phase::AwaitWelcome => {
                if w.version != PROTOCOL_VERSION {
                    return self.fail(Error::Relay(ErrorCode::UnsupportedVersion));
                }
                self.peer_max_frame =
                    (w.max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN);
                self.peer_window = u64::from(w.window.min(self.config.max_window));
                self.framing = frame::Framing::negotiated(self.config.length_prefix, w.caps);
                self.instant_allowed =
                    self.config.instant_upload && w.caps & CAP_INSTANT_UPLOAD != 0;
                #[cfg(any(test, feature = "file-attrs"))]
                {
                    self.attrs_allowed = w.caps & message::CAP_FILE_ATTRS != 0;
                }
                self.push_event(Event::Connected);
                self.waiting_since = Some(now);
                #[cfg(any(test, feature = "auth"))]
                if let Some(h) = self.auth.as_mut() {
                    h.restart();
                    self.phase = Phase::Authenticating;
                    return;
                }
                self.begin();
            }
            Message::Grant(g) => self.on_grant(now, g),
            Message::FilePlan(p) => self.on_plan(now, p),
            Message::Ack(a) => self.on_ack(now, a),
            Message::Rewind(r) => self.on_rewind(r),
            Message::FileVerified(v) if self.phase == Phase::Transfer => {
                if let Some(f) = self.files.get_mut(usize::from(v.index)) {
                    if f.state != FileState::Done && f.acked == f.meta.size {
                        f.state = FileState::Done;
                        self.push_event(Event::Verified { file: v.index });
                        self.check_complete(now);
                    }
                }
            }
            Message::FileRejected(r) if usize::from(r.index) < self.files.len() => {
                self.fail(Error::Rejected {
                    file: r.index,
                    reason: r.reason,
                });
            }
            Message::BatchComplete(_) => {
                // For an unnamed batch only a confirmation: completion is
                // decided per file above, so a lost BatchComplete costs
                // nothing. A named batch is complete when its names are.
                #[cfg(any(test, feature = "auth"))]
                self.on_batch_complete(now);
            }
            #[cfg(any(test, feature = "auth"))]
            Message::Done(d) if d.kind == message::Kind::NamedPut as u8 => {
                self.named_acked = true;
            }
            Message::Error(e) => self.on_error(now, e),
            // Kept only if asked for and after the welcome; checked again
            // although the decoder did, as a driver may hand in a message
            // it built: this is what gets printed.
            #[cfg(any(test, feature = "page-link"))]
            Message::PageLink(p)
                if self.config.page_link
                    && self.phase != Phase::AwaitWelcome
                    && message::validate_page_url(p.base_url).is_ok() =>
            {
                self.page_link = heapless::String::try_from(p.base_url).ok();
            }
            #[cfg(any(test, feature = "relay-limits"))]
            Message::RelayLimits(l)
                if self.config.relay_limits && self.phase != Phase::AwaitWelcome =>
            {
                self.relay_limits = Some(l);
            }
            Message::Keepalive => {}
            Message::Goodbye => {
                self.phase = Phase::Idle;
                self.push_event(Event::LinkLost);
            }
            _ => {}
        }
    }

    /// The relay accepted the session (and its credential): announce the
    /// batch, or resume it.
    fn begin(&mut self) {
        if self.token.is_some() {
            self.push_control(Control::Resume);
            self.phase = Phase::AwaitGrant;
        } else {
            if self.family.is_some() {
                self.push_control(Control::Join);
            }
            self.phase = Phase::Announcing { next: None };
        }
    }

    /// A named batch is complete once the relay bound its names, which it
    /// does only if it took the `NamedPut` of this link: without its
    /// acknowledgement (lost, or the relay opened the batch unnamed), the
    /// upload asks again, `NamedPut` and `Resume`, and the relay binds the
    /// names of the batch it completes again.
    #[cfg(any(test, feature = "auth"))]
    fn on_batch_complete(&mut self, now: Instant) {
        if !self.named || self.phase != Phase::Transfer {
            return;
        }
        if self.named_acked {
            self.names_bound = true;
            self.check_complete(now);
        } else if self.files.iter().all(|f| f.state == FileState::Done) {
            self.push_control(Control::Resume);
            self.waiting_since = Some(now);
        }
    }

    #[cfg(any(test, feature = "auth"))]
    fn on_auth(&mut self, now: Instant, outcome: crate::auth::Outcome) {
        use crate::auth::Outcome;
        match outcome {
            Outcome::Pending => self.waiting_since = Some(now),
            Outcome::Authenticated => {
                self.push_event(Event::Authenticated);
                self.waiting_since = Some(now);
                self.begin();
            }
            Outcome::Failed(e) => self.fail(Error::Auth(e)),
        }
    }

    fn on_error(&mut self, now: Instant, e: message::Error) {
        if noise(&e) || surplus_answer(&e) {
            return;
        }
        match e.code {
            // The relay refuses for now and says why: keep the state, tell
            // the driver (a user should not watch a silent wait), and retry
            // after the relay's hint, but early enough that the link is not
            // declared lost meanwhile.
            ErrorCode::RateLimited
            | ErrorCode::Busy
            | ErrorCode::TooManyIncomplete
            | ErrorCode::PeerQuota => self.wait_for_relay(now, e),
            // Quota with a hint: live reservations hold part of it.
            ErrorCode::Quota if e.retry_after_ms > 0 => self.wait_for_relay(now, e),
            // Transient: keep the state, back off through the normal timers.
            ErrorCode::Internal | ErrorCode::BadFrame => {
                self.waiting_since = Some(now);
            }
            // A relay that predates `Join`: the batch is a family of its own.
            ErrorCode::UnknownKind if e.kind == message::Kind::Join as u8 => {}
            ErrorCode::UnexpectedMessage if self.phase != Phase::Transfer => {
                // Our view and the relay's diverged (a lost frame during
                // announcing): start the request over on the timer.
                self.waiting_since = Some(now);
            }
            ErrorCode::UnexpectedMessage | ErrorCode::IdleTimeout | ErrorCode::ShuttingDown => {
                self.phase = Phase::Idle;
                self.push_event(Event::LinkLost);
            }
            other => self.fail(Error::Relay(other)),
        }
    }

    fn wait_for_relay(&mut self, now: Instant, e: message::Error) {
        let hint = u64::from(e.retry_after_ms).min(self.config.idle_timeout.as_millis() / 2);
        let extra = hint.saturating_sub(self.config.retransmit_timeout.as_millis());
        // The request is sent again one retransmit timeout after this.
        self.waiting_since = Some(now + Duration::from_millis(extra));
        self.push_event(Event::Waiting {
            reason: e.code,
            retry_after_ms: e.retry_after_ms,
        });
    }

    fn on_grant(&mut self, now: Instant, g: Grant) {
        if !matches!(
            self.phase,
            Phase::AwaitGrant | Phase::Announcing { .. } | Phase::Transfer
        ) {
            return;
        }
        if usize::from(g.files) != self.files.len() {
            return self.fail(Error::Mismatch);
        }
        let first = self.grant.is_none();
        match self.token {
            Some(token) if token != g.token => return self.fail(Error::Mismatch),
            _ => self.token = Some(g.token),
        }
        self.grant = Some(g);
        if first {
            self.push_event(Event::Granted {
                code: g.code,
                expires_at: g.expires_at,
                token: g.token,
            });
        }
        self.phase = Phase::Transfer;
        self.waiting_since = Some(now);
        // Plans and verdicts of an earlier exchange may already have
        // finished every file (a resumed batch, a repeated grant).
        self.check_complete(now);
    }

    fn on_plan(&mut self, now: Instant, p: FilePlan) {
        if self.phase != Phase::Transfer {
            return;
        }
        let index = p.index;
        let Some(f) = self.files.get_mut(usize::from(index)) else {
            return;
        };
        if f.state == FileState::Done {
            return self.check_complete(now);
        }
        let event = match p.plan {
            Plan::Held => {
                f.state = FileState::Done;
                f.acked = f.meta.size;
                f.sent = f.meta.size;
                self.progress_dirty = true;
                Some(Event::Linked { file: index })
            }
            Plan::Upload { offset } => {
                // The relay's durable offset is the truth, even if it is
                // below what it acked before (it never should be).
                let offset = offset.min(f.meta.size);
                let was = f.state;
                f.state = FileState::Sending;
                f.acked = offset;
                f.sent = offset;
                self.progress_dirty = true;
                (was != FileState::Sending).then_some(Event::Uploading {
                    file: index,
                    offset,
                })
            }
            Plan::Challenge { nonce } => {
                if self.instant_allowed {
                    f.state = FileState::ProofDue(nonce);
                    Some(Event::Proving { file: index })
                } else {
                    // Not answering: the relay treats silence like a wrong
                    // proof once we send data instead. Ask for the upload plan
                    // with a proof that cannot match.
                    f.state = FileState::ProofDue([0; 32]);
                    None
                }
            }
        };
        if let Some(e) = event {
            self.push_event(e);
        }
        self.waiting_since = Some(now);
        self.check_complete(now);
    }

    fn on_ack(&mut self, now: Instant, a: Ack) {
        if self.phase != Phase::Transfer {
            return;
        }
        let Some(f) = self.files.get_mut(usize::from(a.file)) else {
            return;
        };
        let offset = a.offset.min(f.meta.size);
        self.peer_window = u64::from(a.window.min(self.config.max_window));
        if offset > f.acked {
            f.acked = offset;
            if f.sent < offset {
                f.sent = offset;
            }
            self.progress_dirty = true;
            self.waiting_since = Some(now);
        }
    }

    fn on_rewind(&mut self, r: Rewind) {
        if self.phase != Phase::Transfer {
            return;
        }
        let Some(f) = self.files.get_mut(usize::from(r.file)) else {
            return;
        };
        if f.state != FileState::Sending {
            return;
        }
        let offset = r.offset.min(f.meta.size);
        if offset < f.sent {
            if offset < f.acked {
                f.acked = offset;
                self.progress_dirty = true;
            }
            f.sent = offset;
            self.push_event(Event::Retransmit {
                file: r.file,
                offset,
            });
        }
    }
}
