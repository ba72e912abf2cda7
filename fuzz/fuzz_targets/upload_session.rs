//! `upload::Session` against a relay whose every message comes from the data.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pickup_tests::fuzz_proto::drive_upload(data);
});
