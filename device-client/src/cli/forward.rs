//! `pickup forward`: ask the relay to copy a batch to a peer relay and
//! follow the copy (PROTOCOL.md §12).
//!
//! ```text
//!   pickup forward CODE --to PEER [--json]   ForwardRequest ─► ForwardAccepted{id}
//!                                            ForwardWatch{id} ─► ForwardStatus … until Done | Failed
//!   pickup forward --status ID               ForwardWatch{id, once} ─► one ForwardStatus
//!   pickup forward --retry ID                ForwardRetry{id} ─► ForwardStatus, then follows it
//! ```
//!
//! Following prints a progress bar on a terminal's stderr (and a line per
//! change of state), or with `--json` one JSON object per status on
//! stdout (JSON lines). It ends with the peer's pickup code on stdout and
//! exit code 0 when the copy is done, or the reason and exit code 2 when
//! the forward failed. The forward is the relay's: Ctrl-C stops watching,
//! not the forward, and a link lost while watching is dialled again
//! within the retransfer limits.

use std::thread::sleep;
use std::time::Duration;

use clap::Args;
use pickup_proto::message::{
    ForwardRequest, ForwardRetry, ForwardState, ForwardStatus, ForwardWatch, Message,
};
use pickup_proto::{Code, ErrorCode};
use serde_json::{json, Value};

use super::account::{refusal, required_credential, Exchange, Reply};
use super::out::outln;
use super::show::{escape, size, utc, Ui};
use super::{Common, Exit, Failure};
use crate::clock::{Clock, StdClock};
use crate::retransfer::{Decision, Retransfer};

/// How long a watch waits for a status before it pings the relay.
const QUIET: Duration = Duration::from_secs(5);

/// `pickup forward`.
#[derive(Args, Debug)]
pub(crate) struct ForwardArgs {
    /// The global options, copied in by `cli::main` (not parsed here).
    #[arg(skip)]
    pub(crate) common: Common,
    /// The pickup code of the batch to copy
    #[arg(required_unless_present_any = ["status", "retry"], requires = "to")]
    code: Option<String>,
    /// The peer relay to copy it to, as this relay's [[peers]] names it
    #[arg(long, value_name = "PEER")]
    to: Option<String>,
    /// Show where forward ID stands, once
    #[arg(long, value_name = "ID", conflicts_with_all = ["code", "to", "retry"])]
    status: Option<u64>,
    /// Queue the failed forward ID again, and follow it
    #[arg(long, value_name = "ID", conflicts_with_all = ["code", "to", "status"])]
    retry: Option<u64>,
}

/// A state's name, as lines and `--json` give it.
fn state_name(state: ForwardState) -> &'static str {
    match state {
        ForwardState::Queued => "queued",
        ForwardState::Connecting => "connecting",
        ForwardState::Transferring => "transferring",
        ForwardState::Verifying => "verifying",
        ForwardState::Done => "done",
        ForwardState::Retrying => "retrying",
        ForwardState::Failed => "failed",
    }
}

/// `s` for `--json`.
pub(crate) fn to_json(s: &ForwardStatus) -> Value {
    json!({
        "id": s.id,
        "state": state_name(s.state),
        "sent": s.sent,
        "total": s.total,
        "rate": s.rate,
        "attempts": s.attempts,
        "reason": s.reason.map(|r| r.describe()),
        "peer_code": s.peer_code.map(|c| c.to_string()),
        "peer_expires_at": (s.peer_expires_at > 0).then_some(s.peer_expires_at),
    })
}

/// One line about `s`: `forward 7: transferring, 1.00 MiB of 4.00 MiB`.
fn line(s: &ForwardStatus) -> String {
    let id = s.id;
    let reason = s.reason.map_or_else(String::new, |r| format!(": {r}"));
    match s.state {
        ForwardState::Done => match s.peer_code {
            Some(code) => format!(
                "forward {id}: done, {} at the peer as {code} until {}",
                size(s.total),
                utc(s.peer_expires_at)
            ),
            None => format!("forward {id}: done"),
        },
        ForwardState::Transferring | ForwardState::Verifying => format!(
            "forward {id}: {}, {} of {}",
            state_name(s.state),
            size(s.sent),
            size(s.total)
        ),
        ForwardState::Retrying => {
            format!(
                "forward {id}: attempt {} failed{reason}; retrying",
                s.attempts
            )
        }
        ForwardState::Failed => match s.peer_code {
            // A push forward that failed at the push: the copy is there.
            Some(code) => format!(
                "forward {id}: failed after {} attempts{reason}; the copy is at the peer as {code} until {}",
                s.attempts,
                utc(s.peer_expires_at)
            ),
            None => format!("forward {id}: failed after {} attempts{reason}", s.attempts),
        },
        other => format!("forward {id}: {}", state_name(other)),
    }
}

/// An authenticated exchange with the relay.
fn open(common: &Common) -> Result<Exchange, Failure> {
    let credential = required_credential(common)?;
    let mut ex = Exchange::open(&common.relay_addr()?)?;
    ex.authenticate(&credential)?;
    Ok(ex)
}

/// The line for the relay's refusal of a request about forward `id`
/// (`None`: a new forward). An unknown forward is named, with why it may
/// be gone (the relay forgets finished forwards); a full queue says it
/// is the user's own open forwards; the rest as every command says them.
fn refused(common: &Common, id: Option<u64>, code: ErrorCode) -> Failure {
    const FULL: &str = "you have as many forwards open as the relay allows \
                        (forward.max_open_per_user)";
    let text = match (code, id) {
        (ErrorCode::UnknownCode, Some(id)) => format!(
            "forward {id}: not found (none of your forwards has this id; the relay forgets a \
             done or failed forward after its forward.keep_finished_secs, a week by default)"
        ),
        (ErrorCode::QueueFull, Some(id)) => {
            format!("forward {id}: not retried: {FULL}; retry once one of them is done or failed")
        }
        (ErrorCode::QueueFull, None) => {
            format!("{FULL}; forward again once one of them is done or failed")
        }
        _ => return refusal(code, &common.relay),
    };
    Failure::new(Exit::Refused, text)
}

/// Sends `msg` about forward `id` (`None`: a new forward) on a new
/// exchange and returns its reply, or the refusal as [`refused`] says it.
fn ask(common: &Common, id: Option<u64>, msg: &Message<'_>) -> Result<Reply, Failure> {
    let mut ex = open(common)?;
    let reply = ex.ask(msg)?;
    ex.close();
    reply.map_err(|code| refused(common, id, code))
}

/// The status a request answered, or a refusal.
fn status_of(reply: Reply) -> Result<ForwardStatus, Failure> {
    match reply {
        Reply::ForwardStatus(s) => Ok(s),
        _ => Err(Failure::new(Exit::Refused, "the relay sent no status")),
    }
}

/// Prints `s` as `--json` or a line; returns whether it was final.
fn show(common: &Common, ui: &Ui, s: &ForwardStatus, last: &mut Option<ForwardState>) -> bool {
    if common.json {
        outln!("{}", to_json(s));
    } else {
        if *last != Some(s.state) {
            ui.note(&line(s));
            if !ui.tty && !common.verbose {
                eprintln!("{}", line(s));
            }
        }
        ui.progress(state_name(s.state), s.sent, s.total);
    }
    *last = Some(s.state);
    s.state.is_final()
}

/// Follows forward `id` until it is `Done` or `Failed`, dialling again
/// after a lost link within the retransfer limits; its final status
/// (also what `pickup send --to TERMINAL@PEER` shows of its forwards).
pub(crate) fn follow(common: &Common, id: u64, ui: &Ui) -> Result<ForwardStatus, Failure> {
    let mut retransfer = Retransfer::new(common.policy());
    let clock = StdClock::new();
    let mut last = None;
    loop {
        let watched = open(common).and_then(|mut ex| {
            let first =
                status_of(ex.request(&Message::ForwardWatch(ForwardWatch { id, once: false }))?)?;
            if show(common, ui, &first, &mut last) {
                ex.close();
                return Ok(first);
            }
            loop {
                if let Some(s) = ex.next_status(QUIET)? {
                    if show(common, ui, &s, &mut last) {
                        ex.close();
                        return Ok(s);
                    }
                }
            }
        });
        match watched {
            Err(e) if e.exit == Exit::Link => match retransfer.on_loss(clock.now()) {
                Decision::Retry { after, .. } => {
                    ui.note(&format!("link lost ({}); watching again", e.message));
                    sleep(Duration::from_millis(after.as_millis()));
                }
                Decision::GiveUp { .. } => return Err(e),
            },
            other => return other,
        }
    }
}

/// The end of a followed forward: the peer's code on stdout, or the
/// failure with its reason.
fn finish(common: &Common, ui: &Ui, s: &ForwardStatus) -> Result<(), Failure> {
    ui.bar.finish_and_clear();
    match (s.state, s.peer_code) {
        (ForwardState::Done, Some(code)) => {
            if !common.json {
                outln!("{code}");
            }
            Ok(())
        }
        _ => Err(Failure::new(
            Exit::Refused,
            match s.reason {
                Some(reason) => format!("forward {} failed: {reason}", s.id),
                None => format!("forward {} failed", s.id),
            },
        )),
    }
}

pub(crate) fn run(args: ForwardArgs) -> Result<(), Failure> {
    let common = &args.common;
    let ui = Ui::new(common.verbose);
    if let Some(id) = args.status {
        let watch = Message::ForwardWatch(ForwardWatch { id, once: true });
        let s = status_of(ask(common, Some(id), &watch)?)?;
        if common.json {
            outln!("{}", to_json(&s));
        } else {
            outln!("{}", line(&s));
        }
        return Ok(());
    }
    let id = match (args.retry, &args.code, &args.to) {
        (Some(id), _, _) => {
            let retry = Message::ForwardRetry(ForwardRetry { id });
            let s = status_of(ask(common, Some(id), &retry)?)?;
            let mut last = None;
            if show(common, &ui, &s, &mut last) {
                return finish(common, &ui, &s);
            }
            id
        }
        (None, Some(code), Some(peer)) => {
            let code = Code::parse(code)
                .map_err(|e| Failure::new(Exit::Usage, format!("{code:?}: {e}")))?;
            let request = Message::ForwardRequest(ForwardRequest { code, peer });
            let id = match ask(common, None, &request)? {
                Reply::ForwardAccepted(id) => id,
                _ => {
                    return Err(Failure::new(
                        Exit::Refused,
                        "the relay did not take the forward",
                    ))
                }
            };
            if !common.json {
                ui.note(&format!("forward {id}: {code} to {}", escape(peer)));
                if !ui.tty {
                    eprintln!("forward {id}: {code} to {}", escape(peer));
                }
            }
            id
        }
        _ => {
            return Err(Failure::new(
                Exit::Usage,
                "give CODE --to PEER, --status ID or --retry ID",
            ))
        }
    };
    let s = follow(common, id, &ui)?;
    finish(common, &ui, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: ForwardState) -> ForwardStatus {
        ForwardStatus {
            id: 7,
            state,
            sent: 1 << 20,
            total: 4 << 20,
            rate: 0,
            attempts: 2,
            reason: Some(ErrorCode::PeerUnreachable),
            peer_code: Some(Code::parse("7KQ4-M2XD-9RTA").unwrap()),
            peer_expires_at: 1_790_000_000,
        }
    }

    #[test]
    fn lines_and_json_say_each_state() {
        assert_eq!(
            line(&status(ForwardState::Transferring)),
            "forward 7: transferring, 1.00 MiB of 4.00 MiB"
        );
        let failed = ForwardStatus {
            peer_code: None,
            ..status(ForwardState::Failed)
        };
        assert_eq!(
            line(&failed),
            "forward 7: failed after 2 attempts: the peer relay could not be reached"
        );
        // Failed at the push: the copy at the peer is named.
        let at_peer = format!(
            "; the copy is at the peer as 7KQ4-M2XD-9RTA until {}",
            utc(1_790_000_000)
        );
        assert!(line(&status(ForwardState::Failed)).ends_with(&at_peer));
        assert!(line(&status(ForwardState::Done)).contains("as 7KQ4-M2XD-9RTA until 2026-"));
        let j = to_json(&status(ForwardState::Done));
        assert_eq!(
            (j["state"].as_str(), j["peer_code"].as_str()),
            (Some("done"), Some("7KQ4-M2XD-9RTA"))
        );
    }

    /// An unknown forward (never made, another user's, or forgotten
    /// after keep_finished_secs) and a full queue are said of forwards;
    /// an unknown batch code stays the common `not found`.
    #[test]
    fn refusals_about_a_forward_name_it() {
        let common = Common::default();
        let unknown = refused(&common, Some(9), ErrorCode::UnknownCode);
        assert_eq!(unknown.exit, Exit::Refused);
        assert!(
            unknown.message.starts_with("forward 9: not found")
                && unknown.message.contains("forward.keep_finished_secs"),
            "{}",
            unknown.message
        );
        let full = refused(&common, Some(9), ErrorCode::QueueFull);
        assert!(
            full.message.starts_with("forward 9: not retried")
                && full.message.contains("forward.max_open_per_user"),
            "{}",
            full.message
        );
        assert!(refused(&common, None, ErrorCode::QueueFull)
            .message
            .contains("forward.max_open_per_user"));
        assert_eq!(
            refused(&common, None, ErrorCode::UnknownCode).message,
            "not found"
        );
    }
}
