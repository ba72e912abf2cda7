//! A PATCH whose upload another relay instance took over: its steps end
//! as after a wire resume took the lease (423), and nothing of them is
//! durable.

use std::sync::Arc;

use axum::http::StatusCode;
use pickup_proto::{Code, Instant, Sha1Digest};

use super::*;
use crate::random::SeededRandom;
use crate::settings::Settings;
use crate::store::memory::MemoryStore;
use crate::store::{LookupKey, NewBatch, NewFile, OwnerId, Store};

#[test]
fn a_patch_fenced_by_another_instance_ends_as_taken_over() {
    let store = Arc::new(MemoryStore::new());
    let other = store.another_instance();
    let relay = Relay::new(
        Settings::default(),
        store.clone(),
        Box::new(SeededRandom::new(1)),
        Instant::from_millis(0),
    );
    let files = [NewFile {
        name: "f",
        size: 8,
        sha1: Sha1Digest::of(b"abcdefgh"),
        attrs: None,
    }];
    let batch = store
        .create_batch(&NewBatch {
            code: Code::from_parts(9, 1).expect("a code"),
            code_key: LookupKey([1; 32]),
            token_key: LookupKey([2; 32]),
            owner: OwnerId([3; 32]),
            created_at: 0,
            expires_at: 1000,
            stale_at: 1000,
            files: &files,
            open: false,
        })
        .expect("created");
    let FileContent::Partial { id: partial, .. } = batch.files[0].content else {
        panic!("a partial upload");
    };
    let writer = relay.writer_id();
    let lease = relay.try_lease(batch.id, writer).expect("free");
    let mut w = Writer {
        held: Held {
            relay: relay.clone(),
            lease,
            writer,
        },
        partial,
        hasher: Box::new(RunningSha1::new()),
        body: None,
        at: 0,
        synced: 0,
        checked: false,
    };
    w.write(b"abcd").expect("written before the takeover");
    other.take_upload(batch.id).expect("taken over");
    assert!(matches!(w.write(b"efgh"), Err(StepError::Lost)));
    let ending = Ending {
        file: FileRef {
            batch: batch.id,
            index: 0,
        },
        size: 8,
        declared: None,
        keep_until: 1000,
    };
    let fed = Fed {
        w: Some(w),
        end: End::Whole,
        error: None,
    };
    // The sync of the bytes written before is refused too.
    let done = finish(fed, None, ending, 0);
    assert_eq!(done.offset, 0);
    let status = done.refusal.map(|r| r.status());
    assert_eq!(status, Some(StatusCode::LOCKED));
    match other.find_by_token(&LookupKey([2; 32]), 0) {
        Ok(Lookup::Live(b)) => assert_eq!(b.received(), 0),
        found => panic!("{found:?}"),
    }
}
