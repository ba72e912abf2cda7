//! Relay-to-relay forwarding (kinds `0x40..0x4F`): a logged-in user asks
//! the relay that holds a batch to copy it to a peer relay, and follows
//! the copy until the peer's code for it comes back.
//!
//! The relay keeps a durable *forward* per request and uploads the batch
//! to the peer itself (as a terminal would, PROTOCOL.md §5.2); these kinds
//! only start a forward, report where it stands and retry a failed one.
//! All need an authenticated user session (PROTOCOL.md §8); only the user
//! who asked sees a forward. [`ForwardPush`] forwards and then pushes the
//! copy to a terminal at the peer, which the forwarding relay asks of the
//! peer with [`PeerPush`] on its own relay-role session. PROTOCOL.md §12
//! has the exchanges.

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::error::ErrorCode;

/// Where a forward stands. Encoded as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ForwardState {
    /// 0: stored; waiting for a free slot or its next attempt.
    Queued,
    /// 1: dialling or authenticating to the peer.
    Connecting,
    /// 2: the peer granted the batch; bytes or proofs are crossing.
    Transferring,
    /// 3: every byte is durable at the peer; its verdicts are awaited.
    Verifying,
    /// 4: the peer verified every file: `peer_code` serves the copy.
    Done,
    /// 5: an attempt failed (`reason`); another follows after a backoff.
    Retrying,
    /// 6: the forward gave up (`reason`); a `ForwardRetry` queues it again.
    Failed,
}

impl ForwardState {
    /// Every state, by number.
    pub const ALL: [ForwardState; 7] = [
        ForwardState::Queued,
        ForwardState::Connecting,
        ForwardState::Transferring,
        ForwardState::Verifying,
        ForwardState::Done,
        ForwardState::Retrying,
        ForwardState::Failed,
    ];

    /// The state's wire number.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The state of a wire number, if there is one.
    pub fn from_number(n: u8) -> Option<ForwardState> {
        ForwardState::ALL.get(usize::from(n)).copied()
    }

    /// Whether the forward can change no more by itself (`Failed` changes
    /// only on a `ForwardRetry`).
    pub fn is_final(self) -> bool {
        matches!(self, ForwardState::Done | ForwardState::Failed)
    }

    /// Whether an attempt is running (a relay instance holds the forward).
    pub fn is_running(self) -> bool {
        matches!(
            self,
            ForwardState::Connecting | ForwardState::Transferring | ForwardState::Verifying
        )
    }
}

/// 0x40, terminal → relay: copy the complete batch `code` to the peer
/// relay `peer` (a name in the relay's `[[peers]]`). Answered by
/// [`ForwardAccepted`]; `Error{AuthRequired}` without a user session,
/// `Error{UnknownCode}`, `Error{Expired}`, `Error{NotReady}` for the
/// batch, `Error{UnknownPeer}` for a peer the relay does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ForwardRequest<'a> {
    /// The batch, by its code on this relay.
    pub code: Code,
    /// The peer relay's name.
    pub peer: &'a str,
}

/// 0x41, relay → terminal: the forward is stored (durably) as `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ForwardAccepted {
    /// The relay's id for the forward, never reused.
    pub id: u64,
}

/// 0x42, terminal → relay: report forward `id`. Answered by a
/// [`ForwardStatus`] at once, and, unless `once`, by another on each
/// change (at most one per 250 ms) until the forward is `Done` or
/// `Failed`. `Error{UnknownCode}` for an id that is not the session
/// user's (whether it exists or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ForwardWatch {
    /// The forward.
    pub id: u64,
    /// One status only, no watching.
    pub once: bool,
}

/// 0x43, relay → terminal: where forward `id` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ForwardStatus {
    /// The forward.
    pub id: u64,
    /// Its state.
    pub state: ForwardState,
    /// Bytes durable at the peer (they never go back within a forward).
    pub sent: u64,
    /// Bytes of the batch.
    pub total: u64,
    /// Bytes per second over the last seconds of the running attempt (0
    /// when none runs).
    pub rate: u32,
    /// Attempts made so far.
    pub attempts: u8,
    /// Why the last attempt failed (`Retrying`, `Failed`), else `None`.
    pub reason: Option<ErrorCode>,
    /// The peer's code for the copy, once `Done`; also on `Failed` when
    /// the copy was made and only the push of a [`ForwardPush`] failed
    /// (the copy exists at the peer, the notice does not).
    pub peer_code: Option<Code>,
    /// When the peer's copy expires, Unix seconds (0 while `peer_code`
    /// is `None`).
    pub peer_expires_at: u64,
}

/// 0x44, terminal → relay: queue the `Failed` (or `Retrying`) forward
/// `id` again now, with its attempts counted from zero. Answered by a
/// [`ForwardStatus`]; a forward in another state is left as it is and
/// reported. `Error{UnknownCode}` as for [`ForwardWatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ForwardRetry {
    /// The forward.
    pub id: u64,
}

/// 0x45, terminal → relay: forward the complete batch `code` to the peer
/// relay `peer`, as a [`ForwardRequest`] does, and once the peer verified
/// the copy, push it there to the peer's registered terminal `terminal`
/// from this session's user (the notice names the sender `user@relay`,
/// where `relay` is this relay's name at the peer). Answered by
/// [`ForwardAccepted`]; a retry (the same `push_id` from the same user)
/// answers with the forward it made. Errors as for [`ForwardRequest`],
/// and `Error{UnknownTerminal}` for a name no terminal can have. Whether
/// the peer takes the push shows in the forward's status: `Done` once the
/// peer queued the notice, `Failed` with the peer's refusal (the peer's
/// code then still names the copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ForwardPush<'a> {
    /// The batch, by its code on this relay.
    pub code: Code,
    /// The peer relay's name.
    pub peer: &'a str,
    /// The target terminal's registered name at the peer.
    pub terminal: &'a str,
    /// Chosen by the sender, once per push; a retry repeats it.
    pub push_id: u64,
}

/// 0x46, relay → relay: push the peer's batch `code` to its registered
/// terminal `terminal`, from user `sender` of the asking relay. Only on a
/// session that authenticated as a listed peer relay
/// (`Error{AuthRequired}` otherwise). The peer names the sender
/// `sender@relay`, with `relay` the asking relay's `[[peers]]` name, and
/// takes the push only if the terminal's owner allows that sender
/// (`AllowSender`); otherwise it answers as to a `Push`: a [`Delivery`]
/// (also for a retry with the same `push_id` from the same sender), or
/// `Error{UnknownTerminal}`, `Error{UnknownCode}`, `Error{Expired}`,
/// `Error{NotReady}`, `Error{QueueFull}`.
///
/// [`Delivery`]: super::Delivery
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerPush<'a> {
    /// The sender's id for the push.
    pub push_id: u64,
    /// The batch, by its code on the receiving relay.
    pub code: Code,
    /// The target terminal's registered name.
    pub terminal: &'a str,
    /// The user of the asking relay who pushes.
    pub sender: &'a str,
}
