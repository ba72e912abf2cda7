//! Addressed delivery (kinds `0x30..0x3F`): a user pushes a batch's code to
//! a registered terminal, the relay keeps a durable notice for it, the
//! terminal receives the notice while listening, downloads the batch by
//! its code and confirms with a receipt; the sender follows the delivery.
//!
//! Both sides need an authenticated session (PROTOCOL.md §8): the sender a
//! user's (or a terminal's, acting for its owner), the target its own
//! terminal identity. A relay that predates these kinds answers each with
//! `Error{UnknownKind}`. PROTOCOL.md §11 has the exchange, the delivery
//! states and the rules that make a notice reach the application exactly
//! once.

use serde::{Deserialize, Serialize};

use crate::code::Code;

/// Where a delivery stands, as the relay tracks it for the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeliveryState {
    /// 0: stored; the target has not received the notice yet.
    Queued,
    /// 1: the target acknowledged the notice ([`NoticeAck`]).
    Notified,
    /// 2: the target is downloading the batch (`bytes` of `total`).
    Receiving,
    /// 3: the target did not confirm within the relay's deadline: the
    /// batch is kept as an offline file until `until` and the notice stays
    /// queued for the target.
    Offline,
    /// 4: the target verified every file and sent a [`Receipt`] (`at`).
    Delivered,
    /// 5: the target refused the notice ([`NoticeRefuse`]).
    Refused,
    /// 6: the batch expired before the target confirmed.
    Expired,
}

impl DeliveryState {
    /// Whether the delivery can change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Delivered | DeliveryState::Refused | DeliveryState::Expired
        )
    }
}

/// Why a terminal refused a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RefuseReason {
    /// 0: the batch is larger than the terminal accepts.
    TooLarge,
    /// 1: the terminal accepts nothing from this sender.
    Sender,
    /// 2: the terminal has no room for the batch.
    NoSpace,
    /// 3: the terminal's user or application declined it.
    Declined,
}

/// 0x30, terminal → relay: deliver the complete batch `code` to the
/// registered terminal `terminal`. Needs an authenticated session.
/// Answered by a [`Delivery`] (also for a retry: the same `push_id` from
/// the same user creates no second delivery), or `Error{UnknownTerminal}`
/// alike for a terminal that does not exist and one the sender may not
/// reach, `Error{UnknownCode}`, `Error{Expired}`, `Error{NotReady}` for a
/// batch still uploading, `Error{QueueFull}` (with a retry hint when
/// waiting helps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Push<'a> {
    /// Chosen at random by the sender, once per push; a retry repeats it.
    pub push_id: u64,
    /// The batch.
    pub code: Code,
    /// The target terminal's registered name.
    pub terminal: &'a str,
}

/// 0x31, relay → terminal: where one delivery stands. The answer to a
/// [`Push`], and one per delivery in the answer to a [`DeliveryStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Delivery<'a> {
    /// The sender's id for the push.
    pub push_id: u64,
    /// The batch.
    pub code: Code,
    /// The target terminal.
    pub terminal: &'a str,
    /// The state.
    pub state: DeliveryState,
    /// Bytes the target has downloaded (while `Receiving`; else the last
    /// count seen).
    pub bytes: u64,
    /// The batch's total size.
    pub total: u64,
    /// When the delivery entered `state`, Unix seconds.
    pub at: u64,
    /// When the batch (and so the delivery) expires, Unix seconds: the
    /// code's expiry, or the end of the offline retention once `Offline`.
    pub until: u64,
}

/// 0x32, terminal → relay: the deliveries of batch `code` this session's
/// user pushed. Answered by one [`Delivery`] per delivery, newest last,
/// then `Done{kind: 0x32}`; `Error{AuthRequired}` without a session user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeliveryStatus {
    /// The batch.
    pub code: Code,
}

/// 0x34, relay → terminal: answers a `Listen` (kind 0x33, empty body):
/// `count` [`Notice`]s follow, every notice addressed to this terminal
/// that is neither refused nor confirmed, oldest first. Notices pushed
/// later while the session listens follow one by one, without an `Inbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Inbox {
    /// How many notices follow.
    pub count: u16,
}

/// 0x35, relay → terminal: a batch was pushed to this terminal. Sent at
/// least once: again after every `Listen` until the terminal refuses or
/// confirms it, so the terminal de-duplicates by `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Notice<'a> {
    /// The relay's id for this delivery, unique on the relay.
    pub id: u64,
    /// The batch, to fetch like any code.
    pub code: Code,
    /// The user who pushed it.
    pub sender: &'a str,
    /// Files in the batch.
    pub files: u16,
    /// The batch's total size.
    pub total_size: u64,
    /// When the batch expires, Unix seconds.
    pub expires_at: u64,
}

/// 0x36, terminal → relay: notice `id` arrived (the delivery becomes
/// `Notified`). Not answered: a lost acknowledgement only leaves the
/// state at `Queued` until the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NoticeAck {
    /// The notice.
    pub id: u64,
}

/// 0x37, terminal → relay: the terminal will not take notice `id`.
/// Answered by [`Settled`], or `Error{UnknownNotice}` when `id` is not a
/// notice addressed to this session's terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NoticeRefuse {
    /// The notice.
    pub id: u64,
    /// Why.
    pub reason: RefuseReason,
}

/// 0x38, terminal → relay: every file of notice `id`'s batch is stored
/// and verified here (the delivery becomes `Delivered`). Answered by
/// [`Settled`], also when it was already confirmed, or
/// `Error{UnknownNotice}` when `id` is not a notice addressed to this
/// session's terminal (so no other terminal can confirm it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Receipt {
    /// The notice.
    pub id: u64,
}

/// 0x3A, terminal → relay: let user `sender` push to this session user's
/// terminals (`allow`), or no longer. Needs an authenticated session; a
/// user can always push to their own terminals. Answered by
/// `Done{kind: 0x3A}`, also for a user that does not exist (so that names
/// cannot be probed: such a user can never push). A user of a peer relay
/// (`user@relay`) past the relay's cap on such grants gets
/// `Error{QueueFull}` (PROTOCOL.md §12.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AllowSender<'a> {
    /// The user to allow or deny.
    pub sender: &'a str,
    /// Allow (`true`) or withdraw (`false`).
    pub allow: bool,
}

/// 0x39, relay → terminal: the refusal or receipt of notice `id` is
/// stored; the notice is not sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Settled {
    /// The notice.
    pub id: u64,
}
