//! The configuration's parsing, defaults, listener choice and validation.

use std::net::SocketAddr;

use super::*;

#[test]
fn empty_file_gives_defaults_and_defaults_validate() {
    let c: Config = toml::from_str("").unwrap();
    assert_eq!(c, Config::default());
    c.validate().unwrap();
    assert_eq!(c.tcp.max_frame, 65_536);
    assert_eq!(c.serial.max_frame, 4096);
    assert_eq!(c.serial.window, 8 << 20);
    assert_eq!(c.code_len(), 13);
    assert_eq!(c.metrics.listen, None, "no metrics listener unless asked");
}

#[test]
fn the_metrics_listener_is_one_address() {
    let c: Config = toml::from_str("[metrics]\nlisten = \"127.0.0.1:9425\"").unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9425".parse().unwrap()));
    assert!(toml::from_str::<Config>("[metrics]\nport = 1").is_err());
}

#[test]
fn every_section_parses_and_unknown_keys_are_refused() {
    let c: Config = toml::from_str(
        r#"
        data = "/tmp/x"
        [tcp]
        listen = ["127.0.0.1:1", "[::1]:2"]
        [tls]
        listen = ["127.0.0.1:4"]
        key = "/etc/k.pem"
        [http]
        listen = ["127.0.0.1:5"]
        https = ["127.0.0.1:7"]
        [serial]
        ports = ["/dev/ttyUSB0@9600", "/dev/ttyACM0"]
        [limits]
        max_file_size = 10
        [codes]
        ttl_secs = 5
        length = 20
        [rate_limit]
        peer_burst = 2
        "#,
    )
    .unwrap();
    assert_eq!(c.tcp.listen.len(), 2);
    assert_eq!(c.tls.listen.len(), 1);
    assert_eq!(
        c.tls_files(),
        ("/tmp/x/tls-cert.pem".into(), "/etc/k.pem".into())
    );
    assert!(c.tls_link().encrypted && !c.tcp_link().encrypted);
    let mut flags = c.clone();
    let serial = ["/dev/ttyS0".to_owned()];
    flags.choose_listeners(&Listeners {
        serial: &serial,
        ..Listeners::default()
    });
    assert!(
        flags.tcp.listen.is_empty(),
        "flags replace every file listener"
    );
    assert_eq!(flags.serial.ports, ["/dev/ttyS0"]);
    let mut none = Config::default();
    none.choose_listeners(&Listeners::default());
    assert_eq!(none.tcp.listen, [DEFAULT_TCP_LISTEN]);
    let tls: SocketAddr = "127.0.0.1:3".parse().unwrap();
    let mut tls_only = c.clone();
    tls_only.choose_listeners(&Listeners {
        tls: &[tls],
        ..Listeners::default()
    });
    assert!(tls_only.tcp.listen.is_empty() && tls_only.serial.ports.is_empty());
    assert_eq!(tls_only.tls.listen, [tls]);
    assert!(
        tls_only.http.listen.is_empty(),
        "the file's HTTP listener is replaced too"
    );
    assert_eq!(c.http.listen.len(), 1);
    let http: SocketAddr = "127.0.0.1:6".parse().unwrap();
    let mut http_only = Config::default();
    http_only.choose_listeners(&Listeners {
        http: &[http],
        ..Listeners::default()
    });
    assert_eq!(http_only.http.listen, [http]);
    assert_eq!(http_only.tcp.listen, [DEFAULT_TCP_LISTEN]);
    assert_eq!(c.http.https.len(), 1);
    assert!(
        http_only.http.https.is_empty(),
        "--http replaces the file's HTTPS listener too"
    );
    let mut https_only = c.clone();
    https_only.choose_listeners(&Listeners {
        https: &[http],
        ..Listeners::default()
    });
    assert_eq!(https_only.http.https, [http]);
    assert!(https_only.http.listen.is_empty() && https_only.tls.listen.is_empty());
    assert_eq!(https_only.tcp.listen, [DEFAULT_TCP_LISTEN]);
    assert_eq!(c.limits.max_file_size, 10);
    assert_eq!(c.limits.max_files_per_batch, 1000);
    assert_eq!(c.code_len(), 20);
    assert_eq!(c.rate_limit.peer_burst, 2);
    assert_eq!(
        c.serial_ports().unwrap(),
        [
            SerialPortSpec {
                path: "/dev/ttyUSB0".into(),
                baud: 9600
            },
            SerialPortSpec {
                path: "/dev/ttyACM0".into(),
                baud: 115_200
            },
        ]
    );
    assert!(toml::from_str::<Config>("[limits]\nmax_flies = 3").is_err());
    assert!(toml::from_str::<Config>("colour = 1").is_err());
}

#[test]
fn the_per_peer_reservation_defaults_to_a_quarter_of_the_quota_but_one_batch_at_least() {
    let s = Config::default().settings();
    assert_eq!(s.quota.max_reserved_per_peer, 8 << 30);
    assert_eq!(s.quota.max_incomplete_batches_per_peer, 16);
    assert_eq!(s.quota.incomplete_ttl_secs, 3600);
    let small = |extra: &str| -> Settings {
        let text = format!("[limits]\ndisk_quota = 4000\nmax_batch_size = 2000\n{extra}");
        toml::from_str::<Config>(&text).unwrap().settings()
    };
    assert_eq!(small("").quota.max_reserved_per_peer, 2000);
    assert_eq!(
        small("max_reserved_per_peer = 3000\n")
            .quota
            .max_reserved_per_peer,
        3000
    );
    let mut c = Config::default();
    c.limits.max_incomplete_batches_per_peer = 0;
    assert!(c.validate().is_err());
}

#[test]
fn the_auth_section_parses_over_its_defaults_and_is_checked() {
    let c: Config = toml::from_str(
        "[auth]\naccount_lock_secs = 30\nallow_anonymous_upload = false\n\
         [auth.password]\nmemory_kib = 65536\n",
    )
    .unwrap();
    let a = c.settings().auth;
    assert_eq!(a.account_lock_secs, 30);
    assert!(!a.allow_anonymous_upload && a.allow_anonymous_download);
    assert_eq!((a.password.memory_kib, a.password.iterations), (65_536, 2));
    assert_eq!(a.token_ttl_secs, 30 * 24 * 3600);
    assert_eq!(
        (a.account_failures, a.peer_failures, a.peer_window_secs),
        (5, 20, 600)
    );
    c.validate().unwrap();
    assert!(toml::from_str::<Config>("[auth]\npasword = 1").is_err());
    let mut c = Config::default();
    c.auth.password.memory_kib = 1;
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.auth.account_failures = 0;
    assert!(c.validate().is_err());
}

#[test]
fn the_upload_page_is_on_unless_turned_off() {
    assert!(Config::default().http.upload_page);
    let c: Config = toml::from_str("[http]\nlisten = [\"127.0.0.1:5\"]").unwrap();
    assert!(c.http.upload_page, "on when [http] leaves it out");
    let c: Config = toml::from_str("[http]\nupload_page = false").unwrap();
    assert!(!c.http.upload_page);
    assert!(toml::from_str::<Config>("[http]\nupload_page = \"no\"").is_err());
}

#[test]
fn the_public_url_loses_its_trailing_slash_and_must_be_inert() {
    let c: Config = toml::from_str("[http]\npublic_url = \"https://pickup.example.org/\"").unwrap();
    c.validate().unwrap();
    assert_eq!(
        c.settings().page_url.as_deref(),
        Some("https://pickup.example.org")
    );
    assert_eq!(Config::default().settings().page_url, None);
    for bad in [
        "pickup.example.org",
        "https://",
        "https://a b",
        "https://x\u{1b}[2J",
    ] {
        let mut c = Config::default();
        c.http.public_url = Some(bad.into());
        let e = c.validate().unwrap_err();
        assert!(e.starts_with("http.public_url"), "{e}");
    }
}

#[test]
fn the_push_section_parses_over_its_defaults_and_is_checked() {
    let c: Config =
        toml::from_str("[push]\nconfirm_deadline_secs = 60\nmax_open_per_terminal = 5\n").unwrap();
    let p = c.settings().push;
    assert_eq!((p.confirm_deadline_secs, p.max_open_per_terminal), (60, 5));
    assert_eq!(p.offline_ttl_secs, 604_800, "the rest keep their defaults");
    assert!(c.validate().is_ok());
    assert!(toml::from_str::<Config>("[push]\nconfirm_deadline = 1").is_err());
    let mut c = Config::default();
    c.push.max_open_per_sender_terminal = 0;
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.push.max_open_per_terminal = 70_000;
    assert!(c.validate().is_err(), "an Inbox counts in 16 bits");
}

#[test]
fn the_forward_section_parses_over_its_defaults_and_is_checked() {
    let c: Config = toml::from_str("[forward]\nmax_active = 2\nbackoff_cap_secs = 10\n").unwrap();
    let f = c.settings().forward.clone();
    assert_eq!((f.max_active, f.backoff_cap_secs), (2, 10));
    assert_eq!(
        (f.max_attempts, f.lease_secs, f.max_open_per_user),
        (8, 60, 64),
        "the rest keep their defaults"
    );
    assert!(c.validate().is_ok());
    // 2^n seconds after the n-th failure, capped.
    let waits: Vec<u64> = (1..=5).map(|n| f.backoff_secs(n)).collect();
    assert_eq!(waits, [2, 4, 8, 10, 10]);
    assert_eq!(f.backoff_secs(200), 10, "no overflow");
    assert!(toml::from_str::<Config>("[forward]\nmax_actives = 1").is_err());
    for bad in [
        "[forward]\nmax_active = 0",
        "[forward]\nmax_attempts = 256",
        "[forward]\nbackoff_cap_secs = 0",
        "[forward]\nlease_secs = 3",
        "[forward]\nmax_open_per_user = 0",
        "[forward]\nkeep_finished_secs = 0",
    ] {
        let c: Config = toml::from_str(bad).unwrap();
        assert!(c.validate().is_err(), "{bad}");
    }
}

/// Finished forwards are kept a week unless set; the sweep's cut-off is
/// that long before now, and never before 0.
#[test]
fn finished_forwards_are_kept_for_keep_finished_secs() {
    let f = Config::default().settings().forward.clone();
    assert_eq!(f.keep_finished_secs, 604_800);
    assert_eq!(f.finished_before(1_000_000), 1_000_000 - 604_800);
    let c: Config = toml::from_str("[forward]\nkeep_finished_secs = 60\n").unwrap();
    assert!(c.validate().is_ok());
    let f = c.settings().forward.clone();
    assert_eq!(f.finished_before(1_000), 940);
    assert_eq!(f.finished_before(59), 0, "nothing finished before 0");
    let mut c = Config::default();
    c.forward.keep_finished_secs = 0;
    assert!(c
        .validate()
        .unwrap_err()
        .contains("forward.keep_finished_secs"));
}

/// The README's defaults block is what the relay does with no config.
#[test]
fn the_readme_states_the_defaults() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("```toml\ndata = ")
        .expect("the README's defaults block");
    let block = &readme[start + "```toml\n".len()..];
    let block = &block[..block.find("```").unwrap()];
    let stated: Config = toml::from_str(block).unwrap();
    assert_eq!(stated, Config::default());
}

#[test]
fn validation_catches_bad_ranges() {
    let mut c = Config::default();
    c.tcp.max_frame = 10;
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.rate_limit.global_per_sec = 0.0;
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.rate_limit.reserved_share = 1.0;
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.codes.length = Some(30);
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.serial.ports = vec!["/dev/x@fast".into()];
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.limits.listen_backlog = 0;
    assert!(c.validate().unwrap_err().contains("listen_backlog"));
}

#[test]
fn the_postgres_backend_needs_a_database_and_a_bucket() {
    let c: Config = toml::from_str("[store]\nbackend = \"postgres\"\n").unwrap();
    assert!(c.validate().unwrap_err().contains("postgres_url"));
    let c: Config = toml::from_str(
        "[store]\nbackend = \"postgres\"\npostgres_url = \"host=/run/pg dbname=p\"\n",
    )
    .unwrap();
    assert!(c.validate().unwrap_err().contains("bucket"));
    let c: Config = toml::from_str(
        "[store]\nbackend = \"postgres\"\npostgres_url = \"host=/run/pg dbname=p\"\n\
         [store.s3]\nbucket = \"pickup\"\nendpoint = \"http://127.0.0.1:9000\"\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.store.backend, Backend::Postgres);
    // Postgres settings under the SQLite backend are a mistake, said at start.
    let c: Config = toml::from_str("[store]\npostgres_url = \"host=/x\"\n").unwrap();
    assert!(c.validate().unwrap_err().contains("backend = \"postgres\""));
    assert!(toml::from_str::<Config>("[store]\nbackend = \"mysql\"\n").is_err());
}

#[test]
fn peers_are_read_from_toml_and_their_keys_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("b.key");
    std::fs::write(&key, "0f".repeat(16)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[[peers]]\nname = \"relay-b\"\naddr = \"tls://127.0.0.1:7426\"\nkey_file = {key:?}\n\
         pin = \"sha256:{}\"\n\n[[peers]]\nname = \"relay-c\"\naddr = \"tcp://c.example:7425\"\n\
         key_file = {key:?}\n",
        "ab".repeat(32)
    );
    let c: Config = toml::from_str(&text).unwrap();
    c.validate().unwrap();
    let peers = c.load_peers().unwrap();
    let b = peers.get("relay-b").unwrap();
    assert_eq!(b.key, pickup_proto::identity::DeviceKey([0x0f; 16]));
    assert_eq!(
        b.addr,
        PeerAddr::Tls {
            hostport: "127.0.0.1:7426".into(),
            trust: PeerTrust::Pin([0xab; 32])
        }
    );
    assert_eq!(
        peers.get("relay-c").unwrap().addr,
        PeerAddr::Tcp("c.example:7425".into())
    );
    // The settings carry none until the caller puts them in.
    assert!(c.settings().peers.is_empty());
    // A key file others may read is refused at start, naming the peer.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = c.load_peers().unwrap_err();
    assert!(e.contains("relay-b") && e.contains("chmod 600"), "{e}");
    // Names twice, bad names and unknown keys are refused before any file is read.
    let twice = text.replace("relay-c", "relay-b");
    let e = toml::from_str::<Config>(&twice)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(e.contains("listed twice"), "{e}");
    let bad = text.replace("relay-c", "Relay C");
    assert!(toml::from_str::<Config>(&bad).unwrap().validate().is_err());
    assert!(toml::from_str::<Config>(&format!("{text}secret = \"x\"\n")).is_err());
}
