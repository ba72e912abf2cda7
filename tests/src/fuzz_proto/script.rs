//! The drivers' input language: a setup prefix, then operations of one
//! byte each with their operands after them. [`Input`] reads it for the
//! drivers; [`Script`] writes it by name for seeds and tests.

use pickup_proto::error::ErrorCode;
use pickup_proto::frame::{self, Decoder, Frame};
use pickup_proto::message::Message;

/// Operation bytes of the drivers' input (taken modulo [`OP_COUNT`]).
pub(super) const OP_CONNECT: u8 = 0;
pub(super) const OP_DISCONNECT: u8 = 1;
pub(super) const OP_ADVANCE: u8 = 2;
pub(super) const OP_FIRE_TIMER: u8 = 3;
pub(super) const OP_FRAME: u8 = 4;
pub(super) const OP_RELAY: u8 = 5;
pub(super) const OP_TRANSMIT: u8 = 6;
pub(super) const OP_EVENTS: u8 = 7;
pub(super) const OP_SETTLE: u8 = 8;
pub(super) const OP_COUNT: u8 = 9;

/// Reads operands from fuzzer bytes. Running out of input ends the run:
/// every reader returns `None` then.
pub(super) struct Input<'a> {
    pub(super) data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(super) fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u16()?) | u32::from(self.u16()?) << 16)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        Some(u64::from(self.u32()?) | u64::from(self.u32()?) << 32)
    }

    pub(super) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    pub(super) fn error_code(&mut self) -> Option<ErrorCode> {
        let b = self.byte()?;
        Some(ErrorCode::ALL[usize::from(b) % ErrorCode::ALL.len()])
    }

    /// A frame for `OP_FRAME`: kind, body length, body.
    pub(super) fn frame(&mut self) -> Option<Frame<'a>> {
        let kind = self.byte()?;
        let len = self.byte()?;
        Some(Frame {
            version: pickup_proto::PROTOCOL_VERSION,
            kind,
            body: self.bytes(usize::from(len))?,
        })
    }
}

/// Writes driver inputs operation by operation: the seed corpora and the
/// tests use it so that they say what they do.
///
/// `N` is the capacity in bytes; going past it panics (this is for seeds
/// and tests, which know their size).
///
/// ```
/// # use pickup_tests::fuzz_proto::{drive_upload, Script};
/// let mut s = Script::<64>::new(&[0]);
/// s.connect().transmit().advance(20_000).settle();
/// drive_upload(s.as_bytes());
/// ```
#[derive(Debug, Clone)]
pub struct Script<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Script<N> {
    /// A script that starts with the driver's setup bytes.
    pub fn new(setup: &[u8]) -> Self {
        let mut s = Script {
            buf: [0; N],
            len: 0,
        };
        s.push(setup);
        s
    }

    pub(super) fn push(&mut self, bytes: &[u8]) -> &mut Self {
        let end = self.len + bytes.len();
        assert!(end <= N, "script longer than its {N}-byte buffer");
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
        self
    }

    /// The link comes up: `handle_connected`.
    pub fn connect(&mut self) -> &mut Self {
        self.push(&[OP_CONNECT])
    }

    /// The link goes down: `handle_disconnected`.
    pub fn disconnect(&mut self) -> &mut Self {
        self.push(&[OP_DISCONNECT])
    }

    /// The clock moves on by `ms` milliseconds (no timer runs).
    pub fn advance(&mut self, ms: u16) -> &mut Self {
        let [a, b] = ms.to_le_bytes();
        self.push(&[OP_ADVANCE, a, b])
    }

    /// The clock jumps to the session's next timer, which fires.
    pub fn fire_timer(&mut self) -> &mut Self {
        self.push(&[OP_FIRE_TIMER])
    }

    /// The relay sends a frame of `kind` with `body` (at most 255 bytes).
    pub fn frame(&mut self, kind: u8, body: &[u8]) -> &mut Self {
        let len = u8::try_from(body.len()).expect("a script frame body is at most 255 bytes");
        self.push(&[OP_FRAME, kind, len]).push(body)
    }

    /// The relay sends `msg`, in its real wire encoding (body at most 255 bytes).
    pub fn message(&mut self, msg: &Message<'_>) -> &mut Self {
        let mut wire = [0u8; frame::max_encoded_len(512)];
        let n = msg
            .encode(512, &mut wire)
            .expect("a script message fits 512 bytes");
        let mut decoder = Decoder::new([0u8; 512]);
        let mut input = &wire[..n];
        match decoder.feed(&mut input) {
            Some(Ok(f)) => {
                let (kind, body) = (f.kind, f.body);
                self.frame(kind, body)
            }
            other => panic!("an encoded message does not decode: {other:?}"),
        }
    }

    /// Operand bytes for the driver's built-in relay messages (see the driver).
    pub fn relay(&mut self, operands: &[u8]) -> &mut Self {
        self.push(&[OP_RELAY]).push(operands)
    }

    /// The driver sends everything the session has to send.
    pub fn transmit(&mut self) -> &mut Self {
        self.push(&[OP_TRANSMIT])
    }

    /// The driver takes every pending event.
    pub fn events(&mut self) -> &mut Self {
        self.push(&[OP_EVENTS])
    }

    /// The driver runs due timers and transmits until none is due.
    pub fn settle(&mut self) -> &mut Self {
        self.push(&[OP_SETTLE])
    }

    /// The input written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}
