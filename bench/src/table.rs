//! The table the bench prints: one line per figure, a target where the
//! project has one.

use serde_json::Value;

use crate::{GIB, MIB};

/// Prints every part of the report that ran.
pub fn print_table(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!("| measure | figure | target |");
    println!("|---|---:|---|");
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
            "| disk: 64 KiB writes, fdatasync every 2 MiB / 4 MiB / once | {:.0} / {:.0} / {:.0} MiB/s | |",
            f(&t["disk_fdatasync_every_2mib_mib_per_sec"]),
            f(&t["disk_fdatasync_every_4mib_mib_per_sec"]),
            f(&t["disk_one_fdatasync_mib_per_sec"]),
        );
        println!(
            "| upload through the relay, {} MiB | {:.0} MiB/s ({:.2}x SHA-1, {:.2}x raw TCP) | ≥ 0.7x SHA-1 |",
            t["bytes"].as_u64().unwrap_or(0) >> 20,
            f(&t["upload_mib_per_sec"]),
            f(&t["upload_vs_sha1"]),
            f(&t["upload_vs_raw_tcp"])
        );
        println!(
            "| … CPU per GiB uploaded: client, relay | {:.2} s, {:.2} s | |",
            f(&t["upload"]["client_cpu_secs"]) * GIB / f(&t["bytes"]),
            f(&t["upload"]["relay_cpu_secs"]) * GIB / f(&t["bytes"]),
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
            f(&t["disk_fdatasync_every_2mib_cpu_secs"]) * GIB / f(&t["bytes"]),
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
            "| download through the relay | {:.0} MiB/s ({:.2}x SHA-1, {:.2}x raw TCP) | ≥ 0.7x SHA-1 |",
            f(&t["download_mib_per_sec"]),
            f(&t["download_vs_sha1"]),
            f(&t["download_vs_raw_tcp"])
        );
        println!(
            "| … CPU per GiB downloaded: client, relay | {:.2} s, {:.2} s | |",
            f(&t["download"]["client_cpu_secs"]) * GIB / f(&t["bytes"]),
            f(&t["download"]["relay_cpu_secs"]) * GIB / f(&t["bytes"]),
        );
        println!(
            "| HTTP download, same file (`GET /c/{{CODE}}/0`, body hashed) | {:.0} MiB/s ({:.2}x SHA-1, {:.2}x the wire download) | |",
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
            f(&t["read_back_cpu_secs"]) * GIB / f(&t["bytes"]),
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
            "| {} concurrent two-file uploads of 64 KiB | {:.0}/s, p50 {:.0} ms, p99 {:.0} ms, {} failures | 0 failures |",
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
            "| instant upload of held content (proof included) | {:.2} s, {:.2}x of uploading it, {:.2}x of one SHA-1 pass ({:.2} s) | ≤ 1.1x of the SHA-1 pass |",
            f(&i["announce_to_complete_secs"]),
            f(&i["ratio_to_upload"]),
            f(&i["ratio_to_proof_hash"]),
            f(&i["proof_hash_secs"])
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
