//! The rules every file name from the wire must pass.
//!
//! A name is a relative path: one or more components joined by `/`, so a
//! batch can carry a directory tree. Each component is checked on its own
//! with the single-name rules, which is what keeps a downloader inside its
//! directory: no component can be `..`, a root, a drive or a separator of
//! another system.

use crate::error::ErrorCode;

/// The longest file name (the whole path), in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 255;

/// The separator between the components of a name.
pub const SEPARATOR: char = '/';

/// Checks a file name from the wire: 1..=255 bytes of UTF-8 in total, made
/// of components separated by single `/`s. Every component is non-empty,
/// has no control character, no `\` or `:`, and is not `.` or `..`; so
/// there is no leading, trailing or doubled `/` either. A name that passes
/// is a relative path below the download directory on Unix and Windows.
/// The relay never uses names on disk at all.
pub fn validate_name(name: &str) -> Result<(), ErrorCode> {
    let ok =
        !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split(SEPARATOR).all(component_ok);
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::InvalidName)
    }
}

fn component_ok(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && !c
            .chars()
            .any(|ch| ch.is_control() || matches!(ch, '\\' | ':'))
}

/// Whether two names of one batch cannot both be created: they are equal,
/// or one is a directory of the other (`a` and `a/b`), which a downloader
/// would need as a file and as a directory at once. A batch holding such a
/// pair is refused with [`ErrorCode::InvalidName`]. Byte-wise: names that
/// differ only in case or Unicode normalisation are different names here
/// (a downloader on a folding file system sees the second as a conflict).
pub fn names_conflict(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    match long.strip_prefix(short) {
        Some("") => true,
        Some(rest) => rest.starts_with(SEPARATOR),
        None => false,
    }
}
