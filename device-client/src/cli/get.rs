//! `pickup get`: download every file of a batch into a directory.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use pickup_proto::{download, Code, Duration, ErrorCode};
use serde_json::json;

use super::dir_sink::DirSink;
use super::out::outln;
use super::send::link_failure;
use super::show::{escape, size, Ui};
use super::{Common, Exit, Failure, MAX_FILES, RX, TX};
use crate::clock::StdClock;
use crate::{Downloader, Event, RunError};

#[derive(Args, Debug)]
pub(crate) struct GetArgs {
    /// The global options, copied in by `cli::main` (not parsed here).
    #[arg(skip)]
    pub(crate) common: Common,
    /// The pickup code (case, hyphens and spaces do not matter)
    code: String,
    /// Directory to write the files into (created if missing)
    #[arg(short = 'o', long = "output", value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Replace files that already exist in DIR
    #[arg(long)]
    force: bool,
    /// If the batch is still being uploaded, wait for it instead of failing
    #[arg(long)]
    wait: bool,
}

pub(crate) fn parse_code(text: &str) -> Result<Code, Failure> {
    Code::parse(text).map_err(|e| Failure::new(Exit::Usage, format!("invalid pickup code: {e}")))
}

pub(crate) fn run(args: GetArgs) -> Result<(), Failure> {
    let relay =
        super::addr::Addr::parse(&args.common.relay).map_err(|e| Failure::new(Exit::Usage, e))?;
    let code = parse_code(&args.code)?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Failure::new(Exit::Local, format!("{}: {e}", args.dir.display())))?;
    let ui = Ui::new(args.common.verbose);
    let mut config = relay.download_config();
    if args.wait {
        config.wait_until_ready = Some(Duration::from_secs(2));
    }
    // The sink verifies, hashing on another core as it writes.
    config.hashing = download::Hashing::BySink;
    let mut sink = DirSink::new(args.dir.clone(), args.force)
        .map_err(|e| Failure::new(Exit::Local, format!("cannot start hashing: {e}")))?;
    let mut downloader = Box::new(Downloader::<MAX_FILES, RX, TX>::new(
        config,
        code,
        args.common.policy(),
    ));
    let mut connector = relay.dial()?;
    let clock = StdClock::new();
    // Per file: (size, sha1, bytes reused from an earlier run).
    let mut entries: Vec<(u64, pickup_proto::Sha1Digest, u64)> = Vec::new();
    ui.bar.set_message("receiving");
    let result = downloader.run(&mut connector, &clock, &mut sink, |event| match event {
        Event::Session(download::Event::Manifest { total_size, .. }) => {
            ui.bar.set_length(total_size);
        }
        Event::Session(download::Event::Entry {
            size, sha1, local, ..
        }) => entries.push((size, sha1, local)),
        Event::Session(download::Event::NotReady { .. }) => {
            ui.bar.set_message("waiting");
        }
        Event::Session(download::Event::Progress { done, total }) => {
            ui.bar.set_message("receiving");
            ui.bar.set_length(total);
            ui.bar.set_position(done);
        }
        Event::Session(download::Event::Refetch { file }) => {
            ui.note(&format!(
                "file {file}: earlier partial download did not verify; fetching again"
            ));
        }
        Event::Link(link) => ui.link(&link),
        _ => {}
    });
    ui.finish();
    let relay_key = relay.canonical();
    match result {
        Ok(()) => {
            let paths: Vec<PathBuf> = sink.paths().map(|p| p.to_path_buf()).collect();
            if args.common.json {
                let files: Vec<_> = paths
                    .iter()
                    .zip(&entries)
                    .map(|(p, (size, sha1, reused))| {
                        json!({
                            "name": p.file_name().map(|n| n.to_string_lossy().into_owned()),
                            "path": p.to_string_lossy(),
                            "size": size,
                            "sha1": sha1.to_string(),
                            "reused": reused,
                        })
                    })
                    .collect();
                outln!("{}", json!({"code": code.to_string(), "files": files}));
            } else {
                let tty = std::io::stdout().is_terminal();
                for (p, (bytes, _, _)) in paths.iter().zip(&entries) {
                    let shown = escape(&p.to_string_lossy());
                    if tty {
                        outln!("  {shown}  ({})", size(*bytes));
                    } else {
                        outln!("{shown}");
                    }
                }
            }
            let _ = std::io::stdout().flush();
            Ok(())
        }
        Err(RunError::Session(e)) => Err(session_failure(e, &code)),
        Err(RunError::Storage(e)) => Err(Failure::new(Exit::Local, e.to_string())),
        Err(e) => Err(link_failure(e, &relay_key, &connector.last_error)),
    }
}

pub(crate) fn session_failure(e: download::Error, code: &Code) -> Failure {
    match e {
        // A relay cannot say "too short": any length is some code. A length
        // other than the default is the likeliest typo, so say so.
        download::Error::Relay(ErrorCode::UnknownCode) if code.len() != Code::DEFAULT_LEN => {
            let which = if code.len() < Code::DEFAULT_LEN {
                "too short"
            } else {
                "too long"
            };
            Failure::new(
                Exit::Refused,
                format!(
                    "relay refused: {} (the code has {} symbols, {} by default: {which}?)",
                    ErrorCode::UnknownCode,
                    code.len(),
                    Code::DEFAULT_LEN
                ),
            )
        }
        download::Error::HashMismatch { file } => Failure::new(
            Exit::Verification,
            format!("file {file} does not match its SHA-1 (nothing was kept)"),
        ),
        download::Error::Relay(ErrorCode::NotReady) => Failure::new(
            Exit::Refused,
            "the batch is still being uploaded (use --wait to wait for it)",
        ),
        download::Error::Relay(c) => Failure::new(Exit::Refused, format!("relay refused: {c}")),
        download::Error::Sink { file } => {
            Failure::new(Exit::Local, format!("file {file} could not be stored"))
        }
        other => Failure::new(Exit::Refused, other.to_string()),
    }
}
