//! What a phase of the `postgres` backend cost the servers behind the
//! relays: PostgreSQL's transactions, row changes and WAL bytes
//! (`pg_stat_database`), its processes' CPU; S3 requests by kind, counted
//! from moto's access log, and moto's CPU.
//!
//! PostgreSQL (15 and later) publishes a backend's statistics when the
//! backend has been idle a while (at most 10 s, `PGSTAT_IDLE_INTERVAL`), so
//! a snapshot is taken [`SETTLE`] after the phase it closes; the `psql`
//! that reads a snapshot is itself one committed transaction, counted in
//! the next one and subtracted here.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek};
use std::time::{Duration, Instant};

use pickup_test_servers::{Postgres, S3};
use serde_json::{json, Value};

/// How long after a phase its snapshot is taken: PostgreSQL's idle
/// statistics flush (10 s) and a margin.
pub const SETTLE: Duration = Duration::from_secs(11);

/// The servers' counters at one moment.
pub struct Snapshot {
    at: Instant,
    /// `xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted`
    /// of the relays' database, and the WAL position in bytes.
    pg: [i64; 6],
    /// CPU seconds of the PostgreSQL server (postmaster, its children,
    /// and the children it reaped).
    pg_cpu: f64,
    /// Where moto's log ended.
    s3_log_at: u64,
    /// CPU seconds of moto.
    s3_cpu: f64,
}

/// The servers behind the relays, and how to read their counters.
pub struct Servers {
    pub pg: Postgres,
    pub s3: S3,
    /// The relays' database: its name and its connection string.
    pub db: String,
    pub url: String,
}

impl Servers {
    /// The counters now.
    pub fn snapshot(&self) -> io::Result<Snapshot> {
        let out = self
            .pg
            .psql(
                &self.db,
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, \
                 pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint \
                 FROM pg_stat_database WHERE datname = current_database()",
            )
            .map_err(io::Error::other)?;
        let values: Vec<i64> = out
            .trim()
            .split('|')
            .filter_map(|v| v.trim().parse().ok())
            .collect();
        let pg: [i64; 6] = values
            .try_into()
            .map_err(|_| io::Error::other(format!("pg_stat_database said {out:?}")))?;
        Ok(Snapshot {
            at: Instant::now(),
            pg,
            pg_cpu: self.pg.server_pid().map_or(f64::NAN, tree_cpu_secs),
            s3_log_at: std::fs::metadata(self.s3.log_path())?.len(),
            s3_cpu: self.s3.pid().map_or(f64::NAN, |pid| {
                crate::cpu_secs(&format!("/proc/{pid}/stat"))
            }),
        })
    }

    /// Connections to the relays' database now (without the asking one).
    pub fn connections(&self) -> io::Result<i64> {
        let out = self
            .pg
            .psql(
                &self.db,
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .map_err(io::Error::other)?;
        out.trim()
            .parse()
            .map_err(|_| io::Error::other(format!("pg_stat_activity said {out:?}")))
    }

    /// moto's resident memory now, in bytes.
    pub fn s3_rss(&self) -> u64 {
        self.s3
            .pid()
            .and_then(|pid| crate::relay::rss_of(pid).ok())
            .unwrap_or(0)
    }

    /// What happened between two snapshots.
    pub fn between(&self, a: &Snapshot, b: &Snapshot) -> io::Result<Value> {
        let d = |i: usize| b.pg[i] - a.pg[i];
        let requests = s3_requests(self.s3.log_path(), a.s3_log_at, b.s3_log_at)?;
        Ok(json!({
            "secs": (b.at - a.at).as_secs_f64(),
            "pg_commits": d(0) - 1,
            "pg_rollbacks": d(1),
            "pg_rows_inserted": d(2),
            "pg_rows_updated": d(3),
            "pg_rows_deleted": d(4),
            "pg_wal_bytes": d(5),
            "pg_cpu_secs": b.pg_cpu - a.pg_cpu,
            "s3_requests": requests.by_kind,
            "s3_requests_total": requests.by_kind.values().sum::<u64>(),
            "s3_failed": requests.failed,
            "s3_segment_bytes_put": requests.segment_bytes,
            "s3_cpu_secs": b.s3_cpu - a.s3_cpu,
        }))
    }
}

/// S3 requests between two offsets of moto's log.
struct Requests {
    by_kind: BTreeMap<&'static str, u64>,
    /// Answers other than 2xx (a create-only PUT finding its key, a HEAD
    /// of a missing object).
    failed: u64,
    /// Bytes of the tail segments PUT (their keys name their range).
    segment_bytes: u64,
}

/// Counts the access-log lines (`… "PUT /bucket/key?query HTTP/1.1" 200 -`)
/// in `[from, to)` of `log` by the S3 operation they are.
fn s3_requests(log: &std::path::Path, from: u64, to: u64) -> io::Result<Requests> {
    let mut f = std::fs::File::open(log)?;
    f.seek(io::SeekFrom::Start(from))?;
    let mut text = String::new();
    f.take(to.saturating_sub(from)).read_to_string(&mut text)?;
    let mut out = Requests {
        by_kind: BTreeMap::new(),
        failed: 0,
        segment_bytes: 0,
    };
    for line in text.lines() {
        // werkzeug colours the request of an answer other than 200 with
        // ANSI escapes (`\x1b[35m\x1b[1mGET … HTTP/1.1\x1b[0m`).
        let line = strip_ansi(line);
        let Some((request, status)) = line
            .split_once('"')
            .and_then(|(_, rest)| rest.split_once('"'))
        else {
            continue;
        };
        let mut words = request.split_whitespace();
        let (Some(method), Some(target)) = (words.next(), words.next()) else {
            continue;
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let kind = match method {
            "PUT" if query.contains("partNumber=") => "upload_part",
            "PUT" if path.contains("/tail/") => "put_segment",
            "PUT" if path.contains("/blobs/") => "put_blob",
            "PUT" => "put_other",
            "POST" if query.contains("uploadId=") => "complete_multipart",
            "POST" if query.contains("uploads") => "create_multipart",
            // object_store deletes by `DeleteObjects`, one key each.
            "POST" if query.contains("delete") => "delete_objects",
            "POST" => "post_other",
            "DELETE" if query.contains("uploadId=") => "abort_multipart",
            "DELETE" => "delete",
            "GET" if query.contains("list-type") || query.contains("prefix=") => "list",
            "GET" => "get",
            "HEAD" => "head",
            _ => "other",
        };
        *out.by_kind.entry(kind).or_default() += 1;
        let ok = status
            .split_whitespace()
            .next()
            .is_some_and(|s| s.starts_with('2'));
        if !ok {
            out.failed += 1;
        }
        if kind == "put_segment" && ok {
            // `…/tail/{partial}/{fence}/{start}-{end}`
            let range = path.rsplit('/').next().and_then(|r| r.split_once('-'));
            if let Some((start, end)) = range {
                if let (Ok(s), Ok(e)) = (start.parse::<u64>(), end.parse::<u64>()) {
                    out.segment_bytes += e.saturating_sub(s);
                }
            }
        }
    }
    Ok(out)
}

/// `line` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Fields of `/proc/PID/stat` after the `(comm)` field, which may contain
/// spaces: index 1 is the parent's pid, 11–14 utime, stime, cutime, cstime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU seconds of a process, its live children, and every child either
/// reaped: what a PostgreSQL server spent since it started, backends that
/// exited included.
fn tree_cpu_secs(root: u32) -> f64 {
    let ticks = |f: &[String]| -> f64 {
        (11..=14)
            .filter_map(|i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
            .sum::<f64>()
            // USER_HZ is 100 on every Linux the benchmark runs on.
            / 100.0
    };
    let Some(own) = stat_fields(root) else {
        return f64::NAN;
    };
    let mut total = ticks(&own);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return total;
    };
    let parent = root.to_string();
    for entry in dir.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(f) = stat_fields(pid).filter(|f| f.get(1) == Some(&parent)) {
            total += ticks(&f);
        }
    }
    total
}
