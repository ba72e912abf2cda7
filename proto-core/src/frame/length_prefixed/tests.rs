//! The length-prefixed framing: vectors, round trips, every way a frame is
//! dropped, and switching a decoder between framings.

use super::super::tests::{assert_every_split_gives, drain};
use super::super::*;
use super::{encode_split, whole_frames, SplitFrame, MAX_RAW_LEN, PREFIX_LEN};
use std::vec::Vec;

const PREFIXED: Framing = Framing::LengthPrefixed;

fn format(max_frame: usize) -> Format {
    Format {
        framing: PREFIXED,
        max_frame,
    }
}

fn encode_vec(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = std::vec![0u8; max_encoded_len(body.len() + OVERHEAD)];
    let n = encode_with(1, kind, format(MAX_FRAME_LEN), &mut out, |space| {
        space.get_mut(..body.len())?.copy_from_slice(body);
        Some(body.len())
    })
    .unwrap();
    out.truncate(n);
    out
}

fn decoder(cap: usize) -> Decoder<Vec<u8>> {
    let mut dec = Decoder::new(std::vec![0u8; cap]);
    dec.set_framing(PREFIXED);
    dec
}

fn hex(s: impl AsRef<str>) -> Vec<u8> {
    let s = s.as_ref();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// PROTOCOL.md §2.1's vectors: kind, body, wire bytes.
const VECTORS: [(u8, &[u8], &str); 2] = [
    (0x03, b"", "000600000103511c93f1"),
    (0x15, b"\x00\x00hello", "000d00000115000068656c6c6f6c858f7c"),
];

#[test]
fn protocol_vectors() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md")).unwrap();
    for (kind, body, wire) in VECTORS {
        assert_eq!(encode_vec(kind, body), hex(wire), "kind {kind:#04x}");
        let (frames, drops) = drain(&mut decoder(64), &hex(wire));
        assert_eq!(
            (frames, drops),
            (std::vec![(kind, body.to_vec())], std::vec![])
        );
        assert!(doc.contains(wire), "PROTOCOL.md lacks vector {wire}");
    }
    // §10's Keepalive: the same raw frame, the same CRC.
    assert!(doc.contains("| Keepalive | `0103` | `(empty)` | `511c93f1` |"));
    // A 306-byte raw frame: the length takes its second byte.
    let wire = encode_vec(0x15, &[0xab; 300]);
    assert_eq!(wire[..6], hex("003201000115")[..]);
    assert!(doc.contains("begins `00320100…` (length 0x000132)"));
    assert_eq!(wire.len(), PREFIX_LEN + 306);
}

#[test]
fn every_length_round_trips() {
    for len in 0..1100usize {
        let body: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
        let wire = encode_vec(0x42, &body);
        assert_eq!(wire.len(), PREFIX_LEN + OVERHEAD + len);
        assert!(wire.len() <= max_encoded_len(len + OVERHEAD), "len {len}");
        let (frames, drops) = drain(&mut decoder(len + OVERHEAD), &wire);
        assert_eq!(drops, []);
        assert_eq!(frames, [(0x42, body)], "len {len}");
    }
}

#[test]
fn the_largest_frame_fits_max_encoded_len_and_one_byte_more_does_not() {
    let body = std::vec![0u8; MAX_FRAME_LEN - OVERHEAD];
    let mut out = std::vec![0u8; max_encoded_len(MAX_FRAME_LEN)];
    let n = encode_with(1, 0x15, format(MAX_FRAME_LEN), &mut out, |space| {
        space.get_mut(..body.len())?.copy_from_slice(&body);
        Some(body.len())
    })
    .unwrap();
    assert_eq!(n, MAX_FRAME_LEN + PREFIX_LEN);
    let (frames, drops) = drain(&mut decoder(MAX_FRAME_LEN), &out[..n]);
    assert_eq!((frames.len(), drops), (1, std::vec![]));
    let too_big = encode_with(1, 0x15, format(MAX_FRAME_LEN), &mut out, |space| {
        Some(space.len() + 1)
    });
    assert_eq!(too_big, Err(EncodeError::TooLarge));
}

#[test]
fn the_peers_max_frame_bounds_the_encoder() {
    let mut out = [0u8; 256];
    let fits = encode_with(1, 7, format(64), &mut out, |space| Some(space.len()));
    assert_eq!(fits, Ok(64 + PREFIX_LEN));
    let over = encode_with(1, 7, format(64), &mut out, |_| Some(64 - OVERHEAD + 1));
    assert_eq!(over, Err(EncodeError::TooLarge));
    // The smallest buffer `max_encoded_len` names still takes a full frame.
    let mut small = [0u8; max_encoded_len(64)];
    let fits = encode_with(1, 7, format(64), &mut small, |space| Some(space.len()));
    assert_eq!(fits, Ok(64 + PREFIX_LEN));
}

#[test]
fn any_split_of_the_input_gives_the_same_frames() {
    let mut wire = encode_vec(1, b"first");
    wire.extend(encode_vec(2, &[0u8; 300]));
    wire.extend(encode_vec(3, b""));
    assert_every_split_gives(&wire, &[1, 2, 3], || decoder(512));
}

#[test]
fn a_frame_fed_whole_is_viewed_where_it_lies_and_a_split_one_is_gathered() {
    let wire = encode_vec(0x21, &[7u8; 1000]);
    let within = |body: &[u8], input: &[u8]| input.as_ptr_range().contains(&body.as_ptr());

    let mut dec = decoder(2048);
    let mut input = &wire[..];
    let frame = dec.feed(&mut input).unwrap().unwrap();
    assert_eq!((frame.kind, frame.body), (0x21, &[7u8; 1000][..]));
    assert!(within(frame.body, &wire), "a whole frame is not copied");
    assert!(input.is_empty());

    let (head, tail) = wire.split_at(600);
    let mut input = head;
    assert!(dec.feed(&mut input).is_none());
    let mut input = tail;
    let frame = dec.feed(&mut input).unwrap().unwrap();
    assert_eq!(frame.body, &[7u8; 1000][..]);
    assert!(!within(frame.body, tail), "a split frame is gathered");
    assert_eq!(dec.stats().frames, 2);
}

#[test]
fn whole_frames_ends_at_the_last_whole_frame_of_any_cut() {
    let frames = [
        encode_vec(1, &[1u8; 300]),
        encode_vec(2, b""),
        encode_vec(3, &[3u8; 70]),
    ];
    let wire = frames.concat();
    let ends: Vec<usize> = frames
        .iter()
        .scan(0, |end, f| {
            *end += f.len();
            Some(*end)
        })
        .collect();
    for cut in 0..=wire.len() {
        let whole = whole_frames(&wire[..cut], 512);
        let expected = ends
            .iter()
            .copied()
            .filter(|&e| e <= cut)
            .max()
            .unwrap_or(0);
        assert_eq!(whole, expected, "cut at {cut}");
        // Fed that much, a decoder sees every frame where it lies and
        // holds nothing.
        let mut dec = decoder(512);
        let mut input = &wire[..whole];
        let mut seen = 0;
        while let Some(found) = dec.feed(&mut input) {
            let frame = found.unwrap();
            assert!(wire.as_ptr_range().contains(&frame.body.as_ptr()) || frame.body.is_empty());
            seen += 1;
        }
        assert_eq!(seen, ends.iter().filter(|&&e| e <= cut).count());
        assert!(!dec.in_frame(), "cut at {cut}");
    }
}

#[test]
fn whole_frames_gives_a_malformed_frame_to_the_decoder() {
    let good = encode_vec(1, b"ok");
    let mut wrong_marker = good.clone();
    wrong_marker.extend_from_slice(&[0x07, 0x10, 0x00, 0x00]);
    assert_eq!(whole_frames(&wrong_marker, 512), wrong_marker.len());
    let too_short = [good.clone(), hex("00050000")].concat();
    assert_eq!(whole_frames(&too_short, 512), too_short.len());
    let oversize = [good.clone(), encode_vec(2, &[0u8; 600])[..20].to_vec()].concat();
    assert_eq!(whole_frames(&oversize, 512), oversize.len());
    // A prefix not yet whole is not judged.
    let short_prefix = [good.clone(), std::vec![0x00, 0x10]].concat();
    assert_eq!(whole_frames(&short_prefix, 512), good.len());
}

#[test]
fn a_bad_crc_drops_that_frame_only() {
    let mut wire = encode_vec(1, b"payload");
    let last = wire.len() - 1;
    wire[last] ^= 0x01;
    let frame_len = wire.len() as u64;
    wire.extend(encode_vec(2, b"next"));
    let mut dec = decoder(256);
    let (frames, drops) = drain(&mut dec, &wire);
    assert_eq!(drops, [Dropped::BadCrc]);
    assert_eq!(frames, [(2, b"next".to_vec())]);
    let stats = dec.stats();
    assert_eq!((stats.frames, stats.dropped_frames), (1, 1));
    assert_eq!(stats.dropped_bytes, frame_len);
}

#[test]
fn a_length_below_a_header_and_crc_is_skipped() {
    // Length 5: one byte short of the smallest raw frame.
    let mut wire = hex("000500000103000000");
    wire.extend(encode_vec(2, b"next"));
    let mut dec = decoder(256);
    let (frames, drops) = drain(&mut dec, &wire);
    assert_eq!(drops, [Dropped::TooShort]);
    assert_eq!(frames, [(2, b"next".to_vec())]);
    assert_eq!(dec.stats().dropped_bytes, 9);
}

#[test]
fn an_oversize_frame_is_skipped_by_its_length() {
    let big = encode_vec(1, &[0x55; 200]);
    let mut wire = big.clone();
    wire.extend(encode_vec(2, b"next"));
    let mut dec = decoder(64);
    let mut input = &wire[..10];
    assert_eq!(dec.feed(&mut input), Some(Err(Dropped::Oversize)));
    assert_eq!(dec.feed(&mut input), None);
    assert!(dec.in_frame(), "the rest of it is still to be skipped");
    let (frames, drops) = drain(&mut dec, &wire[10..]);
    assert_eq!(drops, []);
    assert_eq!(frames, [(2, b"next".to_vec())]);
    assert_eq!(dec.stats().dropped_bytes, big.len() as u64);
}

#[test]
fn a_truncated_frame_waits_and_reset_forgets_it() {
    let wire = encode_vec(1, b"payload");
    let mut dec = decoder(256);
    let mut input = &wire[..wire.len() - 1];
    assert_eq!(dec.feed(&mut input), None);
    assert!(input.is_empty());
    assert!(dec.in_frame());
    dec.reset();
    assert!(!dec.in_frame());
    assert_eq!(dec.framing(), PREFIXED, "reset keeps the framing");
    let (frames, _) = drain(&mut dec, &wire);
    assert_eq!(frames, [(1, b"payload".to_vec())]);
}

#[test]
fn cobs_fed_to_a_prefixed_decoder_fails_on_its_first_byte() {
    let mut cobs = [0u8; 64];
    let n = encode_raw(1, 0x03, b"", &mut cobs).unwrap();
    let mut wire = cobs[..n].to_vec();
    wire.extend(encode_vec(2, b"prefixed"));
    let mut dec = decoder(256);
    let (frames, drops) = drain(&mut dec, &wire);
    assert_eq!(drops, [Dropped::WrongFraming]);
    assert_eq!(frames, []);
    assert_eq!(dec.stats().dropped_bytes, wire.len() as u64);
    // Lost for good: later input is dropped too, counted, not said again.
    let mut input = &wire[..];
    assert_eq!(dec.feed(&mut input), None);
    assert!(input.is_empty());
    assert!(dec.in_frame());
    assert_eq!(dec.stats().dropped_frames, 1);
    assert_eq!(dec.stats().dropped_bytes, 2 * wire.len() as u64);
    dec.reset();
    let (frames, _) = drain(&mut dec, &encode_vec(2, b"again"));
    assert_eq!(frames, [(2, b"again".to_vec())]);
}

#[test]
fn a_decoder_switches_framing_between_frames_of_one_read() {
    // Hello and Welcome travel in COBS, everything after in the prefix.
    let mut wire = std::vec![0u8; 64];
    let n = encode_raw(1, 0x02, b"welcome", &mut wire).unwrap();
    wire.truncate(n);
    wire.extend(encode_vec(0x12, b"grant"));
    let mut dec = Decoder::new(std::vec![0u8; 256]);
    let mut input = &wire[..];
    let first = dec.feed(&mut input).unwrap().unwrap();
    assert_eq!(first.kind, 0x02);
    dec.set_framing(PREFIXED);
    let second = dec.feed(&mut input).unwrap().unwrap();
    assert_eq!((second.kind, second.body), (0x12, &b"grant"[..]));
    assert_eq!(dec.feed(&mut input), None);
    dec.set_framing(Framing::Cobs);
    assert_eq!(dec.framing(), Framing::Cobs);
}

#[test]
fn a_bare_max_frame_still_means_cobs() {
    let mut a = [0u8; 64];
    let mut b = [0u8; 64];
    let n = encode_with(1, 3, 64, &mut a, |_| Some(0)).unwrap();
    let m = encode_raw(1, 3, b"", &mut b).unwrap();
    assert_eq!(a[..n], b[..m]);
    assert_eq!(a[n - 1], 0, "COBS ends in its delimiter");
}

#[test]
fn a_relay_decoder_reads_cobs_until_the_first_marker() {
    // A repeated Hello and a Keepalive in COBS, then the terminal's first
    // prefixed frames, all in one read.
    let mut wire = std::vec![0u8; 128];
    let n = encode_raw(1, 0x01, b"hello", &mut wire).unwrap();
    let m = encode_raw(1, 0x03, b"", &mut wire[n..]).unwrap();
    wire.truncate(n + m);
    wire.extend(encode_vec(0x10, b"open"));
    wire.extend(encode_vec(0x11, b"announce"));
    for split in 1..wire.len() {
        let mut dec = Decoder::new(std::vec![0u8; 256]);
        dec.switch_at_marker();
        assert_eq!(dec.framing(), PREFIXED);
        assert!(dec.awaiting_marker());
        let mut got = Vec::new();
        for chunk in wire.chunks(split) {
            let mut input = chunk;
            while let Some(r) = dec.feed(&mut input) {
                got.push(r.unwrap().kind);
            }
        }
        assert_eq!(got, [0x01, 0x03, 0x10, 0x11], "split {split}");
        assert!(!dec.awaiting_marker());
        // Switched for good: COBS is now the wrong framing.
        let mut input = &wire[..n];
        assert_eq!(dec.feed(&mut input), Some(Err(Dropped::WrongFraming)));
        assert_eq!(dec.feed(&mut input), None);
    }
}

#[test]
fn an_oversize_cobs_frame_before_the_marker_does_not_eat_it() {
    let mut wire = std::vec![0x55u8; 100];
    wire.push(0);
    wire.extend(encode_vec(0x10, b"open"));
    let mut dec = Decoder::new(std::vec![0u8; 64]);
    dec.switch_at_marker();
    let (frames, drops) = drain(&mut dec, &wire);
    assert_eq!(drops, [Dropped::Oversize]);
    assert_eq!(frames, [(0x10, b"open".to_vec())]);
    // A reset while waiting still waits for the marker.
    dec.reset();
    dec.switch_at_marker();
    let mut cobs = [0u8; 64];
    let n = encode_raw(1, 0x03, b"", &mut cobs).unwrap();
    let (frames, _) = drain(&mut dec, &cobs[..n]);
    assert_eq!(frames, [], "already switched: the marker came");
}

/// A split frame's head, payload and trailer, end to end, are the bytes
/// `encode_with` gives for the same body, for payloads that fit and
/// payloads cut at the frame's end; the CRC is appended across the parts.
#[test]
fn a_split_frame_is_the_whole_frame_in_three_parts() {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
    for max_frame in [OVERHEAD + 3, OVERHEAD + 4, 64, 1000, 2999, 4096] {
        for len in [0, 1, 2, 999, 3000] {
            let body_head = [0x11u8, 0x22, 0x33];
            let mut head = [0u8; 32];
            let split = encode_split(
                1,
                0x15,
                max_frame,
                &mut head,
                |room| {
                    room.get_mut(..3)?.copy_from_slice(&body_head);
                    Some(3)
                },
                &payload[..len],
            )
            .unwrap();
            let carried = &payload[..split.payload_len];
            assert_eq!(split.payload_len, len.min(max_frame - OVERHEAD - 3));
            let mut wire = head[..split.head_len].to_vec();
            wire.extend_from_slice(carried);
            wire.extend_from_slice(&split.trailer);

            let mut body = body_head.to_vec();
            body.extend_from_slice(carried);
            let mut out = std::vec![0u8; max_encoded_len(max_frame)];
            let n = encode_with(1, 0x15, format(max_frame), &mut out, |room| {
                room.get_mut(..body.len())?.copy_from_slice(&body);
                Some(body.len())
            })
            .unwrap();
            assert_eq!(wire, out[..n], "max_frame {max_frame}, payload {len}");
        }
    }
}

/// No room for the header and the body's head is an error, not a panic,
/// and so is a body head that does not fit `head`.
#[test]
fn a_split_frame_without_room_is_refused() {
    let mut head = [0u8; 32];
    let three = |room: &mut [u8]| room.get_mut(..3).map(|_| 3);
    assert_eq!(
        encode_split(1, 0x15, OVERHEAD + 2, &mut head, three, b"x"),
        Err(EncodeError::TooLarge)
    );
    let mut short = [0u8; PREFIX_LEN + HEADER_LEN + 2];
    assert_eq!(
        encode_split(1, 0x15, 4096, &mut short, three, b"x"),
        Err(EncodeError::TooLarge)
    );
    let mut tiny = [0u8; 3];
    assert_eq!(
        encode_split(1, 0x15, 4096, &mut tiny, three, b"x"),
        Err(EncodeError::TooLarge)
    );
    // A body head that claims more than its room is refused.
    assert_eq!(
        encode_split(1, 0x15, 4096, &mut head, |room| Some(room.len() + 1), b"x"),
        Err(EncodeError::TooLarge)
    );
    // The largest raw frame the prefix can describe bounds the payload.
    let big = std::vec![0u8; MAX_RAW_LEN + 10];
    let SplitFrame { payload_len, .. } =
        encode_split(1, 0x15, usize::MAX, &mut head, three, &big).unwrap();
    assert_eq!(payload_len, MAX_RAW_LEN - OVERHEAD - 3);
}
