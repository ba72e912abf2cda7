//! Shared helpers for the CLI end-to-end tests: a real relay process, the
//! `pickup` binary, a TCP proxy that throttles and cuts links, and
//! pseudo-terminal serial links.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for any wait in these tests; loops also have counts.
pub const PATIENCE: Duration = Duration::from_secs(120);

pub fn pickup_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pickup")
}

/// Builds the relay once per test process and returns its path.
pub fn relay_bin() -> &'static Path {
    static RELAY: OnceLock<PathBuf> = OnceLock::new();
    RELAY.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "pickup-relay", "--bin", "pickup-relay"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the relay");
        assert!(status.success(), "building pickup-relay failed");
        let bin = Path::new(pickup_bin())
            .parent()
            .expect("binary directory")
            .join(format!("pickup-relay{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_listening(port: u16) {
    let start = Instant::now();
    for _ in 0..1200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "nothing listens on {port}");
        thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {port}");
}

/// A relay process with its own data directory, killed on drop.
pub struct Relay {
    pub child: Child,
    pub port: u16,
    pub data: tempfile::TempDir,
}

impl Relay {
    pub fn start() -> Relay {
        Self::start_with(&[])
    }

    /// Extra arguments, e.g. `["--serial", path]`.
    pub fn start_with(extra: &[&str]) -> Relay {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(relay_bin())
            .arg("serve")
            .arg("--tcp")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(data.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pickup-relay");
        wait_listening(port);
        Relay { child, port, data }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pickup` with a private state directory, never a terminal.
pub fn pickup(state: &Path) -> Command {
    let mut c = Command::new(pickup_bin());
    c.env("PICKUP_STATE_DIR", state)
        .env_remove("PICKUP_RELAY")
        .stdin(Stdio::null());
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run pickup")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs and parses the JSON `pickup` prints, asserting success.
pub fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "pickup failed ({:?}): {}",
        out.status.code(),
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// Pseudo-random bytes (xorshift), fast enough for tens of MiB.
pub fn write_random(path: &Path, len: usize, seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut left = len;
    let mut block = [0u8; 8];
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block.copy_from_slice(&x.to_le_bytes());
        let n = left.min(8);
        f.write_all(&block[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}

pub fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// A running `pickup` whose stdout lines arrive on a channel.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pickup");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    pub fn next_line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("a line from pickup")
    }

    /// Kills the process (like a power cut or Ctrl-C) and reaps it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 20 ms until it returns `Some`, within [`PATIENCE`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    for _ in 0..6000 {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
    panic!("gave up waiting for {what}");
}

/// A TCP proxy on 127.0.0.1 in front of the relay that can throttle the
/// byte rate and cut each connection after a number of bytes (both
/// directions counted), to make links slow or unreliable on purpose.
pub struct Proxy {
    pub port: u16,
    /// The relay's port; new connections go wherever it points now.
    pub target: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    /// Cut each connection after this many bytes; 0: never.
    pub cut_every: Arc<AtomicU64>,
    /// Bytes per second per direction; 0: unlimited.
    pub rate: Arc<AtomicU64>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicU64>,
    /// Connections the proxy cut.
    pub cuts: Arc<AtomicU64>,
    /// Bytes forwarded client → relay and relay → client.
    pub up: Arc<AtomicU64>,
    pub down: Arc<AtomicU64>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let cut_every = Arc::new(AtomicU64::new(0));
        let rate = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let cuts = Arc::new(AtomicU64::new(0));
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let target = Arc::new(AtomicU16::new(target));
        let accept = {
            let target = target.clone();
            let (stop, cut_every, rate, connections, cuts, up, down) = (
                stop.clone(),
                cut_every.clone(),
                rate.clone(),
                connections.clone(),
                cuts.clone(),
                up.clone(),
                down.clone(),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let client = match listener.accept() {
                        Ok((s, _)) => s,
                        Err(_) => {
                            thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    };
                    client.set_nonblocking(false).unwrap();
                    let to = target.load(Ordering::SeqCst);
                    let Ok(relay) = TcpStream::connect(("127.0.0.1", to)) else {
                        continue;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let conn = Conn {
                        bytes: Arc::new(AtomicU64::new(0)),
                        cut: Arc::new(AtomicBool::new(false)),
                        a: Arc::new(client.try_clone().unwrap()),
                        b: Arc::new(relay.try_clone().unwrap()),
                        cut_every: cut_every.load(Ordering::SeqCst),
                        rate: rate.clone(),
                        cuts: cuts.clone(),
                        stop: stop.clone(),
                    };
                    let c2 = conn.clone();
                    let (up, down) = (up.clone(), down.clone());
                    thread::spawn(move || conn.pump(client, relay, up));
                    let (a, b) = (c2.b.try_clone().unwrap(), c2.a.try_clone().unwrap());
                    // Relay → client runs on clones of the same sockets.
                    thread::spawn(move || c2.pump(a, b, down));
                }
            })
        };
        Proxy {
            port,
            target,
            stop,
            cut_every,
            rate,
            connections,
            cuts,
            up,
            down,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Conn {
    bytes: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
    a: Arc<TcpStream>,
    b: Arc<TcpStream>,
    cut_every: u64,
    rate: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Conn {
    fn close(&self) {
        let _ = self.a.shutdown(Shutdown::Both);
        let _ = self.b.shutdown(Shutdown::Both);
    }

    fn pump(self, mut from: TcpStream, mut to: TcpStream, counter: Arc<AtomicU64>) {
        from.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let started = Instant::now();
        let mut sent = 0u64;
        loop {
            if self.stop.load(Ordering::SeqCst) || self.cut.load(Ordering::SeqCst) {
                break;
            }
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => break,
            };
            let mut n = n;
            if self.cut_every > 0 {
                let before = self.bytes.fetch_add(n as u64, Ordering::SeqCst);
                if before + n as u64 >= self.cut_every {
                    // Forward up to the cut, then drop the connection.
                    n = self.cut_every.saturating_sub(before) as usize;
                    let _ = to.write_all(&buf[..n]);
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                    if !self.cut.swap(true, Ordering::SeqCst) {
                        self.cuts.fetch_add(1, Ordering::SeqCst);
                    }
                    break;
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            counter.fetch_add(n as u64, Ordering::SeqCst);
            sent += n as u64;
            let rate = self.rate.load(Ordering::SeqCst);
            if rate > 0 {
                // Sleep until the average rate is back under the limit.
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    thread::sleep(wait.min(Duration::from_millis(500)));
                }
            }
        }
        self.close();
    }
}
