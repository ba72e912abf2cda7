//! How much credit a download grants the relay: its whole window while the
//! link loses nothing, less while it loses frames.
//!
//! A loss restarts the stream with a `Read`, but the old stream's frames
//! already on their way (up to the old credit) still arrive first, and are
//! thrown away. With a window wider than the file, every loss costs sending
//! the rest of the file once more before the restarted stream's first byte.
//! So each loss halves the credit, down to a few frames, and each credit's
//! worth of bytes arriving in order doubles it again, up to the window.

use crate::message::Data;

/// The smallest credit, in the largest `Data` frames the terminal accepts:
/// enough that a lost frame is usually followed by one that shows the gap,
/// and that a quarter of it (the `Ack` cadence) is a frame or more.
pub(super) const MIN_FRAMES: u64 = 8;

/// The credit a session grants in its next `Read` or `Ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Credit {
    /// The configured window: the most it grants.
    window: u32,
    /// The least it grants.
    floor: u32,
    /// What it grants now.
    current: u32,
    /// Bytes arrived in order since `current` last changed.
    clean: u64,
}

impl Credit {
    /// The whole `window`; never below [`MIN_FRAMES`] frames of `max_frame`
    /// raw bytes (or the window, if that is smaller).
    pub(super) fn new(window: u32, max_frame: u32) -> Self {
        let frame = Data::max_payload(max_frame as usize).max(1) as u64;
        let floor = u32::try_from(frame * MIN_FRAMES)
            .unwrap_or(u32::MAX)
            .min(window);
        Credit {
            window,
            floor,
            current: window,
            clean: 0,
        }
    }

    /// The bytes to grant now.
    pub(super) fn get(&self) -> u32 {
        self.current
    }

    /// A frame was lost (a gap, or silence until the retransmit timer).
    pub(super) fn lost(&mut self) {
        self.current = (self.current / 2).max(self.floor);
        self.clean = 0;
    }

    /// `n` more bytes arrived in order.
    pub(super) fn arrived(&mut self, n: u64) {
        self.clean = self.clean.saturating_add(n);
        if self.clean >= u64::from(self.current) && self.current < self.window {
            self.current = self.current.saturating_mul(2).min(self.window);
            self.clean = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_at_each_loss_to_its_floor_and_doubles_back_after_clean_credit() {
        // 64-byte frames carry 45 payload bytes at least: the floor is 360.
        let mut c = Credit::new(4096, 64);
        assert_eq!(c.get(), 4096);
        for expected in [2048, 1024, 512, 360, 360] {
            c.lost();
            assert_eq!(c.get(), expected);
        }
        c.arrived(359);
        assert_eq!(c.get(), 360);
        c.arrived(1);
        assert_eq!(c.get(), 720);
        // A loss forgets the clean bytes counted towards the next doubling.
        c.arrived(700);
        c.lost();
        assert_eq!(c.get(), 360);
        for expected in [720, 1440, 2880, 4096, 4096] {
            c.arrived(u64::from(c.get()));
            assert_eq!(c.get(), expected);
        }
    }

    #[test]
    fn a_window_below_the_floor_is_granted_whole_whatever_is_lost() {
        let mut c = Credit::new(256, 16_384);
        c.lost();
        assert_eq!(c.get(), 256);
        c.arrived(10_000);
        assert_eq!(c.get(), 256);
    }
}
