//! The operator's account commands (`pickup-relay user …`, `pickup-relay
//! terminal …`) with the real binary: what they print, how they fail, that
//! they work while a relay serves the same data directory, and that no
//! password or device key reaches the relay's log.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use pickup_proto::identity::DeviceKey;
use pickup_relay::directory::{Directory, PasswordParams, SqliteDirectory};
use pickup_tests::e2e::{relay_bin, run_with_input, stderr, stdout, TempDir};
use pickup_tests::relay_process::RelayProcess;

/// Runs `pickup-relay ARGS… --data DATA` with `input` on its stdin,
/// bounded by [`PATIENCE`].
fn admin(data: &Path, args: &[&str], input: &str) -> Output {
    run_with_input(
        Command::new(relay_bin()).args(args).arg("--data").arg(data),
        input,
    )
}

/// Runs an admin command that must succeed; returns its stdout.
fn ok(data: &Path, args: &[&str], input: &str) -> String {
    let out = admin(data, args, input);
    assert!(
        out.status.success(),
        "pickup-relay {args:?} failed ({}): {}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

/// Runs an admin command that must fail with status 1 and exactly one
/// line on stderr, which is returned.
fn fails(data: &Path, args: &[&str], input: &str) -> String {
    let out = admin(data, args, input);
    assert_eq!(out.status.code(), Some(1), "pickup-relay {args:?}: {out:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one error line: {err:?}");
    assert!(stdout(&out).is_empty(), "nothing on stdout: {out:?}");
    err.trim_end().to_owned()
}

/// The cells of `name`'s row in a `list` table.
fn row(list: &str, name: &str) -> Option<Vec<String>> {
    list.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(name))
}

/// `terminal add`'s stdout: exactly one line, the key as 32 lowercase hex.
fn key_line(out: &str) -> DeviceKey {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "the key alone on stdout: {out:?}");
    let hex = lines[0];
    assert!(
        hex.len() == 32 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "{hex:?}"
    );
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    DeviceKey(key)
}

#[test]
fn users_and_terminals_are_managed_from_the_command_line() {
    let scratch = TempDir::new("accounts");
    let data = scratch.path().join("data");
    let dir = || SqliteDirectory::open_existing(&data, PasswordParams::DEFAULT).unwrap();

    // A data directory no relay served yet: `user add` makes it, private.
    assert!(ok(
        &data,
        &["user", "add", "ada", "--password-stdin"],
        "hunter2\n"
    )
    .is_empty());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("relay.sqlite")), 0o600);
    assert!(dir().check_password("ada", "hunter2").unwrap());
    assert!(!dir().check_password("ada", "hunter2\n").unwrap());

    let list = ok(&data, &["user", "list"], "");
    assert_eq!(
        list.lines().next().unwrap().split_whitespace().next(),
        Some("NAME")
    );
    let ada = row(&list, "ada").unwrap();
    assert_eq!(ada[1..3], ["none", "none"]);
    assert!(ada[3].ends_with('Z'), "a UTC time: {ada:?}");

    assert_eq!(
        fails(
            &data,
            &["user", "add", "ada", "--password-stdin"],
            "other\n"
        ),
        "error: user \"ada\" already exists"
    );
    assert!(dir().check_password("ada", "hunter2").unwrap());
    assert_eq!(
        fails(
            &data,
            &["user", "add", "../ada", "--password-stdin"],
            "pw\n"
        ),
        "error: invalid name \"../ada\": a name is 1 to 32 of a-z, 0-9, '.', '_', '-', \
         starting with a letter or a digit"
    );
    assert_eq!(
        fails(&data, &["user", "add", "bob", "--password-stdin"], "\n"),
        "error: empty password"
    );
    // No terminal to type on (`setsid`: none even when the test runs in
    // one): the operator is told to use --password-stdin.
    let out = Command::new("setsid")
        .arg("-w")
        .arg(relay_bin())
        .args(["user", "add", "bob", "--data"])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: cannot read a password from the terminal"),
        "{err}"
    );
    assert!(err.trim_end().ends_with("use --password-stdin"), "{err}");

    ok(
        &data,
        &[
            "user", "quota", "ada", "--bytes", "1000000", "--files", "10",
        ],
        "",
    );
    assert_eq!(
        row(&ok(&data, &["user", "list"], ""), "ada").unwrap()[1..3],
        ["1000000", "10"]
    );
    ok(&data, &["user", "quota", "ada", "--bytes", "none"], "");
    assert_eq!(
        row(&ok(&data, &["user", "list"], ""), "ada").unwrap()[1..3],
        ["none", "10"]
    );
    // A command line that does not parse is a usage error (status 2).
    let out = admin(&data, &["user", "quota", "ada", "--files", "lots"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("neither a whole number nor `none`"),
        "{out:?}"
    );
    assert_eq!(
        fails(&data, &["user", "quota", "bob", "--files", "1"], ""),
        "error: no user \"bob\""
    );

    ok(
        &data,
        &["user", "passwd", "ada", "--password-stdin"],
        "correct horse\n",
    );
    assert!(!dir().check_password("ada", "hunter2").unwrap());
    assert!(dir().check_password("ada", "correct horse").unwrap());
    assert_eq!(
        fails(
            &data,
            &["user", "passwd", "bob", "--password-stdin"],
            "pw\n"
        ),
        "error: no user \"bob\""
    );

    let key = key_line(&ok(
        &data,
        &["terminal", "add", "sensor-1", "--owner", "ada"],
        "",
    ));
    assert_eq!(dir().terminal("sensor-1").unwrap().unwrap().key, key);
    let other = key_line(&ok(
        &data,
        &["terminal", "add", "sensor-2", "--owner", "ada"],
        "",
    ));
    assert_ne!(key, other, "a fresh key each time");
    assert_eq!(
        fails(
            &data,
            &["terminal", "add", "sensor-3", "--owner", "bob"],
            ""
        ),
        "error: no user \"bob\""
    );
    assert_eq!(
        fails(
            &data,
            &["terminal", "add", "sensor-1", "--owner", "ada"],
            ""
        ),
        "error: terminal \"sensor-1\" already exists"
    );
    assert_eq!(
        fails(
            &data,
            &["user", "add", "sensor-1", "--password-stdin"],
            "pw\n"
        ),
        "error: terminal \"sensor-1\" already exists"
    );
    let list = ok(&data, &["terminal", "list"], "");
    assert_eq!(row(&list, "sensor-1").unwrap()[1], "ada");
    assert!(row(&list, "sensor-2").is_some());
    ok(&data, &["terminal", "remove", "sensor-2"], "");
    assert!(row(&ok(&data, &["terminal", "list"], ""), "sensor-2").is_none());
    assert_eq!(
        fails(&data, &["terminal", "remove", "sensor-2"], ""),
        "error: no terminal \"sensor-2\""
    );

    // Removing the user removes its terminals.
    ok(&data, &["user", "remove", "ada"], "");
    assert!(row(&ok(&data, &["user", "list"], ""), "ada").is_none());
    assert!(row(&ok(&data, &["terminal", "list"], ""), "sensor-1").is_none());
    assert_eq!(
        fails(&data, &["user", "remove", "ada"], ""),
        "error: no user \"ada\""
    );

    // A data directory that does not exist is reported, not made.
    let missing = scratch.path().join("typo");
    let err = fails(&missing, &["user", "list"], "");
    assert!(err.starts_with("error: no relay database in"), "{err}");
    assert!(!missing.exists());
}

#[test]
fn the_config_file_names_the_data_directory() {
    let scratch = TempDir::new("accounts-config");
    let data = scratch.path().join("from-config");
    let config = scratch.path().join("relay.toml");
    std::fs::write(
        &config,
        format!("data = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    let out = Command::new(relay_bin())
        .args(["user", "add", "ada", "--password-stdin", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(b"pw\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(row(&ok(&data, &["user", "list"], ""), "ada").is_some());
}

#[test]
fn admin_commands_work_while_the_relay_serves_and_no_secret_reaches_its_log() {
    let mut relay = RelayProcess::start();
    let data = relay.data().to_owned();
    let password = "s3cret-Passw0rd";
    ok(
        &data,
        &["user", "add", "ada", "--password-stdin"],
        &format!("{password}\n"),
    );
    ok(
        &data,
        &["user", "add", "bob", "--password-stdin"],
        "bobs-password\n",
    );
    let key = ok(
        &data,
        &["terminal", "add", "sensor-1", "--owner", "ada"],
        "",
    );
    key_line(&key);
    ok(&data, &["user", "quota", "ada", "--bytes", "4096"], "");
    ok(
        &data,
        &["user", "passwd", "ada", "--password-stdin"],
        "new-s3cret\n",
    );
    ok(&data, &["user", "remove", "bob"], "");
    let users = ok(&data, &["user", "list"], "");
    assert_eq!(row(&users, "ada").unwrap()[1], "4096");
    assert!(row(&users, "bob").is_none());
    assert!(row(&ok(&data, &["terminal", "list"], ""), "sensor-1").is_some());

    // The relay served throughout, and opens the shared database again.
    relay.restart();
    assert!(row(&ok(&data, &["user", "list"], ""), "ada").is_some());
    let log = relay.log();
    for secret in [password, "new-s3cret", "bobs-password", key.trim()] {
        assert!(
            !log.contains(secret),
            "{secret:?} in the relay's log:\n{log}"
        );
    }
}

#[test]
fn a_peer_relays_user_is_allowed_only_under_a_pair_the_config_lists() {
    let scratch = TempDir::new("accounts-remote-sender");
    let data = scratch.path().join("data");
    let config = scratch.path().join("relay.toml");
    // Nothing reads the key file here: the admin commands check names only.
    std::fs::write(
        &config,
        "[[peers]]\nname = \"site-b\"\naddr = \"tcp://127.0.0.1:7425\"\nkey_file = \"site-b.key\"\n",
    )
    .unwrap();
    let with_config = |args: &[&str], input: &str| {
        run_with_input(
            Command::new(relay_bin())
                .args(args)
                .arg("--config")
                .arg(&config)
                .arg("--data")
                .arg(&data),
            input,
        )
    };
    let added = with_config(&["user", "add", "ada", "--password-stdin"], "pw\n");
    assert!(added.status.success(), "{}", stderr(&added));
    let allowed = with_config(&["user", "allow", "ada", "bob@site-b"], "");
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    let unlisted = with_config(&["user", "allow", "ada", "bob@site-x"], "");
    assert_eq!(unlisted.status.code(), Some(1), "{unlisted:?}");
    assert!(
        stderr(&unlisted).contains("no peer relay \"site-x\" in [[peers]]"),
        "{}",
        stderr(&unlisted)
    );
    let listed = with_config(&["user", "allow", "ada"], "");
    assert_eq!(stdout(&listed), "bob@site-b\n", "{listed:?}");
    // Withdrawing needs no listed pair.
    let withdrawn = with_config(&["user", "allow", "ada", "bob@site-x", "--remove"], "");
    assert!(withdrawn.status.success(), "{}", stderr(&withdrawn));
    let withdrawn = with_config(&["user", "allow", "ada", "bob@site-b", "--remove"], "");
    assert!(withdrawn.status.success(), "{}", stderr(&withdrawn));
    assert_eq!(stdout(&with_config(&["user", "allow", "ada"], "")), "");
}
