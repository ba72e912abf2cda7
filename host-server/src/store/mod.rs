//! Durable state: batches, files, partial uploads, blobs, and users'
//! named files.
//!
//! [`Store`] is the only way the [`Session`](crate::session::Session) logic
//! reaches storage. It is deliberately narrow (whole-batch records, byte
//! ranges of partial files and blobs, a handful of transitions) so that a
//! networked backend can implement it. Three implementations live here:
//!
//! - [`sqlite::SqliteStore`], the default: metadata in SQLite (WAL,
//!   `synchronous=FULL`), contents as plain files under the data directory,
//!   named by internal id only (`contents`).
//! - [`postgres::PgStore`] (`[store] backend = "postgres"`): metadata in
//!   PostgreSQL and contents in S3-compatible object storage, both shared
//!   by relay instances, which fence each other's uploads; the data
//!   directory holds only an instance's spool of unsynced bytes.
//! - [`memory::MemoryStore`]: everything in memory, for the simulator, the
//!   fuzzers and unit tests; `MemoryStore::crash` (feature `test-support`)
//!   drops exactly what was never made durable.
//!
//! # Who calls it, and where
//!
//! Sessions never call the store: every store step is a
//! [`Job`](crate::jobs::Job) that a driver runs where blocking is allowed
//! (tokio's blocking pool for TCP, a worker thread per serial port, the
//! simulator's and fuzzers' own order). The trait is therefore synchronous,
//! and a networked backend (PostgreSQL, S3-compatible storage) implements
//! it with blocking calls that hold up only the job's thread, never a
//! runtime worker: for instance by `Handle::block_on` on an async client
//! from the blocking pool. What a backend must keep is the contract below.
//!
//! # Durability contract
//!
//! Every method that changes metadata is atomic and durable when it returns.
//! Bytes given to [`Store::write_partial`] are *not* durable until a later
//! [`Store::sync_partial`] covering them returns; after a crash a partial
//! upload holds exactly its last synced (durable) prefix, never more.
//!
//! # Content identity
//!
//! A blob is named by an internal [`BlobId`]. `(size, SHA-1)` only finds
//! candidates; [`Store::complete_file`] shares a blob with an upload only when
//! their bytes are equal, compared in full, so SHA-1 collisions never alias.
//! (Comparing bytes costs a read of both files, and only when a candidate
//! exists, where a second digest would cost hashing every byte of every
//! upload.)
//!
//! # Named files
//!
//! A user's named file (PROTOCOL.md §8) is a binding `(owner, name) → blob`
//! made from a complete batch ([`Store::bind_names`]). It holds its blob as
//! a batch's file does, so the batch may expire and the content stays. A
//! binding that is replaced or removed does not drop its blob at once: the
//! store *keeps* the blob until a stated time, so a download that started
//! on the old content can finish it, and only a sweep after that time
//! collects it (if nothing else holds it). Blobs are shared across owners
//! exactly as across batches.

use pickup_proto::{Code, Sha1Digest};

use crate::mailbox::Mailbox;
use crate::running_sha1::Midstate;
pub use forwards::Forwards;

mod commit;
mod contents;
pub mod forwards;
pub use contents::Recovery;
pub mod memory;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
mod attrs_tests;
#[cfg(test)]
mod deliveries_tests;
#[cfg(test)]
mod forwards_retention_tests;
#[cfg(test)]
mod forwards_tests;
#[cfg(test)]
mod names_tests;
#[cfg(test)]
mod owner_tests;
#[cfg(test)]
mod scan_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tus_tests;

/// Bytes read at a time by [`Store::scan_blob`]'s default.
const SCAN_CHUNK: usize = 256 * 1024;

/// A blob that holds fewer bytes than its record says.
fn short_blob(id: BlobId) -> StoreError {
    StoreError::Corrupt(format!("blob {} is short", id.0))
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The metadata database failed.
    #[error("database error: {0}")]
    Db(String),
    /// The record does not exist (any more): expired, collected or never made.
    #[error("no such record")]
    NotFound,
    /// The stored state contradicts itself.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A file of the batch is still uploading, so the batch's names cannot
    /// be bound ([`Store::bind_names`]).
    #[error("batch is incomplete")]
    Incomplete,
    /// Another relay instance took this upload over
    /// ([`Store::take_upload`]): this durable step was refused and nothing
    /// changed.
    #[error("another relay instance took this upload over")]
    Fenced,
}

/// Result of a store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A batch's internal id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(pub u64);

/// A partial upload's internal id (also the name of its file on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartialId(pub u64);

/// A blob's internal id (also the name of its file on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub u64);

impl BlobId {
    /// The empty content, which every empty file shares: it has no record
    /// and no file, reads as zero bytes and is never collected, so empty
    /// files cost no blob, no fsync and no directory entry.
    pub const EMPTY: BlobId = BlobId(0);
}

/// A hashed lookup key for a code or a token: secrets are never stored or
/// compared as themselves (see [`crate::codes::code_key`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupKey(pub [u8; 32]);

impl core::fmt::Debug for LookupKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LookupKey(..)")
    }
}

/// Who uploaded a batch, as far as deduplication is concerned: the family
/// of resume tokens it belongs to ([`crate::codes::family_owner`]). Which
/// owners hold a blob decides whether the relay may reveal that it holds
/// it ([`crate::disclosure`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(pub [u8; 32]);

impl core::fmt::Debug for OwnerId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("OwnerId(..)")
    }
}

/// Who holds a blob, as seen by one owner: what
/// [`crate::disclosure::discloses`] decides on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holders {
    /// The asking owner completed or linked a file with this blob before.
    pub owned: bool,
    /// Distinct owners that completed or linked a file with this blob.
    pub owners: u64,
    /// The blob's disclosure threshold, drawn when it was first stored (0:
    /// stored before thresholds existed).
    pub threshold: u32,
}

/// What a file system keeps about a file besides its name and bytes, as
/// its uploader announced them (`FileAttrs`, PROTOCOL.md §5.5). The relay
/// only keeps and returns them; it never applies them to its own files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    /// Whether the file is executable.
    pub executable: bool,
    /// Last modification, seconds since the Unix epoch.
    pub mtime: i64,
}

/// One file of a batch being created.
#[derive(Debug, Clone, Copy)]
pub struct NewFile<'a> {
    /// Validated name.
    pub name: &'a str,
    /// Announced size.
    pub size: u64,
    /// Announced SHA-1.
    pub sha1: Sha1Digest,
    /// Announced attributes, if the uploader sent any.
    pub attrs: Option<Attrs>,
}

impl NewFile<'_> {
    /// Whether the file is announced as the empty content (size 0 and the
    /// SHA-1 of the empty input): it is complete from the start, as
    /// [`BlobId::EMPTY`]. An empty file with another SHA-1 is a partial
    /// upload like any other, which verification then rejects.
    pub fn is_empty_content(&self) -> bool {
        self.size == 0 && self.sha1 == Sha1Digest::EMPTY
    }
}

/// A batch to create.
#[derive(Debug, Clone, Copy)]
pub struct NewBatch<'a> {
    /// The pickup code (kept so a resumed uploader can be told it again).
    pub code: Code,
    /// Lookup key of the code.
    pub code_key: LookupKey,
    /// Lookup key of the resume token (the token itself is never stored).
    pub token_key: LookupKey,
    /// The token family the batch belongs to.
    pub owner: OwnerId,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// While incomplete, the batch is deleted at this time (seconds since
    /// the Unix epoch, usually long before `expires_at`) unless
    /// [`Store::keep_incomplete`] pushes it back: declared batches whose
    /// upload stopped do not hold a batch slot for a whole code lifetime.
    pub stale_at: u64,
    /// The files, in index order.
    pub files: &'a [NewFile<'a>],
    /// Created open: files may be added ([`Store::add_file`]) until
    /// [`Store::close_batch`], and the batch serves nothing until then.
    pub open: bool,
}

/// Where a file's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileContent {
    /// Still uploading: `durable` bytes are safe.
    Partial {
        /// The partial upload.
        id: PartialId,
        /// Durable prefix length.
        durable: u64,
    },
    /// Complete and verified.
    Blob(BlobId),
}

/// One file of a stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Name as announced (validated).
    pub name: String,
    /// Announced size.
    pub size: u64,
    /// Announced SHA-1.
    pub sha1: Sha1Digest,
    /// Announced attributes, if the uploader sent any.
    pub attrs: Option<Attrs>,
    /// Where the bytes are.
    pub content: FileContent,
}

impl FileRecord {
    /// What an upload of this file announces (a forward to a peer relay
    /// uploads the batch as a terminal would).
    pub fn meta(&self) -> pickup_proto::upload::FileMeta<'_> {
        pickup_proto::upload::FileMeta {
            name: &self.name,
            size: self.size,
            sha1: self.sha1,
        }
    }

    /// Bytes durably held.
    pub fn received(&self) -> u64 {
        match self.content {
            FileContent::Partial { durable, .. } => durable,
            FileContent::Blob(_) => self.size,
        }
    }
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Internal id.
    pub id: BatchId,
    /// The pickup code.
    pub code: Code,
    /// The token family the batch belongs to.
    pub owner: OwnerId,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The files, in index order.
    pub files: Vec<FileRecord>,
    /// Files may still be added (a tus batch before its close).
    pub open: bool,
}

impl Batch {
    /// Closed and every file complete: the code serves the batch.
    pub fn ready(&self) -> bool {
        !self.open
            && self
                .files
                .iter()
                .all(|f| matches!(f.content, FileContent::Blob(_)))
    }

    /// Sum of the file sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Bytes durably held, over all files.
    pub fn received(&self) -> u64 {
        self.files.iter().map(FileRecord::received).sum()
    }
}

/// The answer to a lookup by code or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A live batch.
    Live(Batch),
    /// The batch existed and has expired (it may already be deleted).
    Expired,
    /// Nothing is known under this key.
    Unknown,
}

/// The identity of a completed upload's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    /// Size in bytes.
    pub size: u64,
    /// SHA-1 (verified against the announcement): finds candidates to share.
    pub sha1: Sha1Digest,
    /// The disclosure threshold a new blob gets
    /// ([`crate::disclosure::draw_threshold`]); unused when the content is
    /// shared with a blob already stored.
    pub threshold: u32,
}

/// A file of a batch, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRef {
    /// The batch.
    pub batch: BatchId,
    /// File index.
    pub index: u16,
}

/// What counts against the limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes stored: of blobs, and the durable bytes of partial uploads
    /// (announced but unsent bytes are reservations, see [`crate::quota`]).
    pub bytes: u64,
    /// Batches not yet swept (live or expired but not yet deleted).
    pub batches: u64,
}

/// What a sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Batches deleted because they expired.
    pub batches: u64,
    /// Blobs collected because no file referenced them any more.
    pub blobs: u64,
    /// Partial uploads deleted with their batch.
    pub partials: u64,
    /// Expired codes forgotten (they now read as unknown).
    pub forgotten: u64,
    /// Replaced or removed named contents whose keep time passed: no
    /// longer held for readers of the old content (their blobs are among
    /// `blobs` if nothing else held them).
    pub released: u64,
    /// Deliveries that went `Offline` ([`crate::mailbox`]; counted by
    /// [`Relay::sweep`](crate::relay::Relay::sweep), which runs the
    /// deliveries' sweep before the store's).
    pub deliveries_offline: u64,
    /// Open deliveries that became `Expired` with their batch.
    pub deliveries_expired: u64,
    /// Deliveries of batches gone long enough ago to be forgotten.
    pub deliveries_forgotten: u64,
    /// `Done` or `Failed` forwards deleted `[forward] keep_finished_secs`
    /// after they finished (their ids now read as unknown; counted by
    /// [`Relay::sweep`](crate::relay::Relay::sweep), which sweeps them
    /// after the store's sweep).
    pub forwards: u64,
}

/// A user's named file: what `FetchNamed` and `ListNamed` show
/// (PROTOCOL.md §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFile {
    /// The user whose namespace holds the name.
    pub owner: String,
    /// The name (as announced by the batch that bound it).
    pub name: String,
    /// The content.
    pub blob: BlobId,
    /// Size of the content in bytes.
    pub size: u64,
    /// SHA-1 of the content: a changed one tells a resuming reader that the
    /// name was replaced.
    pub sha1: Sha1Digest,
    /// Attributes announced with the content, if any.
    pub attrs: Option<Attrs>,
    /// When the name was last bound, seconds since the Unix epoch.
    pub updated_at: u64,
}

/// Bytes and names a user's namespace holds: what user quotas count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameUsage {
    /// Sum of the sizes of the user's names. Content shared between names
    /// (or with other users) counts for each name: a quota must not depend
    /// on what others stored.
    pub bytes: u64,
    /// Number of names.
    pub files: u64,
}

/// The relay's storage. All methods take `&self` and are safe to call from
/// many sessions at once; each is atomic. Every store keeps the
/// deliveries of addressed pushes beside the batches they name
/// ([`Mailbox`]), and the queue of forwards to peer relays
/// ([`Forwards`]), under the same durability contract.
pub trait Store: Mailbox + Forwards + Send + Sync {
    /// Creates a batch with one partial upload (durable offset 0) per file,
    /// except files of empty content ([`NewFile::is_empty_content`]), which
    /// are complete at once as [`BlobId::EMPTY`].
    fn create_batch(&self, batch: &NewBatch<'_>) -> Result<Batch>;
    /// Whether a code is in use: live, or remembered as expired.
    fn code_taken(&self, code: &LookupKey) -> Result<bool>;
    /// The batch behind a code. `now` (Unix seconds) decides expiry.
    fn find_by_code(&self, code: &LookupKey, now: u64) -> Result<Lookup>;
    /// The batch behind a resume token.
    fn find_by_token(&self, token: &LookupKey, now: u64) -> Result<Lookup>;
    /// Adds a file to an open batch, at the next index, as
    /// [`Store::create_batch`] would have made it. `NotFound` if there is
    /// no such batch or it is closed.
    fn add_file(&self, batch: BatchId, file: &NewFile<'_>) -> Result<FileRef>;
    /// Closes an open batch: no file is added any more, and it serves its
    /// files once all are complete. Closing a closed batch changes
    /// nothing; `NotFound` if there is no such batch.
    fn close_batch(&self, batch: BatchId) -> Result<()>;
    /// Ends a batch now: it expires at `now` (Unix seconds), so its code
    /// and token answer as expired and the next sweep deletes it (a tus
    /// termination). `NotFound` if there is no such batch.
    fn end_batch(&self, batch: BatchId, now: u64) -> Result<()>;
    /// This relay instance now owns the upload of `batch` (a terminal
    /// resumed it here): bumps the batch's fence, so durable steps of the
    /// upload through any other instance's handle fail with
    /// [`StoreError::Fenced`] from now on (see "Upload ownership" above),
    /// and returns the batch as read after the bump, holding everything
    /// the previous owner made durable. `NotFound` if there is no such
    /// batch.
    fn take_upload(&self, batch: BatchId) -> Result<Batch>;
    /// Counts for quota and live-batch limits.
    fn usage(&self) -> Result<Usage>;
    /// An incomplete batch made progress: it is not deleted for lack of
    /// it before `stale_at` (a later time than recorded only moves it on).
    fn keep_incomplete(&self, batch: BatchId, stale_at: u64) -> Result<()>;

    /// Writes bytes of a partial upload (not yet durable).
    fn write_partial(&self, id: PartialId, offset: u64, data: &[u8]) -> Result<()>;
    /// Writes `pieces`, one after another, from `offset`: what
    /// [`write_partial`](Self::write_partial) of each does, in one system
    /// call where the backend has one (a write job's pieces are the frames
    /// as they were read, 64 KiB each from the CLI).
    fn write_partial_pieces(&self, id: PartialId, offset: u64, pieces: &[&[u8]]) -> Result<()> {
        let mut at = offset;
        for piece in pieces {
            self.write_partial(id, at, piece)?;
            at += piece.len() as u64;
        }
        Ok(())
    }
    /// Makes the first `durable` bytes durable and records that offset,
    /// and with it `hashed`, the SHA-1 state of the first `hashed.len <=
    /// durable` bytes, if given (else the one recorded before stays: it
    /// covers fewer bytes, all still durable).
    fn sync_partial(&self, id: PartialId, durable: u64, hashed: Option<&Midstate>) -> Result<()>;
    /// The SHA-1 state last recorded with the partial's durable offset, so
    /// a resumed upload hashes only the bytes after it.
    fn partial_hash_state(&self, id: PartialId) -> Result<Option<Midstate>>;
    /// Reads bytes of a partial upload (to re-hash a resumed prefix).
    fn read_partial(&self, id: PartialId, offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// Throws a partial upload's bytes away: durable offset 0 (and the
    /// SHA-1 state of no byte).
    fn reset_partial(&self, id: PartialId) -> Result<()>;

    /// At most `limit` blobs with this size and SHA-1: candidates, not
    /// matches. Never [`BlobId::EMPTY`].
    fn candidates(&self, size: u64, sha1: &Sha1Digest, limit: usize) -> Result<Vec<BlobId>>;
    /// Reads bytes of a blob; 0 only at its end ([`BlobId::EMPTY`] reads
    /// nothing).
    fn read_blob(&self, id: BlobId, offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// Hands the first `len` bytes of a blob to `sink`, in order and in
    /// pieces, for a pass over all of them (a proof of ownership's hash).
    /// An error if the blob holds fewer. By default read through
    /// [`read_blob`](Store::read_blob); a store with the bytes on a local
    /// disk hands them over without copying them out of the page cache.
    fn scan_blob(&self, id: BlobId, len: u64, sink: &mut dyn FnMut(&[u8])) -> Result<()> {
        let mut buf = vec![0u8; SCAN_CHUNK.min(usize::try_from(len).unwrap_or(SCAN_CHUNK))];
        let mut offset = 0u64;
        while offset < len {
            let want = usize::try_from(len - offset)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = self.read_blob(id, offset, &mut buf[..want])?;
            if n == 0 {
                return Err(short_blob(id));
            }
            sink(&buf[..n]);
            offset += n as u64;
        }
        Ok(())
    }
    /// A partial upload is complete and verified: link the file to an
    /// existing blob with the same size and SHA-1 *and byte-for-byte equal
    /// content*, or make the partial's bytes a new blob (fsync, rename, fsync
    /// directory). A SHA-1 collision therefore gets a blob of its own. An
    /// empty file becomes [`BlobId::EMPTY`]. Either way the batch's owner
    /// becomes one of the blob's owners ([`Store::holders`]), and
    /// `content.sha1` becomes the file record's SHA-1 (the announced one
    /// for a wire upload; a tus upload may have announced none).
    fn complete_file(&self, file: FileRef, partial: PartialId, content: &Content)
        -> Result<BlobId>;
    /// Links a file to a blob after a proof of ownership; drops its partial.
    /// `false` if the blob no longer exists (collected meanwhile). The
    /// batch's owner becomes one of the blob's owners.
    fn link_file(&self, file: FileRef, blob: BlobId) -> Result<bool>;
    /// Who holds `blob`, as `owner` may learn it: whether `owner` is among
    /// its owners, how many there are, and its threshold. `NotFound` if
    /// the blob is gone.
    fn holders(&self, blob: BlobId, owner: &OwnerId) -> Result<Holders>;

    /// Deletes batches expired at `now` and incomplete or open ones whose
    /// `stale_at` has passed, remembers their codes as expired,
    /// forgets codes that expired before `forget_before`, and collects blobs
    /// that no file references (with their owners).
    fn sweep(&self, now: u64, forget_before: u64) -> Result<SweepStats>;

    /// Binds every file of `batch` under `owner`, each by its announced
    /// name, in one transaction: an existing binding of a name is replaced
    /// atomically (readers see the old content or the new, never neither),
    /// and keeps its shares. A replaced blob stays readable (is not
    /// collected by [`Store::sweep`]) until `now + keep_replaced_secs`, so
    /// a reader that started on the old content finishes it. If the batch
    /// names a file twice, its last file wins. Returns how many names were
    /// bound. `NotFound` if the batch does not exist (expired and swept);
    /// [`StoreError::Incomplete`] if a file is still uploading, and then
    /// nothing is bound.
    fn bind_names(
        &self,
        owner: &str,
        batch: BatchId,
        now: u64,
        keep_replaced_secs: u64,
    ) -> Result<u64>;
    /// A user's named file, if the name is bound.
    fn find_name(&self, owner: &str, name: &str) -> Result<Option<NamedFile>>;
    /// A user's named files, sorted by name (byte order of UTF-8).
    fn list_names(&self, owner: &str) -> Result<Vec<NamedFile>>;
    /// Deletes a name and its shares; its blob is collected by a sweep
    /// once nothing else holds it and `now + keep_replaced_secs` has
    /// passed. `false`: no such name.
    fn remove_name(
        &self,
        owner: &str,
        name: &str,
        now: u64,
        keep_replaced_secs: u64,
    ) -> Result<bool>;
    /// Grants (`allow`) or revokes read access to a name for `grantee` (a
    /// user name, or `"@"` + a terminal name). Granting twice or revoking
    /// what was never granted changes nothing. `false`: no such name.
    fn share_name(&self, owner: &str, name: &str, grantee: &str, allow: bool) -> Result<bool>;
    /// Whether `grantee` was granted read access to the name. The owner
    /// itself is not a grantee: the caller checks ownership first.
    fn is_shared(&self, owner: &str, name: &str, grantee: &str) -> Result<bool>;
    /// What a user's namespace holds, for user quotas.
    fn name_usage(&self, owner: &str) -> Result<NameUsage>;
    /// A user was removed: all its names and their shares go, and so do
    /// shares granted to it. Its blobs are released at once (a removed user
    /// has no readers to wait for) and collected by the next sweep unless
    /// something else holds them. For a removed terminal,
    /// `remove_owner("@" + name)` drops the shares granted to it (no name
    /// is owned by such an owner).
    fn remove_owner(&self, owner: &str) -> Result<()>;
}
