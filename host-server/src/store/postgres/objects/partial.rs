//! Partial uploads in object storage (design §3.2): full parts of the
//! target blob's multipart upload, then immutable tail segments for the
//! durable bytes after the last part.
//!
//! ```text
//!   0          parts_end                        durable
//!   |-- part 0 --|-- part 1 --|                    |
//!   [ committed parts (unreadable) ) [seg f1 ) [seg f1 )[ seg f2 )   spool: [ ... )
//! ```
//!
//! A step here only writes objects; the caller then commits the returned
//! [`Synced`] in PostgreSQL under its fence, and only that commit makes
//! the bytes durable for the protocol. Each step is idempotent: part `k`
//! is always the same range (its ETag, an MD5, is the same for the same
//! bytes), and a segment key names its fence and range, so a retry with
//! the same arguments rewrites the same part or finds its segment there.
//!
//! # Call order, on the instance holding the fence
//!
//! 1. `write_spool` the received bytes.
//! 2. If [`PartialLayout::sync_needs_multipart`] (or
//!    [`PartialLayout::complete_needs_multipart`]): `start_multipart`, and
//!    commit the id before anything else, so that an id lost in a crash
//!    holds no parts.
//! 3. `sync`, then commit its [`Synced`] ([`PartialLayout::apply`] says
//!    what changes); or `complete`, then commit the blob.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use super::{Error, Objects, Result};

/// Most parts of a multipart upload (S3's limit).
pub const MAX_PARTS: u64 = 10_000;

const MIB: u64 = 1 << 20;
/// The smallest part size: above S3's 5 MiB minimum, and four 2 MiB
/// acknowledgement steps, so a part folds whole segments.
const MIN_PART: u64 = 8 * MIB;
/// Parts planned for the announced size, leaving room under
/// [`MAX_PARTS`] (tusd's `calcOptimalPartSize` does the same).
const PLANNED_PARTS: u64 = 9_000;

/// The part size of an upload announced at `size` bytes: at least 8 MiB,
/// else `size / 9,000` rounded up to a whole MiB.
pub fn part_size_for(size: u64) -> u64 {
    (size.div_ceil(PLANNED_PARTS).div_ceil(MIB) * MIB).max(MIN_PART)
}

/// Where a partial upload's durable bytes are in object storage: what its
/// PostgreSQL rows hold (`partials`, `partial_parts`, `partial_segments`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialLayout {
    /// The partial's id (the blob it becomes has the same id).
    pub id: u64,
    /// The fence this instance holds: new segments are written under it.
    pub fence: u64,
    /// Part size, fixed when the upload was announced ([`part_size_for`]).
    pub part_size: u64,
    /// The multipart upload of `blobs/{id}`, once started.
    pub upload_id: Option<String>,
    /// The ETag of part `k` at index `k`: parts are never sparse.
    pub parts: Vec<String>,
    /// `parts.len() * part_size`: bytes `[0, parts_end)` are in parts.
    pub parts_end: u64,
    /// Committed tail segments, by start, each starting where the one
    /// before ends; the first starts at or below `parts_end`.
    pub segments: Vec<Segment>,
}

/// A tail segment: bytes `[start, end)` of a partial upload in the object
/// `tail/{partial}/{fence}/{start}-{end}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment {
    /// First byte.
    pub start: u64,
    /// End of the bytes (exclusive).
    pub end: u64,
    /// The fence of the instance that wrote it (part of its key).
    pub fence: u64,
}

/// What a [`Objects::sync`] wrote: for the caller to commit (design §3.2
/// step 3), together with the new durable offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    /// Parts sent: `(part index, ETag)`, in order, continuing `parts`.
    pub new_parts: Vec<(u32, String)>,
    /// The new `parts_end`.
    pub parts_end: u64,
    /// The segment written for the new bytes, if there were any.
    pub new_segment: Option<Segment>,
    /// Segments now wholly below `parts_end`: to be doomed (design §5.3),
    /// in the same commit.
    pub obsolete_segments: Vec<Segment>,
}

impl PartialLayout {
    /// The layout of a new upload announced at `size` bytes: nothing stored.
    pub fn new(id: u64, fence: u64, size: u64) -> PartialLayout {
        PartialLayout {
            id,
            fence,
            part_size: part_size_for(size),
            upload_id: None,
            parts: Vec::new(),
            parts_end: 0,
            segments: Vec::new(),
        }
    }

    /// Whether [`Objects::sync`] with these arguments would send a part
    /// and there is no multipart upload yet: start one and commit its id
    /// first.
    pub fn sync_needs_multipart(&self, durable: u64, hashed_len: u64) -> bool {
        self.upload_id.is_none()
            && durable.min(hashed_len).saturating_sub(self.parts_end) >= self.part_size
    }

    /// Whether [`Objects::complete`] of `size` bytes needs a multipart
    /// upload that is not started: a file smaller than one part is one
    /// create-only PUT instead.
    pub fn complete_needs_multipart(&self, size: u64) -> bool {
        self.upload_id.is_none() && size >= self.part_size
    }

    /// The layout after `synced` is committed: what the caller's commit
    /// does to the rows. Applying it twice changes nothing more.
    pub fn apply(&mut self, synced: &Synced) {
        for (k, etag) in &synced.new_parts {
            let k = *k as usize;
            if let Some(old) = self.parts.get_mut(k) {
                old.clone_from(etag);
            } else if k == self.parts.len() {
                self.parts.push(etag.clone());
            }
        }
        self.parts_end = self.parts_end.max(synced.parts_end);
        self.segments
            .retain(|s| !synced.obsolete_segments.contains(s));
        if let Some(s) = synced.new_segment {
            if !self.segments.contains(&s) {
                self.segments.push(s);
                self.segments.sort_by_key(|s| s.start);
            }
        }
    }

    /// Where the stored bytes end: the last segment's end, or `parts_end`.
    fn tail_end(&self) -> u64 {
        self.segments
            .last()
            .map_or(self.parts_end, |s| s.end.max(self.parts_end))
    }

    /// The record contradicts itself: refuse to write anything from it.
    pub(super) fn check(&self) -> Result<()> {
        let corrupt = |why: &str| Err(Error::Corrupt(format!("partial {}: {why}", self.id)));
        if self.part_size == 0 {
            return corrupt("part size 0");
        }
        if (self.parts.len() as u64).checked_mul(self.part_size) != Some(self.parts_end) {
            return corrupt("parts_end is not parts × part size");
        }
        if self.upload_id.is_none() && !self.parts.is_empty() {
            return corrupt("parts without a multipart upload");
        }
        if self
            .segments
            .first()
            .is_some_and(|s| s.start > self.parts_end)
        {
            return corrupt("a gap between the parts and the first segment");
        }
        if self.segments.iter().any(|s| s.start >= s.end) {
            return corrupt("an empty segment");
        }
        if self.segments.windows(2).any(|w| w[0].end != w[1].start) {
            return corrupt("segments are not contiguous");
        }
        Ok(())
    }
}

impl Objects {
    /// Starts the multipart upload of `blobs/{layout.id}`; the caller
    /// commits the id before calling [`Objects::sync`] or
    /// [`Objects::complete`] with it. A layout that has one gets it back.
    pub async fn start_multipart(&self, layout: &PartialLayout) -> Result<String> {
        if let Some(id) = &layout.upload_id {
            return Ok(id.clone());
        }
        Ok(self.s3.create_multipart(&self.blob_path(layout.id)).await?)
    }

    /// Copies what a sync to `durable` bytes needs into object storage
    /// (design §3.2 steps 1 and 2), given the SHA-1 state's length
    /// `hashed_len` (parts stop there, invariant I2):
    ///
    /// 1. while `min(durable, hashed_len) - parts_end >= part_size`, part
    ///    `parts_end / part_size`; needs `upload_id`, else
    ///    [`Error::NoMultipart`] (see [`PartialLayout::sync_needs_multipart`]);
    /// 2. the bytes from the stored end to `durable` as one new segment,
    ///    create-only; finding it there already (a retry) counts as done.
    ///
    /// Bytes come from the spool where it holds them, else (after a
    /// takeover) from the layout's segments. Nothing is committed: the
    /// caller commits the returned [`Synced`].
    pub async fn sync(
        &self,
        layout: &PartialLayout,
        durable: u64,
        hashed_len: u64,
    ) -> Result<Synced> {
        layout.check()?;
        let part = layout.part_size;
        let fold_to = durable.min(hashed_len);
        let mut parts_end = layout.parts_end;
        let mut new_parts = Vec::new();
        if fold_to.saturating_sub(parts_end) >= part {
            let upload_id = layout
                .upload_id
                .as_ref()
                .ok_or(Error::NoMultipart(layout.id))?;
            let path = self.blob_path(layout.id);
            while fold_to - parts_end >= part {
                let k = part_index(layout, parts_end)?;
                let bytes = self.gather(layout, parts_end..parts_end + part).await?;
                let etag = self.put_part(&path, upload_id, k, bytes).await?;
                new_parts.push((k, etag));
                parts_end += part;
            }
        }
        let from = layout.tail_end().max(parts_end);
        let new_segment = if durable > from {
            let segment = Segment {
                start: from,
                end: durable,
                fence: layout.fence,
            };
            let bytes = self.gather(layout, from..durable).await?;
            let path = self.segment_path(layout.id, &segment);
            match self
                .s3
                .put_opts(&path, PutPayload::from(bytes), PutMode::Create.into())
                .await
            {
                // Our fence and range name the key: a retry's own segment.
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            Some(segment)
        } else {
            None
        };
        let obsolete_segments = layout
            .segments
            .iter()
            .filter(|s| s.end <= parts_end)
            .copied()
            .collect();
        Ok(Synced {
            new_parts,
            parts_end,
            new_segment,
            obsolete_segments,
        })
    }

    /// Reads bytes of the partial upload from `offset` into `buf`: from the
    /// spool where it holds them, else from the committed segments; fewer
    /// bytes at the end of what is stored, 0 past it. Bytes already in
    /// parts cannot be read ([`Error::InParts`]); a resume needs none
    /// (invariant I2: they are all hashed).
    pub async fn read_partial(
        &self,
        layout: &PartialLayout,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        layout.check()?;
        let held = self.spool.held(layout.id);
        let end = offset.saturating_add(buf.len() as u64);
        let mut n = 0;
        while n < buf.len() {
            let pos = offset + n as u64;
            if let Some(bytes) = self.piece(layout, held.as_ref(), pos..end).await? {
                buf[n..n + bytes.len()].copy_from_slice(&bytes);
                n += bytes.len();
                continue;
            }
            if n == 0 && pos < layout.parts_end {
                return Err(Error::InParts {
                    partial: layout.id,
                    offset: pos,
                });
            }
            let stored_end = layout.tail_end().max(held.as_ref().map_or(0, |h| h.end));
            if n == 0 && pos < stored_end {
                return Err(Error::Missing {
                    partial: layout.id,
                    start: pos,
                    end,
                });
            }
            break;
        }
        Ok(n)
    }

    /// Makes `blobs/{id}` the upload's `size` bytes: the parts left in
    /// `[parts_end, size)` and `CompleteMultipartUpload`, or one
    /// create-only PUT for a file smaller than a part with no multipart
    /// upload. A retry after an earlier try succeeded (the blob exists, the
    /// upload is gone) checks the blob's size: the right one means done,
    /// another is [`Error::Conflict`]; no blob and no upload is
    /// [`Error::NotFound`] (aborted: reset the partial). Nothing is
    /// committed.
    pub async fn complete(&self, layout: &PartialLayout, size: u64) -> Result<()> {
        layout.check()?;
        let path = self.blob_path(layout.id);
        let Some(upload_id) = &layout.upload_id else {
            if layout.complete_needs_multipart(size) {
                return Err(Error::NoMultipart(layout.id));
            }
            let bytes = self.gather(layout, 0..size).await?;
            return match self
                .s3
                .put_opts(&path, PutPayload::from(bytes), PutMode::Create.into())
                .await
            {
                Ok(_) => Ok(()),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    self.check_completed(&path, size).await
                }
                Err(e) => Err(e.into()),
            };
        };
        // A retry after an earlier completion (its answer lost) finds the
        // blob at once, without re-sending the last parts first to learn
        // that the upload is gone. (moto even answers such a part with a
        // 500, retried for RETRY_TIMEOUT, where S3 says NoSuchUpload.)
        match self.check_completed(&path, size).await {
            Err(Error::NotFound(_)) => {}
            done => return done,
        }
        let mut parts: Vec<PartId> = layout
            .parts
            .iter()
            .map(|etag| PartId {
                content_id: etag.clone(),
            })
            .collect();
        let mut start = layout.parts_end;
        while start < size {
            let end = size.min(start + layout.part_size);
            let k = part_index(layout, start)?;
            let bytes = self.gather(layout, start..end).await?;
            match self.put_part(&path, upload_id, k, bytes).await {
                Ok(etag) => parts.push(PartId { content_id: etag }),
                // Completed (or aborted) already.
                Err(Error::NotFound(_)) => return self.check_completed(&path, size).await,
                Err(e) => return Err(e),
            }
            start = end;
        }
        match self.s3.complete_multipart(&path, upload_id, parts).await {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::NotFound { .. } | object_store::Error::AlreadyExists { .. },
            ) => self.check_completed(&path, size).await,
            Err(e) => Err(e.into()),
        }
    }

    /// An earlier try completed `path` if it holds `size` bytes.
    async fn check_completed(&self, path: &Path, size: u64) -> Result<()> {
        let meta = self.s3.head(path).await?;
        if meta.size == size {
            Ok(())
        } else {
            Err(Error::Conflict {
                key: path.to_string(),
                found: meta.size,
                expected: size,
            })
        }
    }

    async fn put_part(
        &self,
        path: &Path,
        upload_id: &String,
        k: u32,
        bytes: Bytes,
    ) -> Result<String> {
        let part = self
            .s3
            .put_part(path, upload_id, k as usize, PutPayload::from(bytes))
            .await?;
        Ok(part.content_id)
    }

    /// Bytes `range` of the upload, from the spool and segments; every byte
    /// must be held by one of them.
    async fn gather(&self, layout: &PartialLayout, range: Range<u64>) -> Result<Bytes> {
        let held = self.spool.held(layout.id);
        let len = usize::try_from(range.end - range.start)
            .map_err(|_| Error::Corrupt(format!("range {range:?} does not fit in memory")))?;
        let mut pos = range.start;
        let mut out = BytesMut::new();
        while pos < range.end {
            let Some(bytes) = self.piece(layout, held.as_ref(), pos..range.end).await? else {
                return Err(Error::Missing {
                    partial: layout.id,
                    start: pos,
                    end: range.end,
                });
            };
            if pos == range.start && bytes.len() == len {
                // The common case: one source held it all. No copy.
                return Ok(bytes);
            }
            pos += bytes.len() as u64;
            out.reserve(len - out.len());
            out.extend_from_slice(&bytes);
        }
        Ok(out.freeze())
    }

    /// The bytes from `range.start` on, up to `range.end`, that the first
    /// source holding `range.start` has: the spool (`held`), else a
    /// committed segment. `None` if neither holds it.
    async fn piece(
        &self,
        layout: &PartialLayout,
        held: Option<&Range<u64>>,
        range: Range<u64>,
    ) -> Result<Option<Bytes>> {
        let pos = range.start;
        if let Some(h) = held.filter(|h| h.contains(&pos)) {
            let len = to_len(range.end.min(h.end) - pos)?;
            return Ok(Some(self.spool.read(layout.id, pos, len).await?.into()));
        }
        let Some(segment) = layout
            .segments
            .iter()
            .find(|s| s.start <= pos && pos < s.end)
        else {
            return Ok(None);
        };
        let to = range.end.min(segment.end);
        let path = self.segment_path(layout.id, segment);
        let (bytes, _) = self
            .get_range(&path, pos - segment.start..to - segment.start)
            .await?;
        if bytes.len() as u64 != to - pos {
            return Err(Error::Corrupt(format!(
                "{path} holds fewer bytes than its record"
            )));
        }
        Ok(Some(bytes))
    }
}

/// The index of the part starting at `start`.
fn part_index(layout: &PartialLayout, start: u64) -> Result<u32> {
    let k = start / layout.part_size;
    if k >= MAX_PARTS {
        return Err(Error::Corrupt(format!(
            "partial {}: part {k} is past S3's {MAX_PARTS} (part size {} too small)",
            layout.id, layout.part_size
        )));
    }
    Ok(k as u32)
}

fn to_len(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::Corrupt(format!("{n} bytes do not fit in memory")))
}
