//! The real `pickup-relay` against terminals that try to make it hash
//! (issue 20, item 4): challenges re-drawn by resuming, wrong proofs, and
//! resumes of a large partial upload. Each prints the relay CPU it cost,
//! for the record; the assertions are on what the relay answered.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use pickup_proto::message::{Data, Message, Plan, Proof, Resume, ResumeToken};
use pickup_proto::{upload, ErrorCode, Sha1Digest};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::*;

const MIB: usize = 1 << 20;

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// Reads replies until file 0's plan (or an error) arrives.
fn plan(raw: &mut Raw) -> Result<Plan, ErrorCode> {
    for _ in 0..16 {
        match raw.recv_within(Duration::from_secs(30)) {
            Some(Ok(Reply::Plan(p))) if p.index == 0 => return Ok(p.plan),
            Some(Ok(Reply::Error(code, _))) => return Err(code),
            Some(Ok(_)) => {}
            other => panic!("no plan: {other:?}"),
        }
    }
    panic!("no plan within 16 replies");
}

/// Reads replies until the grant; returns its token.
fn grant_token(raw: &mut Raw) -> ResumeToken {
    for _ in 0..16 {
        match raw.recv_within(Duration::from_secs(30)) {
            Some(Ok(Reply::Grant(g))) => return g.token,
            Some(Ok(_)) => {}
            other => panic!("no grant: {other:?}"),
        }
    }
    panic!("no grant within 16 replies");
}

fn cpu_secs(ticks: u64) -> f64 {
    ticks as f64 / 100.0
}

/// 16 MiB are held. From another address: one batch announcing them,
/// resumed 16 times without a proof (each resume used to draw a fresh
/// challenge, and each challenge a pass over the 16 MiB), then 16 batches
/// each answered with a wrong proof. The file gets at most 3 challenges,
/// and wrong proofs stop drawing challenges once they have spent the
/// address's failed-lookup burst (10; refilled slowly here, so that the
/// test's own pace does not matter). The attacker is a stranger to the
/// uploader, so only `dedup_disclosure = "open"` challenges it at all.
#[test]
fn resumes_and_wrong_proofs_buy_a_bounded_number_of_challenges() {
    let relay = RelayProcess::builder()
        // 17 batches from one address: over the per-peer batch limits.
        .config(
            "dedup_disclosure = \"open\"\n[rate_limit]\npeer_per_sec = 0.001\n[limits]\nmax_incomplete_batches_per_peer = 64\nnew_batch_burst_per_peer = 64\n",
        )
        .start();
    let content = bytes(16 * MIB, 21);
    let sha1 = Sha1Digest::of(&content);
    let size = content.len() as u64;
    assert!(upload_tcp(relay.addr(), &[("held.bin", content)], None).complete());

    let cpu_before = relay.cpu_ticks();
    let mut raw = Raw::connect_from(relay.addr(), loopback(2));
    raw.hello();
    raw.announce(&[("x", size, sha1)]);
    let token = grant_token(&mut raw);
    let mut challenges = usize::from(matches!(plan(&mut raw), Ok(Plan::Challenge { .. })));
    for _ in 0..16 {
        raw.send(Message::Resume(Resume { token }));
        if matches!(plan(&mut raw), Ok(Plan::Challenge { .. })) {
            challenges += 1;
        }
    }
    let resume_cpu = relay.cpu_ticks() - cpu_before;
    eprintln!(
        "17 grants of one file: {challenges} challenges, relay CPU {:.2} s",
        cpu_secs(resume_cpu)
    );
    assert_eq!(challenges, 3, "the first and two resumes");

    let cpu_before = relay.cpu_ticks();
    let mut wrong = 0;
    for n in 0..16 {
        raw.announce(&[(format!("y{n}"), size, sha1)]);
        grant_token(&mut raw);
        if matches!(plan(&mut raw), Ok(Plan::Challenge { .. })) {
            wrong += 1;
            raw.send(Message::Proof(Proof {
                index: 0,
                proof: Sha1Digest::of(b"a guess"),
            }));
            assert_eq!(plan(&mut raw), Ok(Plan::Upload { offset: 0 }));
        }
    }
    let proof_cpu = relay.cpu_ticks() - cpu_before;
    eprintln!(
        "16 batches answered with wrong proofs: {wrong} challenges, relay CPU {:.2} s",
        cpu_secs(proof_cpu)
    );
    assert_eq!(wrong, 10, "the address's failed-lookup burst");
    // The address is now limited like a guesser.
    raw.send(Message::Resume(Resume { token }));
    assert_eq!(plan(&mut raw), Err(ErrorCode::RateLimited));
}

/// A 64 MiB upload stops after 32 MiB and the relay is killed. Behind its
/// back the first 64 bytes of the partial file are overwritten. A relay
/// that re-hashed the durable prefix on resume would reject the file; this
/// one goes on from the SHA-1 state stored with the prefix, never reads
/// those bytes again, and verifies it. Then 20 sessions each resume and
/// send one byte: the CPU they cost is printed.
#[test]
fn a_resume_after_a_crash_goes_on_from_the_stored_hash_state() {
    let mut relay = RelayProcess::start();
    let content = bytes(64 * MIB, 22);
    let files = [("big.bin", content.clone())];
    // At most 4 MiB in flight past the acked 32 MiB: with the relay's own
    // window (32 MiB) a fast relay had the whole file before the kill, and
    // there was no partial left to resume.
    let run = upload(
        &mut connect(relay.addr()),
        upload::Config {
            max_window: 4 * MIB as u32,
            ..upload_config(65_536)
        },
        &files,
        None,
        |acked| acked >= 32 * MIB as u64,
    );
    let token = run.token();
    relay.kill9();
    let partials: Vec<_> = std::fs::read_dir(relay.data().join("partial"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(partials.len(), 1, "{partials:?}");
    let mut stored = std::fs::read(&partials[0]).unwrap();
    assert!(stored.len() >= 32 * MIB, "{} bytes", stored.len());
    stored[..64].fill(0xA5);
    std::fs::write(&partials[0], &stored).unwrap();
    let stored_len = stored.len() as u64;
    drop(stored);
    relay.restart();

    let cpu_before = relay.cpu_ticks();
    let mut durable = None;
    for n in 0..20u64 {
        let mut raw = Raw::connect(relay.addr());
        raw.hello();
        raw.send(Message::Resume(Resume { token }));
        let offset = match plan(&mut raw) {
            Ok(Plan::Upload { offset }) => offset,
            other => panic!("{other:?}"),
        };
        // What the relay kept (the file also held bytes never synced),
        // then one more byte at most per session.
        let first = *durable.get_or_insert(offset);
        assert!(
            offset >= first && offset <= first + n,
            "{offset} after {first}"
        );
        assert!(first >= 32 * MIB as u64 && first <= stored_len);
        let at = usize::try_from(offset).unwrap();
        raw.send(Message::Data(Data {
            file: 0,
            offset,
            bytes: &content[at..at + 1],
        }));
        // The byte counts once the prefix's hash is there: its ack comes
        // after that (within the ack delay), so each session costs what
        // the relay spends to take it.
        for _ in 0..8 {
            match raw.recv_within(Duration::from_secs(30)) {
                Some(Ok(Reply::Ack(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    }
    let durable = durable.unwrap();
    eprintln!(
        "20 resumes of a {durable}-byte prefix, one byte each: relay CPU {:.2} s",
        cpu_secs(relay.cpu_ticks() - cpu_before)
    );

    let run = upload_tcp(relay.addr(), &files, Some(token));
    assert!(run.complete(), "{:?}", run.events);
    assert!(
        run.resumed_at().unwrap() >= durable,
        "resumed at {:?}",
        run.resumed_at()
    );
}
