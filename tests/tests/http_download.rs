//! The relay's HTTP face (issue 14, items 1–4) against the real binary:
//! `pickup send` uploads, then a raw HTTP/1.1 client fetches the page,
//! the files (whole, by name, every offset split by `Range`,
//! conditionals) and the ZIP (whole, and resumed from several offsets
//! before and after a first full pass), and throws hostile input at it:
//! markup in names, traversal and NUL in paths, broken ranges, unknown
//! and expired codes, and a flood of guesses that must be rate limited
//! without locking another peer out. And the link `pickup send` prints
//! when the relay has a public URL (`[http] public_url`, issue 14 item 1).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use pickup_proto::{Code, Sha1Digest};
use pickup_tests::e2e::{pickup, run, run_json, stdout, write_random, TempDir};
use pickup_tests::http_client::{exchange, http_relay, request, request_from, sample, Response};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::{self, Raw, Reply};

fn get(http: SocketAddr, target: &str) -> Response {
    request(http, "GET", target, &[])
}

fn range(http: SocketAddr, target: &str, value: &str) -> Response {
    request(http, "GET", target, &[("Range", value)])
}

/// Sends `paths` with `pickup send`; the code.
fn send(state: &Path, relay: &RelayProcess, paths: &[&Path]) -> String {
    let sent = run_json(
        pickup(state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .args(paths),
    );
    sent["code"].as_str().unwrap().to_owned()
}

fn assert_secure_headers(r: &Response) {
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'none'; style-src 'unsafe-inline'")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
}

/// The uploaded files: (name in the batch, bytes).
struct Upload {
    code: String,
    files: Vec<(String, Vec<u8>)>,
    _dir: TempDir,
}

fn upload(relay: &RelayProcess) -> Upload {
    let dir = TempDir::new("http-src");
    let small = write_random(&dir.path().join("small.txt"), 300, 1);
    let photo = write_random(&dir.path().join("photo é.jpg"), 300_000, 2);
    let quote_name = "\"onmouseover=alert(1)";
    let quote = write_random(&dir.path().join(quote_name), 10, 3);
    let script_dir = dir.path().join("<script>alert(1)<");
    std::fs::create_dir(&script_dir).unwrap();
    let script = write_random(&script_dir.join("script>.txt"), 20, 4);
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    let state = TempDir::new("http-state");
    let paths = [
        dir.path().join("small.txt"),
        dir.path().join("photo é.jpg"),
        dir.path().join(quote_name),
        script_dir.clone(),
        dir.path().join("empty"),
    ];
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let code = send(state.path(), relay, &refs);
    Upload {
        code,
        files: vec![
            ("small.txt".into(), small),
            ("photo é.jpg".into(), photo),
            (quote_name.into(), quote),
            ("<script>alert(1)</script>.txt".into(), script),
            ("empty".into(), Vec::new()),
        ],
        _dir: dir,
    }
}

#[test]
fn the_page_lists_the_batch_with_names_escaped() {
    let (relay, http) = http_relay("");
    let up = upload(&relay);
    let page = get(http, &format!("/c/{}", up.code));
    assert_eq!(page.status, 200, "{}", page.text());
    assert_secure_headers(&page);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.contains("name=\"viewport\""));
    assert!(!html.contains("<script"), "raw markup from a name: {html}");
    assert!(
        !html.contains("\"onmouseover"),
        "a name left an attribute: {html}"
    );
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;.txt"));
    assert!(html.contains("&quot;onmouseover=alert(1)"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resource"
    );
    for (i, (_, bytes)) in up.files.iter().enumerate() {
        assert!(
            html.contains(&Sha1Digest::of(bytes).to_string()),
            "file {i}'s SHA-1"
        );
        assert!(html.contains(&format!("/{i}\"")), "file {i}'s link");
    }
    assert!(html.contains("/zip\""));
    // Any spelling the CLI accepts: lower case, no hyphens, spaces.
    let loose = up.code.to_lowercase().replace('-', "");
    assert_eq!(get(http, &format!("/c/{loose}")).status, 200);
    let spaced = up.code.replace('-', "%20");
    assert_eq!(get(http, &format!("/c/{spaced}")).status, 200);
    let head = request(http, "HEAD", &format!("/c/{}", up.code), &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn files_download_whole_by_name_and_by_every_range_split() {
    let (relay, http) = http_relay("");
    let up = upload(&relay);
    for (i, (name, bytes)) in up.files.iter().enumerate() {
        let r = get(http, &format!("/c/{}/{i}", up.code));
        assert_eq!(r.status, 200, "file {i}");
        assert_eq!(&r.body, bytes, "file {i}");
        assert_eq!(
            r.header("content-length"),
            Some(bytes.len().to_string().as_str())
        );
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        let etag = format!("\"{}\"", Sha1Digest::of(bytes));
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert!(r.header("last-modified").unwrap().ends_with(" GMT"));
        let disposition = r.header("content-disposition").unwrap();
        assert!(
            disposition.starts_with("attachment; filename=\""),
            "{disposition}"
        );
        assert!(disposition.contains("filename*=UTF-8''"), "{disposition}");
        assert_secure_headers(&r);
        // By name, percent-encoded on the way.
        let encoded: String = name
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'/' => char::from(b).to_string(),
                b => format!("%{b:02X}"),
            })
            .collect();
        let by_name = get(http, &format!("/c/{}/{encoded}", up.code));
        assert_eq!(by_name.status, 200, "{name:?} as {encoded}");
        assert_eq!(&by_name.body, bytes);
        // Conditionals.
        let same = request(
            http,
            "GET",
            &format!("/c/{}/{i}", up.code),
            &[("If-None-Match", &etag)],
        );
        assert_eq!(same.status, 304);
        assert!(same.body.is_empty());
    }
    let photo = &up.files[1].1;
    assert_eq!(
        get(http, &format!("/c/{}/1", up.code)).header("content-type"),
        Some("image/jpeg")
    );
    assert_eq!(
        get(http, &format!("/c/{}/1", up.code)).header("content-disposition"),
        Some("attachment; filename=\"photo _.jpg\"; filename*=UTF-8''photo%20%C3%A9.jpg")
    );
    // Every split of the small file: a prefix and the rest, by Range.
    let small = &up.files[0].1;
    let target = format!("/c/{}/0", up.code);
    for k in 0..=small.len() {
        let mut joined = Vec::new();
        if k > 0 {
            let head = range(http, &target, &format!("bytes=0-{}", k - 1));
            assert_eq!(head.status, 206, "split {k}");
            assert_eq!(
                head.header("content-range"),
                Some(format!("bytes 0-{}/{}", k - 1, small.len()).as_str())
            );
            joined.extend(head.body);
        }
        if k < small.len() {
            let tail = range(http, &target, &format!("bytes={k}-"));
            assert_eq!(tail.status, 206, "split {k}");
            joined.extend(tail.body);
        } else {
            let past = range(http, &target, &format!("bytes={k}-"));
            assert_eq!(past.status, 416, "split {k}");
        }
        assert_eq!(&joined, small, "split at {k}");
    }
    // A suffix, and a range across chunks of the large file.
    assert_eq!(
        range(http, &target, "bytes=-7").body,
        small[small.len() - 7..]
    );
    let mid = range(http, &format!("/c/{}/1", up.code), "bytes=100000-250000");
    assert_eq!(mid.body, photo[100_000..=250_000]);
    // If-Range: a matching tag keeps the range, another gets the whole.
    let etag = format!("\"{}\"", Sha1Digest::of(small));
    let kept = request(
        http,
        "GET",
        &target,
        &[("Range", "bytes=1-2"), ("If-Range", &etag)],
    );
    assert_eq!((kept.status, kept.body.as_slice()), (206, &small[1..3]));
    let changed = request(
        http,
        "GET",
        &target,
        &[("Range", "bytes=1-2"), ("If-Range", "\"other\"")],
    );
    assert_eq!((changed.status, &changed.body), (200, small));
}

#[test]
fn hostile_ranges_get_the_whole_or_416() {
    let (relay, http) = http_relay("");
    let up = upload(&relay);
    let small = &up.files[0].1;
    let target = format!("/c/{}/0", up.code);
    let len = small.len();
    for (value, status) in [
        ("bytes=-0", 416),
        ("bytes=99999999999999999999-", 416),
        ("bytes=300-", 416),
        ("bytes=5-2", 200),
        ("bytes=0-1,3-4", 200),
        ("bytes=0-100,50-150", 200),
        ("bytes=-99999999999999999999", 206),
        ("bytes=garbage", 200),
        ("lines=0-1", 200),
    ] {
        let r = range(http, &target, value);
        assert_eq!(r.status, status, "{value:?}");
        match status {
            416 => assert_eq!(
                r.header("content-range"),
                Some(format!("bytes */{len}").as_str())
            ),
            _ => assert_eq!(&r.body, small, "{value:?}"),
        }
    }
    // The empty file has no satisfiable range.
    assert_eq!(
        range(http, &format!("/c/{}/4", up.code), "bytes=0-").status,
        416
    );
    assert!(get(http, &format!("/c/{}/4", up.code)).body.is_empty());
}

#[test]
fn the_zip_is_whole_resumable_from_any_offset_and_holds_the_files() {
    let (relay, http) = http_relay("");
    let up = upload(&relay);
    let target = format!("/c/{}/zip", up.code);
    // Resumes first: nothing is cached yet, so each range computes the
    // CRCs it needs by itself.
    let head = request(http, "HEAD", &target, &[]);
    assert_eq!(head.status, 200);
    let total: usize = head.header("content-length").unwrap().parse().unwrap();
    let offsets = [total - 1, total / 2, 150_000, 301, 1, total - 40];
    let mut tails = Vec::new();
    for &at in &offsets {
        let r = range(http, &target, &format!("bytes={at}-"));
        assert_eq!(r.status, 206, "from {at}");
        tails.push(r.body);
    }
    let whole = get(http, &target);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body.len(), total);
    assert_eq!(whole.header("content-type"), Some("application/zip"));
    let disposition = whole.header("content-disposition").unwrap();
    assert!(
        disposition.contains(&format!("{}.zip", up.code)),
        "{disposition}"
    );
    for (at, tail) in offsets.iter().zip(&tails) {
        assert_eq!(tail.as_slice(), &whole.body[*at..], "resumed from {at}");
    }
    // The same bytes again, after the CRCs are cached; and a resume that
    // joins a prefix to the rest.
    assert_eq!(get(http, &target).body, whole.body);
    let cut = total / 3;
    let mut joined = range(http, &target, &format!("bytes=0-{}", cut - 1)).body;
    joined.extend(range(http, &target, &format!("bytes={cut}-")).body);
    assert_eq!(joined, whole.body);
    let etag = whole.header("etag").unwrap().to_owned();
    assert_eq!(
        request(http, "GET", &target, &[("If-None-Match", &etag)]).status,
        304
    );

    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(whole.body)).unwrap();
    assert_eq!(zip.len(), up.files.len());
    for (i, (name, bytes)) in up.files.iter().enumerate() {
        let mut entry = zip.by_index(i).unwrap();
        assert_eq!(entry.name(), name);
        let mut got = Vec::new();
        entry.read_to_end(&mut got).unwrap();
        assert_eq!(Sha1Digest::of(&got), Sha1Digest::of(bytes), "{name}");
    }
}

#[test]
fn hostile_paths_and_unknown_codes_are_refused_without_harm() {
    let (relay, http) = http_relay("");
    let up = upload(&relay);
    for target in [
        "/c/../..".to_owned(),
        "/c/%2e%2e".to_owned(),
        "/c/%2e%2e/%2e%2e".to_owned(),
        "/c/%00".to_owned(),
        format!("/c/{}%00", up.code),
        format!("/c/{}/%00", up.code),
        format!("/c/{}/..%2f..%2fetc%2fpasswd", up.code),
        format!("/c/{}/99", up.code),
        format!("/c/{}/99999999999999999999999", up.code),
        format!("/c/{}/%ff", up.code),
        "/c".to_owned(),
        "/c/".to_owned(),
        "/upload.js/..".to_owned(),
        "/etc/passwd".to_owned(),
    ] {
        let r = get(http, &target);
        assert!(matches!(r.status, 400 | 404), "{target}: {}", r.status);
        assert_secure_headers(&r);
    }
    // A NUL byte in the request line itself.
    let raw = exchange(
        wire_client::connect(http),
        b"GET /c/\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(raw.status, 400);
    // The relay still serves.
    assert_eq!(get(http, &format!("/c/{}", up.code)).status, 200);
}

#[test]
fn a_flood_of_unknown_codes_is_rate_limited_for_that_peer_only() {
    // Small per-peer bucket; the relay-wide one is left as it is.
    let (relay, http) = http_relay("[rate_limit]\npeer_burst = 5\npeer_per_sec = 0.1\n");
    let up = upload(&relay);
    let unknown = Code::from_parts(up.code.replace('-', "").len(), 12_345).unwrap();
    let first = get(http, &format!("/c/{unknown}"));
    assert_eq!(first.status, 404);
    assert!(first.text().contains("Unknown code"));
    let mut limited = None;
    for n in 0..50u128 {
        let guess = Code::from_parts(13, 1_000 + n).unwrap();
        let r = get(http, &format!("/c/{guess}/0"));
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 404, "guess {n}");
    }
    let limited = limited.expect("a flood of unknown codes gets 429");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    // The guesser's valid code waits too (the same limiter as the wire's);
    // another peer's does not.
    assert_eq!(get(http, &format!("/c/{}", up.code)).status, 429);
    let other = request_from(
        http,
        Ipv4Addr::new(127, 0, 0, 2),
        "GET",
        &format!("/c/{}", up.code),
        &[],
    );
    assert_eq!(other.status, 200);
}

#[test]
fn an_upload_in_progress_and_an_expired_code_get_their_own_pages() {
    let (relay, http) = http_relay("[codes]\nttl_secs = 3\n");
    let mut raw = Raw::connect(relay.addr());
    raw.hello();
    raw.announce(&[("later.bin", 1000u64, Sha1Digest::of(&[7u8; 1000]))]);
    let code = loop {
        match raw.recv() {
            Reply::Grant(g) => break g.code,
            Reply::Keepalive | Reply::Plan(_) => {}
            other => panic!("expected a grant, got {other:?}"),
        }
    };
    let page = get(http, &format!("/c/{code}"));
    assert_eq!(page.status, 409);
    assert!(page.text().contains("later.bin") && page.text().contains("<progress"));
    assert_eq!(get(http, &format!("/c/{code}/0")).status, 409);
    assert_eq!(get(http, &format!("/c/{code}/zip")).status, 409);
    drop(raw);
    std::thread::sleep(Duration::from_millis(3_500));
    let gone = get(http, &format!("/c/{code}"));
    assert_eq!(gone.status, 410, "{}", gone.text());
    assert!(gone.text().contains("expired"));
}

#[test]
fn connections_hold_session_slots_and_idle_ones_are_closed() {
    let (_relay, http) = http_relay("[limits]\nmax_sessions_per_peer = 2\nidle_timeout_secs = 1\n");
    let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(http).unwrap()).collect();
    // A third connection from the same address is over the per-peer cap:
    // closed without an answer.
    let mut third = TcpStream::connect(http).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    let _ = third.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // The idle ones are closed after the idle timeout, and free their slots.
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "closed when idle"
        );
    }
    // A slot is free again: the upload page is served.
    assert_eq!(get(http, "/").status, 200);
}

#[test]
fn http_traffic_lookups_and_downloads_are_counted_and_head_is_not_a_download() {
    let relay = RelayProcess::builder()
        .arg("--http")
        .arg("127.0.0.1:0")
        .arg("--metrics")
        .arg("127.0.0.1:0")
        .start();
    let (http, metrics) = (relay.listener("http"), relay.listener("metrics"));
    let up = upload(&relay);
    assert_eq!(get(http, &format!("/c/{}", up.code)).status, 200);
    assert_eq!(
        request(http, "HEAD", &format!("/c/{}/1", up.code), &[]).status,
        200
    );
    assert_eq!(
        request(http, "HEAD", &format!("/c/{}/zip", up.code), &[]).status,
        200
    );
    assert_eq!(get(http, &format!("/c/{}/1", up.code)).status, 200);
    let unknown = Code::from_parts(13, 4_242).unwrap();
    assert_eq!(get(http, &format!("/c/{unknown}")).status, 404);
    let scrape = get(metrics, "/metrics").text();
    assert_eq!(
        sample(&scrape, "pickup_downloads_started_total"),
        1.0,
        "HEAD is no download"
    );
    assert!(
        sample(
            &scrape,
            "pickup_transport_sent_bytes_total{transport=\"http\"}"
        ) > up.files[1].1.len() as f64
    );
    assert!(
        sample(
            &scrape,
            "pickup_transport_received_bytes_total{transport=\"http\"}"
        ) > 0.0
    );
    assert_eq!(
        sample(&scrape, "pickup_code_lookups_total{result=\"ok\"}"),
        4.0
    );
    assert_eq!(
        sample(&scrape, "pickup_code_lookups_total{result=\"unknown\"}"),
        1.0
    );
}

/// A relay with `[http] public_url` tells `pickup send` where its pages
/// are: the link it prints opens the batch's page; without one, `send`
/// prints no link.
#[test]
fn send_prints_the_page_link_of_a_relay_with_a_public_url() {
    // The public URL names the HTTP port before the relay starts: one the
    // OS just handed out and took back. A trailing '/' is dropped.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let relay = RelayProcess::builder()
        .config(&format!(
            "[http]\npublic_url = \"http://127.0.0.1:{port}/\"\n"
        ))
        .arg("--http")
        .arg(&format!("127.0.0.1:{port}"))
        .start();
    let http = relay.listener("http");
    assert_eq!(http.port(), port);
    let src = TempDir::new("link-src");
    let file = src.path().join("report.pdf");
    write_random(&file, 5_000, 21);

    let state = TempDir::new("link-state");
    let sent = run_json(
        pickup(state.path())
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&file),
    );
    let code = sent["code"].as_str().unwrap();
    let link = sent["link"].as_str().expect("a link in the JSON");
    assert_eq!(link, format!("http://127.0.0.1:{port}/c/{code}"));
    let target = link.strip_prefix(&format!("http://{http}")).unwrap();
    let page = get(http, target);
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("report.pdf"), "{}", page.text());

    // Plain output: the code first, as scripts read it, then the link.
    let out = run(pickup(state.path())
        .args(["send", "--relay", &relay.tcp()])
        .arg(&file));
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let code = Code::parse(lines[0]).unwrap();
    assert_eq!(
        lines[1..],
        [format!("link: http://127.0.0.1:{port}/c/{code}")],
        "{text}"
    );

    // A relay that does not know its public address sends no link.
    let (plain, _) = http_relay("");
    let sent = run_json(
        pickup(state.path())
            .args(["send", "--json", "--relay", &plain.tcp()])
            .arg(&file),
    );
    assert!(
        sent["code"].is_string() && sent.get("link").is_none(),
        "{sent}"
    );
    let out = run(pickup(state.path())
        .args(["send", "--relay", &plain.tcp()])
        .arg(&file));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
}
