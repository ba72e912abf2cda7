//! `download::Session` against a relay whose every message comes from the
//! data, writing into a sink that checks only verified files are finished.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pickup_tests::fuzz_proto::drive_download(data);
});
