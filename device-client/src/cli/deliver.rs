//! Addressed delivery from the sender's side (PROTOCOL.md §11): `pickup
//! send --to TERMINAL` pushes the batch it just sent, `--wait` follows the
//! delivery to its end, `pickup status CODE` shows where each delivery
//! stands, and `pickup allow USER` lets another user push to one's own
//! terminals (`USER@PAIR`: a user of a peer relay, PROTOCOL.md §12.1).
//!
//! `--to TERMINAL@PEER` names a terminal at a peer relay (PROTOCOL.md
//! §12.1): [`push_across`] asks this relay to forward the batch there and
//! have the peer queue the push (`ForwardPush`), and [`follow_across`]
//! follows each such forward as `pickup forward` does, until the peer
//! queued the notice (`Done`) or the forward failed. The receipt of a
//! notice at a peer is the peer's: this relay, and so `--wait`, cannot
//! see it.
//!
//! Each request runs over a fresh authenticated [`Exchange`]. A push is
//! identified by [`push_id`], derived from the code and the terminal: a
//! retry after a lost answer, and a second `send --to` of the same batch
//! to the same terminal, report the one delivery the relay keeps instead
//! of making another.

use std::thread::sleep;
use std::time::Duration;

use clap::Args;
use pickup_proto::hash::Sha1Hasher;
use pickup_proto::message::{
    AllowSender, DeliveryState, DeliveryStatus, ForwardPush, ForwardState, ForwardStatus, Message,
    Push,
};
use pickup_proto::Code;
use serde_json::{json, Value};

use super::account::{Delivered, Exchange, Reply};
use super::out::outln;
use super::show::{escape, size, utc, Ui};
use super::{Common, Exit, Failure};
use crate::clock::{Clock, StdClock};
use crate::retransfer::{Decision, Retransfer};

/// How often `--wait` asks where the deliveries stand.
const POLL: Duration = Duration::from_secs(1);

/// The push id of `code` to `terminal`: the first 8 bytes of
/// SHA-1(`"pickup push v1\0"` ‖ code ‖ terminal). Stable, so that any
/// retry of the push is the same push.
pub(crate) fn push_id(code: &Code, terminal: &str) -> u64 {
    let mut h = Sha1Hasher::new();
    h.update(b"pickup push v1\0");
    h.update(code.to_string().as_bytes());
    h.update(b"\0");
    h.update(terminal.as_bytes());
    let d = h.digest().0;
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// An authenticated exchange with the relay, for the sender.
fn open(common: &Common) -> Result<Exchange, Failure> {
    let credential = super::account::required_credential(common)?;
    let mut ex = Exchange::open(&common.relay_addr()?)?;
    ex.authenticate(&credential)?;
    Ok(ex)
}

/// Runs `f` on a fresh exchange, again after a link failure within the
/// command's retransfer policy (a lost answer: the request is repeated
/// as it was, which the relay de-duplicates).
fn with_retries<T>(
    common: &Common,
    mut f: impl FnMut(&mut Exchange) -> Result<T, Failure>,
) -> Result<T, Failure> {
    // The same backoff and limits as a transfer's reconnects.
    let mut retransfer = Retransfer::new(common.policy());
    let clock = StdClock::new();
    loop {
        let result = open(common).and_then(|mut ex| {
            let r = f(&mut ex);
            if r.is_ok() {
                ex.close();
            }
            r
        });
        match result {
            Err(e) if e.exit == Exit::Link => match retransfer.on_loss(clock.now()) {
                Decision::Retry { after, .. } => sleep(Duration::from_millis(after.as_millis())),
                Decision::GiveUp { .. } => return Err(e),
            },
            other => return other,
        }
    }
}

/// Pushes `code` to each of `terminals`; the relay's answer for each.
pub(crate) fn push(
    common: &Common,
    code: Code,
    terminals: &[String],
) -> Result<Vec<Delivered>, Failure> {
    with_retries(common, |ex| {
        let mut answers = Vec::with_capacity(terminals.len());
        for terminal in terminals {
            let reply = ex.request(&Message::Push(Push {
                push_id: push_id(&code, terminal),
                code,
                terminal,
            }))?;
            let Reply::Delivery(d) = reply else {
                return Err(Failure::new(
                    Exit::Refused,
                    "the relay did not take the push",
                ));
            };
            answers.push(d);
        }
        Ok(answers)
    })
}

/// A `--to` target at a peer relay: `TERMINAL@PEER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    /// The terminal's registered name at the peer.
    pub terminal: String,
    /// The peer relay, as this relay's `[[peers]]` names it.
    pub peer: String,
}

impl Remote {
    /// As given: `TERMINAL@PEER`.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.terminal, self.peer)
    }
}

/// Splits `--to` values into this relay's terminals (no `@`) and
/// terminals at peer relays (`TERMINAL@PEER`, split at the last `@`).
pub(crate) fn targets(to: &[String]) -> Result<(Vec<String>, Vec<Remote>), Failure> {
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for t in to {
        match t.rsplit_once('@') {
            None => local.push(t.clone()),
            Some((terminal, peer)) if !terminal.is_empty() && !peer.is_empty() => {
                remote.push(Remote {
                    terminal: terminal.to_owned(),
                    peer: peer.to_owned(),
                })
            }
            Some(_) => {
                return Err(Failure::new(
                    Exit::Usage,
                    format!("--to {}: give TERMINAL or TERMINAL@PEER", escape(t)),
                ))
            }
        }
    }
    Ok((local, remote))
}

/// Asks the relay to forward `code` to each remote target's peer and push
/// it there (`ForwardPush`); the forward's id for each. A retry (after a
/// lost answer, or a second send of the same batch) gets the forward the
/// relay made, by the push id of `code` and `TERMINAL@PEER`.
pub(crate) fn push_across(
    common: &Common,
    code: Code,
    remotes: &[Remote],
) -> Result<Vec<u64>, Failure> {
    with_retries(common, |ex| {
        let mut ids = Vec::with_capacity(remotes.len());
        for r in remotes {
            let reply = ex
                .request(&Message::ForwardPush(ForwardPush {
                    code,
                    peer: &r.peer,
                    terminal: &r.terminal,
                    push_id: push_id(&code, &r.spec()),
                }))
                .map_err(|f| {
                    Failure::new(f.exit, format!("{}: {}", escape(&r.spec()), f.message))
                })?;
            let Reply::ForwardAccepted(id) = reply else {
                return Err(Failure::new(
                    Exit::Refused,
                    "the relay did not take the forward",
                ));
            };
            ids.push(id);
        }
        Ok(ids)
    })
}

/// Follows each forward of [`push_across`] to its end, as `pickup
/// forward` shows one; the final statuses, or the failure of the first
/// that failed (the others are still followed, so each is reported).
pub(crate) fn follow_across(
    common: &Common,
    ui: &Ui,
    remotes: &[Remote],
    ids: &[u64],
) -> Result<Vec<ForwardStatus>, Failure> {
    let mut finals = Vec::with_capacity(ids.len());
    let mut failed = None;
    for (r, id) in remotes.iter().zip(ids) {
        let s = super::forward::follow(common, *id, ui)?;
        let line = across_line(r, &s);
        if s.state == ForwardState::Done {
            super::show::say(&ui.bar, ui.tty, &line);
        } else if failed.is_none() {
            failed = Some(Failure::new(Exit::Refused, line));
        }
        finals.push(s);
    }
    ui.bar.finish_and_clear();
    match failed {
        Some(f) => Err(f),
        None => Ok(finals),
    }
}

/// Where the copy and the notice for `r` went, from its forward's final
/// status: `phone@site-b: notice queued at site-b (code … there)`.
pub(crate) fn across_line(r: &Remote, s: &ForwardStatus) -> String {
    let (who, peer) = (escape(&r.spec()), escape(&r.peer));
    let there = |c: Code| format!("code {c} there");
    match (s.state, s.peer_code) {
        (ForwardState::Done, Some(c)) => {
            format!("{who}: notice queued at {peer} ({})", there(c))
        }
        (ForwardState::Done, None) => format!("{who}: notice queued at {peer}"),
        (_, code) => {
            let reason = s.reason.map_or_else(
                || "no reason given".to_string(),
                |e| super::account::refusal(e, &r.peer).message,
            );
            match code {
                Some(c) => format!(
                    "{who}: copied to {peer} ({}), but the notice failed: {reason}",
                    there(c)
                ),
                None => format!("{who}: forward {} to {peer} failed: {reason}", s.id),
            }
        }
    }
}

/// A remote target's final forward status for `--json`.
pub(crate) fn across_json(r: &Remote, s: &ForwardStatus) -> Value {
    let mut doc = super::forward::to_json(s);
    doc["target"] = json!(r.spec());
    doc
}

/// The deliveries of `code` that this user pushed.
fn status_of(common: &Common, code: Code) -> Result<Vec<Delivered>, Failure> {
    with_retries(common, |ex| {
        match ex.request(&Message::DeliveryStatus(DeliveryStatus { code }))? {
            Reply::Deliveries(list) => Ok(list),
            _ => Err(Failure::new(Exit::Refused, "the relay sent no status")),
        }
    })
}

/// A state's name, as `status` prints it and `--json` gives it.
fn state_name(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Queued => "queued",
        DeliveryState::Notified => "notified",
        DeliveryState::Receiving => "receiving",
        DeliveryState::Offline => "offline",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Refused => "refused",
        DeliveryState::Expired => "expired",
    }
}

/// One line about `d`: `sensor-1: delivered 2026-12-04 18:00 UTC`.
pub(crate) fn line(d: &Delivered) -> String {
    let who = escape(&d.terminal);
    match d.state {
        DeliveryState::Queued => format!("{who}: queued (waiting for the terminal to connect)"),
        DeliveryState::Notified => format!("{who}: notified"),
        DeliveryState::Receiving => {
            format!("{who}: receiving, {} of {}", size(d.bytes), size(d.total))
        }
        DeliveryState::Offline => {
            format!("{who}: stored offline until {}", utc(d.until))
        }
        DeliveryState::Delivered => format!("{who}: delivered {}", utc(d.at)),
        DeliveryState::Refused => format!("{who}: refused by the terminal {}", utc(d.at)),
        DeliveryState::Expired => format!("{who}: expired {} before delivery", utc(d.at)),
    }
}

/// `d` for `--json`.
pub(crate) fn to_json(d: &Delivered) -> Value {
    json!({
        "terminal": d.terminal,
        "code": d.code.to_string(),
        "state": state_name(d.state),
        "bytes": d.bytes,
        "total": d.total,
        "at": d.at,
        "until": d.until,
    })
}

/// Follows the deliveries of `code` to `terminals` until each is final,
/// printing each change on stderr (`say`); Ok if every one was
/// delivered, else the exit code of the first that was not.
pub(crate) fn wait(
    common: &Common,
    code: Code,
    terminals: &[String],
    say: &dyn Fn(&str),
) -> Result<Vec<Delivered>, Failure> {
    let mut last: Vec<Option<(DeliveryState, u64)>> = vec![None; terminals.len()];
    loop {
        let all = status_of(common, code)?;
        let mut mine = Vec::with_capacity(terminals.len());
        for (i, terminal) in terminals.iter().enumerate() {
            let Some(d) = all.iter().rev().find(|d| &d.terminal == terminal) else {
                return Err(Failure::new(
                    Exit::Refused,
                    format!(
                        "the relay keeps no delivery of {code} to {}",
                        escape(terminal)
                    ),
                ));
            };
            // Receiving bytes are news every 4 MiB; state changes always.
            let seen = (d.state, d.bytes >> 22);
            if last[i] != Some(seen) {
                say(&line(d));
                last[i] = Some(seen);
            }
            mine.push(d.clone());
        }
        if mine.iter().all(|d| d.state.is_final()) {
            return match mine.iter().find(|d| d.state != DeliveryState::Delivered) {
                None => Ok(mine),
                Some(d) => Err(Failure::new(
                    if d.state == DeliveryState::Refused {
                        Exit::Declined
                    } else {
                        Exit::Undelivered
                    },
                    line(d),
                )),
            };
        }
        sleep(POLL);
    }
}

/// `pickup status CODE`.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// The global options, copied in by `cli::main` (not parsed here).
    #[arg(skip)]
    pub(crate) common: Common,
    /// The pickup code you sent to one or more terminals
    code: String,
}

pub(crate) fn status(args: StatusArgs) -> Result<(), Failure> {
    let code = Code::parse(&args.code)
        .map_err(|e| Failure::new(Exit::Usage, format!("{:?}: {e}", args.code)))?;
    let list = status_of(&args.common, code)?;
    if args.common.json {
        let items: Vec<Value> = list.iter().map(to_json).collect();
        outln!(
            "{}",
            json!({ "code": code.to_string(), "deliveries": items })
        );
    } else if list.is_empty() {
        outln!("{code}: not sent to any terminal (by you)");
    } else {
        for d in &list {
            outln!("{}", line(d));
        }
    }
    Ok(())
}

/// `pickup allow USER [--remove]`.
#[derive(Args, Debug)]
pub(crate) struct AllowArgs {
    /// The global options, copied in by `cli::main` (not parsed here).
    #[arg(skip)]
    pub(crate) common: Common,
    /// The user who may send to your terminals: a user of this relay, or
    /// USER@PAIR for a user of the peer relay both list as PAIR
    user: String,
    /// Withdraw the permission instead
    #[arg(long)]
    remove: bool,
}

pub(crate) fn allow(args: AllowArgs) -> Result<(), Failure> {
    let allow = !args.remove;
    with_retries(&args.common, |ex| {
        match ex.request(&Message::AllowSender(AllowSender {
            sender: &args.user,
            allow,
        }))? {
            Reply::Done => Ok(()),
            _ => Err(Failure::new(Exit::Refused, "the relay did not answer")),
        }
    })?;
    let user = escape(&args.user);
    if args.common.json {
        outln!("{}", json!({ "user": args.user, "allowed": allow }));
    } else if allow {
        outln!("{user} may now send to your terminals");
    } else {
        outln!("{user} may no longer send to your terminals");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickup_proto::ErrorCode;

    #[test]
    fn push_ids_are_stable_and_tell_code_and_terminal_apart() {
        let a = Code::parse("7KQ4-M2XD-9RTA").unwrap();
        let b = Code::parse("7KQ4-M2XD-9RTB").unwrap();
        assert_eq!(push_id(&a, "sensor-1"), push_id(&a, "sensor-1"));
        assert_ne!(push_id(&a, "sensor-1"), push_id(&b, "sensor-1"));
        assert_ne!(push_id(&a, "sensor-1"), push_id(&a, "sensor-2"));
        // No ambiguity between the code and the name.
        assert_ne!(push_id(&a, "1"), push_id(&a, "11"));
    }

    #[test]
    fn targets_split_at_the_last_at_and_lines_say_where_the_notice_went() {
        let to = |v: &[&str]| targets(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let (local, remote) = to(&["sensor-1", "phone@site-b", "a@b@site-c"]).unwrap();
        assert_eq!(local, ["sensor-1"]);
        assert_eq!(
            remote,
            [
                Remote {
                    terminal: "phone".into(),
                    peer: "site-b".into()
                },
                Remote {
                    terminal: "a@b".into(),
                    peer: "site-c".into()
                }
            ]
        );
        for bad in ["phone@", "@site-b", "@"] {
            assert_eq!(to(&[bad]).unwrap_err().exit, Exit::Usage, "{bad}");
        }
        let code = Code::parse("7KQ4-M2XD-9RTA").unwrap();
        let s = |state, reason| ForwardStatus {
            id: 3,
            state,
            sent: 10,
            total: 10,
            rate: 0,
            attempts: 1,
            reason,
            peer_code: Some(code),
            peer_expires_at: 1_790_000_000,
        };
        let r = &remote[0];
        assert_eq!(
            across_line(r, &s(ForwardState::Done, None)),
            "phone@site-b: notice queued at site-b (code 7KQ4-M2XD-9RTA there)"
        );
        let failed = across_line(
            r,
            &s(ForwardState::Failed, Some(ErrorCode::UnknownTerminal)),
        );
        assert!(
            failed.starts_with("phone@site-b: copied to site-b (code 7KQ4-M2XD-9RTA there), but the notice failed: unknown terminal"),
            "{failed}"
        );
        assert_eq!(
            across_json(r, &s(ForwardState::Done, None))["target"],
            "phone@site-b"
        );
        // The push id names the target with its peer.
        assert_ne!(push_id(&code, "phone@site-b"), push_id(&code, "phone"));
    }

    #[test]
    fn lines_say_each_state() {
        let d = |state| Delivered {
            push_id: 1,
            code: Code::parse("7KQ4-M2XD-9RTA").unwrap(),
            terminal: "sensor-1".into(),
            state,
            bytes: 1 << 20,
            total: 4 << 20,
            at: 1_790_000_000,
            until: 1_790_086_400,
        };
        assert_eq!(
            line(&d(DeliveryState::Receiving)),
            "sensor-1: receiving, 1.00 MiB of 4.00 MiB"
        );
        assert!(
            line(&d(DeliveryState::Offline)).starts_with("sensor-1: stored offline until 2026-")
        );
        assert!(line(&d(DeliveryState::Delivered)).starts_with("sensor-1: delivered 2026-"));
        assert_eq!(to_json(&d(DeliveryState::Expired))["state"], "expired");
    }
}
