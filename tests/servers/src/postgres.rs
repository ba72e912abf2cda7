//! A PostgreSQL server of Debian's `postgresql` package, in a temporary
//! directory, reachable only through a unix socket there (no TCP port to
//! race other tests for).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::watchdog::{self, quote};

/// Where Debian puts each major version's server binaries.
const DEBIAN_BINARIES: &str = "/usr/lib/postgresql";

/// What a skipped test asks for.
const NEEDS: &str =
    "postgresql (Debian's package: initdb and pg_ctl under /usr/lib/postgresql/*/bin)";

/// The socket's port number: with `listen_addresses=''` it only names the
/// socket file (`.s.PGSQL.5432`), which is private to the server's directory.
const PORT: u16 = 5432;

/// A running PostgreSQL server. The role `pickup` is its superuser and
/// logs in without a password (`trust`, over the private socket only).
#[derive(Debug)]
pub struct Postgres {
    /// The server's directory: `data/`, `sock/`, `log`.
    dir: PathBuf,
    /// `/usr/lib/postgresql/<highest version>/bin`.
    bin: PathBuf,
    /// `initdb` and `postgres` refuse to run as root: run them as Debian's
    /// `postgres` user then.
    as_postgres: bool,
    /// Stopped by `Drop` (not the shared server, which its watchdog stops).
    owned: bool,
}

impl Postgres {
    /// One server for the whole test process, started on first use.
    pub fn shared() -> Result<&'static Postgres, String> {
        static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                Postgres::start().map(|mut pg| {
                    pg.owned = false;
                    pg
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A server of its own, for a test that restarts or stops it; stopped
    /// when dropped (or by its watchdog, if the test process dies first).
    pub fn start() -> Result<Postgres, String> {
        let bin = binaries().ok_or_else(|| NEEDS.to_string())?;
        let as_postgres = is_root();
        let dir = crate::scratch_dir("pg").map_err(|e| format!("{NEEDS}; a temp dir: {e}"))?;
        std::fs::create_dir_all(dir.join("sock")).map_err(|e| format!("{NEEDS}: {e}"))?;
        let pg = Postgres {
            dir,
            bin,
            as_postgres,
            owned: true,
        };
        if as_postgres {
            pg.command_line("chown", &["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .output()
                .map_err(|e| format!("{NEEDS}; chown: {e}"))
                .and_then(|o| checked("chown", o))?;
        }
        let data = pg.data();
        pg.server_tool("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "pickup",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .map_err(|e| format!("{NEEDS}; initdb: {e}"))
            .and_then(|o| checked("initdb", o))?;
        let stop = format!(
            "{} ; rm -rf {}",
            pg.stop_command("immediate"),
            quote(&pg.dir.display().to_string())
        );
        watchdog::after_exit(&stop).map_err(|e| format!("{NEEDS}; a watchdog: {e}"))?;
        pg.pg_ctl_start()?;
        Ok(pg)
    }

    /// A new, empty database, as a libpq key-value connection string
    /// (`host=<socket dir> port=5432 user=pickup dbname=t_…`).
    pub fn database(&self) -> Result<String, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// The connection string of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!(
            "host={} port={PORT} user=pickup dbname={name}",
            self.socket_dir().display()
        )
    }

    /// Runs one SQL statement with `psql` in database `db`; its output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &PORT.to_string(), "-U", "pickup", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        checked("psql", out).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// The postmaster's process id (the first line of `postmaster.pid`):
    /// its children are the server's backends, so a benchmark can count
    /// the CPU time the server spent.
    pub fn server_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every connection is
    /// closed, as when an operator restarts PostgreSQL.
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl(&["restart", "-m", "fast"])
    }

    /// Stops the server (`pg_ctl stop -m fast`); [`Postgres::resume`] starts it again.
    pub fn stop(&self) -> Result<(), String> {
        self.pg_ctl(&["stop", "-m", "fast"])
    }

    /// Starts a server stopped by [`Postgres::stop`].
    pub fn resume(&self) -> Result<(), String> {
        self.pg_ctl_start()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        // Tests need no crash safety from the server itself (fsync off),
        // but the relay's rule (synchronous_commit on) is left as shipped.
        let options = format!(
            "-c listen_addresses='' -k {} -p {PORT} -c fsync=off -c full_page_writes=off \
             -c max_connections=300",
            self.socket_dir().display()
        );
        let log = self.dir.join("log");
        self.pg_ctl(&["start", "-l", &log.display().to_string(), "-o", &options])
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        // Not piped: the server pg_ctl starts may keep a pipe open after
        // pg_ctl exits, and reading it to the end would wait for the server.
        let said = self.dir.join("pg_ctl.out");
        let file = std::fs::File::create(&said).map_err(|e| format!("pg_ctl: {e}"))?;
        let status = self
            .server_tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60"])
            .args(args)
            .stdout(file.try_clone().map_err(|e| format!("pg_ctl: {e}"))?)
            .stderr(file)
            .status()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if status.success() {
            return Ok(());
        }
        let out = std::fs::read_to_string(&said).unwrap_or_default();
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        Err(format!(
            "pg_ctl {args:?} failed ({status}): {out}\nserver log:\n{log}"
        ))
    }

    /// The shell command that stops this server in `mode`.
    fn stop_command(&self, mode: &str) -> String {
        let pg_ctl = quote(&self.bin.join("pg_ctl").display().to_string());
        let data = quote(&self.data().display().to_string());
        let run = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        format!("{run}{pg_ctl} -D {data} stop -m {mode} >/dev/null 2>&1")
    }

    /// `initdb`/`pg_ctl` of the server's version, as `postgres` when root.
    fn server_tool(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = self.command_line("runuser", &["-u", "postgres", "--"]);
            c.arg(path);
            c
        } else {
            let mut c = Command::new(path);
            c.stdin(Stdio::null());
            c
        }
    }

    fn command_line(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args).stdin(Stdio::null());
        c
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(self.stop_command("immediate"))
                .status();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The bin directory of the highest PostgreSQL version installed.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_BINARIES)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            is_file(&bin.join("initdb")).then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_file(p: &Path) -> bool {
    p.is_file()
}

/// Whether this process runs as root (`id -u` prints 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `out` if the tool exited 0, else an error with what it printed.
fn checked(tool: &str, out: Output) -> Result<Output, String> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{tool} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
