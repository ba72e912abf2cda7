//! One driving contract for both client machines.
//!
//! [`upload::Session`](crate::upload::Session) and
//! [`download::Session`](crate::download::Session) take the same inputs and
//! give the same outputs, so a driver (the blocking `pickup-device` client,
//! the CLI, the simulator, a benchmark, a fuzzer) is written once, generic
//! over [`Machine`]. The only thing that differs is what `Files` is: the
//! upload reads file bytes through a [`ReadAt`] source, the download writes
//! them through a [`Sink`](crate::download::Sink) (which is also a
//! [`ReadAt`], to re-read a resumed file).
//!
//! Call order, for every link the driver makes:
//!
//! ```text
//!   m.handle_connected(now)                       a new link is up (first and every reconnect)
//!   loop {
//!       while let Some(n) = m.poll_transmit(now, files, buf)? { write buf[..n] to the link }
//!       while let Some(e) = m.poll_event() { report e }
//!       if m.is_finished() { done: m.error() says how }
//!       if m.is_idle() { the machine gave the link up: drop it, reconnect }
//!       wait for bytes from the link, or until m.poll_timeout()
//!       bytes → frame::Decoder → m.handle_frame(now, frame, files)?   (every frame, in order)
//!                  decoder.set_framing(m.framing())                  (after each frame)
//!       if now >= m.poll_timeout() { m.handle_timeout(now) }
//!   }
//!   m.handle_disconnected(now)                    the link is gone (EOF, error, given up)
//! ```
//!
//! `now` is whatever the driver's clock says (see [`crate::time`]); it
//! must not go backwards. A storage error (`Files::Error`) is returned as
//! it is and leaves the machine consistent: the driver may stop, fix the
//! cause and carry on, and the timers recover whatever the failed call
//! was doing.

use crate::frame::Frame;
use crate::storage::ReadAt;
use crate::time::Instant;

/// Whether an error answers no message of ours but a frame the relay could
/// not take apart (kind 0: oversize, undecodable). On a noisy serial line
/// that is garbage that happened to look like a frame; the timers recover
/// whatever was lost, so it must not end the exchange. Shared by every
/// machine (upload, download, notices), so it is linked once.
#[cfg(any(test, feature = "upload", feature = "download", feature = "notices"))]
pub(crate) fn noise(e: &crate::message::Error) -> bool {
    use crate::error::ErrorCode;
    e.kind == 0
        && matches!(
            e.code,
            ErrorCode::TooLarge | ErrorCode::BadFrame | ErrorCode::UnknownKind
        )
}

/// Whether an error refuses a surplus `ChallengeAnswer`: a `TerminalAuth`
/// the link duplicated (or the timer sent again) drew two challenges, the
/// terminal answered each as it arrived, and the first answer used them
/// all up (PROTOCOL.md §8), so the relay holds none for the second. The
/// handshake takes this error while it runs; once the relay has said
/// `Authenticated` the session is authenticated all the same, and ending
/// the link over it would throw away a link that just paid for its
/// handshake (one in nine of those a named download authenticated on the
/// lossy, often cut link of simulator seed 273090135179919). Shared by
/// every machine that authenticates; without the feature `auth` no answer
/// is ever sent, and the check compiles to nothing.
#[cfg(any(test, feature = "upload", feature = "download", feature = "notices"))]
pub(crate) fn surplus_answer(e: &crate::message::Error) -> bool {
    cfg!(any(test, feature = "auth"))
        && e.code == crate::error::ErrorCode::UnexpectedMessage
        && e.kind == crate::message::Kind::ChallengeAnswer as u8
}

/// A client state machine driven over a link, with file bytes in `Files`.
///
/// Implemented by [`upload::Session`](crate::upload::Session) for every
/// [`ReadAt`] source and by [`download::Session`](crate::download::Session)
/// for every [`Sink`](crate::download::Sink); with the feature `notices`
/// also by `notice::Listener` and `notice::Sender`, which touch no files
/// and take any `Files` type (they never finish but by failing: a driver
/// stops them on its own condition). See the [module docs](self) for the
/// call order.
pub trait Machine<Files: ReadAt + ?Sized> {
    /// What the driver is told about (progress, verdicts, the code…).
    type Event;
    /// Why the transfer failed for good.
    type Error;

    /// A new link is up: start (or restart) the exchange on it.
    fn handle_connected(&mut self, now: Instant);

    /// The link went away (the driver noticed: end of stream, an error, a
    /// port gone). Nothing more is sent until [`handle_connected`](Self::handle_connected).
    fn handle_disconnected(&mut self, now: Instant);

    /// One frame from the relay, as a [`frame::Decoder`](crate::frame::Decoder)
    /// returned it. Frames that do not decode or are not expected now are
    /// ignored: the timers recover whatever they were meant to say.
    fn handle_frame(
        &mut self,
        now: Instant,
        frame: Frame<'_>,
        files: &mut Files,
    ) -> Result<(), Files::Error>;

    /// Fires whatever timers are due at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// The framing of the relay's frames from now on: COBS until a
    /// `Welcome` agreed on the length-prefixed one (PROTOCOL.md §2.1). A
    /// driver passes it to [`Decoder::set_framing`](crate::frame::Decoder::set_framing)
    /// after every frame it handled, before it feeds the rest of the read.
    fn framing(&self) -> crate::frame::Framing {
        crate::frame::Framing::Cobs
    }

    /// Offer only COBS on later links: a length-prefixed frame arrived
    /// broken, so the transport is not as reliable as it was taken for
    /// (a driver then drops the link, as the stream may have lost its
    /// place). Machines that never offer the length prefix ignore it.
    fn keep_cobs(&mut self) {}

    /// Writes the next frame to send into `out` and returns its length, or
    /// `None` when there is nothing to send now. `out` must hold at least
    /// [`frame::max_encoded_len`](crate::frame::max_encoded_len) of the
    /// machine's configured `max_frame`; it may also be used to read file
    /// bytes through.
    #[must_use = "a frame written to `out` must be sent"]
    fn poll_transmit(
        &mut self,
        now: Instant,
        files: &mut Files,
        out: &mut [u8],
    ) -> Result<Option<usize>, Files::Error>;

    /// When [`handle_timeout`](Self::handle_timeout) must next be called;
    /// `None` while no exchange runs (idle or finished).
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next event for the driver. The queue is short and drops the
    /// oldest: poll it after every input.
    #[must_use]
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// No exchange runs: before the first
    /// [`handle_connected`](Self::handle_connected), after
    /// [`handle_disconnected`](Self::handle_disconnected), or once the
    /// machine decided the link is lost (nothing heard for its idle timeout,
    /// the relay said goodbye); it then also reports a `LinkLost` event.
    /// Never true once [finished](Self::is_finished).
    fn is_idle(&self) -> bool;

    /// The transfer finished, successfully or not.
    fn is_finished(&self) -> bool;

    /// The failure, if the transfer failed.
    fn error(&self) -> Option<Self::Error>;

    /// How far the transfer has come.
    fn progress(&self) -> Progress;
}

/// How far a transfer has come: what a driver reports, and how it tells a
/// link that carries the transfer forward from one that does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Progress {
    /// The relay has described the batch: granted the upload, or sent the
    /// download's manifest.
    pub started: bool,
    /// Bytes done: durable at the relay (upload), or written and hashed
    /// (download). It may go back when the relay rewinds an upload.
    pub done: u64,
    /// Bytes of the whole batch (0 for a download before its manifest).
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::frame::Decoder;
    use crate::message::{Kind, Message};
    use crate::{download, upload, Sha1Digest};

    /// The contract's link states, written once for any machine.
    fn hello_on_every_link<M: Machine<Files>, Files: ReadAt + ?Sized>(
        m: &mut M,
        files: &mut Files,
    ) {
        let mut out = [0u8; 256];
        let t = Instant::from_millis(1_000);
        assert!(m.is_idle() && !m.is_finished());
        assert_eq!(m.poll_timeout(), None);
        assert_eq!(m.poll_transmit(t, files, &mut out).unwrap(), None);
        for _ in 0..2 {
            m.handle_connected(t);
            assert!(!m.is_idle());
            assert!(m.poll_timeout().is_some());
            let n = m.poll_transmit(t, files, &mut out).unwrap().unwrap();
            let mut input = &out[..n];
            let mut dec = Decoder::new([0u8; 256]);
            let frame = dec.feed(&mut input).unwrap().unwrap();
            assert_eq!(Message::decode(frame).unwrap().kind(), Kind::Hello);
            m.handle_disconnected(t);
            assert!(m.is_idle());
            assert_eq!(m.poll_timeout(), None);
        }
        let p = m.progress();
        assert!(!p.started && p.done == 0);
        assert!(m.error().is_none());
    }

    #[test]
    fn both_machines_keep_the_same_contract() {
        let data = b"contract";
        let files = [upload::FileMeta {
            name: "c.bin",
            size: data.len() as u64,
            sha1: Sha1Digest::of(data),
        }];
        let mut up = upload::Session::<1>::new(upload::Config::default(), &files).unwrap();
        hello_on_every_link(&mut up, &mut [data.as_slice()]);
        assert_eq!(Machine::<[&[u8]; 1]>::progress(&up).total, 8);

        let code = Code::parse("7KQ4-M2XD-9RTA").unwrap();
        let mut down = download::Session::<1>::new(download::Config::default(), code);
        hello_on_every_link(&mut down, &mut crate::download::tests::MemSink::default());

        // The notice machines touch no files: any source drives them.
        let me = crate::identity::TerminalIdentity {
            name: "sensor-1",
            key: crate::identity::DeviceKey([1; 16]),
        };
        let mut listener =
            crate::notice::Listener::<4>::new(crate::notice::ListenConfig::default(), me);
        hello_on_every_link(&mut listener, &mut [data.as_slice()]);
        let mut sender = crate::notice::Sender::new(
            crate::notice::SendConfig::default(),
            crate::identity::Credential::Terminal(me),
        );
        hello_on_every_link(&mut sender, &mut [data.as_slice()]);
    }
}
