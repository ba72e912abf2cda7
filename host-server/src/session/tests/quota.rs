//! Admission through sessions (issue 20, items 2 and 3): concurrent
//! announces cannot overshoot the quota, progress shrinks a reservation,
//! a stalled one is released and must be taken again, and a complete
//! batch gives its slot back.

use super::*;
use crate::quota::QuotaSettings;

/// Sends `data[from..to]` of file 0 and lets the ack timer make it durable.
fn send_durably(w: &World, s: &mut Session, data: &[u8], from: usize, to: usize) {
    send(s, w.now(), data_msg(from, &data[from..to]));
    let t = s.poll_timeout().expect("the ack timer");
    s.handle_timeout(t);
    pump(s, t);
    assert!(
        drain(s)
            .iter()
            .any(|r| matches!(r, Reply::Ack(a) if a.offset == to as u64)),
        "no ack at {to}"
    );
}

#[test]
fn concurrent_announces_never_overshoot_the_quota() {
    let settings = Settings {
        quota: QuotaSettings {
            disk_quota: 10_000,
            max_reserved_per_peer: 10_000,
            ..Settings::default().quota
        },
        ..Settings::default()
    };
    let w = World::new(settings);
    let sha = Sha1Digest::of(b"x");
    // 32 peers announce 1,000 bytes each; their creations run at once.
    let mut sessions: Vec<Session> = (0..32).map(|p| open(&w, p)).collect();
    let mut jobs = Vec::new();
    for s in &mut sessions {
        send_only(
            s,
            w.now(),
            Message::BatchOpen(BatchOpen {
                files: 1,
                total_size: 1000,
            }),
        );
        send_only(
            s,
            w.now(),
            Message::FileAnnounce(FileAnnounce {
                index: 0,
                size: 1000,
                sha1: sha,
                name: "f",
            }),
        );
        jobs.push(s.poll_job().expect("a batch to create"));
    }
    let relay = w.relay.clone();
    let done: Vec<JobDone> = std::thread::scope(|scope| {
        let running: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let relay = relay.clone();
                scope.spawn(move || job.run(&relay))
            })
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut granted = 0;
    let mut refused = 0;
    for (s, done) in sessions.iter_mut().zip(done) {
        s.handle_job_done(w.now(), done);
        pump(s, w.now());
        for r in drain(s) {
            match r {
                Reply::Grant(_) => granted += 1,
                Reply::Error(ErrorCode::Quota, _) => refused += 1,
                _ => {}
            }
        }
    }
    assert_eq!((granted, refused), (10, 22));
    assert_eq!(w.relay.reserved_bytes(), 10_000);
}

#[test]
fn progress_shrinks_the_reservation_and_completion_frees_the_slot() {
    let settings = Settings {
        quota: QuotaSettings {
            max_incomplete_batches_per_peer: 1,
            ..Settings::default().quota
        },
        ..Settings::default()
    };
    let w = World::new(settings);
    let mut s = open(&w, 1);
    let data = bytes(1000, 4);
    grant_of(&announce(
        &mut s,
        w.now(),
        &[("f", 1000, Sha1Digest::of(&data))],
    ));
    assert_eq!(w.relay.reserved_bytes(), 1000);
    // One incomplete batch per peer: a second waits.
    let mut other = open(&w, 1);
    assert_eq!(
        announce(&mut other, w.now(), &[("g", 10, Sha1Digest::of(b"g"))]),
        [Reply::Error(ErrorCode::TooManyIncomplete, 60_000)]
    );
    send_durably(&w, &mut s, &data, 0, 400);
    assert_eq!(w.relay.reserved_bytes(), 600);
    assert_eq!(w.store.usage().unwrap().bytes, 400);
    send(&mut s, w.now(), data_msg(400, &data[400..]));
    assert!(drain(&mut s).contains(&Reply::Complete));
    assert_eq!(w.relay.reserved_bytes(), 0);
    assert_eq!(w.store.usage().unwrap().bytes, 1000);
    grant_of(&announce(
        &mut other,
        w.now(),
        &[("g", 10, Sha1Digest::of(b"g"))],
    ));
}

#[test]
fn a_stalled_upload_reserves_again_before_it_stores_more() {
    let settings = Settings {
        quota: QuotaSettings {
            disk_quota: 2000,
            max_reserved_per_peer: 2000,
            reservation_timeout_secs: 10,
            ..Settings::default().quota
        },
        ..Settings::default()
    };
    let mut w = World::new(settings);
    let mut s = open(&w, 1);
    let data = bytes(2000, 5);
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("f", 2000, Sha1Digest::of(&data))],
    ));
    send_durably(&w, &mut s, &data, 0, 500);
    assert_eq!(w.relay.reserved_bytes(), 1500);
    // Over ten seconds without progress (the last was the sync, 200 ms
    // after the data): the 1,500 unsent bytes stop holding quota.
    w.now += 11_000;
    w.relay.sweep(w.now()).unwrap();
    assert_eq!(w.relay.reserved_bytes(), 0);
    // Another peer takes 1,000 of the 1,500 left.
    let mut other = open(&w, 2);
    grant_of(&announce(
        &mut other,
        w.now(),
        &[("g", 1000, Sha1Digest::of(b"g"))],
    ));
    // The stalled upload may not store more, nor resume, until room is back.
    send(&mut s, w.now(), data_msg(500, &data[500..600]));
    assert_eq!(drain(&mut s), [Reply::Error(ErrorCode::Quota, 10_000)]);
    let mut again = open(&w, 1);
    send(
        &mut again,
        w.now(),
        Message::Resume(Resume { token: g.token }),
    );
    assert_eq!(drain(&mut again), [Reply::Error(ErrorCode::Quota, 10_000)]);
    assert_eq!(durable(&w, &g.code), 500, "the batch and its bytes stay");
}
