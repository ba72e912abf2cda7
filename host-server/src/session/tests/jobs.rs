//! Store work given out as jobs to a driver that runs them late: nothing is
//! acknowledged or verified before the jobs it depends on ran, a stale
//! session's job records nothing, and each byte is hashed once: as it is
//! taken, or by a write while the hasher catches up after a re-hash.

use super::*;

/// A session whose driver runs syncs itself (as the TCP transport does),
/// with a small window so a few KiB start a sync.
fn deferred(w: &World, peer: u64) -> Session {
    let link = Link {
        max_frame: 65_536,
        window: 64 * 1024,
        encrypted: false,
        reliable: false,
    };
    let mut s = w.session(peer, link);
    send(&mut s, w.now(), hello(0));
    assert_eq!(drain(&mut s), [Reply::Welcome]);
    s
}

#[test]
fn a_sync_is_acknowledged_only_after_its_job_ran() {
    let w = World::new(Settings::default());
    let mut s = deferred(&w, 1);
    let data = bytes(100_000, 3);
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("f", 100_000, Sha1Digest::of(&data))],
    ));
    // A quarter window (16 KiB) in: a sync is due, but nothing is durable
    // and nothing is acknowledged until its job has run.
    send_only(&mut s, w.now(), data_msg(0, &data[..20_000]));
    assert_eq!(drain_only(&mut s), []);
    let write = s.poll_job().expect("a write");
    assert_eq!(write.name(), "write");
    assert!(s.poll_job().is_none(), "the sync waits for the write");
    // More data arrives while the job runs: the session keeps taking it.
    assert!(s.wants_input());
    send_only(&mut s, w.now(), data_msg(20_000, &data[20_000..30_000]));
    assert_eq!(drain_only(&mut s), []);
    let done = write.run(&w.relay);
    s.handle_job_done(w.now(), done);
    assert_eq!(drain_only(&mut s), [], "written is not durable");
    let job = s.poll_job().expect("the sync");
    assert_eq!(job.name(), "sync");
    assert_eq!(durable(&w, &g.code), 0);
    let done = job.run(&w.relay);
    assert_eq!(durable(&w, &g.code), 20_000);
    assert_eq!(drain_only(&mut s), [], "no ack before the driver reports");
    s.handle_job_done(w.now(), done);
    assert_eq!(
        drain_only(&mut s),
        [Reply::Ack(Ack {
            file: 0,
            offset: 20_000,
            window: 64 * 1024
        })]
    );
    // A crash now keeps exactly the acknowledged bytes.
    w.store.crash();
    assert_eq!(durable(&w, &g.code), 20_000);
}

#[test]
fn a_file_is_verified_only_after_the_writes_before_it() {
    let w = World::new(Settings::default());
    let mut s = deferred(&w, 1);
    let data = bytes(50_000, 4);
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("f", 50_000, Sha1Digest::of(&data))],
    ));
    send_only(&mut s, w.now(), data_msg(0, &data[..20_000]));
    let job = s.poll_job().expect("a write and sync");
    // The rest arrives before the driver got to the job: the verdict waits
    // for it, and the session takes no input until the verdict is in.
    send_only(&mut s, w.now(), data_msg(20_000, &data[20_000..]));
    assert!(!s.wants_input());
    assert_eq!(drain_only(&mut s), []);
    let done = job.run(&w.relay);
    s.handle_job_done(w.now(), done);
    assert_eq!(
        drain(&mut s),
        [
            Reply::Ack(Ack {
                file: 0,
                offset: 50_000,
                window: 64 * 1024
            }),
            Reply::Verified(0),
            Reply::Complete
        ]
    );
    assert!(s.wants_input());
    assert!(s.poll_job().is_none());
    let mut d = w.session(2, Link::TCP);
    let mut w = w;
    assert_eq!(download(&mut w, &mut d, g.code).unwrap().files, [data]);
}

#[test]
fn the_ack_timer_syncs_by_a_job() {
    let w = World::new(Settings::default());
    let mut s = deferred(&w, 1);
    let data = bytes(1000, 5);
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("f", 1000, Sha1Digest::of(&data))],
    ));
    send_only(&mut s, w.now(), data_msg(0, &data[..100]));
    assert!(s.poll_job().is_none(), "below the step: no write yet");
    let t = s.poll_timeout().unwrap();
    assert_eq!(t, w.now() + Settings::default().ack_delay);
    s.handle_timeout(t);
    assert_eq!(drain_only(&mut s), []);
    let write = s.poll_job().expect("the timer's write");
    let done = write.run(&w.relay);
    s.handle_job_done(t, done);
    assert_eq!(drain_only(&mut s), []);
    let job = s.poll_job().expect("the timer's sync");
    let done = job.run(&w.relay);
    s.handle_job_done(t, done);
    assert_eq!(
        drain_only(&mut s),
        [Reply::Ack(Ack {
            file: 0,
            offset: 100,
            window: 64 * 1024
        })]
    );
    assert_eq!(durable(&w, &g.code), 100);
}

/// A session of `w` writes half a file and queues its sync; the terminal
/// resumes on `to` (the same relay, or another instance over the same
/// store) before that sync runs; then it runs. The stale session's
/// replies must be only the error that sends its terminal to resume: no
/// ack, nothing durable. Returns the stale session (alive: dropping it
/// would release its lease anyway), the new one, the grant and the file.
fn resumed_before_sync(w: &World, to: &World, peer: u64) -> (Session, Session, Grant, Vec<u8>) {
    let mut old = deferred(w, 1);
    let data = bytes(40_000, 6);
    let g = grant_of(&announce(
        &mut old,
        w.now(),
        &[("f", 40_000, Sha1Digest::of(&data))],
    ));
    send_only(&mut old, w.now(), data_msg(0, &data[..20_000]));
    let write = old.poll_job().expect("a write");
    let done = write.run(&w.relay);
    old.handle_job_done(w.now(), done);
    let sync = old.poll_job().expect("its sync");
    let mut new = deferred(to, peer);
    send(
        &mut new,
        to.now(),
        Message::Resume(Resume { token: g.token }),
    );
    assert!(drain(&mut new).contains(&Reply::Plan(FilePlan {
        index: 0,
        plan: Plan::Upload { offset: 0 }
    })));
    let done = sync.run(&w.relay);
    old.handle_job_done(w.now(), done);
    assert_eq!(
        drain(&mut old),
        [Reply::Error(ErrorCode::TakenOver, 0)],
        "no ack from a stale session: it tells its terminal it lost the upload"
    );
    assert_eq!(durable(w, &g.code), 0);
    (old, new, g, data)
}

#[test]
fn a_job_of_a_taken_over_upload_records_nothing() {
    let w = World::new(Settings::default());
    let (_old, mut new, _, data) = resumed_before_sync(&w, &w, 1);
    send(&mut new, w.now(), data_msg(0, &data));
    assert!(drain(&mut new).contains(&Reply::Complete));
}

/// Another relay instance over the same store takes the upload over while
/// this one's session still holds it (and its lease): the store fences
/// the old session's sync, which drops the upload as after a local
/// takeover, tells its terminal, and gives its lease back.
#[test]
fn a_sync_fenced_by_another_instance_drops_the_upload() {
    let w = World::new(Settings::default());
    let store = Arc::new(w.store.another_instance());
    let other = World {
        relay: Relay::new(
            Settings::default(),
            store.clone(),
            Box::new(SeededRandom::new(43)),
            w.now(),
        ),
        store,
        now: w.now,
    };
    let (_old, mut new, g, data) = resumed_before_sync(&w, &other, 2);
    assert!(
        w.relay.try_lease(batch_of(&w, &g.code), 99).is_some(),
        "the fenced session gave its lease back"
    );
    send(&mut new, other.now(), data_msg(0, &data));
    assert!(drain(&mut new).contains(&Reply::Complete));
    assert_eq!(durable(&w, &g.code), 40_000);
}

/// The batch behind `code`.
fn batch_of(w: &World, code: &Code) -> crate::store::BatchId {
    match w
        .store
        .find_by_code(&crate::codes::code_key(code), T0 / 1000)
        .unwrap()
    {
        Lookup::Live(b) => b.id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_whole_upload_with_late_jobs_round_trips() {
    let mut w = World::new(Settings::default());
    let mut s = deferred(&w, 1);
    let data = bytes(3 << 20, 8);
    let meta = [FileMeta {
        name: "big",
        size: data.len() as u64,
        sha1: Sha1Digest::of(&data),
    }];
    let config = upload::Config {
        max_frame: 65_536,
        ..upload::Config::default()
    };
    let mut c = upload::Session::<8>::new(config, &meta).unwrap();
    let mut wire = Wire::new();
    let files = [data.clone()];
    let mut acks = 0;
    let mut pending: Vec<Job> = Vec::new();
    c.handle_connected(w.now());
    for round in 0..10_000 {
        let now = w.now();
        let mut source: &[Vec<u8>] = &files;
        // Send a little at a time, so jobs overlap with data.
        for _ in 0..4 {
            if !s.wants_input() {
                break;
            }
            let Some(n) = c.poll_transmit(now, &mut source, &mut wire.buf).unwrap() else {
                break;
            };
            let mut input = &wire.buf[..n];
            while let Some(f) = wire.relay_dec.feed(&mut input) {
                s.handle_frame(now, f.unwrap());
            }
        }
        pending.extend(std::iter::from_fn(|| s.poll_job()));
        // The "job threads" finish the jobs given out every other round.
        if round % 2 == 1 {
            for job in core::mem::take(&mut pending) {
                let done = job.run(&w.relay);
                s.handle_job_done(now, done);
            }
            pending.extend(std::iter::from_fn(|| s.poll_job()));
        }
        let mut out = vec![0u8; s.transmit_buffer_len()];
        while let Some(n) = s.poll_transmit(&mut out) {
            let mut input = &out[..n];
            while let Some(f) = wire.term_dec.feed(&mut input) {
                let f = f.unwrap();
                acks += usize::from(f.kind == pickup_proto::message::Kind::Ack as u8);
                c.handle_frame(now, f);
            }
        }
        while c.poll_event().is_some() {}
        if c.is_finished() {
            break;
        }
        w.now += 1;
        c.handle_timeout(w.now());
        s.handle_timeout(w.now());
    }
    assert!(c.is_finished());
    assert!(acks > 4, "acks came during the upload, not only at its end");
    let code = c.grant().unwrap().code;
    let mut d = w.session(2, Link::TCP);
    assert_eq!(download(&mut w, &mut d, code).unwrap().files, [data]);
}

/// The one-file upload on `s` ends verified and complete, and another
/// session downloads `data` by `code`.
fn verified_and_downloaded(mut w: World, s: &mut Session, code: Code, data: Vec<u8>) {
    let replies = drain(s);
    assert!(
        replies.contains(&Reply::Verified(0)) && replies.contains(&Reply::Complete),
        "{replies:?}"
    );
    let mut d = w.session(2, Link::TCP);
    assert_eq!(download(&mut w, &mut d, code).unwrap().files, [data]);
}

/// How many of the file's bytes the hasher a write carries covers, if it
/// carries one.
fn hasher_at(job: &Job) -> Option<u64> {
    match &job.work {
        crate::jobs::Work::Write(w) => w.hasher.as_ref().map(|(_, at)| *at),
        _ => None,
    }
}

/// Runs the session's jobs as they come, as `pump` does, and says which
/// ran: each one's name and, for a write, how many of the file's bytes the
/// hasher it carried covered.
fn run_jobs(w: &World, s: &mut Session) -> Vec<(&'static str, Option<u64>)> {
    let mut ran = Vec::new();
    for _ in 0..10_000 {
        let Some(job) = s.poll_job() else {
            return ran;
        };
        ran.push((job.name(), hasher_at(&job)));
        let done = job.run(&w.relay);
        s.handle_job_done(w.now(), done);
    }
    panic!("the session never stops giving out jobs");
}

/// `data[from..]` sent in frames of `frame` bytes, each frame's jobs run
/// before the next: the jobs that ran.
fn send_rest(
    w: &World,
    s: &mut Session,
    data: &[u8],
    from: usize,
    frame: usize,
) -> Vec<(&'static str, Option<u64>)> {
    let mut ran = Vec::new();
    for (i, chunk) in data[from..].chunks(frame).enumerate() {
        send_only(s, w.now(), data_msg(from + i * frame, chunk));
        ran.extend(run_jobs(w, s));
    }
    ran
}

#[test]
fn bytes_are_hashed_as_they_are_taken_and_writes_only_write() {
    let w = World::new(Settings::default());
    let mut s = deferred(&w, 1);
    let data = bytes(900_000, 5);
    let g = grant_one(&mut s, w.now(), "f", &data);
    let ran = send_rest(&w, &mut s, &data, 0, 60_000);
    assert!(
        ran.iter().filter(|(name, _)| *name == "write").count() > 4
            && ran.contains(&("complete", None)),
        "{ran:?}"
    );
    assert!(
        ran.iter()
            .all(|&(name, hasher)| hasher.is_none() && name != "hash-prefix"),
        "no write carries the hasher, and nothing is hashed again: {ran:?}"
    );
    verified_and_downloaded(w, &mut s, g.code, data);
}

#[test]
fn after_a_resume_the_writes_carry_the_hasher_until_it_catches_up() {
    let w = World::new(Settings::default());
    let mut old = deferred(&w, 1);
    let data = bytes(100_000, 8);
    let g = grant_one(&mut old, w.now(), "f", &data);
    send(&mut old, w.now(), data_msg(0, &data[..20_000]));
    assert_eq!(durable(&w, &g.code), 20_000);
    drop(old);
    let mut s = deferred(&w, 1);
    send(&mut s, w.now(), Message::Resume(Resume { token: g.token }));
    assert!(drain(&mut s).contains(&Reply::Plan(FilePlan {
        index: 0,
        plan: Plan::Upload { offset: 20_000 }
    })));
    // Bytes taken while the durable prefix is re-hashed: a step's worth,
    // so a write of them is queued behind the re-hash.
    send_only(&mut s, w.now(), data_msg(20_000, &data[20_000..40_000]));
    let rehash = s.poll_job().expect("the prefix re-hashed");
    assert_eq!(rehash.name(), "hash-prefix");
    assert!(s.poll_job().is_none(), "the write waits for the re-hash");
    run_all(&w, &mut s, vec![rehash]);
    let write = s.poll_job().expect("the write");
    assert_eq!(hasher_at(&write), Some(20_000), "it takes the hasher along");
    // Less than a step more, buffered while that write runs: the hasher
    // hashes it when it comes back.
    send_only(&mut s, w.now(), data_msg(40_000, &data[40_000..50_000]));
    run_all(&w, &mut s, vec![write]);
    let ran = send_rest(&w, &mut s, &data, 50_000, 10_000);
    assert!(
        ran.iter().any(|(name, _)| *name == "write")
            && ran
                .iter()
                .all(|&(name, hasher)| hasher.is_none() && name != "hash-prefix"),
        "caught up: the session hashes the rest as it takes it: {ran:?}"
    );
    verified_and_downloaded(w, &mut s, g.code, data);
}

/// The write a job carries: its offset, its buffers' lengths and its end.
fn write_of(job: &Job) -> (u64, Vec<usize>, u64) {
    match &job.work {
        crate::jobs::Work::Write(w) => {
            (w.offset, w.bufs.iter().map(<[u8]>::len).collect(), w.end())
        }
        other => panic!("not a write: {other:?}"),
    }
}

#[test]
fn queued_buffers_of_a_file_join_one_write_until_it_is_full_or_a_sync_waits_for_it() {
    let w = World::new(Settings::default());
    let mut s = w.session(1, Link::TCP);
    // A stated window of 32 MiB: a sync every 8 MiB.
    send(
        &mut s,
        w.now(),
        Message::Hello(Hello {
            version: 1,
            role: Role::Terminal,
            max_frame: 65_536,
            window: 32 << 20,
            caps: 0,
        }),
    );
    assert_eq!(drain(&mut s), [Reply::Welcome]);
    let data = bytes(9_000_000, 7);
    let g = grant_one(&mut s, w.now(), "f", &data);
    // 140 frames of 60,000 bytes, no job run meanwhile: fifteen full
    // buffers (nine frames, 540,000 bytes, each), then the frame that
    // crosses 8 MiB wants a sync of everything so far.
    for offset in (0..8_400_000).step_by(60_000) {
        send_only(
            &mut s,
            w.now(),
            data_msg(offset, &data[offset..offset + 60_000]),
        );
    }
    let first = s.poll_job().expect("a write");
    assert_eq!(
        write_of(&first),
        (0, vec![540_000; 8], 4_320_000),
        "eight buffers (past MAX_WRITE_LEN), then a write of its own"
    );
    assert_eq!(hasher_at(&first), None, "the session hashed the bytes");
    assert!(s.poll_job().is_none(), "one write at a time");
    run_all(&w, &mut s, vec![first]);
    let second = s.poll_job().expect("the next write");
    let mut lens = vec![540_000; 7];
    lens.push(300_000);
    assert_eq!(
        write_of(&second),
        (4_320_000, lens, 8_400_000),
        "the bytes the sync waits for end the write"
    );
    run_all(&w, &mut s, vec![second]);
    // The sync is given out at once; the bytes after it start a write.
    send_only(
        &mut s,
        w.now(),
        data_msg(8_400_000, &data[8_400_000..8_460_000]),
    );
    let jobs: Vec<Job> = std::iter::from_fn(|| s.poll_job()).take(3).collect();
    assert_eq!(jobs.iter().map(Job::name).collect::<Vec<_>>(), ["sync"]);
    run_all(&w, &mut s, jobs);
    assert_eq!(durable(&w, &g.code), 8_400_000);
    for (i, chunk) in data[8_460_000..].chunks(60_000).enumerate() {
        send(&mut s, w.now(), data_msg(8_460_000 + i * 60_000, chunk));
    }
    verified_and_downloaded(w, &mut s, g.code, data);
}

#[test]
fn bytes_changed_on_the_wire_after_a_write_are_caught_by_the_verdict() {
    // The hash covers what was written, not what was announced: bytes
    // other than the announced ones are refused, whatever write carried
    // them.
    let w = World::new(Settings::default());
    let mut s = deferred(&w, 1);
    let data = bytes(200_000, 6);
    let mut sent = data.clone();
    sent[150_000] ^= 1;
    announce(
        &mut s,
        w.now(),
        &[("f", data.len() as u64, Sha1Digest::of(&data))],
    );
    for (i, chunk) in sent.chunks(50_000).enumerate() {
        send(&mut s, w.now(), data_msg(i * 50_000, chunk));
    }
    let replies = drain(&mut s);
    assert!(
        replies.contains(&Reply::Rejected(FileRejected {
            index: 0,
            reason: ErrorCode::HashMismatch
        })) && !replies.contains(&Reply::Verified(0)),
        "{replies:?}"
    );
}

#[test]
fn a_session_waiting_for_the_store_keeps_the_link_alive_and_does_not_idle_out() {
    let w = World::new(Settings::default());
    let mut s = deferred(&w, 1);
    let data = bytes(1_000, 4);
    let t0 = w.now();
    send_only(
        &mut s,
        t0,
        Message::BatchOpen(BatchOpen {
            files: 1,
            total_size: 1_000,
        }),
    );
    send_only(
        &mut s,
        t0,
        Message::FileAnnounce(FileAnnounce {
            index: 0,
            size: 1_000,
            sha1: Sha1Digest::of(&data),
            name: "f",
        }),
    );
    let create = s.poll_job().expect("the creation");
    assert!(!s.wants_input(), "the creation holds the input back");
    // The store takes a minute, twice the idle timeout before a transfer:
    // a keepalive every 5 s, and the session stays open.
    let mut keepalives = 0;
    for second in 1..=60u64 {
        let now = t0 + Duration::from_secs(second);
        let due = s.poll_timeout().expect("a timer");
        assert!(due <= t0 + Duration::from_secs(second + 5), "{second}");
        if due <= now {
            s.handle_timeout(now);
        }
        for r in drain_only(&mut s) {
            assert_eq!(r, Reply::Keepalive, "at {second} s");
            keepalives += 1;
        }
    }
    assert_eq!(keepalives, 12);
    let later = t0 + Duration::from_secs(60);
    let done = create.run(&w.relay);
    s.handle_job_done(later, done);
    assert!(matches!(drain(&mut s)[..], [Reply::Grant(_), ..]));
    // The idle clock starts again from the reply, not from the request.
    s.handle_timeout(later + Duration::from_secs(29));
    assert!(!s.is_closed());
    assert_eq!(drain_only(&mut s), []);
}

#[test]
fn a_resume_of_the_sessions_own_upload_is_answered_without_taking_it_again() {
    let w = World::new(Settings::default());
    let mut s = deferred(&w, 1);
    let data = bytes(100_000, 9);
    let g = grant_one(&mut s, w.now(), "f", &data);
    // Bytes in, and a sync of them running beside when the terminal's
    // retransmit timeout asks for the upload again on the same link.
    send_only(&mut s, w.now(), data_msg(0, &data[..40_000]));
    let jobs: Vec<Job> = std::iter::from_fn(|| s.poll_job()).collect();
    run_all(&w, &mut s, jobs);
    let beside: Vec<Job> = std::iter::from_fn(|| s.poll_job()).collect();
    assert!(
        beside.iter().any(|j| j.name() == "sync"),
        "a sync runs beside"
    );
    send_only(&mut s, w.now(), Message::Resume(Resume { token: g.token }));
    // No lookup: on a shared store it would take the upload over again,
    // and the sync beside it could be refused as taken over.
    let after: Vec<Job> = std::iter::from_fn(|| s.poll_job()).collect();
    assert!(
        after.iter().all(|j| j.name() != "find-token"),
        "{:?}",
        after.iter().map(Job::name).collect::<Vec<_>>()
    );
    run_all(&w, &mut s, beside.into_iter().chain(after).collect());
    let replies = drain(&mut s);
    assert!(
        replies.iter().any(|r| matches!(r, Reply::Grant(_))),
        "{replies:?}"
    );
    assert!(
        !replies.contains(&Reply::Error(ErrorCode::TakenOver, 0)),
        "{replies:?}"
    );
    // The upload goes on from where it was.
    for (i, chunk) in data[40_000..].chunks(20_000).enumerate() {
        send(&mut s, w.now(), data_msg(40_000 + i * 20_000, chunk));
    }
    let replies = drain(&mut s);
    assert!(replies.contains(&Reply::Complete), "{replies:?}");
}
