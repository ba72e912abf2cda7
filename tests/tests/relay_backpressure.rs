//! A peer that asks and never reads cannot make the real relay hold its
//! replies: queued output is bounded in bytes, the relay stops reading a
//! peer whose replies do not drain, and one manifest is shared by every
//! request for the same ready batch (issue 20, item 1).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use pickup_proto::message::{Fetch, Message};
use pickup_proto::Sha1Digest;
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::*;

#[test]
fn fetches_that_are_never_read_do_not_grow_the_relay() {
    let relay = RelayProcess::start();
    // One ready batch of 1,000 empty files with 255-byte names: its
    // manifest is about 300 KB on the wire.
    let mut raw = Raw::connect(relay.addr());
    raw.hello();
    let files: Vec<(String, u64, Sha1Digest)> = (0..1000)
        .map(|i| (format!("{i:04}{}", "n".repeat(251)), 0, Sha1Digest::EMPTY))
        .collect();
    raw.announce(&files);
    let code = loop {
        if let Reply::Grant(g) = raw.recv() {
            break g.code;
        }
    };
    while raw.recv() != Reply::Complete {}
    let before = relay.rss_kib();

    // 63 more sessions (with the uploader's, the per-address cap) each ask
    // for it 400 times and read nothing.
    let mut fetches = Vec::new();
    for _ in 0..400 {
        let mut buf = [0u8; 64];
        let n = Message::Fetch(Fetch { code }).encode(64, &mut buf).unwrap();
        fetches.extend_from_slice(&buf[..n]);
    }
    let mut attackers = Vec::new();
    for _ in 0..63 {
        let mut a = Raw::connect(relay.addr());
        a.hello();
        a.stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // What the relay does not read waits in the socket; a write that
        // times out is the relay's backpressure at work.
        let _ = a.stream.write_all(&fetches);
        attackers.push(a);
    }
    // Until the relay stops working on them (CPU time holds still for a
    // second), at most 60 s.
    let start = Instant::now();
    let mut last = relay.cpu_ticks();
    while start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(1));
        let now = relay.cpu_ticks();
        if now == last {
            break;
        }
        last = now;
    }
    let under_attack = relay.rss_kib();
    drop(attackers);
    drop(raw);
    std::thread::sleep(Duration::from_millis(500));
    let after = relay.rss_kib();
    println!(
        "relay RSS: {before} KiB before, {under_attack} KiB with 63 x 400 unread fetches \
         (settled after {:?}), {after} KiB after they closed",
        start.elapsed()
    );
    // Each session may hold what its socket and one manifest's worth of
    // queued replies take, not 400 manifests.
    assert!(
        under_attack < before + 128 * 1024,
        "relay grew from {before} to {under_attack} KiB"
    );
    // The relay still serves everyone else.
    let mut probe = Raw::connect(relay.addr());
    probe.hello();
    probe.send(Message::Fetch(Fetch { code }));
    match probe.recv() {
        Reply::Manifest(m) => assert!(m.ready && m.files == 1000, "{m:?}"),
        other => panic!("{other:?}"),
    }
}
