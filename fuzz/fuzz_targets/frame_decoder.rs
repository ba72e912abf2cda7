//! Arbitrary bytes through `frame::Decoder` in data-chosen splits, in the
//! framing the first byte picks (COBS, length-prefixed, or COBS until the
//! marker); every frame that is a message must round-trip. See
//! `pickup_tests::fuzz_proto`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pickup_tests::fuzz_proto::decode_stream(data);
});
