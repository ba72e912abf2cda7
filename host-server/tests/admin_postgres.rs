//! `pickup-relay user …` and `terminal …` with a `backend = "postgres"`
//! configuration: the commands change the shared database, and a directory
//! opened on it, as each relay instance opens one, sees the changes.
#![cfg(unix)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

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
    let config = dir.path().join("relay.toml");
    // No data directory is made: the accounts are in the database.
    let data = dir.path().join("data");
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
