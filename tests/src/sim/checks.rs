//! The checks on what the relay sends, made by a tap before the link can
//! damage it, and on what its store still holds after a crash (see the
//! parent module's list).

use super::*;

impl<'a> World<'a> {
    /// Decodes one frame the relay sent to actor `i` and checks it.
    pub(super) fn check_relay_output(&mut self, i: usize, wire: &[u8]) {
        let job = self.actors[i].job;
        let Some(conn) = self.actors[i].conn.as_mut() else {
            return;
        };
        let mut input = wire;
        let msg = match conn.tap.feed(&mut input) {
            Some(Ok(f)) => Message::decode(f)
                .unwrap_or_else(|e| panic!("relay sent an undecodable frame: {e}"))
                .to_owned_msg(),
            other => panic!("relay sent a broken frame: {other:?}"),
        };
        assert!(input.is_empty(), "relay wrote more than one frame at once");
        if !matches!(msg, OwnedMsg::Data { .. }) {
            self.trace(format_args!("relay → actor {}: {msg:?}", self.actors[i].id));
        }
        let unix = self.now.as_millis() / 1000;
        match job {
            Job::Upload(b) => self.check_upload_reply(i, b, &msg, unix),
            Job::Download(b) | Job::Late(b) => self.check_download_reply(b, &msg, unix),
            Job::Bogus => match msg {
                OwnedMsg::Manifest { .. } | OwnedMsg::Entry { .. } | OwnedMsg::Data { .. } => {
                    panic!("relay served {msg:?} for a code it never issued")
                }
                _ => {}
            },
            Job::Named(n) => self.check_named_reply(i, n, &msg),
            Job::Push | Job::Listen(_) | Job::Fetch { .. } => self.check_notice_reply(job, &msg),
            Job::Impostor => match msg {
                OwnedMsg::Grant { .. }
                | OwnedMsg::Plan { .. }
                | OwnedMsg::Ack { .. }
                | OwnedMsg::Verified { .. }
                | OwnedMsg::BatchComplete
                | OwnedMsg::Manifest { .. }
                | OwnedMsg::Entry { .. }
                | OwnedMsg::Data { .. }
                | OwnedMsg::Other(Kind::Authenticated) => {
                    panic!("relay sent {msg:?} to a terminal with a wrong key")
                }
                _ => {}
            },
        }
    }

    pub(super) fn lookup(&self, code: Code, unix: u64) -> pickup_relay::store::Batch {
        match self.store.find_by_code(&code_key(&code), unix) {
            Ok(Lookup::Live(batch)) => batch,
            Ok(other) => panic!("batch {code} lost from the store: {other:?}"),
            Err(e) => panic!("store failed: {e}"),
        }
    }

    /// The batch uploaded from spec `b`, once its uploader knows the code.
    pub(super) fn batch(&self, b: usize, unix: u64) -> Option<pickup_relay::store::Batch> {
        Some(self.lookup(self.batches[b].code?, unix))
    }

    pub(super) fn check_upload_reply(&mut self, i: usize, b: usize, msg: &OwnedMsg, unix: u64) {
        let spec = &self.specs[b];
        let conn_code = self.actors[i].conn.as_ref().and_then(|c| c.code);
        match *msg {
            OwnedMsg::Grant { code, files, .. } => {
                assert_eq!(
                    usize::from(files),
                    spec.contents.len(),
                    "grant for the wrong batch"
                );
                if self.actors[i].token.is_some() {
                    // The uploader resumes with its token: same batch.
                    assert_eq!(
                        self.batches[b].code,
                        Some(code),
                        "a resumed grant changed the code"
                    );
                }
                let granted = self.granted.entry(code).or_insert_with(|| Granted {
                    spec: b,
                    claimed: vec![0; spec.contents.len()],
                });
                assert_eq!(granted.spec, b, "one code granted for two batches");
                if let Some(conn) = self.actors[i].conn.as_mut() {
                    conn.code = Some(code);
                }
            }
            OwnedMsg::Plan { index, plan } => {
                let code = conn_code.expect("a plan follows a grant");
                let size = spec.contents[usize::from(index)].len() as u64;
                if let Plan::Upload { offset } = plan {
                    let durable = self.lookup(code, unix).files[usize::from(index)].received();
                    assert!(
                        offset <= durable && offset <= size,
                        "plan says resume file {index} at {offset}, durable is {durable}"
                    );
                    self.claim(code, index, offset);
                }
            }
            OwnedMsg::Ack { file, offset } => {
                let code = conn_code.expect("an ack follows a grant");
                let durable = self.lookup(code, unix).files[usize::from(file)].received();
                let size = spec.contents[usize::from(file)].len() as u64;
                assert!(
                    offset <= durable && offset <= size,
                    "ack of file {file} at {offset}, durable is {durable}"
                );
                self.claim(code, file, offset);
            }
            OwnedMsg::Verified { index } => {
                let code = conn_code.expect("a verdict follows a grant");
                let batch = self.lookup(code, unix);
                self.check_blob(
                    b,
                    &batch.files[usize::from(index)].content,
                    usize::from(index),
                );
            }
            OwnedMsg::BatchComplete => {
                let code = conn_code.expect("completion follows a grant");
                let batch = self.lookup(code, unix);
                assert!(batch.ready(), "BatchComplete for a batch that is not ready");
                for (i, f) in batch.files.iter().enumerate() {
                    self.check_blob(b, &f.content, i);
                }
                // Names are checked when the terminal says the upload is
                // complete: a BatchComplete of a batch whose NamedPut was
                // lost comes before its names are bound, and the terminal
                // asks again (PROTOCOL.md §8).
            }
            OwnedMsg::Rejected { index, reason } => {
                panic!("relay rejected honest file {index}: {reason:?}")
            }
            _ => {}
        }
    }

    pub(super) fn claim(&mut self, code: Code, file: u16, offset: u64) {
        let granted = self.granted.get_mut(&code).expect("claims follow a grant");
        let c = &mut granted.claimed[usize::from(file)];
        *c = (*c).max(offset);
    }

    pub(super) fn check_blob(&self, b: usize, content: &FileContent, index: usize) {
        let FileContent::Blob(id) = *content else {
            panic!("file {index} of batch {b} reported verified but is {content:?}");
        };
        let bytes = self
            .store
            .blob_bytes(id)
            .unwrap_or_else(|| panic!("file {index} of batch {b}: blob {id:?} is gone"));
        assert!(
            bytes == self.specs[b].contents[index],
            "file {index} of batch {b}: the blob differs from the upload"
        );
    }

    pub(super) fn check_download_reply(&mut self, b: usize, msg: &OwnedMsg, unix: u64) {
        let spec = &self.specs[b];
        match msg {
            OwnedMsg::Manifest {
                code,
                files,
                total_size,
                ready,
            } => {
                assert_eq!(
                    Some(*code),
                    self.batches[b].code,
                    "manifest for another code"
                );
                let expires_at = self.batches[b].expires_at.unwrap_or(u64::MAX);
                // A batch pushed to a terminal that read it lately is kept
                // past its code's expiry (PROTOCOL.md §11): the store says.
                let kept = unix >= expires_at
                    && matches!(
                        self.store.find_by_code(&code_key(code), unix),
                        Ok(Lookup::Live(_))
                    );
                assert!(
                    unix < expires_at || kept,
                    "the relay served the manifest of batch {b} at {unix}, after it expired at {expires_at}"
                );
                assert_eq!(
                    usize::from(*files),
                    spec.contents.len(),
                    "manifest file count"
                );
                assert_eq!(*total_size, spec.total(), "manifest total size");
                if *ready {
                    let batch = self.batch(b, unix).expect("a manifest's batch");
                    assert!(batch.ready(), "manifest says ready, store says not");
                }
            }
            OwnedMsg::Entry {
                index,
                size,
                sha1,
                name,
            } => {
                let i = usize::from(*index);
                assert!(i < spec.contents.len(), "entry {i} past the batch");
                assert_eq!(*size, spec.contents[i].len() as u64, "entry {i} size");
                assert_eq!(*sha1, Sha1Digest::of(&spec.contents[i]), "entry {i} SHA-1");
                assert_eq!(name, &spec.names[i], "entry {i} name");
            }
            OwnedMsg::Data {
                file,
                offset,
                bytes,
            } => {
                let batch = self.batch(b, unix).expect("data from a batch with a code");
                assert!(
                    batch.ready(),
                    "relay served data from a batch not yet verified"
                );
                let content = &spec.contents[usize::from(*file)];
                let start = *offset as usize;
                assert!(
                    start + bytes.len() <= content.len() && !bytes.is_empty(),
                    "relay served {} bytes at {start} of a {}-byte file",
                    bytes.len(),
                    content.len()
                );
                assert!(
                    bytes[..] == content[start..start + bytes.len()],
                    "relay served wrong bytes of file {file} at {start}"
                );
            }
            _ => {}
        }
    }

    /// The relay process dies and restarts: sessions vanish, the store loses
    /// every byte that was not durable, and must still hold all it promised.
    pub(super) fn crash_relay(&mut self) {
        self.report.crashes += 1;
        self.trace(format_args!("relay crashes"));
        for i in 0..self.actors.len() {
            if self.actors[i].conn.is_some() {
                self.close(i, Close::RelayCrash);
            }
        }
        self.store.crash();
        let unix = self.now.as_millis() / 1000;
        for (code, granted) in &self.granted {
            let b = granted.spec;
            // A crash long after a batch expired (a notices seed crashes
            // late on purpose) finds it gone: nothing to hold any more.
            if let Ok(Lookup::Expired) = self.store.find_by_code(&code_key(code), unix) {
                continue;
            }
            let batch = self.lookup(*code, unix);
            for (f, record) in batch.files.iter().enumerate() {
                let claimed = granted.claimed[f];
                let original = &self.specs[b].contents[f];
                match record.content {
                    FileContent::Partial { id, durable } => {
                        assert!(
                            durable >= claimed,
                            "crash lost acknowledged bytes: file {f} of batch {b} was acked to {claimed}, only {durable} survived"
                        );
                        let mut buf = vec![0u8; durable as usize];
                        let n = self
                            .store
                            .read_partial(id, 0, &mut buf)
                            .unwrap_or_else(|e| panic!("read of a partial failed: {e}"));
                        assert_eq!(n as u64, durable, "partial shorter than its durable offset");
                        assert!(
                            buf[..] == original[..n],
                            "file {f} of batch {b}: durable bytes differ from the upload"
                        );
                    }
                    FileContent::Blob(_) => self.check_blob(b, &record.content, f),
                }
            }
        }
        self.relay = Relay::with_directory(
            self.settings.clone(),
            self.store.clone(),
            self.directory.clone(),
            Box::new(SeededRandom::new(self.rng.next_u64())),
            self.now,
        );
    }
}
