//! Rows 1 and 3 on the `postgres` backend (issue 16): the big upload and
//! download through one relay instance, then the concurrent two-file
//! uploads spread over two instances sharing one database and one bucket,
//! with what each phase cost PostgreSQL and S3 ([`costs`]).
//!
//! ```text
//!   bench clients ──► relay A ──┐          PostgreSQL (private, unix socket)
//!              └────► relay B ──┴──► both ─► moto_server (private S3, loopback)
//! ```
//!
//! The servers are `pickup-test-servers`' own: PostgreSQL from Debian's
//! binaries with `fsync=off` (the relay's `synchronous_commit` left on),
//! and moto, an S3 server in Python that keeps objects in memory or
//! temporary files. Neither is a production server; their CPU is reported
//! beside the relays' so it can be told apart.

mod costs;

use std::io;
use std::path::Path;
use std::time::Instant;

use pickup_test_servers::{Postgres, S3};
use serde_json::{json, Value};

use crate::relay::Relay;
use crate::{random_bytes, sha1_fast, tcp, Measured, MIB};

use costs::{Servers, SETTLE};

/// The largest download by default: moto answers each ranged GET (the
/// relay reads 1 MiB per GET) by reading the whole object, so a download
/// of N MiB makes moto read N² MiB: 64 MiB took 8.8 s here, 1 GiB would
/// take about half an hour, all of it moto's.
pub const DEFAULT_DOWNLOAD_MAX: usize = 128 << 20;

/// What the `postgres` rows run.
pub struct Settings {
    /// Size of the file uploaded through one instance.
    pub upload_bytes: usize,
    /// Size of the file downloaded: the uploaded one if equal, else a
    /// second file of this size uploaded first (moto reads a whole object
    /// for every ranged GET, so a download costs it quadratic time).
    pub download_bytes: usize,
    /// Whether to run the upload and download (part `tcp`).
    pub transfer: bool,
    /// Concurrent two-file uploads over the two instances (part
    /// `concurrency`), if that part runs.
    pub uploads: Option<usize>,
    /// The run's single-core SHA-1 rate, if another part measured it.
    pub sha1_mib_per_sec: Option<f64>,
}

/// Starts the servers, then runs both rows; their figures and costs.
pub fn run(binary: &Path, settings: &Settings) -> io::Result<Value> {
    let servers = start_servers()?;
    let bucket = servers.s3.bucket().map_err(io::Error::other)?;
    let store = format!(
        "[store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n\
         [store.s3]\nendpoint = \"{endpoint}\"\nregion = \"{region}\"\nbucket = \"{bucket}\"\n\
         prefix = \"bench\"\naccess_key_id = \"{id}\"\nsecret_access_key = \"{secret}\"\n",
        url = servers.url,
        endpoint = bucket.endpoint,
        region = bucket.region,
        bucket = bucket.name,
        id = bucket.access_key_id,
        secret = bucket.secret_access_key,
    );

    let a = Relay::start_with_tables(binary, &store)?;
    let rss_started = a.rss().unwrap_or(0);
    // What the instance does on its own (sweeps, lookup budget), to tell
    // it from the work of the phases.
    std::thread::sleep(SETTLE);
    let idle_start = servers.snapshot()?;
    std::thread::sleep(SETTLE);
    let idle_end = servers.snapshot()?;
    let idle = servers.between(&idle_start, &idle_end)?;

    let version = servers
        .pg
        .psql(&servers.db, "SHOW server_version")
        .map_err(io::Error::other)?;
    let mut out = json!({
        "servers": "pickup-test-servers: PostgreSQL (fsync=off, synchronous_commit on), moto_server",
        "postgres_version": version.trim(),
        "idle": idle,
        "relay_rss_started_bytes": rss_started,
    });
    if settings.transfer {
        out["tcp"] = transfer(&servers, &a, settings)?;
        out["sha1_mib_per_sec"] = out["tcp"]["sha1_mib_per_sec"].clone();
    }
    if let Some(uploads) = settings.uploads {
        eprintln!("    postgres: {uploads} concurrent two-file uploads over two instances…");
        let b = Relay::start_with_tables(binary, &store)?;
        std::thread::sleep(SETTLE);
        let before = servers.snapshot()?;
        let connections_before = servers.connections()?;
        let mut concurrency = crate::concurrency::run(&[&a, &b], uploads)?;
        let connections_after = servers.connections()?;
        std::thread::sleep(SETTLE);
        let after = servers.snapshot()?;
        concurrency["costs"] = servers.between(&before, &after)?;
        concurrency["pg_connections_before"] = json!(connections_before);
        concurrency["pg_connections_after"] = json!(connections_after);
        out["concurrency"] = concurrency;
    }
    Ok(out)
}

/// The upload through instance `a`, then the download, each with its costs.
fn transfer(servers: &Servers, a: &Relay, settings: &Settings) -> io::Result<Value> {
    let data = random_bytes(settings.upload_bytes, 3);
    let sha1 = sha1_fast(&data);
    let sha1_rate = match settings.sha1_mib_per_sec {
        Some(r) => r,
        None => tcp::sha1_rates(&data).0,
    };
    eprintln!(
        "    postgres: {} MiB upload through one instance…",
        settings.upload_bytes >> 20
    );
    let before = servers.snapshot()?;
    let (up, up_m) = tcp::upload(a, std::slice::from_ref(&data), sha1)?;
    std::thread::sleep(SETTLE);
    let uploaded = servers.snapshot()?;
    let upload_costs = servers.between(&before, &uploaded)?;
    let rss_after_upload = a.rss().unwrap_or(0);
    let s3_rss_after_upload = servers.s3_rss();

    let (code, down_len, before) = if settings.download_bytes == settings.upload_bytes {
        (up.code, data.len(), uploaded)
    } else {
        drop(data);
        let small = random_bytes(settings.download_bytes, 4);
        let (small_up, _) = tcp::upload(a, std::slice::from_ref(&small), sha1_fast(&small))?;
        std::thread::sleep(SETTLE);
        (small_up.code, small.len(), servers.snapshot()?)
    };
    eprintln!(
        "    postgres: {} MiB download through the same instance…",
        down_len >> 20
    );
    let down_m = tcp::download(a, code, down_len)?;
    std::thread::sleep(SETTLE);
    let downloaded = servers.snapshot()?;
    let download_costs = servers.between(&before, &downloaded)?;

    let rate = |bytes: usize, m: &Measured| bytes as f64 / MIB / m.secs;
    Ok(json!({
        "sha1_mib_per_sec": sha1_rate,
        "bytes": settings.upload_bytes,
        "upload_mib_per_sec": rate(settings.upload_bytes, &up_m),
        "upload_vs_sha1": rate(settings.upload_bytes, &up_m) / sha1_rate,
        "upload": up_m.to_json(),
        "upload_costs": upload_costs,
        "upload_client_blocked_writing_secs": up.blocked_writing.as_secs_f64(),
        "upload_client_waiting_for_relay_secs": up.waiting.as_secs_f64(),
        "upload_ack_latency_p50_ms": crate::percentile_ms(&up.ack_latencies, 0.5),
        "upload_ack_latency_p99_ms": crate::percentile_ms(&up.ack_latencies, 0.99),
        "relay_rss_after_upload_bytes": rss_after_upload,
        "s3_rss_after_upload_bytes": s3_rss_after_upload,
        "download_bytes": down_len,
        "download_mib_per_sec": rate(down_len, &down_m),
        "download_vs_sha1": rate(down_len, &down_m) / sha1_rate,
        "download": down_m.to_json(),
        "download_costs": download_costs,
    }))
}

/// A private PostgreSQL server with an empty database, and a private S3
/// server; the relays' database is made here, the bucket by the caller.
fn start_servers() -> io::Result<Servers> {
    let started = Instant::now();
    let pg = Postgres::start().map_err(io::Error::other)?;
    let url = pg.database().map_err(io::Error::other)?;
    let db = url
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("dbname="))
        .ok_or_else(|| io::Error::other(format!("no dbname in {url:?}")))?
        .to_owned();
    let s3 = S3::start().map_err(io::Error::other)?;
    eprintln!(
        "    postgres: PostgreSQL and moto started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Servers { pg, s3, db, url })
}
