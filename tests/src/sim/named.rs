//! Identity and named files in the simulation (PROTOCOL.md §8).
//!
//! In about a third of the seeds (drawn from a stream of their own, so
//! every other seed runs exactly as before) the relay's directory holds a
//! user and a terminal of it, and:
//!
//! - every upload authenticates as that terminal and is a named put
//!   (`set_named`), so completing it binds its file names;
//! - one more batch binds the first batch's names to other content (a
//!   replacement), racing the first upload and the downloads by name;
//! - terminals download those names (`download::Session::named`), over
//!   the same faulty links, crashes and restarts as everyone;
//! - an impostor claims the terminal's name with a wrong key and tries a
//!   named upload: it must fail with `AuthFailed` and never see a grant,
//!   a manifest or a byte.
//!
//! The run learns what a name is bound to from the store after every relay
//! job (bindings happen in a job), so a download by name is checked
//! against the exact history of the name: it must end with one whole
//! content the name held at some point since the download began (the one
//! bound when it started, or a later one), never a mix.

use pickup_proto::download;
use pickup_proto::hash::Sha1Digest;
use pickup_proto::identity::{Credential, DeviceKey, TerminalIdentity};
use pickup_proto::{Duration, Instant};
use pickup_relay::directory::{Directory, MemoryDirectory, PasswordParams};
use pickup_relay::store::memory::MemoryStore;
use pickup_relay::store::Store;

use super::rng::SimRng;
use super::{BatchSpec, Ev, Job, Machine, OwnedMsg};
use crate::mem_files::MemFiles;

/// The user whose namespace the named files live in.
pub const OWNER: &str = "sim-owner";
/// The terminal registered for [`OWNER`].
pub const TERMINAL: &str = "sim-terminal";
/// The terminal's device key.
pub const KEY: DeviceKey = DeviceKey([0x5a; 16]);
/// The key an impostor claiming [`TERMINAL`] answers with.
pub const WRONG_KEY: DeviceKey = DeviceKey([0xa5; 16]);

/// Mixed into a seed for the named-files stream: drawing from the world's
/// own generator would change what every earlier seed does.
const NAMED_SALT: u64 = 0x4e41_4d45_445f_6669;

/// Whether `seed` runs with identity and named files (one seed in three).
pub fn enabled(seed: u64) -> bool {
    SimRng::new(seed ^ NAMED_SALT).chance(333_333)
}

/// The batch that replaces the first one's names: the same names, other
/// content of other sizes (from the named stream, so `batches_for` draws
/// nothing more from its own).
pub fn replacement(seed: u64, first: &BatchSpec) -> BatchSpec {
    let mut rng = SimRng::new(seed ^ NAMED_SALT ^ 0x5eed);
    let contents = first
        .contents
        .iter()
        .map(|_| {
            let size = match rng.below(10) {
                0 => 0,
                1..=4 => rng.range(1, 3000),
                _ => rng.range(3000, 40_000),
            } as usize;
            let mut data = vec![0u8; size];
            rng.fill(&mut data);
            data
        })
        .collect();
    BatchSpec {
        names: first.names.clone(),
        contents,
    }
}

/// The directory of a named seed: [`OWNER`] and its [`TERMINAL`] with [`KEY`].
pub fn directory(now_secs: u64) -> MemoryDirectory {
    let dir = MemoryDirectory::new(PasswordParams::FAST_FOR_TESTS);
    dir.add_user(OWNER, "sim password", now_secs)
        .unwrap_or_else(|e| panic!("adding the simulated user: {e}"));
    dir.add_terminal(TERMINAL, OWNER, KEY, now_secs)
        .unwrap_or_else(|e| panic!("adding the simulated terminal: {e}"));
    dir
}

/// The registered terminal's credential.
pub fn terminal() -> Credential<'static> {
    Credential::Terminal(TerminalIdentity {
        name: TERMINAL,
        key: KEY,
    })
}

/// An impostor's credential: the terminal's name, another key.
pub fn impostor() -> Credential<'static> {
    Credential::Terminal(TerminalIdentity {
        name: TERMINAL,
        key: WRONG_KEY,
    })
}

/// One binding of a name, as the store showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// When the run first saw it.
    pub at: Instant,
    /// The spec whose file it holds (a SHA-1 shared by two specs is the
    /// same bytes here: the replacement never collides with the first).
    pub spec: usize,
    /// The file of that spec.
    pub file: usize,
}

/// What each watched name was bound to, in order.
#[derive(Debug, Default)]
pub struct Book {
    /// Watched names and their bindings, oldest first.
    pub names: Vec<(String, Vec<Binding>)>,
}

impl Book {
    /// Watches `names` (none bound yet).
    pub fn new(names: &[String]) -> Book {
        Book {
            names: names.iter().map(|n| (n.clone(), Vec::new())).collect(),
        }
    }

    /// Reads every watched name from the store and records a binding that
    /// changed. Called after every relay job: bindings happen in jobs.
    pub fn observe(&mut self, store: &MemoryStore, specs: &[BatchSpec], now: Instant) {
        for (name, history) in &mut self.names {
            let found = store
                .find_name(OWNER, name)
                .unwrap_or_else(|e| panic!("store failed looking up {name:?}: {e}"));
            let Some(found) = found else {
                assert!(history.is_empty(), "name {name:?} was unbound");
                continue;
            };
            let bytes = store
                .blob_bytes(found.blob)
                .unwrap_or_else(|| panic!("name {name:?} is bound to a blob that is gone"));
            assert_eq!(Sha1Digest::of(&bytes), found.sha1, "{name:?}: blob SHA-1");
            assert_eq!(bytes.len() as u64, found.size, "{name:?}: blob size");
            let same = history
                .last()
                .is_some_and(|b| specs[b.spec].contents[b.file] == bytes);
            if same {
                continue;
            }
            // The content must be a file uploaded under this name.
            let (spec, file) = specs
                .iter()
                .enumerate()
                .flat_map(|(s, spec)| {
                    spec.names
                        .iter()
                        .zip(&spec.contents)
                        .enumerate()
                        .map(move |(f, (n, c))| (s, f, n, c))
                })
                .find(|(_, _, n, c)| *n == name && **c == bytes)
                .map(|(s, f, _, _)| (s, f))
                .unwrap_or_else(|| {
                    panic!("name {name:?} bound to bytes no upload of that name had")
                });
            history.push(Binding {
                at: now,
                spec,
                file,
            });
        }
    }

    /// The history of watched name `n`.
    pub fn history(&self, n: usize) -> &[Binding] {
        &self.names[n].1
    }
}

impl<'a> super::World<'a> {
    /// A download of watched name `n` by name, as the registered terminal,
    /// into `sink` (a restarted terminal's disk keeps what it wrote).
    pub(super) fn named_machine(
        &self,
        n: usize,
        config: download::Config,
        sink: MemFiles,
    ) -> Machine<'a> {
        let specs: &'a [BatchSpec] = self.specs;
        let mut session = download::Session::named(config, OWNER, &specs[0].names[n]);
        session.authenticate(terminal());
        Machine::Down {
            session: Box::new(session),
            config,
            sink,
        }
    }

    /// Batch `b` completed as a named upload: the downloads of the names
    /// it bound may start (sometimes at once, sometimes later).
    pub(super) fn start_named_downloads(&mut self, b: usize) {
        for d in 0..self.actors.len() {
            let a = &self.actors[d];
            let Job::Named(n) = a.job else { continue };
            let waiting = a.start_at.is_none() && a.machine.is_none() && a.outcome.is_none();
            if waiting && self.specs[b].names.contains(&self.specs[0].names[n]) {
                let delay = Duration::from_millis(self.rng.range(0, 20_000));
                self.actors[d].start_at = Some(self.now + delay);
            }
        }
    }

    /// The bytes of a binding.
    fn bound_bytes(&self, b: &Binding) -> &'a [u8] {
        let specs: &'a [BatchSpec] = self.specs;
        &specs[b.spec].contents[b.file]
    }

    /// A named upload of batch `b` completed: each of its names
    /// is bound to its file (or was, before a later upload replaced it).
    pub(super) fn check_bound(&self, b: usize) {
        let Some(book) = &self.book else { return };
        for (name, history) in &book.names {
            let Some(f) = self.specs[b].names.iter().position(|x| x == name) else {
                continue;
            };
            let content = &self.specs[b].contents[f];
            assert!(
                history.iter().any(|h| self.bound_bytes(h) == &content[..]),
                "BatchComplete of named batch {b}, but {name:?} was never bound to its file {f}"
            );
        }
    }

    /// Checks what the relay sends a download of watched name `n`: it
    /// describes and serves one content the name was bound to.
    pub(super) fn check_named_reply(&mut self, i: usize, n: usize, msg: &OwnedMsg) {
        let book = self.book.as_ref().expect("a seed with named files");
        let history = book.history(n);
        let name = &book.names[n].0;
        let by_sha1 = |sha1: &Sha1Digest| {
            history
                .iter()
                .map(|h| self.bound_bytes(h))
                .find(|c| Sha1Digest::of(c) == *sha1)
        };
        match msg {
            OwnedMsg::Manifest {
                files,
                total_size,
                ready,
                ..
            } => {
                assert_eq!(*files, 1, "a named file's manifest has one file");
                assert!(*ready, "a named file is always ready");
                assert!(
                    history
                        .iter()
                        .any(|h| self.bound_bytes(h).len() as u64 == *total_size),
                    "manifest of {name:?}: {total_size} bytes, no content it held had that size"
                );
            }
            OwnedMsg::Entry {
                index,
                size,
                sha1,
                name: entry,
            } => {
                assert_eq!(*index, 0);
                assert_eq!(entry, name, "entry of another name");
                let content = by_sha1(sha1).unwrap_or_else(|| {
                    panic!("entry of {name:?} with a SHA-1 it was never bound to")
                });
                assert_eq!(*size, content.len() as u64, "entry size of {name:?}");
                let sha1 = *sha1;
                if let Some(conn) = self.actors[i].conn.as_mut() {
                    conn.named_sha1s.push(sha1);
                }
            }
            OwnedMsg::Data {
                file,
                offset,
                bytes,
            } => {
                assert_eq!(*file, 0);
                let described = self.actors[i]
                    .conn
                    .as_ref()
                    .map(|c| &c.named_sha1s[..])
                    .unwrap_or_default();
                assert!(
                    !described.is_empty(),
                    "data of a named file follows its entry"
                );
                // A repeated fetch may have described newer content too;
                // the bytes are those of one described content.
                let start = *offset as usize;
                assert!(
                    !bytes.is_empty()
                        && described.iter().any(|sha1| {
                            let content = by_sha1(sha1).expect("checked with its entry");
                            content.get(start..start + bytes.len()) == Some(&bytes[..])
                        }),
                    "relay served wrong bytes of {name:?} at {start} ({} bytes)",
                    bytes.len()
                );
            }
            _ => {}
        }
    }

    /// A download by name verified its file or completed: what it holds
    /// is one whole content the name held since the download began.
    pub(super) fn check_named_download(&mut self, i: usize, event: &Ev) {
        let Job::Named(n) = self.actors[i].job else {
            unreachable!("only downloads by name")
        };
        let book = self.book.as_ref().expect("a seed with named files");
        let Some(Machine::Down { sink, .. }) = &self.actors[i].machine else {
            unreachable!("a download's events")
        };
        let since = self.actors[i].since;
        let held = &sink.files[0];
        let matches = book.history(n)[since..]
            .iter()
            .any(|h| self.bound_bytes(h) == &held[..]);
        assert!(
            matches,
            "download of {:?} ended with {} bytes that are none of the contents it held since \
             the download began ({:?})",
            book.names[n].0,
            held.len(),
            &book.history(n)[since..]
        );
        if matches!(event, Ev::Down(download::Event::Complete)) {
            assert!(sink.finished[0], "download complete but its file is not");
            self.report.named_downloads += 1;
            self.report.downloads += 1;
            self.actors[i].outcome = Some(Ok(()));
        }
    }
}
