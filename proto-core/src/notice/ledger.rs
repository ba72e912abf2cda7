//! The listener's record of notice ids: which it handed to the
//! application, which verdicts are on their way, which are settled.
//!
//! Fixed capacity. A full ledger makes room by forgetting its oldest
//! settled id (the relay sends no notice again once it answered
//! `Settled`, so an old settled id is the one least likely to come back);
//! when every slot holds an open notice, a new one is not taken at all:
//! the relay keeps it queued and sends it again after a later `Listen`.

use heapless::Vec;

use crate::message::RefuseReason;

/// What the terminal answered to a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Verdict {
    /// Every file is stored and verified: `Receipt`.
    Confirmed,
    /// Not taken: `NoticeRefuse` with this reason.
    Refused(RefuseReason),
}

/// Why a verdict was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum VerdictError {
    /// The id already has the other verdict; a verdict is final.
    Decided(Verdict),
    /// The record of ids is full of open notices.
    Full,
}

impl core::fmt::Display for VerdictError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VerdictError::Decided(v) => write!(f, "the notice already has a verdict ({v:?})"),
            VerdictError::Full => f.write_str("no room to record another notice"),
        }
    }
}

/// Where one id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    /// Handed to the application, which has not decided yet.
    Shown,
    /// Decided; the verdict goes out until `Settled`.
    Pending(Verdict),
    /// Settled before, and the notice came again: the verdict goes out
    /// again, and its `Settled` is not news to the application.
    Resend(Verdict),
    /// The relay answered `Settled`. `None`: settled without a verdict
    /// from here (another session of this terminal gave it).
    Settled(Option<Verdict>),
    /// The relay answered `UnknownNotice`: the verdict is held back, and
    /// goes out again if the relay ever sends the notice (which proves it
    /// knows the id after all).
    Orphaned(Verdict),
}

impl Mark {
    /// The verdict still to be sent, if any.
    pub(super) fn due(self) -> Option<Verdict> {
        match self {
            Mark::Pending(v) | Mark::Resend(v) => Some(v),
            _ => None,
        }
    }

    /// The verdict given, if any.
    pub(super) fn verdict(self) -> Option<Verdict> {
        match self {
            Mark::Pending(v) | Mark::Resend(v) | Mark::Orphaned(v) => Some(v),
            Mark::Settled(v) => v,
            Mark::Shown => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    mark: Mark,
}

/// Up to `N` ids, oldest first. See the module docs.
#[derive(Debug)]
pub(super) struct Ledger<const N: usize> {
    entries: Vec<Entry, N>,
}

impl<const N: usize> Ledger<N> {
    pub(super) const fn new() -> Self {
        Ledger {
            entries: Vec::new(),
        }
    }

    pub(super) fn get(&self, id: u64) -> Option<Mark> {
        self.entries.iter().find(|e| e.id == id).map(|e| e.mark)
    }

    /// Records `mark` for `id`, making room if need be; `Err` when every
    /// slot holds an open notice.
    pub(super) fn set(&mut self, id: u64, mark: Mark) -> Result<(), VerdictError> {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.mark = mark;
            return Ok(());
        }
        if self.entries.is_full() {
            let oldest_settled = self
                .entries
                .iter()
                .position(|e| matches!(e.mark, Mark::Settled(_)))
                .or_else(|| {
                    self.entries
                        .iter()
                        .position(|e| matches!(e.mark, Mark::Orphaned(_)))
                })
                .ok_or(VerdictError::Full)?;
            self.entries.remove(oldest_settled);
        }
        self.entries
            .push(Entry { id, mark })
            .map_err(|_| VerdictError::Full)
    }

    /// The oldest id whose verdict is still to be sent.
    pub(super) fn first_due(&self) -> Option<(u64, Verdict)> {
        self.entries
            .iter()
            .find_map(|e| e.mark.due().map(|v| (e.id, v)))
    }

    /// How many verdicts are still to be settled.
    pub(super) fn due_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.mark.due().is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ledger_forgets_its_oldest_settled_id_and_never_an_open_one() {
        let mut l = Ledger::<3>::new();
        l.set(1, Mark::Settled(Some(Verdict::Confirmed))).unwrap();
        l.set(2, Mark::Shown).unwrap();
        l.set(3, Mark::Settled(None)).unwrap();
        l.set(4, Mark::Pending(Verdict::Confirmed)).unwrap();
        assert_eq!(l.get(1), None, "the oldest settled id made room");
        assert_eq!(l.get(3), Some(Mark::Settled(None)));
        l.set(5, Mark::Shown).unwrap();
        assert_eq!(l.get(3), None);
        assert_eq!(l.set(6, Mark::Shown), Err(VerdictError::Full));
        // Updating a recorded id needs no room.
        l.set(2, Mark::Pending(Verdict::Refused(RefuseReason::NoSpace)))
            .unwrap();
        assert_eq!(
            l.first_due(),
            Some((2, Verdict::Refused(RefuseReason::NoSpace)))
        );
        assert_eq!(l.due_count(), 2);
    }
}
