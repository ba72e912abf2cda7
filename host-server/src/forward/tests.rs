//! The forward's source and its refusals before any link, over the memory
//! store; the round trip between two relay processes is in
//! `tests/tests/relay_forward.rs`.

use pickup_device::retransfer::RetransferPolicy;
use pickup_proto::identity::DeviceKey;
use pickup_proto::storage::{sha1_of, ReadAt};
use pickup_proto::{Code, Sha1Digest};

use super::*;
use crate::config::peers::{PeerAddr, PeerRelay, PeerTrust as ConfigTrust};
use crate::store::memory::MemoryStore;
use crate::store::{Batch, FileContent, FileRef, NewBatch, NewFile, OwnerId};

const FILES: [&[u8]; 3] = [b"first file", b"", b"the third file, a little longer"];

pub(super) fn code(n: u8) -> Code {
    Code::from_parts(13, u128::from(n)).unwrap()
}

/// Batch `n` of [`FILES`], expiring in an hour; `complete` uploads them.
pub(super) fn batch(store: &MemoryStore, n: u8, complete: bool) -> Batch {
    let files: Vec<NewFile<'_>> = FILES
        .iter()
        .enumerate()
        .map(|(i, data)| NewFile {
            name: ["a.txt", "b.txt", "c.txt"][i],
            size: data.len() as u64,
            sha1: Sha1Digest::of(data),
            attrs: None,
        })
        .collect();
    let now = source::unix_now();
    let b = store
        .create_batch(&NewBatch {
            code: code(n),
            code_key: code_key(&code(n)),
            token_key: crate::store::LookupKey([100 + n; 32]),
            owner: OwnerId([n; 32]),
            created_at: now,
            expires_at: now + 3600,
            stale_at: now + 3600,
            files: &files,
            open: false,
        })
        .unwrap();
    if complete {
        for (i, data) in FILES.iter().enumerate() {
            if let FileContent::Partial { id, .. } = b.files[i].content {
                store.write_partial(id, 0, data).unwrap();
                let file = FileRef {
                    batch: b.id,
                    index: i as u16,
                };
                let content = crate::store::Content {
                    size: data.len() as u64,
                    sha1: Sha1Digest::of(data),
                    threshold: 2,
                };
                store.complete_file(file, id, &content).unwrap();
            }
        }
    }
    match store.find_by_code(&code_key(&code(n)), now).unwrap() {
        Lookup::Live(b) => b,
        other => panic!("batch {n}: {other:?}"),
    }
}

pub(super) fn peer() -> PeerRelay {
    PeerRelay {
        name: "pair-ab".into(),
        // Nothing listens there: the refusals below come before a dial.
        addr: PeerAddr::Tcp("127.0.0.1:1".into()),
        key: DeviceKey([7; 16]),
    }
}

#[test]
fn forward_source_reads_every_file_from_its_blob() {
    let store = MemoryStore::new();
    let b = batch(&store, 1, true);
    let mut source = BatchSource::new(&store, code_key(&code(1)), &b).unwrap();
    let mut buf = [0u8; 7];
    for (i, data) in FILES.iter().enumerate() {
        let got = sha1_of(&mut source, i as u16, data.len() as u64, &mut buf).unwrap();
        assert_eq!(got, Sha1Digest::of(data), "file {i}");
    }
    // A read past the end, and of a file the batch does not have, is empty.
    assert_eq!(source.read_at(0, 1000, &mut buf).unwrap(), 0);
    assert_eq!(source.read_at(9, 0, &mut buf).unwrap(), 0);
    // An incomplete batch has no source.
    let partial = batch(&store, 2, false);
    assert!(BatchSource::new(&store, code_key(&code(2)), &partial).is_none());
}

#[test]
fn forward_source_stops_when_the_batch_is_ended() {
    let store = MemoryStore::new();
    let b = batch(&store, 1, true);
    let mut live = Liveness::new(&store, code_key(&code(1)), &b);
    assert!(live.check(true).is_ok());
    let mut source = BatchSource::new(&store, code_key(&code(1)), &b).unwrap();
    let mut buf = [0u8; 4];
    store.end_batch(b.id, source::unix_now()).unwrap();
    // Asked before a connect, the store says the batch is over.
    assert!(matches!(live.check(true), Err(SourceError::Expired)));
    // A read asks it at most every RECHECK, so a read once that passed
    // (the expiry the source knew is an hour away) stops too.
    std::thread::sleep(RECHECK);
    assert!(matches!(
        source.read_at(0, 0, &mut buf),
        Err(SourceError::Expired)
    ));
}

#[test]
fn forward_refuses_unknown_incomplete_and_expired_batches_before_dialling() {
    let store = MemoryStore::new();
    batch(&store, 2, false);
    let ended = batch(&store, 3, true);
    store.end_batch(ended.id, source::unix_now()).unwrap();
    let peer = peer();
    let job = |n: u8| Forward {
        store: &store,
        code: code(n),
        peer: &peer,
        resume: None,
        policy: RetransferPolicy::DISABLED,
        stop: None,
    };
    let mut heard = Vec::new();
    let mut run = |n| super::run(&job(n), |p| heard.push(*p));
    assert!(matches!(run(1), Err(ForwardError::UnknownBatch)));
    assert!(matches!(run(2), Err(ForwardError::NotReady)));
    assert!(matches!(run(3), Err(ForwardError::UnknownBatch)));
    assert!(heard.is_empty(), "{heard:?}");
}

#[test]
fn forward_to_an_unreachable_peer_is_a_dial_error_naming_it() {
    let store = MemoryStore::new();
    batch(&store, 1, true);
    let peer = peer();
    let job = Forward {
        store: &store,
        code: code(1),
        peer: &peer,
        resume: None,
        policy: RetransferPolicy::DISABLED,
        stop: None,
    };
    let mut heard = Vec::new();
    let e = run(&job, |p| heard.push(*p)).unwrap_err();
    assert!(
        matches!(&e, ForwardError::Dial { peer, .. } if peer == "pair-ab"),
        "{e:?}"
    );
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    assert_eq!(
        heard,
        [Progress {
            state: ForwardState::Connecting,
            sent: 0,
            total: FILES.iter().map(|f| f.len() as u64).sum(),
            token: None,
        }]
    );
}

#[test]
fn forward_reads_peer_addresses_as_the_cli_does() {
    let mut p = peer();
    assert_eq!(dialler(&p).unwrap().canonical(), "tcp://127.0.0.1:1");
    p.addr = PeerAddr::Tls {
        hostport: "relay-b.example:7426".into(),
        trust: ConfigTrust::Pin([1; 32]),
    };
    assert_eq!(
        dialler(&p).unwrap().canonical(),
        "tls://relay-b.example:7426"
    );
    // Frames as large as the CLI's, length-prefixed on a stream.
    let config = dialler(&p).unwrap().upload_config();
    assert_eq!(config.max_frame, RX as u32);
    assert!(config.length_prefix && config.instant_upload);
}

#[test]
fn forward_states_follow_the_uploads_events() {
    use pickup_device::retransfer::LinkEvent;
    use pickup_device::{Event, LinkLoss};
    use pickup_proto::message::ResumeToken;
    use pickup_proto::upload;

    let token = ResumeToken([3; 16]);
    let start = Progress {
        state: ForwardState::Connecting,
        sent: 0,
        total: 100,
        token: None,
    };
    let session = |e| Event::Session(e);
    let granted = session(upload::Event::Granted {
        code: code(1),
        expires_at: 9,
        token,
    });
    let acked = |acked| session(upload::Event::Progress { acked, total: 100 });
    let lost = Event::Link(LinkEvent::Lost(LinkLoss::Eof));
    let steps = [
        // Authenticated before any grant: still connecting.
        (
            session(upload::Event::Authenticated),
            ForwardState::Connecting,
            0,
        ),
        (granted, ForwardState::Transferring, 0),
        (acked(40), ForwardState::Transferring, 40),
        (lost, ForwardState::Connecting, 40),
        // A new link to the granted batch resumes it.
        (
            session(upload::Event::Authenticated),
            ForwardState::Transferring,
            40,
        ),
        (acked(100), ForwardState::Verifying, 100),
        (
            session(upload::Event::Verified { file: 0 }),
            ForwardState::Verifying,
            100,
        ),
        (
            session(upload::Event::Complete { code: code(1) }),
            ForwardState::Done,
            100,
        ),
    ];
    let mut state = start;
    for (i, (event, want, sent)) in steps.into_iter().enumerate() {
        state = advance(state, event);
        assert_eq!((state.state, state.sent), (want, sent), "step {i}");
    }
    assert_eq!(state.token, Some(token));
}
