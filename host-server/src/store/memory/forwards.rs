//! The memory store's [`Forwards`]: the queue beside its batches, under
//! the same lock. Forwards are metadata: `MemoryStore::crash` keeps them.

use std::collections::BTreeMap;

use pickup_proto::message::ForwardState;

use super::MemoryStore;
use crate::store::forwards::{
    apply_claim, apply_retry, Created, ForwardChange, ForwardRecord, Forwards, NewForward, Retried,
};
use crate::store::Result;

/// The forwards of a [`MemoryStore`].
#[derive(Debug, Default)]
pub(super) struct Queue {
    next_id: u64,
    by_id: BTreeMap<u64, ForwardRecord>,
}

impl Forwards for MemoryStore {
    fn create_forward(&self, new: &NewForward<'_>) -> Result<Created> {
        let mut inner = self.lock();
        let q = &mut inner.forwards;
        if let Some(push) = &new.push {
            let again = q.by_id.values().find(|r| {
                r.requester == new.requester
                    && r.push.as_ref().map(|p| p.push_id) == Some(push.push_id)
            });
            if let Some(r) = again {
                return Ok(Created::Again(r.clone()));
            }
        }
        if q.open_of(new.requester) >= new.max_open as usize {
            return Ok(Created::Full);
        }
        q.next_id += 1;
        let record = ForwardRecord {
            id: q.next_id,
            batch: new.batch,
            code: new.code,
            requester: new.requester.to_owned(),
            peer: new.peer.to_owned(),
            state: ForwardState::Queued,
            sent: 0,
            total: new.total,
            attempts: 0,
            next_attempt_at: new.now,
            last_error: None,
            peer_token: None,
            peer_code: None,
            peer_expires_at: 0,
            push: new.push.clone(),
            claim: 0,
            lease_until: 0,
            created_at: new.now,
            updated_at: new.now,
        };
        q.by_id.insert(record.id, record.clone());
        Ok(Created::New(record))
    }

    fn forward(&self, id: u64) -> Result<Option<ForwardRecord>> {
        Ok(self.lock().forwards.by_id.get(&id).cloned())
    }

    fn forward_by_push(&self, requester: &str, push_id: u64) -> Result<Option<ForwardRecord>> {
        let inner = self.lock();
        Ok(inner
            .forwards
            .by_id
            .values()
            .find(|r| {
                r.requester == requester && r.push.as_ref().map(|p| p.push_id) == Some(push_id)
            })
            .cloned())
    }

    fn claim_forwards(
        &self,
        now: u64,
        lease_until: u64,
        limit: usize,
    ) -> Result<Vec<ForwardRecord>> {
        let mut inner = self.lock();
        let mut due: Vec<&mut ForwardRecord> = inner
            .forwards
            .by_id
            .values_mut()
            .filter(|r| r.is_due(now))
            .collect();
        // Oldest due first, as the SQL stores order them.
        due.sort_by_key(|r| (due_at(r), r.id));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|r| {
                apply_claim(r, now, lease_until);
                r.clone()
            })
            .collect())
    }

    fn advance_forward(
        &self,
        id: u64,
        claim: u64,
        change: &ForwardChange,
        now: u64,
    ) -> Result<Option<ForwardRecord>> {
        let mut inner = self.lock();
        match inner.forwards.by_id.get_mut(&id) {
            Some(r) if r.claim == claim && r.state.is_running() => {
                change.apply(r, now);
                Ok(Some(r.clone()))
            }
            _ => Ok(None),
        }
    }

    fn retry_forward(
        &self,
        id: u64,
        requester: &str,
        now: u64,
        max_open: u32,
    ) -> Result<Option<Retried>> {
        let mut inner = self.lock();
        let q = &mut inner.forwards;
        let Some(r) = q.by_id.get(&id).filter(|r| r.requester == requester) else {
            return Ok(None);
        };
        if r.retry_reopens() && q.open_of(requester) >= max_open as usize {
            return Ok(Some(Retried::Full(r.clone())));
        }
        Ok(q.by_id.get_mut(&id).map(|r| {
            apply_retry(r, now);
            Retried::Record(r.clone())
        }))
    }

    fn sweep_forwards(&self, finished_before: u64, limit: usize) -> Result<u64> {
        let mut inner = self.lock();
        let q = &mut inner.forwards;
        let swept: Vec<u64> = q
            .by_id
            .values()
            .filter(|r| r.is_swept(finished_before))
            .map(|r| r.id)
            .take(limit)
            .collect();
        for id in &swept {
            q.by_id.remove(id);
        }
        Ok(swept.len() as u64)
    }
}

impl Queue {
    /// The forwards of `requester` that are not `Done` or `Failed`.
    fn open_of(&self, requester: &str) -> usize {
        self.by_id
            .values()
            .filter(|r| r.requester == requester && r.is_open())
            .count()
    }
}

/// When a due forward became due: its next attempt, or the end of its
/// lease for a running one.
pub(crate) fn due_at(r: &ForwardRecord) -> u64 {
    if r.state.is_running() {
        r.lease_until
    } else {
        r.next_attempt_at
    }
}
