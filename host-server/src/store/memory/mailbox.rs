//! The memory store's [`Mailbox`]: deliveries beside its batches, under
//! the same lock, so a push sees the batch it names as it is. Deliveries
//! are metadata: `MemoryStore::crash` keeps them.

use std::collections::{BTreeMap, HashMap};

use pickup_proto::message::DeliveryState;

use super::{Inner, MemoryStore};
use crate::mailbox::rules::{self, OpenCounts};
use crate::mailbox::{
    DeliveryRecord, DeliverySweep, Mailbox, NewPush, PushRefusal, PushSettings, Pushed, Settle,
    Settled,
};
use crate::store::{BatchId, LookupKey, Result, SweepStats};

#[derive(Debug)]
struct Stored {
    record: DeliveryRecord,
    code_key: LookupKey,
    /// Per file, the end of the furthest read by the target.
    reads: BTreeMap<u16, u64>,
}

/// The deliveries of a [`MemoryStore`].
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    next_id: u64,
    by_id: BTreeMap<u64, Stored>,
    by_push: HashMap<(String, u64), u64>,
}

impl Deliveries {
    fn counts(&self, sender: &str, terminal: &str, batch: BatchId, size: u64) -> OpenCounts {
        let mut c = OpenCounts::default();
        let mut batches: BTreeMap<BatchId, u64> = BTreeMap::new();
        for d in self.by_id.values().map(|s| &s.record) {
            if !rules::is_open(d.state) {
                continue;
            }
            let to_terminal = d.terminal == terminal;
            let from_sender = d.sender == sender;
            c.to_terminal += u64::from(to_terminal);
            c.sender_to_terminal += u64::from(to_terminal && from_sender);
            c.from_sender += u64::from(from_sender);
            if from_sender {
                batches.insert(d.batch, d.total);
            }
        }
        batches.insert(batch, size);
        c.sender_bytes = batches.values().fold(0u64, |sum, b| sum.saturating_add(*b));
        c
    }
}

impl Inner {
    /// The store sweep deleted batches: their open deliveries expire, and
    /// deliveries of batches gone whose expiry is older than
    /// `forget_before` (as the codes the relay remembers) are forgotten.
    pub(super) fn sweep_deliveries_of_gone_batches(
        &mut self,
        now: u64,
        forget_before: u64,
        stats: &mut SweepStats,
    ) {
        let batches = &self.batches;
        let d = &mut self.deliveries;
        for s in d.by_id.values_mut() {
            let r = &mut s.record;
            if rules::is_open(r.state) && !batches.contains_key(&r.batch) {
                r.state = DeliveryState::Expired;
                r.at = r.until.min(now);
                stats.deliveries_expired += 1;
            }
        }
        let gone: Vec<u64> = d
            .by_id
            .values()
            .filter(|s| !batches.contains_key(&s.record.batch) && s.record.until < forget_before)
            .map(|s| s.record.id)
            .collect();
        for id in gone {
            if let Some(s) = d.by_id.remove(&id) {
                d.by_push.remove(&(s.record.sender, s.record.push_id));
                stats.deliveries_forgotten += 1;
            }
        }
    }

    /// Moves `batch`'s expiry to `until` if that is later; its open
    /// deliveries expire with it.
    fn keep_batch(&mut self, batch: BatchId, until: u64) -> Option<u64> {
        let b = self.batches.get_mut(&batch)?;
        b.batch.expires_at = b.batch.expires_at.max(until);
        let expires_at = b.batch.expires_at;
        for s in self.deliveries.by_id.values_mut() {
            if s.record.batch == batch && rules::is_open(s.record.state) {
                s.record.until = expires_at;
            }
        }
        Some(expires_at)
    }
}

impl Mailbox for MemoryStore {
    fn delivery_by_push(&self, sender: &str, push_id: u64) -> Result<Option<DeliveryRecord>> {
        let inner = self.lock();
        let d = &inner.deliveries;
        Ok(d.by_push
            .get(&(sender.to_owned(), push_id))
            .and_then(|id| d.by_id.get(id))
            .map(|s| s.record.clone()))
    }

    fn push(&self, p: &NewPush<'_>, limits: &PushSettings) -> Result<Pushed> {
        let mut inner = self.lock();
        let key = (p.sender.to_owned(), p.push_id);
        if let Some(s) = inner
            .deliveries
            .by_push
            .get(&key)
            .and_then(|id| inner.deliveries.by_id.get(id))
        {
            return Ok(Pushed::Again(s.record.clone()));
        }
        let found = inner.lookup(inner.by_code.get(&p.code_key), Some(&p.code_key), p.now);
        let batch = match found {
            super::Lookup::Live(b) => b,
            super::Lookup::Expired => return Ok(Pushed::Refused(PushRefusal::Expired)),
            super::Lookup::Unknown => return Ok(Pushed::Refused(PushRefusal::UnknownCode)),
        };
        if !batch.ready() {
            return Ok(Pushed::Refused(PushRefusal::NotReady));
        }
        let total = batch.total_size();
        let counts = inner
            .deliveries
            .counts(p.sender, p.terminal, batch.id, total);
        if let Err(cap) = rules::check_caps(&counts, limits) {
            return Ok(Pushed::Refused(PushRefusal::Full(cap)));
        }
        let d = &mut inner.deliveries;
        d.next_id += 1;
        let record = DeliveryRecord {
            id: d.next_id,
            sender: p.sender.to_owned(),
            push_id: p.push_id,
            batch: batch.id,
            code: batch.code,
            terminal: p.terminal.to_owned(),
            state: DeliveryState::Queued,
            bytes: 0,
            total,
            files: u16::try_from(batch.files.len()).unwrap_or(u16::MAX),
            at: p.now,
            until: batch.expires_at,
            created_at: p.now,
            last_read_at: None,
            went_offline: false,
        };
        d.by_push.insert(key, record.id);
        d.by_id.insert(
            record.id,
            Stored {
                record: record.clone(),
                code_key: p.code_key,
                reads: BTreeMap::new(),
            },
        );
        Ok(Pushed::Queued(record))
    }

    fn deliveries_of(
        &self,
        sender: &str,
        code_key: &LookupKey,
        max: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        let inner = self.lock();
        let mine: Vec<DeliveryRecord> = inner
            .deliveries
            .by_id
            .values()
            .filter(|s| s.record.sender == sender && s.code_key == *code_key)
            .map(|s| s.record.clone())
            .collect();
        let skip = mine.len().saturating_sub(max);
        Ok(mine.into_iter().skip(skip).collect())
    }

    fn inbox(&self, terminal: &str, after: u64, max: usize) -> Result<Vec<DeliveryRecord>> {
        let inner = self.lock();
        Ok(inner
            .deliveries
            .by_id
            .range(after.saturating_add(1)..)
            .map(|(_, s)| &s.record)
            .filter(|r| r.terminal == terminal && rules::is_open(r.state))
            .take(max)
            .cloned()
            .collect())
    }

    fn acknowledge(&self, terminal: &str, id: u64, now: u64) -> Result<bool> {
        let mut inner = self.lock();
        let Some(s) = inner.deliveries.by_id.get_mut(&id) else {
            return Ok(false);
        };
        if s.record.terminal != terminal {
            return Ok(false);
        }
        if let Some(next) = rules::after_ack(s.record.state) {
            s.record.state = next;
            s.record.at = now;
        }
        Ok(true)
    }

    fn settle(&self, terminal: &str, id: u64, how: Settle, now: u64) -> Result<Settled> {
        let mut inner = self.lock();
        let Some(s) = inner.deliveries.by_id.get_mut(&id) else {
            return Ok(Settled::Unknown);
        };
        if s.record.terminal != terminal {
            return Ok(Settled::Unknown);
        }
        Ok(match rules::after_settle(s.record.state, how) {
            Some(next) => {
                s.record.state = next;
                s.record.at = now;
                Settled::Now(next)
            }
            None => Settled::Already(s.record.state),
        })
    }

    fn record_progress(
        &self,
        terminal: &str,
        batch: BatchId,
        ends: &[(u16, u64)],
        now: u64,
        grace_secs: u64,
    ) -> Result<Option<u64>> {
        let mut inner = self.lock();
        let mut matched = false;
        for s in inner.deliveries.by_id.values_mut() {
            let r = &mut s.record;
            if r.batch != batch || r.terminal != terminal || !rules::is_open(r.state) {
                continue;
            }
            matched = true;
            for (file, end) in ends {
                let e = s.reads.entry(*file).or_default();
                *e = (*e).max(*end);
            }
            r.bytes = s
                .reads
                .values()
                .fold(0u64, |a, b| a.saturating_add(*b))
                .min(r.total);
            r.last_read_at = Some(now);
            if let Some(next) = rules::after_read(r.state) {
                r.state = next;
                r.at = now;
            }
        }
        if !matched {
            return Ok(None);
        }
        Ok(inner.keep_batch(batch, now.saturating_add(grace_secs)))
    }

    fn sweep_deliveries(&self, now: u64, p: &PushSettings) -> Result<DeliverySweep> {
        let mut inner = self.lock();
        let mut swept = DeliverySweep::default();
        let mut keep: Vec<(BatchId, u64)> = Vec::new();
        for s in inner.deliveries.by_id.values_mut() {
            let r = &mut s.record;
            if rules::goes_offline(r.state, r.went_offline, r.created_at, now, p) {
                r.state = DeliveryState::Offline;
                r.at = now;
                r.went_offline = true;
                swept.offline += 1;
                keep.push((r.batch, now.saturating_add(p.offline_ttl_secs)));
            }
            if let Some(read) = r.last_read_at.filter(|_| rules::is_open(r.state)) {
                let until = read.saturating_add(p.receiving_grace_secs);
                if r.until <= now && until > now {
                    keep.push((r.batch, until));
                    swept.kept_receiving += 1;
                }
            }
        }
        for (batch, until) in keep {
            inner.keep_batch(batch, until);
        }
        Ok(swept)
    }
}
