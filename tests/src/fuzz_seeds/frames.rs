//! Seeds of the `frame_decoder` and `message_decode` targets: every kind's
//! wire form, whole, bytewise and in awkward splits, and each kind's body.

use super::{kind_and_body, seed, slug, wire, wire_prefixed, Seed};
use crate::samples::{every_kind, of_kind};
use pickup_proto::message::{Data, Kind, Message};

/// The `frame_decoder` target's first byte: the framing (see
/// `fuzz_proto::decode_stream`).
const COBS: u8 = 0;
const PREFIXED: u8 = 1;
const SWITCH_AT_MARKER: u8 = 2;

pub(super) fn frame_decoder_seeds() -> Vec<Seed> {
    let all: Vec<u8> = every_kind().iter().flat_map(|m| wire(m)).collect();
    let all_prefixed: Vec<u8> = every_kind().iter().flat_map(|m| wire_prefixed(m)).collect();
    let mut seeds = vec![
        // Whole stream in one piece (split bytes 255).
        seed(
            "frame_decoder",
            "every-kind-whole",
            [&[COBS, 255, 255, 255, 255][..], &all].concat(),
        ),
        // Fed a byte at a time.
        seed(
            "frame_decoder",
            "every-kind-bytewise",
            [&[COBS, 0, 0, 0, 0][..], &all].concat(),
        ),
        seed(
            "frame_decoder",
            "prefixed-every-kind-whole",
            [&[PREFIXED, 255, 255, 255, 255][..], &all_prefixed].concat(),
        ),
        seed(
            "frame_decoder",
            "prefixed-every-kind-bytewise",
            [&[PREFIXED, 0, 0, 0, 0][..], &all_prefixed].concat(),
        ),
    ];
    // The relay's switch: a Hello repeated in COBS, then length-prefixed
    // frames from the first marker on.
    let hello = wire(&of_kind(Kind::Hello));
    let mut switch = vec![SWITCH_AT_MARKER, 5, 2, 9, 1];
    switch.extend_from_slice(&hello);
    switch.extend(wire_prefixed(&Message::Keepalive));
    seeds.push(seed("frame_decoder", "switch-at-marker", switch));
    // Length-prefixed drops: a bad CRC, a length below 6, one over the
    // decoder's 512 bytes (skipped by its length), a good frame, then COBS
    // (the wrong framing, which loses the rest).
    let mut drops = vec![PREFIXED, 3, 17, 1, 64];
    let mut bad_crc = wire_prefixed(&Message::Keepalive);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x20;
    drops.extend(bad_crc);
    drops.extend_from_slice(&[0, 5, 0, 0, 1, 3, 0, 0, 0]);
    drops.extend_from_slice(&[0, 0x01, 0x03, 0]);
    drops.extend(std::iter::repeat_n(0x41u8, 0x301));
    drops.extend(wire_prefixed(&of_kind(Kind::Grant)));
    drops.extend_from_slice(&hello);
    seeds.push(seed("frame_decoder", "prefixed-drops", drops));
    // Garbage, a cut frame, back-to-back delimiters, then good frames.
    let mut noisy = vec![COBS, 3u8, 17, 1, 64];
    noisy.extend_from_slice(b"\x07\x13garbage");
    noisy.push(0);
    let grant = wire(&of_kind(Kind::Grant));
    noisy.extend_from_slice(&grant[..grant.len() / 2]);
    noisy.extend_from_slice(&[0, 0, 0]);
    noisy.extend_from_slice(&grant);
    noisy.extend(wire(&Message::Keepalive));
    seeds.push(seed("frame_decoder", "noise-and-cut-frame", noisy));
    // A data frame with a 254-byte run of non-zero bytes (COBS block edge).
    let big = vec![0x41u8; 300];
    let data = wire(&Message::Data(Data {
        file: 2,
        offset: 70_000,
        bytes: &big,
    }));
    seeds.push(seed(
        "frame_decoder",
        "data-cobs-block-edge",
        [&[COBS, 7u8, 200, 1, 0][..], &data].concat(),
    ));
    seeds
}

pub(super) fn message_decode_seeds() -> Vec<Seed> {
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    every_kind()
        .iter()
        .map(|m| {
            let base = slug(m);
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            let name = if *n == 1 { base } else { format!("{base}-{n}") };
            seed("message_decode", &name, kind_and_body(m))
        })
        .collect()
}
