//! A real browser for the tests: Debian's headless Chromium, driven
//! through `chromedriver` with a few WebDriver (W3C) commands.
//!
//! ```text
//!   test ──HTTP/1.1 + JSON──► chromedriver (127.0.0.1:free port) ──CDP──► chromium --headless
//!                                                                           └─ downloads ──► a test directory
//! ```
//!
//! The client is hand-rolled over `std::net` and `serde_json`: the tests
//! need some twenty commands, which do not justify an async runtime and a
//! WebDriver crate. One connection per command, its answer read to its
//! `Content-Length` within a timeout; a session is deleted (closing
//! Chromium) when its handle drops, and chromedriver killed when its own
//! handle drops, so a test declares the driver before the session.
//!
//! [`missing`] says whether the packages are installed, so that a test can
//! skip on a machine without them.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Debian's `chromium` package installs the browser here.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's `chromium-driver` package installs the driver here.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long one WebDriver command may take, page loads included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long chromedriver may take to answer its first `/status`.
const STARTUP: Duration = Duration::from_secs(30);

/// The key under which W3C WebDriver returns an element's id.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The first of [`CHROMIUM`] and [`CHROMEDRIVER`] that is not installed.
pub fn missing() -> Option<&'static str> {
    [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .find(|p| !Path::new(p).exists())
}

/// A running `chromedriver` on a loopback port, killed on drop.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    /// Starts chromedriver on a free loopback port, its output appended to
    /// `log`, and waits until it says it is ready.
    pub fn start(log: &Path) -> Driver {
        // chromedriver takes a port number, not a bound socket, so the port
        // is found by binding and releasing it; if another process takes it
        // meanwhile, chromedriver exits and the next attempt picks another.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let out = File::options()
                .create(true)
                .append(true)
                .open(log)
                .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
            let err = out.try_clone().expect("a second handle on the log");
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
            let mut driver = Driver {
                child,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            };
            match driver.wait_ready() {
                Ok(()) => return driver,
                Err(e) => last_error = e,
            }
        }
        panic!(
            "chromedriver never became ready ({last_error}); see {}",
            log.display()
        );
    }

    /// Polls `/status` every 100 ms for at most [`STARTUP`].
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let mut last = String::from("no answer");
        for _ in 0..(STARTUP.as_millis() / 100) {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("chromedriver exited: {status}"));
            }
            match call(self.addr, "GET", "/status", None) {
                Ok(v) if v["ready"] == true => return Ok(()),
                Ok(v) => last = v.to_string(),
                Err(e) => last = e,
            }
            if start.elapsed() > STARTUP {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(last)
    }

    /// Opens headless Chromium with downloads saved, without asking, into
    /// `downloads` (an absolute path).
    pub fn session(&self, downloads: &Path) -> Session {
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            // Bounded page loads and no implicit wait: every wait is the test's.
            "timeouts": { "pageLoad": COMMAND_TIMEOUT.as_millis() as u64, "implicit": 0 },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    // Tests run as root in CI containers, where the sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    // No traffic to Google's services: the test must work offline.
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    // A laptop-sized page for the screenshot.
                    "--window-size=900,700",
                ],
                "prefs": {
                    "download.default_directory": downloads.to_str().expect("a UTF-8 path"),
                    "download.prompt_for_download": false,
                    // A second download from the same page would otherwise wait
                    // for a permission ("download multiple files") nobody grants.
                    "profile.default_content_setting_values.automatic_downloads": 1,
                },
            },
        }}});
        let value = call(self.addr, "POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("new WebDriver session: {e}"));
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {value}"))
            .to_owned();
        Session {
            driver: self.addr,
            id,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An element of the current page, by its WebDriver id.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A browser window; deleted (Chromium closed) on drop.
#[derive(Debug)]
pub struct Session {
    driver: SocketAddr,
    id: String,
}

impl Session {
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.id);
        call(self.driver, method, &path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Loads `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The page's elements matching the CSS `selector`, in document order.
    pub fn find_all(&self, selector: &str) -> Vec<Element> {
        let found = self.command(
            "POST",
            "/elements",
            Some(&json!({ "using": "css selector", "value": selector })),
        );
        found
            .as_array()
            .unwrap_or_else(|| panic!("not a list of elements: {found}"))
            .iter()
            .map(|e| {
                Element(
                    e[ELEMENT_KEY]
                        .as_str()
                        .unwrap_or_else(|| panic!("not an element: {e}"))
                        .to_owned(),
                )
            })
            .collect()
    }

    /// The text of `element` as rendered.
    pub fn text(&self, element: &Element) -> String {
        let v = self.command("GET", &format!("/element/{}/text", element.0), None);
        v.as_str()
            .unwrap_or_else(|| panic!("not a text: {v}"))
            .to_owned()
    }

    /// The resolved value of `element`'s property `name` (an `href` comes
    /// back absolute).
    pub fn property(&self, element: &Element, name: &str) -> Value {
        self.command(
            "GET",
            &format!("/element/{}/property/{name}", element.0),
            None,
        )
    }

    /// Clicks `element` as a user would (a trusted event).
    pub fn click(&self, element: &Element) {
        self.command(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(&json!({})),
        );
    }

    /// Types `text` into `element`; for an `<input type=file>`, `text` is
    /// the absolute paths of the files to choose, one per line.
    pub fn send_keys(&self, element: &Element, text: &str) {
        self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(&json!({ "text": text })),
        );
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page
    /// and returns what it returns.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// Reloads the page, as the browser's reload button does, and waits
    /// for it to load.
    pub fn refresh(&self) {
        self.command("POST", "/refresh", Some(&json!({})));
    }

    /// Resizes the window to `width` × `height` CSS pixels.
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(&json!({ "width": width, "height": height })),
        );
    }

    /// Limits the page's network to `upload` and `download` bytes per
    /// second (Chromium's emulated network conditions, which chromedriver
    /// exposes as an extension command); stays until changed.
    pub fn throttle(&self, upload: u64, download: u64) {
        self.command(
            "POST",
            "/chromium/network_conditions",
            Some(&json!({ "network_conditions": {
                "offline": false,
                "latency": 0,
                "upload_throughput": upload,
                "download_throughput": download,
            }})),
        );
    }

    /// Lifts the limits of [`Session::throttle`].
    pub fn unthrottle(&self) {
        self.command("DELETE", "/chromium/network_conditions", None);
    }

    /// Takes the page off the network, as a dropped Wi-Fi does: Chromium's
    /// emulated offline fails the requests in flight and every new one at
    /// once, until [`Session::throttle`] or [`Session::unthrottle`] puts
    /// it back online.
    pub fn go_offline(&self) {
        self.command(
            "POST",
            "/chromium/network_conditions",
            Some(&json!({ "network_conditions": {
                "offline": true,
                "latency": 0,
                // Required by chromedriver; meaningless while offline.
                "upload_throughput": 1 << 20,
                "download_throughput": 1 << 20,
            }})),
        );
    }

    /// Sets the page origin's permission `name` (`clipboard-read`,
    /// `clipboard-write`, ...) to `state` (`granted`, `denied`, `prompt`),
    /// as a person answering the browser's question would (WebDriver's
    /// "Set Permission", from the Permissions specification).
    pub fn set_permission(&self, name: &str, state: &str) {
        self.command(
            "POST",
            "/permissions",
            Some(&json!({ "descriptor": { "name": name }, "state": state })),
        );
    }

    /// Runs `script` (a function body whose last argument is a callback)
    /// in the page and returns the value it passes to that callback: for
    /// what the page can only learn through a promise.
    pub fn execute_async(&self, script: &str, args: &[Value]) -> Value {
        self.command(
            "POST",
            "/execute/async",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let v = self.command("GET", "/screenshot", None);
        let text = v
            .as_str()
            .unwrap_or_else(|| panic!("not a screenshot: {v}"));
        base64_decode(text).expect("the screenshot in base64")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = call(
            self.driver,
            "DELETE",
            &format!("/session/{}", self.id),
            None,
        );
    }
}

/// One WebDriver command: its `value`, or the error it reported.
fn call(
    driver: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect_timeout(&driver, Duration::from_secs(5))
        .map_err(|e| format!("connect to {driver}: {e}"))?;
    stream
        .set_read_timeout(Some(COMMAND_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(COMMAND_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {driver}\r\nConnection: close\r\n\
Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    let (status, body) = read_response(&mut stream)?;
    let mut doc: Value = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "status {status}, not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    let value = doc["value"].take();
    if status != 200 {
        return Err(format!(
            "status {status}: {} ({})",
            value["error"], value["message"]
        ));
    }
    Ok(value)
}

/// Bounds what one answer may hold (a screenshot is well below it).
const MAX_RESPONSE: usize = 64 << 20;

/// Reads one response: its status and body. chromedriver keeps the
/// connection open whatever the request says and sends `Content-Length`,
/// so the body ends where that length says, not at the end of the stream.
fn read_response(stream: &mut impl Read) -> Result<(u16, Vec<u8>), String> {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut framing = None;
    // Every round reads at least one byte or returns, and the size is bounded.
    for _ in 0..=MAX_RESPONSE {
        if framing.is_none() {
            framing = parse_head(&all)?;
        }
        if let Some((status, body_start, len)) = framing {
            if all.len() >= body_start + len {
                return Ok((status, all[body_start..body_start + len].to_vec()));
            }
        }
        if all.len() > MAX_RESPONSE {
            return Err(format!("an answer over {MAX_RESPONSE} bytes"));
        }
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed after {:?}",
                String::from_utf8_lossy(&all)
            ));
        }
        all.extend_from_slice(&buf[..n]);
    }
    Err(format!("an answer over {MAX_RESPONSE} bytes"))
}

/// Once `all` holds a whole header: the status, where the body starts and
/// its `Content-Length`; `None` while the header is incomplete.
fn parse_head(all: &[u8]) -> Result<Option<(u16, usize, usize)>, String> {
    let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&all[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    Ok(Some((status, end + 4, len)))
}

/// Standard base64 (with padding, as WebDriver sends screenshots).
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for group in bytes.chunks(4) {
        if group.len() == 1 {
            return Err("a lone base64 digit at the end".into());
        }
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            let s = sextet(c).ok_or_else(|| format!("not base64: {:?}", char::from(c)))?;
            n |= s << (18 - 6 * i);
        }
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..group.len() - 1]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_vectors() {
        // RFC 4648, section 10.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_decode(coded).unwrap(), plain.as_bytes(), "{coded}");
        }
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Zm9vY").is_err());
    }

    #[test]
    fn responses_end_at_their_content_length() {
        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length:3\r\n\r\nabcEXTRA";
        assert_eq!(
            read_response(&mut &raw[..]).unwrap(),
            (404, b"abc".to_vec())
        );
        assert!(read_response(&mut &raw[..20]).is_err());
        assert!(read_response(&mut &b"HTTP/1.1 200 OK\r\n\r\n"[..]).is_err());
    }
}
