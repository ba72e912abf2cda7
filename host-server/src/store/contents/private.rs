//! The data directory is private: whatever the relay creates in it is
//! readable by its own user only (directories 0700, files 0600), since
//! uploads are other people's files and the database holds their codes.
//!
//! Modes are set at creation rather than through the process umask, so the
//! store is private however it is embedded. SQLite gives a database's WAL and
//! shared-memory files the mode of the database file, which is why
//! pre-creating that one file is enough. Existing entries are never chmod-ed:
//! an operator may have widened them on purpose (a backup group, say), so
//! [`wide_permissions`](crate::store::sqlite::wide_permissions) only
//! reports them, for a warning at start.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Result};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of every directory the store creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the store creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with [`DIR_MODE`].
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates `path` empty with [`FILE_MODE`] unless it exists.
pub(crate) fn touch(path: &Path) -> Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
