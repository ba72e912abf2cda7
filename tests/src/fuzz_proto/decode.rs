//! The codec entry points: [`decode_stream`] for the frame decoder,
//! [`decode_message`] for message bodies.

use pickup_proto::frame::{self, Decoder, Frame, Framing};
use pickup_proto::message::{self, Message};

use super::display;

/// Largest raw frame the decoder in [`decode_stream`] accepts: small, so
/// the fuzzer reaches the oversize path easily.
const STREAM_FRAME: usize = 512;
/// Largest raw frame [`decode_message`] tries (fuzz inputs are shorter).
const MESSAGE_FRAME: usize = 8192;

/// A fingerprint of everything a decoder produced, to compare two runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StreamDigest {
    pub(super) crc: u32,
    pub(super) frames: u64,
    pub(super) messages: u64,
    pub(super) drops: u64,
    pub(super) stats: frame::Stats,
}

/// How [`decode_stream`]'s decoder delimits frames (PROTOCOL.md §2,
/// §2.1), chosen by the input's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// COBS throughout: a terminal, or a serial link.
    Cobs,
    /// Length-prefixed from the first byte: a terminal after its `Welcome`.
    Prefixed,
    /// COBS until a frame begins with the marker, then length-prefixed:
    /// the relay after a `Welcome` that agreed on it.
    SwitchAtMarker,
}

impl Mode {
    pub(super) fn of(byte: u8) -> Mode {
        match byte % 3 {
            0 => Mode::Cobs,
            1 => Mode::Prefixed,
            _ => Mode::SwitchAtMarker,
        }
    }
}

/// Feeds `stream` to a decoder in `mode`, in chunks whose lengths cycle
/// through `splits` (each plus one; empty means all at once) and
/// fingerprints the frames and drops, round-tripping every frame that
/// decodes as a message.
pub(super) fn run_decoder(mode: Mode, stream: &[u8], splits: &[u8]) -> StreamDigest {
    let mut decoder = Decoder::new([0u8; STREAM_FRAME]);
    match mode {
        Mode::Cobs => {}
        Mode::Prefixed => decoder.set_framing(Framing::LengthPrefixed),
        Mode::SwitchAtMarker => decoder.switch_at_marker(),
    }
    let mut record = [0u8; STREAM_FRAME + 3];
    let mut wire = [0u8; frame::max_encoded_len(STREAM_FRAME)];
    let mut scratch = [0u8; STREAM_FRAME];
    let mut digest = StreamDigest {
        crc: 0,
        frames: 0,
        messages: 0,
        drops: 0,
        stats: frame::Stats::default(),
    };
    let mut rest = stream;
    let mut turn = 0usize;
    while !rest.is_empty() {
        let take = match splits.get(turn % splits.len().max(1)) {
            Some(&s) => usize::from(s) + 1,
            None => rest.len(),
        }
        .min(rest.len());
        turn += 1;
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        let mut input = chunk;
        while let Some(result) = decoder.feed(&mut input) {
            match result {
                Ok(f) => {
                    digest.frames += 1;
                    if check_round_trip(f, &mut wire, &mut scratch) {
                        digest.messages += 1;
                    }
                    let n = f.body.len();
                    record[0] = f.version;
                    record[1] = f.kind;
                    record[2] = (n % 251) as u8;
                    record[3..3 + n].copy_from_slice(f.body);
                    digest.crc = frame::crc32c(&record[..3 + n]) ^ digest.crc.rotate_left(5);
                }
                Err(why) => {
                    digest.drops += 1;
                    digest.crc = digest.crc.rotate_left(3) ^ why as u32;
                }
            }
        }
    }
    digest.stats = decoder.stats();
    digest
}

/// Decodes a frame as a message; if it is one, encodes it again into
/// `wire`, decodes that through a decoder over `scratch` and checks that the
/// same message comes back. Returns whether the frame was a message.
fn check_round_trip(f: Frame<'_>, wire: &mut [u8], scratch: &mut [u8]) -> bool {
    let msg = match Message::decode(f) {
        Ok(m) => m,
        Err(e) => {
            // Every decode error maps to an answer for the peer.
            let _ = (e.code(), e.kind(), display(&e));
            return false;
        }
    };
    assert_eq!(msg.kind() as u8, f.kind);
    // Re-encoding never needs more room than the frame it came from:
    // postcard writes canonical varints, never longer than what it accepts.
    let raw_len = frame::OVERHEAD + f.body.len();
    let n = match msg.encode(raw_len, wire) {
        Ok(n) => n,
        Err(e) => panic!("{msg:?} decoded from {raw_len} raw bytes does not re-encode: {e:?}"),
    };
    let mut decoder = Decoder::new(scratch);
    let mut input = &wire[..n];
    let again = match decoder.feed(&mut input) {
        Some(Ok(g)) => g,
        other => panic!("re-encoded {msg:?} does not decode as a frame: {other:?}"),
    };
    assert!(input.is_empty(), "one message encodes as exactly one frame");
    let back = Message::decode(again).expect("a re-encoded message decodes");
    assert_eq!(back, msg, "message round trip");
    match msg {
        Message::FileAnnounce(a) => {
            let _ = message::validate_name(a.name);
        }
        Message::Grant(g) => {
            display(&g.code);
        }
        Message::Error(e) => {
            display(&e.code);
        }
        _ => {}
    }
    true
}

/// Feeds arbitrary bytes to a [`frame::Decoder`] and checks what comes out.
///
/// The first byte (if present) chooses the framing (`Mode`: its value
/// modulo 3 is COBS, length-prefixed, or COBS until the marker). The next
/// four choose the split: the rest is fed in chunks of `byte + 1` bytes
/// cycling through them. The same stream is also fed in one piece; both
/// runs must produce the same frames, drops and statistics. Every frame
/// that decodes as a [`Message`] must survive an encode / decode round
/// trip. Returns how many frames decoded.
pub fn decode_stream(data: &[u8]) -> u64 {
    let (mode, data) = match data.split_first() {
        Some((&m, rest)) => (Mode::of(m), rest),
        None => (Mode::Cobs, data),
    };
    let (splits, stream) = data.split_at(data.len().min(4));
    let whole = run_decoder(mode, stream, &[]);
    let split = run_decoder(mode, stream, splits);
    assert_eq!(whole, split, "the split of the input changed the result");
    let stats = whole.stats;
    assert_eq!(stats.frames, whole.frames);
    assert_eq!(stats.dropped_frames, whole.drops);
    assert!(stats.dropped_bytes <= stream.len() as u64);
    whole.frames
}

/// Decodes `data[1..]` as the body of a frame of kind `data[0]` and, if it
/// is a valid message, checks the encode / decode round trip. Returns
/// whether it was a valid message.
pub fn decode_message(data: &[u8]) -> bool {
    let Some((&kind, body)) = data.split_first() else {
        return false;
    };
    if body.len() + frame::OVERHEAD > MESSAGE_FRAME {
        return false;
    }
    let mut wire = [0u8; frame::max_encoded_len(MESSAGE_FRAME)];
    let mut scratch = [0u8; MESSAGE_FRAME];
    let f = Frame {
        version: pickup_proto::PROTOCOL_VERSION,
        kind,
        body,
    };
    check_round_trip(f, &mut wire, &mut scratch)
}
