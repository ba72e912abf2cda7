//! The example firmware (`firmware/`) on an emulated Cortex-M3, through the
//! relay's serial listener:
//!
//! ```text
//!   qemu-system-arm -machine lm3s6965evb            pickup-relay serve --serial /dev/pts/N
//!   ┌───────────────────────────────┐   UART0 as a   ┌──────────────────────────┐
//!   │ pickup-firmware (thumbv7m)    │ ═ pseudo-tty ═ │ relay, store in a temp   │
//!   │ upload 48 KiB + 1 B from flash│                │ directory under target/  │
//!   │ print code (semihosting)      │                └──────────────────────────┘
//!   │ download by code, check SHA-1 │
//!   │ exit 0 / 1 (semihosting)      │
//!   └───────────────────────────────┘
//! ```
//!
//! The one-way images run too: the upload-only one (`--no-default-features
//! --features upload`) must leave its flash at the relay, and the
//! download-only one must fetch and verify a batch the host client sent,
//! by the code given on its semihosting command line.
//!
//! Runs when `qemu-system-arm` is installed (CI installs it, with the
//! `thumbv7m-none-eabi` target) and prints a notice and passes otherwise.
//!
//! The same image built with `--features auth` authenticates as the terminal
//! of `firmware/src/credential.rs` on every link (PROTOCOL.md §8): its test
//! registers that terminal with `pickup-relay user add` / `terminal add
//! --key-file` in the relay's data directory first, and once more with
//! another key, which the firmware must fail on before uploading anything.
//!
//! Built with `--features notices`, the image then listens for a batch
//! pushed to its terminal (PROTOCOL.md §11): its test pushes one with
//! `pickup send --to` while the terminal is offline, and the firmware must
//! download it as the terminal, verify it and have its receipt settled,
//! after which `pickup status` says delivered.

#[path = "firmware_qemu/process.rs"]
mod process;

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use pickup_tests::e2e::{pickup_bin, relay_bin, run_with_input, TempDir};
use pickup_tests::relay_process::{Builder, RelayProcess};
use process::{Line, Process, Transcript};

const QEMU: &str = "qemu-system-arm";

/// The whole exchange (boot, upload, download) takes a few seconds; this
/// bounds a hang, not the speed.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// How long QEMU may take to print its pseudo-terminal's name.
const PTY_LIMIT: Duration = Duration::from_secs(20);

/// The symbols of a pickup code (Crockford base32) and its length bounds,
/// as `pickup_proto::Code` defines them.
const CODE_ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CODE_MIN_LEN: usize = 4;
const CODE_MAX_LEN: usize = 24;

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_dir().join(dir),
        None => workspace_dir().join("target"),
    }
}

/// A `cargo` command that builds exactly what its arguments say: nothing of
/// the environment of the `cargo test` that runs this test (flags meant for
/// the host would break the bare-metal build).
fn cargo(dir: &Path, target_dir: &Path) -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    cmd
}

fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run cargo: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the firmware with `features` in its own target directory (one per
/// feature set, so the tests' images never overwrite each other); returns
/// the ELF image.
fn build_firmware(features: &str) -> PathBuf {
    build_image(features, true)
}

/// Builds the image of one direction, `upload` or `download`, without the
/// other (`--no-default-features`).
fn build_one_way(direction: &str) -> PathBuf {
    build_image(direction, false)
}

fn build_image(features: &str, default_features: bool) -> PathBuf {
    let dir = match (features, default_features) {
        ("", true) => target_dir().join("firmware"),
        (f, true) => target_dir().join(format!("firmware-{}", f.replace([',', ' '], "-"))),
        (f, false) => target_dir().join(format!("firmware-only-{}", f.replace([',', ' '], "-"))),
    };
    let mut cmd = cargo(&workspace_dir().join("firmware"), &dir);
    cmd.args(["build", "--release"]);
    if !default_features {
        cmd.arg("--no-default-features");
    }
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    run_ok(
        cmd,
        "building the firmware (needs `rustup target add thumbv7m-none-eabi`)",
    );
    dir.join("thumbv7m-none-eabi/release/pickup-firmware")
}

/// The files the firmware keeps in flash (`firmware/src/data.rs`): 48 KiB
/// from xorshift32 (13, 17, 5) seeded with 0x9E3779B9, top byte of each
/// output; and the single byte `!`.
fn firmware_files() -> [(&'static str, Vec<u8>); 2] {
    let mut x: u32 = 0x9E37_79B9;
    let pattern = (0..48 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    [
        ("pattern-48k.bin", pattern),
        ("one-byte.txt", b"!".to_vec()),
    ]
}

/// The pseudo-terminal QEMU connected UART0 to, from its
/// `char device redirected to /dev/pts/N (label serial0)` line.
fn pty_path(text: &str) -> Option<String> {
    let rest = text.split("char device redirected to ").nth(1)?;
    rest.split_whitespace().next().map(str::to_owned)
}

/// Whether `text` is a pickup code in its display form: 4 to 24 Crockford
/// symbols, grouped exactly as `pickup_proto::Code` displays them (the
/// firmware has its own formatter, so this checks the two agree).
fn is_pickup_code(text: &str) -> bool {
    let symbols: String = text.chars().filter(|&c| c != '-').collect();
    let groups_ok = pickup_proto::Code::parse(text).is_ok_and(|c| c.to_string() == text);
    (CODE_MIN_LEN..=CODE_MAX_LEN).contains(&symbols.len())
        && symbols.chars().all(|c| CODE_ALPHABET.contains(c))
        && groups_ok
}

/// Whether to skip: QEMU is not installed (one line says so). Under
/// `PICKUP_NO_SKIP` (.ci/run installs QEMU) a skip would hide a lost check.
fn qemu_missing() -> bool {
    let available = Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert!(
            env::var_os("PICKUP_NO_SKIP").is_none(),
            "{QEMU} is not installed and PICKUP_NO_SKIP is set"
        );
        eprintln!("NOTICE: {QEMU} is not installed; skipping the firmware test");
    }
    !available
}

/// Waits for QEMU to exit, keeping what everyone prints.
fn wait_for_exit(
    qemu: &mut Process,
    lines: &Receiver<Line>,
    transcript: &mut Transcript,
    deadline: Instant,
) -> Option<ExitStatus> {
    loop {
        if let Ok(Some(status)) = qemu.child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        transcript.next(lines, deadline);
    }
}

/// One boot of a firmware image against a relay, once QEMU has exited.
struct Run {
    status: ExitStatus,
    transcript: Transcript,
    relay: RelayProcess,
}

impl Run {
    /// What everyone printed, the relay's log after QEMU's lines.
    fn dump(&self) -> String {
        format!("{}\n[relay]\n{}", self.transcript.dump(), self.relay.log())
    }

    /// The pickup code the firmware printed, checked to be one.
    fn code(&self) -> String {
        let code = self
            .transcript
            .firmware
            .iter()
            .find_map(|l| l.strip_prefix("pickup code: "))
            .unwrap_or_else(|| panic!("no pickup code printed:\n{}", self.dump()))
            .trim()
            .to_owned();
        assert!(
            is_pickup_code(&code),
            "{code:?} is not a pickup code:\n{}",
            self.dump()
        );
        code
    }

    /// Asserts the firmware exited 0 after verifying its download; returns
    /// the code it printed.
    fn assert_transferred(&self) -> String {
        assert!(
            self.status.success(),
            "the firmware failed ({}):\n{}",
            self.status,
            self.dump()
        );
        let code = self.code();
        assert!(
            self.transcript
                .firmware
                .iter()
                .any(|l| l == "download verified"),
            "the firmware exited 0 without verifying its download:\n{}",
            self.dump()
        );
        code
    }

    /// The relay holds exactly the bytes of the firmware's flash under
    /// `code`: fetched over TCP with the host client.
    fn assert_relay_holds_the_flash(&self, code: &str, scratch: &TempDir) {
        let out_dir = scratch.path().join("download");
        let got = Command::new(pickup_bin())
            .args(["get", "--relay", &self.relay.tcp(), "--no-retransfer", "-o"])
            .arg(&out_dir)
            .arg(code)
            .stdin(Stdio::null())
            .output()
            .expect("run pickup get");
        assert!(
            got.status.success(),
            "pickup get {code} failed ({}): {}\n{}",
            got.status,
            String::from_utf8_lossy(&got.stderr),
            self.dump()
        );
        for (name, bytes) in firmware_files() {
            let downloaded = fs::read(out_dir.join(name))
                .unwrap_or_else(|e| panic!("{name} was not downloaded: {e}"));
            assert!(
                downloaded == bytes,
                "{name} differs from the firmware's flash"
            );
        }
    }
}

/// Boots `elf` in QEMU with UART0 on a pseudo-terminal, starts the relay
/// of `relay` serving it, and waits (bounded) for the firmware to exit.
fn run_firmware(elf: &Path, relay: Builder) -> Run {
    run_firmware_with(elf, relay, None)
}

/// [`run_firmware`], with `code` on the semihosting command line (where
/// the download-only image takes the code to download from).
fn run_firmware_with(elf: &Path, relay: Builder, code: Option<&str>) -> Run {
    let (tx, lines) = mpsc::channel();
    let mut transcript = Transcript::default();

    let mut semihosting = String::from("enable=on,target=native");
    if let Some(code) = code {
        semihosting.push_str(",arg=pickup-firmware,arg=");
        semihosting.push_str(code);
    }
    let mut qemu_cmd = Command::new(QEMU);
    qemu_cmd
        .args(["-machine", "lm3s6965evb", "-cpu", "cortex-m3"])
        .args(["-display", "none", "-monitor", "none"])
        .args(["-semihosting-config", &semihosting])
        .args(["-serial", "pty", "-kernel"])
        .arg(elf);
    let mut qemu = Process::spawn("qemu", qemu_cmd, &tx);

    let pty_deadline = Instant::now() + PTY_LIMIT;
    let pty = loop {
        if let Some(line) = transcript.next(&lines, pty_deadline) {
            if let Some(path) = pty_path(&line) {
                break path;
            }
        }
        assert!(
            Instant::now() < pty_deadline,
            "QEMU did not report its pseudo-terminal:\n{}",
            transcript.dump()
        );
    };

    let relay = relay.serial(&pty).start();
    let status = wait_for_exit(
        &mut qemu,
        &lines,
        &mut transcript,
        Instant::now() + RUN_LIMIT,
    );
    let Some(status) = status else {
        panic!(
            "the firmware did not finish within {RUN_LIMIT:?}:\n{}\n[relay]\n{}",
            transcript.dump(),
            relay.log()
        )
    };
    // Collect what is still in flight (until 100 ms pass without a line).
    let tail = Instant::now() + Duration::from_secs(2);
    while transcript.next(&lines, tail).is_some() {}
    drop(tx);
    Run {
        status,
        transcript,
        relay,
    }
}

#[test]
fn firmware_uploads_and_downloads_through_the_serial_relay() {
    if qemu_missing() {
        return;
    }
    let elf = build_firmware("");
    let scratch = TempDir::new("firmware-qemu");
    let run = run_firmware(&elf, RelayProcess::builder());
    let code = run.assert_transferred();
    run.assert_relay_holds_the_flash(&code, &scratch);
}

#[test]
fn upload_only_firmware_uploads_its_flash() {
    if qemu_missing() {
        return;
    }
    let elf = build_one_way("upload");
    let scratch = TempDir::new("firmware-qemu-upload-only");
    let run = run_firmware(&elf, RelayProcess::builder());
    assert!(run.status.success(), "the firmware failed:\n{}", run.dump());
    let code = run.code();
    run.assert_relay_holds_the_flash(&code, &scratch);
}

#[test]
fn download_only_firmware_downloads_a_batch_by_its_code() {
    if qemu_missing() {
        return;
    }
    let elf = build_one_way("download");
    let scratch = TempDir::new("firmware-qemu-download-only");
    // The batch: the firmware's two files, sent by the host client to a
    // relay whose store the firmware's relay then serves.
    let data = scratch.path().join("data");
    let mut sent_files = Vec::new();
    for (name, bytes) in firmware_files() {
        let path = scratch.path().join(name);
        fs::write(&path, bytes).expect("write a file to send");
        sent_files.push(path);
    }
    let mut relay = RelayProcess::builder().data(&data).start();
    let sent = run_with_input(
        Command::new(pickup_bin())
            .arg("--state-dir")
            .arg(scratch.path().join("state"))
            .args(["--relay", &relay.tcp(), "send"])
            .args(&sent_files),
        "",
    );
    let stdout = String::from_utf8_lossy(&sent.stdout);
    let code = stdout.lines().next().unwrap_or_default().to_owned();
    assert!(
        sent.status.success() && is_pickup_code(&code),
        "pickup send: {stdout:?} {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    relay.terminate();

    let run = run_firmware_with(&elf, RelayProcess::builder().data(&data), Some(&code));
    assert!(run.status.success(), "the firmware failed:\n{}", run.dump());
    assert!(
        run.transcript
            .firmware
            .iter()
            .any(|l| l == "download verified"),
        "the firmware exited 0 without verifying {code}:\n{}",
        run.dump()
    );
}

/// The terminal name and device key of `firmware/src/credential.rs`, as
/// its operator registers them (32 hex digits for `--key-file`).
const FIRMWARE_TERMINAL: &str = "qemu-lm3s6965";
const FIRMWARE_KEY_HEX: &str = "3c1f8a52d0770eb4912d6ac305e84f19";
/// Another key: the relay's copy of it is wrong for this firmware.
const WRONG_KEY_HEX: &str = "3c1f8a52d0770eb4912d6ac305e84f18";

/// Runs `pickup-relay ARGS… --data DATA` with `stdin`, bounded by
/// [`PATIENCE`]; panics unless it succeeds.
fn relay_admin(data: &Path, args: &[&str], stdin: &str) {
    let out = run_with_input(
        Command::new(relay_bin()).args(args).arg("--data").arg(data),
        stdin,
    );
    assert!(
        out.status.success(),
        "pickup-relay {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A relay data directory with user `maker` owning the firmware's terminal,
/// registered with the device key `key_hex`.
fn data_with_terminal(scratch: &TempDir, key_hex: &str) -> PathBuf {
    let data = scratch.path().join("data");
    let key_file = scratch.path().join("device.key");
    fs::write(&key_file, format!("{key_hex}\n")).expect("write the key file");
    let key_path = key_file.to_str().expect("a UTF-8 temporary path");
    relay_admin(
        &data,
        &["user", "add", "maker", "--password-stdin"],
        "correct horse battery staple\n",
    );
    relay_admin(
        &data,
        &[
            "terminal",
            "add",
            FIRMWARE_TERMINAL,
            "--owner",
            "maker",
            "--key-file",
            key_path,
        ],
        "",
    );
    data
}

/// The relay's log lines saying a session authenticated as the firmware's terminal.
fn authenticated_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("authenticated") && !l.contains("authentication failed"))
        .filter(|l| l.contains(FIRMWARE_TERMINAL))
        .count()
}

#[test]
fn firmware_authenticates_as_a_registered_terminal() {
    if qemu_missing() {
        return;
    }
    // `paint-stack` as well, so each run measures the auth image's stack
    // (it only paints the stack before `main` and prints the figure at the end).
    let elf = build_firmware("auth,paint-stack");

    let scratch = TempDir::new("firmware-qemu-auth");
    let data = data_with_terminal(&scratch, FIRMWARE_KEY_HEX);
    let run = run_firmware(&elf, RelayProcess::builder().data(&data));
    let code = run.assert_transferred();
    // One session uploads and the next downloads: each link authenticates.
    let log = run.relay.log();
    assert!(
        authenticated_lines(&log) >= 2,
        "the relay did not log the terminal's upload and download as authenticated:\n{}",
        run.dump()
    );
    run.assert_relay_holds_the_flash(&code, &scratch);
    if let Some(stack) = run
        .transcript
        .firmware
        .iter()
        .find(|l| l.starts_with("stack high-water mark"))
    {
        println!("auth image: {stack}");
    }

    // The relay holds another key for the terminal: its challenge answer
    // fails, the firmware says so and stops before announcing anything.
    let scratch = TempDir::new("firmware-qemu-wrong-key");
    let data = data_with_terminal(&scratch, WRONG_KEY_HEX);
    let run = run_firmware(&elf, RelayProcess::builder().data(&data));
    assert!(
        !run.status.success(),
        "the firmware succeeded with a key the relay does not hold:\n{}",
        run.dump()
    );
    assert!(
        run.transcript
            .firmware
            .iter()
            .any(|l| l == "upload failed: authentication failed"),
        "the firmware did not report the refused key:\n{}",
        run.dump()
    );
    let log = run.relay.log();
    assert!(
        log.contains("authentication failed") && authenticated_lines(&log) == 0,
        "the relay did not refuse the wrong key:\n{}",
        run.dump()
    );
    assert!(
        !log.contains("batch created")
            && !run
                .transcript
                .firmware
                .iter()
                .any(|l| l.starts_with("pickup code")),
        "a terminal with a wrong key created a batch:\n{}",
        run.dump()
    );
}

/// `pickup login maker` (the user of [`data_with_terminal`]) at `tcp`,
/// keeping the token in `state`.
fn login_maker(state: &Path, tcp: &str) {
    let login = run_with_input(
        Command::new(pickup_bin())
            .args(["--state-dir", state.to_str().expect("UTF-8")])
            .args(["--relay", tcp, "login", "maker", "--password-stdin"]),
        "correct horse battery staple\n",
    );
    assert!(
        login.status.success(),
        "login: {}",
        String::from_utf8_lossy(&login.stderr)
    );
}

#[test]
fn firmware_receives_a_batch_pushed_to_it() {
    if qemu_missing() {
        return;
    }
    let elf = build_firmware("notices");
    let scratch = TempDir::new("firmware-qemu-push");
    let data = data_with_terminal(&scratch, FIRMWARE_KEY_HEX);

    // The terminal is offline: its owner pushes a batch, which waits at
    // the relay (durably: the relay is stopped before the firmware runs).
    let state = scratch.path().join("state");
    let pushed = scratch.path().join("pushed.txt");
    let bytes: Vec<u8> = (0..5_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    fs::write(&pushed, &bytes).expect("write the pushed file");
    let mut relay = RelayProcess::builder().data(&data).start();
    let tcp = relay.tcp();
    login_maker(&state, &tcp);
    let sent = run_with_input(
        Command::new(pickup_bin())
            .args(["--state-dir", state.to_str().expect("UTF-8")])
            .args(["--relay", &tcp, "send", "--to", FIRMWARE_TERMINAL])
            .arg(&pushed),
        "",
    );
    assert!(
        sent.status.success(),
        "send --to: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let code = String::from_utf8_lossy(&sent.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        is_pickup_code(&code),
        "no code in {:?}",
        String::from_utf8_lossy(&sent.stdout)
    );
    relay.terminate();

    // The firmware's round trip, then its listen: the notice, the batch
    // downloaded as the terminal and checked, the receipt settled.
    let run = run_firmware(&elf, RelayProcess::builder().data(&data));
    assert!(run.status.success(), "the firmware failed:\n{}", run.dump());
    for line in [
        "notice from maker",
        "pushed batch verified, receipt settled",
    ] {
        assert!(
            run.transcript.firmware.iter().any(|l| l == line),
            "the firmware did not say {line:?}:\n{}",
            run.dump()
        );
    }
    // This relay listens on another port: a login is kept per address.
    let tcp = run.relay.tcp();
    login_maker(&state, &tcp);
    let status = run_with_input(
        Command::new(pickup_bin())
            .args(["--state-dir", state.to_str().expect("UTF-8")])
            .args(["--relay", &tcp, "status", &code]),
        "",
    );
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && said.starts_with(&format!("{FIRMWARE_TERMINAL}: delivered")),
        "status after the firmware's receipt: {said:?} {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn recognises_pickup_codes_and_pty_names() {
    assert!(is_pickup_code("7KQ4-M2XD-9RTA"));
    assert!(is_pickup_code("7KQ4M-2XD9-RTAH"));
    assert!(!is_pickup_code("7KQ4-M2XD-9RTA-H"), "a dangling symbol");
    assert!(!is_pickup_code("7kq4-m2xd-9rta"), "upper case only");
    assert!(!is_pickup_code("7KQ"));
    assert!(
        !is_pickup_code("7KQ4-M2XU-9RTA"),
        "U is not a Crockford symbol"
    );
    assert!(!is_pickup_code("7KQ4M-2XD"), "eight symbols are 4-4");
    assert_eq!(
        pty_path("char device redirected to /dev/pts/7 (label serial0)").as_deref(),
        Some("/dev/pts/7")
    );
    assert_eq!(pty_path("qemu: something else"), None);
}
