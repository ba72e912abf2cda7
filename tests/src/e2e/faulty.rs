//! Link adapters that damage what they carry, seeded: a TCP proxy and a
//! pseudo-terminal "cable".
//!
//! Both cut the stream into pieces of at most [`PIECE`] bytes and, per
//! piece, may flip a bit, drop a run of bytes, or send the piece twice; the
//! proxy also cuts whole connections after a random number of bytes. The
//! seed fixes every decision per piece; how the operating system splits
//! reads is not under the test's control, so a run is reproducible in its
//! fault rates, not byte for byte.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::sim::rng::SimRng;

use super::PATIENCE;

/// Faults are decided per piece of at most this many bytes.
pub const PIECE: usize = 512;

/// What an adapter does to the bytes, in parts per million per full piece
/// of [`PIECE`] bytes (a shorter piece gets a proportionally smaller
/// chance, so the damage per byte does not depend on how reads split).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Flip one bit of the piece.
    pub flip: u32,
    /// Drop a run of bytes from the piece.
    pub drop: u32,
    /// Send the piece twice.
    pub duplicate: u32,
    /// Cut a TCP connection after between `lo` and `hi` bytes (both
    /// directions counted); `None` never cuts.
    pub cut_after: Option<(u64, u64)>,
}

/// Counts of what an adapter did.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Bytes carried (after damage).
    pub bytes: AtomicU64,
    /// Pieces with a flipped bit.
    pub flipped: AtomicU64,
    /// Pieces that lost bytes.
    pub dropped: AtomicU64,
    /// Pieces sent twice.
    pub duplicated: AtomicU64,
    /// Connections cut.
    pub cuts: AtomicU64,
    /// Connections accepted (proxy).
    pub connections: AtomicU64,
    /// Bytes read from clients and passed on towards the server (proxy).
    pub up: AtomicU64,
    /// Bytes read from the server and passed on towards clients (proxy).
    pub down: AtomicU64,
}

impl LinkStats {
    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "{} bytes, {} flipped, {} dropped, {} duplicated pieces, {} cuts, {} connections",
            self.bytes.load(Ordering::Relaxed),
            self.flipped.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.duplicated.load(Ordering::Relaxed),
            self.cuts.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed)
        )
    }
}

/// Applies `faults` to `data`, piece by piece, and hands the result to `out`.
fn damage(
    data: &[u8],
    faults: &LinkFaults,
    enabled: bool,
    rng: &mut SimRng,
    stats: &LinkStats,
    out: &mut dyn FnMut(&[u8]) -> bool,
) -> bool {
    for piece in data.chunks(PIECE) {
        if !enabled {
            stats.bytes.fetch_add(piece.len() as u64, Ordering::Relaxed);
            if !out(piece) {
                return false;
            }
            continue;
        }
        let mut p = piece.to_vec();
        let len = p.len() as u64;
        let scale = |ppm: u32| (u64::from(ppm) * len / PIECE as u64) as u32;
        if rng.chance(scale(faults.flip)) {
            let bit = rng.below(p.len() as u64 * 8) as usize;
            p[bit / 8] ^= 1 << (bit % 8);
            stats.flipped.fetch_add(1, Ordering::Relaxed);
        }
        if rng.chance(scale(faults.drop)) {
            let start = rng.below(p.len() as u64) as usize;
            let len = 1 + rng.below((p.len() - start) as u64) as usize;
            p.drain(start..start + len);
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let copies = if rng.chance(scale(faults.duplicate)) {
            stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        for _ in 0..copies {
            stats.bytes.fetch_add(p.len() as u64, Ordering::Relaxed);
            if !out(&p) {
                return false;
            }
        }
    }
    true
}

/// A TCP proxy on 127.0.0.1 in front of `target`, damaging both directions.
pub struct Proxy {
    port: u16,
    /// Where new connections go (a port on 127.0.0.1).
    target: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
    /// Bytes per second per direction; 0 means unlimited.
    pub rate: Arc<AtomicU64>,
    /// What the proxy did.
    pub stats: Arc<LinkStats>,
    accept: Option<JoinHandle<()>>,
    pumps: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:target` with `faults` seeded by `seed`.
    pub fn start(target: u16, faults: LinkFaults, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let enabled = Arc::new(AtomicBool::new(true));
        let rate = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(LinkStats::default());
        let pumps = Arc::new(Mutex::new(Vec::new()));
        let target = Arc::new(AtomicU16::new(target));
        let accept = {
            let (stop, enabled, stats, pumps) =
                (stop.clone(), enabled.clone(), stats.clone(), pumps.clone());
            let (rate, target) = (rate.clone(), target.clone());
            thread::spawn(move || {
                let mut rng = SimRng::new(seed);
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < PATIENCE * 4 {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let to = target.load(Ordering::SeqCst);
                            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                                // The relay is down (killed): the client sees a reset.
                                drop(client);
                                continue;
                            };
                            stats.connections.fetch_add(1, Ordering::Relaxed);
                            let shared = Shared {
                                stop: stop.clone(),
                                enabled: enabled.clone(),
                                rate: rate.clone(),
                                stats: stats.clone(),
                            };
                            let conn = connection(client, server, faults, &mut rng, &shared);
                            let mut p = pumps.lock().unwrap_or_else(|e| e.into_inner());
                            p.extend(conn);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Proxy {
            port,
            target,
            stop,
            enabled,
            rate,
            stats,
            accept: Some(accept),
            pumps,
        }
    }

    /// `127.0.0.1:port` for `--relay`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Turns the damage on or off (cuts included); bytes flow either way.
    pub fn set_faults(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// Sends new connections to `127.0.0.1:port` from now on (open ones
    /// stay where they are): another server behind the same address.
    pub fn retarget(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        let pumps = std::mem::take(&mut *self.pumps.lock().unwrap_or_else(|e| e.into_inner()));
        for p in pumps {
            let _ = p.join();
        }
    }
}

/// What every pump of a proxy shares.
#[derive(Clone)]
struct Shared {
    stop: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
    rate: Arc<AtomicU64>,
    stats: Arc<LinkStats>,
}

/// One proxied connection: two pumps sharing a byte budget until the cut.
fn connection(
    client: TcpStream,
    server: TcpStream,
    faults: LinkFaults,
    rng: &mut SimRng,
    shared: &Shared,
) -> Vec<JoinHandle<()>> {
    let cut_at = faults
        .cut_after
        .map_or(u64::MAX, |(lo, hi)| rng.range(lo, hi));
    let carried = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let pairs = [
        (client.try_clone(), server.try_clone(), true),
        (server.try_clone(), client.try_clone(), false),
    ];
    for (from, to, up) in pairs {
        let (Ok(from), Ok(to)) = (from, to) else {
            continue;
        };
        let mut rng = rng.fork();
        let (shared, carried) = (shared.clone(), carried.clone());
        handles.push(thread::spawn(move || {
            let dir = if up {
                &shared.stats.up
            } else {
                &shared.stats.down
            };
            pump_tcp(from, to, &faults, cut_at, &carried, dir, &mut rng, &shared)
        }));
    }
    handles
}

#[allow(clippy::too_many_arguments)] // One pump's whole context, spelled out.
fn pump_tcp(
    mut from: TcpStream,
    mut to: TcpStream,
    faults: &LinkFaults,
    cut_at: u64,
    carried: &AtomicU64,
    direction: &AtomicU64,
    rng: &mut SimRng,
    shared: &Shared,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 16 * 1024];
    let started = Instant::now();
    let close = |from: &TcpStream, to: &TcpStream| {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    };
    while !shared.stop.load(Ordering::SeqCst) && started.elapsed() < PATIENCE * 4 {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        let on = shared.enabled.load(Ordering::SeqCst);
        let total = carried.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        if on && total >= cut_at {
            shared.stats.cuts.fetch_add(1, Ordering::Relaxed);
            close(&from, &to);
            return;
        }
        let ok = damage(&buf[..n], faults, on, rng, &shared.stats, &mut |piece| {
            to.write_all(piece).is_ok()
        });
        if !ok {
            break;
        }
        direction.fetch_add(n as u64, Ordering::Relaxed);
        let rate = shared.rate.load(Ordering::SeqCst);
        if let Some(us) = (n as u64 * 1_000_000).checked_div(rate) {
            thread::sleep(Duration::from_micros(us));
        }
    }
    close(&from, &to);
}

/// A serial cable between two pseudo-terminals that damages both directions.
#[cfg(unix)]
pub struct Cable {
    /// The slave device the relay opens.
    pub relay_end: String,
    /// The slave device `pickup` opens.
    pub client_end: String,
    stop: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
    /// What the cable did.
    pub stats: Arc<LinkStats>,
    threads: Vec<JoinHandle<()>>,
    // Held open so each pty survives its user closing and reopening it.
    _slaves: (serialport::TTYPort, serialport::TTYPort),
}

#[cfg(unix)]
impl Cable {
    /// Two pty pairs joined master to master, with `faults` seeded by `seed`
    /// (`cut_after` is ignored: a serial line has no connection to cut).
    pub fn new(faults: LinkFaults, seed: u64) -> Cable {
        use serialport::SerialPort;
        let (mut master_a, slave_a) = serialport::TTYPort::pair().expect("a pty pair");
        let (mut master_b, slave_b) = serialport::TTYPort::pair().expect("a pty pair");
        master_a
            .set_timeout(Duration::from_millis(20))
            .expect("pty timeout");
        master_b
            .set_timeout(Duration::from_millis(20))
            .expect("pty timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let enabled = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(LinkStats::default());
        let mut rng = SimRng::new(seed);
        let mut threads = Vec::new();
        let a2 = master_a.try_clone_native().expect("clone a pty master");
        let b2 = master_b.try_clone_native().expect("clone a pty master");
        for (from, to) in [(master_a, b2), (master_b, a2)] {
            let mut rng = rng.fork();
            let (stop, enabled, stats) = (stop.clone(), enabled.clone(), stats.clone());
            threads.push(thread::spawn(move || {
                pump_pty(from, to, &faults, &mut rng, &stop, &enabled, &stats)
            }));
        }
        Cable {
            relay_end: slave_a.name().expect("pty name"),
            client_end: slave_b.name().expect("pty name"),
            stop,
            enabled,
            stats,
            threads,
            _slaves: (slave_a, slave_b),
        }
    }

    /// Turns the damage on or off; bytes flow either way.
    pub fn set_faults(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }
}

#[cfg(unix)]
fn pump_pty(
    mut from: serialport::TTYPort,
    mut to: serialport::TTYPort,
    faults: &LinkFaults,
    rng: &mut SimRng,
    stop: &AtomicBool,
    enabled: &AtomicBool,
    stats: &LinkStats,
) {
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) && started.elapsed() < PATIENCE * 4 {
        match from.read(&mut buf) {
            Ok(0) => thread::sleep(Duration::from_millis(2)),
            Ok(n) => {
                let on = enabled.load(Ordering::SeqCst);
                damage(&buf[..n], faults, on, rng, stats, &mut |piece| {
                    // A slave nobody holds open yet swallows writes with EIO.
                    let _ = to.write_all(piece);
                    true
                });
            }
            // Timeouts, and EIO while the slave is closed.
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
}

#[cfg(unix)]
impl Drop for Cable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_does_what_the_rates_say() {
        let faults = LinkFaults {
            flip: 200_000,
            drop: 200_000,
            duplicate: 200_000,
            cut_after: None,
        };
        let stats = LinkStats::default();
        let mut rng = SimRng::new(5);
        let data = vec![0x55u8; PIECE * 1000];
        let mut out = Vec::new();
        assert!(damage(&data, &faults, true, &mut rng, &stats, &mut |p| {
            out.extend_from_slice(p);
            true
        }));
        for n in [&stats.flipped, &stats.dropped, &stats.duplicated] {
            let n = n.load(Ordering::Relaxed);
            assert!((150..250).contains(&n), "{}", stats.summary());
        }
        assert_eq!(stats.bytes.load(Ordering::Relaxed), out.len() as u64);
        assert_ne!(out, data);
        // Off: bytes pass untouched.
        let mut clean = Vec::new();
        damage(&data, &faults, false, &mut rng, &stats, &mut |p| {
            clean.extend_from_slice(p);
            true
        });
        assert_eq!(clean, data);
    }

    #[test]
    fn the_proxy_carries_bytes_and_cuts_connections() {
        let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = echo.local_addr().expect("addr").port();
        let server = thread::spawn(move || {
            // Two connections: the first is cut, the second echoes cleanly.
            for _ in 0..2 {
                let (mut s, _) = echo.accept().expect("accept");
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        let faults = LinkFaults {
            cut_after: Some((1000, 1000)),
            ..LinkFaults::default()
        };
        let proxy = Proxy::start(port, faults, 1);
        let mut c = TcpStream::connect(proxy.addr()).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.write_all(&[7u8; 400]).expect("write");
        let mut got = vec![0u8; 400];
        c.read_exact(&mut got).expect("echo");
        assert_eq!(got, [7u8; 400]);
        // 800 carried; the next 400 cross 1000 and cut the connection.
        let _ = c.write_all(&[8u8; 400]);
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty(), "nothing after the cut");
        assert_eq!(proxy.stats.cuts.load(Ordering::Relaxed), 1);
        proxy.set_faults(false);
        let mut c = TcpStream::connect(proxy.addr()).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.write_all(&[9u8; 2000]).expect("write");
        let mut got = vec![0u8; 2000];
        c.read_exact(&mut got).expect("echo");
        assert_eq!(got, [9u8; 2000]);
        drop(c);
        drop(proxy);
        server.join().expect("echo server");
    }
}
