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
//! Runs when `qemu-system-arm` is installed (CI installs it, with the
//! `thumbv7m-none-eabi` target) and prints a notice and passes otherwise.

use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use pickup_tests::e2e::{pickup_bin, TempDir};
use pickup_tests::relay_process::RelayProcess;

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

/// Builds the firmware in its own target directory; returns the ELF image.
fn build_firmware() -> PathBuf {
    let dir = target_dir().join("firmware");
    let mut cmd = cargo(&workspace_dir().join("firmware"), &dir);
    cmd.args(["build", "--release"]);
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

/// A child process that is killed when the test ends, however it ends.
struct Process {
    child: Child,
}

impl Process {
    /// Starts `cmd` with its stdout and stderr sent, line by line, to `lines`.
    fn spawn(name: &'static str, mut cmd: Command, lines: &Sender<Line>) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        forward(name, child.stdout.take().expect("piped"), lines.clone());
        forward(name, child.stderr.take().expect("piped"), lines.clone());
        Process { child }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One line of output of one process.
struct Line {
    from: &'static str,
    text: String,
}

fn forward(from: &'static str, stream: impl Read + Send + 'static, lines: Sender<Line>) {
    thread::spawn(move || {
        for text in BufReader::new(stream).lines() {
            let Ok(text) = text else { break };
            if lines.send(Line { from, text }).is_err() {
                break;
            }
        }
    });
}

/// Everything the processes printed, for assertions and failure messages.
#[derive(Default)]
struct Transcript {
    lines: Vec<String>,
    /// QEMU's output: the firmware's semihosting prints.
    firmware: Vec<String>,
}

impl Transcript {
    fn take(&mut self, line: Line) {
        self.lines.push(format!("[{}] {}", line.from, line.text));
        if line.from == "qemu" {
            self.firmware.push(line.text);
        }
    }

    /// Waits up to 100 ms (and not past `deadline`) for the next line;
    /// keeps it and returns its text.
    fn next(&mut self, lines: &Receiver<Line>, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(line) => {
                let text = line.text.clone();
                self.take(line);
                Some(text)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    fn dump(&self) -> String {
        self.lines.join("\n")
    }
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

fn qemu_available() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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

#[test]
fn firmware_uploads_and_downloads_through_the_serial_relay() {
    if !qemu_available() {
        eprintln!("NOTICE: {QEMU} is not installed; skipping the firmware test");
        return;
    }
    let elf = build_firmware();
    let scratch = TempDir::new("firmware-qemu");
    let (tx, lines) = mpsc::channel();
    let mut transcript = Transcript::default();

    let mut qemu_cmd = Command::new(QEMU);
    qemu_cmd
        .args(["-machine", "lm3s6965evb", "-cpu", "cortex-m3"])
        .args(["-display", "none", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-serial", "pty", "-kernel"])
        .arg(&elf);
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

    let relay = RelayProcess::builder().serial(&pty).start();
    // What everyone printed, the relay's log after QEMU's lines.
    let dump = |t: &Transcript| format!("{}\n[relay]\n{}", t.dump(), relay.log());

    let status = wait_for_exit(
        &mut qemu,
        &lines,
        &mut transcript,
        Instant::now() + RUN_LIMIT,
    );
    let status = status.unwrap_or_else(|| {
        panic!(
            "the firmware did not finish within {RUN_LIMIT:?}:\n{}",
            dump(&transcript)
        )
    });
    // Collect what is still in flight (until 100 ms pass without a line).
    let tail = Instant::now() + Duration::from_secs(2);
    while transcript.next(&lines, tail).is_some() {}
    assert!(
        status.success(),
        "the firmware failed ({status}):\n{}",
        dump(&transcript)
    );
    let code = transcript
        .firmware
        .iter()
        .find_map(|l| l.strip_prefix("pickup code: "))
        .unwrap_or_else(|| panic!("no pickup code printed:\n{}", dump(&transcript)))
        .trim()
        .to_owned();
    assert!(
        is_pickup_code(&code),
        "{code:?} is not a pickup code:\n{}",
        dump(&transcript)
    );
    assert!(
        transcript.firmware.iter().any(|l| l == "download verified"),
        "the firmware exited 0 without verifying its download:\n{}",
        dump(&transcript)
    );

    // The relay holds exactly the bytes of the firmware's flash, under the
    // code it printed: fetch them over TCP with the host client.
    let tcp = relay.tcp();
    let out_dir = scratch.path().join("download");
    let got = Command::new(pickup_bin())
        .args(["get", "--relay", &tcp, "--no-retransfer", "-o"])
        .arg(&out_dir)
        .arg(&code)
        .stdin(Stdio::null())
        .output()
        .expect("run pickup get");
    drop(tx);
    assert!(
        got.status.success(),
        "pickup get {code} failed ({}): {}\n{}",
        got.status,
        String::from_utf8_lossy(&got.stderr),
        dump(&transcript)
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
