//! What `pickup send` sends: its arguments turned into (file, name) pairs.
//!
//! A file is sent under its own name; a directory as the files below it,
//! each named by its path from the directory's parent (`photos/2026/a.jpg`
//! for `send photos`), so `get` recreates the directory inside `-o`; `-`
//! is standard input, spooled to a file first (the batch announces every
//! file's size and SHA-1 before the first byte goes up).

use std::fs::{self, File};
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

use pickup_proto::message;

use super::show::escape;
use super::{Exit, Failure, MAX_FILES};

/// One file to send.
pub(crate) struct Input {
    /// Where to read it.
    pub path: PathBuf,
    /// Its name in the batch: a relative path with `/` separators.
    pub name: String,
}

/// Standard input spooled to a file, removed again when dropped.
pub(crate) struct Spool {
    path: PathBuf,
}

impl Spool {
    /// Where standard input was spooled.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn usage(msg: String) -> Failure {
    Failure::new(Exit::Usage, msg)
}

/// The files `args` name, in order, directories walked in sorted order.
/// `warn` hears one line per symbolic link or special file left out.
/// `stdin_name` is the name for `-`; `spool_dir` where stdin is spooled.
pub(crate) fn gather(
    args: &[PathBuf],
    stdin_name: Option<&str>,
    spool_dir: &Path,
    warn: &mut dyn FnMut(&str),
) -> Result<(Vec<Input>, Option<Spool>), Failure> {
    let mut inputs = Vec::new();
    let mut spool = None;
    for path in args {
        if path.as_os_str() == "-" {
            if spool.is_some() {
                return Err(usage("standard input (-) can be sent only once".into()));
            }
            let name = stdin_name
                .ok_or_else(|| usage("sending standard input (-) needs --name NAME".into()))?;
            if io::stdin().is_terminal() {
                // Otherwise a forgotten pipe looks like a hang.
                warn("reading standard input until end of file (Ctrl-D)");
            }
            let s = spool_stdin(spool_dir)?;
            inputs.push(Input {
                path: s.path.clone(),
                name: name.to_string(),
            });
            spool = Some(s);
            continue;
        }
        let local_err =
            |e: io::Error| Failure::new(Exit::Local, format!("{}: {e}", path.display()));
        let meta = fs::metadata(path).map_err(local_err)?;
        if meta.is_dir() {
            let before = inputs.len();
            let prefix = dir_name(path)?;
            walk(path, prefix.as_deref(), &mut inputs, warn)?;
            if inputs.len() == before {
                return Err(usage(format!(
                    "{}: no files to send in this directory",
                    path.display()
                )));
            }
        } else {
            // `send ..` or `send /`: a file has a name of its own.
            let name = path
                .file_name()
                .ok_or_else(|| usage(format!("{}: not a file", path.display())))?;
            inputs.push(Input {
                path: path.clone(),
                name: utf8(name, path)?.to_string(),
            });
        }
    }
    if stdin_name.is_some() && spool.is_none() {
        return Err(usage("--name is for standard input (-) only".into()));
    }
    if inputs.len() > MAX_FILES {
        return Err(usage(format!(
            "{} files; at most {MAX_FILES} files per batch",
            inputs.len()
        )));
    }
    for (i, input) in inputs.iter().enumerate() {
        if message::validate_name(&input.name).is_err() {
            return Err(usage(format!(
                "\"{}\" cannot be sent as a file name",
                escape(&input.name)
            )));
        }
        if let Some(earlier) = inputs[..i]
            .iter()
            .find(|e| message::names_conflict(&e.name, &input.name))
        {
            let msg = if earlier.name == input.name {
                format!("two files are named \"{}\"", escape(&input.name))
            } else {
                format!(
                    "\"{}\" and \"{}\" cannot both be sent: one is the other's directory",
                    escape(&earlier.name),
                    escape(&input.name)
                )
            };
            return Err(usage(msg));
        }
    }
    Ok((inputs, spool))
}

fn utf8<'a>(name: &'a std::ffi::OsStr, path: &Path) -> Result<&'a str, Failure> {
    name.to_str().ok_or_else(|| {
        usage(format!(
            "{}: the file name is not valid UTF-8",
            path.display()
        ))
    })
}

/// The name a directory's files are sent under: its own (`.` and `..`
/// resolved), none for a root.
fn dir_name(path: &Path) -> Result<Option<String>, Failure> {
    let named = match path.file_name() {
        Some(n) => Some(n.to_os_string()),
        None => fs::canonicalize(path)
            .map_err(|e| Failure::new(Exit::Local, format!("{}: {e}", path.display())))?
            .file_name()
            .map(|n| n.to_os_string()),
    };
    named
        .map(|n| utf8(&n, path).map(str::to_string))
        .transpose()
}

/// Adds the regular files below `dir`, sorted by name at every level, so
/// one tree always makes the same batch (and resumes as the same batch).
fn walk(
    dir: &Path,
    prefix: Option<&str>,
    inputs: &mut Vec<Input>,
    warn: &mut dyn FnMut(&str),
) -> Result<(), Failure> {
    let local_err = |e: io::Error| Failure::new(Exit::Local, format!("{}: {e}", dir.display()));
    let mut entries = fs::read_dir(dir)
        .map_err(local_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(local_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let file_name = entry.file_name();
        let name = match prefix {
            Some(p) => format!("{p}/{}", utf8(&file_name, &path)?),
            None => utf8(&file_name, &path)?.to_string(),
        };
        // Not followed: a link could lead anywhere, even into a loop.
        let kind = entry.file_type().map_err(local_err)?;
        if kind.is_dir() {
            // No name below it could be sent: stop before walking a tree
            // deeper than any path the protocol carries.
            if name.len() >= message::MAX_NAME_LEN {
                return Err(usage(format!(
                    "\"{}\": paths below it are longer than {} bytes",
                    escape(&name),
                    message::MAX_NAME_LEN
                )));
            }
            walk(&path, Some(&name), inputs, warn)?;
        } else if kind.is_file() {
            inputs.push(Input { path, name });
            // `pickup send /` stops here, not after listing the disk.
            if inputs.len() > MAX_FILES {
                return Err(usage(format!(
                    "{}: more than {MAX_FILES} files; at most {MAX_FILES} files per batch",
                    dir.display()
                )));
            }
        } else if kind.is_symlink() {
            warn(&format!("skipping {}: a symbolic link", path.display()));
        } else {
            warn(&format!("skipping {}: not a regular file", path.display()));
        }
    }
    Ok(())
}

/// Copies standard input into a new file in `dir` and returns it.
fn spool_stdin(dir: &Path) -> Result<Spool, Failure> {
    let local = |e: io::Error| {
        Failure::new(
            Exit::Local,
            format!("spooling standard input in {}: {e}", dir.display()),
        )
    };
    fs::create_dir_all(dir).map_err(local)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let path = dir.join(format!(".pickup-stdin-{}-{nanos}", std::process::id()));
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(local)?;
    let spool = Spool { path };
    io::copy(&mut io::stdin().lock(), &mut file).map_err(local)?;
    file.sync_all().map_err(local)?;
    Ok(spool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(args: &[PathBuf]) -> Result<(Vec<String>, usize), Failure> {
        let mut warnings = 0;
        let (inputs, _) = gather(args, None, Path::new("/nonexistent"), &mut |_| {
            warnings += 1
        })?;
        Ok((inputs.into_iter().map(|i| i.name).collect(), warnings))
    }

    #[test]
    fn directories_become_sorted_paths_under_their_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        fs::create_dir_all(top.join("b/c")).unwrap();
        fs::create_dir_all(top.join("empty")).unwrap();
        for f in ["z", "a", "b/c/d", "b/x"] {
            fs::write(top.join(f), f).unwrap();
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink("/", top.join("link")).unwrap();
        let (got, warnings) = names(&[top.clone(), dir.path().join("top/a")])
            .ok()
            .unwrap();
        assert_eq!(got, ["top/a", "top/b/c/d", "top/b/x", "top/z", "a"]);
        assert_eq!(warnings, usize::from(cfg!(unix)));
        // `top/a` sent twice (as itself and from its directory) collides
        // only when the names do.
        assert!(names(&[top.join("a"), top.join("a")]).is_err());
        // `a` as a file and `a/…` from a directory named `a`.
        let other = dir.path().join("other/top");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join("f"), b"").unwrap();
        let file_top = dir.path().join("file/top");
        fs::create_dir_all(file_top.parent().unwrap()).unwrap();
        fs::write(&file_top, b"").unwrap();
        assert!(names(&[file_top, other]).is_err());
        assert!(names(&[top.join("empty")]).is_err());
    }

    #[test]
    fn a_walk_stops_at_the_file_count_and_the_path_length() {
        let dir = tempfile::tempdir().unwrap();
        let many = dir.path().join("many");
        fs::create_dir(&many).unwrap();
        for i in 0..=MAX_FILES {
            fs::write(many.join(format!("{i:05}")), b"").unwrap();
        }
        let Err(e) = names(&[many]) else {
            panic!("{} files walked", MAX_FILES + 1)
        };
        assert!(e.message.contains("more than"), "{}", e.message);
        // A chain of directories whose path outgrows any name.
        let mut deep = dir.path().join("deep");
        for _ in 0..message::MAX_NAME_LEN / 10 + 1 {
            deep.push("123456789");
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("f"), b"").unwrap();
        let Err(e) = names(&[dir.path().join("deep")]) else {
            panic!("a path past {} bytes walked", message::MAX_NAME_LEN)
        };
        assert!(e.message.contains("longer than"), "{}", e.message);
    }
}
