//! Where a download's bytes go ([`Sink`]), and who hashes them ([`Hashing`]).

use crate::hash::{Sha1Digest, Sha1Hasher};
use crate::message::{FileAttrs, ManifestEntry};
use crate::storage::{ReadAt, WriteAt};

/// Who hashes a file's bytes to verify it against the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Hashing {
    /// The session, in line with each write (the default; what an MCU
    /// wants). A resumed file's prefix is read back and hashed first.
    #[default]
    InSession,
    /// The sink, through [`Sink::digest`]. On a host, verifying is the
    /// costliest work per byte; a sink that hashes on another core lets the
    /// session keep receiving meanwhile. The session then trusts the prefix
    /// length [`Sink::open`] reported and reads nothing back; a wrong
    /// prefix fails verification and the file is fetched again.
    BySink,
}

/// Where downloaded bytes go: random-access writes, reads back for resume,
/// and a few file-level steps.
pub trait Sink: ReadAt + WriteAt<Error = <Self as ReadAt>::Error> {
    /// A file of the batch, as the manifest describes it. Validate the name
    /// (again) with [`message::validate_name`] before using it on disk (it
    /// may be a path: create its directories without following links, and
    /// refuse one that [`message::names_conflict`] with an earlier entry),
    /// and return how many leading bytes of it are already present from an
    /// earlier attempt (0 for a new file).
    ///
    /// [`message::validate_name`]: crate::message::validate_name
    /// [`message::names_conflict`]: crate::message::names_conflict
    fn open(&mut self, entry: &ManifestEntry<'_>) -> Result<u64, <Self as ReadAt>::Error>;
    /// Attributes of the file of `attrs.index`, with
    /// [`Config::file_attrs`](super::Config::file_attrs) and a relay that has
    /// them: they arrive just before the file's entry (and again with each
    /// manifest). Apply them, if at all, once the file is verified. The
    /// default ignores them.
    fn attrs(&mut self, attrs: &FileAttrs) {
        let _ = attrs;
    }
    /// Throw away a file's bytes: its reused prefix did not verify, or a
    /// named file was bound to other content since the bytes were written
    /// (feature `auth`). Writes start again at 0.
    fn truncate(&mut self, file: u16) -> Result<(), <Self as ReadAt>::Error>;
    /// A named file was bound to other content since it was opened
    /// (feature `auth`): `entry` is its new size and SHA-1, what was
    /// written of the old content goes, and writes start again at 0. The
    /// default truncates; a sink that checks sizes or hashes against what
    /// [`open`](Self::open) told it takes the new ones from `entry`.
    fn replace(&mut self, entry: &ManifestEntry<'_>) -> Result<(), <Self as ReadAt>::Error> {
        self.truncate(entry.index)
    }
    /// The file is complete and verified: make it final (e.g. rename `.part`).
    fn finish(&mut self, file: u16) -> Result<(), <Self as ReadAt>::Error>;
    /// With [`Hashing::BySink`]: the SHA-1 of the first `size` bytes of
    /// `file` as the sink holds them, once all of them are written. The
    /// default reads them back through [`ReadAt`] in small pieces (correct,
    /// and slow); a sink worth using with `BySink` hashes the bytes as they
    /// are written, elsewhere. Never called with [`Hashing::InSession`].
    fn digest(&mut self, file: u16, size: u64) -> Result<Sha1Digest, <Self as ReadAt>::Error> {
        let mut hasher = Sha1Hasher::new();
        let mut buf = [0u8; 256];
        let mut offset = 0u64;
        while offset < size {
            let want = usize::try_from(size - offset)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = self.read_at(file, offset, &mut buf[..want])?;
            if n == 0 || n > want {
                // Short: whatever was hashed cannot match a `size`-byte file.
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok(hasher.digest())
    }
}
