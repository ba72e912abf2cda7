//! The download machine's timers stepped by hand: retries after silence,
//! the idle timeout, the relay's back-off hints, and polling a batch that
//! is not ready. A due timer always moves on once it ran (the session is
//! never left with a deadline in the past: a driver would spin).

use super::tests::{code, config, connected, drain, events, send, Batch, MemSink, Out, T0};
use super::*;
use crate::error::ErrorCode;
use crate::message::{self, Kind, Manifest, ManifestEntry, Message, Role, Welcome};
use crate::time::Duration;

#[test]
fn silence_restarts_the_read_and_then_loses_the_link() {
    let batch = Batch::new(&[("f", &[1u8; 500])]);
    let mut sink = MemSink::default();
    let mut s = connected(&batch, 1000, &mut sink);
    let _ = drain(&mut s, T0, &mut sink);
    send(&mut s, T0, &mut sink, &batch.data(0, 0, 100, 100));
    // Nothing more arrives: the read is repeated from the first missing byte.
    let t1 = s.poll_timeout().unwrap();
    s.handle_timeout(t1);
    assert_eq!(drain(&mut s, t1, &mut sink), [Out::Read(0, 100, 1000)]);
    let mut now = t1;
    for _ in 0..100 {
        let Some(t) = s.poll_timeout() else { break };
        assert!(t >= now);
        now = t;
        s.handle_timeout(now);
        let _ = drain(&mut s, now, &mut sink);
    }
    assert!(events(&mut s).contains(&Event::LinkLost));
    assert_eq!(now, T0 + Config::default().idle_timeout);
}

#[test]
fn relay_errors_fail_or_back_off() {
    for (code, fatal) in [
        (ErrorCode::UnknownCode, true),
        (ErrorCode::Expired, true),
        (ErrorCode::RateLimited, false),
        (ErrorCode::Busy, false),
    ] {
        let mut sink = MemSink::default();
        let mut s = welcomed(config(1000), &mut sink);
        s.handle_message(
            T0,
            Message::Error(message::Error {
                code,
                kind: Kind::Fetch as u8,
                retry_after_ms: 10_000,
            }),
            &mut sink,
        )
        .unwrap();
        assert_eq!(s.is_finished(), fatal, "{code:?}");
        if fatal {
            assert_eq!(s.error(), Some(Error::Relay(code)));
        } else {
            // No retry before the relay's retry_after.
            let t = s.poll_timeout().unwrap();
            s.handle_timeout(T0 + Duration::from_millis(9_000));
            assert!(
                !drain(&mut s, T0 + Duration::from_millis(9_000), &mut sink).contains(&Out::Fetch)
            );
            assert!(t <= T0 + Duration::from_millis(10_000));
            s.handle_timeout(T0 + Duration::from_millis(10_000));
            assert!(
                drain(&mut s, T0 + Duration::from_millis(10_000), &mut sink).contains(&Out::Fetch)
            );
        }
    }
}

#[test]
fn not_ready_fails_or_polls_as_configured() {
    let batch = Batch::new(&[("f", b"x")]);
    let mut sink = MemSink::default();
    let mut s = Session::<4>::new(config(1000), code());
    s.handle_connected(T0);
    let welcome = Message::Welcome(Welcome {
        version: 1,
        role: Role::Relay,
        max_frame: 4096,
        window: 0,
        caps: 0,
    });
    s.handle_message(T0, welcome, &mut sink).unwrap();
    batch.manifest(&mut s, T0, &mut sink, false);
    assert_eq!(s.error(), Some(Error::Relay(ErrorCode::NotReady)));

    let mut sink = MemSink::default();
    let wait = Duration::from_secs(30);
    let mut s = Session::<4>::new(
        Config {
            wait_until_ready: Some(wait),
            ..config(1000)
        },
        code(),
    );
    s.handle_connected(T0);
    s.handle_message(T0, welcome, &mut sink).unwrap();
    let _ = drain(&mut s, T0, &mut sink);
    batch.manifest(&mut s, T0, &mut sink, false);
    assert!(!s.is_finished());
    assert!(events(&mut s)
        .iter()
        .any(|e| matches!(e, Event::NotReady { .. })));
    // Polling is silent on the relay side for longer than the idle timeout;
    // that is not a lost link.
    s.handle_timeout(T0 + wait);
    assert!(drain(&mut s, T0 + wait, &mut sink).contains(&Out::Fetch));
    batch.manifest(&mut s, T0 + wait, &mut sink, true);
    assert_eq!(drain(&mut s, T0 + wait, &mut sink), [Out::Read(0, 0, 1000)]);
}

/// Runs every due timer from `now` until the session is finished or
/// `until` passes, asserting each deadline moves forward; returns the
/// time reached. `relay` answers what the session sent at each step.
fn run_timers(
    s: &mut Session<4>,
    mut now: Instant,
    until: Instant,
    sink: &mut MemSink,
    mut relay: impl FnMut(&mut Session<4>, Instant, &mut MemSink, &[Out]),
) -> Instant {
    for _ in 0..1000 {
        let Some(t) = s.poll_timeout() else { break };
        if t > until {
            break;
        }
        assert!(t >= now, "deadline {t:?} in the past at {now:?}");
        now = t;
        s.handle_timeout(now);
        let out = drain(s, now, sink);
        relay(s, now, sink, &out);
        assert!(
            s.poll_timeout().is_none_or(|t| t > now),
            "a timer that ran is still due at {now:?}"
        );
    }
    now
}

fn welcomed(config: Config, sink: &mut MemSink) -> Session<'static, 4> {
    let mut s = Session::<4>::new(config, code());
    s.handle_connected(T0);
    let _ = drain(&mut s, T0, sink);
    s.handle_message(
        T0,
        Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 4096,
            window: 0,
            caps: 0,
        }),
        sink,
    )
    .unwrap();
    let _ = drain(&mut s, T0, sink);
    s
}

/// A relay that goes silent after the first of three entries of a batch
/// that is not ready: the manifest is still arriving, not being polled,
/// so the idle timeout ends the link (download_session fuzzer, CI run of
/// a8ae99d: its deadline was left in the past and a driver spun).
#[test]
fn a_manifest_cut_short_is_not_mistaken_for_polling() {
    for wait in [None, Some(Duration::from_secs(60))] {
        let mut sink = MemSink::default();
        let mut s = welcomed(
            Config {
                wait_until_ready: wait,
                ..config(1000)
            },
            &mut sink,
        );
        let manifest = Message::Manifest(Manifest {
            code: code(),
            expires_at: 2_000_000_000,
            files: 3,
            total_size: 3,
            received: 1,
            ready: false,
        });
        s.handle_message(T0, manifest, &mut sink).unwrap();
        let entry = Message::ManifestEntry(ManifestEntry {
            index: 0,
            size: 1,
            sha1: Sha1Digest::of(b"x"),
            received: 1,
            name: "a",
        });
        s.handle_message(T0, entry, &mut sink).unwrap();
        let until = T0 + Duration::from_secs(120);
        let end = run_timers(&mut s, T0, until, &mut sink, |_, _, _, _| {});
        assert!(
            events(&mut s).contains(&Event::LinkLost),
            "wait {wait:?}: no LinkLost by {end:?}"
        );
        assert_eq!(end, T0 + Config::default().idle_timeout, "wait {wait:?}");
    }
}

/// Polling a batch that is not ready with a wait longer than the idle
/// timeout: the relay is silent between polls, the session keeps the link
/// with keepalives and fetches again each `wait`, and no deadline is left
/// in the past meanwhile.
#[test]
fn polling_longer_than_the_idle_timeout_keeps_every_deadline_ahead() {
    let batch = Batch::new(&[("f", b"x")]);
    let wait = Duration::from_secs(60);
    let mut sink = MemSink::default();
    let mut s = welcomed(
        Config {
            wait_until_ready: Some(wait),
            ..config(1000)
        },
        &mut sink,
    );
    batch.manifest(&mut s, T0, &mut sink, false);
    let mut fetches = 0;
    let until = T0 + Duration::from_secs(200);
    let end = run_timers(&mut s, T0, until, &mut sink, |s, now, sink, out| {
        if out.contains(&Out::Fetch) {
            fetches += 1;
            batch.manifest(s, now, sink, false);
        }
    });
    assert!(
        !s.is_finished(),
        "polling ended at {end:?}: {:?}",
        s.error()
    );
    assert!(!events(&mut s).contains(&Event::LinkLost));
    assert_eq!(fetches, 3, "one fetch each 60 s in 200 s");
}
