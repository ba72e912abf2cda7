//! The layout's pieces against their bytes, and whole archives (plain
//! and with ZIP64 forced at small sizes) read back by the `zip` crate.

use std::io::Read as _;

use pickup_proto::{Code, Sha1Digest};

use super::*;
use crate::store::{Attrs, BatchId, FileRecord, OwnerId};

fn batch(files: &[(&str, &[u8])]) -> Batch {
    Batch {
        id: BatchId(1),
        code: Code::from_parts(13, 12345).unwrap(),
        owner: OwnerId([0; 32]),
        created_at: 1_796_400_000,
        expires_at: 1_796_486_400,
        open: false,
        files: files
            .iter()
            .enumerate()
            .map(|(i, (name, bytes))| FileRecord {
                name: (*name).to_owned(),
                size: bytes.len() as u64,
                sha1: Sha1Digest([i as u8; 20]),
                attrs: (i == 1).then_some(Attrs {
                    executable: true,
                    mtime: 1_700_000_000,
                }),
                content: FileContent::Blob(BlobId(i as u64 + 1)),
            })
            .collect(),
    }
}

/// The whole archive, with each file's bytes from `files`.
fn assemble(layout: &Layout, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, (start, piece)) in layout.pieces.iter().enumerate() {
        assert_eq!(
            out.len() as u64,
            *start,
            "piece {n} {piece:?} starts where the last ended"
        );
        match *piece {
            Piece::Data(i) => out.extend_from_slice(files[i].1),
            Piece::Descriptor(i) | Piece::Central(i) => {
                out.extend(layout.meta(*piece, CRC32.checksum(files[i].1)));
            }
            p => out.extend(layout.meta(p, 0)),
        }
    }
    assert_eq!(out.len() as u64, layout.total);
    out
}

fn read_back(archive: Vec<u8>, files: &[(&str, &[u8])]) {
    let mut zip = ::zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
    assert_eq!(zip.len(), files.len());
    for (i, (name, bytes)) in files.iter().enumerate() {
        let mut f = zip.by_index(i).unwrap();
        assert_eq!(f.name(), *name);
        assert_eq!(f.size(), bytes.len() as u64);
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(&got, bytes, "{name}");
        if i == 1 {
            assert_eq!(f.unix_mode(), Some(0o100_755));
        }
    }
}

const FILES: &[(&str, &[u8])] = &[
    ("a.txt", b"hello, world\n"),
    ("dir/é <b>.bin", &[0, 1, 2, 3, 255, 254]),
    ("empty", b""),
];

#[test]
fn a_plain_archive_reads_back() {
    let b = batch(FILES);
    let layout = Layout::new(&b, ZIP64_AT);
    assert!(!layout.zip64_end);
    read_back(assemble(&layout, FILES), FILES);
}

#[test]
fn zip64_fields_read_back() {
    let b = batch(FILES);
    // Every size and offset from 1 on is "large": all ZIP64 paths run.
    let layout = Layout::new(&b, 1);
    assert!(layout.zip64_end && layout.entries[0].zip64 && layout.entries[1].offset64(1));
    read_back(assemble(&layout, FILES), FILES);
}

#[test]
fn pieces_are_found_by_offset_and_empty_ones_skipped() {
    let layout = Layout::new(&batch(FILES), ZIP64_AT);
    for pos in 0..layout.total {
        let (start, end, piece) = layout.piece_at(pos);
        assert!(
            start <= pos && pos < end,
            "{pos} in {piece:?} {start}..{end}"
        );
    }
    assert_eq!(layout.etag(), Layout::new(&batch(FILES), ZIP64_AT).etag());
}

#[test]
fn dos_times() {
    // 2026-12-04 16:07:02 UTC.
    let (t, d) = dos_time(1_796_400_422);
    assert_eq!((t >> 11, (t >> 5) & 63, (t & 31) * 2), (16, 7, 2));
    assert_eq!((1980 + (d >> 9), (d >> 5) & 15, d & 31), (2026, 12, 4));
    assert_eq!(dos_time(0), (0, (1 << 5) | 1));
    assert_eq!(dos_time(i64::MAX / 4).1 >> 9, 127);
}
