//! `pickup send`: upload files, print the pickup code.

mod report;

pub(crate) use report::link_failure;
use report::{announce, failure, page_link, report_put};

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use clap::Args;
use pickup_proto::message::FileAttrs;
use pickup_proto::upload::{self, FileMeta};
use pickup_proto::{Code, ErrorCode, Sha1Digest};
use serde_json::json;

use super::account::Credential;
use super::deliver;
use super::hash_cache::{HashCache, Key};
use super::inputs::{gather, Input};
use super::out::outln;
use super::show::{escape, plural, say, size, Ui};
use super::source::{attrs_of, sha1_file, SourceFiles, NOT_PROVING};
use super::state::{FamilyFile, Saved, StateFile};
use super::{Common, Exit, Failure, MAX_FILES, RX, TX};
use crate::clock::StdClock;
use crate::{Event, RunError, Uploader};

#[derive(Args, Debug)]
pub(crate) struct SendArgs {
    /// The global options, copied in by `cli::main` (not parsed here).
    #[arg(skip)]
    pub(crate) common: Common,
    /// Files and directories to send (one batch, one code); `-` reads
    /// standard input (with --name)
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The name standard input (`-`) is sent under
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Also deliver the batch to this registered terminal (repeatable):
    /// it is told at once if connected, else when it next connects
    /// (needs `pickup login` or --terminal). TERMINAL@PEER is a terminal
    /// at the peer relay PEER: the relay copies the batch there and the
    /// peer queues the notice; send follows the copy until the notice is
    /// queued (exit 0) or the forward failed (exit 2)
    #[arg(long = "to", value_name = "TERMINAL[@PEER]")]
    to: Vec<String>,
    /// With --to: wait until every terminal of this relay confirmed the
    /// files (exit 0), refused them (exit 6) or let them expire (exit 7).
    /// A TERMINAL@PEER's receipt is the peer's and not seen here: for
    /// those, send waits only until the peer queued the notice
    #[arg(long, requires = "to")]
    wait: bool,
}

/// `pickup put FILE... [--name NAME]`: like `send`, but the files are
/// stored under the logged-in user's names (PROTOCOL.md §8) instead of
/// only under a code.
#[derive(Args, Debug)]
pub(crate) struct PutArgs {
    /// The global options, copied in by `cli::main` (not parsed here).
    #[arg(skip)]
    pub(crate) common: Common,
    /// Files to store (each under its file name); `-` reads standard input
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The name to store the one FILE (or standard input) under
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

/// `put`: the send of [`PutArgs`]'s files under the user's names.
pub(crate) fn put(args: PutArgs) -> Result<(), Failure> {
    if args.name.is_some() && args.files.len() != 1 {
        return Err(Failure::new(
            Exit::Usage,
            "--name names one file: give exactly one FILE",
        ));
    }
    let credential = super::account::required_credential(&args.common)?;
    // `--name` names standard input as for `send`, or renames the one file.
    let stdin = args.files.iter().any(|f| f.as_os_str() == "-");
    let (stdin_name, rename) = if stdin {
        (args.name, None)
    } else {
        (None, args.name)
    };
    let send = SendArgs {
        common: args.common,
        files: args.files,
        name: stdin_name,
        to: Vec::new(),
        wait: false,
    };
    run_mode(send, Some(credential), Some(rename))
}

pub(crate) fn run(args: SendArgs) -> Result<(), Failure> {
    // Before any byte is sent: a malformed target is a usage error.
    deliver::targets(&args.to)?;
    // A kept login or --terminal authenticates plain sends too, so that a
    // relay that admits only its users accepts them.
    let credential = if args.to.is_empty() {
        super::account::credential(&args.common)?
    } else {
        // Before any byte is sent: a push needs an identity.
        Some(super::account::required_credential(&args.common)?)
    };
    run_mode(args, credential, None)
}

struct Local {
    name: String,
    size: u64,
    sha1: Sha1Digest,
    /// Executable bit and modification time, sent to a relay that keeps them.
    attrs: Option<(bool, i64)>,
    /// Where the file was opened (hashed again from its open handle).
    path: PathBuf,
    /// The file's hash cache key, if it can have one (not standard input).
    key: Option<Key>,
    /// `sha1` came from the hash cache and was not checked in this run:
    /// if the relay rejects it, the file is hashed again (once).
    from_cache: bool,
}

/// Hashes the open `file` (opened at `path`), moving the bar, and
/// records the hash under `key` if the file did not change meanwhile.
fn hash_and_record(
    ui: &Ui,
    file: &File,
    path: &std::path::Path,
    key: Option<&Key>,
    cache: Option<&mut HashCache>,
) -> Result<(u64, Sha1Digest), Failure> {
    let local_err =
        |e: std::io::Error| Failure::new(Exit::Local, format!("{}: {e}", path.display()));
    ui.bar.set_message("hashing");
    ui.bar.set_length(file.metadata().map_err(local_err)?.len());
    ui.bar.set_position(0);
    let (size, sha1) = sha1_file(file, |n| ui.bar.inc(n)).map_err(local_err)?;
    // A file written while it was hashed has another key afterwards: its
    // hash may mix old and new bytes, so it is not kept.
    if let (Some(key), Some(cache)) = (key, cache) {
        let after = file.metadata().ok().and_then(|m| Key::of(path, &m));
        if after.as_ref() == Some(key) && key.size() == size {
            cache.insert(key.clone(), sha1);
        }
    }
    Ok((size, sha1))
}

/// Sends `args`' files, authenticated with `credential` if any. With
/// `named` (a `put`), under the user's names, the one file renamed to
/// `named`'s name if it has one.
fn run_mode(
    args: SendArgs,
    credential: Option<Credential>,
    named: Option<Option<String>>,
) -> Result<(), Failure> {
    let rename = named.clone().flatten();
    let named = named.is_some();
    let relay = args.common.relay_addr()?;
    let ui = Ui::new(args.common.verbose);

    // Open and hash every file before talking to the relay.
    let mut opened = Vec::new();
    let mut locals: Vec<Local> = Vec::new();
    let state_dir = args
        .common
        .state_dir
        .clone()
        .or_else(super::default_state_dir);
    // Standard input is spooled where resume state lives (it can be large,
    // and /tmp is often small), or in the system's temporary directory.
    let spool_dir = state_dir.clone().unwrap_or_else(std::env::temp_dir);
    let verbose = args.common.verbose;
    let mut cache = state_dir.as_ref().map(|dir| {
        HashCache::load(dir, &mut |line| {
            if verbose {
                ui.note(line);
            }
        })
    });
    let (inputs, spool) = gather(&args.files, args.name.as_deref(), &spool_dir, &mut |line| {
        say(&ui.bar, ui.tty, line)
    })?;
    for Input { path, mut name } in inputs {
        let path = &path;
        if named {
            // One file under --name; a namespace has no directories.
            if let Some(given) = &rename {
                name.clone_from(given);
            }
            if name.contains('/') {
                return Err(Failure::new(
                    Exit::Usage,
                    format!(
                        "{}: named files have plain names, not paths (put files, not directories)",
                        escape(&name)
                    ),
                ));
            }
        }
        let local_err =
            |e: std::io::Error| Failure::new(Exit::Local, format!("{}: {e}", path.display()));
        let file = File::open(path).map_err(local_err)?;
        let meta = file.metadata().map_err(local_err)?;
        if !meta.is_file() {
            return Err(Failure::new(
                Exit::Usage,
                format!("{}: not a regular file", path.display()),
            ));
        }
        // Standard input has no mode or time of its own: the spool file's
        // would be made up, and its path is a new temporary file each run.
        let spooled = spool.as_ref().is_some_and(|s| s.path() == path.as_path());
        let key = if spooled || cache.is_none() {
            None
        } else {
            Key::of(path, &meta)
        };
        let cached = match (&key, cache.as_mut()) {
            (Some(k), Some(c)) => c.get(k),
            _ => None,
        };
        let (size, sha1) = match cached {
            Some(sha1) => {
                if args.common.verbose {
                    ui.note(&format!("{}: hash from cache", escape(&name)));
                }
                (meta.len(), sha1)
            }
            None => hash_and_record(&ui, &file, path, key.as_ref(), cache.as_mut())?,
        };
        opened.push(file);
        let attrs = if spooled { None } else { attrs_of(&meta) };
        locals.push(Local {
            name,
            size,
            sha1,
            attrs,
            path: path.clone(),
            key,
            from_cache: cached.is_some(),
        });
    }
    save_cache(&ui, cache.as_mut());
    let total: u64 = locals.iter().map(|l| l.size).sum();

    // State is kept under the first address (see `Relays`); messages name
    // them all.
    let relay_key = relay.key();
    let relay_name = relay.canonical();
    // The token of the latest batch sent to this relay: the new batch joins
    // its owner, so content sent before goes up instantly.
    let family = state_dir
        .as_ref()
        .map(|dir| FamilyFile::new(dir, &relay_key));
    if state_dir.is_none() {
        ui.note("no state directory (set --state-dir): an interrupted send will start over");
    }
    let proving = Arc::new(AtomicU32::new(NOT_PROVING));
    let mut source = SourceFiles {
        files: opened,
        proving: Arc::clone(&proving),
        bar: ui.bar.clone(),
    };
    // Files whose proof was announced already (a challenge can repeat
    // after a reconnect; one line each is enough).
    let mut announced_proofs = std::collections::BTreeSet::new();
    // The hashing bar is cleared before the one-line error.
    let mut connector = relay.dial().inspect_err(|_| ui.finish())?;
    let clock = StdClock::new();
    let stdout_tty = std::io::stdout().is_terminal();

    // False once an attempt showed the saved upload is not to be resumed.
    let mut resume_saved = true;
    loop {
        let metas: Vec<FileMeta<'_>> = locals
            .iter()
            .map(|l| FileMeta {
                name: &l.name,
                size: l.size,
                sha1: l.sha1,
            })
            .collect();
        let names: Vec<&str> = locals.iter().map(|l| l.name.as_str()).collect();
        let state = state_dir
            .as_ref()
            .map(|dir| StateFile::new(dir, &relay_key, &metas));
        let saved = if resume_saved {
            state.as_ref().and_then(StateFile::load)
        } else {
            None
        };
        let resumed = saved.is_some();
        let config = upload::Config {
            // Only a batch under a code has a page to link to.
            page_link: !named,
            // A refusal then names the limit the batch broke.
            relay_limits: true,
            ..relay.upload_config()
        };
        let policy = args.common.policy();
        let made = match &saved {
            Some(s) => Uploader::<'_, MAX_FILES, RX, TX>::resume(config, &metas, s.token, policy),
            None => Uploader::<'_, MAX_FILES, RX, TX>::new(config, &metas, policy),
        };
        let mut uploader = Box::new(made.map_err(|e| Failure::new(Exit::Usage, e.to_string()))?);
        for (index, l) in (0u16..).zip(&locals) {
            if let Some((executable, mtime)) = l.attrs {
                uploader.set_attrs(FileAttrs {
                    index,
                    executable,
                    mtime,
                });
            }
        }
        if let Some(token) = family.as_ref().and_then(FamilyFile::load) {
            uploader.join_family(token);
        }
        if let Some(c) = &credential {
            uploader.authenticate(c.as_proto());
        }
        uploader.set_named(named);
        ui.bar
            .set_message(if resumed { "resuming" } else { "sending" });
        ui.bar.set_length(total);
        ui.bar.set_position(0);
        let mut granted: Option<(Code, u64)> = None;
        let mut save_error = None;
        // `up`: the session as it stood at the event `e`.
        let result = uploader.run_with(&mut connector, &clock, &mut source, |up, e| match e {
            Event::Session(upload::Event::Granted {
                code,
                expires_at,
                token,
            }) => {
                if granted.is_none() {
                    if let Some(s) = &state {
                        if let Err(e) = s.save(&relay_key, &Saved { code, token }, &names) {
                            save_error = Some(e);
                        }
                    }
                    if let Some(f) = &family {
                        if let Err(e) = f.save(&relay_key, &token) {
                            save_error = Some(e);
                        }
                    }
                    if !named {
                        let base = up.page_link();
                        announce(&ui, &args.common, stdout_tty, code, expires_at, base);
                    }
                }
                granted = Some((code, expires_at));
            }
            Event::Session(upload::Event::Progress { acked, total }) => {
                ui.progress("sending", acked, total);
            }
            Event::Session(upload::Event::Uploading { file, offset }) => {
                // A proof that did not convince the relay ends in an upload.
                let _ = proving.compare_exchange(
                    u32::from(file),
                    NOT_PROVING,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                if offset > 0 {
                    ui.note(&format!(
                        "{}: resuming at {}",
                        escape(names.get(usize::from(file)).copied().unwrap_or("?")),
                        size(offset)
                    ));
                }
            }
            Event::Session(upload::Event::Proving { file }) => {
                // Said whatever stderr is: proving reads the whole file,
                // which for a large one takes a while with no bytes sent.
                if announced_proofs.insert(file) {
                    let line = format!(
                        "{}: already at the relay, proving ownership",
                        escape(names.get(usize::from(file)).copied().unwrap_or("?"))
                    );
                    say(&ui.bar, ui.tty, &line);
                }
                ui.bar.set_message("proving");
                ui.bar
                    .set_length(locals.get(usize::from(file)).map_or(0, |l| l.size));
                ui.bar.set_position(0);
                ui.bar.reset_eta();
                proving.store(u32::from(file), Ordering::Relaxed);
            }
            Event::Session(upload::Event::Linked { file }) => {
                proving.store(NOT_PROVING, Ordering::Relaxed);
                if args.common.verbose {
                    ui.note(&format!(
                        "{}: already at the relay",
                        escape(names.get(usize::from(file)).copied().unwrap_or("?"))
                    ));
                }
            }
            Event::Session(upload::Event::Waiting {
                reason,
                retry_after_ms,
            }) => ui.waiting(reason, retry_after_ms),
            Event::Link(link) => ui.link(&link),
            _ => {}
        });
        if let Some(e) = save_error {
            ui.note(&format!("warning: could not save resume state: {e}"));
        }
        let rehash = match result {
            Ok(code) => {
                ui.finish();
                if let Some(s) = &state {
                    if let Err(e) = s.remove() {
                        ui.note(&format!(
                            "warning: could not remove {}: {e}",
                            s.path().display()
                        ));
                    }
                }
                let expires_at = granted.map(|g| g.1).unwrap_or(0);
                // The latest the relay said, should the first be lost.
                let link = page_link(uploader.session().page_link(), code);
                if named {
                    report_put(&args.common, &locals);
                    return Ok(());
                }
                // The code is out already: a push that fails leaves it usable.
                let (local, remote) = deliver::targets(&args.to)?;
                let deliveries = if local.is_empty() {
                    Vec::new()
                } else {
                    let say_line = |line: &str| say(&ui.bar, ui.tty, line);
                    let pushed = deliver::push(&args.common, code, &local)?;
                    if args.wait {
                        deliver::wait(&args.common, code, &local, &say_line)?
                    } else {
                        for d in &pushed {
                            say_line(&deliver::line(d));
                        }
                        pushed
                    }
                };
                // Terminals at peer relays: forwarded, then pushed there.
                let across = if remote.is_empty() {
                    Vec::new()
                } else {
                    let ids = deliver::push_across(&args.common, code, &remote)?;
                    deliver::follow_across(&args.common, &ui, &remote, &ids)?
                };
                if args.common.json {
                    let files: Vec<_> = locals
                        .iter()
                        .map(
                            |l| json!({"name": l.name, "size": l.size, "sha1": l.sha1.to_string()}),
                        )
                        .collect();
                    let mut doc = json!({
                        "code": code.to_string(),
                        "expires_at": expires_at,
                        "files": files,
                        "resumed": resumed,
                    });
                    if let Some(link) = &link {
                        doc["link"] = json!(link);
                    }
                    if !deliveries.is_empty() {
                        let list: Vec<_> = deliveries.iter().map(deliver::to_json).collect();
                        doc["deliveries"] = json!(list);
                    }
                    if !across.is_empty() {
                        let list: Vec<_> = remote
                            .iter()
                            .zip(&across)
                            .map(|(r, s)| deliver::across_json(r, s))
                            .collect();
                        doc["forwards"] = json!(list);
                    }
                    outln!("{doc}");
                } else if stdout_tty {
                    let relay_arg = if args.common.relay == super::DEFAULT_RELAY {
                        String::new()
                    } else if args.common.relay.contains(',') {
                        // A list as one word, whatever spaces it was given with.
                        format!("--relay {relay_name} ")
                    } else {
                        format!("--relay {} ", args.common.relay)
                    };
                    let n = locals.len();
                    outln!(
                        "  sent {n} {}, {}; get {} with: pickup get {relay_arg}{code}",
                        plural(n, "file", "files"),
                        size(total),
                        plural(n, "it", "them"),
                    );
                    if let Some(link) = &link {
                        outln!("  link: {link}");
                    }
                }
                let _ = std::io::stdout().flush();
                return Ok(());
            }
            Err(RunError::Session(upload::Error::Relay(
                ErrorCode::UnknownToken | ErrorCode::Expired,
            ))) if resumed => {
                // The relay forgot the earlier upload (expired, or another
                // relay): start a fresh one.
                ui.note("the relay no longer knows the earlier upload; starting over");
                if let Some(s) = &state {
                    let _ = s.remove();
                }
                resume_saved = false;
                None
            }
            // The relay checks every byte against the announced hash, so a
            // stale cache entry ends here (or in a failed proof, which is
            // answered with an upload that ends here), never in a file
            // stored as verified with other content. The file is hashed
            // again and a new batch sent; at most once per file, since
            // the hash is then this run's own.
            Err(RunError::Session(upload::Error::Rejected {
                file,
                reason: ErrorCode::HashMismatch,
            })) if locals.get(usize::from(file)).is_some_and(|l| l.from_cache) => {
                let line = format!(
                    "{}: changed since its hash was cached; hashing it again and sending a new batch{}",
                    escape(names.get(usize::from(file)).copied().unwrap_or("?")),
                    if granted.is_some() && !args.common.json && !named {
                        " (the code above will not work)"
                    } else {
                        ""
                    }
                );
                say(&ui.bar, ui.tty, &line);
                if let Some(s) = &state {
                    let _ = s.remove();
                }
                resume_saved = false;
                Some(usize::from(file))
            }
            Err(RunError::Session(upload::Error::Relay(ErrorCode::UnknownToken)))
                if granted.is_some() =>
            {
                // Granted in this run, then unknown after a reconnect: the
                // link moved to a relay (of a `--relay` list) that does not
                // share the first one's storage. The code given out is that
                // relay's; the saved state lets a later run resume there
                // or start over.
                ui.finish();
                return Err(Failure::new(
                    Exit::Refused,
                    format!(
                        "after reconnecting, the relay at {} does not know this upload (relays that do not share storage cannot resume each other's uploads); run again to resume or start over",
                        connector.current()
                    ),
                ));
            }
            Err(e) => {
                ui.finish();
                let sizes: Vec<u64> = locals.iter().map(|l| l.size).collect();
                let limits = uploader.session().relay_limits();
                return Err(failure(
                    e,
                    &names,
                    &sizes,
                    limits,
                    &relay_name,
                    &connector.last_error,
                ));
            }
        };
        // The session borrows `locals` (through `metas`) until it is gone.
        drop(uploader);
        if let Some(index) = rehash {
            let (Some(local), Some(file)) = (locals.get_mut(index), source.files.get(index)) else {
                continue;
            };
            if let (Some(key), Some(c)) = (&local.key, cache.as_mut()) {
                c.remove(key);
                // As the file is now, should it have changed again.
                local.key = file.metadata().ok().and_then(|m| Key::of(&local.path, &m));
            }
            let (size, sha1) =
                hash_and_record(&ui, file, &local.path, local.key.as_ref(), cache.as_mut())?;
            local.size = size;
            local.sha1 = sha1;
            local.from_cache = false;
            save_cache(&ui, cache.as_mut());
        }
    }
}

/// Writes the hash cache back; a failure costs the next send a pass over
/// its files, so it is only mentioned.
fn save_cache(ui: &Ui, cache: Option<&mut HashCache>) {
    if let Some(Err(e)) = cache.map(HashCache::save) {
        ui.note(&format!("warning: could not save the hash cache: {e}"));
    }
}
