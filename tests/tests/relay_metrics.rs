//! The operations listener of a real relay (`serve --metrics ADDR`):
//! `/healthz` and `/readyz` answer, and `/metrics` counts what a real
//! `pickup send` and `pickup get` did.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use pickup_tests::e2e::{
    pickup, relay_bin, run, run_json, same_file, stderr, write_random, TempDir,
};
use pickup_tests::http_client::sample;
use pickup_tests::relay_process::RelayProcess;

/// One HTTP/1.1 GET, the connection closed after it: (status, headers, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // `Connection: close`: the response ends when the relay closes; the
    // read timeout bounds a relay that would not.
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

fn metrics(addr: SocketAddr) -> String {
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body
}

#[test]
fn health_readiness_and_the_counts_of_a_send_and_a_get() {
    let relay = RelayProcess::builder()
        .arg("--metrics")
        .arg("127.0.0.1:0")
        .start();
    let addr = relay.listener("metrics");
    assert!(addr.ip().is_loopback());

    let (status, _, body) = get(addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(addr, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, _, _) = get(addr, "/nothing-here");
    assert_eq!(status, 404);

    let before = metrics(addr);
    assert_eq!(sample(&before, "pickup_uploads_started_total"), 0.0);
    assert_eq!(
        sample(
            &before,
            r#"pickup_transport_received_bytes_total{transport="tcp"}"#
        ),
        0.0
    );

    let work = TempDir::new("relay-metrics");
    let state = work.path().join("state");
    let src = work.path().join("photo.jpg");
    write_random(&src, 200_000, 7);
    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&src),
    );
    let code = sent["code"].as_str().unwrap().to_owned();
    let dest = work.path().join("dest");
    run_json(
        pickup(&state)
            .args(["get", "--json", "--relay", &relay.tcp(), &code, "-o"])
            .arg(&dest),
    );
    assert!(same_file(&src, &dest.join("photo.jpg")));

    let after = metrics(addr);
    let tcp_in = sample(
        &after,
        r#"pickup_transport_received_bytes_total{transport="tcp"}"#,
    );
    let tcp_out = sample(
        &after,
        r#"pickup_transport_sent_bytes_total{transport="tcp"}"#,
    );
    // The upload's bytes came in, the download's went out.
    assert!(tcp_in > 200_000.0, "tcp in {tcp_in}");
    assert!(tcp_out > 200_000.0, "tcp out {tcp_out}");
    assert_eq!(
        sample(
            &after,
            r#"pickup_transport_received_bytes_total{transport="tls"}"#
        ),
        0.0
    );
    assert_eq!(sample(&after, "pickup_uploads_started_total"), 1.0);
    assert_eq!(sample(&after, "pickup_uploads_completed_total"), 1.0);
    assert_eq!(sample(&after, "pickup_downloads_started_total"), 1.0);
    assert_eq!(
        sample(&after, "pickup_downloads_files_completed_total"),
        1.0
    );
    assert!(sample(&after, r#"pickup_code_lookups_total{result="ok"}"#) >= 1.0);
    assert_eq!(
        sample(&after, r#"pickup_instant_uploads_total{result="miss"}"#),
        1.0
    );
    assert!(
        sample(
            &after,
            r#"pickup_store_operation_seconds_count{job="write"}"#
        ) >= 1.0
    );
    assert!(
        after.contains("pickup_store_operation_seconds_bucket{le="),
        "{after}"
    );

    // The same content again: the relay holds it, the CLI proves it holds
    // it too, and no byte of it is uploaded.
    run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&src),
    );
    let again = metrics(addr);
    assert_eq!(
        sample(&again, r#"pickup_instant_uploads_total{result="hit"}"#),
        1.0
    );
    assert_eq!(sample(&again, "pickup_dedup_saved_bytes_total"), 200_000.0);
    assert_eq!(sample(&again, "pickup_uploads_completed_total"), 2.0);

    // A code that was never issued: the same one with its last symbol changed.
    let mut unknown = code.clone();
    let last = unknown.pop().unwrap();
    unknown.push(if last == '0' { '1' } else { '0' });
    let out = run(pickup(&state)
        .args(["get", "--json", "--relay", &relay.tcp(), &unknown, "-o"])
        .arg(work.path().join("nothing")));
    assert!(!out.status.success(), "{}", stderr(&out));
    let last = metrics(addr);
    assert!(
        sample(&last, r#"pickup_code_lookups_total{result="unknown"}"#) >= 1.0,
        "{last}"
    );
    assert!(
        sample(
            &last,
            r#"pickup_refusals_total{phase="download",request="Fetch",code="UnknownCode"}"#
        ) >= 1.0,
        "{last}"
    );
    // The CLI's sessions are over once it exits; the relay's side closes
    // on the peer's close, so wait (bounded) for the gauge to settle.
    let mut open = f64::NAN;
    for _ in 0..100 {
        open = sample(&metrics(addr), r#"pickup_sessions_open{transport="tcp"}"#);
        if open == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open, 0.0, "sessions still counted open");
}

#[test]
fn the_metrics_listener_can_come_from_the_config_file() {
    let relay = RelayProcess::builder()
        .config("[metrics]\nlisten = \"127.0.0.1:0\"\n")
        .start();
    let (status, _, body) = get(relay.listener("metrics"), "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[test]
fn tls_sessions_count_under_tls() {
    let work = TempDir::new("relay-metrics-tls");
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    let out = run(std::process::Command::new(relay_bin())
        .args(["cert", "self-signed", "--name", "127.0.0.1", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key));
    assert!(out.status.success(), "cert self-signed: {}", stderr(&out));
    let pin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let relay = RelayProcess::builder()
        .arg("--tls")
        .arg("127.0.0.1:0")
        .arg("--cert")
        .arg(cert.to_str().unwrap())
        .arg("--key")
        .arg(key.to_str().unwrap())
        .arg("--metrics")
        .arg("127.0.0.1:0")
        .start();
    let addr = relay.listener("metrics");
    let src = work.path().join("data.bin");
    write_random(&src, 50_000, 3);
    let tls = format!("tls://{}", relay.listener("tls"));
    run_json(
        pickup(&work.path().join("state"))
            .args(["send", "--json", "--relay", &tls, "--pin", &pin])
            .arg(&src),
    );
    let text = metrics(addr);
    let tls_in = sample(
        &text,
        r#"pickup_transport_received_bytes_total{transport="tls"}"#,
    );
    assert!(tls_in > 50_000.0, "tls in {tls_in}");
    assert!(
        sample(
            &text,
            r#"pickup_transport_sent_bytes_total{transport="tls"}"#
        ) > 0.0
    );
    assert_eq!(
        sample(
            &text,
            r#"pickup_transport_received_bytes_total{transport="tcp"}"#
        ),
        0.0
    );
    assert_eq!(sample(&text, "pickup_uploads_completed_total"), 1.0);
}
