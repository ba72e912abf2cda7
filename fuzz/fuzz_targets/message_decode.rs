//! One frame body of a data-chosen kind through `Message::decode` and back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pickup_tests::fuzz_proto::decode_message(data);
});
