//! The drivers' own tests: scripted exchanges that reach each outcome,
//! checkers that catch what they should, and random inputs.

use pickup_proto::download::Sink;
use pickup_proto::frame::{self, Decoder};
use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::{
    self, Ack, FilePlan, FileVerified, Grant, Kind, Manifest, ManifestEntry, Message, Plan,
    ResumeToken, Role, Welcome,
};
use pickup_proto::storage::WriteAt;

use super::check::{FuzzSink, SinkFile, UploadChecker, SINK_CAP};
use super::decode::{run_decoder, Mode};
use super::script::{Input, OP_ADVANCE, OP_CONNECT, OP_FRAME, OP_RELAY, OP_SETTLE};
use super::*;
use crate::samples::{every_kind, of_kind};

/// A xorshift generator: deterministic pseudo-random inputs for the
/// in-tree smoke runs of every driver.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn random_inputs(seed: u64, count: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut s = seed;
    (0..count)
        .map(|_| {
            let len = (xorshift(&mut s) as usize) % max_len;
            (0..len).map(|_| xorshift(&mut s) as u8).collect()
        })
        .collect()
}

fn wire(msg: &Message<'_>) -> Vec<u8> {
    let mut out = std::vec![0u8; 2048];
    let n = msg.encode(1024, &mut out).unwrap();
    out.truncate(n);
    out
}

fn wire_prefixed(msg: &Message<'_>) -> Vec<u8> {
    let format = frame::Format {
        framing: frame::Framing::LengthPrefixed,
        max_frame: 1024,
    };
    let mut out = std::vec![0u8; 2048];
    let n = msg.encode(format, &mut out).unwrap();
    out.truncate(n);
    out
}

#[test]
fn decode_stream_finds_every_frame_in_any_split() {
    let msgs = every_kind();
    let mut stream = std::vec![0u8, 1, 0, 6, 250];
    for m in &msgs {
        stream.extend(wire(m));
    }
    assert_eq!(decode_stream(&stream), msgs.len() as u64);
    // Length-prefixed, from the first byte or after COBS frames.
    let mut prefixed = std::vec![1u8, 1, 0, 6, 250];
    let mut switching = std::vec![2u8, 3, 0, 9, 1];
    switching.extend(wire(&of_kind(Kind::Hello)));
    for m in &msgs {
        prefixed.extend(wire_prefixed(m));
        switching.extend(wire_prefixed(m));
    }
    assert_eq!(decode_stream(&prefixed), msgs.len() as u64);
    assert_eq!(decode_stream(&switching), msgs.len() as u64 + 1);
    // COBS to a length-prefixed decoder: nothing, and one drop.
    let mut wrong = std::vec![1u8, 0, 0, 0, 0];
    wrong.extend(wire(&of_kind(Kind::Hello)));
    assert_eq!(decode_stream(&wrong), 0);
    assert_eq!(run_decoder(Mode::Prefixed, &wrong[5..], &[]).drops, 1);
    // Garbage in front and a cut frame in the middle lose only what they hit.
    let mut noisy = std::vec![0u8, 3, 1, 4, 1];
    noisy.extend_from_slice(b"\x07garbage");
    noisy.push(0);
    noisy.extend(wire(&of_kind(Kind::Hello)));
    let cut = wire(&of_kind(Kind::FileAnnounce));
    noisy.extend_from_slice(&cut[..cut.len() / 2]);
    noisy.push(0);
    noisy.extend(wire(&of_kind(Kind::Grant)));
    assert_eq!(decode_stream(&noisy), 2);
    let digest = run_decoder(Mode::Cobs, &noisy[5..], &[]);
    assert_eq!(digest.messages, 2);
    assert_eq!(digest.drops, 2);
}

#[test]
fn decode_message_round_trips_every_kind_and_refuses_nonsense() {
    for m in every_kind() {
        let w = wire(&m);
        let mut dec = Decoder::new([0u8; 1024]);
        let mut input = &w[..];
        let f = dec.feed(&mut input).unwrap().unwrap();
        let mut data = std::vec![f.kind];
        data.extend_from_slice(f.body);
        assert!(decode_message(&data), "{m:?}");
    }
    assert!(!decode_message(&[]));
    assert!(!decode_message(&[0x7f, 1, 2]), "unknown kind");
    assert!(
        !decode_message(&[Kind::Keepalive as u8, 0]),
        "trailing byte"
    );
    assert!(!decode_message(&[Kind::Hello as u8, 1, 9]), "bad role");
}

#[test]
fn decoders_survive_random_input() {
    for data in random_inputs(0x9e37_79b9_7f4a_7c15, 3000, 600) {
        decode_stream(&data);
        decode_message(&data);
    }
}

/// Relay messages for a plain upload of all three files with a
/// 256-byte frame limit.
fn upload_script(setup: u8) -> Script<4096> {
    let mut s = Script::<4096>::new(&[setup]);
    s.connect().transmit();
    s.message(&Message::Welcome(Welcome {
        version: 1,
        role: Role::Relay,
        max_frame: 256,
        window: 4096,
        caps: 1,
    }));
    s.transmit().events();
    s
}

fn grant_and_plans(s: &mut Script<4096>, plans: [Plan; 3]) {
    s.message(&Message::Grant(Grant {
        code: code(),
        expires_at: 1_800_000_000,
        token: TOKEN,
        files: 3,
    }));
    for (i, plan) in plans.into_iter().enumerate() {
        s.message(&Message::FilePlan(FilePlan {
            index: i as u16,
            plan,
        }));
    }
}

fn ack_and_verify(s: &mut Script<4096>, file: u16) {
    s.message(&Message::Ack(Ack {
        file,
        offset: CONTENTS[usize::from(file)].len() as u64,
        window: 4096,
    }));
    s.message(&Message::FileVerified(FileVerified { index: file }));
}

#[test]
fn a_scripted_upload_completes() {
    let mut s = upload_script(2);
    grant_and_plans(
        &mut s,
        [
            Plan::Upload { offset: 0 },
            Plan::Upload { offset: 0 },
            Plan::Held,
        ],
    );
    s.transmit().events();
    ack_and_verify(&mut s, 0);
    ack_and_verify(&mut s, 1);
    s.events().transmit();
    let summary = drive_upload(s.as_bytes());
    assert!(summary.completed, "{summary:?}");
    assert_eq!(summary.data_bytes, 706);
    // hello, open, 3 announces, 3+1 data frames, goodbye
    assert_eq!(summary.frames_sent, 10);
}

#[test]
fn a_scripted_upload_resumes_after_a_lost_link() {
    let mut s = upload_script(2);
    grant_and_plans(&mut s, [Plan::Upload { offset: 0 }, Plan::Held, Plan::Held]);
    s.transmit();
    // Only the first 237 bytes became durable before the link dropped.
    s.message(&Message::Ack(Ack {
        file: 0,
        offset: 237,
        window: 4096,
    }));
    s.disconnect().advance(500).connect().transmit();
    s.message(&Message::Welcome(Welcome {
        version: 1,
        role: Role::Relay,
        max_frame: 256,
        window: 4096,
        caps: 1,
    }));
    s.transmit(); // Resume
    grant_and_plans(
        &mut s,
        [Plan::Upload { offset: 237 }, Plan::Held, Plan::Held],
    );
    s.transmit();
    ack_and_verify(&mut s, 0);
    s.events();
    let summary = drive_upload(s.as_bytes());
    assert!(summary.completed, "{summary:?}");
    assert_eq!(summary.data_bytes, 700 + 700 - 237);
}

#[test]
fn a_scripted_upload_answers_a_challenge_and_times_out_cleanly() {
    let mut s = upload_script(2 | UPLOAD_INSTANT);
    grant_and_plans(
        &mut s,
        [
            Plan::Challenge { nonce: [7; 32] },
            Plan::Upload { offset: 0 },
            Plan::Held,
        ],
    );
    s.transmit();
    s.message(&Message::FilePlan(FilePlan {
        index: 0,
        plan: Plan::Held,
    }));
    // The relay falls silent: retransmit, keepalive, then link lost.
    for _ in 0..12 {
        s.advance(2_500).settle().events();
    }
    let summary = drive_upload(s.as_bytes());
    assert!(!summary.completed && !summary.failed, "{summary:?}");
    assert!(
        summary.data_bytes >= 12,
        "file 1 sent and resent: {summary:?}"
    );
}

/// Fuzzer input from CI: a grant sent as a raw frame carries a token of
/// its own, and the session rightly resumes with it later.
#[test]
fn a_resume_may_carry_the_token_of_a_raw_grant() {
    let other = ResumeToken([0x77; 16]);
    let mut s = upload_script(0);
    s.message(&Message::Grant(Grant {
        code: code(),
        expires_at: 1_800_000_000,
        token: other,
        files: 1,
    }));
    s.message(&Message::FilePlan(FilePlan {
        index: 0,
        plan: Plan::Upload { offset: 0 },
    }));
    s.transmit();
    // Silence: the retransmission timer resumes with the granted token.
    for _ in 0..3 {
        s.advance(2_100).settle();
    }
    let summary = drive_upload(s.as_bytes());
    assert!(summary.frames_sent > 6, "{summary:?}");
}

#[test]
#[should_panic(expected = "data differs")]
fn the_upload_checker_catches_wrong_bytes() {
    let mut checker = UploadChecker {
        files: 2,
        max_frame: 1024,
        tokens: [None; 8],
        tokens_overflow: false,
        buf: [0; CHECK_FRAME],
    };
    let good = wire(&Message::Data(message::Data {
        file: 1,
        offset: 1,
        bytes: b"ick",
    }));
    assert_eq!(checker.check(&good), 3);
    checker.check(&wire(&Message::Data(message::Data {
        file: 1,
        offset: 1,
        bytes: b"ack",
    })));
}

#[test]
#[should_panic(expected = "over the limit")]
fn the_upload_checker_catches_oversize_frames() {
    let mut checker = UploadChecker {
        files: 1,
        max_frame: 64,
        tokens: [None; 8],
        tokens_overflow: false,
        buf: [0; CHECK_FRAME],
    };
    checker.check(&wire(&Message::Data(message::Data {
        file: 0,
        offset: 0,
        bytes: &CONTENT_A[..100],
    })));
}

fn download_script(setup: u8, prefill: u8, ready: bool) -> Script<4096> {
    let mut s = Script::<4096>::new(&[setup, prefill]);
    s.connect().transmit();
    s.message(&Message::Welcome(Welcome {
        version: 1,
        role: Role::Relay,
        max_frame: 1024,
        window: 0,
        caps: 0,
    }));
    s.transmit();
    manifest(&mut s, ready);
    s
}

fn manifest(s: &mut Script<4096>, ready: bool) {
    s.message(&Message::Manifest(Manifest {
        code: code(),
        expires_at: 1_800_000_000,
        files: 3,
        total_size: 706,
        received: if ready { 706 } else { 100 },
        ready,
    }));
    for (i, c) in CONTENTS.iter().enumerate() {
        s.message(&Message::ManifestEntry(ManifestEntry {
            index: i as u16,
            size: c.len() as u64,
            sha1: Sha1Digest::of(c),
            received: c.len() as u64,
            name: NAMES[i],
        }));
    }
}

fn data(s: &mut Script<4096>, file: u16, from: usize, to: usize) {
    let content = CONTENTS[usize::from(file)];
    let mut at = from;
    while at < to {
        let end = (at + 200).min(to);
        s.message(&Message::Data(message::Data {
            file,
            offset: at as u64,
            bytes: &content[at..end],
        }));
        at = end;
    }
}

#[test]
fn a_scripted_download_completes() {
    let mut s = download_script(2, 0, true);
    s.transmit(); // Read file 0
    data(&mut s, 0, 0, 700);
    s.transmit(); // Read file 1
    data(&mut s, 1, 0, 6);
    s.events().transmit();
    let summary = drive_download(s.as_bytes());
    assert!(summary.completed, "{summary:?}");
    assert_eq!(summary.data_bytes, 706);
    // hello, fetch, read, read, goodbye
    assert_eq!(summary.frames_sent, 5);
}

#[test]
fn a_scripted_download_refetches_a_corrupt_prefix_and_uses_a_good_one() {
    // File 0: half present with a corrupt first byte; file 1 half present, intact.
    let mut s = download_script(2, 0b0110, true);
    s.transmit(); // re-hash, Read file 0 from 350
    data(&mut s, 0, 350, 700); // hash mismatch: truncate, Refetch
    s.transmit(); // Read file 0 from 0
    data(&mut s, 0, 0, 700);
    s.transmit(); // re-hash file 1's prefix, Read from 3
    data(&mut s, 1, 3, 6);
    s.events().transmit();
    let summary = drive_download(s.as_bytes());
    assert!(summary.completed, "{summary:?}");
    assert_eq!(summary.data_bytes, 350 + 700 + 3);
}

#[test]
fn a_scripted_download_with_small_window_acks_and_survives_a_gap() {
    let mut s = download_script(0, 0, true); // window 64
    s.transmit();
    // 40 bytes, then a gap (40..80 lost), then the restart.
    s.message(&Message::Data(message::Data {
        file: 0,
        offset: 0,
        bytes: &CONTENT_A[..40],
    }));
    s.transmit(); // Ack: 24 bytes of credit left
    s.message(&Message::Data(message::Data {
        file: 0,
        offset: 80,
        bytes: &CONTENT_A[80..100],
    }));
    s.transmit(); // Read from 40
    data(&mut s, 0, 40, 700);
    s.transmit();
    data(&mut s, 1, 0, 6);
    s.events();
    let summary = drive_download(s.as_bytes());
    assert!(summary.completed, "{summary:?}");
    assert_eq!(summary.data_bytes, 706);
}

#[test]
fn a_scripted_download_waits_for_a_batch_that_is_not_ready() {
    let mut s = download_script(2 | DOWNLOAD_WAIT, 0, false);
    // The relay answers every fetch: still uploading, for 30 seconds.
    for _ in 0..10 {
        s.advance(3_000).settle();
        manifest(&mut s, false);
    }
    manifest(&mut s, true);
    s.transmit();
    data(&mut s, 0, 0, 700);
    s.transmit();
    data(&mut s, 1, 0, 6);
    let summary = drive_download(s.as_bytes());
    assert!(summary.completed, "{summary:?}");
}

#[test]
fn a_download_rejects_a_wrong_file_and_never_finishes_it() {
    let mut s = download_script(2, 0, true);
    s.transmit();
    s.message(&Message::Data(message::Data {
        file: 0,
        offset: 0,
        bytes: &[0u8; 200],
    }));
    data(&mut s, 0, 200, 700);
    s.events();
    let summary = drive_download(s.as_bytes());
    assert!(summary.failed, "{summary:?}");
}

#[test]
#[should_panic(expected = "does not match its SHA-1")]
fn the_sink_refuses_to_finish_wrong_content() {
    let empty = SinkFile {
        bytes: [0; SINK_CAP],
        len: 0,
        entry: None,
        finished: false,
    };
    let mut sink = FuzzSink {
        files: [empty; 4],
        refuse_open: false,
        written: 0,
    };
    let entry = ManifestEntry {
        index: 1,
        size: 6,
        sha1: Sha1Digest::of(b"pickup"),
        received: 6,
        name: "b.txt",
    };
    assert_eq!(sink.open(&entry), Ok(0));
    sink.write_at(1, 0, b"pickup").unwrap();
    sink.write_at(1, 0, b"P").unwrap();
    sink.finish(1).unwrap();
}

#[test]
fn drivers_survive_random_operations() {
    // Uniform bytes: one operation in nine is a built-in relay message,
    // enough to get past the handshake now and then.
    for data in random_inputs(0x5eed, 2000, 400) {
        drive_upload(&data);
        drive_download(&data);
    }
}

#[test]
fn scripts_write_what_the_drivers_read() {
    let mut s = Script::<32>::new(&[7]);
    s.connect()
        .advance(0x0102)
        .frame(0x20, b"ab")
        .relay(&[1, 2])
        .settle();
    assert_eq!(
        s.as_bytes(),
        [
            7, OP_CONNECT, OP_ADVANCE, 2, 1, OP_FRAME, 0x20, 2, b'a', b'b', OP_RELAY, 1, 2,
            OP_SETTLE
        ]
    );
    let mut input = Input {
        data: &s.as_bytes()[6..],
    };
    let f = input.frame().unwrap();
    assert_eq!((f.kind, f.body), (0x20, &b"ab"[..]));
}
