//! `pickup-bench`: where Pickup stands against the physical limits of the
//! machine and against ZMODEM, every figure measured side by side in one run.
//!
//! ```text
//! cargo run --release -p pickup-bench -- [--quick] [--json PATH] [--only PARTS] [--backend B]
//! ```
//!
//! 1. TCP loopback: upload and download of fresh random content through the
//!    real relay (release build, on-disk store), beside a raw TCP copy and the
//!    single-core SHA-1 rate, in rounds (`--tcp-rounds N`, default 3; each
//!    transfer set against SHA-1 passes made right before and after it, the
//!    median round the figure: see the `rounds` module); the same file
//!    downloaded over HTTP (`GET /c/{CODE}/0`, hashed as it arrives like the
//!    wire download).
//! 2. Serial wire efficiency: payload bytes / bytes on the wire over a
//!    pseudo-terminal pair at the relay's default serial frame size, and the
//!    same file through lrzsz (`sz`/`rz`) when installed.
//! 3. Concurrency: many simultaneous two-file uploads of 64 KiB each, in
//!    rounds against one relay (`--rounds N`, default 5; the median round
//!    is the figure, every round is printed).
//! 4. Memory: relay RSS with many idle TCP sessions.
//! 5. Instant upload: announce to completion for content the relay holds
//!    (in each round of part 1).
//! 6. tus (`--only tus`, issue 15): the same file uploaded with
//!    tus-js-client to Pickup's `/tus/` and to `@tus/server` +
//!    `@tus/file-store` (see the `tus` module; needs `npm ci` in `bench/tus`,
//!    else the rows say `skipped: …`).
//! 7. Under attack (`--only attack`): an honest 32 MiB send + get alone and
//!    while one attacking address runs the attacks of issue 20, items 1–5
//!    (see the `attack` module). `--attack-config FILE` gives that relay its
//!    config (default: none, the relay's built-in limits).
//!
//! `--backend sqlite|postgres|both` (default `sqlite`) chooses the store
//! under parts 1 and 3: with `postgres` the bench starts a private
//! PostgreSQL and S3 server (`pickup-test-servers`: Debian's PostgreSQL,
//! moto), uploads and downloads through one relay instance
//! (`--pg-mib N`, default the TCP size; `--pg-download-mib N`, default
//! the same but at most 128 MiB, as moto reads a whole object for each
//! 1 MiB ranged GET the relay makes) and spreads
//! the concurrent uploads over two instances sharing the database and the
//! bucket, counting what each phase cost PostgreSQL and S3 (see the
//! `cluster` module); `both` runs the SQLite rows too, in the same run.
//! The other parts always run on SQLite.
//!
//! `PICKUP_BENCH_RELAY=/path/to/pickup-relay` runs another relay build
//! instead of this workspace's.
//!
//! It prints a table and writes a JSON report (default
//! `target/pickup-bench.json`). Nothing here asserts a target: the figures
//! are for people to read.

// The report is one `json!` literal per part, deeper than serde_json's
// macro expands by default.
#![recursion_limit = "256"]

mod attack;
mod client;
mod cluster;
mod concurrency;
mod host;
mod relay;
mod rounds;
mod serial;
mod table;
mod tcp;
mod tus;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pickup_proto::frame::Decoder;
use pickup_proto::message::{Hello, Message, Role};
use pickup_proto::{download, upload, Sha1Digest};
use rand::{RngCore, SeedableRng};
use serde_json::{json, Value};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

struct Sizes {
    tcp_bytes: usize,
    /// The `postgres` backend's upload and download (default: `tcp_bytes`).
    pg_upload_bytes: Option<usize>,
    pg_download_bytes: Option<usize>,
    serial_bytes: usize,
    concurrent: usize,
    /// Rounds of the concurrent uploads (the median round is reported).
    rounds: usize,
    /// Rounds of the TCP transfers (the median round is reported).
    tcp_rounds: usize,
    idle_sessions: usize,
    tus_bytes: usize,
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

fn sha1_fast(data: &[u8]) -> Sha1Digest {
    use sha1::Digest;
    Sha1Digest(sha1::Sha1::digest(data).into())
}

fn rate(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / MIB / elapsed.as_secs_f64()
}

fn tcp_link(addr: std::net::SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_millis(20)))?;
    Ok(s)
}

/// As the CLI uploads over TCP: 64 KiB frames, the length prefix.
fn tcp_upload_config() -> upload::Config {
    upload::Config {
        max_frame: pickup_proto::frame::MAX_FRAME_LEN as u32,
        length_prefix: true,
        ..upload::Config::default()
    }
}

/// As the CLI downloads over TCP: 64 KiB frames, the length prefix, an
/// 8 MiB window, and the sink verifying on another core.
fn tcp_download_config() -> download::Config {
    download::Config {
        max_frame: pickup_proto::frame::MAX_FRAME_LEN as u32,
        length_prefix: true,
        window: 8 * 1024 * 1024,
        hashing: download::Hashing::BySink,
        ..download::Config::default()
    }
}

fn memory(binary: &std::path::Path, sessions: usize) -> io::Result<Value> {
    // Opening 10,000 sessions takes longer than the relay lets a session
    // idle before it starts a transfer (30 s by default).
    let relay =
        relay::Relay::start_with(binary, None, "idle_timeout_before_transfer_secs = 600\n")?;
    std::thread::sleep(Duration::from_millis(300));
    let before = relay.rss()?;
    let hello = Message::Hello(Hello {
        version: pickup_proto::PROTOCOL_VERSION,
        role: Role::Terminal,
        max_frame: pickup_proto::frame::MAX_FRAME_LEN as u32,
        window: 0,
        caps: 0,
    });
    let mut frame = [0u8; 128];
    let n = hello
        .encode(64, &mut frame)
        .map_err(|_| io::Error::other("hello does not fit"))?;
    let mut conns = Vec::with_capacity(sessions);
    let mut decoder = Decoder::new(vec![0u8; 1024]);
    let mut buf = [0u8; 1024];
    for _ in 0..sessions {
        let mut s = TcpStream::connect(relay.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&frame[..n])?;
        // Wait for the welcome, so the session really exists at the relay.
        let mut welcomed = false;
        while !welcomed {
            let got = s.read(&mut buf)?;
            if got == 0 {
                return Err(io::Error::other("relay closed an idle session"));
            }
            let mut input = &buf[..got];
            while let Some(r) = decoder.feed(&mut input) {
                welcomed |= r.is_ok_and(|f| f.kind == pickup_proto::message::Kind::Welcome as u8);
            }
        }
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = relay.rss()?;
    let per = after.saturating_sub(before) as f64 / sessions as f64;
    drop(conns);
    Ok(json!({
        "idle_sessions": sessions,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "bytes_per_idle_session": per.round(),
    }))
}

fn serial(binary: &std::path::Path, len: usize) -> io::Result<Value> {
    let data = random_bytes(len, 7);
    let sha1 = sha1_fast(&data);
    let (master, path) = serial::pty()?;
    let relay = relay::Relay::start(binary, Some(&path))?;
    let mut link = serial::Counted {
        inner: master,
        written: 0,
        read: 0,
    };
    // Let the relay open its end.
    std::thread::sleep(Duration::from_millis(500));
    let config = upload::Config {
        max_frame: 4096,
        retransmit_timeout: pickup_proto::Duration::from_secs(5),
        ..upload::Config::default()
    };
    let t = Instant::now();
    let up = client::upload(
        &mut link,
        config,
        &["serial.bin".into()],
        std::slice::from_ref(&data),
        &[sha1],
    )?;
    let elapsed = t.elapsed();
    let wire = link.written + link.read;
    drop(relay);
    let mut out = json!({
        "payload_bytes": len,
        "pickup_wire_bytes": wire,
        "pickup_efficiency": len as f64 / wire as f64,
        "pickup_mib_per_sec": rate(len, elapsed),
        "pickup_client_blocked_writing_secs": up.blocked_writing.as_secs_f64(),
        "pickup_client_waiting_for_relay_secs": up.waiting.as_secs_f64(),
        "pickup_ack_latency_p50_ms": percentile_ms(&up.ack_latencies, 0.5),
        "code": up.code.to_string(),
    });
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("zmodem.bin");
    std::fs::write(&file, &data)?;
    let recv = dir.path().join("recv");
    std::fs::create_dir(&recv)?;
    match serial::zmodem(&file, &recv)? {
        Some(z) => {
            let received = std::fs::read(recv.join("zmodem.bin"))?;
            out["zmodem_ok"] = json!(received == data);
            out["zmodem_wire_bytes"] = json!(z.wire_bytes);
            out["zmodem_efficiency"] = json!(len as f64 / z.wire_bytes as f64);
            out["zmodem_mib_per_sec"] = json!(rate(len, z.elapsed));
        }
        None => out["zmodem"] = json!("lrzsz not installed"),
    }
    Ok(out)
}

/// Command-line options.
struct Options {
    quick: bool,
    json_path: PathBuf,
    sizes: Sizes,
    /// Which parts to run (all by default).
    only: Vec<String>,
    /// The under-attack row's settings.
    attack: attack::Settings,
    /// Which stores the `tcp` and `concurrency` parts run on.
    backend: Backend,
}

/// `--backend`: the store under the `tcp` and `concurrency` parts (the
/// other parts always run on SQLite).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    Both,
}

impl Backend {
    fn sqlite(self) -> bool {
        self != Backend::Postgres
    }
    fn postgres(self) -> bool {
        self != Backend::Sqlite
    }
}

fn usage() -> io::Error {
    io::Error::other(
        "usage: pickup-bench [--quick] [--json PATH] [--only tcp,serial,concurrency,memory,tus,attack] \
         [--backend sqlite|postgres|both] [--tcp-mib N] [--pg-mib N] [--pg-download-mib N] \
         [--serial-mib N] [--concurrent N] [--rounds N] [--tcp-rounds N] [--idle N] [--tus-mib N] [--attack-config FILE]",
    )
}

fn options() -> io::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut json_path = None;
    let mut only = Vec::new();
    let mut overrides: Vec<(String, usize)> = Vec::new();
    let mut attack = attack::Settings::default();
    let mut backend = Backend::Sqlite;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--backend" => {
                backend = match args.next().as_deref() {
                    Some("sqlite") => Backend::Sqlite,
                    Some("postgres") => Backend::Postgres,
                    Some("both") => Backend::Both,
                    _ => return Err(usage()),
                }
            }
            "--attack-config" => {
                attack.relay_config = std::fs::read_to_string(args.next().ok_or_else(usage)?)?
            }
            "--json" => json_path = Some(PathBuf::from(args.next().ok_or_else(usage)?)),
            "--only" => {
                only = args
                    .next()
                    .ok_or_else(usage)?
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            }
            "--tcp-mib" | "--pg-mib" | "--pg-download-mib" | "--serial-mib" | "--concurrent"
            | "--rounds" | "--tcp-rounds" | "--idle" | "--tus-mib" => {
                let n = args
                    .next()
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(usage)?;
                overrides.push((a, n));
            }
            _ => return Err(usage()),
        }
    }
    let mut sizes = if quick {
        Sizes {
            tcp_bytes: 128 << 20,
            pg_upload_bytes: None,
            pg_download_bytes: None,
            serial_bytes: 2 << 20,
            concurrent: 100,
            rounds: 2,
            tcp_rounds: 1,
            idle_sessions: 1_000,
            tus_bytes: 128 << 20,
        }
    } else {
        Sizes {
            tcp_bytes: 1 << 30,
            pg_upload_bytes: None,
            pg_download_bytes: None,
            serial_bytes: 16 << 20,
            concurrent: 1_000,
            rounds: 5,
            tcp_rounds: 3,
            idle_sessions: 10_000,
            tus_bytes: 1 << 30,
        }
    };
    for (flag, n) in overrides {
        match flag.as_str() {
            "--tcp-mib" => sizes.tcp_bytes = n << 20,
            "--pg-mib" => sizes.pg_upload_bytes = Some(n << 20),
            "--pg-download-mib" => sizes.pg_download_bytes = Some(n << 20),
            "--serial-mib" => sizes.serial_bytes = n << 20,
            "--concurrent" => sizes.concurrent = n,
            "--rounds" => sizes.rounds = n.max(1),
            "--tcp-rounds" => sizes.tcp_rounds = n.max(1),
            "--tus-mib" => sizes.tus_bytes = n << 20,
            _ => sizes.idle_sessions = n,
        }
    }
    Ok(Options {
        quick,
        json_path: json_path.unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pickup-bench.json")
        }),
        sizes,
        only,
        attack,
        backend,
    })
}

/// CPU time (user + system) of one thread or process, from `/proc`.
fn cpu_secs(stat_path: &str) -> f64 {
    // Fields 14 and 15 (utime, stime) in clock ticks, after the `(comm)`
    // field, which may contain spaces.
    let Ok(stat) = std::fs::read_to_string(stat_path) else {
        return f64::NAN;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // USER_HZ is 100 on every Linux the benchmark runs on.
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// The `p` percentile of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1))
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

fn thread_cpu_secs() -> f64 {
    cpu_secs("/proc/thread-self/stat")
}

fn process_cpu_secs() -> f64 {
    cpu_secs("/proc/self/stat")
}

/// One transfer through the relay: wall time and CPU seconds of both ends.
struct Measured {
    secs: f64,
    client_cpu: f64,
    relay_cpu: f64,
}

impl Measured {
    /// The report's object for it.
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "secs": self.secs,
            "client_cpu_secs": self.client_cpu,
            "relay_cpu_secs": self.relay_cpu,
        })
    }
}

fn measure<T>(
    relay: &relay::Relay,
    f: impl FnOnce() -> io::Result<T>,
) -> io::Result<(T, Measured)> {
    let relay_cpu = relay.cpu_secs();
    // The whole process: the client's verifying thread counts too (no
    // other thread of the benchmark runs meanwhile).
    let client_cpu = process_cpu_secs();
    let t = Instant::now();
    let out = f()?;
    let secs = t.elapsed().as_secs_f64();
    Ok((
        out,
        Measured {
            secs,
            client_cpu: process_cpu_secs() - client_cpu,
            relay_cpu: relay.cpu_secs() - relay_cpu,
        },
    ))
}

fn main() -> io::Result<()> {
    let opts = options()?;
    let sizes = &opts.sizes;
    let run = |part: &str| opts.only.is_empty() || opts.only.iter().any(|p| p == part);
    eprintln!("building pickup-relay (release)…");
    let binary = relay::build()?;
    let mut report = json!({ "quick": opts.quick });
    // The share of CPU time the hypervisor gave to others during each part.
    let mut steal = json!({});

    if run("tcp") && opts.backend.sqlite() {
        let stolen = host::Steal::start();
        eprintln!(
            "1/6 TCP loopback with {} MiB, {} rounds…",
            sizes.tcp_bytes >> 20,
            sizes.tcp_rounds
        );
        let tcp = tcp::run(&binary, sizes.tcp_bytes, sizes.tcp_rounds)?;
        report["tcp"] = tcp["tcp"].clone();
        report["instant_upload"] = tcp["instant_upload"].clone();
        steal["tcp"] = json!(stolen.share());
    }
    if run("serial") {
        let stolen = host::Steal::start();
        eprintln!(
            "2/6 serial wire efficiency with {} MiB…",
            sizes.serial_bytes >> 20
        );
        report["serial"] = serial(&binary, sizes.serial_bytes)?;
        steal["serial"] = json!(stolen.share());
    }
    if run("concurrency") && opts.backend.sqlite() {
        let stolen = host::Steal::start();
        eprintln!(
            "3/6 {} concurrent two-file uploads, {} rounds…",
            sizes.concurrent, sizes.rounds
        );
        let relay = relay::Relay::start(&binary, None)?;
        report["concurrency"] = concurrency::rounds(&[&relay], sizes.concurrent, sizes.rounds)?;
        steal["concurrency"] = json!(stolen.share());
    }
    if (run("tcp") || run("concurrency")) && opts.backend.postgres() {
        let stolen = host::Steal::start();
        eprintln!("3b/6 the same on the postgres backend (PostgreSQL + S3)…");
        let upload_bytes = sizes.pg_upload_bytes.unwrap_or(sizes.tcp_bytes);
        let settings = cluster::Settings {
            upload_bytes,
            download_bytes: sizes
                .pg_download_bytes
                .unwrap_or(upload_bytes.min(cluster::DEFAULT_DOWNLOAD_MAX)),
            transfer: run("tcp"),
            uploads: run("concurrency").then_some(sizes.concurrent),
            sha1_mib_per_sec: report["tcp"]["sha1_mib_per_sec"].as_f64(),
        };
        report["postgres"] = cluster::run(&binary, &settings)?;
        steal["postgres"] = json!(stolen.share());
    }
    if run("memory") {
        let stolen = host::Steal::start();
        eprintln!(
            "4/6 relay memory with {} idle sessions…",
            sizes.idle_sessions
        );
        report["memory"] = memory(&binary, sizes.idle_sessions)?;
        steal["memory"] = json!(stolen.share());
    }
    if run("tus") {
        let stolen = host::Steal::start();
        eprintln!(
            "5/6 {} MiB with tus-js-client to Pickup /tus/ and to @tus/server…",
            sizes.tus_bytes >> 20
        );
        report["tus"] = tus::run(&binary, sizes.tus_bytes)?;
        steal["tus"] = json!(stolen.share());
    }
    if run("attack") {
        let stolen = host::Steal::start();
        eprintln!(
            "6/6 honest {} MiB send+get, alone and under attack…",
            opts.attack.honest_bytes >> 20
        );
        report["attack"] = attack::run(&binary, &opts.attack)?;
        steal["attack"] = json!(stolen.share());
    }
    report["host_steal"] = steal;
    table::print_table(&report);
    if let Some(parent) = opts.json_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &opts.json_path,
        serde_json::to_string_pretty(&report).map_err(io::Error::other)?,
    )?;
    println!("\nJSON report: {}", opts.json_path.display());
    Ok(())
}
