//! `[store]`: where the relay keeps batches, files and accounts.

use serde::Deserialize;

/// Which backend holds the relay's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite and files under `data`: one relay on one disk (the default).
    #[default]
    Sqlite,
    /// PostgreSQL for metadata and S3-compatible storage for contents,
    /// shared by every instance of a cluster.
    Postgres,
}

/// `[store]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The backend.
    pub backend: Backend,
    /// With `postgres`: a libpq connection string
    /// (`host=/run/postgresql dbname=pickup user=pickup`) or a
    /// `postgres://` URL.
    pub postgres_url: Option<String>,
    /// With `postgres`: connections each instance keeps at most (default 32).
    pub postgres_connections: Option<usize>,
    /// With `postgres`: the S3-compatible bucket for contents.
    pub s3: S3Config,
}

/// `[store.s3]`. Unset keys come from the standard `AWS_*` variables.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// `http://127.0.0.1:9000` for a local server; unset for AWS. Plain
    /// HTTP is allowed only when this says `http://`.
    pub endpoint: Option<String>,
    /// The region to sign for (default `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// The bucket.
    pub bucket: Option<String>,
    /// A key prefix, so one bucket can serve several clusters.
    pub prefix: String,
    /// The access key (default `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// The secret key (default `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
}

/// Connections each instance keeps at most, unless `[store]` says.
pub const DEFAULT_POSTGRES_CONNECTIONS: usize = 32;

impl StoreConfig {
    /// What is missing or contradictory, for a clear error at start.
    pub fn check(&self) -> Result<(), String> {
        match self.backend {
            Backend::Sqlite => {
                if self.postgres_url.is_some() || self.s3 != S3Config::default() {
                    return Err(
                        "[store] postgres_url and [store.s3] need backend = \"postgres\"".into(),
                    );
                }
            }
            Backend::Postgres => {
                if self.postgres_url.as_deref().is_none_or(str::is_empty) {
                    return Err("[store] backend = \"postgres\" needs postgres_url".into());
                }
                if self.s3.bucket.as_deref().is_none_or(str::is_empty) {
                    return Err("[store] backend = \"postgres\" needs [store.s3] bucket".into());
                }
                if self.postgres_connections == Some(0) {
                    return Err("[store] postgres_connections must be at least 1".into());
                }
            }
        }
        Ok(())
    }
}
