//! The fake relay: plausible relay messages built from operand bytes, so
//! the sessions get far (the right code, token and contents most of the
//! time) with room left for nonsense.

use pickup_proto::code::Code;
use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::{
    self, Ack, BatchComplete, FilePlan, FileRejected, FileVerified, Grant, Kind, Manifest,
    ManifestEntry, Message, Plan, ResumeToken, Rewind, Role, Welcome,
};

use super::script::Input;
use super::{code, CONTENTS, NAMES, TOKEN};

/// The token of a grant for some other batch.
const OTHER_TOKEN: ResumeToken = ResumeToken([0xee; 16]);

/// A relay message built from fuzzer bytes for
/// [`drive_upload`](super::drive_upload): mostly plausible values so the
/// session gets far, with room for nonsense.
///
/// Operands: file (mod 4), selector (mod 12), then the selected message's fields.
pub(super) fn relay_message_for_upload<'a>(
    input: &mut Input<'a>,
    files: u16,
) -> Option<Message<'a>> {
    let file = u16::from(input.byte()? % 4);
    Some(match input.byte()? % 12 {
        0 => Message::Welcome(Welcome {
            version: if input.byte()? == 0xff { 2 } else { 1 },
            role: Role::Relay,
            max_frame: u32::from(input.u16()?),
            window: u32::from(input.u16()?) << (input.byte()? % 12),
            caps: u32::from(input.byte()? & 1),
        }),
        1 => Message::Grant(Grant {
            code: code(),
            expires_at: 1_800_000_000,
            token: if input.byte()? % 8 == 0 {
                OTHER_TOKEN
            } else {
                TOKEN
            },
            files: if input.byte()? % 8 == 0 {
                files + 1
            } else {
                files
            },
        }),
        2 => Message::FilePlan(FilePlan {
            index: file,
            plan: match input.byte()? % 3 {
                0 => Plan::Held,
                1 => Plan::Upload {
                    offset: u64::from(input.u16()?),
                },
                _ => Plan::Challenge {
                    nonce: [input.byte()?; 32],
                },
            },
        }),
        3 => Message::Ack(Ack {
            file,
            offset: u64::from(input.u16()?),
            window: u32::from(input.u16()?),
        }),
        4 => Message::Rewind(Rewind {
            file,
            offset: u64::from(input.u16()?),
        }),
        5 => Message::FileVerified(FileVerified { index: file }),
        6 => Message::FileRejected(FileRejected {
            index: file,
            reason: input.error_code()?,
        }),
        7 => Message::Error(message::Error {
            code: input.error_code()?,
            kind: input.byte()?,
            retry_after_ms: u32::from(input.u16()?),
        }),
        8 => Message::BatchComplete(BatchComplete { code: code() }),
        9 => Message::Keepalive,
        10 => Message::Goodbye,
        // An ack of the whole file: lets the fuzzer finish files.
        _ => Message::Ack(Ack {
            file,
            offset: CONTENTS
                .get(usize::from(file))
                .map_or(0, |c| c.len() as u64),
            window: 4096,
        }),
    })
}

/// A relay message built from fuzzer bytes for
/// [`drive_download`](super::drive_download).
///
/// Operands: file (mod 4), selector (mod 10), then the selected message's fields.
pub(super) fn relay_message_for_download<'a>(input: &mut Input<'a>) -> Option<Message<'a>> {
    let file = u16::from(input.byte()? % 4);
    let content = CONTENTS.get(usize::from(file)).copied().unwrap_or(b"?");
    Some(match input.byte()? % 10 {
        0 => Message::Welcome(Welcome {
            version: 1,
            role: Role::Relay,
            max_frame: u32::from(input.u16()?),
            window: 0,
            caps: 0,
        }),
        1 => {
            let flags = input.byte()?;
            Message::Manifest(Manifest {
                code: if flags & 0x80 != 0 {
                    Code::from_parts(4, 1).expect("fits")
                } else {
                    code()
                },
                expires_at: 1_800_000_000,
                files: u16::from(flags & 0x07),
                total_size: input.u64()?,
                received: 0,
                ready: flags & 0x08 == 0,
            })
        }
        2 => {
            let flags = input.byte()?;
            Message::ManifestEntry(ManifestEntry {
                index: file,
                size: match flags % 4 {
                    0 => input.u64()?,
                    1 => content.len() as u64 + 1,
                    _ => content.len() as u64,
                },
                sha1: if flags & 0x10 != 0 {
                    Sha1Digest([flags; 20])
                } else {
                    Sha1Digest::of(content)
                },
                received: 0,
                name: NAMES[usize::from(flags >> 5) % NAMES.len()],
            })
        }
        3..=5 => {
            let offset = usize::from(input.u16()?) % (content.len() + 2);
            let len = usize::from(input.byte()?);
            let corrupt = input.byte()? == 0;
            let start = offset.min(content.len());
            let end = (start + len).min(content.len());
            let bytes = if corrupt {
                input.bytes(len)?
            } else {
                &content[start..end]
            };
            Message::Data(message::Data {
                file,
                offset: offset as u64,
                bytes,
            })
        }
        6 => Message::Error(message::Error {
            code: input.error_code()?,
            kind: Kind::Read as u8,
            retry_after_ms: u32::from(input.u16()?),
        }),
        7 => Message::Keepalive,
        8 => Message::Goodbye,
        _ => {
            let offset = u64::from(input.u32()?) << 16;
            let len = usize::from(input.byte()? % 8);
            Message::Data(message::Data {
                file,
                offset,
                bytes: input.bytes(len)?,
            })
        }
    })
}
