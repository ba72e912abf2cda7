//! Servers outlive nothing: a watchdog shell, in its own process group so
//! a Ctrl-C of `cargo test` does not take it down first, runs a cleanup
//! command once the test process has exited.
//!
//! Statics are never dropped in Rust, so a server shared by a whole test
//! binary cannot be stopped by `Drop`; the watchdog stops it instead.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// The longest a watchdog waits for its test process: a bound on its loop,
/// far past any test run (seconds).
const MAX_WAIT_SECS: u32 = 6 * 3600;

/// Runs `cleanup` (a shell command) once this process has exited.
pub(crate) fn after_exit(cleanup: &str) -> std::io::Result<()> {
    let script = format!(
        "i=0; while kill -0 {pid} 2>/dev/null && [ $i -lt {MAX_WAIT_SECS} ]; do sleep 1; i=$((i+1)); done; {cleanup}",
        pid = std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
}

/// `s` quoted for `sh`.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
