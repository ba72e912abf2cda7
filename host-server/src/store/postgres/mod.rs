//! The `postgres` backend: metadata in PostgreSQL, shared by every relay
//! instance of a cluster (docs/design/scale-out.md).
//!
//! - `db`: the connection pool, the store's own runtime, and transactions
//!   retried across a lost connection;
//! - `migrations`: the versioned schema, applied at start and by
//!   `pickup-relay migrate`.

pub(crate) mod db;
pub(crate) mod migrations;

pub use db::DbError;
