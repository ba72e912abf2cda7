//! Addressed delivery (PROTOCOL.md §11), the terminal's two machines.
//!
//! ```text
//!   a user's CLI / a terminal                 relay                     the target terminal
//!   ┌──────────────┐  Push, DeliveryStatus,   ┌─────┐  Inbox, Notice,   ┌──────────────┐
//!   │ send::Sender │ ───── AllowSender ─────► │     │ ───── Settled ──► │listen::Listener│
//!   │              │ ◄──── Delivery, Done ─── │     │ ◄── Listen, Ack,  │              │
//!   └──────────────┘                          └─────┘  Receipt, Refuse  └──────────────┘
//!                                                ▲        the batch itself: download::Session
//!                                                └───────── by the notice's code, as the terminal
//! ```
//!
//! - [`Listener`] runs on the target terminal: after `Welcome` it
//!   authenticates as itself (a terminal identity is required: the relay
//!   gives notices to no one else), sends `Listen`, and hands each notice
//!   to the application exactly once; the application then downloads the
//!   batch with a [`download::Session`](crate::download::Session) on a
//!   link authenticated as the same terminal and calls
//!   [`Listener::confirm`] (or [`Listener::refuse`]).
//! - [`Sender`] runs on whoever pushes: one request at a time (`Push`,
//!   `DeliveryStatus`, `AllowSender`) on a session authenticated with a
//!   user's token or a terminal's identity.
//!
//! Both are sans-IO like the transfer sessions: the driver moves frames and
//! time through the [`Machine`](crate::drive::Machine) contract (call order
//! in [`crate::drive`]); they touch no files, so any `Files` type will do.
//! Both keep bounded state: fixed queues, a fixed-capacity record of ids
//! ([`Listener`]'s `N`), account names in an [`AccountName`] of 32 bytes,
//! a notice's sender in a [`SenderName`] of 65 (`user@pair`).
//!
//! With the feature `notices` only.

mod config;
mod ledger;
mod listen;
mod send;

pub use config::{AcceptFrom, ListenConfig, Policy, SendConfig};
pub use ledger::{Verdict, VerdictError};
pub use listen::{ListenError, ListenEvent, Listener, NoticeInfo};
pub use send::{DeliveryInfo, RequestError, RequestKind, SendError, SendEvent, Sender};

/// The longest account name a relay registers (user and terminal names),
/// in bytes: what an [`AccountName`] holds.
pub const MAX_ACCOUNT_NAME_LEN: usize = 32;

/// A user's or terminal's name, copied out of a frame so an event outlives
/// it.
pub type AccountName = heapless::String<MAX_ACCOUNT_NAME_LEN>;

/// The longest name a relay lists a peer relay (a pair) under in its
/// `[[peers]]`, in bytes: the rules of account names apply to it.
pub const MAX_PAIR_NAME_LEN: usize = MAX_ACCOUNT_NAME_LEN;

/// The longest sender a notice names, in bytes: a user of this relay (an
/// account name), or `user@pair` for a user of a peer relay (PROTOCOL.md
/// §12.1): what a [`SenderName`] holds.
pub const MAX_SENDER_NAME_LEN: usize = MAX_ACCOUNT_NAME_LEN + 1 + MAX_PAIR_NAME_LEN;

/// Who pushed a notice, copied out of its frame: an account name, or
/// `user@pair`.
pub type SenderName = heapless::String<MAX_SENDER_NAME_LEN>;

/// `name` as an [`AccountName`], or `None` if it is longer than any
/// account name.
pub(crate) fn account_name(name: &str) -> Option<AccountName> {
    bounded(name)
}

/// `name` as a [`SenderName`], or `None` if it is longer than any sender
/// a relay names.
pub(crate) fn sender_name(name: &str) -> Option<SenderName> {
    bounded(name)
}

/// `name` whole in a string of `N` bytes, or `None`.
fn bounded<const N: usize>(name: &str) -> Option<heapless::String<N>> {
    let mut s = heapless::String::new();
    s.push_str(name).ok()?;
    Some(s)
}

/// `name` cut to [`MAX_ACCOUNT_NAME_LEN`] bytes at a character boundary:
/// for display only (a relay's names fit whole).
pub(crate) fn account_name_lossy(name: &str) -> AccountName {
    let mut end = name.len().min(MAX_ACCOUNT_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let mut s = AccountName::new();
    // `end` bytes fit by construction.
    let _ = s.push_str(&name[..end]);
    s
}
