//! The drivers with a credential (feature `auth`): every link authenticates
//! before its batch or its reads, and a refusal ends `run` as a session
//! error.

use std::vec::Vec;

use pickup_proto::identity::{AuthError, Credential, DeviceKey, TerminalIdentity};
use pickup_proto::{download, upload, Code};

use super::{quick_policy, reconnects, setup, Batch, RX, TX};
use crate::{Downloader, Event, RunError, Uploader};
use pickup_tests::mem_files::MemFiles;

const KEY: DeviceKey = DeviceKey([0x5a; 16]);

fn terminal(key: DeviceKey) -> Credential<'static> {
    Credential::Terminal(TerminalIdentity {
        name: "sensor-1",
        key,
    })
}

#[test]
fn a_terminal_authenticates_on_every_link_of_an_upload_and_a_download() {
    let (relay, mut connector, clock) = setup(128);
    relay.borrow_mut().terminal_key = Some(KEY);
    relay.borrow_mut().cut_every = Some(900);
    let batch = Batch::new();
    let metas = batch.metas();
    let mut up: Uploader<'_, 4, RX, TX> =
        Uploader::new(upload::Config::default(), &metas, quick_policy()).unwrap();
    up.authenticate(terminal(KEY));
    let mut events = Vec::new();
    let mut source = batch.data.as_slice();
    let code = up
        .run(&mut connector, &clock, &mut source, |e| events.push(e))
        .unwrap();
    let authenticated = events
        .iter()
        .filter(|e| **e == Event::Session(upload::Event::Authenticated))
        .count();
    assert!(reconnects(&events) >= 3, "the link was cut");
    assert_eq!(authenticated as u32, relay.borrow().authentications);
    assert!(authenticated > reconnects(&events) / 2);
    assert_eq!(relay.borrow().batches[0].files[0].data, batch.data[0]);

    let mut down: Downloader<'_, 4, RX, TX> =
        Downloader::new(download::Config::default(), code, quick_policy());
    down.authenticate(terminal(KEY));
    let mut sink = MemFiles::default();
    down.run(&mut connector, &clock, &mut sink, |_| {}).unwrap();
    assert_eq!(sink.files, batch.data);
}

#[test]
fn a_wrong_key_ends_the_run_with_auth_refused() {
    let (relay, mut connector, clock) = setup(128);
    relay.borrow_mut().terminal_key = Some(KEY);
    let batch = Batch::new();
    let metas = batch.metas();
    let mut up: Uploader<'_, 4, RX, TX> =
        Uploader::new(upload::Config::default(), &metas, quick_policy()).unwrap();
    up.authenticate(terminal(DeviceKey([0; 16])));
    let mut source = batch.data.as_slice();
    assert_eq!(
        up.run(&mut connector, &clock, &mut source, |_| {}),
        Err(RunError::Session(upload::Error::Auth(AuthError::Refused)))
    );
    assert!(relay.borrow().batches.is_empty());
}

#[test]
fn a_named_download_fetches_its_handle_again_on_every_link() {
    let (relay, mut connector, clock) = setup(128);
    relay.borrow_mut().terminal_key = Some(KEY);
    let data = super::bytes(6_000, 7);
    let batch = Batch {
        names: vec!["fw.bin"],
        data: vec![data.clone()],
    };
    let metas = batch.metas();
    let mut up: Uploader<'_, 4, RX, TX> =
        Uploader::new(upload::Config::default(), &metas, quick_policy()).unwrap();
    up.authenticate(terminal(KEY));
    up.set_named(true);
    let mut source = batch.data.as_slice();
    up.run(&mut connector, &clock, &mut source, |_| {}).unwrap();
    relay.borrow_mut().named.push(("fw.bin".into(), 0));

    relay.borrow_mut().cut_every = Some(1_500);
    let config = download::Config {
        window: 1024,
        ..download::Config::default()
    };
    let mut down: Downloader<'_, 4, RX, TX> =
        Downloader::named(config, "owner", "fw.bin", quick_policy());
    down.authenticate(terminal(KEY));
    let mut sink = MemFiles::default();
    let mut events = Vec::new();
    down.run(&mut connector, &clock, &mut sink, |e| events.push(e))
        .unwrap();
    assert_eq!(sink.files, [data]);
    assert!(reconnects(&events) >= 3, "the link was cut");
    // The reads name the last link's handle: the relay streams only for
    // the handle of the link the Read comes on.
    let last = u128::from(relay.borrow().connects);
    assert_eq!(
        down.session().code(),
        Code::from_parts(Code::DEFAULT_LEN, 0x1000 + last).unwrap()
    );
}
