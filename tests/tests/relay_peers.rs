//! Peer relays (`[[peers]]`, docs/design/forwarding.md §2) against the real
//! relay process: a hand-driven client says `Hello{role: Relay}` and
//! answers the challenge with `relay_mac`, under the listed key or a wrong
//! one; and a relay refuses to start on a peer whose key file others may
//! read.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pickup_proto::identity::{relay_mac, terminal_mac, DeviceKey};
use pickup_proto::message::{ChallengeAnswer, Message, Role, TerminalAuth};
use pickup_proto::{ErrorCode, Sha1Digest};
use pickup_tests::e2e::{relay_bin, run, stderr, TempDir};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::{Raw, Reply};

const KEY: DeviceKey = DeviceKey([0x42; 16]);

fn hex(key: &DeviceKey) -> String {
    key.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `key` as 32 hex digits to `dir/name` with `mode`.
fn key_file(dir: &Path, name: &str, key: &DeviceKey, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", hex(key))).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A config listing the peer relay-b with the key in `key_file`.
fn peers_toml(key_file: &Path) -> String {
    format!(
        "[[peers]]\nname = \"relay-b\"\naddr = \"tcp://127.0.0.1:7425\"\nkey_file = {:?}\n",
        key_file.display().to_string()
    )
}

/// `TerminalAuth{name}` on a fresh relay-role connection, answered by
/// `mac`; the relay's reply to the answer.
fn authenticate(
    relay: &RelayProcess,
    name: &str,
    mac: impl Fn(&[u8; 16]) -> Sha1Digest,
) -> (Raw, Reply) {
    let mut raw = Raw::connect(relay.addr());
    raw.hello_as(Role::Relay);
    raw.send(Message::TerminalAuth(TerminalAuth { terminal: name }));
    let nonce = match raw.recv() {
        Reply::Challenge(nonce) => nonce,
        other => panic!("expected a challenge for {name}, got {other:?}"),
    };
    raw.send(Message::ChallengeAnswer(ChallengeAnswer {
        mac: mac(&nonce),
    }));
    let reply = raw.recv();
    (raw, reply)
}

#[test]
fn a_listed_peer_is_accepted_and_a_wrong_key_refused_with_auth_failed() {
    let keys = TempDir::new("peer-keys");
    let path = key_file(keys.path(), "relay-b.key", &KEY, 0o600);
    let relay = RelayProcess::builder().config(&peers_toml(&path)).start();

    // Before authenticating, a relay-role session may not upload, although
    // this relay takes anonymous uploads from terminals.
    let file = [("a.bin", 10u64, Sha1Digest::of(&[0; 10]))];
    let mut anonymous = Raw::connect(relay.addr());
    anonymous.hello_as(Role::Relay);
    anonymous.announce(&file);
    assert_eq!(anonymous.recv(), Reply::Error(ErrorCode::AuthRequired, 0));

    // The listed key: the session acts for peer:relay-b and may upload.
    let (mut peer, reply) = authenticate(&relay, "relay-b", |n| relay_mac(&KEY, n, "relay-b"));
    assert_eq!(reply, Reply::Authenticated("peer:relay-b".into()));
    peer.announce(&file);
    assert!(
        matches!(peer.recv(), Reply::Grant(g) if g.files == 1),
        "an authenticated peer uploads"
    );

    // A wrong key, a relay not listed, and the right key used as a
    // terminal's: the same refusal, a clear AuthFailed.
    let wrong = DeviceKey([9; 16]);
    let refusals = [
        authenticate(&relay, "relay-b", |n| relay_mac(&wrong, n, "relay-b")).1,
        authenticate(&relay, "relay-c", |n| relay_mac(&KEY, n, "relay-c")).1,
        authenticate(&relay, "relay-b", |n| terminal_mac(&KEY, n, "relay-b")).1,
    ];
    for reply in refusals {
        assert_eq!(reply, Reply::Error(ErrorCode::AuthFailed, 0));
    }

    // The peer is named in the log, its key never.
    let log = relay.log();
    assert!(log.contains("relay-b"), "{log}");
    assert!(!log.contains(&hex(&KEY)), "the key reached the log");
}

#[test]
fn a_relay_refuses_to_start_on_a_key_file_others_may_read() {
    let keys = TempDir::new("peer-keys");
    let data = TempDir::new("peer-data");
    let path = key_file(keys.path(), "relay-b.key", &KEY, 0o644);
    let config = keys.path().join("relay.toml");
    let start = |toml: &str| {
        std::fs::write(&config, toml).unwrap();
        run(Command::new(relay_bin())
            .args(["serve", "--tcp", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(data.path()))
    };
    let out = start(&peers_toml(&path));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("relay-b") && err.contains("chmod 600"),
        "{err}"
    );
    // Listed twice: refused before any key is read.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let twice = format!("{0}\n{0}", peers_toml(&path));
    let out = start(&twice);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("listed twice"), "{}", stderr(&out));
}
