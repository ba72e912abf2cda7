//! File contents of the `postgres` backend in S3-compatible object storage
//! (docs/design/scale-out.md §3, §4). No SQL here: every method takes and
//! returns plain data ([`PartialLayout`], [`Synced`], keys), and the
//! PostgreSQL side persists it, fenced, after the objects are written.
//!
//! ```text
//!   write_partial ──► spool/{partial}            local file, not durable
//!   sync_partial  ──► sync():  fold ─► part k of the multipart upload of blobs/{id}
//!                              tail ─► tail/{partial}/{fence}/{start}-{end}  (create-only)
//!                     then the caller commits Synced in PostgreSQL
//!   complete_file ──► complete(): last parts + CompleteMultipartUpload  (or one put)
//!   readers       ──► read_blob(): ranged GETs of blobs/{id}
//! ```
//!
//! Keys are `{prefix}/blobs/{id}` and `{prefix}/tail/{partial}/{fence}/{start}-{end}`,
//! made of internal numbers only: nothing a client sends shapes a key.
//!
//! Every method is `async`; the store owns a runtime and `block_on`s them
//! from blocking threads. Spool I/O runs on the blocking pool
//! (`spawn_blocking`), so the futures never block a runtime worker either.
//!
//! # Errors and retries
//!
//! object_store retries transport failures, 5xx and 429 answers itself, with
//! backoff, until [`RETRY_TIMEOUT`] has passed since the first try (each
//! request may add up to object_store's 30 s request timeout). What then
//! comes back as [`Error::Unavailable`] may work later; every step here is
//! idempotent (design §3.2, I3), so the caller simply retries the whole
//! step with the same arguments.

use std::ops::Range;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{BackoffConfig, GetOptions, ObjectStore, ObjectStoreExt, RetryConfig};

mod error;
mod partial;
mod spool;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use partial::{part_size_for, PartialLayout, Segment, Synced, MAX_PARTS};

use spool::Spool;

/// How long object_store keeps retrying a request that fails for a reason
/// that may pass (no connection, a timeout, 5xx, 429) before the error
/// reaches the caller: long enough for a restarting server, short enough
/// that a stuck sync fails and the client's window is not held forever.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

// The store shares one `Objects` between all its job threads.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Objects>();
};

/// Bytes per ranged GET when comparing two blobs ([`Objects::same_bytes`]).
const COMPARE_CHUNK: u64 = 8 << 20;

/// Where the contents live (`[store.s3]` in the relay's configuration).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ObjectStoreConfig {
    /// `http(s)://host:port` of an S3-compatible server (MinIO, moto, R2);
    /// `None` for AWS itself. Path-style requests are used when set.
    pub endpoint: Option<String>,
    /// The region to sign requests for.
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// Every key starts with this (`/`-separated; may be empty).
    pub prefix: String,
    /// Credentials; when `None`, the `AWS_*` variables (or the instance's
    /// role) provide them.
    pub access_key_id: Option<String>,
    /// See `access_key_id`.
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints (a local test server).
    pub allow_http: bool,
}

impl core::fmt::Debug for ObjectStoreConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The secret key never reaches a log line.
        f.debug_struct("ObjectStoreConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| ".."),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// The object storage of one relay instance, and its local spool.
#[derive(Debug)]
pub struct Objects {
    s3: AmazonS3,
    /// Parsed once: every key is built under it.
    prefix: Path,
    spool: Spool,
}

impl Objects {
    /// A client for `cfg`'s bucket, with its spool in `{data_dir}/spool`
    /// (created 0700 if missing; call [`Objects::clear_spool`] at start).
    /// Sends no request: a wrong bucket or key shows at the first call.
    pub fn connect(cfg: &ObjectStoreConfig, data_dir: &std::path::Path) -> Result<Objects> {
        // reqwest is built with `rustls-no-provider` (Cargo.toml): it takes
        // rustls's process-wide default provider, which must be installed
        // before the first client is built. ring, as our TLS listeners; an
        // error means a provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let prefix = Path::parse(&cfg.prefix)
            .map_err(|e| Error::Config(format!("prefix {:?}: {e}", cfg.prefix)))?;
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 20,
            retry_timeout: RETRY_TIMEOUT,
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_region(&cfg.region)
            .with_bucket_name(&cfg.bucket)
            .with_allow_http(cfg.allow_http)
            .with_retry(retry)
            // Create-only PUTs (`If-None-Match: *`) guard segment keys;
            // the default, but an `AWS_CONDITIONAL_PUT` must not turn it off.
            .with_conditional_put(S3ConditionalPut::ETagMatch);
        if let Some(endpoint) = &cfg.endpoint {
            // MinIO, moto and most S3-compatible servers take the bucket in
            // the path, not in the host name.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(id) = &cfg.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &cfg.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let s3 = builder.build().map_err(|e| Error::Config(e.to_string()))?;
        let spool = Spool::open(data_dir.join("spool"))?;
        Ok(Objects { s3, prefix, spool })
    }

    /// The key of blob `id` (also the target of partial `id`'s multipart
    /// upload: a blob takes its partial's id).
    pub fn blob_key(&self, id: u64) -> String {
        self.blob_path(id).to_string()
    }

    /// The key of a tail segment of partial `partial`.
    pub fn segment_key(&self, partial: u64, segment: &Segment) -> String {
        self.segment_path(partial, segment).to_string()
    }

    fn blob_path(&self, id: u64) -> Path {
        self.prefix.clone().join("blobs").join(id.to_string())
    }

    fn segment_path(&self, partial: u64, s: &Segment) -> Path {
        self.tail_path(partial)
            .join(s.fence.to_string())
            .join(format!("{}-{}", s.start, s.end))
    }

    fn tail_path(&self, partial: u64) -> Path {
        self.prefix.clone().join("tail").join(partial.to_string())
    }

    /// A key as the database holds it, checked to lie under our prefix, so
    /// a corrupt row cannot make us delete someone else's object.
    fn own_path(&self, key: &str) -> Result<Path> {
        let path = Path::parse(key).map_err(|e| Error::Config(format!("key {key:?}: {e}")))?;
        if path.prefix_match(&self.prefix).is_none() || path == self.prefix {
            return Err(Error::Config(format!(
                "key {key:?} is not under the prefix {:?}",
                self.prefix.as_ref()
            )));
        }
        Ok(path)
    }

    /// Writes bytes of partial `id` into its spool file (not durable; lost
    /// with this instance, which is why [`Objects::sync`] copies them out).
    pub async fn write_spool(&self, id: u64, offset: u64, data: &[u8]) -> Result<()> {
        self.spool.write(id, offset, data).await
    }

    /// Forgets partial `id`'s spool (completed, reset, or taken over).
    pub async fn drop_spool(&self, id: u64) -> Result<()> {
        self.spool.remove(id).await
    }

    /// Empties the spool: at start, nothing in it is trusted (another
    /// instance may have continued those uploads meanwhile).
    pub async fn clear_spool(&self) -> Result<()> {
        self.spool.clear().await
    }

    /// Reads blob `id` from `offset` into `buf` by one ranged GET; fewer
    /// bytes only at the blob's end, 0 at or past it.
    pub async fn read_blob(&self, id: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let path = self.blob_path(id);
        let end = offset.saturating_add(buf.len() as u64);
        match self.get_range(&path, offset..end).await {
            Ok((bytes, _)) => copy_into(buf, &bytes),
            Err(Error::Storage(e)) => {
                // A range starting at or past the end is refused (416),
                // which object_store reports as a generic error: look at
                // the size before calling it a failure.
                match self.s3.head(&path).await {
                    Ok(meta) if offset >= meta.size => Ok(0),
                    _ => Err(Error::Storage(e)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Whether blobs `a` and `b` both hold exactly `size` bytes, the same
    /// ones, by ranged GETs of 8 MiB of both (design §4).
    pub async fn same_bytes(&self, a: u64, b: u64, size: u64) -> Result<bool> {
        let (pa, pb) = (self.blob_path(a), self.blob_path(b));
        if size == 0 {
            let (ma, mb) = futures_util::future::try_join(self.s3.head(&pa), self.s3.head(&pb))
                .await
                .map_err(Error::from)?;
            return Ok(ma.size == 0 && mb.size == 0);
        }
        let mut offset = 0;
        while offset < size {
            let range = offset..size.min(offset + COMPARE_CHUNK);
            let ((left, size_a), (right, size_b)) = futures_util::future::try_join(
                self.get_range(&pa, range.clone()),
                self.get_range(&pb, range),
            )
            .await?;
            // Each answer names its object's full size: a different one
            // means different content, whatever the bytes so far.
            if size_a != size || size_b != size || left != right {
                return Ok(false);
            }
            offset += COMPARE_CHUNK;
        }
        Ok(true)
    }

    /// Deletes an object (a key from [`Objects::blob_key`],
    /// [`Objects::segment_key`] or [`Objects::list_tail`]); one already
    /// gone counts as deleted.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = self.own_path(key)?;
        match self.s3.delete(&path).await.map_err(Error::from) {
            Err(Error::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// Aborts the multipart upload `upload_id` of `key`, dropping its
    /// parts; one already aborted or completed counts as done (a completed
    /// object stays: [`Objects::delete`] it).
    pub async fn abort(&self, key: &str, upload_id: &str) -> Result<()> {
        let path = self.own_path(key)?;
        let id = upload_id.to_string();
        match self
            .s3
            .abort_multipart(&path, &id)
            .await
            .map_err(Error::from)
        {
            Err(Error::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// The keys of every tail segment of partial `partial`, committed or
    /// not: at completion or reset the owner dooms those no row names
    /// (design §5.3, leak a).
    pub async fn list_tail(&self, partial: u64) -> Result<Vec<String>> {
        use futures_util::TryStreamExt;
        let prefix = self.tail_path(partial);
        let metas: Vec<_> = self.s3.list(Some(&prefix)).try_collect().await?;
        Ok(metas.into_iter().map(|m| m.location.to_string()).collect())
    }

    /// How many objects there are under `{prefix}/{dir}` (tests: what
    /// is left after a sweep).
    #[cfg(test)]
    pub(crate) async fn count_under(&self, dir: &str) -> Result<usize> {
        use futures_util::TryStreamExt;
        let under = self.prefix.clone().join(dir);
        let metas: Vec<_> = self.s3.list(Some(&under)).try_collect().await?;
        Ok(metas.len())
    }

    /// One ranged GET: the bytes (fewer at the object's end) and the
    /// object's full size.
    async fn get_range(&self, path: &Path, range: Range<u64>) -> Result<(bytes::Bytes, u64)> {
        let got = self
            .s3
            .get_opts(path, GetOptions::new().with_range(Some(range)))
            .await?;
        let size = got.meta.size;
        Ok((got.bytes().await?, size))
    }
}

/// Copies a GET's answer into the caller's buffer; more bytes than asked
/// for would be a server's error.
fn copy_into(buf: &mut [u8], bytes: &[u8]) -> Result<usize> {
    let asked = buf.len();
    let dst = buf
        .get_mut(..bytes.len())
        .ok_or_else(|| Error::Corrupt(format!("asked for {asked} bytes, got {}", bytes.len())))?;
    dst.copy_from_slice(bytes);
    Ok(bytes.len())
}
