//! Seeds of the `frame_decoder` and `message_decode` targets: every kind's
//! wire form, whole, bytewise and in awkward splits, and each kind's body.

use super::{kind_and_body, seed, slug, wire, Seed};
use crate::samples::{every_kind, of_kind};
use pickup_proto::message::{Data, Kind, Message};

pub(super) fn frame_decoder_seeds() -> Vec<Seed> {
    let all: Vec<u8> = every_kind().iter().flat_map(|m| wire(m)).collect();
    let mut seeds = vec![
        // Whole stream in one piece (split bytes 255).
        seed(
            "frame_decoder",
            "every-kind-whole",
            [&[255u8; 4][..], &all].concat(),
        ),
        // Fed a byte at a time.
        seed(
            "frame_decoder",
            "every-kind-bytewise",
            [&[0u8; 4][..], &all].concat(),
        ),
    ];
    // Garbage, a cut frame, back-to-back delimiters, then good frames.
    let mut noisy = vec![3u8, 17, 1, 64];
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
        [&[7u8, 200, 1, 0][..], &data].concat(),
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
