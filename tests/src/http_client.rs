//! A raw HTTP/1.1 client over std's `TcpStream`, for the tests of the
//! relay's HTTP face: every request says `Connection: close` and its
//! answer is read whole, so what the relay sent is checked byte for byte
//! (no client library smooths anything over).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crate::relay_process::RelayProcess;
use crate::wire_client;

/// How long a test waits for an answer before it fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A response, read whole.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header field named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `raw` (a whole request) over `stream` and reads the answer; a
/// body must be as long as its `Content-Length` says.
///
/// # Panics
///
/// If the answer is no HTTP response or does not come in time.
pub fn exchange(mut stream: TcpStream, raw: &[u8]) -> Response {
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("a read timeout");
    stream.write_all(raw).expect("send a request");
    read_response(stream, raw.starts_with(b"HEAD"))
}

/// Reads a response from `stream` to its end.
fn read_response(mut stream: TcpStream, head: bool) -> Response {
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("read an answer");
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&all)));
    let head_text = String::from_utf8(all[..split].to_vec()).expect("a text head");
    let body = all[split + 4..].to_vec();
    let mut lines = head_text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head_text:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header field");
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let r = Response {
        status,
        headers,
        body,
    };
    if !head && r.status != 304 {
        if let Some(len) = r.header("content-length") {
            assert_eq!(r.body.len(), len.parse::<usize>().expect("a length"));
        }
    }
    r
}

/// The head of a request: `METHOD target`, `Host`, `Connection: close`
/// and `headers`.
fn head_of(http: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> String {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n");
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    raw
}

/// `METHOD target` from 127.0.0.1 with `headers`.
pub fn request(http: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    request_from(http, Ipv4Addr::LOCALHOST, method, target, headers)
}

/// `METHOD target` from `source` (a loopback address) with `headers`.
pub fn request_from(
    http: SocketAddr,
    source: Ipv4Addr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Response {
    let raw = head_of(http, method, target, headers);
    exchange(wire_client::connect_from(http, source), raw.as_bytes())
}

/// `METHOD target` with `headers` and `body` (its `Content-Length` added).
pub fn request_with_body(
    http: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let len = body.len().to_string();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("Content-Length", &len));
    let mut raw = head_of(http, method, target, &all).into_bytes();
    raw.extend_from_slice(body);
    exchange(wire_client::connect_from(http, Ipv4Addr::LOCALHOST), &raw)
}

/// Starts `METHOD target` declaring a body of `declared` bytes, sends only
/// `sent` of them and closes the connection, as a client that dies mid-
/// upload does; waits until the relay has closed its side (it read what
/// was sent).
pub fn abandon_body(
    http: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    declared: u64,
    sent: &[u8],
) {
    let len = declared.to_string();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("Content-Length", &len));
    let mut raw = head_of(http, method, target, &all).into_bytes();
    raw.extend_from_slice(sent);
    let mut stream = wire_client::connect_from(http, Ipv4Addr::LOCALHOST);
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("a read timeout");
    stream.write_all(&raw).expect("send a partial request");
    stream.flush().expect("flush");
    // Our side ends: the relay sees the body stop short.
    stream.shutdown(Shutdown::Write).expect("shut down writing");
    // Whatever it answers (or not), it has closed when this returns.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

/// A relay serving HTTP too, on a port the OS picks; `config` as TOML.
pub fn http_relay(config: &str) -> (RelayProcess, SocketAddr) {
    let relay = RelayProcess::builder()
        .config(config)
        .arg("--http")
        .arg("127.0.0.1:0")
        .start();
    let http = relay.listener("http");
    (relay, http)
}

/// The value of the sample `series` (metric name and labels, as the
/// relay's `/metrics` encodes them) in the OpenMetrics text `scrape`.
pub fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{scrape}"))
}
