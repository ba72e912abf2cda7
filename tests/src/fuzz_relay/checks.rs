//! The checks on every frame the relay sends (the invariants in the
//! module doc): frame size, durable offsets, verified and served bytes.

use pickup_proto::code::Code;
use pickup_proto::frame::{self, Frame};
use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::{Message, Plan};
use pickup_relay::codes::code_key;
use pickup_relay::store::{FileContent, Lookup, Store};

use super::{Batch, Fuzz, RelaySummary, CONTENTS};

impl Fuzz {
    pub(super) fn lookup(&self, code: Code) -> Option<pickup_relay::store::Batch> {
        self.lookup_at(code, self.now.as_millis() / 1000)
    }

    /// The batch behind `code` as it stood at `secs` (Unix seconds).
    fn lookup_at(&self, code: Code, secs: u64) -> Option<pickup_relay::store::Batch> {
        match self.store.find_by_code(&code_key(&code), secs) {
            Ok(Lookup::Live(b)) => Some(b),
            _ => None,
        }
    }

    pub(super) fn check(&mut self, t: usize, wire: &[u8], summary: &mut RelaySummary) {
        let Some(term) = self.terminals[t].as_mut() else {
            return;
        };
        let max_frame = term.max_frame;
        let mut input = wire;
        let (version, kind, body) = match term.decoder.feed(&mut input) {
            Some(Ok(f)) => (f.version, f.kind, f.body.to_vec()),
            other => panic!("the relay sent a broken frame: {other:?}"),
        };
        let f = Frame {
            version,
            kind,
            body: &body,
        };
        assert!(input.is_empty(), "one frame per poll_transmit");
        let raw = f.body.len() + frame::OVERHEAD;
        assert!(
            raw <= max_frame,
            "a {raw}-byte frame to a terminal that takes {max_frame}"
        );
        let msg = Message::decode(f).unwrap_or_else(|e| panic!("the relay sent {e}"));
        let conn_code = term.code;
        let reading = term.reading;
        let produced_secs = term.last_input.as_millis() / 1000;
        self.log(format_args!("relay tells terminal {t}: {msg:?}"));
        match msg {
            Message::Grant(g) => {
                summary.grants += 1;
                if let Some(term) = self.terminals[t].as_mut() {
                    term.code = Some(g.code);
                    term.nonces.clear();
                }
                let sha1s = self
                    .lookup(g.code)
                    .map(|b| b.files.iter().map(|f| f.sha1).collect())
                    .unwrap_or_default();
                let entry = self.batches.entry(g.code).or_insert_with(|| Batch {
                    token: g.token,
                    expires_at: g.expires_at,
                    files: g.files,
                    sha1s,
                });
                assert!(entry.token == g.token, "one code, two tokens");
                assert_eq!(entry.files, g.files, "a batch changed its file count");
            }
            Message::FilePlan(p) => {
                if let Plan::Challenge { nonce } = p.plan {
                    summary.challenges += 1;
                    if let Some(term) = self.terminals[t].as_mut() {
                        term.nonces.insert(p.index, nonce);
                    }
                }
                if let (Plan::Upload { offset }, Some(code)) = (p.plan, conn_code) {
                    self.check_durable(code, p.index, offset, "plan");
                }
            }
            Message::Ack(a) => {
                if let Some(code) = conn_code {
                    self.check_durable(code, a.file, a.offset, "ack");
                }
            }
            Message::FileVerified(v) => {
                summary.verified += 1;
                let code = conn_code.expect("a verdict follows a grant");
                let Some(batch) = self.lookup(code) else {
                    // A verdict that waited in the outbox while the run did
                    // not drain it was produced at the session's last input;
                    // the batch must have been live then.
                    let expires_at = self.batches.get(&code).map_or(0, |b| b.expires_at);
                    assert!(
                        produced_secs < expires_at,
                        "the relay verified file {} of batch {code} after it expired: \
                         the uploader is told it succeeded with a dead code",
                        v.index
                    );
                    return;
                };
                let record = &batch.files[usize::from(v.index)];
                let FileContent::Blob(id) = record.content else {
                    panic!(
                        "the relay says file {} of batch {code} is verified, but the store holds {:?}",
                        v.index, record.content
                    );
                };
                let bytes = self.store.blob_bytes(id).expect("a verified blob exists");
                assert_eq!(
                    Sha1Digest::of(&bytes),
                    record.sha1,
                    "verified bytes differ from the SHA-1"
                );
            }
            Message::Data(d) if reading.is_some_and(|(code, _)| !self.is_batch(code)) => {
                let (code, file) = reading.expect("data only after a read");
                assert_eq!(d.file, file, "data for another file than read");
                self.check_named_data(t, code, &d, summary);
            }
            Message::Data(d) => {
                let (code, file) = reading.expect("data only after a read");
                assert_eq!(d.file, file, "data for another file than read");
                // Like a verdict, data waiting in the outbox was produced at
                // the session's last input: the batch must have been live
                // then (a session that hears nothing does not know the time).
                // (A delivery may have moved the expiry past the grant's:
                // offline files and the target's reads keep a batch longer.)
                let known = self.batches.get(&code).expect("data for a granted code");
                assert!(
                    produced_secs < known.expires_at
                        || self.lookup_at(code, produced_secs).is_some(),
                    "data from a batch expired when it was produced"
                );
                let content: Vec<u8> = match self.lookup_at(code, produced_secs) {
                    Some(batch) => {
                        assert!(batch.ready(), "data served from a batch still uploading");
                        let record = &batch.files[usize::from(d.file)];
                        let FileContent::Blob(id) = record.content else {
                            panic!(
                                "data served from file {} that is {:?}",
                                d.file, record.content
                            );
                        };
                        let content = self.store.blob_bytes(id).expect("a served blob exists");
                        assert_eq!(
                            Sha1Digest::of(&content),
                            record.sha1,
                            "served a blob that fails its SHA-1"
                        );
                        content
                    }
                    // Swept since it was read ahead: the bytes must still be
                    // the file's announced (and verified) content.
                    None => {
                        let sha1 = known.sha1s[usize::from(d.file)];
                        CONTENTS
                            .iter()
                            .find(|c| Sha1Digest::of(c) == sha1)
                            .expect("data of a file whose content no terminal has")
                            .to_vec()
                    }
                };
                let start = d.offset as usize;
                assert!(
                    !d.bytes.is_empty() && start + d.bytes.len() <= content.len(),
                    "served {} bytes at {start} of a {}-byte file",
                    d.bytes.len(),
                    content.len()
                );
                assert_eq!(
                    d.bytes,
                    &content[start..start + d.bytes.len()],
                    "served wrong bytes"
                );
                summary.served += d.bytes.len() as u64;
            }
            Message::Manifest(m) => {
                let known = self.is_batch(m.code);
                self.check_identity(t, &msg, known, summary);
            }
            other => {
                self.check_notice(t, &other, summary);
                self.check_forward(t, &other, summary);
                self.check_identity(t, &other, false, summary)
            }
        }
    }

    /// Whether `code` is a batch's (granted to the run, or in the store):
    /// anything else the relay names is a read handle.
    fn is_batch(&self, code: Code) -> bool {
        self.batches.contains_key(&code) || self.store.code_taken(&code_key(&code)).unwrap_or(false)
    }

    fn check_durable(&self, code: Code, file: u16, offset: u64, what: &str) {
        let Some(batch) = self.lookup(code) else {
            return;
        };
        let Some(record) = batch.files.get(usize::from(file)) else {
            panic!(
                "{what} for file {file} of a {}-file batch",
                batch.files.len()
            );
        };
        let durable = record.received();
        assert!(
            offset <= durable,
            "{what} says {offset} bytes of file {file} are durable, the store has {durable}"
        );
    }
}
