//! Frame encoding and decoding: round trips, corruption, resync.

use super::*;
use std::vec::Vec;

fn encode_vec(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = std::vec![0u8; max_encoded_len(body.len() + OVERHEAD) + 300];
    let n = encode_raw(1, kind, body, &mut out).unwrap();
    out.truncate(n);
    out
}

fn decode_all(wire: &[u8], cap: usize) -> (Vec<(u8, Vec<u8>)>, Vec<Dropped>) {
    drain(&mut Decoder::new(std::vec![0u8; cap]), wire)
}

/// Everything `dec` makes of `wire`: the frames (kind, body) and the drops.
pub(super) fn drain(dec: &mut Decoder<Vec<u8>>, wire: &[u8]) -> (Vec<(u8, Vec<u8>)>, Vec<Dropped>) {
    let mut frames = Vec::new();
    let mut drops = Vec::new();
    let mut input = wire;
    while let Some(r) = dec.feed(&mut input) {
        match r {
            Ok(f) => frames.push((f.kind, f.body.to_vec())),
            Err(d) => drops.push(d),
        }
    }
    (frames, drops)
}

#[test]
fn empty_body_vector() {
    // version 1, kind 0x11, no body: raw = 01 11 crc(LE)
    let crc = crc32c(&[1, 0x11]).to_le_bytes();
    let wire = encode_vec(0x11, &[]);
    let mut raw = std::vec![1u8, 0x11];
    raw.extend_from_slice(&crc);
    let mut expect = std::vec![0u8; 16];
    let n = cobs::encode(&raw, &mut expect);
    expect.truncate(n);
    expect.push(0);
    assert_eq!(wire, expect);
    // CRC-32C check value from the catalogue.
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
}

#[test]
fn every_length_round_trips_including_cobs_block_edges() {
    for len in 0..1100usize {
        let body: Vec<u8> = (0..len)
            .map(|i| if i % 7 == 3 { 0 } else { (i % 251) as u8 + 1 })
            .collect();
        let wire = encode_vec(0x42, &body);
        assert_eq!(wire.iter().filter(|&&b| b == 0).count(), 1);
        assert!(wire.len() <= max_encoded_len(len + OVERHEAD));
        let (frames, drops) = decode_all(&wire, len + OVERHEAD);
        assert_eq!(drops, []);
        assert_eq!(frames, [(0x42, body.clone())], "len {len}");
        // All non-zero bodies exercise 254-byte COBS runs.
        let body: Vec<u8> = (0..len).map(|i| (i % 255) as u8 | 1).collect();
        let (frames, _) = decode_all(&encode_vec(7, &body), len + OVERHEAD);
        assert_eq!(frames, [(7, body)], "non-zero len {len}");
    }
}

#[test]
fn in_place_encoding_matches_the_cobs_crate() {
    let patterns: [fn(usize) -> u8; 4] = [
        |_| 0,
        |i| (i % 255) as u8 + 1,
        |i| (i % 3 == 0) as u8 * 7,
        |i| (i * 37 % 256) as u8,
    ];
    for len in 0..800usize {
        for p in patterns {
            let src: Vec<u8> = (0..len).map(p).collect();
            let mut expect = std::vec![0u8; len + len / 254 + 2];
            let n = cobs::encode(&src, &mut expect);
            expect.truncate(n);
            expect.push(0);
            let shift = 2 + (len + 300) / 254;
            let mut out = std::vec![0u8; shift + len];
            out[shift..].copy_from_slice(&src);
            let n = cobs_in_place(&mut out, shift, len);
            assert_eq!(out[..n], expect[..], "len {len}");
        }
    }
}

#[test]
fn any_split_of_the_input_gives_the_same_frames() {
    let mut wire = encode_vec(1, b"first");
    wire.extend(encode_vec(2, &[0u8; 300]));
    wire.extend(encode_vec(3, b""));
    assert_every_split_gives(&wire, &[1, 2, 3], || Decoder::new(std::vec![0u8; 512]));
}

/// Fed `wire` in chunks of every size, a fresh decoder from `decoder`
/// returns frames of exactly `kinds` and ends between frames.
pub(super) fn assert_every_split_gives(
    wire: &[u8],
    kinds: &[u8],
    decoder: impl Fn() -> Decoder<Vec<u8>>,
) {
    for split in 1..wire.len() {
        let mut dec = decoder();
        let mut got = Vec::new();
        for chunk in wire.chunks(split) {
            let mut input = chunk;
            while let Some(r) = dec.feed(&mut input) {
                got.push(r.unwrap().kind);
            }
        }
        assert_eq!(got, kinds, "split {split}");
        assert!(!dec.in_frame(), "split {split}");
    }
}

#[test]
fn skipping_an_oversize_frame_counts_as_inside_a_frame() {
    let mut dec = Decoder::new([0u8; 64]);
    let junk = [0x55u8; 100];
    let mut input = &junk[..];
    assert_eq!(dec.feed(&mut input), Some(Err(Dropped::Oversize)));
    assert_eq!(dec.feed(&mut input), None);
    assert!(dec.in_frame(), "its tail is still to be skipped");
    let mut input = &[0x55u8, 0][..];
    assert_eq!(dec.feed(&mut input), None);
    assert!(!dec.in_frame());
}

#[test]
fn resyncs_after_garbage_truncation_and_oversize() {
    let good = encode_vec(9, b"payload");
    let mut wire = Vec::new();
    wire.extend_from_slice(b"\x13\x37garbage without delimiter");
    wire.push(0);
    wire.extend_from_slice(&good);
    // truncated frame: cut in the middle, the next frame's bytes follow
    let big = encode_vec(10, &[0xAA; 100]);
    wire.extend_from_slice(&big[..40]);
    wire.push(0);
    wire.extend_from_slice(&good);
    // oversize frame for a 64-byte decoder
    wire.extend_from_slice(&encode_vec(11, &[0x55; 200]));
    wire.extend_from_slice(&good);
    // lone delimiters are ignored
    wire.extend_from_slice(&[0, 0, 0]);
    wire.extend_from_slice(&good);
    let mut dec = Decoder::new([0u8; 64]);
    let mut input = &wire[..];
    let mut frames = 0;
    let mut drops = Vec::new();
    while let Some(r) = dec.feed(&mut input) {
        match r {
            Ok(f) => {
                assert_eq!(f.body, b"payload");
                frames += 1
            }
            Err(d) => drops.push(d),
        }
    }
    assert_eq!(frames, 4);
    assert_eq!(drops.len(), 3, "{drops:?}");
    assert!(drops.contains(&Dropped::Oversize));
    assert_eq!(dec.stats().frames, 4);
    assert_eq!(dec.stats().dropped_frames, 3);
    assert!(dec.stats().dropped_bytes > 200);
}

#[test]
fn short_frames_are_dropped() {
    // A valid COBS encoding of 3 bytes: too short for header + CRC.
    let (frames, drops) = decode_all(&[4, 1, 2, 3, 0], 64);
    assert!(frames.is_empty());
    assert_eq!(drops, [Dropped::TooShort]);
}

/// Every 1-, 2- and 3-bit error in a 640-byte raw frame is caught.
///
/// Exhaustive, not sampled. A frame is accepted iff
/// `crc32c(covered) ^ trailer == 0`, and that check is linear over GF(2)
/// in the error pattern, so each single-bit error `i` has a 32-bit
/// syndrome `s_i` and an error pattern goes unnoticed iff the XOR of its
/// syndromes is zero. All 1-bit errors are caught iff no `s_i` is 0; all
/// 2-bit iff the `s_i` are distinct; all 3-bit iff no `s_i ^ s_j` equals
/// another `s_k`. That covers all 7.0e9 triples in 13 million lookups.
#[test]
fn bit_errors_in_a_640_byte_frame_are_detected() {
    let body: Vec<u8> = (0..640 - OVERHEAD).map(|i| (i * 31 % 256) as u8).collect();
    let mut raw = std::vec![1u8, 0x30];
    raw.extend_from_slice(&body);
    let crc = crc32c(&raw).to_le_bytes();
    raw.extend_from_slice(&crc);
    assert_eq!(raw.len(), 640);
    let check = |r: &[u8]| {
        let n = r.len();
        let mut t = [0u8; 4];
        t.copy_from_slice(&r[n - 4..]);
        crc32c(&r[..n - 4]) ^ u32::from_le_bytes(t)
    };
    assert_eq!(check(&raw), 0);
    let bits = raw.len() * 8;
    let syndromes: Vec<u32> = (0..bits)
        .map(|i| {
            let mut r = raw.clone();
            r[i / 8] ^= 1 << (i % 8);
            check(&r)
        })
        .collect();
    // Linearity holds: a 2-bit error's syndrome is the XOR of its parts.
    let mut r = raw.clone();
    r[3] ^= 0x10;
    r[600] ^= 0x01;
    assert_eq!(check(&r), syndromes[3 * 8 + 4] ^ syndromes[600 * 8]);
    assert!(syndromes.iter().all(|&s| s != 0), "a 1-bit error passes");
    let set: std::collections::HashSet<u32> = syndromes.iter().copied().collect();
    assert_eq!(set.len(), bits, "a 2-bit error passes");
    for i in 0..bits {
        for j in i + 1..bits {
            // s_i ^ s_j == s_i or s_j would need a zero syndrome, excluded above.
            assert!(
                !set.contains(&(syndromes[i] ^ syndromes[j])),
                "a 3-bit error passes at {i},{j}"
            );
        }
    }
    // And through the real decoder: flipped bits on the wire never yield
    // a frame with a different body.
    let wire = encode_vec(0x30, &body);
    for bit in 0..wire.len() * 8 {
        let mut w = wire.clone();
        w[bit / 8] ^= 1 << (bit % 8);
        let (frames, _) = decode_all(&w, 1024);
        assert!(frames.iter().all(|(_, b)| *b == body), "wire bit {bit}");
    }
}

#[test]
fn encode_refuses_what_does_not_fit() {
    let mut out = [0u8; 32];
    assert_eq!(
        encode_raw(1, 1, &[1u8; 40], &mut out),
        Err(EncodeError::TooLarge)
    );
    let mut tiny = [0u8; 4];
    assert_eq!(encode_raw(1, 1, &[], &mut tiny), Err(EncodeError::TooLarge));
    assert_eq!(
        encode_with(1, 1, 10, &mut [0u8; 64], |b| Some(b.len() + 1)),
        Err(EncodeError::TooLarge)
    );
}

/// The CRC of two parts, the second appended to the first's, is the CRC of
/// both at once (split frames are sealed this way).
#[test]
fn crc_appended_across_parts_is_the_crc_of_the_whole() {
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 + 1) as u8).collect();
    for cut in [0, 1, 7, 8, 500, 999, 1000] {
        let (a, b) = data.split_at(cut);
        assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data), "cut at {cut}");
    }
}
