//! Which code lookups are guesses.
//!
//! A `Fetch`, or a `Read` of a code this session has not found yet, may be
//! a guess: it passes the rate limiter, and its failure is charged
//! (`download`). A `Read` within the batch this session last found by its
//! code is not: the terminal has shown it holds the code, so the lookup
//! (which still runs, for the batch's current state) neither waits for the
//! limiter nor is charged if the batch has gone meanwhile. A download of
//! many files or many restarted streams therefore costs one lookup, however
//! busy guessers keep the limiter.

use pickup_proto::message::{Kind, Read};
use pickup_proto::{ErrorCode, Instant};

use super::Session;
use crate::jobs::{Found, LookupFor, Work};
use crate::relay::unix_secs;
use crate::store::StoreError;

impl Session {
    /// A `Read` of [`Session::found_code`]: looked up, not rate limited.
    pub(super) fn on_read_in_found(&mut self, now: Instant, r: Read) {
        // As any new Read, it ends the stream before it.
        self.stream = None;
        self.work.push(Work::FindCode {
            code: r.code,
            now_secs: unix_secs(now),
            to: LookupFor::Read(r),
        });
    }

    /// A code was looked up: a batch found starts the session and
    /// remembers its code; a `Read` of that code that finds nothing (the
    /// batch expired or was swept meanwhile) is refused without a charge.
    pub(super) fn on_code_looked_up(&mut self, to: LookupFor, found: Result<Found, StoreError>) {
        self.relay.metrics().code_looked_up(&found);
        match (&to, &found) {
            (_, Ok(Found::Live(batch, _))) => {
                self.started = true;
                self.found_code = Some(batch.code);
            }
            (LookupFor::Read(r), Ok(gone)) if self.found_code == Some(r.code) => {
                let refusal = if matches!(gone, Found::Expired) {
                    ErrorCode::Expired
                } else {
                    ErrorCode::UnknownCode
                };
                return self.out.error(refusal, Kind::Read);
            }
            _ => {}
        }
        self.on_found_code(to, found);
    }
}
