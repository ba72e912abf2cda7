//! The relay's session logic driven by fuzzer bytes (the `relay_session`
//! fuzz target is a one-liner over [`drive_relay`]).
//!
//! Up to three terminals talk to one [`Relay`] over a [`MemoryStore`]; the
//! input decides who says what and when, including crashes of the relay
//! (which lose every byte not made durable). Plausible messages are built
//! from what the relay said so far (its codes, tokens and challenge
//! nonces), so the fuzzer reaches uploads, resumes, proofs and downloads
//! without guessing secrets.
//!
//! Invariants, checked on every frame the relay sends:
//! - it is one valid frame within the terminal's announced `max_frame`
//!   (64 bytes before the terminal's hello);
//! - an `Ack` or `FilePlan::Upload` offset never exceeds the durable bytes
//!   in the store, and a crash never loses bytes an ack promised;
//! - data served to a `Read` is exactly the announced file's content
//!   (uploads announce SHA-1s of fixed contents, so anything else means the
//!   relay verified or served wrong bytes), and only from a complete batch;
//! - a session's timer is never left in the past after `handle_timeout`,
//!   and its output always runs dry;
//! - identity and named files keep theirs (the `identity` module's doc),
//!   and so do notices and forwards (the `notices` and `forwards` modules').

use std::collections::BTreeMap;
use std::sync::Arc;

use pickup_proto::code::Code;
use pickup_proto::frame::Decoder;
use pickup_proto::hash::{Nonce, Sha1Digest};
use pickup_proto::message::ResumeToken;
use pickup_proto::Instant;
use pickup_relay::directory::MemoryDirectory;
use pickup_relay::store::memory::MemoryStore;
use pickup_relay::{Job, Link, Relay, Session, Settings};

mod checks;
mod driver;
mod forwards;
mod identity;
mod input;
mod notices;
mod script;

use driver::run;
pub use script::RelayScript;

/// File contents the terminals announce: their SHA-1s are honest.
const CONTENTS: [&[u8]; 4] = [
    &CONTENT_A,
    b"pickup",
    b"",
    b"the same six bytes are not needed twice",
];
const NAMES: [&str; 6] = ["a.bin", "b.txt", "empty", "../up", "", "c:d"];
const CONTENT_A: [u8; 700] = {
    let mut a = [0u8; 700];
    let mut i = 0;
    while i < a.len() {
        a[i] = (i * 13 + 5) as u8;
        i += 1;
    }
    a
};
/// Where the clock starts (Unix milliseconds).
const START: Instant = Instant::from_millis(1_790_000_000_000);
/// Terminals at once.
const TERMINALS: usize = 3;
/// Frames drained per transmit operation before it counts as endless.
const MAX_DRAIN: usize = 20_000;

struct Input<'a>(&'a [u8]);

/// What one terminal's connection knows.
struct Terminal {
    session: Session,
    decoder: Decoder<Vec<u8>>,
    /// The terminal's `max_frame` from its hello (64 until then).
    max_frame: usize,
    /// The batch of the last grant on this connection.
    code: Option<Code>,
    /// Challenge nonces by file index.
    nonces: BTreeMap<u16, Nonce>,
    /// The batch and file of the last `Read`, to check served data.
    reading: Option<(Code, u16)>,
    /// A job taken from the session and not yet run (deferred mode).
    job: Option<Job>,
    /// When the session last took any input: replies waiting in its outbox
    /// were produced no later than this.
    last_input: Instant,
    /// What the connection said and was told about identity.
    id: identity::Conn,
    /// What the connection said and was told about notices.
    notices: notices::Conn,
    /// What the connection said and was told about forwards.
    forwards: forwards::Conn,
}

/// What the run knows about a batch the relay granted.
#[derive(Debug, Clone)]
struct Batch {
    token: ResumeToken,
    /// Expiry from the grant, seconds since the Unix epoch.
    expires_at: u64,
    /// Number of files.
    files: u16,
    /// Each file's announced SHA-1, from the store at the grant.
    sha1s: Vec<Sha1Digest>,
}

struct Fuzz {
    now: Instant,
    settings: Settings,
    link: Link,
    store: Arc<MemoryStore>,
    /// Users and terminals: outlive a crash, as a database would.
    directory: Arc<MemoryDirectory>,
    relay: Arc<Relay>,
    terminals: [Option<Terminal>; TERMINALS],
    /// What each terminal announced last, by file index: which of
    /// [`CONTENTS`]. A terminal knows its files across connections.
    announced: [Vec<usize>; TERMINALS],
    batches: BTreeMap<Code, Batch>,
    /// Tokens given out, across connections.
    ids: identity::Run,
    /// Deliveries, receipts and refusals, across connections and crashes.
    book: notices::Book,
    /// Forward ids the relay gave, across connections and crashes.
    forwards: forwards::Book,
    out: Vec<u8>,
    seed: u64,
    trace: bool,
    /// Session jobs run at the next `timers` operation (as on TCP's
    /// blocking pool) rather than right after each operation.
    deferred: bool,
}

/// What a run did, so tests can check that an input got somewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelaySummary {
    /// Batches granted.
    pub grants: u32,
    /// Files verified.
    pub verified: u32,
    /// Data bytes served to downloaders.
    pub served: u64,
    /// Relay crashes.
    pub crashes: u32,
    /// Challenges (instant upload) the relay issued.
    pub challenges: u32,
    /// `Authenticated` answers.
    pub authenticated: u32,
    /// `AuthFailed` refusals.
    pub auth_failed: u32,
    /// `RateLimited` refusals (of any request).
    pub rate_limited: u32,
    /// Manifests under a read handle (`FetchNamed`, `ListNamed`).
    pub named_manifests: u32,
    /// Data bytes served through read handles.
    pub named_served: u64,
    /// `Delivery` answers (to `Push` and `DeliveryStatus`).
    pub deliveries: u32,
    /// `Inbox` answers to `Listen`.
    pub inboxes: u32,
    /// `Notice`s sent (in an inbox or live).
    pub notices: u32,
    /// `Settled` answers.
    pub settled: u32,
    /// `ForwardAccepted` and `ForwardStatus` answers.
    pub forward_answers: u32,
}

/// Runs the relay session logic on fuzzer bytes; panics if an invariant breaks.
///
/// Setup byte: `bits 0-1` link frame size (64, 256, 1024, 4096), `bit 2`
/// instant upload off, `bit 3` tight limits (2 files, 1000-byte files and
/// a 2000-byte quota), `bit 4` a 60-second code lifetime, `bit 5` deferred
/// jobs (run at the next `timers` operation, or when the session waits for
/// one before it takes more input), `bits 6-7` what instant upload may
/// reveal (0 a threshold of 2 owners, 1 owner only, 2-3 open; 3 also
/// refuses anonymous uploads and downloads). Then operations,
/// one byte each (`op % 10`) with the terminal in the top bits
/// (`op / 10 % 3`), and operands after them.
///
/// Every run starts with users ada (password `ada-pw`) and bob (`bob-pw`)
/// and terminal t1 of ada's (key 16 × 7). A plausible message (`say`)
/// picks its request by a selector byte: below 224 transfers, 224..240
/// addressed delivery and doorbell wakes (the `notices` module), 240..251
/// identity and named files (the `identity` module), 251 and up forwards
/// (the `forwards` module).
pub fn drive_relay(data: &[u8]) -> RelaySummary {
    run(data, false)
}

/// [`drive_relay`], printing every operation and every relay message to
/// stderr: for reading a crash input (`cargo run -p pickup-tests --example
/// replay_fuzz -- relay_session FILE`).
pub fn drive_relay_traced(data: &[u8]) -> RelaySummary {
    run(data, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Terminal 0 uploads file A (700 bytes) in three data frames;
    /// terminal 1 fetches and reads it.
    fn upload_then_download(setup: u8) -> Vec<u8> {
        let mut o = RelayScript::new(setup);
        o.connect(0).upload_a(0, 255);
        o.connect(1).hello(1, 2).fetch(1, true).transmit(1);
        o.read(1, 0, 0, 4096).transmit(1);
        o.0
    }

    #[test]
    fn a_scripted_upload_and_download_reach_the_checks() {
        let summary = drive_relay(&upload_then_download(3));
        assert_eq!(summary.grants, 1, "{summary:?}");
        assert_eq!(summary.verified, 1, "{summary:?}");
        assert_eq!(summary.served, 700, "{summary:?}");
    }

    #[test]
    fn corrupt_data_is_never_verified_or_served() {
        let mut input = upload_then_download(3);
        // Flip the "honest" flag of the second data frame: its bytes come
        // from the input instead (255 of them follow).
        let honest = input
            .windows(4)
            .position(|w| w == [0xff, 0x00, 0xff, 1])
            .expect("the second data op");
        input[honest + 3] = 0;
        input.splice(honest + 4..honest + 4, vec![0x42; 255]);
        let summary = drive_relay(&input);
        assert_eq!(summary.verified, 0, "{summary:?}");
        assert_eq!(summary.served, 0, "{summary:?}");
    }

    #[test]
    fn a_crash_mid_upload_keeps_what_was_acknowledged() {
        let mut input = upload_then_download(3);
        // Crash right after the first transmit that carried acks, then go on.
        let pos = input.len() / 2;
        input.insert(pos, 6);
        drive_relay(&input);
    }

    #[test]
    fn random_inputs_do_not_break_the_relay() {
        let mut rng = crate::sim::rng::SimRng::new(77);
        for _ in 0..1500 {
            let len = rng.below(300) as usize;
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            drive_relay(&data);
        }
        // The scripted run with each setup, and mutated copies of it.
        for setup in 0..64u8 {
            let base = upload_then_download(setup);
            drive_relay(&base);
            for _ in 0..20 {
                let mut m = base.clone();
                let i = rng.below(m.len() as u64) as usize;
                m[i] = rng.next_u64() as u8;
                drive_relay(&m);
            }
        }
    }
}
