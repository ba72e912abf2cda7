//! [`RelayProcess`]: the one way every test starts a real `pickup-relay`.
//!
//! ```text
//!   RelayProcess::builder().config(toml).backend(&b).serial(pty).open_files(256).start()
//!     └─ [sh -c 'ulimit -n 256 && exec …'] pickup-relay serve --tcp 127.0.0.1:0 --data <temp>/data [--config] [--serial]
//!          stderr ──► lines kept in memory (log, wait_for_log)
//!          "listening: tcp=127.0.0.1:PORT" ──► addr(); a restart reuses PORT
//! ```
//!
//! The binary is built once per test process with the test's own profile
//! ([`crate::e2e::relay_bin`]). The OS picks the port (no race between
//! finding a free port and binding it); the relay's own log line says which.
//! Every wait is bounded by [`crate::e2e::PATIENCE`]; the process is killed
//! (SIGKILL) when the handle drops, and a temporary data directory with it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::e2e::{relay_bin, TempDir, PATIENCE};

/// Where a relay keeps its state: the `[store]` of the config file the
/// [`Builder`] writes. One test definition runs on each
/// ([`both_backends!`](crate::both_backends)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Backend {
    /// SQLite under the data directory (the relay's default).
    #[default]
    Sqlite,
    /// PostgreSQL and S3: a database of the test's own, by connection
    /// string, and a bucket of its own for the contents. Relays given the
    /// same ones are instances of one cluster, whatever their data
    /// directories.
    Postgres {
        /// The database's connection string.
        url: String,
        /// The bucket (`[store.s3]`).
        bucket: pickup_test_servers::Bucket,
    },
}

impl Backend {
    /// PostgreSQL on a fresh database of the test process's shared
    /// server, with a fresh bucket of its shared S3 server; `None` (after
    /// a `skipped:` line) where either is not installed.
    pub fn postgres(test: &str) -> Option<Backend> {
        use pickup_test_servers::{require, Postgres, S3};
        let pg = require(test, Postgres::shared())?;
        let s3 = require(test, S3::shared())?;
        Some(Backend::Postgres {
            url: pg.database().expect("a fresh database"),
            bucket: s3.bucket().expect("a fresh bucket"),
        })
    }

    /// Another empty store of the same kind, for a test that needs a
    /// relay knowing nothing within one definition: SQLite as it is (every
    /// relay without [`Builder::data`] has its own directory), PostgreSQL
    /// on a new database and bucket of the same shared servers.
    pub fn fresh(&self) -> Backend {
        match self {
            Backend::Sqlite => Backend::Sqlite,
            Backend::Postgres { .. } => {
                Backend::postgres("Backend::fresh").expect("the servers of the first store")
            }
        }
    }

    /// The `[store]` section, as TOML (none for SQLite, the default).
    fn store_section(&self) -> String {
        match self {
            Backend::Sqlite => String::new(),
            Backend::Postgres { url, bucket } => format!(
                "\n[store]\nbackend = \"postgres\"\npostgres_url = {}\n\
                 [store.s3]\nendpoint = {}\nregion = {}\nbucket = {}\nprefix = \"relay\"\n\
                 access_key_id = {}\nsecret_access_key = {}\n",
                toml_str(url),
                toml_str(&bucket.endpoint),
                toml_str(&bucket.region),
                toml_str(&bucket.name),
                toml_str(&bucket.access_key_id),
                toml_str(&bucket.secret_access_key),
            ),
        }
    }
}

/// `s` as a TOML basic string.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// How to start a relay; see [`RelayProcess::builder`].
#[derive(Debug, Default)]
#[must_use]
pub struct Builder {
    data: Option<PathBuf>,
    config: Option<String>,
    backend: Backend,
    args: Vec<String>,
    ulimit: Option<String>,
}

impl Builder {
    /// Keeps the relay's data in `dir` (created if missing, never removed)
    /// instead of a fresh temporary directory: for a second relay over the
    /// data of a first.
    pub fn data(mut self, dir: &Path) -> Builder {
        self.data = Some(dir.to_path_buf());
        self
    }

    /// The relay's configuration file, as TOML text.
    pub fn config(mut self, toml: &str) -> Builder {
        self.config = Some(toml.to_owned());
        self
    }

    /// Keeps the relay's state in `backend` (its `[store]` is appended to
    /// the config file, which is written even without [`Builder::config`]).
    pub fn backend(mut self, backend: &Backend) -> Builder {
        self.backend = backend.clone();
        self
    }

    /// Also serves the serial port `spec` (`PATH` or `PATH@BAUD`).
    pub fn serial(self, spec: &str) -> Builder {
        self.arg("--serial").arg(spec)
    }

    /// Starts the relay under `ulimit -n N` (soft and hard open-file
    /// limits), through `sh`, as an operator's shell would.
    pub fn open_files(mut self, n: u64) -> Builder {
        self.ulimit = Some(format!("-n {n}"));
        self
    }

    /// Starts the relay under `ulimit -Sn N`: a soft open-file limit of `n`,
    /// the hard limit left as it is.
    pub fn soft_open_files(mut self, n: u64) -> Builder {
        self.ulimit = Some(format!("-Sn {n}"));
        self
    }

    /// Any other argument of `pickup-relay serve`.
    pub fn arg(mut self, arg: &str) -> Builder {
        self.args.push(arg.to_owned());
        self
    }

    /// Starts the relay and waits (bounded) until it listens on TCP.
    pub fn start(self) -> RelayProcess {
        let scratch = TempDir::new("relay");
        let data = self.data.unwrap_or_else(|| scratch.path().join("data"));
        let mut args = Vec::new();
        let store = self.backend.store_section();
        let config = match (self.config, store.is_empty()) {
            (config, true) => config,
            (config, false) => Some(config.unwrap_or_default() + &store),
        };
        if let Some(text) = &config {
            let path = scratch.path().join("relay.toml");
            std::fs::write(&path, text).expect("write the relay's config");
            args.push("--config".to_owned());
            args.push(path.display().to_string());
        }
        args.extend(self.args);
        let mut relay = RelayProcess {
            child: None,
            addr: None,
            data,
            args,
            ulimit: self.ulimit,
            log: Arc::new(Mutex::new(Vec::new())),
            first_line: 0,
            _scratch: scratch,
        };
        relay.spawn();
        if matches!(self.backend, Backend::Postgres { .. }) {
            // A test on PostgreSQL that silently ran on SQLite would
            // prove nothing.
            assert!(
                relay.log().contains("backend=Postgres"),
                "the relay did not open the postgres store: {}",
                relay.log()
            );
        }
        relay
    }
}

/// A running `pickup-relay serve` on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct RelayProcess {
    child: Option<Child>,
    /// Where it listens; `None` until the first start logged it.
    addr: Option<SocketAddr>,
    data: PathBuf,
    /// Arguments after `serve --tcp ADDR --data DIR`.
    args: Vec<String>,
    /// `ulimit` arguments to start it under, if any.
    ulimit: Option<String>,
    /// Every stderr line of every run, in order.
    log: Arc<Mutex<Vec<String>>>,
    /// Index in `log` of the current run's first line.
    first_line: usize,
    /// Holds the config file, and the data unless [`Builder::data`] said otherwise.
    _scratch: TempDir,
}

impl RelayProcess {
    /// A relay with default settings and a fresh temporary data directory.
    pub fn start() -> RelayProcess {
        RelayProcess::builder().start()
    }

    /// A relay with a config, a serial port, a given data directory...
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn spawn(&mut self) {
        let tcp = match self.addr {
            Some(addr) => addr.to_string(),
            None => "127.0.0.1:0".to_owned(),
        };
        let mut command = match &self.ulimit {
            // `exec` keeps the pid: kill and `pid()` reach the relay itself.
            Some(limit) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
                    .arg(relay_bin());
                c
            }
            None => Command::new(relay_bin()),
        };
        let mut child = command
            .args(["serve", "--tcp", &tcp, "--data"])
            .arg(&self.data)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pickup-relay");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = self.log.clone();
        self.first_line = lock(&log).len();
        thread::spawn(move || {
            // Ends when the process does (its stderr closes).
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lock(&log).push(line);
            }
        });
        self.child = Some(child);
        let line = self.wait_for_log("listening:");
        let tcp = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("tcp="))
            .unwrap_or_else(|| panic!("no tcp listener in {line:?}"));
        let addr: SocketAddr = tcp
            .parse()
            .unwrap_or_else(|e| panic!("{tcp:?} in {line:?}: {e}"));
        assert!(addr.ip().is_loopback(), "the relay left loopback: {addr}");
        self.addr = Some(addr);
    }

    /// Its TCP address (127.0.0.1, the port it logged).
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("started")
    }

    /// Its TCP port.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// `127.0.0.1:PORT`, for `pickup --relay`.
    pub fn tcp(&self) -> String {
        self.addr().to_string()
    }

    /// The address of the current run's listener of `kind` (`tcp`, `tls`, `http`)
    /// as its `listening:` line names it; the first one if there are several.
    /// Only the TCP listener keeps its port across [`RelayProcess::restart`].
    pub fn listener(&self, kind: &str) -> SocketAddr {
        let prefix = format!("{kind}=");
        let line = lock(&self.log)[self.first_line..]
            .iter()
            .find(|l| l.contains("listening:"))
            .cloned()
            .expect("started");
        let addrs = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {kind} listener in {line:?}"));
        let first = addrs.split(',').next().unwrap_or(addrs);
        first
            .parse()
            .unwrap_or_else(|e| panic!("{first:?} in {line:?}: {e}"))
    }

    /// Its data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The process id of the current run.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Resident memory of the current run, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the relay's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// CPU time of the current run so far (user and system), in clock
    /// ticks (1/100 s on Linux).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("the relay's /proc stat");
        // The fields after the command name, which ends at the last ')'.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r.trim_start());
        let field = |i: usize| -> u64 {
            rest.split(' ')
                .nth(i)
                .and_then(|f| f.parse().ok())
                .unwrap_or(0)
        };
        field(11) + field(12)
    }

    /// The first line of the current run's log containing `needle`, waiting
    /// for it up to [`PATIENCE`]; panics with the log if it never comes or
    /// the relay exits first.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        let start = Instant::now();
        for _ in 0..(PATIENCE.as_millis() / 10) {
            let found = lock(&self.log)[self.first_line..]
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().expect("poll the relay"),
                None => panic!("waiting for {needle:?} from a relay that is not running"),
            };
            if let Some(status) = exited {
                // Let the reader thread collect the last lines.
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "the relay exited ({status}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            if start.elapsed() > PATIENCE {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "the relay never logged {needle:?} in {PATIENCE:?}:\n{}",
            self.log()
        );
    }

    /// Everything the relay logged so far, over all its runs.
    pub fn log(&self) -> String {
        lock(&self.log).join("\n")
    }

    /// Kills the relay with SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the relay to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let start = Instant::now();
        for _ in 0..(PATIENCE.as_millis() / 20) {
            if let Some(status) = child.try_wait().expect("poll the relay") {
                return status;
            }
            if start.elapsed() > PATIENCE {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the relay did not exit within {PATIENCE:?} of SIGTERM");
    }

    /// Starts the relay again (killing it first if it runs) on the same
    /// port, data directory and arguments.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn lock(log: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// One end-to-end test on both backends: `fn NAME(backend: Backend) {…}`
/// becomes the tests `NAME::sqlite` and `NAME::postgres`, the second
/// skipped (with a line) where PostgreSQL is not installed. The body
/// starts its relay with [`Builder::backend`].
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* fn $name:ident($backend:ident: Backend) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($backend: $crate::relay_process::Backend) $body

            #[test]
            fn sqlite() {
                body($crate::relay_process::Backend::Sqlite);
            }

            #[test]
            fn postgres() {
                let test = concat!(stringify!($name), "::postgres");
                if let Some(backend) = $crate::relay_process::Backend::postgres(test) {
                    body(backend);
                }
            }
        }
    };
}
