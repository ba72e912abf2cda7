//! The blocking download driver.

use pickup_proto::download::{self, Config, Session, Sink};
use pickup_proto::frame::{self, Decoder};
use pickup_proto::storage::ReadAt;
use pickup_proto::Code;

use crate::clock::Clock;
use crate::driver::{self, Event, Parts, RunError};
use crate::link::Connector;
use crate::retransfer::RetransferPolicy;

/// Downloads the batch behind a code (up to `F` files) into a [`Sink`],
/// reconnecting and resuming on its own as its [`RetransferPolicy`] allows.
///
/// `RX` is the frame decoder's buffer and therefore the largest data frame
/// the relay may send (the session's `max_frame` is capped to it). `TX`
/// encodes requests, receives link reads, and is the buffer through which a
/// resumed file's local prefix is re-hashed. Compile-time checks: `RX >= 64`,
/// `TX >= 66`. See the crate docs for the RAM cost.
#[derive(Debug)]
pub struct Downloader<const F: usize, const RX: usize, const TX: usize> {
    session: Session<F>,
    decoder: Decoder<[u8; RX]>,
    tx: [u8; TX],
    policy: RetransferPolicy,
}

impl<const F: usize, const RX: usize, const TX: usize> Downloader<F, RX, TX> {
    const BUFFERS_FIT: () = assert!(
        RX >= frame::MIN_FRAME_LEN && TX >= frame::max_encoded_len(frame::MIN_FRAME_LEN),
        "RX must hold a 64-byte frame and TX its encoded form (66 bytes)"
    );

    /// A download of the batch behind `code`.
    pub fn new(mut config: Config, code: Code, policy: RetransferPolicy) -> Self {
        let () = Self::BUFFERS_FIT;
        config.max_frame = config.max_frame.min(RX as u32);
        Downloader {
            session: Session::new(config, code),
            decoder: Decoder::new([0; RX]),
            tx: [0; TX],
            policy,
        }
    }

    /// The protocol session (progress, error).
    pub fn session(&self) -> &Session<F> {
        &self.session
    }

    /// The retransfer policy.
    pub fn policy(&self) -> RetransferPolicy {
        self.policy
    }

    /// Changes the retransfer policy for the next [`run`](Self::run).
    pub fn set_policy(&mut self, policy: RetransferPolicy) {
        self.policy = policy;
    }

    /// Frames received and dropped (CRC, COBS, oversize) so far.
    pub fn link_stats(&self) -> frame::Stats {
        self.decoder.stats()
    }

    /// Runs the download to the end: every file written through `sink` and
    /// verified (or, with `manifest_only`, the manifest received). Reports
    /// every session and link event to `observer`.
    ///
    /// After [`RunError::GaveUp`] or [`RunError::Storage`] the download is
    /// intact: calling `run` again continues it.
    pub fn run<C, K, S>(
        &mut self,
        connector: &mut C,
        clock: &K,
        sink: &mut S,
        mut observer: impl FnMut(Event<download::Event>),
    ) -> Result<(), RunError<download::Error, <S as ReadAt>::Error>>
    where
        C: Connector,
        K: Clock,
        S: Sink,
    {
        let parts = Parts {
            decoder: &mut self.decoder,
            tx: &mut self.tx,
            policy: self.policy,
        };
        driver::run(
            &mut self.session,
            sink,
            parts,
            connector,
            clock,
            &mut observer,
        )
    }
}
