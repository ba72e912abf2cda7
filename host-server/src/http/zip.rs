//! A batch as one stored ZIP, laid out before its first byte is sent.
//!
//! ```text
//!   per file:  local header │ the file's bytes │ data descriptor (CRC-32, sizes)
//!   then:      central directory (one entry per file)
//!              [ZIP64 end record │ ZIP64 locator]   │ end record
//! ```
//!
//! Nothing is compressed (method 0), so every offset and the total size
//! follow from the names and sizes alone: `Content-Length`, `Range` and a
//! `curl -C -` resume work on the archive as on a file, and the bytes at
//! any offset are the same in every response (times come from the batch,
//! never from the clock). Names are UTF-8 (flag bit 11); an entry whose
//! size reaches 4 GiB, or whose header starts beyond it, carries ZIP64
//! extra fields, and the archive then ends with the ZIP64 records.
//!
//! The CRC-32 a ZIP needs per file is not in the store, so entries use
//! data descriptors (flag bit 3): the local header's CRC is 0 and the
//! real one follows the file's bytes, computed while they are sent. CRCs
//! are kept in a bounded cache by content ([`CrcCache`]), so a resume after
//! a first pass needs no hashing. A range that starts inside a file whose
//! CRC is not known reads that file once to compute it when it reaches its
//! descriptor; one that reaches the central directory without the CRCs of
//! earlier files (a relay restarted since the first pass, or a download
//! that skipped them) reads those files: the work is bounded by the batch's
//! size, and done once per content while the cache keeps it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use crc::{Crc, Digest, Table, CRC_32_ISO_HDLC};
use sha1::Digest as _;

use super::files::{ranged, Representation};
use super::{http_date, read_exact, HttpState, CHUNK};
use crate::relay::{lock, Relay};
use crate::store::{Batch, BlobId, FileContent};

/// Sizes and offsets from here on need ZIP64 fields (the 32-bit field's
/// all-ones value is the marker itself, so it counts as too large).
const ZIP64_AT: u64 = 0xFFFF_FFFF;

/// CRCs kept at most (about 50 bytes each); when full, one is forgotten
/// for each new one.
const CRC_CACHE_ENTRIES: usize = 65_536;

static CRC32: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISO_HDLC);

/// A content as the CRC cache knows it: the blob and what the batch says
/// of it, so a blob id used again for other content never finds a stale CRC.
type ContentKey = (BlobId, u64, [u8; 20]);

/// CRC-32s of contents already sent or computed, shared by all requests.
#[derive(Debug, Default)]
pub(super) struct CrcCache {
    crcs: Mutex<HashMap<ContentKey, u32>>,
}

impl CrcCache {
    fn get(&self, key: &ContentKey) -> Option<u32> {
        lock(&self.crcs).get(key).copied()
    }

    fn put(&self, key: ContentKey, crc: u32) {
        let mut crcs = lock(&self.crcs);
        if crcs.len() >= CRC_CACHE_ENTRIES && !crcs.contains_key(&key) {
            if let Some(old) = crcs.keys().next().copied() {
                crcs.remove(&old);
            }
        }
        crcs.insert(key, crc);
    }
}

/// One file of the archive.
#[derive(Debug)]
struct Entry {
    name: String,
    size: u64,
    key: ContentKey,
    /// Offset of its local header.
    offset: u64,
    dos_time: u16,
    dos_date: u16,
    executable: bool,
    /// Sizes in ZIP64 fields.
    zip64: bool,
}

impl Entry {
    fn header_len(&self) -> u64 {
        30 + self.name.len() as u64 + if self.zip64 { 20 } else { 0 }
    }

    fn descriptor_len(&self) -> u64 {
        if self.zip64 {
            24
        } else {
            16
        }
    }

    fn offset64(&self, zip64_at: u64) -> bool {
        self.offset >= zip64_at
    }

    fn central_extra_len(&self, zip64_at: u64) -> u64 {
        let fields = if self.zip64 { 2 } else { 0 } + u64::from(self.offset64(zip64_at));
        if fields == 0 {
            0
        } else {
            4 + 8 * fields
        }
    }

    fn version_needed(&self, zip64_at: u64) -> u16 {
        if self.zip64 || self.offset64(zip64_at) {
            45
        } else {
            20
        }
    }
}

/// A part of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Local(usize),
    Data(usize),
    Descriptor(usize),
    Central(usize),
    End,
}

/// Where every byte of the archive comes from.
#[derive(Debug)]
struct Layout {
    entries: Vec<Entry>,
    /// Each piece with its first offset, in order.
    pieces: Vec<(u64, Piece)>,
    cd_offset: u64,
    cd_size: u64,
    zip64_end: bool,
    total: u64,
    zip64_at: u64,
}

impl Layout {
    /// The layout of the ready `batch`'s files; sizes and offsets from
    /// `zip64_at` on use ZIP64 fields ([`ZIP64_AT`] but in tests).
    fn new(batch: &Batch, zip64_at: u64) -> Layout {
        let mut entries = Vec::with_capacity(batch.files.len());
        let mut pieces = Vec::with_capacity(batch.files.len() * 4 + 1);
        let mut at = 0u64;
        for f in &batch.files {
            let blob = match f.content {
                FileContent::Blob(b) => b,
                // Not served: callers check `ready` first.
                FileContent::Partial { .. } => BlobId::EMPTY,
            };
            let mtime = f.attrs.map_or(batch.created_at as i64, |a| a.mtime);
            let (dos_time, dos_date) = dos_time(mtime);
            let e = Entry {
                name: f.name.clone(),
                size: f.size,
                key: (blob, f.size, f.sha1.0),
                offset: at,
                dos_time,
                dos_date,
                executable: f.attrs.is_some_and(|a| a.executable),
                zip64: f.size >= zip64_at,
            };
            let i = entries.len();
            pieces.push((at, Piece::Local(i)));
            at += e.header_len();
            pieces.push((at, Piece::Data(i)));
            at += e.size;
            pieces.push((at, Piece::Descriptor(i)));
            at += e.descriptor_len();
            entries.push(e);
        }
        let cd_offset = at;
        for (i, e) in entries.iter().enumerate() {
            pieces.push((at, Piece::Central(i)));
            at += 46 + e.name.len() as u64 + e.central_extra_len(zip64_at);
        }
        let cd_size = at - cd_offset;
        let zip64_end = entries.len() >= 0xFFFF
            || cd_offset >= zip64_at
            || cd_size >= zip64_at
            || entries.iter().any(|e| e.zip64);
        pieces.push((at, Piece::End));
        at += if zip64_end { 56 + 20 + 22 } else { 22 };
        Layout {
            entries,
            pieces,
            cd_offset,
            cd_size,
            zip64_end,
            total: at,
            zip64_at,
        }
    }

    /// The piece holding byte `pos` (< total), with its start and end;
    /// empty pieces are never found (the next one starts where they do).
    fn piece_at(&self, pos: u64) -> (u64, u64, Piece) {
        let i = self
            .pieces
            .partition_point(|(start, _)| *start <= pos)
            .max(1)
            - 1;
        let (start, piece) = self.pieces[i];
        let end = self.pieces.get(i + 1).map_or(self.total, |(s, _)| *s);
        (start, end, piece)
    }

    /// A strong entity tag: what decides every byte (names, sizes,
    /// contents, times, modes) and this layout's version.
    fn etag(&self) -> String {
        let mut h = sha1::Sha1::new();
        h.update(b"pickup zip v1\0");
        for e in &self.entries {
            h.update((e.name.len() as u64).to_le_bytes());
            h.update(e.name.as_bytes());
            h.update(e.size.to_le_bytes());
            h.update(e.key.2);
            h.update([e.dos_time.to_le_bytes(), e.dos_date.to_le_bytes()].concat());
            h.update([u8::from(e.executable)]);
        }
        let digest: [u8; 20] = h.finalize().into();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("\"zip-{hex}\"")
    }

    /// The bytes of a piece that is not file content; `crc` is the entry's
    /// CRC-32 where the piece needs it.
    fn meta(&self, piece: Piece, crc: u32) -> Vec<u8> {
        let mut b = Vec::new();
        let z = self.zip64_at;
        let small = |v: u64| {
            u32::try_from(v)
                .ok()
                .filter(|&v| u64::from(v) < z)
                .unwrap_or(u32::MAX)
        };
        match piece {
            Piece::Local(i) => {
                let e = &self.entries[i];
                put32(&mut b, 0x0403_4b50);
                put16(&mut b, e.version_needed(z));
                put16(&mut b, FLAGS);
                put16(&mut b, 0);
                put16(&mut b, e.dos_time);
                put16(&mut b, e.dos_date);
                put32(&mut b, 0);
                let size = if e.zip64 { u32::MAX } else { small(e.size) };
                put32(&mut b, size);
                put32(&mut b, size);
                put16(&mut b, e.name.len() as u16);
                put16(&mut b, if e.zip64 { 20 } else { 0 });
                b.extend_from_slice(e.name.as_bytes());
                if e.zip64 {
                    put16(&mut b, 0x0001);
                    put16(&mut b, 16);
                    put64(&mut b, e.size);
                    put64(&mut b, e.size);
                }
            }
            Piece::Descriptor(i) => {
                let e = &self.entries[i];
                put32(&mut b, 0x0807_4b50);
                put32(&mut b, crc);
                if e.zip64 {
                    put64(&mut b, e.size);
                    put64(&mut b, e.size);
                } else {
                    put32(&mut b, small(e.size));
                    put32(&mut b, small(e.size));
                }
            }
            Piece::Central(i) => {
                let e = &self.entries[i];
                put32(&mut b, 0x0201_4b50);
                put16(&mut b, (3 << 8) | 45); // made by: Unix, ZIP 4.5
                put16(&mut b, e.version_needed(z));
                put16(&mut b, FLAGS);
                put16(&mut b, 0);
                put16(&mut b, e.dos_time);
                put16(&mut b, e.dos_date);
                put32(&mut b, crc);
                let size = if e.zip64 { u32::MAX } else { small(e.size) };
                put32(&mut b, size);
                put32(&mut b, size);
                put16(&mut b, e.name.len() as u16);
                put16(&mut b, e.central_extra_len(z) as u16);
                put16(&mut b, 0); // comment
                put16(&mut b, 0); // disk
                put16(&mut b, 0); // internal attributes
                let mode: u32 = if e.executable { 0o100_755 } else { 0o100_644 };
                put32(&mut b, mode << 16);
                put32(
                    &mut b,
                    if e.offset64(z) {
                        u32::MAX
                    } else {
                        small(e.offset)
                    },
                );
                b.extend_from_slice(e.name.as_bytes());
                if e.central_extra_len(z) > 0 {
                    put16(&mut b, 0x0001);
                    put16(&mut b, (e.central_extra_len(z) - 4) as u16);
                    if e.zip64 {
                        put64(&mut b, e.size);
                        put64(&mut b, e.size);
                    }
                    if e.offset64(z) {
                        put64(&mut b, e.offset);
                    }
                }
            }
            Piece::End => {
                let n = self.entries.len() as u64;
                if self.zip64_end {
                    put32(&mut b, 0x0606_4b50);
                    put64(&mut b, 44);
                    put16(&mut b, (3 << 8) | 45);
                    put16(&mut b, 45);
                    put32(&mut b, 0);
                    put32(&mut b, 0);
                    put64(&mut b, n);
                    put64(&mut b, n);
                    put64(&mut b, self.cd_size);
                    put64(&mut b, self.cd_offset);
                    put32(&mut b, 0x0706_4b50);
                    put32(&mut b, 0);
                    put64(&mut b, self.cd_offset + self.cd_size);
                    put32(&mut b, 1);
                }
                let count = if self.zip64_end { 0xFFFF } else { n as u16 };
                put32(&mut b, 0x0605_4b50);
                put16(&mut b, 0);
                put16(&mut b, 0);
                put16(&mut b, count);
                put16(&mut b, count);
                put32(
                    &mut b,
                    if self.zip64_end {
                        u32::MAX
                    } else {
                        small(self.cd_size)
                    },
                );
                put32(
                    &mut b,
                    if self.zip64_end {
                        u32::MAX
                    } else {
                        small(self.cd_offset)
                    },
                );
                put16(&mut b, 0);
            }
            Piece::Data(_) => {}
        }
        b
    }
}

/// Data descriptor (bit 3) and UTF-8 names (bit 11).
const FLAGS: u16 = 0x0808;

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// MS-DOS time and date (UTC, two-second steps) of Unix seconds, held
/// within the format's 1980..=2107.
fn dos_time(secs: i64) -> (u16, u16) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = crate::relay::civil_date(days);
    if year < 1980 {
        return (0, (1 << 5) | 1);
    }
    if year > 2107 {
        return ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31);
    }
    let time = (rem / 3600) << 11 | (rem % 3600 / 60) << 5 | (rem % 60 / 2);
    let date = (year - 1980) << 9 | month << 5 | day;
    (time as u16, date as u16)
}

/// The ZIP of the ready `batch`, named `{CODE}.zip`.
pub(super) fn download(state: &HttpState, batch: Batch, headers: &HeaderMap) -> Response {
    let layout = Arc::new(Layout::new(&batch, ZIP64_AT));
    let rep = Representation {
        len: layout.total,
        etag: layout.etag(),
        last_modified: http_date(batch.created_at),
        content_type: "application/zip",
        file_name: format!("{}.zip", batch.code),
    };
    let relay = state.relay.clone();
    let cache = state.crcs.clone();
    ranged(&rep, headers, move |start, end| {
        let crcs = vec![None; layout.entries.len()];
        let sender = Sender {
            layout,
            relay,
            cache,
            pos: start,
            end,
            crcs,
            running: None,
        };
        Body::from_stream(futures_util::stream::unfold(sender, Sender::next))
    })
}

/// One response's walk through the archive.
struct Sender {
    layout: Arc<Layout>,
    relay: Arc<Relay>,
    cache: Arc<CrcCache>,
    pos: u64,
    end: u64,
    /// CRCs this response knows, by entry.
    crcs: Vec<Option<u32>>,
    /// The CRC of the entry whose bytes are being sent from their start.
    running: Option<(usize, Digest<'static, u32, Table<16>>)>,
}

impl Sender {
    /// The next chunk: at most [`CHUNK`] bytes, never across a piece.
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Sender)> {
        if self.pos >= self.end {
            return None;
        }
        let (start, piece_end, piece) = self.layout.piece_at(self.pos);
        let stop = piece_end.min(self.end);
        let chunk = match piece {
            Piece::Data(i) => self.data(i, start, stop).await,
            Piece::Descriptor(i) | Piece::Central(i) => match self.crc(i).await {
                Ok(crc) => Ok(self.layout.meta(piece, crc)),
                Err(e) => Err(e),
            },
            Piece::Local(_) | Piece::End => Ok(self.layout.meta(piece, 0)),
        };
        match chunk {
            Ok(bytes) => {
                let bytes = if matches!(piece, Piece::Data(_)) {
                    bytes
                } else {
                    // A piece's bytes from `pos` to `stop`.
                    let from = (self.pos - start) as usize;
                    let to = (stop - start) as usize;
                    bytes.get(from..to).map(<[u8]>::to_vec).unwrap_or_default()
                };
                self.pos += bytes.len() as u64;
                if bytes.is_empty() {
                    // Cannot happen with a consistent layout; ends rather
                    // than loops if it ever does.
                    self.pos = self.end;
                }
                Some((Ok(Bytes::from(bytes)), self))
            }
            Err(e) => {
                self.pos = self.end;
                Some((Err(e), self))
            }
        }
    }

    /// The next bytes of entry `i`'s content (which starts at `start`), up
    /// to `stop`, feeding its running CRC if it was sent from its first byte.
    async fn data(&mut self, i: usize, start: u64, stop: u64) -> Result<Vec<u8>, std::io::Error> {
        let at = self.pos - start;
        let n = usize::try_from(stop - self.pos).unwrap_or(CHUNK).min(CHUNK);
        let blob = self.layout.entries[i].key.0;
        let relay = self.relay.clone();
        let bytes = tokio::task::spawn_blocking(move || read_exact(relay.store(), blob, at, n))
            .await
            .map_err(std::io::Error::other)?
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if at == 0 && self.crcs[i].is_none() {
            // Hash only what no earlier response has.
            match self.cache.get(&self.layout.entries[i].key) {
                Some(crc) => self.crcs[i] = Some(crc),
                None => self.running = Some((i, CRC32.digest())),
            }
        }
        if let Some((_, digest)) = self.running.as_mut().filter(|(r, _)| *r == i) {
            digest.update(&bytes);
            if at + n as u64 == self.layout.entries[i].size {
                if let Some((_, digest)) = self.running.take() {
                    let crc = digest.finalize();
                    self.crcs[i] = Some(crc);
                    self.cache.put(self.layout.entries[i].key, crc);
                }
            }
        }
        Ok(bytes)
    }

    /// Entry `i`'s CRC-32: known, cached, or computed now by reading it.
    async fn crc(&mut self, i: usize) -> Result<u32, std::io::Error> {
        if let Some(crc) = self.crcs[i] {
            return Ok(crc);
        }
        let key = self.layout.entries[i].key;
        let crc = match self.cache.get(&key) {
            Some(crc) => crc,
            None => {
                let relay = self.relay.clone();
                let crc = tokio::task::spawn_blocking(move || {
                    let mut digest = CRC32.digest();
                    let mut at = 0;
                    while at < key.1 {
                        let n = usize::try_from(key.1 - at).unwrap_or(CHUNK).min(CHUNK);
                        digest.update(&read_exact(relay.store(), key.0, at, n)?);
                        at += n as u64;
                    }
                    Ok::<u32, crate::store::StoreError>(digest.finalize())
                })
                .await
                .map_err(std::io::Error::other)?
                .map_err(|e| std::io::Error::other(e.to_string()))?;
                self.cache.put(key, crc);
                crc
            }
        };
        self.crcs[i] = Some(crc);
        Ok(crc)
    }
}

#[cfg(test)]
#[path = "zip_tests.rs"]
mod tests;
