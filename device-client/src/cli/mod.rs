//! The `pickup` command line (feature `std`): an adapter over the same
//! drivers firmware uses, with files on disk, TCP or serial links and
//! progress bars.
//!
//! ```text
//! pickup send [--relay ADDR] FILE...       upload, print the pickup code
//! pickup get  [--relay ADDR] CODE [-o DIR]  download every file, verified
//! pickup info [--relay ADDR] CODE           show the batch's manifest
//! ```
//!
//! `ADDR` is `HOST:PORT`, `tcp://HOST:PORT` or `serial:PATH[@BAUD]`
//! (default `127.0.0.1:7425`, or `$PICKUP_RELAY`).
//!
//! Exit codes (see [`Exit`]): 0 success, 1 usage error, 2 the relay refused
//! (unknown or expired code, batch not ready, quota…), 3 verification failed
//! (a file does not match its SHA-1), 4 the link failed and retransfer gave
//! up, 5 local I/O error (including a file that exists without `--force`).
//! Errors are printed as one line on stderr.

mod addr;
mod dir_sink;
mod get;
mod info;
mod io;
mod manifest_sink;
mod send;
mod serial;
mod show;
mod source;
mod state;
mod tcp;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pickup_proto::{frame, Duration};

use crate::retransfer::RetransferPolicy;

/// Where the relay is unless `--relay` or `PICKUP_RELAY` says otherwise.
pub(crate) const DEFAULT_RELAY: &str = "127.0.0.1:7425";

/// Largest batch the CLI handles (files per session).
pub(crate) const MAX_FILES: usize = 1024;
/// Decoder buffer: the largest frame the CLI accepts (the protocol's
/// largest, so a TCP relay can send its 64 KiB frames: per-frame costs are
/// what bounds loopback and LAN speed).
pub(crate) const RX: usize = frame::MAX_FRAME_LEN;
/// Encode buffer for frames up to `RX`.
pub(crate) const TX: usize = frame::max_encoded_len(RX);

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  usage error (bad arguments, unreadable file name, duplicate names)
  2  the relay refused (unknown or expired code, batch not ready, quota, ...)
  3  verification failed (a file does not match its SHA-1)
  4  link failure (could not reach the relay, or gave up reconnecting)
  5  local I/O error (reading or writing files, existing file without --force)";

/// How `pickup` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked.
    Ok = 0,
    /// 1: bad arguments or unusable local file names.
    Usage = 1,
    /// 2: the relay refused (unknown or expired code, not ready, quota…).
    Refused = 2,
    /// 3: a file did not match its SHA-1.
    Verification = 3,
    /// 4: the relay could not be reached, or the link kept failing.
    Link = 4,
    /// 5: reading or writing local files failed.
    Local = 5,
}

/// A failed command: its exit code and a one-line message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        // One line, whatever the parts said.
        let message = message.into().replace(['\n', '\r'], " ");
        Failure { exit, message }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "pickup",
    version,
    about = "Send files through a Pickup relay and get them back with a short code",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub(crate) struct Common {
    /// Relay address: HOST:PORT, tcp://HOST:PORT or serial:PATH[@BAUD]
    #[arg(
        long,
        value_name = "ADDR",
        env = "PICKUP_RELAY",
        default_value = "127.0.0.1:7425"
    )]
    pub relay: String,
    /// Print the result as JSON on stdout (for scripts)
    #[arg(long)]
    pub json: bool,
    /// Do not reconnect when the link drops; fail at once (running the
    /// command again still resumes)
    #[arg(long)]
    pub no_retransfer: bool,
    /// Reconnect attempts per outage before giving up (0: no limit)
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_attempts: u32,
    /// Give up when an outage lasts this many seconds (0: no limit)
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub give_up_after: u64,
    /// Log link events (reconnects) on stderr
    #[arg(short, long)]
    pub verbose: bool,
}

impl Common {
    pub fn policy(&self) -> RetransferPolicy {
        RetransferPolicy {
            enabled: !self.no_retransfer,
            max_attempts: (self.max_attempts > 0).then_some(self.max_attempts),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            give_up_after: (self.give_up_after > 0)
                .then(|| Duration::from_secs(self.give_up_after)),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upload files to the relay and print their pickup code
    Send(send::SendArgs),
    /// Download every file of a batch by its pickup code
    Get(get::GetArgs),
    /// Show the manifest of a batch without downloading it
    Info(info::InfoArgs),
}

/// Runs the `pickup` command with the process's arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            // Help and version go to stdout, usage errors to stderr.
            let _ = e.print();
            return ExitCode::from(exit as u8);
        }
    };
    let result = match cli.command {
        Command::Send(args) => send::run(args),
        Command::Get(args) => get::run(args),
        Command::Info(args) => info::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("pickup: error: {}", f.message);
            ExitCode::from(f.exit as u8)
        }
    }
}

/// A state directory from `--state-dir`/`PICKUP_STATE_DIR`, else the XDG default.
pub(crate) fn default_state_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("pickup"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/pickup"))
}
