//! Admission of uploads: storage reservations and per-owner batch limits.
//!
//! A batch announces its size before a byte arrives. Charging the disk
//! quota by announced sizes lets a peer that announces and sends nothing
//! lock everyone out, so the relay charges it by what it holds plus live
//! *reservations*:
//!
//! ```text
//!   admit(owner, total):  stored + reserved + total ≤ disk_quota          else Quota
//!                         reserved(owner) + total ≤ max_reserved_per_peer else PeerQuota
//!                         incomplete(owner) < max_incomplete_batches      else TooManyIncomplete
//!                         owner's creation bucket ≥ 1                     else RateLimited
//!   progress:             a sync shrinks the reservation to the bytes still unsent
//!   no progress for reservation_timeout: the reservation is released (the batch stays;
//!                         its upload reserves again when it resumes, and may be refused)
//!   no progress for incomplete_ttl: the store deletes the batch (its `stale_at`)
//! ```
//!
//! Check and reservation happen under one lock, and a batch being created
//! holds its reservation before the store has it, so concurrent announces
//! cannot overshoot the quota. Reservations live in memory: after a restart
//! no upload holds one until it resumes.
//!
//! Time is an argument ([`Instant`]), so admission is deterministic.

use std::collections::HashMap;

use pickup_proto::{ErrorCode, Instant};

use crate::rate_limit::Peer;
use crate::store::BatchId;

/// Longest wait a refusal suggests: reservations and batch slots free up
/// as uploads progress, finish or stall, which no hint can predict.
const MAX_RETRY_MS: u64 = 60_000;

/// Whom storage and batch slots are charged to: today the peer (an IPv4
/// address, an IPv6 /64, a serial port), once accounts exist a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A peer, as per-peer limits see it.
    Peer(Peer),
}

impl core::fmt::Display for Owner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Owner::Peer(p) => p.fmt(f),
        }
    }
}

/// The limits admission enforces (`[limits]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSettings {
    /// Bytes stored plus reserved, at most.
    pub disk_quota: u64,
    /// Bytes one owner's uploads may reserve at once.
    pub max_reserved_per_peer: u64,
    /// A reservation without progress for this long is released.
    pub reservation_timeout_secs: u64,
    /// Incomplete batches one owner may have at once.
    pub max_incomplete_batches_per_peer: u32,
    /// Batches one owner may create at once ...
    pub new_batch_burst_per_peer: u32,
    /// ... and per hour, sustained.
    pub new_batches_per_hour_per_peer: u32,
    /// An incomplete batch without progress for this long is deleted.
    pub incomplete_ttl_secs: u64,
}

/// Why a batch or an upload was not admitted: the error and its hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The error to send.
    pub code: ErrorCode,
    /// When to retry, in milliseconds (0: retrying will not help soon).
    pub retry_after_ms: u32,
}

/// An admitted batch not yet created: it holds its reservation and slot.
/// Hand it to [`Quotas::bind`] or [`Quotas::cancel`].
#[derive(Debug)]
#[must_use]
pub struct Ticket {
    owner: Owner,
    bytes: u64,
}

#[derive(Debug)]
struct Entry {
    owner: Owner,
    /// Bytes still reserved (0 once released).
    reserved: u64,
    /// Whether the reservation was released for lack of progress.
    released: bool,
    last_progress: Instant,
}

#[derive(Debug)]
struct OwnerState {
    reserved: u64,
    incomplete: u32,
    tokens: f64,
    refilled: Instant,
}

/// Live reservations and per-owner counts. See the module docs.
#[derive(Debug)]
pub struct Quotas {
    settings: QuotaSettings,
    batches: HashMap<BatchId, Entry>,
    owners: HashMap<Owner, OwnerState>,
    reserved: u64,
    /// Batches admitted whose creation has not finished.
    creating: u64,
}

impl Quotas {
    /// No reservation yet.
    pub fn new(settings: QuotaSettings) -> Quotas {
        Quotas {
            settings,
            batches: HashMap::new(),
            owners: HashMap::new(),
            reserved: 0,
            creating: 0,
        }
    }

    /// Bytes reserved now, over all owners.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Bytes `owner` has reserved now.
    pub fn reserved_by(&self, owner: &Owner) -> u64 {
        self.owners.get(owner).map_or(0, |o| o.reserved)
    }

    /// Batches admitted and not yet created or cancelled: they count as
    /// live batches.
    pub fn creating(&self) -> u64 {
        self.creating
    }

    fn owner(&mut self, owner: &Owner, now: Instant) -> &mut OwnerState {
        let burst = f64::from(self.settings.new_batch_burst_per_peer);
        let per_ms = f64::from(self.settings.new_batches_per_hour_per_peer) / 3_600_000.0;
        let o = self
            .owners
            .entry(owner.clone())
            .or_insert_with(|| OwnerState {
                reserved: 0,
                incomplete: 0,
                tokens: burst,
                refilled: now,
            });
        let elapsed = now.saturating_since(o.refilled).as_millis() as f64;
        o.tokens = (o.tokens + elapsed * per_ms).min(burst);
        o.refilled = now;
        o
    }

    /// Reserves `bytes` for a new batch of `owner`, given the bytes the
    /// store holds (`stored`): the batch slot, one creation and the bytes,
    /// or the reason why not.
    pub fn admit(
        &mut self,
        owner: &Owner,
        bytes: u64,
        stored: u64,
        now: Instant,
    ) -> Result<Ticket, Refusal> {
        let s = self.settings;
        let o = self.owner(owner, now);
        if o.incomplete >= s.max_incomplete_batches_per_peer {
            return Err(refusal(ErrorCode::TooManyIncomplete, MAX_RETRY_MS));
        }
        if o.tokens < 1.0 {
            let per_ms = f64::from(s.new_batches_per_hour_per_peer) / 3_600_000.0;
            let wait = if per_ms > 0.0 {
                ((1.0 - o.tokens) / per_ms).ceil() as u64
            } else {
                MAX_RETRY_MS
            };
            return Err(refusal(ErrorCode::RateLimited, wait.max(1)));
        }
        self.charge(owner, bytes, stored)?;
        let o = self.owner(owner, now);
        o.tokens -= 1.0;
        o.incomplete += 1;
        self.creating += 1;
        Ok(Ticket {
            owner: owner.clone(),
            bytes,
        })
    }

    /// Takes `bytes` from the quota and from `owner`'s share, or refuses.
    fn charge(&mut self, owner: &Owner, bytes: u64, stored: u64) -> Result<(), Refusal> {
        let s = self.settings;
        let mine = self.reserved_by(owner);
        if mine.saturating_add(bytes) > s.max_reserved_per_peer {
            return Err(refusal(ErrorCode::PeerQuota, self.retry_ms()));
        }
        if stored.saturating_add(self.reserved).saturating_add(bytes) > s.disk_quota {
            // Reservations may be released; stored bytes leave only by expiry.
            let wait = if self.reserved > 0 {
                self.retry_ms()
            } else {
                0
            };
            return Err(refusal(ErrorCode::Quota, wait));
        }
        self.reserved += bytes;
        if let Some(o) = self.owners.get_mut(owner) {
            o.reserved += bytes;
        }
        Ok(())
    }

    fn retry_ms(&self) -> u64 {
        self.settings
            .reservation_timeout_secs
            .saturating_mul(1000)
            .clamp(1, MAX_RETRY_MS)
    }

    /// The batch of `ticket` was created as `batch`: its reservation is
    /// now the batch's.
    pub fn bind(&mut self, ticket: Ticket, batch: BatchId, now: Instant) {
        self.creating = self.creating.saturating_sub(1);
        self.batches.insert(
            batch,
            Entry {
                owner: ticket.owner,
                reserved: ticket.bytes,
                released: false,
                last_progress: now,
            },
        );
    }

    /// The batch of `ticket` was not created: give everything back.
    pub fn cancel(&mut self, ticket: Ticket) {
        self.creating = self.creating.saturating_sub(1);
        self.unreserve(&ticket.owner, ticket.bytes);
        let burst = f64::from(self.settings.new_batch_burst_per_peer);
        if let Some(o) = self.owners.get_mut(&ticket.owner) {
            o.incomplete = o.incomplete.saturating_sub(1);
            // A failed creation costs no token either.
            o.tokens = (o.tokens + 1.0).min(burst);
        }
    }

    fn unreserve(&mut self, owner: &Owner, bytes: u64) {
        self.reserved = self.reserved.saturating_sub(bytes);
        if let Some(o) = self.owners.get_mut(owner) {
            o.reserved = o.reserved.saturating_sub(bytes);
        }
    }

    /// An upload of `batch` by `owner` resumes with `unsent` bytes to go:
    /// a live reservation carries on; a released or forgotten one (a
    /// stalled upload, a restarted relay) is taken again, or refused.
    pub fn resume(
        &mut self,
        owner: &Owner,
        batch: BatchId,
        unsent: u64,
        stored: u64,
        now: Instant,
    ) -> Result<(), Refusal> {
        if let Some(e) = self.batches.get_mut(&batch) {
            if !e.released {
                e.last_progress = now;
                return Ok(());
            }
            let owner = e.owner.clone();
            self.charge(&owner, unsent, stored)?;
            if let Some(e) = self.batches.get_mut(&batch) {
                e.reserved = unsent;
                e.released = false;
                e.last_progress = now;
            }
            return Ok(());
        }
        self.owner(owner, now);
        self.charge(owner, unsent, stored)?;
        if let Some(o) = self.owners.get_mut(owner) {
            o.incomplete += 1;
        }
        self.batches.insert(
            batch,
            Entry {
                owner: owner.clone(),
                reserved: unsent,
                released: false,
                last_progress: now,
            },
        );
        Ok(())
    }

    /// `batch` grew by `bytes` (a file added to an open tus batch): its
    /// reservation takes them from the quota, or refuses as
    /// [`admit`](Self::admit) would. A batch holding no reservation
    /// (released, or the relay restarted) must [`resume`](Self::resume)
    /// first.
    pub fn grow(&mut self, batch: BatchId, bytes: u64, stored: u64) -> Result<(), Refusal> {
        let Some(e) = self.batches.get(&batch).filter(|e| !e.released) else {
            return Err(refusal(ErrorCode::Internal, 0));
        };
        let owner = e.owner.clone();
        self.charge(&owner, bytes, stored)?;
        if let Some(e) = self.batches.get_mut(&batch) {
            e.reserved = e.reserved.saturating_add(bytes);
        }
        Ok(())
    }

    /// Bytes of `batch` arrived: its reservation's timer starts again.
    /// `false` if it holds no reservation (released or never taken): the
    /// upload must [`resume`](Self::resume) before it stores more.
    pub fn touch(&mut self, batch: BatchId, now: Instant) -> bool {
        match self.batches.get_mut(&batch) {
            Some(e) if !e.released => {
                e.last_progress = now;
                true
            }
            _ => false,
        }
    }

    /// `batch` now has `unsent` bytes not yet stored: its reservation
    /// shrinks to them (stored bytes are charged as stored).
    pub fn progress(&mut self, batch: BatchId, unsent: u64, now: Instant) {
        let Some(e) = self.batches.get_mut(&batch) else {
            return;
        };
        if e.released || unsent >= e.reserved {
            return;
        }
        let freed = e.reserved - unsent;
        e.reserved = unsent;
        e.last_progress = now;
        let owner = e.owner.clone();
        self.unreserve(&owner, freed);
    }

    /// Every file of `batch` is complete: it no longer counts as
    /// incomplete, and whatever it reserved is given back.
    pub fn finished(&mut self, batch: BatchId) {
        let Some(e) = self.batches.remove(&batch) else {
            return;
        };
        self.unreserve(&e.owner, e.reserved);
        if let Some(o) = self.owners.get_mut(&e.owner) {
            o.incomplete = o.incomplete.saturating_sub(1);
        }
    }

    /// Releases the reservations of uploads without progress for
    /// `reservation_timeout_secs`, forgets batches without progress for
    /// `incomplete_ttl_secs` (the store deletes them) and owners with
    /// nothing left to remember. Returns the bytes released.
    pub fn sweep(&mut self, now: Instant) -> u64 {
        let s = self.settings;
        let stalled_after = s.reservation_timeout_secs.saturating_mul(1000);
        let mut released = Vec::new();
        let mut stale = Vec::new();
        for (id, e) in &mut self.batches {
            let idle = now.saturating_since(e.last_progress).as_millis();
            // In whole seconds, as the store decides (`stale_at`), so a
            // batch is forgotten here no later than the store deletes it.
            let stale_at =
                (e.last_progress.as_millis() / 1000).saturating_add(s.incomplete_ttl_secs);
            if now.as_millis() / 1000 >= stale_at {
                stale.push(*id);
            } else if !e.released && idle >= stalled_after {
                e.released = true;
                released.push((e.owner.clone(), core::mem::take(&mut e.reserved)));
            }
        }
        let mut freed = 0;
        for (owner, bytes) in released {
            freed += bytes;
            self.unreserve(&owner, bytes);
        }
        for id in stale {
            if let Some(e) = self.batches.get(&id) {
                freed += e.reserved;
            }
            self.finished(id);
        }
        let burst = f64::from(s.new_batch_burst_per_peer);
        for o in self.owners.values_mut() {
            let elapsed = now.saturating_since(o.refilled).as_millis() as f64;
            let per_ms = f64::from(s.new_batches_per_hour_per_peer) / 3_600_000.0;
            o.tokens = (o.tokens + elapsed * per_ms).min(burst);
            o.refilled = now;
        }
        self.owners
            .retain(|_, o| o.reserved > 0 || o.incomplete > 0 || o.tokens < burst);
        freed
    }
}

fn refusal(code: ErrorCode, retry_ms: u64) -> Refusal {
    Refusal {
        code,
        retry_after_ms: u32::try_from(retry_ms).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests;
