//! The manifest collector for `pickup info`: a download sink that keeps
//! the entries and stores nothing.

use std::io::{self, ErrorKind};

use pickup_proto::download::Sink;
use pickup_proto::message::{FileAttrs, ManifestEntry};
use pickup_proto::storage::{ReadAt, WriteAt};
use pickup_proto::Sha1Digest;

/// One manifest entry as `pickup info` shows it.
#[derive(Debug, Clone)]
pub(crate) struct EntryInfo {
    pub name: String,
    pub size: u64,
    pub sha1: Sha1Digest,
    pub received: u64,
    /// Executable bit and modification time, if the sender kept them.
    pub attrs: Option<FileAttrs>,
}

/// Collects the manifest's entries and stores nothing (`pickup info`).
#[derive(Default)]
pub(crate) struct ManifestSink {
    pub entries: Vec<EntryInfo>,
    /// The `FileAttrs` received for the entry that comes next.
    pending: Option<FileAttrs>,
}

impl ReadAt for ManifestSink {
    type Error = io::Error;
    fn read_at(&mut self, _: u16, _: u64, _: &mut [u8]) -> io::Result<usize> {
        Err(ErrorKind::Unsupported.into())
    }
}

impl WriteAt for ManifestSink {
    type Error = io::Error;
    fn write_at(&mut self, _: u16, _: u64, _: &[u8]) -> io::Result<()> {
        Err(ErrorKind::Unsupported.into())
    }
}

impl Sink for ManifestSink {
    fn open(&mut self, entry: &ManifestEntry<'_>) -> io::Result<u64> {
        self.entries.push(EntryInfo {
            name: entry.name.to_string(),
            size: entry.size,
            sha1: entry.sha1,
            received: entry.received,
            // They arrive just before their entry (PROTOCOL.md §5.5).
            attrs: self.pending.take().filter(|a| a.index == entry.index),
        });
        Ok(0)
    }
    fn attrs(&mut self, attrs: &FileAttrs) {
        self.pending = Some(*attrs);
    }
    fn truncate(&mut self, _: u16) -> io::Result<()> {
        Err(ErrorKind::Unsupported.into())
    }
    fn finish(&mut self, _: u16) -> io::Result<()> {
        Err(ErrorKind::Unsupported.into())
    }
}
