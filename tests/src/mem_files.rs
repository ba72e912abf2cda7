//! [`MemFiles`]: a batch of files in memory, the one upload source and
//! download sink every harness in this crate uses (the simulator, the wire
//! client of the relay-process tests, the CLI driver's unit tests).
//!
//! It is strict: a download that writes a file before opening it, writes
//! past its announced size, or finishes it with the wrong size or SHA-1
//! panics at once, naming the file, instead of leaving a wrong byte for a
//! later assertion to find.

use std::convert::Infallible;

use pickup_proto::download::Sink;
use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::ManifestEntry;
use pickup_proto::storage::{ReadAt, WriteAt};

/// A file as its manifest entry described it to the download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-1.
    pub sha1: Sha1Digest,
    /// Its name.
    pub name: String,
}

/// Files in memory, by index: read as an upload source, written as a
/// download sink. Bytes already there when a download opens a file (see
/// [`MemFiles::with_contents`]) count as a prefix left by an earlier
/// attempt, which the download may reuse or throw away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemFiles {
    /// Contents by file index.
    pub files: Vec<Vec<u8>>,
    /// What each file's manifest entry said; `None` until the download opens it.
    pub entries: Vec<Option<Entry>>,
    /// Files the download finished (verified); a truncate clears the mark.
    pub finished: Vec<bool>,
}

impl MemFiles {
    /// Files with these contents: a source to upload, or a sink holding
    /// these bytes from an earlier attempt.
    pub fn with_contents(files: Vec<Vec<u8>>) -> MemFiles {
        let n = files.len();
        MemFiles {
            files,
            entries: vec![None; n],
            finished: vec![false; n],
        }
    }

    /// The names the download opened, in index order (files never opened
    /// are left out).
    pub fn names(&self) -> Vec<&str> {
        self.entries
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect()
    }

    /// The slot for `file`, grown on first use.
    fn slot(&mut self, file: u16) -> usize {
        let i = usize::from(file);
        if self.files.len() <= i {
            self.files.resize(i + 1, Vec::new());
        }
        if self.entries.len() <= i {
            self.entries.resize(i + 1, None);
            self.finished.resize(i + 1, false);
        }
        i
    }

    fn entry(&self, i: usize, what: &str) -> &Entry {
        self.entries[i]
            .as_ref()
            .unwrap_or_else(|| panic!("download {what} file {i} before opening it"))
    }
}

impl ReadAt for MemFiles {
    type Error = Infallible;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> Result<usize, Infallible> {
        let Some(data) = self.files.get(usize::from(file)) else {
            return Ok(0);
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }
}

impl WriteAt for MemFiles {
    type Error = Infallible;
    fn write_at(&mut self, file: u16, offset: u64, data: &[u8]) -> Result<(), Infallible> {
        let i = self.slot(file);
        let size = self.entry(i, "wrote").size;
        let end = offset + data.len() as u64;
        assert!(
            end <= size,
            "download wrote file {file} up to {end}, past its size {size}"
        );
        let (start, end) = (offset as usize, end as usize);
        let f = &mut self.files[i];
        if f.len() < end {
            f.resize(end, 0);
        }
        f[start..end].copy_from_slice(data);
        Ok(())
    }
}

impl Sink for MemFiles {
    fn open(&mut self, entry: &ManifestEntry<'_>) -> Result<u64, Infallible> {
        let i = self.slot(entry.index);
        self.entries[i] = Some(Entry {
            size: entry.size,
            sha1: entry.sha1,
            name: entry.name.to_owned(),
        });
        Ok(self.files[i].len() as u64)
    }

    fn truncate(&mut self, file: u16) -> Result<(), Infallible> {
        let i = self.slot(file);
        self.files[i].clear();
        self.finished[i] = false;
        Ok(())
    }

    fn replace(&mut self, entry: &ManifestEntry<'_>) -> Result<(), Infallible> {
        self.truncate(entry.index)?;
        let i = self.slot(entry.index);
        self.entries[i] = Some(Entry {
            size: entry.size,
            sha1: entry.sha1,
            name: entry.name.to_owned(),
        });
        Ok(())
    }

    fn finish(&mut self, file: u16) -> Result<(), Infallible> {
        let i = self.slot(file);
        let Entry { size, sha1, .. } = self.entry(i, "finished").clone();
        assert_eq!(
            self.files[i].len() as u64,
            size,
            "finished file {file}: size"
        );
        assert_eq!(
            Sha1Digest::of(&self.files[i]),
            sha1,
            "finished file {file}: SHA-1"
        );
        self.finished[i] = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u16, data: &[u8], name: &'static str) -> ManifestEntry<'static> {
        ManifestEntry {
            index,
            size: data.len() as u64,
            sha1: Sha1Digest::of(data),
            received: data.len() as u64,
            name,
        }
    }

    #[test]
    fn reads_writes_and_reports_leftovers() {
        let mut m = MemFiles::with_contents(vec![b"hel".to_vec()]);
        let mut buf = [0u8; 8];
        assert_eq!(m.read_at(0, 1, &mut buf), Ok(2));
        assert_eq!(&buf[..2], b"el");
        assert_eq!(m.read_at(0, 99, &mut buf), Ok(0));
        assert_eq!(m.read_at(5, 0, &mut buf), Ok(0), "no such file");
        assert_eq!(m.open(&entry(0, b"hello", "a")), Ok(3));
        m.write_at(0, 3, b"lo").unwrap();
        m.finish(0).unwrap();
        assert_eq!(m.open(&entry(1, b"", "b")), Ok(0));
        m.finish(1).unwrap();
        assert_eq!(m.files, [b"hello".to_vec(), Vec::new()]);
        assert_eq!(m.names(), ["a", "b"]);
        assert_eq!(m.finished, [true, true]);
        m.truncate(0).unwrap();
        assert!(m.files[0].is_empty() && !m.finished[0]);
    }

    #[test]
    #[should_panic(expected = "past its size")]
    fn a_write_past_the_size_panics() {
        let mut m = MemFiles::default();
        m.open(&entry(0, b"ab", "a")).unwrap();
        m.write_at(0, 1, b"bc").unwrap();
    }

    #[test]
    #[should_panic(expected = "SHA-1")]
    fn finishing_wrong_bytes_panics() {
        let mut m = MemFiles::default();
        m.open(&entry(0, b"ab", "a")).unwrap();
        m.write_at(0, 0, b"ax").unwrap();
        m.finish(0).unwrap();
    }
}
