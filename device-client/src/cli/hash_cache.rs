//! Announce hashes kept between runs, so sending a file the relay holds
//! again costs one pass over it (the proof of ownership), not two.
//!
//! `pickup send` must announce each file's SHA-1 before the relay says
//! whether it holds the content (PROTOCOL.md §5.2), and a held file is then
//! read once more for the proof (§7). This cache remembers the SHA-1 of
//! files hashed before, in `hash-cache.json` in the state directory (mode
//! 0600, written atomically, like the resume state).
//!
//! # When an entry is used
//!
//! An entry is used only if the file's canonical path, size, modification
//! time (nanoseconds) and, on Unix, inode, device and status-change time
//! (`ctime`, nanoseconds) all equal what was recorded when it was hashed.
//! The `ctime` is what catches a file rewritten in place whose mtime was
//! set back (`touch -d`, `cp -p`, an archive extracted): writing a file
//! moves its `ctime`, and no ordinary call sets it back. A file replaced by
//! rename gets a new inode. The limits: a filesystem with coarse times
//! (FAT: 2 s, some network filesystems: 1 s) that is written twice within
//! one tick at the same size, a clock set back, or a device written beneath
//! the filesystem, keep every field, and off Unix only path, size and
//! mtime are compared.
//!
//! # Why a wrong entry cannot store a wrong file
//!
//! A hash from here is only ever announced. The relay computes the SHA-1 of
//! the bytes it receives and rejects a file whose hash differs
//! (`HashMismatch`), and it links held content only for a proof computed
//! over the file's actual bytes, which a stale hash cannot make agree
//! (a wrong proof gets an upload, which then mismatches). So a stale or
//! forged entry costs a failed attempt, never a batch stored as verified
//! with other content: `pickup send` then drops the entry, hashes the file
//! again and sends a new batch. Nothing read from the file is trusted
//! beyond its key: an unreadable, oversized or malformed file, or entry, is
//! ignored (said with `-v`).
//!
//! The cache keeps the [`MAX_ENTRIES`] most recently used entries. Two
//! sends running at once each write their own view; the later one wins,
//! which loses entries, never correctness.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use pickup_proto::Sha1Digest;
use serde_json::{json, Value};

use super::state::write_private;

/// Most entries kept: the most recently used. About 200 bytes each plus
/// the path, so the file stays well under a megabyte for ordinary paths.
pub(crate) const MAX_ENTRIES: usize = 1024;

/// A cache file larger than this is not read (it was not written by us, or
/// not in one piece): [`MAX_ENTRIES`] entries of 4 KiB paths fit.
const MAX_FILE_BYTES: u64 = 8 << 20;

/// The file's name in the state directory.
const FILE_NAME: &str = "hash-cache.json";

/// What must not have changed for a recorded hash to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    /// Canonical (absolute, links resolved), as UTF-8: a path that is not
    /// is not cached.
    path: String,
    size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    mtime_ns: i128,
    /// Unix: inode, device and status-change time; 0 elsewhere.
    ino: u64,
    dev: u64,
    ctime_ns: i128,
}

impl Key {
    /// The key of the file at `path` whose metadata (from the open file)
    /// is `meta`; `None` if it cannot be told (no canonical UTF-8 path,
    /// no modification time).
    pub fn of(path: &Path, meta: &fs::Metadata) -> Option<Key> {
        let path = fs::canonicalize(path)
            .ok()?
            .into_os_string()
            .into_string()
            .ok()?;
        let mtime_ns = match meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => i128::try_from(after.as_nanos()).ok()?,
            Err(before) => -i128::try_from(before.duration().as_nanos()).ok()?,
        };
        #[cfg(unix)]
        let (ino, dev, ctime_ns) = {
            use std::os::unix::fs::MetadataExt;
            let ctime_ns = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
            (meta.ino(), meta.dev(), ctime_ns)
        };
        #[cfg(not(unix))]
        let (ino, dev, ctime_ns) = (0, 0, 0);
        Some(Key {
            path,
            size: meta.len(),
            mtime_ns,
            ino,
            dev,
            ctime_ns,
        })
    }

    /// The file's size when the key was taken.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn to_json(&self, sha1: &Sha1Digest) -> Value {
        // Times as strings: JSON numbers lose precision past 2^53 in many
        // readers, and nanoseconds since 1970 are past it.
        json!({
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns.to_string(),
            "ino": self.ino,
            "dev": self.dev,
            "ctime_ns": self.ctime_ns.to_string(),
            "sha1": sha1.to_string(),
        })
    }

    fn from_json(v: &Value) -> Option<(Key, Sha1Digest)> {
        let key = Key {
            path: v.get("path")?.as_str()?.to_string(),
            size: v.get("size")?.as_u64()?,
            mtime_ns: v.get("mtime_ns")?.as_str()?.parse().ok()?,
            ino: v.get("ino")?.as_u64()?,
            dev: v.get("dev")?.as_u64()?,
            ctime_ns: v.get("ctime_ns")?.as_str()?.parse().ok()?,
        };
        Some((key, parse_sha1(v.get("sha1")?.as_str()?)?))
    }
}

fn parse_sha1(text: &str) -> Option<Sha1Digest> {
    if text.len() != 40 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Sha1Digest(out))
}

/// The cache as loaded, changed in memory, written back by [`HashCache::save`].
pub(crate) struct HashCache {
    path: PathBuf,
    /// Least recently used first.
    entries: Vec<(Key, Sha1Digest)>,
    changed: bool,
}

impl HashCache {
    /// The cache in the state directory `dir`; empty if there is no
    /// usable file, with the reason given to `debug` (a missing file is
    /// not worth a line).
    pub fn load(dir: &Path, debug: &mut dyn FnMut(&str)) -> HashCache {
        let path = dir.join(FILE_NAME);
        let entries = match read_entries(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                debug(&format!("ignoring the hash cache {}: {e}", path.display()));
                Vec::new()
            }
        };
        HashCache {
            path,
            entries,
            changed: false,
        }
    }

    /// The recorded SHA-1 for `key`, marked as just used.
    pub fn get(&mut self, key: &Key) -> Option<Sha1Digest> {
        let at = self.entries.iter().rposition(|(k, _)| k == key)?;
        let entry = self.entries.remove(at);
        let sha1 = entry.1;
        self.entries.push(entry);
        self.changed = true;
        Some(sha1)
    }

    /// Records `sha1` for `key` (replacing any entry for the same path),
    /// dropping the least recently used entries past [`MAX_ENTRIES`].
    pub fn insert(&mut self, key: Key, sha1: Sha1Digest) {
        self.entries.retain(|(k, _)| k.path != key.path);
        self.entries.push((key, sha1));
        let excess = self.entries.len().saturating_sub(MAX_ENTRIES);
        self.entries.drain(..excess);
        self.changed = true;
    }

    /// Forgets `key`'s entry (its hash proved wrong).
    pub fn remove(&mut self, key: &Key) {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| k != key);
        self.changed |= self.entries.len() != before;
    }

    /// Writes the cache back if it changed (mode 0600, atomically).
    pub fn save(&mut self) -> io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        let list: Vec<Value> = self.entries.iter().map(|(k, s)| k.to_json(s)).collect();
        write_private(&self.path, &json!({ "version": 1, "entries": list }))?;
        self.changed = false;
        Ok(())
    }
}

/// The entries of the cache file at `path`, the newest [`MAX_ENTRIES`]
/// well-formed ones; an error for a file that is not a cache at all.
fn read_entries(path: &Path) -> io::Result<Vec<(Key, Sha1Digest)>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let file = File::open(path)?;
    let mut text = String::new();
    // One byte past the bound tells an oversized file from one at it.
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid("larger than a hash cache can be"));
    }
    let doc: Value = serde_json::from_str(&text).map_err(|e| invalid(&e.to_string()))?;
    if doc.get("version").and_then(Value::as_u64) != Some(1) {
        return Err(invalid("not a version 1 hash cache"));
    }
    let list = doc
        .get("entries")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no entries"))?;
    let from = list.len().saturating_sub(MAX_ENTRIES);
    Ok(list[from..].iter().filter_map(Key::from_json).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(path: &Path) -> Key {
        Key::of(path, &fs::metadata(path).unwrap()).unwrap()
    }

    #[test]
    fn a_hash_is_found_by_its_key_only_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.bin");
        fs::write(&file, b"abc").unwrap();
        let key = key_of(&file);
        let mut cache = HashCache::load(dir.path(), &mut |_| panic!("no file is not worth a line"));
        assert_eq!(cache.get(&key), None);
        cache.insert(key.clone(), Sha1Digest::of(b"abc"));
        cache.save().unwrap();
        let mut back = HashCache::load(dir.path(), &mut |l| panic!("{l}"));
        assert_eq!(back.get(&key), Some(Sha1Digest::of(b"abc")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Rewritten in place, mtime set back: the ctime still moved (Unix).
        let mtime = fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&file, b"xyz").unwrap();
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let rewritten = key_of(&file);
        assert_eq!(rewritten.mtime_ns, key.mtime_ns);
        #[cfg(unix)]
        assert_eq!(back.get(&rewritten), None);
        back.remove(&key);
        assert_eq!(back.get(&key), None);
    }

    #[test]
    fn only_the_most_recently_used_entries_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = |i: u64| Key {
            path: format!("/f{i}"),
            size: i,
            mtime_ns: -1,
            ino: 0,
            dev: 0,
            ctime_ns: i128::MAX,
        };
        let mut cache = HashCache::load(dir.path(), &mut |_| {});
        for i in 0..MAX_ENTRIES as u64 {
            cache.insert(key(i), Sha1Digest([i as u8; 20]));
        }
        // Using the oldest makes it the newest: the second oldest goes.
        assert!(cache.get(&key(0)).is_some());
        cache.insert(key(9_999), Sha1Digest([1; 20]));
        cache.save().unwrap();
        let mut back = HashCache::load(dir.path(), &mut |l| panic!("{l}"));
        assert_eq!(back.entries.len(), MAX_ENTRIES);
        assert!(back.get(&key(0)).is_some());
        assert!(back.get(&key(1)).is_none());
        assert_eq!(back.get(&key(9_999)), Some(Sha1Digest([1; 20])));
    }

    #[test]
    fn a_corrupt_or_hostile_file_is_ignored_with_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = json!({"path": "/a", "size": 1, "mtime_ns": "5", "ino": 1, "dev": 2,
            "ctime_ns": "6", "sha1": Sha1Digest::of(b"a").to_string()});
        let cases: [&[u8]; 6] = [
            b"\x00\xff not json",
            b"{\"version\": 2, \"entries\": []}",
            b"[1, 2, 3]",
            b"{\"version\": 1}",
            b"{\"version\": 1, \"entries\": [",
            &[b'{'; 1000],
        ];
        for bytes in cases {
            fs::write(&path, bytes).unwrap();
            let mut lines = Vec::new();
            let cache = HashCache::load(dir.path(), &mut |l| lines.push(l.to_string()));
            assert!(cache.entries.is_empty());
            assert_eq!(lines.len(), 1, "{:?}", String::from_utf8_lossy(bytes));
        }
        // Bad entries are skipped, good ones beside them kept.
        let doc = json!({"version": 1, "entries": [
            {"path": "/a", "size": -1}, 7, {"sha1": "zz"}, good,
            {"path": "/b", "size": 1, "mtime_ns": "x", "ino": 1, "dev": 2, "ctime_ns": "6",
             "sha1": "00"},
        ]});
        fs::write(&path, doc.to_string()).unwrap();
        let cache = HashCache::load(dir.path(), &mut |l| panic!("{l}"));
        assert_eq!(cache.entries.len(), 1);
        // Larger than any cache we write: not read at all.
        let big = File::create(&path).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        let mut lines = 0;
        let cache = HashCache::load(dir.path(), &mut |_| lines += 1);
        assert!(cache.entries.is_empty());
        assert_eq!(lines, 1);
    }
}
