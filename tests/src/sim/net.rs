//! The connections: moving frames through the faulty pipes, running the
//! relay sessions' jobs, timers, cuts and reconnects.

use super::*;

impl<'a> World<'a> {
    /// Drains both ends' output of actor `i`'s connection; whether anything moved.
    pub(super) fn transmit(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut moved = false;
        let World {
            actors,
            rng,
            faults,
            client_buf,
            relay_buf,
            fsync,
            deferred,
            trace,
            relay: shared,
            report,
            book,
            store,
            specs,
            ..
        } = self;
        let actor = &mut actors[i];
        let (Some(conn), Some(machine)) = (actor.conn.as_mut(), actor.machine.as_mut()) else {
            return false;
        };
        for _ in 0..10_000 {
            let n = drive!(machine, |s, files| {
                match drive::Machine::poll_transmit(&mut **s, now, files, client_buf) {
                    Ok(n) => n,
                    Err(never) => match never {},
                }
            });
            let Some(n) = n else { break };
            moved = true;
            if *trace {
                trace_client_frame(now, actor.id, &client_buf[..n]);
            }
            conn.to_relay.send(now, &client_buf[..n], faults, rng);
        }
        let mut frames = Vec::new();
        if let Some(relay) = conn.relay.as_mut() {
            // As the transports do: one job at a time, run off the
            // session's thread, taking `fsync` milliseconds (or at once).
            for _ in 0..100_000 {
                if conn.job.is_some() {
                    break;
                }
                let Some(job) = relay.poll_job() else { break };
                moved = true;
                if *deferred {
                    conn.job = Some((now + *fsync, job));
                } else {
                    report.jobs += 1;
                    let done = run_job(job, shared, book, store, specs, now);
                    relay.handle_job_done(now, done);
                    feed_relay(relay, &mut conn.relay_decoder, &mut conn.unfed, now, &[]);
                }
            }
            if relay_buf.len() < relay.transmit_buffer_len() {
                relay_buf.resize(relay.transmit_buffer_len(), 0);
            }
            for _ in 0..100_000 {
                let Some(n) = super::take_frame(relay, relay_buf) else {
                    break;
                };
                moved = true;
                frames.push(relay_buf[..n].to_vec());
                conn.to_client.send(now, &relay_buf[..n], faults, rng);
            }
            if relay.is_closed() && !conn.relay_done {
                conn.relay_done = true;
                moved = true;
            }
        }
        for wire in frames {
            self.check_relay_output(i, &wire);
        }
        moved
    }

    /// Closes actor `i`'s connection if a side is finished with it.
    pub(super) fn maybe_close(&mut self, i: usize) {
        let a = &self.actors[i];
        let Some(conn) = &a.conn else {
            return;
        };
        if conn.relay_done && conn.to_client.is_idle() {
            // The relay closed after sending its last frame: EOF at the terminal.
            self.close(i, Close::Graceful);
            return;
        }
        let finished = match &a.machine {
            Some(m) => drive!(m, |s| s.is_finished()),
            None => true,
        };
        if finished && conn.to_relay.is_idle() {
            // The terminal said goodbye and hangs up.
            self.close(i, Close::Graceful);
        }
    }

    /// Ends actor `i`'s connection; a terminal that is not done reconnects later.
    pub(super) fn close(&mut self, i: usize, how: Close) {
        let now = self.now;
        let Some(mut conn) = self.actors[i].conn.take() else {
            return;
        };
        self.trace(format_args!(
            "actor {}: connection closes ({how:?})",
            self.actors[i].id
        ));
        self.report.link.writes += conn.to_relay.stats.writes + conn.to_client.stats.writes;
        self.report.link.bytes += conn.to_relay.stats.bytes + conn.to_client.stats.bytes;
        self.report.link.dropped += conn.to_relay.stats.dropped + conn.to_client.stats.dropped;
        self.report.link.duplicated +=
            conn.to_relay.stats.duplicated + conn.to_client.stats.duplicated;
        self.report.link.flipped += conn.to_relay.stats.flipped + conn.to_client.stats.flipped;
        self.report.link.truncated +=
            conn.to_relay.stats.truncated + conn.to_client.stats.truncated;
        let (to_relay, to_client) = match how {
            Close::Graceful => {
                let mut up = Vec::new();
                while let Some(d) = conn.to_relay.receive(Instant::from_millis(u64::MAX)) {
                    up.extend(d);
                }
                let mut down = Vec::new();
                while let Some(d) = conn.to_client.receive(Instant::from_millis(u64::MAX)) {
                    down.extend(d);
                }
                (up, down)
            }
            Close::Cut => (
                conn.to_relay.cut(&mut self.rng),
                conn.to_client.cut(&mut self.rng),
            ),
            Close::RelayCrash => (Vec::new(), Vec::new()),
        };
        if how == Close::RelayCrash {
            // The process died: no goodbye, no settling of unsynced bytes,
            // and the job in flight never finished.
            conn.job = None;
            drop(conn.relay.take());
        } else if let Some(mut relay) = conn.relay.take() {
            // The transport finishes the session's jobs after the link is
            // gone (what it received becomes durable); here at once.
            let (shared, store, specs) = (&self.relay, &self.store, self.specs);
            let book = &mut self.book;
            let mut done = |relay: &mut Session, job: RelayJob, jobs: &mut u32| {
                *jobs += 1;
                relay.handle_job_done(now, run_job(job, shared, book, store, specs, now));
            };
            if let Some((_, job)) = conn.job.take() {
                done(&mut relay, job, &mut self.report.jobs);
            }
            let mut rest = if conn.relay_done {
                Vec::new()
            } else {
                to_relay.clone()
            };
            for _ in 0..100_000 {
                while let Some(job) = relay.poll_job() {
                    done(&mut relay, job, &mut self.report.jobs);
                }
                if rest.is_empty() && conn.unfed.is_empty() {
                    break;
                }
                let more = core::mem::take(&mut rest);
                feed_relay(
                    &mut relay,
                    &mut conn.relay_decoder,
                    &mut conn.unfed,
                    now,
                    &more,
                );
                if !relay.wants_input() || conn.unfed.is_empty() {
                    continue;
                }
            }
            relay.handle_disconnected(now);
            for _ in 0..100_000 {
                let Some(job) = relay.poll_job() else { break };
                done(&mut relay, job, &mut self.report.jobs);
            }
        }
        self.actors[i].conn = Some(conn);
        self.feed_client(i, &to_client);
        self.actors[i].conn = None;
        let actor = &mut self.actors[i];
        if let Some(m) = actor.machine.as_mut() {
            drive!(m, |s| s.handle_disconnected(now));
        }
        self.account(i);
        if self.actors[i].outcome.is_none() {
            let backoff = Duration::from_millis(self.rng.range(100, 3_000));
            self.actors[i].reconnect_at = Some(now + backoff);
        }
    }

    /// Feeds bytes that arrived at actor `i`'s terminal.
    pub(super) fn feed_client(&mut self, i: usize, bytes: &[u8]) {
        let now = self.now;
        let actor = &mut self.actors[i];
        let (Some(conn), Some(machine)) = (actor.conn.as_mut(), actor.machine.as_mut()) else {
            return;
        };
        let mut input = bytes;
        while let Some(r) = conn.client_decoder.feed(&mut input) {
            let Ok(f) = r else { continue };
            drive!(machine, |s, files| {
                match drive::Machine::handle_frame(&mut **s, now, f, files) {
                    Ok(()) => {}
                    Err(never) => match never {},
                }
            });
        }
    }

    /// Delivers everything that has arrived by now.
    pub(super) fn deliver(&mut self) {
        let now = self.now;
        for i in 0..self.actors.len() {
            while let Some(conn) = self.actors[i].conn.as_mut() {
                let mut progressed = false;
                if let Some(bytes) = conn.to_relay.receive(now) {
                    progressed = true;
                    if let Some(relay) = conn.relay.as_mut() {
                        feed_relay(relay, &mut conn.relay_decoder, &mut conn.unfed, now, &bytes);
                    }
                }
                if let Some(bytes) = conn.to_client.receive(now) {
                    progressed = true;
                    // Split arbitrarily: decoders must not care.
                    let cut = self.rng.below(bytes.len() as u64 + 1) as usize;
                    self.feed_client(i, &bytes[..cut]);
                    self.feed_client(i, &bytes[cut..]);
                }
                if !progressed {
                    break;
                }
            }
        }
    }

    /// Fires every timer that is due.
    pub(super) fn fire_timers(&mut self) {
        let now = self.now;
        for i in 0..self.actors.len() {
            if let Some(conn) = self.actors[i].conn.as_mut() {
                if conn.job.as_ref().is_some_and(|(t, _)| *t <= now) {
                    if let Some((_, job)) = conn.job.take() {
                        let done = run_job(
                            job,
                            &self.relay,
                            &mut self.book,
                            &self.store,
                            self.specs,
                            now,
                        );
                        self.report.jobs += 1;
                        if let Some(relay) = conn.relay.as_mut() {
                            relay.handle_job_done(now, done);
                            feed_relay(relay, &mut conn.relay_decoder, &mut conn.unfed, now, &[]);
                        }
                    }
                }
            }
            if let Some(relay) = self.actors[i].conn.as_mut().and_then(|c| c.relay.as_mut()) {
                if relay.poll_timeout().is_some_and(|t| t <= now) {
                    relay.handle_timeout(now);
                }
            }
            if self.actors[i].outcome.is_some() {
                continue;
            }
            if self.actors[i].start_at.is_some_and(|t| t <= now) {
                self.actors[i].start_at = None;
                self.start(i);
            }
            if self.actors[i].restart_at.is_some_and(|t| t <= now) {
                self.actors[i].restart_at = None;
                self.restart(i);
            }
            if self.actors[i].reconnect_at.is_some_and(|t| t <= now) {
                self.actors[i].reconnect_at = None;
                self.connect(i);
            }
            let actor = &mut self.actors[i];
            if let Some(m) = actor.machine.as_mut() {
                drive!(m, |s| if s.poll_timeout().is_some_and(|t| t <= now) {
                    s.handle_timeout(now)
                });
            }
        }
        if self.next_cut.is_some_and(|t| t <= now) {
            self.next_cut = self.cut_every.map(|d| self.poisson(d));
            let live: Vec<usize> = (0..self.actors.len())
                .filter(|&i| self.actors[i].conn.is_some())
                .collect();
            if !live.is_empty() {
                let i = live[self.rng.below(live.len() as u64) as usize];
                self.report.cuts += 1;
                self.close(i, Close::Cut);
            }
        }
        if self.next_crash.is_some_and(|t| t <= now) && self.crashes_left > 0 {
            self.crashes_left -= 1;
            self.next_crash = self.crash_every.map(|d| self.poisson(d));
            self.crash_relay();
        }
        self.fire_notice_timers();
        if self.next_sweep <= now {
            self.next_sweep = now + Duration::from_secs(10);
            if let Err(e) = self.relay.sweep(now) {
                panic!("sweep failed: {e}");
            }
        }
    }

    /// Opens a new connection for actor `i`.
    pub(super) fn connect(&mut self, i: usize) {
        let now = self.now;
        if self.actors[i].conn.is_some() {
            self.close(i, Close::Graceful);
            self.actors[i].reconnect_at = None;
        }
        self.report.connections += 1;
        let peer = Peer::Sim(self.actors[i].id);
        let (relay, refused) = match Session::new(self.relay.clone(), peer, self.link, now) {
            Ok(s) => (Some(s), None),
            Err(code) => {
                self.trace(format_args!(
                    "actor {}: refused with {code:?}",
                    self.actors[i].id
                ));
                (None, Some(code))
            }
        };
        let client_max = match &self.actors[i].machine {
            Some(Machine::Up { config, .. }) => config.max_frame,
            Some(Machine::Down { config, .. }) => config.max_frame,
            Some(Machine::Send { config, .. }) => config.max_frame,
            Some(Machine::Listen { config, .. }) => config.max_frame,
            None => return,
        } as usize;
        let mut conn = Conn {
            relay,
            to_relay: Pipe::new(),
            to_client: Pipe::new(),
            relay_decoder: Decoder::new(vec![0; self.link.max_frame()]),
            client_decoder: Decoder::new(vec![0; client_max]),
            tap: Decoder::new(vec![0; frame::MAX_FRAME_LEN]),
            relay_done: false,
            code: None,
            named_sha1s: Vec::new(),
            job: None,
            unfed: Vec::new(),
        };
        if let Some(code) = refused {
            let mut out = [0u8; 64];
            if let Some(n) = pickup_relay::session::refusal(code, &mut out) {
                conn.to_client
                    .send(now, &out[..n], &self.faults, &mut self.rng);
            }
            conn.relay_done = true;
        }
        self.actors[i].conn = Some(conn);
        if let Some(m) = self.actors[i].machine.as_mut() {
            drive!(m, |s| s.handle_connected(now));
        }
    }
}

impl World<'_> {
    /// Answers the doorbells, as the transports do: a session whose
    /// terminal was pushed to loads its new notices. Whether any rang.
    pub(super) fn ring_doorbells(&mut self) -> bool {
        let now = self.now;
        let mut rang = false;
        for a in &mut self.actors {
            if let Some(relay) = a.conn.as_mut().and_then(|c| c.relay.as_mut()) {
                if relay.doorbell().rung() {
                    relay.handle_wake(now);
                    rang = true;
                }
            }
        }
        rang
    }
}

/// Runs a relay session's job "on the disk thread"; in a seed with named
/// files, then reads what the watched names are bound to (a job binds them).
pub(super) fn run_job(
    job: RelayJob,
    relay: &Relay,
    book: &mut Option<named::Book>,
    store: &MemoryStore,
    specs: &[BatchSpec],
    now: Instant,
) -> pickup_relay::JobDone {
    let done = job.run(relay);
    if let Some(book) = book {
        book.observe(store, specs, now);
    }
    done
}
