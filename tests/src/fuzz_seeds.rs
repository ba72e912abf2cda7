//! The fuzzers' seed corpora and dictionary, made from real encoded
//! messages and scripted exchanges, so each target starts deep in its
//! state space instead of at "is this a frame at all".
//!
//! `tests/fuzz_corpus.rs` checks that the files under `fuzz/corpus/` and
//! `fuzz/dict/` are exactly what this module makes (and rewrites them with
//! `PICKUP_WRITE_FUZZ_SEEDS=1`), and that every seed does what its name says.

use crate::fuzz_proto::{
    self, Script, DOWNLOAD_MANIFEST_ONLY, DOWNLOAD_WAIT, UPLOAD_INSTANT, UPLOAD_RESUME,
    UPLOAD_SMALL_WINDOW,
};
use pickup_proto::frame::{self, Decoder};
use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::{
    Ack, BatchComplete, Data, Error, FilePlan, FileRejected, FileVerified, Grant, Kind, Manifest,
    ManifestEntry, Message, Plan, Rewind, Role, Welcome, CAP_INSTANT_UPLOAD,
};
use pickup_proto::message::{
    AuthToken, Authenticated, Challenge, Delivery, DeliveryState, Done, Inbox, Notice, Settled,
};
use pickup_proto::ErrorCode;

use crate::samples::{every_kind, of_kind};

use crate::fuzz_relay::RelayScript;

/// One seed file: the fuzz target, the file name, the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The target's name (`fuzz/fuzz_targets/<target>.rs`).
    pub target: &'static str,
    /// File name under `fuzz/corpus/<target>/`.
    pub name: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// The wire form of `msg` (one delimited frame).
pub fn wire(msg: &Message<'_>) -> Vec<u8> {
    let mut out = vec![0u8; frame::max_encoded_len(4096)];
    let n = msg
        .encode(4096, &mut out)
        .expect("example messages fit 4 KiB");
    out.truncate(n);
    out
}

/// The kind byte and body of `msg`: the `message_decode` target's input.
pub fn kind_and_body(msg: &Message<'_>) -> Vec<u8> {
    let w = wire(msg);
    let mut decoder = Decoder::new(vec![0u8; 4096]);
    let mut input = &w[..];
    let f = match decoder.feed(&mut input) {
        Some(Ok(f)) => f,
        other => panic!("an encoded example does not decode: {other:?}"),
    };
    let mut out = vec![f.kind];
    out.extend_from_slice(f.body);
    out
}

fn slug(msg: &Message<'_>) -> String {
    let debug = format!("{:?}", msg.kind());
    debug.to_lowercase()
}

fn frame_decoder_seeds() -> Vec<Seed> {
    let all: Vec<u8> = every_kind().iter().flat_map(|m| wire(m)).collect();
    let mut seeds = vec![
        // Whole stream in one piece (split bytes 255).
        seed(
            "frame_decoder",
            "every-kind-whole",
            [&[255u8; 4][..], &all].concat(),
        ),
        // Fed a byte at a time.
        seed(
            "frame_decoder",
            "every-kind-bytewise",
            [&[0u8; 4][..], &all].concat(),
        ),
    ];
    // Garbage, a cut frame, back-to-back delimiters, then good frames.
    let mut noisy = vec![3u8, 17, 1, 64];
    noisy.extend_from_slice(b"\x07\x13garbage");
    noisy.push(0);
    let grant = wire(&of_kind(Kind::Grant));
    noisy.extend_from_slice(&grant[..grant.len() / 2]);
    noisy.extend_from_slice(&[0, 0, 0]);
    noisy.extend_from_slice(&grant);
    noisy.extend(wire(&Message::Keepalive));
    seeds.push(seed("frame_decoder", "noise-and-cut-frame", noisy));
    // A data frame with a 254-byte run of non-zero bytes (COBS block edge).
    let big = vec![0x41u8; 300];
    let data = wire(&Message::Data(Data {
        file: 2,
        offset: 70_000,
        bytes: &big,
    }));
    seeds.push(seed(
        "frame_decoder",
        "data-cobs-block-edge",
        [&[7u8, 200, 1, 0][..], &data].concat(),
    ));
    seeds
}

fn message_decode_seeds() -> Vec<Seed> {
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    every_kind()
        .iter()
        .map(|m| {
            let base = slug(m);
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            let name = if *n == 1 { base } else { format!("{base}-{n}") };
            seed("message_decode", &name, kind_and_body(m))
        })
        .collect()
}

fn welcome(max_frame: u32, window: u32) -> Message<'static> {
    Message::Welcome(Welcome {
        version: 1,
        role: Role::Relay,
        max_frame,
        window,
        caps: CAP_INSTANT_UPLOAD,
    })
}

fn grant(files: u16) -> Message<'static> {
    Message::Grant(Grant {
        code: fuzz_proto::code(),
        expires_at: 1_800_000_000,
        token: fuzz_proto::TOKEN,
        files,
    })
}

fn plan(index: u16, plan: Plan) -> Message<'static> {
    Message::FilePlan(FilePlan { index, plan })
}

fn ack(file: u16, offset: u64) -> Message<'static> {
    Message::Ack(Ack {
        file,
        offset,
        window: 4096,
    })
}

fn verified(index: u16) -> Message<'static> {
    Message::FileVerified(FileVerified { index })
}

type UploadScript = Script<4096>;

fn upload_start(setup: u8) -> UploadScript {
    let mut s = UploadScript::new(&[setup]);
    s.connect()
        .transmit()
        .message(&welcome(256, 4096))
        .transmit()
        .events();
    s
}

fn upload_seeds() -> Vec<Seed> {
    let size = |i: usize| fuzz_proto::CONTENTS[i].len() as u64;
    let mut seeds = Vec::new();

    let mut s = upload_start(2);
    s.message(&grant(3));
    s.message(&plan(0, Plan::Upload { offset: 0 }));
    s.message(&plan(1, Plan::Upload { offset: 0 }));
    s.message(&plan(2, Plan::Held));
    s.transmit().events();
    for f in 0..2 {
        s.message(&ack(f, size(usize::from(f))))
            .message(&verified(f));
    }
    s.message(&Message::BatchComplete(BatchComplete {
        code: fuzz_proto::code(),
    }));
    s.events().transmit();
    seeds.push(seed(
        "upload_session",
        "three-files-complete",
        s.as_bytes().to_vec(),
    ));

    // Resume with a token after a restart: the relay has 237 bytes.
    let mut s = upload_start(UPLOAD_RESUME);
    s.message(&grant(1));
    s.message(&plan(0, Plan::Upload { offset: 237 }));
    s.transmit();
    s.message(&Message::Rewind(Rewind {
        file: 0,
        offset: 400,
    }));
    s.transmit().message(&ack(0, size(0))).message(&verified(0));
    s.events();
    seeds.push(seed(
        "upload_session",
        "resume-from-237",
        s.as_bytes().to_vec(),
    ));

    // Instant upload: a challenge, a proof, then Held.
    let mut s = upload_start(1 | UPLOAD_INSTANT);
    s.message(&grant(2));
    s.message(&plan(0, Plan::Challenge { nonce: [7; 32] }));
    s.message(&plan(1, Plan::Upload { offset: 0 }));
    s.transmit();
    s.message(&plan(0, Plan::Held));
    s.message(&ack(1, size(1))).message(&verified(1));
    s.events().transmit();
    seeds.push(seed(
        "upload_session",
        "challenge-proof-held",
        s.as_bytes().to_vec(),
    ));

    // A lost link mid-file: timers, reconnect, resume.
    let mut s = upload_start(UPLOAD_SMALL_WINDOW);
    s.message(&grant(1));
    s.message(&plan(0, Plan::Upload { offset: 0 }));
    s.transmit().message(&ack(0, 128));
    for _ in 0..4 {
        s.advance(2_500).settle().events();
    }
    s.disconnect().advance(1_000).connect().transmit();
    s.message(&welcome(1024, 65_536)).transmit();
    s.message(&grant(1))
        .message(&plan(0, Plan::Upload { offset: 128 }));
    s.transmit()
        .message(&ack(0, size(0)))
        .message(&verified(0))
        .events();
    seeds.push(seed(
        "upload_session",
        "link-lost-and-resumed",
        s.as_bytes().to_vec(),
    ));

    // Refusals: a rejected file and a relay error.
    let mut s = upload_start(0);
    s.message(&Message::Error(Error {
        code: ErrorCode::Busy,
        kind: 0x10,
        retry_after_ms: 1000,
    }));
    s.advance(2_100).settle();
    s.message(&grant(1))
        .message(&plan(0, Plan::Upload { offset: 0 }));
    s.transmit();
    s.message(&Message::FileRejected(FileRejected {
        index: 0,
        reason: ErrorCode::HashMismatch,
    }));
    s.events();
    seeds.push(seed(
        "upload_session",
        "busy-then-rejected",
        s.as_bytes().to_vec(),
    ));
    seeds
}

type DownloadScript = Script<4096>;

fn manifest(s: &mut DownloadScript, ready: bool) {
    s.message(&Message::Manifest(Manifest {
        code: fuzz_proto::code(),
        expires_at: 1_800_000_000,
        files: 3,
        total_size: 706,
        received: if ready { 706 } else { 100 },
        ready,
    }));
    for (i, c) in fuzz_proto::CONTENTS.iter().enumerate() {
        s.message(&Message::ManifestEntry(ManifestEntry {
            index: i as u16,
            size: c.len() as u64,
            sha1: Sha1Digest::of(c),
            received: c.len() as u64,
            name: fuzz_proto::NAMES[i],
        }));
    }
}

fn data(s: &mut DownloadScript, file: u16, from: usize, to: usize) {
    let content = fuzz_proto::CONTENTS[usize::from(file)];
    let mut at = from;
    while at < to {
        let end = (at + 200).min(to);
        s.message(&Message::Data(Data {
            file,
            offset: at as u64,
            bytes: &content[at..end],
        }));
        at = end;
    }
}

fn download_start(setup: u8, prefill: u8, ready: bool) -> DownloadScript {
    let mut s = DownloadScript::new(&[setup, prefill]);
    s.connect().transmit().message(&welcome(1024, 0)).transmit();
    manifest(&mut s, ready);
    s
}

fn download_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();

    let mut s = download_start(2, 0, true);
    s.transmit();
    data(&mut s, 0, 0, 700);
    s.transmit();
    data(&mut s, 1, 0, 6);
    s.events().transmit();
    seeds.push(seed(
        "download_session",
        "three-files-complete",
        s.as_bytes().to_vec(),
    ));

    // Half of file 0 on disk but corrupt, half of file 1 intact.
    let mut s = download_start(2, 0b0110, true);
    s.transmit();
    data(&mut s, 0, 350, 700);
    s.transmit();
    data(&mut s, 0, 0, 700);
    s.transmit();
    data(&mut s, 1, 3, 6);
    s.events();
    seeds.push(seed(
        "download_session",
        "refetch-corrupt-prefix",
        s.as_bytes().to_vec(),
    ));

    // Window of 64 bytes: acks, a gap, a restarted read.
    let mut s = download_start(0, 0, true);
    s.transmit();
    data(&mut s, 0, 0, 40);
    s.transmit();
    data(&mut s, 0, 80, 100);
    s.transmit();
    data(&mut s, 0, 40, 700);
    s.transmit();
    data(&mut s, 1, 0, 6);
    s.events();
    seeds.push(seed(
        "download_session",
        "small-window-gap",
        s.as_bytes().to_vec(),
    ));

    // Not ready yet: wait, poll again, then read.
    let mut s = download_start(2 | DOWNLOAD_WAIT, 0, false);
    for _ in 0..3 {
        s.advance(3_000).settle();
        manifest(&mut s, false);
    }
    manifest(&mut s, true);
    s.transmit();
    data(&mut s, 0, 0, 700);
    s.transmit();
    data(&mut s, 1, 0, 6);
    seeds.push(seed(
        "download_session",
        "wait-until-ready",
        s.as_bytes().to_vec(),
    ));

    // Manifest only, and an unknown code.
    let mut s = download_start(DOWNLOAD_MANIFEST_ONLY, 0, true);
    s.events().transmit();
    seeds.push(seed(
        "download_session",
        "manifest-only",
        s.as_bytes().to_vec(),
    ));
    let mut s = DownloadScript::new(&[2, 0]);
    s.connect().transmit().message(&welcome(1024, 0)).transmit();
    s.message(&Message::Error(Error {
        code: ErrorCode::UnknownCode,
        kind: 0x20,
        retry_after_ms: 0,
    }));
    s.events();
    seeds.push(seed(
        "download_session",
        "unknown-code",
        s.as_bytes().to_vec(),
    ));
    seeds
}

/// The relay's side of a listener's start: welcome, challenge, the
/// terminal authenticated.
fn listener_start(setup: u8) -> Script<4096> {
    let mut s = Script::<4096>::new(&[setup]);
    s.connect().transmit().message(&welcome(1024, 0)).transmit();
    s.message(&Message::Challenge(Challenge { nonce: [3; 16] }))
        .transmit();
    s.message(&Message::Authenticated(Authenticated {
        user: "ada",
        terminal: "sensor-1",
        token: AuthToken([0; 16]),
        expires_at: 0,
    }))
    .transmit();
    s
}

fn notice(id: u64, sender: &str, total_size: u64) -> Message<'_> {
    Message::Notice(Notice {
        id,
        code: fuzz_proto::code(),
        sender,
        files: 1,
        total_size,
        expires_at: 1_800_000_000,
    })
}

fn notice_session_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    // An inbox of two: both handed out and acknowledged; the first
    // confirmed and settled, the second refused, its Settled lost and
    // the refusal repeated on the timer.
    let mut s = listener_start(0);
    s.message(&Message::Inbox(Inbox { count: 2 }));
    s.message(&notice(1, "ada", 6))
        .message(&notice(2, "bob", 700));
    s.events().transmit();
    s.app(0, 0).transmit();
    s.message(&Message::Settled(Settled { id: 1 })).events();
    s.app(2, 1).transmit().advance(2_500).timers();
    s.message(&Message::Settled(Settled { id: 2 })).events();
    seeds.push(seed(
        "notice_session",
        "inbox-confirm-refuse",
        s.as_bytes().to_vec(),
    ));

    // Ids 1 and 2 remembered as settled; only ada's notices of at most
    // 100 bytes taken: 1 again gets its Receipt, bob's and a large one
    // are refused by the policy, an UnknownNotice orphans a verdict.
    let mut s =
        listener_start(fuzz_proto::NOTICE_REMEMBER | (3 << fuzz_proto::NOTICE_POLICY_SHIFT));
    s.message(&Message::Inbox(Inbox { count: 3 }));
    s.message(&notice(1, "ada", 6)).transmit();
    s.message(&notice(3, "bob", 6))
        .message(&notice(4, "ada", 700));
    s.events().transmit();
    s.message(&Message::Error(Error {
        code: ErrorCode::UnknownNotice,
        kind: Kind::Receipt as u8,
        retry_after_ms: 0,
    }));
    s.events().transmit().advance(2_500).timers().events();
    seeds.push(seed(
        "notice_session",
        "remembered-and-policy",
        s.as_bytes().to_vec(),
    ));

    // A ledger of two ids: a third notice waits for a settlement; a
    // settled id forgotten comes back; the link drops and comes back.
    let mut s = listener_start(fuzz_proto::NOTICE_SMALL_LEDGER);
    s.message(&Message::Inbox(Inbox { count: 3 }));
    s.message(&notice(1, "ada", 6))
        .message(&notice(2, "ada", 6));
    s.message(&notice(3, "ada", 6)).events().transmit();
    s.app(0, 0)
        .transmit()
        .message(&Message::Settled(Settled { id: 1 }));
    s.message(&notice(3, "ada", 6)).events().transmit();
    s.disconnect()
        .connect()
        .transmit()
        .message(&welcome(1024, 0))
        .transmit();
    s.message(&Message::Challenge(Challenge { nonce: [4; 16] }))
        .transmit();
    s.advance(20_000).timers().advance(40_000).timers();
    seeds.push(seed(
        "notice_session",
        "small-ledger-relink",
        s.as_bytes().to_vec(),
    ));

    // Tiny timers: relisten and retransmit at 1 ms.
    let mut s = listener_start(fuzz_proto::NOTICE_TINY_TIMERS);
    s.message(&Message::Inbox(Inbox { count: 1 }))
        .advance(5)
        .timers();
    s.message(&notice(5, "ada", 6))
        .events()
        .app(0, 4)
        .transmit();
    s.advance(3).timers().fire_timer().transmit();
    seeds.push(seed("notice_session", "tiny-timers", s.as_bytes().to_vec()));

    // A sender with a token: push (answered), status (two deliveries and
    // Done), allow bob (Done), then a push refused as rate-limited.
    let mut s = Script::<4096>::new(&[fuzz_proto::NOTICE_SENDER]);
    s.connect().transmit().message(&welcome(1024, 0)).transmit();
    s.message(&Message::Authenticated(Authenticated {
        user: "ada",
        terminal: "",
        token: AuthToken([0; 16]),
        expires_at: 0,
    }));
    s.app_raw(1 << 5).transmit();
    let delivery = |push_id: u64, state: DeliveryState| {
        Message::Delivery(Delivery {
            push_id,
            code: fuzz_proto::code(),
            terminal: "sensor-1",
            state,
            bytes: 0,
            total: 6,
            at: 1_790_000_000,
            until: 1_800_000_000,
        })
    };
    s.message(&delivery(1, DeliveryState::Queued)).events();
    s.app_raw(2).transmit();
    s.message(&delivery(1, DeliveryState::Notified));
    s.message(&delivery(2, DeliveryState::Delivered));
    s.message(&Message::Done(Done {
        kind: Kind::DeliveryStatus as u8,
    }))
    .events();
    s.app_raw(3 | 0x08).transmit();
    s.message(&Message::Done(Done {
        kind: Kind::AllowSender as u8,
    }))
    .events();
    s.app_raw(2 << 5).transmit();
    s.message(&Message::Error(Error {
        code: ErrorCode::RateLimited,
        kind: Kind::Push as u8,
        retry_after_ms: 3_000,
    }));
    s.events()
        .advance(3_000)
        .timers()
        .app_raw(4)
        .advance(20_000)
        .timers();
    seeds.push(seed(
        "notice_session",
        "sender-push-status-allow",
        s.as_bytes().to_vec(),
    ));
    seeds
}

fn seed(target: &'static str, name: &str, bytes: Vec<u8>) -> Seed {
    Seed {
        target,
        name: name.to_owned(),
        bytes,
    }
}

fn relay_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut s = RelayScript::new(3);
    s.connect(0).upload_a(0, 255);
    s.connect(1).hello(1, 2).fetch(1, true).transmit(1);
    s.read(1, 0, 0, 4096).transmit(1).timers();
    seeds.push(seed(
        "relay_session",
        "upload-then-download",
        s.bytes().to_vec(),
    ));

    // 64-byte frames both ways.
    let mut s = RelayScript::new(0);
    s.connect(0).hello(0, 0).transmit(0);
    s.batch_open(0, 1, 700).announce(0, 0, 0).transmit(0);
    let mut off = 0u16;
    while off < 700 {
        s.data(0, 0, off, 40);
        off += 40;
    }
    s.transmit(0).timers().transmit(0);
    s.connect(1).hello(1, 0).fetch(1, true).transmit(1);
    s.read(1, 0, 0, 256).transmit(1);
    seeds.push(seed("relay_session", "small-frames", s.bytes().to_vec()));

    // The same content again from another terminal, on a relay that
    // reveals what it holds (setup bits 6-7: open): challenge, proof, held.
    let mut s = RelayScript::new(0x80 | 3);
    s.connect(0).upload_a(0, 255);
    s.connect(1).hello(1, 2).transmit(1);
    s.batch_open(1, 1, 700).announce(1, 0, 0).transmit(1);
    s.proof(1, 0).transmit(1);
    seeds.push(seed(
        "relay_session",
        "instant-upload-proof",
        s.bytes().to_vec(),
    ));

    // The same from another terminal by default: a stranger to the first,
    // so no challenge (it is told to upload).
    let mut s = RelayScript::new(3);
    s.connect(0).upload_a(0, 255);
    s.connect(1).hello(1, 2).transmit(1);
    s.batch_open(1, 1, 700).announce(1, 0, 0).transmit(1);
    seeds.push(seed(
        "relay_session",
        "stranger-not-challenged",
        s.bytes().to_vec(),
    ));

    // The same again in the uploader's own session, by default: its own
    // token family, so challenged, proven, held.
    let mut s = RelayScript::new(3);
    s.connect(0).upload_a(0, 255);
    s.batch_open(0, 1, 700).announce_as(0, 0, 0, 1).transmit(0);
    s.proof(0, 0).transmit(0);
    seeds.push(seed(
        "relay_session",
        "same-family-challenged",
        s.bytes().to_vec(),
    ));

    // Half uploaded, acknowledged, crash, resume with the token, finish.
    let mut s = RelayScript::new(3);
    s.connect(0).hello(0, 2).transmit(0);
    s.batch_open(0, 1, 700).announce(0, 0, 0).transmit(0);
    s.data(0, 0, 0, 255).data(0, 0, 255, 100);
    s.advance_ms(500).timers().transmit(0);
    s.data(0, 0, 355, 100).crash();
    s.connect(0).hello(0, 2).resume(0).transmit(0);
    s.data(0, 0, 355, 255).data(0, 0, 610, 90);
    s.transmit(0).timers().transmit(0);
    seeds.push(seed(
        "relay_session",
        "crash-and-resume",
        s.bytes().to_vec(),
    ));

    // Deferred jobs: acks only after the write and then the sync ran; a
    // crash with a job pending loses only unacknowledged bytes.
    let mut s = RelayScript::new(0x20 | 3);
    s.connect(0).hello(0, 2).transmit(0);
    s.batch_open(0, 1, 700).announce(0, 0, 0).transmit(0);
    s.data(0, 0, 0, 255).data(0, 0, 255, 255).transmit(0);
    s.timers().timers().transmit(0).data(0, 0, 510, 100).crash();
    s.connect(0).hello(0, 2).resume(0).transmit(0);
    s.data(0, 0, 510, 190).transmit(0).timers().transmit(0);
    seeds.push(seed(
        "relay_session",
        "deferred-syncs-crash",
        s.bytes().to_vec(),
    ));

    // A 60-second code: fetch after expiry, and after the relay forgot it.
    let mut s = RelayScript::new(0x10 | 3);
    s.connect(0).upload_a(0, 255);
    s.advance_secs(90).sweep();
    s.connect(1).hello(1, 2).fetch(1, true).transmit(1);
    s.advance_secs(300).sweep().fetch(1, true).transmit(1);
    seeds.push(seed("relay_session", "expired-code", s.bytes().to_vec()));

    // Tight limits: too many files, too large, quota; then guesses.
    let mut s = RelayScript::new(0x08 | 3);
    s.connect(0).hello(0, 2).transmit(0);
    s.batch_open(0, 3, 1400).transmit(0);
    s.batch_open(0, 1, 700).announce(0, 0, 0).transmit(0);
    s.batch_open(0, 2, 1400)
        .announce(0, 0, 0)
        .announce(0, 1, 0)
        .transmit(0);
    for _ in 0..12 {
        s.fetch(0, false);
    }
    s.transmit(0);
    seeds.push(seed(
        "relay_session",
        "limits-and-guesses",
        s.bytes().to_vec(),
    ));
    seeds.extend(identity_seeds());
    seeds
}

/// Terminal `t` uploads file A (700 bytes) under its name a.bin as its
/// user's named file, in 255-byte frames (after `hello`: another would
/// forget the `NamedPut`).
fn put_named_a(s: &mut RelayScript, t: u8) {
    s.named_put(t)
        .batch_open(t, 1, 700)
        .announce(t, 0, 0)
        .transmit(t);
    s.data(t, 0, 0, 255)
        .data(t, 0, 255, 255)
        .data(t, 0, 510, 190);
    s.transmit(t).timers().transmit(t);
}

/// Seeds that reach identity and named files (PROTOCOL.md §8), on a relay
/// that refuses anonymous transfers (setup bits 6-7 = 3).
fn identity_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    // Terminal t1 answers its challenge, puts a.bin, fetches and reads it.
    let mut s = RelayScript::new(0xc0 | 3);
    s.connect(0).hello(0, 2).transmit(0);
    s.terminal_auth(0, true).transmit(0);
    s.challenge_answer(0, true).transmit(0);
    put_named_a(&mut s, 0);
    s.fetch_named(0, 0, 0).transmit(0);
    s.read_named(0, 0, 0, 4096).transmit(0);
    seeds.push(seed(
        "relay_session",
        "terminal-named-put-fetch",
        s.bytes().to_vec(),
    ));

    // ada logs in, puts a.bin and shares it with bob; bob logs in on
    // another connection, fetches and reads it.
    let mut s = RelayScript::new(0xc0 | 3);
    s.connect(0).hello(0, 2).login(0, 0, true).transmit(0);
    put_named_a(&mut s, 0);
    s.share_named(0, 0, 0, true).transmit(0);
    s.connect(1).hello(1, 2).login(1, 1, true).transmit(1);
    s.fetch_named(1, 0, 0).transmit(1);
    s.read_named(1, 0, 0, 4096).transmit(1);
    seeds.push(seed(
        "relay_session",
        "login-share-fetch",
        s.bytes().to_vec(),
    ));

    // Wrong passwords for ada until the relay stops checking them; then
    // the right one is refused too (the account is locked for a while).
    let mut s = RelayScript::new(0xc0 | 3);
    s.connect(0).hello(0, 2).transmit(0);
    for _ in 0..6 {
        s.login(0, 0, false).transmit(0);
    }
    s.login(0, 0, true).transmit(0);
    seeds.push(seed(
        "relay_session",
        "wrong-passwords-rate-limited",
        s.bytes().to_vec(),
    ));
    seeds
}

/// Seeds that reach addressed delivery (PROTOCOL.md §11): t1 listens as
/// itself, a user pushes a complete batch to it, and the relay sweeps
/// with time passing.
fn notice_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    // ada pushes to listening t1; the doorbell wakes t1's session, which
    // acknowledges, downloads and confirms; ada asks how it stands.
    let mut s = RelayScript::new(3);
    s.connect_as_t1(0).listen(0).transmit(0);
    s.connect(1).hello(1, 2).login(1, 0, true).transmit(1);
    s.upload_small(1);
    s.push(1, true, 0, 1).transmit(1);
    s.wake(0).transmit(0);
    s.notice_ack(0, 0).transmit(0);
    s.fetch(0, true).transmit(0).read(0, 0, 0, 100).transmit(0);
    s.receipt(0, 0).transmit(0);
    s.delivery_status(1).transmit(1);
    seeds.push(seed(
        "relay_session",
        "push-wake-receipt",
        s.bytes().to_vec(),
    ));

    // ada lets bob push to her terminals; bob pushes twice (once again
    // with the same push id, and to a terminal that does not exist);
    // t1 listens on two connections (the second takes over), refuses one
    // notice and sends receipts with forged ids.
    let mut s = RelayScript::new(3);
    s.connect(1).hello(1, 2).login(1, 0, true).transmit(1);
    s.allow_sender(1, 0, true).transmit(1);
    s.connect(2).hello(2, 2).login(2, 1, true).transmit(2);
    s.upload_small(2);
    s.push(2, true, 0, 1)
        .push(2, true, 0, 1)
        .push(2, true, 1, 2);
    s.transmit(2);
    s.connect_as_t1(0).listen(0).transmit(0);
    s.connect_as_t1(1).listen(1).transmit(1);
    s.push(2, true, 0, 3).transmit(2);
    s.wake(0).wake(1).transmit(0).transmit(1);
    s.notice_refuse(1, 0).transmit(1);
    s.receipt(1, 0x81).receipt(1, 0xff).transmit(1);
    s.receipt(1, 1).transmit(1);
    s.delivery_status(2).transmit(2);
    seeds.push(seed(
        "relay_session",
        "allowed-sender-takeover-forged",
        s.bytes().to_vec(),
    ));

    // A 60-second code pushed and never confirmed: past the confirm
    // deadline the sweep makes it Offline (kept 900 s), then Expired.
    let mut s = RelayScript::new(0x10 | 3);
    s.connect(1).hello(1, 2).login(1, 0, true).transmit(1);
    s.upload_small(1);
    s.push(1, true, 0, 1).transmit(1);
    s.advance_secs(61).sweep();
    s.connect_as_t1(0).listen(0).transmit(0);
    s.notice_ack(0, 0).transmit(0);
    s.advance_secs(1000).sweep();
    s.listen(0).transmit(0);
    s.receipt(0, 0).transmit(0);
    s.connect(1).hello(1, 2).login(1, 0, true).transmit(1);
    s.delivery_status(1).transmit(1);
    seeds.push(seed(
        "relay_session",
        "offline-then-expired",
        s.bytes().to_vec(),
    ));

    // Regression: t1 listens after the 60-second code expired and before
    // any sweep; the relay listed the expired notice.
    let mut s = RelayScript::new(0x10 | 3);
    s.connect(1).hello(1, 2).login(1, 0, true).transmit(1);
    s.upload_small(1);
    s.push(1, true, 0, 1).transmit(1);
    s.advance_secs(61);
    s.connect_as_t1(0).listen(0).transmit(0);
    seeds.push(seed(
        "relay_session",
        "regression-inbox-lists-expired-before-sweep",
        s.bytes().to_vec(),
    ));
    seeds
}

/// Every seed of the proto-core targets.
pub fn proto_seeds() -> Vec<Seed> {
    let mut all = frame_decoder_seeds();
    all.extend(message_decode_seeds());
    all.extend(upload_seeds());
    all.extend(download_seeds());
    all.extend(notice_session_seeds());
    all
}

/// Every seed of the `relay_session` target.
pub fn all_relay_seeds() -> Vec<Seed> {
    let mut all = relay_seeds();
    all.extend(notice_seeds());
    all
}

/// The libFuzzer dictionary for the frame and message targets: every kind
/// byte and the wire form of each short message (at most 64 bytes).
pub fn frames_dict() -> String {
    let mut out = String::from(
        "# Generated by pickup-tests (src/fuzz_seeds.rs); check: cargo test -p pickup-tests --test fuzz_corpus\n",
    );
    for m in every_kind() {
        let kind = m.kind() as u8;
        out.push_str(&format!("kind_{}=\"\\x{kind:02x}\"\n", slug(&m)));
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in every_kind() {
        let w = wire(&m);
        if w.len() <= 64 && seen.insert(w.clone()) {
            let escaped: String = w.iter().map(|b| format!("\\x{b:02x}")).collect();
            out.push_str(&format!("wire_{}_{}=\"{escaped}\"\n", slug(&m), seen.len()));
        }
    }
    // Varint edges that postcard bodies are made of.
    for (name, bytes) in [
        ("varint_max_u16", &[0xff, 0xff, 0x03][..]),
        ("varint_max_u32", &[0xff, 0xff, 0xff, 0xff, 0x0f][..]),
        ("code_len_8", &[0x08][..]),
    ] {
        let escaped: String = bytes.iter().map(|b| format!("\\x{b:02x}")).collect();
        out.push_str(&format!("{name}=\"{escaped}\"\n"));
    }
    out
}
