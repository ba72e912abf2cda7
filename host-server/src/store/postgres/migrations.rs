//! The PostgreSQL schema, as numbered migrations applied in order.
//!
//! Every instance applies what is missing when it starts, and
//! `pickup-relay migrate` does so alone. Instances starting together do not
//! race: each migration runs in its own transaction under one advisory
//! lock, and re-reads the applied versions once it holds it. A database
//! newer than the binary is refused rather than used.
//!
//! A migration, once released, never changes: a change to the schema is a
//! new migration.

use tokio_postgres::Transaction;

use super::db::{Db, DbError};

/// One step of the schema.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Migration {
    /// Its number: 1, 2, 3… in order, without gaps.
    pub(crate) version: i32,
    /// What it is for, as recorded in `schema_migrations`.
    pub(crate) name: &'static str,
    /// The statements.
    pub(crate) sql: &'static str,
}

/// The relay's schema.
pub(crate) const MIGRATIONS: &[Migration] = &[
    STORE,
    DIRECTORY,
    SHARED_LIMITS,
    OBJECTS,
    FORWARDS,
    REMOTE_SENDERS,
    FORWARD_PUSH,
    FORWARD_RETENTION,
];

/// Version 1: batches, files, partials, blobs, names, deliveries
/// ([`super::PgStore`]).
pub(crate) const STORE: Migration = Migration {
    version: 1,
    name: "store",
    sql: include_str!("migrations/0001_store.sql"),
};

/// Version 2: users, tokens, terminals and allowed senders
/// ([`crate::directory::PgDirectory`]).
pub(crate) const DIRECTORY: Migration = Migration {
    version: 2,
    name: "directory",
    sql: include_str!("migrations/0002_directory.sql"),
};

/// Version 3: the failed-lookup buckets all instances claim from
/// ([`super::lookup_budget`]).
pub(crate) const SHARED_LIMITS: Migration = Migration {
    version: 3,
    name: "shared_limits",
    sql: include_str!("migrations/0003_shared_limits.sql"),
};

/// Version 4: where partial uploads are in object storage, and the
/// objects waiting to be deleted ([`super::objects`]).
pub(crate) const OBJECTS: Migration = Migration {
    version: 4,
    name: "objects",
    sql: include_str!("migrations/0004_objects.sql"),
};

/// Version 5: the queue of forwards to peer relays
/// (`store/postgres/forwards.rs`).
pub(crate) const FORWARDS: Migration = Migration {
    version: 5,
    name: "forwards",
    sql: include_str!("migrations/0005_forwards.sql"),
};

/// Version 6: an allowed sender may be a peer relay's user, `user@relay`
/// ([`crate::directory::remote_sender`]), so it no longer refers to users.
pub(crate) const REMOTE_SENDERS: Migration = Migration {
    version: 6,
    name: "remote_senders",
    sql: include_str!("migrations/0006_remote_senders.sql"),
};

/// Version 7: a forward's push target, unique push ids per requester
/// (`store/postgres/forwards.rs`).
pub(crate) const FORWARD_PUSH: Migration = Migration {
    version: 7,
    name: "forward_push",
    sql: include_str!("migrations/0007_forward_push.sql"),
};

/// Version 8: the index the sweep of finished forwards reads
/// (`[forward] keep_finished_secs`, `store/postgres/forwards.rs`).
pub(crate) const FORWARD_RETENTION: Migration = Migration {
    version: 8,
    name: "forward_retention",
    sql: include_str!("migrations/0008_forward_retention.sql"),
};

/// The advisory lock migrations run under ("pickup" in ASCII).
const LOCK: i64 = 0x7069_636b_7570;

/// What [`migrate`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The versions applied now, in order.
    pub(crate) versions: Vec<i32>,
    /// The schema's version afterwards.
    pub(crate) current: i32,
}

/// Applies the migrations of `list` the database lacks.
pub(crate) async fn migrate(db: &Db, list: &[Migration]) -> Result<Applied, DbError> {
    let latest = list.last().map_or(0, |m| m.version);
    let mut applied = Applied::default();
    for m in list {
        let done = db
            .transaction(async |tx| {
                let current = locked_version(tx).await?;
                if current > latest {
                    return Err(DbError::Schema(format!(
                        "the database has schema version {current}, newer than this relay's \
                         {latest}: run a newer pickup-relay"
                    )));
                }
                if current >= m.version {
                    return Ok(false);
                }
                tx.batch_execute(m.sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations(version, name, applied_at) \
                     VALUES ($1, $2, now())",
                    &[&m.version, &m.name],
                )
                .await?;
                Ok(true)
            })
            .await?;
        if done {
            applied.versions.push(m.version);
        }
    }
    applied.current = db
        .transaction(async |tx| {
            let current = locked_version(tx).await?;
            if current > latest {
                return Err(DbError::Schema(format!(
                    "the database has schema version {current}, newer than this relay's \
                     {latest}: run a newer pickup-relay"
                )));
            }
            Ok(current)
        })
        .await?;
    Ok(applied)
}

/// Takes the migration lock for the transaction and reads the applied
/// version (0 for an empty database).
async fn locked_version(tx: &Transaction<'_>) -> Result<i32, DbError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations(
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL)",
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Refuses a server that could lose a committed step: with
/// `synchronous_commit = off` a commit returns before it is durable, and an
/// acknowledged offset could be lost in a crash.
pub(crate) async fn check_durability(db: &Db) -> Result<(), DbError> {
    let setting: String = db
        .transaction(async |tx| Ok(tx.query_one("SHOW synchronous_commit", &[]).await?.get(0)))
        .await?;
    if setting == "off" {
        return Err(DbError::Schema(
            "synchronous_commit is off: an acknowledged upload could be lost in a crash; \
             set it to on (or local, remote_write, remote_apply)"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use pickup_test_servers::{require, Postgres};

    use super::*;

    const V1: Migration = Migration {
        version: 1,
        name: "first",
        sql: "CREATE TABLE a(x BIGINT)",
    };
    const V2: Migration = Migration {
        version: 2,
        name: "second",
        sql: "CREATE TABLE b(y BIGINT); INSERT INTO a VALUES (1)",
    };

    fn db(test: &str) -> Option<Db> {
        let pg = require(test, Postgres::shared())?;
        Some(Db::connect(&pg.database().expect("a database"), 4).expect("connect"))
    }

    /// `migrate` skips every version at or below the database's, so the
    /// list must count 1, 2, 3… without a gap or a swap.
    #[test]
    fn the_schema_is_numbered_without_gaps() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i32> = (1..=MIGRATIONS.len() as i32).collect();
        assert_eq!(versions, expected);
    }

    #[test]
    fn migrations_apply_once_in_order() {
        let Some(db) = db("migrations_apply_once_in_order") else {
            return;
        };
        let first = db.block_on(migrate(&db, &[V1])).unwrap();
        assert_eq!(
            first,
            Applied {
                versions: vec![1],
                current: 1
            }
        );
        let second = db.block_on(migrate(&db, &[V1, V2])).unwrap();
        assert_eq!(
            second,
            Applied {
                versions: vec![2],
                current: 2
            }
        );
        let again = db.block_on(migrate(&db, &[V1, V2])).unwrap();
        assert_eq!(
            again,
            Applied {
                versions: vec![],
                current: 2
            }
        );
        let rows: i64 = db
            .block_on(db.transaction(async |tx| {
                Ok(tx.query_one("SELECT count(*) FROM a", &[]).await?.get(0))
            }))
            .unwrap();
        assert_eq!(rows, 1, "migration 2 ran once");
    }

    #[test]
    fn a_database_newer_than_the_relay_is_refused() {
        let Some(db) = db("a_database_newer_than_the_relay_is_refused") else {
            return;
        };
        db.block_on(migrate(&db, &[V1, V2])).unwrap();
        let err = db.block_on(migrate(&db, &[V1])).unwrap_err();
        assert!(
            err.to_string().contains("newer than this relay's 1"),
            "{err}"
        );
    }

    #[test]
    fn instances_starting_together_apply_each_migration_once() {
        let Some(pg) = require("instances_starting_together", Postgres::shared()) else {
            return;
        };
        let url = pg.database().unwrap();
        let applied: Vec<Applied> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..4)
                .map(|_| {
                    let url = url.clone();
                    s.spawn(move || {
                        let db = Db::connect(&url, 2).unwrap();
                        db.block_on(migrate(&db, &[V1, V2])).unwrap()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let mut versions: Vec<i32> = applied.iter().flat_map(|a| a.versions.clone()).collect();
        versions.sort();
        assert_eq!(versions, [1, 2]);
        assert!(applied.iter().all(|a| a.current == 2));
    }

    #[test]
    fn a_server_without_synchronous_commit_is_refused() {
        let Some(pg) = require("a_server_without_synchronous_commit", Postgres::shared()) else {
            return;
        };
        let url = pg.database().unwrap();
        let name = url.rsplit("dbname=").next().unwrap();
        pg.psql(
            "postgres",
            &format!("ALTER DATABASE {name} SET synchronous_commit = off"),
        )
        .unwrap();
        let db = Db::connect(&url, 1).unwrap();
        let err = db.block_on(check_durability(&db)).unwrap_err();
        assert!(
            err.to_string().contains("synchronous_commit is off"),
            "{err}"
        );
    }

    #[test]
    fn a_step_survives_a_server_restart() {
        let Some(pg) = require("a_step_survives_a_server_restart", Postgres::start()) else {
            return;
        };
        let db = Db::connect(&pg.database().unwrap(), 2).unwrap();
        db.block_on(migrate(&db, &[V1])).unwrap();
        pg.restart().unwrap();
        // The pooled connections are dead; the step gets new ones.
        let n: i64 = db
            .block_on(db.transaction(async |tx| {
                Ok(tx.query_one("SELECT count(*) FROM a", &[]).await?.get(0))
            }))
            .unwrap();
        assert_eq!(n, 0);
    }
}
