//! The upload source: the files of a batch, read at offsets, and their
//! SHA-1 before announcing.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use indicatif::ProgressBar;

use pickup_proto::storage::ReadAt;
use pickup_proto::Sha1Digest;

use crate::hash_thread::read_at as read_retrying;

/// No file is being proved (see [`SourceFiles::proving`]).
pub(crate) const NOT_PROVING: u32 = u32::MAX;

/// The files of an upload, opened once, read at offsets.
pub(crate) struct SourceFiles {
    pub files: Vec<File>,
    /// The file whose proof of possession is being computed, or
    /// [`NOT_PROVING`]. The proof reads the whole file inside the session,
    /// where no event can report it, so its reads move `bar` from here.
    pub proving: Arc<AtomicU32>,
    pub bar: ProgressBar,
}

impl ReadAt for SourceFiles {
    type Error = io::Error;
    fn read_at(&mut self, file: u16, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let f = self
            .files
            .get(usize::from(file))
            .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "no such file in the batch"))?;
        let n = read_retrying(f, offset, buf)?;
        if self.proving.load(Ordering::Relaxed) == u32::from(file) {
            self.bar.inc(n as u64);
        }
        Ok(n)
    }
}

/// What `pickup send` keeps of a file besides its bytes: executable if any
/// `x` bit is set (always `false` where there are none), and its
/// modification time in whole seconds since the Unix epoch (negative
/// before 1970). `None` if the system cannot tell the time.
pub(crate) fn attrs_of(meta: &std::fs::Metadata) -> Option<(bool, i64)> {
    #[cfg(unix)]
    let executable = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0;
    #[cfg(not(unix))]
    let executable = false;
    let modified = meta.modified().ok()?;
    let mtime = match modified.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok()?,
        // Before 1970: whole seconds, rounded towards the epoch.
        Err(before) => -i64::try_from(before.duration().as_secs()).ok()?,
    };
    Some((executable, mtime))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18, item 7: the proof's reads move the bar, other reads do not.
    #[test]
    fn reads_of_the_file_being_proved_move_the_bar() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, vec![7u8; 1000]).unwrap();
        let mut source = SourceFiles {
            files: vec![File::open(&path).unwrap(), File::open(&path).unwrap()],
            proving: Arc::new(AtomicU32::new(NOT_PROVING)),
            bar: ProgressBar::hidden(),
        };
        let mut buf = [0u8; 600];
        assert_eq!(source.read_at(0, 0, &mut buf).unwrap(), 600);
        assert_eq!(source.bar.position(), 0);
        source.proving.store(1, Ordering::Relaxed);
        assert_eq!(source.read_at(0, 0, &mut buf).unwrap(), 600);
        assert_eq!(source.read_at(1, 0, &mut buf).unwrap(), 600);
        assert_eq!(source.read_at(1, 600, &mut buf).unwrap(), 400);
        assert_eq!(source.bar.position(), 1000);
    }
}
