//! Two relay processes listing each other as peers (issue 17), for the
//! forwarding tests (`relay_forward`, `relay_forward_push`,
//! `relay_forward_faults`). Either relay may be killed (`kill9`,
//! `terminate`) and restarted on its data directory and port
//! ([`RelayProcess::restart`]); B's port stays the proxy's target.
//!
//! ```text
//!   pickup ──► A ──[[peers]] PAIR──► faulty::Proxy (counts bytes towards B) ──► B ──[[peers]] PAIR──► A
//! ```
//!
//! Each relay lists the other under the one name [`PAIR`], with the one
//! key [`KEY`]: B knows A's users as `USER@pair-ab`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use pickup_proto::identity::DeviceKey;
use pickup_proto::Code;
use pickup_relay::config::peers::{PeerConfig, PeerRelay};
use pickup_relay::store::sqlite::SqliteStore;

use super::faulty::{LinkFaults, Proxy};
use super::push::{add_user, login};
use super::{pickup, run, run_json, same_file, stderr, write_random, TempDir};
use crate::relay_process::RelayProcess;

/// The pair's name: each relay lists the other under it.
pub const PAIR: &str = "pair-ab";
/// The key the pair shares.
pub const KEY: DeviceKey = DeviceKey([0x5a; 16]);

/// Two relays listing each other, B behind a counting proxy.
pub struct Pair {
    /// Relay A, where batches are sent and forwards asked for.
    pub a: RelayProcess,
    /// Relay B, the peer.
    pub b: RelayProcess,
    /// Between A and B (A's entry for B names it).
    pub proxy: Proxy,
    /// A's entry for B, key read, as A's forwarder would hold it.
    pub peer: PeerRelay,
    /// Files of the test: sources, state directories, keys.
    pub work: TempDir,
}

fn peer_toml(addr: &str, key_file: &Path) -> String {
    format!(
        "[[peers]]\nname = \"{PAIR}\"\naddr = \"tcp://{addr}\"\nkey_file = {:?}\n",
        key_file.display().to_string()
    )
}

/// How a pair is set up; [`Setup::default`] is [`Pair::start`]'s.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// The proxy's faults (off until `proxy.set_faults(true)`).
    pub faults: LinkFaults,
    /// B's arguments after `serve`'s own.
    pub b_args: &'a [&'a str],
    /// The key A's entry for B holds (B's holds [`KEY`]).
    pub a_key: DeviceKey,
    /// The start of A's configuration, before its `[[peers]]` table (so
    /// it may set top-level keys and tables of its own).
    pub a_toml: &'a str,
    /// The start of B's configuration, as `a_toml` for A.
    pub b_toml: &'a str,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            faults: LinkFaults::default(),
            b_args: &[],
            a_key: KEY,
            a_toml: "",
            b_toml: "",
        }
    }
}

impl Setup<'_> {
    /// A and B started so.
    pub fn start(self) -> Pair {
        let work = TempDir::new("forward");
        let key_file = work.path().join("pair.key");
        let a_key_file = work.path().join("a-pair.key");
        for (path, key) in [(&key_file, KEY), (&a_key_file, self.a_key)] {
            let hex: String = key.0.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(path, format!("{hex}\n")).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // B's port is known once B runs: the proxy is retargeted then.
        let proxy = Proxy::start(1, self.faults, 17);
        proxy.set_faults(false);
        let a = RelayProcess::builder()
            .config(&format!(
                "{}\n{}",
                self.a_toml,
                peer_toml(&proxy.addr(), &a_key_file)
            ))
            .start();
        let b = self
            .b_args
            .iter()
            .fold(RelayProcess::builder(), |b, arg| b.arg(arg))
            .config(&format!(
                "{}\n{}",
                self.b_toml,
                peer_toml(&a.addr().to_string(), &key_file)
            ))
            .start();
        proxy.retarget(b.port());
        let peer = PeerConfig {
            name: PAIR.into(),
            addr: format!("tcp://{}", proxy.addr()),
            key_file,
            ca: None,
            pin: None,
        }
        .load()
        .unwrap();
        Pair {
            a,
            b,
            proxy,
            peer,
            work,
        }
    }
}

impl Pair {
    /// A and B started, B behind a proxy with `faults` (off until
    /// `proxy.set_faults(true)`).
    pub fn start(faults: LinkFaults) -> Pair {
        Pair::start_with(faults, &[])
    }

    /// [`Pair::start`], B started with `b_args` after `serve`'s own.
    pub fn start_with(faults: LinkFaults, b_args: &[&str]) -> Pair {
        Setup {
            faults,
            b_args,
            ..Setup::default()
        }
        .start()
    }

    /// Bytes that crossed towards B so far.
    pub fn up(&self) -> u64 {
        self.proxy.stats.up.load(Ordering::SeqCst)
    }

    /// Three files of `sizes` sent to A with `pickup send`: their paths and A's code.
    pub fn send_to_a(&self, sizes: [usize; 3]) -> (Vec<PathBuf>, Code) {
        self.send_seeded(&sizes, 100)
    }

    /// Files of `sizes` (contents seeded by `seed`) sent to A with `pickup
    /// send` (state `state-a`): their paths and A's code.
    pub fn send_seeded(&self, sizes: &[usize], seed: u64) -> (Vec<PathBuf>, Code) {
        let src = self.work.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let paths: Vec<PathBuf> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let path = src.join(format!("file-{i}.bin"));
                write_random(&path, len, seed + i as u64);
                path
            })
            .collect();
        let sent = run_json(
            pickup(&self.work.path().join("state-a"))
                .args(["send", "--json", "--relay", &self.a.tcp()])
                .args(&paths),
        );
        let code = Code::parse(sent["code"].as_str().unwrap()).unwrap();
        (paths, code)
    }

    /// `pickup --relay A forward ARGS…` as the user of `state`.
    pub fn forward_cmd(&self, state: &Path, args: &[&str]) -> Command {
        let mut cmd = pickup(state);
        cmd.args(["--relay", &self.a.tcp(), "forward"]).args(args);
        cmd
    }

    /// `pickup get` of B's `code` into a fresh directory `label`, as it
    /// ended, and the directory.
    pub fn get_at_b(&self, code: &Code, label: &str) -> (Output, PathBuf) {
        let dest = self.work.path().join(label);
        let out = run(pickup(&self.work.path().join("state-b"))
            .args(["get", "--relay", &self.b.tcp(), &code.to_string(), "-o"])
            .arg(&dest));
        (out, dest)
    }

    /// `pickup get` of B's `code` into a fresh directory; each file is
    /// compared with its source.
    pub fn get_from_b(&self, code: &Code, sources: &[PathBuf], label: &str) {
        let (out, dest) = self.get_at_b(code, label);
        assert!(out.status.success(), "{}", stderr(&out));
        for src in sources {
            let got = dest.join(src.file_name().unwrap());
            assert!(same_file(src, &got), "{} differs", got.display());
        }
    }

    /// Stops A (its batch stays in its data directory) and opens its store,
    /// as A's own forwarder would hold it.
    pub fn stop_a(&mut self) -> SqliteStore {
        assert!(self.a.terminate().success());
        SqliteStore::open(self.a.data()).unwrap().0
    }
}

/// ada, logged in at A with the state directory `send_to_a` uses.
pub fn ada_at_a(pair: &Pair) -> PathBuf {
    user_at_a(pair, "ada", "state-a")
}

/// A new user `name` of A, logged in with the state directory `dir`.
pub fn user_at_a(pair: &Pair, name: &str, dir: &str) -> PathBuf {
    add_user(pair.a.data(), name);
    let state = pair.work.path().join(dir);
    login(&state, &pair.a.tcp(), name);
    state
}
