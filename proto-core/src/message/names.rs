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
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes.split(|&b| b == SEPARATOR as u8).all(component_ok);
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::InvalidName)
    }
}

/// One component of a valid name. Byte-wise over the UTF-8 (what an MCU
/// that checks every manifest name can afford: no `char` decoding), and
/// the same rule as `char::is_control` plus `\` and `:`: the control
/// characters are U+0000..U+001F and U+007F (single bytes) and
/// U+0080..U+009F (`C2 80`..`C2 9F`); no other character's encoding
/// contains those byte sequences.
fn component_ok(c: &[u8]) -> bool {
    let control_or_reserved = c.iter().enumerate().any(|(i, &b)| {
        b < 0x20
            || matches!(b, 0x7f | b'\\' | b':')
            || (b == 0xc2 && c.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
    });
    !c.is_empty() && c != b"." && c != b".." && !control_or_reserved
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-wise rule agrees with the `char` one it replaced, for
    /// every character up to U+0800 and a few beyond, in every position.
    #[test]
    fn byte_wise_rule_matches_the_char_rule() {
        let by_chars = |c: &str| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && !c
                    .chars()
                    .any(|ch| ch.is_control() || matches!(ch, '\\' | ':'))
        };
        let beyond = ['\u{2028}', '\u{feff}', '\u{10ffff}', '\u{e000}'];
        for ch in (0..0x800u32).filter_map(char::from_u32).chain(beyond) {
            for text in [format!("{ch}"), format!("a{ch}b"), format!("é{ch}")] {
                assert_eq!(component_ok(text.as_bytes()), by_chars(&text), "{:?}", text);
            }
        }
        assert!(validate_name("dir/é.txt").is_ok());
        assert!(validate_name("a//b").is_err() && validate_name("/a").is_err());
        assert!(validate_name("a/../b").is_err() && validate_name("a\u{85}").is_err());
    }
}
