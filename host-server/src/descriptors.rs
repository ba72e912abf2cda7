//! File descriptors: the relay raises its soft `RLIMIT_NOFILE` to the hard
//! limit at start, and derives from what it then has how many sessions it
//! serves and how many store files it keeps open.
//!
//! ```text
//!   soft limit (after raising)
//!   ├── open at start            stdio, the database and its journal, the runtime
//!   ├── SPARE                    files opened later: directory fsyncs, SQLite's own,
//!   │                            a connection between accept and its Busy, signals
//!   ├── listeners + serial ports
//!   ├── store file cache         4 × per_kind: partial and blob handles, each with a
//!   │                            second descriptor for direct I/O; a quarter of the rest
//!   └── sessions                 one socket each: the rest, at most limits.max_sessions
//! ```
//!
//! A connection over the cap is accepted and refused with `Busy` (its
//! descriptor is closed at once), so `accept` does not fail with "too many
//! open files" while sessions are within the cap.

use std::io;

use crate::store::sqlite::OPEN_FILES_PER_KIND;

/// Descriptors kept free for what opens files after start (see the module
/// docs).
pub const SPARE: u64 = 64;

/// Fewest store file handles cached per kind.
const MIN_STORE_FILES_PER_KIND: usize = 4;

/// Descriptors a cached store file handle may hold: the file, and the
/// same file opened for direct I/O (`store::contents::direct`).
const DESCRIPTORS_PER_HANDLE: u64 = 2;

/// The open-file limit, before and after [`raise_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit found at start (`None`: unlimited).
    pub was: Option<u64>,
    /// The soft limit in force (`None`: unlimited).
    pub soft: Option<u64>,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (an unlimited hard
/// limit is taken as 2^20, the kernel's usual ceiling); on failure the soft
/// limit stays as it was.
pub fn raise_limit() -> NofileLimit {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    let target = before.maximum.unwrap_or(1 << 20);
    let mut soft = before.current;
    if before.current.is_some_and(|c| c < target) {
        let raised = Rlimit {
            current: Some(target),
            maximum: before.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => soft = Some(target),
            Err(e) => tracing::warn!(
                "cannot raise the open-file limit from {:?} to {target}: {e}",
                before.current
            ),
        }
    }
    NofileLimit {
        was: before.current,
        soft,
        hard: before.maximum,
    }
}

/// Descriptors this process has open now, if the system says
/// (`/proc/self/fd` or `/dev/fd`).
pub fn open_now() -> Option<u64> {
    ["/proc/self/fd", "/dev/fd"].iter().find_map(|dir| {
        // The directory's own descriptor is listed too.
        let n = std::fs::read_dir(dir).ok()?.count() as u64;
        Some(n.saturating_sub(1))
    })
}

/// How the relay spends its descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Sessions served at once (`limits.max_sessions` or fewer).
    pub sessions: usize,
    /// Store file handles cached per kind.
    pub store_files_per_kind: usize,
}

/// Splits `limit` descriptors (`None`: unlimited), of which `open` are in
/// use and `endpoints` are wanted for listeners and serial ports, between
/// the store's file cache and at most `configured` sessions. An error says
/// how many descriptors would be needed for one session.
pub fn budget(
    limit: Option<u64>,
    open: u64,
    endpoints: u64,
    configured: usize,
) -> Result<Budget, String> {
    let reserved = open + SPARE + endpoints;
    let Some(limit) = limit else {
        return Ok(Budget {
            sessions: configured,
            store_files_per_kind: OPEN_FILES_PER_KIND,
        });
    };
    let free = limit.saturating_sub(reserved);
    let per_kind = usize::try_from(free / (8 * DESCRIPTORS_PER_HANDLE))
        .unwrap_or(usize::MAX)
        .clamp(MIN_STORE_FILES_PER_KIND, OPEN_FILES_PER_KIND);
    let store_files = 2 * DESCRIPTORS_PER_HANDLE * per_kind as u64;
    let for_sessions = free.saturating_sub(store_files);
    if for_sessions == 0 {
        return Err(format!(
            "{limit} open files allowed, {} needed for one session: raise `ulimit -n`",
            reserved + store_files + 1
        ));
    }
    Ok(Budget {
        sessions: usize::try_from(for_sessions)
            .unwrap_or(usize::MAX)
            .min(configured),
        store_files_per_kind: per_kind,
    })
}

/// Raises the limit, derives the [`Budget`] for a relay with `endpoints`
/// listeners and ports and `configured` sessions at most, and logs both.
pub fn plan(endpoints: u64, configured: usize) -> io::Result<Budget> {
    let limit = raise_limit();
    let open = open_now().unwrap_or(16);
    let budget = budget(limit.soft, open, endpoints, configured).map_err(io::Error::other)?;
    tracing::info!(
        nofile_soft = limit.soft,
        nofile_soft_at_start = limit.was,
        nofile_hard = limit.hard,
        open,
        spare = SPARE,
        store_open_files = 2 * DESCRIPTORS_PER_HANDLE * budget.store_files_per_kind as u64,
        max_sessions = budget.sessions,
        configured_max_sessions = configured,
        "descriptors: up to {} sessions ({} configured)",
        budget.sessions,
        configured
    );
    if budget.sessions < configured {
        tracing::warn!(
            "the open-file limit allows {} sessions, fewer than limits.max_sessions = {configured}",
            budget.sessions
        );
    }
    Ok(budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cap_follows_the_limit() {
        // Plenty: the configured cap, the full store cache.
        assert_eq!(
            budget(Some(1 << 20), 10, 1, 16_384),
            Ok(Budget {
                sessions: 16_384,
                store_files_per_kind: 256
            })
        );
        assert_eq!(budget(None, 10, 1, 100).unwrap().sessions, 100);
        // ulimit -n 1024: 1024 - 10 - 64 - 1 = 949 free, 59 per kind (of
        // up to two descriptors each).
        assert_eq!(
            budget(Some(1024), 10, 1, 16_384),
            Ok(Budget {
                sessions: 949 - 4 * 59,
                store_files_per_kind: 59
            })
        );
        // ulimit -n 256: 181 free, 11 per kind, 137 sessions.
        assert_eq!(
            budget(Some(256), 10, 1, 16_384),
            Ok(Budget {
                sessions: 137,
                store_files_per_kind: 11
            })
        );
        // Too few for one session.
        assert!(budget(Some(80), 10, 1, 16_384).is_err());
    }

    #[test]
    fn open_descriptors_are_counted() {
        // At least stdin, stdout and stderr (other tests open more meanwhile).
        assert!(open_now().is_some_and(|n| n >= 3));
    }
}
