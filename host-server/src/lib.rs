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
//!  │                    handle_timeout, handle_job_done in;             │
//!  │                    poll_transmit, poll_timeout, poll_job out       │
//!  │ relay::Relay       shared: settings, rate limits, quotas, leases   │
//!  ├───────────────────────────────── jobs::Job ───────────────────────┤
//!  │ jobs               the store work a session hands its driver: run  │
//!  │                    on tokio's blocking pool or a port's worker     │
//!  ├───────────────────────────────────────────────────────────────────┤
//!  │ store::Store       batches, partial uploads, blobs, expiry         │
//!  │   store::sqlite    SQLite (WAL, synchronous=FULL) + files by id    │
//!  │   store::memory    in memory, crash simulation (simulator, fuzz)   │
//!  └───────────────────────────────────────────────────────────────────┘
//!   http (axum, beside the sessions): pages, files and ZIPs for browsers,
//!   through the same relay::Relay (rate limiter) and store::Store, whose
//!   calls run on tokio's blocking pool
//! ```
//!
//! Settings and link parameters, with their defaults written once, are in
//! [`settings`]; [`config`] reads them from a file and flags; at start
//! [`descriptors`] caps sessions by the open-file limit.
//! [`metrics`] counts what the transports, sessions, jobs and sweeps do,
//! for an operator to scrape over HTTP (`/metrics`, `/healthz`, `/readyz`).
//!
//! The protocol itself (frames, messages, the terminals' state machines)
//! lives in `pickup-proto`; this crate adds the relay's decisions: codes
//! and their guessing bound ([`codes`]), failed-lookup limits
//! ([`rate_limit`]), who may authenticate ([`directory`]: users,
//! tokens, terminals) and how often they may fail ([`auth_limit`]),
//! storage reservations and per-peer batch limits
//! ([`quota`]), durability ([`store`]), pushes to terminals with their
//! notices and receipts ([`mailbox`]) and the transports, of which
//! [`http`] serves browsers. [`forward`] copies a batch to a peer relay
//! (`[[peers]]`) as a terminal would upload it, with the CLI's driver.
//!
//! # Features
//!
//! - `test-support`, for tests only: `random::SeededRandom` (predictable
//!   secrets), `directory::PasswordParams::FAST_FOR_TESTS` (cheap
//!   password hashes), `rate_limit::Peer::Sim` and `store::memory::MemoryStore::crash`,
//!   which the simulator, the fuzzers and unit tests drive the relay with.
//!   The `pickup-tests` crate turns it on; no relay build should.
#![forbid(unsafe_code)]

pub mod auth_limit;
pub mod codes;
pub mod config;
pub mod descriptors;
pub mod directory;
pub mod disclosure;
pub mod forward;
pub mod http;
pub mod jobs;
pub mod mailbox;
pub mod metrics;
pub mod proof_budget;
pub mod quota;
pub mod random;
pub mod rate_limit;
pub mod relay;
pub mod running_sha1;
pub mod session;
pub mod settings;
pub mod store;
pub mod transport;

pub use config::Config;
pub use jobs::{Job, JobDone};
pub use relay::Relay;
pub use session::{Session, Transmit};
pub use settings::{Link, Settings};
