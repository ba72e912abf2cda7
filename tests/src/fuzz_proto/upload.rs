//! [`drive_upload`]: an [`upload::Session`] against the fake relay.

use pickup_proto::frame;
use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::Message;
use pickup_proto::upload;
use pickup_proto::{Duration, Instant};

use super::check::{check_upload_event, UploadChecker};
use super::fake_relay::relay_message_for_upload;
use super::script::{
    Input, OP_ADVANCE, OP_CONNECT, OP_COUNT, OP_DISCONNECT, OP_EVENTS, OP_FIRE_TIMER, OP_FRAME,
    OP_RELAY, OP_TRANSMIT,
};
use super::{
    Summary, CHECK_FRAME, CONTENTS, MAX_DRAIN, MAX_TIMER_ROUNDS, NAMES, TOKEN, TX_BUF,
    UPLOAD_INSTANT, UPLOAD_RESUME, UPLOAD_SMALL_WINDOW,
};

/// Runs an [`upload::Session`] against a relay whose every word comes from
/// `data`, and checks what the session does.
///
/// Setup byte: `bits 0-1` → 1 to 3 files of [`CONTENTS`] (3 means 3), plus
/// [`UPLOAD_RESUME`], [`UPLOAD_INSTANT`], [`UPLOAD_SMALL_WINDOW`]. Then each
/// operation is one byte (see [`Script`](super::Script)) plus operands: connect,
/// disconnect, advance the clock, fire the next timer, handle a frame (kind
/// and body from the data, built directly so no CRC stands in the way),
/// handle a plausible relay message, transmit, poll events, settle timers.
///
/// Invariants: every frame sent is a valid terminal message within the
/// relay's frame limit; every data frame carries the file's true bytes;
/// acknowledged bytes never exceed the batch, and a success means all of
/// it; a finished session stays finished with the same outcome and no
/// timers; timers are never further out than the idle timeout; and once the
/// due timers ran and the output is sent, no timer is left in the past.
pub fn drive_upload(data: &[u8]) -> Summary {
    let mut input = Input { data };
    let mut summary = Summary::default();
    let Some(setup) = input.byte() else {
        return summary;
    };
    let nfiles = usize::from((setup & 3).min(2)) + 1;
    let metas = [0, 1, 2].map(|i| upload::FileMeta {
        name: NAMES[i],
        size: CONTENTS[i].len() as u64,
        sha1: Sha1Digest::of(CONTENTS[i]),
    });
    let config = upload::Config {
        max_frame: 1024,
        instant_upload: setup & UPLOAD_INSTANT != 0,
        max_window: if setup & UPLOAD_SMALL_WINDOW != 0 {
            256
        } else {
            1 << 20
        },
        ..upload::Config::default()
    };
    let made = if setup & UPLOAD_RESUME != 0 {
        upload::Session::<'static, 4>::resume(config, &metas[..nfiles], TOKEN)
    } else {
        upload::Session::<'static, 4>::new(config, &metas[..nfiles])
    };
    let mut session = made.expect("the fixed batch is valid");
    let total: u64 = CONTENTS[..nfiles].iter().map(|c| c.len() as u64).sum();
    assert_eq!(session.total_size(), total);
    let mut checker = UploadChecker {
        files: nfiles,
        max_frame: frame::MIN_FRAME_LEN,
        tokens: [None; 8],
        tokens_overflow: false,
        buf: [0; CHECK_FRAME],
    };
    let mut out = [0u8; TX_BUF];
    let mut now = Instant::from_millis(1_000);
    let mut finished: Option<Option<upload::Error>> = None;

    fn transmit(
        session: &mut upload::Session<'static, 4>,
        checker: &mut UploadChecker,
        now: Instant,
        out: &mut [u8],
        summary: &mut Summary,
    ) {
        for _ in 0..MAX_DRAIN {
            let mut source = CONTENTS;
            match session.poll_transmit(now, &mut source, out) {
                Ok(Some(n)) => {
                    summary.frames_sent += 1;
                    summary.data_bytes += checker.check(&out[..n]);
                }
                Ok(None) => return,
                Err(never) => match never {},
            }
        }
    }

    while let Some(op) = input.byte() {
        summary.ops += 1;
        match op % OP_COUNT {
            OP_CONNECT => session.handle_connected(now),
            OP_DISCONNECT => session.handle_disconnected(now),
            OP_ADVANCE => {
                let Some(ms) = input.u16() else { break };
                now = now + Duration::from_millis(u64::from(ms));
            }
            OP_FIRE_TIMER => {
                if let Some(t) = session.poll_timeout() {
                    now = now.max(t);
                    session.handle_timeout(now);
                }
            }
            OP_FRAME => {
                let Some(f) = input.frame() else { break };
                if let Ok(msg) = Message::decode(f) {
                    checker.heard(&msg);
                }
                session.handle_frame(now, f);
            }
            OP_RELAY => {
                let Some(msg) = relay_message_for_upload(&mut input, nfiles as u16) else {
                    break;
                };
                checker.heard(&msg);
                session.handle_message(now, msg);
            }
            OP_TRANSMIT => transmit(&mut session, &mut checker, now, &mut out, &mut summary),
            OP_EVENTS => {
                for _ in 0..MAX_DRAIN {
                    let Some(e) = session.poll_event() else { break };
                    check_upload_event(e, total);
                }
            }
            _ => {
                for round in 0..=MAX_TIMER_ROUNDS {
                    match session.poll_timeout() {
                        Some(t) if t <= now => {
                            assert!(round < MAX_TIMER_ROUNDS, "timer stuck at {t:?}: busy loop");
                            session.handle_timeout(now);
                            transmit(&mut session, &mut checker, now, &mut out, &mut summary);
                        }
                        _ => break,
                    }
                }
            }
        }
        let acked = session.acked();
        assert!(acked <= total, "acked {acked} of {total} bytes");
        if let Some(t) = session.poll_timeout() {
            assert!(
                t <= now + config.idle_timeout,
                "timer {t:?} beyond the idle timeout at {now:?}"
            );
        }
        match finished {
            Some(outcome) => {
                assert!(session.is_finished(), "a finished upload came back to life");
                assert_eq!(
                    session.error(),
                    outcome,
                    "a finished upload changed outcome"
                );
                assert_eq!(session.poll_timeout(), None, "a finished upload has timers");
            }
            None if session.is_finished() => {
                finished = Some(session.error());
                if session.error().is_none() {
                    assert_eq!(acked, total, "completed without every byte held");
                }
            }
            None => {}
        }
    }
    summary.completed = finished == Some(None);
    summary.failed = matches!(finished, Some(Some(_)));
    summary
}
