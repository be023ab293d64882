//! The SMTP session core, driven without sockets: lines in, provider
//! replies in, and what it asks of the driver checked to the byte.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::*;
use crate::admission::{Admission, AdmissionLimits};
use crate::config::Config;
use crate::privacy::Sensitive;
use crate::smtp::data::Progress;

const CONFIG: &str = r#"
[server]
hostname = "relay.test"
[[listen]]
protocol = "smtp"
address = "127.0.0.1:0"
tls = "starttls"
[[upstream]]
name = "up"
smtp = { host = "127.0.0.1", port = 1, tls = "implicit" }
domains = ["*"]
[egress]
mode = "direct"
[limits]
max_recipients = 2
messages_per_account_per_hour = 2
"#;

struct World {
    config: Config,
    policy: Policy,
    stats: Stats,
    admission: Arc<Admission>,
}

impl World {
    fn new() -> Self {
        let config = Config::parse(CONFIG).expect("config");
        World {
            policy: Policy::new(&config.sanitize),
            stats: Stats::default(),
            admission: Arc::new(Admission::new(AdmissionLimits::from_limits(&config.limits))),
            config,
        }
    }

    fn session(&self, tls: bool) -> Session<'_> {
        let cx = Context {
            hostname: &self.config.hostname,
            limits: &self.config.limits,
            policy: &self.policy,
            stats: &self.stats,
        };
        Session::new(cx, tls, Instant::now())
    }

    /// A peer logged in as `login` (its messages count against it).
    fn peer(&self, login: &str) -> Peer {
        let mut peer = self.admission.anonymous();
        peer.logged_in(&Sensitive::new(zeroize::Zeroizing::new(login.to_string())));
        peer
    }
}

fn line(text: &str) -> Line {
    Line::Complete(WipedBuf::copy_of(text.as_bytes()))
}

fn wire(reply: &Reply) -> String {
    let mut out = WipedBuf::new();
    reply.write_to(&mut out);
    String::from_utf8(out.to_vec()).expect("ascii")
}

#[track_caller]
fn replied(next: Next) -> String {
    match next {
        Next::Reply(reply) => wire(&reply),
        other => panic!("expected a reply, got {}", name(&other)),
    }
}

#[track_caller]
fn upstream(next: Next) -> String {
    match next {
        Next::Upstream(command) => String::from_utf8(command.to_vec()).expect("ascii"),
        other => panic!("expected a provider command, got {}", name(&other)),
    }
}

fn name(next: &Next) -> &'static str {
    match next {
        Next::Reply(_) => "Reply",
        Next::Close(_) => "Close",
        Next::StartTls => "StartTls",
        Next::LogIn(_) => "LogIn",
        Next::Upstream(_) => "Upstream",
        Next::ReceiveData(_) => "ReceiveData",
        Next::ReceiveChunk { .. } => "ReceiveChunk",
        Next::SendMessage(_) => "SendMessage",
        Next::Settle(_) => "Settle",
        Next::Held => "Held",
    }
}

fn provider(code: u16, text: &str) -> Option<Reply> {
    Some(Reply::new(code, [2, 0, 0], text))
}

/// A session logged in, with the provider offering every extension.
fn logged_in(world: &World) -> Session<'_> {
    logged_in_with(world, false)
}

/// As [`logged_in`], to an upstream whose policy is `encrypted_only`.
fn logged_in_with(world: &World, encrypted_only: bool) -> Session<'_> {
    let mut s = world.session(true);
    s.logged_in(ProviderCaps {
        eight_bit: true,
        smtputf8: true,
        encrypted_only,
        message_with_envelope: true,
    });
    s
}

/// MAIL and one accepted RCPT.
fn in_transaction<'w>(world: &'w World, peer: &Peer) -> Session<'w> {
    let mut s = logged_in(world);
    open_transaction(&mut s, peer);
    s
}

/// MAIL and one accepted RCPT on `s`.
fn open_transaction(s: &mut Session<'_>, peer: &Peer) {
    upstream(s.command(line("MAIL FROM:<alice@example.test>\r\n"), peer));
    replied(s.provider_replied(provider(250, "Ok")));
    upstream(s.command(line("RCPT TO:<bob@example.test>\r\n"), peer));
    replied(s.provider_replied(provider(250, "Ok")));
}

/// DATA and `message` (its end included) on `s`, in a transaction: what
/// the session does with the complete message.
fn data(s: &mut Session<'_>, peer: &Peer, message: &[u8]) -> Next {
    let Next::ReceiveData(mut incoming) = s.command(line("DATA\r\n"), peer) else {
        panic!("expected DATA to be received");
    };
    incoming.receiver.feed(message, &mut incoming.message);
    s.message_received(incoming)
}

#[test]
fn before_tls_ehlo_offers_starttls_and_auth_is_refused() {
    let world = World::new();
    let peer = world.peer("x@example.test");
    let mut s = world.session(false);
    assert_eq!(wire(&s.greeting()), "220 relay.test ESMTP\r\n");
    let ehlo = replied(s.command(line("EHLO client.invalid\r\n"), &peer));
    assert!(ehlo.starts_with("250-relay.test\r\n"), "{ehlo}");
    assert!(ehlo.ends_with("250 STARTTLS\r\n"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert!(!ehlo.contains("client.invalid"), "{ehlo}");
    assert_eq!(
        replied(s.command(line("AUTH PLAIN\r\n"), &peer)),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    assert_eq!(
        replied(s.command(line("MAIL FROM:<a@example.test>\r\n"), &peer)),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
}

#[test]
fn starttls_forgets_the_greeting_and_then_offers_auth() {
    let world = World::new();
    let peer = world.peer("x@example.test");
    let mut s = world.session(false);
    replied(s.command(line("EHLO c\r\n"), &peer));
    assert!(matches!(
        s.command(line("STARTTLS\r\n"), &peer),
        Next::StartTls
    ));
    s.tls_started();
    assert_eq!(
        replied(s.command(line("AUTH PLAIN\r\n"), &peer)),
        "503 5.5.1 Send EHLO first\r\n"
    );
    let ehlo = replied(s.command(line("EHLO c\r\n"), &peer));
    assert!(
        ehlo.ends_with("250 AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n"),
        "{ehlo}"
    );
    assert_eq!(
        replied(s.command(line("STARTTLS\r\n"), &peer)),
        "503 5.5.1 TLS already active\r\n"
    );
}

#[test]
fn auth_plain_with_an_initial_response_goes_to_the_login_policy() {
    let world = World::new();
    let peer = world.peer("x@example.test");
    let mut s = world.session(true);
    replied(s.command(line("EHLO c\r\n"), &peer));
    let response = B64.encode(b"\0alice@example.test\0pw");
    match s.command(line(&format!("AUTH PLAIN {response}\r\n")), &peer) {
        Next::LogIn(credentials) => {
            assert_eq!(credentials.login().expose().as_str(), "alice@example.test")
        }
        other => panic!("expected LogIn, got {}", name(&other)),
    }
    // Until the policy reports success, the session is not logged in.
    assert_eq!(
        replied(s.command(line("MAIL FROM:<a@example.test>\r\n"), &peer)),
        "530 5.7.0 Authentication required\r\n"
    );
}

#[test]
fn auth_login_asks_for_user_then_password_and_star_cancels() {
    let world = World::new();
    let peer = world.peer("x@example.test");
    let mut s = world.session(true);
    replied(s.command(line("EHLO c\r\n"), &peer));
    assert_eq!(
        replied(s.command(line("AUTH LOGIN\r\n"), &peer)),
        "334 VXNlcm5hbWU6\r\n"
    );
    let user = format!("{}\r\n", B64.encode("alice@example.test"));
    assert_eq!(
        replied(s.command(line(&user), &peer)),
        "334 UGFzc3dvcmQ6\r\n"
    );
    let password = format!("{}\r\n", B64.encode("pw"));
    assert!(matches!(s.command(line(&password), &peer), Next::LogIn(_)));
    assert_eq!(
        replied(s.command(line("AUTH LOGIN\r\n"), &peer)),
        "334 VXNlcm5hbWU6\r\n"
    );
    assert_eq!(
        replied(s.command(line("*\r\n"), &peer)),
        "501 5.7.0 Authentication cancelled\r\n"
    );
    assert_eq!(
        replied(s.command(line("NOOP\r\n"), &peer)),
        "250 2.0.0 Ok\r\n"
    );
    assert_eq!(
        replied(s.command(line("AUTH PLAIN\r\n"), &peer)),
        "334 \r\n"
    );
    assert_eq!(
        replied(s.command(line("not base64!\r\n"), &peer)),
        "501 5.5.2 Cannot decode authentication response\r\n"
    );
}

#[test]
fn a_quoted_local_part_goes_out_quoted_so_no_parameter_slips_past() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    // The parser takes the quotes off: written back bare, ENVID would be
    // a parameter of its own.
    assert_eq!(
        replied(s.command(
            line("MAIL FROM:<\"me@x> ENVID=abc\"@example.test>\r\n"),
            &peer
        )),
        "553 5.1.7 Sender address cannot be passed on as written\r\n"
    );
    assert_eq!(
        upstream(s.command(line("MAIL FROM:<\"a b\"@example.test>\r\n"), &peer)),
        "MAIL FROM:<\"a b\"@example.test>\r\n"
    );
    replied(s.provider_replied(provider(250, "Sender ok")));
    assert_eq!(
        upstream(s.command(
            line("RCPT TO:<\"bob NOTIFY=NEVER\"@example.test>\r\n"),
            &peer
        )),
        "RCPT TO:<\"bob NOTIFY=NEVER\"@example.test>\r\n"
    );
    replied(s.provider_replied(provider(250, "Ok")));
    assert_eq!(
        replied(s.command(line("RCPT TO:<postmaster>\r\n"), &peer)),
        "553 5.1.3 Recipient address cannot be passed on as written\r\n"
    );
}

#[test]
fn mail_and_rcpt_go_to_the_provider_whose_replies_are_the_clients() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    assert_eq!(
        upstream(s.command(
            line("MAIL FROM:<alice@example.test> SIZE=100 BODY=8BITMIME\r\n"),
            &peer
        )),
        // The client's SIZE stays here: declared minus delivered would
        // tell the provider how much was removed.
        "MAIL FROM:<alice@example.test> BODY=8BITMIME\r\n"
    );
    assert!(
        s.in_transaction(),
        "open while the provider decides (RFC 2920)"
    );
    assert_eq!(
        replied(s.provider_replied(provider(250, "Sender ok"))),
        "250 2.0.0 Sender ok\r\n"
    );
    assert!(s.in_transaction());
    assert_eq!(
        upstream(s.command(line("RCPT TO:<bob@example.test>\r\n"), &peer)),
        "RCPT TO:<bob@example.test>\r\n"
    );
    assert_eq!(
        replied(s.provider_replied(Some(Reply::new(550, [5, 1, 1], "No such user")))),
        "550 5.1.1 No such user\r\n"
    );
    assert_eq!(
        replied(s.command(line("DATA\r\n"), &peer)),
        "554 5.5.1 No valid recipients\r\n"
    );
    upstream(s.command(line("RCPT TO:<carol@example.test>\r\n"), &peer));
    replied(s.provider_replied(provider(250, "Ok")));
    assert_eq!(
        replied(s.command(line("RCPT TO:<dave@example.test>\r\n"), &peer)),
        "452 4.5.3 Too many recipients\r\n"
    );
}

#[test]
fn a_data_message_goes_out_sanitized_with_its_body_unchanged() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = in_transaction(&world, &peer);
    let Next::ReceiveData(mut incoming) = s.command(line("DATA\r\n"), &peer) else {
        panic!("expected DATA to be received");
    };
    let wire = b"From: alice@example.test\r\nUser-Agent: Canary/1\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n";
    assert_eq!(
        incoming.receiver.feed(wire, &mut incoming.message),
        Progress::Done {
            consumed: wire.len()
        }
    );
    let Next::SendMessage(outgoing) = s.message_received(incoming) else {
        panic!("expected the message to be sent");
    };
    assert_eq!(
        outgoing.pieces().concat(),
        b"From: alice@example.test\r\nSubject: hi\r\n\r\n.dot\r\nbody\r\n"
    );
    assert!(!s.in_transaction());
    assert_eq!(
        replied(s.provider_replied(provider(250, "queued"))),
        "250 2.0.0 queued\r\n"
    );
    assert!(world.stats.take_report().contains("messages relayed 1,"));
}

#[test]
fn a_refused_message_ends_the_transaction_at_the_provider_then_says_why() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = in_transaction(&world, &peer);
    let Next::ReceiveData(mut incoming) = s.command(line("DATA\r\n"), &peer) else {
        panic!("expected DATA to be received");
    };
    incoming.receiver.feed(
        b"Subject: x\r\n\r\nbare\nlf\r\n.\r\n",
        &mut incoming.message,
    );
    assert_eq!(upstream(s.message_received(incoming)), "RSET\r\n");
    assert_eq!(
        replied(s.provider_replied(provider(250, "Ok"))),
        "554 5.6.0 Message refused: bare CR or LF found, only CRLF line endings are allowed\r\n"
    );
    assert!(
        world
            .stats
            .take_report()
            .contains("messages refused here 1,")
    );
}

#[test]
fn under_encrypted_only_a_plain_message_is_refused_and_an_encrypted_one_sent() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in_with(&world, true);
    open_transaction(&mut s, &peer);
    let next = data(&mut s, &peer, b"Subject: x\r\n\r\nplain words\r\n.\r\n");
    // The provider's transaction ends; the client is told why.
    assert_eq!(upstream(next), "RSET\r\n");
    let refusal = replied(s.provider_replied(provider(250, "Ok")));
    assert!(
        refusal.starts_with("550 5.7.1 Not sent: this relay only sends end-to-end encrypted"),
        "{refusal}"
    );
    let report = world.stats.take_report();
    assert!(
        report.contains("messages refused here 1, of which not encrypted 1,"),
        "{report}"
    );
    open_transaction(&mut s, &peer);
    let encrypted = b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; \
        boundary=b\r\n\r\n--b\r\n.\r\n";
    assert!(matches!(
        data(&mut s, &peer, encrypted),
        Next::SendMessage(_)
    ));
}

#[test]
fn without_the_policy_a_plain_message_is_sent() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = in_transaction(&world, &peer);
    let next = data(&mut s, &peer, b"Subject: x\r\n\r\nplain words\r\n.\r\n");
    assert!(matches!(next, Next::SendMessage(_)));
}

#[test]
fn a_header_running_past_the_head_is_refused_not_half_sanitized() {
    // A header line longer than the contiguous head (possible only with a
    // line limit above it) must not let the sanitizer see half a header.
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = in_transaction(&world, &peer);
    let mut incoming = Incoming {
        receiver: MessageReceiver::bdat(8 << 20, 4 << 20),
        message: MessageBuf::new(0, 4096),
    };
    let mut message = b"Subject: x\r\n".to_vec();
    message.extend(std::iter::repeat_n(
        b'Y',
        super::super::message::SEGMENT + 10,
    ));
    message.extend_from_slice(b": value\r\nUser-Agent: Canary/1\r\n\r\nbody\r\n");
    incoming
        .receiver
        .feed_chunk(&message, &mut incoming.message);
    assert!(incoming.message.continues_past_head());
    assert_eq!(upstream(s.message_received(incoming)), "RSET\r\n");
    assert_eq!(
        replied(s.provider_replied(provider(250, "Ok"))),
        "552 5.3.4 Message refused: the header is larger than allowed\r\n"
    );
}

#[test]
fn ehlo_inside_a_transaction_resets_it_at_the_provider_first() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = in_transaction(&world, &peer);
    assert_eq!(
        upstream(s.command(line("EHLO again\r\n"), &peer)),
        "RSET\r\n"
    );
    assert!(replied(s.provider_replied(provider(250, "Ok"))).starts_with("250-relay.test\r\n"));
    assert!(!s.in_transaction());
    // A provider that does not take the RSET is lost.
    let mut s = in_transaction(&world, &peer);
    assert_eq!(upstream(s.command(line("RSET\r\n"), &peer)), "RSET\r\n");
    match s.provider_replied(Some(Reply::new(500, [5, 0, 0], "What?"))) {
        Next::Close(reply) => assert!(wire(&reply).starts_with("421 4.4.2 ")),
        other => panic!("expected the session to close, got {}", name(&other)),
    }
}

#[test]
fn a_lost_provider_closes_the_session_with_a_temporary_error() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    upstream(s.command(line("MAIL FROM:<alice@example.test>\r\n"), &peer));
    match s.provider_replied(None) {
        Next::Close(reply) => assert_eq!(
            wire(&reply),
            "421 4.4.2 Connection to the provider lost, message not accepted; try again later\r\n"
        ),
        other => panic!("expected Close, got {}", name(&other)),
    }
    assert!(
        world
            .stats
            .take_report()
            .contains("provider connections lost 1,")
    );
}

#[test]
fn bdat_chunks_gather_the_message_and_the_last_one_sends_it() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = in_transaction(&world, &peer);
    let Next::ReceiveChunk {
        size: 12,
        last: false,
        incoming: Some(mut incoming),
    } = s.command(line("BDAT 12\r\n"), &peer)
    else {
        panic!("expected a chunk to be read");
    };
    incoming
        .receiver
        .feed_chunk(b"Subject: x\r\n", &mut incoming.message);
    assert_eq!(
        replied(s.chunk_received(Some(incoming), 12, false)),
        "250 2.0.0 12 octets received\r\n"
    );
    assert_eq!(
        replied(s.command(line("RCPT TO:<late@example.test>\r\n"), &peer)),
        "503 5.5.1 Cannot mix DATA and BDAT\r\n"
    );
    let Next::ReceiveChunk {
        incoming: Some(mut incoming),
        ..
    } = s.command(line("BDAT 6 LAST\r\n"), &peer)
    else {
        panic!("expected the last chunk to be read");
    };
    incoming
        .receiver
        .feed_chunk(b"\r\nbody", &mut incoming.message);
    let Next::SendMessage(outgoing) = s.chunk_received(Some(incoming), 6, true) else {
        panic!("expected the message to be sent");
    };
    assert_eq!(outgoing.pieces().concat(), b"Subject: x\r\n\r\nbody");
}

#[test]
fn bdat_outside_a_transaction_is_read_and_refused() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    let Next::ReceiveChunk { incoming: None, .. } = s.command(line("BDAT 3\r\n"), &peer) else {
        panic!("expected the chunk to be read and dropped");
    };
    assert_eq!(
        replied(s.chunk_received(None, 3, false)),
        "503 5.5.1 Need MAIL command first\r\n"
    );
    // A size no 64-bit count can hold is over any limit: the session ends.
    match s.command(line("BDAT 99999999999999999999 LAST\r\n"), &peer) {
        Next::Close(reply) => assert!(wire(&reply).starts_with("552 5.3.4 ")),
        other => panic!("expected Close, got {}", name(&other)),
    }
}

#[test]
fn the_accounts_hourly_allowance_is_checked_at_mail() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    for _ in 0..2 {
        upstream(s.command(line("MAIL FROM:<alice@example.test>\r\n"), &peer));
        replied(s.provider_replied(provider(250, "Ok")));
        upstream(s.command(line("RSET\r\n"), &peer));
        replied(s.provider_replied(provider(250, "Ok")));
    }
    assert_eq!(
        replied(s.command(line("MAIL FROM:<alice@example.test>\r\n"), &peer)),
        "451 4.7.1 Too many messages from this account this hour, try again later\r\n"
    );
}

#[test]
fn unsupported_parameters_are_refused_not_forwarded() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    assert_eq!(
        replied(s.command(line("MAIL FROM:<a@example.test> RET=FULL\r\n"), &peer)),
        "555 5.5.4 Unsupported MAIL or RCPT parameter\r\n"
    );
    let mut plain = world.session(true);
    plain.logged_in(ProviderCaps::default());
    assert_eq!(
        replied(plain.command(line("MAIL FROM:<a@example.test> SMTPUTF8\r\n"), &peer)),
        "553 5.6.7 The provider does not accept SMTPUTF8 messages\r\n"
    );
}

#[test]
fn lines_that_are_not_commands_get_clear_replies() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = world.session(true);
    assert_eq!(
        replied(s.command(Line::BareLf, &peer)),
        "500 5.5.2 Command lines must end with CRLF\r\n"
    );
    assert!(matches!(s.command(Line::TooLong, &peer), Next::Close(_)));
    assert_eq!(
        replied(s.command(line("XYZZY\r\n"), &peer)),
        "500 5.5.1 Command not recognized\r\n"
    );
    assert!(matches!(s.command(line("QUIT\r\n"), &peer), Next::Close(_)));
}

#[tokio::test(start_paused = true)]
async fn the_read_deadline_is_the_login_deadline_then_idle_then_the_transfer_floor() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let limits = &world.config.limits;
    let before = Instant::now();
    let s = world.session(true);
    let now = Instant::now();
    // Not logged in: the pre-authentication deadline, fixed at the start.
    let (deadline, why) = s.read_deadline(now + limits.command_timeout);
    assert_eq!(why, Slow::Preauth);
    assert!(
        deadline >= before + limits.preauth_timeout && deadline <= now + limits.preauth_timeout
    );
    let s = logged_in(&world);
    assert_eq!(
        s.read_deadline(now),
        (now + limits.command_timeout, Slow::Idle)
    );
    let mut s = in_transaction(&world, &peer);
    let far = || Instant::now() + limits.command_timeout * 10;
    let (deadline, why) = s.read_deadline(far());
    assert_eq!(why, Slow::Transfer);
    assert_eq!(deadline, Instant::now() + limits.command_timeout);
    // Bytes received buy time at the floor's rate.
    tokio::time::advance(Duration::from_secs(100)).await;
    s.received(limits.min_transfer_bytes_per_sec as usize * 10);
    let (more, _) = s.read_deadline(far());
    assert_eq!(more - deadline, Duration::from_secs(10));
    // But a fast burst buys no more than the command timeout from now: the
    // floor holds over a sliding window, not on average since MAIL.
    s.received(limits.min_transfer_bytes_per_sec as usize * 100_000);
    let (capped, _) = s.read_deadline(far());
    assert_eq!(capped, Instant::now() + limits.command_timeout);
    tokio::time::advance(limits.command_timeout - Duration::from_secs(1)).await;
    s.received(1);
    let (after_trickle, why) = s.read_deadline(far());
    assert_eq!(why, Slow::Transfer);
    assert!(
        after_trickle < Instant::now() + Duration::from_secs(2),
        "one byte after the burst buys about nothing"
    );
}

/// Every reply the client is owed after the provider answers `replies` in
/// order: the provider's own, with the relay's held replies in their turn.
fn settle(s: &mut Session<'_>, replies: &[(u16, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut replies = replies.iter();
    loop {
        while let Some(held) = s.held_reply() {
            out.push(wire(&held));
        }
        if s.awaiting().is_none() {
            break;
        }
        let &(code, text) = replies.next().expect("a reply for every command sent");
        out.push(replied(s.provider_replied(provider(code, text))));
    }
    assert!(replies.next().is_none(), "replies left over");
    out
}

#[test]
fn pipelined_rcpt_and_bdat_go_before_the_replies_which_come_back_in_command_order() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    assert_eq!(
        upstream(s.command(line("MAIL FROM:<alice@example.test>\r\n"), &peer)),
        "MAIL FROM:<alice@example.test>\r\n"
    );
    assert_eq!(
        upstream(s.command(line("RCPT TO:<bob@example.test>\r\n"), &peer)),
        "RCPT TO:<bob@example.test>\r\n"
    );
    // Refused here, and held behind the provider's two replies.
    assert!(matches!(
        s.command(line("RCPT TO:<dave@example.test> NOTIFY=NEVER\r\n"), &peer),
        Next::Held
    ));
    assert_eq!(
        upstream(s.command(line("RCPT TO:<carol@example.test>\r\n"), &peer)),
        "RCPT TO:<carol@example.test>\r\n"
    );
    // The third recipient is over `max_recipients` (2): held too.
    assert!(matches!(
        s.command(line("RCPT TO:<erin@example.test>\r\n"), &peer),
        Next::Held
    ));
    assert_eq!(s.awaiting(), Some(Awaiting::Command));
    // The message follows before any reply: the provider decides on it.
    let Next::ReceiveChunk {
        size: 11,
        last: true,
        incoming: Some(mut incoming),
    } = s.command(line("BDAT 11 LAST\r\n"), &peer)
    else {
        panic!("expected the chunk to be read into the message");
    };
    incoming
        .receiver
        .feed_chunk(b"Subject: x\r\n", &mut incoming.message);
    let Next::SendMessage(outgoing) = s.chunk_received(Some(incoming), 11, true) else {
        panic!("expected the message to be sent behind MAIL and RCPT");
    };
    drop(outgoing);
    assert_eq!(
        settle(
            &mut s,
            &[
                (250, "Sender ok"),
                (250, "Recipient ok"),
                (550, "<carol@example.test>: no such user"),
                (250, "Ok: queued"),
            ]
        ),
        [
            "250 2.0.0 Sender ok\r\n",
            "250 2.0.0 Recipient ok\r\n",
            &wire(&reply::unsupported_parameter()),
            "550 2.0.0 <carol@example.test>: no such user\r\n",
            &wire(&reply::too_many_recipients()),
            "250 2.0.0 Ok: queued\r\n",
        ]
    );
    assert!(!s.in_transaction());
}

#[test]
fn a_command_that_needs_the_answers_waits_for_them() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    upstream(s.command(line("MAIL FROM:<alice@example.test>\r\n"), &peer));
    upstream(s.command(line("RCPT TO:<bob@example.test>\r\n"), &peer));
    // DATA's 354 needs an accepted recipient; a chunk that is not the
    // last, BDAT LAST when the message may not follow the envelope, RSET
    // and QUIT need the
    // transaction settled.
    for waits in [
        "DATA\r\n",
        "BDAT 3\r\n",
        "RSET\r\n",
        "QUIT\r\n",
        "MAIL FROM:<a@example.test>\r\n",
    ] {
        let Next::Settle(Line::Complete(back)) = s.command(line(waits), &peer) else {
            panic!("{waits:?} should wait for the provider's replies");
        };
        assert_eq!(&back[..], waits.as_bytes(), "the line is given back whole");
    }
    s.provider.message_with_envelope = false;
    assert!(matches!(
        s.command(line("BDAT 3 LAST\r\n"), &peer),
        Next::Settle(_)
    ));
    assert_eq!(settle(&mut s, &[(250, "Ok"), (250, "Ok")]).len(), 2);
    assert!(matches!(
        s.command(line("DATA\r\n"), &peer),
        Next::ReceiveData(_)
    ));
}

#[test]
fn a_refused_mail_closes_the_transaction_and_the_provider_answers_what_followed() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    upstream(s.command(line("MAIL FROM:<mallory@example.test>\r\n"), &peer));
    upstream(s.command(line("RCPT TO:<bob@example.test>\r\n"), &peer));
    assert_eq!(
        settle(
            &mut s,
            &[
                (553, "5.7.1 Sender address rejected"),
                (503, "5.5.1 Error: need MAIL command")
            ]
        ),
        [
            "553 2.0.0 5.7.1 Sender address rejected\r\n",
            "503 2.0.0 5.5.1 Error: need MAIL command\r\n",
        ]
    );
    assert!(!s.in_transaction());
    assert_eq!(
        replied(s.command(line("DATA\r\n"), &peer)),
        "503 5.5.1 Need MAIL command first\r\n"
    );
}

#[test]
fn a_provider_lost_mid_group_ends_the_session_and_drops_what_was_held() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    upstream(s.command(line("MAIL FROM:<alice@example.test>\r\n"), &peer));
    assert!(matches!(
        s.command(line("RCPT TO:<x@example.test> NOTIFY=NEVER\r\n"), &peer),
        Next::Held
    ));
    assert!(matches!(s.provider_replied(None), Next::Close(_)));
    assert!(s.held_reply().is_none());
    assert!(s.awaiting().is_none());
}

#[test]
fn replies_ahead_of_a_message_get_the_messages_time_and_a_flood_of_refusals_is_settled() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    upstream(s.command(line("MAIL FROM:<alice@example.test>\r\n"), &peer));
    upstream(s.command(line("RCPT TO:<bob@example.test>\r\n"), &peer));
    assert_eq!(s.awaiting(), Some(Awaiting::Command));
    let Next::ReceiveChunk {
        incoming: Some(mut incoming),
        ..
    } = s.command(line("BDAT 5 LAST\r\n"), &peer)
    else {
        panic!("expected the chunk to be read");
    };
    incoming
        .receiver
        .feed_chunk(b"\r\nx\r\n", &mut incoming.message);
    let Next::SendMessage(_) = s.chunk_received(Some(incoming), 5, true) else {
        panic!("expected the message to be sent");
    };
    // MAIL's reply is still first, but a provider may hold it until it
    // has checked the message.
    assert_eq!(s.awaiting(), Some(Awaiting::Message));
    settle(&mut s, &[(250, "Ok"), (250, "Ok"), (250, "queued")]);
    assert!(!s.owes_too_much());
    upstream(s.command(line("MAIL FROM:<alice@example.test>\r\n"), &peer));
    let mut held = 0;
    while !s.owes_too_much() {
        assert!(matches!(
            s.command(line("RCPT TO:<x@example.test> NOTIFY=NEVER\r\n"), &peer),
            Next::Held
        ));
        held += 1;
        assert!(held < 1000, "no bound on held replies");
    }
}

#[test]
fn a_pipelined_bdat_with_no_recipient_sent_stays_here() {
    let world = World::new();
    let peer = world.peer("alice@example.test");
    let mut s = logged_in(&world);
    upstream(s.command(line("MAIL FROM:<alice@example.test>\r\n"), &peer));
    assert!(matches!(
        s.command(line("RCPT TO:<x@example.test> NOTIFY=NEVER\r\n"), &peer),
        Next::Held
    ));
    let Next::ReceiveChunk { incoming: None, .. } = s.command(line("BDAT 4 LAST\r\n"), &peer)
    else {
        panic!("the chunk is read and dropped: no recipient went to the provider");
    };
    assert!(matches!(s.chunk_received(None, 4, true), Next::Held));
    assert_eq!(
        settle(&mut s, &[(250, "Ok")]),
        [
            "250 2.0.0 Ok\r\n".to_string(),
            wire(&reply::unsupported_parameter()),
            wire(&reply::no_valid_recipients()),
        ]
    );
}
