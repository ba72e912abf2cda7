//! The local record of unfinished uploads, so an interrupted `pickup send`
//! resumes when run again with the same files.
//!
//! One small JSON file per upload, named by a digest of the relay address
//! and each file's name, size and SHA-1, holding the code and the resume
//! token. The token is a secret (it lets its holder change the upload), so
//! the directory is created 0700 and the file 0600. The file is written as
//! soon as the relay grants the batch and removed once the upload completes.
//!
//! Beside them, one `family-*.json` per relay holds the token of the latest
//! batch sent there ([`FamilyFile`]): the next `pickup send` joins that
//! batch's owner (PROTOCOL.md §7.1), so content sent before is linked
//! instead of sent again, which the relay offers its owner only.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use pickup_proto::hash::Sha1Hasher;
use pickup_proto::message::{AuthToken, RefuseReason, ResumeToken};
use pickup_proto::notice::Verdict;
use pickup_proto::upload::FileMeta;
use pickup_proto::Code;
use serde_json::{json, Value};

/// A saved, unfinished upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Saved {
    pub code: Code,
    pub token: ResumeToken,
}

/// Where one upload's state lives.
pub(crate) struct StateFile {
    path: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex16(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl StateFile {
    /// The state file for uploading `files` to `relay`, in `dir`.
    pub fn new(dir: &Path, relay: &str, files: &[FileMeta<'_>]) -> StateFile {
        let mut h = Sha1Hasher::new();
        h.update(b"pickup send state v1\0");
        h.update(relay.as_bytes());
        for f in files {
            h.update(b"\0");
            h.update(f.name.as_bytes());
            h.update(b"\0");
            h.update(&f.size.to_le_bytes());
            h.update(&f.sha1.0);
        }
        StateFile {
            path: dir.join(format!("send-{}.json", h.digest())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved upload, if there is a readable one.
    pub fn load(&self) -> Option<Saved> {
        let text = fs::read_to_string(&self.path).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let code = Code::parse(v.get("code")?.as_str()?).ok()?;
        let token = ResumeToken(unhex16(v.get("token")?.as_str()?)?);
        Some(Saved { code, token })
    }

    /// Records the upload (atomically: a temporary file renamed over).
    pub fn save(&self, relay: &str, saved: &Saved, names: &[&str]) -> io::Result<()> {
        let doc = json!({
            "relay": relay,
            "code": saved.code.to_string(),
            "token": hex(&saved.token.0),
            "files": names,
        });
        write_private(&self.path, &doc)
    }

    /// Forgets the upload (it completed, or the relay no longer knows it).
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// The token family this terminal's uploads to one relay belong to: the
/// token of the latest batch it sent there.
pub(crate) struct FamilyFile {
    path: PathBuf,
}

impl FamilyFile {
    /// The family file for `relay`, in `dir`.
    pub fn new(dir: &Path, relay: &str) -> FamilyFile {
        let mut h = Sha1Hasher::new();
        h.update(b"pickup send family v1\0");
        h.update(relay.as_bytes());
        FamilyFile {
            path: dir.join(format!("family-{}.json", h.digest())),
        }
    }

    /// The token of the latest batch, if there is a readable one.
    pub fn load(&self) -> Option<ResumeToken> {
        let text = fs::read_to_string(&self.path).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        Some(ResumeToken(unhex16(v.get("token")?.as_str()?)?))
    }

    /// Records the token of the latest batch (a secret, like the resume
    /// state: it lets its holder resume that batch).
    pub fn save(&self, relay: &str, token: &ResumeToken) -> io::Result<()> {
        write_private(
            &self.path,
            &json!({ "relay": relay, "token": hex(&token.0) }),
        )
    }
}

/// A login kept for one relay: the user and the token `pickup login` got
/// (a secret: whoever holds it acts as the user until it expires or
/// `pickup logout` revokes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub user: String,
    pub token: AuthToken,
    pub expires_at: u64,
}

/// Where the login for one relay lives.
pub(crate) struct LoginFile {
    path: PathBuf,
}

impl LoginFile {
    /// The login file for `relay`, in `dir`.
    pub fn new(dir: &Path, relay: &str) -> LoginFile {
        let mut h = Sha1Hasher::new();
        h.update(b"pickup login v1\0");
        h.update(relay.as_bytes());
        LoginFile {
            path: dir.join(format!("login-{}.json", h.digest())),
        }
    }

    /// The file's path.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kept login, if there is a readable one.
    pub fn load(&self) -> Option<Login> {
        let text = fs::read_to_string(&self.path).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        Some(Login {
            user: v.get("user")?.as_str()?.to_string(),
            token: AuthToken(unhex16(v.get("token")?.as_str()?)?),
            expires_at: v.get("expires_at")?.as_u64()?,
        })
    }

    /// Keeps `login` (mode 0600, written atomically).
    pub fn save(&self, relay: &str, login: &Login) -> io::Result<()> {
        write_private(
            &self.path,
            &json!({
                "relay": relay,
                "user": login.user,
                "token": hex(&login.token.0),
                "expires_at": login.expires_at,
            }),
        )
    }

    /// Forgets the login; no file is not an error.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// The verdicts `pickup listen` gave on notices, per relay and terminal:
/// what the terminal must answer again, never show again, if the relay
/// sends a notice once more (its `Settled` was lost, or the command was
/// killed before it came).
pub(crate) struct VerdictFile {
    path: PathBuf,
}

/// Most verdicts a [`VerdictFile`] keeps: the newest. A relay stops
/// sending a notice once it settled it, so only the few last ones matter.
pub(crate) const MAX_VERDICTS: usize = 256;

impl VerdictFile {
    /// The verdict file of `terminal` at `relay`, in `dir`.
    pub fn new(dir: &Path, relay: &str, terminal: &str) -> VerdictFile {
        let mut h = Sha1Hasher::new();
        h.update(b"pickup listen v1\0");
        h.update(relay.as_bytes());
        h.update(b"\0");
        h.update(terminal.as_bytes());
        VerdictFile {
            path: dir.join(format!("listen-{}.json", h.digest())),
        }
    }

    /// The verdicts kept, oldest first (none if there is no readable file).
    pub fn load(&self) -> Vec<(u64, Verdict)> {
        let Ok(text) = fs::read_to_string(&self.path) else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return Vec::new();
        };
        let Some(list) = v.get("verdicts").and_then(Value::as_array) else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|e| {
                let id = e.get("id")?.as_u64()?;
                let verdict = match e.get("verdict")?.as_str()? {
                    "confirmed" => Verdict::Confirmed,
                    "too large" => Verdict::Refused(RefuseReason::TooLarge),
                    "sender" => Verdict::Refused(RefuseReason::Sender),
                    "no space" => Verdict::Refused(RefuseReason::NoSpace),
                    "declined" => Verdict::Refused(RefuseReason::Declined),
                    _ => return None,
                };
                Some((id, verdict))
            })
            .collect()
    }

    /// Keeps `verdicts` (the newest [`MAX_VERDICTS`]), mode 0600, atomically.
    pub fn save(&self, relay: &str, terminal: &str, verdicts: &[(u64, Verdict)]) -> io::Result<()> {
        let from = verdicts.len().saturating_sub(MAX_VERDICTS);
        let list: Vec<Value> = verdicts[from..]
            .iter()
            .map(|(id, v)| json!({ "id": id, "verdict": verdict_name(*v) }))
            .collect();
        write_private(
            &self.path,
            &json!({ "relay": relay, "terminal": terminal, "verdicts": list }),
        )
    }
}

/// How a verdict is written down (and shown).
pub(crate) fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Confirmed => "confirmed",
        Verdict::Refused(RefuseReason::TooLarge) => "too large",
        Verdict::Refused(RefuseReason::Sender) => "sender",
        Verdict::Refused(RefuseReason::NoSpace) => "no space",
        Verdict::Refused(RefuseReason::Declined) => "declined",
    }
}

/// Writes `doc` to `path` readable by its owner only, atomically (a
/// temporary file renamed over), creating the directory 0700.
pub(crate) fn write_private(path: &Path, doc: &Value) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    f.write_all(doc.to_string().as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickup_proto::Sha1Digest;

    #[test]
    fn verdicts_are_kept_newest_last_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = VerdictFile::new(dir.path(), "tcp://r:1", "sensor-1");
        assert!(f.load().is_empty());
        let mut all: Vec<(u64, Verdict)> = (0..MAX_VERDICTS as u64 + 10)
            .map(|id| (id, Verdict::Confirmed))
            .collect();
        all.push((9_999, Verdict::Refused(RefuseReason::TooLarge)));
        f.save("tcp://r:1", "sensor-1", &all).unwrap();
        let back = f.load();
        assert_eq!(back.len(), MAX_VERDICTS);
        assert_eq!(back.last(), all.last());
        assert_eq!(back[0].0, 11);
        // Another terminal at the same relay keeps its own.
        assert!(VerdictFile::new(dir.path(), "tcp://r:1", "sensor-2")
            .load()
            .is_empty());
    }

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state/pickup");
        let files = [FileMeta {
            name: "a",
            size: 3,
            sha1: Sha1Digest::of(b"abc"),
        }];
        let s = StateFile::new(&state_dir, "tcp://127.0.0.1:1", &files);
        assert_eq!(s.load(), None);
        let saved = Saved {
            code: Code::parse("7KQ4-M2XD-9RTA").unwrap(),
            token: ResumeToken([0xa5; 16]),
        };
        s.save("tcp://127.0.0.1:1", &saved, &["a"]).unwrap();
        assert_eq!(s.load(), Some(saved));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Another relay or other content is another upload.
        assert_eq!(
            StateFile::new(&state_dir, "tcp://127.0.0.1:2", &files).load(),
            None
        );
        let other = [FileMeta {
            size: 4,
            ..files[0]
        }];
        assert_eq!(
            StateFile::new(&state_dir, "tcp://127.0.0.1:1", &other).load(),
            None
        );
        s.remove().unwrap();
        assert_eq!(s.load(), None);
        s.remove().unwrap();
    }

    #[test]
    fn a_login_is_kept_per_relay_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = LoginFile::new(dir.path(), "tcp://a:1");
        let b = LoginFile::new(dir.path(), "tcp://b:1");
        assert_eq!(a.load(), None);
        let login = Login {
            user: "ada".into(),
            token: AuthToken([9; 16]),
            expires_at: 1_800_000_000,
        };
        a.save("tcp://a:1", &login).unwrap();
        assert_eq!(a.load(), Some(login));
        assert_eq!(b.load(), None);
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        a.remove().unwrap();
        a.remove().unwrap();
        assert_eq!(a.load(), None);
    }

    #[test]
    fn the_family_token_is_kept_per_relay() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("pickup");
        let f = FamilyFile::new(&state_dir, "tcp://127.0.0.1:1");
        assert_eq!(f.load(), None);
        f.save("tcp://127.0.0.1:1", &ResumeToken([0x3c; 16]))
            .unwrap();
        f.save("tcp://127.0.0.1:1", &ResumeToken([0x5a; 16]))
            .unwrap();
        assert_eq!(f.load(), Some(ResumeToken([0x5a; 16])));
        assert_eq!(
            FamilyFile::new(&state_dir, "tcp://127.0.0.1:2").load(),
            None
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
