//! A terminal's upload machine and relay sessions on a direct, lossless
//! link that the scenario drives frame by frame: the pieces of the
//! two-relay scenarios (`takeover`, `forward`), where the scenario decides
//! which relay instance a frame reaches and when a side crashes.

use std::sync::Arc;

use pickup_proto::code::Code;
use pickup_proto::download;
use pickup_proto::frame::{self, Decoder};
use pickup_proto::message::{Message, ResumeToken};
use pickup_proto::upload::{self, Event};
use pickup_proto::Instant;
use pickup_relay::codes::code_key;
use pickup_relay::rate_limit::Peer;
use pickup_relay::store::memory::MemoryStore;
use pickup_relay::store::{Batch, FileContent, Lookup, Store};
use pickup_relay::{Link, Relay, Session};

use super::pair::{Pair, Terminal};
use crate::mem_files::MemFiles;

/// Frames (or timer firings) a phase may take before it counts as stuck.
pub(super) const MAX_ROUNDS: usize = 200_000;

/// Names of the files (a batch has at most this many).
pub(super) const NAMES: [&str; 3] = ["a.bin", "b.bin", "c.bin"];

/// What the terminal announces for `files` (at most [`NAMES`] of them).
pub(super) fn metas(files: &[Vec<u8>]) -> Vec<upload::FileMeta<'static>> {
    files
        .iter()
        .zip(NAMES)
        .map(|(data, name)| upload::FileMeta {
            name,
            size: data.len() as u64,
            sha1: pickup_proto::Sha1Digest::of(data),
        })
        .collect()
}

/// One relay instance's session for the terminal.
pub(super) struct Side {
    pub(super) relay: Arc<Relay>,
    pub(super) link: Link,
    pub(super) session: Session,
    decoder: Decoder<Vec<u8>>,
}

impl Side {
    pub(super) fn open(relay: &Arc<Relay>, link: Link, now: Instant) -> Side {
        let session = Session::new(relay.clone(), Peer::Sim(1), link, now)
            .unwrap_or_else(|e| panic!("relay refused the connection: {e:?}"));
        Side {
            relay: relay.clone(),
            link,
            session,
            decoder: Decoder::new(vec![0; link.max_frame()]),
        }
    }

    /// Hands the relay an encoded frame.
    pub(super) fn feed(&mut self, now: Instant, mut wire: &[u8]) {
        while let Some(r) = self.decoder.feed(&mut wire) {
            match r {
                Ok(f) => super::hand_frame(&mut self.session, now, f),
                Err(why) => self.session.handle_dropped(now, why),
            }
        }
    }

    /// Runs the session's jobs as they come; returns their names.
    pub(super) fn run_jobs(&mut self, now: Instant) -> Vec<&'static str> {
        let mut names = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let Some(job) = self.session.poll_job() else {
                return names;
            };
            names.push(job.name());
            let done = job.run(&self.relay);
            self.session.handle_job_done(now, done);
        }
        panic!("a relay session never stops giving out jobs");
    }
}

/// The terminal: the upload machine over its files.
pub(super) struct Uploader<'a> {
    pub(super) session: upload::Session<'a, 4>,
    pub(super) files: &'a [Vec<u8>],
    /// Decodes what a relay sends it.
    decoder: Decoder<Vec<u8>>,
    /// Decodes what it sends (to count its data bytes).
    tap: Decoder<Vec<u8>>,
    buf: Vec<u8>,
    pub(super) code: Option<Code>,
    /// The resume token of the latest grant (what a forwarder keeps).
    pub(super) token: Option<ResumeToken>,
    pub(super) granted: bool,
    pub(super) complete: bool,
    pub(super) lost_link: bool,
    /// File bytes in the `Data` frames it sent.
    pub(super) sent: u64,
}

impl<'a> Uploader<'a> {
    /// The machine `session` over `files`, not yet connected.
    pub(super) fn new(session: upload::Session<'a, 4>, files: &'a [Vec<u8>]) -> Self {
        Uploader {
            session,
            files,
            decoder: Decoder::new(vec![0; frame::MAX_FRAME_LEN]),
            tap: Decoder::new(vec![0; frame::MAX_FRAME_LEN]),
            buf: vec![0; frame::max_encoded_len(frame::MAX_FRAME_LEN)],
            code: None,
            token: None,
            granted: false,
            complete: false,
            lost_link: false,
            sent: 0,
        }
    }

    /// The next frame it sends, and the file bytes it carries.
    pub(super) fn transmit(&mut self, now: Instant) -> Option<(Vec<u8>, u64)> {
        let mut src: &[Vec<u8>] = self.files;
        let n = match self.session.poll_transmit(now, &mut src, &mut self.buf) {
            Ok(n) => n?,
            Err(never) => match never {},
        };
        let wire = self.buf[..n].to_vec();
        let mut input = &wire[..];
        let mut data = 0;
        while let Some(r) = self.tap.feed(&mut input) {
            if let Ok(Ok(Message::Data(d))) = r.map(Message::decode) {
                data += d.bytes.len() as u64;
            }
        }
        self.sent += data;
        Some((wire, data))
    }

    /// Takes what a relay sent.
    pub(super) fn receive(&mut self, now: Instant, mut wire: &[u8]) {
        while let Some(r) = self.decoder.feed(&mut wire) {
            let Ok(f) = r else { continue };
            let msg = Message::decode(f).expect("the relay sends valid messages");
            // Every grant, not only the first (the machine reports that one).
            if let Message::Grant(g) = &msg {
                self.code = Some(g.code);
                self.token = Some(g.token);
                self.granted = true;
            }
            self.session.handle_message(now, msg);
        }
        while let Some(e) = self.session.poll_event() {
            match e {
                Event::Complete { .. } => self.complete = true,
                Event::LinkLost => self.lost_link = true,
                Event::Failed(e) => panic!("the upload failed: {e:?}"),
                _ => {}
            }
        }
    }
}

/// Delivers everything `side` says to the terminal.
pub(super) fn deliver(
    side: &mut Side,
    up: &mut Uploader<'_>,
    now: Instant,
    out: &mut [u8],
) -> bool {
    let mut moved = false;
    while let Some(n) = super::take_frame(&mut side.session, out) {
        moved = true;
        up.receive(now, &out[..n]);
    }
    moved
}

/// The batch under `code` and the bytes it holds durably, per file.
pub(super) fn durable_state(
    store: &MemoryStore,
    code: &Code,
    now: Instant,
) -> (Batch, Vec<Vec<u8>>) {
    let batch = match store.find_by_code(&code_key(code), now.as_millis() / 1000) {
        Ok(Lookup::Live(b)) => b,
        other => panic!("the batch is gone: {other:?}"),
    };
    let bytes = batch
        .files
        .iter()
        .map(|f| match f.content {
            FileContent::Partial { id, durable } => {
                let mut buf = vec![0u8; durable as usize];
                let n = store.read_partial(id, 0, &mut buf).expect("readable");
                buf.truncate(n);
                buf
            }
            FileContent::Blob(id) => store.blob_bytes(id).expect("a held blob"),
        })
        .collect();
    (batch, bytes)
}

/// Exchanges frames between the terminal and `side` until neither has
/// anything to say, or `limit` frames of the terminal went. Returns the
/// frames the terminal sent.
pub(super) fn exchange(
    side: &mut Side,
    up: &mut Uploader<'_>,
    now: Instant,
    out: &mut [u8],
    limit: usize,
) -> usize {
    let mut sent = 0;
    for _ in 0..MAX_ROUNDS {
        let mut moved = false;
        if sent < limit {
            if let Some((wire, _)) = up.transmit(now) {
                sent += 1;
                moved = true;
                side.feed(now, &wire);
            }
        }
        side.run_jobs(now);
        moved |= deliver(side, up, now, out);
        if !moved {
            return sent;
        }
    }
    panic!("the terminal and relay never went quiet");
}

/// Exchanges frames with `side` (a relay over `relay`), firing timers when
/// both go quiet and reconnecting after a lost link, until `done`.
pub(super) fn run_until(
    side: &mut Side,
    relay: &Arc<Relay>,
    up: &mut Uploader<'_>,
    now: &mut Instant,
    out: &mut [u8],
    done: impl Fn(&Uploader<'_>) -> bool,
) {
    for _ in 0..MAX_ROUNDS {
        for _ in 0..MAX_ROUNDS {
            if done(up) || exchange(side, up, *now, out, 1) == 0 {
                break;
            }
        }
        if done(up) {
            return;
        }
        if core::mem::take(&mut up.lost_link) {
            up.session.handle_disconnected(*now);
            *side = Side::open(relay, side.link, *now);
            up.session.handle_connected(*now);
            continue;
        }
        let next = [up.session.poll_timeout(), side.session.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else {
            return;
        };
        *now = (*now).max(next);
        up.session.handle_timeout(*now);
        side.session.handle_timeout(*now);
    }
}

/// Downloads the batch `code` through `relay` (over `store`) from `now`:
/// the files it got, the events of the download, and the time after it.
pub(super) fn download(
    relay: Arc<Relay>,
    store: Arc<MemoryStore>,
    link: Link,
    code: Code,
    now: Instant,
) -> (Vec<Vec<u8>>, Vec<String>, Instant) {
    let down = download::Session::new(download::Config::default(), code);
    let mut pair = Pair::with_relay(
        relay,
        store,
        link,
        Terminal::Down(Box::new(down), MemFiles::default()),
    );
    pair.now = now;
    pair.connect();
    let events = pair.run(1_000, &mut |_| false);
    let Terminal::Down(_, sink) = pair.terminal else {
        unreachable!("a download pair");
    };
    (sink.files, events, pair.now)
}
