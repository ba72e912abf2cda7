//! `Upload-Checksum: sha1 <base64 of 20 bytes>`, the only algorithm the
//! relay offers (`Tus-Checksum-Algorithm: sha1`).

use base64::Engine;
use pickup_proto::Sha1Digest;

/// Why an `Upload-Checksum` header was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// An algorithm other than `sha1`.
    #[error("unsupported checksum algorithm (only sha1)")]
    Algorithm,
    /// Not `algorithm value`, or the value is not the base64 of 20 bytes.
    #[error("malformed Upload-Checksum")]
    Malformed,
}

/// The SHA-1 a PATCH body must have.
pub fn parse(header: &str) -> Result<Sha1Digest, ChecksumError> {
    let (algorithm, value) = header
        .trim()
        .split_once(' ')
        .ok_or(ChecksumError::Malformed)?;
    if !algorithm.eq_ignore_ascii_case("sha1") {
        return Err(ChecksumError::Algorithm);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| ChecksumError::Malformed)?;
    Ok(Sha1Digest(
        bytes.try_into().map_err(|_| ChecksumError::Malformed)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_checksums_parse() {
        let d = Sha1Digest::of(b"hello");
        let b64 = base64::engine::general_purpose::STANDARD.encode(d.0);
        assert_eq!(parse(&format!("sha1 {b64}")), Ok(d));
        assert_eq!(parse(&format!("SHA1 {b64}")), Ok(d));
    }

    #[test]
    fn other_algorithms_and_garbage_are_refused() {
        assert_eq!(
            parse("md5 XUFAKrxLKna5cZ2REBfFkg=="),
            Err(ChecksumError::Algorithm)
        );
        assert_eq!(parse("sha1"), Err(ChecksumError::Malformed));
        assert_eq!(parse("sha1 !!!"), Err(ChecksumError::Malformed));
        assert_eq!(parse("sha1 AAAA"), Err(ChecksumError::Malformed));
    }
}
