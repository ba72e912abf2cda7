//! The delivery rules both stores follow: which state may follow which
//! (PROTOCOL.md §11's table), what counts as open, and the caps.

use pickup_proto::message::DeliveryState;

use super::{PushSettings, Settle};

/// The state's number on the wire and in the database.
pub fn state_code(s: DeliveryState) -> u8 {
    match s {
        DeliveryState::Queued => 0,
        DeliveryState::Notified => 1,
        DeliveryState::Receiving => 2,
        DeliveryState::Offline => 3,
        DeliveryState::Delivered => 4,
        DeliveryState::Refused => 5,
        DeliveryState::Expired => 6,
    }
}

/// The state numbered `n`; `None` for a number no state has (a damaged row).
pub fn state_from(n: i64) -> Option<DeliveryState> {
    Some(match n {
        0 => DeliveryState::Queued,
        1 => DeliveryState::Notified,
        2 => DeliveryState::Receiving,
        3 => DeliveryState::Offline,
        4 => DeliveryState::Delivered,
        5 => DeliveryState::Refused,
        6 => DeliveryState::Expired,
        _ => return None,
    })
}

/// The numbers of the open states, for SQL (`state IN (0, 1, 2, 3)`).
pub const OPEN_STATES_SQL: &str = "(0, 1, 2, 3)";

/// Open: neither final nor expired; it counts against the caps and its
/// notice is sent after every `Listen`.
pub fn is_open(s: DeliveryState) -> bool {
    !s.is_final()
}

/// After a `NoticeAck`: only a `Queued` delivery moves (an
/// acknowledgement that arrives after a read or a receipt changes nothing).
pub fn after_ack(s: DeliveryState) -> Option<DeliveryState> {
    (s == DeliveryState::Queued).then_some(DeliveryState::Notified)
}

/// After a read by the target: any open state but `Receiving` moves to
/// it (`Offline` too: the target came back for its offline file).
pub fn after_read(s: DeliveryState) -> Option<DeliveryState> {
    (is_open(s) && s != DeliveryState::Receiving).then_some(DeliveryState::Receiving)
}

/// After a receipt or refusal: an open delivery becomes final; a final
/// one stays as it is (the first settlement wins, and a receipt after
/// expiry changes nothing).
pub fn after_settle(s: DeliveryState, how: Settle) -> Option<DeliveryState> {
    is_open(s).then_some(match how {
        Settle::Receipt => DeliveryState::Delivered,
        Settle::Refuse => DeliveryState::Refused,
    })
}

/// Whether an open delivery pushed at `created_at` goes `Offline` at
/// `now`: once, when its confirm deadline has passed.
pub fn goes_offline(
    s: DeliveryState,
    went_offline: bool,
    created_at: u64,
    now: u64,
    p: &PushSettings,
) -> bool {
    is_open(s)
        && s != DeliveryState::Offline
        && !went_offline
        && created_at.saturating_add(p.confirm_deadline_secs) <= now
}

/// Which cap a push would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `max_open_per_terminal`.
    Terminal,
    /// `max_open_per_sender_terminal`.
    SenderTerminal,
    /// `max_open_per_sender`.
    Sender,
    /// `max_offline_bytes_per_sender`.
    OfflineBytes,
}

/// What the open deliveries hold now, as a push sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenCounts {
    /// Open deliveries to the target, from anyone.
    pub to_terminal: u64,
    /// Open deliveries to the target from the sender.
    pub sender_to_terminal: u64,
    /// Open deliveries from the sender.
    pub from_sender: u64,
    /// Sizes of the distinct batches of the sender's open deliveries,
    /// summed, counting the pushed batch once if it is not among them.
    pub sender_bytes: u64,
}

/// The first cap one more open delivery would pass, if any. The
/// per-sender-and-terminal cap is checked first: a flooding sender hears
/// of its own cap, and others still reach the terminal.
pub fn check_caps(c: &OpenCounts, p: &PushSettings) -> Result<(), Cap> {
    if c.sender_to_terminal >= u64::from(p.max_open_per_sender_terminal) {
        return Err(Cap::SenderTerminal);
    }
    if c.to_terminal >= u64::from(p.max_open_per_terminal) {
        return Err(Cap::Terminal);
    }
    if c.from_sender >= u64::from(p.max_open_per_sender) {
        return Err(Cap::Sender);
    }
    if c.sender_bytes > p.max_offline_bytes_per_sender {
        return Err(Cap::OfflineBytes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_numbers_round_trip_and_unknown_ones_are_refused() {
        for n in 0..=6 {
            assert_eq!(state_from(n).map(state_code), Some(n as u8));
        }
        assert_eq!(state_from(7), None);
        assert_eq!(state_from(-1), None);
    }

    #[test]
    fn transitions_follow_the_protocol_table() {
        use DeliveryState::*;
        assert_eq!(after_ack(Queued), Some(Notified));
        assert_eq!(after_ack(Receiving), None);
        assert_eq!(after_ack(Delivered), None);
        assert_eq!(after_read(Offline), Some(Receiving));
        assert_eq!(after_read(Receiving), None);
        assert_eq!(after_read(Refused), None);
        assert_eq!(after_settle(Offline, Settle::Receipt), Some(Delivered));
        assert_eq!(after_settle(Queued, Settle::Refuse), Some(Refused));
        assert_eq!(after_settle(Delivered, Settle::Refuse), None);
        assert_eq!(after_settle(Expired, Settle::Receipt), None);
    }

    #[test]
    fn offline_comes_once_after_the_deadline() {
        let p = PushSettings::default();
        let d = p.confirm_deadline_secs;
        use DeliveryState::*;
        assert!(!goes_offline(Queued, false, 100, 100 + d - 1, &p));
        assert!(goes_offline(Receiving, false, 100, 100 + d, &p));
        assert!(!goes_offline(Receiving, true, 100, 100 + d, &p));
        assert!(!goes_offline(Delivered, false, 100, 100 + d, &p));
    }

    #[test]
    fn the_sender_terminal_cap_comes_before_the_terminal_cap() {
        let p = PushSettings::default();
        let full = OpenCounts {
            to_terminal: 100,
            sender_to_terminal: 20,
            ..OpenCounts::default()
        };
        assert_eq!(check_caps(&full, &p), Err(Cap::SenderTerminal));
        let other = OpenCounts {
            sender_to_terminal: 0,
            ..full
        };
        assert_eq!(check_caps(&other, &p), Err(Cap::Terminal));
        let bytes = OpenCounts {
            sender_bytes: (4 << 30) + 1,
            ..OpenCounts::default()
        };
        assert_eq!(check_caps(&bytes, &p), Err(Cap::OfflineBytes));
        assert_eq!(check_caps(&OpenCounts::default(), &p), Ok(()));
    }
}
