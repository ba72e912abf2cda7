//! Errors that cross the wire.
//!
//! [`ErrorCode`] is the closed set of reasons a peer can give in an
//! [`Error`](crate::message::Error) or [`FileRejected`](crate::message::FileRejected)
//! message. The numbers are part of the protocol: a variant is never renumbered,
//! new ones are appended. A peer that receives a number it does not know
//! treats the frame as undecodable (`BadFrame`).

use serde::{Deserialize, Serialize};

/// Why a request failed. Encoded as its number (a one-byte postcard varint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum ErrorCode {
    /// 0: no batch has this pickup code (or it was deleted).
    UnknownCode = 0,
    /// 1: the batch behind this code has expired.
    Expired = 1,
    /// 2: too many failed lookups or requests; wait and retry.
    RateLimited = 2,
    /// 3: the batch is still being uploaded; the manifest shows progress.
    NotReady = 3,
    /// 4: a file or batch is larger than the relay accepts.
    TooLarge = 4,
    /// 5: the relay's disk quota would be exceeded.
    Quota = 5,
    /// 6: the received bytes do not match the announced SHA-1.
    HashMismatch = 6,
    /// 7: a frame could not be decoded (CRC, COBS or body).
    BadFrame = 7,
    /// 8: the peer speaks a protocol version this side does not.
    UnsupportedVersion = 8,
    /// 9: the relay has no room for another session right now.
    Busy = 9,
    /// 10: the relay failed internally (storage error); nothing was lost.
    Internal = 10,
    /// 11: the received bytes do not match the announced size.
    SizeMismatch = 11,
    /// 12: no upload has this resume token.
    UnknownToken = 12,
    /// 13: a file name is empty, too long, not UTF-8 or contains a path
    /// separator, `..`, or a control character.
    InvalidName = 13,
    /// 14: the batch has more files than the relay accepts.
    TooManyFiles = 14,
    /// 15: the message kind is unknown to this side (newer peer).
    UnknownKind = 15,
    /// 16: the message is valid but not allowed in the current state.
    UnexpectedMessage = 16,
    /// 17: a data or read range lies outside the file.
    OutOfRange = 17,
    /// 18: the session was idle for too long.
    IdleTimeout = 18,
    /// 19: the relay is shutting down.
    ShuttingDown = 19,
    /// 20: this peer has as many incomplete batches, or has created as many
    /// batches lately, as the relay allows one peer; wait and retry.
    TooManyIncomplete = 20,
    /// 21: this peer's uploads already reserve as much storage as the relay
    /// allows one peer; wait and retry.
    PeerQuota = 21,
    /// 22: the user name and password, the token, or the terminal's answer
    /// to the challenge did not prove an identity (which one is not said).
    AuthFailed = 22,
    /// 23: the request needs an authenticated session (named files).
    AuthRequired = 23,
    /// 24: a password was sent over plain TCP from a non-loopback peer;
    /// use TLS.
    InsecureLink = 24,
    /// 25: the user's named files would exceed the user's quota.
    UserQuota = 25,
    /// 26: no terminal of this name that the sender may push to (the same
    /// answer for a name that does not exist, so names cannot be probed).
    UnknownTerminal = 26,
    /// 27: the target's or the sender's queue of notices or offline bytes
    /// is full; with a retry hint when waiting helps.
    QueueFull = 27,
    /// 28: no notice of this id is addressed to this session's terminal.
    UnknownNotice = 28,
    /// 29: the relay lists no peer relay of this name (PROTOCOL.md §12).
    UnknownPeer = 29,
    /// 30: the peer relay could not be reached, or the link to it was
    /// lost and reconnecting gave up (a forward's reason).
    PeerUnreachable = 30,
    /// 31: a newer session (on this relay, or on another instance sharing
    /// its storage) resumed this upload's token, so this session no longer
    /// holds the upload. Sent to the older session only: a terminal that
    /// reconnected never reads it, so whoever does is a second uploader of
    /// the same token, and stops.
    TakenOver = 31,
    /// 32: the session's user may not do this on this relay (a forward by
    /// a user the relay's `forward.users` does not list).
    NotAllowed = 32,
}

impl ErrorCode {
    /// Every code, in wire order: for tests and documentation tables.
    pub const ALL: [ErrorCode; 33] = [
        ErrorCode::UnknownCode,
        ErrorCode::Expired,
        ErrorCode::RateLimited,
        ErrorCode::NotReady,
        ErrorCode::TooLarge,
        ErrorCode::Quota,
        ErrorCode::HashMismatch,
        ErrorCode::BadFrame,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Busy,
        ErrorCode::Internal,
        ErrorCode::SizeMismatch,
        ErrorCode::UnknownToken,
        ErrorCode::InvalidName,
        ErrorCode::TooManyFiles,
        ErrorCode::UnknownKind,
        ErrorCode::UnexpectedMessage,
        ErrorCode::OutOfRange,
        ErrorCode::IdleTimeout,
        ErrorCode::ShuttingDown,
        ErrorCode::TooManyIncomplete,
        ErrorCode::PeerQuota,
        ErrorCode::AuthFailed,
        ErrorCode::AuthRequired,
        ErrorCode::InsecureLink,
        ErrorCode::UserQuota,
        ErrorCode::UnknownTerminal,
        ErrorCode::QueueFull,
        ErrorCode::UnknownNotice,
        ErrorCode::UnknownPeer,
        ErrorCode::PeerUnreachable,
        ErrorCode::TakenOver,
        ErrorCode::NotAllowed,
    ];

    /// A short human description, for logs and one-line CLI errors.
    pub const fn describe(self) -> &'static str {
        match self {
            ErrorCode::UnknownCode => "unknown pickup code",
            ErrorCode::Expired => "pickup code has expired",
            ErrorCode::RateLimited => "rate limited, try again later",
            ErrorCode::NotReady => "batch is not ready yet (upload in progress)",
            ErrorCode::TooLarge => "too large for this relay",
            ErrorCode::Quota => "relay storage quota exceeded",
            ErrorCode::HashMismatch => "content does not match its SHA-1",
            ErrorCode::BadFrame => "malformed frame",
            ErrorCode::UnsupportedVersion => "unsupported protocol version",
            ErrorCode::Busy => "relay is busy",
            ErrorCode::Internal => "relay internal error",
            ErrorCode::SizeMismatch => "content does not match its announced size",
            ErrorCode::UnknownToken => "unknown resume token",
            ErrorCode::InvalidName => "invalid file name",
            ErrorCode::TooManyFiles => "too many files in one batch",
            ErrorCode::UnknownKind => "unknown message kind",
            ErrorCode::UnexpectedMessage => "message not expected in this state",
            ErrorCode::OutOfRange => "offset or length outside the file",
            ErrorCode::IdleTimeout => "session idle for too long",
            ErrorCode::ShuttingDown => "relay is shutting down",
            ErrorCode::TooManyIncomplete => "too many incomplete batches from this address",
            ErrorCode::PeerQuota => "this address's storage reservation is full",
            ErrorCode::AuthFailed => "authentication failed",
            ErrorCode::AuthRequired => "log in first",
            ErrorCode::InsecureLink => "passwords need a TLS link (tls://) or loopback",
            ErrorCode::UserQuota => "your account's quota would be exceeded",
            ErrorCode::UnknownTerminal => "unknown terminal (or not one you may send to)",
            ErrorCode::QueueFull => "too many deliveries waiting for this terminal or sender",
            ErrorCode::UnknownNotice => "no such notice for this terminal",
            ErrorCode::UnknownPeer => "no peer relay of this name",
            ErrorCode::PeerUnreachable => "the peer relay could not be reached",
            ErrorCode::TakenOver => "another connection resumed this upload",
            ErrorCode::NotAllowed => "your account may not do this on this relay",
        }
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.describe())
    }
}

impl core::error::Error for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers_are_the_discriminants() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i);
            let bytes = postcard::to_allocvec(code).unwrap();
            assert_eq!(bytes, [i as u8]);
            assert_eq!(postcard::from_bytes::<ErrorCode>(&bytes).unwrap(), *code);
        }
        assert!(postcard::from_bytes::<ErrorCode>(&[ErrorCode::ALL.len() as u8]).is_err());
    }
}
