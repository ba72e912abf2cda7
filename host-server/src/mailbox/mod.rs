//! Addressed delivery (PROTOCOL.md §11): durable deliveries of a batch to
//! a registered terminal, their notices, receipts and offline deadlines.
//!
//! ```text
//!   session: Push ─► job: directory (may the sender reach the terminal?)
//!                         └► Mailbox::push  (retry? batch live and ready? caps?) ─► Delivery
//!                                 └► Relay::ring(terminal): the listening session loads it
//!   session: Listen ─► Mailbox::inbox ─► Inbox{n}, Notice ×n
//!   session: NoticeAck / Receipt / NoticeRefuse ─► Mailbox::acknowledge / settle
//!   session: Read as the target ─► Mailbox::record_progress (at most once a second)
//!   Relay::sweep ─► Mailbox::sweep_deliveries (Offline, receiving grace), then
//!                   Store::sweep (expired batches: their open deliveries become Expired)
//! ```
//!
//! [`Mailbox`] is implemented by both stores: the SQLite store keeps
//! deliveries in tables of the same database as the batches they name,
//! so a delivery and the expiry of its batch change in one transaction;
//! the memory store keeps them beside its batches for the simulator.
//! Every method is atomic and durable when it returns, as the
//! [`Store`](crate::store::Store)'s. Which state may follow which, and
//! what the caps count, is written once, in [`rules`].
//!
//! Who may push where is the directory's (`Directory::allows_sender`);
//! the mailbox takes a target the caller has checked.
//!
//! Where PROTOCOL.md is silent, the relay decides so:
//!
//! - A retry is recognised by (sender, `push_id`) alone: a repeated
//!   `push_id` naming another code or terminal gets the first delivery.
//! - The offline-bytes cap counts the distinct batches of a sender's open
//!   deliveries, offline or not yet: any of them may become an offline
//!   file, and a deadline cannot be refused once it passes.
//! - A `Receipt` or `NoticeRefuse` of a delivery already final (settled,
//!   or expired) is answered `Settled` and changes nothing: the first
//!   settlement wins, and the terminal stops repeating it.
//! - A terminal removed by the operator keeps its open deliveries until
//!   their batches expire (they then read `Expired` for the sender).
//! - Progress counts the bytes the relay sent the target, per file the
//!   furthest end, whichever session it used.
//! - Delivery ids are never reused (SQLite `AUTOINCREMENT`), so a
//!   terminal's memory of settled ids stays right across relay restarts.

pub mod listeners;
pub mod rules;

pub use listeners::Doorbell;

use pickup_proto::message::DeliveryState;
use pickup_proto::Code;

use crate::store::{BatchId, LookupKey, Result};

/// `[push]` in the configuration: the deadlines and caps of addressed
/// delivery. The one place their defaults are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushSettings {
    /// A delivery neither confirmed nor refused this long after its push
    /// becomes `Offline`.
    pub confirm_deadline_secs: u64,
    /// How long an `Offline` delivery's batch is kept from the moment it
    /// went offline (if longer than the batch's own expiry).
    pub offline_ttl_secs: u64,
    /// A read by the target keeps the batch at least this long after it.
    pub receiving_grace_secs: u64,
    /// Open deliveries one terminal may have, from all senders.
    pub max_open_per_terminal: u32,
    /// Open deliveries one sender may have to one terminal: below the
    /// per-terminal cap, so one sender cannot fill a terminal's queue.
    pub max_open_per_sender_terminal: u32,
    /// Open deliveries one sender may have, to all terminals.
    pub max_open_per_sender: u32,
    /// Bytes of distinct batches one sender's open deliveries may keep
    /// (each may become an offline file).
    pub max_offline_bytes_per_sender: u64,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            confirm_deadline_secs: 600,
            offline_ttl_secs: 7 * 24 * 3600,
            receiving_grace_secs: 300,
            max_open_per_terminal: 100,
            max_open_per_sender_terminal: 20,
            max_open_per_sender: 1000,
            max_offline_bytes_per_sender: 4 << 30,
        }
    }
}

impl PushSettings {
    /// Checks ranges that would otherwise refuse every push or overflow
    /// an `Inbox` count.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.max_open_per_terminal == 0
            || self.max_open_per_sender_terminal == 0
            || self.max_open_per_sender == 0
        {
            return Err("push caps must allow at least one open delivery".into());
        }
        if self.max_open_per_terminal > u32::from(u16::MAX) {
            return Err(format!(
                "push.max_open_per_terminal must be at most {} (an Inbox count)",
                u16::MAX
            ));
        }
        if self.confirm_deadline_secs == 0 {
            return Err("push.confirm_deadline_secs must be positive".into());
        }
        Ok(())
    }
}

/// One delivery, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The relay's id, unique and never reused: the notice's id.
    pub id: u64,
    /// The user who pushed.
    pub sender: String,
    /// The sender's id for the push (unique per sender).
    pub push_id: u64,
    /// The batch.
    pub batch: BatchId,
    /// The batch's code.
    pub code: Code,
    /// The target terminal.
    pub terminal: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Bytes the target read: per file the end of the furthest read, summed.
    pub bytes: u64,
    /// The batch's total size.
    pub total: u64,
    /// Files in the batch.
    pub files: u16,
    /// When `state` was entered (Unix seconds).
    pub at: u64,
    /// When the delivery expires: its batch's expiry (Unix seconds).
    pub until: u64,
    /// When it was pushed.
    pub created_at: u64,
    /// When the target last read the batch, if it did.
    pub last_read_at: Option<u64>,
    /// It went `Offline` once (it does not again after a later read).
    pub went_offline: bool,
}

/// A push to store.
#[derive(Debug, Clone, Copy)]
pub struct NewPush<'a> {
    /// The user who pushes (a terminal's owner for a terminal's push).
    pub sender: &'a str,
    /// The sender's id for the push.
    pub push_id: u64,
    /// The batch's code, and its lookup key.
    pub code: Code,
    /// [`crate::codes::code_key`] of `code`.
    pub code_key: LookupKey,
    /// The target, already checked against the directory.
    pub terminal: &'a str,
    /// Now, Unix seconds.
    pub now: u64,
}

/// Why a push was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushRefusal {
    /// No batch has the code.
    UnknownCode,
    /// The batch has expired.
    Expired,
    /// The batch is still uploading.
    NotReady,
    /// A cap would be passed.
    Full(rules::Cap),
}

/// What [`Mailbox::push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// A new delivery, stored.
    Queued(DeliveryRecord),
    /// The sender made this push before: its delivery as it stands.
    Again(DeliveryRecord),
    /// Nothing stored.
    Refused(PushRefusal),
}

/// How a terminal settles a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// `Receipt`: every file is stored and verified.
    Receipt,
    /// `NoticeRefuse`.
    Refuse,
}

/// What [`Mailbox::settle`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No delivery of this id is addressed to the terminal.
    Unknown,
    /// The delivery entered this final state now.
    Now(DeliveryState),
    /// It was final already (a repeated receipt, or one after expiry):
    /// nothing changed.
    Already(DeliveryState),
}

/// What a delivery sweep changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliverySweep {
    /// Deliveries that went `Offline`.
    pub offline: u64,
    /// Batches kept past their expiry because their target read them lately.
    pub kept_receiving: u64,
}

/// Durable deliveries. Times are Unix seconds, passed in.
pub trait Mailbox: Send + Sync {
    /// The delivery of `sender`'s push `push_id`, if it was made.
    fn delivery_by_push(&self, sender: &str, push_id: u64) -> Result<Option<DeliveryRecord>>;
    /// Stores a push, in one transaction: a retry (same sender and
    /// `push_id`) returns the delivery it made; else the batch must be
    /// live and complete and no cap of `limits` passed.
    fn push(&self, push: &NewPush<'_>, limits: &PushSettings) -> Result<Pushed>;
    /// The deliveries `sender` pushed of the batch with `code_key`,
    /// oldest first, the newest `max` at most.
    fn deliveries_of(
        &self,
        sender: &str,
        code_key: &LookupKey,
        max: usize,
    ) -> Result<Vec<DeliveryRecord>>;
    /// Open deliveries to `terminal` with an id above `after`, oldest
    /// first, at most `max`.
    fn inbox(&self, terminal: &str, after: u64, max: usize) -> Result<Vec<DeliveryRecord>>;
    /// `NoticeAck`: a `Queued` delivery `id` to `terminal` becomes
    /// `Notified`. `false` if no delivery of this id is addressed to it.
    fn acknowledge(&self, terminal: &str, id: u64, now: u64) -> Result<bool>;
    /// `Receipt` or `NoticeRefuse` of delivery `id` by `terminal`.
    fn settle(&self, terminal: &str, id: u64, how: Settle, now: u64) -> Result<Settled>;
    /// `terminal` read files of `batch` up to these ends (file, end): its
    /// open deliveries of the batch become `Receiving` with the bytes
    /// read, and the batch is kept until at least `now + grace_secs`.
    /// Returns the batch's expiry if any delivery matched.
    fn record_progress(
        &self,
        terminal: &str,
        batch: BatchId,
        ends: &[(u16, u64)],
        now: u64,
        grace_secs: u64,
    ) -> Result<Option<u64>>;
    /// Moves deliveries past their confirm deadline to `Offline` (their
    /// batch kept until `now + offline_ttl_secs` at least) and keeps
    /// batches whose target read them within the receiving grace. Call it
    /// before [`Store::sweep`](crate::store::Store::sweep), which expires
    /// the open deliveries of the batches it deletes.
    fn sweep_deliveries(&self, now: u64, settings: &PushSettings) -> Result<DeliverySweep>;
}
