//! When the relay acknowledges: after a quiet delay, within the window the
//! terminal announced (but not below `MIN_ACK_WINDOW`), within a terminal
//! window smaller than the relay's, and every half second on a slow link.

use super::*;

#[test]
fn delayed_ack_makes_a_quiet_partial_window_durable() {
    let w = World::new(Settings::default());
    let mut s = open(&w, 1);
    let data = bytes(1000, 5);
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("f", 1000, Sha1Digest::of(&data))],
    ));
    send(
        &mut s,
        w.now(),
        Message::Data(Data {
            file: 0,
            offset: 0,
            bytes: &data[..100],
        }),
    );
    assert_eq!(drain(&mut s), []);
    let t = s.poll_timeout().unwrap();
    assert_eq!(t, w.now() + Settings::default().ack_delay);
    s.handle_timeout(t);
    assert_eq!(
        drain(&mut s),
        [Reply::Ack(Ack {
            file: 0,
            offset: 100,
            window: Link::TCP.window
        })]
    );
    w.store.crash();
    let mut buf = [0u8; 200];
    let batch = match w
        .store
        .find_by_code(&crate::codes::code_key(&g.code), T0 / 1000)
        .unwrap()
    {
        Lookup::Live(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(batch.received(), 100);
    let FileContent::Partial { id, .. } = batch.files[0].content else {
        panic!()
    };
    assert_eq!(w.store.read_partial(id, 0, &mut buf).unwrap(), 100);
}

/// A microcontroller keeps 8 KiB in flight on a serial link whose relay
/// offers 8 MiB: its `Hello` says so, and the relay's acks come within
/// those 8 KiB, as data arrives, never after a pause.
#[test]
fn a_terminal_that_announces_a_small_window_is_acknowledged_within_it() {
    {
        let mut w = World::new(Settings::default());
        let mut s = w.session(1, Link::SERIAL);
        let config = upload::Config {
            max_frame: 1024,
            max_window: 8 * 1024,
            ..upload::Config::default()
        };
        let data = vec![bytes(200 * 1024, 3)];
        let start = w.now;
        let (grant, events, c) =
            upload_with(&mut w, &mut s, config, &["log"], &data, None, |_| false);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, upload::Event::Complete { .. })),
            "no timer"
        );
        assert_eq!(c.acked(), data[0].len() as u64);
        assert_eq!(w.now, start, "the upload waited for a timer");
        let mut d = w.session(2, Link::TCP);
        assert_eq!(
            download(&mut w, &mut d, grant.unwrap().code).unwrap().files,
            data
        );
    }
}

/// A window announced below `MIN_ACK_WINDOW` does not buy an ack (and its
/// fsync) per frame: acks come at half of the floor.
#[test]
fn a_tiny_announced_window_does_not_make_every_frame_an_fsync() {
    let w = World::new(Settings::default());
    let mut s = w.session(1, Link::SERIAL);
    send(
        &mut s,
        w.now(),
        Message::Hello(Hello {
            version: 1,
            role: Role::Terminal,
            max_frame: 1024,
            window: 16,
            caps: 0,
        }),
    );
    assert_eq!(drain(&mut s), [Reply::Welcome]);
    let data = bytes(4096, 8);
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("f", 4096, Sha1Digest::of(&data))],
    ));
    // A sync is due every quarter window: the floor's quarter, not 16 / 4.
    let step = (MIN_ACK_WINDOW / 4) as usize;
    for at in (0..step - 16).step_by(16) {
        send(&mut s, w.now(), data_msg(at, &data[at..at + 16]));
    }
    assert_eq!(drain(&mut s), [], "acked before a quarter of the floor");
    assert_eq!(durable(&w, &g.code), 0);
    send(&mut s, w.now(), data_msg(step - 16, &data[step - 16..step]));
    assert!(
        matches!(drain(&mut s)[..], [Reply::Ack(Ack { offset, .. })] if offset == step as u64),
        "no ack at a quarter of the floor"
    );
    assert_eq!(durable(&w, &g.code), step as u64);
}

#[test]
fn a_terminal_that_accepts_less_than_the_relays_window_is_acknowledged_in_time() {
    // The relay offers four times what the terminal accepts (its
    // `max_window` cap). Acks must come within the terminal's window, not
    // at the relay's half window (which the terminal would never reach):
    // no timer has to fire.
    let mut w = World::new(Settings::default());
    let link = Link {
        max_frame: 65_536,
        window: TERMINAL_WINDOW * 4,
        encrypted: false,
        reliable: false,
    };
    let mut s = w.session(1, link);
    send(&mut s, w.now(), hello(0));
    assert_eq!(drain(&mut s), [Reply::Welcome]);
    // More than two terminal windows, so the terminal must wait for acks.
    let data = vec![bytes(TERMINAL_WINDOW as usize * 5 / 2, 12)];
    let start = w.now;
    let (grant, events, _) = upload(&mut w, &mut s, &["big"], &data, None, |_| false);
    assert!(events
        .iter()
        .any(|e| matches!(e, upload::Event::Complete { .. })));
    assert_eq!(w.now, start, "the upload waited for a timer");
    let mut d = w.session(2, Link::TCP);
    assert_eq!(
        download(&mut w, &mut d, grant.unwrap().code).unwrap().files,
        data
    );
}

#[test]
fn a_slow_link_is_acknowledged_every_half_second_whatever_the_window() {
    // 3,000-byte frames 260 ms apart (a 115200-baud line) would take
    // minutes to fill a step of the serial window; the terminal resends
    // everything unacknowledged after a few seconds without an ack.
    let mut w = World::new(Settings::default());
    let mut s = w.session(1, Link::SERIAL);
    send(&mut s, w.now(), hello(0));
    assert_eq!(drain(&mut s), [Reply::Welcome]);
    let data = bytes(100_000, 6);
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("slow", 100_000, Sha1Digest::of(&data))],
    ));
    let mut acks = Vec::new();
    for (i, chunk) in data[..60_000].chunks(3_000).enumerate() {
        send(&mut s, w.now(), data_msg(i * 3_000, chunk));
        for r in drain(&mut s) {
            if let Reply::Ack(a) = r {
                assert_eq!(a.window, Link::SERIAL.window);
                assert!(durable(&w, &g.code) >= a.offset);
                acks.push((w.now - T0, a.offset));
            }
        }
        w.now += 260;
    }
    // A sync starts with the first frame 500 ms or more after the oldest
    // bytes no sync covers; the frame after it starts the next count.
    assert_eq!(
        acks,
        [
            (520, 9_000),
            (1_300, 18_000),
            (2_080, 27_000),
            (2_860, 36_000),
            (3_640, 45_000),
            (4_420, 54_000)
        ]
    );
}

/// The first ack of a file sent in 32 KiB frames by a terminal whose
/// `Hello` said `window` (0: nothing), over TCP.
fn first_ack_offset(window: u32) -> u64 {
    const FRAME: usize = 32 * 1024;
    let w = World::new(Settings::default());
    let mut s = w.session(1, Link::TCP);
    let hello = Hello {
        version: 1,
        role: Role::Terminal,
        max_frame: 65_536,
        window,
        caps: 0,
    };
    send(&mut s, w.now(), Message::Hello(hello));
    assert_eq!(drain(&mut s), [Reply::Welcome]);
    let len = 16 << 20;
    let data = bytes(len, 9);
    let g = grant_of(&announce(
        &mut s,
        w.now(),
        &[("big", len as u64, Sha1Digest::of(&data))],
    ));
    for (i, chunk) in data.chunks(FRAME).enumerate() {
        send(&mut s, w.now(), data_msg(i * FRAME, chunk));
        if let Some(Reply::Ack(a)) = drain(&mut s).into_iter().next() {
            assert!(durable(&w, &g.code) >= a.offset);
            return a.offset;
        }
    }
    panic!("no ack within the file");
}

/// Each ack costs an fsync and a commit: a terminal that states a wide
/// window is acknowledged every quarter of it (8 MiB for the CLI's 32
/// MiB), one that states nothing every 2 MiB (it may accept less than the
/// relay's window without saying so).
#[test]
fn the_ack_step_is_a_quarter_of_a_stated_window_and_capped_for_an_unstated_one() {
    assert_eq!(first_ack_offset(32 << 20), 8 << 20);
    assert_eq!(first_ack_offset(0), 2 << 20);
    assert_eq!(first_ack_offset(4 << 20), 1 << 20);
}
