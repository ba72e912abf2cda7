//! [`drive_download`]: a [`download::Session`] against the fake relay,
//! writing into a [`FuzzSink`](super::check::FuzzSink).

use pickup_proto::download;
use pickup_proto::{Duration, Instant};

use super::check::{
    check_download_event, check_download_frame, FuzzSink, SinkFile, SinkFull, SINK_CAP,
};
use super::fake_relay::relay_message_for_download;
use super::script::{
    Input, OP_ADVANCE, OP_CONNECT, OP_COUNT, OP_DISCONNECT, OP_EVENTS, OP_FIRE_TIMER, OP_FRAME,
    OP_RELAY, OP_TRANSMIT,
};
use super::{
    code, Summary, CHECK_FRAME, CONTENTS, DOWNLOAD_MANIFEST_ONLY, DOWNLOAD_SINK_HASHES,
    DOWNLOAD_WAIT, MAX_DRAIN, MAX_TIMER_ROUNDS, TX_BUF,
};

/// Runs a [`download::Session`] against a relay whose every word comes from
/// `data`, writing into an in-memory sink that checks how it is used.
///
/// Setup bytes: first `bits 0-1` → window 64, 300, 4096 or 1 MiB, plus
/// [`DOWNLOAD_MANIFEST_ONLY`], [`DOWNLOAD_WAIT`], [`DOWNLOAD_SINK_HASHES`],
/// and `bits 4-5 == 3` makes
/// the sink refuse to open files; second: two bits per file of
/// [`CONTENTS`] for what is already on disk (nothing, half, half with a
/// corrupt first byte, all), to exercise resume and refetch. Operations as
/// in [`drive_upload`](super::drive_upload).
///
/// Invariants: only a complete file whose bytes match the manifest's SHA-1
/// is ever finished (the sink checks at `finish`); nothing is written past
/// a file's size or after it was finished; a verified or complete event
/// means finished files; progress never exceeds the batch; frames sent are
/// valid terminal messages; a finished session stays finished; timers are
/// never further out than the idle timeout and none is left in the past
/// once the due timers ran.
pub fn drive_download(data: &[u8]) -> Summary {
    let mut input = Input { data };
    let mut summary = Summary::default();
    let (Some(setup), Some(prefill)) = (input.byte(), input.byte()) else {
        return summary;
    };
    let window = [64u32, 300, 4096, 1 << 20][usize::from(setup & 3)];
    let config = download::Config {
        max_frame: 1024,
        window,
        manifest_only: setup & DOWNLOAD_MANIFEST_ONLY != 0,
        wait_until_ready: (setup & DOWNLOAD_WAIT != 0).then_some(Duration::from_millis(3_000)),
        hashing: if setup & DOWNLOAD_SINK_HASHES != 0 {
            download::Hashing::BySink
        } else {
            download::Hashing::InSession
        },
        ..download::Config::default()
    };
    let mut session = download::Session::<4>::new(config, code());
    let empty = SinkFile {
        bytes: [0; SINK_CAP],
        len: 0,
        entry: None,
        finished: false,
    };
    let mut sink = FuzzSink {
        files: [empty; 4],
        refuse_open: setup & 0x30 == 0x30,
        written: 0,
    };
    for (i, f) in sink.files.iter_mut().enumerate().take(CONTENTS.len()) {
        let content = CONTENTS[i];
        let mode = (prefill >> (2 * i)) & 3;
        let n = match mode {
            0 => 0,
            3 => content.len(),
            _ => content.len() / 2,
        };
        f.bytes[..n].copy_from_slice(&content[..n]);
        if mode == 2 && n > 0 {
            f.bytes[0] ^= 0xff;
        }
        f.len = n;
    }
    let mut out = [0u8; TX_BUF];
    let mut check_buf = [0u8; CHECK_FRAME];
    let mut now = Instant::from_millis(1_000);
    let mut finished: Option<Option<download::Error>> = None;

    fn transmit(
        session: &mut download::Session<4>,
        sink: &mut FuzzSink,
        now: Instant,
        out: &mut [u8],
        check_buf: &mut [u8; CHECK_FRAME],
        summary: &mut Summary,
        window: u32,
    ) {
        for _ in 0..MAX_DRAIN {
            match session.poll_transmit(now, sink, out) {
                Ok(Some(n)) => {
                    summary.frames_sent += 1;
                    check_download_frame(&out[..n], window, check_buf);
                }
                Ok(None) | Err(SinkFull) => return,
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
                // Storage errors are the sink's; the session retries on its timers.
                let _ = session.handle_frame(now, f, &mut sink);
            }
            OP_RELAY => {
                let Some(msg) = relay_message_for_download(&mut input) else {
                    break;
                };
                let _ = session.handle_message(now, msg, &mut sink);
            }
            OP_TRANSMIT => transmit(
                &mut session,
                &mut sink,
                now,
                &mut out,
                &mut check_buf,
                &mut summary,
                window,
            ),
            OP_EVENTS => {
                for _ in 0..MAX_DRAIN {
                    let Some(e) = session.poll_event() else { break };
                    check_download_event(e, &sink, config.manifest_only);
                }
            }
            _ => {
                for round in 0..=MAX_TIMER_ROUNDS {
                    match session.poll_timeout() {
                        Some(t) if t <= now => {
                            assert!(round < MAX_TIMER_ROUNDS, "timer stuck at {t:?}: busy loop");
                            session.handle_timeout(now);
                            transmit(
                                &mut session,
                                &mut sink,
                                now,
                                &mut out,
                                &mut check_buf,
                                &mut summary,
                                window,
                            );
                        }
                        _ => break,
                    }
                }
            }
        }
        let (done, total) = (session.done_bytes(), session.total_size());
        assert!(done <= total, "done {done} of {total} bytes");
        if let Some(t) = session.poll_timeout() {
            assert!(
                t <= now + config.idle_timeout,
                "timer {t:?} beyond the idle timeout at {now:?}"
            );
        }
        match finished {
            Some(outcome) => {
                assert!(
                    session.is_finished(),
                    "a finished download came back to life"
                );
                assert_eq!(
                    session.error(),
                    outcome,
                    "a finished download changed outcome"
                );
                assert_eq!(
                    session.poll_timeout(),
                    None,
                    "a finished download has timers"
                );
            }
            None if session.is_finished() => finished = Some(session.error()),
            None => {}
        }
    }
    summary.data_bytes = sink.written;
    summary.completed = finished == Some(None);
    summary.failed = matches!(finished, Some(Some(_)));
    summary
}
