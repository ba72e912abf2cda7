//! Reading the input: operands, and the plausible terminal messages built
//! from them and from what the relay said so far (its codes, tokens and
//! challenge nonces).

use pickup_proto::code::Code;
use pickup_proto::hash::{ProofHasher, Sha1Digest};
use pickup_proto::message::{
    Ack, BatchOpen, Fetch, FileAnnounce, Hello, Message, Proof, Read, Resume, ResumeToken, Role,
    CAP_INSTANT_UPLOAD,
};

use super::{Fuzz, Input, CONTENTS, NAMES};

impl<'a> Input<'a> {
    pub(super) fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    pub(super) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    pub(super) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

impl Fuzz {
    /// A plausible terminal message from the operands.
    pub(super) fn plausible(&mut self, t: usize, input: &mut Input<'_>) -> Option<()> {
        let sel = input.byte()?;
        let arg = input.byte()?;
        if (240..251).contains(&sel) {
            return self.plausible_identity(t, sel, arg, input);
        }
        let known: Vec<Code> = self.batches.keys().copied().collect();
        let code = if known.is_empty() || arg % 8 == 7 {
            // A code nobody was given (almost surely).
            Code::from_parts(13, u128::from(arg) << 40).ok()?
        } else {
            known[usize::from(arg) % known.len()]
        };
        if (224..240).contains(&sel) {
            return self.plausible_notice(t, sel, arg, code, input);
        }
        if sel >= 251 {
            self.plausible_forward(t, sel, arg, code);
            return Some(());
        }
        let term_code = self.terminals[t].as_ref().and_then(|x| x.code);
        let file = u16::from(arg % 4);
        let msg_owned: Message<'static> = match sel % 12 {
            0 => Message::Hello(Hello {
                version: 1,
                role: if arg & 0x20 != 0 {
                    Role::Relay
                } else {
                    Role::Terminal
                },
                max_frame: [64, 300, 4096, 65_536][usize::from(arg % 4)],
                window: 4096,
                caps: if arg & 0x10 != 0 {
                    0
                } else {
                    CAP_INSTANT_UPLOAD
                },
            }),
            1 => Message::BatchOpen(BatchOpen {
                files: u16::from(arg % 4),
                total_size: u64::from(input.u16()?),
            }),
            2 => {
                let c = usize::from(input.byte()? % 4);
                let name = NAMES[usize::from(arg / 4) % NAMES.len()];
                let msg = Message::FileAnnounce(FileAnnounce {
                    index: file,
                    size: CONTENTS[c].len() as u64,
                    sha1: Sha1Digest::of(CONTENTS[c]),
                    name,
                });
                self.message(t, &msg);
                return Some(());
            }
            3 => {
                // Data for the announced file at an offset, honest or not.
                let offset = usize::from(input.u16()?);
                let len = usize::from(input.byte()?);
                let corrupt = input.byte()? == 0;
                let content = self.announced[t]
                    .get(usize::from(file))
                    .and_then(|&c| CONTENTS.get(c).copied())
                    .unwrap_or(b"");
                let start = offset.min(content.len());
                let end = (start + len).min(content.len());
                let bytes = if corrupt {
                    input.bytes(len)?
                } else {
                    &content[start..end]
                };
                let msg = Message::Data(pickup_proto::message::Data {
                    file,
                    offset: offset as u64,
                    bytes,
                });
                self.message(t, &msg);
                return Some(());
            }
            4 => {
                let nonce = self.terminals[t]
                    .as_ref()
                    .and_then(|x| x.nonces.get(&file).copied())
                    .unwrap_or([0; 32]);
                let content = self.announced[t]
                    .get(usize::from(file))
                    .and_then(|&c| CONTENTS.get(c).copied())
                    .unwrap_or(b"");
                let mut h = ProofHasher::new(&nonce);
                h.update(content);
                let proof = if arg & 0x80 != 0 {
                    Sha1Digest([arg; 20])
                } else {
                    h.finish()
                };
                Message::Proof(Proof { index: file, proof })
            }
            5 => {
                let token = term_code
                    .and_then(|c| self.batches.get(&c))
                    .or_else(|| self.batches.get(&code))
                    .map_or(ResumeToken([arg; 16]), |b| b.token);
                Message::Resume(Resume { token })
            }
            6 => Message::Fetch(Fetch { code }),
            7 => Message::Read(Read {
                code,
                file,
                offset: u64::from(input.u16()?),
                len: u32::from(input.u16()?),
            }),
            8 => Message::Ack(Ack {
                file,
                offset: u64::from(input.u16()?),
                window: u32::from(input.u16()?),
            }),
            9 => Message::Keepalive,
            10 => Message::Goodbye,
            _ => Message::Error(pickup_proto::message::Error {
                code: pickup_proto::ErrorCode::BadFrame,
                kind: arg,
                retry_after_ms: 0,
            }),
        };
        self.message(t, &msg_owned);
        Some(())
    }
}
