//! Requests on a user's named files (PROTOCOL.md §8): put, fetch, list,
//! remove, share.
//!
//! A named file is downloaded like a batch of one: `FetchNamed` answers
//! with a manifest whose code is a random read handle, and `Read`s of that
//! handle stream the content the name had when it was fetched, even if the
//! name is replaced meanwhile (the store keeps replaced content for
//! `auth.keep_replaced_secs`). A name that does not exist and one the
//! session may not read answer alike, and both are charged to the lookup
//! limiter like a wrong code: named files cannot be probed faster than codes.

use std::sync::Arc;

use pickup_proto::message::{FetchNamed, Kind, Read, RemoveNamed, ShareNamed, SEPARATOR};
use pickup_proto::{Code, ErrorCode, Instant};

use super::{Out, Session};
use crate::codes;
use crate::jobs::{named_batch, Bound, FindNamed, NameChange, Work};
use crate::relay::{lock, unix_secs};
use crate::store::{Batch, FileContent, NamedFile, StoreError};

/// Read handles a session holds at most ([`NamedReads`]).
const MAX_NAMED_READS: usize = 4;

/// The named files a session fetched or listed lately, each under its read
/// handle, newest last. More than the last one: a `FetchNamed` repeated
/// while its manifest was on its way (the terminal's timer) may find the
/// name replaced meanwhile, and the terminal reads with the first manifest
/// it gets, so the handle of that one must still read (found by the
/// simulator, seed 134173591361500).
#[derive(Debug, Default)]
pub(super) struct NamedReads(Vec<Arc<Batch>>);

impl NamedReads {
    /// The snapshot read under `code`.
    pub(super) fn get(&self, code: &Code) -> Option<&Arc<Batch>> {
        self.0.iter().find(|b| b.code == *code)
    }

    /// Keeps `batch` under its handle, forgetting the oldest past
    /// [`MAX_NAMED_READS`].
    fn keep(&mut self, batch: Arc<Batch>) {
        self.0.retain(|b| b.code != batch.code);
        if self.0.len() == MAX_NAMED_READS {
            self.0.remove(0);
        }
        self.0.push(batch);
    }

    /// Forgets every handle (a new conversation, or a logout).
    pub(super) fn clear(&mut self) {
        self.0 = Vec::new();
    }
}

/// Whether `name` may name a named file: a valid file name of one
/// component (a namespace is flat).
pub(crate) fn valid_stored_name(name: &str) -> bool {
    pickup_proto::message::validate_name(name).is_ok() && !name.contains(SEPARATOR)
}

impl Session {
    /// The session's user, or the `AuthRequired` refusal of `kind`.
    fn user_or_refuse(&mut self, kind: Kind) -> Option<String> {
        match &self.identity {
            Some(id) => Some(id.user.clone()),
            None => {
                self.out.error(ErrorCode::AuthRequired, kind);
                None
            }
        }
    }

    /// A fresh read handle, as long as the relay's codes.
    fn new_handle(&mut self, kind: Kind) -> Option<Code> {
        let len = self.relay.settings.code_len;
        let handle = codes::random_code(&mut **lock(&self.relay.rng), len);
        if handle.is_none() {
            self.out.error(ErrorCode::Internal, kind);
        }
        handle
    }

    pub(super) fn on_named_put(&mut self) {
        let Some(owner) = self.user_or_refuse(Kind::NamedPut) else {
            return;
        };
        self.named_put = true;
        // The Resume this precedes may find its batch already this
        // session's upload (a regrant, which activates nothing): if an
        // earlier NamedPut was lost on the link, that upload was resumed
        // unnamed and would complete without binding its names. A client
        // sends NamedPut only for a named upload, one batch per session,
        // so the active upload is that batch (or an announcement of it
        // that the next request drops).
        if let Some(up) = self.upload.as_mut() {
            up.set_named(owner);
        }
        // Acknowledged: a terminal that does not see this before the
        // batch's BatchComplete asks again (a lost NamedPut would leave
        // the batch unnamed, and its BatchComplete would say nothing).
        self.out.push(Out::Done(Kind::NamedPut));
    }

    pub(super) fn on_fetch_named(&mut self, now: Instant, f: FetchNamed<'_>) {
        let Some(identity) = self.identity.as_ref() else {
            return self.out.error(ErrorCode::AuthRequired, Kind::FetchNamed);
        };
        let reader = identity.reader();
        if let Err(wait) = self.relay.check_lookup(&self.peer, now) {
            return self
                .out
                .error_retry(ErrorCode::RateLimited, Kind::FetchNamed, wait);
        }
        if !valid_stored_name(f.name) || crate::directory::validate_account_name(f.owner).is_err() {
            self.relay.failed_lookup(&self.peer, now);
            return self.out.error(ErrorCode::UnknownCode, Kind::FetchNamed);
        }
        let Some(handle) = self.new_handle(Kind::FetchNamed) else {
            return;
        };
        self.work.push(Work::FindNamed {
            find: FindNamed {
                owner: f.owner.to_owned(),
                name: f.name.to_owned(),
                reader,
            },
            handle,
        });
    }

    pub(super) fn on_found_named(
        &mut self,
        handle: Code,
        result: Result<Option<NamedFile>, StoreError>,
    ) {
        match result {
            Ok(Some(file)) => {
                // A FetchNamed repeated while its manifest was on its way
                // (the terminal's timer, or a frame the link duplicated)
                // finds the same content: answer with the same handle. The
                // terminal reads with the first manifest it gets, and a
                // fresh handle would have made that one unknown.
                let same = self.named_reads.0.iter().rev().find(|b| {
                    matches!(&b.files[..], [f] if f.name == file.name
                        && f.content == FileContent::Blob(file.blob)
                        && f.sha1 == file.sha1)
                });
                let handle = same.map_or(handle, |b| b.code);
                let batch = named_batch(core::slice::from_ref(&file), handle);
                self.serve_named(Arc::new(batch));
            }
            Ok(None) => {
                self.relay.failed_lookup(&self.peer, self.clock);
                self.out.error(ErrorCode::UnknownCode, Kind::FetchNamed);
            }
            Err(e) => self.internal(Kind::FetchNamed, &e),
        }
    }

    /// Sends `batch`'s manifest and keeps it under its read handle.
    fn serve_named(&mut self, batch: Arc<Batch>) {
        self.started = true;
        self.named_reads.keep(batch.clone());
        self.out.push(Out::Manifest {
            batch,
            next: 0,
            attrs_sent: false,
        });
    }

    /// A `Read` of one of the session's read handles: served from the
    /// snapshot taken when the name was fetched, with no lookup.
    pub(super) fn on_read_named(&mut self, r: Read) {
        self.stream = None;
        if let Some(batch) = self.named_reads.get(&r.code).cloned() {
            self.start_stream(&batch, r);
            // Not a stored batch: no delivery's progress to follow.
            if let Some(s) = self.stream.as_mut() {
                s.batch = None;
            }
        }
    }

    pub(super) fn on_list_named(&mut self) {
        let Some(owner) = self.user_or_refuse(Kind::ListNamed) else {
            return;
        };
        self.work.push(Work::ListNamed { owner });
    }

    pub(super) fn on_listed_named(&mut self, result: Result<Vec<NamedFile>, StoreError>) {
        let files = match result {
            Ok(files) => files,
            Err(e) => return self.internal(Kind::ListNamed, &e),
        };
        if files.len() > usize::from(u16::MAX) {
            return self.out.error(ErrorCode::TooManyFiles, Kind::ListNamed);
        }
        let Some(handle) = self.new_handle(Kind::ListNamed) else {
            return;
        };
        self.serve_named(Arc::new(named_batch(&files, handle)));
    }

    pub(super) fn on_remove_named(&mut self, now: Instant, r: RemoveNamed<'_>) {
        let Some(owner) = self.user_or_refuse(Kind::RemoveNamed) else {
            return;
        };
        if !valid_stored_name(r.name) {
            return self.out.error(ErrorCode::UnknownCode, Kind::RemoveNamed);
        }
        self.work.push(Work::ChangeName {
            owner,
            change: NameChange::Remove {
                name: r.name.to_owned(),
            },
            now_secs: unix_secs(now),
        });
    }

    pub(super) fn on_share_named(&mut self, now: Instant, s: ShareNamed<'_>) {
        let Some(owner) = self.user_or_refuse(Kind::ShareNamed) else {
            return;
        };
        let grantee = s.with.strip_prefix('@').unwrap_or(s.with);
        if !valid_stored_name(s.name) || crate::directory::validate_account_name(grantee).is_err() {
            return self.out.error(ErrorCode::UnknownCode, Kind::ShareNamed);
        }
        self.work.push(Work::ChangeName {
            owner,
            change: NameChange::Share {
                name: s.name.to_owned(),
                with: s.with.to_owned(),
                allow: s.allow,
            },
            now_secs: unix_secs(now),
        });
    }

    pub(super) fn on_name_changed(&mut self, change: NameChange, result: Result<bool, StoreError>) {
        let kind = match change {
            NameChange::Remove { .. } => Kind::RemoveNamed,
            NameChange::Share { .. } => Kind::ShareNamed,
        };
        match result {
            Ok(true) => self.out.push(Out::Done(kind)),
            Ok(false) => self.out.error(ErrorCode::UnknownCode, kind),
            Err(e) => self.internal(kind, &e),
        }
    }

    /// A named upload's names were bound (or refused): only now is its
    /// `BatchComplete` sent, so a `put` that returns can be fetched at once.
    pub(super) fn on_bound(&mut self, bound: Bound) {
        if self
            .upload
            .as_ref()
            .is_none_or(|u| u.epoch() != bound.epoch)
        {
            return;
        }
        match bound.result {
            Ok(_) => self.with_upload(|up, cx| {
                up.names_bound(cx);
                Ok(())
            }),
            Err(code) => self.out.error(code, Kind::NamedPut),
        }
    }
}
