//! Running the real binaries: `pickup-relay` and `pickup`.
//!
//! ```text
//!   pickup send/get ──TCP──► faulty::Proxy (seeded flips, drops, dups, cuts) ──TCP──► pickup-relay
//!   pickup send/get ──pty──► faulty::Cable (the same faults, serial)          ──pty──► pickup-relay --serial
//!   push:: users, terminals, `send --to`, `status`, `listen` (addressed delivery)
//!   relay_pair:: two relays listing each other as peers (forwarding)
//! ```
//!
//! The binaries are built once per test process with the same profile as
//! the test itself. Every wait is a bounded poll ([`wait_for`]); servers
//! bind 127.0.0.1 only; every process is killed when its handle drops.
//! The relay is started with [`RelayProcess`](crate::relay_process::RelayProcess).

pub mod faulty;
pub mod push;
pub mod relay_pair;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound on any single wait; loops also count their rounds.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// The workspace's target directory for this test's profile
/// (`target/debug` or `target/release`), from the test binary's path.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("a test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Builds both binaries in one `cargo build` (one lock, one feature
/// resolution), with the test's own profile, once per test process.
fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = profile_dir();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "pickup-relay",
            "--bin",
            "pickup-relay",
            "-p",
            "pickup-device",
            "--features",
            "pickup-device/std",
            "--bin",
            "pickup",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building pickup-relay and pickup failed");
        let path = |bin: &str| {
            let p = dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
            assert!(p.exists(), "{} missing after the build", p.display());
            p
        };
        (path("pickup-relay"), path("pickup"))
    })
}

/// The `pickup-relay` binary, built on first use.
pub fn relay_bin() -> &'static Path {
    &binaries().0
}

/// The `pickup` binary (feature `std` of pickup-device), built on first use.
pub fn pickup_bin() -> &'static Path {
    &binaries().1
}

/// Where tests leave files for people to look at after the run (a
/// screenshot, a driver's log): `target/pickup-e2e/`, created if missing,
/// never emptied.
pub fn artefact_dir() -> PathBuf {
    let dir = profile_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .join("pickup-e2e");
    std::fs::create_dir_all(&dir).expect("create the artefact directory");
    dir
}

/// A directory under the target directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory whose name starts with `label`.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = profile_dir()
            .join("pickup-e2e")
            .join(format!("{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a test directory");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most [`PATIENCE`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    for _ in 0..(PATIENCE.as_millis() / 50) {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > PATIENCE {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("gave up waiting for {what} after {PATIENCE:?}");
}

/// `pickup` with its own state directory, no terminal, no inherited relay.
pub fn pickup(state: &Path) -> Command {
    let mut c = Command::new(pickup_bin());
    c.env("PICKUP_STATE_DIR", state)
        .env_remove("PICKUP_RELAY")
        .stdin(Stdio::null());
    c
}

/// Bytes of the batch `code` that the relay at `relay` holds (`pickup info
/// --json`'s `received`), or `None` if it does not know the code or cannot
/// be reached.
pub fn received(state: &Path, relay: &str, code: &str) -> Option<u64> {
    let out = pickup(state)
        .args(["info", "--json", "--relay", relay, code])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["received"].as_u64()
}

/// How many unfinished uploads `pickup send` keeps resume state for in
/// `state` (its `send-*.json` files; the `family-*.json` beside them is
/// kept on purpose).
pub fn resume_states(state: &Path) -> usize {
    std::fs::read_dir(state).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("send-"))
            .count()
    })
}

/// Runs a command to completion, bounded by [`PATIENCE`] (killed past it).
pub fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pickup");
    // Drained while it runs, so a chatty child never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let mut status = None;
    for _ in 0..(PATIENCE.as_millis() / 20) {
        status = child.try_wait().expect("poll the child");
        if status.is_some() || start.elapsed() > PATIENCE {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{cmd:?} did not finish within {PATIENCE:?}; stderr: {}",
            String::from_utf8_lossy(&stderr.join().unwrap_or_default())
        );
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Runs `cmd` with `input` on its standard input, to completion, bounded
/// by [`PATIENCE`] (killed past it). For the few bytes of a password or a
/// key: far below a pipe's buffer, written whole before the child reads.
pub fn run_with_input(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .expect("write the command's input");
    }
    let start = Instant::now();
    while child.try_wait().expect("poll the child").is_none() {
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {PATIENCE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("collect the output")
}

/// Reads a child's pipe to its end on a thread.
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// The JSON document a `pickup … --json` command printed on stdout.
pub fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs `pickup … --json` to completion, asserts it succeeded and returns
/// the JSON document it printed.
pub fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        stderr(&out)
    );
    json(&out)
}

/// A finished command's stdout, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A finished command's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether two files hold the same bytes.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    read(a) == read(b)
}

/// A child process whose stdout lines arrive on a channel.
#[derive(Debug)]
pub struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    /// Starts `cmd`, reading its stdout line by line.
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a process");
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The next stdout line, within [`PATIENCE`].
    pub fn next_line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("a line of output in time")
    }

    /// The next stdout line if one comes within `wait`; `None` if none
    /// does (or the process ended and every line was read).
    pub fn next_line_within(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Kills the process (like a power cut or Ctrl-C) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit (within [`PATIENCE`]) and returns its
    /// exit status and remaining stdout and stderr.
    pub fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("poll the child") {
                break s;
            }
            if start.elapsed() > PATIENCE {
                let _ = self.child.kill();
                panic!("process did not finish within {PATIENCE:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        let stdout: Vec<String> = self.lines.try_iter().collect();
        (status, stdout.join("\n"), stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `len` seeded pseudo-random bytes to `path`.
pub fn write_random(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    crate::sim::rng::SimRng::new(seed).fill(&mut data);
    std::fs::write(path, &data).expect("write a test file");
    data
}

/// The name `pickup get` keeps an unfinished download of `content` as
/// batch file `name` under (see `temp_name` in the CLI's `dir_sink.rs`):
/// what a test writes to stand for an interrupted earlier run.
pub fn partial_name(name: &str, content: &[u8]) -> String {
    let mut h = pickup_proto::hash::Sha1Hasher::new();
    h.update(b"pickup get\0");
    h.update(&pickup_proto::Sha1Digest::of(content).0);
    h.update(&(content.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    format!(".pickup-{}.part", h.digest())
}
