//! The relay's sans-IO `session::Session` over its in-memory store, with up
//! to three terminals and crashes, driven by the data.
//! See `pickup_tests::fuzz_relay`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pickup_tests::fuzz_relay::drive_relay(data);
});
