//! The Pickup relay: a durable store-and-forward point for Pickup batches,
//! served over TCP and serial links.
//!
//! ```text
//!   TCP listeners (tokio)        serial ports (one thread each, reopened with backoff)
//!     transport::tcp                     transport::serial
//!          │  bytes ⇄ frame::Decoder / encoded frames, time as `Instant`
//!          ▼                                     ▼
//!  ┌───────────────────────────────────────────────────────────────────┐
//!  │ session::Session   sans-IO, one per connection: handle_frame,      │
//!  │                    handle_timeout in; poll_transmit, poll_timeout  │
//!  │ relay::Relay       shared: settings, rate limits, leases, RNG      │
//!  ├───────────────────────────────────────────────────────────────────┤
//!  │ store::Store       batches, partial uploads, blobs, expiry         │
//!  │   store::sqlite    SQLite (WAL, synchronous=FULL) + files by id    │
//!  │   store::memory    in memory, crash simulation (simulator, fuzz)   │
//!  └───────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The protocol itself (frames, messages, the terminals' state machines)
//! lives in `pickup-proto`; this crate adds the relay's decisions: codes
//! and their guessing bound ([`codes`]), failed-lookup limits
//! ([`rate_limit`]), durability ([`store`]) and the transports.
//!
//! # Features
//!
//! - `test-support`, for tests only: `random::SeededRandom` (predictable
//!   secrets), `rate_limit::Peer::Sim` and `store::memory::MemoryStore::crash`,
//!   which the simulator, the fuzzers and unit tests drive the relay with.
//!   The `pickup-tests` crate turns it on; no relay build should.
#![forbid(unsafe_code)]

pub mod codes;
pub mod config;
pub mod jobs;
pub mod random;
pub mod rate_limit;
pub mod relay;
pub mod session;
pub mod settings;
pub mod store;
pub mod transport;

pub use config::Config;
pub use jobs::{Job, JobDone};
pub use relay::Relay;
pub use session::Session;
pub use settings::{Link, Settings};
