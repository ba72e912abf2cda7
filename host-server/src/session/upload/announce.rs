//! Announcing a batch (`BatchOpen`, `FileAnnounce`), creating it under a
//! fresh code and token, and resuming one by its token.

use pickup_proto::message::{self, BatchOpen, FileAnnounce, Join, Kind, Resume, ResumeToken};
use pickup_proto::{ErrorCode, Instant};

use super::super::Session;
use super::{Reply, Upload};
use crate::jobs::{Announced, CreateBatch, Created, Found, Refused, Work};
use crate::quota::{Owner, Refusal};
use crate::relay::unix_secs;
use crate::store::{Attrs, Batch, BlobId, StoreError};

/// A batch being announced: `BatchOpen` seen, `FileAnnounce`s arriving.
#[derive(Debug)]
pub(in crate::session) struct Announcing {
    pub(super) open: BatchOpen,
    pub(super) files: Vec<Announced>,
    /// The `FileAttrs` just received, for the next `FileAnnounce` if its
    /// index matches (PROTOCOL.md §5.5).
    pub(super) attrs: Option<message::FileAttrs>,
}

impl Session {
    pub(in crate::session) fn on_batch_open(&mut self, b: BatchOpen) {
        self.announcing = None;
        self.announce_refused = true;
        if let Err(code) = crate::jobs::check_batch(&self.relay.settings, b.files, b.total_size) {
            return self.out.error(code, Kind::BatchOpen);
        }
        self.announce_refused = false;
        self.announcing = Some(Box::new(Announcing {
            open: b,
            files: Vec::with_capacity(usize::from(b.files).min(64)),
            attrs: None,
        }));
    }

    /// A file's attributes, just before its `FileAnnounce`. Outside an
    /// announcement they are ignored, not refused: they are advisory, and
    /// a terminal that restarts its announcement sends them again.
    pub(in crate::session) fn on_file_attrs(&mut self, a: message::FileAttrs) {
        if let Some(ann) = self.announcing.as_mut() {
            ann.attrs = Some(a);
        }
    }

    pub(in crate::session) fn on_file_announce(&mut self, now: Instant, a: FileAnnounce<'_>) {
        // Any refusal below drops the announcement: the terminal starts over.
        let Some(mut ann) = self.announcing.take() else {
            if !self.announce_refused {
                self.out
                    .error(ErrorCode::UnexpectedMessage, Kind::FileAnnounce);
            }
            return;
        };
        self.announce_refused = true;
        if usize::from(a.index) != ann.files.len() {
            return self
                .out
                .error(ErrorCode::UnexpectedMessage, Kind::FileAnnounce);
        }
        if let Err(code) = crate::jobs::check_file(&self.relay.settings, a.name, a.size) {
            tracing::debug!(session = self.id, ?code, "refused a file's name or size");
            return self.out.error(code, Kind::FileAnnounce);
        }
        if self.named_put && !crate::session::named::valid_stored_name(a.name) {
            // A namespace is flat: a named file's name is one component.
            return self.out.error(ErrorCode::InvalidName, Kind::FileAnnounce);
        }
        // Two files at one path, or a file that is another's directory: no
        // downloader could create both (issue 18, item 3).
        if ann
            .files
            .iter()
            .any(|f| message::names_conflict(&f.name, a.name))
        {
            tracing::debug!(
                session = self.id,
                "refused a name that conflicts with an earlier one"
            );
            return self.out.error(ErrorCode::InvalidName, Kind::FileAnnounce);
        }
        self.announce_refused = false;
        let attrs = ann
            .attrs
            .take()
            .filter(|x| x.index == a.index)
            .map(|x| Attrs {
                executable: x.executable,
                mtime: x.mtime,
            });
        ann.files.push(Announced {
            name: a.name.to_owned(),
            size: a.size,
            sha1: a.sha1,
            attrs,
        });
        if ann.files.len() < usize::from(ann.open.files) {
            self.announcing = Some(ann);
            return;
        }
        let total = ann
            .files
            .iter()
            .try_fold(0u64, |t, f| t.checked_add(f.size));
        if total != Some(ann.open.total_size) {
            self.announce_refused = true;
            return self.out.error(ErrorCode::SizeMismatch, Kind::FileAnnounce);
        }
        let total = ann.open.total_size;
        self.create_batch(now, ann.files, total);
    }

    fn create_batch(&mut self, now: Instant, files: Vec<Announced>, total: u64) {
        if self.upload.as_ref().is_some_and(|u| u.same_files(&files)) {
            // Our Grant was lost and the terminal announced again.
            if self.regrant_own() {
                return;
            }
        }
        self.settle(now);
        self.drop_upload();
        self.work.push(Work::CreateBatch(CreateBatch {
            files,
            total,
            owner: self.owner(),
            now,
            // An authenticated user's batches are one family, whatever
            // token the session holds.
            family: match &self.identity {
                Some(id) => Some(crate::codes::user_owner(&id.user)),
                None => self.family,
            },
            join: self.join,
            named: self.named_owner(),
            open: false,
        }));
    }

    /// The user a `NamedPut` before this batch binds its names for.
    fn named_owner(&self) -> Option<String> {
        if self.named_put {
            self.identity.as_ref().map(|i| i.user.clone())
        } else {
            None
        }
    }

    /// A batch was created for the announcement, or refused.
    pub(in crate::session) fn on_created(&mut self, created: Result<Created, Refused>) {
        match created {
            Ok(c) => {
                tracing::info!(session = self.id, peer = %self.peer, batch = c.batch.id.0, files = c.batch.files.len(), bytes = c.batch.total_size(), "batch created");
                self.relay.metrics().upload_started();
                self.activate(c.batch, c.token, c.candidates, true);
            }
            Err(r) => self
                .out
                .error_retry(r.code, Kind::FileAnnounce, r.retry_after_ms),
        }
    }

    /// A `Join`: the batches this session creates from now on belong to
    /// the family of `token`'s batch, looked up when the next one is
    /// created. No reply, and no lookup now: a token the relay does not
    /// know leaves the batch a family of its own (guessing one is as
    /// hopeless as guessing a `Resume` token, and joining a family reveals
    /// only what that family stored).
    pub(in crate::session) fn on_join(&mut self, j: Join) {
        self.family = None;
        self.join = Some(j.token);
    }

    /// Makes `batch` this session's upload; `new` if it was just created
    /// (not resumed).
    fn activate(
        &mut self,
        batch: Batch,
        token: ResumeToken,
        candidates: Vec<Vec<BlobId>>,
        new: bool,
    ) {
        // The session's later batches join the family of its first, so a
        // terminal sending the same content again gets it instantly.
        self.family.get_or_insert(batch.owner);
        self.join = None;
        self.drop_upload();
        self.next_epoch += 1;
        let mut up = Upload::start(
            &self.relay,
            (self.id, &self.peer, self.clock),
            self.next_epoch,
            batch,
            token,
            candidates,
            self.instant_upload(),
        );
        if !new {
            up.resumed();
        }
        // A NamedPut is for the one batch it precedes (created or resumed).
        if let Some(owner) = self.named_owner() {
            up.set_named(owner);
        }
        self.named_put = false;
        self.out.forget_upload_replies();
        self.upload = Some(Box::new(up));
        self.out.upload(Reply::Grant { next: 0 });
        self.with_upload(|up, cx| {
            up.expect_proofs(cx);
            up.finish_ready_files(cx);
            Ok(())
        });
        self.account_upload();
    }

    /// Whom this session's uploads are charged to.
    pub(in crate::session) fn owner(&self) -> Owner {
        Owner::Peer(self.peer.clone())
    }

    /// Takes a reservation for the unsent bytes of `batch` if it holds
    /// none (see [`crate::quota::Quotas::resume`]).
    pub(in crate::session) fn reserve_again(&self, batch: &Batch) -> Result<(), Refusal> {
        crate::jobs::reserve_again(&self.relay, &self.owner(), batch, self.clock)
    }

    pub(in crate::session) fn internal(&mut self, kind: Kind, e: &StoreError) {
        tracing::error!(session = self.id, "store error on {kind:?}: {e}");
        self.out.error(ErrorCode::Internal, kind);
    }

    /// Grants the session's own upload again, its progress with it (the
    /// terminal lost the `Grant`, or asked again on the same link); `false`
    /// if the upload ended meanwhile (its lease lost).
    fn regrant_own(&mut self) -> bool {
        self.with_upload(|up, cx| {
            up.regrant(cx);
            Ok(())
        });
        self.upload.is_some()
    }

    pub(in crate::session) fn on_resume(&mut self, now: Instant, r: Resume) {
        if self
            .upload
            .as_deref()
            .is_some_and(|u| u.token == r.token && unix_secs(now) < u.expires_at)
        {
            // This session's own live upload, asked for again on the same
            // link (a terminal whose retransmit timeout passed): answered
            // from here. A lookup would take the upload over in the store
            // again, and on a shared store a step of this upload running
            // beside that take could be refused as taken over, telling
            // this very terminal `TakenOver` (found by tests/cluster.rs
            // with acks slowed by the object store).
            self.announcing = None;
            if self.regrant_own() {
                return;
            }
        }
        if let Err(wait) = self.relay.check_lookup(&self.peer, now) {
            return self
                .out
                .error_retry(ErrorCode::RateLimited, Kind::Resume, wait);
        }
        self.work.push(Work::FindToken {
            token: r.token,
            now_secs: unix_secs(now),
        });
    }

    /// The batch behind a `Resume`'s token was looked up.
    pub(in crate::session) fn on_found_token(
        &mut self,
        token: ResumeToken,
        found: Result<Found, StoreError>,
    ) {
        // An open batch (a tus batch before its close) is not resumed over
        // the wire: its Grant would reveal the code before the close.
        let found = match found {
            Ok(Found::Live(batch, _)) if batch.open => Ok(Found::Unknown),
            found => found,
        };
        let (batch, candidates) = match found {
            Ok(Found::Live(batch, candidates)) => (batch, candidates),
            Ok(found) => {
                self.relay.failed_lookup(&self.peer, self.clock);
                let code = if matches!(found, Found::Expired) {
                    ErrorCode::Expired
                } else {
                    ErrorCode::UnknownToken
                };
                return self.out.error(code, Kind::Resume);
            }
            Err(e) => return self.internal(Kind::Resume, &e),
        };
        self.announcing = None;
        if self.upload.as_ref().is_some_and(|u| u.batch() == batch.id) && self.regrant_own() {
            return;
        }
        let now = self.clock;
        // A stalled upload's reservation was released (or the relay
        // restarted): it takes one again before it may store more.
        if let Err(r) = self.reserve_again(&batch) {
            return self.out.error_retry(r.code, Kind::Resume, r.retry_after_ms);
        }
        self.settle(now);
        self.drop_upload();
        tracing::info!(session = self.id, peer = %self.peer, batch = batch.id.0, received = batch.received(), "upload resumed");
        self.activate(batch, token, candidates, false);
    }
}
