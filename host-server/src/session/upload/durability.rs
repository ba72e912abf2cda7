//! When received bytes are written, when they become durable, and the
//! `Ack`s that follow.
//!
//! Durability rule: an `Ack` for offset N is queued only after a job ran
//! [`Store::sync_partial`](crate::store::Store::sync_partial)`(N)` and it
//! returned, i.e. after the bytes were fsynced and N was committed. The
//! cadence is stated once, in PROTOCOL.md §5.4 ("When the relay
//! acknowledges"); the constants below implement it.
//!
//! Received bytes collect in the file's buffer and go to the store as write
//! jobs of up to [`WRITE_CHUNK`] bytes; a sync rides on the write that
//! carries the last byte it covers. The session keeps taking frames while
//! writes and syncs run, until [`MAX_PENDING`] bytes wait to be written.

use pickup_proto::message::Kind;
use pickup_proto::Duration;

use super::file::{FileState, Hashing, Receiving, UpFile};
use super::{failure_code, Ctx, Upload};
use crate::jobs::{LeaseLost, Work, Write, Written};

/// Bytes a write job carries at most (fewer when a sync is due).
pub(super) const WRITE_CHUNK: usize = 512 * 1024;

/// Bytes taken and not yet written at which a session stops reading from
/// its peer until a write finishes (one chunk being written, the next
/// filling, some slack for the frame that crosses the line).
pub(in crate::session) const MAX_PENDING: usize = 4 * WRITE_CHUNK;

/// Most bytes between two syncs started by data. Terminals cap the window
/// the relay offers (at 32 MiB by default), so the cadence must not grow
/// with the relay's window: an operator may offer a larger window to
/// terminals that accept one (it lets them ride out slow disk flushes)
/// without starving the others.
pub(super) const ACK_STEP_MAX: u64 = 2 << 20;

/// Longest a received byte waits before a sync for it is queued while data
/// keeps coming (checked as data arrives; `ack_delay` covers a pause). A
/// slow link may never fill a step of a wide window, and a terminal resends
/// everything unacknowledged after its retransmit timeout: acks must come
/// well within it.
pub(super) const ACK_AGE_MAX: Duration = Duration::from_millis(500);

/// How many unacknowledged bytes start a sync: a quarter of the window, so
/// the ack of the bytes synced arrives while the terminal still has half
/// its window to send, and no more than [`ACK_STEP_MAX`].
pub(super) fn sync_step(window: u32) -> u64 {
    u64::from(window / 4).min(ACK_STEP_MAX)
}

/// Whether a file holds bytes that are not yet acknowledged.
pub(super) fn has_unacked(f: &UpFile) -> bool {
    matches!(&f.state, FileState::Receiving(r) if r.received > r.acked)
}

impl Upload {
    /// Queues a write of file `index`'s buffer, and with `sync` a sync of
    /// everything received so far.
    pub(super) fn queue_write(&mut self, cx: &mut Ctx<'_>, index: usize, sync: bool) {
        let held = self.held(cx.session);
        let FileState::Receiving(r) = &mut self.files[index].state else {
            return;
        };
        let sync_to = (sync && r.received > r.syncing_to).then_some(r.received);
        if r.buf.is_empty() && sync_to.is_none() {
            return;
        }
        let bytes = core::mem::take(&mut r.buf);
        if let Some(at) = sync_to {
            r.syncing_to = at;
            self.syncs += 1;
        }
        cx.work.push(Work::Write(Write {
            held,
            epoch: self.epoch,
            file: index as u16,
            partial: r.partial,
            offset: r.received - bytes.len() as u64,
            bytes,
            hasher: None,
            sync_to,
        }));
    }

    /// After data: queues a sync when none is under way and some file has
    /// a step's worth of unacknowledged bytes (any amount when `overdue`).
    pub(super) fn sync_due(&mut self, cx: &mut Ctx<'_>, overdue: bool) {
        if self.syncs > 0 {
            return;
        }
        let step = if overdue { 1 } else { sync_step(cx.window) };
        let due = self.files.iter().position(|f| match &f.state {
            FileState::Receiving(r) => r.received > r.syncing_to && r.received - r.acked >= step,
            _ => false,
        });
        if let Some(index) = due {
            self.queue_write(cx, index, true);
            self.unsynced_since = None;
        }
    }

    /// Makes every received byte durable and acknowledges it: queues a
    /// write and sync of every file that has unsynced bytes.
    pub(in crate::session) fn ack_all(&mut self, cx: &mut Ctx<'_>) {
        for i in 0..self.files.len() {
            self.queue_write(cx, i, true);
        }
        self.last_data = None;
        self.unsynced_since = None;
    }

    /// A write (and maybe a sync) has finished.
    pub(super) fn on_written(&mut self, cx: &mut Ctx<'_>, w: Written) -> Result<(), LeaseLost> {
        self.pending_bytes = self
            .pending_bytes
            .saturating_sub((w.end - w.offset) as usize);
        if w.sync_asked {
            self.syncs = self.syncs.saturating_sub(1);
        }
        w.result?;
        let index = usize::from(w.file);
        let Some(f) = self.files.get_mut(index) else {
            return Ok(());
        };
        let hash = match w.hasher {
            Some(h) => Hashing::Home(h),
            None => Hashing::Unknown,
        };
        match &mut f.state {
            FileState::Receiving(r) if r.partial == w.partial => {
                if matches!(r.hash, Hashing::Away) {
                    r.hash = hash;
                }
                match w.store {
                    Ok(()) => {
                        if let Some(at) = w.synced {
                            if r.acked < at && at <= r.received {
                                r.acked = at;
                                cx.out.ack(w.file);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(batch = self.batch.0, file = index, "write failed: {e}");
                        cx.out.error(failure_code(&e), Kind::Data);
                        // Take again from what is durable: forget what is
                        // buffered or queued for this file, and hash anew.
                        self.pending_bytes = self.pending_bytes.saturating_sub(r.buf.len());
                        r.buf = Vec::new();
                        r.received = r.acked;
                        r.syncing_to = r.acked;
                        r.hash = Hashing::Unknown;
                        let (epoch, file) = (self.epoch, w.file);
                        self.pending_bytes = self
                            .pending_bytes
                            .saturating_sub(cx.work.forget(|q| super::is_write_of(q, epoch, file)));
                    }
                }
            }
            FileState::Verifying {
                partial,
                hash: h,
                acked,
            } if *partial == w.partial => match w.store {
                Ok(()) => {
                    if matches!(h, Hashing::Away) {
                        *h = hash;
                    }
                }
                Err(e) => {
                    tracing::error!(batch = self.batch.0, file = index, "write failed: {e}");
                    cx.out.error(failure_code(&e), Kind::Data);
                    // Not every byte is in: no verdict, take again from
                    // what is durable.
                    let (epoch, file) = (self.epoch, w.file);
                    cx.work.forget(
                        |q| matches!(q, Work::Complete(c) if c.epoch == epoch && c.file.index == file),
                    );
                    f.state = FileState::Receiving(Receiving::resumed(*partial, *acked));
                }
            },
            _ => {}
        }
        if self.syncs == 0 {
            // The next step's worth may already be waiting.
            self.sync_due(cx, false);
        }
        Ok(())
    }
}
