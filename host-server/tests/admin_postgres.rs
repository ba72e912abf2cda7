//! `pickup-relay user …`, `terminal …` and `serve` with a `backend =
//! "postgres"` configuration: the commands change the shared database, a
//! directory opened on it, as each relay instance opens one, sees the
//! changes, and a relay serves and stops with its accounts there.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pickup_relay::directory::{Directory, PasswordParams, PgDirectory};
use pickup_test_servers::{require, Postgres};

/// argon2's cheapest: the test is about where accounts go, not their cost.
const CHEAP: PasswordParams = PasswordParams {
    memory_kib: 8,
    iterations: 1,
};

/// Runs `pickup-relay ARGS --config CONFIG` with `input` on stdin.
fn admin(config: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pickup-relay"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pickup-relay starts");
    let mut stdin = child.stdin.take().expect("a stdin pipe");
    stdin.write_all(input.as_bytes()).expect("input written");
    drop(stdin);
    child.wait_with_output().expect("pickup-relay ends")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Writes a configuration for database `url`, data in `dir`/data; returns
/// the file and the data directory.
fn postgres_config(dir: &Path, url: &str) -> (PathBuf, PathBuf) {
    let config = dir.join("relay.toml");
    let data = dir.join("data");
    std::fs::write(
        &config,
        format!(
            "data = {data:?}\n\
             [auth.password]\nmemory_kib = 8\niterations = 1\n\
             [store]\nbackend = \"postgres\"\npostgres_url = {url:?}\n\
             [store.s3]\nbucket = \"unused\"\n"
        ),
    )
    .expect("config written");
    (config, data)
}

#[test]
fn account_commands_work_on_the_shared_database() {
    let Some(pg) = require(
        "account_commands_work_on_the_shared_database",
        Postgres::shared(),
    ) else {
        return;
    };
    let url = pg.database().expect("a database");
    let dir = tempfile::tempdir().expect("a temporary directory");
    // No data directory is made: the accounts are in the database.
    let (config, data) = postgres_config(dir.path(), &url);

    ok(admin(
        &config,
        &["user", "add", "ada", "--password-stdin"],
        "ada secret\n",
    ));
    let shared = PgDirectory::open(&url, 1, CHEAP).expect("the database opens");
    assert!(shared.check_password("ada", "ada secret").unwrap());

    let key = ok(admin(
        &config,
        &["terminal", "add", "t1", "--owner", "ada"],
        "",
    ));
    let stored = shared.terminal("t1").unwrap().expect("the terminal");
    let hex: String = stored.key.0.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(key.trim(), hex);

    let list = ok(admin(&config, &["user", "list"], ""));
    assert!(list.lines().any(|l| l.starts_with("ada ")), "{list}");
    let again = admin(
        &config,
        &["user", "add", "ada", "--password-stdin"],
        "other\n",
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    ok(admin(&config, &["user", "remove", "ada"], ""));
    assert_eq!(shared.user("ada").unwrap(), None);
    assert_eq!(shared.removed_accounts(10).unwrap(), ["@t1", "ada"]);
    assert!(!data.exists(), "no SQLite database was made");
}

/// How long the relay may take to start or stop before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn a_relay_serves_and_stops_with_its_accounts_in_postgres() {
    let Some(pg) = require(
        "a_relay_serves_with_accounts_in_postgres",
        Postgres::shared(),
    ) else {
        return;
    };
    let url = pg.database().expect("a database");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (config, _) = postgres_config(dir.path(), &url);
    let mut relay = Command::new(env!("CARGO_BIN_EXE_pickup-relay"))
        .args(["serve", "--tcp", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the relay starts");
    let (lines_tx, lines) = mpsc::channel();
    let stderr = relay.stderr.take().expect("a stderr pipe");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    // Until it listens; then it is stopped as an operator stops it. Its
    // sweep, which reads the accounts, ticks first at start.
    let mut stopping = false;
    loop {
        match lines.recv_timeout(PATIENCE) {
            Ok(line) => {
                if !stopping && line.contains("listening:") {
                    // Its handler is installed before it says so.
                    let pid = relay.id().to_string();
                    let kill = Command::new("kill").args(["-TERM", &pid]).status();
                    assert!(kill.expect("kill runs").success());
                    stopping = true;
                }
                log.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = relay.kill();
                panic!("the relay neither listened nor stopped: {log:#?}");
            }
        }
    }
    let status = relay.wait().expect("the relay ends");
    let log = log.join("\n");
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("accounts in postgres"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains(&url), "the connection string is never logged");
}
