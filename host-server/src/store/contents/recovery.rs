//! What a store repairs in its files when it opens after a crash (rules 2
//! and 3 in the [module docs](super)), against its committed rows.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;

use super::{remove_if_present, sync_dir, Contents, Result};

/// What opening a store repaired.
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

/// A partial upload whose file holds fewer bytes than its durable offset
/// (the disk lost synced data): the store records `len` as its durable
/// offset, and no hash state, so the upload resumes from what is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shortened {
    /// The partial upload.
    pub(crate) id: u64,
    /// The bytes its file holds.
    pub(crate) len: u64,
}

impl Contents {
    /// Makes the files agree with the committed rows: `partials` (id,
    /// durable offset) and `blobs` (ids) are every row there is. Returns
    /// the report (its `batches` left 0 for the store) and the partials
    /// whose durable offset the store must lower.
    pub(crate) fn recover(
        &self,
        partials: &[(u64, u64)],
        blobs: &HashSet<u64>,
    ) -> Result<(Recovery, Vec<Shortened>)> {
        let mut report = Recovery::default();
        let mut shortened = Vec::new();
        for &(id, durable) in partials {
            let path = self.partial_path(id);
            let blob_path = self.blob_path(id);
            if !path.exists() && blob_path.exists() && !blobs.contains(&id) {
                fs::rename(&blob_path, &path)?;
                sync_dir(&self.blob_dir)?;
                sync_dir(&self.partial_dir)?;
                report.moved_back += 1;
            }
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
                tracing::error!(
                    partial = id,
                    durable,
                    len,
                    "partial file shorter than its durable offset"
                );
                shortened.push(Shortened { id, len });
            }
            if durable > 0 {
                report.partials += 1;
            }
        }
        let partial_ids: HashSet<u64> = partials.iter().map(|p| p.0).collect();
        for (dir, known) in [(&self.partial_dir, &partial_ids), (&self.blob_dir, blobs)] {
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let keep = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|id| known.contains(&id));
                if !keep {
                    remove_if_present(&entry.path())?;
                    report.orphans += 1;
                }
            }
            sync_dir(dir)?;
        }
        for &id in blobs {
            if !self.blob_path(id).exists() {
                tracing::error!(blob = id, "blob file missing");
                report.missing_blobs += 1;
            }
        }
        Ok((report, shortened))
    }
}
