//! File bytes on disk: the upload source, the download sink (through
//! `.part` files), and the manifest collector for `pickup info`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use pickup_proto::download::Sink;
use pickup_proto::message::{self, ManifestEntry};
use pickup_proto::storage::{ReadAt, WriteAt};
use pickup_proto::Sha1Digest;

use super::show::escape;
use crate::hash_thread::HashThread;

#[cfg(unix)]
fn pread(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn pread(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(unix)]
fn pwrite_all(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(windows)]
fn pwrite_all(file: &File, mut offset: u64, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, data, offset)?;
        if n == 0 {
            return Err(ErrorKind::WriteZero.into());
        }
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}

fn read_retrying(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match pread(file, offset, buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The files of an upload, opened once, read at offsets.
pub(crate) struct SourceFiles {
    pub files: Vec<File>,
}

impl ReadAt for SourceFiles {
    type Error = io::Error;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let f = self
            .files
            .get(usize::from(file))
            .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "no such file in the batch"))?;
        read_retrying(f, offset, buf)
    }
}

/// SHA-1 of a whole open file, reporting bytes as it goes.
pub(crate) fn sha1_file(
    file: &File,
    mut progress: impl FnMut(u64),
) -> io::Result<(u64, Sha1Digest)> {
    let mut h = pickup_proto::hash::Sha1Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = read_retrying(file, offset, &mut buf)?;
        if n == 0 {
            return Ok((offset, h.digest()));
        }
        h.update(&buf[..n]);
        offset += n as u64;
        progress(n as u64);
    }
}

struct Target {
    name: String,
    final_path: PathBuf,
    part_path: PathBuf,
    /// Where the bytes are read from and written to right now; `None`
    /// until the first byte, so a download that never starts (the batch
    /// is not ready, a later file exists) leaves no empty `.part` behind.
    file: Option<File>,
    /// The file already exists under its final name with the right size:
    /// its bytes are re-hashed as a prefix, and nothing is written.
    already_final: bool,
}

/// Downloads into a directory: each file is written as `NAME.part` and
/// renamed to `NAME` once verified; a `.part` left by an interrupted run is
/// picked up again. Names are validated again, so nothing lands outside the
/// directory, and existing files are never replaced without `force`.
///
/// It verifies files itself (the session runs with
/// [`Hashing::BySink`](pickup_proto::download::Hashing::BySink)): bytes are
/// hashed on a [`HashThread`] as they are written, so receiving and hashing
/// use two cores.
pub(crate) struct DirSink {
    dir: PathBuf,
    force: bool,
    targets: Vec<Target>,
    hasher: HashThread,
    /// The file and the end of the bytes fed to `hasher`, which are that
    /// file's bytes from offset 0, in order.
    hashed: Option<(u16, u64)>,
}

fn other(kind: ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

impl DirSink {
    pub fn new(dir: PathBuf, force: bool) -> io::Result<DirSink> {
        Ok(DirSink {
            dir,
            force,
            targets: Vec::new(),
            hasher: HashThread::new()?,
            hashed: None,
        })
    }

    /// Makes the hasher hold `file`'s first `end` bytes: continues if it
    /// does up to `end` already, else starts over and reads them back (a
    /// prefix from an earlier run, or a file that exists already).
    fn hash_up_to(&mut self, file: u16, end: u64) -> io::Result<()> {
        if self.hashed == Some((file, end)) {
            return Ok(());
        }
        if self.hashed.is_some() {
            self.hasher.finish()?;
        }
        self.hashed = None;
        let mut buf = if end > 0 {
            vec![0u8; 1 << 20]
        } else {
            Vec::new()
        };
        let mut offset = 0;
        while offset < end {
            let want = usize::try_from(end - offset).map_or(buf.len(), |w| w.min(buf.len()));
            let n = self.read_at(file, offset, &mut buf[..want])?;
            if n == 0 {
                // Shorter than it should be: feed what there is, and let
                // the digest disagree.
                break;
            }
            self.hasher.update(&buf[..n])?;
            offset += n as u64;
        }
        self.hashed = Some((file, offset));
        Ok(())
    }

    /// Final paths of the files, in batch order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.targets.iter().map(|t| t.final_path.as_path())
    }

    fn target(&mut self, file: u16) -> io::Result<&mut Target> {
        self.targets
            .get_mut(usize::from(file))
            .ok_or_else(|| other(ErrorKind::NotFound, format!("file {file} was never opened")))
    }

    fn part_name(name: &str) -> String {
        // Keep within the usual 255-byte name limit.
        if name.len() + 5 <= message::MAX_NAME_LEN {
            format!("{name}.part")
        } else {
            format!(".pickup-{}.part", Sha1Digest::of(name.as_bytes()))
        }
    }

    fn open_part(path: &Path) -> io::Result<File> {
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(other(
                ErrorKind::AlreadyExists,
                format!(
                    "{} is a symbolic link; refusing to write through it",
                    path.display()
                ),
            ));
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    }
}

impl Target {
    /// The `.part` file, created on first use.
    fn part(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            self.file = Some(DirSink::open_part(&self.part_path)?);
        }
        self.file
            .as_ref()
            .ok_or_else(|| other(ErrorKind::NotFound, "part file vanished".into()))
    }
}

impl ReadAt for DirSink {
    type Error = io::Error;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let t = self.target(file)?;
        match &t.file {
            Some(f) => read_retrying(f, offset, buf),
            None => Ok(0),
        }
    }
}

impl WriteAt for DirSink {
    type Error = io::Error;
    fn write_at(&mut self, file: u16, offset: u64, data: &[u8]) -> io::Result<()> {
        let t = self.target(file)?;
        if t.already_final {
            return Err(other(
                ErrorKind::AlreadyExists,
                format!(
                    "{} exists; refusing to write into it",
                    t.final_path.display()
                ),
            ));
        }
        pwrite_all(t.part()?, offset, data)?;
        self.hash_up_to(file, offset)?;
        self.hasher.update(data)?;
        self.hashed = Some((file, offset + data.len() as u64));
        Ok(())
    }
}

impl Sink for DirSink {
    fn open(&mut self, entry: &ManifestEntry<'_>) -> io::Result<u64> {
        let name = entry.name;
        if message::validate_name(name).is_err() {
            return Err(other(
                ErrorKind::InvalidData,
                format!("the relay sent an unsafe file name \"{}\"", escape(name)),
            ));
        }
        if usize::from(entry.index) != self.targets.len() {
            return Err(other(
                ErrorKind::InvalidData,
                "manifest entries out of order".into(),
            ));
        }
        if self.targets.iter().any(|t| t.name == name) {
            return Err(other(
                ErrorKind::AlreadyExists,
                format!("the batch names \"{}\" twice", escape(name)),
            ));
        }
        let final_path = self.dir.join(name);
        let part_path = self.dir.join(Self::part_name(name));
        if let Ok(meta) = fs::symlink_metadata(&final_path) {
            // The same file from an earlier, interrupted run (or any file of
            // the right size): re-hashed, kept if it matches.
            if meta.is_file() && meta.len() == entry.size {
                let file = File::open(&final_path)?;
                self.targets.push(Target {
                    name: name.to_string(),
                    final_path,
                    part_path,
                    file: Some(file),
                    already_final: true,
                });
                return Ok(entry.size);
            }
            if !self.force || meta.is_dir() {
                return Err(other(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{} already exists (use --force to overwrite)",
                        final_path.display()
                    ),
                ));
            }
        }
        // A `.part` from an interrupted run is continued; a new one is
        // only created when the first byte arrives.
        let mut len = 0;
        let mut file = None;
        if fs::symlink_metadata(&part_path).is_ok() {
            let f = Self::open_part(&part_path)?;
            len = f.metadata()?.len();
            if len > entry.size {
                // Longer than the file can be: not a prefix of it.
                f.set_len(0)?;
                len = 0;
            }
            file = Some(f);
        }
        self.targets.push(Target {
            name: name.to_string(),
            final_path,
            part_path,
            file,
            already_final: false,
        });
        Ok(len)
    }

    fn truncate(&mut self, file: u16) -> io::Result<()> {
        if self.hashed.is_some_and(|(f, _)| f == file) {
            self.hasher.finish()?;
            self.hashed = None;
        }
        let force = self.force;
        let t = self.target(file)?;
        if t.already_final {
            // The existing file differs from the batch's.
            if !force {
                return Err(other(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{} already exists with other content (use --force to overwrite)",
                        t.final_path.display()
                    ),
                ));
            }
            t.file = Some(Self::open_part(&t.part_path)?);
            t.already_final = false;
        }
        match &t.file {
            Some(f) => f.set_len(0),
            None => Ok(()),
        }
    }

    fn digest(&mut self, file: u16, size: u64) -> io::Result<Sha1Digest> {
        self.hash_up_to(file, size)?;
        self.hashed = None;
        self.hasher.finish()
    }

    fn finish(&mut self, file: u16) -> io::Result<()> {
        let force = self.force;
        let t = self.target(file)?;
        if t.already_final {
            return Ok(());
        }
        // An empty file has had no write: create it now.
        t.part()?.sync_all()?;
        if !force && fs::symlink_metadata(&t.final_path).is_ok() {
            return Err(other(
                ErrorKind::AlreadyExists,
                format!(
                    "{} appeared during the download (use --force to overwrite)",
                    t.final_path.display()
                ),
            ));
        }
        fs::rename(&t.part_path, &t.final_path)?;
        t.file = Some(File::open(&t.final_path)?);
        t.already_final = true;
        Ok(())
    }
}

/// One manifest entry as `pickup info` shows it.
#[derive(Debug, Clone)]
pub(crate) struct EntryInfo {
    pub name: String,
    pub size: u64,
    pub sha1: Sha1Digest,
    pub received: u64,
}

/// Collects the manifest's entries and stores nothing (`pickup info`).
#[derive(Default)]
pub(crate) struct ManifestSink {
    pub entries: Vec<EntryInfo>,
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
        });
        Ok(0)
    }
    fn truncate(&mut self, _: u16) -> io::Result<()> {
        Err(ErrorKind::Unsupported.into())
    }
    fn finish(&mut self, _: u16) -> io::Result<()> {
        Err(ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(index: u16, name: &'a str, data: &[u8]) -> ManifestEntry<'a> {
        ManifestEntry {
            index,
            size: data.len() as u64,
            sha1: Sha1Digest::of(data),
            received: data.len() as u64,
            name,
        }
    }

    #[test]
    fn part_file_is_resumed_then_renamed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt.part"), b"hello ").unwrap();
        let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
        assert_eq!(sink.open(&entry(0, "a.txt", b"hello world")).unwrap(), 6);
        sink.write_at(0, 6, b"world").unwrap();
        let mut buf = [0u8; 11];
        assert_eq!(sink.read_at(0, 0, &mut buf).unwrap(), 11);
        sink.finish(0).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a.txt")).unwrap(),
            b"hello world"
        );
        assert!(!dir.path().join("a.txt.part").exists());
    }

    #[test]
    fn nothing_is_created_before_the_first_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
        assert_eq!(sink.open(&entry(0, "a", b"abc")).unwrap(), 0);
        assert_eq!(sink.open(&entry(1, "empty", b"")).unwrap(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        sink.finish(1).unwrap();
        assert_eq!(std::fs::read(dir.path().join("empty")).unwrap(), b"");
    }

    #[test]
    fn existing_files_are_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"mine").unwrap();
        let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
        let err = sink.open(&entry(0, "a.txt", b"theirs")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);

        // Same size, other content: found out when the hash fails.
        let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
        assert_eq!(sink.open(&entry(0, "a.txt", b"ours")).unwrap(), 4);
        assert!(sink.write_at(0, 0, b"x").is_err());
        assert_eq!(
            sink.truncate(0).unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"mine");

        let mut sink = DirSink::new(dir.path().to_path_buf(), true).unwrap();
        assert_eq!(sink.open(&entry(0, "a.txt", b"theirs")).unwrap(), 0);
        sink.write_at(0, 0, b"theirs").unwrap();
        sink.finish(0).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"theirs");
    }

    /// The sink's own digests (it verifies for the session) cover a prefix
    /// left by an earlier run, bytes written in pieces, an existing final
    /// file, and start over after a truncation.
    #[test]
    fn digests_cover_prefixes_writes_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
        std::fs::write(dir.path().join("a.part"), &body[..300_001]).unwrap();
        std::fs::write(dir.path().join("b"), b"held").unwrap();
        let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
        assert_eq!(sink.open(&entry(0, "a", &body)).unwrap(), 300_001);
        assert_eq!(sink.open(&entry(1, "b", b"held")).unwrap(), 4);
        for (i, chunk) in body[300_001..].chunks(65_536).enumerate() {
            sink.write_at(0, 300_001 + (i * 65_536) as u64, chunk)
                .unwrap();
        }
        assert_eq!(
            sink.digest(0, body.len() as u64).unwrap(),
            Sha1Digest::of(&body)
        );
        sink.finish(0).unwrap();
        assert_eq!(sink.digest(1, 4).unwrap(), Sha1Digest::of(b"held"));

        // A wrong prefix: the digest disagrees; after the truncation the
        // refetched bytes verify.
        std::fs::write(dir.path().join("c.part"), b"XX").unwrap();
        assert_eq!(sink.open(&entry(2, "c", b"good")).unwrap(), 2);
        sink.write_at(2, 2, b"od").unwrap();
        assert_ne!(sink.digest(2, 4).unwrap(), Sha1Digest::of(b"good"));
        sink.truncate(2).unwrap();
        sink.write_at(2, 0, b"go").unwrap();
        sink.write_at(2, 2, b"od").unwrap();
        assert_eq!(sink.digest(2, 4).unwrap(), Sha1Digest::of(b"good"));
    }

    #[test]
    fn unsafe_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = DirSink::new(dir.path().join("inner"), true).unwrap();
        for (i, name) in ["../x", "..", "a/b", "c:\\d", "e\u{7}"].iter().enumerate() {
            let err = sink.open(&entry(i as u16, name, b"x")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{name:?}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_part_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"").unwrap();
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        std::os::unix::fs::symlink(&outside, inner.join("a.part")).unwrap();
        let mut sink = DirSink::new(inner, true).unwrap();
        assert!(sink.open(&entry(0, "a", b"data")).is_err());
        assert_eq!(std::fs::read(&outside).unwrap(), b"");
    }
}
