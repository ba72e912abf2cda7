//! Seeds of the `upload_session` target: the fake relay's side of uploads
//! (grants, plans, acks, verdicts), fresh, resumed, instant and windowed.

use super::{seed, welcome, Seed};
use crate::fuzz_proto::{self, Script, UPLOAD_INSTANT, UPLOAD_RESUME, UPLOAD_SMALL_WINDOW};
use pickup_proto::message::{
    Ack, BatchComplete, Error, FilePlan, FileRejected, FileVerified, Grant, Message, Plan, Rewind,
};
use pickup_proto::ErrorCode;

fn grant(files: u16) -> Message<'static> {
    Message::Grant(Grant {
        code: fuzz_proto::code(),
        expires_at: 1_800_000_000,
        token: fuzz_proto::TOKEN,
        files,
    })
}

fn plan(index: u16, plan: Plan) -> Message<'static> {
    Message::FilePlan(FilePlan { index, plan })
}

fn ack(file: u16, offset: u64) -> Message<'static> {
    Message::Ack(Ack {
        file,
        offset,
        window: 4096,
    })
}

fn verified(index: u16) -> Message<'static> {
    Message::FileVerified(FileVerified { index })
}

type UploadScript = Script<4096>;

fn upload_start(setup: u8) -> UploadScript {
    let mut s = UploadScript::new(&[setup]);
    s.connect()
        .transmit()
        .message(&welcome(256, 4096))
        .transmit()
        .events();
    s
}

pub(super) fn upload_seeds() -> Vec<Seed> {
    let size = |i: usize| fuzz_proto::CONTENTS[i].len() as u64;
    let mut seeds = Vec::new();

    let mut s = upload_start(2);
    s.message(&grant(3));
    s.message(&plan(0, Plan::Upload { offset: 0 }));
    s.message(&plan(1, Plan::Upload { offset: 0 }));
    s.message(&plan(2, Plan::Held));
    s.transmit().events();
    for f in 0..2 {
        s.message(&ack(f, size(usize::from(f))))
            .message(&verified(f));
    }
    s.message(&Message::BatchComplete(BatchComplete {
        code: fuzz_proto::code(),
    }));
    s.events().transmit();
    seeds.push(seed(
        "upload_session",
        "three-files-complete",
        s.as_bytes().to_vec(),
    ));

    // Resume with a token after a restart: the relay has 237 bytes.
    let mut s = upload_start(UPLOAD_RESUME);
    s.message(&grant(1));
    s.message(&plan(0, Plan::Upload { offset: 237 }));
    s.transmit();
    s.message(&Message::Rewind(Rewind {
        file: 0,
        offset: 400,
    }));
    s.transmit().message(&ack(0, size(0))).message(&verified(0));
    s.events();
    seeds.push(seed(
        "upload_session",
        "resume-from-237",
        s.as_bytes().to_vec(),
    ));

    // Instant upload: a challenge, a proof, then Held.
    let mut s = upload_start(1 | UPLOAD_INSTANT);
    s.message(&grant(2));
    s.message(&plan(0, Plan::Challenge { nonce: [7; 32] }));
    s.message(&plan(1, Plan::Upload { offset: 0 }));
    s.transmit();
    s.message(&plan(0, Plan::Held));
    s.message(&ack(1, size(1))).message(&verified(1));
    s.events().transmit();
    seeds.push(seed(
        "upload_session",
        "challenge-proof-held",
        s.as_bytes().to_vec(),
    ));

    // A lost link mid-file: timers, reconnect, resume.
    let mut s = upload_start(UPLOAD_SMALL_WINDOW);
    s.message(&grant(1));
    s.message(&plan(0, Plan::Upload { offset: 0 }));
    s.transmit().message(&ack(0, 128));
    for _ in 0..4 {
        s.advance(2_500).settle().events();
    }
    s.disconnect().advance(1_000).connect().transmit();
    s.message(&welcome(1024, 65_536)).transmit();
    s.message(&grant(1))
        .message(&plan(0, Plan::Upload { offset: 128 }));
    s.transmit()
        .message(&ack(0, size(0)))
        .message(&verified(0))
        .events();
    seeds.push(seed(
        "upload_session",
        "link-lost-and-resumed",
        s.as_bytes().to_vec(),
    ));

    // Refusals: a rejected file and a relay error.
    let mut s = upload_start(0);
    s.message(&Message::Error(Error {
        code: ErrorCode::Busy,
        kind: 0x10,
        retry_after_ms: 1000,
    }));
    s.advance(2_100).settle();
    s.message(&grant(1))
        .message(&plan(0, Plan::Upload { offset: 0 }));
    s.transmit();
    s.message(&Message::FileRejected(FileRejected {
        index: 0,
        reason: ErrorCode::HashMismatch,
    }));
    s.events();
    seeds.push(seed(
        "upload_session",
        "busy-then-rejected",
        s.as_bytes().to_vec(),
    ));
    seeds
}
