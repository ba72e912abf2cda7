//! `notice::Listener` or `notice::Sender` against a relay whose every
//! message comes from the data, checking that a notice reaches the
//! application once and verdicts go out only as given.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pickup_tests::fuzz_proto::drive_notice(data);
});
