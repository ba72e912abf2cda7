//! The `postgres` backend: metadata in PostgreSQL and file contents in
//! S3-compatible object storage, both shared by every relay instance of a
//! cluster (docs/design/scale-out.md).
//!
//! ```text
//!   PostgreSQL   batches, files, partials, blobs, expired codes, names,
//!                their shares, kept blobs, deliveries (migrations/0001_store.sql);
//!                parts, segments, doomed objects (migrations/0004_objects.sql);
//!                forwards (migrations/0005_forwards.sql)
//!   S3           blobs/<id>, tail/<partial>/<fence>/<start>-<end>  (objects)
//!   DATA/spool/<partial>   bytes received and not synced yet, this instance's only
//! ```
//!
//! - `db`: the connection pool, the store's own runtime, and transactions
//!   retried across a lost connection;
//! - `migrations`: the versioned schema, applied at start and by
//!   `pickup-relay migrate`;
//! - `store`: [`PgStore`], opening it, upload fences, the short steps;
//! - `blobs`, `names`, `sweep`, `deliveries`, `forwards`, `rows`: the SQL of the
//!   SQLite store's modules of the same names;
//! - `uploads`: the steps of a partial upload (spool, sync, read, reset);
//! - `layout`: where a partial's bytes are, as rows; doomed objects and
//!   their collector;
//! - [`objects`]: contents in S3: partial uploads as multipart uploads plus
//!   create-only tail segments, blobs, ranged reads, byte comparison;
//! - `lookup_budget`: the failed-lookup budget all instances claim from;
//! - `notices`: notice doorbells across instances over `LISTEN/NOTIFY`;
//! - [`cluster`]: both, joined to a relay by the main wiring;
//! - `handoff`: dropping the store's runtime off its own workers.
//!
//! Durability: every step is one transaction committed with
//! `synchronous_commit` on (checked at open); `sync_partial` writes the
//! bytes to object storage first, then commits where they are. Upload ownership across instances: every durable
//! step of an upload (sync, reset, complete, link) checks the batch's
//! `lease_fence` under `FOR SHARE` against the fence this instance took
//! ([`Store::take_upload`](crate::store::Store::take_upload)), and is
//! refused with [`StoreError::Fenced`](crate::store::StoreError::Fenced)
//! if another instance took the upload since.

mod blobs;
pub mod cluster;
pub(crate) mod db;
mod deliveries;
mod forwards;
pub(crate) mod handoff;
mod layout;
pub(crate) mod lookup_budget;
pub(crate) mod migrations;
mod names;
pub(crate) mod notices;
pub mod objects;
mod rows;
mod store;
mod sweep;
#[cfg(test)]
pub(crate) mod tests;
mod uploads;

pub use cluster::Cluster;
pub use db::DbError;
pub use store::{migrate_database, object_store_config, PgStore, COLLECT_DELAY_SECS};
