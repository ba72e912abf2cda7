//! The real `pickup-relay` against a terminal that asks it what it holds
//! (issue 20, item 6): announcing content and reading the plan used to say
//! whether someone had stored it (`Challenge`) or not (`Upload`), so a PIN
//! in a letter another terminal uploaded fell to 32 announcements with no
//! code and no file bytes. By default the plan reveals held content only
//! to its own token family, and to others once a random threshold of
//! owners stored it.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use pickup_proto::hash::ProofHasher;
use pickup_proto::message::{Data, FilePlan, Message, Plan, Proof};
use pickup_proto::Sha1Digest;
use pickup_tests::e2e::{pickup, run, TempDir};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::*;

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

fn letter(pin: u32) -> Vec<u8> {
    format!("Dear customer, the PIN of your new card is {pin:04}. Kind regards, your bank.")
        .into_bytes()
}

/// Reads replies until file 0's plan.
fn plan(raw: &mut Raw) -> Plan {
    for _ in 0..16 {
        match raw.recv_within(Duration::from_secs(30)) {
            Some(Ok(Reply::Plan(FilePlan { index: 0, plan }))) => return plan,
            Some(Ok(_)) => {}
            other => panic!("no plan: {other:?}"),
        }
    }
    panic!("no plan within 16 replies");
}

/// Reads replies until the batch is complete.
fn complete(raw: &mut Raw) {
    for _ in 0..64 {
        match raw.recv() {
            Reply::Complete => return,
            Reply::Rejected(r) => panic!("rejected: {r:?}"),
            _ => {}
        }
    }
    panic!("no BatchComplete within 64 replies");
}

/// Announces `content` as a one-file batch on `raw` and returns its plan.
fn announce(raw: &mut Raw, name: &str, content: &[u8]) -> Plan {
    raw.announce(&[(name, content.len() as u64, Sha1Digest::of(content))]);
    plan(raw)
}

/// Announces and uploads `content` on `raw` (one `Data`: it is small).
fn send_whole(raw: &mut Raw, name: &str, content: &[u8]) {
    assert_eq!(announce(raw, name, content), Plan::Upload { offset: 0 });
    raw.send(Message::Data(Data {
        file: 0,
        offset: 0,
        bytes: content,
    }));
    complete(raw);
}

/// A stranger (another address, another session) announces the letter
/// with each of 32 PINs; returns how many were challenged and the time.
fn probe_pins(relay: &RelayProcess) -> (usize, Duration) {
    let mut raw = Raw::connect_from(relay.addr(), loopback(2));
    raw.hello();
    let start = Instant::now();
    let challenged = (1220..1252)
        .filter(|&pin| {
            matches!(
                announce(&mut raw, "guess.txt", &letter(pin)),
                Plan::Challenge { .. }
            )
        })
        .count();
    (challenged, start.elapsed())
}

/// The prober's 32 batches stay incomplete: over the per-peer batch
/// limits, which an attacker with 2 addresses would not meet either.
const PROBER_LIMITS: &str =
    "[limits]\nmax_incomplete_batches_per_peer = 64\nnew_batch_burst_per_peer = 64\n";

#[test]
fn a_stranger_probing_pins_learns_nothing_and_the_sender_still_resends_instantly() {
    let relay = RelayProcess::builder().config(PROBER_LIMITS).start();
    let secret = letter(1234);
    // The bank sends the letter, and sends it again in the same session:
    // challenged, proven, linked without a byte of data.
    let mut bank = Raw::connect(relay.addr());
    bank.hello();
    send_whole(&mut bank, "letter.txt", &secret);
    let Plan::Challenge { nonce } = announce(&mut bank, "copy.txt", &secret) else {
        panic!("the sender's own content is not challenged");
    };
    let mut proof = ProofHasher::new(&nonce);
    proof.update(&secret);
    bank.send(Message::Proof(Proof {
        index: 0,
        proof: proof.finish(),
    }));
    assert_eq!(plan(&mut bank), Plan::Held);
    complete(&mut bank);

    let (challenged, took) = probe_pins(&relay);
    eprintln!("default relay: {challenged} of 32 PIN guesses challenged, in {took:?}");
    assert_eq!(challenged, 0, "the plan revealed the letter");

    // The same attack on a relay that reveals what it holds, as every
    // relay did before: the PIN falls.
    let open = RelayProcess::builder()
        .config(&format!("dedup_disclosure = \"open\"\n{PROBER_LIMITS}"))
        .start();
    let up = upload_tcp(open.addr(), &[("letter.txt", secret)], None);
    assert!(up.complete(), "{:?}", up.events);
    let (challenged, took) = probe_pins(&open);
    eprintln!("open relay: {challenged} of 32 PIN guesses challenged, in {took:?}");
    assert_eq!(challenged, 1);
}

#[test]
fn content_stored_by_a_threshold_of_owners_uploads_instantly_for_others() {
    // dedup_threshold_max = 2: every content's threshold is 2 owners.
    let relay = RelayProcess::builder()
        .config("dedup_threshold_max = 2\n")
        .start();
    let content = bytes(300_000, 7);
    let files = [("popular.bin", content.clone())];
    let first = upload_tcp(relay.addr(), &files, None);
    assert!(first.complete() && !first.linked(), "{:?}", first.events);
    // A second owner (a new session) is a stranger: it uploads, and the
    // relay keeps one copy without saying so.
    let second = upload_tcp(relay.addr(), &files, None);
    assert!(second.complete() && !second.linked(), "{:?}", second.events);
    let blobs = std::fs::read_dir(relay.data().join("blobs"))
        .unwrap()
        .count();
    assert_eq!(blobs, 1, "deduplicated after the full upload");
    // Two owners hold it now: the third links it.
    let third = upload_tcp(relay.addr(), &files, None);
    assert!(third.complete() && third.linked(), "{:?}", third.events);
    assert!(download_tcp(relay.addr(), third.code()).unwrap().files[0] == content);
}

/// `pickup send` keeps the token of its latest batch per relay and joins
/// that batch's owner next time: the same file sent again from the same
/// state directory is linked ("already at the relay" with `-v`); from
/// another state directory it is a stranger's and is sent.
#[test]
fn the_cli_sends_its_own_content_again_instantly_across_runs() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-dedup");
    let file = work.path().join("report.bin");
    std::fs::write(&file, bytes(200_000, 9)).unwrap();
    let send = |state: &str| {
        let out = run(pickup(&work.path().join(state))
            .args(["send", "-v", "--relay", &relay.tcp()])
            .arg(&file));
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).contains("already at the relay")
    };
    assert!(!send("mine"), "the first send linked");
    assert!(
        send("mine"),
        "the second send from the same state was not linked"
    );
    assert!(
        !send("theirs"),
        "a stranger was told the relay holds the file"
    );
}
