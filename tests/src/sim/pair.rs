//! One terminal and one relay session on a perfect, instant link, with a
//! hand on the relay's output: the test decides which frames get lost.
//!
//! This is for exact scenarios ("the grant is lost, the verdict arrives"),
//! where [`World`](super::World) is for random ones. Time only moves when
//! nothing is left to deliver, straight to the next timer.

use std::sync::Arc;

use pickup_proto::download;
use pickup_proto::frame::{self, Decoder};
use pickup_proto::message::{Kind, Message};
use pickup_proto::{upload, Instant};
use pickup_relay::random::SeededRandom;
use pickup_relay::rate_limit::Peer;
use pickup_relay::store::memory::MemoryStore;
use pickup_relay::{Link, Relay, Session, Settings};

use crate::mem_files::MemFiles;

/// Where the relay's clock starts (Unix milliseconds).
pub const START: Instant = Instant::from_millis(1_790_000_000_000);

/// The terminal side of a [`Pair`].
pub enum Terminal<'a> {
    /// An upload over files held in memory.
    Up(Box<upload::Session<'a, 4>>, &'a [Vec<u8>]),
    /// A download into a sink.
    Down(Box<download::Session<'a, 4>>, MemFiles),
}

/// A relay over a [`MemoryStore`] and one terminal, linked directly.
pub struct Pair<'a> {
    /// The simulated clock.
    pub now: Instant,
    /// The relay's shared state.
    pub relay: Arc<Relay>,
    /// The relay's store.
    pub store: Arc<MemoryStore>,
    /// The relay's session for the current connection.
    pub session: Option<Session>,
    /// The terminal.
    pub terminal: Terminal<'a>,
    link: Link,
    relay_decoder: Decoder<Vec<u8>>,
    client_decoder: Decoder<Vec<u8>>,
    buf: Vec<u8>,
    /// Every relay message in order, as `Debug` text, with whether it was dropped.
    pub log: Vec<(String, bool)>,
    /// Noise to put on the line towards the relay right after it sends a
    /// message of this kind.
    noise_after: Option<(Kind, Vec<u8>)>,
}

/// Decides, for each relay message, whether the link loses it.
pub type Filter<'f> = dyn FnMut(&Message<'_>) -> bool + 'f;

impl<'a> Pair<'a> {
    /// A fresh relay with `settings` on `link`, and `terminal`, not yet connected.
    pub fn new(settings: Settings, link: Link, terminal: Terminal<'a>) -> Self {
        Self::with_store(Arc::new(MemoryStore::new()), settings, link, terminal)
    }

    /// Like [`Pair::new`] over an existing store (a second terminal).
    pub fn with_store(
        store: Arc<MemoryStore>,
        settings: Settings,
        link: Link,
        terminal: Terminal<'a>,
    ) -> Self {
        let relay = Relay::new(
            settings,
            store.clone(),
            Box::new(SeededRandom::new(7)),
            START,
        );
        Self::with_relay(relay, store, link, terminal)
    }

    /// Like [`Pair::new`] with a relay made by the caller over `store`
    /// (a relay instance among others over one store).
    pub fn with_relay(
        relay: Arc<Relay>,
        store: Arc<MemoryStore>,
        link: Link,
        terminal: Terminal<'a>,
    ) -> Self {
        Pair {
            now: START,
            relay,
            store,
            session: None,
            terminal,
            link,
            relay_decoder: Decoder::new(vec![0; link.max_frame()]),
            client_decoder: Decoder::new(vec![0; frame::MAX_FRAME_LEN]),
            buf: vec![0; frame::max_encoded_len(frame::MAX_FRAME_LEN)],
            log: Vec::new(),
            noise_after: None,
        }
    }

    /// Opens a connection: a new relay session, `handle_connected` at the terminal.
    pub fn connect(&mut self) {
        let session = Session::new(self.relay.clone(), Peer::Sim(1), self.link, self.now)
            .unwrap_or_else(|e| panic!("relay refused the connection: {e:?}"));
        self.session = Some(session);
        self.relay_decoder.reset();
        self.client_decoder.reset();
        match &mut self.terminal {
            Terminal::Up(s, _) => s.handle_connected(self.now),
            Terminal::Down(s, _) => s.handle_connected(self.now),
        }
    }

    /// Drops the connection on both sides.
    pub fn disconnect(&mut self) {
        if let Some(mut s) = self.session.take() {
            s.handle_disconnected(self.now);
            run_jobs(&mut s, &self.relay, self.now);
        }
        match &mut self.terminal {
            Terminal::Up(s, _) => s.handle_disconnected(self.now),
            Terminal::Down(s, _) => s.handle_disconnected(self.now),
        }
    }

    /// Once the relay sends a message of `kind`, `bytes` reach its decoder
    /// as if the line made them up (before anything the terminal sends next).
    pub fn noise_after(&mut self, kind: Kind, bytes: Vec<u8>) {
        self.noise_after = Some((kind, bytes));
    }

    /// Bytes that reach the relay's decoder as if the line made them up.
    pub fn noise_to_relay(&mut self, bytes: &[u8]) {
        if let Some(relay) = self.session.as_mut() {
            let mut input = bytes;
            while let Some(r) = self.relay_decoder.feed(&mut input) {
                match r {
                    Ok(f) => relay.handle_frame(self.now, f),
                    Err(why) => relay.handle_dropped(self.now, why),
                }
                run_jobs(relay, &self.relay, self.now);
            }
        }
    }

    /// Whether the terminal's session finished.
    pub fn finished(&self) -> bool {
        match &self.terminal {
            Terminal::Up(s, _) => s.is_finished(),
            Terminal::Down(s, _) => s.is_finished(),
        }
    }

    /// Exchanges frames until neither side has anything to say; relay
    /// messages for which `lose` returns true are lost. Returns the
    /// terminal's events.
    pub fn exchange(&mut self, lose: &mut Filter<'_>) -> Vec<String> {
        let mut events = Vec::new();
        for _ in 0..100_000 {
            let mut moved = false;
            // Terminal → relay.
            loop {
                let n = match &mut self.terminal {
                    Terminal::Up(s, files) => {
                        let mut src: &[Vec<u8>] = files;
                        match s.poll_transmit(self.now, &mut src, &mut self.buf) {
                            Ok(n) => n,
                            Err(never) => match never {},
                        }
                    }
                    Terminal::Down(s, sink) => match s.poll_transmit(self.now, sink, &mut self.buf)
                    {
                        Ok(n) => n,
                        Err(never) => match never {},
                    },
                };
                let Some(n) = n else { break };
                moved = true;
                if let Some(relay) = self.session.as_mut() {
                    let mut input = &self.buf[..n];
                    while let Some(r) = self.relay_decoder.feed(&mut input) {
                        match r {
                            Ok(f) => relay.handle_frame(self.now, f),
                            Err(why) => relay.handle_dropped(self.now, why),
                        }
                        run_jobs(relay, &self.relay, self.now);
                    }
                }
            }
            // Relay → terminal.
            let mut noise = None;
            while let Some(n) = self.session.as_mut().and_then(|s| {
                run_jobs(s, &self.relay, self.now);
                super::take_frame(s, &mut self.buf)
            }) {
                moved = true;
                let mut input = &self.buf[..n];
                while let Some(r) = self.client_decoder.feed(&mut input) {
                    let Ok(f) = r else { continue };
                    let msg = Message::decode(f).expect("the relay sends valid messages");
                    let lost = lose(&msg);
                    self.log.push((format!("{msg:?}"), lost));
                    if self
                        .noise_after
                        .as_ref()
                        .is_some_and(|(k, _)| *k == msg.kind())
                    {
                        noise = self.noise_after.take().map(|(_, n)| n);
                    }
                    if lost {
                        continue;
                    }
                    match &mut self.terminal {
                        Terminal::Up(s, _) => s.handle_message(self.now, msg),
                        Terminal::Down(s, sink) => match s.handle_message(self.now, msg, sink) {
                            Ok(()) => {}
                            Err(never) => match never {},
                        },
                    }
                }
            }
            if let Some(noise) = noise {
                self.noise_to_relay(&noise);
            }
            loop {
                let e = match &mut self.terminal {
                    Terminal::Up(s, _) => s.poll_event().map(|e| format!("{e:?}")),
                    Terminal::Down(s, _) => s.poll_event().map(|e| format!("{e:?}")),
                };
                let Some(e) = e else { break };
                moved = true;
                events.push(e);
            }
            if !moved {
                return events;
            }
        }
        panic!("the pair never went quiet: a busy loop");
    }

    /// Moves the clock to the earliest timer of either side and fires it.
    /// Returns false if neither side has a timer.
    pub fn advance(&mut self) -> bool {
        let client = match &self.terminal {
            Terminal::Up(s, _) => s.poll_timeout(),
            Terminal::Down(s, _) => s.poll_timeout(),
        };
        let relay = self.session.as_ref().and_then(Session::poll_timeout);
        let Some(next) = [client, relay].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(next);
        match &mut self.terminal {
            Terminal::Up(s, _) => s.handle_timeout(self.now),
            Terminal::Down(s, _) => s.handle_timeout(self.now),
        }
        if let Some(s) = self.session.as_mut() {
            s.handle_timeout(self.now);
            run_jobs(s, &self.relay, self.now);
            if s.is_closed() && s.poll_transmit(&mut self.buf).is_none() {
                self.disconnect();
                self.connect();
            }
        }
        true
    }

    /// Exchanges and advances until the terminal finishes, losing what
    /// `lose` picks, for at most `rounds` timer firings. Returns every event.
    pub fn run(&mut self, rounds: usize, lose: &mut Filter<'_>) -> Vec<String> {
        let mut events = Vec::new();
        for _ in 0..rounds {
            events.extend(self.exchange(lose));
            if self.finished() {
                break;
            }
            let lost_link = events.last().is_some_and(|e| e.contains("LinkLost"));
            if lost_link {
                self.disconnect();
                self.connect();
                continue;
            }
            if !self.advance() {
                break;
            }
        }
        events
    }
}

/// Runs the session's jobs at once, as on a disk with no latency.
fn run_jobs(session: &mut Session, relay: &Relay, now: Instant) {
    for _ in 0..100_000 {
        let Some(job) = session.poll_job() else {
            return;
        };
        session.handle_job_done(now, job.run(relay));
    }
    panic!("the session never stops giving out jobs");
}
