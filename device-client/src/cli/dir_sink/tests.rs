//! Unit tests of the download sink.

use super::*;

fn entry<'a>(index: u16, name: &'a str, data: &[u8]) -> ManifestEntry<'a> {
    ManifestEntry {
        index,
        size: data.len() as u64,
        sha1: Sha1Digest::of(data),
        received: data.len() as u64,
        name,
    }
}

fn temp(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    dir.join(temp_name(&entry(0, name, data)))
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn temp_names_are_hidden_ours_and_tied_to_the_entry() {
    let name = temp_name(&entry(0, "a.txt", b"hello"));
    assert!(name.starts_with(".pickup-") && name.ends_with(".part"));
    assert_eq!(name.len(), ".pickup-.part".len() + 40);
    message::validate_name(&name).unwrap();
    // The index does not matter; the name, size and content do.
    assert_eq!(name, temp_name(&entry(3, "a.txt", b"hello")));
    assert_ne!(name, temp_name(&entry(0, "b.txt", b"hello")));
    // Paths are hashed whole: the same file name in two directories differs.
    assert_ne!(
        temp_name(&entry(0, "d/a.txt", b"hello")),
        temp_name(&entry(0, "e/a.txt", b"hello"))
    );
    assert_ne!(name, temp_name(&entry(0, "a.txt", b"hellO")));
    assert_ne!(name, temp_name(&entry(0, "a.txt", b"hello!")));
    // Within the name limit for the longest name.
    let long = "x".repeat(message::MAX_NAME_LEN);
    assert!(temp_name(&entry(0, &long, b"")).len() <= message::MAX_NAME_LEN);
}

#[test]
fn temp_file_is_resumed_then_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let part = temp(dir.path(), "a.txt", b"hello world");
    std::fs::write(&part, b"hello ").unwrap();
    let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
    assert_eq!(sink.open(&entry(0, "a.txt", b"hello world")).unwrap(), 6);
    sink.write_at(0, 6, b"world").unwrap();
    let mut buf = [0u8; 11];
    assert_eq!(sink.read_at(0, 0, &mut buf).unwrap(), 11);
    assert_eq!(sink.digest(0, 11).unwrap(), Sha1Digest::of(b"hello world"));
    sink.finish(0).unwrap();
    assert_eq!(listing(dir.path()), ["a.txt"]);
    assert_eq!(
        std::fs::read(dir.path().join("a.txt")).unwrap(),
        b"hello world"
    );
}

/// Issue 20, item 10: `NAME.part` (a browser's, say) is nobody's prefix.
#[test]
fn files_the_sink_did_not_create_are_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.part"), b"hel").unwrap();
    std::fs::write(dir.path().join("b.part"), b"a longer file").unwrap();
    let mut sink = DirSink::new(dir.path().to_path_buf(), true).unwrap();
    assert_eq!(sink.open(&entry(0, "a", b"hello")).unwrap(), 0);
    assert_eq!(sink.open(&entry(1, "b", b"bye")).unwrap(), 0);
    for (i, data) in [&b"hello"[..], b"bye"].iter().enumerate() {
        sink.write_at(i as u16, 0, data).unwrap();
        assert_eq!(sink.digest(i as u16, 3).unwrap(), Sha1Digest::of(data));
        sink.finish(i as u16).unwrap();
    }
    assert_eq!(std::fs::read(dir.path().join("a.part")).unwrap(), b"hel");
    assert_eq!(
        std::fs::read(dir.path().join("b.part")).unwrap(),
        b"a longer file"
    );
    assert_eq!(listing(dir.path()), ["a", "a.part", "b", "b.part"]);

    // A file that takes the temporary name after `open` is not written.
    let c = entry(2, "c", b"see");
    assert_eq!(sink.open(&c).unwrap(), 0);
    std::fs::write(dir.path().join(temp_name(&c)), b"not ours").unwrap();
    assert_eq!(
        sink.write_at(2, 0, b"see").unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        std::fs::read(dir.path().join(temp_name(&c))).unwrap(),
        b"not ours"
    );
}

/// Issue 20, item 9: `a.part` and `a` are two files whatever the order.
#[test]
fn an_entry_named_like_a_temporary_file_is_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
    assert_eq!(sink.open(&entry(0, "a.part", b"long content")).unwrap(), 0);
    assert_eq!(sink.open(&entry(1, "a", b"short")).unwrap(), 0);
    for (i, data) in [&b"long content"[..], b"short"].iter().enumerate() {
        sink.write_at(i as u16, 0, data).unwrap();
        assert_eq!(
            sink.digest(i as u16, data.len() as u64).unwrap(),
            Sha1Digest::of(data)
        );
        sink.finish(i as u16).unwrap();
    }
    assert_eq!(listing(dir.path()), ["a", "a.part"]);
    assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"short");
    assert_eq!(
        std::fs::read(dir.path().join("a.part")).unwrap(),
        b"long content"
    );
}

/// Only a batch crafted for it names a file after another entry's
/// temporary name: refused in either order, before anything is written.
#[test]
fn an_entry_named_after_another_entrys_temporary_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = entry(0, "b", b"data");
    let crafted = temp_name(&b);
    let mut sink = DirSink::new(dir.path().to_path_buf(), true).unwrap();
    sink.open(&b).unwrap();
    let err = sink.open(&entry(1, &crafted, b"x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);

    let mut sink = DirSink::new(dir.path().to_path_buf(), true).unwrap();
    sink.open(&entry(0, &crafted, b"x")).unwrap();
    let err = sink.open(&entry(1, "b", b"data")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(listing(dir.path()).is_empty());
}

/// Issue 20, item 9: the digest is of the file on disk, whole.
#[test]
fn the_digest_is_of_the_bytes_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
    let a = entry(0, "a", b"good");
    sink.open(&a).unwrap();
    sink.write_at(0, 0, b"good").unwrap();
    // Bytes behind the file's end (a file reopened without truncation).
    let tail = OpenOptions::new()
        .write(true)
        .open(dir.path().join(temp_name(&a)))
        .unwrap();
    pwrite_all(&tail, 4, b"tail").unwrap();
    assert_ne!(sink.digest(0, 4).unwrap(), Sha1Digest::of(b"good"));
    // Bytes changed on disk after they were written.
    sink.truncate(0).unwrap();
    sink.write_at(0, 0, b"good").unwrap();
    pwrite_all(&tail, 0, b"G").unwrap();
    assert_eq!(sink.digest(0, 4).unwrap(), Sha1Digest::of(b"Good"));
}

#[test]
fn nothing_is_created_before_the_first_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
    assert_eq!(sink.open(&entry(0, "a", b"abc")).unwrap(), 0);
    assert_eq!(sink.open(&entry(1, "empty", b"")).unwrap(), 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    sink.finish(1).unwrap();
    assert_eq!(std::fs::read(dir.path().join("empty")).unwrap(), b"");
}

/// Issue 18, item 6: an existing file is skipped and reported, not
/// fatal, whether its size differs or only its content.
#[test]
fn existing_files_are_not_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"mine").unwrap();
    let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
    let theirs = entry(0, "a.txt", b"theirs");
    assert_eq!(sink.open(&theirs).unwrap(), 6);
    assert_eq!(sink.digest(0, 6).unwrap(), theirs.sha1);
    sink.finish(0).unwrap();
    assert_eq!(sink.conflicts().count(), 1);
    assert_eq!(sink.paths().count(), 0);

    // Same size, other content: found out when the hash differs.
    let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
    let ours = entry(0, "a.txt", b"ours");
    assert_eq!(sink.open(&ours).unwrap(), 4);
    assert!(sink.write_at(0, 0, b"x").is_err());
    assert_eq!(sink.digest(0, 4).unwrap(), ours.sha1);
    sink.finish(0).unwrap();
    assert_eq!(sink.conflicts().count(), 1);
    assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"mine");
    assert_eq!(listing(dir.path()), ["a.txt"]);

    let mut sink = DirSink::new(dir.path().to_path_buf(), true).unwrap();
    assert_eq!(sink.open(&entry(0, "a.txt", b"theirs")).unwrap(), 0);
    sink.write_at(0, 0, b"theirs").unwrap();
    sink.finish(0).unwrap();
    assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"theirs");
    assert_eq!(sink.conflicts().count(), 0);
}

/// The sink's own digests (it verifies for the session) cover a prefix
/// left by an earlier run, bytes written in pieces, an existing final
/// file, and start over after a truncation.
#[test]
fn digests_cover_prefixes_writes_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    // Over two read-back pieces, so both the running and the final
    // read-back are used.
    let body: Vec<u8> = (0..2_500_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(temp(dir.path(), "a", &body), &body[..300_001]).unwrap();
    std::fs::write(dir.path().join("b"), b"held").unwrap();
    let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
    assert_eq!(sink.open(&entry(0, "a", &body)).unwrap(), 300_001);
    assert_eq!(sink.open(&entry(1, "b", b"held")).unwrap(), 4);
    for (i, chunk) in body[300_001..].chunks(65_536).enumerate() {
        sink.write_at(0, 300_001 + (i * 65_536) as u64, chunk)
            .unwrap();
    }
    assert_eq!(
        sink.digest(0, body.len() as u64).unwrap(),
        Sha1Digest::of(&body)
    );
    sink.finish(0).unwrap();
    assert_eq!(sink.digest(1, 4).unwrap(), Sha1Digest::of(b"held"));

    // A wrong prefix: the digest disagrees; after the truncation the
    // refetched bytes verify.
    std::fs::write(temp(dir.path(), "c", b"good"), b"XX").unwrap();
    assert_eq!(sink.open(&entry(2, "c", b"good")).unwrap(), 2);
    sink.write_at(2, 2, b"od").unwrap();
    assert_ne!(sink.digest(2, 4).unwrap(), Sha1Digest::of(b"good"));
    sink.truncate(2).unwrap();
    sink.write_at(2, 0, b"go").unwrap();
    sink.write_at(2, 2, b"od").unwrap();
    assert_eq!(sink.digest(2, 4).unwrap(), Sha1Digest::of(b"good"));

    // Rewriting bytes already read back starts the digest over.
    let d = &body[..1_500_000];
    assert_eq!(sink.open(&entry(3, "d", d)).unwrap(), 0);
    sink.write_at(3, 0, &vec![0u8; d.len()]).unwrap();
    sink.write_at(3, 0, d).unwrap();
    assert_eq!(sink.digest(3, d.len() as u64).unwrap(), Sha1Digest::of(d));
}

#[test]
fn unsafe_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(dir.path().join("inner"), true).unwrap();
    for (i, name) in ["../x", "..", "a//b", "/a", "c:\\d", "e\u{7}"]
        .iter()
        .enumerate()
    {
        let err = sink.open(&entry(i as u16, name, b"x")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{name:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[cfg(unix)]
#[test]
fn a_symlinked_temp_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"").unwrap();
    let inner = dir.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::os::unix::fs::symlink(&outside, temp(&inner, "a", b"data")).unwrap();
    let mut sink = DirSink::new(inner, true).unwrap();
    assert!(sink.open(&entry(0, "a", b"data")).is_err());
    assert_eq!(std::fs::read(&outside).unwrap(), b"");
}

/// Issue 18, item 3: paths land in subdirectories the sink creates.
#[test]
fn paths_are_written_into_created_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
    for (i, (name, data)) in [("d/e/f.txt", b"one"), ("d/g.txt", b"two")]
        .into_iter()
        .enumerate()
    {
        let i = i as u16;
        assert_eq!(sink.open(&entry(i, name, data)).unwrap(), 0);
        sink.write_at(i, 0, data).unwrap();
        assert_eq!(sink.digest(i, 3).unwrap(), Sha1Digest::of(data));
        sink.finish(i).unwrap();
    }
    assert_eq!(listing(dir.path()), ["d"]);
    assert_eq!(std::fs::read(dir.path().join("d/e/f.txt")).unwrap(), b"one");
    assert_eq!(std::fs::read(dir.path().join("d/g.txt")).unwrap(), b"two");
    // A file and its own directory cannot both be created.
    let mut sink = DirSink::new(dir.path().to_path_buf(), false).unwrap();
    sink.open(&entry(0, "x", b"")).unwrap();
    assert!(sink.open(&entry(1, "x/y", b"")).is_err());
}

/// A symbolic link or a file where the path needs a directory is never
/// followed: the entry is a conflict and nothing is written through it.
#[cfg(unix)]
#[test]
fn a_symlinked_or_file_parent_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let mut sink = DirSink::new(dir.path().to_path_buf(), true).unwrap();
    sink.open(&entry(0, "link/x", b"data")).unwrap();
    sink.open(&entry(1, "file/x", b"data")).unwrap();
    for i in 0..2 {
        assert_eq!(sink.digest(i, 4).unwrap(), Sha1Digest::of(b"data"));
        sink.finish(i).unwrap();
    }
    assert_eq!(sink.conflicts().count(), 2);
    assert_eq!(listing(outside.path()), Vec::<String>::new());
}
