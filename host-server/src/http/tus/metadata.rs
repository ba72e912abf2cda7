//! `Upload-Metadata`: comma-separated pairs `key base64value` (a key alone
//! has an empty value), of which Pickup reads `filename` (or `name`),
//! `sha1` and `batch`.

use std::collections::HashMap;

use base64::Engine;
use pickup_proto::Sha1Digest;

/// Most pairs one header may hold: a header is at most what hyper reads
/// of a request head anyway, this only bounds the map.
const MAX_PAIRS: usize = 32;

/// The longest header taken: a name is at most a few KiB of base64, and
/// nothing else a client sends needs more.
pub const MAX_LEN: usize = 8 * 1024;

/// Why an `Upload-Metadata` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// A pair is not `key` or `key value`, or a key is empty or repeated.
    #[error("malformed Upload-Metadata pair")]
    Malformed,
    /// A value is not base64.
    #[error("Upload-Metadata value of {0:?} is not base64")]
    Base64(String),
    /// More pairs than a client needs.
    #[error("too many Upload-Metadata pairs")]
    TooMany,
    /// Longer than [`MAX_LEN`].
    #[error("Upload-Metadata is too long")]
    TooLong,
}

/// The decoded pairs of an `Upload-Metadata` header (values are bytes:
/// the protocol does not say they are text).
pub fn parse(header: &str) -> Result<HashMap<String, Vec<u8>>, MetadataError> {
    let mut pairs = HashMap::new();
    if header.len() > MAX_LEN {
        return Err(MetadataError::TooLong);
    }
    if header.trim().is_empty() {
        return Ok(pairs);
    }
    for pair in header.split(',') {
        if pairs.len() >= MAX_PAIRS {
            return Err(MetadataError::TooMany);
        }
        let mut parts = pair.trim().split(' ');
        let key = parts.next().unwrap_or("");
        let value = parts.next().unwrap_or("");
        if key.is_empty() || parts.next().is_some() || !key.is_ascii() {
            return Err(MetadataError::Malformed);
        }
        let value = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| MetadataError::Base64(key.to_owned()))?;
        if pairs.insert(key.to_owned(), value).is_some() {
            return Err(MetadataError::Malformed);
        }
    }
    Ok(pairs)
}

/// A SHA-1 as metadata gives it: 40 hex digits (either case) or the
/// base64 of its 20 bytes; `None` if it is neither.
pub fn parse_sha1(value: &[u8]) -> Option<Sha1Digest> {
    let text = core::str::from_utf8(value).ok()?;
    let bytes = if text.len() == 40 {
        hex(text)?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?
    };
    Some(Sha1Digest(bytes.try_into().ok()?))
}

/// The bytes of an even number of hex digits.
fn hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| {
            let s = core::str::from_utf8(p).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_decode_and_a_key_alone_is_empty() {
        // "a.txt" and "x" in base64, as tus-js-client sends them.
        let m = parse("filename YS50eHQ=,flag, other eA==").unwrap();
        assert_eq!(m["filename"], b"a.txt");
        assert_eq!(m["flag"], b"");
        assert_eq!(m["other"], b"x");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(
            parse("filename YS50eHQ= extra"),
            Err(MetadataError::Malformed)
        );
        assert_eq!(parse(",filename YQ=="), Err(MetadataError::Malformed));
        assert_eq!(parse("a YQ==,a YQ=="), Err(MetadataError::Malformed));
        assert_eq!(
            parse("filename not*base64"),
            Err(MetadataError::Base64("filename".into()))
        );
        let many: Vec<String> = (0..40).map(|i| format!("k{i} YQ==")).collect();
        assert_eq!(parse(&many.join(",")), Err(MetadataError::TooMany));
        let long = format!("filename {}", "QUFB".repeat(MAX_LEN / 4));
        assert_eq!(parse(&long), Err(MetadataError::TooLong));
    }

    #[test]
    fn sha1_is_hex_or_base64() {
        let d = Sha1Digest::of(b"abc");
        let hex: String = d.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_sha1(hex.as_bytes()), Some(d));
        assert_eq!(parse_sha1(hex.to_uppercase().as_bytes()), Some(d));
        let b64 = base64::engine::general_purpose::STANDARD.encode(d.0);
        assert_eq!(parse_sha1(b64.as_bytes()), Some(d));
        assert_eq!(parse_sha1(b"abc"), None);
        assert_eq!(parse_sha1(&[b'g'; 40]), None);
        // 19 bytes of base64 is no SHA-1.
        let short = base64::engine::general_purpose::STANDARD.encode([0u8; 19]);
        assert_eq!(parse_sha1(short.as_bytes()), None);
    }
}
