//! Request headers that select what a download sends: `Range`
//! (RFC 9110 §14.2), `If-Range` (§13.1.5) and `If-None-Match` (§13.1.2).
//!
//! Only one byte range is served. What the relay does with each kind of
//! `Range` value, for a representation of `len` bytes:
//!
//! ```text
//!   bytes=A-B, bytes=A-, bytes=-N   one range        → 206, or 416 if it selects nothing
//!   bytes=-0, bytes=A- with A ≥ len, any range of an empty representation  → 416 `bytes */len`
//!   bytes=A-B,C-D (several, overlapping or not)     → ignored: 200, the whole
//!   bytes=5-2, bytes=x-, items=0-1, non-ASCII       → ignored: 200, the whole
//! ```
//!
//! Ignoring a `Range` is always allowed (§14.2); serving several ranges
//! would mean multipart bodies, which no downloader needs for a resume.
//! Numbers too large for `u64` saturate, so `bytes=99999999999999999999-`
//! is a start past the end (416), never an overflow.

/// What a request's `Range` selects of a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// No `Range`, or one that is ignored: the whole representation (200).
    Full,
    /// Bytes `start..end` (`end` exclusive, `start < end <= len`): 206.
    Part {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// One well-formed range that selects no byte: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value for a representation of `len` bytes.
pub fn parse(value: Option<&[u8]>, len: u64) -> Ranged {
    let Some(text) = value.and_then(|v| core::str::from_utf8(v).ok()) else {
        return Ranged::Full;
    };
    let text = text.trim();
    let Some(unit_end) = text.find('=') else {
        return Ranged::Full;
    };
    if !text[..unit_end].trim().eq_ignore_ascii_case("bytes") {
        return Ranged::Full;
    }
    let spec = text[unit_end + 1..].trim();
    if spec.contains(',') {
        return Ranged::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ranged::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // A suffix: the last N bytes.
        let Some(n) = number(last) else {
            return Ranged::Full;
        };
        if n == 0 || len == 0 {
            return Ranged::Unsatisfiable;
        }
        return Ranged::Part {
            start: len - n.min(len),
            end: len,
        };
    }
    let Some(start) = number(first) else {
        return Ranged::Full;
    };
    let end = if last.is_empty() {
        len
    } else {
        match number(last) {
            // last-pos < first-pos makes the header invalid: ignored.
            Some(l) if l < start => return Ranged::Full,
            Some(l) => l.saturating_add(1).min(len),
            None => return Ranged::Full,
        }
    };
    if start >= len {
        return Ranged::Unsatisfiable;
    }
    Ranged::Part { start, end }
}

/// Decimal digits, saturating at `u64::MAX`; `None` if empty or not digits.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// Whether an `If-None-Match` value matches `etag` (a quoted strong tag):
/// `*`, or a listed tag equal to it by the weak comparison (§8.8.3.2), as
/// a `GET` requires.
pub fn none_match(value: Option<&[u8]>, etag: &str) -> bool {
    let Some(text) = value.and_then(|v| core::str::from_utf8(v).ok()) else {
        return false;
    };
    let text = text.trim();
    text == "*"
        || text
            .split(',')
            .map(|t| t.trim())
            .any(|t| t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// Whether the `Range` of a request still applies given its `If-Range`:
/// without one, yes; with one, only if it is our strong `etag` (a weak
/// tag never matches) or exactly our `Last-Modified` date.
pub fn if_range_holds(value: Option<&[u8]>, etag: &str, last_modified: &str) -> bool {
    let Some(value) = value else {
        return true;
    };
    match core::str::from_utf8(value) {
        Ok(text) => {
            let text = text.trim();
            text == etag
                || (!text.starts_with('"') && !text.starts_with("W/") && text == last_modified)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str, len: u64) -> Ranged {
        parse(Some(v.as_bytes()), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(p("bytes=0-0", 10), Ranged::Part { start: 0, end: 1 });
        assert_eq!(p("bytes=2-", 10), Ranged::Part { start: 2, end: 10 });
        assert_eq!(p("bytes=2-400", 10), Ranged::Part { start: 2, end: 10 });
        assert_eq!(p("bytes=-3", 10), Ranged::Part { start: 7, end: 10 });
        assert_eq!(p("bytes=-30", 10), Ranged::Part { start: 0, end: 10 });
        assert_eq!(p(" Bytes = 1 - 2 ", 10), Ranged::Part { start: 1, end: 3 });
        assert_eq!(p("bytes=9-9", 10), Ranged::Part { start: 9, end: 10 });
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(p("bytes=-0", 10), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=10-", 10), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=0-", 0), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=-5", 0), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=99999999999999999999-", 10), Ranged::Unsatisfiable);
        assert_eq!(
            p("bytes=99999999999999999999-99999999999999999999", 10),
            Ranged::Unsatisfiable
        );
    }

    #[test]
    fn ignored_ranges_serve_the_whole() {
        for v in [
            "bytes=5-2",
            "bytes=0-1,3-4",
            "bytes=0-5,2-8",
            "bytes=",
            "bytes=-",
            "bytes=x-",
            "bytes=1-y",
            "bytes=--1",
            "bytes=+1-2",
            "items=0-1",
            "bytes 0-1",
            "",
        ] {
            assert_eq!(p(v, 10), Ranged::Full, "{v:?}");
        }
        assert_eq!(parse(Some(b"bytes=\xff-1"), 10), Ranged::Full);
        assert_eq!(parse(None, 10), Ranged::Full);
        assert_eq!(
            p("bytes=-99999999999999999999", 10),
            Ranged::Part { start: 0, end: 10 }
        );
    }

    #[test]
    fn conditionals() {
        let tag = "\"abc\"";
        assert!(none_match(Some(b"*"), tag));
        assert!(none_match(Some(b"\"x\", W/\"abc\""), tag));
        assert!(!none_match(Some(b"\"abcd\""), tag));
        assert!(!none_match(None, tag));
        let date = "Fri, 04 Dec 2026 16:07:01 GMT";
        assert!(if_range_holds(None, tag, date));
        assert!(if_range_holds(Some(tag.as_bytes()), tag, date));
        assert!(!if_range_holds(Some(b"W/\"abc\""), tag, date));
        assert!(if_range_holds(Some(date.as_bytes()), tag, date));
        assert!(!if_range_holds(
            Some(b"Thu, 03 Dec 2026 16:07:01 GMT"),
            tag,
            date
        ));
    }
}
