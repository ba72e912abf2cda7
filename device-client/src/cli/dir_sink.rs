//! The download sink: a batch written into a directory through temporary
//! files of its own, verified by the bytes on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pickup_proto::download::Sink;
use pickup_proto::hash::Sha1Hasher;
use pickup_proto::message::{self, FileAttrs, ManifestEntry};
use pickup_proto::storage::{ReadAt, WriteAt};
use pickup_proto::Sha1Digest;

use super::show::escape;
use crate::hash_thread::{read_at as read_retrying, HashThread};
use writeback::Writeback;

mod writeback;

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

/// The name a file of the batch is written under until it verifies:
/// hidden, recognisably ours (`.pickup-`), and derived from the entry's
/// content SHA-1, size and name, so a later run for the same file finds it
/// again, two entries never share one, and nobody else's file has it by
/// chance. (Not from the code: a name in a shared directory should not
/// help anyone guess it.)
pub(crate) fn temp_name(entry: &ManifestEntry<'_>) -> String {
    let mut h = Sha1Hasher::new();
    h.update(b"pickup get\0");
    h.update(&entry.sha1.0);
    h.update(&entry.size.to_le_bytes());
    h.update(entry.name.as_bytes());
    format!(".pickup-{}.part", h.digest())
}

/// Told (name, bytes kept, size) of a file continued from an earlier run.
type OnResume = dyn FnMut(&str, u64, u64);

/// Bytes written and not yet handed to the hasher are read back once this
/// many have gathered (and at the end of the file).
const READ_BACK: u64 = 1 << 20;

struct Target {
    name: String,
    final_path: PathBuf,
    temp_name: String,
    temp_path: PathBuf,
    /// Where the bytes are read from and written to right now; `None`
    /// until the first byte, so a download that never starts (the batch
    /// is not ready, a later file exists) leaves no empty file behind.
    file: Option<Arc<File>>,
    /// The file already exists under its final name with the right size:
    /// its bytes are re-hashed, and nothing is written.
    already_final: bool,
    /// The manifest's SHA-1 for the file.
    sha1: Sha1Digest,
    /// `final_path` held a file before this run (not one the sink made).
    preexisting: bool,
    /// `final_path` holds something else and may not be replaced: the file
    /// is skipped (reported as complete to the session, so the rest of the
    /// batch still arrives) and reported by [`DirSink::conflicts`].
    conflict: bool,
}

/// Downloads into a directory: each file is written under its
/// [`temp_name`] and renamed to its own name once the bytes on disk
/// verify; the temporary file of an interrupted run is picked up again.
/// Names are validated again, so nothing lands outside the directory.
/// Apart from files with a temporary name (taken as left by an earlier
/// run), a file the sink did not create is never written, truncated or
/// removed, and is replaced (by the rename) only with `force`.
///
/// It verifies files itself (the session runs with
/// [`Hashing::BySink`](pickup_proto::download::Hashing::BySink)): written
/// bytes are read back from the file and hashed on a [`HashThread`] while
/// the next ones arrive, so receiving and verifying use two cores, and the
/// digest is of the whole file as it is on disk (one longer than the
/// manifest says does not verify).
pub(crate) struct DirSink {
    dir: PathBuf,
    force: bool,
    targets: Vec<Target>,
    hasher: HashThread,
    /// The file being verified and the end of the bytes handed to
    /// `hasher`, which are that file's bytes from offset 0, in order.
    hashed: Option<(u16, u64)>,
    /// Told (name, bytes kept, size) when a file continues from the
    /// temporary file of an earlier run.
    on_resume: Option<Box<OnResume>>,
    /// The relay's attributes for each file, by index, applied when the
    /// file is finished.
    attrs: Vec<Option<FileAttrs>>,
    /// Sends written bytes on to the disk while the rest arrive.
    writeback: Writeback,
}

fn other(kind: ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

/// `e` with the path it is about, so the one-line error says where.
fn with_path(e: io::Error, path: &Path) -> io::Error {
    other(e.kind(), format!("{}: {e}", path.display()))
}

impl DirSink {
    pub fn new(dir: PathBuf, force: bool) -> io::Result<DirSink> {
        Ok(DirSink {
            dir,
            force,
            targets: Vec::new(),
            hasher: HashThread::new()?,
            hashed: None,
            on_resume: None,
            attrs: Vec::new(),
            writeback: Writeback::default(),
        })
    }

    /// Calls `f` with (name, bytes kept, size) whenever a file continues
    /// from the temporary file of an earlier run, so the user hears why
    /// the download starts part-way.
    pub fn on_resume(&mut self, f: impl FnMut(&str, u64, u64) + 'static) {
        self.on_resume = Some(Box::new(f));
    }

    /// Starts `file`'s digest over from its first byte.
    fn restart_hash(&mut self, file: u16) -> io::Result<()> {
        if self.hashed.is_some() {
            self.hasher.finish()?;
        }
        self.hashed = Some((file, 0));
        Ok(())
    }

    /// Hands `file`'s bytes up to `end` to the hasher, to be read back
    /// from disk; `hashed` must be at `file`, at or before `end`.
    fn hash_up_to(&mut self, file: u16, end: u64) -> io::Result<()> {
        let start = match self.hashed {
            Some((f, start)) if f == file && start <= end => start,
            _ => return Err(io::Error::other("hashing out of order")),
        };
        if start < end {
            if let Some(f) = &self.target(file)?.file {
                let f = Arc::clone(f);
                self.hasher.update_from_file(f, start, end)?;
            }
        }
        self.hashed = Some((file, end));
        Ok(())
    }

    /// Final paths of the files written or found verified, in batch order,
    /// with their indexes and names in the batch (conflicts left out).
    pub fn paths(&self) -> impl Iterator<Item = (usize, &str, &Path)> {
        self.targets
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.conflict)
            .map(|(i, t)| (i, t.name.as_str(), t.final_path.as_path()))
    }

    /// Paths that held something else and were left alone (no `--force`,
    /// or a directory), in batch order.
    pub fn conflicts(&self) -> impl Iterator<Item = &Path> {
        self.targets
            .iter()
            .filter(|t| t.conflict)
            .map(|t| t.final_path.as_path())
    }

    fn target(&mut self, file: u16) -> io::Result<&mut Target> {
        self.targets
            .get_mut(usize::from(file))
            .ok_or_else(|| other(ErrorKind::NotFound, format!("file {file} was never opened")))
    }

    /// An existing temporary file, to continue: a regular file only, never
    /// through a link.
    fn open_existing_temp(path: &Path) -> io::Result<File> {
        let meta = fs::symlink_metadata(path)?;
        if !meta.is_file() {
            return Err(other(
                ErrorKind::AlreadyExists,
                format!(
                    "{} is not a regular file; refusing to write through it",
                    path.display()
                ),
            ));
        }
        OpenOptions::new().read(true).write(true).open(path)
    }
}

/// The directories between `dir` and `path` (a path below it), outermost
/// first.
fn parents<'p>(dir: &Path, path: &'p Path) -> impl Iterator<Item = &'p Path> {
    let below: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .take_while(|p| p.starts_with(dir) && *p != dir)
        .collect();
    below.into_iter().rev()
}

/// Whether every directory between `dir` and `path` is a real directory or
/// missing (then created by [`create_parents`]). A symbolic link is not
/// usable even if it points at a directory: following it could lead out of
/// `dir`.
fn parents_usable(dir: &Path, path: &Path) -> bool {
    for p in parents(dir, path) {
        match fs::symlink_metadata(p) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return false,
            Err(_) => return true,
        }
    }
    true
}

/// Creates the missing directories between `dir` and `path` one at a time,
/// refusing any that exists as something other than a real directory
/// (checked again here: one may have appeared since [`parents_usable`]).
fn create_parents(dir: &Path, path: &Path) -> io::Result<()> {
    for p in parents(dir, path) {
        match fs::create_dir(p) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let meta = fs::symlink_metadata(p).map_err(|e| with_path(e, p))?;
                if !meta.is_dir() {
                    return Err(other(
                        ErrorKind::AlreadyExists,
                        format!(
                            "{} is not a directory; refusing to write through it",
                            p.display()
                        ),
                    ));
                }
            }
            Err(e) => return Err(with_path(e, p)),
        }
    }
    Ok(())
}

/// Gives a verified file the attributes its sender had (PROTOCOL.md §5.5),
/// on the temporary file so it appears under its name complete. Executable
/// means `x` wherever the file has `r`: the mode it was created with already
/// went through the umask, so 0o644 becomes 0o755 and 0o600 becomes 0o700,
/// as a new executable would be. A file not executable keeps its mode.
/// Best effort: a file system that keeps no modes or times (FAT, some
/// network mounts) still gets the verified bytes.
fn apply_attrs(file: &File, attrs: &FileAttrs) {
    #[cfg(unix)]
    if attrs.executable {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = file.metadata() {
            let mut perms = meta.permissions();
            let mode = perms.mode();
            perms.set_mode(mode | (mode & 0o444) >> 2);
            let _ = file.set_permissions(perms);
        }
    }
    let epoch = std::time::UNIX_EPOCH;
    let secs = std::time::Duration::from_secs(attrs.mtime.unsigned_abs());
    let when = if attrs.mtime >= 0 {
        epoch.checked_add(secs)
    } else {
        epoch.checked_sub(secs)
    };
    if let Some(when) = when {
        let _ = file.set_modified(when);
    }
}

impl Target {
    /// The temporary file, created on first use. Created only if no file
    /// has the name: one that appeared meanwhile is not ours to write.
    fn temp(&mut self) -> io::Result<&Arc<File>> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&self.temp_path)
                .map_err(|e| match (e.kind(), self.temp_path.parent()) {
                    // The directory is the thing to fix, not our hidden file.
                    (ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem, Some(dir)) => {
                        other(
                            e.kind(),
                            format!("cannot write into directory {}: {e}", dir.display()),
                        )
                    }
                    _ => other(
                        e.kind(),
                        format!("cannot create {}: {e}", self.temp_path.display()),
                    ),
                })?;
            self.file = Some(Arc::new(f));
        }
        self.file
            .as_ref()
            .ok_or_else(|| other(ErrorKind::NotFound, "temporary file vanished".into()))
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
        let temp = Arc::clone(t.temp()?);
        pwrite_all(&temp, offset, data).map_err(|e| with_path(e, &t.temp_path))?;
        self.writeback.wrote(&temp, data.len() as u64);
        match self.hashed {
            // Only bytes after those handed over changed: keep going.
            Some((f, end)) if f == file && end <= offset => {}
            _ => self.restart_hash(file)?,
        }
        let end = offset + data.len() as u64;
        if self.hashed.is_some_and(|(_, from)| end - from >= READ_BACK) {
            self.hash_up_to(file, end)?;
        }
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
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| message::names_conflict(&t.name, name))
        {
            return Err(other(
                ErrorKind::AlreadyExists,
                format!(
                    "the batch names \"{}\" and \"{}\", which cannot both be created",
                    escape(&t.name),
                    escape(name)
                ),
            ));
        }
        let temp_name = temp_name(entry);
        // Only a batch made for it names a file after another's temporary
        // file; the two would be one file on disk.
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| t.temp_name == name || t.name == temp_name || t.temp_name == temp_name)
        {
            return Err(other(
                ErrorKind::InvalidData,
                format!(
                    "the batch names \"{}\" and \"{}\", which share a file on disk",
                    escape(&t.name),
                    escape(name)
                ),
            ));
        }
        // Component by component, so the path is built the same on every
        // system; the temporary file stays at the top of the directory
        // (its name hashes the whole path, so it is still one per entry).
        let final_path = name
            .split(message::SEPARATOR)
            .fold(self.dir.clone(), |p, c| p.join(c));
        let temp_path = self.dir.join(&temp_name);
        let mut target = Target {
            name: name.to_string(),
            final_path,
            temp_name,
            temp_path,
            file: None,
            already_final: false,
            sha1: entry.sha1,
            preexisting: false,
            conflict: false,
        };
        if !parents_usable(&self.dir, &target.final_path) {
            // A symbolic link or a file where the path needs a directory:
            // never written through, reported like any other conflict.
            target.preexisting = true;
            target.conflict = true;
            self.targets.push(target);
            return Ok(entry.size);
        }
        if let Ok(meta) = fs::symlink_metadata(&target.final_path) {
            target.preexisting = true;
            // The same file from an earlier, interrupted run (or any file of
            // the right size): re-hashed, kept if it matches.
            if meta.is_file() && meta.len() == entry.size {
                let f =
                    File::open(&target.final_path).map_err(|e| with_path(e, &target.final_path))?;
                target.file = Some(Arc::new(f));
                target.already_final = true;
                self.targets.push(target);
                return Ok(entry.size);
            }
            if !self.force || meta.is_dir() {
                // Skipped, not fatal: the rest of the batch still arrives.
                target.conflict = true;
                self.targets.push(target);
                return Ok(entry.size);
            }
        }
        // The temporary file of an interrupted run is continued; a new one
        // is only created when the first byte arrives.
        let mut len = 0;
        if fs::symlink_metadata(&target.temp_path).is_ok() {
            let f = Self::open_existing_temp(&target.temp_path)?;
            len = f.metadata()?.len();
            if len > entry.size {
                // Longer than the file can be: not a prefix of it.
                f.set_len(0)?;
                len = 0;
            }
            target.file = Some(Arc::new(f));
        }
        if len > 0 {
            if let Some(f) = &mut self.on_resume {
                f(name, len, entry.size);
            }
        }
        self.targets.push(target);
        Ok(len)
    }

    fn replace(&mut self, entry: &ManifestEntry<'_>) -> io::Result<()> {
        self.truncate(entry.index)?;
        // Verified against the content the name holds now.
        self.target(entry.index)?.sha1 = entry.sha1;
        Ok(())
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
            t.already_final = false;
            t.file = match fs::symlink_metadata(&t.temp_path) {
                Ok(_) => Some(Arc::new(Self::open_existing_temp(&t.temp_path)?)),
                Err(_) => None,
            };
        }
        match &t.file {
            Some(f) => f.set_len(0),
            None => Ok(()),
        }
    }

    /// The SHA-1 of the whole file as it is on disk (not only its first
    /// `size` bytes: a longer file must not verify).
    fn digest(&mut self, file: u16, _size: u64) -> io::Result<Sha1Digest> {
        let force = self.force;
        let t = self.target(file)?;
        if t.conflict {
            // Accounted for by `conflicts`, not fetched.
            return Ok(t.sha1);
        }
        let mismatch_is_conflict = t.preexisting && t.already_final && !force;
        let expected = t.sha1;
        let len = match &t.file {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        match self.hashed {
            Some((f, end)) if f == file && end <= len => {}
            _ => self.restart_hash(file)?,
        }
        self.hash_up_to(file, len)?;
        self.hashed = None;
        let digest = self.hasher.finish()?;
        if digest != expected && mismatch_is_conflict {
            // Someone else's file of the same size: leave it, skip the entry.
            let t = self.target(file)?;
            t.conflict = true;
            t.file = None;
            return Ok(expected);
        }
        Ok(digest)
    }

    fn attrs(&mut self, attrs: &FileAttrs) {
        let i = usize::from(attrs.index);
        if self.attrs.len() <= i {
            self.attrs.resize(i + 1, None);
        }
        self.attrs[i] = Some(*attrs);
    }

    fn finish(&mut self, file: u16) -> io::Result<()> {
        // An error a sync beside the transfer met is this file's (or an
        // earlier one's, which was synced again since): its final sync
        // would not be told.
        let settled = self.writeback.settle();
        let force = self.force;
        let attrs = self.attrs.get(usize::from(file)).copied().flatten();
        let dir = self.dir.clone();
        let t = self.target(file)?;
        if t.already_final || t.conflict {
            // Not a file this run made: its mode and time are not ours to change.
            return Ok(());
        }
        settled.map_err(|e| with_path(e, &t.temp_path))?;
        // An empty file has had no write: create it now.
        let temp = t.temp()?;
        if let Some(attrs) = &attrs {
            // After the last write, which would move the time again.
            apply_attrs(temp, attrs);
        }
        temp.sync_all().map_err(|e| with_path(e, &t.temp_path))?;
        if !force && fs::symlink_metadata(&t.final_path).is_ok() {
            return Err(other(
                ErrorKind::AlreadyExists,
                format!(
                    "{} appeared during the download (use --force to overwrite)",
                    t.final_path.display()
                ),
            ));
        }
        create_parents(&dir, &t.final_path)?;
        fs::rename(&t.temp_path, &t.final_path).map_err(|e| with_path(e, &t.final_path))?;
        let f = File::open(&t.final_path).map_err(|e| with_path(e, &t.final_path))?;
        t.file = Some(Arc::new(f));
        t.already_final = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
