//! `pickup get`: download every file of a batch into a directory.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use pickup_proto::{download, Code, Duration, ErrorCode, Sha1Digest};
use serde_json::json;

use super::account::Credential;
use super::addr::{RelayConnector, Relays};
use super::dir_sink::DirSink;
use super::out::outln;
use super::send::link_failure;
use super::show::{escape, say, size, Ui};
use super::stdout_sink::{StdoutSink, MISMATCH};
use super::{Common, Exit, Failure, MAX_FILES, RX, TX};
use crate::clock::StdClock;
use crate::{Downloader, Event, RunError};

#[derive(Args, Debug)]
pub(crate) struct GetArgs {
    /// The global options, copied in by `cli::main` (not parsed here).
    #[arg(skip)]
    pub(crate) common: Common,
    /// The pickup code (case, hyphens and spaces do not matter), or
    /// USER/NAME for a user's named file (needs `pickup login` or --terminal)
    code: String,
    /// Directory to write the files into (created if missing); `-` writes
    /// the file of a one-file batch to standard output
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

/// What `get` downloads: a batch by its code, or a user's named file.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Code(Code),
    Named { owner: String, name: String },
}

impl Target {
    fn parse(text: &str) -> Result<Target, Failure> {
        match text.split_once('/') {
            // Codes never hold a `/`: USER/NAME.
            Some((owner, name)) if !owner.is_empty() && !name.is_empty() => Ok(Target::Named {
                owner: owner.to_owned(),
                name: name.to_owned(),
            }),
            Some(_) => Err(Failure::new(
                Exit::Usage,
                format!("{text:?}: a named file is USER/NAME"),
            )),
            None => parse_code(text).map(Target::Code),
        }
    }

    /// How the target is shown (a code is a secret only to strangers; the
    /// user typed it).
    fn shown(&self) -> String {
        match self {
            Target::Code(code) => code.to_string(),
            Target::Named { owner, name } => format!("{owner}/{name}"),
        }
    }
}

/// A downloader for `target`, authenticated with `credential` if any.
fn downloader<'a>(
    config: download::Config,
    target: &'a Target,
    credential: Option<&'a Credential>,
    policy: crate::retransfer::RetransferPolicy,
) -> Box<Downloader<'a, MAX_FILES, RX, TX>> {
    let mut d = Box::new(match target {
        Target::Code(code) => Downloader::new(config, *code, policy),
        Target::Named { owner, name } => Downloader::named(config, owner, name, policy),
    });
    if let Some(c) = credential {
        d.authenticate(c.as_proto());
    }
    d
}

pub(crate) fn run(args: GetArgs) -> Result<(), Failure> {
    let relay = args.common.relay_addr()?;
    let target = Target::parse(&args.code)?;
    // A named file needs a login; a code is read with one if there is one
    // (a relay may admit only its users).
    let credential = match &target {
        Target::Named { .. } => Some(super::account::required_credential(&args.common)?),
        Target::Code(_) => super::account::credential(&args.common)?,
    };
    let code = &target;
    let credential = credential.as_ref();
    if args.dir.as_os_str() == "-" {
        if args.common.json {
            // A JSON report (or error) would land inside the file's bytes.
            return Err(Failure::new(
                Exit::Usage,
                "--json and -o - both write to standard output; use one",
            ));
        }
        return fetch_to_stdout(&args, relay, code, credential);
    }
    let created = prepare_dir(&args.dir)?;
    let result = fetch(&args, relay, code, credential);
    if result.is_err() {
        remove_created(&created);
    }
    result
}

/// Makes sure `-o DIR` is a directory, creating it (and missing parents)
/// if needed. Returns the directories it created, deepest first, so a
/// failed `get` can take them away again.
fn prepare_dir(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(Vec::new()),
        Ok(_) => {
            return Err(Failure::new(
                Exit::Usage,
                format!("-o {} is a file, not a directory", dir.display()),
            ))
        }
        Err(_) => {}
    }
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(d) = next {
        if d.as_os_str().is_empty() || std::fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d.to_path_buf());
        next = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        Failure::new(
            Exit::Local,
            format!("cannot create directory {}: {e}", dir.display()),
        )
    })?;
    Ok(missing)
}

/// Removes the directories `prepare_dir` created, deepest first, as long
/// as they are empty: temporary files of a partial download stay (the
/// next run resumes from them), and so does anything someone else put there.
fn remove_created(created: &[PathBuf]) {
    for dir in created {
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
    }
}

/// The download configuration of `get`, to a directory or to stdout.
fn get_config(args: &GetArgs, relay: &Relays) -> download::Config {
    let mut config = relay.download_config();
    if args.wait {
        config.wait_until_ready = Some(Duration::from_secs(2));
    }
    // The sink verifies (hashing as it writes), not the state machine.
    config.hashing = download::Hashing::BySink;
    config
}

/// One file a download put in place.
pub(crate) struct ReceivedFile {
    /// Its name in the batch (a path for a file of a tree).
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    pub size: u64,
    pub sha1: Sha1Digest,
    /// Bytes kept from an earlier run.
    pub reused: u64,
}

/// What a download into a directory left: the files in place, and the
/// existing files it left alone (shown, escaped).
pub(crate) struct Received {
    pub files: Vec<ReceivedFile>,
    pub conflicts: Vec<String>,
    /// How long this run's transfer took (connecting included).
    pub elapsed: std::time::Duration,
}

impl Received {
    /// Bytes this run fetched: the files' sizes less what earlier runs
    /// left, so a resumed download's rate is this run's, not the file's.
    pub fn fetched(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.size.saturating_sub(f.reused))
            .sum()
    }

    /// This run's rate in bytes per second (0 for an instant run).
    pub fn rate(&self) -> u64 {
        let ms = self.elapsed.as_millis();
        if ms == 0 {
            return 0;
        }
        u64::try_from(u128::from(self.fetched()) * 1000 / ms).unwrap_or(u64::MAX)
    }
}

/// Downloads `target` into `dir` over links from `connector`, showing
/// progress on `ui`: every file verified and in place, or the one-line
/// failure. Files that exist with other content are left alone (without
/// `force`) and listed in [`Received::conflicts`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn receive_into(
    dir: &Path,
    force: bool,
    config: download::Config,
    target: &Target,
    credential: Option<&Credential>,
    policy: crate::retransfer::RetransferPolicy,
    connector: &mut RelayConnector,
    relay_key: &str,
    ui: &Ui,
) -> Result<Received, Failure> {
    let mut sink = DirSink::new(dir.to_path_buf(), force)
        .map_err(|e| Failure::new(Exit::Local, format!("cannot start hashing: {e}")))?;
    let (bar, tty) = (ui.bar.clone(), ui.tty);
    sink.on_resume(move |name, kept, total| {
        let line = format!(
            "{}: resuming at {} of {}",
            escape(name),
            size(kept),
            size(total)
        );
        say(&bar, tty, &line);
    });
    let mut downloader = downloader(config, target, credential, policy);
    let clock = StdClock::new();
    // Per file: (size, sha1, bytes reused from an earlier run).
    let mut entries: Vec<(u64, Sha1Digest, u64)> = Vec::new();
    ui.bar.set_message("receiving");
    let mut first_progress = true;
    let mut said_waiting = false;
    let started = std::time::Instant::now();
    let result = downloader.run(connector, &clock, &mut sink, |event| match event {
        Event::Session(download::Event::Manifest { total_size, .. }) => {
            ui.bar.set_length(total_size);
        }
        Event::Session(download::Event::Entry {
            size, sha1, local, ..
        }) => entries.push((size, sha1, local)),
        Event::Session(download::Event::NotReady { received, total }) => {
            ui.bar.set_message("waiting");
            if !said_waiting {
                // Said once, whatever stderr is: a silent wait looks like a hang.
                said_waiting = true;
                let line = format!(
                    "waiting: the batch is still being uploaded ({} of {} at the relay)",
                    size(received),
                    size(total)
                );
                say(&ui.bar, ui.tty, &line);
            }
        }
        Event::Session(download::Event::Progress { done, total }) => {
            ui.progress("receiving", done, total);
            if first_progress {
                // Bytes kept from an earlier run are not this run's speed:
                // the rate and eta start from here.
                first_progress = false;
                ui.bar.tick();
                ui.bar.reset_eta();
            }
        }
        Event::Session(download::Event::Waiting {
            reason,
            retry_in_ms,
        }) => ui.retrying(reason, retry_in_ms),
        Event::Session(download::Event::Refetch { file }) => {
            ui.note(&format!(
                "file {file}: earlier partial download did not verify; fetching again"
            ));
        }
        Event::Link(link) => ui.link(&link),
        _ => {}
    });
    ui.finish();
    let elapsed = started.elapsed();
    match result {
        Ok(()) => Ok(Received {
            elapsed,
            files: sink
                .paths()
                .filter_map(|(i, name, p)| {
                    let (size, sha1, reused) = *entries.get(i)?;
                    Some(ReceivedFile {
                        name: name.to_owned(),
                        path: p.to_path_buf(),
                        size,
                        sha1,
                        reused,
                    })
                })
                .collect(),
            conflicts: sink
                .conflicts()
                .map(|p| escape(&p.to_string_lossy()))
                .collect(),
        }),
        Err(RunError::Session(e)) => Err(target_failure(e, target)),
        Err(RunError::Storage(e)) => Err(Failure::new(Exit::Local, e.to_string())),
        Err(e) => Err(link_failure(e, relay_key, &connector.last_error)),
    }
}

/// The one error line for the files a download left alone.
pub(crate) fn conflict_failure(conflicts: &[String]) -> Failure {
    // Still one line (errors are), naming every file left alone.
    let message = match conflicts {
        [one] => format!("{one} already exists with other content"),
        many => format!(
            "{} files already exist with other content: {}",
            many.len(),
            many.join(", ")
        ),
    };
    Failure::new(
        Exit::Local,
        format!("{message}; the rest arrived (use --force to overwrite)"),
    )
}

fn fetch(
    args: &GetArgs,
    relay: Relays,
    code: &Target,
    credential: Option<&Credential>,
) -> Result<(), Failure> {
    let ui = Ui::new(args.common.verbose);
    let config = get_config(args, &relay);
    let mut connector = relay.dial()?;
    let received = receive_into(
        &args.dir,
        args.force,
        config,
        code,
        credential,
        args.common.policy(),
        &mut connector,
        &relay.canonical(),
        &ui,
    )?;
    let (fetched, rate) = (received.fetched(), received.rate());
    let kept: u64 = received.files.iter().map(|f| f.reused).sum();
    let mut line = format!(
        "received {} in {:.1} s ({}/s)",
        size(fetched),
        received.elapsed.as_secs_f64(),
        size(rate)
    );
    if kept > 0 {
        line.push_str(&format!("; {} kept from an earlier run", size(kept)));
    }
    // Shown where the link lines are (a terminal, or -v); the bar is gone.
    if ui.tty || args.common.verbose {
        eprintln!("{line}");
    }
    // With --json and conflicts, stdout holds one object: the error.
    if args.common.json && received.conflicts.is_empty() {
        let files: Vec<_> = received.files.iter().map(file_json).collect();
        // This run's bytes, time and rate: a resumed download's rate is
        // not inflated by what an earlier run fetched.
        let elapsed_ms = u64::try_from(received.elapsed.as_millis()).unwrap_or(u64::MAX);
        let mut doc = match code {
            Target::Code(c) => json!({"code": c.to_string(), "files": files}),
            Target::Named { .. } => json!({"name": code.shown(), "files": files}),
        };
        doc["fetched"] = json!(fetched);
        doc["elapsed_ms"] = json!(elapsed_ms);
        doc["rate"] = json!(rate);
        outln!("{doc}");
    } else if !args.common.json {
        let tty = std::io::stdout().is_terminal();
        for f in &received.files {
            let shown = escape(&f.path.to_string_lossy());
            if tty {
                outln!("  {shown}  ({})", size(f.size));
            } else {
                outln!("{shown}");
            }
        }
    }
    let _ = std::io::stdout().flush();
    if received.conflicts.is_empty() {
        Ok(())
    } else {
        Err(conflict_failure(&received.conflicts))
    }
}

/// A received file for `--json`.
pub(crate) fn file_json(f: &ReceivedFile) -> serde_json::Value {
    json!({
        // The batch's name: a path for a file of a tree.
        "name": f.name,
        "path": f.path.to_string_lossy(),
        "size": f.size,
        "sha1": f.sha1.to_string(),
        "reused": f.reused,
    })
}

/// `-o -`: the one file of the batch to standard output, verified as it
/// streams (see [`StdoutSink`]). Nothing else is printed on stdout.
fn fetch_to_stdout(
    args: &GetArgs,
    relay: Relays,
    code: &Target,
    credential: Option<&Credential>,
) -> Result<(), Failure> {
    let ui = Ui::new(args.common.verbose);
    let config = get_config(args, &relay);
    let mut sink = StdoutSink::new(std::io::stdout().lock());
    let mut downloader = downloader(config, code, credential, args.common.policy());
    let mut connector = relay.dial()?;
    let clock = StdClock::new();
    ui.bar.set_message("receiving");
    let result = downloader.run(&mut connector, &clock, &mut sink, |event| match event {
        Event::Session(download::Event::Manifest { total_size, .. }) => {
            ui.bar.set_length(total_size);
        }
        Event::Session(download::Event::NotReady { .. }) => {
            ui.bar.set_message("waiting");
        }
        Event::Session(download::Event::Progress { done, total }) => {
            ui.progress("receiving", done, total);
        }
        Event::Session(download::Event::Waiting {
            reason,
            retry_in_ms,
        }) => ui.retrying(reason, retry_in_ms),
        Event::Link(link) => ui.link(&link),
        _ => {}
    });
    ui.finish();
    match result {
        Ok(()) => Ok(()),
        Err(RunError::Session(e)) => Err(target_failure(e, code)),
        Err(RunError::Storage(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            // The reader took what it wanted (see `out`).
            std::process::exit(0)
        }
        Err(RunError::Storage(e)) if e.to_string() == MISMATCH => {
            Err(Failure::new(Exit::Verification, MISMATCH))
        }
        Err(RunError::Storage(e)) => Err(Failure::new(Exit::Local, e.to_string())),
        Err(e) => Err(link_failure(e, &relay.canonical(), &connector.last_error)),
    }
}

/// The one line for a failed download of `target`.
fn target_failure(e: download::Error, target: &Target) -> Failure {
    match (target, e) {
        (Target::Code(code), e) => session_failure(e, code),
        // The same answer for a name that does not exist and one this
        // user may not read (PROTOCOL.md §8).
        (Target::Named { .. }, download::Error::Relay(ErrorCode::UnknownCode)) => {
            Failure::new(Exit::Refused, format!("not found: {}", target.shown()))
        }
        (Target::Named { .. }, download::Error::Auth(a)) => {
            Failure::new(Exit::Refused, format!("authentication failed: {a}"))
        }
        (Target::Named { .. }, e) => match e {
            download::Error::Relay(c) => Failure::new(Exit::Refused, format!("relay refused: {c}")),
            download::Error::HashMismatch { file } => Failure::new(
                Exit::Verification,
                format!("file {file} does not match its SHA-1 (nothing was kept)"),
            ),
            other => Failure::new(Exit::Refused, other.to_string()),
        },
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
