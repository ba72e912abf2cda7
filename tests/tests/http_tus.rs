//! tus 1.0 uploads on the relay's HTTP face (issue 15, docs/tus.md)
//! against the real binary, with a raw HTTP/1.1 client: a file uploaded
//! in pieces (one with a checksum) and fetched byte-identical with
//! `pickup get`, creation-with-upload, a declared SHA-1 that matches and
//! one that does not, an interrupted PATCH, termination, expiry, login,
//! and the hostile-input list, each answered with its own status.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use pickup_proto::Sha1Digest;
use pickup_tests::e2e::push::admin;
use pickup_tests::e2e::{pickup, run, run_with_input, stderr, TempDir};
use pickup_tests::http_client::{
    abandon_body, http_relay, request, request_with_body, sample, Response,
};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::sim::rng::SimRng;

const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
const STREAM: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    SimRng::new(seed).fill(&mut data);
    data
}

fn hex(d: &Sha1Digest) -> String {
    d.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /tus/` for a file `name` of `len` bytes, with `extra` headers.
fn create(http: SocketAddr, name: &str, len: u64, extra: &[(&str, &str)]) -> Response {
    let len = len.to_string();
    let meta = format!("filename {}", b64(name.as_bytes()));
    let mut headers = vec![
        TUS,
        ("Upload-Length", len.as_str()),
        ("Upload-Metadata", &meta),
    ];
    headers.extend_from_slice(extra);
    request_with_body(http, "POST", "/tus/", &headers, b"")
}

/// The upload URL a creation answered with.
fn location(r: &Response) -> String {
    assert_eq!(r.status, 201, "{}", r.text());
    r.header("location").unwrap().to_owned()
}

fn patch(
    http: SocketAddr,
    url: &str,
    offset: u64,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Response {
    let offset = offset.to_string();
    let mut headers = vec![TUS, STREAM, ("Upload-Offset", offset.as_str())];
    headers.extend_from_slice(extra);
    request_with_body(http, "PATCH", url, &headers, body)
}

fn head(http: SocketAddr, url: &str) -> Response {
    request(http, "HEAD", url, &[TUS])
}

/// The durable offset HEAD reports.
fn offset(http: SocketAddr, url: &str) -> u64 {
    let r = head(http, url);
    assert_eq!(r.status, 200, "HEAD {url}");
    r.header("upload-offset").unwrap().parse().unwrap()
}

/// `pickup get CODE` into a fresh directory; the one file's bytes.
fn pickup_get(relay: &RelayProcess, code: &str, name: &str) -> Vec<u8> {
    let dir = TempDir::new("tus-get");
    let dest = dir.path().join("out");
    let out = run(pickup(&dir.path().join("state"))
        .args(["get", "--relay", &relay.tcp(), code, "-o"])
        .arg(&dest));
    assert!(out.status.success(), "pickup get: {}", stderr(&out));
    std::fs::read(dest.join(name)).unwrap()
}

#[test]
fn a_file_sent_in_pieces_is_fetched_byte_identical_and_counted() {
    let relay = RelayProcess::builder()
        .arg("--http")
        .arg("127.0.0.1:0")
        .arg("--metrics")
        .arg("127.0.0.1:0")
        .start();
    let (http, metrics) = (relay.listener("http"), relay.listener("metrics"));
    let options = request(http, "OPTIONS", "/tus/", &[]);
    assert_eq!(options.status, 204);
    assert_eq!(options.header("tus-version"), Some("1.0.0"));
    assert!(options
        .header("tus-extension")
        .unwrap()
        .contains("creation-with-upload"));
    assert_eq!(options.header("tus-checksum-algorithm"), Some("sha1"));
    assert!(options.header("tus-max-size").is_some());

    let data = random(300_000, 1);
    let created = create(http, "pieces.bin", data.len() as u64, &[]);
    let url = location(&created);
    let code = created.header("pickup-code").unwrap().to_owned();
    assert_eq!(
        created.header("pickup-link"),
        Some(format!("/c/{code}").as_str())
    );
    assert!(created.header("upload-expires").unwrap().ends_with("GMT"));
    assert_eq!(created.header("tus-resumable"), Some("1.0.0"));
    let first = head(http, &url);
    assert_eq!(first.header("upload-offset"), Some("0"));
    assert_eq!(first.header("upload-length"), Some("300000"));
    assert_eq!(first.header("cache-control"), Some("no-store"));
    assert_eq!(first.header("pickup-code"), Some(code.as_str()));
    assert_eq!(
        first.header("upload-metadata"),
        Some(format!("filename {}", b64(b"pieces.bin")).as_str())
    );
    // The code's page says the upload is still going on.
    assert_eq!(
        request(http, "GET", &format!("/c/{code}/0"), &[]).status,
        409
    );

    let p = patch(http, &url, 0, &data[..100_000], &[]);
    assert_eq!(p.status, 204, "{}", p.text());
    assert_eq!(p.header("upload-offset"), Some("100000"));
    assert_eq!(p.header("pickup-code"), Some(code.as_str()));
    assert_eq!(offset(http, &url), 100_000);
    let sum = format!("sha1 {}", b64(&Sha1Digest::of(&data[100_000..250_000]).0));
    let p = patch(
        http,
        &url,
        100_000,
        &data[100_000..250_000],
        &[("Upload-Checksum", &sum)],
    );
    assert_eq!(p.status, 204, "{}", p.text());
    assert_eq!(offset(http, &url), 250_000);
    let p = patch(http, &url, 250_000, &data[250_000..], &[]);
    assert_eq!(p.status, 204, "{}", p.text());
    assert_eq!(p.header("upload-offset"), Some("300000"));
    // Complete: an empty PATCH at the end is fine, any other is not.
    assert_eq!(patch(http, &url, 300_000, b"", &[]).status, 204);
    assert_eq!(patch(http, &url, 0, b"x", &[]).status, 409);

    assert_eq!(pickup_get(&relay, &code, "pieces.bin"), data);
    let page = request(http, "GET", &format!("/c/{code}"), &[]).text();
    assert!(
        page.contains(&hex(&Sha1Digest::of(&data))),
        "the page shows the SHA-1"
    );

    let scrape = request(metrics, "GET", "/metrics", &[]).text();
    assert_eq!(
        sample(&scrape, "pickup_tus_received_bytes_total"),
        300_000.0
    );
    assert_eq!(sample(&scrape, "pickup_tus_uploads_completed_total"), 1.0);
}

#[test]
fn creation_with_upload_and_declared_sha1s() {
    let (relay, http) = http_relay("");
    let data = random(70_000, 2);
    // A body with the creation, and the SHA-1 declared in hex.
    let meta = format!(
        "filename {},sha1 {}",
        b64(b"with-body.bin"),
        b64(hex(&Sha1Digest::of(&data)).as_bytes())
    );
    let len = data.len().to_string();
    let created = request_with_body(
        http,
        "POST",
        "/tus/",
        &[
            TUS,
            STREAM,
            ("Upload-Length", &len),
            ("Upload-Metadata", &meta),
        ],
        &data,
    );
    let url = location(&created);
    assert_eq!(created.header("upload-offset"), Some("70000"));
    let code = created.header("pickup-code").unwrap().to_owned();
    assert_eq!(offset(http, &url), 70_000);
    assert_eq!(
        request(http, "GET", &format!("/c/{code}/0"), &[]).body,
        data
    );
    let _ = relay;

    // A declared SHA-1 (base64) that the bytes do not have: 422, reset.
    let other = Sha1Digest::of(b"something else");
    let meta = format!(
        "filename {},sha1 {}",
        b64(b"wrong.bin"),
        b64(b64(&other.0).as_bytes())
    );
    let url = location(&request_with_body(
        http,
        "POST",
        "/tus/",
        &[TUS, ("Upload-Length", "5000"), ("Upload-Metadata", &meta)],
        b"",
    ));
    let bad = patch(http, &url, 0, &data[..5000], &[]);
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert!(bad.text().contains("SHA-1"), "{}", bad.text());
    assert_eq!(offset(http, &url), 0, "reset to 0");
    let code = head(http, &url).header("pickup-code").unwrap().to_owned();
    assert_eq!(
        request(http, "GET", &format!("/c/{code}/0"), &[]).status,
        409
    );
}

#[test]
fn hostile_and_wrong_requests_get_clear_refusals() {
    let (_relay, http) = http_relay("[limits]\nmax_file_size = 1000000\n");
    let url = location(&create(http, "ok.bin", 1000, &[]));
    let body = random(1000, 3);
    assert_eq!(patch(http, &url, 0, &body[..100], &[]).status, 204);

    // Offsets: not the durable one, or no number at all.
    let wrong = patch(http, &url, 50, &body[50..60], &[]);
    assert_eq!(wrong.status, 409, "{}", wrong.text());
    for bad in ["-1", "abc", "99999999999999999999999", ""] {
        let r = request_with_body(
            http,
            "PATCH",
            &url,
            &[TUS, STREAM, ("Upload-Offset", bad)],
            b"x",
        );
        assert_eq!(r.status, 400, "Upload-Offset {bad:?}");
    }
    // Content types.
    let r = request_with_body(http, "PATCH", &url, &[TUS, ("Upload-Offset", "100")], b"x");
    assert_eq!(r.status, 415);
    let r = request_with_body(
        http,
        "PATCH",
        &url,
        &[
            TUS,
            ("Upload-Offset", "100"),
            ("Content-Type", "text/plain"),
        ],
        b"x",
    );
    assert_eq!(r.status, 415);
    // Beyond the declared length.
    assert_eq!(patch(http, &url, 100, &random(1000, 4), &[]).status, 400);
    assert_eq!(offset(http, &url), 100);
    // Checksums: a wrong one keeps nothing; another algorithm is refused.
    let wrong_sum = format!("sha1 {}", b64(&Sha1Digest::of(b"nope").0));
    let r = patch(
        http,
        &url,
        100,
        &body[100..200],
        &[("Upload-Checksum", &wrong_sum)],
    );
    assert_eq!(r.status, 460, "{}", r.text());
    assert_eq!(offset(http, &url), 100);
    let r = patch(
        http,
        &url,
        100,
        &body[100..200],
        &[("Upload-Checksum", "md5 XUFAKrxLKna5cZ2REBfFkg==")],
    );
    assert_eq!(r.status, 400);
    assert_eq!(offset(http, &url), 100);
    // Versions.
    let r = request(http, "HEAD", &url, &[]);
    assert_eq!((r.status, r.header("tus-version")), (412, Some("1.0.0")));
    assert_eq!(
        request(http, "HEAD", &url, &[("Tus-Resumable", "0.2.2")]).status,
        412
    );

    // Unknown and malformed handles and indices.
    for unknown in [
        "/tus/00000000000000000000000000000000/0",
        "/tus/zz/0",
        "/tus/00000000000000000000000000000000/x",
    ] {
        assert_eq!(head(http, unknown).status, 404, "{unknown}");
    }
    let (handle_url, _) = url.rsplit_once('/').unwrap();
    assert_eq!(head(http, &format!("{handle_url}/1")).status, 404);
    assert_eq!(head(http, &format!("{handle_url}/99999999")).status, 404);

    // Creations: lengths, metadata, names, limits.
    let no_length = request_with_body(
        http,
        "POST",
        "/tus/",
        &[TUS, ("Upload-Metadata", &format!("filename {}", b64(b"a")))],
        b"",
    );
    assert_eq!(no_length.status, 400);
    for bad in ["-5", "ten", "1.5", "99999999999999999999999"] {
        let meta = format!("filename {}", b64(b"a"));
        let r = request_with_body(
            http,
            "POST",
            "/tus/",
            &[TUS, ("Upload-Length", bad), ("Upload-Metadata", &meta)],
            b"",
        );
        assert_eq!(r.status, 400, "Upload-Length {bad:?}");
    }
    for meta in [
        "filename",
        "filename !!!",
        "filename YQ== extra",
        "a YQ==,a YQ==",
        "sha1 YWJj",
    ] {
        let r = request_with_body(
            http,
            "POST",
            "/tus/",
            &[TUS, ("Upload-Length", "5"), ("Upload-Metadata", meta)],
            b"",
        );
        assert_eq!(r.status, 400, "Upload-Metadata {meta:?}: {}", r.text());
    }
    let r = request_with_body(http, "POST", "/tus/", &[TUS, ("Upload-Length", "5")], b"");
    assert_eq!(r.status, 400, "no filename");
    for name in ["../etc/passwd", "/abs", "a\\b", "a//b", "bad\u{1}name", ""] {
        let r = create(http, name, 5, &[]);
        assert_eq!(r.status, 400, "name {name:?}");
        assert!(r.text().contains("name"), "{}", r.text());
    }
    let big = create(http, "big.bin", 1_000_001, &[]);
    assert_eq!(big.status, 413, "{}", big.text());
    // Overlong metadata.
    let long = format!("filename {}", b64("a".repeat(20_000).as_bytes()));
    let r = request_with_body(
        http,
        "POST",
        "/tus/",
        &[TUS, ("Upload-Length", "5"), ("Upload-Metadata", &long)],
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // The upload is still fine after all that.
    assert_eq!(patch(http, &url, 100, &body[100..], &[]).status, 204);
    assert_eq!(offset(http, &url), 1000);
}

#[test]
fn an_interrupted_patch_keeps_its_durable_bytes_and_the_upload_completes() {
    let (relay, http) = http_relay("");
    let data = random(2 * 1024 * 1024, 5);
    let created = create(http, "cut.bin", data.len() as u64, &[]);
    let url = location(&created);
    let code = created.header("pickup-code").unwrap().to_owned();
    let half = data.len() / 2;
    let headers = [TUS, STREAM, ("Upload-Offset", "0")];
    abandon_body(
        http,
        "PATCH",
        &url,
        &headers,
        data.len() as u64,
        &data[..half],
    );
    // The relay syncs what arrived once it sees the body stop: wait for it
    // (bounded), then the rest goes on from there.
    let mut kept = 0;
    for _ in 0..100 {
        kept = offset(http, &url);
        if kept > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        kept > 0 && kept <= half as u64,
        "kept {kept} of {half} sent"
    );
    let mut done = None;
    for _ in 0..50 {
        let r = patch(http, &url, kept, &data[kept as usize..], &[]);
        // 423 while the abandoned request still holds the lease.
        if r.status != 423 {
            done = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = done.expect("the lease is given back");
    assert_eq!(done.status, 204, "{}", done.text());
    assert_eq!(pickup_get(&relay, &code, "cut.bin"), data);
}

#[test]
fn a_second_patch_while_one_runs_is_refused() {
    let (_relay, http) = http_relay("");
    let size = 6 * 1024 * 1024;
    let url = location(&create(http, "busy.bin", size, &[]));
    // A PATCH that sends more than the relay syncs at once (4 MiB) and then
    // waits: once HEAD shows those bytes, it holds the upload's lease.
    let mut stream = pickup_tests::wire_client::connect_from(http, std::net::Ipv4Addr::LOCALHOST);
    let head_text = format!(
        "PATCH {url} HTTP/1.1\r\nHost: {http}\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n\
         Content-Length: {size}\r\n\r\n"
    );
    std::io::Write::write_all(&mut stream, head_text.as_bytes()).unwrap();
    std::io::Write::write_all(&mut stream, &random(5 * 1024 * 1024, 6)).unwrap();
    let mut durable = 0;
    for _ in 0..200 {
        durable = offset(http, &url);
        if durable > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(durable > 0, "the first PATCH made bytes durable");
    let second = patch(http, &url, durable, b"x", &[]);
    assert_eq!(second.status, 423, "{}", second.text());
    drop(stream);
}

#[test]
fn termination_and_expiry_end_uploads() {
    let (_relay, http) = http_relay("[codes]\nttl_secs = 2\n");
    let created = create(http, "gone.bin", 10, &[]);
    let url = location(&created);
    let code = created.header("pickup-code").unwrap().to_owned();
    assert_eq!(request(http, "DELETE", &url, &[TUS]).status, 204);
    let gone = head(http, &url);
    assert!(gone.status == 410 || gone.status == 404, "{}", gone.status);
    assert_eq!(request(http, "GET", &format!("/c/{code}"), &[]).status, 410);
    assert_eq!(
        request(
            http,
            "DELETE",
            "/tus/00000000000000000000000000000000/0",
            &[TUS]
        )
        .status,
        404
    );

    // Not terminated, just left: it expires with its code (bounded wait).
    let url = location(&create(http, "left.bin", 10, &[]));
    let mut status = 0;
    for _ in 0..40 {
        status = head(http, &url).status;
        if status != 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(status, 410);
}

#[test]
fn uploads_need_a_login_token_when_anonymous_uploads_are_off() {
    let (relay, http) = http_relay("[auth]\nallow_anonymous_upload = false\n");
    let refused = create(http, "anon.bin", 5, &[]);
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    let forged = create(
        http,
        "anon.bin",
        5,
        &[("Authorization", "Bearer 0123456789abcdef0123456789abcdef")],
    );
    assert_eq!(forged.status, 401);
    assert_eq!(
        create(http, "anon.bin", 5, &[("Authorization", "Basic YTpi")]).status,
        401
    );

    admin(
        relay.data(),
        &["user", "add", "ada", "--password-stdin"],
        "ada secret 1\n",
    );
    let work = TempDir::new("tus-login");
    let state = work.path().join("ada");
    let out = run_with_input(
        pickup(&state).args(["--relay", &relay.tcp(), "login", "ada", "--password-stdin"]),
        "ada secret 1\n",
    );
    assert!(out.status.success(), "login: {}", stderr(&out));
    let kept = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("login-"))
        .expect("a kept login");
    let login: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kept.path()).unwrap()).unwrap();
    let token = login["token"].as_str().unwrap();
    let bearer = format!("Bearer {token}");
    let created = create(http, "mine.bin", 5, &[("Authorization", &bearer)]);
    let url = location(&created);
    assert_eq!(patch(http, &url, 0, b"hello", &[]).status, 204);
    let code = created.header("pickup-code").unwrap();
    assert_eq!(
        request(http, "GET", &format!("/c/{code}/0"), &[]).body,
        b"hello"
    );
}

/// `POST /tus/` adding `name` (`data.len()` bytes) to the open batch `handle`.
fn create_in(http: SocketAddr, handle: &str, name: &str, len: usize) -> Response {
    let meta = format!(
        "filename {},batch {}",
        b64(name.as_bytes()),
        b64(handle.as_bytes())
    );
    let len = len.to_string();
    request_with_body(
        http,
        "POST",
        "/tus/",
        &[TUS, ("Upload-Length", &len), ("Upload-Metadata", &meta)],
        b"",
    )
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

#[test]
fn several_files_share_one_code_once_the_batch_is_closed() {
    let (relay, http) = http_relay("");
    let opened = request_with_body(http, "POST", "/tus/batches", &[TUS], b"");
    assert_eq!(opened.status, 201, "{}", opened.text());
    let handle = opened.header("pickup-batch").unwrap().to_owned();
    assert_eq!(
        opened.header("location"),
        Some(format!("/tus/batches/{handle}").as_str())
    );
    let body = json(&opened);
    assert_eq!(body["batch"], handle.as_str());
    assert!(body["expires"].as_str().unwrap().ends_with('Z'));
    let close = format!("/tus/batches/{handle}/close");
    assert_eq!(
        request_with_body(http, "POST", &close, &[TUS], b"").status,
        422
    );

    let (one, two) = (random(40_000, 7), random(25_000, 8));
    let first = create_in(http, &handle, "dir/one.bin", one.len());
    assert_eq!(location(&first), format!("/tus/{handle}/0"));
    assert_eq!(
        first.header("pickup-code"),
        None,
        "an open batch's code is not told"
    );
    let second = location(&create_in(http, &handle, "two.bin", two.len()));
    assert_eq!(second, format!("/tus/{handle}/1"));
    // A name another file of the batch has (or is the directory of).
    assert_eq!(create_in(http, &handle, "two.bin", 5).status, 400);
    assert_eq!(create_in(http, &handle, "dir", 5).status, 400);
    assert_eq!(head(http, &second).header("pickup-code"), None);

    assert_eq!(
        patch(http, &format!("/tus/{handle}/0"), 0, &one, &[]).status,
        204
    );
    let early = request_with_body(http, "POST", &close, &[TUS], b"");
    assert_eq!(early.status, 409, "{}", early.text());
    assert_eq!(json(&early)["incomplete"], serde_json::json!([1]));
    let status = json(&request(
        http,
        "GET",
        &format!("/tus/batches/{handle}"),
        &[TUS],
    ));
    assert_eq!(status["open"], true);
    assert!(status.get("code").is_none());
    assert_eq!(status["files"][0]["complete"], true);
    assert_eq!(status["files"][1]["offset"], 0);
    assert_eq!(status["files"][1]["name"], "two.bin");
    // A file of an open batch is not terminated alone.
    assert_eq!(request(http, "DELETE", &second, &[TUS]).status, 409);

    assert_eq!(patch(http, &second, 0, &two, &[]).status, 204);
    let closed = request_with_body(http, "POST", &close, &[TUS], b"");
    assert_eq!(closed.status, 200, "{}", closed.text());
    let code = closed.header("pickup-code").unwrap().to_owned();
    let body = json(&closed);
    assert_eq!(body["code"], code.as_str());
    assert_eq!(body["link"], format!("/c/{code}").as_str());
    assert_eq!(body["files"], 2);
    // Idempotent; and the batch takes no more files.
    let again = request_with_body(http, "POST", &close, &[TUS], b"");
    assert_eq!(
        (again.status, json(&again)["code"].clone()),
        (200, body["code"].clone())
    );
    assert_eq!(create_in(http, &handle, "late.bin", 5).status, 409);
    assert_eq!(
        head(http, &second).header("pickup-code"),
        Some(code.as_str())
    );
    let status = json(&request(
        http,
        "GET",
        &format!("/tus/batches/{handle}"),
        &[TUS],
    ));
    assert_eq!(
        (status["open"].clone(), status["code"].clone()),
        (false.into(), code.as_str().into())
    );

    let dir = TempDir::new("tus-batch-get");
    let dest = dir.path().join("out");
    let out = run(pickup(&dir.path().join("state"))
        .args(["get", "--relay", &relay.tcp(), &code, "-o"])
        .arg(&dest));
    assert!(out.status.success(), "pickup get: {}", stderr(&out));
    assert_eq!(std::fs::read(dest.join("dir/one.bin")).unwrap(), one);
    assert_eq!(std::fs::read(dest.join("two.bin")).unwrap(), two);
}

#[test]
fn an_open_batch_is_not_resumed_over_the_wire() {
    let (relay, http) = http_relay("");
    let opened = request_with_body(http, "POST", "/tus/batches", &[TUS], b"");
    let handle = opened.header("pickup-batch").unwrap().to_owned();
    location(&create_in(http, &handle, "a.bin", 10));
    let mut token = [0u8; 16];
    for (i, b) in token.iter_mut().enumerate() {
        *b = u8::from_str_radix(&handle[2 * i..2 * i + 2], 16).unwrap();
    }
    let mut raw = pickup_tests::wire_client::Raw::connect(relay.addr());
    raw.hello();
    raw.send(pickup_proto::message::Message::Resume(
        pickup_proto::message::Resume {
            token: pickup_proto::message::ResumeToken(token),
        },
    ));
    let reply = loop {
        match raw.recv() {
            pickup_tests::wire_client::Reply::Keepalive => {}
            other => break other,
        }
    };
    assert!(
        matches!(
            reply,
            pickup_tests::wire_client::Reply::Error(pickup_proto::ErrorCode::UnknownToken, _)
        ),
        "{reply:?}"
    );
}
