//! Upload replies: what a session queues about its upload, and how each
//! renders from the upload's state when it is sent. (The outbox forgets them
//! all when the upload is replaced: see `Outbox::forget_upload_replies`.)

use pickup_proto::message::{
    Ack, BatchComplete, FileRejected, FileVerified, Grant, Kind, Message, Plan, Rewind,
};
use pickup_proto::ErrorCode;

use super::file::FileState;
use super::Upload;

/// A reply about the current upload. Multi-frame replies (a grant and its
/// plans) are one entry with a cursor. Offsets and plans are read from the
/// upload when the reply is sent, so a queued reply is never stale.
#[derive(Debug, Clone, Copy)]
pub(in crate::session) enum Reply {
    /// `next == 0`: the Grant; `next == i + 1`: the plan of file `i`.
    Grant { next: u32 },
    /// The current plan of one file.
    Plan(u16),
    /// The durable offset of one file, read when sent.
    Ack(u16),
    /// Resend a file from `offset`.
    Rewind { file: u16, offset: u64 },
    /// A file is verified and kept.
    Verified(u16),
    /// A file's bytes were thrown away.
    Rejected { index: u16, reason: ErrorCode },
    /// Every file is complete.
    BatchComplete,
}

/// The plan a file's state stands for, as sent in a `FilePlan`.
fn file_plan(index: u16, plan: Plan) -> Message<'static> {
    Message::FilePlan(pickup_proto::message::FilePlan { index, plan })
}

impl Upload {
    /// The message for a queued upload reply, and the cursor that follows it.
    pub(in crate::session) fn render(
        &self,
        item: &Reply,
        window: u32,
        now_secs: u64,
    ) -> Option<(Message<'static>, Option<Reply>)> {
        let n = self.files.len();
        Some(match *item {
            // A verdict rendered after the code expired would tell the
            // uploader it succeeded with a code that serves nothing.
            Reply::Verified(_) | Reply::BatchComplete if now_secs >= self.expires_at => (
                Message::Error(pickup_proto::message::Error {
                    code: ErrorCode::Expired,
                    kind: Kind::Data as u8,
                    retry_after_ms: 0,
                }),
                None,
            ),
            Reply::Grant { next: 0 } => (
                Message::Grant(Grant {
                    code: self.code,
                    expires_at: self.expires_at,
                    token: self.token,
                    files: n as u16,
                }),
                (n > 0).then_some(Reply::Grant { next: 1 }),
            ),
            Reply::Grant { next } => {
                let i = next as usize - 1;
                let more = (i + 1 < n).then_some(Reply::Grant { next: next + 1 });
                (file_plan(i as u16, self.plan(i)?), more)
            }
            Reply::Plan(i) => (file_plan(i, self.plan(usize::from(i))?), None),
            Reply::Ack(i) => {
                let f = self.files.get(usize::from(i))?;
                let offset = match &f.state {
                    FileState::Done => f.size,
                    FileState::Challenged { .. }
                    | FileState::Proving { .. }
                    | FileState::Resetting { .. } => 0,
                    FileState::Receiving(r) => r.acked,
                    FileState::Verifying { acked, .. } => *acked,
                };
                (
                    Message::Ack(Ack {
                        file: i,
                        offset,
                        window,
                    }),
                    None,
                )
            }
            Reply::Rewind { file, offset } => (Message::Rewind(Rewind { file, offset }), None),
            Reply::Verified(index) => (Message::FileVerified(FileVerified { index }), None),
            Reply::Rejected { index, reason } => {
                (Message::FileRejected(FileRejected { index, reason }), None)
            }
            Reply::BatchComplete => (
                Message::BatchComplete(BatchComplete { code: self.code }),
                None,
            ),
        })
    }
}
