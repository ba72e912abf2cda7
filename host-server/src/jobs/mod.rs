//! Work a [`Session`](crate::session::Session) hands to its driver: everything
//! that touches the store, the disk, or a hash over stored bytes.
//!
//! ```text
//!   session ── poll_job() ──► Job ── driver runs job.run(&relay) where it likes ──┐
//!      ▲                                                                           │
//!      └──────────────── handle_job_done(now, JobDone) ◄───────────────────────────┘
//! ```
//!
//! A session gives out its store work one job at a time and takes its
//! result before it gives out the next, so the store sees a session's work
//! in the order the session decided it (a file's last write and sync before
//! its completion, a flush before a resume's lookup). Beside that ordered
//! work, one sync may run. The TCP driver runs jobs on tokio's blocking
//! pool, the serial driver on its port's thread, and the simulator and
//! fuzzers whenever their seed says, including never (a relay crash
//! between a job's start and its completion).
//!
//! Running a job is the only place the relay blocks: its durability contract
//! is the [`Store`](crate::store::Store)'s. Each kind of work lives with
//! its concern: `announce` (creating, looking up), `receive` (writes, syncs,
//! verdicts), `proof` (proofs of ownership), `read` (reading ahead),
//! `identity` (passwords, tokens, terminals, named files), `notices`
//! (pushes, notices, receipts: [`crate::mailbox`]), `forwards` (requests,
//! status and retries of forwards to peer relays).

use std::sync::Arc;

use pickup_proto::identity::DeviceKey;
use pickup_proto::message::{AuthToken, ResumeToken};
use pickup_proto::Code;

use crate::directory::{DirectoryError, TokenInfo};

use crate::relay::{Lease, Relay};
use crate::store::{Batch, BlobId, NamedFile, StoreError};

mod announce;
mod forwards;
mod identity;
mod notices;
mod pieces;
mod proof;
mod read;
mod receive;
#[cfg(test)]
mod receive_tests;

pub(crate) use announce::{
    check_batch, check_file, create_batch, reserve_again, Announced, CreateBatch, Created, Refused,
};
pub(crate) use forwards::{ForwardDone, ForwardWork, Look};
pub(crate) use identity::{
    named_batch, within_quota, BindNames, Bound, FindNamed, LoggedIn, Login, NameChange, Reader,
};
pub(crate) use notices::{NoticeDone, NoticeWork, PushAnswer, PushWork};
pub(crate) use pieces::{Piece, Pieces};
pub(crate) use proof::{CheckProof, ExpectProof, Expected, Proved};
pub(crate) use read::{BlobRead, ReadBlob, ReadBuf};
pub(crate) use receive::{
    Complete, Completed, HashPrefix, Hashed, Reset, ResetDone, Sync, Synced, Verdict, Write,
    Written,
};

/// Bytes read per store call when hashing stored bytes.
const READ_CHUNK: usize = 256 * 1024;

/// Work to do, given out by [`Session::poll_job`](crate::session::Session::poll_job).
/// Run it with [`run`](Self::run), anywhere, then hand the result back with
/// [`Session::handle_job_done`](crate::session::Session::handle_job_done).
#[derive(Debug)]
pub struct Job {
    pub(crate) work: Work,
}

/// A finished [`Job`]'s result.
#[derive(Debug)]
pub struct JobDone {
    pub(crate) outcome: Outcome,
}

impl Job {
    /// Does the work: disk, database and hashing, blocking. Never panics on
    /// a store failure; the session decides what a failure means.
    pub fn run(self, relay: &Relay) -> JobDone {
        // Timed whole, hashing and directory work included: what a
        // session waits for is what the latency histogram should show.
        let (name, started) = (self.name(), std::time::Instant::now());
        let outcome = match self.work {
            Work::CreateBatch(w) => Outcome::Created(announce::create_batch(relay, w)),
            Work::FindToken { token, now_secs } => Outcome::FoundToken {
                token,
                found: announce::find(relay, |s| announce::resume(s, &token, now_secs)),
            },
            Work::FindCode { code, now_secs, to } => Outcome::FoundCode {
                to,
                found: announce::find(relay, |s| {
                    s.find_by_code(&crate::codes::code_key(&code), now_secs)
                }),
            },
            Work::Write(w) => Outcome::Written(receive::write(&*relay.store, w)),
            Work::Sync(w) => Outcome::Synced(receive::sync(&*relay.store, w)),
            Work::HashPrefix(w) => Outcome::Hashed(receive::hash_prefix(&*relay.store, w)),
            Work::Complete(w) => {
                // Drawn for every completion, whatever the mode, so a relay
                // switched to `threshold` later finds thresholds in place.
                let threshold = crate::disclosure::draw_threshold(
                    &relay.settings.disclosure,
                    &mut **crate::relay::lock(&relay.rng),
                );
                Outcome::Completed(receive::complete(&*relay.store, w, threshold))
            }
            Work::Reset(w) => Outcome::Reset(receive::reset(&*relay.store, w)),
            Work::ExpectProof(w) => Outcome::Expected(proof::expect_proof(&*relay.store, w)),
            Work::CheckProof(w) => Outcome::Proved(proof::check_proof(&*relay.store, w)),
            Work::ReadBlob(w) => Outcome::BlobRead(read::read_blob(&*relay.store, w)),
            Work::Login(w) => Outcome::LoggedIn(identity::login(relay, w)),
            Work::CheckToken { token, now_secs } => Outcome::TokenChecked {
                result: identity::check_token(relay, &token, now_secs),
            },
            Work::FindTerminal { name } => Outcome::TerminalFound {
                result: identity::find_terminal(relay, &name),
                name,
            },
            Work::RevokeToken { token } => Outcome::TokenRevoked {
                result: relay.directory.revoke_token(&token),
            },
            Work::FindNamed { find, handle } => Outcome::FoundNamed {
                handle,
                result: identity::find_named(relay, &find),
            },
            Work::ListNamed { owner } => Outcome::ListedNamed {
                result: relay.store.list_names(&owner),
            },
            Work::ChangeName {
                owner,
                change,
                now_secs,
            } => Outcome::NameChanged {
                result: identity::change_name(relay, &owner, &change, now_secs),
                change,
            },
            Work::BindNames(w) => Outcome::Bound(identity::bind_names(relay, &w)),
            Work::Push(w) => Outcome::Pushed {
                answer: notices::push(relay, &w),
                push: w,
            },
            Work::Notice(w) => Outcome::Notice(notices::run(relay, w)),
            Work::Forward(w) => Outcome::Forward(forwards::run(relay, w)),
        };
        relay.metrics().store_operation(name, started.elapsed());
        JobDone { outcome }
    }

    /// A short name for logs and test traces.
    pub fn name(&self) -> &'static str {
        match self.work {
            Work::CreateBatch(_) => "create-batch",
            Work::FindToken { .. } => "find-token",
            Work::FindCode { .. } => "find-code",
            Work::Write(_) => "write",
            Work::Sync(_) => "sync",
            Work::HashPrefix(_) => "hash-prefix",
            Work::Complete(_) => "complete",
            Work::Reset(_) => "reset",
            Work::ExpectProof(_) => "expect-proof",
            Work::CheckProof(_) => "check-proof",
            Work::ReadBlob(_) => "read-blob",
            Work::Login(_) => "login",
            Work::CheckToken { .. } => "check-token",
            Work::FindTerminal { .. } => "find-terminal",
            Work::RevokeToken { .. } => "revoke-token",
            Work::FindNamed { .. } => "find-named",
            Work::ListNamed { .. } => "list-named",
            Work::ChangeName { .. } => "change-name",
            Work::BindNames(_) => "bind-names",
            Work::Push(_) => "push",
            Work::Notice(ref w) => w.name(),
            Work::Forward(ref w) => w.name(),
        }
    }
}

/// The kinds of work.
#[derive(Debug)]
pub(crate) enum Work {
    CreateBatch(CreateBatch),
    FindToken {
        token: ResumeToken,
        now_secs: u64,
    },
    FindCode {
        code: Code,
        now_secs: u64,
        to: LookupFor,
    },
    Write(Write),
    Sync(Sync),
    HashPrefix(HashPrefix),
    Complete(Complete),
    Reset(Reset),
    ExpectProof(ExpectProof),
    CheckProof(CheckProof),
    ReadBlob(ReadBlob),
    Login(Login),
    CheckToken {
        token: AuthToken,
        now_secs: u64,
    },
    FindTerminal {
        name: String,
    },
    RevokeToken {
        token: AuthToken,
    },
    FindNamed {
        find: FindNamed,
        /// The read handle the manifest will carry.
        handle: Code,
    },
    ListNamed {
        owner: String,
    },
    ChangeName {
        owner: String,
        change: NameChange,
        now_secs: u64,
    },
    BindNames(BindNames),
    Push(PushWork),
    Notice(NoticeWork),
    Forward(ForwardWork),
}

/// What a code lookup is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LookupFor {
    /// A `Fetch`: the manifest.
    Fetch,
    /// A `Read`: a stream of one file.
    Read(pickup_proto::message::Read),
}

/// What a finished job found or did.
#[derive(Debug)]
pub(crate) enum Outcome {
    Created(Result<Created, Refused>),
    FoundToken {
        token: ResumeToken,
        found: Result<Found, StoreError>,
    },
    FoundCode {
        to: LookupFor,
        found: Result<Found, StoreError>,
    },
    Written(Written),
    Synced(Synced),
    Hashed(Hashed),
    Completed(Completed),
    Reset(ResetDone),
    Expected(Expected),
    Proved(Proved),
    BlobRead(BlobRead),
    LoggedIn(LoggedIn),
    TokenChecked {
        result: Result<Option<TokenInfo>, DirectoryError>,
    },
    TerminalFound {
        name: String,
        result: Result<Option<(String, DeviceKey)>, DirectoryError>,
    },
    TokenRevoked {
        result: Result<bool, DirectoryError>,
    },
    FoundNamed {
        handle: Code,
        result: Result<Option<NamedFile>, StoreError>,
    },
    ListedNamed {
        result: Result<Vec<NamedFile>, StoreError>,
    },
    NameChanged {
        change: NameChange,
        result: Result<bool, StoreError>,
    },
    Bound(Bound),
    Pushed {
        push: PushWork,
        answer: PushAnswer,
    },
    Notice(NoticeDone),
    Forward(ForwardDone),
}

/// A batch found by a lookup, with the candidate blobs of each file that
/// has no durable byte yet (what a challenge needs).
#[derive(Debug)]
pub(crate) enum Found {
    Live(Batch, Vec<Vec<BlobId>>),
    Expired,
    Unknown,
}

/// Another session took the upload over: this job did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseLost;

/// A store step of an upload, done only while the session holds the lease.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) lease: Arc<Lease>,
    pub(crate) session: u64,
}

impl Held {
    fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, LeaseLost> {
        self.lease.run(self.session, f).ok_or(LeaseLost)
    }

    /// Runs a store step of the upload as [`run`](Self::run) does; a step
    /// the store refused because another relay instance took the upload
    /// over ([`StoreError::Fenced`]) is a lost lease too.
    fn step<T>(
        &self,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<Result<T, StoreError>, LeaseLost> {
        match self.run(f)? {
            Err(StoreError::Fenced) => Err(LeaseLost),
            done => Ok(done),
        }
    }
}
