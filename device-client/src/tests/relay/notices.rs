//! The in-memory relay's side of addressed delivery (PROTOCOL.md §11):
//! pushes with de-duplication by `push_id`, deliveries, `Listen` with its
//! inbox, acknowledgements, receipts and refusals, status and allowed
//! senders; with faults on demand (drop notices, drop settlements).

use pickup_proto::message::{
    self, Delivery, DeliveryState, Done, Inbox, Kind, Message, Notice, Settled,
};
use pickup_proto::{Code, ErrorCode};

use super::Relay;

/// One delivery, as the relay stores it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: u64,
    pub push_id: u64,
    pub code: Code,
    pub terminal: String,
    pub state: DeliveryState,
}

/// The relay's notice state, kept across links (durable).
#[derive(Debug, Default)]
pub struct Desk {
    /// Terminals that exist (pushes to others get `UnknownTerminal`).
    pub terminals: Vec<String>,
    pub deliveries: Vec<Stored>,
    /// Drop this many of the next notices sent (a lossy link).
    pub drop_notices: u32,
    /// Drop this many of the next `Settled` sent.
    pub drop_settled: u32,
    /// Receipts and refusals received, over all links.
    pub verdicts: Vec<(u64, bool)>,
    /// Notices sent, over all links.
    pub notices_sent: u32,
    /// `(sender, allow)` of every `AllowSender`.
    pub allowed: Vec<(String, bool)>,
    /// The sender notices name, if not the pushing user `owner`: a user
    /// of a peer relay (`user@pair`, PROTOCOL.md §12.1).
    pub notice_sender: Option<String>,
}

impl Relay {
    /// Handles the §11 kinds; `true` if `msg` was one.
    pub(super) fn notices(&mut self, msg: &Message<'_>) -> bool {
        match *msg {
            Message::Listen => match self.link_terminal.clone() {
                Some(t) => {
                    let sender = self.desk.notice_sender.clone();
                    let sender = sender.as_deref().unwrap_or("owner");
                    let open: Vec<Stored> = self
                        .desk
                        .deliveries
                        .iter()
                        .filter(|d| d.terminal == t && !d.state.is_final())
                        .cloned()
                        .collect();
                    self.send(Message::Inbox(Inbox {
                        count: open.len() as u16,
                    }));
                    for d in open {
                        if self.desk.drop_notices > 0 {
                            self.desk.drop_notices -= 1;
                            continue;
                        }
                        self.desk.notices_sent += 1;
                        self.send(Message::Notice(Notice {
                            id: d.id,
                            code: d.code,
                            sender,
                            files: self.batch_files(d.code),
                            total_size: self.batch_size(d.code),
                            expires_at: 1_900_000_000,
                        }));
                    }
                }
                None => self.error_for(ErrorCode::AuthRequired, Kind::Listen),
            },
            Message::NoticeAck(a) => {
                if let Some(d) = self.own_delivery(a.id) {
                    if d.state == DeliveryState::Queued {
                        d.state = DeliveryState::Notified;
                    }
                }
            }
            Message::Receipt(message::Receipt { id }) => self.verdict(id, true, Kind::Receipt),
            Message::NoticeRefuse(r) => self.verdict(r.id, false, Kind::NoticeRefuse),
            Message::Push(p) => {
                if !self.link_user {
                    return self.refuse(ErrorCode::AuthRequired, Kind::Push);
                }
                if !self.desk.terminals.iter().any(|t| t == p.terminal) {
                    return self.refuse(ErrorCode::UnknownTerminal, Kind::Push);
                }
                if !self.batches.iter().any(|b| b.code == p.code) {
                    return self.refuse(ErrorCode::UnknownCode, Kind::Push);
                }
                let i = match self
                    .desk
                    .deliveries
                    .iter()
                    .position(|d| d.push_id == p.push_id)
                {
                    Some(i) => i,
                    None => {
                        let id = 100 + self.desk.deliveries.len() as u64;
                        self.desk.deliveries.push(Stored {
                            id,
                            push_id: p.push_id,
                            code: p.code,
                            terminal: p.terminal.into(),
                            state: DeliveryState::Queued,
                        });
                        self.desk.deliveries.len() - 1
                    }
                };
                let d = self.desk.deliveries[i].clone();
                self.send_delivery(&d);
            }
            Message::DeliveryStatus(s) => {
                let ds: Vec<Stored> = self
                    .desk
                    .deliveries
                    .iter()
                    .filter(|d| d.code == s.code)
                    .cloned()
                    .collect();
                for d in ds {
                    self.send_delivery(&d);
                }
                self.send(Message::Done(Done {
                    kind: Kind::DeliveryStatus as u8,
                }));
            }
            Message::AllowSender(a) => {
                self.desk.allowed.push((a.sender.into(), a.allow));
                self.send(Message::Done(Done {
                    kind: Kind::AllowSender as u8,
                }));
            }
            _ => return false,
        }
        true
    }

    fn refuse(&mut self, code: ErrorCode, kind: Kind) -> bool {
        self.error_for(code, kind);
        true
    }

    fn own_delivery(&mut self, id: u64) -> Option<&mut Stored> {
        let t = self.link_terminal.clone()?;
        self.desk
            .deliveries
            .iter_mut()
            .find(|d| d.id == id && d.terminal == t)
    }

    fn verdict(&mut self, id: u64, confirmed: bool, kind: Kind) {
        let Some(d) = self.own_delivery(id) else {
            return self.error_for(ErrorCode::UnknownNotice, kind);
        };
        if !d.state.is_final() {
            d.state = if confirmed {
                DeliveryState::Delivered
            } else {
                DeliveryState::Refused
            };
        }
        self.desk.verdicts.push((id, confirmed));
        if self.desk.drop_settled > 0 {
            self.desk.drop_settled -= 1;
            return;
        }
        self.send(Message::Settled(Settled { id }));
    }

    fn send_delivery(&mut self, d: &Stored) {
        let total = self.batch_size(d.code);
        self.send(Message::Delivery(Delivery {
            push_id: d.push_id,
            code: d.code,
            terminal: &d.terminal,
            state: d.state,
            bytes: 0,
            total,
            at: 1_800_000_000,
            until: 1_900_000_000,
        }));
    }

    fn batch_size(&self, code: Code) -> u64 {
        self.batches
            .iter()
            .find(|b| b.code == code)
            .map_or(0, |b| b.files.iter().map(|f| f.size).sum())
    }

    fn batch_files(&self, code: Code) -> u16 {
        self.batches
            .iter()
            .find(|b| b.code == code)
            .map_or(0, |b| b.files.len() as u16)
    }
}
