//! Announcing a batch (`BatchOpen`, `FileAnnounce`), creating it under a
//! fresh code and token, and resuming one by its token.

use pickup_proto::message::{self, BatchOpen, FileAnnounce, Kind, Resume, ResumeToken};
use pickup_proto::{ErrorCode, Instant, Sha1Digest};

use super::super::Session;
use super::{Reply, Upload};
use crate::codes::{self, code_key, token_key};
use crate::relay::{lock, unix_secs};
use crate::store::{Batch, Lookup, NewBatch, NewFile, StoreError};

/// How long a relay over its live-batch limit asks uploaders to wait.
pub(super) const FULL_RETRY_MS: u32 = 60_000;

/// A batch being announced: `BatchOpen` seen, `FileAnnounce`s arriving.
#[derive(Debug)]
pub(in crate::session) struct Announcing {
    pub(super) open: BatchOpen,
    pub(super) files: Vec<Announced>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Announced {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha1: Sha1Digest,
}

impl Session {
    pub(in crate::session) fn on_batch_open(&mut self, b: BatchOpen) {
        let s = &self.relay.settings;
        self.announcing = None;
        self.announce_refused = true;
        if b.files == 0 || b.files > s.max_files_per_batch {
            return self.out.error(ErrorCode::TooManyFiles, Kind::BatchOpen);
        }
        if b.total_size > s.max_batch_size {
            return self.out.error(ErrorCode::TooLarge, Kind::BatchOpen);
        }
        self.announce_refused = false;
        self.announcing = Some(Box::new(Announcing {
            open: b,
            files: Vec::with_capacity(usize::from(b.files).min(64)),
        }));
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
        if let Err(code) = message::validate_name(a.name) {
            tracing::debug!(session = self.id, "refused a hostile or invalid file name");
            return self.out.error(code, Kind::FileAnnounce);
        }
        if a.size > self.relay.settings.max_file_size {
            return self.out.error(ErrorCode::TooLarge, Kind::FileAnnounce);
        }
        self.announce_refused = false;
        ann.files.push(Announced {
            name: a.name.to_owned(),
            size: a.size,
            sha1: a.sha1,
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
        self.create_batch(now, &ann.files, ann.open.total_size);
    }

    fn create_batch(&mut self, now: Instant, files: &[Announced], total: u64) {
        if self.upload.as_ref().is_some_and(|u| u.same_files(files)) {
            // Our Grant was lost and the terminal announced again.
            self.with_upload(|up, relay, id, out| up.regrant(relay, id, out));
            if self.upload.is_some() {
                return;
            }
        }
        self.settle(now);
        self.drop_upload();
        let relay = self.relay.clone();
        let s = &relay.settings;
        let kind = Kind::FileAnnounce;
        let usage = match relay.store.usage() {
            Ok(u) => u,
            Err(e) => return self.internal(kind, &e),
        };
        if usage.batches >= s.max_live_batches {
            return self.out.error_retry(ErrorCode::Busy, kind, FULL_RETRY_MS);
        }
        if usage.bytes.saturating_add(total) > s.disk_quota {
            return self.out.error(ErrorCode::Quota, kind);
        }
        // Re-roll until the code is not in use (live or remembered as
        // expired); with 65-bit codes a second roll is already unlikely.
        let mut code = None;
        for _ in 0..16 {
            let Some(c) = codes::random_code(&mut **lock(&relay.rng), s.code_len) else {
                break;
            };
            match relay.store.code_taken(&code_key(&c)) {
                Ok(false) => {
                    code = Some(c);
                    break;
                }
                Ok(true) => continue,
                Err(e) => return self.internal(kind, &e),
            }
        }
        let token = codes::random_token(&mut **lock(&relay.rng));
        let (Some(code), Some(token)) = (code, token) else {
            tracing::error!("no fresh code or token: the random source failed");
            return self.out.error(ErrorCode::Internal, kind);
        };
        let created_at = unix_secs(now);
        let new_files: Vec<NewFile<'_>> = files
            .iter()
            .map(|f| NewFile {
                name: &f.name,
                size: f.size,
                sha1: f.sha1,
            })
            .collect();
        let batch = match relay.store.create_batch(&NewBatch {
            code,
            code_key: code_key(&code),
            token_key: token_key(&token),
            created_at,
            expires_at: created_at.saturating_add(s.code_ttl_secs),
            files: &new_files,
        }) {
            Ok(b) => b,
            Err(e) => return self.internal(kind, &e),
        };
        tracing::info!(session = self.id, peer = %self.peer, batch = batch.id.0, files = files.len(), bytes = total, "batch created");
        self.activate(batch, token);
    }

    fn activate(&mut self, batch: Batch, token: ResumeToken) {
        let up = Upload::start(
            &self.relay,
            self.id,
            batch,
            token,
            self.instant_upload(),
            self.deferred_syncs,
            self.offload_hashing,
        );
        self.out.forget_upload_replies();
        self.upload = Some(Box::new(up));
        self.out.upload(Reply::Grant { next: 0 });
        self.with_upload(|up, relay, id, out| up.finish_ready_files(relay, id, out));
    }

    pub(in crate::session) fn internal(&mut self, kind: Kind, e: &StoreError) {
        tracing::error!(session = self.id, "store error on {kind:?}: {e}");
        self.out.error(ErrorCode::Internal, kind);
    }

    pub(in crate::session) fn on_resume(&mut self, now: Instant, r: Resume) {
        let relay = self.relay.clone();
        if let Err(wait) = relay.check_lookup(&self.peer, now) {
            return self
                .out
                .error_retry(ErrorCode::RateLimited, Kind::Resume, wait);
        }
        let batch = match relay
            .store
            .find_by_token(&token_key(&r.token), unix_secs(now))
        {
            Ok(Lookup::Live(b)) => b,
            Ok(found) => {
                relay.failed_lookup(&self.peer, now);
                let code = if found == Lookup::Expired {
                    ErrorCode::Expired
                } else {
                    ErrorCode::UnknownToken
                };
                return self.out.error(code, Kind::Resume);
            }
            Err(e) => return self.internal(Kind::Resume, &e),
        };
        self.announcing = None;
        if self.upload.as_ref().is_some_and(|u| u.batch == batch.id) {
            self.with_upload(|up, relay, id, out| up.regrant(relay, id, out));
            if self.upload.is_some() {
                return;
            }
        }
        self.settle(now);
        self.drop_upload();
        tracing::info!(session = self.id, peer = %self.peer, batch = batch.id.0, received = batch.received(), "upload resumed");
        self.activate(batch, r.token);
    }
}
