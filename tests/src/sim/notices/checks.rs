//! The notices' checks: on what the relay sends the notice actors (the
//! tap), and at the end of the run.

use super::*;

impl World<'_> {
    /// Checks a frame the relay sent to a notice actor (the tap).
    pub(in crate::sim) fn check_notice_reply(&mut self, job: Job, msg: &OwnedMsg) {
        let unix = self.now.as_millis() / 1000;
        let expired = self.expired(Job::Upload(0));
        let total = self.specs[0].total();
        match (job, msg) {
            (
                Job::Listen(t),
                OwnedMsg::Notice {
                    id,
                    code,
                    total_size,
                },
            ) => {
                assert_eq!(Some(*code), self.batches[0].code, "notice's code");
                assert_eq!(*total_size, total, "notice's size");
                let target = &self.notices.as_ref().expect("notices").targets[t];
                let record = self
                    .store
                    .delivery_by_push(SENDER, target.push_id)
                    .unwrap_or_else(|e| panic!("store failed: {e}"))
                    .unwrap_or_else(|| panic!("notice {id} to {} of no push", target.name));
                assert_eq!(record.id, *id, "{} got another push's notice", target.name);
                let target = &mut self.notices().targets[t];
                target.ids.insert(*id);
                assert_eq!(target.ids.len(), 1, "two deliveries of one push");
            }
            (Job::Listen(t), OwnedMsg::Settled { id }) => {
                let target = &self.notices.as_ref().expect("notices").targets[t];
                assert!(
                    target.ids.contains(id),
                    "{} told notice {id} is settled, not its own",
                    target.name
                );
            }
            (Job::Push, OwnedMsg::Delivery { push_id, state }) => {
                self.crash_soon(|n| &mut n.crash_after_push);
                let n = self.notices.as_ref().expect("notices");
                let Some(target) = n.targets.iter().find(|t| t.push_id == *push_id) else {
                    panic!("a delivery of push {push_id}, never made");
                };
                match state {
                    DeliveryState::Delivered => assert!(
                        target.confirmed.values().sum::<u32>() > 0,
                        "delivered to {}, whose application confirmed nothing",
                        target.name
                    ),
                    DeliveryState::Refused => {
                        assert!(target.refuses, "{} refused nothing", target.name)
                    }
                    DeliveryState::Expired => {
                        assert!(expired, "delivery expired at {unix}, before its batch")
                    }
                    _ => {}
                }
            }
            (
                Job::Fetch { .. },
                OwnedMsg::Data {
                    file,
                    offset,
                    bytes,
                },
            ) => {
                // The batch may outlive its code for a delivery (offline,
                // or read lately), so no store lookup: the bytes are right.
                let content = &self.specs[0].contents[usize::from(*file)];
                let start = *offset as usize;
                assert!(
                    start + bytes.len() <= content.len()
                        && bytes[..] == content[start..start + bytes.len()],
                    "a notice's download was served wrong bytes of file {file} at {start}"
                );
                self.crash_soon(|n| &mut n.crash_mid_download)
            }
            (Job::Fetch { .. }, OwnedMsg::Entry { index, sha1, .. }) => {
                let content = &self.specs[0].contents[usize::from(*index)];
                assert_eq!(*sha1, Sha1Digest::of(content), "entry {index} of a notice");
            }
            _ => {}
        }
    }

    /// At the end: every push delivered exactly once, refused, or expired.
    pub(in crate::sim) fn check_notices_at_end(&mut self) {
        let Some(n) = self.notices.as_ref() else {
            return;
        };
        let expired = self.expired(Job::Upload(0));
        let code = self.batches[0].code;
        for t in &n.targets {
            let state = n.reported.get(&t.push_id).copied();
            let record = self
                .store
                .delivery_by_push(SENDER, t.push_id)
                .unwrap_or_else(|e| panic!("store failed: {e}"));
            assert!(
                t.ids.len() <= 1,
                "{} got {} deliveries",
                t.name,
                t.ids.len()
            );
            let confirmations: u32 = t.confirmed.values().sum();
            assert!(
                confirmations <= 1,
                "{} confirmed {confirmations} times",
                t.name
            );
            match state {
                None => assert!(
                    n.abandoned && expired,
                    "push to {} never reported to the sender",
                    t.name
                ),
                Some(DeliveryState::Delivered) => {
                    assert!(t.fetched && confirmations == 1 && !t.refuses);
                    let id = t.ids.first().expect("a delivered notice");
                    assert_eq!(t.persisted.get(id).map(|p| p.0), Some(Verdict::Confirmed));
                }
                Some(DeliveryState::Refused) => assert!(t.refuses && confirmations == 0),
                Some(DeliveryState::Expired) => {
                    assert!(expired, "delivery to {} expired before its batch", t.name)
                }
                Some(s) => panic!("push to {} ended {s:?}", t.name),
            }
            if let Some(record) = record {
                assert_eq!(record.terminal, t.name, "the delivery's target");
                assert_eq!(Some(record.code), code);
                assert_eq!(Some(record.state), state, "the sender's last view of it");
            } else {
                // Forgotten only after its batch expired.
                assert!(expired, "the delivery to {} is gone", t.name);
            }
            match state {
                Some(DeliveryState::Delivered) => self.report.notices_delivered += 1,
                Some(DeliveryState::Refused) => self.report.notices_refused += 1,
                _ => self.report.notices_expired += 1,
            }
        }
        if let Some(code) = code {
            let all = self
                .store
                .deliveries_of(SENDER, &code_key(&code), 64)
                .unwrap_or_else(|e| panic!("store failed: {e}"));
            assert!(
                all.len() <= n.targets.len(),
                "{} deliveries of {} pushes",
                all.len(),
                n.targets.len()
            );
        }
    }
}
