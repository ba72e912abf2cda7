//! Addressed delivery in the simulation (PROTOCOL.md §11).
//!
//! In about a third of the seeds (drawn from a stream of their own, so
//! every other seed runs exactly as before, and independent of the named
//! files' third) the relay's directory holds a sender user with a token
//! and 1–3 target terminals, owned by the sender or by a friend who allows
//! it to push. Then, over the same faulty links, crashes and cuts:
//!
//! - once the first batch's upload is complete, a `notice::Sender`
//!   pushes its code to each target with a fixed `push_id` (sometimes
//!   twice: the retry must make no second delivery), then asks
//!   `DeliveryStatus` now and then until every delivery is final;
//! - each target runs a `notice::Listener` from the start; on each
//!   notice its application downloads the batch with a
//!   `download::Session` authenticated as the terminal, then confirms the
//!   id; a target whose policy's `max_size` is below the batch's size
//!   refuses it instead, without the application seeing it;
//! - a target restarts keeping only what an application persists: the
//!   ids it decided (`remember_settled`); its download dies with it;
//! - besides the seed's random crashes, the relay crashes on purpose just
//!   after a push is answered (before or while its notice goes out), in
//!   the middle of a notice's download and just after a confirmation.
//!
//! The checks: a notice reaches the application of its target only, once
//! per listener, and never again once the application has decided it;
//! every `Settled` names the delivery of the terminal it is sent to; the
//! sender's `Delivered` only after that terminal's application confirmed,
//! `Refused` only for a refusing target, `Expired` only after the batch's
//! expiry; at the end each push is delivered exactly once with
//! byte-identical files, refused, or reported expired, as the store also
//! says, with one delivery per push whatever the retries.

use std::collections::{BTreeMap, BTreeSet};

use pickup_proto::identity::{DeviceKey, TerminalIdentity};
use pickup_proto::message::{AuthToken, DeliveryState, RefuseReason};
use pickup_proto::notice::{
    ListenConfig, ListenEvent, Listener, Policy, RequestKind, SendConfig, SendEvent, Sender,
    Verdict,
};
use pickup_relay::directory::Directory;
use pickup_relay::mailbox::Mailbox;

use super::*;

mod checks;
mod events;

/// The user who pushes.
pub const SENDER: &str = "sim-sender";
/// A user who owns some targets and allows [`SENDER`] to push to them.
pub const FRIEND: &str = "sim-friend";
/// [`SENDER`]'s token.
const TOKEN: AuthToken = AuthToken([0x70; 16]);
/// The targets' names (a seed uses the first 1–3).
const TARGETS: [&str; 3] = ["sim-target-0", "sim-target-1", "sim-target-2"];
/// Ids a listener records: far more than one delivery needs.
pub(super) const LEDGER: usize = 8;

/// Mixed into a seed for the notices stream (see [`named`]'s salt).
const NOTICES_SALT: u64 = 0x4e4f_5449_4345_5321;

/// Whether `seed` runs with addressed delivery (one seed in three).
pub fn enabled(seed: u64) -> bool {
    SimRng::new(seed ^ NOTICES_SALT).chance(333_333)
}

/// One target terminal and what its application knows.
#[derive(Debug)]
pub(super) struct Target {
    name: &'static str,
    key: DeviceKey,
    push_id: u64,
    /// Its policy's `max_size` is below the batch: it refuses by itself.
    refuses: bool,
    /// The actor listening as it.
    listener: usize,
    /// What its application persisted: the ids it decided, how, and
    /// whether the relay said `Settled` since.
    persisted: BTreeMap<u64, (Verdict, bool)>,
    /// Ids handed to the current listener (a restart begins a new one).
    shown: BTreeSet<u64>,
    /// How often the application confirmed each id.
    confirmed: BTreeMap<u64, u32>,
    /// Every notice id the relay sent this terminal.
    ids: BTreeSet<u64>,
    /// The listener saw `Settled` for its delivery.
    settled: bool,
    /// A download of the batch completed with the right bytes.
    fetched: bool,
    /// Ids of other deliveries this (nosy) target confirmed as a guess:
    /// the relay must answer `UnknownNotice`, never `Settled`.
    guessed: BTreeSet<u64>,
}

/// What the sender does, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Push to target `t` (the same `push_id` every time).
    Push(usize),
    /// Ask `DeliveryStatus` until every delivery is final.
    Status,
}

/// The notices side of a seed.
#[derive(Debug)]
pub(super) struct Notices {
    rng: SimRng,
    pub(super) targets: Vec<Target>,
    sender: usize,
    plan: Vec<Step>,
    step: usize,
    /// When to ask for the status next.
    status_at: Option<Instant>,
    /// The sender's last view of each push's delivery, by `push_id`.
    reported: BTreeMap<u64, DeliveryState>,
    /// The batch expired before it could be pushed: nothing was accepted.
    abandoned: bool,
    /// Crash the relay after the first `Delivery`, the first byte of a
    /// notice's download, the first confirmation (each once).
    crash_after_push: bool,
    crash_mid_download: bool,
    crash_after_confirm: bool,
    pub(super) crash_at: Option<Instant>,
    /// A target that comes only after the batch expired (its delivery
    /// must be reported `Expired`); such a seed's codes live an hour and
    /// its deliveries never go offline first.
    pub(super) away: Option<usize>,
    /// Milliseconds between status requests: doubles up to five minutes,
    /// so that waiting for an expiry costs few steps.
    status_gap: u64,
    /// A target that, once notified, confirms its neighbours' ids too
    /// (ids are small and sequential): a receipt by the wrong terminal.
    nosy: Option<usize>,
}

/// Adds the sender, its friend and the targets to `dir`; the actors'
/// indices are filled in by [`World::add_notice_actors`].
pub(super) fn setup(
    seed: u64,
    dir: &MemoryDirectory,
    now_secs: u64,
    size: u64,
    named: bool,
) -> Notices {
    let mut rng = SimRng::new(seed ^ NOTICES_SALT ^ 0x5eed);
    let fail = |e| panic!("setting up the notices' directory: {e}");
    dir.add_user(SENDER, "sim password", now_secs)
        .unwrap_or_else(fail);
    dir.add_user(FRIEND, "sim password", now_secs)
        .unwrap_or_else(fail);
    dir.add_token(SENDER, &TOKEN, now_secs + 30 * 86_400)
        .unwrap_or_else(fail);
    dir.allow_sender(FRIEND, SENDER, true).unwrap_or_else(fail);
    let n = rng.range(1, 3) as usize;
    let retry = rng.chance(500_000);
    let mut targets = Vec::new();
    let mut plan = Vec::new();
    for (t, name) in TARGETS.iter().enumerate().take(n) {
        let key = DeviceKey([0x30 + t as u8; 16]);
        let owner = if rng.chance(500_000) { FRIEND } else { SENDER };
        dir.add_terminal(name, owner, key, now_secs)
            .unwrap_or_else(fail);
        targets.push(Target {
            name,
            key,
            push_id: 0x7000 + t as u64,
            // An empty batch fits every policy.
            refuses: rng.chance(250_000) && size > 0,
            listener: usize::MAX,
            persisted: BTreeMap::new(),
            shown: BTreeSet::new(),
            confirmed: BTreeMap::new(),
            ids: BTreeSet::new(),
            settled: false,
            fetched: false,
            guessed: BTreeSet::new(),
        });
        plan.push(Step::Push(t));
    }
    if retry {
        // Again, after every first answer: the relay must answer with
        // the delivery it made.
        plan.extend((0..n).map(Step::Push));
    }
    plan.push(Step::Status);
    // Not with named files, whose codes must outlive their uploads.
    let away = (!named && rng.chance(250_000)).then(|| rng.below(n as u64) as usize);
    let nosy = (n > 1 && rng.chance(500_000)).then(|| rng.below(n as u64) as usize);
    Notices {
        nosy,
        away,
        status_gap: 2_000,
        crash_after_push: rng.chance(500_000),
        crash_mid_download: rng.chance(500_000),
        crash_after_confirm: rng.chance(500_000),
        rng,
        targets,
        sender: usize::MAX,
        plan,
        step: 0,
        status_at: None,
        reported: BTreeMap::new(),
        abandoned: false,
        crash_at: None,
    }
}

impl<'a> World<'a> {
    fn notices(&mut self) -> &mut Notices {
        self.notices.as_mut().expect("a seed with notices")
    }

    /// The sender (started once batch 0 is complete) and one listener
    /// per target, each starting within its first minute.
    pub(super) fn add_notice_actors(&mut self) {
        let sender = self.actors.len();
        self.add_actor(Job::Push, None);
        self.notices().sender = sender;
        for t in 0..self.notices().targets.len() {
            let at = EPOCH + Duration::from_millis(self.notices().rng.range(0, 60_000));
            // The away target starts once its batch expired (see
            // `batch_for_notices`).
            let at = (self.notices().away != Some(t)).then_some(at);
            let listener = self.actors.len();
            self.add_actor(Job::Listen(t), at);
            self.notices().targets[t].listener = listener;
        }
    }

    /// The machine of a notice actor (new, or after a restart).
    pub(super) fn notice_machine(&mut self, job: Job, sink: MemFiles) -> Machine<'a> {
        let slow = self.faults.bytes_per_ms != 0 && self.faults.bytes_per_ms < 100;
        let rto = Duration::from_millis(if slow { 8_000 } else { 2_000 });
        match job {
            Job::Push => {
                let config = SendConfig {
                    max_frame: 1024,
                    retransmit_timeout: rto,
                    idle_timeout: Duration::from_secs(if slow { 60 } else { 15 }),
                    keepalive_interval: Duration::from_secs(5),
                };
                Machine::Send {
                    session: Box::new(Sender::new(config, Credential::Token(TOKEN))),
                    config,
                    files: MemFiles::default(),
                }
            }
            Job::Listen(t) => {
                let total = self.specs[0].total();
                let target = &self.notices().targets[t];
                let max_size = if target.refuses {
                    total.saturating_sub(1)
                } else {
                    u64::MAX
                };
                let relisten = Duration::from_secs(if slow { 20 } else { 10 });
                let config = ListenConfig {
                    max_frame: 1024,
                    retransmit_timeout: rto,
                    relisten_interval: relisten,
                    idle_timeout: relisten + Duration::from_secs(if slow { 40 } else { 15 }),
                    policy: Policy {
                        max_size,
                        ..Policy::ACCEPT_ALL
                    },
                };
                let me = TerminalIdentity {
                    name: target.name,
                    key: target.key,
                };
                let mut session = Listener::<LEDGER>::new(config, me);
                // What the application does at start: a settled verdict is
                // remembered, one not yet settled is given again (the
                // relay may never send its notice again).
                for (&id, &(verdict, settled)) in &target.persisted {
                    let done = match (verdict, settled) {
                        (_, true) => session.remember_settled(id, verdict),
                        (Verdict::Confirmed, false) => session.confirm(id),
                        (Verdict::Refused(why), false) => session.refuse(id, why),
                    };
                    done.unwrap_or_else(|e| panic!("remembering notice {id}: {e:?}"));
                }
                Machine::Listen {
                    session: Box::new(session),
                    config,
                    files: sink,
                }
            }
            Job::Fetch { t, .. } => {
                let config = self.download_config(false);
                let code = self.batches[0].code.expect("a pushed batch has a code");
                let target = &self.notices().targets[t];
                let mut session = download::Session::new(config, code);
                session.authenticate(Credential::Terminal(TerminalIdentity {
                    name: target.name,
                    key: target.key,
                }));
                Machine::Down {
                    session: Box::new(session),
                    config,
                    sink,
                }
            }
            _ => unreachable!("not a notice actor: {job:?}"),
        }
    }

    /// Batch 0 is complete: the sender may push (or, if it expired
    /// first, nothing will be pushed and the notice actors stop).
    pub(super) fn batch_for_notices(&mut self, complete: bool) {
        let Some(n) = self.notices.as_mut() else {
            return;
        };
        if complete {
            let at = self.now + Duration::from_millis(n.rng.range(0, 10_000));
            let sender = n.sender;
            self.actors[sender].start_at = Some(at);
            if let Some(t) = n.away {
                let listener = n.targets[t].listener;
                let expires_at = self.batches[0]
                    .expires_at
                    .expect("a complete batch's expiry");
                let back = Instant::from_millis((expires_at + 60) * 1000);
                self.actors[listener].start_at = Some(back.max(self.now));
            }
        } else {
            n.abandoned = true;
            self.end_notices();
        }
    }

    /// Stops every notice actor still running.
    fn end_notices(&mut self) {
        for i in 0..self.actors.len() {
            if matches!(
                self.actors[i].job,
                Job::Push | Job::Listen(_) | Job::Fetch { .. }
            ) && self.actors[i].outcome.is_none()
            {
                self.end_actor(i);
            }
        }
    }

    fn end_actor(&mut self, i: usize) {
        self.actors[i].outcome = Some(Ok(()));
        self.actors[i].restart_at = None;
        self.actors[i].reconnect_at = None;
        self.actors[i].start_at = None;
        self.close(i, Close::Graceful);
    }

    /// A target restarts: its listener and download die; the new listener
    /// knows what the application persisted.
    pub(super) fn restart_listener(&mut self, i: usize, t: usize) {
        for d in 0..self.actors.len() {
            if matches!(self.actors[d].job, Job::Fetch { t: x, .. } if x == t)
                && self.actors[d].outcome.is_none()
            {
                self.actors[d].machine = None;
                self.end_actor(d);
            }
        }
        self.notices().targets[t].shown.clear();
        let machine = self.notice_machine(Job::Listen(t), MemFiles::default());
        self.actors[i].machine = Some(machine);
        if self.notices().rng.chance(300_000) {
            let at = self.now + Duration::from_millis(self.notices().rng.range(100, 30_000));
            self.actors[i].restart_at = Some(at);
        }
    }
}

fn is_final(s: DeliveryState) -> bool {
    matches!(
        s,
        DeliveryState::Delivered | DeliveryState::Refused | DeliveryState::Expired
    )
}
