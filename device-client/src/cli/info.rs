//! `pickup info`: show a batch's manifest.

use std::io::Write;

use clap::Args;
use pickup_proto::download;
use serde_json::json;

use super::get::{parse_code, session_failure};
use super::manifest_sink::ManifestSink;
use super::out::outln;
use super::send::link_failure;
use super::show::{escape, retrying_line, size, utc};
use super::{Common, Exit, Failure, MAX_FILES, RX, TX};
use crate::clock::StdClock;
use crate::{Downloader, Event, RunError};

#[derive(Args, Debug)]
pub(crate) struct InfoArgs {
    /// The global options, copied in by `cli::main` (not parsed here).
    #[arg(skip)]
    pub(crate) common: Common,
    /// The pickup code (case, hyphens and spaces do not matter)
    code: String,
}

pub(crate) fn run(args: InfoArgs) -> Result<(), Failure> {
    let relay = args.common.relay_addr()?;
    let code = parse_code(&args.code)?;
    let mut config = relay.download_config();
    config.manifest_only = true;
    let mut downloader = Box::new(Downloader::<MAX_FILES, RX, TX>::new(
        config,
        code,
        args.common.policy(),
    ));
    let mut sink = ManifestSink::default();
    let mut connector = relay.dial()?;
    let clock = StdClock::new();
    let mut manifest = None;
    let result = downloader.run(&mut connector, &clock, &mut sink, |event| match event {
        Event::Session(download::Event::Manifest {
            total_size,
            received,
            ready,
            expires_at,
            ..
        }) => manifest = Some((total_size, received, ready, expires_at)),
        // A silent wait looks like a hang (no bar here: a plain line).
        Event::Session(download::Event::Waiting {
            reason,
            retry_in_ms,
        }) => {
            let _ = writeln!(std::io::stderr(), "{}", retrying_line(reason, retry_in_ms));
        }
        _ => {}
    });
    match result {
        Ok(()) => {}
        Err(RunError::Session(e)) => return Err(session_failure(e, &code)),
        Err(RunError::Storage(e)) => return Err(Failure::new(Exit::Local, e.to_string())),
        Err(e) => return Err(link_failure(e, &relay.canonical(), &connector.last_error)),
    }
    let (total, received, ready, expires_at) = manifest.unwrap_or_default();
    if args.common.json {
        let files: Vec<_> = sink
            .entries
            .iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "size": e.size,
                    "sha1": e.sha1.to_string(),
                    "received": e.received,
                    // null when the sender kept none (an older client, a device).
                    "executable": e.attrs.map(|a| a.executable),
                    "mtime": e.attrs.map(|a| a.mtime),
                })
            })
            .collect();
        let doc = json!({
            "code": code.to_string(),
            "expires_at": expires_at,
            "ready": ready,
            "total_size": total,
            "received": received,
            "files": files,
        });
        outln!("{doc}");
        return Ok(());
    }
    outln!("code      {code}");
    outln!("expires   {}", utc(expires_at));
    if ready {
        outln!("status    ready");
    } else {
        outln!(
            "status    uploading, {} of {} received",
            size(received),
            size(total)
        );
    }
    outln!("files     {}, {} in total", sink.entries.len(), size(total));
    for e in &sink.entries {
        outln!(
            "  {:>10}  {}  {}{}",
            size(e.size),
            e.sha1,
            escape(&e.name),
            attrs_note(e.attrs)
        );
    }
    Ok(())
}

/// What `info` says of a file's attributes, after its name: executable or
/// not, and when it was modified; nothing if the sender kept none.
fn attrs_note(attrs: Option<pickup_proto::message::FileAttrs>) -> String {
    let Some(a) = attrs else {
        return String::new();
    };
    let kind = if a.executable { "executable, " } else { "" };
    match u64::try_from(a.mtime) {
        Ok(secs) => format!("  ({kind}modified {})", utc(secs)),
        Err(_) => format!("  ({kind}modified before 1970)"),
    }
}
