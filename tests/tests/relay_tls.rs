//! TLS end to end: `pickup-relay cert self-signed`, `serve --tls`, and
//! `pickup send`/`get` over `tls://` trusting by `--pin` or `--ca`; a
//! wrong pin, and each side speaking to the other kind of port, fail
//! with one line and a bounded wait; `serve --https` serves the download
//! pages with the same certificate.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use pickup_tests::e2e::{
    pickup, relay_bin, run, run_json, same_file, stderr, write_random, TempDir,
};
use pickup_tests::relay_process::RelayProcess;

/// The longest a failing command may take: the client's 10 s handshake
/// timeout, and room for a slow machine.
const FAIL_WITHIN: Duration = Duration::from_secs(40);

/// A self-signed certificate for 127.0.0.1 in `dir`: (cert, key, fingerprint).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = run(Command::new(relay_bin())
        .args(["cert", "self-signed", "--name", "127.0.0.1", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key));
    assert!(out.status.success(), "cert self-signed: {}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the fingerprint alone: {stdout:?}");
    let fingerprint = lines[0].to_owned();
    let hex = fingerprint.strip_prefix("sha256:").unwrap();
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    (cert, key, fingerprint)
}

/// A relay with a TLS listener on a port the OS picks, beside its TCP one.
fn tls_relay(cert: &Path, key: &Path) -> RelayProcess {
    RelayProcess::builder()
        .arg("--tls")
        .arg("127.0.0.1:0")
        .arg("--cert")
        .arg(cert.to_str().unwrap())
        .arg("--key")
        .arg(key.to_str().unwrap())
        .start()
}

/// Sends `file` and gets it back into `dest` through `relay`, with `trust`
/// (`--pin X` or `--ca F`); the files must match.
fn round_trip(state: &Path, relay: &str, trust: &[&str], file: &Path, dest: &Path) {
    let sent = run_json(
        pickup(state)
            .args(["send", "--json", "--relay", relay])
            .args(trust)
            .arg(file),
    );
    let code = sent["code"].as_str().unwrap().to_owned();
    run_json(
        pickup(state)
            .args(["get", "--json", "--relay", relay])
            .args(trust)
            .arg(&code)
            .arg("-o")
            .arg(dest),
    );
    let name = file.file_name().unwrap();
    assert!(
        same_file(file, &dest.join(name)),
        "{} differs",
        name.to_string_lossy()
    );
}

#[test]
fn send_and_get_over_tls_with_a_pin_and_with_a_ca_file() {
    let work = TempDir::new("relay-tls");
    let (cert, key, fingerprint) = self_signed(work.path());
    let relay = tls_relay(&cert, &key);
    let tls = format!("tls://{}", relay.listener("tls"));
    let file = work.path().join("photo.jpg");
    write_random(&file, 2 * 1024 * 1024 + 5, 7);
    let state = work.path().join("state");

    round_trip(
        &state,
        &tls,
        &["--pin", &fingerprint],
        &file,
        &work.path().join("pinned"),
    );
    let ca = cert.to_str().unwrap();
    round_trip(
        &state,
        &tls,
        &["--ca", ca],
        &file,
        &work.path().join("by-ca"),
    );
    // The environment works as the flag does.
    let sent = run_json(
        pickup(&state)
            .env("PICKUP_PIN", &fingerprint)
            .args(["send", "--json", "--relay", &tls])
            .arg(&file),
    );
    assert!(sent["code"].is_string());
    assert!(relay.log().contains("TLS certificate"), "{}", relay.log());
}

/// Runs a `pickup` command that must fail: its exit code and stderr, and
/// that it took less than [`FAIL_WITHIN`].
fn failing(cmd: &mut Command) -> (Option<i32>, String) {
    let start = Instant::now();
    let out = run(cmd);
    let took = start.elapsed();
    assert!(took < FAIL_WITHIN, "{cmd:?} took {took:?}");
    (out.status.code(), stderr(&out))
}

#[test]
fn a_wrong_pin_fails_at_once_with_one_line_and_exit_code_4() {
    let work = TempDir::new("relay-tls-pin");
    let (cert, key, fingerprint) = self_signed(work.path());
    let relay = tls_relay(&cert, &key);
    let tls = format!("tls://{}", relay.listener("tls"));
    let file = work.path().join("f");
    std::fs::write(&file, b"secret").unwrap();
    let wrong = format!("sha256:{}", "ab".repeat(32));
    assert_ne!(wrong, fingerprint);

    let (code, err) = failing(
        pickup(&work.path().join("state"))
            .args(["send", "--relay", &tls, "--pin", &wrong])
            .arg(&file),
    );
    assert_eq!(code, Some(4), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err:?}");
    assert!(
        lines[0].contains("TLS: certificate for 127.0.0.1 does not match pinned")
            && lines[0].contains(&wrong)
            && lines[0].contains(&fingerprint),
        "{err}"
    );

    // No CA: the compiled-in web roots do not know a self-signed certificate.
    let (code, err) = failing(pickup(&work.path().join("state")).args([
        "info",
        "--relay",
        &tls,
        "AAAA-BBBB-CCCC-D",
    ]));
    assert_eq!(code, Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains("TLS: certificate for 127.0.0.1 is not signed by a known CA"),
        "{err}"
    );
}

#[test]
fn each_kind_of_client_at_the_other_kind_of_port_fails_cleanly() {
    let work = TempDir::new("relay-tls-mixed");
    let (cert, key, fingerprint) = self_signed(work.path());
    let relay = tls_relay(&cert, &key);
    let file = work.path().join("f");
    std::fs::write(&file, b"bytes").unwrap();
    let state = work.path().join("state");

    // TLS to the plain TCP port: the relay answers no ClientHello.
    let plain = format!("tls://{}", relay.tcp());
    let (code, err) = failing(
        pickup(&state)
            .args(["send", "--relay", &plain, "--pin", &fingerprint])
            .arg(&file),
    );
    assert_eq!(code, Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("TLS: "), "{err}");

    // Plain TCP to the TLS port: the handshake fails on the relay's side,
    // which closes the connection; without retransfer the client stops.
    let (code, err) = failing(
        pickup(&state)
            .args(["send", "--no-retransfer", "--relay"])
            .arg(relay.listener("tls").to_string())
            .arg(&file),
    );
    assert_eq!(code, Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");

    // The relay logged the failed handshake and still serves TLS.
    assert!(
        relay.log().contains("TLS handshake failed"),
        "{}",
        relay.log()
    );
    let tls = format!("tls://{}", relay.listener("tls"));
    round_trip(
        &state,
        &tls,
        &["--pin", &fingerprint],
        &file,
        &work.path().join("d"),
    );
}

/// `GET target` over HTTPS at `addr`, trusting only `cert`: the status
/// line and the body.
fn https_get(addr: SocketAddr, cert: &Path, target: &str) -> (String, Vec<u8>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut stream = rustls::StreamOwned::new(tls, tcp);
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    // The relay closes without close_notify after `Connection: close`
    // responses only if it is cut short; a whole response ends cleanly.
    stream.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(all[..split].to_vec()).unwrap();
    let status = head.lines().next().unwrap().to_owned();
    (status, all[split + 4..].to_vec())
}

#[test]
fn https_serves_the_pages_with_the_relays_certificate_and_a_stalled_handshake_blocks_no_one() {
    let work = TempDir::new("relay-https");
    let (cert, key, _) = self_signed(work.path());
    let mut relay = RelayProcess::builder()
        .arg("--https")
        .arg("127.0.0.1:0")
        .arg("--cert")
        .arg(cert.to_str().unwrap())
        .arg("--key")
        .arg(key.to_str().unwrap())
        .start();
    let https = relay.listener("https");
    let file = work.path().join("notes.txt");
    let bytes = write_random(&file, 70_000, 7);
    let state = work.path().join("state");
    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&file),
    );
    let code = sent["code"].as_str().unwrap().to_owned();

    // A client that connects and never says hello holds its own
    // handshake, not the listener.
    let mut stalled = TcpStream::connect(https).unwrap();
    let started = Instant::now();
    let (status, page) = https_get(https, &cert, &format!("/c/{code}"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(String::from_utf8_lossy(&page).contains("notes.txt"));
    let (status, body) = https_get(https, &cert, &format!("/c/{code}/0"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body == bytes, "the file over HTTPS differs");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "served only after the stalled handshake's timeout: {:?}",
        started.elapsed()
    );

    // Plain HTTP at the HTTPS port is no request: the relay ends the
    // handshake and serves nothing.
    let mut plain = TcpStream::connect(https).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    plain
        .write_all(format!("GET /c/{code}/0 HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.windows(4).any(|w| w == b"HTTP"),
        "plain HTTP answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // The stalled client is cut off after the handshake timeout (10 s).
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    let waited = Instant::now();
    let _ = stalled.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(
        waited.elapsed() < Duration::from_secs(25),
        "the stalled handshake held on for {:?}",
        waited.elapsed()
    );
    relay.wait_for_log("HTTPS handshake timed out");
}

#[test]
fn login_and_whoami_trust_a_tls_relay_by_its_pin() {
    let work = TempDir::new("relay-tls-login");
    let (cert, key, fingerprint) = self_signed(work.path());
    let relay = tls_relay(&cert, &key);
    let added = pickup_tests::e2e::run_with_input(
        Command::new(relay_bin())
            .args(["user", "add", "ada", "--password-stdin", "--data"])
            .arg(relay.data()),
        "correct horse 9\n",
    );
    assert!(added.status.success(), "user add: {}", stderr(&added));
    let tls = format!("tls://{}", relay.listener("tls"));
    let state = work.path().join("state");
    // Passwords go over TLS only: this is the way a remote user logs in.
    let login = pickup_tests::e2e::run_with_input(
        pickup(&state).args([
            "--relay",
            &tls,
            "--pin",
            &fingerprint,
            "login",
            "ada",
            "--password-stdin",
        ]),
        "correct horse 9\n",
    );
    assert!(login.status.success(), "login: {}", stderr(&login));
    let who = run(pickup(&state).args(["--relay", &tls, "--pin", &fingerprint, "whoami"]));
    assert!(who.status.success(), "whoami: {}", stderr(&who));
    assert!(
        String::from_utf8_lossy(&who.stdout).contains("ada"),
        "{:?}",
        String::from_utf8_lossy(&who.stdout)
    );
}
