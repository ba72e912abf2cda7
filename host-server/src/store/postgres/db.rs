//! A pool of PostgreSQL connections and the runtime they run on.
//!
//! The [`Store`](crate::store::Store) trait is synchronous: its callers are
//! jobs on blocking threads (docs/design/scale-out.md §1.5). [`Db`]
//! therefore owns a small tokio runtime of its own and [`Db::block_on`]s
//! each step from the caller's thread; a caller on a runtime worker would
//! stall it, and tokio refuses that with a panic, so callers never are.
//!
//! A step is a transaction ([`Db::transaction`]) that is retried when the
//! connection was lost or the server restarted (SQLSTATE class 08, 57P0x)
//! or when PostgreSQL aborted it for a serialization failure or deadlock,
//! with backoff for at most [`RETRY_FOR`]. A retried step runs again from
//! its start, so every step must be idempotent: a commit whose answer was
//! lost may have happened.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Transaction};

/// How long a step is retried across lost connections before it fails:
/// long enough for `pg_ctl restart` or a failover, short of a client's
/// patience.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(15);

/// The first wait between tries; doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How long a step waits for a free connection of the pool.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// Worker threads of the store's runtime: they only drive sockets.
const RUNTIME_WORKERS: usize = 2;

/// PostgreSQL failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The connection string does not parse.
    #[error("postgres connection string: {0}")]
    Url(tokio_postgres::Error),
    /// The server answered with an error, or the connection failed.
    #[error("postgres: {0}")]
    Pg(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error("postgres pool: {0}")]
    Pool(String),
    /// The database's schema is not one this relay can use.
    #[error("postgres schema: {0}")]
    Schema(String),
    /// A number stored or to be stored does not fit its column.
    #[error("postgres: {0} out of range")]
    Range(&'static str),
    /// The store's runtime could not be started.
    #[error("postgres runtime: {0}")]
    Runtime(std::io::Error),
    /// A step refused its change (no such record, fenced, …): its
    /// transaction was rolled back, and the store answers this error.
    #[error("{0}")]
    Refused(Box<crate::store::StoreError>),
}

impl DbError {
    /// Whether trying again may succeed: the connection was lost, the
    /// server is restarting, or the transaction lost a race.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Pg(e) => transient(e),
            // The pool's own timeouts, and connections it failed to make.
            DbError::Pool(_) => true,
            _ => false,
        }
    }
}

fn transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                ]
                .contains(code)
        }
        // No SQLSTATE: the error came from the socket, not the server.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => DbError::Pg(e),
            other => DbError::Pool(other.to_string()),
        }
    }
}

/// Connections to one PostgreSQL database, and the runtime that drives them.
pub(crate) struct Db {
    /// `None` only once dropped (see the `Drop` impl).
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
}

impl Drop for Db {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which tokio refuses (with
        // a panic) on another runtime's worker, where an async task holding
        // the last `Arc<Relay>` would drop it. The tasks are connections;
        // let them go.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl Db {
    /// A pool of at most `max_connections` connections to `url` (a libpq
    /// key-value string or a `postgres://` URL), checked by one query.
    pub(crate) fn connect(url: &str, max_connections: usize) -> Result<Db, DbError> {
        let config: tokio_postgres::Config = url.parse().map_err(DbError::Url)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_WORKERS)
            .thread_name("store-io")
            .enable_all()
            .build()
            .map_err(DbError::Runtime)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        let db = Db { rt: Some(rt), pool };
        db.block_on(db.transaction(async |tx| {
            tx.execute("SELECT 1", &[]).await?;
            Ok(())
        }))?;
        Ok(db)
    }

    /// Runs `f` to completion on the store's runtime, from a thread that is
    /// not a runtime worker (a job's blocking thread, an admin command).
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime().block_on(f)
    }

    /// A handle to the store's runtime, for tasks that outlive one step
    /// (LISTEN connections, background collection).
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime().handle()
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        // Taken only by `drop`, after which no method runs.
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the Db")
    }

    /// Runs `step` in a transaction (READ COMMITTED) and commits it; tries
    /// again from the start on a transient failure, for at most
    /// [`RETRY_FOR`]. `step` must be idempotent (see the module docs).
    pub(crate) async fn transaction<T>(
        &self,
        mut step: impl AsyncFnMut(&Transaction<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let start = tokio::time::Instant::now();
        let mut backoff = BACKOFF_MIN;
        loop {
            let outcome: Result<T, DbError> = async {
                let mut client = self.pool.get().await?;
                let tx = client.transaction().await?;
                let value = step(&tx).await?;
                tx.commit().await?;
                Ok(value)
            }
            .await;
            match outcome {
                Err(e) if e.is_transient() && start.elapsed() + backoff < RETRY_FOR => {
                    tracing::warn!(error = %e, "postgres step failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                outcome => return outcome,
            }
        }
    }
}

/// `n` as a `BIGINT`.
pub(crate) fn to_i64(n: u64, what: &'static str) -> Result<i64, DbError> {
    i64::try_from(n).map_err(|_| DbError::Range(what))
}

#[cfg(test)]
mod tests {
    use pickup_test_servers::{require, Postgres};

    /// The relay's tasks are async: the last holder of its `Relay`, and so
    /// of its `Db`s, may be one, on a runtime worker, where dropping a
    /// runtime the plain way panics.
    #[test]
    fn a_db_dropped_on_a_runtime_worker_shuts_down_quietly() {
        let Some(pg) = require("a_db_dropped_on_a_runtime_worker", Postgres::shared()) else {
            return;
        };
        let db = super::Db::connect(&pg.database().unwrap(), 1).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
        rt.block_on(async move { drop(db) });
    }
}
