//! Frames: the unit that crosses a byte stream.
//!
//! ```text
//!  raw frame (before COBS)
//!  ┌─────────┬──────┬──────────────────────┬─────────────────────┐
//!  │ version │ kind │ body (postcard)      │ CRC-32C, LE, 4 bytes│
//!  │ 1 byte  │1 byte│ 0..=max_frame-6 bytes│ over version..body  │
//!  └─────────┴──────┴──────────────────────┴─────────────────────┘
//!  on the wire: COBS(raw frame) ‖ 0x00
//! ```
//!
//! COBS removes every zero byte from the frame so that 0x00 can only mean
//! "frame ends here": a receiver that joins mid-stream, or loses bytes, finds
//! the next frame boundary at the next zero. The CRC-32C (Castagnoli)
//! catches every error of up to three flipped bits in any frame up to
//! 64 KiB (a unit test proves it exhaustively for 640-byte frames) and every
//! burst of up to 32 bits.
//!
//! COBS serves every link, and is all a serial line ever sees. On a
//! reliable byte stream (TCP, TLS) the peers may agree on a second
//! [`Framing`], the same raw frame behind a length prefix, which costs no
//! pass over the bytes (see the module `length_prefixed`, feature
//! `length-prefixed`). Sizes are counted on the raw frame: a peer's
//! `max_frame` is the largest raw frame it accepts, and the encoded form
//! (either framing) is at most [`max_encoded_len`] bytes.
//!
//! Nothing here panics on input or allocates: [`Decoder`] works in a buffer
//! the caller sizes, and [`encode_with`] in the caller's output slice.

#[cfg(not(feature = "fast-crc"))]
use crc::{Crc, CRC_32_ISCSI};

/// Bytes of header: version and kind.
pub const HEADER_LEN: usize = 2;
/// Bytes of CRC trailer.
pub const CRC_LEN: usize = 4;
/// Header plus trailer: the smallest raw frame (an empty body).
pub const OVERHEAD: usize = HEADER_LEN + CRC_LEN;
/// The smallest `max_frame` a peer may announce.
pub const MIN_FRAME_LEN: usize = 64;
/// The largest `max_frame` a peer may announce.
pub const MAX_FRAME_LEN: usize = 65_536;

/// The largest encoded size (COBS plus delimiter, or with the feature
/// `length-prefixed` also the length prefix) of a raw frame of `raw_len`
/// bytes.
pub const fn max_encoded_len(raw_len: usize) -> usize {
    let cobs = raw_len + raw_len / 254 + 2;
    #[cfg(any(test, feature = "length-prefixed"))]
    if raw_len + length_prefixed::PREFIX_LEN > cobs {
        // Below 508 bytes the prefix costs more than COBS's overhead.
        return raw_len + length_prefixed::PREFIX_LEN;
    }
    cobs
}

/// How raw frames are delimited on a byte stream.
///
/// Every link starts in [`Framing::Cobs`]; `Hello` and `Welcome` always
/// travel in it. Peers that both offer
/// [`CAP_LENGTH_PREFIX`](crate::message::CAP_LENGTH_PREFIX) on a reliable
/// transport switch to `Framing::LengthPrefixed` for every frame after
/// the `Welcome` (PROTOCOL.md §2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Framing {
    /// COBS plus a 0x00 delimiter: resynchronises after noise.
    #[default]
    Cobs,
    /// A marker byte and a 3-byte length before the raw frame: no pass over
    /// the bytes, for reliable streams only.
    #[cfg(any(test, feature = "length-prefixed"))]
    LengthPrefixed,
}

impl Framing {
    /// The capability bits a `Hello` or `Welcome` carries for this framing
    /// when `wanted`: [`CAP_LENGTH_PREFIX`](crate::message::CAP_LENGTH_PREFIX),
    /// or nothing without the feature `length-prefixed`.
    pub fn offer(wanted: bool) -> u32 {
        if cfg!(any(test, feature = "length-prefixed")) && wanted {
            crate::message::CAP_LENGTH_PREFIX
        } else {
            0
        }
    }

    /// The framing of every frame after the `Welcome`, for a side that
    /// [offered](Framing::offer) it when `wanted` and whose peer's caps are
    /// `peer_caps`.
    pub fn negotiated(wanted: bool, peer_caps: u32) -> Framing {
        #[cfg(any(test, feature = "length-prefixed"))]
        if wanted && peer_caps & crate::message::CAP_LENGTH_PREFIX != 0 {
            return Framing::LengthPrefixed;
        }
        let _ = (wanted, peer_caps);
        Framing::Cobs
    }
}

/// How frames to one peer are written: the framing and the peer's
/// `max_frame`. A bare `usize` converts to COBS framing, which is what
/// every frame before the `Welcome` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Format {
    /// How frames are delimited.
    pub framing: Framing,
    /// The largest raw frame the peer accepts.
    pub max_frame: usize,
}

impl From<usize> for Format {
    fn from(max_frame: usize) -> Format {
        Format {
            framing: Framing::Cobs,
            max_frame,
        }
    }
}

/// CRC-32C, the iSCSI polynomial: better error detection than CRC-32 (IEEE)
/// at the frame sizes used here, and hardware support on many CPUs.
///
/// Without `fast-crc` the CRC is computed bit by bit, with no lookup table:
/// 1 KiB less flash on an MCU, and still far faster than any UART.
#[cfg(not(feature = "fast-crc"))]
static CASTAGNOLI: Crc<u32, crc::NoTable> = Crc::<u32, crc::NoTable>::new(&CRC_32_ISCSI);

/// CRC-32C of `data`.
#[cfg(not(feature = "fast-crc"))]
pub fn crc32c(data: &[u8]) -> u32 {
    CASTAGNOLI.checksum(data)
}

/// CRC-32C of `data`, with the CPU's CRC instructions where it has them.
#[cfg(feature = "fast-crc")]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// The CRC-32C of bytes that follow bytes whose CRC-32C is `crc`.
#[cfg(all(any(test, feature = "length-prefixed"), not(feature = "fast-crc")))]
fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    // The register is the CRC before its final xor (CRC-32C's `xorout`
    // is all ones); the digest reflects the initial value it is given.
    let mut digest = CASTAGNOLI.digest_with_initial((crc ^ !0).reverse_bits());
    digest.update(data);
    digest.finalize()
}

/// The CRC-32C of bytes that follow bytes whose CRC-32C is `crc`.
#[cfg(all(any(test, feature = "length-prefixed"), feature = "fast-crc"))]
fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// A decoded, CRC-checked frame: a view into the decoder's buffer, or
/// into the input it was fed (see [`Decoder::feed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Protocol version of the sender.
    pub version: u8,
    /// Message kind; see [`crate::message::Kind`].
    pub kind: u8,
    /// The postcard body.
    pub body: &'a [u8],
}

/// Why the decoder threw bytes away. Dropping is normal on a noisy line: the
/// decoder has already resynchronised when it reports one (but for
/// [`Dropped::WrongFraming`], after which a stream cannot be trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Dropped {
    /// A length-prefixed frame did not start with its marker byte: the peer
    /// speaks COBS, or the stream lost its place. Nothing after it can be
    /// delimited, so the decoder reports this once and drops the rest of
    /// the stream until [`Decoder::reset`].
    WrongFraming,
    /// The CRC did not match: bits were flipped or bytes lost.
    BadCrc,
    /// The bytes were not valid COBS (a frame cut short, or garbage).
    BadEncoding,
    /// The frame was longer than the decoder's buffer; skipped to the next delimiter.
    Oversize,
    /// Fewer bytes than a header and CRC.
    TooShort,
}

/// What a [`Decoder`] has seen, for logs and link-quality reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Frames that passed every check.
    pub frames: u64,
    /// Frames thrown away (any [`Dropped`] reason).
    pub dropped_frames: u64,
    /// Bytes that were part of dropped frames.
    pub dropped_bytes: u64,
}

/// An incremental frame decoder over a caller-sized buffer.
///
/// Feed it bytes in any split (one byte from a UART interrupt, 64 KiB from a
/// TCP read, a fuzzer's input); it returns each frame as soon as its
/// delimiter arrives. `B` is the buffer for one raw frame, so its length is
/// the largest frame this side accepts: `[u8; N]` on an MCU, a boxed slice
/// on a host.
///
/// ```
/// # use pickup_proto::frame::{Decoder, encode_raw};
/// let mut wire = [0u8; 64];
/// let n = encode_raw(1, 0x20, b"hi", &mut wire).unwrap();
/// let mut decoder = Decoder::new([0u8; 64]);
/// let mut input = &wire[..n];
/// let frame = decoder.feed(&mut input).unwrap().unwrap();
/// assert_eq!((frame.kind, frame.body), (0x20, &b"hi"[..]));
/// ```
#[derive(Debug)]
pub struct Decoder<B> {
    buf: B,
    len: usize,
    cobs: cobs::DecoderState,
    /// Skipping to the next delimiter after a dropped frame.
    skipping: bool,
    /// Bytes of the current frame consumed so far (for `dropped_bytes`).
    consumed: u64,
    stats: Stats,
    /// Where a length-prefixed frame stands; `None` while decoding COBS.
    #[cfg(any(test, feature = "length-prefixed"))]
    prefixed: Option<length_prefixed::State>,
}

impl<B: AsMut<[u8]> + AsRef<[u8]>> Decoder<B> {
    /// A decoder that accepts raw frames up to `buf.len()` bytes.
    pub fn new(buf: B) -> Self {
        Decoder {
            buf,
            len: 0,
            cobs: cobs::DecoderState::Idle,
            skipping: false,
            consumed: 0,
            stats: Stats::default(),
            #[cfg(any(test, feature = "length-prefixed"))]
            prefixed: None,
        }
    }

    /// The framing the decoder expects (after the marker, if it was told
    /// to switch at it, `Decoder::switch_at_marker`).
    pub fn framing(&self) -> Framing {
        #[cfg(any(test, feature = "length-prefixed"))]
        if self.prefixed.is_some() {
            return Framing::LengthPrefixed;
        }
        Framing::Cobs
    }

    /// Expects `framing` from the next byte on. Drivers call it between
    /// frames, right after the frame that switched the link (PROTOCOL.md
    /// §2.1), with the rest of the same read still to feed; a partial frame
    /// is forgotten. Setting the framing already in use changes nothing.
    pub fn set_framing(&mut self, framing: Framing) {
        #[cfg(any(test, feature = "length-prefixed"))]
        let pending = self.prefixed.is_some_and(|s| s.pending());
        #[cfg(not(any(test, feature = "length-prefixed")))]
        let pending = false;
        if framing == self.framing() && !pending {
            return;
        }
        self.reset();
        #[cfg(any(test, feature = "length-prefixed"))]
        {
            self.prefixed = match framing {
                Framing::Cobs => None,
                Framing::LengthPrefixed => Some(length_prefixed::State::default()),
            };
        }
    }

    /// Counts of frames decoded and dropped so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Forgets a partial frame, e.g. after the link was re-established.
    pub fn reset(&mut self) {
        self.len = 0;
        self.cobs = cobs::DecoderState::Idle;
        self.skipping = false;
        self.consumed = 0;
        #[cfg(any(test, feature = "length-prefixed"))]
        if let Some(state) = self.prefixed.as_mut() {
            *state = state.restart();
        }
    }

    /// Whether the decoder is inside a frame: one partly received, or the
    /// rest of a dropped one being skipped up to its delimiter. A driver
    /// that releases an idle decoder must keep it while this holds, or the
    /// tail of an oversize frame would be read as frames of its own.
    pub fn in_frame(&self) -> bool {
        #[cfg(any(test, feature = "length-prefixed"))]
        if let Some(state) = self.prefixed.filter(|s| !s.pending()) {
            return state.in_frame();
        }
        self.consumed > 0 || self.skipping
    }

    fn drop_frame(&mut self, why: Dropped, skip_rest: bool) -> Dropped {
        self.stats.dropped_frames += 1;
        self.stats.dropped_bytes += self.consumed;
        self.len = 0;
        self.consumed = 0;
        self.cobs = cobs::DecoderState::Idle;
        self.skipping = skip_rest;
        why
    }

    /// Consumes bytes from the front of `input` until a frame completes or
    /// is dropped, or `input` is empty (`None`). Call it again with the same
    /// `input` until it returns `None`.
    ///
    /// The frame is a view into the decoder's buffer, or, for a
    /// length-prefixed frame that `input` holds whole, into `input` itself:
    /// such a frame is checked where it lies and never copied.
    pub fn feed<'f, 'i: 'f>(
        &'f mut self,
        input: &mut &'i [u8],
    ) -> Option<Result<Frame<'f>, Dropped>> {
        #[cfg(any(test, feature = "length-prefixed"))]
        if self.prefixed.is_some() {
            return Some(match self.feed_prefixed(input)? {
                Ok(length_prefixed::Found::Buffered(len)) => Ok(self.view(len)),
                Ok(length_prefixed::Found::InPlace(raw)) => Ok(Frame::of_checked(raw)),
                Err(dropped) => Err(dropped),
            });
        }
        Some(self.feed_cobs(input)?.map(|len| self.view(len)))
    }

    /// [`Decoder::feed`] in COBS; a frame is returned as its raw length,
    /// for [`Decoder::view`].
    fn feed_cobs(&mut self, input: &mut &[u8]) -> Option<Result<usize, Dropped>> {
        // How many bytes at the front of `input` are known to hold no zero.
        // In a COBS stream zeros are only delimiters, so one scan to the
        // next zero covers a whole frame's runs (see `bulk_copy`).
        #[cfg(any(test, feature = "std"))]
        let mut horizon = 0usize;
        while let Some((&byte, rest)) = input.split_first() {
            *input = rest;
            #[cfg(any(test, feature = "std"))]
            {
                horizon = horizon.saturating_sub(1);
            }
            if self.skipping {
                if byte == 0 {
                    self.skipping = false;
                } else {
                    self.stats.dropped_bytes += 1;
                }
                continue;
            }
            if byte == 0 && self.consumed == 0 {
                // Back-to-back delimiters: an empty frame, which senders use
                // to flush a line. Not an error.
                self.cobs = cobs::DecoderState::Idle;
                continue;
            }
            self.consumed += 1;
            #[cfg(any(test, feature = "std"))]
            if let Some(run) = self.bulk_copy(byte, input, &mut horizon) {
                // Fast path: `byte` began (or continued) a run of plain data
                // bytes, copied as a block; `run` more were taken from `input`.
                self.consumed += run as u64;
                continue;
            }
            match self.cobs.feed(byte) {
                Ok(cobs::DecodeResult::NoData) | Ok(cobs::DecodeResult::DataStart) => {}
                Ok(cobs::DecodeResult::DataContinue(b)) => {
                    let buf = self.buf.as_mut();
                    match buf.get_mut(self.len) {
                        Some(slot) => {
                            *slot = b;
                            self.len += 1;
                        }
                        None => return Some(Err(self.drop_frame(Dropped::Oversize, true))),
                    }
                }
                Ok(cobs::DecodeResult::DataComplete) => return Some(self.finish()),
                Err(_) => {
                    // A zero inside a COBS run: the frame was cut short and
                    // the zero already starts the next one.
                    return Some(Err(self.drop_frame(Dropped::BadEncoding, byte != 0)));
                }
            }
        }
        None
    }

    /// Copies plain data bytes in bulk while the COBS state is inside a run:
    /// the state machine only needs to see code bytes and zeros. Returns
    /// `None` (nothing done) when `byte` must go through the state machine.
    ///
    /// `horizon` counts the bytes at the front of `input` known to hold no
    /// zero; it is extended with one `memchr` to the next zero only when a
    /// run reaches past it. A run is at most 254 bytes, so scanning per run
    /// would start a search every 254 bytes; this starts about one per
    /// frame.
    ///
    /// Hosts only (`std`): an MCU reads a UART a few bytes at a time, where
    /// the byte-wise state machine is as fast, and the fast path with
    /// `memchr` costs its image about 1 KiB of flash.
    #[cfg(any(test, feature = "std"))]
    fn bulk_copy(&mut self, byte: u8, input: &mut &[u8], horizon: &mut usize) -> Option<usize> {
        let (remaining, chain) = match self.cobs {
            cobs::DecoderState::Grab(n) if n > 0 => (n, false),
            cobs::DecoderState::GrabChain(n) if n > 0 => (n, true),
            _ => return None,
        };
        if byte == 0 {
            return None;
        }
        // `byte` plus up to `remaining - 1` more bytes are data, as long as
        // none of them is a zero (a zero means the frame was cut short, which
        // the state machine reports) and they fit the buffer.
        let buf = self.buf.as_mut();
        let room = buf.len().checked_sub(self.len)?;
        let want = usize::from(remaining) - 1;
        let avail = want.min(input.len());
        if *horizon < avail {
            *horizon = memchr::memchr(0, input).unwrap_or(input.len());
        }
        let take = avail.min(*horizon);
        if room < take + 1 {
            return None;
        }
        buf[self.len] = byte;
        buf[self.len + 1..self.len + 1 + take].copy_from_slice(&input[..take]);
        self.len += take + 1;
        *input = &input[take..];
        *horizon -= take;
        let left = remaining - 1 - take as u8;
        self.cobs = if chain {
            cobs::DecoderState::GrabChain(left)
        } else {
            cobs::DecoderState::Grab(left)
        };
        Some(take)
    }

    /// Checks the raw frame in `buf[..len]` and returns its length, or
    /// drops it.
    fn finish(&mut self) -> Result<usize, Dropped> {
        let len = self.len;
        let sound = check(&self.buf.as_ref()[..len]);
        self.checked(sound).map(|()| len)
    }

    /// Counts a raw frame that [`check`] passed (`Ok`), or drops it.
    fn checked(&mut self, sound: Result<(), Dropped>) -> Result<(), Dropped> {
        if let Err(why) = sound {
            return Err(self.drop_frame(why, false));
        }
        self.stats.frames += 1;
        self.len = 0;
        self.consumed = 0;
        Ok(())
    }

    /// The frame [`Decoder::finish`] checked, `len` bytes at the front of
    /// the buffer.
    fn view(&self, len: usize) -> Frame<'_> {
        Frame::of_checked(&self.buf.as_ref()[..len])
    }
}

/// Whether a raw frame is long enough to be one and its CRC matches.
fn check(raw: &[u8]) -> Result<(), Dropped> {
    if raw.len() < OVERHEAD {
        return Err(Dropped::TooShort);
    }
    let (covered, trailer) = raw.split_at(raw.len() - CRC_LEN);
    let mut crc = [0u8; CRC_LEN];
    crc.copy_from_slice(trailer);
    if crc32c(covered) != u32::from_le_bytes(crc) {
        return Err(Dropped::BadCrc);
    }
    Ok(())
}

impl<'a> Frame<'a> {
    /// The frame in `raw`, which [`check`] passed (so it is at least
    /// [`OVERHEAD`] bytes).
    fn of_checked(raw: &'a [u8]) -> Frame<'a> {
        Frame {
            version: raw[0],
            kind: raw[1],
            body: &raw[HEADER_LEN..raw.len() - CRC_LEN],
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// The output buffer (or the peer's `max_frame`) is too small for this message.
    TooLarge,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("message does not fit in a frame")
    }
}

/// Encodes one frame into `out`, writing the body with `write_body`.
///
/// `format` is the peer's `max_frame` (a `usize`: COBS) or a [`Format`]
/// naming the framing too. `write_body` gets the space available for the
/// body and returns how many bytes it wrote (or `None` if it did not fit).
/// The raw frame is built at the back of `out` and COBS-encoded forwards in
/// place, so no second buffer is needed: this matters on a device with a
/// few KiB of RAM. Returns the encoded length including the 0x00 delimiter
/// (or the length prefix).
pub fn encode_with(
    version: u8,
    kind: u8,
    format: impl Into<Format>,
    out: &mut [u8],
    write_body: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> Result<usize, EncodeError> {
    let format = format.into();
    let (shift, raw_cap) = body_room(format, out.len())?;
    let body = &mut out[shift + HEADER_LEN..shift + raw_cap - CRC_LEN];
    let body_len = write_body(body).ok_or(EncodeError::TooLarge)?;
    seal(format.framing, version, kind, out, shift, raw_cap, body_len)
}

// `encode_with` is instantiated once per message type a program sends; the
// two halves below are not generic, so each instance is little more than
// its body's encoder (issue 21: a terminal's image carries one copy).

/// Where [`encode_with`] builds the raw frame in an `out_len`-byte buffer:
/// `(shift, raw_cap)`. The COBS output after i input bytes is at most
/// 1 + i + ceil(i/254) bytes long, so starting the raw frame `shift` bytes
/// in, with shift >= 2 + raw_len/254, keeps the writer behind the reader.
/// A length-prefixed frame starts right after its prefix.
fn body_room(format: Format, out_len: usize) -> Result<(usize, usize), EncodeError> {
    let shift = match format.framing {
        Framing::Cobs => 2 + out_len / 254,
        #[cfg(any(test, feature = "length-prefixed"))]
        Framing::LengthPrefixed => length_prefixed::PREFIX_LEN,
    };
    let raw_cap = out_len.saturating_sub(shift).min(format.max_frame);
    #[cfg(any(test, feature = "length-prefixed"))]
    let raw_cap = match format.framing {
        Framing::LengthPrefixed => raw_cap.min(length_prefixed::MAX_RAW_LEN),
        Framing::Cobs => raw_cap,
    };
    if raw_cap < OVERHEAD {
        return Err(EncodeError::TooLarge);
    }
    Ok((shift, raw_cap))
}

/// Completes the raw frame at `out[shift..]` around its `body_len`-byte
/// body (header, CRC) and COBS-encodes it to the front of `out`, or writes
/// its length prefix.
fn seal(
    framing: Framing,
    version: u8,
    kind: u8,
    out: &mut [u8],
    shift: usize,
    raw_cap: usize,
    body_len: usize,
) -> Result<usize, EncodeError> {
    let raw_len = HEADER_LEN + body_len + CRC_LEN;
    if raw_len > raw_cap {
        return Err(EncodeError::TooLarge);
    }
    let raw = &mut out[shift..shift + raw_len];
    raw[0] = version;
    raw[1] = kind;
    let crc = crc32c(&raw[..HEADER_LEN + body_len]);
    raw[HEADER_LEN + body_len..].copy_from_slice(&crc.to_le_bytes());
    match framing {
        Framing::Cobs => Ok(cobs_in_place(out, shift, raw_len)),
        #[cfg(any(test, feature = "length-prefixed"))]
        Framing::LengthPrefixed => Ok(length_prefixed::write_prefix(out, raw_len)),
    }
}

/// Encodes a frame whose body is already serialized.
pub fn encode_raw(
    version: u8,
    kind: u8,
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    encode_with(version, kind, MAX_FRAME_LEN, out, |space| {
        let dst = space.get_mut(..body.len())?;
        dst.copy_from_slice(body);
        Some(body.len())
    })
}

/// Where the first zero of `bytes` is: with `memchr` on hosts (`std`),
/// whose word-at-a-time or SIMD search is the encoder's hot loop there;
/// with a plain loop on an MCU, which spares its image `memchr`.
#[cfg(any(test, feature = "std"))]
fn zero_in(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(0, bytes)
}

#[cfg(not(any(test, feature = "std")))]
fn zero_in(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == 0)
}

/// COBS-encodes `out[start..start + len]` to `out[0..]` and appends the
/// delimiter; returns the encoded length. The caller guarantees
/// `start >= 2 + len / 254` and room for the result (both hold by
/// construction in [`encode_with`]), so every write lands on bytes that were
/// already read.
///
/// Written by hand rather than with `cobs::EncoderState` because it moves
/// whole runs found with [`zero_in`] instead of a state-machine step per byte:
/// this is the hot path of every data frame. Its output is identical to
/// `cobs::encode` (a unit test compares them).
fn cobs_in_place(out: &mut [u8], start: usize, len: usize) -> usize {
    let end = start + len;
    let mut r = start;
    let mut w = 0;
    loop {
        let max = (end - r).min(254);
        let run = zero_in(&out[r..r + max]).unwrap_or(max);
        // The destination starts before the source, so a forward copy is
        // correct even where they overlap. Hosts (`std`) have `memmove`
        // linked anyway and it copies a run several times faster; MCU
        // images keep a plain loop, which spares them `memmove` (1.6 KiB).
        #[cfg(feature = "std")]
        out.copy_within(r..r + run, w + 1);
        #[cfg(not(feature = "std"))]
        for k in 0..run {
            out[w + 1 + k] = out[r + k];
        }
        out[w] = run as u8 + 1;
        w += run + 1;
        r += run;
        if run == 254 {
            // A full block: no zero is implied; go on unless the input ended.
            if r == end {
                break;
            }
            continue;
        }
        if r == end {
            break;
        }
        // out[r] is a zero, implied by the code byte just written.
        r += 1;
        if r == end {
            // A trailing zero: one empty run carries it.
            out[w] = 1;
            w += 1;
            break;
        }
    }
    out[w] = 0;
    w + 1
}

#[cfg(any(test, feature = "length-prefixed"))]
pub mod length_prefixed;
#[cfg(test)]
mod tests;
