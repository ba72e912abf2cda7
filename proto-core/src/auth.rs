//! The authentication handshake both client sessions run on every link,
//! right after `Welcome` and before their first request (PROTOCOL.md §8).
//!
//! ```text
//!   Welcome ──► Request ──TerminalAuth──► AwaitReply ──Challenge──► Answer ──ChallengeAnswer──► AwaitVerdict
//!                  ▲    (terminal, relay)     │                                                   │
//!                  │      ──Authenticate──►   │ Authenticated (token)           Authenticated     │
//!                  │          (token)         ▼                                                   ▼
//!                  └── retransmit timer ── (waiting)                                            Done
//! ```
//!
//! [`Handshake`] is a sub-machine with no timers and no phase of its own in
//! the session: the session owns the link's state and its retransmit timer,
//! and hands the handshake what it receives while authenticating. A timer
//! that fires before `Authenticated` sends the *request* again, never the
//! answer alone: the relay answers a fresh `TerminalAuth` with a fresh
//! challenge, so a lost `Challenge`, answer or `Authenticated` all recover
//! the same way. A new link starts over: what a relay knows of a session
//! ends with its link.
//!
//! A relay's credential runs the terminal's steps, with the relay's MAC
//! ([`relay_mac`]); its session's `Hello` says `Role::Relay` ([`Handshake::role`]).
//!
//! With the feature `auth` only.

use crate::error::ErrorCode;
use crate::frame::EncodeError;
use crate::identity::{relay_mac, terminal_mac, AuthError, Credential};
use crate::message::{self, Authenticate, ChallengeAnswer, Kind, Message, TerminalAuth};

/// Where the handshake stands on the current link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The request (`TerminalAuth` or `Authenticate`) is due.
    Request,
    /// The request is sent: waiting for a challenge (terminal) or the
    /// verdict (token).
    AwaitReply,
    /// A challenge arrived: its answer is due.
    Answer([u8; 16]),
    /// The answer is sent: waiting for the verdict.
    AwaitVerdict,
    /// The relay authenticated this link.
    Done,
}

/// What a message from the relay meant to the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It moved the handshake on (or restarted it); nothing for the
    /// session to do but count it as progress.
    Pending,
    /// The relay authenticated the session: the session's own exchange
    /// starts now.
    Authenticated,
    /// The session cannot authenticate: it fails with this.
    Failed(AuthError),
}

/// The terminal side of one credential's handshake. See the module docs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handshake<'a> {
    credential: Credential<'a>,
    step: Step,
}

impl<'a> Handshake<'a> {
    /// A handshake for `credential`, to run on the next link.
    pub(crate) fn new(credential: Credential<'a>) -> Self {
        Handshake {
            credential,
            step: Step::Request,
        }
    }

    /// The role the session's `Hello` says: the credential's.
    pub(crate) fn role(&self) -> message::Role {
        self.credential.role()
    }

    /// A `Welcome` on a new link: authenticate from the start.
    pub(crate) fn restart(&mut self) {
        self.step = Step::Request;
    }

    /// The session's retransmit timer fired while authenticating: ask
    /// again (a fresh challenge replaces whatever was lost).
    pub(crate) fn retransmit(&mut self) {
        if self.step != Step::Done {
            self.step = Step::Request;
        }
    }

    /// The next handshake frame, if one is due, encoded for a relay that
    /// takes frames of `max` raw bytes. `Err` when the terminal's name
    /// does not fit them, which no retry mends.
    #[inline]
    pub(crate) fn poll_transmit(
        &mut self,
        max: impl Into<crate::frame::Format>,
        out: &mut [u8],
    ) -> Option<Result<usize, AuthError>> {
        self.poll_transmit_as(max.into(), out)
    }

    /// [`Self::poll_transmit`] past the conversion (linked once).
    fn poll_transmit_as(
        &mut self,
        max: crate::frame::Format,
        out: &mut [u8],
    ) -> Option<Result<usize, AuthError>> {
        let (encoded, next) = match (self.step, self.credential) {
            (Step::Request, Credential::Terminal(id)) => (
                message::encode(&TerminalAuth { terminal: id.name }, max, out),
                Step::AwaitReply,
            ),
            (Step::Request, Credential::Relay(id)) => (
                message::encode(&TerminalAuth { terminal: id.name }, max, out),
                Step::AwaitReply,
            ),
            (Step::Request, Credential::Token(token)) => (
                message::encode(&Authenticate { token }, max, out),
                Step::AwaitReply,
            ),
            (Step::Answer(nonce), Credential::Terminal(id)) => {
                let mac = terminal_mac(&id.key, &nonce, id.name);
                (
                    message::encode(&ChallengeAnswer { mac }, max, out),
                    Step::AwaitVerdict,
                )
            }
            (Step::Answer(nonce), Credential::Relay(id)) => {
                let mac = relay_mac(&id.key, &nonce, id.name);
                (
                    message::encode(&ChallengeAnswer { mac }, max, out),
                    Step::AwaitVerdict,
                )
            }
            _ => return None,
        };
        match encoded {
            Ok(n) => {
                self.step = next;
                Some(Ok(n))
            }
            Err(EncodeError::TooLarge) => Some(Err(AuthError::NameTooLong)),
        }
    }

    /// A message from the relay while authenticating; `None` if it is not
    /// the handshake's (the session handles it as it always does).
    pub(crate) fn handle(&mut self, msg: &Message<'_>) -> Option<Outcome> {
        if self.step == Step::Done {
            return None;
        }
        match (*msg, self.credential) {
            // The latest challenge is the one to answer: a request sent
            // again replaced the one before it at the relay.
            (Message::Challenge(c), Credential::Terminal(_) | Credential::Relay(_)) => {
                self.step = Step::Answer(c.nonce);
                Some(Outcome::Pending)
            }
            (Message::Authenticated(_), _) => {
                self.step = Step::Done;
                Some(Outcome::Authenticated)
            }
            (Message::Error(e), _) if is_auth_kind(e.kind) => match e.code {
                ErrorCode::AuthFailed => Some(Outcome::Failed(AuthError::Refused)),
                ErrorCode::UnknownKind => Some(Outcome::Failed(AuthError::RelayHasNoAccounts)),
                // A relay with accounts takes a request at any time after
                // `Welcome`; one whose messages know the kinds but whose
                // sessions do not refuses it as unexpected: no accounts
                // either. Retrying would only ping-pong with it.
                ErrorCode::UnexpectedMessage if e.kind != Kind::ChallengeAnswer as u8 => {
                    Some(Outcome::Failed(AuthError::RelayHasNoAccounts))
                }
                // The relay holds no challenge for this answer (it was
                // replaced): ask for a fresh one when the session's timer
                // says, not at once, so a confused relay is not flooded.
                ErrorCode::UnexpectedMessage => {
                    self.step = Step::AwaitReply;
                    Some(Outcome::Pending)
                }
                // Waits (RateLimited, Busy), transient errors and refusals
                // of the session are the session's, as for any request.
                _ => None,
            },
            _ => None,
        }
    }
}

/// Whether `kind` is one of the requests a handshake sends.
fn is_auth_kind(kind: u8) -> bool {
    kind == Kind::TerminalAuth as u8
        || kind == Kind::ChallengeAnswer as u8
        || kind == Kind::Authenticate as u8
}

#[cfg(test)]
pub(crate) mod tests;
