//! `pickup` against a real relay over a serial link: two pseudo-terminal
//! pairs joined by the test, the relay on one slave, the CLI on the other.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{pickup, run_json, same_file, write_random, Relay};
use serialport::{SerialPort, TTYPort};

/// A null-modem cable between two pseudo-terminals.
struct Cable {
    relay_end: String,
    client_end: String,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    // Held open so the ptys survive each side closing and reopening.
    _slaves: (TTYPort, TTYPort),
}

impl Cable {
    fn new() -> Cable {
        let (mut master_a, slave_a) = TTYPort::pair().unwrap();
        let (mut master_b, slave_b) = TTYPort::pair().unwrap();
        master_a.set_timeout(Duration::from_millis(50)).unwrap();
        master_b.set_timeout(Duration::from_millis(50)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let pump = |mut from: TTYPort, mut to: TTYPort, stop: Arc<AtomicBool>| {
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    match from.read(&mut buf) {
                        Ok(0) => thread::sleep(Duration::from_millis(5)),
                        Ok(n) => {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        // Timeouts, and EIO while no one has the slave open.
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        let threads = vec![
            pump(
                master_a.try_clone_native().unwrap(),
                master_b.try_clone_native().unwrap(),
                stop.clone(),
            ),
            pump(master_b, master_a, stop.clone()),
        ];
        Cable {
            relay_end: slave_a.name().unwrap(),
            client_end: slave_b.name().unwrap(),
            stop,
            threads,
            _slaves: (slave_a, slave_b),
        }
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn send_and_get_over_a_serial_link() {
    let cable = Cable::new();
    let relay = Relay::start_with(&["--serial", &cable.relay_end]);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let a = work.path().join("firmware.bin");
    let b = work.path().join("config.txt");
    write_random(&a, 200_000, 7);
    std::fs::write(&b, "baud=115200\n").unwrap();
    let serial = format!("serial:{}@115200", cable.client_end);

    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &serial])
            .arg(&a)
            .arg(&b),
    );
    let code = sent["code"].as_str().unwrap().to_string();

    let info = run_json(pickup(&state).args(["info", "--json", "--relay", &serial, &code]));
    assert_eq!(info["ready"], true);
    assert_eq!(info["files"].as_array().unwrap().len(), 2);

    let dest = work.path().join("dest");
    run_json(pickup(&state).args([
        "get",
        "--json",
        "--relay",
        &serial,
        &code,
        "-o",
        dest.to_str().unwrap(),
    ]));
    assert!(same_file(&a, &dest.join("firmware.bin")));
    assert!(same_file(&b, &dest.join("config.txt")));

    // The same batch is readable over TCP too: one relay, two transports.
    let dest2 = work.path().join("dest2");
    run_json(pickup(&state).args([
        "get",
        "--json",
        "--relay",
        &relay.addr(),
        &code,
        "-o",
        dest2.to_str().unwrap(),
    ]));
    assert!(same_file(&a, &dest2.join("firmware.bin")));
}
