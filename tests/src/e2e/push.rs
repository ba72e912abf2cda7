//! Addressed delivery (PROTOCOL.md §11) with the real binaries: the
//! operator's users and terminals, `pickup send --to`, `pickup status`
//! and `pickup listen`, for `cli_push` and `cli_push_faults`.
//!
//! ```text
//!   admin: pickup-relay user add / terminal add --data DATA (key file written here)
//!   sender: pickup login USER; pickup send --json FILE --to T…; pickup status CODE --json
//!   target: pickup listen --json --terminal T --key-file FILE -o DIR   (one JSON line per delivery)
//! ```
//!
//! Every user's password is [`password`] of its name; every command runs
//! with its own state directory and is bounded like [`run`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use pickup_proto::identity::DeviceKey;
use serde_json::Value;

use super::{json, pickup, relay_bin, run, run_with_input, stderr, stdout, wait_for};

/// `pickup-relay ARGS… --data DATA` with `input` on stdin; must succeed;
/// its stdout.
pub fn admin(data: &Path, args: &[&str], input: &str) -> String {
    let out = run_with_input(
        Command::new(relay_bin()).args(args).arg("--data").arg(data),
        input,
    );
    assert!(
        out.status.success(),
        "pickup-relay {args:?}: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// The password the tests give user `name`.
pub fn password(name: &str) -> String {
    format!("{name} secret password")
}

/// Adds user `name` to the relay data in `data`.
pub fn add_user(data: &Path, name: &str) {
    admin(
        data,
        &["user", "add", name, "--password-stdin"],
        &format!("{}\n", password(name)),
    );
}

/// Registers terminal `name` for `owner`, writes the key `terminal add`
/// printed to `key_file`, and returns it.
pub fn add_terminal(data: &Path, name: &str, owner: &str, key_file: &Path) -> DeviceKey {
    let hex = admin(data, &["terminal", "add", name, "--owner", owner], "");
    let hex = hex.trim();
    assert_eq!(hex.len(), 32, "a key of 32 hex digits: {hex:?}");
    std::fs::write(key_file, format!("{hex}\n")).expect("write the key file");
    let mut key = [0u8; 16];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digits");
    }
    DeviceKey(key)
}

/// `pickup login USER` at `relay`, keeping the token in `state`; must succeed.
pub fn login(state: &Path, relay: &str, user: &str) {
    let out = run_with_input(
        pickup(state).args(["--relay", relay, "login", user, "--password-stdin"]),
        &format!("{}\n", password(user)),
    );
    assert!(out.status.success(), "login {user}: {}", stderr(&out));
}

/// `pickup send --json FILES --to T… EXTRA…` from `state`, to completion.
pub fn send_to(
    state: &Path,
    relay: &str,
    files: &[&Path],
    terminals: &[&str],
    extra: &[&str],
) -> Output {
    let mut cmd = pickup(state);
    cmd.args(["--relay", relay, "send", "--json"]).args(files);
    for t in terminals {
        cmd.args(["--to", t]);
    }
    cmd.args(extra);
    run(&mut cmd)
}

/// The code a successful `send --json` printed.
pub fn code_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "send failed ({}): {} {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    json(out)["code"]
        .as_str()
        .expect("a code in send's JSON")
        .to_owned()
}

/// `send_to` that must succeed; the code.
pub fn push(state: &Path, relay: &str, file: &Path, terminals: &[&str]) -> String {
    code_of(&send_to(state, relay, &[file], terminals, &[]))
}

/// `pickup status CODE --json` from the sender's `state`; must succeed.
pub fn status_json(state: &Path, relay: &str, code: &str) -> Value {
    let out = run(pickup(state).args(["--relay", relay, "status", code, "--json"]));
    assert!(out.status.success(), "status {code}: {}", stderr(&out));
    json(&out)
}

/// `pickup status CODE` as text; must succeed.
pub fn status_text(state: &Path, relay: &str, code: &str) -> String {
    let out = run(pickup(state).args(["--relay", relay, "status", code]));
    assert!(out.status.success(), "status {code}: {}", stderr(&out));
    stdout(&out)
}

/// The one delivery of `code` that `status --json` lists (to `terminal`).
pub fn delivery(state: &Path, relay: &str, code: &str, terminal: &str) -> Value {
    let doc = status_json(state, relay, code);
    let list = doc["deliveries"].as_array().expect("a deliveries list");
    let mine: Vec<&Value> = list.iter().filter(|d| d["terminal"] == terminal).collect();
    assert_eq!(mine.len(), 1, "one delivery of {code} to {terminal}: {doc}");
    mine[0].clone()
}

/// Polls `status` until the delivery of `code` to `terminal` is in
/// `state_name`; the delivery then.
pub fn wait_for_state(
    state: &Path,
    relay: &str,
    code: &str,
    terminal: &str,
    state_name: &str,
) -> Value {
    wait_for(
        &format!("the delivery of {code} to {terminal}: {state_name}"),
        || {
            let d = delivery(state, relay, code, terminal);
            (d["state"] == state_name).then_some(d)
        },
    )
}

/// `pickup listen --json --terminal NAME --key-file KEY -o DIR` with its
/// own `state`; the caller adds options and spawns or runs it.
pub fn listen(state: &Path, relay: &str, terminal: &str, key_file: &Path, dir: &Path) -> Command {
    let mut cmd = pickup(state);
    cmd.args(["--relay", relay, "listen", "--json", "--terminal", terminal])
        .arg("--key-file")
        .arg(key_file)
        .arg("-o")
        .arg(dir);
    cmd
}

/// A listener's stdout line, parsed.
pub fn event(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
}

/// A terminal of the tests: its name, key and key file, and a state
/// directory of its own.
#[derive(Debug)]
pub struct Terminal {
    /// Its registered name.
    pub name: String,
    /// Its device key.
    pub key: DeviceKey,
    /// The file holding the key as `terminal add` printed it.
    pub key_file: PathBuf,
    /// Its `pickup` state directory.
    pub state: PathBuf,
}

impl Terminal {
    /// Registers `name` for `owner` in the relay data `data`; its files go
    /// under `work`.
    pub fn add(data: &Path, work: &Path, name: &str, owner: &str) -> Terminal {
        let key_file = work.join(format!("{name}.key"));
        let key = add_terminal(data, name, owner, &key_file);
        Terminal {
            name: name.to_owned(),
            key,
            key_file,
            state: work.join(format!("state-{name}")),
        }
    }

    /// `pickup listen` as this terminal into `dir`.
    pub fn listen(&self, relay: &str, dir: &Path) -> Command {
        listen(&self.state, relay, &self.name, &self.key_file, dir)
    }
}
