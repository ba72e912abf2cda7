//! Relay-to-relay forwarding (issue 17, docs/design/forwarding.md §6): a
//! source relay copies a batch it holds to a peer relay with the upload
//! machine terminals use, and either relay crashes on the way.
//!
//! ```text
//!   upload::Session ──► relay A (MemoryStore a): the batch, complete
//!                          │ read back from A's store
//!   upload::Session, Credential::Relay ──► relay B (MemoryStore b, lists A as a peer)
//!     crashes: A's forwarder dies (a new machine resumes B's token, as the
//!     forwards row keeps it) · B dies (its store loses what it did not sync)
//! ```
//!
//! One seed is one run. The checks:
//!
//! - the copy completes at B and a download from B is byte-identical to
//!   what was uploaded to A;
//! - the file bytes that crossed to B are at most the batch plus one
//!   window per crash (a resume starts from B's durable offsets);
//! - a second forward of the same content sends no file byte: B holds it,
//!   and A proves it holds the bytes too (cross-relay dedup is instant
//!   upload).

use std::collections::BTreeMap;
use std::sync::Arc;

use pickup_proto::frame;
use pickup_proto::identity::{Credential, DeviceKey, RelayIdentity};
use pickup_proto::message::ResumeToken;
use pickup_proto::upload::{self, FileMeta};
use pickup_proto::{Duration, Instant};
use pickup_relay::config::{PeerAddr, PeerRelay, Peers};
use pickup_relay::directory::{MemoryDirectory, PasswordParams};
use pickup_relay::random::SeededRandom;
use pickup_relay::store::memory::MemoryStore;
use pickup_relay::store::FileRecord;
use pickup_relay::{Link, Relay, Settings};

use super::direct::{
    deliver, download, durable_state, metas, run_until, Side, Uploader, MAX_ROUNDS,
};
use super::pair::START;
use super::rng::SimRng;
use super::seeds::run_seeds;

/// The name the two relays list each other under.
const PEER: &str = "pair";
/// The key they share.
const KEY: DeviceKey = DeviceKey([0x5a; 16]);

/// What a seed's forward did.
#[derive(Debug, Clone, Default)]
pub struct ForwardReport {
    /// The seed.
    pub seed: u64,
    /// Bytes in the batch.
    pub size: u64,
    /// The forwarder's window.
    pub window: u64,
    /// Times the source's forwarder died and a new one resumed.
    pub source_crashes: u32,
    /// Times the peer relay died and restarted.
    pub peer_crashes: u32,
    /// File bytes that crossed to the peer in the forward.
    pub sent: u64,
    /// File bytes that crossed in a second forward of the same content.
    pub sent_again: u64,
}

/// Which side dies.
#[derive(Debug, Clone, Copy)]
enum Crash {
    /// The source relay: its forwarder's machine is gone, and with it the
    /// connection; the forward's durable row keeps the peer's token.
    Source,
    /// The peer relay: sessions gone, unsynced bytes lost, a new instance
    /// over the same store.
    Peer,
}

/// The peer relay: its store, which outlives crashes, and how to start it.
struct PeerRelayUnderTest {
    settings: Settings,
    store: Arc<MemoryStore>,
    directory: Arc<MemoryDirectory>,
    rng: SimRng,
}

impl PeerRelayUnderTest {
    fn start(&mut self, now: Instant) -> Arc<Relay> {
        Relay::with_directory(
            self.settings.clone(),
            self.store.clone(),
            self.directory.clone(),
            Box::new(SeededRandom::new(self.rng.next_u64())),
            now,
        )
    }
}

/// The forwarder's machine for `metas`: resuming the peer's `token` when
/// the forward has one, authenticated as the source relay.
fn forwarder<'a>(
    config: upload::Config,
    metas: &'a [FileMeta<'a>],
    token: Option<ResumeToken>,
    files: &'a [Vec<u8>],
) -> Uploader<'a> {
    let mut session = match token {
        Some(token) => upload::Session::resume(config, metas, token),
        None => upload::Session::new(config, metas),
    }
    .expect("a valid batch");
    session.authenticate(Credential::Relay(RelayIdentity {
        name: PEER,
        key: KEY,
    }));
    Uploader::new(session, files)
}

/// Runs one seed; panics with a description if a check fails.
pub fn run_forward(seed: u64) -> ForwardReport {
    let mut rng = SimRng::new(seed);
    let files: Vec<Vec<u8>> = (0..rng.range(1, 3))
        .map(|_| {
            // Now and then an empty file (held by every relay at once).
            let len = if rng.chance(50_000) {
                0
            } else {
                rng.range(1, 150_000)
            };
            let mut data = vec![0u8; len as usize];
            rng.fill(&mut data);
            data
        })
        .collect();
    let size: u64 = files.iter().map(|f| f.len() as u64).sum();
    let link = Link {
        max_frame: [1024, 4096, 16_384][rng.below(3) as usize],
        ..Link::TCP
    };
    let window = [4_096u32, 16_384, 65_536][rng.below(3) as usize];
    let config = upload::Config {
        max_frame: link.max_frame,
        max_window: window,
        instant_upload: true,
        ..upload::Config::default()
    };
    let mut report = ForwardReport {
        seed,
        size,
        window: u64::from(window),
        ..ForwardReport::default()
    };
    let mut out = vec![0u8; frame::max_encoded_len(frame::MAX_FRAME_LEN)];
    let mut now = START;

    // A terminal uploads the batch to the source relay.
    let store_a = Arc::new(MemoryStore::new());
    // Made once: a directory costs a password hash.
    let directory = Arc::new(MemoryDirectory::new(PasswordParams::FAST_FOR_TESTS));
    let relay_a = Relay::with_directory(
        Settings::default(),
        store_a.clone(),
        directory.clone(),
        Box::new(SeededRandom::new(rng.next_u64())),
        now,
    );
    let metas = metas(&files);
    let mut terminal = Uploader::new(
        upload::Session::new(config, &metas).expect("a valid batch"),
        &files,
    );
    let mut a = Side::open(&relay_a, link, now);
    terminal.session.handle_connected(now);
    run_until(&mut a, &relay_a, &mut terminal, &mut now, &mut out, |u| {
        u.complete
    });
    assert!(
        terminal.complete,
        "seed {seed}: the upload to A never completed"
    );
    let code_a = terminal.code.expect("granted");
    drop(a);

    // The forwarder reads the batch back from A's store, as
    // `forward::run` does through `Store::read_blob`.
    let (batch, held) = durable_state(&store_a, &code_a, now);
    assert!(batch.ready(), "seed {seed}: A's batch is not ready");
    assert!(held == files, "seed {seed}: A holds other bytes");
    let forwarded: Vec<FileMeta<'_>> = batch.files.iter().map(FileRecord::meta).collect();

    let mut peer = PeerRelayUnderTest {
        settings: Settings {
            peers: Peers::new([PeerRelay {
                name: PEER.into(),
                addr: PeerAddr::Tcp("127.0.0.1:7425".into()),
                key: KEY,
            }])
            .expect("one peer"),
            ..Settings::default()
        },
        store: Arc::new(MemoryStore::new()),
        directory,
        rng: rng.fork(),
    };
    let mut relay_b = peer.start(now);

    // Up to three crashes, each once this many file bytes crossed.
    let mut crashes: Vec<(u64, Crash)> = (0..rng.below(4))
        .map(|_| {
            let at = rng.below(size.max(1));
            let side = if rng.chance(500_000) {
                Crash::Source
            } else {
                Crash::Peer
            };
            (at, side)
        })
        .collect();
    crashes.sort_by_key(|c| c.0);
    let mut crashes = crashes.into_iter().peekable();

    // The forward: what its durable row holds is `token` (set at the
    // peer's grant); everything else dies with a crash.
    let mut fwd = forwarder(config, &forwarded, None, &held);
    let mut b = Side::open(&relay_b, link, now);
    fwd.session.handle_connected(now);
    let mut token = None;
    let mut sent = 0u64;
    let mut done = false;
    for _ in 0..MAX_ROUNDS {
        token = fwd.token.or(token);
        if fwd.complete {
            done = true;
            break;
        }
        if let Some((_, side)) = crashes.next_if(|(at, _)| sent >= *at) {
            now = now + Duration::from_millis(rng.range(1, 3_000));
            match side {
                Crash::Source => {
                    report.source_crashes += 1;
                    fwd = forwarder(config, &forwarded, token, &held);
                }
                Crash::Peer => {
                    report.peer_crashes += 1;
                    fwd.session.handle_disconnected(now);
                    peer.store.crash();
                    relay_b = peer.start(now);
                }
            }
            b = Side::open(&relay_b, link, now);
            fwd.session.handle_connected(now);
            continue;
        }
        let mut moved = false;
        if let Some((wire, data)) = fwd.transmit(now) {
            moved = true;
            sent += data;
            b.feed(now, &wire);
        }
        b.run_jobs(now);
        moved |= deliver(&mut b, &mut fwd, now, &mut out);
        if moved {
            continue;
        }
        if core::mem::take(&mut fwd.lost_link) {
            fwd.session.handle_disconnected(now);
            b = Side::open(&relay_b, link, now);
            fwd.session.handle_connected(now);
            continue;
        }
        let next = [fwd.session.poll_timeout(), b.session.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else {
            break;
        };
        now = now.max(next);
        fwd.session.handle_timeout(now);
        b.session.handle_timeout(now);
    }
    assert!(
        done,
        "seed {seed}: the forward never completed ({report:?})"
    );
    report.sent = sent;
    let crashed = u64::from(report.source_crashes + report.peer_crashes);
    assert!(
        sent <= size + crashed * u64::from(window),
        "seed {seed}: {sent} file bytes crossed for {size} with {crashed} crashes and a {window}-byte window"
    );
    let code_b = fwd.code.expect("granted by the peer");
    drop(b);

    // The peer serves the copy under its own code.
    let (got, events, after) = download(peer.start(now), peer.store.clone(), link, code_b, now);
    assert!(
        got == files,
        "seed {seed}: the copy at B differs from the batch at A ({events:?})"
    );
    now = after;

    // The same content forwarded again: the peer holds it, the source
    // proves it holds it too, and no file byte crosses.
    let mut again = forwarder(config, &forwarded, None, &held);
    let relay_b = peer.start(now);
    let mut b = Side::open(&relay_b, link, now);
    again.session.handle_connected(now);
    run_until(&mut b, &relay_b, &mut again, &mut now, &mut out, |u| {
        u.complete
    });
    assert!(
        again.complete,
        "seed {seed}: the second forward never completed"
    );
    report.sent_again = again.sent;
    assert_eq!(
        again.sent, 0,
        "seed {seed}: a second forward of held content sent file bytes"
    );
    report
}

/// Runs `count` seeds from `first` on `threads` threads; returns the
/// reports and the failures' messages by seed.
pub fn run_forwards(
    first: u64,
    count: u64,
    threads: usize,
) -> (Vec<ForwardReport>, BTreeMap<u64, String>) {
    run_seeds(first, count, threads, run_forward)
}
