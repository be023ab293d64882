//! The mail transaction in the SMTP session core: MAIL, RCPT, DATA and
//! BDAT, the message handed to the driver, and what each provider reply
//! does to the session.

use std::borrow::Cow;

use tokio::time::Instant;

use super::{Incoming, Mode, Next, Outgoing, Pending, Session, Transaction};
use crate::admission::{MessageRoom, NoRoom, Peer};
use crate::config::Limits;
use crate::privacy::WipedBuf;
use crate::sanitize::{date, header_shape, strip_identifying_headers};
use crate::smtp::data::{MessageReceiver, Refusal};
use crate::smtp::message::MessageBuf;
use crate::smtp::reply::{self, Reply};
use crate::smtp::{encryption, envelope};
use crate::stats::Counter;

impl Session<'_> {
    pub(super) fn mail(&mut self, from: &smtp_proto::MailFrom<Cow<'_, str>>, peer: &Peer) -> Next {
        match self.mode {
            Mode::Plain { .. } => return Next::Reply(reply::tls_required()),
            Mode::Secure { .. } | Mode::Sasl(_) => return Next::Reply(reply::auth_required()),
            Mode::Transaction(_) => return Next::Reply(reply::nested_mail()),
            Mode::Ready => {}
        }
        if from.size > self.cx.limits.max_message_bytes {
            return Next::Reply(reply::too_big());
        }
        let known =
            smtp_proto::MAIL_BODY_7BIT | smtp_proto::MAIL_BODY_8BITMIME | smtp_proto::MAIL_SMTPUTF8;
        if from.flags & !known != 0
            || from.env_id.is_some()
            || from.trans_id.is_some()
            || from.mtrk.is_some()
            || from.by != 0
            || from.hold_for != 0
            || from.hold_until != 0
        {
            return Next::Reply(reply::unsupported_parameter());
        }
        let Some(address) = envelope::write(&from.address) else {
            return Next::Reply(reply::bad_sender());
        };
        let room = match peer.open_transaction(from.size) {
            Ok(room) => room,
            Err(why) => {
                self.cx.stats.count(Counter::MessageNoRoom);
                return Next::Reply(match why {
                    NoRoom::Memory => reply::no_room(),
                    NoRoom::Transactions => reply::too_many_transactions(),
                });
            }
        };
        if !peer.take_message() {
            self.cx.stats.count(Counter::MessageRateLimited);
            return Next::Reply(reply::message_rate());
        }
        let mut command = WipedBuf::with_capacity(64 + address.len());
        command.extend_from_slices(&[b"MAIL FROM:<", &address, b">"]);
        // The client's SIZE is not passed on: declared minus delivered
        // would tell the provider how much the relay removed.
        if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 && self.provider.eight_bit {
            command.extend_from_slice(b" BODY=8BITMIME");
        }
        if from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 {
            if !self.provider.smtputf8 {
                return Next::Reply(reply::no_smtputf8_upstream());
            }
            command.extend_from_slice(b" SMTPUTF8");
        }
        command.extend_from_slice(b"\r\n");
        // The transaction opens now, so that RCPT and BDAT may follow
        // before the provider answers (RFC 2920); a refusal closes it.
        self.mode = Mode::Transaction(Transaction {
            declared_size: from.size,
            recipients: 0,
            accepted: 0,
            bdat: None,
            credit_until: Instant::now() + self.cx.limits.command_timeout,
            room: Some(room),
        });
        self.pending.push_back(Pending::Mail);
        Next::Upstream(command)
    }

    pub(super) fn rcpt(&mut self, to: &smtp_proto::RcptTo<Cow<'_, str>>) -> Next {
        let max = self.cx.limits.max_recipients;
        let Mode::Transaction(tx) = &mut self.mode else {
            return Next::Reply(reply::need_mail());
        };
        if tx.bdat.is_some() {
            return Next::Reply(reply::mixed_data_bdat());
        }
        if tx.recipients >= max {
            return Next::Reply(reply::too_many_recipients());
        }
        if to.flags != 0 || to.orcpt.is_some() || to.rrvs != 0 {
            return Next::Reply(reply::unsupported_parameter());
        }
        // An empty recipient is what the parser makes of `<postmaster>`;
        // `RCPT TO:<>` would name no one.
        let Some(address) = envelope::write(&to.address).filter(|a| !a.is_empty()) else {
            return Next::Reply(reply::bad_recipient());
        };
        tx.recipients += 1;
        let mut command = WipedBuf::with_capacity(16 + address.len());
        command.extend_from_slices(&[b"RCPT TO:<", &address, b">\r\n"]);
        self.pending.push_back(Pending::Rcpt);
        Next::Upstream(command)
    }

    pub(super) fn data(&mut self) -> Next {
        let limits = self.cx.limits;
        let Mode::Transaction(tx) = &mut self.mode else {
            return Next::Reply(reply::need_mail());
        };
        if tx.bdat.is_some() {
            return Next::Reply(reply::mixed_data_bdat());
        }
        if tx.accepted == 0 {
            return Next::Reply(reply::no_valid_recipients());
        }
        Next::ReceiveData(Incoming {
            receiver: MessageReceiver::data(limits.max_message_bytes, limits.max_line_bytes),
            message: message_buffer(limits, tx.declared_size, tx.room.take()),
        })
    }

    pub(super) fn bdat(&mut self, size: usize, last: bool) -> Next {
        let limits = self.cx.limits;
        let received = match &self.mode {
            Mode::Transaction(Transaction {
                bdat: Some(incoming),
                ..
            }) => incoming.message.len(),
            _ => 0,
        };
        if size > limits.max_message_bytes.saturating_sub(received) {
            return self.refuse_oversized_chunk();
        }
        // The chunk's bytes follow the command whatever the answer. With
        // replies to RCPTs sent still to come, the provider decides; with
        // no RCPT sent at all it can only refuse, and the message stays here.
        let unanswered = !self.pending.is_empty();
        let refusal = match &self.mode {
            Mode::Transaction(tx) if tx.accepted > 0 || (unanswered && tx.recipients > 0) => None,
            Mode::Transaction(_) => Some(reply::no_valid_recipients()),
            _ => Some(reply::need_mail()),
        };
        let incoming = match (&refusal, &mut self.mode) {
            (None, Mode::Transaction(tx)) => Some(match tx.bdat.take() {
                Some(incoming) => incoming,
                None => Incoming {
                    receiver: MessageReceiver::bdat(
                        limits.max_message_bytes,
                        limits.max_line_bytes,
                    ),
                    message: message_buffer(limits, tx.declared_size, tx.room.take()),
                },
            }),
            _ => None,
        };
        self.chunk_refusal = refusal;
        Next::ReceiveChunk {
            size,
            last,
            incoming,
        }
    }

    /// A BDAT chunk that would take the message over the limit: staying in
    /// step would mean reading all of it (up to 2^64 bytes for a hostile
    /// size), so refuse and end the session.
    pub(super) fn refuse_oversized_chunk(&mut self) -> Next {
        self.cx.stats.count(Counter::MessageRefusedHere);
        if let Mode::Transaction(_) = self.mode {
            self.mode = Mode::Ready;
        }
        Next::Close(reply::too_big())
    }

    /// A BDAT chunk was read.
    pub(crate) fn chunk_received(
        &mut self,
        incoming: Option<Incoming>,
        size: usize,
        last: bool,
    ) -> Next {
        if let Some(refusal) = self.chunk_refusal.take() {
            return self.in_turn(Next::Reply(refusal));
        }
        let Some(mut incoming) = incoming else {
            return self.in_turn(Next::Reply(reply::need_mail()));
        };
        if !last {
            if let Mode::Transaction(tx) = &mut self.mode {
                tx.bdat = Some(incoming);
            }
            return self.in_turn(Next::Reply(Reply::new(
                250,
                [2, 0, 0],
                format!("{size} octets received"),
            )));
        }
        incoming.receiver.finish_chunks(&mut incoming.message);
        self.message_received(incoming)
    }

    /// The message is complete on the client's side: refuse it, or send it.
    pub(crate) fn message_received(&mut self, incoming: Incoming) -> Next {
        let limits = self.cx.limits;
        let refusal = match incoming.receiver.refusal() {
            Some(Refusal::BareLineEnding) => Some(reply::bare_line_ending()),
            Some(Refusal::LineTooLong) => Some(reply::message_line_too_long()),
            Some(Refusal::TooLarge) => Some(reply::too_big()),
            Some(Refusal::NoRoom) => {
                self.cx.stats.count(Counter::MessageNoRoom);
                Some(reply::no_room())
            }
            None => {
                let head = incoming.message.head();
                let (fields, end) = header_shape(head);
                // Past the head, the header must have ended inside it,
                // before a complete line: otherwise it runs on.
                let cut = incoming.message.continues_past_head()
                    && memchr::memchr(b'\n', &head[end..]).is_none();
                if end > limits.max_header_bytes || cut {
                    Some(reply::header_too_large())
                } else if fields > limits.max_header_fields {
                    Some(reply::too_many_header_fields())
                } else if self.provider.encrypted_only
                    && encryption::classify(head) == encryption::Verdict::NotEncrypted
                {
                    self.cx.stats.count(Counter::MessageNotEncrypted);
                    Some(reply::not_encrypted())
                } else {
                    None
                }
            }
        };
        if let Some(refusal) = refusal {
            self.cx.stats.count(Counter::MessageRefusedHere);
            // The provider saw MAIL/RCPT only; end that transaction.
            return self.reset_then(refusal);
        }
        let sanitized =
            strip_identifying_headers(incoming.message.head(), self.cx.policy, date::now());
        let rest_from = incoming.message.head().len() - sanitized.rest.len();
        let header = sanitized.header;
        self.mode = Mode::Ready;
        self.pending.push_back(Pending::Message);
        Next::SendMessage(Outgoing {
            header,
            message: incoming.message,
            rest_from,
        })
    }

    /// Ends any transaction (RSET at the provider), then answers `then`.
    pub(super) fn reset_then(&mut self, then: Reply) -> Next {
        if let Mode::Transaction(_) = self.mode {
            self.mode = Mode::Ready;
            self.pending.push_back(Pending::Reset { then });
            return Next::Upstream(WipedBuf::copy_of(b"RSET\r\n"));
        }
        self.in_turn(Next::Reply(then))
    }

    /// The provider answered the oldest command or message still
    /// unanswered (sent for [`Next::Upstream`] or [`Next::SendMessage`]);
    /// `None` when it was lost or fell silent.
    pub(crate) fn provider_replied(&mut self, reply: Option<Reply>) -> Next {
        let pending = self.pending.pop_front();
        let Some(reply) = reply else {
            return self.provider_lost();
        };
        match pending {
            Some(Pending::Mail) => {
                // Refused: the transaction opened for it closes (anything
                // pipelined behind it is the provider's to refuse too).
                if !reply.is_positive() && matches!(self.mode, Mode::Transaction(_)) {
                    self.mode = Mode::Ready;
                }
                Next::Reply(reply)
            }
            Some(Pending::Rcpt) => {
                if let Mode::Transaction(tx) = &mut self.mode
                    && reply.is_positive()
                {
                    tx.accepted += 1;
                }
                Next::Reply(reply)
            }
            Some(Pending::Reset { then }) if reply.is_positive() => Next::Reply(then),
            Some(Pending::Reset { .. }) => self.provider_lost(),
            Some(Pending::Message) => {
                self.cx.stats.count(if reply.code / 100 == 2 {
                    Counter::MessageRelayed
                } else {
                    Counter::MessageRefusedByProvider
                });
                Next::Reply(reply)
            }
            // Never at the front when asked in turn (see `held_reply`);
            // the provider's reply answers nothing of the relay's.
            Some(Pending::Local(held)) => {
                self.pending.push_front(Pending::Local(held));
                self.provider_lost()
            }
            None => Next::Reply(reply),
        }
    }

    /// The provider connection is gone: the client keeps its message and
    /// is told to come back.
    fn provider_lost(&mut self) -> Next {
        self.cx.stats.count(Counter::ProviderLost);
        self.pending.clear();
        self.mode = Mode::Secure { greeted: true };
        Next::Close(reply::upstream_lost())
    }
}

/// The buffer for a message of `declared_size` bytes (0 if undeclared):
/// sized for the declaration up to the limit, with room for the header,
/// and held within the transaction's share of the relay's budget.
fn message_buffer(limits: &Limits, declared_size: usize, room: Option<MessageRoom>) -> MessageBuf {
    let buffer = MessageBuf::new(
        declared_size.min(limits.max_message_bytes),
        limits.max_header_bytes + limits.max_line_bytes + 2,
    );
    match room {
        Some(room) => buffer.within(room),
        None => buffer,
    }
}
