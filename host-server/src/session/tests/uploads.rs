//! Uploads end to end: batches round-trip, bytes are checked against their
//! announced size and SHA-1, gaps draw a rewind, a newer session takes an
//! upload over, and a crash resumes from the durable offset.

use super::*;

#[test]
fn multi_file_batch_round_trips_including_an_empty_file() {
    let mut w = World::new(Settings::default());
    let data = vec![bytes(300_000, 1), Vec::new(), bytes(70_000, 2)];
    let mut s = open(&w, 1);
    let (grant, events, _) = upload(
        &mut w,
        &mut s,
        &["a.bin", "empty", "c.txt"],
        &data,
        None,
        |_| false,
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, upload::Event::Complete { .. })),
        "{events:?}"
    );
    let code = grant.unwrap().code;
    assert_eq!(code.len(), 13);
    let mut d = w.session(2, Link::TCP);
    let got = download(&mut w, &mut d, code).unwrap();
    assert_eq!(got.files, data);
    assert_eq!(got.names, ["a.bin", "empty", "c.txt"]);
}

#[test]
fn acks_are_durable_and_a_crash_resumes_from_the_durable_offset() {
    let mut w = World::new(Settings::default());
    let data = vec![bytes(12 << 20, 7)];
    let mut s = open(&w, 1);
    // In line, acks come every half window, and every 4 MiB at most.
    let ack_step = u64::from(Link::TCP.window / 2).min(4 << 20);
    let (grant, _, c) = upload(&mut w, &mut s, &["big"], &data, None, |acked| {
        acked >= ack_step
    });
    let acked = c.acked();
    assert!(acked >= ack_step);
    let token = grant.unwrap().token;
    drop(s);
    w.crash();
    let mut s = open(&w, 1);
    let (_, events, _) = upload(&mut w, &mut s, &["big"], &data, Some(token), |_| false);
    let resumed_at = events
        .iter()
        .find_map(|e| match e {
            upload::Event::Uploading { offset, .. } => Some(*offset),
            _ => None,
        })
        .unwrap();
    assert!(
        resumed_at >= acked,
        "resumed at {resumed_at}, acked {acked}"
    );
    assert!(resumed_at < data[0].len() as u64);
    let mut d = w.session(2, Link::TCP);
    assert_eq!(
        download(&mut w, &mut d, grant.unwrap().code).unwrap().files,
        data
    );
}

#[test]
fn wrong_sha1_is_rejected_and_keeps_no_bytes() {
    let w = World::new(Settings::default());
    let mut s = open(&w, 1);
    let replies = announce(&mut s, w.now(), &[("f", 4, Sha1Digest::of(b"abcd"))]);
    let g = grant_of(&replies);
    send(
        &mut s,
        w.now(),
        Message::Data(Data {
            file: 0,
            offset: 0,
            bytes: b"abce",
        }),
    );
    let replies = drain(&mut s);
    assert!(
        replies.contains(&Reply::Rejected(FileRejected {
            index: 0,
            reason: ErrorCode::HashMismatch
        })),
        "{replies:?}"
    );
    // Resume: the file starts over from 0.
    send(&mut s, w.now(), Message::Resume(Resume { token: g.token }));
    let replies = drain(&mut s);
    assert!(
        replies.contains(&Reply::Plan(FilePlan {
            index: 0,
            plan: Plan::Upload { offset: 0 }
        })),
        "{replies:?}"
    );
    // Too many bytes: a size mismatch.
    send(
        &mut s,
        w.now(),
        Message::Data(Data {
            file: 0,
            offset: 2,
            bytes: b"xyz",
        }),
    );
    assert!(drain(&mut s).contains(&Reply::Rejected(FileRejected {
        index: 0,
        reason: ErrorCode::SizeMismatch
    })));
    send(
        &mut s,
        w.now(),
        Message::Data(Data {
            file: 0,
            offset: 0,
            bytes: b"abcd",
        }),
    );
    let replies = drain(&mut s);
    assert!(replies.contains(&Reply::Verified(0)), "{replies:?}");
}

#[test]
fn a_gap_draws_one_rewind_and_resent_bytes_are_skipped() {
    let w = World::new(Settings::default());
    let mut s = open(&w, 1);
    let data = bytes(30, 3);
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("f", 30, Sha1Digest::of(&data))],
    ));
    let now = w.now();
    send(
        &mut s,
        now,
        Message::Data(Data {
            file: 0,
            offset: 0,
            bytes: &data[..10],
        }),
    );
    send(
        &mut s,
        now,
        Message::Data(Data {
            file: 0,
            offset: 20,
            bytes: &data[20..25],
        }),
    );
    send(
        &mut s,
        now,
        Message::Data(Data {
            file: 0,
            offset: 25,
            bytes: &data[25..],
        }),
    );
    assert_eq!(
        drain(&mut s),
        [Reply::Rewind(Rewind {
            file: 0,
            offset: 10
        })]
    );
    send(
        &mut s,
        now,
        Message::Data(Data {
            file: 0,
            offset: 5,
            bytes: &data[5..],
        }),
    );
    let replies = drain(&mut s);
    assert_eq!(
        replies[0],
        Reply::Ack(Ack {
            file: 0,
            offset: 30,
            window: Link::TCP.window
        })
    );
    assert!(replies.contains(&Reply::Complete));
    assert_eq!(g.files, 1);
}

#[test]
fn a_newer_session_takes_an_upload_over() {
    let w = World::new(Settings::default());
    let data = bytes(10, 1);
    let mut old = open(&w, 1);
    let g = grant_of(&announce(
        &mut old,
        w.now(),
        &[("f", 10, Sha1Digest::of(&data))],
    ));
    send(
        &mut old,
        w.now(),
        Message::Data(Data {
            file: 0,
            offset: 0,
            bytes: &data[..4],
        }),
    );
    let mut new = open(&w, 1);
    send(
        &mut new,
        w.now(),
        Message::Resume(Resume { token: g.token }),
    );
    let replies = drain(&mut new);
    // The old session's unsynced bytes were not acknowledged: start from 0.
    assert!(
        replies.contains(&Reply::Plan(FilePlan {
            index: 0,
            plan: Plan::Upload { offset: 0 }
        })),
        "{replies:?}"
    );
    send(
        &mut old,
        w.now(),
        Message::Data(Data {
            file: 0,
            offset: 4,
            bytes: &data[4..],
        }),
    );
    // Its write is refused: the stale session drops the upload and says so.
    assert_eq!(drain(&mut old), [Reply::Error(ErrorCode::TakenOver, 0)]);
    send(
        &mut new,
        w.now(),
        Message::Data(Data {
            file: 0,
            offset: 0,
            bytes: &data,
        }),
    );
    assert!(drain(&mut new).contains(&Reply::Complete));
}

#[test]
fn large_files_verify_and_reject_by_the_hash_of_their_written_bytes() {
    let mut w = World::new(Settings::default());
    let data = vec![bytes(9 << 20, 9)];
    let mut s = open(&w, 1);
    let (grant, events, _) = upload(&mut w, &mut s, &["big"], &data, None, |_| false);
    assert!(events
        .iter()
        .any(|e| matches!(e, upload::Event::Complete { .. })));
    let mut d = w.session(2, Link::TCP);
    assert_eq!(
        download(&mut w, &mut d, grant.unwrap().code).unwrap().files,
        data
    );

    // Announced with another SHA-1: rejected at the end, bytes dropped.
    let mut s = open(&w, 1);
    let other = bytes(9 << 20, 10);
    announce(
        &mut s,
        w.now(),
        &[("f", other.len() as u64, Sha1Digest::of(b"not these bytes"))],
    );
    let mut replies = Vec::new();
    for (i, chunk) in other.chunks(60_000).enumerate() {
        send(&mut s, w.now(), data_msg(i * 60_000, chunk));
        replies.extend(drain(&mut s));
    }
    assert!(
        replies.contains(&Reply::Rejected(FileRejected {
            index: 0,
            reason: ErrorCode::HashMismatch
        })),
        "{replies:?}"
    );
    assert!(!replies.contains(&Reply::Verified(0)));
}

#[test]
fn a_large_upload_resumes_after_a_crash_and_rehashes_its_prefix() {
    let mut w = World::new(Settings::default());
    let data = vec![bytes(12 << 20, 11)];
    let mut s = open(&w, 1);
    let (grant, _, c) = upload(&mut w, &mut s, &["big"], &data, None, |acked| {
        acked >= 4 << 20
    });
    let acked = c.acked();
    drop(s);
    w.crash();
    let mut s = open(&w, 1);
    let token = grant.unwrap().token;
    let (_, events, _) = upload(&mut w, &mut s, &["big"], &data, Some(token), |_| false);
    let resumed_at = events
        .iter()
        .find_map(|e| match e {
            upload::Event::Uploading { offset, .. } => Some(*offset),
            _ => None,
        })
        .unwrap();
    assert!(resumed_at >= acked && resumed_at > 0);
    assert!(events
        .iter()
        .any(|e| matches!(e, upload::Event::Complete { .. })));
    let mut d = w.session(2, Link::TCP);
    assert_eq!(
        download(&mut w, &mut d, grant.unwrap().code).unwrap().files,
        data
    );
}

/// Empty files of the empty content are complete at the grant: `Held`,
/// no store work, and the batch completes at once.
#[test]
fn empty_files_are_held_at_the_grant() {
    let w = World::new(Settings::default());
    let mut s = open(&w, 1);
    let names: Vec<String> = (0..1000).map(|i| format!("e{i}")).collect();
    let files: Vec<(&str, u64, Sha1Digest)> = names
        .iter()
        .map(|n| (n.as_str(), 0, Sha1Digest::EMPTY))
        .collect();
    let replies = announce(&mut s, w.now(), &files);
    let held = replies
        .iter()
        .filter(|r| {
            matches!(
                r,
                Reply::Plan(FilePlan {
                    plan: Plan::Held,
                    ..
                })
            )
        })
        .count();
    assert_eq!(held, 1000);
    assert_eq!(replies.last(), Some(&Reply::Complete));
    assert_eq!(w.store.blob_count(), 0);
    // An empty file announced with another SHA-1 is rejected at once.
    let replies = announce(&mut s, w.now(), &[("odd", 0, Sha1Digest::of(b"x"))]);
    assert!(
        replies.contains(&Reply::Rejected(FileRejected {
            index: 0,
            reason: ErrorCode::HashMismatch
        })),
        "{replies:?}"
    );
}
