//! Directory fsyncs: one at a time, or coalesced across concurrent callers.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::Result;

/// Makes the entries of `dir` (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Coalesces fsyncs of one directory: a caller whose change happened before
/// a sync started waits for that sync instead of queueing its own, so many
/// concurrent completions share a few directory fsyncs.
pub(super) struct DirSync {
    dir: PathBuf,
    state: Mutex<DirSyncState>,
    done: Condvar,
}

#[derive(Default)]
struct DirSyncState {
    /// Sync requests so far.
    requested: u64,
    /// Every request up to this one is covered by a finished fsync.
    synced: u64,
    running: bool,
}

impl DirSync {
    pub(super) fn new(dir: PathBuf) -> Self {
        DirSync {
            dir,
            state: Mutex::new(DirSyncState::default()),
            done: Condvar::new(),
        }
    }

    /// Makes every change made in the directory before this call durable.
    pub(super) fn sync(&self) -> Result<()> {
        fn lock(m: &Mutex<DirSyncState>) -> MutexGuard<'_, DirSyncState> {
            m.lock().unwrap_or_else(|e| e.into_inner())
        }
        let mut st = lock(&self.state);
        st.requested += 1;
        let mine = st.requested;
        loop {
            if st.synced >= mine {
                return Ok(());
            }
            if !st.running {
                // Covers every request made so far, this one included.
                let target = st.requested;
                st.running = true;
                drop(st);
                let result = sync_dir(&self.dir);
                st = lock(&self.state);
                st.running = false;
                if result.is_ok() {
                    st.synced = st.synced.max(target);
                }
                self.done.notify_all();
                return result;
            }
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}
