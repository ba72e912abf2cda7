//! `pickup` against a real relay over a serial link: two pseudo-terminal
//! pairs joined by the test, the relay on one slave, the CLI on the other.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use pickup_tests::e2e::faulty::{Cable, LinkFaults};
use pickup_tests::e2e::{pickup, run_json, same_file, write_random, TempDir};
use pickup_tests::relay_process::RelayProcess;

#[test]
fn send_and_get_over_a_serial_link() {
    // A clean null-modem cable: no faults.
    let cable = Cable::new(LinkFaults::default(), 1);
    let relay = RelayProcess::builder().serial(&cable.relay_end).start();
    let work = TempDir::new("cli-serial");
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
        &relay.tcp(),
        &code,
        "-o",
        dest2.to_str().unwrap(),
    ]));
    assert!(same_file(&a, &dest2.join("firmware.bin")));
}
