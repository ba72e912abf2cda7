//! The `postgres` backend: metadata in PostgreSQL, file contents in
//! S3-compatible object storage (docs/design/scale-out.md).

pub mod objects;
