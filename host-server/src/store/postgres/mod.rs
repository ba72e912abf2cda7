//! The `postgres` backend: metadata in PostgreSQL and file contents in
//! S3-compatible object storage, both shared by every relay instance of a
//! cluster (docs/design/scale-out.md).
//!
//! - `db`: the connection pool, the store's own runtime, and transactions
//!   retried across a lost connection;
//! - `migrations`: the versioned schema, applied at start and by
//!   `pickup-relay migrate`;
//! - [`objects`]: contents in S3: partial uploads as multipart uploads plus
//!   create-only tail segments, blobs, ranged reads, byte comparison.

pub(crate) mod db;
pub(crate) mod migrations;
pub mod objects;

pub use db::DbError;
