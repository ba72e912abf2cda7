//! The Pickup wire protocol.
//!
//! ```text
//!   relay (pickup-relay)          device / CLI (pickup-device)        fuzzers, simulator
//!          │                                │                                │
//!          ▼                                ▼                                ▼
//!  ┌──────────────────────────────────────────────────────────────────────────────┐
//!  │ upload::Session · download::Session   sans-IO state machines: handle_* in,    │
//!  │                                       poll_* out, `now` passed as argument    │
//!  ├──────────────────────────────────────────────────────────────────────────────┤
//!  │ message::Message   one Rust type per message kind, postcard bodies           │
//!  ├──────────────────────────────────────────────────────────────────────────────┤
//!  │ frame              header (version, kind) ‖ body ‖ CRC-32C, COBS, 0x00 ends   │
//!  └──────────────────────────────────────────────────────────────────────────────┘
//!            bytes over a UART, a TCP stream, a pipe or a fuzzer's input
//! ```
//!
//! The crate never allocates, never touches the network, a file system or a
//! clock, and never panics on input: every length and count that arrives from
//! the wire is checked. Everything a driver needs is here:
//!
//! - [`frame`]: [`frame::encode_with`] a message into a delimited frame and
//!   [`frame::Decoder`] to take frames back out of a byte stream in any split,
//!   resynchronising after garbage; COBS everywhere, or a length prefix on
//!   a reliable stream once both sides agreed.
//! - [`message`]: every message of the exchange, see `PROTOCOL.md` for the
//!   byte layouts and test vectors.
//! - [`code`]: the pickup code and its Crockford base32 text form.
//! - [`hash`]: SHA-1 digests and the proof of ownership used by instant upload.
//! - [`identity`]: a terminal's device key and its answer to a relay's challenge.
//! - [`upload`] and [`download`]: the client state machines, and [`drive`]:
//!   the [`drive::Machine`] contract through which drivers run either.
//! - [`storage`]: the read-at / write-at traits through which the machines
//!   reach file bytes, so an MCU can serve them from flash.
//! - [`time`]: the protocol's own `Instant` and `Duration`.
//!
//! # Features
//!
//! On by default: `upload` and `download`, the two client machines and
//! the decoders of what the relay sends each. A terminal that moves files
//! one way only builds with `default-features = false` and the one it
//! needs, and its image carries neither the other machine nor the other
//! direction's decoders (firmware/README.md has the figures). The rest are
//! off by default, which is what a microcontroller wants.
//!
//! - `std`: `std::error::Error` impls; COBS runs are found with `memchr`
//!   and moved with `memmove` (which hosts link anyway), and the frame
//!   decoder copies runs in bulk. Without it the frame layer takes plain
//!   byte loops, smaller in an MCU's flash.
//! - `length-prefixed`: the second framing, for reliable streams
//!   (PROTOCOL.md §2.1): `frame::Framing::LengthPrefixed` and the
//!   machines' `length_prefix` option (`std` brings it). Off, an image
//!   carries no code for it.
//! - `fast-crc`: hardware CRC-32C (SSE 4.2, AArch64 CRC) through `crc32c`.
//! - `fast-sha1`: SHA-1 through the `sha1` crate, with SHA-NI or the AArch64
//!   SHA extension where the CPU has them (about 2.5–4x `sha1_smol` on the
//!   development machine).
//! - `file-attrs`: file attributes in the sessions (`std` brings it).
//! - `auth`: the sessions authenticate with an [`identity::Credential`]
//!   and move named files (PROTOCOL.md §8; `std` brings it).
//! - `notices`: addressed delivery (PROTOCOL.md §11): the relay's notice
//!   kinds in the decoders and the [`notice`] machines (`notice::Listener`
//!   for a terminal that receives pushed batches, `notice::Sender` for one
//!   that pushes); brings `auth` (`std` brings it).
//! - `page-link`: an upload asks the relay for its download page's base
//!   URL and keeps it (`std` brings it).
//! - `relay-limits`: an upload asks the relay for its batch limits and
//!   keeps them (`std` brings it).
//! - `defmt`: `defmt::Format` on public types.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

// Only the machines authenticate: with `auth` but none of them, nothing to link.
#[cfg(any(
    test,
    all(
        feature = "auth",
        any(feature = "upload", feature = "download", feature = "notices")
    )
))]
mod auth;
pub mod code;
#[cfg(any(test, feature = "download"))]
pub mod download;
pub mod drive;
pub mod error;
mod fixed_bytes;
pub mod frame;
pub mod hash;
pub mod identity;
pub mod message;
#[cfg(any(test, feature = "notices"))]
pub mod notice;
pub mod storage;
pub mod time;
#[cfg(any(test, feature = "upload"))]
pub mod upload;

pub use code::Code;
pub use error::ErrorCode;
pub use hash::Sha1Digest;
pub use message::Message;
pub use time::{Duration, Instant};

/// The protocol version this crate speaks, carried in every frame header.
pub const PROTOCOL_VERSION: u8 = 1;

/// The TCP port a relay listens on by default.
pub const DEFAULT_TCP_PORT: u16 = 7425;
