//! An S3-compatible server for tests: `moto_server` (PyPI `moto[server]`),
//! in memory, on a free loopback port.
//!
//! moto keeps everything in memory, so "S3 is down" is [`S3::pause`]
//! (`SIGSTOP`): connections hang, as they do to a server that stopped
//! answering, and [`S3::resume`] lets it carry on with nothing lost.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::watchdog;

/// What a skipped test asks for.
const NEEDS: &str = "moto[server] (PICKUP_MOTO_SERVER naming moto_server, or \
python3 -m venv target/moto-venv && target/moto-venv/bin/pip install 'moto[server]')";

/// How long moto may take to answer after it starts.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Tries at a free port (another process may take the one we picked).
const PORT_TRIES: usize = 3;

/// The region every bucket is made in (moto accepts any).
const REGION: &str = "us-east-1";

/// A running S3-compatible server.
#[derive(Debug)]
pub struct S3 {
    endpoint: String,
    child: Mutex<Child>,
    /// moto's output: one line per request it answered.
    log: PathBuf,
    /// Killed by `Drop` (not the shared server, which its watchdog stops).
    owned: bool,
}

/// A fresh, empty bucket, and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// `http://127.0.0.1:<port>` (path-style requests).
    pub endpoint: String,
    /// The region to sign for.
    pub region: String,
    /// The bucket's name.
    pub name: String,
    /// Any key works with moto; these are what tests pass.
    pub access_key_id: String,
    /// See `access_key_id`.
    pub secret_access_key: String,
}

impl S3 {
    /// One server for the whole test process, started on first use.
    pub fn shared() -> Result<&'static S3, String> {
        static SHARED: OnceLock<Result<S3, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                S3::start().map(|mut s| {
                    s.owned = false;
                    s
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A server of its own, for a test that pauses it; killed when dropped
    /// (or by its watchdog, if the test process dies first).
    pub fn start() -> Result<S3, String> {
        let program = moto_server().ok_or_else(|| NEEDS.to_string())?;
        let dir = crate::scratch_dir("s3").map_err(|e| format!("{NEEDS}; a temp dir: {e}"))?;
        let mut last = String::new();
        for _ in 0..PORT_TRIES {
            let port = free_port().map_err(|e| format!("a free port: {e}"))?;
            let log = std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
            let child = Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("{NEEDS}; {}: {e}", program.display()))?;
            watchdog::after_exit(&format!(
                "kill -9 {}; rm -rf {}",
                child.id(),
                watchdog::quote(&dir.display().to_string())
            ))
            .map_err(|e| format!("a watchdog: {e}"))?;
            let s3 = S3 {
                endpoint: format!("http://127.0.0.1:{port}"),
                child: Mutex::new(child),
                log: dir.join("log"),
                owned: true,
            };
            match s3.wait_ready(port) {
                Ok(()) => return Ok(s3),
                Err(e) => {
                    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                    last = format!("{e}; moto's log:\n{log}");
                }
            }
        }
        Err(format!("moto_server did not start: {last}"))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The file moto writes its output to: werkzeug's access log, one
    /// line per request answered (`"PUT /bucket/key?partNumber=1&… HTTP/1.1" 200 -`),
    /// which a benchmark reads to count requests by kind.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// The process id of the server (to read its CPU time and memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok().map(|c| c.id())
    }

    /// A new, empty bucket.
    pub fn bucket(&self) -> Result<Bucket, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let status = self.request("PUT", &format!("/{name}"))?;
        if status != 200 {
            return Err(format!("creating bucket {name}: HTTP {status}"));
        }
        Ok(Bucket {
            endpoint: self.endpoint.clone(),
            region: REGION.into(),
            name,
            access_key_id: "pickup-test".into(),
            secret_access_key: "pickup-test-secret".into(),
        })
    }

    /// Freezes the server (`SIGSTOP`): it accepts nothing and answers nothing.
    pub fn pause(&self) -> Result<(), String> {
        self.signal("STOP")
    }

    /// Lets a paused server carry on (`SIGCONT`).
    pub fn resume(&self) -> Result<(), String> {
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> Result<(), String> {
        let pid = self.child.lock().map_err(|e| e.to_string())?.id();
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Ok(())
        } else {
            Err(format!("kill -{name} {pid} failed"))
        }
    }

    fn wait_ready(&self, port: u16) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < READY_WITHIN {
            if let Some(status) = self
                .child
                .lock()
                .map_err(|e| e.to_string())?
                .try_wait()
                .map_err(|e| e.to_string())?
            {
                return Err(format!("moto_server exited ({status}) on port {port}"));
            }
            if self.request("GET", "/").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("no answer within {READY_WITHIN:?}"))
    }

    /// One unsigned HTTP/1.1 request (moto does not check signatures); the
    /// status code of the answer.
    fn request(&self, method: &str, path: &str) -> Result<u16, String> {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).map_err(|e| e.to_string())?;
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {head:?}"))
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if self.owned {
            if let Ok(mut child) = self.child.lock() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `moto_server`: `$PICKUP_MOTO_SERVER`, else the venv `.ci/run` makes
/// (`target/moto-venv`), else one on the PATH.
fn moto_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PICKUP_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/moto-venv/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    let on_path = Command::new("moto_server")
        .arg("-h")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path.then(|| PathBuf::from("moto_server"))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
