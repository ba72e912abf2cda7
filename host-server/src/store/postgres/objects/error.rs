//! What can go wrong with the contents in object storage, and whether
//! trying again may help.

use std::error::Error as StdError;

/// An object storage step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage could not be reached or did not answer in time, after
    /// object_store's own retries ([`super::RETRY_TIMEOUT`]): the same step
    /// may succeed later.
    #[error("object storage unavailable: {0}")]
    Unavailable(#[source] object_store::Error),
    /// The storage refused the request, or answered with an error status
    /// after its retries: trying again is not expected to help.
    #[error("object storage failed: {0}")]
    Storage(#[source] object_store::Error),
    /// No such object or multipart upload.
    #[error("no such object: {0}")]
    NotFound(String),
    /// Bytes a step needs are neither in this instance's spool nor in a
    /// segment of the layout (a caller that syncs past what it wrote, or a
    /// layout missing a committed segment).
    #[error("bytes {start}..{end} of partial {partial} are neither spooled nor in a segment")]
    Missing {
        /// The partial upload.
        partial: u64,
        /// First missing byte.
        start: u64,
        /// End of the range asked for.
        end: u64,
    },
    /// A read of bytes that are only in parts of an incomplete multipart
    /// upload, which S3 cannot read back (design §3.2, I2: a resume never
    /// needs them).
    #[error(
        "byte {offset} of partial {partial} is in a multipart part: unreadable until complete"
    )]
    InParts {
        /// The partial upload.
        partial: u64,
        /// The offset asked for.
        offset: u64,
    },
    /// Parts must be sent and the layout has no multipart upload: the
    /// caller must [`start_multipart`](super::Objects::start_multipart) and
    /// commit the id first (design §3.2: an id lost before its commit then
    /// holds no bytes).
    #[error("partial {0} needs a multipart upload (start_multipart, committed) first")]
    NoMultipart(u64),
    /// A completion found an object already at the blob's key, of another
    /// size than the file's.
    #[error("{key} exists with {found} bytes, not {expected}")]
    Conflict {
        /// The blob's key.
        key: String,
        /// Its size.
        found: u64,
        /// The file's size.
        expected: u64,
    },
    /// The layout (or an object) contradicts itself: a corrupt record.
    #[error("corrupt object layout: {0}")]
    Corrupt(String),
    /// The configuration or a stored key cannot be used.
    #[error("object storage configuration: {0}")]
    Config(String),
    /// The local spool failed.
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
}

/// Result of an object storage step.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the same step may succeed if tried again later: the storage
    /// was unreachable or too slow, not refusing.
    ///
    /// object_store exposes the transport failure of a request (no
    /// connection, a timeout, a reset) but not the status of a failed
    /// answer, so a 5xx that outlasted its retries counts as permanent.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => Error::NotFound(path),
            e if transport_failure(&e) => Error::Unavailable(e),
            e => Error::Storage(e),
        }
    }
}

/// Whether the request never got an answer: an HTTP client error
/// anywhere in the chain of sources.
fn transport_failure(e: &object_store::Error) -> bool {
    let mut cur: &(dyn StdError + 'static) = e;
    loop {
        if cur.is::<object_store::client::HttpError>() {
            return true;
        }
        match cur.source() {
            Some(next) => cur = next,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::client::{HttpError, HttpErrorKind};

    #[test]
    fn transport_failures_are_transient_and_refusals_are_not() {
        let timeout = object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(
                HttpErrorKind::Timeout,
                std::io::Error::other("timed out"),
            )),
        };
        assert!(Error::from(timeout).is_transient());
        let refused = object_store::Error::PermissionDenied {
            path: "blobs/1".into(),
            source: "403".into(),
        };
        assert!(!Error::from(refused).is_transient());
        let gone = object_store::Error::NotFound {
            path: "blobs/1".into(),
            source: "404".into(),
        };
        assert!(matches!(Error::from(gone), Error::NotFound(p) if p == "blobs/1"));
    }
}
