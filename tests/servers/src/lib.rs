//! Real servers for tests: PostgreSQL from Debian's `postgresql` binaries
//! and an S3-compatible server (`moto[server]` from PyPI), each started in
//! its own temporary directory on loopback and stopped when the test
//! process ends.
//!
//! ```text
//!   Postgres::shared() ──► initdb + pg_ctl start (unix socket only) ──► database() per test
//!   S3::shared()       ──► moto_server on 127.0.0.1:<free port>     ──► bucket() per test
//!        └─ each server has a watchdog: it stops the server once the test process is gone
//! ```
//!
//! A machine without the tools skips: [`require`] prints one `skipped:`
//! line and the test returns. `.ci/run` installs the tools and sets
//! `PICKUP_NO_SKIP`, which turns a skip into a failure.
//!
//! This crate does not depend on the relay, so the relay's own unit tests
//! (store contract tests) and the end-to-end tests in `pickup-tests` use the
//! same servers.

mod postgres;
mod s3;
mod watchdog;

use std::io::Write;

pub use postgres::Postgres;
pub use s3::{Bucket, S3};

/// The server a test needs, or `None` after one `skipped:` line: unless
/// `PICKUP_NO_SKIP` is set, in which case a missing tool fails the test.
pub fn require<T>(test: &str, server: Result<T, String>) -> Option<T> {
    match server {
        Ok(server) => Some(server),
        Err(why) => {
            assert!(
                std::env::var_os("PICKUP_NO_SKIP").is_none(),
                "{test} cannot run: {why}, and PICKUP_NO_SKIP is set"
            );
            // Straight to stderr, not eprintln!: libtest hides what a
            // passing test prints, and this line must show.
            let _ = writeln!(std::io::stderr(), "skipped: {test} needs {why}");
            None
        }
    }
}

/// A fresh directory under the system's temporary directory (which the
/// `postgres` user can reach, unlike a checkout under `/root`).
fn scratch_dir(label: &str) -> std::io::Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pickup-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
