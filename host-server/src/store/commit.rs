//! Group commit for the SQLite store: concurrent writers share one
//! transaction and one WAL fsync.
//!
//! With `synchronous=FULL` every commit ends in an fsync of the WAL. A relay
//! with many uploads finishing at once would queue them one fsync after the
//! other behind the connection's lock. Instead, a writer queues its change
//! and either waits or, if no commit is under way, becomes the leader: it
//! runs every queued change in one transaction (each in its own savepoint,
//! so one failing change does not undo the others), commits once, and hands
//! each writer its outcome. A writer returns only after the commit that
//! holds its change is durable, exactly as with a transaction of its own.
//!
//! ```text
//!   writer A ─┐                 ┌─ BEGIN; SAVEPOINT; A; RELEASE; … C; COMMIT (1 fsync) ─► A, B, C return
//!   writer B ─┼─► queue ─► leader
//!   writer C ─┘
//! ```

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rusqlite::Connection;

use super::{Result, StoreError};

/// A change to the counters of [`super::Usage`] a write makes when it commits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Delta {
    /// Held bytes.
    pub bytes: i64,
    /// Batches.
    pub batches: i64,
}

/// One queued change, type-erased.
trait Op: Send {
    /// Runs the change inside the group's transaction; `false` if it failed
    /// (its savepoint is then rolled back).
    fn run(&mut self, db: &Connection) -> bool;
    /// The usage change, if it ran successfully.
    fn delta(&self) -> Delta;
    /// Delivers the outcome once the group's commit is known.
    fn finish(self: Box<Self>, commit: &std::result::Result<(), String>);
}

type Slot<T> = Arc<Mutex<Option<Result<T>>>>;

struct Pending<T, F> {
    change: Option<F>,
    result: Option<Result<(T, Delta)>>,
    slot: Slot<T>,
}

impl<T, F> Op for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<(T, Delta)> + Send,
{
    fn run(&mut self, db: &Connection) -> bool {
        let result = match self.change.take() {
            // A panic must not leave the group (and every writer) waiting.
            Some(change) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| change(db)))
                .unwrap_or_else(|_| Err(StoreError::Corrupt("a change panicked".into()))),
            None => Err(StoreError::Corrupt("a change ran twice".into())),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn delta(&self) -> Delta {
        match &self.result {
            Some(Ok((_, d))) => *d,
            _ => Delta::default(),
        }
    }

    fn finish(self: Box<Self>, commit: &std::result::Result<(), String>) {
        let outcome = match (self.result, commit) {
            (Some(Ok((value, _))), Ok(())) => Ok(value),
            (Some(Ok(_)), Err(e)) => Err(StoreError::Db(e.clone())),
            (Some(Err(e)), _) => Err(e),
            (None, _) => Err(StoreError::Corrupt("a change never ran".into())),
        };
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    }
}

#[derive(Default)]
struct Queue {
    ops: Vec<Box<dyn Op>>,
    leading: bool,
}

/// The queue of changes waiting for a commit. See the module docs.
#[derive(Default)]
pub(super) struct GroupCommit {
    queue: Mutex<Queue>,
    done: Condvar,
}

impl GroupCommit {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `change` in a committed transaction (shared with concurrent
    /// writers) and returns its value once that transaction is durable.
    /// `db` locks the connection; `apply` sees the usage change of every
    /// committed write, under the connection's lock.
    pub(super) fn write<'c, T, F>(
        &self,
        db: &dyn Fn() -> MutexGuard<'c, Connection>,
        apply: &dyn Fn(Delta),
        change: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<(T, Delta)> + Send + 'static,
    {
        let slot: Slot<T> = Arc::default();
        let mut queue = self.queue();
        queue.ops.push(Box::new(Pending {
            change: Some(change),
            result: None,
            slot: slot.clone(),
        }));
        loop {
            if let Some(outcome) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return outcome;
            }
            if queue.leading {
                queue = self.done.wait(queue).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead one group (it holds our change), then let a waiting
            // writer lead the next, so no writer leads for long.
            queue.leading = true;
            let mut group = core::mem::take(&mut queue.ops);
            drop(queue);
            let commit = {
                let conn = db();
                let commit = run_group(&conn, &mut group);
                if commit.is_ok() {
                    for op in &group {
                        apply(op.delta());
                    }
                }
                commit
            };
            queue = self.queue();
            for op in group {
                op.finish(&commit);
            }
            queue.leading = false;
            self.done.notify_all();
        }
    }
}

/// One transaction over `group`, each change in its own savepoint.
fn run_group(db: &Connection, group: &mut [Box<dyn Op>]) -> std::result::Result<(), String> {
    // Cached: these run around every change, so each is parsed once per
    // connection rather than once per change.
    let sql = |db: &Connection, s: &str| {
        db.prepare_cached(s)
            .and_then(|mut st| st.execute([]))
            .map(drop)
            .map_err(|e| e.to_string())
    };
    sql(db, "BEGIN IMMEDIATE")?;
    for op in group.iter_mut() {
        let ran = sql(db, "SAVEPOINT change").map(|()| op.run(db));
        let end = match ran {
            Ok(true) => sql(db, "RELEASE change"),
            Ok(false) => sql(db, "ROLLBACK TO change").and_then(|()| sql(db, "RELEASE change")),
            Err(e) => Err(e),
        };
        if let Err(e) = end {
            let _ = db.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    if let Err(e) = sql(db, "COMMIT") {
        let _ = db.execute_batch("ROLLBACK");
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending<T: Send + 'static>(
        change: impl FnOnce(&Connection) -> Result<(T, Delta)> + Send + 'static,
    ) -> (Box<dyn Op>, Slot<T>) {
        let slot: Slot<T> = Arc::default();
        let op = Pending {
            change: Some(change),
            result: None,
            slot: slot.clone(),
        };
        (Box::new(op), slot)
    }

    fn insert(db: &Connection, x: i64) -> Result<()> {
        db.execute("INSERT INTO t(x) VALUES (?1)", [x])?;
        Ok(())
    }

    fn values(db: &Connection) -> Vec<i64> {
        db.prepare("SELECT x FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    fn taken<T>(slot: &Slot<T>) -> Result<T> {
        slot.lock().unwrap().take().expect("an outcome")
    }

    #[test]
    fn a_failing_change_is_rolled_back_alone() {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t(x INTEGER UNIQUE)")
            .unwrap();
        let (a, sa) = pending(|db| insert(db, 1).map(|()| ("a", Delta::default())));
        // Inserts 2, then collides: its savepoint takes the 2 back too.
        let (b, sb) = pending(|db| {
            insert(db, 2)?;
            insert(db, 1)?;
            Ok(("b", Delta::default()))
        });
        let (c, sc) = pending(|db| {
            insert(db, 3).map(|()| {
                (
                    "c",
                    Delta {
                        bytes: 5,
                        batches: 1,
                    },
                )
            })
        });
        let mut group = vec![a, b, c];
        run_group(&db, &mut group).unwrap();
        let deltas: Vec<Delta> = group.iter().map(|op| op.delta()).collect();
        assert_eq!(
            deltas,
            [
                Delta::default(),
                Delta::default(),
                Delta {
                    bytes: 5,
                    batches: 1
                }
            ]
        );
        for op in group {
            op.finish(&Ok(()));
        }
        assert_eq!(taken(&sa).unwrap(), "a");
        assert!(matches!(taken(&sb), Err(StoreError::Db(_))));
        assert_eq!(taken(&sc).unwrap(), "c");
        assert_eq!(values(&db), [1, 3]);
    }

    #[test]
    fn a_failed_commit_fails_every_change_in_it() {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t(x INTEGER UNIQUE)")
            .unwrap();
        let (mut a, sa) = pending(|db| insert(db, 1).map(|()| ((), Delta::default())));
        assert!(a.run(&db));
        a.finish(&Err("disk full".into()));
        assert!(matches!(taken(&sa), Err(StoreError::Db(e)) if e == "disk full"));
    }

    #[test]
    fn concurrent_writers_all_commit_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let db = Connection::open(&path).unwrap();
        db.pragma_update(None, "journal_mode", "WAL").unwrap();
        db.pragma_update(None, "synchronous", "FULL").unwrap();
        db.execute_batch("CREATE TABLE t(x INTEGER UNIQUE)")
            .unwrap();
        let db = Mutex::new(db);
        let group = GroupCommit::default();
        let total = Mutex::new(0i64);
        std::thread::scope(|s| {
            for t in 0..8i64 {
                let (db, group, total) = (&db, &group, &total);
                s.spawn(move || {
                    for i in 0..40i64 {
                        let x = t * 1000 + i;
                        let got = group
                            .write(
                                &|| db.lock().unwrap(),
                                &|d: Delta| *total.lock().unwrap() += d.bytes,
                                move |db| {
                                    insert(db, x)?;
                                    Ok((
                                        x,
                                        Delta {
                                            bytes: 1,
                                            batches: 0,
                                        },
                                    ))
                                },
                            )
                            .unwrap();
                        assert_eq!(got, x);
                    }
                });
            }
        });
        assert_eq!(*total.lock().unwrap(), 320);
        drop(db);
        // Durable: a fresh connection sees every row.
        let db = Connection::open(&path).unwrap();
        assert_eq!(values(&db).len(), 320);
    }
}
