//! Test support for Pickup: the deterministic simulator ([`sim`]), the
//! end-to-end harness that runs the real `pickup-relay` and `pickup`
//! binaries over faulty TCP and serial links, and the fuzz harnesses.
//!
//! ```text
//!   tests/simulation.rs ──► sim::World: client machines + relay sessions + MemoryStore,
//!                           simulated clock, seeded faults, crash/restart; replay by seed
//!   tests/end_to_end.rs ──► real processes ⇄ faulty adapters (TCP proxy, pty forwarder)
//!   fuzz/fuzz_targets   ──► fuzz_proto: codecs, client machines vs a fake relay
//!                           fuzz_relay: relay sessions vs fake terminals, crashes
//!   tests/fuzz_corpus.rs ─► fuzz_seeds: the committed seed corpora and dictionary
//!   tests/relay_*.rs    ──► relay_process::RelayProcess (the one relay launcher)
//!                           ⇄ wire_client: client machines over TCP or a pty, raw messages
//!   tests/cli_*.rs      ──► the `pickup` CLI against a RelayProcess, via e2e
//!   tests/http_browser.rs ► browser: headless Chromium via chromedriver (WebDriver)
//! ```
//!
//! Shared by all of them: [`mem_files::MemFiles`] (files in memory, as an
//! upload source and a download sink) and [`samples::every_kind`] (one
//! message of every kind).
//!
//! The harnesses live here, not in the product crates, so that none of them
//! is compiled into `pickup-proto` or shipped as its API; this crate turns
//! on `pickup-relay`'s `test-support` feature for the relay's test-only
//! items.

pub mod browser;
pub mod e2e;
pub mod fuzz_proto;
pub mod fuzz_relay;
pub mod fuzz_seeds;
pub mod http_client;
pub mod mem_files;
pub mod relay_process;
pub mod samples;
pub mod sim;
pub mod upload_page;
pub mod wire_client;
