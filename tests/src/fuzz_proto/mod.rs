//! `pickup-proto` driven by fuzzer bytes: the codecs, and the client state
//! machines against a fake relay. The fuzz targets `frame_decoder`,
//! `message_decode`, `upload_session` and `download_session` are one-liners
//! over the entry points here, and the same code runs in unit tests and in
//! `tests/fuzz_corpus.rs`. (The relay's side is [`crate::fuzz_relay`].)
//!
//! Each entry point takes arbitrary bytes, drives a part of the protocol
//! crate with them and panics only when an invariant that users rely on is
//! broken:
//!
//! | function           | drives                                       | checks                                              |
//! |--------------------|----------------------------------------------|-----------------------------------------------------|
//! | [`decode_stream`]  | [`frame::Decoder`] over a byte stream        | any split gives the same frames; message round trip |
//! | [`decode_message`] | [`Message::decode`] of one frame body        | round trip through [`Message::encode`]              |
//! | [`drive_upload`]   | [`upload::Session`] against a fuzzed relay   | sent data is the file's, no busy loop, …            |
//! | [`drive_download`] | [`download::Session`] against a fuzzed relay | only verified content is finished, no busy loop, …  |
//! | [`drive_notice`]   | `notice::Listener` or `notice::Sender`       | ids handed out once, verdicts only as given, …      |
//!
//! The drivers read their input as a setup prefix and then a list of
//! operations (one byte each, operands after it). [`Script`] writes such
//! inputs by name, for seed corpora and tests.
//!
//! ```text
//!   script.rs      the input language: Input reads it, Script writes it
//!   fake_relay.rs  plausible relay messages built from operand bytes
//!   check.rs       what a session may send, and a sink that checks its use
//!   decode.rs      decode_stream, decode_message
//!   upload.rs      drive_upload: the operation loop over upload::Session
//!   download.rs    drive_download: the operation loop over download::Session
//!   notice.rs      drive_notice: the loop over notice::Listener / notice::Sender
//!   notice/        listener.rs, sender.rs: each machine's checks and app calls
//! ```
//!
//! The drivers do not allocate (buffers are fixed arrays on the stack,
//! about 80 KiB), so a fuzzer spends its time in the protocol code.
//!
//! [`frame::Decoder`]: pickup_proto::frame::Decoder
//! [`Message::decode`]: pickup_proto::Message::decode
//! [`Message::encode`]: pickup_proto::Message::encode
//! [`upload::Session`]: pickup_proto::upload::Session
//! [`download::Session`]: pickup_proto::download::Session

use pickup_proto::code::Code;
use pickup_proto::frame;
use pickup_proto::message::ResumeToken;

mod check;
mod decode;
mod download;
mod fake_relay;
mod notice;
mod script;
#[cfg(test)]
mod tests;
mod upload;

pub use decode::{decode_message, decode_stream};
pub use download::drive_download;
pub use notice::{
    drive_notice, NOTICE_POLICY_SHIFT, NOTICE_REMEMBER, NOTICE_SENDER, NOTICE_SMALL_LEDGER,
    NOTICE_TINY_TIMERS,
};
pub use script::Script;
pub use upload::drive_upload;

/// Buffer for frames the sessions transmit: the documented minimum for the
/// largest `max_frame` a relay may announce.
const TX_BUF: usize = frame::max_encoded_len(frame::MAX_FRAME_LEN);
/// Largest frame a session here can send: the files are small.
const CHECK_FRAME: usize = 2048;
/// Rounds of `handle_timeout` + transmit after which a timer still in the
/// past is a busy loop.
const MAX_TIMER_ROUNDS: usize = 8;
/// Frames drained per transmit operation; sessions send a bounded amount.
const MAX_DRAIN: usize = 64;

/// Setup bit for [`drive_upload`]: resume with a token instead of announcing.
pub const UPLOAD_RESUME: u8 = 0x04;
/// Setup bit for [`drive_upload`]: answer challenges (instant upload).
pub const UPLOAD_INSTANT: u8 = 0x08;
/// Setup bit for [`drive_upload`]: cap the window at 256 bytes.
pub const UPLOAD_SMALL_WINDOW: u8 = 0x10;
/// Setup bit for [`drive_download`]: stop after the manifest.
pub const DOWNLOAD_MANIFEST_ONLY: u8 = 0x04;
/// Setup bit for [`drive_download`]: wait for a batch that is not ready.
pub const DOWNLOAD_WAIT: u8 = 0x08;
/// Setup bit for [`drive_download`]: the sink verifies
/// ([`download::Hashing::BySink`](pickup_proto::download::Hashing::BySink)).
pub const DOWNLOAD_SINK_HASHES: u8 = 0x40;

/// The files both fake ends agree on: 700 patterned bytes, `pickup`, empty.
pub const CONTENTS: [&[u8]; 3] = [&CONTENT_A, b"pickup", b""];
/// Names the drivers announce and the fake relay lists (the last three are
/// for nonsense manifests; two are invalid).
pub const NAMES: [&str; 6] = ["a.bin", "b.txt", "empty", "../up", "", "ok name"];
/// The resume token the fake relay grants.
pub const TOKEN: ResumeToken = ResumeToken([0x5a; 16]);

const CONTENT_A: [u8; 700] = {
    let mut a = [0u8; 700];
    let mut i = 0;
    while i < a.len() {
        a[i] = (i * 7 + 3) as u8;
        i += 1;
    }
    a
};

/// The pickup code the fake relay grants and the download asks for.
pub fn code() -> Code {
    Code::from_parts(8, 0x12_3456_789a).expect("the fuzzers' code fits 8 symbols")
}

/// What a driver run did, so tests can check that an input got somewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Operations executed.
    pub ops: u32,
    /// Frames the session transmitted.
    pub frames_sent: u32,
    /// Data bytes the session sent (upload) or wrote (download).
    pub data_bytes: u64,
    /// The session finished successfully.
    pub completed: bool,
    /// The session failed.
    pub failed: bool,
}

/// A `fmt::Write` that only counts, so `Display` impls run without allocating.
struct Discard(usize);

impl core::fmt::Write for Discard {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// Runs `value`'s `Display` impl (it must not panic) and returns the length.
fn display(value: &dyn core::fmt::Display) -> usize {
    use core::fmt::Write;
    let mut d = Discard(0);
    let _ = write!(d, "{value}");
    d.0
}
