//! [`drive_notice`](super::drive_notice) with a [`Sender`]: the
//! application's requests and the checks on what it sends and reports.

use pickup_proto::identity::Credential;
use pickup_proto::message::{AuthToken, Message, Role};
use pickup_proto::notice::{self, RequestKind, SendConfig, SendEvent, Sender};
use pickup_proto::{Duration, Instant};

use super::super::script::Input;
use super::super::{code, Summary, MAX_DRAIN};
use super::{run, Driven, ME, TERMINALS};

impl Driven for Sender<'_> {
    fn connected(&mut self, now: Instant) {
        self.handle_connected(now)
    }
    fn disconnected(&mut self, now: Instant) {
        self.handle_disconnected(now)
    }
    fn frame(&mut self, now: Instant, f: pickup_proto::frame::Frame<'_>) {
        self.handle_frame(now, f)
    }
    fn message(&mut self, now: Instant, msg: Message<'_>) {
        self.handle_message(now, msg)
    }
    fn timeout(&mut self, now: Instant) {
        self.handle_timeout(now)
    }
    fn next_timer(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        self.poll_transmit(now, out)
    }
    fn finished(&self) -> bool {
        self.is_finished()
    }
    fn idle_timeout(&self) -> Duration {
        SendConfig::default().idle_timeout
    }
}

pub(super) fn drive_sender(setup: u8, input: Input<'_>) -> Summary {
    let credential = if setup & 0x02 != 0 {
        Credential::Terminal(ME)
    } else {
        Credential::Token(AuthToken([9; 16]))
    };
    let mut s = Sender::new(SendConfig::default(), credential);
    /// The application's request in progress: what it is, and whether
    /// it went out already.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Req {
        Push(u64, &'static str),
        Status,
        Allow(&'static str, bool),
    }
    let current: std::cell::Cell<Option<Req>> = std::cell::Cell::new(None);
    // The application cancelled since the last answer: a late answer may come.
    let cancelled = std::cell::Cell::new(false);
    let mut deliveries = 0u64;
    let mut summary = run(
        &mut s,
        input,
        &mut |_| {},
        &mut |s, msg, raw| match msg {
            Message::Hello(h) => {
                assert_eq!(h.role, Role::Terminal);
                assert!(
                    raw <= pickup_proto::frame::MIN_FRAME_LEN,
                    "hello over 64 bytes"
                );
            }
            Message::Authenticate(_)
            | Message::TerminalAuth(_)
            | Message::ChallengeAnswer(_)
            | Message::Keepalive
            | Message::Goodbye => {}
            Message::Push(p) => {
                assert!(s.is_busy(), "a Push with no request");
                match current.get() {
                    Some(Req::Push(id, t)) => {
                        assert_eq!((p.push_id, p.code, p.terminal), (id, code(), t));
                    }
                    other => panic!("a Push while the application asked {other:?}"),
                }
            }
            Message::DeliveryStatus(d) => {
                assert_eq!(current.get(), Some(Req::Status), "a DeliveryStatus unasked");
                assert_eq!(d.code, code());
            }
            Message::AllowSender(a) => match current.get() {
                Some(Req::Allow(who, allow)) => assert_eq!((a.sender, a.allow), (who, allow)),
                other => panic!("an AllowSender while the application asked {other:?}"),
            },
            other => panic!("a sender never sends {other:?}"),
        },
        &mut |s| {
            for _ in 0..MAX_DRAIN {
                let Some(e) = s.poll_event() else { return };
                let kind = |r: Req| match r {
                    Req::Push(..) => RequestKind::Push,
                    Req::Status => RequestKind::Status,
                    Req::Allow(..) => RequestKind::AllowSender,
                };
                match e {
                    SendEvent::Delivery(d) => {
                        deliveries += 1;
                        match current.get() {
                            Some(Req::Push(id, _)) => assert_eq!(d.push_id, id),
                            Some(Req::Status) => {}
                            other => panic!("a delivery event while {other:?}"),
                        }
                        assert_eq!(d.code, code());
                    }
                    SendEvent::Done(k) | SendEvent::Refused { request: k, .. } => {
                        match current.take() {
                            Some(asked) => {
                                assert_eq!(kind(asked), k, "an answer to another request")
                            }
                            None => assert!(cancelled.get(), "an answer to no request"),
                        }
                        cancelled.set(false);
                        assert!(!s.is_busy(), "answered, yet busy");
                    }
                    _ => {}
                }
            }
        },
        &mut |s, input| {
            let sel = input.byte()?;
            let was_busy = s.is_busy();
            let r = match sel % 5 {
                0 | 1 => {
                    let t = TERMINALS[usize::from(sel >> 3) % TERMINALS.len()];
                    let id = u64::from(sel >> 5);
                    s.push(id, code(), t).map(|()| Req::Push(id, t))
                }
                2 => s.status(code()).map(|()| Req::Status),
                3 => {
                    let who = ["bob", "a-sender-name-longer-than-32-bytes!"][usize::from(sel >> 7)];
                    let allow = sel & 0x08 != 0;
                    s.allow_sender(who, allow).map(|()| Req::Allow(who, allow))
                }
                _ => {
                    s.cancel();
                    assert!(!s.is_busy(), "cancelled, yet busy");
                    current.set(None);
                    cancelled.set(true);
                    return Some(());
                }
            };
            match r {
                Ok(req) => {
                    assert!(!was_busy, "a second request taken while busy");
                    current.set(Some(req));
                    cancelled.set(false);
                }
                Err(notice::RequestError::Busy) => {
                    assert!(s.is_busy(), "refused as busy, yet not busy")
                }
                Err(_) => {}
            }
            Some(())
        },
        &|s| s.error().map(|e| format!("{e:?}")),
    );
    summary.data_bytes = deliveries;
    summary
}
