//! What a session tells the relay's operator: one info line per refusal with
//! its reason, and garbage (frames the decoder threw away, messages that
//! broke the protocol) counted and said once, when the session ends.
//!
//! Logging is a side channel: nothing here feeds back into the session, so
//! the simulator and the fuzzers behave the same with or without a
//! subscriber. Failed lookups refused as `RateLimited` are not logged here,
//! one line per try would let a guesser flood the log: the rate limiter
//! says them at most once a minute per peer ([`crate::rate_limit`]).

use std::sync::Arc;

use pickup_proto::frame::Dropped;
use pickup_proto::message::Kind;
use pickup_proto::ErrorCode;

use crate::metrics::Metrics;
use crate::rate_limit::Peer;

/// A session's log identity and its garbage counters.
#[derive(Debug)]
pub(super) struct OpLog {
    session: u64,
    peer: Peer,
    /// Bytes runs the frame decoder dropped (bad CRC, bad COBS, oversize).
    dropped_frames: u64,
    /// Errors sent for messages that broke the protocol.
    protocol_errors: u64,
    /// The relay's counters: every refusal and session event is counted.
    pub(super) metrics: Arc<Metrics>,
}

impl OpLog {
    pub(super) fn new(session: u64, peer: Peer, metrics: Arc<Metrics>) -> OpLog {
        OpLog {
            session,
            peer,
            dropped_frames: 0,
            protocol_errors: 0,
            metrics,
        }
    }

    /// The session answers `code` about a message of `kind`.
    pub(super) fn error(&mut self, code: ErrorCode, kind: u8, retry_after_ms: u32) {
        self.metrics.refusal(code, kind);
        match code {
            // Said by the rate limiter, aggregated.
            ErrorCode::RateLimited => {}
            // The peer broke the protocol: counted, said at the end.
            ErrorCode::BadFrame
            | ErrorCode::UnsupportedVersion
            | ErrorCode::UnknownKind
            | ErrorCode::UnexpectedMessage
            | ErrorCode::OutOfRange => self.protocol_errors += 1,
            // How a session ends, not a refusal; store failures are
            // logged as errors where they happen.
            ErrorCode::IdleTimeout | ErrorCode::ShuttingDown | ErrorCode::Internal => {}
            _ => tracing::info!(
                session = self.session,
                peer = %self.peer,
                reason = ?code,
                request = ?Kind::from_u8(kind),
                retry_after_ms,
                "refused"
            ),
        }
    }

    /// The driver's decoder threw bytes away.
    pub(super) fn dropped(&mut self, _why: Dropped) {
        self.dropped_frames += 1;
    }
}

impl Drop for OpLog {
    fn drop(&mut self) {
        if self.dropped_frames > 0 || self.protocol_errors > 0 {
            tracing::info!(
                session = self.session,
                peer = %self.peer,
                dropped_frames = self.dropped_frames,
                protocol_errors = self.protocol_errors,
                "garbage from the peer"
            );
        }
    }
}
