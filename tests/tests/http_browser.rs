//! Issue 14's browser acceptance: a real headless Chromium (Debian's
//! `chromium` and `chromium-driver`) opens the page of a fresh code on the
//! real relay, reads the names and sizes as a person sees them, clicks a
//! file's button and the ZIP button, and the test compares what landed in
//! the download directory with the originals. A screenshot of the page is
//! left at `target/pickup-e2e/http-page.png`.
//!
//! Without the packages the test prints one `skipped:` line and passes, so
//! `cargo test --workspace` passes on a bare clone; `.ci/run` sets
//! `PICKUP_NO_SKIP`, which turns that skip into a failure.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use pickup_tests::browser::{self, Driver};
use pickup_tests::e2e::{artefact_dir, pickup, run_json, write_random, TempDir};
use pickup_tests::relay_process::RelayProcess;

const SKIPPED: &str = "skipped: http_browser needs Debian's chromium and chromium-driver \
(apt-get install chromium chromium-driver)";

/// How long a download may take to appear complete in its directory.
const DOWNLOAD_PATIENCE: Duration = Duration::from_secs(60);

/// The finished downloads in `dir`, sorted: Chromium writes a download to
/// `*.crdownload` and renames it when complete; dot-files are its scratch.
fn finished(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.ends_with(".crdownload") && !name.starts_with('.')
        })
        .collect();
    files.sort();
    files
}

/// Polls `dir` every 100 ms, for at most [`DOWNLOAD_PATIENCE`], until a
/// finished download is there that is not in `before`; that file.
fn next_download(dir: &Path, before: &[PathBuf]) -> PathBuf {
    let start = Instant::now();
    for _ in 0..(DOWNLOAD_PATIENCE.as_millis() / 100) {
        if let Some(new) = finished(dir).into_iter().find(|p| !before.contains(p)) {
            return new;
        }
        if start.elapsed() > DOWNLOAD_PATIENCE {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no new download in {} after {DOWNLOAD_PATIENCE:?} (there: {:?})",
        dir.display(),
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
}

/// The response headers of `GET target`, as lines (WebDriver shows no
/// headers, so the policy is read over a plain connection).
fn response_head(http: SocketAddr, target: &str) -> String {
    let mut stream = TcpStream::connect(http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    text.split("\r\n\r\n").next().unwrap().to_owned()
}

#[test]
fn chromium_reads_the_page_and_downloads_a_file_and_the_zip() {
    if let Some(path) = browser::missing() {
        assert!(
            std::env::var_os("PICKUP_NO_SKIP").is_none(),
            "http_browser cannot run: {path} is missing and PICKUP_NO_SKIP is set \
(apt-get install chromium chromium-driver)"
        );
        // Straight to stderr, not eprintln!: libtest hides what a passing
        // test prints, and this line must show in `cargo test` output.
        let _ = writeln!(std::io::stderr(), "{SKIPPED}");
        return;
    }
    let started = Instant::now();
    let relay = RelayProcess::builder()
        .arg("--http")
        .arg("127.0.0.1:0")
        .start();
    let http = relay.listener("http");

    // A name that is markup, and a file big enough to be counted in KiB.
    // A file name cannot hold the `/` of `</b>`: the name is a directory
    // `<b>x<` with a file `b> & "y".txt` in it, as the batch names it.
    let src = TempDir::new("browser-src");
    let hostile = "<b>x</b> & \"y\".txt";
    std::fs::create_dir(src.path().join("<b>x<")).unwrap();
    let originals = [
        (hostile, write_random(&src.path().join(hostile), 1000, 11)),
        (
            "photo.jpg",
            write_random(&src.path().join("photo.jpg"), 200_000, 12),
        ),
    ];
    let state = TempDir::new("browser-state");
    let sent = run_json(
        pickup(state.path())
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(src.path().join("<b>x<"))
            .arg(src.path().join("photo.jpg")),
    );
    let code = sent["code"].as_str().unwrap().to_owned();
    let page_url = format!("http://{http}/c/{code}");

    // The policy the browser is given: no script from anywhere, inline or not.
    let head = response_head(http, &format!("/c/{code}"));
    let csp = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case("content-security-policy"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no Content-Security-Policy in {head}"));
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");

    let downloads = TempDir::new("browser-downloads");
    let driver = Driver::start(&artefact_dir().join("chromedriver.log"));
    let session = driver.session(downloads.path());
    session.goto(&page_url);

    assert!(session.find_all("script").is_empty(), "a script element");
    // The name's `<b>` is text, not an element.
    assert!(session.find_all("li b").is_empty(), "markup from a name");
    let shown = |selector: &str| -> Vec<String> {
        session
            .find_all(selector)
            .iter()
            .map(|e| session.text(e))
            .collect()
    };
    assert_eq!(shown("li strong"), [hostile, "photo.jpg"]);
    assert_eq!(shown("li .meta"), ["1000 B", "195.3 KiB"]);

    // The ZIP button first, then one per file.
    let buttons = session.find_all("a.button");
    let hrefs: Vec<_> = buttons
        .iter()
        .map(|b| session.property(b, "href"))
        .collect();
    assert_eq!(
        hrefs,
        [
            format!("{page_url}/zip"),
            format!("{page_url}/0"),
            format!("{page_url}/1"),
        ]
    );

    let png = session.screenshot();
    assert!(
        png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG of a page ({} bytes)",
        png.len()
    );
    let shot = artefact_dir().join("http-page.png");
    std::fs::write(&shot, &png).unwrap();

    session.click(&buttons[1]);
    let file = next_download(downloads.path(), &[]);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        originals[0].1,
        "{}",
        file.display()
    );

    let before = finished(downloads.path());
    session.click(&buttons[0]);
    let zip_path = next_download(downloads.path(), &before);
    assert!(
        zip_path.to_string_lossy().ends_with(".zip"),
        "{}",
        zip_path.display()
    );
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    assert_eq!(zip.len(), originals.len());
    for (i, (name, bytes)) in originals.iter().enumerate() {
        let mut entry = zip.by_index(i).unwrap();
        assert_eq!(entry.name(), *name);
        let mut got = Vec::new();
        entry.read_to_end(&mut got).unwrap();
        assert_eq!(&got, bytes, "{name} in the ZIP");
    }

    println!(
        "chromium: page, a file saved as {:?} and {:?} checked in {:?}; screenshot {} ({} bytes)",
        file.file_name().unwrap(),
        zip_path.file_name().unwrap(),
        started.elapsed(),
        shot.display(),
        png.len()
    );
}
