//! The blocking download driver.

use pickup_proto::download::{self, Config, Session, Sink};
use pickup_proto::frame::{self, Decoder};
#[cfg(feature = "auth")]
use pickup_proto::identity::Credential;
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
/// `TX >= 66`. See the crate docs for the RAM cost. `'a` is the lifetime
/// of the strings a named download and a credential borrow (feature `auth`).
#[derive(Debug)]
pub struct Downloader<'a, const F: usize, const RX: usize, const TX: usize> {
    session: Session<'a, F>,
    decoder: Decoder<[u8; RX]>,
    tx: [u8; TX],
    policy: RetransferPolicy,
}

impl<'a, const F: usize, const RX: usize, const TX: usize> Downloader<'a, F, RX, TX> {
    const BUFFERS_FIT: () = assert!(
        RX >= frame::MIN_FRAME_LEN && TX >= frame::max_encoded_len(frame::MIN_FRAME_LEN),
        "RX must hold a 64-byte frame and TX its encoded form (66 bytes)"
    );

    /// A download of the batch behind `code`.
    pub fn new(config: Config, code: Code, policy: RetransferPolicy) -> Self {
        let config = Self::fit(config);
        Self::with_session(Session::new(config, code), policy)
    }

    /// A download of the file `name` of the user `owner` (`FetchNamed`,
    /// see [`Session::named`]); usually with
    /// [`authenticate`](Self::authenticate). Each reconnect fetches the
    /// name again. With the feature `auth`.
    #[cfg(feature = "auth")]
    pub fn named(config: Config, owner: &'a str, name: &'a str, policy: RetransferPolicy) -> Self {
        let config = Self::fit(config);
        Self::with_session(Session::named(config, owner, name), policy)
    }

    /// Authenticates every link with `credential` before the fetch (see
    /// [`Session::authenticate`]); a refusal ends [`run`](Self::run) with
    /// `RunError::Session(download::Error::Auth(_))`. Call before `run`.
    /// With the feature `auth`.
    #[cfg(feature = "auth")]
    pub fn authenticate(&mut self, credential: Credential<'a>) {
        self.session.authenticate(credential);
    }

    fn fit(mut config: Config) -> Config {
        let () = Self::BUFFERS_FIT;
        config.max_frame = config.max_frame.min(RX as u32);
        config
    }

    fn with_session(session: Session<'a, F>, policy: RetransferPolicy) -> Self {
        Downloader {
            session,
            decoder: Decoder::new([0; RX]),
            tx: [0; TX],
            policy,
        }
    }

    /// The protocol session (progress, error).
    pub fn session(&self) -> &Session<'a, F> {
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
            &mut |_: &Session<'a, F>, e| observer(e),
        )
    }
}
