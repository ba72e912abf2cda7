//! The real `pickup-relay` binary, built in release mode and run as a child
//! process with its on-disk store in a temporary directory.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Builds `pickup-relay` in release mode and returns its path; or, with
/// `PICKUP_BENCH_RELAY` set, that binary (to compare relay builds).
pub fn build() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PICKUP_BENCH_RELAY") {
        return Ok(PathBuf::from(path));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "pickup-relay"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        return Err(io::Error::other("building pickup-relay failed"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join("pickup-relay"))
}

/// A running relay; killed on drop.
pub struct Relay {
    child: Child,
    /// Its TCP address.
    pub addr: SocketAddr,
    /// Its HTTP address (download pages and files).
    pub http: SocketAddr,
    _data: tempfile::TempDir,
}

/// The bench's config: limits raised for benchmarking, `limits` more
/// lines for `[limits]`, then `tables`.
fn bench_config(limits: &str, tables: &str) -> String {
    // `open` disclosure: the instant-upload row measures a proof from a
    // second connection, which the default rule treats as a stranger
    // and would answer with a plain upload.
    format!(
        "dedup_disclosure = \"open\"\n[limits]\nmax_file_size = {big}\nmax_batch_size = {big}\ndisk_quota = {big}\n\
         max_sessions = 20000\nmax_sessions_per_peer = 20000\nidle_timeout_secs = 600\n\
         max_incomplete_batches_per_peer = 100000\nnew_batch_burst_per_peer = 100000\n{limits}\n{tables}",
        big = 64u64 << 30
    )
}

/// A free loopback port (bound, then released for the relay to take).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Relay {
    /// Starts the relay with limits raised for benchmarking (every client
    /// is one address, so the per-peer batch limits too) and, optionally,
    /// a serial port to open.
    pub fn start(binary: &Path, serial: Option<&str>) -> io::Result<Relay> {
        Relay::start_with(binary, serial, "")
    }

    /// As [`start`](Self::start), with more lines for the config's
    /// `[limits]` table.
    pub fn start_with(binary: &Path, serial: Option<&str>, limits: &str) -> io::Result<Relay> {
        Relay::start_config(binary, serial, &bench_config(limits, ""))
    }

    /// As [`start`](Self::start), with more tables after `[limits]` (the
    /// `[store]` of the `postgres` backend).
    pub fn start_with_tables(binary: &Path, tables: &str) -> io::Result<Relay> {
        Relay::start_config(binary, None, &bench_config("", tables))
    }

    /// Starts the relay with exactly this config file (empty: the relay's
    /// built-in defaults, as a deployment without a config runs), listening
    /// on a free loopback port with its store in a temporary directory.
    pub fn start_config(binary: &Path, serial: Option<&str>, config: &str) -> io::Result<Relay> {
        let data = tempfile::tempdir()?;
        let port = free_port()?;
        let http_port = free_port()?;
        let config_path = data.path().join("relay.toml");
        std::fs::File::create(&config_path)?.write_all(config.as_bytes())?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--tcp")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--http")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--data")
            .arg(data.path().join("store"))
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(path) = serial {
            cmd.arg("--serial").arg(path);
        }
        let child = cmd.spawn()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let relay = Relay {
            child,
            addr,
            http: ([127, 0, 0, 1], http_port).into(),
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "relay did not start listening within 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(relay)
    }

    /// CPU time (user + system) the relay process has used so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        crate::cpu_secs(&format!("/proc/{}/stat", self.child.id()))
    }

    /// Resident set size of the relay process, in bytes.
    pub fn rss(&self) -> io::Result<u64> {
        rss_of(self.child.id())
    }

    /// Threads of the relay process (runtime workers, blocking threads
    /// held by store steps, helpers).
    pub fn threads(&self) -> io::Result<u64> {
        status_field(self.child.id(), "Threads:")
    }
}

/// Resident set size of process `pid`, in bytes.
pub fn rss_of(pid: u32) -> io::Result<u64> {
    Ok(status_field(pid, "VmRSS:")? * 1024)
}

/// A number of `/proc/PID/status` (`VmRSS:` in kB, `Threads:`).
fn status_field(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| io::Error::other(format!("no {field}")))
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
