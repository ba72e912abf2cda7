//! The tus rows (issue 15): one file uploaded with tus-js-client to Pickup's
//! `/tus/` and to the reference server, `@tus/server` with a
//! `@tus/file-store`, in the same run.
//!
//! ```text
//!   node bench/tus/upload.mjs ──HTTP/1.1 (POST, one PATCH)──► pickup-relay --http  /tus/
//!   node bench/tus/upload.mjs ──HTTP/1.1 (POST, one PATCH)──► node bench/tus/server.mjs  /files/ (FileStore, temp dir)
//! ```
//!
//! Both uploads use tus-js-client's default chunk size (unlimited: the
//! whole file in one PATCH), from a file on disk. The time is the script's
//! own, from `start()` to `onSuccess` (node's start-up left out); the
//! server's CPU is read from `/proc` before and after, as for the relay in
//! every other row. Without `node` or the packages (`npm ci` in
//! `bench/tus`) the rows say `skipped: …`: a bench never fails for a
//! missing peer.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{cpu_secs, random_bytes, relay, MIB};

/// How long one upload may take before the bench gives up on it.
const PATIENCE: Duration = Duration::from_secs(600);

/// `bench/tus` in this checkout.
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tus")
}

/// Why the rows cannot run here, if they cannot.
fn missing() -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node {
        return Some("node is not on the PATH".into());
    }
    let modules = scripts().join("node_modules");
    ["@tus/server", "@tus/file-store", "tus-js-client"]
        .into_iter()
        .find(|p| !modules.join(p).is_dir())
        .map(|p| format!("{p} is not installed (npm ci in {})", scripts().display()))
}

/// Kills the child when dropped (the reference server, or a stuck upload).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `node bench/tus/upload.mjs ENDPOINT FILE` to completion (bounded
/// by [`PATIENCE`]) and returns the JSON line it printed.
fn upload(endpoint: &str, file: &Path) -> io::Result<Value> {
    let mut child = Killed(
        Command::new("node")
            .arg(scripts().join("upload.mjs"))
            .arg(endpoint)
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if start.elapsed() > PATIENCE {
            return Err(io::Error::other(format!(
                "tus upload to {endpoint} not done in {PATIENCE:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The script prints one short line, and on failure a short error: both
    // fit in the pipes' buffers, so reading after the exit cannot block.
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.0.stdout.take() {
        s.read_to_string(&mut out)?;
    }
    if let Some(mut s) = child.0.stderr.take() {
        s.read_to_string(&mut err)?;
    }
    if !status.success() {
        return Err(io::Error::other(format!(
            "tus upload to {endpoint} failed ({status}): {}",
            err.trim()
        )));
    }
    serde_json::from_str(out.lines().last().unwrap_or_default())
        .map_err(|e| io::Error::other(format!("upload.mjs printed no JSON ({e}): {out}")))
}

/// One row: the upload's time and rate, and the server's CPU for it.
fn measured(
    endpoint: &str,
    file: &Path,
    len: usize,
    server_cpu: impl Fn() -> f64,
) -> io::Result<Value> {
    let before = server_cpu();
    let out = upload(endpoint, file)?;
    let cpu = server_cpu() - before;
    let secs = out["secs"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "secs": secs,
        "mib_per_sec": len as f64 / MIB / secs,
        "server_cpu_secs": cpu,
        "code": out["code"],
    }))
}

/// The reference server on a loopback port, its files in `dir`.
fn reference_server(dir: &Path) -> io::Result<(Killed, String)> {
    let mut child = Killed(
        Command::new("node")
            .arg(scripts().join("server.mjs"))
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let stdout = child
        .0
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    // server.mjs prints its line once it listens, or exits (EOF).
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let v: Value = serde_json::from_str(&line)
        .map_err(|e| io::Error::other(format!("server.mjs printed no JSON ({e}): {line:?}")))?;
    let endpoint = v["endpoint"]
        .as_str()
        .ok_or_else(|| io::Error::other(format!("no endpoint in {line:?}")))?
        .to_owned();
    Ok((child, endpoint))
}

/// Both rows, or `{"skipped": why}`.
pub fn run(binary: &Path, len: usize) -> io::Result<Value> {
    if let Some(why) = missing() {
        return Ok(json!({ "bytes": len, "skipped": why }));
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tus.bin");
    std::fs::write(&file, random_bytes(len, 15))?;

    let relay = relay::Relay::start(binary, None)?;
    let pickup = measured(&format!("http://{}/tus/", relay.http), &file, len, || {
        relay.cpu_secs()
    })?;
    drop(relay);
    if !pickup["code"].is_string() {
        return Err(io::Error::other(
            "Pickup's /tus/ answered without a Pickup-Code",
        ));
    }

    let store = dir.path().join("tus-store");
    std::fs::create_dir(&store)?;
    let (server, endpoint) = reference_server(&store)?;
    let pid = server.0.id();
    let reference = measured(&endpoint, &file, len, || {
        cpu_secs(&format!("/proc/{pid}/stat"))
    })?;
    drop(server);
    // The reference server keeps the file under its id, beside a `.json`.
    let stored: u64 = std::fs::read_dir(&store)?
        .flatten()
        .filter(|e| e.path().extension().is_none())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    if stored != len as u64 {
        return Err(io::Error::other(format!(
            "@tus/file-store holds {stored} bytes of {len}"
        )));
    }
    Ok(json!({
        "bytes": len,
        "chunk_size": "unlimited (tus-js-client's default: one PATCH)",
        "pickup": pickup,
        "tus_server_file_store": reference,
    }))
}
