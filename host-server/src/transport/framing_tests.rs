//! The TCP driver and the session agree on the length-prefixed framing
//! (PROTOCOL.md §2.1) only when the terminal asks on a reliable link: the
//! bytes on the wire are checked, over in-memory streams driven by
//! [`tcp::drive`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use pickup_proto::frame::{Decoder, Framing};
use pickup_proto::message::{self, Hello, Kind, Message, Role, CAP_LENGTH_PREFIX};
use pickup_proto::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::{tcp, Clock};
use crate::metrics::Transport;
use crate::random::SeededRandom;
use crate::relay::Relay;
use crate::settings::{Link, Settings};
use crate::store::memory::MemoryStore;

/// A Keepalive, length-prefixed: marker, length 6, raw frame.
const KEEPALIVE_PREFIXED: [u8; 10] = [0x00, 0x06, 0x00, 0x00, 0x01, 0x03, 0x51, 0x1c, 0x93, 0xf1];
/// A Keepalive in COBS.
const KEEPALIVE_COBS: [u8; 8] = [0x07, 0x01, 0x03, 0x51, 0x1c, 0x93, 0xf1, 0x00];

/// One connection to a relay over `link`, bytes in and out as they are.
struct Wire {
    io: DuplexStream,
    received: Vec<u8>,
    _stop: watch::Sender<bool>,
}

impl Wire {
    fn connect(link: Link) -> Wire {
        let relay = Relay::new(
            Settings::default(),
            Arc::new(MemoryStore::new()),
            Box::new(SeededRandom::new(3)),
            Clock::new().now(),
        );
        let (stop_tx, stop) = watch::channel(false);
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 40_001));
        tokio::spawn(tcp::drive(
            theirs,
            addr,
            Transport::Tcp,
            relay,
            link,
            Clock::new(),
            stop,
        ));
        Wire {
            io: ours,
            received: Vec::new(),
            _stop: stop_tx,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    async fn hello(&mut self, caps: u32) {
        let hello = Hello {
            version: 1,
            role: Role::Terminal,
            max_frame: 65_536,
            window: 1 << 20,
            caps,
        };
        let mut buf = [0u8; 64];
        let n = message::encode(&hello, 64, &mut buf).unwrap();
        self.send(&buf[..n]).await;
    }

    /// Reads until at least `n` bytes have arrived (five seconds at most).
    async fn fill(&mut self, n: usize) {
        while self.received.len() < n {
            let mut buf = [0u8; 4096];
            let got = tokio::time::timeout(Duration::from_secs(5), self.io.read(&mut buf))
                .await
                .expect("the relay said nothing within 5 s")
                .unwrap();
            assert!(got > 0, "the relay closed the connection");
            self.received.extend_from_slice(&buf[..got]);
        }
    }

    /// The next frame in COBS: its wire bytes are taken off `received`.
    /// Returns the Welcome's caps.
    async fn welcome_caps(&mut self) -> u32 {
        for _ in 0..100 {
            let mut dec = Decoder::new(vec![0u8; 65_536]);
            let mut input = &self.received[..];
            if let Some(frame) = dec.feed(&mut input) {
                let Ok(Message::Welcome(w)) = Message::decode(frame.unwrap()) else {
                    panic!("expected a Welcome");
                };
                let taken = self.received.len() - input.len();
                self.received.drain(..taken);
                return w.caps;
            }
            let have = self.received.len();
            self.fill(have + 1).await;
        }
        panic!("no Welcome in 100 reads");
    }

    /// The next `n` bytes on the wire.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        self.fill(n).await;
        self.received.drain(..n).collect()
    }
}

#[tokio::test]
async fn a_terminal_that_asks_on_tcp_gets_length_prefixed_frames_after_the_welcome() {
    let mut wire = Wire::connect(Link::TCP);
    wire.hello(CAP_LENGTH_PREFIX).await;
    assert_ne!(wire.welcome_caps().await & CAP_LENGTH_PREFIX, 0);
    // A Hello repeated in COBS before the terminal read the Welcome is
    // still read; the relay's answer is length-prefixed already.
    wire.hello(CAP_LENGTH_PREFIX).await;
    let prefix = wire.take(4).await;
    assert_eq!(prefix[0], 0x00, "a length-prefixed Welcome");
    let len = usize::from(prefix[1]) | usize::from(prefix[2]) << 8;
    let raw = wire.take(len).await;
    assert_eq!(raw[1], Kind::Welcome as u8);
    // From the terminal's first marker on, its frames are length-prefixed.
    wire.send(&KEEPALIVE_PREFIXED).await;
    assert_eq!(wire.take(10).await, KEEPALIVE_PREFIXED);
    wire.send(&KEEPALIVE_PREFIXED).await;
    assert_eq!(wire.take(10).await, KEEPALIVE_PREFIXED);
}

#[tokio::test]
async fn a_terminal_that_does_not_ask_keeps_cobs() {
    let mut wire = Wire::connect(Link::TCP);
    wire.hello(0).await;
    // The relay offers it; the terminal did not ask, so nothing changes.
    assert_ne!(wire.welcome_caps().await & CAP_LENGTH_PREFIX, 0);
    wire.send(&KEEPALIVE_COBS).await;
    assert_eq!(wire.take(KEEPALIVE_COBS.len()).await, KEEPALIVE_COBS);
}

#[tokio::test]
async fn a_serial_link_never_offers_it() {
    let mut wire = Wire::connect(Link::SERIAL);
    wire.hello(CAP_LENGTH_PREFIX).await;
    assert_eq!(wire.welcome_caps().await & CAP_LENGTH_PREFIX, 0);
    wire.send(&KEEPALIVE_COBS).await;
    assert_eq!(wire.take(KEEPALIVE_COBS.len()).await, KEEPALIVE_COBS);
}

#[tokio::test]
async fn cobs_after_the_switch_closes_the_link_with_bad_frame() {
    let mut wire = Wire::connect(Link::TCP);
    wire.hello(CAP_LENGTH_PREFIX).await;
    wire.welcome_caps().await;
    wire.send(&KEEPALIVE_PREFIXED).await;
    assert_eq!(wire.take(10).await, KEEPALIVE_PREFIXED);
    wire.send(&KEEPALIVE_COBS).await;
    let prefix = wire.take(4).await;
    let raw = wire.take(usize::from(prefix[1])).await;
    let mut dec = Decoder::new(vec![0u8; 256]);
    dec.set_framing(Framing::LengthPrefixed);
    let mut input = &[prefix, raw].concat()[..];
    let frame = dec.feed(&mut input).unwrap().unwrap();
    let msg = Message::decode(frame);
    let Ok(Message::Error(e)) = msg else {
        panic!("expected an Error, got {msg:?}");
    };
    assert_eq!(e.code, ErrorCode::BadFrame);
    // Then the relay hangs up.
    let mut rest = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), wire.io.read(&mut rest))
        .await
        .expect("the relay kept the link open")
        .unwrap();
    assert_eq!(n, 0);
}
