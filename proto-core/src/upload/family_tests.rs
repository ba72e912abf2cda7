//! Joining a token family ([`Session::join_family`]): the `Join` a new
//! batch sends before announcing, and a relay that predates it.

use super::tests::{drain, grant, metas, plan, token, welcome, Out, T0};
use super::*;
use crate::error::ErrorCode;
use crate::message::{Kind, Message, Plan};

#[test]
fn a_new_batch_joins_its_family_before_announcing_and_an_old_relay_is_no_failure() {
    let mut files = std::vec![std::vec![3u8; 100]];
    let metas = metas(&files);
    let mut s = Session::<4>::new(Config::default(), &metas).unwrap();
    s.join_family(ResumeToken([4; 16]));
    s.handle_connected(T0);
    assert_eq!(drain(&mut s, T0, &mut files), [Out::Hello]);
    s.handle_message(T0, welcome(100_000));
    assert_eq!(
        drain(&mut s, T0, &mut files),
        [
            Out::Other(Kind::Join),
            Out::BatchOpen(1, 100),
            Out::Announce(0, 100, "a.bin".into())
        ]
    );
    // A relay that predates Join says so; the upload goes on.
    s.handle_message(
        T0,
        Message::Error(crate::message::Error {
            code: ErrorCode::UnknownKind,
            kind: Kind::Join as u8,
            retry_after_ms: 0,
        }),
    );
    assert!(!s.is_finished(), "{:?}", s.error());
    s.handle_message(T0, grant(1));
    s.handle_message(T0, plan(0, Plan::Held));
    assert!(s.is_finished() && s.error().is_none());
    // A resumed upload's batch has its owner: no Join.
    let mut r = Session::<4>::resume(Config::default(), &metas, token()).unwrap();
    r.join_family(ResumeToken([4; 16]));
    r.handle_connected(T0);
    drain(&mut r, T0, &mut files);
    r.handle_message(T0, welcome(100_000));
    assert_eq!(drain(&mut r, T0, &mut files), [Out::Resume]);
}
