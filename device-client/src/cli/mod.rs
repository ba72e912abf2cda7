//! The `pickup` command line (feature `std`): an adapter over the same
//! drivers firmware uses, with files on disk, TCP or serial links and
//! progress bars.
//!
//! ```text
//! pickup [OPTIONS] send FILE|DIR|-...  upload, print the pickup code
//! pickup [OPTIONS] get CODE [-o DIR|-]  download every file, verified
//! pickup [OPTIONS] info CODE            show the batch's manifest
//! pickup [OPTIONS] forward CODE --to PEER   copy it to a peer relay (forward.rs)
//! ```
//!
//! The options (`Common`: `--relay`, `--json`, `-v`, `--state-dir`, the
//! retransfer limits) are global: they go before or after the subcommand.
//!
//! `ADDR` is `HOST:PORT`, `tcp://HOST:PORT`, `tls://HOST:PORT` or
//! `serial:PATH[@BAUD]` (default `127.0.0.1:7425`, or `$PICKUP_RELAY`).
//! Several, comma-separated or with `--relay` repeated, are tried in order
//! (`addr::Relays`).
//! A `tls://` relay is trusted by the system's CA store, or by
//! `--ca FILE` (`$PICKUP_CA`), or by `--pin sha256:HEX` (`$PICKUP_PIN`).
//!
//! Exit codes (see [`Exit`]): 0 success, 1 usage error, 2 the relay refused
//! (unknown or expired code, batch not ready, quota…), 3 verification failed
//! (a file does not match its SHA-1), 4 the relay could not be reached (or
//! its TLS certificate is not trusted), or
//! the link failed and retransfer gave up, 5 local I/O error (including a
//! file that exists without `--force`). Errors are printed as one line on stderr; with `--json`, as one JSON
//! object `{"error": {"kind", "exit", "message"}}` on stdout instead, so
//! stdout always holds exactly one JSON document (module `out`).
//!
//! The first connection of a command is dialled before anything else
//! (`Relays::dial`): a relay that cannot be reached (none of the relays,
//! for a list) fails at once with exit code 4. Reconnecting with backoff is
//! only for links that worked and then dropped; each attempt tries every
//! address, the one that worked last first.

mod account;
mod addr;
mod deliver;
pub mod dial;
mod dir_sink;
mod forward;
mod get;
mod hash_cache;
mod info;
mod inputs;
mod io;
mod listen;
mod manifest_sink;
mod out;
mod send;
mod serial;
mod show;
mod source;
mod state;
mod stdout_sink;
mod tcp;
mod tls;

use std::io::Write;
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
  4  link failure (could not reach the relay, its TLS certificate is not
     trusted, or gave up reconnecting)
  5  local I/O error (reading or writing files, existing file without --force)
  6  send --to --wait: a terminal refused the delivery
  7  send --to --wait: a delivery expired before the terminal confirmed it

With --json, an error is one JSON object on stdout:
  {\"error\": {\"kind\": \"link\", \"exit\": 4, \"message\": \"...\"}}";

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
    /// 4: the relay could not be reached (or its TLS certificate was not
    /// trusted), or the link kept failing.
    Link = 4,
    /// 5: reading or writing local files failed.
    Local = 5,
    /// 6: a target terminal refused a delivery (`send --to --wait`).
    Declined = 6,
    /// 7: a delivery expired unconfirmed (`send --to --wait`).
    Undelivered = 7,
}

impl Exit {
    /// The `kind` of a JSON error object.
    fn kind(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Usage => "usage",
            Exit::Refused => "refused",
            Exit::Verification => "verification",
            Exit::Link => "link",
            Exit::Local => "local",
            Exit::Declined => "declined",
            Exit::Undelivered => "undelivered",
        }
    }
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

    /// Reports the failure (see the module docs) and returns its exit code.
    fn report(&self, json: bool) -> ExitCode {
        if json {
            let doc = serde_json::json!({"error": {
                "kind": self.exit.kind(),
                "exit": self.exit as u8,
                "message": self.message,
            }});
            out::outln!("{doc}");
        } else {
            // A closed stderr leaves nothing to tell; the exit code remains.
            let _ = writeln!(std::io::stderr(), "pickup: error: {}", self.message);
        }
        ExitCode::from(self.exit as u8)
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
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes, before or after the subcommand's name
/// (`global`). Each command's arguments carry a copy, filled in by
/// [`main`] after parsing: clap keeps a global option on the top level only.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct Common {
    /// Relay address: HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or
    /// serial:PATH[@BAUD]; several, comma-separated, are tried in order
    /// until one connects
    #[arg(
        long,
        global = true,
        value_name = "ADDR[,ADDR...]",
        env = "PICKUP_RELAY",
        default_value = DEFAULT_RELAY
    )]
    pub relay: String,
    /// For tls:// relays: trust the CA certificates of this PEM file
    /// instead of the system's
    #[arg(long, global = true, value_name = "FILE", env = "PICKUP_CA")]
    pub ca: Option<PathBuf>,
    /// For tls:// relays: trust exactly the certificate with this SHA-256
    /// (as `pickup-relay cert self-signed` prints it); the host name is not
    /// checked
    #[arg(
        long,
        global = true,
        value_name = "sha256:HEX",
        env = "PICKUP_PIN",
        conflicts_with = "ca",
        value_parser = tls::Pin::parse
    )]
    pub pin: Option<tls::Pin>,
    /// Print the result, or the error, as one JSON object on stdout (for
    /// scripts)
    #[arg(long, global = true)]
    pub json: bool,
    /// Do not reconnect when the link drops; fail at once (running the
    /// command again still resumes)
    #[arg(long, global = true)]
    pub no_retransfer: bool,
    /// Reconnect attempts per outage before giving up (0: no limit)
    #[arg(long, global = true, value_name = "N", default_value_t = 10)]
    pub max_attempts: u32,
    /// Give up when an outage lasts this many seconds (0: no limit)
    #[arg(long, global = true, value_name = "SECS", default_value_t = 120)]
    pub give_up_after: u64,
    /// Log link events (reconnects) on stderr
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Where unfinished uploads are remembered for resuming (used by send)
    /// [default: $XDG_STATE_HOME/pickup or ~/.local/state/pickup]
    #[arg(long, global = true, value_name = "DIR", env = "PICKUP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Act as this registered terminal (needs --key-file)
    #[arg(long, global = true, value_name = "NAME", env = "PICKUP_TERMINAL")]
    pub terminal: Option<String>,
    /// The terminal's device key file (32 hex digits, as `pickup-relay
    /// terminal add` printed it)
    #[arg(long, global = true, value_name = "FILE", env = "PICKUP_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

impl Common {
    /// The relay's addresses, with how `tls://` relays are trusted; a usage
    /// error for an address that does not parse, or `--ca`/`--pin` with no
    /// relay that is `tls://`.
    pub fn relay_addr(&self) -> Result<addr::Relays, Failure> {
        let trust = match (&self.ca, self.pin) {
            (_, Some(pin)) => tls::Trust::Pin(pin),
            (Some(ca), None) => tls::Trust::Ca(ca.clone()),
            (None, None) => tls::Trust::Roots,
        };
        addr::Relays::parse(&self.relay)
            .and_then(|relays| relays.with_trust(trust))
            .map_err(|e| Failure::new(Exit::Usage, e))
    }

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
    /// Store files under your user's names (needs `pickup login` or --terminal)
    Put(send::PutArgs),
    /// Log in to the relay as a user and keep the session token
    Login(account::LoginArgs),
    /// Revoke the kept session token and forget it
    Logout(account::LogoutArgs),
    /// Show whom the relay knows this terminal as
    Whoami(account::WhoamiArgs),
    /// List your named files
    Ls(account::LsArgs),
    /// Delete one of your named files
    Rm(account::RmArgs),
    /// Let another user (or @terminal) read one of your named files
    Share(account::ShareArgs),
    /// Show where the deliveries of a code you sent with --to stand
    Status(deliver::StatusArgs),
    /// Let another user send to your terminals (or, with --remove, no longer)
    Allow(deliver::AllowArgs),
    /// As a registered terminal, receive every batch sent to it with --to
    Listen(listen::ListenArgs),
    /// Copy a batch to a peer relay and follow the copy (needs `pickup login`)
    Forward(forward::ForwardArgs),
}

/// Runs the `pickup` command with the process's arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && json_requested() => {
            // clap's message starts "error: " and goes on with usage lines.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let message = first.strip_prefix("error: ").unwrap_or(first);
            return Failure::new(Exit::Usage, message).report(true);
        }
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
    let common = cli.common;
    let result = match cli.command {
        Command::Send(mut args) => {
            args.common = common.clone();
            send::run(args)
        }
        Command::Get(mut args) => {
            args.common = common.clone();
            get::run(args)
        }
        Command::Info(mut args) => {
            args.common = common.clone();
            info::run(args)
        }
        Command::Put(mut args) => {
            args.common = common.clone();
            send::put(args)
        }
        Command::Login(mut args) => {
            args.common = common.clone();
            account::login(args)
        }
        Command::Logout(mut args) => {
            args.common = common.clone();
            account::logout(args)
        }
        Command::Whoami(mut args) => {
            args.common = common.clone();
            account::whoami(args)
        }
        Command::Ls(mut args) => {
            args.common = common.clone();
            account::ls(args)
        }
        Command::Rm(mut args) => {
            args.common = common.clone();
            account::rm(args)
        }
        Command::Share(mut args) => {
            args.common = common.clone();
            account::share(args)
        }
        Command::Status(mut args) => {
            args.common = common.clone();
            deliver::status(args)
        }
        Command::Allow(mut args) => {
            args.common = common.clone();
            deliver::allow(args)
        }
        Command::Listen(mut args) => {
            args.common = common.clone();
            listen::run(args)
        }
        Command::Forward(mut args) => {
            args.common = common.clone();
            forward::run(args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(common.json),
    }
}

/// Whether `--json` is among the arguments, for errors clap found before
/// there were parsed options to ask (anything after `--` is an operand).
fn json_requested() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
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
