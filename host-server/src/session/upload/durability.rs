//! When received bytes are written, when they become durable, and the
//! `Ack`s that follow.
//!
//! Durability rule: an `Ack` for offset N is queued only after a job ran
//! [`Store::sync_partial`](crate::store::Store::sync_partial)`(N)` and it
//! returned, i.e. after the bytes were fsynced and N was committed. The
//! cadence is stated once, in PROTOCOL.md §5.4 ("When the relay
//! acknowledges"); the constants below implement it.
//!
//! Received bytes collect in the file's pieces (copied, or kept where the
//! connection read them: `jobs::Pieces`) and go to the store as write jobs
//! of about [`WRITE_CHUNK`] bytes, in order. A sync is wanted up to an
//! offset; it is given out, beside the ordered work, once the writes before
//! that offset have finished, so the disk flushes while later bytes are
//! written (one sync per session at a time). The session hashes bytes as
//! it takes them (`hashing`). The session keeps taking frames meanwhile,
//! until [`MAX_PENDING`] bytes wait to be written.

use pickup_proto::message::Kind;
use pickup_proto::Duration;

use super::file::{FileState, Hashing, Receiving, UpFile};
use super::{failure_code, Ctx, Upload};
use crate::jobs::{LeaseLost, Pieces, Sync, Synced, Work, Write, Written};

/// Bytes of a file taken before they are given to a write (fewer when a
/// sync is due): one copy buffer's capacity, or shared pieces of about
/// this many bytes.
pub(super) const WRITE_CHUNK: usize = 512 * 1024;

/// Room of a copy buffer started between shared pieces (frames of less
/// than 4 KiB, or ones the decoder gathered, in a bulk-read stream): a run
/// of them fills one buffer, not one allocation each.
pub(super) const COPY_ROOM_BETWEEN_SHARED: usize = 16 * 1024;

/// Bytes past which a write job takes no more: the file's buffers queued
/// one after another join the write before them until it holds this many,
/// so a session whose writes fall behind hands the blocking pool fewer,
/// longer jobs. Each job is a round trip through the session (about 0.2 ms
/// on the bench's machine, against 0.4 ms to write and hash 512 KiB)
/// during which no write runs. Half of [`MAX_PENDING`], so the session
/// keeps taking frames while one runs.
pub(in crate::session) const MAX_WRITE_LEN: usize = 8 * WRITE_CHUNK;

/// Bytes taken and not yet written at which a session stops reading from
/// its peer until a write finishes: enough for the writes to go on while
/// the disk flushes a sync (at 500 MiB/s, 8 MiB is 16 ms) without the
/// peer's bytes waiting in the socket.
pub(in crate::session) const MAX_PENDING: usize = 16 * WRITE_CHUNK;

/// A write buffer's size: a chunk and the frame that crosses its end, so
/// it never grows (growing copies it).
const BUF_CAPACITY: usize = WRITE_CHUNK + pickup_proto::frame::MAX_FRAME_LEN;

/// Emptied write buffers an upload keeps to fill again (fresh large
/// allocations would cost a page fault per 4 KiB written).
pub(super) const MAX_SPARE: usize = 4;

/// Most bytes between two syncs started by data for a terminal that did
/// not say how much it keeps in flight (`Hello.window` = 0): it may accept
/// less than the relay's window without saying so, so the cadence must not
/// grow with the relay's window (an operator may offer a larger window to
/// terminals that accept one, to ride out slow disk flushes) or such a
/// terminal would wait for acks that come only after a pause. A terminal
/// that states its window is paced by it alone ([`sync_step`]).
pub(super) const ACK_STEP_MAX: u64 = 2 << 20;

/// Longest a received byte waits before a sync for it is queued while data
/// keeps coming (checked as data arrives; `ack_delay` covers a pause). A
/// slow link may never fill a step of a wide window, and a terminal resends
/// everything unacknowledged after its retransmit timeout: acks must come
/// well within it.
pub(super) const ACK_AGE_MAX: Duration = Duration::from_millis(500);

/// How many unacknowledged bytes start a sync: a quarter of the window
/// acks are paced by, so the ack of the bytes synced arrives while the
/// terminal still has half its window to send. When the terminal stated
/// its window (`stated`), the window is one it keeps in flight: a wide one
/// means fewer syncs (each an fsync and a commit) per GiB, 8 MiB steps for
/// the CLI's 32 MiB. Otherwise no more than [`ACK_STEP_MAX`].
pub(super) fn sync_step(window: u32, stated: bool) -> u64 {
    let quarter = u64::from(window / 4);
    if stated {
        quarter
    } else {
        quarter.min(ACK_STEP_MAX)
    }
}

/// Whether a file holds bytes that are not yet acknowledged.
pub(super) fn has_unacked(f: &UpFile) -> bool {
    matches!(&f.state, FileState::Receiving(r) if r.received > r.acked)
}

/// A buffer for bytes of a file that still has `left` to come: a spare one,
/// or one no larger than the file needs (a small file does not cost a
/// chunk).
pub(super) fn buffer_for(spare: &mut Vec<Vec<u8>>, left: u64) -> Vec<u8> {
    if left >= WRITE_CHUNK as u64 {
        if let Some(buf) = spare.pop() {
            return buf;
        }
    }
    let cap = usize::try_from(left).map_or(BUF_CAPACITY, |l| l.min(BUF_CAPACITY));
    Vec::with_capacity(cap)
}

/// Gives back bytes that are no longer wanted (written, or thrown away):
/// they no longer count as `pending`, and the buffers they were copied
/// into go to `spare`, to be filled again.
pub(super) fn release(pending: &mut usize, spare: &mut Vec<Vec<u8>>, taken: &mut Pieces) {
    *pending = pending.saturating_sub(taken.len());
    for buf in taken.drain_buffers() {
        if spare.len() < MAX_SPARE && buf.capacity() >= WRITE_CHUNK {
            spare.push(buf);
        }
    }
}

impl Upload {
    /// Queues a write of file `index`'s buffer, and with `sync` wants a sync
    /// of everything received so far.
    pub(super) fn queue_write(&mut self, cx: &mut Ctx<'_>, index: usize, sync: bool) {
        let held = self.held(cx.session);
        let FileState::Receiving(r) = &mut self.files[index].state else {
            return;
        };
        if sync {
            r.sync_wanted = r.sync_wanted.max(r.received);
            // The SHA-1 state the sync records, taken now: the session
            // hashes bytes as it takes them, so by the time the sync runs
            // the hasher is past its offset.
            if let Hashing::Home { hasher, .. } = &r.hash {
                r.midstate = hasher.midstate();
            }
        }
        if r.taken.is_empty() {
            return;
        }
        // The next bytes get a buffer when they arrive (`buffer_for`): a
        // file that receives nothing more holds none.
        let bytes = core::mem::take(&mut r.taken);
        let offset = r.received - bytes.len() as u64;
        // Bytes a sync waits for end their write, so the sync starts as
        // soon as they are written.
        let bytes = if r.sync_wanted == offset {
            bytes
        } else {
            match cx
                .work
                .append_write((self.epoch, index as u16, r.partial), offset, bytes)
            {
                Ok(()) => return,
                Err(bytes) => bytes,
            }
        };
        cx.work.push(Work::Write(Write {
            held,
            epoch: self.epoch,
            file: index as u16,
            partial: r.partial,
            offset,
            bufs: bytes,
            // Given when the write is given out (`arm_write`).
            hasher: None,
        }));
    }

    /// Whether a sync is wanted, or under way.
    pub(in crate::session) fn sync_pending(&self) -> bool {
        self.syncing
            || self.files.iter().any(
                |f| matches!(&f.state, FileState::Receiving(r) if r.sync_wanted > r.syncing_to),
            )
    }

    /// After data: wants a sync when none is under way and some file has
    /// a step's worth of unacknowledged bytes (any amount when `overdue`).
    pub(super) fn sync_due(&mut self, cx: &mut Ctx<'_>, overdue: bool) {
        if self.sync_pending() {
            return;
        }
        let step = if overdue {
            1
        } else {
            sync_step(cx.window, cx.window_stated)
        };
        let due = self.files.iter().position(|f| match &f.state {
            FileState::Receiving(r) => r.received > r.syncing_to && r.received - r.acked >= step,
            _ => false,
        });
        if let Some(index) = due {
            self.queue_write(cx, index, true);
            self.unsynced_since = None;
        }
    }

    /// Makes every received byte durable and acknowledges it: writes every
    /// buffer and wants a sync of every file.
    pub(in crate::session) fn ack_all(&mut self, cx: &mut Ctx<'_>) {
        for i in 0..self.files.len() {
            self.queue_write(cx, i, true);
        }
        self.last_data = None;
        self.unsynced_since = None;
    }

    /// The sync to give out now, if one is wanted, none runs, and the
    /// writes before it have finished.
    /// At `now_secs`, the sync also keeps the batch from going stale for
    /// `stale_secs` more when the last it did so is a quarter of that ago.
    pub(in crate::session) fn next_sync(
        &mut self,
        session: u64,
        now_secs: u64,
        stale_secs: u64,
    ) -> Option<Sync> {
        if self.syncing {
            return None;
        }
        let held = self.held(session);
        let (index, r) =
            self.files
                .iter_mut()
                .enumerate()
                .find_map(|(i, f)| match &mut f.state {
                    FileState::Receiving(r)
                        if r.sync_wanted > r.syncing_to && r.written >= r.sync_wanted =>
                    {
                        Some((i, r))
                    }
                    _ => None,
                })?;
        r.syncing_to = r.sync_wanted;
        let (partial, at, hashed) = (r.partial, r.sync_wanted, r.hashed_within(r.sync_wanted));
        self.syncing = true;
        let keep_until = self.keep_due(now_secs, stale_secs);
        Some(Sync {
            held,
            epoch: self.epoch,
            file: index as u16,
            partial,
            at,
            hashed,
            beside: true,
            keep_until,
        })
    }

    /// When the store should next hear of this upload's progress: the
    /// batch is kept `stale_secs` and a quarter more past `now_secs` once
    /// less than `stale_secs` of it is left, so it is recorded at most
    /// every quarter of `stale_secs` and never goes stale sooner than
    /// `stale_secs` after the last progress.
    pub(in crate::session) fn keep_due(&mut self, now_secs: u64, stale_secs: u64) -> Option<u64> {
        (self.kept_until < now_secs.saturating_add(stale_secs)).then(|| {
            self.kept_until = now_secs
                .saturating_add(stale_secs)
                .saturating_add(stale_secs / 4);
            self.kept_until
        })
    }

    /// The upload is left with syncs still wanted: they become ordered
    /// work after its writes, so what was received still becomes durable.
    pub(in crate::session) fn retire_syncs(&mut self, cx: &mut Ctx<'_>) {
        for i in 0..self.files.len() {
            self.queue_write(cx, i, false);
            let held = self.held(cx.session);
            if let FileState::Receiving(r) = &mut self.files[i].state {
                if r.sync_wanted > r.syncing_to {
                    r.syncing_to = r.sync_wanted;
                    cx.work.push(Work::Sync(Sync {
                        held,
                        epoch: self.epoch,
                        file: i as u16,
                        partial: r.partial,
                        at: r.sync_wanted,
                        hashed: r.hashed_within(r.sync_wanted),
                        beside: false,
                        keep_until: None,
                    }));
                }
            }
        }
    }

    /// A write has finished, its bytes hashed if it carried the hasher.
    pub(super) fn on_written(&mut self, cx: &mut Ctx<'_>, mut w: Written) -> Result<(), LeaseLost> {
        if let Some((hasher, at)) = w.hasher.take() {
            self.hasher_home(w.file, w.partial, hasher, at);
        }
        release(&mut self.pending_bytes, &mut self.spare, &mut w.bufs);
        if w.result.is_err() {
            return w.result;
        }
        let index = usize::from(w.file);
        let Some(f) = self.files.get_mut(index) else {
            return Ok(());
        };
        match &mut f.state {
            FileState::Receiving(r) if r.partial == w.partial => match w.store {
                Ok(()) => {
                    if w.offset <= r.written {
                        r.written = r.written.max(w.end);
                    }
                }
                Err(e) => {
                    tracing::error!(batch = self.batch.0, file = index, "write failed: {e}");
                    cx.out.error(failure_code(&e), Kind::Data);
                    // Take again from what is durable: forget what is
                    // buffered or queued for this file, and hash anew.
                    release(&mut self.pending_bytes, &mut self.spare, &mut r.taken);
                    r.received = r.acked;
                    r.forget_midstate_past_received();
                    r.written = r.acked;
                    r.sync_wanted = r.sync_wanted.min(r.acked);
                    r.syncing_to = r.syncing_to.min(r.acked);
                    r.hash = Hashing::Unknown;
                    let (epoch, file) = (self.epoch, w.file);
                    self.pending_bytes = self
                        .pending_bytes
                        .saturating_sub(cx.work.forget(|q| super::is_write_of(q, epoch, file)));
                }
            },
            FileState::Verifying { partial, acked, .. } if *partial == w.partial => {
                if let Err(e) = w.store {
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
            }
            _ => {}
        }
        Ok(())
    }

    /// A sync given out beside the ordered work has finished.
    pub(super) fn on_synced(&mut self, cx: &mut Ctx<'_>, s: Synced) -> Result<(), LeaseLost> {
        self.syncing = false;
        let result = s.result?;
        if let Some(FileState::Receiving(r)) = self
            .files
            .get_mut(usize::from(s.file))
            .map(|f| &mut f.state)
        {
            if r.partial == s.partial {
                match result {
                    Ok(()) => {
                        if r.acked < s.at && s.at <= r.received {
                            r.acked = s.at;
                            cx.out.ack(s.file);
                        }
                    }
                    Err(e) => {
                        tracing::error!(batch = self.batch.0, file = s.file, "sync failed: {e}");
                        cx.out.error(failure_code(&e), Kind::Data);
                        // Tried up to here: the next sync waits for new
                        // bytes, or a failing store would be asked forever
                        // (found by the relay_session fuzzer).
                        r.sync_wanted = r.acked;
                        r.syncing_to = r.received;
                    }
                }
            }
        }
        // The next step's worth may already be waiting.
        self.sync_due(cx, false);
        Ok(())
    }
}
