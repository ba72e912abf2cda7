use super::*;

/// The value of the sample line that starts with `series ` in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn every_metric_is_encoded_at_zero_before_anything_happens() {
    let text = Metrics::new().encode();
    for series in [
        r#"pickup_transport_received_bytes_total{transport="tcp"}"#,
        r#"pickup_transport_sent_bytes_total{transport="serial"}"#,
        r#"pickup_sessions_open{transport="tls"}"#,
        "pickup_uploads_started_total",
        "pickup_uploads_completed_total",
        "pickup_downloads_started_total",
        "pickup_downloads_files_completed_total",
        r#"pickup_instant_uploads_total{result="proof_failed"}"#,
        "pickup_dedup_saved_bytes_total",
        r#"pickup_code_lookups_total{result="rate_limited"}"#,
        "pickup_logins_ok_total",
        "pickup_logins_failed_total",
        "pickup_store_batches",
        "pickup_store_bytes",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn counts_appear_in_the_encoded_text() {
    let m = Metrics::new();
    m.bytes(Transport::Tcp).received(100);
    m.bytes(Transport::Tcp).received(23);
    m.bytes(Transport::Serial).sent(7);
    let open = m.session_opened(Transport::Tls);
    let _other = m.session_opened(Transport::Tls);
    drop(open);
    m.upload_started();
    m.upload_completed();
    m.download_started();
    m.file_downloaded();
    m.instant_upload(InstantUpload::Hit, 4096);
    m.instant_upload(InstantUpload::Miss, 99);
    m.lookup(Lookup::Unknown);
    m.lookup(Lookup::Unknown);
    m.login(true);
    m.login(false);
    m.refusal(ErrorCode::UnknownCode, Kind::Fetch as u8);
    m.refusal(ErrorCode::Quota, Kind::FileAnnounce as u8);
    m.store_operation("write", Duration::from_micros(80));
    m.store_usage(Usage {
        bytes: 1 << 40,
        batches: 3,
    });
    let text = m.encode();
    let expect =
        |series: &str, v: f64| assert_eq!(sample(&text, series), Some(v), "{series} in\n{text}");
    expect(
        r#"pickup_transport_received_bytes_total{transport="tcp"}"#,
        123.0,
    );
    expect(
        r#"pickup_transport_received_bytes_total{transport="tls"}"#,
        0.0,
    );
    expect(
        r#"pickup_transport_sent_bytes_total{transport="serial"}"#,
        7.0,
    );
    expect(r#"pickup_sessions_open{transport="tls"}"#, 1.0);
    expect("pickup_uploads_started_total", 1.0);
    expect("pickup_uploads_completed_total", 1.0);
    expect("pickup_downloads_started_total", 1.0);
    expect("pickup_downloads_files_completed_total", 1.0);
    expect(r#"pickup_instant_uploads_total{result="hit"}"#, 1.0);
    expect(r#"pickup_instant_uploads_total{result="miss"}"#, 1.0);
    // Only a hit saves bytes.
    expect("pickup_dedup_saved_bytes_total", 4096.0);
    expect(r#"pickup_code_lookups_total{result="unknown"}"#, 2.0);
    expect("pickup_logins_ok_total", 1.0);
    expect("pickup_logins_failed_total", 1.0);
    expect(
        r#"pickup_refusals_total{phase="download",request="Fetch",code="UnknownCode"}"#,
        1.0,
    );
    expect(
        r#"pickup_refusals_total{phase="upload",request="FileAnnounce",code="Quota"}"#,
        1.0,
    );
    expect(r#"pickup_store_operation_seconds_count{job="write"}"#, 1.0);
    expect(
        r#"pickup_store_operation_seconds_bucket{le="0.0002",job="write"}"#,
        1.0,
    );
    expect(
        r#"pickup_store_operation_seconds_bucket{le="0.00005",job="write"}"#,
        0.0,
    );
    expect("pickup_store_batches", 3.0);
    expect("pickup_store_bytes", (1u64 << 40) as f64);
}

#[test]
fn kinds_fall_in_their_phase() {
    assert_eq!(phase(Some(Kind::Data)), "upload");
    assert_eq!(phase(Some(Kind::NamedPut)), "upload");
    assert_eq!(phase(Some(Kind::Read)), "download");
    assert_eq!(phase(Some(Kind::FetchNamed)), "download");
    assert_eq!(phase(Some(Kind::Login)), "auth");
    assert_eq!(phase(Some(Kind::RemoveNamed)), "names");
    assert_eq!(phase(Some(Kind::Hello)), "session");
    assert_eq!(phase(None), "session");
}
