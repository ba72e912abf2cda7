//! What [`SqliteStore::open`] repairs after a crash (durability rules 2
//! and 3 in the [module docs](super)).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;

use rusqlite::params;

use super::dir_sync::sync_dir;
use super::rows::{to_i64, to_u64};
use super::{remove_if_present, Result, SqliteStore};

/// What [`SqliteStore::open`] repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Partial uploads that resume (durable offset > 0).
    pub partials: u64,
    /// Partial files cut back to their durable offset.
    pub truncated: u64,
    /// Files no record referred to, deleted.
    pub orphans: u64,
    /// Completions interrupted between rename and commit, moved back.
    pub moved_back: u64,
    /// Blob records whose file is missing (data loss outside the relay's control).
    pub missing_blobs: u64,
    /// Batches in the store.
    pub batches: u64,
}

impl SqliteStore {
    /// Makes the checkpointed database and every file consistent after a crash.
    pub(super) fn recover(&self) -> Result<Recovery> {
        let mut report = Recovery::default();
        let db = self.db();
        let partials: Vec<(i64, i64)> = db
            .prepare("SELECT id, durable FROM partials")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        let blobs: HashSet<i64> = db
            .prepare("SELECT id FROM blobs")?
            .query_map([], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        report.batches = to_u64(db.query_row("SELECT COUNT(*) FROM batches", [], |r| r.get(0))?);
        for &(id, durable) in &partials {
            let id_u = to_u64(id);
            let path = self.partial_path(id_u);
            let blob_path = self.blob_path(id_u);
            if !path.exists() && blob_path.exists() && !blobs.contains(&id) {
                fs::rename(&blob_path, &path)?;
                sync_dir(&self.blob_dir)?;
                sync_dir(&self.partial_dir)?;
                report.moved_back += 1;
            }
            let durable = to_u64(durable);
            let len = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == ErrorKind::NotFound => 0,
                Err(e) => return Err(e.into()),
            };
            if len > durable {
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(durable)?;
                f.sync_all()?;
                report.truncated += 1;
            } else if len < durable {
                // The durable prefix is shorter than recorded: the disk lost
                // synced data. Resume from what is really there.
                tracing::error!(
                    partial = id,
                    durable,
                    len,
                    "partial file shorter than its durable offset"
                );
                db.execute(
                    "UPDATE partials SET durable = ?1, hashed = NULL WHERE id = ?2",
                    params![to_i64(len)?, id],
                )?;
            }
            if durable > 0 {
                report.partials += 1;
            }
        }
        let partial_ids: HashSet<i64> = partials.iter().map(|p| p.0).collect();
        for (dir, known) in [(&self.partial_dir, &partial_ids), (&self.blob_dir, &blobs)] {
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let keep = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i64>().ok())
                    .is_some_and(|id| known.contains(&id));
                if !keep {
                    remove_if_present(&entry.path())?;
                    report.orphans += 1;
                }
            }
            sync_dir(dir)?;
        }
        for &id in &blobs {
            if !self.blob_path(to_u64(id)).exists() {
                tracing::error!(blob = id, "blob file missing");
                report.missing_blobs += 1;
            }
        }
        Ok(report)
    }
}
