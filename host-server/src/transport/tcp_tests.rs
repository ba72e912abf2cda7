//! The TCP driver wakes a listening session when another connection's
//! push is stored (PROTOCOL.md §11): the notice arrives with nothing sent
//! by the terminal, over in-memory streams driven by [`tcp::drive`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use pickup_proto::frame::Decoder;
use pickup_proto::identity::{terminal_mac, DeviceKey};
use pickup_proto::message::{
    ChallengeAnswer, Hello, Login, Message, Push, Role, TerminalAuth, CAP_PUSH_NOTICE,
};
use pickup_proto::{Code, Sha1Digest};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::{tcp, Clock};
use crate::directory::memory::MemoryDirectory;
use crate::directory::{Directory, PasswordParams};
use crate::metrics::Transport;
use crate::random::SeededRandom;
use crate::relay::Relay;
use crate::settings::{Link, Settings};
use crate::store::memory::MemoryStore;
use crate::store::{Content, FileRef, NewBatch, NewFile, OwnerId, Store};

const KEY: DeviceKey = DeviceKey([9; 16]);

/// A terminal's end of one connection: frames out, messages in.
struct Peer {
    io: DuplexStream,
    dec: Decoder<Vec<u8>>,
    pending: Vec<u8>,
}

impl Peer {
    fn connect(relay: &Arc<Relay>, clock: Clock, stop: &watch::Receiver<bool>) -> Peer {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000));
        tokio::spawn(tcp::drive(
            theirs,
            addr,
            Transport::Tcp,
            relay.clone(),
            Link::TCP,
            clock,
            stop.clone(),
        ));
        Peer {
            io: ours,
            dec: Decoder::new(vec![0u8; 65_536]),
            pending: Vec::new(),
        }
    }

    async fn send(&mut self, msg: Message<'_>) {
        let mut buf = vec![0u8; 70_000];
        let n = msg.encode(65_536, &mut buf).unwrap();
        self.io.write_all(&buf[..n]).await.unwrap();
    }

    /// The next message's kind byte and body, waiting up to five seconds.
    async fn next(&mut self) -> Vec<u8> {
        loop {
            let mut input = &self.pending[..];
            if let Some(frame) = self.dec.feed(&mut input) {
                let rest = input.to_vec();
                let frame = frame.unwrap();
                let msg = Message::decode(frame).unwrap();
                let mut out = vec![0u8; 70_000];
                let n = msg.encode(65_536, &mut out).unwrap();
                self.pending = rest;
                return out[..n].to_vec();
            }
            self.pending.clear();
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.io.read(&mut buf))
                .await
                .expect("the relay said nothing within 5 s")
                .unwrap();
            assert!(n > 0, "the relay closed the connection");
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Waits for the next message and checks it with `f`.
    async fn expect(&mut self, what: &str, f: impl Fn(&Message<'_>) -> bool) {
        let bytes = self.next().await;
        let mut dec = Decoder::new(vec![0u8; 65_536]);
        let mut input = &bytes[..];
        let msg = Message::decode(dec.feed(&mut input).unwrap().unwrap()).unwrap();
        assert!(f(&msg), "expected {what}, got {msg:?}");
    }

    async fn hello(&mut self) {
        self.send(Message::Hello(Hello {
            version: 1,
            role: Role::Terminal,
            max_frame: 65_536,
            window: 1 << 20,
            caps: 0,
        }))
        .await;
        self.expect(
            "Welcome with notices",
            |m| matches!(m, Message::Welcome(w) if w.caps & CAP_PUSH_NOTICE != 0),
        )
        .await;
    }
}

/// A relay holding one complete batch; its code.
fn relay() -> (Arc<Relay>, Code) {
    let dir = Arc::new(MemoryDirectory::new(PasswordParams::FAST_FOR_TESTS));
    dir.add_user("ada", "ada-pw", 0).unwrap();
    dir.add_terminal("desk", "ada", KEY, 0).unwrap();
    let store = Arc::new(MemoryStore::new());
    let code = Code::from_parts(13, 12_345).unwrap();
    let data = b"pushed over tcp";
    let files = [NewFile {
        name: "f",
        size: data.len() as u64,
        sha1: Sha1Digest::of(data),
        attrs: None,
    }];
    let clock = Clock::new();
    let batch = store
        .create_batch(&NewBatch {
            code,
            code_key: crate::codes::code_key(&code),
            token_key: crate::store::LookupKey([1; 32]),
            owner: OwnerId([1; 32]),
            created_at: 0,
            expires_at: clock.now().as_millis() / 1000 + 3600,
            stale_at: u64::MAX,
            files: &files,
            open: false,
        })
        .unwrap();
    let crate::store::FileContent::Partial { id, .. } = batch.files[0].content else {
        panic!("a partial file");
    };
    store.write_partial(id, 0, data).unwrap();
    let content = Content {
        size: data.len() as u64,
        sha1: Sha1Digest::of(data),
        threshold: 2,
    };
    let file = FileRef {
        batch: batch.id,
        index: 0,
    };
    store.complete_file(file, id, &content).unwrap();
    let relay = Relay::with_directory(
        Settings::default(),
        store,
        dir,
        Box::new(SeededRandom::new(7)),
        clock.now(),
    );
    (relay, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_on_one_connection_wakes_the_listener_on_another() {
    let (relay, code) = relay();
    let clock = Clock::new();
    let (_stop_tx, stop) = watch::channel(false);

    let mut desk = Peer::connect(&relay, clock, &stop);
    desk.hello().await;
    desk.send(Message::TerminalAuth(TerminalAuth { terminal: "desk" }))
        .await;
    let bytes = desk.next().await;
    let mut dec = Decoder::new(vec![0u8; 65_536]);
    let mut input = &bytes[..];
    let Message::Challenge(c) = Message::decode(dec.feed(&mut input).unwrap().unwrap()).unwrap()
    else {
        panic!("no challenge");
    };
    let mac = terminal_mac(&KEY, &c.nonce, "desk");
    desk.send(Message::ChallengeAnswer(ChallengeAnswer { mac }))
        .await;
    desk.expect("Authenticated", |m| matches!(m, Message::Authenticated(_)))
        .await;
    desk.send(Message::Listen).await;
    desk.expect(
        "an empty Inbox",
        |m| matches!(m, Message::Inbox(i) if i.count == 0),
    )
    .await;

    let mut ada = Peer::connect(&relay, clock, &stop);
    ada.hello().await;
    ada.send(Message::Login(Login {
        user: "ada",
        password: "ada-pw",
    }))
    .await;
    ada.expect("Authenticated", |m| matches!(m, Message::Authenticated(_)))
        .await;
    ada.send(Message::Push(Push {
        push_id: 1,
        code,
        terminal: "desk",
    }))
    .await;
    ada.expect("Delivery", |m| matches!(m, Message::Delivery(_)))
        .await;

    // The terminal sent nothing since its Listen: the doorbell woke it.
    desk.expect(
        "the live Notice",
        |m| matches!(m, Message::Notice(n) if n.code == code && n.sender == "ada"),
    )
    .await;
}
