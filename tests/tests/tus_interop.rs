//! Issue 15's interop acceptance: real tus clients against the real relay's
//! `/tus/` endpoint, each interrupted and resumed the way its own docs
//! show, and the file then fetched by its pickup code with `pickup get`.
//!
//! ```text
//!   tests/interop/tus-js/upload.mjs (node + tus-js-client) ─┐  POST, PATCH…, abort at ≥ 30 %,
//!   tests/interop/tuspy/upload.py   (python + tuspy)      ─┴► new upload: HEAD, PATCH… ──► pickup-relay --http
//!        └─ {"url","aborted_at","resumed_from","size","code"}                                  │
//!   pickup get CODE ◄──────────────────────────── TCP ──────────────────────────────────────────┘  bytes compared
//! ```
//!
//! tuspy sends a SHA-1 `Upload-Checksum` with every PATCH (the checksum
//! extension); tus-js-client has no checksum support. A third test runs
//! `tests/interop/tus-js/batch.mjs`: two files under one code through
//! `/tus/batches` (docs/tus.md), fetched together with `pickup get`.
//!
//! Each client keeps the upload URL in its own URL storage (a JSON file),
//! as a program that is run twice would, and the scripts check that the
//! second run resumed the first's upload past offset 0; the test checks
//! that it resumed exactly at the offset the relay had acknowledged.
//!
//! Tools: `node` on the PATH with `npm ci` run in `tests/interop/tus-js`,
//! and a Python with `tests/interop/tuspy/requirements.txt` installed
//! (a venv's `python`) named by `PICKUP_TUSPY_PYTHON`. Without them a test
//! prints one `skipped:` line and passes; `.ci/run` installs both and sets
//! `PICKUP_NO_SKIP`, which turns a skip into a failure.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pickup_tests::e2e::{pickup, run, run_json, stderr, stdout, write_random, TempDir};
use pickup_tests::relay_process::RelayProcess;

/// Big enough for five 1 MiB PATCHes, so 30 % falls between two of them.
const FILE_LEN: usize = 5 << 20;
/// The PATCH size both scripts are given.
const CHUNK: usize = 1 << 20;

/// `tests/interop/` in this checkout.
fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Whether `program --version` runs.
fn runs(program: &Path, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Either the tool is there, or this test skips (one `skipped:` line) —
/// unless `PICKUP_NO_SKIP` is set, where a missing tool fails the test.
fn available(test: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return true;
    };
    assert!(
        std::env::var_os("PICKUP_NO_SKIP").is_none(),
        "{test} cannot run: {why}, and PICKUP_NO_SKIP is set"
    );
    // Straight to stderr, not eprintln!: libtest hides what a passing test
    // prints, and this line must show in `cargo test` output.
    let _ = writeln!(std::io::stderr(), "skipped: {test} needs {why}");
    false
}

/// `node SCRIPT` (a script of `tests/interop/tus-js`) with tus-js-client
/// installed, or why not.
fn tus_js(script: &str) -> Result<Command, String> {
    let dir = interop_dir().join("tus-js");
    if !runs(Path::new("node"), "--version") {
        return Err("node on the PATH".into());
    }
    if !dir.join("node_modules/tus-js-client").is_dir() {
        return Err(format!("tus-js-client (npm ci in {})", dir.display()));
    }
    let mut c = Command::new("node");
    c.arg(dir.join(script));
    Ok(c)
}

/// `$PICKUP_TUSPY_PYTHON upload.py` with tuspy importable, or why not.
fn tuspy() -> Result<Command, String> {
    let hint = "PICKUP_TUSPY_PYTHON naming a python with tests/interop/tuspy/requirements.txt \
installed (python3 -m venv V && V/bin/pip install -r tests/interop/tuspy/requirements.txt)";
    let Some(python) = std::env::var_os("PICKUP_TUSPY_PYTHON") else {
        return Err(hint.into());
    };
    let python = PathBuf::from(python);
    let imports = Command::new(&python)
        .args(["-c", "import tusclient"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !imports {
        return Err(format!(
            "{hint}; {} cannot import tusclient",
            python.display()
        ));
    }
    let mut c = Command::new(python);
    c.arg(interop_dir().join("tuspy/upload.py"));
    Ok(c)
}

/// Runs a client script against a fresh relay, then `pickup get` of the
/// code it printed, and compares the bytes.
fn upload_interrupt_resume_get(mut client: Command, label: &str) {
    let relay = RelayProcess::builder()
        .arg("--http")
        .arg("127.0.0.1:0")
        .start();
    let http = relay.listener("http");
    let endpoint = format!("http://{http}/tus/");

    let src = TempDir::new(&format!("tus-{label}-src"));
    let name = format!("{label}-upload.bin");
    let file = src.path().join(&name);
    let original = write_random(&file, FILE_LEN, 15);

    let out = run(client
        .arg(&endpoint)
        .arg(&file)
        .arg(src.path().join("url-storage.json"))
        .arg(CHUNK.to_string()));
    assert!(
        out.status.success(),
        "{label} failed ({}):\nstdout: {}\nstderr: {}\nrelay log:\n{}",
        out.status,
        stdout(&out),
        stderr(&out),
        relay.log()
    );
    let text = stdout(&out);
    let line = text.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{label} printed no JSON line ({e}): {text}"));

    let url = report["url"].as_str().unwrap();
    assert!(url.starts_with(&endpoint), "{url} is not under {endpoint}");
    assert_eq!(report["size"], FILE_LEN);
    let aborted_at = report["aborted_at"].as_u64().unwrap();
    let resumed_from = report["resumed_from"].as_u64().unwrap();
    // At least 30 % acknowledged, whole chunks, and not the end.
    assert!(
        aborted_at as f64 >= 0.3 * FILE_LEN as f64 && aborted_at < FILE_LEN as u64,
        "{report}"
    );
    assert_eq!(aborted_at % CHUNK as u64, 0, "{report}");
    // An acknowledged offset is durable: the new upload's HEAD says so.
    assert_eq!(resumed_from, aborted_at, "{report}");

    let code = report["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no Pickup-Code in {report}"));
    assert_fetched(&relay, code, label, &[(&name, &original)]);
    println!(
        "{label}: {} bytes via {url}, interrupted at {aborted_at}, resumed from {resumed_from}, \
fetched by code {code}",
        FILE_LEN
    );
}

#[test]
fn tus_js_client_uploads_interrupts_resumes_and_the_code_serves_the_file() {
    let client = tus_js("upload.mjs");
    if available(
        "tus_interop (tus-js-client)",
        client.as_ref().err().cloned(),
    ) {
        upload_interrupt_resume_get(client.unwrap(), "tus-js");
    }
}

#[test]
fn tuspy_uploads_interrupts_resumes_and_the_code_serves_the_file() {
    let client = tuspy();
    if available("tus_interop (tuspy)", client.as_ref().err().cloned()) {
        upload_interrupt_resume_get(client.unwrap(), "tuspy");
    }
}

/// Several files under one code with a real client: `batch.mjs` opens a
/// batch, uploads two files with tus-js-client (metadata `batch`),
/// closes it, and `pickup get` of the code returns both files.
#[test]
fn tus_js_client_uploads_two_files_under_one_code() {
    let client = tus_js("batch.mjs");
    if !available(
        "tus_interop (tus-js-client, batch)",
        client.as_ref().err().cloned(),
    ) {
        return;
    }
    let relay = RelayProcess::builder()
        .arg("--http")
        .arg("127.0.0.1:0")
        .start();
    let src = TempDir::new("tus-batch-src");
    let names = ["first.bin", "second.bin"];
    let originals: Vec<Vec<u8>> = names
        .iter()
        .zip([3 << 20, 1_234_567])
        .enumerate()
        .map(|(i, (name, len))| write_random(&src.path().join(name), len, 30 + i as u64))
        .collect();
    let mut client = client.unwrap();
    client.arg(format!("http://{}", relay.listener("http")));
    for name in names {
        client.arg(src.path().join(name));
    }
    let out = run(&mut client);
    assert!(
        out.status.success(),
        "batch.mjs failed ({}):\nstdout: {}\nstderr: {}\nrelay log:\n{}",
        out.status,
        stdout(&out),
        stderr(&out),
        relay.log()
    );
    let text = stdout(&out);
    let report: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("batch.mjs printed no JSON line ({e}): {text}"));
    assert_eq!(report["files"], 2, "{report}");
    let code = report["code"].as_str().unwrap();
    let expected: Vec<(&str, &Vec<u8>)> = names.into_iter().zip(&originals).collect();
    assert_fetched(&relay, code, "batch", &expected);
}

/// `pickup get CODE` from `relay` returns exactly these files.
fn assert_fetched(relay: &RelayProcess, code: &str, label: &str, files: &[(&str, &Vec<u8>)]) {
    let state = TempDir::new(&format!("tus-{label}-state"));
    let dest = TempDir::new(&format!("tus-{label}-dest"));
    let got = run_json(pickup(state.path()).args([
        "get",
        "--json",
        "--relay",
        &relay.tcp(),
        code,
        "-o",
        dest.path().to_str().unwrap(),
    ]));
    for (name, original) in files {
        let fetched = std::fs::read(dest.path().join(name))
            .unwrap_or_else(|e| panic!("{name} not fetched ({e}); pickup get said {got}"));
        assert!(fetched == **original, "{name}: the fetched bytes differ");
    }
}
