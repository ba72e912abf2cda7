//! What [`SqliteStore::open`] repairs after a crash (durability rules 2
//! and 3 in the [module docs](super)): the files, against the committed
//! rows ([`Contents::recover`](crate::store::contents::Contents)).

use std::collections::HashSet;

use rusqlite::params;

use super::rows::{to_i64, to_u64};
use super::{Recovery, Result, SqliteStore};

impl SqliteStore {
    /// Makes the checkpointed database and every file consistent after a crash.
    pub(super) fn recover(&self) -> Result<Recovery> {
        let db = self.db();
        let partials: Vec<(u64, u64)> = db
            .prepare("SELECT id, durable FROM partials")?
            .query_map([], |r| Ok((to_u64(r.get(0)?), to_u64(r.get(1)?))))?
            .collect::<std::result::Result<_, _>>()?;
        let blobs: HashSet<u64> = db
            .prepare("SELECT id FROM blobs")?
            .query_map([], |r| Ok(to_u64(r.get(0)?)))?
            .collect::<std::result::Result<_, _>>()?;
        let (mut report, shortened) = self.files.recover(&partials, &blobs)?;
        for s in shortened {
            db.execute(
                "UPDATE partials SET durable = ?1, hashed = NULL WHERE id = ?2",
                params![to_i64(s.len)?, to_i64(s.id)?],
            )?;
        }
        report.batches = to_u64(db.query_row("SELECT COUNT(*) FROM batches", [], |r| r.get(0))?);
        Ok(report)
    }
}
