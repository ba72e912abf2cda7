//! [`drive_notice`](super::drive_notice) with a [`Listener`]: what the
//! run knows ([`ListenBook`]), the listener's configuration from the setup
//! byte, and the checks on what it sends and reports.

use std::collections::{BTreeMap, BTreeSet};

use pickup_proto::message::{Kind, Message, RefuseReason, Role};
use pickup_proto::notice::{
    self, AcceptFrom, ListenConfig, ListenEvent, Listener, Policy, Verdict,
};
use pickup_proto::{Duration, ErrorCode, Instant};

use super::super::script::Input;
use super::super::{Summary, MAX_DRAIN};
use super::{
    run, Driven, IDS, ME, NOTICE_POLICY_SHIFT, NOTICE_REMEMBER, NOTICE_TINY_TIMERS, REASONS,
};

/// What a listener run knows, to check what it says and reports.
#[derive(Default)]
struct ListenBook {
    /// Ids handed to the application, with the number of times it had been
    /// settled then (see `settles`) and `orphanings` then.
    handed: BTreeMap<u64, (u32, u32)>,
    /// `UnknownNotice` answers to a verdict: the ledger may forget the
    /// orphaned id (after settled ones); the error names no id.
    orphanings: u32,
    /// Per id, the `Settled` the relay sent and the `remember_settled`
    /// calls: only these let a small ledger forget an id it handed out
    /// (the `Settled` event itself may be dropped from a full queue).
    settles: BTreeMap<u64, u32>,
    /// Per id, `settles` when its first notice since the last full drain
    /// of events came: a handing out now happened no earlier.
    first_notice: BTreeMap<u64, (u32, u32)>,
    /// The application's verdicts (and remembered ones).
    verdicts: BTreeMap<u64, Verdict>,
    /// Ids of the notices the relay sent (for acknowledgements and
    /// automatic refusals).
    noticed: BTreeSet<u64>,
    /// Ids remembered as settled at the start.
    remembered: BTreeSet<u64>,
}

fn listen_config(setup: u8) -> ListenConfig<'static> {
    const ONLY_ADA: &[&str] = &["ada"];
    let policy = (setup >> NOTICE_POLICY_SHIFT) & 3;
    let mut config = ListenConfig {
        policy: Policy {
            max_size: if policy & 1 != 0 { 100 } else { u64::MAX },
            accept_from: if policy & 2 != 0 {
                AcceptFrom::Only(ONLY_ADA)
            } else {
                AcceptFrom::Any
            },
        },
        ..ListenConfig::default()
    };
    if setup & NOTICE_TINY_TIMERS != 0 {
        config.retransmit_timeout = Duration::from_millis(0);
        config.relisten_interval = Duration::from_millis(1);
    }
    config
}

impl<const N: usize> Driven for Listener<'_, N> {
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
        ListenConfig::default().idle_timeout
    }
}

pub(super) fn drive_listener<const N: usize>(setup: u8, input: Input<'_>) -> Summary {
    let config = listen_config(setup);
    let mut l = Listener::<N>::new(config, ME);
    let mut book = ListenBook::default();
    if setup & NOTICE_REMEMBER != 0 {
        for (id, v) in [
            (1, Verdict::Confirmed),
            (2, Verdict::Refused(RefuseReason::Declined)),
        ] {
            if l.remember_settled(id, v).is_ok() {
                book.remembered.insert(id);
                book.verdicts.insert(id, v);
            }
        }
    }
    let book = std::cell::RefCell::new(book);
    let strict = N >= IDS.len();
    let mut notices = 0u64;
    let mut summary = run(
        &mut l,
        input,
        &mut |msg| {
            let mut book = book.borrow_mut();
            match msg {
                Message::Notice(n) => {
                    book.noticed.insert(n.id);
                    let now = (
                        book.settles.get(&n.id).copied().unwrap_or(0),
                        book.orphanings,
                    );
                    book.first_notice.entry(n.id).or_insert(now);
                }
                Message::Error(e)
                    if e.code == ErrorCode::UnknownNotice
                        && (e.kind == Kind::Receipt as u8
                            || e.kind == Kind::NoticeRefuse as u8) =>
                {
                    book.orphanings += 1;
                }
                // What may let a small ledger forget an id handed out: its
                // `Settled` event can be dropped from a full event queue.
                Message::Settled(s) => *book.settles.entry(s.id).or_default() += 1,
                _ => {}
            }
        },
        &mut |_, msg, raw| {
            let book = book.borrow();
            match msg {
                Message::Hello(h) => {
                    assert_eq!(h.role, Role::Terminal);
                    assert!(
                        raw <= pickup_proto::frame::MIN_FRAME_LEN,
                        "hello over 64 bytes"
                    );
                }
                Message::TerminalAuth(a) => assert_eq!(a.terminal, ME.name),
                Message::ChallengeAnswer(_) | Message::Listen | Message::Keepalive => {}
                Message::Goodbye => {}
                Message::NoticeAck(a) => assert!(
                    book.noticed.contains(&a.id),
                    "NoticeAck for {}, which the relay never noticed",
                    a.id
                ),
                Message::Receipt(r) => assert_eq!(
                    book.verdicts.get(&r.id),
                    Some(&Verdict::Confirmed),
                    "Receipt for {}, which the application did not confirm",
                    r.id
                ),
                Message::NoticeRefuse(r) => {
                    let policy = book.noticed.contains(&r.id)
                        && matches!(r.reason, RefuseReason::TooLarge | RefuseReason::Sender);
                    match book.verdicts.get(&r.id) {
                        Some(Verdict::Refused(why)) if *why == r.reason => {}
                        None if policy => {}
                        // A small ledger forgets settled ids (the oldest
                        // first): the policy may refuse one anew.
                        Some(_) if policy && !strict => {}
                        other => {
                            panic!("NoticeRefuse {r:?}, but the application's verdict is {other:?}")
                        }
                    }
                }
                other => panic!("a listener never sends {other:?}"),
            }
        },
        &mut |l| {
            for _ in 0..MAX_DRAIN {
                let Some(e) = l.poll_event() else {
                    book.borrow_mut().first_notice.clear();
                    return;
                };
                let mut book = book.borrow_mut();
                match e {
                    ListenEvent::Notice(n) => {
                        notices += 1;
                        assert!(
                            !book.remembered.contains(&n.id) || !strict,
                            "notice {} handed out, but it was settled before the start",
                            n.id
                        );
                        // Settled since the last handing out (the counts
                        // are bounds: the listener queued the event at some
                        // notice since the last drain).
                        let now = (
                            book.settles.get(&n.id).copied().unwrap_or(0),
                            book.orphanings,
                        );
                        let low = book.first_notice.get(&n.id).copied().unwrap_or(now);
                        if let Some(then) = book.handed.insert(n.id, low) {
                            assert!(
                                !strict && (now.0 > then.0 || now.1 > then.1),
                                "notice {} handed to the application twice",
                                n.id
                            );
                        }
                        // Only the ids the relay sent.
                        assert!(book.noticed.contains(&n.id), "notice {} invented", n.id);
                    }
                    ListenEvent::AutoRefused { id, reason } => {
                        assert!(book.noticed.contains(&id), "auto-refused {id} invented");
                        assert!(!book.handed.contains_key(&id) || !strict);
                        book.verdicts.entry(id).or_insert(Verdict::Refused(reason));
                    }
                    _ => {}
                }
            }
        },
        &mut |l, input| {
            let sel = input.byte()?;
            let id = IDS[usize::from(sel >> 2) % IDS.len()];
            let verdict = match sel % 4 {
                0 | 1 => Verdict::Confirmed,
                2 => Verdict::Refused(REASONS[usize::from(sel >> 5) % REASONS.len()]),
                _ => {
                    // remember_settled mid-run (what a driver restores).
                    let v = Verdict::Confirmed;
                    let mut book = book.borrow_mut();
                    if !book.verdicts.contains_key(&id) && l.remember_settled(id, v).is_ok() {
                        book.verdicts.insert(id, v);
                        *book.settles.entry(id).or_default() += 1;
                    }
                    return Some(());
                }
            };
            let r = match verdict {
                Verdict::Confirmed => l.confirm(id),
                Verdict::Refused(why) => l.refuse(id, why),
            };
            let mut book = book.borrow_mut();
            match r {
                Ok(()) => {
                    // A small ledger may have forgotten a settled id: a
                    // new verdict on it is the application's to give.
                    if !strict {
                        book.verdicts.insert(id, verdict);
                    }
                    let was = *book.verdicts.entry(id).or_insert(verdict);
                    // An id settled by another session keeps no verdict here.
                    if let Some(v) = l.verdict(id) {
                        assert_eq!(v, was, "verdict of {id} changed");
                    }
                }
                Err(notice::VerdictError::Decided(v)) => {
                    assert_ne!(v, verdict);
                    let policy = book.noticed.contains(&id)
                        && matches!(
                            v,
                            Verdict::Refused(RefuseReason::TooLarge | RefuseReason::Sender)
                        );
                    if strict && !policy {
                        assert_eq!(book.verdicts.get(&id), Some(&v), "a verdict nobody gave");
                    }
                }
                Err(_) => {}
            }
            Some(())
        },
        &|l| l.error().map(|e| format!("{e:?}")),
    );
    // The relay's notices feed the checks: record them as they go in.
    let _ = &mut summary;
    summary.data_bytes = notices;
    summary
}
