//! The Pickup client for terminals: blocking drivers for constrained
//! devices (no_std, no alloc) and, with feature `std`, the `pickup` CLI.
//!
//! ```text
//!   firmware main loop                 pickup CLI (feature "std")
//!          │                                   │  cli: files, .part sink, state file,
//!          │                                   │       TCP / serial connectors, progress
//!          ▼                                   ▼
//!  ┌────────────────────────────────────────────────────────────────────────┐
//!  │ Uploader<F, RX, TX> · Downloader<F, RX, TX>   blocking drivers:         │
//!  │   read link → frame::Decoder → session.handle_* → poll_* → write link   │
//!  │ Retransfer (policy: reconnect with backoff, give up)   Event observer    │
//!  ├────────────────────────────────────────────────────────────────────────┤
//!  │ Connector → Link (embedded_io::{Read, Write})      Clock → Instant       │
//!  ├────────────────────────────────────────────────────────────────────────┤
//!  │ pickup_proto: upload / download sessions, frames, messages (sans-IO)    │
//!  └────────────────────────────────────────────────────────────────────────┘
//!        file bytes through pickup_proto::storage::ReadAt / download::Sink
//! ```
//!
//! A driver owns a protocol session from [`pickup_proto`], a frame decoder
//! and a transmit buffer, and runs the session to its end over links made
//! by a [`Connector`], with time from a [`Clock`]. When a link drops (read
//! or write error, end of stream, or the session hearing nothing for its
//! idle timeout) the driver reconnects with backoff and the session resumes
//! from the relay's durable offsets, with no action from the caller; the
//! [`RetransferPolicy`] bounds how long it keeps trying. Every session event
//! and every link step ([`LinkEvent`]) goes to a caller-supplied observer.
//!
//! ```ignore
//! let files = [FileMeta { name: "log.bin", size: LOG.len() as u64, sha1 }];
//! let mut up: Uploader<'_, 1, 128, 130> =
//!     Uploader::new(upload::Config { max_frame: 128, ..Default::default() },
//!                   &files, RetransferPolicy::default())?;
//! let code = up.run(&mut uart_connector, &systick, &mut [LOG], |event| show(event))?;
//! ```
//!
//! # RAM cost
//!
//! Everything a driver needs lives in its own struct; nothing is allocated
//! and the buffers are sized by const generics: `RX` is the decoder buffer
//! (the largest frame accepted, announced to the relay) and `TX` the encode
//! buffer (`frame::max_encoded_len(RX)` is the natural choice; link reads
//! land there too). `F` is the number of files a session can hold.
//! Measured with `core::mem::size_of` on 2026-12-05 (the `ram_cost` unit
//! test prints the host figures, built with `std` and so every feature;
//! the 32-bit figures come from the same types built for
//! `thumbv7em-none-eabihf` and `thumbv6m-none-eabi` with the features
//! `upload` and `download` only, and the two targets agree):
//!
//! | frame (`RX`, `TX`)    | `Uploader`, 1 file | `Uploader`, 8 files | `Downloader`, 1 file | `Downloader`, 8 files |
//! |-----------------------|-------------------:|--------------------:|---------------------:|----------------------:|
//! | 128, 130 (32-bit)     |             1128 B |              1800 B |               1096 B |                1376 B |
//! | 256, 258 (32-bit)     |             1384 B |                     |               1352 B |                       |
//! | 1024, 1030 (32-bit)   |             2920 B |                     |               2888 B |                       |
//! | 128, 130 (64-bit)     |             1568 B |              2400 B |               1280 B |                1568 B |
//! | 16384, 16450 (64-bit) |            34144 B |             34976 B |              33856 B |               34144 B |
//!
//! Of the 32-bit figures, the protocol sessions themselves take 776 B
//! (upload, 1 file) and 744 B (download, 1 file); each further file costs
//! 96 B (upload) or 40 B (download). `auth` and `notices` together add
//! 56 B to each 32-bit `Uploader` figure and 64 B to each `Downloader`
//! one, all of it in the sessions. The rest is the two buffers plus a few
//! words. On top of the struct, `run` uses stack for its own frames (a
//! decoded message, hashing state; not measured here) and the caller's
//! [`Connector`] and link.
//!
//! With `notices`, measured the same way (32-bit, 128-byte frames):
//! `NoticeListener` 2056 B with a ledger of 4 ids, 2632 B with 8 (144 B
//! per id: its ledger slot and a slot for a notice waiting to be
//! returned); the protocol machine `notice::Listener<4>` takes 1152 B of
//! it, most of which is its queue of six events (a notice is 128 B, over
//! half of it room for the sender's name: up to 65 bytes, for
//! `user@pair`).
//! `NoticeSender` takes 1016 B, its machine `notice::Sender` 664 B.
//!
//! # Features
//!
//! - `upload` and `download` (default, and brought by `std`): [`Uploader`]
//!   and [`Downloader`] with `pickup-proto`'s machine and decoders for
//!   each. Firmware that moves files one way builds with
//!   `default-features = false` and the one it needs: the other
//!   direction's machine, driver and decoders are then not compiled.
//! - `std` (default): the `pickup` CLI (module `cli`), `clock::StdClock`,
//!   [`hash_thread::HashThread`] (download verification on another core),
//!   and `std::io::Error` as a link error. Firmware builds with
//!   `default-features = false`.
//! - `auth` (brought by `std`): authenticate with a
//!   [`pickup_proto::identity::Credential`] on every link
//!   (`Uploader::authenticate`, `Downloader::authenticate`), store a
//!   batch under the user's names (`Uploader::set_named`) and download a
//!   named file (`Downloader::named`). It adds 48 B to an upload session
//!   and 64 B to a download session (32-bit), and about 2.8 KiB of flash
//!   (firmware/README.md).
//! - `notices` (brought by `std`): addressed delivery (PROTOCOL.md §11):
//!   [`NoticeListener`] waits for batches pushed to this terminal, returns
//!   each notice once, and settles it after the caller downloaded the
//!   batch with a [`Downloader`] authenticated as the terminal;
//!   [`NoticeSender`] pushes a batch to a terminal and follows its
//!   deliveries. Brings `auth`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod clock;
#[cfg(feature = "download")]
pub mod download;
// `Event` and `RunError` stay public; the loop is linked by the drivers.
#[cfg_attr(
    not(any(feature = "upload", feature = "download", feature = "notices")),
    allow(dead_code)
)]
mod driver;
pub mod link;
#[cfg(feature = "notices")]
pub mod notice;
pub mod retransfer;
#[cfg(feature = "upload")]
pub mod upload;

#[cfg(feature = "std")]
pub mod cli;
#[cfg(feature = "std")]
pub mod hash_thread;

pub use clock::Clock;
#[cfg(feature = "download")]
pub use download::Downloader;
pub use driver::{Event, RunError};
pub use link::{Connector, LinkLoss};
#[cfg(feature = "notices")]
pub use notice::{NoticeListener, NoticeSender};
pub use retransfer::{LinkEvent, RetransferPolicy};
#[cfg(feature = "upload")]
pub use upload::Uploader;

#[cfg(test)]
mod tests;
