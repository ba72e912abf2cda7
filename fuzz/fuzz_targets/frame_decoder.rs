//! Arbitrary bytes through `frame::Decoder` in data-chosen splits; every
//! frame that is a message must round-trip. See `pickup_proto::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pickup_proto::fuzzing::decode_stream(data);
});
