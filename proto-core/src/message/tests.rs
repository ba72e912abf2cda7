use super::*;
use crate::code::Code;
use crate::error::ErrorCode;
use crate::frame::{Decoder, EncodeError, Frame};
use crate::hash::Sha1Digest;
use std::vec::Vec;

/// One example of every kind; the fields are chosen to exercise multi-byte
/// varints. `VECTORS` holds the wire bytes of each, as listed in PROTOCOL.md.
pub(crate) fn examples() -> Vec<Message<'static>> {
    let code = Code::parse("7KQ4-M2XD-9RTA").unwrap();
    let sha1 = Sha1Digest::of(b"abc");
    let token = ResumeToken([0x5a; 16]);
    std::vec![
        Message::Hello(Hello {
            version: 1,
            role: Role::Terminal,
            max_frame: 256,
            window: 4096,
            caps: CAP_INSTANT_UPLOAD,
        }),
        Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: 16384,
            window: 1 << 20,
            caps: CAP_INSTANT_UPLOAD,
        }),
        Message::Keepalive,
        Message::Goodbye,
        Message::Error(Error {
            code: ErrorCode::RateLimited,
            kind: Kind::Fetch as u8,
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
            total_size: 49153,
        }),
        Message::FileAnnounce(FileAnnounce {
            index: 1,
            size: 3,
            sha1,
            name: "abc.txt",
        }),
        Message::Grant(Grant {
            code,
            expires_at: 1_790_000_000,
            token,
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
            proof: sha1,
        }),
        Message::Data(Data {
            file: 0,
            offset: 300,
            bytes: b"\x00\x01hello",
        }),
        Message::Ack(Ack {
            file: 0,
            offset: 65536,
            window: 4096,
        }),
        Message::Rewind(Rewind {
            file: 1,
            offset: 128,
        }),
        Message::FileVerified(FileVerified { index: 1 }),
        Message::FileRejected(FileRejected {
            index: 0,
            reason: ErrorCode::HashMismatch,
        }),
        Message::BatchComplete(BatchComplete { code }),
        Message::Resume(Resume { token }),
        Message::Join(Join { token }),
        Message::FileAttrs(FileAttrs {
            index: 1,
            executable: true,
            mtime: 1_700_000_000,
        }),
        Message::Fetch(Fetch { code }),
        Message::Manifest(Manifest {
            code,
            expires_at: 1_790_000_000,
            files: 2,
            total_size: 49153,
            received: 49153,
            ready: true,
        }),
        Message::ManifestEntry(ManifestEntry {
            index: 0,
            size: 49152,
            sha1,
            received: 49152,
            name: "fw.bin",
        }),
        Message::Read(Read {
            code,
            file: 0,
            offset: 0,
            len: 4096,
        }),
        Message::Push(Push {
            push_id: 0x1234_5678_9abc,
            code,
            terminal: "sensor-1",
        }),
        Message::Delivery(Delivery {
            push_id: 0x1234_5678_9abc,
            code,
            terminal: "sensor-1",
            state: DeliveryState::Receiving,
            bytes: 16384,
            total: 49153,
            at: 1_790_000_000,
            until: 1_790_086_400,
        }),
        Message::DeliveryStatus(DeliveryStatus { code }),
        Message::Listen,
        Message::Inbox(Inbox { count: 2 }),
        Message::Notice(Notice {
            id: 300,
            code,
            sender: "ada",
            files: 2,
            total_size: 49153,
            expires_at: 1_790_086_400,
        }),
        Message::NoticeAck(NoticeAck { id: 300 }),
        Message::NoticeRefuse(NoticeRefuse {
            id: 300,
            reason: RefuseReason::TooLarge,
        }),
        Message::Receipt(Receipt { id: 300 }),
        Message::Settled(Settled { id: 300 }),
        Message::AllowSender(AllowSender {
            sender: "bob",
            allow: true,
        }),
        Message::ForwardRequest(ForwardRequest {
            code,
            peer: "site-b",
        }),
        Message::ForwardAccepted(ForwardAccepted { id: 300 }),
        Message::ForwardWatch(ForwardWatch {
            id: 300,
            once: false,
        }),
        Message::ForwardStatus(ForwardStatus {
            id: 300,
            state: ForwardState::Transferring,
            sent: 16384,
            total: 49153,
            rate: 1 << 20,
            attempts: 1,
            reason: None,
            peer_code: None,
            peer_expires_at: 0,
        }),
        Message::ForwardStatus(ForwardStatus {
            id: 300,
            state: ForwardState::Done,
            sent: 49153,
            total: 49153,
            rate: 0,
            attempts: 1,
            reason: None,
            peer_code: Some(code),
            peer_expires_at: 1_790_086_400,
        }),
        Message::ForwardStatus(ForwardStatus {
            id: 300,
            state: ForwardState::Failed,
            sent: 0,
            total: 49153,
            rate: 0,
            attempts: 5,
            reason: Some(ErrorCode::AuthFailed),
            peer_code: None,
            peer_expires_at: 0,
        }),
        Message::ForwardRetry(ForwardRetry { id: 300 }),
        Message::ForwardPush(ForwardPush {
            code,
            peer: "site-b",
            terminal: "sensor-1",
            push_id: 300,
        }),
        Message::PeerPush(PeerPush {
            push_id: 300,
            code,
            terminal: "sensor-1",
            sender: "ada",
        }),
        Message::Login(Login {
            user: "ada",
            password: "hunter2",
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
            terminal: "",
            token: AuthToken([0x3c; 16]),
            expires_at: 1_790_000_000,
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
            with: "bob",
            allow: true,
        }),
        Message::Done(Done {
            kind: Kind::ShareNamed as u8,
        }),
    ]
}

fn hex(bytes: &[u8]) -> std::string::String {
    bytes.iter().map(|b| std::format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let t: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    t.chunks(2)
        .map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn wire(msg: &Message<'_>) -> Vec<u8> {
    let mut out = [0u8; 512];
    let n = msg.encode(512, &mut out).unwrap();
    out[..n].to_vec()
}

fn decode_one(wire: &[u8]) -> Message<'static> {
    // Leak the buffer so the decoded message can borrow it for 'static.
    let buf: &'static mut [u8] = Vec::leak(std::vec![0u8; 512]);
    let mut dec = Decoder::new(buf);
    let mut input = wire;
    let frame = dec.feed(&mut input).unwrap().unwrap();
    assert!(input.is_empty());
    let frame: Frame<'static> = Frame {
        version: frame.version,
        kind: frame.kind,
        body: Vec::leak(frame.body.to_vec()),
    };
    Message::decode(frame).unwrap()
}

/// Prints the vectors for PROTOCOL.md: `cargo test -p pickup-proto print_vectors -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_vectors() {
    for m in examples() {
        std::println!("{:?}\n  {}", m.kind(), hex(&wire(&m)));
    }
}

#[test]
fn every_kind_has_an_example_and_round_trips() {
    let examples = examples();
    for kind in Kind::ALL {
        assert!(
            examples.iter().any(|m| m.kind() == kind),
            "{kind:?} has no example"
        );
        assert_eq!(Kind::from_u8(kind as u8), Some(kind));
    }
    for m in &examples {
        assert_eq!(decode_one(&wire(m)), *m);
    }
}

#[test]
fn test_vectors_match_protocol_md() {
    let examples = examples();
    assert_eq!(examples.len(), VECTORS.len());
    for (m, v) in examples.iter().zip(VECTORS) {
        assert_eq!(hex(&wire(m)), hex(&unhex(v)), "{:?}", m.kind());
        assert_eq!(decode_one(&unhex(v)), *m);
    }
    // The document carries the same bytes.
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md")).unwrap();
    for v in VECTORS {
        assert!(doc.contains(v), "PROTOCOL.md lacks vector {v}");
    }
}

#[test]
fn unknown_kinds_versions_and_trailing_bytes_are_errors() {
    let f = |version, kind, body| Frame {
        version,
        kind,
        body,
    };
    assert_eq!(
        Message::decode(f(1, 0x3f, &[])),
        Err(DecodeError::UnknownKind(0x3f))
    );
    assert_eq!(
        Message::decode(f(1, 0xff, &[])),
        Err(DecodeError::UnknownKind(0xff))
    );
    assert_eq!(
        Message::decode(f(2, 0x03, &[])),
        Err(DecodeError::UnsupportedVersion(2))
    );
    assert_eq!(
        Message::decode(f(1, 0x03, &[0])),
        Err(DecodeError::BadBody(0x03))
    );
    // A FileVerified with a trailing byte.
    assert_eq!(
        Message::decode(f(1, 0x18, &[1, 0])),
        Err(DecodeError::BadBody(0x18))
    );
    // A truncated Ack.
    assert_eq!(
        Message::decode(f(1, 0x16, &[0, 0x80])),
        Err(DecodeError::BadBody(0x16))
    );
    // A name that is not UTF-8.
    let mut body = std::vec![0u8, 3];
    body.extend_from_slice(&[0u8; 20]);
    body.extend_from_slice(&[2, 0xff, 0xfe]);
    assert_eq!(
        Message::decode(f(1, 0x11, &body)),
        Err(DecodeError::BadBody(0x11))
    );
    // An unknown plan variant and an unknown error code.
    assert_eq!(
        Message::decode(f(1, 0x13, &[0, 3])),
        Err(DecodeError::BadBody(0x13))
    );
    assert_eq!(
        Message::decode(f(1, 0x19, &[0, 99])),
        Err(DecodeError::BadBody(0x19))
    );
    assert_eq!(
        DecodeError::UnknownKind(0x30).code(),
        ErrorCode::UnknownKind
    );
}

#[test]
fn relay_limits_encode_as_three_varints_and_decode_back() {
    let limits = RelayLimits {
        max_file_size: u64::MAX,
        max_batch_size: 0,
        max_files: u16::MAX,
    };
    let mut out = [0u8; 64];
    let n = Message::RelayLimits(limits).encode(64, &mut out).unwrap();
    assert_eq!(decode_one(&out[..n]), Message::RelayLimits(limits));
    // Body: ten varint bytes of u64::MAX, one of 0, three of u16::MAX.
    let body = postcard::to_allocvec(&limits).unwrap();
    assert_eq!(body.len(), 10 + 1 + 3);
    // A truncated body is refused, never read past.
    let short = Frame {
        version: crate::PROTOCOL_VERSION,
        kind: Kind::RelayLimits as u8,
        body: &body[..body.len() - 1],
    };
    assert_eq!(
        Message::decode(short),
        Err(DecodeError::BadBody(Kind::RelayLimits as u8))
    );
    // It flows relay to terminal only: a relay's decoder refuses it.
    let whole = Frame {
        version: crate::PROTOCOL_VERSION,
        kind: Kind::RelayLimits as u8,
        body: &body,
    };
    assert_eq!(
        Message::decode_from_terminal(whole),
        Err(DecodeError::WrongDirection(Kind::RelayLimits as u8))
    );
}

#[test]
fn page_links_are_inert_urls_and_the_decoder_refuses_others() {
    for good in [
        "https://pickup.example.org",
        "http://127.0.0.1:8080",
        "https://example.org/pickup",
        "https://xn--bcher-kva.example/a?b=c#d",
        "http://x",
        &std::format!("https://{}", "x".repeat(MAX_PAGE_URL_LEN - 8)),
    ] {
        assert_eq!(validate_page_url(good), Ok(()), "{good}");
    }
    for (bad, why) in [
        ("", PageUrlError::Scheme),
        ("ftp://example.org", PageUrlError::Scheme),
        ("example.org", PageUrlError::Scheme),
        ("HTTPS://example.org", PageUrlError::Scheme),
        ("https://", PageUrlError::Scheme),
        ("https://example.org/", PageUrlError::TrailingSlash),
        ("https://example.org/a b", PageUrlError::Unprintable),
        ("https://example.org\n", PageUrlError::Unprintable),
        ("https://example.org\x1b[2J", PageUrlError::Unprintable),
        ("https://example.org\t", PageUrlError::Unprintable),
        ("https://example.org\x7f", PageUrlError::Unprintable),
        ("https://example.org\u{85}", PageUrlError::Unprintable),
        // Shows one address and opens another.
        (
            "https://example.org/\u{202e}gro.live",
            PageUrlError::Unprintable,
        ),
        (
            &std::format!("https://{}", "x".repeat(MAX_PAGE_URL_LEN - 7)),
            PageUrlError::TooLong,
        ),
    ] {
        assert_eq!(validate_page_url(bad), Err(why), "{bad:?}");
        // The same URL from the wire is a malformed body.
        let body = postcard::to_allocvec(&PageLink { base_url: bad }).unwrap();
        let frame = Frame {
            version: 1,
            kind: Kind::PageLink as u8,
            body: &body,
        };
        assert_eq!(
            Message::decode(frame),
            Err(DecodeError::BadBody(Kind::PageLink as u8)),
            "{bad:?}"
        );
    }
}

#[test]
fn data_fills_in_place_and_respects_limits() {
    let mut out = [0u8; 300];
    let n = encode_data_with(3, 1 << 40, 100, 256, &mut out, |room| {
        assert_eq!(room.len(), 100);
        room.fill(0);
        Some(100)
    })
    .unwrap();
    let msg = decode_one(&out[..n]);
    assert_eq!(
        msg,
        Message::Data(Data {
            file: 3,
            offset: 1 << 40,
            bytes: &[0; 100]
        })
    );
    // The payload room never exceeds the frame limit.
    let mut seen = 0;
    encode_data_with(0, 0, usize::MAX, 128, &mut out, |room| {
        seen = room.len();
        Some(room.len())
    })
    .unwrap();
    assert!(seen >= Data::max_payload(128));
    assert!(seen + crate::frame::OVERHEAD + 2 <= 128);
    // A filler that claims more than its room is refused.
    assert!(encode_data_with(0, 0, 10, 128, &mut out, |_| Some(11)).is_err());
}

/// A relay sends download data from its read-ahead buffers as split
/// frames: the same wire bytes as `encode_data_with` filling as much room,
/// for the smallest and largest `(file, offset)` prefixes.
#[test]
fn a_split_data_frame_has_the_wire_bytes_of_a_filled_one() {
    use crate::frame::{Format, Framing};
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    for (file, offset) in [(0u16, 0u64), (3, 1 << 40), (u16::MAX, u64::MAX)] {
        for (len, max_frame) in [(0, 64), (10, 64), (70_000, 65_536), (1000, 1000)] {
            let mut head = [0u8; DATA_SPLIT_HEAD_LEN];
            let split =
                encode_data_split(file, offset, &bytes[..len], max_frame, &mut head).unwrap();
            let mut wire = head[..split.head_len].to_vec();
            wire.extend_from_slice(&bytes[..split.payload_len]);
            wire.extend_from_slice(&split.trailer);

            let format = Format {
                framing: Framing::LengthPrefixed,
                max_frame,
            };
            let mut out = std::vec![0u8; crate::frame::max_encoded_len(max_frame)];
            let mut filled = 0;
            let n = encode_data_with(file, offset, len, format, &mut out, |room| {
                room.copy_from_slice(&bytes[..room.len()]);
                filled = room.len();
                Some(filled)
            })
            .unwrap();
            assert_eq!(
                split.payload_len, filled,
                "file {file}, offset {offset}, {len} bytes"
            );
            assert_eq!(wire, out[..n]);
        }
    }
}

#[test]
fn messages_refuse_frames_larger_than_the_peer_accepts() {
    let name = "n".repeat(200);
    let m = Message::FileAnnounce(FileAnnounce {
        index: 0,
        size: 1,
        sha1: Sha1Digest::EMPTY,
        name: &name,
    });
    let mut out = [0u8; 512];
    assert_eq!(m.encode(128, &mut out), Err(EncodeError::TooLarge));
    assert!(m.encode(300, &mut out).is_ok());
}

#[test]
fn names_are_relative_paths_of_safe_components() {
    for good in [
        "a",
        "a/b",
        "dir/sub/file.txt",
        ".hidden/...",
        &format!("{}/{}", "x".repeat(127), "y".repeat(127)),
        "report.pdf",
        "ünïcødé 名前.txt",
        "...",
        ".hidden",
        &"x".repeat(255),
    ] {
        assert_eq!(validate_name(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        ".",
        "..",
        "a/",
        "/a",
        "a//b",
        "a/./b",
        "a/../b",
        "../x",
        "../etc/passwd",
        "/etc/passwd",
        "a/b\\c",
        "a\\b",
        "C:evil",
        "nul\0byte",
        "tab\there",
        "bell\u{7}",
        "esc\u{1b}[31m",
        "del\u{7f}",
        "line\nbreak",
        "c1\u{85}",
        &"x".repeat(256),
    ] {
        assert_eq!(validate_name(bad), Err(ErrorCode::InvalidName), "{bad:?}");
    }
}

#[test]
fn names_conflict_when_equal_or_a_directory_of_another() {
    for (a, b) in [("a", "a"), ("a", "a/b"), ("a/b", "a"), ("d/e", "d/e/f/g")] {
        assert!(names_conflict(a, b), "{a} {b}");
    }
    for (a, b) in [
        ("a", "b"),
        ("a", "ab"),
        ("a/b", "a/c"),
        ("ab/c", "a"),
        ("a.b", "a/b"),
        ("A", "a"),
    ] {
        assert!(!names_conflict(a, b), "{a} {b}");
    }
}

/// Filled in from `print_vectors`; PROTOCOL.md lists the same bytes.
const VECTORS: &[&str] = &[
    "040101010a80028020019b0ee6b900",
    "10010201018080018080400118466e1600",
    "070103511c93f100",
    "070104ba78592500",
    "0b01050220dc0b39da6b4f00",
    "2201061a68747470733a2f2f7069636b75702e6578616d706c652e6f7267255f188100",
    "1301078080808004808080800ce8072ea6412200",
    "0b011002818003f1b9aa4e00",
    "2501110103a9993e364706816aba3e25717850c26c9cd0d89d076162632e747874e8d1108500",
    "2701120ccac6d3d68b94b9e70380f7c4d5065a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a02a3c735a100",
    "0301130801ac02a29fa76c00",
    "2901130102c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c39137ff0f00",
    "0401130105f1c40c1c00",
    "1c011401a9993e364706816aba3e25717850c26c9cd0d89d80a56d2000",
    "03011503ac020b0168656c6c6ffc57670e00",
    "0301160a808004802014650b5500",
    "0a0117018001eafbee2100",
    "080118013e809f9500",
    "0301190606a6d7315e00",
    "11011a0ccac6d3d68b94b9e703f0dd76bc00",
    "17011b5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5041078e00",
    "17011c5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a3c22551400",
    "0e011d010180c49fd50c0bd25c1600",
    "1101200ccac6d3d68b94b9e703f4e6f6dd00",
    "1e01210ccac6d3d68b94b9e70380f7c4d50602818003818003018e953bc500",
    "03012226808003a9993e364706816aba3e25717850c26c9cd0d89d8080030666772e62696e036d6dbe00",
    "0d01230ccac6d3d68b94b9e70301078020d312f6ba00",
    "210130bcb5e2b3c5c6040ccac6d3d68b94b9e7030873656e736f722d313c36be1e00",
    "320131bcb5e2b3c5c6040ccac6d3d68b94b9e7030873656e736f722d310280800181800380f7c4d506809acad50608e085da00",
    "1101320ccac6d3d68b94b9e703eec269ab00",
    "070133e05570c100",
    "08013402ac32da2a00",
    "200135ac020ccac6d3d68b94b9e7030361646102818003809acad506fd49219700",
    "090136ac029e5a986300",
    "050137ac020583228bb100",
    "090138ac024c92788a00",
    "060139ac023203392f00",
    "0c013a03626f620159b7aa9900",
    "1801400ccac6d3d68b94b9e70306736974652d62316879f800",
    "090141ac02b038eb4100",
    "050142ac020599430b8200",
    "100143ac0202808001818003808040010101055b620ba400",
    "0c0143ac0204818003818003020115010ccac6d3d68b94b9e703809acad5064a19386e00",
    "060143ac020604818003040501160105fe02c6be00",
    "090144ac02d40e747a00",
    "2301450ccac6d3d68b94b9e70306736974652d620873656e736f722d31ac0259eccb0a00",
    "200146ac020ccac6d3d68b94b9e7030873656e736f722d3103616461dff0a03300",
    "130150036164610768756e746572324b19a2c800",
    "1701513c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3cf209556800",
    "1001520873656e736f722d31890767fa00",
    "170153969696969696969696969696969696964ff8ade200",
    "1b0154a9993e364706816aba3e25717850c26c9cd0d89d424a4f7f00",
    "070155036164611a3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c80f7c4d5060443adea00",
    "0701569ed2479500",
    "0701579d512c6700",
    "120158036164610666772e62696ec16fdf4300",
    "070159baee54cb00",
    "0e015a0666772e62696e576ad2d200",
    "13015b0666772e62696e03626f62017e0a3b8b00",
    "08015c5b0dd5c51e00",
];

#[test]
fn directional_decoders_split_the_kinds_between_them() {
    let to_relay = [
        Kind::Hello,
        Kind::BatchOpen,
        Kind::FileAnnounce,
        Kind::Proof,
        Kind::Resume,
        Kind::Join,
        Kind::Fetch,
        Kind::Read,
        Kind::Push,
        Kind::DeliveryStatus,
        Kind::Listen,
        Kind::NoticeAck,
        Kind::NoticeRefuse,
        Kind::Receipt,
        Kind::AllowSender,
        Kind::ForwardRequest,
        Kind::ForwardWatch,
        Kind::ForwardRetry,
        Kind::ForwardPush,
        Kind::PeerPush,
        Kind::Login,
        Kind::Authenticate,
        Kind::TerminalAuth,
        Kind::ChallengeAnswer,
        Kind::Logout,
        Kind::NamedPut,
        Kind::FetchNamed,
        Kind::ListNamed,
        Kind::RemoveNamed,
        Kind::ShareNamed,
    ];
    let both = [
        Kind::Keepalive,
        Kind::Goodbye,
        Kind::Error,
        Kind::Ack,
        Kind::Data,
        Kind::FileAttrs,
    ];
    for m in examples() {
        let bytes = wire(&m);
        let mut dec = Decoder::new([0u8; 512]);
        let mut input = &bytes[..];
        let frame = dec.feed(&mut input).unwrap().unwrap();
        let kind = m.kind();
        let from_relay = Message::decode_from_relay(frame);
        let from_terminal = Message::decode_from_terminal(frame);
        if both.contains(&kind) {
            assert_eq!(from_relay, Ok(m));
            assert_eq!(from_terminal, Ok(m));
        } else if to_relay.contains(&kind) {
            assert_eq!(from_terminal, Ok(m));
            assert_eq!(from_relay, Err(DecodeError::WrongDirection(kind as u8)));
        } else {
            assert_eq!(from_relay, Ok(m));
            assert_eq!(from_terminal, Err(DecodeError::WrongDirection(kind as u8)));
        }
    }
}

#[test]
fn file_attrs_carry_times_before_1970_and_stay_out_of_old_kinds() {
    // Signed seconds: a file from 1969 keeps its time (zigzag varint).
    let old = Message::FileAttrs(FileAttrs {
        index: 0,
        executable: false,
        mtime: -86_400,
    });
    assert_eq!(decode_one(&wire(&old)), old);
    // Why attributes are a kind of their own: a version-1 decoder refuses a
    // FileAnnounce with any byte after its name, so a trailing field would
    // break every relay that predates it.
    let announce = FileAnnounce {
        index: 0,
        size: 1,
        sha1: Sha1Digest::of(b"x"),
        name: "x",
    };
    let mut body = postcard::to_allocvec(&announce).unwrap();
    body.extend_from_slice(&[1, 0]);
    let frame = Frame {
        version: 1,
        kind: Kind::FileAnnounce as u8,
        body: &body,
    };
    assert_eq!(
        Message::decode(frame),
        Err(DecodeError::BadBody(Kind::FileAnnounce as u8))
    );
}
