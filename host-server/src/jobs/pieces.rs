//! A file's received bytes on their way to the store, in order: pieces of
//! the read buffers they arrived in, kept where they lie, and bytes copied
//! out of frames that could not be.
//!
//! A TCP connection that streams data reads into buffers of its own
//! (`transport::rx`) and hands the session each frame together with the
//! buffer it lies in. A data frame's bytes are then kept as a shared slice
//! of that buffer ([`Piece::Shared`]) until their write has run: nothing
//! copies them between the socket and the page cache. Bytes that arrive any
//! other way (a frame gathered across reads by the decoder, the serial
//! line, a small frame that is not worth pinning a read buffer for) are
//! copied into buffers of the upload's own ([`Piece::Copied`]).

use bytes::Bytes;

/// Frames with fewer data bytes than this are copied even when they could
/// be shared: a small piece would keep a whole read buffer alive.
pub(crate) const MIN_SHARED: usize = 4 * 1024;

/// Some contiguous bytes of a file.
#[derive(Debug)]
pub(crate) enum Piece {
    /// Copied out of frames, into a buffer the upload fills again once its
    /// write has run.
    Copied(Vec<u8>),
    /// Where they were read from the socket.
    Shared(Bytes),
}

impl Piece {
    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Piece::Copied(v) => v,
            Piece::Shared(b) => b,
        }
    }

    /// `part` as a slice of `backing`, sharing its buffer, if `part` lies
    /// within it and is worth sharing ([`MIN_SHARED`]).
    pub(crate) fn share(backing: &Bytes, part: &[u8]) -> Option<Bytes> {
        if part.len() < MIN_SHARED {
            return None;
        }
        // Addresses, compared as numbers: `Bytes::slice_ref` would panic
        // on a part from elsewhere (a frame the decoder gathered).
        let offset = (part.as_ptr() as usize).checked_sub(backing.as_ptr() as usize)?;
        let end = offset.checked_add(part.len())?;
        (end <= backing.len()).then(|| backing.slice(offset..end))
    }
}

/// Contiguous bytes of a file as pieces, in order.
#[derive(Debug, Default)]
pub(crate) struct Pieces {
    list: Vec<Piece>,
    len: usize,
}

impl Pieces {
    /// Pieces of one buffer's bytes (tests, and what was gathered whole).
    #[cfg(test)]
    pub(crate) fn copied(bytes: Vec<u8>) -> Pieces {
        Pieces {
            len: bytes.len(),
            list: vec![Piece::Copied(bytes)],
        }
    }

    /// The bytes they hold.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether they hold no byte.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Each piece's bytes, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.list.iter().map(Piece::bytes)
    }

    /// Adds bytes that stay where they were read.
    pub(crate) fn push_shared(&mut self, bytes: Bytes) {
        self.len += bytes.len();
        self.list.push(Piece::Shared(bytes));
    }

    /// Adds a copy of `bytes`: into the last piece if it is a copy with
    /// room for them (a copy never grows its buffer, since growing copies
    /// it again), else into a buffer from `fresh`, which is given the
    /// length needed and must have at least that capacity.
    pub(crate) fn push_copy(&mut self, bytes: &[u8], fresh: impl FnOnce(usize) -> Vec<u8>) {
        self.len += bytes.len();
        if let Some(Piece::Copied(last)) = self.list.last_mut() {
            if last.capacity() - last.len() >= bytes.len() {
                last.extend_from_slice(bytes);
                return;
            }
        }
        let mut buf = fresh(bytes.len());
        buf.extend_from_slice(bytes);
        self.list.push(Piece::Copied(buf));
    }

    /// Adds `other`'s pieces after these.
    pub(crate) fn append(&mut self, mut other: Pieces) {
        self.len += other.len;
        self.list.append(&mut other.list);
    }

    /// Empties them: the copies' buffers, emptied, to be filled again.
    pub(crate) fn drain_buffers(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.len = 0;
        self.list.drain(..).filter_map(|p| match p {
            Piece::Copied(mut v) => {
                v.clear();
                Some(v)
            }
            Piece::Shared(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_shared_only_from_within_its_backing() {
        let backing = Bytes::from(vec![7u8; 3 * MIN_SHARED]);
        let inside = &backing[MIN_SHARED..2 * MIN_SHARED + 1];
        let shared = Piece::share(&backing, inside).expect("within");
        assert_eq!(shared.as_ptr(), inside.as_ptr());
        assert_eq!(shared.len(), inside.len());
        assert!(
            Piece::share(&backing, &backing[..MIN_SHARED - 1]).is_none(),
            "too small"
        );
        let elsewhere = vec![7u8; MIN_SHARED];
        assert!(Piece::share(&backing, &elsewhere).is_none());
        let past_end = Bytes::from(vec![1u8; MIN_SHARED]);
        assert!(Piece::share(&past_end.slice(..MIN_SHARED / 2), &past_end).is_none());
    }

    #[test]
    fn copies_fill_the_last_copy_and_never_grow_it() {
        let mut p = Pieces::default();
        let mut fresh_calls = Vec::new();
        let mut fresh = |need: usize| {
            fresh_calls.push(need);
            Vec::with_capacity(need.max(10))
        };
        p.push_copy(b"abc", &mut fresh);
        p.push_copy(b"defgh", &mut fresh);
        p.push_copy(b"ijk", &mut fresh); // 11 > 10: a new buffer
        p.push_shared(Bytes::from_static(b"lmn"));
        p.push_copy(b"o", &mut fresh); // after a shared piece: a new buffer
        assert_eq!(fresh_calls, [3, 3, 1]);
        assert_eq!(p.len(), 15);
        assert_eq!(p.iter().collect::<Vec<_>>().concat(), b"abcdefghijklmno");
        let mut q = Pieces::default();
        q.push_shared(Bytes::from_static(b"pq"));
        p.append(q);
        assert_eq!(p.len(), 17);
        let buffers: Vec<_> = p.drain_buffers().collect();
        assert_eq!(
            buffers.len(),
            3,
            "the copies come back, the shared pieces do not"
        );
        assert!(buffers.iter().all(Vec::is_empty));
        assert!(p.is_empty() && p.iter().next().is_none());
    }
}
