//! A terminal's download of a batch pushed to it (PROTOCOL.md §11):
//! the bytes sent are noted per file and written to the mailbox at most
//! once a second, and when the session ends, so a download does not
//! cost a database write per `Read`; a crash loses a second of it, which
//! only the sender's view of the progress would have shown.

use std::collections::{BTreeMap, VecDeque};

use pickup_proto::{Duration, Instant};

use super::Session;
use crate::jobs::{NoticeWork, Work};
use crate::relay::unix_secs;
use crate::store::{BatchId, StoreError};

/// How often a download's progress is written at most, per session: a
/// download does not cost a database write per `Read` or frame, and
/// progress is not critical (a crash loses a second of it).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Batches whose progress one session follows at once; a terminal reads
/// one batch at a time, so more is someone misbehaving (the oldest is
/// dropped, its last second of progress with it).
const MAX_TRACKED: usize = 8;

/// What a terminal read of batches pushed to it, not yet written.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) tracked: VecDeque<Tracked>,
    last_flush: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct Tracked {
    pub(super) batch: BatchId,
    /// Per file, the end of the furthest byte sent.
    ends: BTreeMap<u16, u64>,
    dirty: bool,
    /// No open delivery to this terminal names the batch: not followed.
    pub(super) untracked: bool,
}

impl Progress {
    fn note(&mut self, batch: BatchId, file: u16, end: u64) {
        let i = match self.tracked.iter().position(|t| t.batch == batch) {
            Some(i) => i,
            None => {
                if self.tracked.len() >= MAX_TRACKED {
                    self.tracked.pop_front();
                }
                self.tracked.push_back(Tracked {
                    batch,
                    ends: BTreeMap::new(),
                    dirty: false,
                    untracked: false,
                });
                self.tracked.len() - 1
            }
        };
        let t = &mut self.tracked[i];
        if t.untracked {
            return;
        }
        let e = t.ends.entry(file).or_default();
        if end > *e {
            *e = end;
            t.dirty = true;
        }
    }

    fn dirty(&self) -> bool {
        self.tracked.iter().any(|t| t.dirty)
    }

    fn due(&self) -> Option<Instant> {
        self.dirty().then(|| {
            self.last_flush
                .map_or(Instant::from_millis(0), |t| t + PROGRESS_EVERY)
        })
    }
}

impl Session {
    /// `Data` up to `end` of `file` of `batch` went out: progress, if this
    /// session is a terminal (a delivery's target).
    pub(super) fn note_progress(&mut self, batch: BatchId, file: u16, end: u64) {
        if self.identity.as_ref().is_some_and(|i| i.terminal.is_some()) {
            self.notices.progress.note(batch, file, end);
        }
    }

    /// Queues the progress not yet written, if a second passed since the
    /// last write (or `now_anyway`: the session ends).
    pub(super) fn flush_progress(&mut self, now_anyway: bool) {
        let p = &mut self.notices.progress;
        let Some(due) = p.due() else {
            return;
        };
        if !now_anyway && self.clock < due {
            return;
        }
        let Some(terminal) = self.identity.as_ref().and_then(|i| i.terminal.clone()) else {
            return;
        };
        p.last_flush = Some(self.clock);
        let now_secs = unix_secs(self.clock);
        for t in p.tracked.iter_mut().filter(|t| t.dirty) {
            t.dirty = false;
            self.work.push(Work::Notice(NoticeWork::Progress {
                terminal: terminal.clone(),
                batch: t.batch,
                ends: t.ends.iter().map(|(f, e)| (*f, *e)).collect(),
                now_secs,
            }));
        }
    }

    /// When progress must next be written, if any waits.
    pub(super) fn progress_deadline(&self) -> Option<Instant> {
        self.notices.progress.due()
    }

    pub(super) fn on_progress_recorded(
        &mut self,
        batch: BatchId,
        result: Result<Option<u64>, StoreError>,
    ) {
        match result {
            Ok(Some(expires_at)) => {
                // The batch is kept while its target reads it: so is the
                // stream reading it now.
                self.extend_stream(batch, expires_at);
            }
            Ok(None) => {
                if let Some(t) = self
                    .notices
                    .progress
                    .tracked
                    .iter_mut()
                    .find(|t| t.batch == batch)
                {
                    t.untracked = true;
                    t.dirty = false;
                }
            }
            Err(e) => tracing::warn!(session = self.id, "recording progress failed: {e}"),
        }
    }
}
