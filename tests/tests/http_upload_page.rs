//! Issue 15's browser acceptance of the upload page: a real headless
//! Chromium (Debian's `chromium` and `chromium-driver`) on the real relay's
//! `GET /` chooses files through the page's file input, the page uploads
//! them over tus and shows a code, and `pickup get` of that code returns
//! the same bytes. Two more reload the page in the middle of a throttled
//! upload (one file; a batch of two) and prove, from the relay's own count
//! of durable tus bytes, that choosing the same files again resumed every
//! upload instead of starting it over. The page also takes a dropped file
//! after "Send more files", and says why a relay refused (login needed,
//! file too large). A screenshot of the finished page is left at
//! `target/pickup-e2e/upload-page.png` (and at phone width,
//! `upload-page-phone.png`).
//!
//! Without the packages the browser tests print one `skipped:` line and
//! pass; with `PICKUP_NO_SKIP` set they fail instead (see http_browser.rs).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use pickup_tests::browser::Driver;
use pickup_tests::e2e::{artefact_dir, wait_for, write_random, TempDir};
use pickup_tests::http_client::request;
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::upload_page::{
    choose, chromium_here, code_shown, error_shown, get, kept_urls, page_relay, page_state,
    tus_bytes, tus_head,
};
use serde_json::{json, Value};

const TEST: &str = "http_upload_page";

/// A relay serving HTTP (the page and tus) and its metrics.
fn relay() -> RelayProcess {
    page_relay().start()
}

#[test]
fn the_page_is_off_when_configured_off_and_keeps_its_own_policy() {
    let on = relay();
    let addr = on.listener("http");
    let page = request(addr, "GET", "/", &[]);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.text().contains("/upload.js"), "{page:?}");
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe"), "{policy}");
    // Every other response keeps the strict policy.
    for target in ["/c/unknown", "/nothing"] {
        let other = request(addr, "GET", target, &[]);
        let policy = other.header("content-security-policy").unwrap();
        assert!(!policy.contains("script-src"), "{target}: {policy}");
    }

    let off = RelayProcess::builder()
        .config("[http]\nupload_page = false\n")
        .arg("--http")
        .arg("127.0.0.1:0")
        .start();
    let addr = off.listener("http");
    for path in ["/", "/upload.js", "/upload.css"] {
        assert_eq!(request(addr, "GET", path, &[]).status, 404, "{path}");
    }
}

#[test]
fn chromium_uploads_two_files_and_pickup_gets_them() {
    if !chromium_here(TEST) {
        return;
    }
    let started = Instant::now();
    let relay = relay();
    let addr = relay.listener("http");
    let src = TempDir::new("upload-page-src");
    let originals = [
        ("notes.txt", 1_500_000, 21),
        ("photo.jpg", 3 * 1024 * 1024 + 17, 22),
    ]
    .map(|(name, len, seed)| {
        let path = src.path().join(name);
        let bytes = write_random(&path, len, seed);
        (path, bytes)
    });

    let downloads = TempDir::new("upload-page-downloads");
    let driver = Driver::start(&artefact_dir().join("chromedriver.log"));
    let session = driver.session(downloads.path());
    session.goto(&format!("http://{addr}/"));
    assert_eq!(page_state(&session), "idle");
    choose(&session, &[&originals[1].0, &originals[0].0]);
    let code = code_shown(&session);
    let link = session.property(&session.find_all("#link")[0], "value");
    assert_eq!(link, json!(format!("http://{addr}/c/{code}")));
    let names: Vec<_> = session
        .find_all("#list .name")
        .iter()
        .map(|e| session.text(e))
        .collect();
    assert_eq!(names, ["notes.txt", "photo.jpg"]);
    // Nothing is kept for resuming once the code is there.
    let kept = session.execute("return localStorage.length;", &[]);
    assert_eq!(kept, json!(0));

    // Tall enough to show the code and both files.
    session.set_window_size(900, 1000);
    let shot = artefact_dir().join("upload-page.png");
    std::fs::write(&shot, session.screenshot()).unwrap();
    session.set_window_size(390, 844);
    let phone = artefact_dir().join("upload-page-phone.png");
    std::fs::write(&phone, session.screenshot()).unwrap();

    let got = get(&relay, &code);
    for (path, bytes) in &originals {
        let name = path.file_name().unwrap();
        assert_eq!(
            &std::fs::read(got.path().join(name)).unwrap(),
            bytes,
            "{name:?}"
        );
    }

    // "Send more files", then a file dropped on the page (a drop event
    // carrying a file made in the page: WebDriver cannot drag from disk).
    session.click(&session.find_all("#again")[0]);
    assert_eq!(page_state(&session), "idle");
    session.execute(
        "const data = new DataTransfer(); \
         data.items.add(new File([arguments[0]], 'dropped.txt')); \
         document.getElementById('drop').dispatchEvent( \
           new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: data }));",
        &[json!("dropped on the page\n")],
    );
    let dropped = code_shown(&session);
    assert_ne!(dropped, code);
    let got = get(&relay, &dropped);
    assert_eq!(
        std::fs::read(got.path().join("dropped.txt")).unwrap(),
        b"dropped on the page\n"
    );
    println!(
        "chromium: 2 files uploaded through the page, code {code} fetched by pickup get \
in {:?}; a dropped file too ({dropped}); screenshots {} and {}",
        started.elapsed(),
        shot.display(),
        phone.display()
    );
}

#[test]
fn the_page_says_why_the_relay_refused() {
    if !chromium_here(TEST) {
        return;
    }
    let src = TempDir::new("upload-page-refused");
    let path = src.path().join("report.pdf");
    write_random(&path, 5000, 40);
    let downloads = TempDir::new("upload-page-downloads");
    let driver = Driver::start(&artefact_dir().join("chromedriver.log"));
    let session = driver.session(downloads.path());
    for (config, expected) in [
        (
            "[auth]\nallow_anonymous_upload = false\n",
            "signed-in users",
        ),
        (
            "[limits]\nmax_file_size = 4096\n",
            "“report.pdf”: too large",
        ),
    ] {
        let relay = RelayProcess::builder()
            .config(config)
            .arg("--http")
            .arg("127.0.0.1:0")
            .start();
        session.goto(&format!("http://{}/", relay.listener("http")));
        choose(&session, &[&path]);
        let error = error_shown(&session);
        assert!(error.contains(expected), "{config}: {error:?}");
        println!("chromium: {config:?} -> {error:?}");
    }
}

/// Chooses `files` (name, length) on a throttled page, reloads it once
/// the relay holds part of the last (largest) one, chooses them again and
/// checks that every file resumed from the relay's offset: the page says
/// where each went on from, the same uploads completed, the relay made
/// no byte durable twice, and `pickup get` returns the originals.
fn reload_and_resume(files: &[(&str, usize)]) {
    let relay = relay();
    let addr = relay.listener("http");
    let metrics = relay.listener("metrics");
    let src = TempDir::new("upload-page-big");
    let originals: Vec<_> = files
        .iter()
        .zip(30..)
        .map(|(&(name, len), seed)| {
            let path = src.path().join(name);
            let bytes = write_random(&path, len, seed);
            (path, bytes)
        })
        .collect();
    let paths: Vec<&Path> = originals.iter().map(|(p, _)| p.as_path()).collect();
    let total: u64 = files.iter().map(|&(_, len)| len as u64).sum();
    let last = files.len() - 1;

    let downloads = TempDir::new("upload-page-downloads");
    let driver = Driver::start(&artefact_dir().join("chromedriver.log"));
    let session = driver.session(downloads.path());
    session.goto(&format!("http://{addr}/"));
    // 2 MiB/s: an 8 MiB PATCH takes seconds, the largest file over ten.
    session.throttle(2 << 20, 64 << 20);
    choose(&session, &paths);

    // The uploads' addresses, as the page keeps them for resuming (in the
    // order of `files`, which the page sorts by name as given here).
    let urls = kept_urls(&session, files.len());
    let before = wait_for("the relay to hold part of the last file", || {
        let (offset, _) = tus_head(addr, &urls[last]);
        (offset > 0).then_some(offset)
    });
    assert!(
        before < files[last].1 as u64,
        "the whole file went before the reload"
    );
    session.refresh();
    assert_eq!(page_state(&session), "idle");
    // What the relay holds once the interrupted PATCH is over: read a
    // second apart until it stays put.
    let offsets = || -> Vec<u64> { urls.iter().map(|u| tus_head(addr, u).0).collect() };
    let mut held = offsets();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        let now = offsets();
        if now == held {
            break;
        }
        held = now;
    }
    assert!(
        held[last] >= before && held[last] < files[last].1 as u64,
        "{before} then {held:?} of {files:?}"
    );

    session.unthrottle();
    choose(&session, &paths);
    let code = code_shown(&session);
    let resumed: Value = session.execute(
        "return Array.from(document.querySelectorAll('#list li'), \
           (li) => Number(li.dataset.resumedFrom));",
        &[],
    );
    assert_eq!(resumed, json!(held), "the page resumed where the relay was");
    // The same uploads completed, and the relay made each byte durable
    // once: starting over would have counted the held bytes again.
    for (url, &(_, len)) in urls.iter().zip(files) {
        assert_eq!(tus_head(addr, url), (len as u64, Some(code.clone())));
    }
    let durable = tus_bytes(metrics);
    let held_sum: u64 = held.iter().sum();
    assert!(
        (total..total + held_sum).contains(&durable),
        "{durable} durable bytes for {total}"
    );

    let got = get(&relay, &code);
    for (path, bytes) in &originals {
        let name = path.file_name().unwrap();
        assert!(
            std::fs::read(got.path().join(name)).unwrap() == *bytes,
            "{name:?}"
        );
    }
    println!(
        "chromium: reload with {held:?} of {files:?} held (HEAD saw {before} of the last \
first); resumed there; {durable} tus bytes durable in all; code {code}"
    );
}

#[test]
fn a_reload_mid_upload_resumes_from_the_relays_offset() {
    if !chromium_here(TEST) {
        return;
    }
    reload_and_resume(&[("big.bin", 24 << 20)]);
}

#[test]
fn a_reload_mid_batch_resumes_every_file() {
    if !chromium_here(TEST) {
        return;
    }
    // Sorted by name, as the page orders them: the small file is complete
    // when the large one is under way.
    reload_and_resume(&[("a-small.txt", 700_000), ("b-large.bin", 20 << 20)]);
}
