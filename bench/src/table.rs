//! The table the bench prints: one line per figure, a target where the
//! project has one.

use serde_json::Value;

use crate::{GIB, MIB};

/// ", median of N rounds" when the TCP part ran more than one round.
fn rounds_note(t: &Value) -> String {
    match t["rounds"].as_array().map(Vec::len) {
        Some(n) if n > 1 => format!(", median of {n} rounds"),
        _ => String::new(),
    }
}

/// A median ratio and its spread over the rounds (`[median, low, high]`):
/// "0.78x what, rounds 0.71–0.80x".
fn beside(spread: &Value, what: &str) -> String {
    let v: Vec<f64> = spread
        .as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
        .unwrap_or_default();
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(" {what}")
    };
    match v.as_slice() {
        [m, lo, hi] if lo < hi => format!("{m:.2}x{what}, rounds {lo:.2}–{hi:.2}x"),
        [m, ..] => format!("{m:.2}x{what}"),
        _ => "n/a".into(),
    }
}

/// Prints every part of the report that ran.
pub fn print_table(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!("| measure | figure | target |");
    println!("|---|---:|---|");
    if let Some(parts) = r["host_steal"].as_object().filter(|p| !p.is_empty()) {
        let shares: Vec<String> = parts
            .iter()
            .map(|(part, share)| match share.as_f64() {
                Some(s) => format!("{part} {:.0}%", s * 100.0),
                None => format!("{part} unknown"),
            })
            .collect();
        println!(
            "| host CPU time stolen by the hypervisor, per part (load beside the run) | {} | |",
            shares.join(", ")
        );
    }
    let t = &r["tcp"];
    if !t.is_null() {
        println!(
            "| SHA-1, one core (`sha1` crate), best of 3 | {:.0} MiB/s | |",
            f(&t["sha1_mib_per_sec"])
        );
        println!(
            "| SHA-1, one core (`sha1_smol`, proto-core on MCUs) | {:.0} MiB/s | |",
            f(&t["sha1_smol_mib_per_sec"])
        );
        println!(
            "| raw TCP copy, loopback | {:.0} MiB/s | |",
            f(&t["raw_tcp_mib_per_sec"])
        );
        println!(
            "| disk: 64 KiB writes, fdatasync every 2 MiB / 8 MiB / once | {:.0} / {:.0} / {:.0} MiB/s | |",
            f(&t["disk_fdatasync_every_2mib_mib_per_sec"]),
            f(&t["disk_fdatasync_every_8mib_mib_per_sec"]),
            f(&t["disk_one_fdatasync_mib_per_sec"]),
        );
        if !t["disk_direct_every_8mib_cpu_secs"].is_null() {
            println!(
                "| disk, per GiB: writes through the page cache, fdatasync every 8 MiB / 2 MiB `O_DIRECT` writes, the same / reading back each way | {:.2} / {:.2} / {:.2} / {:.2} s of CPU ({:.0} MiB/s direct) | |",
                f(&t["disk_fdatasync_every_8mib_cpu_secs"]) * GIB / f(&t["bytes"]),
                f(&t["disk_direct_every_8mib_cpu_secs"]) * GIB / f(&t["bytes"]),
                f(&t["read_back_cpu_secs"]) * GIB / f(&t["bytes"]),
                f(&t["direct_read_back_cpu_secs"]) * GIB / f(&t["bytes"]),
                f(&t["disk_direct_every_8mib_mib_per_sec"]),
            );
        }
        println!(
            "| upload through the relay, {} MiB{} | {:.0} MiB/s ({}; {:.2}x the best SHA-1 pass, {:.2}x raw TCP) | ≥ 0.8x SHA-1 |",
            t["bytes"].as_u64().unwrap_or(0) >> 20,
            rounds_note(t),
            f(&t["upload_mib_per_sec"]),
            beside(&t["upload_vs_sha1_spread"], "the SHA-1 passes beside it"),
            f(&t["upload_vs_best_sha1"]),
            f(&t["upload_vs_raw_tcp"])
        );
        println!(
            "| … CPU per GiB uploaded: client, relay | {:.2} s, {:.2} s | |",
            f(&t["upload"]["client_cpu_secs"]) * GIB / f(&t["bytes"]),
            f(&t["upload"]["relay_cpu_secs"]) * GIB / f(&t["bytes"]),
        );
        println!(
            "| … relay CPU per GiB uploaded against its floor: SHA-1 {:.2} s (the passes beside it) + durable write (fdatasync every 8 MiB, the cheaper way) {:.2} s + socket reads {:.2} s | {} | ≤ 1.2x |",
            f(&t["relay_upload_floor_sha1_secs"]) * GIB / f(&t["bytes"]),
            f(&t["durable_write_floor_cpu_secs"]) * GIB / f(&t["bytes"]),
            f(&t["raw_tcp_read_cpu_secs"]) * GIB / f(&t["bytes"]),
            beside(&t["relay_upload_cpu_vs_floor_spread"], ""),
        );
        println!(
            "| … with the terminal's SHA-1 before announcing ({:.2} s) | {:.0} MiB/s | |",
            f(&t["announce_hash_secs"]),
            f(&t["upload_with_announce_hash_mib_per_sec"]),
        );
        println!(
            "| … floor per GiB: TCP copy {:.2} s + frames {:.2} s + relay SHA-1 {:.2} s + durable write {:.2} s of CPU, on {} cores | at most {:.2}x SHA-1 | |",
            f(&t["raw_tcp_cpu_secs"]) * GIB / f(&t["bytes"]),
            (f(&t["frame_encode_secs"]) + f(&t["frame_decode_secs"])) * GIB / f(&t["bytes"]),
            GIB / MIB / f(&t["sha1_mib_per_sec"]),
            f(&t["durable_write_floor_cpu_secs"]) * GIB / f(&t["bytes"]),
            t["cores"],
            f(&t["upload_ceiling_vs_sha1"]),
        );
        println!(
            "| … upload client blocked writing, waiting for acks | {:.2} s, {:.2} s of {:.2} s; ack latency p50 {:.1} ms, p99 {:.1} ms | |",
            f(&t["upload_client_blocked_writing_secs"]),
            f(&t["upload_client_waiting_for_relay_secs"]),
            f(&t["upload"]["secs"]),
            f(&t["upload_ack_latency_p50_ms"]),
            f(&t["upload_ack_latency_p99_ms"]),
        );
        println!(
            "| download through the relay{} | {:.0} MiB/s ({}; {:.2}x the best SHA-1 pass, {:.2}x raw TCP) | ≥ 0.9x SHA-1 |",
            rounds_note(t),
            f(&t["download_mib_per_sec"]),
            beside(&t["download_vs_sha1_spread"], "the SHA-1 passes beside it"),
            f(&t["download_vs_best_sha1"]),
            f(&t["download_vs_raw_tcp"])
        );
        println!(
            "| … CPU per GiB downloaded: client, relay | {:.2} s, {:.2} s | |",
            f(&t["download"]["client_cpu_secs"]) * GIB / f(&t["bytes"]),
            f(&t["download"]["relay_cpu_secs"]) * GIB / f(&t["bytes"]),
        );
        println!(
            "| … relay CPU per GiB downloaded against its floor: file read (the cheaper way) {:.2} s + socket writes {:.2} s | {} | ≤ 1.2x |",
            f(&t["read_floor_cpu_secs"]) * GIB / f(&t["bytes"]),
            f(&t["raw_tcp_write_cpu_secs"]) * GIB / f(&t["bytes"]),
            beside(&t["relay_download_cpu_vs_floor_spread"], ""),
        );
        println!(
            "| HTTP download, the last round's file (`GET /c/{{CODE}}/0`, body hashed) | {:.0} MiB/s ({:.2}x the best SHA-1 pass, {:.2}x that round's wire download) | |",
            f(&t["http_download_mib_per_sec"]),
            f(&t["http_download_vs_sha1"]),
            f(&t["http_download_vs_wire_download"]),
        );
        println!(
            "| … CPU per GiB over HTTP: client, relay | {:.2} s, {:.2} s | |",
            f(&t["http_download"]["client_cpu_secs"]) * GIB / f(&t["bytes"]),
            f(&t["http_download"]["relay_cpu_secs"]) * GIB / f(&t["bytes"]),
        );
        println!(
            "| … floor per GiB: TCP copy {:.2} s + frames {:.2} s + terminal SHA-1 {:.2} s + relay reading {:.2} s of CPU, on {} cores | at most {:.2}x SHA-1 | |",
            f(&t["raw_tcp_cpu_secs"]) * GIB / f(&t["bytes"]),
            (f(&t["frame_encode_secs"]) + f(&t["frame_decode_secs"])) * GIB / f(&t["bytes"]),
            GIB / MIB / f(&t["sha1_mib_per_sec"]),
            f(&t["read_floor_cpu_secs"]) * GIB / f(&t["bytes"]),
            t["cores"],
            f(&t["download_ceiling_vs_sha1"]),
        );
    }
    let s = &r["serial"];
    if !s.is_null() {
        println!(
            "| serial (pty), Pickup, {} MiB | {:.2}% efficiency, {:.1} MiB/s | ≥ 99% |",
            s["payload_bytes"].as_u64().unwrap_or(0) >> 20,
            100.0 * f(&s["pickup_efficiency"]),
            f(&s["pickup_mib_per_sec"])
        );
        if s.get("zmodem_efficiency").is_some() {
            println!(
                "| serial (pty), ZMODEM (lrzsz), same file | {:.2}% efficiency, {:.1} MiB/s | Pickup faster |",
                100.0 * f(&s["zmodem_efficiency"]),
                f(&s["zmodem_mib_per_sec"])
            );
            // On a real line the wire is the bottleneck: 10 bits per byte
            // (8N1) at the baud rate, whatever the CPU could do.
            let at_baud = |wire: &Value| f(wire) * 10.0 / 115_200.0;
            println!(
                "| … the same bytes on a 115200-baud line (8N1): Pickup, ZMODEM | {:.0} s, {:.0} s | Pickup faster |",
                at_baud(&s["pickup_wire_bytes"]),
                at_baud(&s["zmodem_wire_bytes"]),
            );
        }
    }
    let c = &r["concurrency"];
    if !c.is_null() {
        println!(
            "| {} concurrent two-file uploads of 64 KiB | {:.0}/s, p50 {:.0} ms, p99 {:.0} ms, {} failures | ≥ 978/s (2x the 489/s of 2026-11-21), p99 ≤ 1 s, 0 failures |",
            c["uploads"],
            f(&c["completions_per_sec"]),
            f(&c["p50_ms"]),
            f(&c["p99_ms"]),
            c["failures"]
        );
        println!(
            "| … p50 until Welcome, until Grant; CPU: relay, clients | {:.0} ms, {:.0} ms; {:.2} s, {:.2} s | |",
            f(&c["welcome_p50_ms"]),
            f(&c["grant_p50_ms"]),
            f(&c["relay_cpu_secs"]),
            f(&c["clients_cpu_secs"]),
        );
        if let Some(rounds) = c["rounds"].as_array().filter(|r| r.len() > 1) {
            let each: Vec<String> = rounds
                .iter()
                .map(|r| {
                    format!(
                        "{:.0}/s {:.2} s",
                        f(&r["completions_per_sec"]),
                        f(&r["p99_ms"]) / 1000.0
                    )
                })
                .collect();
            println!(
                "| … every round (rate, p99), the median one above | {} | |",
                each.join("; ")
            );
        }
    }
    if !r["postgres"].is_null() {
        print_postgres(r);
    }
    let m = &r["memory"];
    if !m.is_null() {
        println!(
            "| relay RSS, {} idle TCP sessions | {:.1} MiB, {:.0} B/session | ≤ 32 KiB/session |",
            m["idle_sessions"],
            f(&m["rss_after_bytes"]) / MIB,
            f(&m["bytes_per_idle_session"])
        );
    }
    let i = &r["instant_upload"];
    if !i.is_null() {
        println!(
            "| instant upload of held content (proof included){} | {:.2} s, {:.2}x of uploading it; {}; {:.2}x the best pass | ≤ 1.1x of the SHA-1 pass |",
            rounds_note(t),
            f(&i["announce_to_complete_secs"]),
            f(&i["ratio_to_upload"]),
            beside(
                &i["ratio_to_proof_hash_spread"],
                &format!(
                    "of one SHA-1 pass beside it ({:.2} s)",
                    f(&i["proof_hash_secs"])
                )
            ),
            f(&i["ratio_to_best_proof_hash"]),
        );
    }
    let u = &r["tus"];
    if !u.is_null() {
        let bytes = u["bytes"].as_u64().unwrap_or(0);
        let size = if bytes % (1 << 30) == 0 {
            format!("{} GiB", bytes >> 30)
        } else {
            format!("{} MiB", bytes >> 20)
        };
        let rows = [
            ("Pickup /tus/", &u["pickup"]),
            ("@tus/server + @tus/file-store", &u["tus_server_file_store"]),
        ];
        for (server, row) in rows {
            let figure = match u["skipped"].as_str() {
                Some(why) => format!("skipped: {why}"),
                None => format!(
                    "{:.2} s, {:.0} MiB/s; server CPU {:.2} s per GiB",
                    f(&row["secs"]),
                    f(&row["mib_per_sec"]),
                    f(&row["server_cpu_secs"]) * GIB / bytes as f64,
                ),
            };
            println!(
                "| {size} upload, tus-js-client → {server} (default chunk size: unlimited, one PATCH) | {figure} | |"
            );
        }
    }
    let a = &r["attack"];
    if !a.is_null() {
        crate::attack::report::print_rows(a);
    }
}

/// The `postgres` backend's rows, each beside the SQLite figure of the
/// same run when that ran (`--backend both`).
fn print_postgres(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let p = &r["postgres"];
    let t = &p["tcp"];
    let s = &r["tcp"];
    let or_dash = |present: bool, text: String| if present { text } else { "—".into() };
    if !t.is_null() {
        let per_gib = |v: &Value, bytes: &Value| f(v) * GIB / f(bytes);
        let up_bytes = &t["bytes"];
        let down_bytes = &t["download_bytes"];
        let mib_of = |v: &Value| match v.as_u64() {
            Some(bytes) => format!("{} MiB", bytes >> 20),
            None => "not run".into(),
        };
        println!(
            "| upload: SQLite ({}) / PostgreSQL + S3 ({}, one instance) | {} / {:.0} MiB/s ({:.2}x SHA-1) | |",
            mib_of(&s["bytes"]),
            mib_of(&t["bytes"]),
            or_dash(
                !s.is_null(),
                format!("{:.0} MiB/s ({:.2}x SHA-1)", f(&s["upload_mib_per_sec"]), f(&s["upload_vs_sha1"]))
            ),
            f(&t["upload_mib_per_sec"]),
            f(&t["upload_vs_sha1"]),
        );
        let c = &t["upload_costs"];
        println!(
            "| … CPU per GiB uploaded: relay SQLite / PostgreSQL + S3; PostgreSQL, moto | {} / {:.2} s; {:.2} s, {:.2} s | |",
            or_dash(!s.is_null(), format!("{:.2} s", per_gib(&s["upload"]["relay_cpu_secs"], &s["bytes"]))),
            per_gib(&t["upload"]["relay_cpu_secs"], up_bytes),
            per_gib(&c["pg_cpu_secs"], up_bytes),
            per_gib(&c["s3_cpu_secs"], up_bytes),
        );
        println!(
            "| … per GiB uploaded: PostgreSQL commits, rows inserted / updated / deleted, WAL | {:.0}, {:.0} / {:.0} / {:.0}, {:.1} MiB | |",
            per_gib(&c["pg_commits"], up_bytes),
            per_gib(&c["pg_rows_inserted"], up_bytes),
            per_gib(&c["pg_rows_updated"], up_bytes),
            per_gib(&c["pg_rows_deleted"], up_bytes),
            per_gib(&c["pg_wal_bytes"], up_bytes) / MIB,
        );
        println!(
            "| … per GiB uploaded: S3 requests (parts, tail segments), tail segment bytes | {:.0} ({:.0}, {:.0}), {:.0} MiB | |",
            per_gib(&c["s3_requests_total"], up_bytes),
            per_gib(&c["s3_requests"]["upload_part"], up_bytes),
            per_gib(&c["s3_requests"]["put_segment"], up_bytes),
            per_gib(&c["s3_segment_bytes_put"], up_bytes) / MIB,
        );
        println!(
            "| download: SQLite ({}) / PostgreSQL + S3 ({}, one instance) | {} / {:.0} MiB/s ({:.2}x SHA-1) | |",
            mib_of(&s["bytes"]),
            mib_of(&t["download_bytes"]),
            or_dash(
                !s.is_null(),
                format!("{:.0} MiB/s ({:.2}x SHA-1)", f(&s["download_mib_per_sec"]), f(&s["download_vs_sha1"]))
            ),
            f(&t["download_mib_per_sec"]),
            f(&t["download_vs_sha1"]),
        );
        let c = &t["download_costs"];
        println!(
            "| … CPU per GiB downloaded: relay SQLite / PostgreSQL + S3; PostgreSQL, moto; S3 GETs per GiB | {} / {:.2} s; {:.2} s, {:.2} s; {:.0} | |",
            or_dash(!s.is_null(), format!("{:.2} s", per_gib(&s["download"]["relay_cpu_secs"], &s["bytes"]))),
            per_gib(&t["download"]["relay_cpu_secs"], down_bytes),
            per_gib(&c["pg_cpu_secs"], down_bytes),
            per_gib(&c["s3_cpu_secs"], down_bytes),
            per_gib(&c["s3_requests"]["get"], down_bytes),
        );
    }
    let c = &p["concurrency"];
    let sc = &r["concurrency"];
    if !c.is_null() {
        let figure = |c: &Value| {
            format!(
                "{:.0}/s, p50 {:.0} ms, p99 {:.0} ms, {} failures",
                f(&c["completions_per_sec"]),
                f(&c["p50_ms"]),
                f(&c["p99_ms"]),
                c["failures"]
            )
        };
        println!(
            "| {} concurrent two-file uploads of 64 KiB: SQLite (one relay) / PostgreSQL + S3 (two instances) | {} / {} | 0 failures |",
            c["uploads"],
            or_dash(!sc.is_null(), figure(sc)),
            figure(c),
        );
        let mib = |v: &Value| -> String {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| format!("{:.0}", f(x) / MIB))
                        .collect::<Vec<_>>()
                        .join(" + ")
                })
                .unwrap_or_default()
        };
        let secs = |v: &Value| -> String {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| format!("{:.2}", f(x)))
                        .collect::<Vec<_>>()
                        .join(" + ")
                })
                .unwrap_or_default()
        };
        let k = &c["costs"];
        println!(
            "| … relay CPU, RSS peak: SQLite / PostgreSQL + S3 per instance; PostgreSQL, moto CPU | {} / {} s, {} MiB; {:.2} s, {:.2} s | |",
            or_dash(
                !sc.is_null(),
                format!("{} s, {} MiB", secs(&sc["relay_cpu_secs_each"]), mib(&sc["relay_rss_peak_bytes"]))
            ),
            secs(&c["relay_cpu_secs_each"]),
            mib(&c["relay_rss_peak_bytes"]),
            f(&k["pg_cpu_secs"]),
            f(&k["s3_cpu_secs"]),
        );
        let count = |v: &Value| -> String {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(" + ")
                })
                .unwrap_or_default()
        };
        println!(
            "| … relay threads before, peak: SQLite / PostgreSQL + S3 per instance; PostgreSQL connections, both instances: before, after | {} / {}, {}; {}, {} | |",
            or_dash(
                !sc.is_null(),
                format!("{}, {}", count(&sc["relay_threads_before"]), count(&sc["relay_threads_peak"]))
            ),
            count(&c["relay_threads_before"]),
            count(&c["relay_threads_peak"]),
            c["pg_connections_before"],
            c["pg_connections_after"],
        );
        let n = f(&c["uploads"]);
        println!(
            "| … per batch: PostgreSQL commits, rows inserted / updated / deleted, WAL; S3 requests | {:.1}, {:.1} / {:.1} / {:.1}, {:.1} KiB; {:.1} | |",
            f(&k["pg_commits"]) / n,
            f(&k["pg_rows_inserted"]) / n,
            f(&k["pg_rows_updated"]) / n,
            f(&k["pg_rows_deleted"]) / n,
            f(&k["pg_wal_bytes"]) / n / 1024.0,
            f(&k["s3_requests_total"]) / n,
        );
    }
    let i = &p["idle"];
    println!(
        "| postgres backend, one idle instance: PostgreSQL commits, S3 requests per minute | {:.0}, {:.0} | |",
        f(&i["pg_commits"]) * 60.0 / f(&i["secs"]),
        f(&i["s3_requests_total"]) * 60.0 / f(&i["secs"]),
    );
}
