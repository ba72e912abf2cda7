//! The `postgres` backend: metadata in PostgreSQL and file contents in
//! S3-compatible object storage, both shared by every relay instance of a
//! cluster (docs/design/scale-out.md).
//!
//! - `db`: the connection pool, the store's own runtime, and transactions
//!   retried across a lost connection;
//! - `migrations`: the versioned schema, applied at start and by
//!   `pickup-relay migrate`;
//! - [`objects`]: contents in S3: partial uploads as multipart uploads plus
//!   create-only tail segments, blobs, ranged reads, byte comparison;
//! - `lookup_budget`: the failed-lookup budget all instances claim from;
//! - `notices`: notice doorbells across instances over `LISTEN/NOTIFY`;
//! - [`cluster`]: both, joined to a relay by the main wiring;
//! - `handoff`: dropping the store's runtime off its own workers.

pub mod cluster;
pub(crate) mod db;
pub(crate) mod handoff;
pub(crate) mod lookup_budget;
pub(crate) mod migrations;
pub(crate) mod notices;
pub mod objects;

pub use cluster::Cluster;
pub use db::DbError;
