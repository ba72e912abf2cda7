//! Exact reproductions of bugs the simulator and the fuzzers found, one test
//! each, against the real client machines and the real relay session (see
//! `pickup_tests::sim::pair`). Each names the seed that found it and the
//! commit that fixed it; a bug not fixed yet would carry `#[ignore]` with
//! its reason.

use pickup_proto::code::Code;
use pickup_proto::download;
use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::{Kind, Manifest, ManifestEntry, Message, Welcome};
use pickup_proto::upload::{self, FileMeta};
use pickup_proto::{Duration, Instant};
use pickup_relay::{Link, Settings};
use pickup_tests::fuzz_relay::{drive_relay, RelayScript};
use pickup_tests::mem_files::MemFiles;
use pickup_tests::sim::pair::{Pair, Terminal};
use pickup_tests::sim::rng::SimRng;

fn random_file(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    SimRng::new(seed).fill(&mut data);
    data
}

fn metas<'a>(names: &'a [&'a str], files: &[Vec<u8>]) -> Vec<FileMeta<'a>> {
    names
        .iter()
        .zip(files)
        .map(|(name, data)| FileMeta {
            name,
            size: data.len() as u64,
            sha1: Sha1Digest::of(data),
        })
        .collect()
}

/// Timeouts for a slow serial link, as the simulator uses them: the
/// retransmit timer is longer than the keepalive interval, so keepalives
/// (and the relay's replies) flow while the upload waits for acks.
const SERIAL_UPLOAD: upload::Config = upload::Config {
    max_frame: 4096,
    retransmit_timeout: Duration::from_millis(8_000),
    idle_timeout: Duration::from_secs(60),
    keepalive_interval: Duration::from_secs(5),
    instant_upload: true,
    max_window: 2048,
    page_link: false,
    relay_limits: false,
    length_prefix: false,
};

fn completed(events: &[String]) -> bool {
    events.iter().any(|e| e.starts_with("Complete"))
}

/// Simulator seed 1. The relay's `Grant` and `FilePlan` for a batch are
/// lost, but the `FileVerified` that follows them arrives: the upload marks
/// the file done while still waiting for the grant. When the grant and
/// plans come again, `upload::Session::on_grant` / `on_plan` never call
/// `check_complete`, so the upload never finishes (keepalives forever).
///
/// Fixed in proto-core 876596f (verdicts count only after the grant; a
/// grant or plan for finished files completes the upload).
#[test]
fn upload_completes_when_its_grant_is_lost_but_the_verdict_arrives() {
    let files = vec![Vec::new()];
    let names = ["empty.txt"];
    let metas = metas(&names, &files);
    let session = upload::Session::new(upload::Config::default(), &metas).expect("valid batch");
    let mut pair = Pair::new(
        Settings::default(),
        Link::TCP,
        Terminal::Up(Box::new(session), &files),
    );
    pair.connect();
    let mut lost = 0;
    let events = pair.run(200, &mut |m: &Message<'_>| {
        let lose = matches!(m, Message::Grant(_) | Message::FilePlan(_)) && lost < 2;
        lost += u32::from(lose);
        lose
    });
    assert!(
        pair.finished() && completed(&events),
        "events: {events:?}\nrelay said: {:?}",
        pair.log
    );
}

/// Simulator seed 94. The terminal's window (1 KiB) is smaller than the
/// relay's (4 MiB), so it sends 1 KiB and waits. The relay's delayed `Ack`
/// for that KiB is lost. The terminal's retransmit timer resends the same
/// KiB; the relay already holds it, ignores the duplicate bytes as the
/// contract says, and sends no new ack. Nothing ever changes: the upload
/// retransmits the same window forever (the relay's keepalive replies keep
/// the link alive; with a retransmit timeout shorter than the keepalive
/// interval the idle timeout ends the cycle after 15 s instead). Either side can break the cycle: the terminal by
/// sending `Resume` when a retransmission brings no progress, or the relay
/// by acknowledging data below its durable offset.
///
/// Fixed in proto-core 876596f (a retransmission without progress also
/// sends `Resume`).
#[test]
fn upload_recovers_from_a_lost_ack_of_its_whole_window() {
    let files = vec![random_file(94, 3000)];
    let names = ["data.bin"];
    let metas = metas(&names, &files);
    let config = upload::Config {
        max_window: 1024,
        ..SERIAL_UPLOAD
    };
    let session = upload::Session::new(config, &metas).expect("valid batch");
    let link = Link {
        max_frame: 4096,
        window: 4 << 20,
        encrypted: false,
        reliable: false,
    };
    let mut pair = Pair::new(
        Settings::default(),
        link,
        Terminal::Up(Box::new(session), &files),
    );
    pair.connect();
    let mut lost = false;
    let events = pair.run(200, &mut |m: &Message<'_>| {
        let lose = matches!(m, Message::Ack(_)) && !lost;
        lost |= lose;
        lose
    });
    assert!(lost, "the scenario lost an ack");
    assert!(
        pair.finished() && completed(&events),
        "events: {events:?}\nrelay said: {:?}",
        pair.log
    );
}

/// Simulator seed 100. Same cycle at the end of a file: the final `Ack`
/// and `FileVerified` are lost; the relay then holds the file complete and
/// ignores the resent tail, so the upload retransmits it forever.
///
/// Fixed in proto-core 876596f, as above.
#[test]
fn upload_recovers_when_the_final_ack_and_verdict_are_lost() {
    let files = vec![random_file(100, 2500)];
    let names = ["tail.bin"];
    let metas = metas(&names, &files);
    let session = upload::Session::new(SERIAL_UPLOAD, &metas).expect("valid batch");
    let link = Link {
        max_frame: 1024,
        window: 64 * 1024,
        encrypted: false,
        reliable: false,
    };
    let mut pair = Pair::new(
        Settings::default(),
        link,
        Terminal::Up(Box::new(session), &files),
    );
    pair.connect();
    let mut verdicts_lost = 0;
    let events = pair.run(200, &mut |m: &Message<'_>| match m {
        // Lose every ack and the first verdict and completion notice.
        Message::Ack(_) => verdicts_lost == 0,
        Message::FileVerified(_) | Message::BatchComplete(_) if verdicts_lost < 2 => {
            verdicts_lost += 1;
            true
        }
        _ => false,
    });
    assert_eq!(verdicts_lost, 2, "the scenario lost the verdict");
    assert!(
        pair.finished() && completed(&events),
        "events: {events:?}\nrelay said: {:?}",
        pair.log
    );
}

/// Simulator seeds 26, 44, 59, 61, 75, 79, 82, 94, 97, 172, 180, 185, 197
/// and more (about one seed in ten on a noisy link). A corrupted delimiter
/// merges two frames into one longer than the relay's `max_frame`; the
/// relay's decoder drops it (`Dropped::Oversize`) and
/// `Session::handle_dropped` answers `Error{TooLarge}`, which the upload
/// treats as a refusal and fails for good. The contract says frames the
/// decoder drops are counted, never fatal: noise must not end a transfer.
///
/// Fixed in proto-core bca49ad: an `Error` about an unparseable frame
/// (kind 0) is noise to the terminal, not a refusal.
#[test]
fn line_noise_that_looks_like_an_oversize_frame_does_not_fail_the_upload() {
    let files = vec![random_file(180, 2000)];
    let names = ["noisy.bin"];
    let metas = metas(&names, &files);
    let session = upload::Session::new(upload::Config::default(), &metas).expect("valid batch");
    let link = Link {
        max_frame: 256,
        window: 64 * 1024,
        encrypted: false,
        reliable: false,
    };
    let mut pair = Pair::new(
        Settings::default(),
        link,
        Terminal::Up(Box::new(session), &files),
    );
    pair.connect();
    // 300 bytes without a delimiter, then one: what a lost 0x00 between
    // two frames looks like to the relay's decoder. It arrives while the
    // terminal receives its grant, before the data.
    let mut noise = vec![0x5a; 300];
    noise.push(0);
    pair.noise_after(Kind::Grant, noise);
    let events = pair.run(200, &mut |_: &Message<'_>| false);
    assert!(
        pair.finished() && completed(&events),
        "events: {events:?}\nrelay said: {:?}",
        pair.log
    );
}

/// Found by reading the fuzz target's invariants (`done <= total`): a
/// manifest whose entries' sizes sum past `u64::MAX` makes
/// `download::Session::total_size` (and `done_bytes`) overflow, which
/// panics in debug builds (`attempt to add with overflow` in
/// `Iterator::sum`) and wraps in release. Sizes come from the wire, so a
/// hostile or broken relay crashes the terminal.
///
/// Fixed in proto-core 876596f (saturating sums).
#[test]
fn a_manifest_with_huge_sizes_does_not_crash_the_download() {
    let code = Code::from_parts(8, 12345).expect("valid code");
    // A terminal that waits for a batch still uploading reports its progress.
    let config = download::Config {
        wait_until_ready: Some(Duration::from_secs(1)),
        ..download::Config::default()
    };
    let mut session = download::Session::<4>::new(config, code);
    let mut sink = MemFiles::default();
    let now = Instant::from_millis(1000);
    session.handle_connected(now);
    let welcome = Message::Welcome(Welcome {
        version: 1,
        role: pickup_proto::message::Role::Relay,
        max_frame: 4096,
        window: 0,
        caps: 0,
    });
    let manifest = Message::Manifest(Manifest {
        code,
        expires_at: 1_800_000_000,
        files: 2,
        total_size: u64::MAX,
        received: 0,
        ready: false,
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for msg in [welcome, manifest] {
            session
                .handle_message(now, msg, &mut sink)
                .expect("memory sink");
        }
        for index in 0..2 {
            let entry = Message::ManifestEntry(ManifestEntry {
                index,
                size: u64::MAX / 2 + 1,
                sha1: Sha1Digest::EMPTY,
                received: 0,
                name: "huge.bin",
            });
            session
                .handle_message(now, entry, &mut sink)
                .expect("memory sink");
        }
        let mut events = Vec::new();
        while let Some(e) = session.poll_event() {
            events.push(e);
        }
        events
    }));
    let events = result.expect("the download panicked on a manifest from the wire");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, download::Event::NotReady { .. })),
        "{events:?}"
    );
}

/// Found by the `relay_session` fuzzer (10-minute run). A batch is
/// announced and granted with a 60-second code; its data arrives 90 seconds
/// later on the same session, which still holds the upload in memory. The
/// relay writes it, verifies the file and sends `FileVerified` and
/// `BatchComplete`: the uploader reports success with a code that already
/// answers `Expired` to every downloader (and a resume would have been
/// refused). An upload that outlives its code should fail with `Expired`.
///
/// Fixed in the relay, d2a07d5 (data for an expired upload is refused with
/// `Expired`) and 792a8df (a verdict rendered after expiry goes out as
/// `Error{Expired}`).
#[test]
fn the_relay_does_not_complete_an_upload_after_its_code_expired() {
    let mut s = RelayScript::new(0x10 | 3); // 60-second codes, 4 KiB frames
    s.connect(0).hello(0, 2);
    s.batch_open(0, 1, 700).announce(0, 0, 0).transmit(0);
    s.advance_secs(90);
    s.data(0, 0, 0, 255)
        .data(0, 0, 255, 255)
        .data(0, 0, 510, 190);
    s.transmit(0);
    let summary = drive_relay(s.bytes());
    assert_eq!(summary.verified, 0, "{summary:?}");
}

/// Found by the `relay_session` fuzzer (15-minute run). A terminal uploads
/// a one-file batch completely, then opens a new two-file batch on the same
/// connection before reading the relay's replies. The relay queued the
/// first batch's `Grant`, `Ack` and `FileVerified` as references to "the
/// current upload" and renders them when they are sent, by which time the
/// current upload is the second batch: the terminal is told that file 0 of
/// the second batch is acknowledged (at 0) and verified, though the store
/// holds it as an empty partial upload awaiting a proof, and it never hears
/// the first batch's grant at all. Replies must describe the batch they
/// were made for (or be dropped when the upload changes).
#[test]
fn replies_queued_for_one_batch_are_not_sent_as_the_next_batchs() {
    let mut s = RelayScript::new(3);
    s.connect(0).hello(0, 2);
    s.batch_open(0, 1, 700).announce(0, 0, 0);
    s.data(0, 0, 0, 255)
        .data(0, 0, 255, 255)
        .data(0, 0, 510, 190);
    s.batch_open(0, 2, 1400).announce(0, 0, 0).announce(0, 1, 0);
    s.transmit(0);
    // The driver checks every verdict against the store and panics on this one.
    let summary = drive_relay(s.bytes());
    assert!(summary.verified <= 1, "{summary:?}");
}

/// Found by the `relay_session` fuzzer (CI run, 60 s). A downloader reads
/// part of a file; the code expires; the downloader's `Ack` extends its
/// credit and the relay serves more of a batch that every new lookup now
/// refuses as `Expired`, until the sweeper takes the blob. A stream should
/// end with `Expired` when its code does.
///
/// Fixed in the relay: `poll_data` ends a stream whose batch expired by the
/// session's clock. (The harness also judges queued data at the session's
/// last input, as it does verdicts.)
#[test]
fn a_download_does_not_go_on_after_its_code_expired() {
    let mut s = RelayScript::new(0x10 | 3); // 60-second codes, 4 KiB frames
    s.connect(0).upload_a(0, 255);
    s.connect(1).hello(1, 2).transmit(1);
    s.fetch(1, true).read(1, 0, 0, 100).transmit(1);
    s.advance_secs(90);
    s.ack(1, 0, 100, 500).transmit(1);
    // The driver checks every Data frame against the batch at the time it
    // was produced and panics on one served after expiry.
    let summary = drive_relay(s.bytes());
    assert_eq!(summary.served, 100, "{summary:?}");
}

/// Found by the `relay_session` fuzzer (14 minutes into a run). Terminal 0
/// uploads 510 bytes of a 700-byte file (acknowledged). Terminal 1 resumes
/// the token, and its session queues the plan "send from 510". Before
/// terminal 1 reads it, terminal 0 reconnects and resumes, which takes the
/// upload over, and sends data past the file's size, so the relay throws
/// the file's bytes away. Terminal 1 then read a plan saying 510 bytes were
/// durable when none were: its session rendered the upload as it last
/// knew it.
///
/// Fixed in the relay: before a frame goes out, a session whose upload's
/// lease a newer session took drops the upload and what it queued about
/// it, and says `TakenOver` (PROTOCOL.md §5.2).
#[test]
fn a_session_whose_upload_was_taken_over_does_not_send_what_it_last_knew() {
    let mut s = RelayScript::new(0);
    s.connect(0).hello(0, 0);
    s.batch_open(0, 1, 700).announce(0, 0, 0);
    s.data(0, 0, 0, 255).data(0, 0, 255, 255);
    s.transmit(0);
    s.connect(1).hello(1, 2).resume(1);
    s.connect(0).hello(0, 0).resume(0).transmit(0);
    s.data(0, 0, 34_438, 0);
    // The driver checks every plan against the store and panics on a stale one.
    s.transmit(1);
    let summary = drive_relay(s.bytes());
    assert_eq!(
        summary.grants, 2,
        "terminal 0's two grants, none for terminal 1: {summary:?}"
    );
}
