//! Issue 15's upload page when things go wrong, in a real headless
//! Chromium (Debian's `chromium` and `chromium-driver`) on the real relay:
//!
//! - the network drops in the middle of a throttled upload (Chromium's
//!   emulated offline) and comes back: the page goes on by itself from
//!   the relay's offset, shows the code, `pickup get` returns the same
//!   bytes, and the relay's count of durable tus bytes shows nothing was
//!   sent twice. (Going offline, Chromium lets the throttled rest of the
//!   PATCH in flight out at once and then fails its response, so the
//!   relay holds the whole piece while the page saw a failure: the page
//!   must learn the offset from the relay, not from what it sent.);
//! - the relay's storage is full (`limits.disk_quota` below the file):
//!   the page says so (screenshot `target/pickup-e2e/upload-page-full.png`);
//! - the relay limits batch creation (`new_batch_burst_per_peer = 1`): a
//!   second upload right after a first waits the `Retry-After` the relay
//!   gives and succeeds; a wait longer than the page waits for is said;
//! - the Copy button puts the link on the clipboard, and where the page
//!   may not write the clipboard, selects the link for Ctrl+C.
//!
//! Without the packages the tests print one `skipped:` line and pass;
//! with `PICKUP_NO_SKIP` set they fail instead (see http_browser.rs).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use pickup_tests::browser::{Driver, Session};
use pickup_tests::e2e::{artefact_dir, wait_for, write_random, TempDir};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::upload_page::{
    choose, chromium_here, code_shown, error_shown, get, kept_urls, page_relay, page_state,
    status_line, tus_bytes, tus_head,
};
use serde_json::{json, Value};

const TEST: &str = "http_upload_page_faults";

/// How long the page stays offline once it has noticed: long enough for
/// a request or two of its backoff to fail too.
const OFFLINE: Duration = Duration::from_secs(4);

/// A file of `len` random bytes named `name` in `dir`; its path and bytes.
fn file(dir: &TempDir, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let path = dir.path().join(name);
    let bytes = write_random(&path, len, seed);
    (path, bytes)
}

/// A Chromium session on the page of `relay`. The driver is returned
/// first so that it outlives the session (see `browser`).
fn open_page(relay: &RelayProcess) -> (Driver, Session, TempDir) {
    let downloads = TempDir::new("upload-faults-downloads");
    let driver = Driver::start(&artefact_dir().join("chromedriver.log"));
    let session = driver.session(downloads.path());
    session.goto(&format!("http://{}/", relay.listener("http")));
    assert_eq!(page_state(&session), "idle");
    (driver, session, downloads)
}

/// Waits (bounded) for the page's status line to contain `needle`; the line.
fn status_says(session: &Session, needle: &str) -> String {
    wait_for(&format!("the page to say {needle:?}"), || {
        let line = status_line(session);
        if line.contains(needle) {
            return Some(line);
        }
        // page_state panics if the page gave up meanwhile.
        let state = page_state(session);
        assert_ne!(state, "done", "the page finished without saying {needle:?}");
        None
    })
}

/// `pickup get` of `code` returns exactly `(path, bytes)`.
fn assert_got(relay: &RelayProcess, code: &str, (path, bytes): &(PathBuf, Vec<u8>)) {
    let got = get(relay, code);
    let name = path.file_name().unwrap();
    assert!(
        std::fs::read(got.path().join(name)).unwrap() == *bytes,
        "{name:?} differs"
    );
}

#[test]
fn a_dropped_network_mid_upload_goes_on_by_itself() {
    if !chromium_here(TEST) {
        return;
    }
    let relay = page_relay().start();
    let addr = relay.listener("http");
    let metrics = relay.listener("metrics");
    let src = TempDir::new("upload-faults-offline");
    let len = 20 << 20;
    let original = file(&src, "big.bin", len, 50);
    let (_driver, session, _downloads) = open_page(&relay);
    // 2 MiB/s: the file takes ten seconds, each 8 MiB PATCH four.
    session.throttle(2 << 20, 64 << 20);
    choose(&session, &[&original.0]);
    let url = kept_urls(&session, 1).remove(0);
    let before = wait_for("the relay to hold part of the file", || {
        let (offset, _) = tus_head(addr, &url);
        (offset > 0).then_some(offset)
    });
    assert!(before < len as u64, "the whole file went before the drop");

    session.go_offline();
    let lost = status_says(&session, "Connection lost");
    // Still offline a while: the page's next tries fail too, and it must
    // neither give up nor ask for a click.
    let offline_since = Instant::now();
    thread::sleep(OFFLINE);
    assert_eq!(page_state(&session), "uploading");
    let (held, _) = tus_head(addr, &url);
    session.unthrottle();

    let code = code_shown(&session);
    let back_after = offline_since.elapsed();
    // The page's upload completed, no other: starting over would have
    // created a second upload or sent the held bytes again.
    assert_eq!(tus_head(addr, &url), (len as u64, Some(code.clone())));
    let durable = tus_bytes(metrics);
    assert!(
        (len as u64..len as u64 + before).contains(&durable),
        "{durable} durable bytes for {len}, {before} of them held before the drop"
    );
    assert_got(&relay, &code, &original);
    println!(
        "chromium: offline with {before} of {len} bytes held ({held} once the PATCH broke); \
the page said {lost:?}; online again {OFFLINE:?} later, code {code} {back_after:?} after the \
drop; {durable} tus bytes durable in all"
    );
}

#[test]
fn a_full_relay_says_its_storage_is_full() {
    if !chromium_here(TEST) {
        return;
    }
    // The relay holds at most 1 MiB; the file is twice that.
    let relay = page_relay()
        .config("[limits]\ndisk_quota = 1048576\n")
        .start();
    let src = TempDir::new("upload-faults-full");
    let (path, _) = file(&src, "holiday.mov", 2 << 20, 51);
    let (_driver, session, _downloads) = open_page(&relay);
    choose(&session, &[&path]);
    let error = error_shown(&session);
    assert_eq!(error, "The relay’s storage is full. Try again later.");
    // As a person sees it: the message and a "Try again" button.
    let shown = session.text(&session.find_all("#error")[0]);
    assert_eq!(shown, error);
    let retry = session.find_all("#retry");
    assert_eq!(session.text(&retry[0]), "Try again");
    // Tall enough to show the button too.
    session.set_window_size(900, 800);
    let shot = artefact_dir().join("upload-page-full.png");
    std::fs::write(&shot, session.screenshot()).unwrap();
    println!(
        "chromium: a 2 MiB file on a 1 MiB relay -> {error:?}; screenshot {}",
        shot.display()
    );
}

/// On the finished page: "Send more files", then `path` chosen.
fn send_another(session: &Session, path: &Path) {
    session.click(&session.find_all("#again")[0]);
    assert_eq!(page_state(session), "idle");
    choose(session, &[path]);
}

#[test]
fn a_rate_limited_page_waits_for_the_relay_or_says_when() {
    if !chromium_here(TEST) {
        return;
    }
    let src = TempDir::new("upload-faults-rate");
    let files: Vec<_> = (0..3)
        .map(|i| file(&src, &format!("note-{i}.txt"), 10_000 + i, 52 + i as u64))
        .collect();

    // One batch at once, one more every 10 s: a second upload right after
    // a first is refused 429 with a Retry-After of up to 10 s, which the
    // page waits for.
    let relay = page_relay()
        .config("[limits]\nnew_batch_burst_per_peer = 1\nnew_batches_per_hour_per_peer = 360\n")
        .start();
    let (_driver, session, _downloads) = open_page(&relay);
    choose(&session, &[&files[0].0]);
    let first = code_shown(&session);
    send_another(&session, &files[1].0);
    let busy = status_says(&session, "The relay is busy; waiting");
    let second = code_shown(&session);
    assert_ne!(first, second);
    assert_got(&relay, &second, &files[1]);
    println!("chromium: a second upload within the rate limit: {busy:?}, then code {second}");

    // One an hour: the wait is longer than the page waits on its own, so
    // it says when to come back, and offers to try again.
    let relay = page_relay()
        .config("[limits]\nnew_batch_burst_per_peer = 1\nnew_batches_per_hour_per_peer = 1\n")
        .start();
    session.goto(&format!("http://{}/", relay.listener("http")));
    choose(&session, &[&files[0].0]);
    code_shown(&session);
    send_another(&session, &files[2].0);
    let error = error_shown(&session);
    assert!(
        error.starts_with("The relay is busy and asks to wait about ")
            && error.ends_with(" minutes. Try again then."),
        "{error:?}"
    );
    assert!(!session.find_all("#retry").is_empty());
    println!("chromium: a second upload an hour too early: {error:?}");
}

/// The page's `#copied` line once it is not empty.
fn copied_line(session: &Session) -> String {
    wait_for("the page to say what Copy did", || {
        let v = session.execute("return document.getElementById('copied').textContent;", &[]);
        v.as_str().filter(|t| !t.is_empty()).map(str::to_owned)
    })
}

#[test]
fn copy_puts_the_link_on_the_clipboard_or_selects_it() {
    if !chromium_here(TEST) {
        return;
    }
    let relay = page_relay().start();
    let src = TempDir::new("upload-faults-copy");
    let (path, _) = file(&src, "letter.txt", 3000, 53);
    let (_driver, session, _downloads) = open_page(&relay);
    choose(&session, &[&path]);
    let code = code_shown(&session);
    let link = format!("http://{}/c/{code}", relay.listener("http"));

    // Allowed to write the clipboard (and the test to read it back).
    session.set_permission("clipboard-read", "granted");
    session.set_permission("clipboard-write", "granted");
    let copy = &session.find_all("#copy")[0];
    session.click(copy);
    assert_eq!(copied_line(&session), "Link copied.");
    let pasted = session.execute_async(
        "const done = arguments[arguments.length - 1]; \
         navigator.clipboard.readText().then(done, (e) => done({ error: String(e) }));",
        &[],
    );
    assert_eq!(pasted, json!(link), "the clipboard");

    // Not allowed: the link is selected for the person to copy.
    session.set_permission("clipboard-write", "denied");
    session.execute(
        "document.getElementById('copied').textContent = ''; window.getSelection().removeAllRanges();",
        &[],
    );
    session.click(copy);
    assert_eq!(
        copied_line(&session),
        "Press Ctrl+C (or ⌘C) to copy the selected link."
    );
    let selected: Value = session.execute(
        "const link = document.getElementById('link'); \
         return [document.activeElement === link, \
                 link.value.substring(link.selectionStart, link.selectionEnd), \
                 window.getSelection().toString()];",
        &[],
    );
    assert_eq!(
        selected,
        json!([true, link, link]),
        "focus, input selection, page selection"
    );
    println!("chromium: Copy put {link} on the clipboard; without the permission it selected it");
}
