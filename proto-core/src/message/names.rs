//! The rule every file name from the wire must pass.

use crate::error::ErrorCode;

/// The longest file name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a file name from the wire: 1..=255 bytes of UTF-8, no control
/// characters, no `/`, `\` or `:`, and not `.` or `..`. A name that passes is
/// a single path component on Unix and Windows, so it can never climb out of
/// a download directory. The relay never uses names on disk at all.
pub fn validate_name(name: &str) -> Result<(), ErrorCode> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::InvalidName)
    }
}
