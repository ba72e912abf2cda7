//! What the upload page's browser tests share (`tests/http_upload_page.rs`,
//! `tests/http_upload_page_faults.rs`): a relay serving the page, the
//! page's state as the page itself records it, choosing files as a person
//! does, and the relay's own view of a tus upload (HEAD, `/metrics`).
//!
//! ```text
//!   test ──WebDriver──► Chromium ──GET / , tus──► pickup-relay --http --metrics
//!     └──────────── HEAD /tus/… , GET /metrics ──────┘
//! ```
//!
//! The page keeps its state in `document.body.dataset.state` (`idle`,
//! `uploading`, `done`, `error`), its message in `#error`, its code in
//! `#code`; every wait here is a bounded poll ([`wait_for`]).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use serde_json::json;

use crate::browser::{self, Session};
use crate::e2e::{pickup, run_json, wait_for, TempDir};
use crate::http_client::request;
use crate::relay_process::{Builder, RelayProcess};

/// The relay's counter of tus bytes made durable, as `/metrics` encodes it.
pub const TUS_BYTES: &str = "pickup_tus_received_bytes_total";

/// Whether the browser tests of `test` (the test file's name) can run;
/// prints its one `skipped:` line when not, and fails instead under
/// `PICKUP_NO_SKIP`.
pub fn chromium_here(test: &str) -> bool {
    let Some(path) = browser::missing() else {
        return true;
    };
    assert!(
        std::env::var_os("PICKUP_NO_SKIP").is_none(),
        "{test} cannot run: {path} is missing and PICKUP_NO_SKIP is set \
(apt-get install chromium chromium-driver)"
    );
    // Straight to stderr: libtest hides what a passing test prints.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test} needs Debian's chromium and chromium-driver \
(apt-get install chromium chromium-driver)"
    );
    false
}

/// A relay serving HTTP (the page and tus) and its metrics, to start
/// (with a configuration, if the test needs one).
pub fn page_relay() -> Builder {
    RelayProcess::builder()
        .arg("--http")
        .arg("127.0.0.1:0")
        .arg("--metrics")
        .arg("127.0.0.1:0")
}

/// The relay's durable offset of the tus upload at `url` (a path), and its
/// pickup code once it has one.
pub fn tus_head(addr: SocketAddr, url: &str) -> (u64, Option<String>) {
    let r = request(addr, "HEAD", url, &[("Tus-Resumable", "1.0.0")]);
    assert_eq!(r.status, 200, "HEAD {url}: {r:?}");
    let offset = r
        .header("upload-offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Upload-Offset in {r:?}"));
    (offset, r.header("pickup-code").map(str::to_owned))
}

/// The relay's count of tus bytes made durable so far.
pub fn tus_bytes(metrics: SocketAddr) -> u64 {
    let r = request(metrics, "GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.text();
    body.lines()
        .find_map(|l| l.strip_prefix(TUS_BYTES)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {TUS_BYTES} in\n{body}"))
}

/// The page's state (`idle`, `uploading`, `done`, `error`); panics with
/// the page's message on `error`.
pub fn page_state(session: &Session) -> String {
    let state = session.execute(
        "return [document.body.dataset.state || '', document.getElementById('error').textContent];",
        &[],
    );
    let [state, error] = [&state[0], &state[1]].map(|v| v.as_str().unwrap_or("").to_owned());
    assert_ne!(state, "error", "the page failed: {error}");
    state
}

/// The page's status line (`#status`), as the person reads it.
pub fn status_line(session: &Session) -> String {
    let v = session.execute("return document.getElementById('status').textContent;", &[]);
    v.as_str().unwrap_or_default().to_owned()
}

/// Chooses `files` through the page's file input, as a person does.
pub fn choose(session: &Session, files: &[&Path]) {
    let input = session.find_all("input[type=file]");
    assert_eq!(input.len(), 1, "one file input");
    let paths: Vec<_> = files
        .iter()
        .map(|p| p.to_str().expect("a UTF-8 path"))
        .collect();
    session.send_keys(&input[0], &paths.join("\n"));
}

/// Waits (bounded) for the page to show a code; the code.
pub fn code_shown(session: &Session) -> String {
    wait_for("the page to show a code", || {
        (page_state(session) == "done").then_some(())
    });
    session.text(&session.find_all("#code")[0])
}

/// Waits (bounded) for the page to stop with an error; the message shown.
pub fn error_shown(session: &Session) -> String {
    wait_for("the page to show an error", || {
        let v = session.execute(
            "return document.body.dataset.state === 'error' \
               ? document.getElementById('error').textContent : null;",
            &[],
        );
        v.as_str().map(str::to_owned)
    })
}

/// Waits (bounded) for the page to keep `n` upload URLs in localStorage,
/// as it does for resuming; those URLs (paths), in the page's order.
pub fn kept_urls(session: &Session, n: usize) -> Vec<String> {
    wait_for("the page to keep every upload URL", || {
        let v = session.execute(
            "for (let i = 0; i < localStorage.length; i++) { \
               const v = JSON.parse(localStorage.getItem(localStorage.key(i))); \
               if (v && v.urls && v.urls.length === arguments[0]) return v.urls; } \
             return null;",
            &[json!(n)],
        );
        let urls: Vec<String> = v
            .as_array()?
            .iter()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect();
        (urls.len() == n).then_some(urls)
    })
}

/// `pickup get CODE` from `relay` into a fresh directory; that directory.
pub fn get(relay: &RelayProcess, code: &str) -> TempDir {
    let state = TempDir::new("upload-page-state");
    let out = TempDir::new("upload-page-got");
    run_json(
        pickup(state.path())
            .args(["get", "--json", "--relay", &relay.tcp(), code, "-o"])
            .arg(out.path()),
    );
    out
}
