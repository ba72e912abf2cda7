//! Driver tests over an in-memory link and relay, with time stepped by hand.
#![allow(clippy::unwrap_used)]

mod auth;
#[cfg(feature = "notices")]
mod notice;
mod relay;

use std::vec::Vec;

use pickup_proto::frame;
use pickup_proto::upload::FileMeta;
use pickup_proto::{download, upload, Code, Duration, Sha1Digest};

use crate::link::LinkLoss;
use crate::retransfer::{LinkEvent, RetransferPolicy};
use crate::{Downloader, Event, RunError, Uploader};
use pickup_tests::mem_files::MemFiles;
use relay::{MemConnector, Relay, TestClock};

/// 128-byte frames: the smallest configuration the crate docs describe.
pub(super) const RX: usize = 128;
pub(super) const TX: usize = frame::max_encoded_len(RX);

pub(super) fn bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub(super) fn quick_policy() -> RetransferPolicy {
    RetransferPolicy {
        enabled: true,
        max_attempts: Some(5),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        give_up_after: Some(Duration::from_secs(60)),
    }
}

pub(super) struct Batch {
    pub(super) names: Vec<&'static str>,
    pub(super) data: Vec<Vec<u8>>,
}

impl Batch {
    pub(super) fn new() -> Batch {
        Batch {
            names: vec!["a.bin", "empty", "notes.txt"],
            data: vec![bytes(5_000, 1), Vec::new(), bytes(300, 2)],
        }
    }
    pub(super) fn metas(&self) -> Vec<FileMeta<'static>> {
        self.names
            .iter()
            .zip(&self.data)
            .map(|(name, d)| FileMeta {
                name,
                size: d.len() as u64,
                sha1: Sha1Digest::of(d),
            })
            .collect()
    }
}

pub(super) fn setup(
    max_frame: usize,
) -> (
    std::rc::Rc<std::cell::RefCell<Relay>>,
    MemConnector,
    TestClock,
) {
    let relay = Relay::new(max_frame);
    let clock = TestClock::default();
    let connector = MemConnector {
        relay: relay.clone(),
        clock: clock.clone(),
    };
    (relay, connector, clock)
}

type UploadRun = (
    Result<Code, RunError<upload::Error, core::convert::Infallible>>,
    Vec<Event<upload::Event>>,
);
type DownloadRun = (
    Result<(), RunError<download::Error, core::convert::Infallible>>,
    Vec<Event<download::Event>>,
);

fn upload(
    connector: &mut MemConnector,
    clock: &TestClock,
    batch: &Batch,
    policy: RetransferPolicy,
) -> UploadRun {
    let metas = batch.metas();
    let mut up: Uploader<'_, 4, RX, TX> =
        Uploader::new(upload::Config::default(), &metas, policy).unwrap();
    let mut events = Vec::new();
    let mut source = batch.data.as_slice();
    let result = up.run(connector, clock, &mut source, |e| events.push(e));
    (result, events)
}

fn download(
    connector: &mut MemConnector,
    clock: &TestClock,
    code: Code,
    sink: &mut MemFiles,
    policy: RetransferPolicy,
) -> DownloadRun {
    let config = download::Config {
        window: 1024,
        ..download::Config::default()
    };
    let mut down: Downloader<4, RX, TX> = Downloader::new(config, code, policy);
    let mut events = Vec::new();
    let result = down.run(connector, clock, sink, |e| events.push(e));
    (result, events)
}

pub(super) fn reconnects<E>(events: &[Event<E>]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Link(LinkEvent::Reconnected { .. })))
        .count()
}

#[test]
fn upload_then_download_over_small_frames() {
    let (relay, mut connector, clock) = setup(128);
    let batch = Batch::new();
    let (result, events) = upload(&mut connector, &clock, &batch, quick_policy());
    let code = result.unwrap();
    assert!(events.contains(&Event::Session(upload::Event::Complete { code })));
    assert_eq!(reconnects(&events), 0);
    {
        let r = relay.borrow();
        let stored: Vec<&Vec<u8>> = r.batches[0].files.iter().map(|f| &f.data).collect();
        assert_eq!(stored, batch.data.iter().collect::<Vec<_>>());
        assert_eq!(r.batches[0].code, code);
    }

    let mut sink = MemFiles::default();
    let (result, events) = download(&mut connector, &clock, code, &mut sink, quick_policy());
    result.unwrap();
    assert!(events.contains(&Event::Session(download::Event::Complete)));
    assert_eq!(sink.names(), batch.names);
    assert_eq!(sink.files, batch.data);
    assert_eq!(sink.finished, [true, true, true]);
}

#[test]
fn upload_completes_over_a_link_cut_every_700_bytes() {
    let (relay, mut connector, clock) = setup(128);
    relay.borrow_mut().cut_every = Some(700);
    let batch = Batch::new();
    let (result, events) = upload(&mut connector, &clock, &batch, quick_policy());
    let code = result.unwrap();
    let r = relay.borrow();
    assert_eq!(r.batches.len(), 1, "reconnects resume the same batch");
    assert_eq!(r.batches[0].code, code);
    assert_eq!(r.batches[0].files[0].data, batch.data[0]);
    assert_eq!(r.batches[0].files[2].data, batch.data[2]);
    assert!(reconnects(&events) >= 5, "the link was cut many times");
    // Each loss is reported, then the attempt, then the new link.
    let i = events
        .iter()
        .position(|e| matches!(e, Event::Link(LinkEvent::Lost(_))))
        .unwrap();
    assert!(matches!(
        events[i + 1],
        Event::Link(LinkEvent::Reconnecting { attempt: 1, .. })
    ));
    assert_eq!(
        events[i + 2],
        Event::Link(LinkEvent::Reconnected { attempt: 1 })
    );
}

#[test]
fn download_completes_over_a_link_cut_every_600_bytes() {
    let (relay, mut connector, clock) = setup(128);
    let batch = Batch::new();
    let code = upload(&mut connector, &clock, &batch, quick_policy())
        .0
        .unwrap();
    relay.borrow_mut().cut_every = Some(600);
    let mut sink = MemFiles::default();
    let (result, events) = download(&mut connector, &clock, code, &mut sink, quick_policy());
    result.unwrap();
    assert_eq!(sink.files, batch.data);
    assert!(reconnects(&events) >= 5);
}

#[test]
fn without_retransfer_each_run_gives_up_and_the_next_resumes() {
    let (relay, mut connector, clock) = setup(128);
    relay.borrow_mut().cut_every = Some(1_500);
    let batch = Batch::new();
    let metas = batch.metas();
    let mut up: Uploader<'_, 4, RX, TX> = Uploader::new(
        upload::Config::default(),
        &metas,
        RetransferPolicy::DISABLED,
    )
    .unwrap();
    let mut source = batch.data.as_slice();
    let mut runs = 0;
    let mut stored = Vec::new();
    let code = loop {
        runs += 1;
        assert!(runs < 50, "every run must make progress");
        let mut events = Vec::new();
        match up.run(&mut connector, &clock, &mut source, |e| events.push(e)) {
            Ok(code) => break code,
            Err(RunError::GaveUp { attempts: 0, last }) => {
                assert!(matches!(last, LinkLoss::Eof | LinkLoss::Write(_)));
                assert_eq!(reconnects(&events), 0);
                assert!(matches!(
                    events.last(),
                    Some(Event::Link(LinkEvent::GaveUp { attempts: 0, .. }))
                ));
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        stored.push(relay.borrow().batches[0].files[0].data.len());
    };
    assert!(runs > 2);
    // Resumed, never restarted: what the relay holds only grows.
    assert!(stored.windows(2).all(|w| w[0] <= w[1]), "{stored:?}");
    let r = relay.borrow();
    assert_eq!(r.batches.len(), 1);
    assert_eq!(r.batches[0].code, code);
    assert_eq!(r.batches[0].files[0].data, batch.data[0]);
    // Only bytes lost to a cut are sent twice, not whole files.
    assert!(r.data_bytes_in < 5_300 + 300);
}

#[test]
fn resume_token_continues_after_a_restart() {
    let (relay, mut connector, clock) = setup(256);
    relay.borrow_mut().cut_every = Some(2_000);
    let batch = Batch::new();
    let (result, events) = upload(&mut connector, &clock, &batch, RetransferPolicy::DISABLED);
    assert!(
        matches!(result, Err(RunError::GaveUp { .. })),
        "{result:?} {events:?}"
    );
    let (code, token) = events
        .iter()
        .find_map(|e| match e {
            Event::Session(upload::Event::Granted { code, token, .. }) => Some((*code, *token)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{events:?}"));
    let partial = relay.borrow().batches[0].files[0].data.len();
    assert!(partial > 0);
    relay.borrow_mut().cut_every = None;

    // A new uploader (the terminal restarted) with the saved token.
    let metas = batch.metas();
    let mut up: Uploader<'_, 4, RX, TX> =
        Uploader::resume(upload::Config::default(), &metas, token, quick_policy()).unwrap();
    let mut source = batch.data.as_slice();
    let mut events = Vec::new();
    assert_eq!(
        up.run(&mut connector, &clock, &mut source, |e| events.push(e)),
        Ok(code)
    );
    assert!(events.contains(&Event::Session(upload::Event::Uploading {
        file: 0,
        offset: partial as u64
    })));
    assert_eq!(relay.borrow().batches.len(), 1);
    assert_eq!(relay.borrow().batches[0].files[0].data, batch.data[0]);
}

#[test]
fn held_content_is_linked_by_proof_without_sending_it() {
    let (relay, mut connector, clock) = setup(128);
    let batch = Batch::new();
    upload(&mut connector, &clock, &batch, quick_policy())
        .0
        .unwrap();
    let before = relay.borrow().data_bytes_in;
    let again = Batch {
        names: vec!["copy.bin"],
        data: vec![batch.data[0].clone()],
    };
    let (result, events) = upload(&mut connector, &clock, &again, quick_policy());
    let code = result.unwrap();
    assert!(events.contains(&Event::Session(upload::Event::Linked { file: 0 })));
    assert_eq!(relay.borrow().data_bytes_in, before, "no data was sent");
    let mut sink = MemFiles::default();
    download(&mut connector, &clock, code, &mut sink, quick_policy())
        .0
        .unwrap();
    assert_eq!(sink.files, again.data);
}

#[test]
fn failed_connects_back_off_and_give_up_per_policy() {
    let (relay, mut connector, clock) = setup(128);
    relay.borrow_mut().refuse_connects = u32::MAX;
    let policy = RetransferPolicy {
        enabled: true,
        max_attempts: Some(3),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(150),
        give_up_after: None,
    };
    let (result, events) = upload(&mut connector, &clock, &Batch::new(), policy);
    assert_eq!(
        result,
        Err(RunError::GaveUp {
            attempts: 3,
            last: LinkLoss::Connect
        })
    );
    let lost = Event::Link(LinkEvent::Lost(LinkLoss::Connect));
    let retry = |attempt, ms| {
        Event::Link(LinkEvent::Reconnecting {
            attempt,
            after: Duration::from_millis(ms),
        })
    };
    assert_eq!(
        events,
        [
            lost,
            retry(1, 100),
            lost,
            retry(2, 150),
            lost,
            retry(3, 150),
            lost,
            Event::Link(LinkEvent::GaveUp {
                attempts: 3,
                last: LinkLoss::Connect
            }),
        ]
    );
    // The backoffs were waited out on the clock (plus 1 ms per failed dial).
    assert_eq!(clock.0.get(), 100 + 150 + 150 + 4);
}

#[test]
fn a_connector_that_has_given_up_ends_the_run_at_its_first_failed_connect() {
    let (relay, mut connector, clock) = setup(128);
    relay.borrow_mut().refuse_connects = u32::MAX;
    relay.borrow_mut().connector_given_up = true;
    let (result, events) = upload(&mut connector, &clock, &Batch::new(), quick_policy());
    assert_eq!(
        result,
        Err(RunError::GaveUp {
            attempts: 0,
            last: LinkLoss::Connect
        })
    );
    let lost = Event::Link(LinkEvent::Lost(LinkLoss::Connect));
    assert_eq!(
        events.iter().filter(|e| **e == lost).count(),
        1,
        "{events:?}"
    );
    // One failed dial (1 ms on the test clock), no backoff waited.
    assert_eq!(clock.0.get(), 1);
}

#[test]
fn a_relay_that_only_says_welcome_runs_out_of_attempts() {
    let (relay, mut connector, clock) = setup(128);
    relay.borrow_mut().mute_after_welcome = true;
    let policy = RetransferPolicy {
        max_attempts: Some(3),
        give_up_after: None,
        ..quick_policy()
    };
    let (result, events) = upload(&mut connector, &clock, &Batch::new(), policy);
    // Every link connects and hears a welcome, but nothing moves forward, so
    // the attempts are not reset and the idle timeout ends each link.
    assert_eq!(
        result,
        Err(RunError::GaveUp {
            attempts: 3,
            last: LinkLoss::Silent
        })
    );
    assert_eq!(reconnects(&events), 3);
    assert_eq!(relay.borrow().connects, 4);
}

#[test]
fn download_resumes_from_local_bytes_and_refetches_a_bad_prefix() {
    let (_relay, mut connector, clock) = setup(128);
    let batch = Batch::new();
    let code = upload(&mut connector, &clock, &batch, quick_policy())
        .0
        .unwrap();

    // A good prefix of file 0 is kept.
    let mut sink = MemFiles::with_contents(vec![batch.data[0][..3_000].to_vec()]);
    let (result, events) = download(&mut connector, &clock, code, &mut sink, quick_policy());
    result.unwrap();
    assert_eq!(sink.files, batch.data);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Session(download::Event::Entry {
            file: 0,
            local: 3_000,
            ..
        })
    )));
    assert!(!events.contains(&Event::Session(download::Event::Refetch { file: 0 })));

    // A corrupt prefix is detected at the end and the file fetched again.
    let mut bad = batch.data[0][..3_000].to_vec();
    bad[10] ^= 0xff;
    let mut sink = MemFiles::with_contents(vec![bad]);
    let (result, events) = download(&mut connector, &clock, code, &mut sink, quick_policy());
    result.unwrap();
    assert_eq!(sink.files, batch.data);
    assert!(events.contains(&Event::Session(download::Event::Refetch { file: 0 })));
}

#[test]
fn unknown_code_is_a_session_error_not_a_link_error() {
    let (_relay, mut connector, clock) = setup(128);
    let code = Code::parse("ZZZZ-ZZZZ-ZZZZ").unwrap();
    let mut sink = MemFiles::default();
    let (result, _) = download(&mut connector, &clock, code, &mut sink, quick_policy());
    assert_eq!(
        result,
        Err(RunError::Session(download::Error::Relay(
            pickup_proto::ErrorCode::UnknownCode
        )))
    );
}

/// The RAM the drivers take at small frame sizes; the crate docs quote
/// these numbers (run with `--nocapture` to see them).
#[test]
fn ram_cost() {
    use core::mem::size_of;
    std::println!(
        "frame  Uploader<1 file>  Uploader<8 files>  Downloader<1 file>  Downloader<8 files>"
    );
    macro_rules! row {
        ($rx:expr) => {{
            const T: usize = frame::max_encoded_len($rx);
            let sizes = (
                size_of::<Uploader<'static, 1, $rx, T>>(),
                size_of::<Uploader<'static, 8, $rx, T>>(),
                size_of::<Downloader<1, $rx, T>>(),
                size_of::<Downloader<8, $rx, T>>(),
            );
            std::println!(
                "{:>5}  {:>16}  {:>17}  {:>18}  {:>19}",
                $rx,
                sizes.0,
                sizes.1,
                sizes.2,
                sizes.3
            );
            sizes
        }};
    }
    let small = row!(128);
    row!(256);
    row!(512);
    row!(1024);
    let big = row!(16384);
    std::println!(
        "session only: upload<1> {} upload<8> {} download<1> {} download<8> {}",
        size_of::<upload::Session<'static, 1>>(),
        size_of::<upload::Session<'static, 8>>(),
        size_of::<download::Session<1>>(),
        size_of::<download::Session<8>>(),
    );
    #[cfg(feature = "notices")]
    {
        use crate::{NoticeListener, NoticeSender};
        use pickup_proto::notice::{Listener, Sender};
        const T: usize = frame::max_encoded_len(128);
        std::println!(
            "notices, 128-byte frames: NoticeListener<4> {} NoticeListener<8> {} NoticeSender {}; \
             machines only: Listener<4> {} Listener<8> {} Sender {}",
            size_of::<NoticeListener<'static, 4, 128, T>>(),
            size_of::<NoticeListener<'static, 8, 128, T>>(),
            size_of::<NoticeSender<'static, 128, T>>(),
            size_of::<Listener<'static, 4>>(),
            size_of::<Listener<'static, 8>>(),
            size_of::<Sender<'static>>(),
        );
    }
    // Buffers dominate as frames grow; the 128-byte client stays small.
    assert!(small.0 < 2_048 && small.2 < 2_048, "{small:?}");
    assert!(big.0 > 2 * 16_384);
}
