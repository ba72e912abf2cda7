//! Encoding the session's queued replies (`Out`) into frames, in the
//! framing and frame size agreed with the terminal.

use pickup_proto::frame::Framing;
use pickup_proto::message::{
    self, FileAttrs, Manifest, ManifestEntry, Message, PageLink, RelayLimits, Role, Welcome,
    CAP_FILE_ATTRS, CAP_FORWARD, CAP_INSTANT_UPLOAD, CAP_PUSH_NOTICE,
};
use pickup_proto::PROTOCOL_VERSION;

use super::{Out, Session};
use crate::relay::unix_secs;

impl Session {
    /// Encodes one queued reply; re-queues a cursor that has more to say.
    pub(super) fn render(&mut self, item: Out, out: &mut [u8]) -> Option<usize> {
        let max = self.format();
        let item = match item {
            Out::Deliveries(..) | Out::Notices { .. } | Out::Settled(_) => {
                return self.render_notices(item, out)
            }
            item => item,
        };
        let encoded = match &item {
            Out::Welcome => Message::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                role: Role::Relay,
                max_frame: self.link.max_frame,
                window: self.link.window,
                // Every relay of this version keeps and serves attributes,
                // and keeps and delivers notices (PROTOCOL.md §11).
                caps: CAP_FILE_ATTRS
                    | CAP_PUSH_NOTICE
                    // Forwards go to peer relays: only a relay with some.
                    | if self.relay.settings.peers.is_empty() {
                        0
                    } else {
                        CAP_FORWARD
                    }
                    | Framing::offer(self.link.reliable)
                    | if self.relay.settings.instant_upload {
                        CAP_INSTANT_UPLOAD
                    } else {
                        0
                    },
            })
            .encode(max, out),
            Out::PageLink => Message::PageLink(PageLink {
                base_url: self.relay.settings.page_url.as_deref()?,
            })
            .encode(max, out),
            Out::RelayLimits => {
                let s = &self.relay.settings;
                Message::RelayLimits(RelayLimits {
                    max_file_size: s.max_file_size,
                    max_batch_size: s.max_batch_size,
                    max_files: s.max_files_per_batch,
                })
                .encode(max, out)
            }
            Out::Keepalive => Message::Keepalive.encode(max, out),
            Out::Authenticated {
                user,
                terminal,
                token,
                expires_at,
            } => Message::Authenticated(message::Authenticated {
                user,
                terminal,
                token: *token,
                expires_at: *expires_at,
            })
            .encode(max, out),
            Out::Challenge { nonce } => {
                Message::Challenge(message::Challenge { nonce: *nonce }).encode(max, out)
            }
            Out::Done(kind) => Message::Done(message::Done { kind: *kind as u8 }).encode(max, out),
            Out::Error {
                code,
                kind,
                retry_after_ms,
            } => Message::Error(message::Error {
                code: *code,
                kind: *kind,
                retry_after_ms: *retry_after_ms,
            })
            .encode(max, out),
            Out::Manifest {
                batch,
                next,
                attrs_sent,
            } => {
                let (msg, following) = match next.checked_sub(1) {
                    None => (
                        Message::Manifest(Manifest {
                            code: batch.code,
                            expires_at: batch.expires_at,
                            files: batch.files.len() as u16,
                            total_size: batch.total_size(),
                            received: batch.received(),
                            ready: batch.ready(),
                        }),
                        Some(1),
                    ),
                    Some(i) => {
                        let f = &batch.files[i as usize];
                        match f.attrs {
                            // Only a peer that offered the bit ever sees
                            // the kind (PROTOCOL.md §5.5).
                            Some(a) if !attrs_sent && self.peer_caps & CAP_FILE_ATTRS != 0 => {
                                let attrs = Message::FileAttrs(FileAttrs {
                                    index: i as u16,
                                    executable: a.executable,
                                    mtime: a.mtime,
                                });
                                self.out.push_front(Out::Manifest {
                                    batch: batch.clone(),
                                    next: *next,
                                    attrs_sent: true,
                                });
                                return attrs.encode(max, out).ok();
                            }
                            _ => {}
                        }
                        let entry = Message::ManifestEntry(ManifestEntry {
                            index: i as u16,
                            size: f.size,
                            sha1: f.sha1,
                            received: f.received(),
                            name: &f.name,
                        });
                        (entry, Some(i + 2))
                    }
                };
                let encoded = msg.encode(max, out);
                if let Some(next) = following.filter(|n| *n as usize <= batch.files.len()) {
                    self.out.push_front(Out::Manifest {
                        batch: batch.clone(),
                        next,
                        attrs_sent: false,
                    });
                }
                encoded
            }
            Out::Deliveries(..) | Out::Notices { .. } | Out::Settled(_) => return None,
            Out::ForwardAccepted(id) => {
                Message::ForwardAccepted(message::ForwardAccepted { id: *id }).encode(max, out)
            }
            Out::ForwardStatus(status) => Message::ForwardStatus(*status).encode(max, out),
            Out::Upload(reply) => {
                let up = self.upload.as_deref()?;
                let (msg, more) = up.render(reply, self.link.window, unix_secs(self.clock))?;
                if let Some(more) = more {
                    self.out.push_front(Out::Upload(more));
                }
                msg.encode(max, out)
            }
        };
        match encoded {
            Ok(n) => {
                if matches!(item, Out::Welcome) && self.prefix_agreed {
                    // The Welcome went in COBS; every frame after it goes
                    // length-prefixed, for good (PROTOCOL.md §2.1).
                    self.framing = Framing::LengthPrefixed;
                }
                Some(n)
            }
            Err(_) => {
                // Only a long name or page URL in a tiny peer frame gets here.
                tracing::warn!(
                    session = self.id,
                    "reply does not fit the peer's frame: {item:?}"
                );
                None
            }
        }
    }
}
