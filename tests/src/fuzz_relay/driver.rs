//! The driver: runs the operations the input spells (connect, send, noise,
//! time, timers, crashes, sweeps, transmit) against the relay's sessions,
//! running their jobs as a transport would.

use std::collections::BTreeMap;
use std::sync::Arc;

use pickup_proto::code::Code;
use pickup_proto::frame::{self, Decoder, Frame};
use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::Message;
use pickup_proto::{Duration, Instant};
use pickup_relay::disclosure::{DisclosureMode, DisclosureSettings};
use pickup_relay::random::SeededRandom;
use pickup_relay::rate_limit::Peer;
use pickup_relay::store::memory::MemoryStore;
use pickup_relay::store::{FileContent, Store};
use pickup_relay::{Link, Relay, Session, Settings};

use super::{
    forwards, identity, notices, Fuzz, Input, RelaySummary, Terminal, CONTENTS, MAX_DRAIN, START,
    TERMINALS,
};

pub(super) fn run(data: &[u8], trace: bool) -> RelaySummary {
    let mut input = Input(data);
    let mut summary = RelaySummary::default();
    let Some(setup) = input.byte() else {
        return summary;
    };
    let mut settings = Settings {
        instant_upload: setup & 0x04 == 0,
        ack_delay: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(60),
        ..Settings::default()
    };
    if setup & 0x08 != 0 {
        settings.max_files_per_batch = 2;
        settings.max_file_size = 1000;
        settings.max_batch_size = 1500;
        settings.quota.disk_quota = 2000;
    }
    settings.disclosure = DisclosureSettings {
        mode: match setup >> 6 {
            0 => DisclosureMode::Threshold,
            1 => DisclosureMode::OwnerOnly,
            _ => DisclosureMode::Open,
        },
        threshold_max: 2,
    };
    if setup >> 6 == 3 {
        settings.auth.allow_anonymous_upload = false;
        settings.auth.allow_anonymous_download = false;
    }
    settings.push = notices::push_settings();
    settings.peers = identity::peers();
    if setup & 0x10 != 0 {
        settings.code_ttl_secs = 60;
        settings.expired_memory_secs = 120;
    }
    let link = Link {
        max_frame: [64, 256, 1024, 4096][usize::from(setup & 3)],
        window: 1024,
        encrypted: false,
        reliable: false,
    };
    let store = Arc::new(MemoryStore::new());
    let directory = identity::directory();
    let relay = Relay::with_directory(
        settings.clone(),
        store.clone(),
        directory.clone(),
        Box::new(SeededRandom::new(u64::from(setup))),
        START,
    );
    let mut fuzz = Fuzz {
        now: START,
        settings,
        link,
        store,
        directory,
        relay,
        terminals: [None, None, None],
        announced: [Vec::new(), Vec::new(), Vec::new()],
        batches: BTreeMap::new(),
        ids: identity::Run::default(),
        book: notices::Book::default(),
        forwards: forwards::Book::default(),
        out: vec![0; frame::max_encoded_len(frame::MAX_FRAME_LEN)],
        seed: u64::from(setup),
        trace,
        deferred: setup & 0x20 != 0,
    };
    fuzz.log(format_args!(
        "setup {setup:#04x}: {:?}, link {:?}",
        fuzz.settings, fuzz.link
    ));
    while let Some(op) = input.byte() {
        let t = usize::from(op / 10) % TERMINALS;
        let name = [
            "connect",
            "disconnect",
            "advance",
            "frame",
            "say",
            "noise",
            "crash",
            "sweep",
            "transmit",
            "timers",
        ];
        fuzz.log(format_args!(
            "op {} for terminal {t}",
            name[usize::from(op % 10)]
        ));
        let done = match op % 10 {
            0 => fuzz.connect(t),
            1 => {
                if let Some(mut term) = fuzz.terminals[t].take() {
                    term.session.handle_disconnected(fuzz.now);
                }
                Some(())
            }
            2 => input.u16().map(|ms| {
                // Large steps reach expiry: the high bit means seconds.
                let d = if ms & 0x8000 != 0 {
                    Duration::from_secs(u64::from(ms & 0x7fff))
                } else {
                    Duration::from_millis(u64::from(ms))
                };
                fuzz.now = fuzz.now + d;
            }),
            3 => {
                let frame = (|| {
                    let kind = input.byte()?;
                    let len = input.byte()?;
                    Some((kind, input.bytes(usize::from(len))?))
                })();
                frame.map(|(kind, body)| {
                    fuzz.frame(
                        t,
                        Frame {
                            version: 1,
                            kind,
                            body,
                        },
                    )
                })
            }
            4 => fuzz.plausible(t, &mut input),
            5 => {
                let noise = (|| {
                    let len = input.byte()?;
                    input.bytes(usize::from(len))
                })();
                noise.map(|n| fuzz.noise(t, n))
            }
            6 => {
                summary.crashes += 1;
                fuzz.crash();
                Some(())
            }
            7 => {
                let _ = fuzz.relay.sweep(fuzz.now);
                Some(())
            }
            8 => {
                fuzz.transmit(t, &mut summary);
                Some(())
            }
            _ => {
                fuzz.timers(&mut summary);
                Some(())
            }
        };
        if done.is_none() {
            break;
        }
        let (relay, now, deferred) = (fuzz.relay.clone(), fuzz.now, fuzz.deferred);
        for term in fuzz.terminals.iter_mut().flatten() {
            if deferred {
                if term.job.is_none() {
                    term.job = term.session.poll_job();
                }
            } else {
                term.run_jobs(&relay, now);
            }
        }
        fuzz.check_deliveries();
    }
    // Whatever is left must drain: the driver runs every job it is given.
    for t in 0..TERMINALS {
        let (relay, now) = (fuzz.relay.clone(), fuzz.now);
        if let Some(term) = fuzz.terminals[t].as_mut() {
            term.run_jobs(&relay, now);
        }
        fuzz.transmit(t, &mut summary);
    }
    summary
}

impl Terminal {
    /// Notes what the terminal sent, however it was made (plausible, raw
    /// frame or noise: the fuzzer may find a handle or a credential).
    fn sent(
        &mut self,
        ids: &identity::Run,
        book: &mut notices::Book,
        now: Instant,
        msg: &Message<'_>,
    ) {
        if let Message::Read(r) = msg {
            self.reading = Some((r.code, r.file));
        }
        identity::note_sent(&mut self.id, ids, msg);
        self.notices.may_be_terminal |= self.id.answered_as_terminal();
        self.notices.may_be_peer |= self.id.answered_as_peer();
        self.notices.users.extend(self.id.users().iter().cloned());
        notices::note_sent(&mut self.notices, book, now.as_millis() / 1000, msg);
        forwards::note_sent(&mut self.forwards, msg);
    }

    /// Runs the job taken and every job the session gives out, at once.
    fn run_jobs(&mut self, relay: &Relay, now: Instant) {
        for _ in 0..MAX_DRAIN {
            let Some(job) = self.job.take().or_else(|| self.session.poll_job()) else {
                return;
            };
            self.last_input = now;
            self.session.handle_job_done(now, job.run(relay));
        }
        panic!("the session never stops giving out jobs");
    }

    /// As a transport does before it reads more: runs jobs until the
    /// session asks for input again.
    pub(super) fn wait_for_input(&mut self, relay: &Relay, now: Instant) {
        for _ in 0..MAX_DRAIN {
            if self.session.wants_input() {
                return;
            }
            let Some(job) = self.job.take().or_else(|| self.session.poll_job()) else {
                // No job and no input wanted: its replies wait to be read
                // (over the outbox's bound). A transport would write them
                // before it reads again; this terminal sends before it
                // reads, and the session must survive that too.
                return;
            };
            self.last_input = now;
            self.session.handle_job_done(now, job.run(relay));
        }
        panic!("the session never asks for input again");
    }
}

impl Fuzz {
    pub(super) fn log(&self, args: core::fmt::Arguments<'_>) {
        if self.trace {
            eprintln!("[{:>8} ms] {args}", (self.now - START).as_millis());
        }
    }

    fn connect(&mut self, t: usize) -> Option<()> {
        if let Some(mut old) = self.terminals[t].take() {
            // The transport finishes the session's jobs after the link is
            // gone: what it received becomes durable.
            old.session.handle_disconnected(self.now);
            old.run_jobs(&self.relay, self.now);
        }
        if let Ok(session) =
            Session::new(self.relay.clone(), Peer::Sim(t as u64), self.link, self.now)
        {
            self.terminals[t] = Some(Terminal {
                session,
                decoder: Decoder::new(vec![0; frame::MAX_FRAME_LEN]),
                max_frame: frame::MIN_FRAME_LEN,
                code: None,
                nonces: BTreeMap::new(),
                reading: None,
                job: None,
                last_input: self.now,
                id: identity::Conn::default(),
                notices: notices::Conn::default(),
                forwards: forwards::Conn::default(),
            });
        }
        Some(())
    }

    fn frame(&mut self, t: usize, f: Frame<'_>) {
        let now = self.now;
        if let Some(term) = self.terminals[t].as_mut() {
            let msg = Message::decode(f);
            if let Ok(Message::Hello(h)) = msg {
                term.max_frame =
                    (h.max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN);
            }
            if let Ok(msg) = msg {
                term.sent(&self.ids, &mut self.book, now, &msg);
            }
            term.wait_for_input(&self.relay, now);
            term.last_input = now;
            crate::sim::hand_frame(&mut term.session, now, f);
        }
    }

    pub(super) fn message(&mut self, t: usize, msg: &Message<'_>) {
        let mut wire = vec![0u8; frame::max_encoded_len(frame::MAX_FRAME_LEN)];
        let Ok(n) = msg.encode(frame::MAX_FRAME_LEN, &mut wire) else {
            return;
        };
        let mut decoder = Decoder::new(vec![0u8; frame::MAX_FRAME_LEN]);
        let mut input = &wire[..n];
        if let Some(Ok(f)) = decoder.feed(&mut input) {
            if let Message::FileAnnounce(a) = msg {
                let content = CONTENTS
                    .iter()
                    .position(|c| Sha1Digest::of(c) == a.sha1 && c.len() as u64 == a.size);
                if let Some(c) = content {
                    let i = usize::from(a.index);
                    let announced = &mut self.announced[t];
                    if announced.len() <= i {
                        announced.resize(i + 1, usize::MAX);
                    }
                    announced[i] = c;
                }
            }
            if let Message::BatchOpen(_) = msg {
                self.announced[t].clear();
            }
            self.log(format_args!("terminal {t} says {msg:?}"));
            self.frame(t, f);
        }
    }

    fn noise(&mut self, t: usize, bytes: &[u8]) {
        let now = self.now;
        if let Some(term) = self.terminals[t].as_mut() {
            // The relay's own decoder, sized as its link says.
            let mut decoder = Decoder::new(vec![0u8; term.session.max_frame()]);
            let mut input = bytes;
            while let Some(r) = decoder.feed(&mut input) {
                term.wait_for_input(&self.relay, now);
                term.last_input = now;
                match r {
                    Ok(f) => {
                        // Noise may hold a whole credential: it counts.
                        if let Ok(msg) = Message::decode(f) {
                            term.sent(&self.ids, &mut self.book, now, &msg);
                        }
                        term.session.handle_frame(now, f)
                    }
                    Err(why) => term.session.handle_dropped(now, why),
                }
            }
        }
    }

    /// Drains terminal `t`'s output, checking each frame.
    fn transmit(&mut self, t: usize, summary: &mut RelaySummary) {
        for _ in 0..MAX_DRAIN {
            let Some(term) = self.terminals[t].as_mut() else {
                return;
            };
            let need = term.session.transmit_buffer_len();
            if self.out.len() < need {
                self.out.resize(need, 0);
            }
            let Some(n) = crate::sim::take_frame(&mut term.session, &mut self.out) else {
                if term.session.is_closed() {
                    self.terminals[t] = None;
                }
                return;
            };
            let wire = self.out[..n].to_vec();
            self.check(t, &wire, summary);
        }
        panic!("the relay's output never ran dry");
    }

    /// Fires every due timer, then checks none is left in the past.
    fn timers(&mut self, summary: &mut RelaySummary) {
        // The disk thread finishes the jobs it was given.
        for t in 0..TERMINALS {
            let now = self.now;
            if let Some(term) = self.terminals[t].as_mut() {
                if let Some(job) = term.job.take() {
                    term.last_input = now;
                    term.session.handle_job_done(now, job.run(&self.relay));
                }
            }
        }
        // A driver wakes a session whose doorbell rang.
        for term in self.terminals.iter_mut().flatten() {
            if term.session.doorbell().rung() {
                term.last_input = self.now;
                term.session.handle_wake(self.now);
            }
        }
        for t in 0..TERMINALS {
            for _ in 0..4 {
                let now = self.now;
                let Some(term) = self.terminals[t].as_mut() else {
                    break;
                };
                match term.session.poll_timeout() {
                    Some(due) if due <= now => {
                        term.last_input = now;
                        term.session.handle_timeout(now)
                    }
                    _ => break,
                }
                self.transmit(t, summary);
            }
            if let Some(term) = self.terminals[t].as_ref() {
                if let Some(due) = term.session.poll_timeout() {
                    assert!(due > self.now, "timer stuck at {due:?}: busy loop");
                }
            }
        }
    }

    /// The relay dies: sessions vanish, the store keeps only what is durable.
    ///
    /// Every ack was checked against the durable offset when it was sent;
    /// here the crash must keep every durable offset and exactly that many
    /// bytes. (A rejected file legitimately drops bytes it had acked, so
    /// offsets are compared with the store just before the crash.)
    fn crash(&mut self) {
        let before: Vec<(Code, Vec<u64>)> = self
            .batches
            .keys()
            .filter_map(|code| {
                let batch = self.lookup(*code)?;
                Some((*code, batch.files.iter().map(|f| f.received()).collect()))
            })
            .collect();
        for t in self.terminals.iter_mut() {
            *t = None;
        }
        self.store.crash();
        for (code, durable_before) in before {
            let batch = self.lookup(code).expect("a crash keeps live batches");
            for (f, record) in batch.files.iter().enumerate() {
                let kept = record.received();
                assert_eq!(
                    kept, durable_before[f],
                    "a crash changed file {f}'s durable offset"
                );
                if let FileContent::Partial { id, durable } = record.content {
                    let mut buf = vec![0u8; durable as usize + 1];
                    let n = self
                        .store
                        .read_partial(id, 0, &mut buf)
                        .expect("partial readable");
                    assert_eq!(
                        n as u64, durable,
                        "a crashed partial must hold exactly its durable bytes"
                    );
                }
            }
        }
        self.seed = self.seed.wrapping_add(1);
        self.relay = Relay::with_directory(
            self.settings.clone(),
            self.store.clone(),
            self.directory.clone(),
            Box::new(SeededRandom::new(self.seed)),
            self.now,
        );
    }
}
