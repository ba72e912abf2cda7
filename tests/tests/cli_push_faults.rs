//! Addressed delivery under bad input and faults, with the real binaries
//! (issue 13): names that cannot be probed, a receipt forged by another
//! terminal, one sender flooding a terminal, the relay killed mid-download,
//! and a target's link cut every few hundred KiB.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use pickup_proto::message::{Message, NoticeRefuse, Receipt, RefuseReason};
use pickup_proto::ErrorCode;
use pickup_tests::e2e::faulty::{LinkFaults, Proxy};
use pickup_tests::e2e::push::{
    add_user, delivery, event, login, push, send_to, status_text, wait_for_state, Terminal,
};
use pickup_tests::e2e::{
    json, pickup, run, same_file, stderr, stdout, wait_for, write_random, Running, TempDir,
};
use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::{Raw, Reply};

/// A relay with users `ada` and `bob`, both logged in (state directories
/// `work/ada`, `work/bob`), and ada's terminal `sensor-1`.
struct Setup {
    relay: RelayProcess,
    work: TempDir,
    sensor: Terminal,
}

impl Setup {
    fn start(config: &str) -> Setup {
        let relay = RelayProcess::builder().config(config).start();
        let work = TempDir::new("cli-push-faults");
        for user in ["ada", "bob"] {
            add_user(relay.data(), user);
            login(&work.path().join(user), &relay.tcp(), user);
        }
        let sensor = Terminal::add(relay.data(), work.path(), "sensor-1", "ada");
        Setup {
            relay,
            work,
            sensor,
        }
    }

    fn user(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn file(&self, name: &str, len: usize, seed: u64) -> PathBuf {
        let path = self.work.path().join(name);
        write_random(&path, len, seed);
        path
    }
}

/// `send FILE --to T` without `--json`: fails with exit 2 and one line on
/// stderr, returned.
fn refused_push(state: &Path, relay: &str, file: &Path, terminal: &str) -> String {
    let out = run(pickup(state)
        .args(["--relay", relay, "send"])
        .arg(file)
        .args(["--to", terminal]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    err
}

#[test]
fn unknown_and_foreign_terminals_read_alike_until_the_owner_allows() {
    let s = Setup::start("");
    let tcp = s.relay.tcp();
    let bob = s.user("bob");
    let nobody = refused_push(&bob, &tcp, &s.file("a.bin", 5_000, 201), "no-such-1");
    let foreign = refused_push(&bob, &tcp, &s.file("b.bin", 5_000, 202), "sensor-1");
    assert_eq!(nobody, foreign, "an existing name reads as a missing one");
    assert!(nobody.contains("unknown terminal"), "{nobody}");
    assert!(!nobody.contains("sensor-1") && !nobody.contains("no-such-1"));

    let allowed = run(pickup(&s.user("ada")).args(["--relay", &tcp, "allow", "bob"]));
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert!(stdout(&allowed).contains("bob may now send"), "{allowed:?}");

    let c = s.file("c.bin", 5_000, 203);
    let code = push(&bob, &tcp, &c, &["sensor-1"]);
    let dest = s.work.path().join("dest");
    let out = run(s.sensor.listen(&tcp, &dest).arg("--once"));
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = event(stdout(&out).trim());
    assert_eq!(
        (&ev["event"], &ev["sender"]),
        (&"delivered".into(), &"bob".into())
    );
    assert_eq!(ev["code"], code.as_str());
    assert!(same_file(&c, &dest.join("c.bin")));
    assert_eq!(
        delivery(&bob, &tcp, &code, "sensor-1")["state"],
        "delivered"
    );
}

/// A raw session authenticated as `t`.
fn raw_as(relay: &RelayProcess, t: &Terminal) -> Raw {
    let mut raw = Raw::connect(relay.addr());
    raw.hello();
    raw.terminal_auth(&t.name, &t.key);
    raw
}

/// The next reply that is not a keepalive.
fn answer(raw: &mut Raw) -> Reply {
    for _ in 0..100 {
        match raw.recv() {
            Reply::Keepalive => continue,
            other => return other,
        }
    }
    panic!("only keepalives");
}

#[test]
fn a_receipt_forged_by_another_terminal_changes_nothing() {
    let s = Setup::start("");
    let tcp = s.relay.tcp();
    let data = s.relay.data().to_path_buf();
    let ada = s.user("ada");
    // Another terminal of the same owner, and one of another user.
    let sibling = Terminal::add(&data, s.work.path(), "sensor-2", "ada");
    let stranger = Terminal::add(&data, s.work.path(), "bob-1", "bob");
    let fw = s.file("fw.bin", 40_000, 211);
    let code = push(&ada, &tcp, &fw, &["sensor-1"]);

    // The notice's id, as sensor-1 hears it; no verdict given.
    let id = {
        let mut target = raw_as(&s.relay, &s.sensor);
        target.send(Message::Listen);
        assert_eq!(answer(&mut target), Reply::Inbox(1));
        match answer(&mut target) {
            Reply::Notice(id, c) => {
                assert_eq!(c.to_string(), code);
                id
            }
            other => panic!("expected the notice, got {other:?}"),
        }
    };
    for forger in [&sibling, &stranger] {
        let mut raw = raw_as(&s.relay, forger);
        raw.send(Message::Receipt(Receipt { id }));
        assert_eq!(
            answer(&mut raw),
            Reply::Error(ErrorCode::UnknownNotice, 0),
            "{}'s receipt for sensor-1's notice",
            forger.name
        );
        raw.send(Message::NoticeRefuse(NoticeRefuse {
            id,
            reason: RefuseReason::Declined,
        }));
        assert_eq!(
            answer(&mut raw),
            Reply::Error(ErrorCode::UnknownNotice, 0),
            "{}'s refusal of sensor-1's notice",
            forger.name
        );
    }
    let d = delivery(&ada, &tcp, &code, "sensor-1");
    assert!(
        d["state"] == "queued" || d["state"] == "notified",
        "still open after the forgeries: {d}"
    );
    let text = status_text(&ada, &tcp, &code);
    assert!(!text.contains("delivered"), "{text}");

    // The real terminal still gets it.
    let dest = s.work.path().join("dest");
    let out = run(s.sensor.listen(&tcp, &dest).arg("--once"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(same_file(&fw, &dest.join("fw.bin")));
    assert_eq!(
        delivery(&ada, &tcp, &code, "sensor-1")["state"],
        "delivered"
    );
}

#[test]
fn a_flooding_sender_hits_its_cap_and_others_still_get_through() {
    const CAP: usize = 3;
    let s = Setup::start(&format!(
        "[push]\nmax_open_per_sender_terminal = {CAP}\nmax_open_per_terminal = 10\n"
    ));
    let tcp = s.relay.tcp();
    let (ada, bob) = (s.user("ada"), s.user("bob"));
    let allowed = run(pickup(&ada).args(["--relay", &tcp, "allow", "bob"]));
    assert!(allowed.status.success(), "{}", stderr(&allowed));

    let mut codes = Vec::new();
    for i in 0..CAP {
        let f = s.file(&format!("flood-{i}.bin"), 3_000, 220 + i as u64);
        codes.push(push(&bob, &tcp, &f, &["sensor-1"]));
    }
    let over = s.file("flood-over.bin", 3_000, 229);
    let out = send_to(&bob, &tcp, &[&over], &["sensor-1"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = json(&out)["error"]["message"].as_str().unwrap().to_owned();
    assert!(err.contains("too many deliveries"), "{err}");

    let bobs = codes.clone();
    let mine = s.file("ada.bin", 3_000, 230);
    codes.push(push(&ada, &tcp, &mine, &["sensor-1"]));

    // The terminal drains its queue: then bob may push again.
    let dest = s.work.path().join("dest");
    let listener = Running::spawn(&mut s.sensor.listen(&tcp, &dest));
    let mut got: Vec<String> = (0..codes.len())
        .map(|_| {
            let ev = event(&listener.next_line());
            assert_eq!(ev["event"], "delivered", "{ev}");
            ev["code"].as_str().unwrap().to_owned()
        })
        .collect();
    got.sort();
    codes.sort();
    assert_eq!(
        got, codes,
        "each push delivered once, the refused one never"
    );
    for code in &bobs {
        let state = &delivery(&bob, &tcp, code, "sensor-1")["state"];
        assert_eq!(state, "delivered", "{code}");
    }
    let again = push(&bob, &tcp, &over, &["sensor-1"]);
    let ev = event(&listener.next_line());
    assert_eq!(ev["code"], again.as_str(), "{ev}");
    assert!(same_file(&over, &dest.join("flood-over.bin")));
}

/// The listener's temporary files in `dir` and their sizes.
fn partial_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(".pickup-") && n.ends_with(".part")
            })
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

/// After the listener's first line (a delivery of `code`), no second
/// one comes while the delivery is followed to `delivered`.
fn delivered_once(listener: &Running, ada: &Path, relay: &str, code: &str) {
    let ev = event(&listener.next_line());
    assert_eq!(ev["event"], "delivered", "{ev}");
    assert_eq!(ev["code"], code, "{ev}");
    wait_for_state(ada, relay, code, "sensor-1", "delivered");
    let extra = listener.next_line_within(Duration::from_secs(2));
    assert_eq!(extra, None, "a second line for one delivery");
}

const MIB: usize = 1 << 20;

#[test]
fn the_relay_killed_mid_download_the_listener_continues() {
    let mut s = Setup::start("");
    let tcp = s.relay.tcp();
    let ada = s.user("ada");
    // Slow enough to be caught mid-batch: 1 MiB/s each way.
    let proxy = Proxy::start(s.relay.port(), LinkFaults::default(), 1);
    proxy.rate.store(MIB as u64, Ordering::SeqCst);
    let a = s.file("a.bin", 5 * MIB + 3, 241);
    let b = s.file("b.bin", MIB, 242);
    let sent = send_to(&ada, &tcp, &[&a, &b], &["sensor-1"], &[]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    let code = json(&sent)["code"].as_str().unwrap().to_owned();

    let dest = s.work.path().join("dest");
    let listener = Running::spawn(&mut s.sensor.listen(&proxy.addr(), &dest));
    wait_for("a MiB of the batch on the listener's disk", || {
        (partial_bytes(&dest) >= MIB as u64).then_some(())
    });
    s.relay.kill9();
    let before = partial_bytes(&dest);
    assert!(
        before < (6 * MIB) as u64 && !dest.join("b.bin").exists(),
        "killed mid-batch ({before} bytes on disk)"
    );
    s.relay.restart();

    delivered_once(&listener, &ada, &tcp, &code);
    assert!(same_file(&a, &dest.join("a.bin")));
    assert!(same_file(&b, &dest.join("b.bin")));
    assert!(
        proxy.stats.connections.load(Ordering::SeqCst) >= 2,
        "the listener connected again: {}",
        proxy.stats.summary()
    );
}

#[test]
fn a_listener_over_a_link_cut_every_few_hundred_kib_gets_the_batch_once() {
    let s = Setup::start("");
    let tcp = s.relay.tcp();
    let ada = s.user("ada");
    let cuts = LinkFaults {
        cut_after: Some((300 << 10, 600 << 10)),
        ..LinkFaults::default()
    };
    let proxy = Proxy::start(s.relay.port(), cuts, 7);
    let a = s.file("a.bin", 3 * MIB + 5, 251);
    let b = s.file("b.bin", 700_000, 252);
    let sent = send_to(&ada, &tcp, &[&a, &b], &["sensor-1"], &[]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    let code = json(&sent)["code"].as_str().unwrap().to_owned();

    let dest = s.work.path().join("dest");
    let listener = Running::spawn(&mut s.sensor.listen(&proxy.addr(), &dest));
    delivered_once(&listener, &ada, &tcp, &code);
    assert!(same_file(&a, &dest.join("a.bin")));
    assert!(same_file(&b, &dest.join("b.bin")));
    let n = proxy.stats.cuts.load(Ordering::SeqCst);
    assert!(
        n >= 4,
        "the link was cut {n} times: {}",
        proxy.stats.summary()
    );
}
