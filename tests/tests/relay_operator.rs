//! The relay as its operator meets it (issue 18, items 10 to 12), with the
//! real `pickup-relay` binary: what it logs, which listeners start, and the
//! modes of what it stores. Log assertions read its stderr; every wait is
//! bounded by [`PATIENCE`]; everything stays on loopback.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;

use pickup_proto::message::{Fetch, Message};
use pickup_proto::{Code, ErrorCode};
use pickup_tests::e2e::{relay_bin, wait_for, TempDir, PATIENCE};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::*;

/// A relay started with exactly the arguments a test gives (no `--tcp`
/// added, unlike [`RelayProcess`]), its stderr lines on a channel; killed
/// on drop.
struct Bare {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    _scratch: TempDir,
}

impl Bare {
    /// `pickup-relay serve --data <temp> ARGS…`; `config` is written to a
    /// file and passed with `--config`.
    fn start(args: &[&str], config: Option<&str>) -> Bare {
        let scratch = TempDir::new("relay-operator");
        let mut command = Command::new(relay_bin());
        command
            .arg("serve")
            .arg("--data")
            .arg(scratch.path().join("data"));
        if let Some(text) = config {
            let path = scratch.path().join("relay.toml");
            std::fs::write(&path, text).unwrap();
            command.arg("--config").arg(path);
        }
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pickup-relay");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Bare {
            child,
            lines,
            seen: Vec::new(),
            _scratch: scratch,
        }
    }

    /// The first line containing `needle`, within [`PATIENCE`]; panics with
    /// the log if the relay exits or stays silent first.
    fn wait_for_log(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                // Disconnected: stderr closed, the relay exited.
                Err(e) => panic!(
                    "no {needle:?} from the relay ({e:?}):\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

// Item 10: operator logging.

#[test]
fn a_batch_is_logged_complete_once_however_often_it_is_sent_again() {
    let relay = RelayProcess::start();
    let files = [("a.txt", bytes(5_000, 1))];
    let up = upload_tcp(relay.addr(), &files, None);
    assert!(up.complete(), "{:?}", up.events);
    // Sending the batch again by its token: the relay tells the terminal
    // it is complete each time, but the batch completed once.
    for _ in 0..2 {
        let again = upload_tcp(relay.addr(), &files, Some(up.token()));
        assert!(again.complete(), "{:?}", again.events);
    }
    // A second batch is the barrier: lines come in order, so once it is
    // created, everything about the first is in the log.
    let _ = upload_tcp(relay.addr(), &[("b.txt", bytes(10, 2))], None);
    let log = wait_for("the second batch created", || {
        let log = relay.log();
        (count(&log, "batch created") == 2).then_some(log)
    });
    let created = log.lines().find(|l| l.contains("batch created")).unwrap();
    let id = created
        .split_whitespace()
        .find(|w| w.starts_with("batch="))
        .unwrap_or_else(|| panic!("{created}"));
    let complete = log
        .lines()
        .filter(|l| l.contains("batch complete") && l.split_whitespace().any(|w| w == id))
        .count();
    assert_eq!(complete, 1, "{log}");
}

#[test]
fn a_download_is_logged_with_the_peer_and_the_batch_id_never_the_code() {
    let mut relay = RelayProcess::start();
    let files = [("a.txt", bytes(5_000, 1))];
    let up = upload_tcp(relay.addr(), &files, None);
    assert!(up.complete(), "{:?}", up.events);
    let got = download_tcp(relay.addr(), up.code()).unwrap();
    assert!(got.files[0] == files[0].1);
    let fetched = relay.wait_for_log("batch fetched");
    assert!(fetched.contains("INFO"), "{fetched}");
    assert!(fetched.contains("peer=127.0.0.1"), "{fetched}");
    assert!(fetched.contains("batch="), "{fetched}");
    let log = relay.log();
    let code = up.code().to_string();
    let bare: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    assert!(
        !log.contains(&code) && !log.contains(&bare),
        "the code {code} is a secret:\n{log}"
    );
}

#[test]
fn a_batch_is_logged_created_and_expired_under_its_id() {
    let mut relay = RelayProcess::builder()
        .config("sweep_interval_secs = 1\n[codes]\nttl_secs = 3\n")
        .start();
    let up = upload_tcp(relay.addr(), &[("a.txt", bytes(100, 3))], None);
    assert!(up.complete(), "{:?}", up.events);
    let created = relay.wait_for_log("batch created");
    let batch = field(&created, "batch=");
    assert!(created.contains("peer=127.0.0.1"), "{created}");
    // The sweeper runs every second and the code lives three: the line
    // comes within a few sweeps (bounded by PATIENCE).
    let expired = relay.wait_for_log("batch expired");
    assert_eq!(field(&expired, "batch="), batch, "{created}\n{expired}");
}

/// Item 10: an upload interrupted and resumed by its token is logged
/// resumed once, under the batch's id (the one its creation logged, and
/// never the code), with what the relay held of it.
#[test]
fn a_resumed_upload_is_logged_once_under_its_batch_id() {
    let mut relay = RelayProcess::start();
    // Larger than the relay's largest ack step (PROTOCOL.md §5.4), so the
    // first ack leaves some of it to send.
    let files = [("a.bin", bytes(16 << 20, 4))];
    // Cut once the relay made some of it durable: the grant is out.
    // A narrow window keeps most of it unsent when the link is cut.
    let config = pickup_proto::upload::Config {
        max_window: 1 << 20,
        ..upload_config(65_536)
    };
    let cut = upload(&mut connect(relay.addr()), config, &files, None, |acked| {
        acked > 0
    });
    assert!(!cut.complete() && cut.acked > 0, "{:?}", cut.events);
    let again = upload_tcp(relay.addr(), &files, Some(cut.token()));
    assert!(again.complete(), "{:?}", again.events);
    assert!(
        again.resumed_at().is_some_and(|at| at > 0),
        "{:?}",
        again.events
    );
    let created = relay.wait_for_log("batch created");
    // The completion follows the resumption in the same session: once it
    // is logged, so is every resumption of this upload.
    relay.wait_for_log("batch complete");
    let log = relay.log();
    let resumed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("upload resumed"))
        .collect();
    assert_eq!(resumed.len(), 1, "{log}");
    let line = resumed[0];
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("peer=127.0.0.1"), "{line}");
    assert_eq!(field(line, "batch="), field(&created, "batch="), "{log}");
    assert_ne!(field(line, "received="), "0", "{line}");
    let code = cut.code().to_string();
    let bare: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    assert!(
        !log.contains(&code) && !log.contains(&bare),
        "the code {code} is a secret:\n{log}"
    );
}

/// The value of `key` (`key=value`) in a text log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    line[at..].split_whitespace().next().unwrap_or("")
}

#[test]
fn refusals_are_logged_at_info_with_their_reason() {
    let relay = RelayProcess::builder()
        .config("[limits]\nmax_file_size = 1000\n")
        .start();
    let unknown = Code::from_parts(13, 12_345).unwrap();
    assert!(download_tcp(relay.addr(), unknown).is_err());
    let big = upload_tcp(relay.addr(), &[("big", bytes(2_000, 2))], None);
    assert!(!big.complete(), "{:?}", big.events);
    // A later line is the barrier: both refusals were logged before it.
    let mut relay = relay;
    let _ = upload_tcp(relay.addr(), &[("small", bytes(10, 3))], None);
    relay.wait_for_log("batch complete");
    let log = relay.log();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    assert!(
        refused
            .iter()
            .any(|l| l.contains("INFO") && l.contains("reason=UnknownCode")),
        "{log}"
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("INFO") && l.contains("reason=TooLarge")),
        "{log}"
    );
}

#[test]
fn rate_limit_hits_are_one_line_per_peer_per_minute() {
    let config = "[rate_limit]\npeer_burst = 1\npeer_per_sec = 0.01\n";
    let mut relay = RelayProcess::builder().config(config).start();
    let mut raw = Raw::connect(relay.addr());
    raw.hello();
    let mut limited = 0;
    for guess in 0..12u128 {
        raw.send(Message::Fetch(Fetch {
            code: Code::from_parts(13, guess).unwrap(),
        }));
        match raw.recv() {
            Reply::Error(ErrorCode::RateLimited, _) => limited += 1,
            Reply::Error(ErrorCode::UnknownCode, _) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(limited >= 10, "{limited} rate-limited replies");
    let _ = upload_tcp(relay.addr(), &[("barrier", bytes(10, 4))], None);
    relay.wait_for_log("batch complete");
    let log = relay.log();
    assert_eq!(count(&log, "rate limited"), 1, "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("refused") && l.contains("RateLimited")),
        "rate-limit refusals are aggregated, not one line each:\n{log}"
    );
}

#[test]
fn garbage_on_the_port_is_one_info_line_per_session() {
    let mut relay = RelayProcess::start();
    let mut conn = connect(relay.addr());
    for _ in 0..5 {
        conn.write_all(b"\x07not a frame at all\x00").unwrap();
    }
    conn.flush().unwrap();
    drop(conn);
    let line = relay.wait_for_log("garbage from the peer");
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("peer=127.0.0.1"), "{line}");
    assert!(line.contains("dropped_frames=5"), "{line}");
}

#[test]
fn log_json_gives_the_details_as_fields() {
    let mut relay = Bare::start(&["--tcp", "127.0.0.1:0", "--log-json"], None);
    let line = relay.wait_for_log("listening");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    let tcp = json["fields"]["tcp"]
        .as_str()
        .unwrap_or_else(|| panic!("{line}"));
    let addr: std::net::SocketAddr = tcp.parse().unwrap();
    assert!(addr.ip().is_loopback());
    let codes = relay.wait_for_log("guessed within a year");
    let codes: serde_json::Value = serde_json::from_str(&codes).unwrap();
    assert_eq!(codes["fields"]["code_len"], 13, "{codes}");
    assert!(codes["fields"]["guess_bound"].is_number(), "{codes}");
    let up = upload_tcp(addr, &[("j", bytes(100, 5))], None);
    assert!(up.complete());
    download_tcp(addr, up.code()).unwrap();
    let fetched = relay.wait_for_log("batch fetched");
    let fetched: serde_json::Value = serde_json::from_str(&fetched).unwrap();
    assert_eq!(fetched["fields"]["peer"], "127.0.0.1", "{fetched}");
    assert_eq!(fetched["fields"]["bytes"], 100, "{fetched}");
    assert!(fetched["fields"]["batch"].is_number(), "{fetched}");
}

// Item 11: which listeners start.

/// A serial port that does not exist: the relay keeps trying to open it,
/// which is enough to see which listeners it started.
fn absent_port(dir: &Path) -> String {
    dir.join("no-such-tty").display().to_string()
}

#[test]
fn serial_alone_on_the_command_line_starts_no_tcp_listener() {
    let dir = TempDir::new("absent-port");
    let port = absent_port(dir.path());
    let mut relay = Bare::start(&["--serial", &port], None);
    let line = relay.wait_for_log("listening:");
    assert!(line.contains(&format!("serial={port}@115200")), "{line}");
    assert!(!line.contains("tcp="), "{line}");
}

#[test]
fn listeners_on_the_command_line_replace_the_config_files() {
    let dir = TempDir::new("absent-port");
    let port = absent_port(dir.path());
    let config = "[tcp]\nlisten = [\"127.0.0.1:0\"]\n";
    let mut relay = Bare::start(&["--serial", &port], Some(config));
    let line = relay.wait_for_log("listening:");
    assert!(!line.contains("tcp="), "{line}");
    assert!(line.contains("serial="), "{line}");
}

#[test]
fn a_config_naming_only_serial_ports_starts_no_default_tcp_listener() {
    let dir = TempDir::new("absent-port");
    let config = format!("[serial]\nports = [\"{}\"]\n", absent_port(dir.path()));
    let mut relay = Bare::start(&[], Some(&config));
    let line = relay.wait_for_log("listening:");
    assert!(!line.contains("tcp="), "{line}");
    assert!(line.contains("serial="), "{line}");
}

// Item 12: the data directory is private.

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every entry under `dir`, `dir` included.
fn walk(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
    into.push(dir.to_path_buf());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, into);
        } else {
            into.push(path);
        }
    }
}

#[test]
fn the_data_directory_and_everything_in_it_are_created_private() {
    let relay = RelayProcess::start();
    let up = upload_tcp(relay.addr(), &[("private", bytes(70_000, 6))], None);
    assert!(up.complete());
    let mut entries = Vec::new();
    walk(relay.data(), &mut entries);
    let names: Vec<String> = entries.iter().map(|p| p.display().to_string()).collect();
    assert!(
        names.iter().any(|n| n.ends_with("relay.sqlite-wal")),
        "{names:?}"
    );
    assert!(
        entries
            .iter()
            .any(|p| p.parent().unwrap().ends_with("blobs")),
        "{names:?}"
    );
    for path in &entries {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(path), want, "{}", path.display());
    }
}

#[test]
fn a_wider_existing_data_directory_is_warned_about_and_left_as_it_is() {
    let scratch = TempDir::new("wide-data");
    let data = scratch.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The warning comes before "listening:", which `start` waits for.
    let relay = RelayProcess::builder().data(&data).start();
    let log = relay.log();
    let warning = log
        .lines()
        .find(|l| l.contains("data readable by other users"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.contains("mode=755"),
        "{warning}"
    );
    assert_eq!(mode(&data), 0o755, "the operator's mode is kept");
    // What the relay created inside is private all the same.
    assert_eq!(mode(&data.join("blobs")), 0o700);
    assert_eq!(mode(&data.join("relay.sqlite")), 0o600);
}

/// `pickup-relay migrate` brings a PostgreSQL database to the relay's
/// schema once, prints its version alone on stdout, and refuses a config
/// without the postgres backend.
#[test]
fn migrate_applies_the_schema_once_and_prints_its_version() {
    use pickup_tests::relay_process::Backend;
    let scratch = TempDir::new("relay-migrate");
    let sqlite = scratch.path().join("sqlite.toml");
    std::fs::write(&sqlite, "").unwrap();
    let refused = Command::new(relay_bin())
        .args(["migrate", "--config"])
        .arg(&sqlite)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("backend = \"postgres\""));
    let Some(Backend::Postgres { url, .. }) = Backend::postgres("migrate_applies_the_schema_once")
    else {
        return;
    };
    let config = scratch.path().join("pg.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n\
             [store.s3]\nbucket = \"unused\"\n"
        ),
    )
    .unwrap();
    let migrate = || {
        let out = Command::new(relay_bin())
            .args(["migrate", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    // A fresh database gets every migration there is, the version's number.
    let (version, said) = migrate();
    let n: u32 = version.trim_end().parse().expect("a version number");
    assert!(n >= 1 && version.ends_with('\n'), "{version:?}");
    assert!(
        said.contains(&format!("applied {n} migration(s)")),
        "{said}"
    );
    let (again, said) = migrate();
    assert_eq!(again, version);
    assert!(said.contains("applied 0 migration(s)"), "{said}");
}
