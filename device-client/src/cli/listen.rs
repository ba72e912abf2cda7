//! `pickup listen`: a registered terminal receives what is pushed to it
//! (PROTOCOL.md §11), automatically, until stopped.
//!
//! ```text
//!   listen (NoticeListener) ──notice──► get CODE into DIR (as the terminal) ──► Receipt
//!        ▲                      │ outside --max-size / --accept-from: NoticeRefuse
//!        └──────────────────────┴──────── settle, one line per delivery on stdout
//! ```
//!
//! The listener, the download and the settling take turns on one
//! connector, so the same works over a serial line. Every verdict is
//! written to the state directory before it is sent ([`VerdictFile`]): a
//! notice the relay sends again after a crash of either side is answered
//! from there and never received twice.

use std::path::{Path, PathBuf};

use clap::Args;
use pickup_proto::identity::TerminalIdentity;
use pickup_proto::message::RefuseReason;
use pickup_proto::notice::{
    AcceptFrom, ListenConfig, ListenEvent, NoticeInfo, Policy, Verdict, MAX_SENDER_NAME_LEN,
};
use serde_json::json;

use super::account::Credential;
use super::addr::{RelayConnector, Relays};
use super::get::{conflict_failure, file_json, receive_into, Received, Target};
use super::out::outln;
use super::send::link_failure;
use super::show::{escape, plural, say, size, Ui};
use super::state::{verdict_name, VerdictFile, MAX_VERDICTS};
use super::{default_state_dir, Common, Exit, Failure};
use crate::clock::StdClock;
use crate::retransfer::RetransferPolicy;
use crate::{Event, NoticeListener};

/// Notice ids the listener remembers (open and settled).
const LEDGER: usize = 256;
/// The listener's frames: notices are small.
const NOTICE_RX: usize = 4096;
const NOTICE_TX: usize = pickup_proto::frame::max_encoded_len(NOTICE_RX);

/// `pickup listen`.
#[derive(Args, Debug)]
pub(crate) struct ListenArgs {
    /// The global options, copied in by `cli::main` (not parsed here).
    #[arg(skip)]
    pub(crate) common: Common,
    /// Directory to receive into (created if missing)
    #[arg(short = 'o', long = "output", value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Accept batches only from these users (comma-separated; USER@PAIR
    /// for a user of a peer relay); others are refused
    #[arg(long, value_name = "USER,...", value_delimiter = ',')]
    accept_from: Vec<String>,
    /// Refuse batches larger than this many bytes
    #[arg(long, value_name = "BYTES")]
    max_size: Option<u64>,
    /// Replace files that already exist in DIR with other content (else
    /// such a delivery is refused)
    #[arg(long)]
    force: bool,
    /// Stop after the first delivery received or refused
    #[arg(long)]
    once: bool,
}

pub(crate) fn run(args: ListenArgs) -> Result<(), Failure> {
    let relay = args.common.relay_addr()?;
    let (name, key) =
        match super::account::credential(&args.common)? {
            Some(Credential::Terminal { name, key }) => (name, key),
            _ => return Err(Failure::new(
                Exit::Usage,
                "listen receives as a registered terminal: give --terminal NAME --key-file FILE",
            )),
        };
    let credential = Credential::Terminal {
        name: name.clone(),
        key,
    };
    let name = &name;
    let state_dir = args
        .common
        .state_dir
        .clone()
        .or_else(default_state_dir)
        .ok_or_else(|| Failure::new(Exit::Usage, "no state directory: set --state-dir or HOME"))?;
    make_dir(&args.dir)?;
    // The relay (all of them, for a list) as messages name it; state is
    // kept under `key()`, the first address (see `Relays`).
    let relay_key = relay.canonical();
    let verdicts = Verdicts {
        file: VerdictFile::new(&state_dir, &relay.key(), name),
        relay: relay.key(),
        terminal: name.clone(),
        kept: Vec::new(),
    };
    let senders: Vec<&str> = args.accept_from.iter().map(String::as_str).collect();
    let config = ListenConfig {
        max_frame: NOTICE_RX as u32,
        policy: Policy {
            max_size: args.max_size.unwrap_or(u64::MAX),
            accept_from: if senders.is_empty() {
                AcceptFrom::Any
            } else {
                AcceptFrom::Only(&senders)
            },
        },
        ..ListenConfig::default()
    };
    let identity = TerminalIdentity { name, key };
    let mut session = Listening {
        inbox: Box::new(NoticeListener::new(
            config,
            identity,
            listening_policy(&args.common),
        )),
        verdicts,
        connector: relay.dial()?,
        relay,
        relay_key,
        ui: Ui::new(args.common.verbose),
    };
    session.verdicts.kept = session.verdicts.file.load();
    for &(id, verdict) in &session.verdicts.kept {
        // A full ledger forgets the oldest settled ids: harmless here.
        let _ = session.inbox.remember_settled(id, verdict);
    }
    say(
        &session.ui.bar,
        session.ui.tty,
        &format!("listening as {} at {}", escape(name), session.relay_key),
    );
    loop {
        let (notice, refused) = session.next_notice(&args.common)?;
        let Some(notice) = notice else {
            if refused > 0 {
                // Refused by --max-size or --accept-from: settled like any
                // verdict, and a delivery for --once.
                session.settle()?;
                if args.once {
                    return Ok(());
                }
            }
            continue;
        };
        session.receive(&args, &credential, &notice)?;
        session.settle()?;
        if args.once {
            return Ok(());
        }
    }
}

/// Listening lasts: a dropped link is retried for as long as it takes
/// (unless `--no-retransfer`), whatever `--max-attempts` and
/// `--give-up-after` say for the transfers.
fn listening_policy(common: &Common) -> RetransferPolicy {
    RetransferPolicy {
        max_attempts: None,
        give_up_after: None,
        ..common.policy()
    }
}

/// `DIR`, created if missing (and left in place: more may arrive).
fn make_dir(dir: &Path) -> Result<(), Failure> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Failure::new(
            Exit::Usage,
            format!("-o {} is a file, not a directory", dir.display()),
        )),
        Err(_) => std::fs::create_dir_all(dir).map_err(|e| {
            Failure::new(
                Exit::Local,
                format!("cannot create directory {}: {e}", dir.display()),
            )
        }),
    }
}

/// The verdicts given, as kept on disk.
struct Verdicts {
    file: VerdictFile,
    relay: String,
    terminal: String,
    kept: Vec<(u64, Verdict)>,
}

impl Verdicts {
    /// Writes `verdict` on `id` down: before it is sent, so that it is
    /// never given twice.
    fn keep(&mut self, id: u64, verdict: Verdict) -> Result<(), Failure> {
        self.kept.push((id, verdict));
        // A listener runs for months: keep what the file keeps.
        let over = self.kept.len().saturating_sub(MAX_VERDICTS);
        self.kept.drain(..over);
        self.file
            .save(&self.relay, &self.terminal, &self.kept)
            .map_err(|e| {
                Failure::new(
                    Exit::Local,
                    format!("cannot keep the verdict on notice {id}: {e}"),
                )
            })
    }
}

/// One `pickup listen` run.
struct Listening<'a> {
    inbox: Box<NoticeListener<'a, LEDGER, NOTICE_RX, NOTICE_TX>>,
    verdicts: Verdicts,
    connector: RelayConnector,
    relay: Relays,
    relay_key: String,
    ui: Ui,
}

impl Listening<'_> {
    /// Listens until a notice the application has not seen arrives, or
    /// the policy refused one. Notices refused by the policy are reported
    /// on the way, and counted.
    fn next_notice(&mut self, common: &Common) -> Result<(Option<NoticeInfo>, usize), Failure> {
        let clock = StdClock::new();
        let mut refused = Vec::new();
        let ui = &self.ui;
        let got = self
            .inbox
            .listen(&mut self.connector, &clock, None, |e| match e {
                Event::Session(ListenEvent::AutoRefused { id, reason }) => {
                    refused.push((id, reason));
                }
                Event::Link(link) => ui.link(&link),
                _ => {}
            });
        let got = got.map_err(|e| link_failure(e, &self.relay_key, &self.connector.last_error))?;
        let count = refused.len();
        for (id, reason) in refused {
            // Answered by the machine already; kept so a restart answers
            // the same, and reported like any delivery.
            self.verdicts.keep(id, Verdict::Refused(reason))?;
            let why = match reason {
                RefuseReason::TooLarge => "larger than --max-size".to_string(),
                // The listener also refuses a sender longer than any a
                // relay names (`user@pair`), with or without --accept-from.
                _ => format!(
                    "a sender outside --accept-from, or a name longer than \
                     {MAX_SENDER_NAME_LEN} bytes"
                ),
            };
            report_refused(common.json, id, None, reason, &why);
        }
        Ok((got, count))
    }

    /// Downloads `notice`'s batch as the terminal and gives the verdict.
    fn receive(
        &mut self,
        args: &ListenArgs,
        credential: &Credential,
        notice: &NoticeInfo,
    ) -> Result<(), Failure> {
        let sender = notice.sender.as_str();
        say(
            &self.ui.bar,
            self.ui.tty,
            &format!(
                "{} sent {} {} ({}), code {}: receiving",
                escape(sender),
                notice.files,
                plural(usize::from(notice.files), "file", "files"),
                size(notice.total_size),
                notice.code
            ),
        );
        let mut config = self.relay.download_config();
        // The sink verifies (hashing as it writes), not the state machine.
        config.hashing = pickup_proto::download::Hashing::BySink;
        let got = receive_into(
            &args.dir,
            args.force,
            config,
            &Target::Code(notice.code),
            Some(credential),
            args.common.policy(),
            &mut self.connector,
            &self.relay_key,
            &self.ui,
        );
        match got {
            Ok(Received {
                files, conflicts, ..
            }) if conflicts.is_empty() => {
                self.verdicts.keep(notice.id, Verdict::Confirmed)?;
                self.inbox
                    .confirm(notice.id)
                    .map_err(|e| Failure::new(Exit::Local, e.to_string()))?;
                if args.common.json {
                    let list: Vec<_> = files.iter().map(file_json).collect();
                    outln!(
                        "{}",
                        json!({
                            "event": "delivered",
                            "id": notice.id,
                            "code": notice.code.to_string(),
                            "sender": sender,
                            "files": list,
                        })
                    );
                } else {
                    let names: Vec<String> = files.iter().map(|f| escape(&f.name)).collect();
                    outln!(
                        "received {} from {}, code {}: {}",
                        size(notice.total_size),
                        escape(sender),
                        notice.code,
                        names.join(", ")
                    );
                }
                Ok(())
            }
            Ok(Received { conflicts, .. }) => {
                let why = conflict_failure(&conflicts).message;
                self.refuse(args, notice, RefuseReason::Declined, &why)
            }
            // A link that could not be kept ends the command; anything
            // else about this batch refuses it and listening goes on.
            Err(f) if f.exit == Exit::Link => Err(f),
            Err(f) => {
                let reason = if f.exit == Exit::Local {
                    RefuseReason::NoSpace
                } else {
                    RefuseReason::Declined
                };
                self.refuse(args, notice, reason, &f.message)
            }
        }
    }

    fn refuse(
        &mut self,
        args: &ListenArgs,
        notice: &NoticeInfo,
        reason: RefuseReason,
        why: &str,
    ) -> Result<(), Failure> {
        self.verdicts.keep(notice.id, Verdict::Refused(reason))?;
        self.inbox
            .refuse(notice.id, reason)
            .map_err(|e| Failure::new(Exit::Local, e.to_string()))?;
        report_refused(args.common.json, notice.id, Some(notice), reason, why);
        Ok(())
    }

    /// Sends the verdicts given until the relay settled them.
    fn settle(&mut self) -> Result<(), Failure> {
        let clock = StdClock::new();
        let ui = &self.ui;
        self.inbox
            .settle(&mut self.connector, &clock, None, |e| {
                if let Event::Link(link) = e {
                    ui.link(&link);
                }
            })
            .map(|_| ())
            .map_err(|e| link_failure(e, &self.relay_key, &self.connector.last_error))
    }
}

/// One line (or JSON object) for a refused delivery.
fn report_refused(
    json: bool,
    id: u64,
    notice: Option<&NoticeInfo>,
    reason: RefuseReason,
    why: &str,
) {
    let verdict = verdict_name(Verdict::Refused(reason));
    if json {
        let mut doc = json!({ "event": "refused", "id": id, "reason": verdict, "why": why });
        if let Some(n) = notice {
            doc["code"] = json!(n.code.to_string());
            doc["sender"] = json!(n.sender.as_str());
        }
        outln!("{doc}");
    } else {
        match notice {
            Some(n) => outln!(
                "refused {} from {}, code {} ({verdict}): {why}",
                size(n.total_size),
                escape(n.sender.as_str()),
                n.code
            ),
            None => outln!("refused notice {id} ({verdict}): {why}"),
        }
    }
}
