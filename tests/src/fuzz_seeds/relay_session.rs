//! Seeds of the `relay_session` target: [`RelayScript`]s that reach
//! transfers, identity and named files, and addressed delivery.

use super::{seed, Seed};
use crate::fuzz_relay::RelayScript;

pub(super) fn relay_seeds() -> Vec<Seed> {
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

    // A peer relay: refused before it authenticates (although terminals
    // may upload anonymously here), then r1's answer, then its upload.
    let mut s = RelayScript::new(3);
    s.connect(0).hello_as_relay(0, 2).transmit(0);
    s.batch_open(0, 1, 700).announce(0, 0, 0).transmit(0);
    s.peer_auth(0)
        .transmit(0)
        .challenge_answer(0, true)
        .transmit(0);
    s.batch_open(0, 1, 700).announce(0, 0, 0).transmit(0);
    let mut off = 0u16;
    while off < 700 {
        let len = (700 - off).min(255);
        s.data(0, 0, off, len as u8);
        off += len;
    }
    s.transmit(0).timers().transmit(0);
    seeds.push(seed(
        "relay_session",
        "peer-authenticates-then-uploads",
        s.bytes().to_vec(),
    ));

    // Keys do not cross: r1's wrong key, t1's key on a relay connection,
    // r1's key on a terminal connection.
    let mut s = RelayScript::new(3);
    s.connect(0).hello_as_relay(0, 2).transmit(0);
    s.peer_auth(0)
        .transmit(0)
        .challenge_answer(0, false)
        .transmit(0);
    s.peer_auth(0).transmit(0).cross_answer(0).transmit(0);
    s.terminal_auth(0, true)
        .transmit(0)
        .cross_answer(0)
        .transmit(0);
    s.connect(1).hello(1, 2).transmit(1);
    s.peer_auth(1).transmit(1).cross_answer(1).transmit(1);
    s.terminal_auth(1, true)
        .transmit(1)
        .cross_answer(1)
        .transmit(1);
    seeds.push(seed(
        "relay_session",
        "peer-and-terminal-keys-do-not-cross",
        s.bytes().to_vec(),
    ));
    seeds
}

/// Seeds that reach addressed delivery (PROTOCOL.md §11): t1 listens as
/// itself, a user pushes a complete batch to it, and the relay sweeps
/// with time passing.
pub(super) fn notice_seeds() -> Vec<Seed> {
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

    // ada lets r1's alice push to her terminals (and alice of the
    // unlisted r9); r1 authenticates, uploads, pushes for alice twice
    // (one id) and for bob; t1 listens and confirms.
    let mut s = RelayScript::new(3);
    s.connect(1).hello(1, 2).login(1, 0, true).transmit(1);
    s.allow_sender(1, 4, true)
        .allow_sender(1, 5, true)
        .allow_sender(1, 0, true)
        .transmit(1);
    s.peer_signs_in(0);
    s.upload_small(0);
    s.peer_push(0, true, 0, 0, 1)
        .peer_push(0, true, 0, 0, 1)
        .peer_push(0, true, 0, 1, 2)
        .transmit(0);
    s.connect_as_t1(2).listen(2).transmit(2);
    s.receipt(2, 0).transmit(2);
    seeds.push(seed(
        "relay_session",
        "peer-authenticates-uploads-then-pushes",
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

/// Seeds that reach forwarding (PROTOCOL.md §12): ada asks to forward a
/// complete batch to r1 (and to an unlisted peer), watches and retries
/// it; bob asks about ada's forward and is told nothing.
pub(super) fn forward_seeds() -> Vec<Seed> {
    let mut s = RelayScript::new(3);
    s.connect(0).hello(0, 2).login(0, 0, true).transmit(0);
    s.upload_small(0);
    s.forward_request(0, true, true)
        .forward_request(0, true, false)
        .transmit(0);
    s.forward_watch(0, 0, true, true)
        .forward_watch(0, 0, true, false)
        .forward_retry(0, 0)
        .transmit(0);
    s.connect(1).hello(1, 2).login(1, 1, true).transmit(1);
    s.forward_watch(1, 0, true, true)
        .forward_retry(1, 0)
        .transmit(1);
    vec![seed(
        "relay_session",
        "forward-request-watch",
        s.bytes().to_vec(),
    )]
}
