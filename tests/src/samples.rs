//! One sample message of every kind: the canonical list the fuzz seeds,
//! the fuzz harness's own tests and anything else that must cover "every
//! message" take, so a new kind is added in one place, and a test here
//! fails until it is (checked against [`Kind::ALL`]).

use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::{
    Ack, BatchComplete, BatchOpen, Data, Error, Fetch, FileAnnounce, FileAttrs, FilePlan,
    FileRejected, FileVerified, Grant, Hello, Join, Kind, Manifest, ManifestEntry, Message,
    PageLink, Plan, Proof, Read, RelayLimits, Resume, Rewind, Role, Welcome, CAP_INSTANT_UPLOAD,
};
use pickup_proto::message::{
    AllowSender, Delivery, DeliveryState, DeliveryStatus, Inbox, Notice, NoticeAck, NoticeRefuse,
    Push, Receipt, RefuseReason, Settled,
};
use pickup_proto::message::{
    AuthToken, Authenticate, Authenticated, Challenge, ChallengeAnswer, Done, FetchNamed, Login,
    RemoveNamed, ShareNamed, TerminalAuth,
};
use pickup_proto::message::{
    ForwardAccepted, ForwardPush, ForwardRequest, ForwardRetry, ForwardState, ForwardStatus,
    ForwardWatch, PeerPush,
};
use pickup_proto::ErrorCode;

use crate::fuzz_proto;

/// One example of every message kind ([`Kind::ALL`]), with multi-byte
/// varints, and each [`Plan`] of a `FilePlan`.
///
/// The order and values are fixed: the committed fuzz corpus under
/// `fuzz/corpus/` is made from them (`tests/fuzz_corpus.rs`).
pub fn every_kind() -> Vec<Message<'static>> {
    let code = fuzz_proto::code();
    let sha1 = Sha1Digest::of(b"pickup");
    vec![
        Message::Hello(Hello {
            version: 1,
            role: Role::Terminal,
            max_frame: 4096,
            window: 65_536,
            caps: CAP_INSTANT_UPLOAD,
        }),
        Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 65_536,
            window: 4 << 20,
            caps: CAP_INSTANT_UPLOAD,
        }),
        Message::Keepalive,
        Message::Goodbye,
        Message::Error(Error {
            code: ErrorCode::RateLimited,
            kind: 0x20,
            retry_after_ms: 1500,
        }),
        Message::PageLink(PageLink {
            base_url: "https://pickup.example.org",
        }),
        Message::RelayLimits(RelayLimits {
            max_file_size: 1 << 30,
            max_batch_size: 3 << 30,
            max_files: 1000,
        }),
        Message::BatchOpen(BatchOpen {
            files: 2,
            total_size: 706,
        }),
        Message::FileAnnounce(FileAnnounce {
            index: 1,
            size: 6,
            sha1,
            name: "b.txt",
        }),
        Message::Grant(Grant {
            code,
            expires_at: 1_800_000_000,
            token: fuzz_proto::TOKEN,
            files: 2,
        }),
        Message::FilePlan(FilePlan {
            index: 0,
            plan: Plan::Upload { offset: 300 },
        }),
        Message::FilePlan(FilePlan {
            index: 1,
            plan: Plan::Challenge { nonce: [0xc3; 32] },
        }),
        Message::FilePlan(FilePlan {
            index: 1,
            plan: Plan::Held,
        }),
        Message::Proof(Proof {
            index: 1,
            proof: Sha1Digest([0x11; 20]),
        }),
        Message::Data(Data {
            file: 0,
            offset: 300,
            bytes: b"\x00\x01pickup\x00",
        }),
        Message::Ack(Ack {
            file: 0,
            offset: 700,
            window: 65_536,
        }),
        Message::Rewind(Rewind {
            file: 0,
            offset: 128,
        }),
        Message::FileVerified(FileVerified { index: 0 }),
        Message::FileRejected(FileRejected {
            index: 1,
            reason: ErrorCode::HashMismatch,
        }),
        Message::BatchComplete(BatchComplete { code }),
        Message::Resume(Resume {
            token: fuzz_proto::TOKEN,
        }),
        Message::Join(Join {
            token: fuzz_proto::TOKEN,
        }),
        Message::FileAttrs(FileAttrs {
            index: 1,
            executable: true,
            mtime: 1_700_000_000,
        }),
        Message::Fetch(Fetch { code }),
        Message::Manifest(Manifest {
            code,
            expires_at: 1_800_000_000,
            files: 2,
            total_size: 706,
            received: 300,
            ready: false,
        }),
        Message::ManifestEntry(ManifestEntry {
            index: 1,
            size: 6,
            sha1,
            received: 6,
            name: "b.txt",
        }),
        Message::Read(Read {
            code,
            file: 0,
            offset: 0,
            len: 4096,
        }),
        Message::Login(Login {
            user: "ada",
            password: "correct horse",
        }),
        Message::Authenticate(Authenticate {
            token: AuthToken([0x3c; 16]),
        }),
        Message::TerminalAuth(TerminalAuth {
            terminal: "sensor-1",
        }),
        Message::Challenge(Challenge { nonce: [0x96; 16] }),
        Message::ChallengeAnswer(ChallengeAnswer { mac: sha1 }),
        Message::Authenticated(Authenticated {
            user: "ada",
            terminal: "sensor-1",
            token: AuthToken::NONE,
            expires_at: 0,
        }),
        Message::Logout,
        Message::NamedPut,
        Message::FetchNamed(FetchNamed {
            owner: "ada",
            name: "fw.bin",
        }),
        Message::ListNamed,
        Message::RemoveNamed(RemoveNamed { name: "fw.bin" }),
        Message::ShareNamed(ShareNamed {
            name: "fw.bin",
            with: "@sensor-1",
            allow: true,
        }),
        Message::Done(Done {
            kind: Kind::RemoveNamed as u8,
        }),
        Message::Push(Push {
            push_id: 0x1234_5678_9abc_def0,
            code,
            terminal: "sensor-1",
        }),
        Message::Delivery(Delivery {
            push_id: 0x1234_5678_9abc_def0,
            code,
            terminal: "sensor-1",
            state: DeliveryState::Receiving,
            bytes: 70_000,
            total: 200_000,
            at: 1_790_000_000,
            until: 1_790_086_400,
        }),
        Message::DeliveryStatus(DeliveryStatus { code }),
        Message::Listen,
        Message::Inbox(Inbox { count: 3 }),
        Message::Notice(Notice {
            id: 70_000,
            code,
            sender: "ada",
            files: 2,
            total_size: 200_000,
            expires_at: 1_790_086_400,
        }),
        Message::NoticeAck(NoticeAck { id: 70_000 }),
        Message::NoticeRefuse(NoticeRefuse {
            id: 70_000,
            reason: RefuseReason::Sender,
        }),
        Message::Receipt(Receipt { id: 70_000 }),
        Message::Settled(Settled { id: 70_000 }),
        Message::AllowSender(AllowSender {
            sender: "bob",
            allow: false,
        }),
        Message::ForwardRequest(ForwardRequest { code, peer: "r1" }),
        Message::ForwardAccepted(ForwardAccepted { id: 300 }),
        Message::ForwardWatch(ForwardWatch {
            id: 300,
            once: false,
        }),
        Message::ForwardStatus(ForwardStatus {
            id: 300,
            state: ForwardState::Done,
            sent: 70_000,
            total: 70_000,
            rate: 1 << 20,
            attempts: 2,
            reason: None,
            peer_code: Some(code),
            peer_expires_at: 1_790_086_400,
        }),
        Message::ForwardRetry(ForwardRetry { id: 300 }),
        Message::ForwardPush(ForwardPush {
            code,
            peer: "r1",
            terminal: "t1",
            push_id: 300,
        }),
        Message::PeerPush(PeerPush {
            push_id: 300,
            code,
            terminal: "t1",
            sender: "ada",
        }),
    ]
}

/// The sample of `kind` (the first, for `FilePlan`).
pub fn of_kind(kind: Kind) -> Message<'static> {
    every_kind()
        .into_iter()
        .find(|m| m.kind() == kind)
        .unwrap_or_else(|| panic!("no sample of {kind:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_sample_that_round_trips() {
        let samples = every_kind();
        for kind in Kind::ALL {
            assert!(
                samples.iter().any(|m| m.kind() == kind),
                "no sample of {kind:?}: add one to samples::every_kind"
            );
        }
        let mut buf = vec![0u8; 8192];
        for m in &samples {
            let n = m.encode(4096, &mut buf).expect("a sample fits 4 KiB");
            let mut decoder = pickup_proto::frame::Decoder::new(vec![0u8; 4096]);
            let mut input = &buf[..n];
            let frame = decoder
                .feed(&mut input)
                .expect("a frame")
                .expect("a good frame");
            assert_eq!(Message::decode(frame).as_ref(), Ok(m));
        }
    }
}
