//! Opening the backend `[store]` names: the store, the accounts and, with
//! `postgres`, the cluster an instance joins; and the `migrate` command.
//!
//! Every open blocks (SQLite, or a runtime of the backend's own), so each
//! runs on tokio's blocking pool, never on the runtime's workers.

use std::process::ExitCode;
use std::sync::Arc;

use pickup_relay::config::{Backend, DEFAULT_POSTGRES_CONNECTIONS};
use pickup_relay::directory::{Directory, PasswordParams, PgDirectory, SqliteDirectory};
use pickup_relay::store::postgres::{migrate_database, Cluster, PgStore};
use pickup_relay::store::sqlite::SqliteStore;
use pickup_relay::store::{Recovery, Store};
use pickup_relay::{Config, Relay};

use crate::{load_config, MigrateArgs};

/// The accounts: in the data directory's SQLite database, or with
/// `[store] backend = "postgres"` in the database every instance shares.
pub(crate) async fn open_directory(
    config: &Config,
    params: PasswordParams,
) -> Result<Arc<dyn Directory>, String> {
    match config.store.backend {
        Backend::Sqlite => SqliteDirectory::open(&config.data, params)
            .map(|d| Arc::new(d) as Arc<dyn Directory>)
            .map_err(|e| format!("cannot open the accounts in {}: {e}", config.data.display())),
        Backend::Postgres => {
            // Checked by `validate`. Never logged: it may hold a password.
            let url = config.store.postgres_url.clone().unwrap_or_default();
            let connections = config
                .store
                .postgres_connections
                .unwrap_or(DEFAULT_POSTGRES_CONNECTIONS);
            // Off the runtime's workers: the directory blocks on a runtime
            // of its own.
            let open =
                tokio::task::spawn_blocking(move || PgDirectory::open(&url, connections, params));
            let directory = open
                .await
                .map_err(|e| format!("cannot open the accounts in postgres: {e}"))?
                .map_err(|e| format!("cannot open the accounts in postgres: {e}"))?;
            tracing::info!(connections, "accounts in postgres");
            Ok(Arc::new(directory))
        }
    }
}

/// With `[store] backend = "postgres"`: shares the failed-lookup budget
/// and notice doorbells with every instance on the database.
pub(crate) async fn join_cluster(
    config: &Config,
    relay: &Arc<Relay>,
) -> Result<Option<Cluster>, String> {
    if config.store.backend != Backend::Postgres {
        return Ok(None);
    }
    // Checked by `validate`. Never logged: it may hold a password.
    let url = config.store.postgres_url.clone().unwrap_or_default();
    let relay = relay.clone();
    // Off the runtime's workers: the cluster blocks on a runtime of its own.
    tokio::task::spawn_blocking(move || {
        let cluster = Cluster::connect(&url)?;
        cluster.join(&relay)?;
        Ok(cluster)
    })
    .await
    .map_err(|e| format!("joining the cluster panicked: {e}"))?
    .map(Some)
    .map_err(|e: pickup_relay::store::postgres::DbError| format!("cannot join the cluster: {e}"))
}

/// `migrate`: the schema's version alone on stdout, for scripts.
pub(crate) fn migrate(args: &MigrateArgs) -> ExitCode {
    let result = load_config(args.config.as_deref(), None).and_then(|config| {
        config.validate()?;
        match (config.store.backend, config.store.postgres_url) {
            (Backend::Postgres, Some(url)) => migrate_database(&url).map_err(|e| e.to_string()),
            _ => Err("migrate needs [store] backend = \"postgres\" and its postgres_url".into()),
        }
    });
    match result {
        Ok((applied, version)) => {
            eprintln!("applied {} migration(s)", applied.len());
            println!("{version}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pickup-relay: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The store `[store]` names, opened (and recovered) off the runtime's
/// workers, with at most `files_per_kind` contents files open per kind.
pub(crate) async fn open_store(
    config: &Config,
    files_per_kind: usize,
) -> Result<Arc<dyn Store>, String> {
    let data = config.data.clone();
    let store = config.store.clone();
    let opened = tokio::task::spawn_blocking(move || -> Result<_, String> {
        match store.backend {
            Backend::Sqlite => {
                let (store, recovery) = SqliteStore::open(&data)
                    .map_err(|e| format!("cannot open the store in {}: {e}", data.display()))?;
                store.limit_open_files(files_per_kind);
                Ok((Arc::new(store) as Arc<dyn Store>, recovery))
            }
            Backend::Postgres => {
                let url = store.postgres_url.unwrap_or_default();
                let connections = store
                    .postgres_connections
                    .unwrap_or(pickup_relay::config::DEFAULT_POSTGRES_CONNECTIONS);
                let s3 = pickup_relay::store::postgres::object_store_config(&store.s3);
                let (store, recovery) = PgStore::open(&url, connections, &data, &s3)
                    .map_err(|e| format!("cannot open the postgres store: {e}"))?;
                Ok((Arc::new(store) as Arc<dyn Store>, recovery))
            }
        }
    })
    .await
    .map_err(|e| format!("opening the store panicked: {e}"))?;
    let (store, recovery): (Arc<dyn Store>, Recovery) = opened?;
    tracing::info!(
        backend = ?config.store.backend,
        data = %config.data.display(),
        batches = recovery.batches,
        resumable_partials = recovery.partials,
        truncated = recovery.truncated,
        orphans_removed = recovery.orphans,
        moved_back = recovery.moved_back,
        missing_blobs = recovery.missing_blobs,
        "store open"
    );
    Ok(store)
}
