//! What `send` and `put` print: the code and its link as soon as the
//! relay grants the batch, the names a `put` bound, and the one line a
//! failed send ends with.

use std::io::Write;

use pickup_proto::message::RelayLimits;
use pickup_proto::upload;
use pickup_proto::{Code, ErrorCode};
use serde_json::json;

use super::super::out::{out, outln};
use super::super::show::{banner, escape, plural, size, utc, Ui};
use super::super::{Common, Exit, Failure};
use super::Local;
use crate::RunError;

/// What `put` says once the names are bound: the names on stdout (one
/// per line, or JSON).
pub(super) fn report_put(common: &Common, locals: &[Local]) {
    if common.json {
        let files: Vec<_> = locals
            .iter()
            .map(|l| json!({"name": l.name, "size": l.size, "sha1": l.sha1.to_string()}))
            .collect();
        outln!("{}", json!({ "files": files }));
    } else {
        for l in locals {
            outln!("{}", escape(&l.name));
        }
    }
    let _ = std::io::stdout().flush();
}

/// The browser link for `code`, when the relay said where its pages are
/// (a base URL the decoder checked: printable ASCII, safe to print).
pub(super) fn page_link(base: Option<&str>, code: Code) -> Option<String> {
    base.map(|base| format!("{base}/c/{code}"))
}

/// Shows the code as soon as the relay grants it, and its page's link
/// when the relay said where its pages are (`page_base`).
pub(super) fn announce(
    ui: &Ui,
    common: &Common,
    stdout_tty: bool,
    code: Code,
    expires_at: u64,
    page_base: Option<&str>,
) {
    if common.json {
        return;
    }
    let link = page_link(page_base, code);
    if stdout_tty {
        ui.bar.suspend(|| {
            outln!();
            out!("{}", banner(&code));
            if let Some(link) = link {
                outln!("  link: {link}");
            }
            outln!("  expires {}", utc(expires_at));
            outln!();
        });
    } else {
        // Scripts read the code from the first line; the link follows.
        outln!("{code}");
        if let Some(link) = link {
            outln!("link: {link}");
        }
        let _ = std::io::stdout().flush();
    }
}

pub(super) fn failure(
    e: RunError<upload::Error, std::io::Error>,
    names: &[&str],
    sizes: &[u64],
    limits: Option<RelayLimits>,
    relay: &str,
    connect_error: &Option<std::io::Error>,
) -> Failure {
    let name = |i: u16| escape(names.get(usize::from(i)).copied().unwrap_or("?"));
    match e {
        RunError::Session(upload::Error::Rejected { file, reason }) => {
            let exit = match reason {
                ErrorCode::HashMismatch | ErrorCode::SizeMismatch => Exit::Verification,
                _ => Exit::Refused,
            };
            Failure::new(
                exit,
                format!(
                    "the relay rejected \"{}\": {reason} (did it change while sending?)",
                    name(file)
                ),
            )
        }
        RunError::Session(upload::Error::InvalidName { file }) => Failure::new(
            Exit::Usage,
            format!("\"{}\": name too long for this relay's frames", name(file)),
        ),
        RunError::Session(upload::Error::TooManyFiles) => {
            Failure::new(Exit::Usage, "no files, or too many files for one batch")
        }
        RunError::Session(upload::Error::Relay(ErrorCode::TooLarge)) => Failure::new(
            Exit::Refused,
            format!(
                "too large for this relay: {}",
                too_large(names, sizes, limits)
            ),
        ),
        RunError::Session(upload::Error::Relay(ErrorCode::TooManyFiles)) => {
            let most = limits.map_or(String::new(), |l| {
                format!("; the relay takes at most {} per batch", l.max_files)
            });
            Failure::new(
                Exit::Refused,
                format!("too many files for this relay: {} files{most}", names.len()),
            )
        }
        RunError::Session(upload::Error::Relay(ErrorCode::TakenOver)) => Failure::new(
            Exit::Refused,
            format!(
                "another connection resumed this upload at {relay} (the same resume state used by two runs?); this run stops and the other one goes on"
            ),
        ),
        RunError::Session(other) => Failure::new(Exit::Refused, other.to_string()),
        RunError::Storage(e) => Failure::new(Exit::Local, format!("reading files: {e}")),
        RunError::GaveUp { .. } => link_failure(e, relay, connect_error),
    }
}

/// What a `TooLarge` refusal broke, naming what the user can act on: the
/// first file over the relay's per-file limit, else the batch over its
/// per-batch limit, with the limit itself when the relay said it
/// (`RelayLimits`); a relay that did not say gets the largest file.
fn too_large(names: &[&str], sizes: &[u64], limits: Option<RelayLimits>) -> String {
    let name = |i: usize| escape(names.get(i).copied().unwrap_or("?"));
    let total: u64 = sizes.iter().sum();
    let n = names.len();
    if let Some(l) = limits {
        if let Some(i) = sizes.iter().position(|s| *s > l.max_file_size) {
            let bytes = sizes.get(i).copied().unwrap_or(0);
            return format!(
                "\"{}\" is {}; the relay takes at most {} per file",
                name(i),
                size(bytes),
                size(l.max_file_size)
            );
        }
        if total > l.max_batch_size {
            return format!(
                "the batch is {} in {n} {}; the relay takes at most {} per batch",
                size(total),
                plural(n, "file", "files"),
                size(l.max_batch_size)
            );
        }
    }
    let largest = sizes.iter().enumerate().max_by_key(|(_, s)| **s);
    match (n, largest) {
        (1, Some((_, bytes))) => format!("\"{}\" is {}", name(0), size(*bytes)),
        (_, Some((i, bytes))) => format!(
            "the batch is {} in {n} files, the largest \"{}\" ({})",
            size(total),
            name(i),
            size(*bytes)
        ),
        _ => String::new(),
    }
}

/// The one-line message for a link that could not be kept.
pub(crate) fn link_failure<F, S>(
    e: RunError<F, S>,
    relay: &str,
    connect_error: &Option<std::io::Error>,
) -> Failure {
    let RunError::GaveUp { attempts, last } = e else {
        return Failure::new(Exit::Link, format!("link to {relay} failed"));
    };
    let why = match (last, connect_error) {
        (crate::LinkLoss::Connect, Some(err)) => format!("cannot connect to {relay}: {err}"),
        _ => format!("link to {relay} lost: {last}"),
    };
    if attempts > 0 {
        Failure::new(
            Exit::Link,
            format!("{why} (gave up after {attempts} attempts; run again to resume)"),
        )
    } else {
        Failure::new(Exit::Link, format!("{why} (run again to resume)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RelayLimits = RelayLimits {
        max_file_size: 1 << 30,
        max_batch_size: 2 << 30,
        max_files: 1000,
    };

    #[test]
    fn too_large_names_the_limit_broken_or_without_limits_the_largest_file() {
        let names = ["a.bin", "big.bin", "c.bin"];
        let over_file = [10, 3 << 30, 10];
        assert_eq!(
            too_large(&names, &over_file, Some(LIMITS)),
            "\"big.bin\" is 3.00 GiB; the relay takes at most 1.00 GiB per file"
        );
        let over_batch = [1 << 30, 1 << 30, 1 << 30];
        assert_eq!(
            too_large(&names, &over_batch, Some(LIMITS)),
            "the batch is 3.00 GiB in 3 files; the relay takes at most 2.00 GiB per batch"
        );
        // A relay that does not say its limits (an older one).
        assert_eq!(
            too_large(&names, &over_file, None),
            "the batch is 3.00 GiB in 3 files, the largest \"big.bin\" (3.00 GiB)"
        );
        assert_eq!(
            too_large(&["big.bin"], &[3 << 30], None),
            "\"big.bin\" is 3.00 GiB"
        );
    }
}
