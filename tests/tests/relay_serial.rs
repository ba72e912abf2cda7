//! The real relay serving a serial port: one upload and one download
//! through a pseudo-terminal pair. The relay opens one end by path
//! (`--serial`), the test drives the other.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use pickup_tests::relay_process::RelayProcess;
use pickup_tests::wire_client::*;
use serialport::{SerialPort, TTYPort};

#[test]
fn round_trip_through_a_pseudo_terminal() {
    let (mut master, slave) = TTYPort::pair().unwrap();
    // pair() leaves both ends inheritable: the relay would keep the master
    // open and never see the port vanish.
    for fd in [master.as_raw_fd(), slave.as_raw_fd()] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    }
    master.set_timeout(Duration::from_millis(5)).unwrap();
    let path = slave.name().unwrap();
    let mut relay = RelayProcess::builder()
        .serial(&format!("{path}@115200"))
        .start();
    let listening = relay.wait_for_log("listening:");
    assert!(
        listening.contains(&format!("serial={path}@115200")),
        "{listening}"
    );
    relay.wait_for_log("serial port open");
    let files = [("sensor.log", bytes(150_000, 4)), ("empty", Vec::new())];
    // The relay's serial link: 4 KiB frames, 8 MiB window; a device-sized client.
    let up = upload(&mut master, upload_config(4096), &files, None, |_| false);
    assert!(up.complete(), "{:?}", up.events);
    let got = download(&mut master, download_config(4096, 32 * 1024), up.code()).unwrap();
    assert!(got.files[0] == files[0].1);
    assert!(got.files[1].is_empty());
    // And the same batch over TCP.
    let got = download_tcp(relay.addr(), up.code()).unwrap();
    assert!(got.files[0] == files[0].1);
    // The port vanishes: the relay notices, retries with backoff, and keeps serving TCP.
    drop(master);
    drop(slave);
    relay.wait_for_log("serial port lost");
    relay.wait_for_log("cannot open serial port");
    let again = upload_tcp(relay.addr(), &[("after", bytes(1000, 5))], None);
    assert!(again.complete());
}
