//! Test support for Pickup: the deterministic simulator ([`sim`]) and the
//! end-to-end harness that runs the real `pickup-relay` and `pickup`
//! binaries over faulty TCP and serial links.
//!
//! ```text
//!   tests/simulation.rs ──► sim::World: client machines + relay sessions + MemoryStore,
//!                           simulated clock, seeded faults, crash/restart; replay by seed
//!   tests/end_to_end.rs ──► real processes ⇄ faulty adapters (TCP proxy, pty forwarder)
//! ```

pub mod e2e;
pub mod fuzz_relay;
pub mod fuzz_seeds;
pub mod sim;
