//! Lookups by code and token: not ready, expired, unknown and rate
//! limited; reads of a found batch are no guesses, and guessers do not
//! lock out a clean peer.

use super::*;

#[test]
fn not_ready_expired_unknown_and_rate_limited_lookups() {
    let settings = Settings {
        code_ttl_secs: 60,
        rate: crate::rate_limit::RateSettings {
            peer_burst: 3,
            peer_per_sec: 0.1,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut w = World::new(settings);
    let mut s = open(&w, 1);
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("f", 4, Sha1Digest::of(b"abcd"))],
    ));
    let mut d = open(&w, 2);
    // Not ready: the manifest shows progress, a read is refused.
    send(&mut d, w.now(), Message::Fetch(Fetch { code: g.code }));
    match &drain(&mut d)[0] {
        Reply::Manifest(m) => assert!(!m.ready && m.received == 0 && m.total_size == 4),
        other => panic!("{other:?}"),
    }
    send(
        &mut d,
        w.now(),
        Message::Read(Read {
            code: g.code,
            file: 0,
            offset: 0,
            len: 100,
        }),
    );
    assert_eq!(drain(&mut d), [Reply::Error(ErrorCode::NotReady, 0)]);
    send(
        &mut s,
        w.now(),
        Message::Data(Data {
            file: 0,
            offset: 0,
            bytes: b"abcd",
        }),
    );
    drain(&mut s);
    // Expired: refused as expired before and after the sweep.
    w.now += 61_000;
    send(&mut d, w.now(), Message::Fetch(Fetch { code: g.code }));
    assert_eq!(drain(&mut d), [Reply::Error(ErrorCode::Expired, 0)]);
    let stats = w.relay.sweep(w.now()).unwrap();
    assert_eq!((stats.batches, stats.blobs), (1, 1));
    assert_eq!(w.store.blob_count(), 0);
    send(
        &mut d,
        w.now(),
        Message::Read(Read {
            code: g.code,
            file: 0,
            offset: 0,
            len: 100,
        }),
    );
    assert_eq!(drain(&mut d), [Reply::Error(ErrorCode::Expired, 0)]);
    // Unknown, then rate limited: three failures (the expired Fetch and
    // two guesses) spent the peer's bucket. The Read of the batch this
    // session had found was no guess and cost nothing.
    let guess = Code::from_parts(13, 12345).unwrap();
    for _ in 0..2 {
        send(&mut d, w.now(), Message::Fetch(Fetch { code: guess }));
        assert_eq!(drain(&mut d), [Reply::Error(ErrorCode::UnknownCode, 0)]);
    }
    send(&mut d, w.now(), Message::Fetch(Fetch { code: guess }));
    assert_eq!(
        drain(&mut d),
        [Reply::Error(ErrorCode::RateLimited, 10_000)]
    );
    send(
        &mut d,
        w.now(),
        Message::Resume(Resume {
            token: ResumeToken([1; 16]),
        }),
    );
    assert_eq!(
        drain(&mut d),
        [Reply::Error(ErrorCode::RateLimited, 10_000)]
    );
    // Another peer is not limited by this one.
    let mut e = open(&w, 3);
    send(
        &mut e,
        w.now(),
        Message::Resume(Resume {
            token: ResumeToken([1; 16]),
        }),
    );
    assert_eq!(drain(&mut e), [Reply::Error(ErrorCode::UnknownToken, 0)]);
    // Long after, the expired code is forgotten and reads as unknown.
    w.now += 8 * 24 * 3600 * 1000;
    w.relay.sweep(w.now()).unwrap();
    send(&mut e, w.now(), Message::Fetch(Fetch { code: g.code }));
    assert_eq!(drain(&mut e), [Reply::Error(ErrorCode::UnknownCode, 0)]);
}

fn read_all(code: Code) -> Message<'static> {
    Message::Read(Read {
        code,
        file: 0,
        offset: 0,
        len: 100,
    })
}

/// A `Read` within the batch this session found by its code is no guess:
/// it is served while the peer's bucket is spent, and one that finds the
/// batch gone costs nothing. Other lookups stay limited.
#[test]
fn reads_within_a_found_batch_are_not_rate_limited() {
    let settings = Settings {
        code_ttl_secs: 60,
        rate: crate::rate_limit::RateSettings {
            peer_burst: 2,
            peer_per_sec: 0.001,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut w = World::new(settings);
    let mut s = open(&w, 1);
    let data = b"abcd";
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("f", 4, Sha1Digest::of(data))],
    ));
    send(
        &mut s,
        w.now(),
        Message::Data(Data {
            file: 0,
            offset: 0,
            bytes: data,
        }),
    );
    drain(&mut s);
    let guess = |n| {
        Message::Fetch(Fetch {
            code: Code::from_parts(13, n).unwrap(),
        })
    };
    let mut d = open(&w, 2);
    send(&mut d, w.now(), Message::Fetch(Fetch { code: g.code }));
    assert!(matches!(drain(&mut d)[0], Reply::Manifest(_)));
    send(&mut d, w.now(), guess(7));
    assert_eq!(drain(&mut d), [Reply::Error(ErrorCode::UnknownCode, 0)]);
    // One token left, and many reads of the found batch cost none.
    for _ in 0..5 {
        send(&mut d, w.now(), read_all(g.code));
        assert_eq!(drain(&mut d), [Reply::Data(0, 0, data.to_vec())]);
    }
    // The batch expires under the download: refused, not charged.
    w.now += 61_000;
    send(&mut d, w.now(), read_all(g.code));
    assert_eq!(drain(&mut d), [Reply::Error(ErrorCode::Expired, 0)]);
    send(&mut d, w.now(), guess(8));
    assert_eq!(drain(&mut d), [Reply::Error(ErrorCode::UnknownCode, 0)]);
    // Now the bucket is spent: a read of a code this session never found
    // is a lookup like any other.
    send(&mut d, w.now(), read_all(Code::from_parts(13, 9).unwrap()));
    assert!(matches!(
        drain(&mut d)[..],
        [Reply::Error(ErrorCode::RateLimited, _)]
    ));
}

/// Guessers from many peers spend the relay's shared bucket; a peer that
/// has not failed still fetches a real code every time (from the reserve,
/// and its successes cost nothing).
#[test]
fn guessers_do_not_lock_out_a_clean_peer() {
    let settings = Settings {
        rate: crate::rate_limit::RateSettings {
            global_burst: 10,
            global_per_sec: 1.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut w = World::new(settings);
    let mut s = open(&w, 1);
    let g = grant_of(&announce(&mut s, w.now(), &[("f", 0, Sha1Digest::EMPTY)]));
    let mut guessers: Vec<Session> = (10..30).map(|p| open(&w, p)).collect();
    let mut honest = open(&w, 2);
    let mut n = 0u128;
    let mut fetched = 0;
    // 60 s of guessing (every guesser every 500 ms), then 36 honest fetches
    // between the guesses.
    for round in 0..(120 + 36) {
        w.now += 500;
        for guesser in &mut guessers {
            n += 1;
            let code = Code::from_parts(13, 1_000_000 + n).unwrap();
            send(guesser, w.now(), Message::Fetch(Fetch { code }));
            drain(guesser);
        }
        if round >= 120 {
            send(&mut honest, w.now(), Message::Fetch(Fetch { code: g.code }));
            let replies = drain(&mut honest);
            if matches!(replies[0], Reply::Manifest(_)) {
                fetched += 1;
            }
        }
    }
    assert_eq!(fetched, 36, "honest fetches that got through");
}
