//! What the notice actors' events mean to the run: the sender's
//! requests and answers, the listeners' notices and settlements, the
//! downloads they start, and the crashes timed on purpose.

use super::*;

impl World<'_> {
    /// Makes the sender's current request, if it is due.
    fn sender_next(&mut self, i: usize) {
        let n = self.notices.as_ref().expect("a seed with notices");
        let step = n.plan[n.step];
        let code = self.batches[0].code.expect("pushed after the grant");
        let due = step != Step::Status || n.status_at.is_none_or(|t| t <= self.now);
        let (name, push_id) = match step {
            Step::Push(t) => (n.targets[t].name, n.targets[t].push_id),
            Step::Status => ("", 0),
        };
        let Some(Machine::Send { session, .. }) = self.actors[i].machine.as_mut() else {
            return;
        };
        if !due || session.is_busy() {
            return;
        }
        let made = match step {
            Step::Push(_) => session.push(push_id, code, name),
            Step::Status => session.status(code),
        };
        made.unwrap_or_else(|e| panic!("the sender refused {step:?}: {e}"));
        self.notices().status_at = None;
    }

    /// Starts or restarts the sender: its request goes out again.
    pub(in crate::sim) fn sender_started(&mut self, i: usize) {
        self.sender_next(i);
    }

    /// The next notice timer: the sender's status, a forced crash.
    pub(in crate::sim) fn notice_timer(&self) -> Option<Instant> {
        let n = self.notices.as_ref()?;
        let sender = &self.actors[n.sender];
        let status = n.status_at.filter(|_| sender.outcome.is_none());
        [status, n.crash_at].into_iter().flatten().min()
    }

    pub(in crate::sim) fn fire_notice_timers(&mut self) {
        let Some(n) = self.notices.as_mut() else {
            return;
        };
        let now = self.now;
        if n.crash_at.is_some_and(|t| t <= now) {
            n.crash_at = None;
            self.trace(format_args!("notices: a crash on purpose"));
            self.report.notice_crashes += 1;
            self.crash_relay();
        }
        let n = self.notices.as_ref().expect("checked");
        let sender = n.sender;
        if n.status_at.is_some_and(|t| t <= now) && self.actors[sender].outcome.is_none() {
            self.sender_next(sender);
        }
    }

    /// Crashes the relay soon, if `flag` of the notices is still set.
    pub(super) fn crash_soon(&mut self, flag: fn(&mut Notices) -> &mut bool) {
        let now = self.now;
        let n = self.notices();
        if std::mem::take(flag(n)) {
            let at = now + Duration::from_millis(n.rng.range(0, 30));
            n.crash_at = Some(n.crash_at.map_or(at, |c| c.min(at)));
        }
    }

    pub(in crate::sim) fn on_send_event(&mut self, i: usize, event: SendEvent) {
        match event {
            SendEvent::Delivery(d) => {
                let n = self.notices();
                let t = n
                    .targets
                    .iter()
                    .position(|t| t.push_id == d.push_id)
                    .unwrap_or_else(|| panic!("a delivery of a push never made: {d:?}"));
                assert_eq!(d.terminal.as_str(), n.targets[t].name, "delivery's target");
                let before = n.reported.insert(d.push_id, d.state);
                if before.is_some_and(is_final) {
                    assert_eq!(before, Some(d.state), "a final delivery changed: {d:?}");
                }
                assert_eq!(Some(d.code), self.batches[0].code, "delivery's code");
                self.report.notices_reported += 1;
            }
            SendEvent::Done(RequestKind::Push) => {
                self.notices().step += 1;
                self.sender_next(i);
            }
            SendEvent::Done(RequestKind::Status) => {
                let now = self.now;
                let n = self.notices();
                let all_final = n
                    .targets
                    .iter()
                    .all(|t| n.reported.get(&t.push_id).is_some_and(|s| is_final(*s)));
                if all_final {
                    self.finish_notices(i);
                } else {
                    let at =
                        now + Duration::from_millis(n.rng.range(n.status_gap, 2 * n.status_gap));
                    n.status_at = Some(at);
                    n.status_gap = (n.status_gap * 2).min(300_000);
                }
            }
            SendEvent::Refused {
                request: RequestKind::Push,
                code: ErrorCode::Expired | ErrorCode::UnknownCode,
                ..
            } if self.expired(Job::Upload(0)) => {
                // Too late to push: nothing was accepted, and the
                // deliveries made before are expired too.
                self.notices().abandoned = true;
                self.end_notices();
            }
            SendEvent::Refused { .. } | SendEvent::Failed(_) => {
                panic!("the sender got {event:?}; {}", self.status())
            }
            SendEvent::LinkLost => self.close(i, Close::Graceful),
            _ => {}
        }
    }

    /// The sender knows every delivery is final: the listeners whose
    /// delivery expired (they will not be settled) stop, and it stops.
    fn finish_notices(&mut self, sender: usize) {
        let n = self.notices.as_ref().expect("a seed with notices");
        let expired: Vec<usize> = n
            .targets
            .iter()
            .filter(|t| n.reported[&t.push_id] == DeliveryState::Expired)
            .map(|t| t.listener)
            .collect();
        for l in expired {
            if self.actors[l].outcome.is_none() {
                self.end_actor(l);
            }
        }
        self.end_actor(sender);
    }

    pub(in crate::sim) fn on_listen_event(&mut self, i: usize, t: usize, event: ListenEvent) {
        match event {
            ListenEvent::Notice(notice) => {
                assert_eq!(notice.sender.as_str(), SENDER, "notice's sender");
                assert_eq!(Some(notice.code), self.batches[0].code, "notice's code");
                let target = &mut self.notices().targets[t];
                assert!(
                    !target.refuses,
                    "a notice outside the policy reached the application"
                );
                assert!(
                    !target.persisted.contains_key(&notice.id),
                    "notice {} handed to {} again after its application decided it",
                    notice.id,
                    target.name
                );
                assert!(
                    target.shown.insert(notice.id),
                    "notice {} handed to {} twice by one listener",
                    notice.id,
                    target.name
                );
                self.report.notices_shown += 1;
                if self.notices().nosy == Some(t) {
                    self.guess_neighbours(i, t, notice.id);
                }
                // The application downloads the batch as the terminal.
                let at = self.now + Duration::from_millis(self.notices().rng.range(0, 2_000));
                self.add_actor(Job::Fetch { t, id: notice.id }, Some(at));
            }
            ListenEvent::AutoRefused { id, reason } => {
                let target = &mut self.notices().targets[t];
                assert!(target.refuses, "{} refused a notice it takes", target.name);
                assert_eq!(reason, RefuseReason::TooLarge);
                target
                    .persisted
                    .insert(id, (Verdict::Refused(reason), false));
            }
            ListenEvent::Settled { id } => {
                let target = &mut self.notices().targets[t];
                let Some((_, settled)) = target.persisted.get_mut(&id) else {
                    panic!(
                        "{} settled notice {id} its application never decided",
                        target.name
                    )
                };
                *settled = true;
                target.settled = true;
                self.end_actor(i);
            }
            ListenEvent::UnknownNotice { id } => {
                // A guess, or a delivery the relay no longer has: only
                // once expired. An `Error` names no id (PROTOCOL.md §11),
                // so a late answer to a repeated guess is taken for the
                // verdict sent after it: a target that guessed may see
                // its own id here. Its verdict is held, not lost (it goes
                // out again with the next notice of that id), and the
                // checks at the end still ask for one delivery each.
                let target = &self.notices().targets[t];
                let own = !target.guessed.contains(&id);
                let ambiguous = !target.guessed.is_empty();
                let expired = self.expired(Job::Upload(0));
                assert!(
                    !own || ambiguous || expired,
                    "the relay forgot notice {id} before its batch expired"
                );
                // Its own verdict, held on a stale answer: the application
                // gives it again (its Settled may have been lost).
                if own && ambiguous && !expired {
                    if let Some(Machine::Listen { session, .. }) = self.actors[i].machine.as_mut() {
                        let _ = session.confirm(id);
                    }
                }
            }
            ListenEvent::Failed(e) => panic!("listener {t} failed: {e}; {}", self.status()),
            ListenEvent::LinkLost => self.close(i, Close::Graceful),
            _ => {}
        }
    }

    /// What a notice's download reports.
    pub(in crate::sim) fn on_fetch_event(
        &mut self,
        i: usize,
        t: usize,
        id: u64,
        event: download::Event,
    ) {
        match event {
            download::Event::Complete | download::Event::Verified { .. } => {
                let Some(Machine::Down { sink, .. }) = &self.actors[i].machine else {
                    unreachable!("a download's events")
                };
                let spec = &self.specs[0];
                let complete = matches!(event, download::Event::Complete);
                for (f, content) in spec.contents.iter().enumerate() {
                    if complete || event == (download::Event::Verified { file: f as u16 }) {
                        assert!(
                            sink.files[f] == *content,
                            "notice download: file {f} differs"
                        );
                        assert!(!complete || sink.finished[f], "file {f} not finished");
                    }
                }
                if complete {
                    self.actors[i].outcome = Some(Ok(()));
                    self.fetched(t, id);
                }
            }
            download::Event::Failed(e) => self.fetch_failed(i, e),
            download::Event::LinkLost => self.close(i, Close::Graceful),
            _ => {}
        }
    }

    /// A notice's download completed with the right bytes: the
    /// application persists its decision, then confirms.
    fn fetched(&mut self, t: usize, id: u64) {
        let target = &mut self.notices().targets[t];
        target.fetched = true;
        target.persisted.insert(id, (Verdict::Confirmed, false));
        *target.confirmed.entry(id).or_default() += 1;
        let listener = target.listener;
        if let Some(Machine::Listen { session, .. }) = self.actors[listener].machine.as_mut() {
            session
                .confirm(id)
                .unwrap_or_else(|e| panic!("confirming notice {id}: {e:?}"));
        }
        self.crash_soon(|n| &mut n.crash_after_confirm);
    }

    /// The nosy target's application confirms the ids next to its own,
    /// which may be other targets' deliveries, without persisting them.
    fn guess_neighbours(&mut self, i: usize, t: usize, id: u64) {
        for guess in [id.saturating_sub(1), id + 1] {
            if guess == 0 || !self.notices().targets[t].guessed.insert(guess) {
                continue;
            }
            if let Some(Machine::Listen { session, .. }) = self.actors[i].machine.as_mut() {
                session
                    .confirm(guess)
                    .unwrap_or_else(|e| panic!("guessing notice {guess}: {e:?}"));
            }
        }
    }

    /// A notice's download failed: only because the batch expired.
    fn fetch_failed(&mut self, i: usize, e: download::Error) {
        let expired = matches!(
            e,
            download::Error::Relay(ErrorCode::Expired | ErrorCode::UnknownCode)
        ) && self.expired(Job::Upload(0));
        assert!(
            expired,
            "a notice's download failed: {e}; {}",
            self.status()
        );
        self.end_actor(i);
    }
}
