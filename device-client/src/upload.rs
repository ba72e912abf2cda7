//! The blocking upload driver.

use pickup_proto::frame::{self, Decoder};
#[cfg(feature = "auth")]
use pickup_proto::identity::Credential;
#[cfg(feature = "std")]
use pickup_proto::message::FileAttrs;
use pickup_proto::message::ResumeToken;
use pickup_proto::storage::ReadAt;
use pickup_proto::upload::{self, Config, FileMeta, Session};
use pickup_proto::Code;

use crate::clock::Clock;
use crate::driver::{self, Event, Parts, RunError};
use crate::link::Connector;
use crate::retransfer::RetransferPolicy;

/// Uploads a batch of up to `F` files over links from a [`Connector`],
/// reconnecting and resuming on its own as its [`RetransferPolicy`] allows.
///
/// `RX` is the frame decoder's buffer: the largest frame this side accepts,
/// announced to the relay (the session's `max_frame` is capped to it).
/// `TX` is the buffer outgoing frames are encoded in (and link reads land
/// in); data frames are sized to fit it, so it bounds the payload per frame.
/// Both are checked at compile time: `RX >= 64`, `TX >= 66` (a 64-byte frame
/// encoded). See the crate docs for the RAM cost.
#[derive(Debug)]
pub struct Uploader<'n, const F: usize, const RX: usize, const TX: usize> {
    session: Session<'n, F>,
    decoder: Decoder<[u8; RX]>,
    tx: [u8; TX],
    policy: RetransferPolicy,
}

impl<'n, const F: usize, const RX: usize, const TX: usize> Uploader<'n, F, RX, TX> {
    const BUFFERS_FIT: () = assert!(
        RX >= frame::MIN_FRAME_LEN && TX >= frame::max_encoded_len(frame::MIN_FRAME_LEN),
        "RX must hold a 64-byte frame and TX its encoded form (66 bytes)"
    );

    /// A new upload of `files`. Fails if there are none, more than `F`, or a
    /// name is invalid.
    pub fn new(
        config: Config,
        files: &[FileMeta<'n>],
        policy: RetransferPolicy,
    ) -> Result<Self, upload::Error> {
        Ok(Self::with_session(
            Session::new(Self::fit(config), files)?,
            policy,
        ))
    }

    /// Continues an earlier upload of the same `files` with its resume token,
    /// e.g. after the terminal restarted. The relay says where each file stands.
    pub fn resume(
        config: Config,
        files: &[FileMeta<'n>],
        token: ResumeToken,
        policy: RetransferPolicy,
    ) -> Result<Self, upload::Error> {
        Ok(Self::with_session(
            Session::resume(Self::fit(config), files, token)?,
            policy,
        ))
    }

    /// Attributes (executable bit, modification time) for one file of the
    /// batch, sent to a relay that keeps them; see
    /// [`Session::set_attrs`]. Returns `false` for an index outside the batch.
    /// With `std` (which brings `pickup-proto`'s `file-attrs`): firmware
    /// that keeps no attributes links no code for them.
    #[cfg(feature = "std")]
    pub fn set_attrs(&mut self, attrs: FileAttrs) -> bool {
        self.session.set_attrs(attrs)
    }

    fn fit(mut config: Config) -> Config {
        let () = Self::BUFFERS_FIT;
        config.max_frame = config.max_frame.min(RX as u32);
        config
    }

    fn with_session(session: Session<'n, F>, policy: RetransferPolicy) -> Self {
        Uploader {
            session,
            decoder: Decoder::new([0; RX]),
            tx: [0; TX],
            policy,
        }
    }

    /// Makes a new upload's batch join the owner (token family) of the
    /// earlier batch of `token`, so content that family stored is linked
    /// instead of sent ([`Session::join_family`]).
    pub fn join_family(&mut self, token: ResumeToken) {
        self.session.join_family(token);
    }

    /// Authenticates every link with `credential` right after `Welcome`,
    /// before the batch is announced or resumed (see
    /// [`Session::authenticate`]); a refusal ends [`run`](Self::run) with
    /// `RunError::Session(upload::Error::Auth(_))`. Call before `run`.
    /// With the feature `auth`.
    #[cfg(feature = "auth")]
    pub fn authenticate(&mut self, credential: Credential<'n>) {
        self.session.authenticate(credential);
    }

    /// Stores the batch under the authenticated user's names as well (see
    /// [`Session::set_named`]). Call before `run`. With the feature `auth`.
    #[cfg(feature = "auth")]
    pub fn set_named(&mut self, named: bool) {
        self.session.set_named(named);
    }

    /// The protocol session (grant, progress, error).
    pub fn session(&self) -> &Session<'n, F> {
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

    /// Runs the upload to the end, reading file bytes through `source` and
    /// reporting every session and link event to `observer`. Returns the
    /// pickup code once every file is verified or held by the relay.
    ///
    /// After [`RunError::GaveUp`] or [`RunError::Storage`] the upload is
    /// intact: calling `run` again continues it.
    pub fn run<C, K, R>(
        &mut self,
        connector: &mut C,
        clock: &K,
        source: &mut R,
        mut observer: impl FnMut(Event<upload::Event>),
    ) -> Result<Code, RunError<upload::Error, R::Error>>
    where
        C: Connector,
        K: Clock,
        R: ReadAt,
    {
        self.run_with(connector, clock, source, |_, e| observer(e))
    }

    /// [`run`](Self::run), with the session beside each event, as it
    /// stood when the event came: what an observer needs to read more
    /// than an event carries (the relay's page link at the grant, say).
    pub fn run_with<C, K, R>(
        &mut self,
        connector: &mut C,
        clock: &K,
        source: &mut R,
        mut observer: impl FnMut(&Session<'n, F>, Event<upload::Event>),
    ) -> Result<Code, RunError<upload::Error, R::Error>>
    where
        C: Connector,
        K: Clock,
        R: ReadAt,
    {
        let parts = Parts {
            decoder: &mut self.decoder,
            tx: &mut self.tx,
            policy: self.policy,
        };
        driver::run(
            &mut self.session,
            source,
            parts,
            connector,
            clock,
            &mut observer,
        )?;
        // A finished session without an error has its grant: completion is
        // only decided after one.
        self.session
            .grant()
            .map(|g| g.code)
            .ok_or(RunError::Session(upload::Error::Mismatch))
    }
}
