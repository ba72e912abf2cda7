//! What `pickup get` leaves on disk when things go wrong, and what the CLI
//! says while it works (issue 18, items 6 and 7). Every check runs the real
//! `pickup` and `pickup-relay` binaries over loopback, with stderr not a
//! terminal (the form scripts and logs see).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use pickup_tests::e2e::faulty::{LinkFaults, Proxy};
use pickup_tests::e2e::{
    json, partial_name as temp_name, pickup, run, run_json, same_file, stderr, wait_for,
    write_random, Running, TempDir,
};
use pickup_tests::relay_process::RelayProcess;

/// Sends `names` from `src` as one batch and returns the code.
fn send(state: &Path, relay: &RelayProcess, src: &Path, names: &[&str]) -> String {
    let sent = run_json(
        pickup(state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .args(names.iter().map(|n| src.join(n))),
    );
    sent["code"].as_str().unwrap().to_string()
}

fn get(state: &Path, relay: &str, code: &str, dest: &Path, extra: &[&str]) -> Output {
    run(pickup(state)
        .args(["get", "--relay", relay])
        .args(extra)
        .args([code, "-o", dest.to_str().unwrap()]))
}

/// A loopback address nothing listens on.
fn dead_relay() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

/// Item 6: `-o new/sub` is created for the download and taken away again
/// when the download fails before writing anything (unknown code, relay
/// down); a directory that existed before stays.
#[test]
fn a_failed_get_leaves_no_directory_it_created() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-get-feedback");
    let state = work.path().join("state");
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_random(&src.join("a"), 1_000, 1);
    let code = send(&state, &relay, &src, &["a"]);
    // The same code with its last symbol changed: valid, but unknown.
    let mut unknown = code.clone();
    let last = unknown.pop().unwrap();
    unknown.push(if last == '0' { '1' } else { '0' });

    let new = work.path().join("new");
    let out = get(&state, &relay.tcp(), &unknown, &new.join("sub"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!new.exists(), "unknown code left {}", new.display());

    let out = get(
        &state,
        &dead_relay(),
        &code,
        &new.join("sub"),
        &["--no-retransfer"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(!new.exists(), "relay down left {}", new.display());

    // A directory that was there before is not ours to remove.
    std::fs::create_dir(&new).unwrap();
    let out = get(&state, &relay.tcp(), &unknown, &new, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(new.is_dir());
}

/// Item 6: files that exist with other content (another size, or the same
/// size) are reported and left alone; the rest of the batch arrives, and
/// the exit code says not everything was written.
#[test]
fn a_conflicting_file_does_not_stop_the_batch() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-get-feedback");
    let state = work.path().join("state");
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_random(&src.join("a"), 2_000, 2);
    write_random(&src.join("b"), 300_000, 3);
    write_random(&src.join("c"), 5_000, 4);
    let code = send(&state, &relay, &src, &["a", "b", "c"]);

    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("a"), b"mine, shorter").unwrap();
    let same_size = write_random(&dest.join("c"), 5_000, 99);

    let out = get(&state, &relay.tcp(), &code, &dest, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(same_file(&src.join("b"), &dest.join("b")), "b not fetched");
    assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"mine, shorter");
    assert_eq!(std::fs::read(dest.join("c")).unwrap(), same_size);
    // One line (errors are), naming each file left alone.
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("already exist") && err.contains("--force"),
        "{err}"
    );
    for name in ["a", "c"] {
        let shown = dest.join(name).display().to_string();
        assert!(err.contains(&shown), "{name} not reported: {err}");
    }
    // The fetched file is listed on stdout, the skipped ones are not.
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains(&dest.join("b").display().to_string()));

    // With --json, stdout holds one document: the error, exit 5.
    let out = get(&state, &relay.tcp(), &code, &dest, &["--json"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["error"]["exit"], 5, "{doc}");
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&dest.join("a").display().to_string()));

    // With --force the same command replaces them.
    let out = get(&state, &relay.tcp(), &code, &dest, &["--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["a", "b", "c"] {
        assert!(same_file(&src.join(name), &dest.join(name)), "{name}");
    }
}

/// Item 6: `-o` naming a file says so, and leaves the file alone.
#[test]
fn an_output_that_is_a_file_is_named_as_such() {
    let work = TempDir::new("cli-get-feedback");
    let file = work.path().join("notes.txt");
    std::fs::write(&file, b"keep me").unwrap();
    // Checked before the relay is asked: no relay needed.
    let out = get(
        &work.path().join("state"),
        &dead_relay(),
        "0000-0000-0000-0",
        &file,
        &["--no-retransfer"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("-o {} is a file, not a directory", file.display())),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

/// A directory this process cannot create files in: a read-only one, or
/// (when running as root, which ignores modes) sysfs, which refuses
/// everyone.
fn unwritable_dir(work: &Path) -> std::path::PathBuf {
    let dir = work.join("read-only");
    std::fs::create_dir(&dir).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let probe = dir.join("probe");
    if std::fs::write(&probe, b"").is_ok() {
        let _ = std::fs::remove_file(&probe);
        return Path::new("/sys").to_path_buf();
    }
    dir
}

/// Item 6: a directory that cannot be written to is named in the error.
#[cfg(target_os = "linux")]
#[test]
fn an_unwritable_directory_is_named() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-get-feedback");
    let state = work.path().join("state");
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_random(&src.join("a"), 1_000, 5);
    let code = send(&state, &relay, &src, &["a"]);
    let dest = unwritable_dir(work.path());
    let out = get(&state, &relay.tcp(), &code, &dest, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains(&format!("cannot write into directory {}", dest.display())),
        "{err}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(
            work.path().join("read-only"),
            std::fs::Permissions::from_mode(0o755),
        );
    }
}

/// Item 7: a `get` that continues an earlier run's temporary file says so
/// (the bar and its rate start from there too), and the file verifies.
#[test]
fn a_resumed_get_says_where_it_resumes() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-get-feedback");
    let state = work.path().join("state");
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let body = write_random(&src.join("movie.bin"), 3 * 1024 * 1024, 6);
    let code = send(&state, &relay, &src, &["movie.bin"]);
    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    // What an interrupted run left: the first 2 MiB.
    std::fs::write(
        dest.join(temp_name("movie.bin", &body)),
        &body[..2 * 1024 * 1024],
    )
    .unwrap();

    let out = get(&state, &relay.tcp(), &code, &dest, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("movie.bin: resuming at 2.00 MiB of 3.00 MiB"),
        "{err}"
    );
    assert!(same_file(&src.join("movie.bin"), &dest.join("movie.bin")));

    // A fresh download says nothing of the kind.
    let fresh = work.path().join("fresh");
    let out = get(&state, &relay.tcp(), &code, &fresh, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("resuming"), "{}", stderr(&out));
}

/// Item 7: a batch over one of the relay's limits is refused with the file
/// (or batch) that breaks it, its size, and the limit, which the relay
/// states in its `RelayLimits` (PROTOCOL.md §5.1).
#[test]
fn too_large_names_the_file_its_size_and_the_relays_limit() {
    let relay = RelayProcess::builder()
        .config("[limits]\nmax_file_size = 6000\nmax_batch_size = 8000\nmax_files_per_batch = 3\n")
        .start();
    let work = TempDir::new("cli-get-feedback");
    let state = work.path().join("state");
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_random(&src.join("big.iso"), 10_000, 7);
    write_random(&src.join("small.txt"), 100, 8);
    write_random(&src.join("half-a.bin"), 5_000, 9);
    write_random(&src.join("half-b.bin"), 5_000, 10);
    let per_file = "\"big.iso\" is 9.77 KiB; the relay takes at most 5.86 KiB per file";
    for (files, expect) in [
        (
            &["big.iso"][..],
            format!("too large for this relay: {per_file}"),
        ),
        // The file over the per-file limit, not just the largest.
        (
            &["small.txt", "big.iso"][..],
            format!("too large for this relay: {per_file}"),
        ),
        // Each file fits, together they do not.
        (
            &["half-a.bin", "half-b.bin"][..],
            "too large for this relay: the batch is 9.77 KiB in 2 files; \
             the relay takes at most 7.81 KiB per batch"
                .to_owned(),
        ),
        (
            &["small.txt", "half-a.bin", "half-b.bin", "big.iso"][..],
            "too many files for this relay: 4 files; the relay takes at most 3 per batch"
                .to_owned(),
        ),
    ] {
        let out = run(pickup(&state)
            .args(["send", "--relay", &relay.tcp()])
            .args(files.iter().map(|n| src.join(n))));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&expect), "{files:?}: {err}");
    }
}

/// A process whose stderr lines arrive on a channel as it runs.
struct Watched {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    fn spawn(cmd: &mut std::process::Command) -> Watched {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watched {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`.
    fn wait_for_line(&mut self, needle: &str) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(60)) {
            let found = line.contains(needle);
            self.seen.push(line);
            if found {
                return;
            }
        }
        panic!("no line with {needle:?} on stderr: {:?}", self.seen);
    }

    /// Waits (bounded) for the exit; returns it and all of stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        // The channel closes when the process closes stderr, at its exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(60)) {
            self.seen.push(line);
        }
        let status = wait_for("the process to exit", || self.child.try_wait().unwrap());
        (status, self.seen.join("\n"))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Item 7: a relay stopped with SIGTERM tells its sessions `ShuttingDown`;
/// the CLI says that, not the broken pipe or reset that follows. (A `get
/// --wait` for an unfinished batch is the session that is surely open
/// when the relay stops; it also says what it waits for.)
#[test]
fn a_relay_shutting_down_is_named() {
    let mut relay = RelayProcess::start();
    let work = TempDir::new("cli-get-feedback");
    let state = work.path().join("state");
    let file = work.path().join("big.bin");
    write_random(&file, 16 * 1024 * 1024, 9);
    // An upload killed part-way (throttled so it is): the batch stays unfinished.
    let proxy = Proxy::start(relay.port(), LinkFaults::default(), 3);
    proxy.rate.store(1024 * 1024, Ordering::SeqCst);
    let send = Running::spawn(
        pickup(&state)
            .args(["send", "--relay", &proxy.addr()])
            .arg(&file),
    );
    let code = send.next_line();
    send.kill();

    let dest = work.path().join("dest");
    let mut get = Watched::spawn(pickup(&state).args([
        "get",
        "--wait",
        "--max-attempts",
        "1",
        "--relay",
        &relay.tcp(),
        &code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    get.wait_for_line("waiting: the batch is still being uploaded");
    relay.terminate();
    let (status, err) = get.finish();
    assert!(!status.success(), "{err}");
    assert!(err.contains("relay shutting down"), "{err}");
    assert!(!err.contains("BrokenPipe"), "{err}");
}

/// Runs `pickup ARGS` with stdout on a pseudo-terminal (what `send` prints
/// for a person) and stderr a pipe; returns the exit status and the
/// terminal's text.
#[cfg(target_os = "linux")]
fn run_on_terminal(state: &Path, args: &[String]) -> (std::process::ExitStatus, String) {
    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    use std::io::Read;

    let mut master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ptsname_r(&master).unwrap())
        .unwrap();
    let mut child = {
        // The command (and its copy of the terminal) is gone once spawned,
        // so reading the master ends when the child exits.
        let mut cmd = pickup(state);
        cmd.args(args)
            .stdout(Stdio::from(slave))
            .stderr(Stdio::null());
        cmd.spawn().unwrap()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // Ends with EIO once no process holds the terminal.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut text = Vec::new();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(60)) {
        text.extend(chunk);
    }
    let status = wait_for("pickup to exit", || child.try_wait().unwrap());
    (status, String::from_utf8_lossy(&text).into_owned())
}

/// Item 7: the summary a person sees counts files in proper English.
#[cfg(target_os = "linux")]
#[test]
fn the_send_summary_counts_files_properly() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-get-feedback");
    let state = work.path().join("state");
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_random(&src.join("one"), 100, 10);
    write_random(&src.join("two"), 100, 11);
    for (names, expect) in [
        (&["one"][..], "sent 1 file, 100 B; get it with"),
        (&["one", "two"][..], "sent 2 files, 200 B; get them with"),
    ] {
        let mut args = vec!["send".to_string(), "--relay".into(), relay.tcp()];
        args.extend(names.iter().map(|n| src.join(n).display().to_string()));
        let (status, text) = run_on_terminal(&state, &args);
        assert!(status.success(), "{text}");
        assert!(text.contains(expect), "{names:?}: {text}");
        assert!(!text.contains("file(s)"), "{text}");
    }
}

/// Item 7: a `get` (or `info`) the relay rate-limits says so and when it
/// asks again, instead of waiting without a word.
#[test]
fn rate_limiting_is_said() {
    // One failed lookup at once, then one every 2 s.
    let relay = RelayProcess::builder()
        .config("[rate_limit]\npeer_burst = 1\npeer_per_sec = 0.5\n")
        .start();
    let work = TempDir::new("cli-get-feedback");
    let state = work.path().join("state");
    let dest = work.path().join("dest");
    let unknown = "0000-0000-0000-0";
    for command in ["get", "info"] {
        // A lookup finding the bucket empty is refused for now; one
        // finding a token fails at once (unknown code): a few tries
        // meet the first kind whatever the timing.
        let mut said = String::new();
        for _ in 0..4 {
            let out = match command {
                "get" => get(&state, &relay.tcp(), unknown, &dest, &[]),
                _ => run(pickup(&state).args(["info", "--relay", &relay.tcp(), unknown])),
            };
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            said = stderr(&out);
            if said.contains("waiting:") {
                break;
            }
        }
        assert!(
            said.contains("waiting: rate limited, retrying in "),
            "{command}: {said}"
        );
    }
}

/// Item 7: sending content the relay holds again says that it is proving
/// ownership (the proof reads the whole file), without `--verbose`.
#[test]
fn resending_held_content_says_it_proves_ownership() {
    let relay = RelayProcess::start();
    let work = TempDir::new("cli-get-feedback");
    let state = work.path().join("state");
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_random(&src.join("video.mp4"), 2 * 1024 * 1024, 12);
    let first = run(pickup(&state)
        .args(["send", "--relay", &relay.tcp()])
        .arg(src.join("video.mp4")));
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(!stderr(&first).contains("proving"), "{}", stderr(&first));
    // The same state directory: the new batch joins the first one's owner.
    let again = run(pickup(&state)
        .args(["send", "--relay", &relay.tcp()])
        .arg(src.join("video.mp4")));
    let err = stderr(&again);
    assert!(again.status.success(), "{err}");
    assert_eq!(
        err.matches("video.mp4: already at the relay, proving ownership")
            .count(),
        1,
        "{err}"
    );
}
