//! `pickup get CODE -o -`: a one-file batch streamed to standard output.
//!
//! Bytes go out in order as they arrive and are hashed on the way, so the
//! SHA-1 checked is the one of exactly what was written. Standard output
//! cannot be read back or rewound: a batch of more than one file is refused
//! at its second manifest entry (before any data is fetched), and a file
//! that does not verify cannot be fetched again — `get` then fails, and
//! the reader must discard what it got.

use std::io::{self, ErrorKind, Write};

use pickup_proto::download::Sink;
use pickup_proto::hash::Sha1Hasher;
use pickup_proto::message::ManifestEntry;
use pickup_proto::storage::{ReadAt, WriteAt};
use pickup_proto::Sha1Digest;

/// The message of a mismatch, mapped to the verification exit code by `get`.
pub(crate) const MISMATCH: &str =
    "the file written to standard output does not match its SHA-1; discard it";

/// Writes the single file of a batch to an output (stdout), hashing it.
pub(crate) struct StdoutSink<W: Write> {
    out: W,
    hasher: Sha1Hasher,
    /// Bytes written so far; the next write must start at or before this.
    written: u64,
}

fn other(kind: ErrorKind, msg: &str) -> io::Error {
    io::Error::new(kind, msg.to_string())
}

impl<W: Write> StdoutSink<W> {
    pub fn new(out: W) -> Self {
        StdoutSink {
            out,
            hasher: Sha1Hasher::new(),
            written: 0,
        }
    }

    fn only_file(file: u16) -> io::Result<()> {
        if file == 0 {
            Ok(())
        } else {
            Err(other(ErrorKind::InvalidInput, "no such file in the batch"))
        }
    }
}

impl<W: Write> ReadAt for StdoutSink<W> {
    type Error = io::Error;
    fn read_at(&mut self, _file: u16, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
        // Never needed: the sink hashes as it writes (`Hashing::BySink`).
        Err(other(
            ErrorKind::Unsupported,
            "standard output cannot be read back",
        ))
    }
}

impl<W: Write> WriteAt for StdoutSink<W> {
    type Error = io::Error;
    fn write_at(&mut self, file: u16, offset: u64, data: &[u8]) -> io::Result<()> {
        Self::only_file(file)?;
        if offset > self.written {
            return Err(other(
                ErrorKind::InvalidData,
                "a gap in the file: standard output is written in order",
            ));
        }
        // After a reconnect the relay may send again bytes already out:
        // only what is new is written (and hashed).
        let skip = usize::try_from(self.written - offset).unwrap_or(usize::MAX);
        if let Some(new) = data.get(skip..).filter(|n| !n.is_empty()) {
            self.out.write_all(new)?;
            self.hasher.update(new);
            self.written += new.len() as u64;
        }
        Ok(())
    }
}

impl<W: Write> Sink for StdoutSink<W> {
    fn open(&mut self, entry: &ManifestEntry<'_>) -> io::Result<u64> {
        if entry.index > 0 {
            return Err(other(
                ErrorKind::InvalidInput,
                "the batch holds more than one file; -o - writes a single file to \
                 standard output (use -o DIR)",
            ));
        }
        Ok(0)
    }

    fn truncate(&mut self, file: u16) -> io::Result<()> {
        Self::only_file(file)?;
        if self.written == 0 {
            return Ok(());
        }
        // The bytes are gone to the reader: nothing to fetch again into.
        Err(other(ErrorKind::InvalidData, MISMATCH))
    }

    fn digest(&mut self, file: u16, _size: u64) -> io::Result<Sha1Digest> {
        Self::only_file(file)?;
        Ok(self.hasher.clone().digest())
    }

    fn finish(&mut self, file: u16) -> io::Result<()> {
        Self::only_file(file)?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u16, data: &[u8]) -> ManifestEntry<'static> {
        ManifestEntry {
            index,
            size: data.len() as u64,
            sha1: Sha1Digest::of(data),
            received: data.len() as u64,
            name: "f",
        }
    }

    #[test]
    fn writes_in_order_skips_repeats_and_hashes_what_went_out() {
        let mut sink = StdoutSink::new(Vec::new());
        assert_eq!(sink.open(&entry(0, b"hello world")).unwrap(), 0);
        sink.write_at(0, 0, b"hello ").unwrap();
        // A repeat after a reconnect, overlapping what went out.
        sink.write_at(0, 3, b"lo wor").unwrap();
        sink.write_at(0, 9, b"ld").unwrap();
        assert!(sink.write_at(0, 20, b"x").is_err());
        assert_eq!(sink.digest(0, 11).unwrap(), Sha1Digest::of(b"hello world"));
        sink.finish(0).unwrap();
        assert_eq!(sink.out, b"hello world");
        // Written bytes cannot be fetched again.
        assert!(sink.truncate(0).is_err());
    }

    #[test]
    fn a_second_file_is_refused_at_its_manifest_entry() {
        let mut sink = StdoutSink::new(Vec::new());
        sink.open(&entry(0, b"a")).unwrap();
        assert!(sink.open(&entry(1, b"b")).is_err());
    }
}
