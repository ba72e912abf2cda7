//! The upload machine stepped by hand against a scripted relay: loss,
//! duplication, reordering and reconnects.

use super::*;
use crate::code::Code;
use crate::error::ErrorCode;
use crate::frame::Decoder;
use crate::hash::Sha1Digest;
use crate::message::{
    Ack, Data, FilePlan, FileRejected, FileVerified, Kind, Message, Plan, Rewind, Role, Welcome,
    CAP_INSTANT_UPLOAD,
};
use crate::time::Duration;
use std::vec::Vec;

pub(super) const T0: Instant = Instant::from_millis(1_000);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn token() -> ResumeToken {
    ResumeToken([9; 16])
}

fn code() -> Code {
    Code::parse("ABCD-EFGH-JKMN").unwrap()
}

pub(super) fn welcome(window: u32) -> Message<'static> {
    Message::Welcome(Welcome {
        version: 1,
        role: Role::Relay,
        max_frame: 256,
        window,
        caps: CAP_INSTANT_UPLOAD,
    })
}

pub(super) fn grant(files: u16) -> Message<'static> {
    Message::Grant(Grant {
        code: code(),
        expires_at: 2_000_000_000,
        token: token(),
        files,
    })
}

pub(super) fn plan(index: u16, plan: Plan) -> Message<'static> {
    Message::FilePlan(FilePlan { index, plan })
}

fn ack(file: u16, offset: u64, window: u32) -> Message<'static> {
    Message::Ack(Ack {
        file,
        offset,
        window,
    })
}

/// A decoded outgoing message, owned so the test can inspect it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Out {
    Hello,
    BatchOpen(u16, u64),
    Announce(u16, u64, std::string::String),
    Resume,
    Proof(u16, Sha1Digest),
    Data(u16, u64, Vec<u8>),
    Keepalive,
    Goodbye,
    Other(Kind),
}

pub(super) fn drain<const F: usize>(
    s: &mut Session<'_, F>,
    now: Instant,
    files: &mut [Vec<u8>],
) -> Vec<Out> {
    let mut out = Vec::new();
    let mut buf = [0u8; 600];
    for _ in 0..10_000 {
        let mut source: &[Vec<u8>] = files;
        let Some(n) = s.poll_transmit(now, &mut source, &mut buf).unwrap() else {
            break;
        };
        let mut dec = Decoder::new([0u8; 300]);
        let mut input = &buf[..n];
        let frame = dec.feed(&mut input).unwrap().unwrap();
        // Never larger than the relay's max_frame (256 in these tests).
        assert!(frame.body.len() + crate::frame::OVERHEAD <= 256);
        out.push(match Message::decode(frame).unwrap() {
            Message::Hello(_) => Out::Hello,
            Message::BatchOpen(b) => Out::BatchOpen(b.files, b.total_size),
            Message::FileAnnounce(a) => Out::Announce(a.index, a.size, a.name.into()),
            Message::Resume(r) => {
                assert_eq!(r.token, token());
                Out::Resume
            }
            Message::Proof(p) => Out::Proof(p.index, p.proof),
            Message::Data(d) => Out::Data(d.file, d.offset, d.bytes.to_vec()),
            Message::Keepalive => Out::Keepalive,
            Message::Goodbye => Out::Goodbye,
            m => Out::Other(m.kind()),
        });
    }
    out
}

fn events<const F: usize>(s: &mut Session<'_, F>) -> Vec<Event> {
    core::iter::from_fn(|| s.poll_event()).collect()
}

fn data_offsets(out: &[Out]) -> Vec<(u16, u64, usize)> {
    out.iter()
        .filter_map(|o| match o {
            Out::Data(f, off, b) => Some((*f, *off, b.len())),
            _ => None,
        })
        .collect()
}

pub(super) fn metas(files: &[Vec<u8>]) -> Vec<FileMeta<'static>> {
    const NAMES: [&str; 4] = ["a.bin", "b.bin", "c.bin", "d.bin"];
    files
        .iter()
        .enumerate()
        .map(|(i, f)| FileMeta {
            name: NAMES[i],
            size: f.len() as u64,
            sha1: Sha1Digest::of(f),
        })
        .collect()
}

/// Drives a fresh session up to the grant with both files planned from 0.
fn granted<'n>(files: &mut [Vec<u8>], metas: &'n [FileMeta<'n>], window: u32) -> Session<'n, 4> {
    let mut s = Session::<4>::new(Config::default(), metas).unwrap();
    s.handle_connected(T0);
    assert_eq!(drain(&mut s, T0, files), [Out::Hello]);
    s.handle_message(T0, welcome(window));
    let out = drain(&mut s, T0, files);
    assert_eq!(
        out[0],
        Out::BatchOpen(
            files.len() as u16,
            files.iter().map(|f| f.len() as u64).sum()
        )
    );
    assert_eq!(out.len(), 1 + files.len());
    s.handle_message(T0, grant(files.len() as u16));
    for i in 0..files.len() {
        s.handle_message(T0, plan(i as u16, Plan::Upload { offset: 0 }));
    }
    s
}

#[test]
fn clean_upload_of_two_files() {
    let mut files = std::vec![std::vec![7u8; 1000], std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = granted(&mut files, &metas, 100_000);
    let ev = events(&mut s);
    assert!(ev.contains(&Event::Granted {
        code: code(),
        expires_at: 2_000_000_000,
        token: token()
    }));
    let out = drain(&mut s, T0, &mut files);
    let sent = data_offsets(&out);
    // In order, contiguous, within the relay's frame size.
    let mut expect = 0;
    for (f, off, len) in sent.iter().filter(|d| d.0 == 0) {
        assert_eq!((*f, *off), (0, expect));
        // Full frames except the last.
        assert!(*len >= Data::max_payload(256) || expect + *len as u64 == 1000);
        expect += *len as u64;
    }
    assert_eq!(expect, 1000);
    assert!(sent.contains(&(1, 0, 10)));
    // Rebuild the files from the frames: byte-identical.
    let mut rebuilt = std::vec![0u8; 1000];
    for o in &out {
        if let Out::Data(0, off, b) = o {
            rebuilt[*off as usize..*off as usize + b.len()].copy_from_slice(b);
        }
    }
    assert_eq!(rebuilt, files[0]);
    s.handle_message(T0, ack(0, 1000, 100_000));
    s.handle_message(T0, ack(1, 10, 100_000));
    s.handle_message(T0, Message::FileVerified(FileVerified { index: 0 }));
    assert!(!s.is_finished());
    s.handle_message(T0, Message::FileVerified(FileVerified { index: 1 }));
    assert!(s.is_finished());
    let ev = events(&mut s);
    assert!(ev.contains(&Event::Complete { code: code() }));
    assert!(ev.contains(&Event::Progress {
        acked: 1010,
        total: 1010
    }));
    assert_eq!(drain(&mut s, T0, &mut files), [Out::Goodbye]);
}

#[test]
fn window_limits_bytes_in_flight_and_acks_open_it() {
    let mut files = std::vec![std::vec![3u8; 2000]];
    let metas = metas(&files);
    let mut s = granted(&mut files, &metas, 500);
    let sent: u64 = data_offsets(&drain(&mut s, T0, &mut files))
        .iter()
        .map(|d| d.2 as u64)
        .sum();
    assert_eq!(sent, 500);
    assert!(drain(&mut s, T0, &mut files).is_empty());
    s.handle_message(T0, ack(0, 300, 500));
    let more = data_offsets(&drain(&mut s, T0, &mut files));
    assert_eq!(more.first().map(|d| d.1), Some(500));
    assert_eq!(more.iter().map(|d| d.2 as u64).sum::<u64>(), 300);
}

#[test]
fn lost_data_is_resent_on_rewind_and_on_timeout() {
    let mut files = std::vec![std::vec![5u8; 1000]];
    let metas = metas(&files);
    let mut s = granted(&mut files, &metas, 100_000);
    let first = data_offsets(&drain(&mut s, T0, &mut files));
    assert!(first.len() > 3);
    // The relay got frames 0 and 1, lost frame 2, and says so.
    let gap = first[2].1;
    s.handle_message(T0, ack(0, gap, 100_000));
    s.handle_message(
        T0,
        Message::Rewind(Rewind {
            file: 0,
            offset: gap,
        }),
    );
    // A duplicated rewind changes nothing more.
    s.handle_message(
        T0,
        Message::Rewind(Rewind {
            file: 0,
            offset: gap,
        }),
    );
    let again = data_offsets(&drain(&mut s, T0, &mut files));
    assert_eq!(again.first().map(|d| d.1), Some(gap));
    assert_eq!(again.iter().map(|d| d.2 as u64).sum::<u64>(), 1000 - gap);
    assert!(events(&mut s).contains(&Event::Retransmit {
        file: 0,
        offset: gap
    }));
    // Now everything after `gap` is lost and the relay stays silent: the
    // retransmit timer resends from the last ack.
    let deadline = s.poll_timeout().unwrap();
    assert!(deadline <= T0 + Config::default().retransmit_timeout);
    s.handle_timeout(deadline);
    let third = data_offsets(&drain(&mut s, deadline, &mut files));
    assert_eq!(third.first().map(|d| d.1), Some(gap));
    // Stale, reordered acks never move the acked offset backwards.
    s.handle_message(deadline, ack(0, 1000, 100_000));
    s.handle_message(deadline, ack(0, 10, 100_000));
    assert_eq!(s.acked(), 1000);
}

#[test]
fn duplicated_and_reordered_control_messages_are_harmless() {
    let mut files = std::vec![std::vec![1u8; 100], std::vec![2u8; 100]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.handle_connected(T0);
    let _ = drain(&mut s, T0, &mut files);
    s.handle_message(T0, welcome(10_000));
    s.handle_message(T0, welcome(10_000));
    let out = drain(&mut s, T0, &mut files);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Out::BatchOpen(..)))
            .count(),
        1
    );
    // Plans before the grant are ignored (reordered): the grant comes, then
    // plans arrive in reverse order, one duplicated.
    s.handle_message(T0, plan(0, Plan::Upload { offset: 0 }));
    s.handle_message(T0, grant(2));
    s.handle_message(T0, grant(2));
    s.handle_message(T0, plan(1, Plan::Upload { offset: 0 }));
    s.handle_message(T0, plan(0, Plan::Upload { offset: 0 }));
    s.handle_message(T0, plan(1, Plan::Upload { offset: 0 }));
    let ev = events(&mut s);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::Granted { .. }))
            .count(),
        1
    );
    let sent = data_offsets(&drain(&mut s, T0, &mut files));
    assert_eq!(sent.iter().map(|d| d.2 as u64).sum::<u64>(), 200);
    // Verdicts duplicated and out of order.
    s.handle_message(T0, ack(1, 100, 10_000));
    s.handle_message(T0, Message::FileVerified(FileVerified { index: 1 }));
    s.handle_message(T0, Message::FileVerified(FileVerified { index: 1 }));
    // A verdict for a file whose bytes are not all acked is not believed.
    s.handle_message(T0, Message::FileVerified(FileVerified { index: 0 }));
    assert!(!s.is_finished());
    s.handle_message(T0, ack(0, 100, 10_000));
    s.handle_message(T0, Message::FileVerified(FileVerified { index: 0 }));
    assert!(s.is_finished());
    assert_eq!(s.error(), None);
}

#[test]
fn lost_hello_and_lost_announce_are_recovered_by_timers() {
    let mut files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.handle_connected(T0);
    assert_eq!(drain(&mut s, T0, &mut files), [Out::Hello]);
    // The hello is lost.
    let t1 = s.poll_timeout().unwrap();
    s.handle_timeout(t1);
    assert_eq!(drain(&mut s, t1, &mut files), [Out::Hello]);
    s.handle_message(t1, welcome(1000));
    assert_eq!(drain(&mut s, t1, &mut files).len(), 2);
    // The announce is lost: no grant; the whole announcement is repeated.
    let t2 = s.poll_timeout().unwrap();
    s.handle_timeout(t2);
    let out = drain(&mut s, t2, &mut files);
    assert!(
        matches!(out[..], [Out::BatchOpen(1, 10), Out::Announce(0, 10, _)]),
        "{out:?}"
    );
}

#[test]
fn lost_plan_or_verdict_is_recovered_with_resume() {
    let mut files = std::vec![std::vec![1u8; 10], std::vec![2u8; 10]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.handle_connected(T0);
    s.handle_message(T0, welcome(1000));
    let _ = drain(&mut s, T0, &mut files);
    s.handle_message(T0, grant(2));
    s.handle_message(T0, plan(0, Plan::Upload { offset: 0 }));
    // The plan for file 1 is lost.
    let sent = data_offsets(&drain(&mut s, T0, &mut files));
    assert_eq!(sent, [(0, 0, 10)]);
    s.handle_message(T0, ack(0, 10, 1000));
    let t1 = s.poll_timeout().unwrap();
    s.handle_timeout(t1);
    assert!(drain(&mut s, t1, &mut files).contains(&Out::Resume));
    // The relay answers the resume: file 0 is complete, file 1 from 0.
    s.handle_message(t1, grant(2));
    s.handle_message(t1, plan(0, Plan::Held));
    s.handle_message(t1, plan(1, Plan::Upload { offset: 0 }));
    assert_eq!(data_offsets(&drain(&mut s, t1, &mut files)), [(1, 0, 10)]);
    s.handle_message(t1, ack(1, 10, 1000));
    // FileVerified for file 1 is lost too: the resume answers Held.
    let t2 = s.poll_timeout().unwrap();
    s.handle_timeout(t2);
    assert!(drain(&mut s, t2, &mut files).contains(&Out::Resume));
    s.handle_message(t2, plan(1, Plan::Held));
    assert!(s.is_finished());
    assert_eq!(s.error(), None);
}

#[test]
fn reconnect_resumes_from_the_relays_durable_offset() {
    let mut files = std::vec![std::vec![4u8; 1000]];
    let metas = metas(&files);
    let mut s = granted(&mut files, &metas, 100_000);
    let _ = drain(&mut s, T0, &mut files);
    s.handle_message(T0, ack(0, 400, 100_000));
    // The link dies; the driver reconnects.
    s.handle_disconnected(T0 + ms(10));
    assert_eq!(s.poll_timeout(), None);
    let t1 = T0 + ms(500);
    s.handle_connected(t1);
    assert_eq!(drain(&mut s, t1, &mut files), [Out::Hello]);
    s.handle_message(t1, welcome(100_000));
    assert_eq!(drain(&mut s, t1, &mut files), [Out::Resume]);
    // The relay crashed and kept only 300 durable bytes (it never acked
    // more than it had durable, but a restarted relay's word is final).
    s.handle_message(t1, grant(1));
    s.handle_message(t1, plan(0, Plan::Upload { offset: 300 }));
    let sent = data_offsets(&drain(&mut s, t1, &mut files));
    assert_eq!(sent.first().map(|d| d.1), Some(300));
    assert_eq!(sent.iter().map(|d| d.2 as u64).sum::<u64>(), 700);
}

#[test]
fn resume_after_terminal_restart_uses_the_token() {
    let mut files = std::vec![std::vec![4u8; 100]];
    let metas = metas(&files);
    let mut s = Session::<4>::resume(Config::default(), &metas, token()).unwrap();
    s.handle_connected(T0);
    let _ = drain(&mut s, T0, &mut files);
    s.handle_message(T0, welcome(1000));
    assert_eq!(drain(&mut s, T0, &mut files), [Out::Resume]);
    // A grant with another token is not ours.
    let mut other = match grant(1) {
        Message::Grant(g) => g,
        _ => unreachable!(),
    };
    other.token = ResumeToken([1; 16]);
    s.handle_message(T0, Message::Grant(other));
    assert_eq!(s.error(), Some(Error::Mismatch));
}

#[test]
fn unknown_token_fails_cleanly() {
    let files = std::vec![std::vec![4u8; 100]];
    let metas = metas(&files);
    let mut s = Session::<4>::resume(Config::default(), &metas, token()).unwrap();
    s.handle_connected(T0);
    s.handle_message(T0, welcome(1000));
    s.handle_message(
        T0,
        Message::Error(message::Error {
            code: ErrorCode::UnknownToken,
            kind: Kind::Resume as u8,
            retry_after_ms: 0,
        }),
    );
    assert_eq!(s.error(), Some(Error::Relay(ErrorCode::UnknownToken)));
    assert!(s.is_finished());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn an_upload_taken_over_by_another_connection_stops_without_retrying() {
    // A second uploader of the same token resumed it elsewhere: unlike a
    // lost link (`UnexpectedMessage`, reconnect and resume), this session
    // stops, so the two cannot take the upload from each other in turn.
    let mut files = std::vec![std::vec![1u8; 10_000]];
    let metas = metas(&files);
    let mut s = granted(&mut files, &metas, 1000);
    let _ = drain(&mut s, T0, &mut files);
    s.handle_message(
        T0,
        Message::Error(message::Error {
            code: ErrorCode::TakenOver,
            kind: Kind::Data as u8,
            retry_after_ms: 0,
        }),
    );
    assert_eq!(s.error(), Some(Error::Relay(ErrorCode::TakenOver)));
    assert!(s.is_finished());
    assert!(!events(&mut s).contains(&Event::LinkLost));
    assert!(drain(&mut s, T0, &mut files).is_empty());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn challenge_is_answered_with_a_proof_over_the_nonce() {
    let mut files = std::vec![b"shared content".to_vec()];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.handle_connected(T0);
    s.handle_message(T0, welcome(1000));
    let _ = drain(&mut s, T0, &mut files);
    s.handle_message(T0, grant(1));
    let nonce = [0x42; 32];
    s.handle_message(T0, plan(0, Plan::Challenge { nonce }));
    let mut p = crate::hash::ProofHasher::new(&nonce);
    p.update(b"shared content");
    assert_eq!(drain(&mut s, T0, &mut files), [Out::Proof(0, p.finish())]);
    // Right proof: linked without sending a byte.
    s.handle_message(T0, plan(0, Plan::Held));
    assert!(s.is_finished());
    assert!(events(&mut s).contains(&Event::Linked { file: 0 }));
}

#[test]
fn refused_proof_falls_back_to_a_normal_upload() {
    let mut files = std::vec![b"shared content".to_vec()];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.handle_connected(T0);
    s.handle_message(T0, welcome(1000));
    let _ = drain(&mut s, T0, &mut files);
    s.handle_message(T0, grant(1));
    s.handle_message(T0, plan(0, Plan::Challenge { nonce: [1; 32] }));
    assert!(matches!(
        drain(&mut s, T0, &mut files)[..],
        [Out::Proof(0, _)]
    ));
    s.handle_message(T0, plan(0, Plan::Upload { offset: 0 }));
    assert_eq!(data_offsets(&drain(&mut s, T0, &mut files)), [(0, 0, 14)]);
}

#[test]
fn rejection_and_relay_errors_end_the_session_with_the_reason() {
    let mut files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = granted(&mut files, &metas, 1000);
    let _ = drain(&mut s, T0, &mut files);
    s.handle_message(
        T0,
        Message::FileRejected(FileRejected {
            index: 0,
            reason: ErrorCode::HashMismatch,
        }),
    );
    assert_eq!(
        s.error(),
        Some(Error::Rejected {
            file: 0,
            reason: ErrorCode::HashMismatch
        })
    );
    // Nothing more is sent and no timer runs.
    assert!(drain(&mut s, T0, &mut files).is_empty());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn silence_means_link_lost_and_keepalives_keep_it_up() {
    let mut files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let config = Config {
        retransmit_timeout: Duration::from_secs(60),
        keepalive_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut s = Session::<4>::new(config, &metas).unwrap();
    s.handle_connected(T0);
    s.handle_message(T0, welcome(1000));
    let _ = drain(&mut s, T0, &mut files);
    s.handle_message(T0, grant(1));
    s.handle_message(T0, plan(0, Plan::Upload { offset: 0 }));
    let _ = drain(&mut s, T0, &mut files);
    s.handle_message(T0, ack(0, 10, 1000));
    // Nothing from the relay: keepalives go out, then the link is lost.
    let mut now = T0;
    let mut keepalives = 0;
    for _ in 0..100 {
        let Some(t) = s.poll_timeout() else { break };
        assert!(t > now || t == now && keepalives == 0, "timer did not move");
        now = t;
        s.handle_timeout(now);
        keepalives += drain(&mut s, now, &mut files)
            .iter()
            .filter(|o| **o == Out::Keepalive)
            .count();
    }
    assert_eq!(keepalives, 4);
    assert!(events(&mut s).contains(&Event::LinkLost));
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(now, T0 + config.idle_timeout);
}

#[test]
fn bad_inputs_are_refused_up_front() {
    let metas: [FileMeta<'_>; 0] = [];
    assert_eq!(
        Session::<2>::new(Config::default(), &metas).err(),
        Some(Error::TooManyFiles)
    );
    let m = FileMeta {
        name: "a",
        size: 0,
        sha1: Sha1Digest::EMPTY,
    };
    assert_eq!(
        Session::<2>::new(Config::default(), &[m, m, m]).err(),
        Some(Error::TooManyFiles)
    );
    let bad = FileMeta { name: "../x", ..m };
    assert_eq!(
        Session::<2>::new(Config::default(), &[bad]).err(),
        Some(Error::InvalidName { file: 0 })
    );
    // Issue 18, item 3: two files at one path, or a file that is another's
    // directory, cannot both be created by a downloader.
    for (a, b) in [("d/x", "d/x"), ("d", "d/x"), ("d/x/y", "d/x")] {
        let (a, b) = (FileMeta { name: a, ..m }, FileMeta { name: b, ..m });
        assert_eq!(
            Session::<2>::new(Config::default(), &[a, b]).err(),
            Some(Error::InvalidName { file: 1 })
        );
    }
    // A name that does not fit the relay's frames fails with a clear reason.
    let long = "n".repeat(250);
    let m = FileMeta { name: &long, ..m };
    let mut s = Session::<2>::new(Config::default(), &[m]).unwrap();
    s.handle_connected(T0);
    s.handle_message(
        T0,
        Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 128,
            window: 100,
            caps: 0,
        }),
    );
    let mut files: Vec<Vec<u8>> = std::vec![Vec::new()];
    let _ = drain(&mut s, T0, &mut files);
    assert_eq!(s.error(), Some(Error::InvalidName { file: 0 }));
}

#[test]
fn a_file_that_shrank_is_not_padded() {
    let mut files = std::vec![std::vec![1u8; 100]];
    let metas = metas(&files);
    let mut s = granted(&mut files, &metas, 1000);
    files[0].truncate(40);
    // The 40 bytes that remain go out; then nothing, rather than padding.
    let sent = data_offsets(&drain(&mut s, T0, &mut files));
    assert_eq!(sent.iter().map(|d| d.2).sum::<usize>(), 40);
    assert!(drain(&mut s, T0, &mut files).is_empty());
}

#[test]
fn a_stall_resends_and_asks_where_the_relay_stands() {
    // The relay's ack for the whole window is lost; it holds the bytes and
    // ignores the resent duplicates, so only its answer to Resume helps.
    let mut files = std::vec![std::vec![6u8; 300]];
    let metas = metas(&files);
    let mut s = granted(&mut files, &metas, 100);
    let _ = drain(&mut s, T0, &mut files);
    let t1 = s.poll_timeout().unwrap();
    s.handle_timeout(t1);
    let out = drain(&mut s, t1, &mut files);
    assert!(out.contains(&Out::Resume), "{out:?}");
    assert_eq!(data_offsets(&out).first().map(|d| d.1), Some(0));
    s.handle_message(t1, grant(1));
    s.handle_message(t1, plan(0, Plan::Upload { offset: 100 }));
    assert_eq!(
        data_offsets(&drain(&mut s, t1, &mut files))
            .first()
            .map(|d| d.1),
        Some(100)
    );
}

#[test]
fn a_verdict_before_the_grant_is_not_trusted_and_a_repeated_grant_completes() {
    // An empty file: its verdict can outrun a lost grant.
    let mut files = std::vec![Vec::new()];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.handle_connected(T0);
    s.handle_message(T0, welcome(100));
    let _ = drain(&mut s, T0, &mut files);
    s.handle_message(T0, Message::FileVerified(FileVerified { index: 0 }));
    assert!(!s.is_finished());
    s.handle_message(T0, grant(1));
    s.handle_message(T0, plan(0, Plan::Held));
    s.handle_message(T0, grant(1));
    assert!(s.is_finished());
    assert_eq!(s.error(), None);
}

#[test]
fn errors_about_noise_do_not_end_the_upload() {
    let mut files = std::vec![std::vec![1u8; 10]];
    let metas = metas(&files);
    let mut s = granted(&mut files, &metas, 1000);
    for code in [
        ErrorCode::TooLarge,
        ErrorCode::BadFrame,
        ErrorCode::UnknownKind,
    ] {
        s.handle_message(
            T0,
            Message::Error(message::Error {
                code,
                kind: 0,
                retry_after_ms: 0,
            }),
        );
    }
    assert!(!s.is_finished());
    // The same code about one of our messages is final.
    s.handle_message(
        T0,
        Message::Error(message::Error {
            code: ErrorCode::TooLarge,
            kind: Kind::FileAnnounce as u8,
            retry_after_ms: 0,
        }),
    );
    assert_eq!(s.error(), Some(Error::Relay(ErrorCode::TooLarge)));
}

#[test]
fn a_refusal_with_a_reason_is_reported_and_retried_after_the_hint() {
    let mut files = std::vec![std::vec![4u8; 100]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.handle_connected(T0);
    s.handle_message(T0, welcome(1000));
    let _ = drain(&mut s, T0, &mut files);
    let _ = events(&mut s);
    s.handle_message(
        T0,
        Message::Error(message::Error {
            code: ErrorCode::TooManyIncomplete,
            kind: Kind::FileAnnounce as u8,
            retry_after_ms: 6_000,
        }),
    );
    assert_eq!(
        events(&mut s),
        [Event::Waiting {
            reason: ErrorCode::TooManyIncomplete,
            retry_after_ms: 6_000
        }]
    );
    assert!(!s.is_finished());
    // Not announced again before the hint (keepalives aside) ...
    let early = T0 + Duration::from_millis(5_000);
    s.handle_timeout(early);
    assert!(!drain(&mut s, early, &mut files)
        .iter()
        .any(|o| matches!(o, Out::BatchOpen(..))));
    // ... and announced again once it has passed.
    let late = T0 + Duration::from_millis(6_000);
    s.handle_timeout(late);
    assert!(drain(&mut s, late, &mut files)
        .iter()
        .any(|o| matches!(o, Out::BatchOpen(..))));
}

/// A grant arrives with a plan per file, each a report for the driver; a
/// driver that polls only after reading them all must still see the grant
/// (the simulator's seed 128477521248078 lost it: the code was never shown).
#[test]
fn a_grant_is_never_lost_to_a_queue_full_of_reports() {
    let mut files = std::vec![
        std::vec![1u8; 100],
        std::vec![2u8; 100],
        std::vec![3u8; 100],
        std::vec![4u8; 100]
    ];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.handle_connected(T0);
    drain(&mut s, T0, &mut files);
    s.handle_message(T0, welcome(100_000));
    drain(&mut s, T0, &mut files);
    s.handle_message(T0, grant(4));
    for i in 0..4u16 {
        s.handle_message(
            T0,
            plan(
                i,
                Plan::Challenge {
                    nonce: [i as u8; 32],
                },
            ),
        );
    }
    for i in 0..4u16 {
        s.handle_message(T0, plan(i, Plan::Upload { offset: 0 }));
    }
    let ev = events(&mut s);
    // Progress is coalesced apart from the queue, whose 8 places overflowed.
    let queued = ev.iter().filter(|e| !matches!(e, Event::Progress { .. }));
    assert_eq!(queued.count(), 8, "{ev:?}");
    assert!(
        ev.iter().any(|e| matches!(e, Event::Granted { .. })),
        "{ev:?}"
    );
}
