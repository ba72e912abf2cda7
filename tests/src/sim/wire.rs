//! Frames as the checks see them: the relay's messages owned (the frame is
//! gone by the time a check runs), tracing, and feeding a relay session.

use bytes::Bytes;
use pickup_proto::frame::Frame;

use super::*;

/// Traces what a terminal sends, but for its data.
pub(super) fn trace_client_frame(now: Instant, id: u64, wire: &[u8]) {
    let mut input = wire;
    let mut decoder = Decoder::new(vec![0; frame::MAX_FRAME_LEN]);
    if let Some(Ok(f)) = decoder.feed(&mut input) {
        match Message::decode(f) {
            Ok(Message::Data(_)) => {}
            Ok(m) => eprintln!(
                "[{:>9} ms] actor {id} → relay: {m:?}",
                (now - EPOCH).as_millis()
            ),
            Err(e) => eprintln!("actor {id} sent an undecodable frame: {e}"),
        }
    }
}

/// Feeds the relay session what arrived, while it asks for input; what it
/// does not take waits in `unfed` (as a transport stops reading).
pub(super) fn feed_relay(
    relay: &mut Session,
    decoder: &mut Decoder<Vec<u8>>,
    unfed: &mut Vec<u8>,
    now: Instant,
    bytes: &[u8],
) {
    unfed.extend_from_slice(bytes);
    let mut input = &unfed[..];
    while relay.wants_input() {
        match decoder.feed(&mut input) {
            Some(Ok(f)) => hand_frame(relay, now, f),
            Some(Err(why)) => relay.handle_dropped(now, why),
            None => break,
        }
    }
    let taken = unfed.len() - input.len();
    unfed.drain(..taken);
}

/// Hands a frame to a relay session: half of them (by the parity of their
/// length) in a buffer of their own that the session may keep slices of,
/// as a TCP connection's bulk reads do, and the rest to be copied.
pub(crate) fn hand_frame(relay: &mut Session, now: Instant, f: Frame<'_>) {
    if f.body.len() % 2 == 0 {
        let backing = Bytes::copy_from_slice(f.body);
        relay.handle_frame_in(
            now,
            Frame {
                body: &backing,
                ..f
            },
            &backing,
        );
    } else {
        relay.handle_frame(now, f);
    }
}

/// Takes the relay session's next frame into `out` as a driver would:
/// sessions with an even id as a TCP connection with vectored writes does
/// (a download's data frames split around their read-ahead buffer, then
/// put together here), the rest whole.
pub(crate) fn take_frame(relay: &mut Session, out: &mut [u8]) -> Option<usize> {
    if relay.id() % 2 == 0 {
        let frame = relay.poll_transmit_split(out)?;
        Some(
            frame
                .assemble(out)
                .expect("a split frame fits the transmit buffer"),
        )
    } else {
        relay.poll_transmit(out)
    }
}

/// An event of either client machine.
#[derive(Debug)]
pub(super) enum Ev {
    Up(upload::Event),
    Down(download::Event),
    Send(notice::SendEvent),
    Listen(notice::ListenEvent),
}

/// The parts of a relay message the checks need, owned (the frame is gone
/// by the time they run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OwnedMsg {
    Grant {
        code: Code,
        token: ResumeToken,
        files: u16,
    },
    Plan {
        index: u16,
        plan: Plan,
    },
    Ack {
        file: u16,
        offset: u64,
    },
    Verified {
        index: u16,
    },
    Rejected {
        index: u16,
        reason: ErrorCode,
    },
    BatchComplete,
    Manifest {
        code: Code,
        files: u16,
        total_size: u64,
        ready: bool,
    },
    Entry {
        index: u16,
        size: u64,
        sha1: Sha1Digest,
        name: String,
    },
    Data {
        file: u16,
        offset: u64,
        bytes: Vec<u8>,
    },
    Error {
        code: ErrorCode,
        kind: u8,
    },
    Notice {
        id: u64,
        code: Code,
        total_size: u64,
    },
    Settled {
        id: u64,
    },
    Delivery {
        push_id: u64,
        state: pickup_proto::message::DeliveryState,
    },
    Other(pickup_proto::message::Kind),
}

pub(super) trait ToOwnedMsg {
    fn to_owned_msg(&self) -> OwnedMsg;
}

impl ToOwnedMsg for Message<'_> {
    fn to_owned_msg(&self) -> OwnedMsg {
        match *self {
            Message::Grant(g) => OwnedMsg::Grant {
                code: g.code,
                token: g.token,
                files: g.files,
            },
            Message::FilePlan(p) => OwnedMsg::Plan {
                index: p.index,
                plan: p.plan,
            },
            Message::Ack(a) => OwnedMsg::Ack {
                file: a.file,
                offset: a.offset,
            },
            Message::FileVerified(v) => OwnedMsg::Verified { index: v.index },
            Message::FileRejected(r) => OwnedMsg::Rejected {
                index: r.index,
                reason: r.reason,
            },
            Message::BatchComplete(_) => OwnedMsg::BatchComplete,
            Message::Manifest(m) => OwnedMsg::Manifest {
                code: m.code,
                files: m.files,
                total_size: m.total_size,
                ready: m.ready,
            },
            Message::ManifestEntry(e) => OwnedMsg::Entry {
                index: e.index,
                size: e.size,
                sha1: e.sha1,
                name: e.name.to_owned(),
            },
            Message::Data(d) => OwnedMsg::Data {
                file: d.file,
                offset: d.offset,
                bytes: d.bytes.to_vec(),
            },
            Message::Error(e) => OwnedMsg::Error {
                code: e.code,
                kind: e.kind,
            },
            Message::Notice(n) => OwnedMsg::Notice {
                id: n.id,
                code: n.code,
                total_size: n.total_size,
            },
            Message::Settled(s) => OwnedMsg::Settled { id: s.id },
            Message::Delivery(d) => OwnedMsg::Delivery {
                push_id: d.push_id,
                state: d.state,
            },
            other => OwnedMsg::Other(other.kind()),
        }
    }
}
