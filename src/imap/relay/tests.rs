//! The relay core, driven without sockets: client and provider bytes in,
//! what each side would receive checked to the byte.

use super::*;

fn settings(policy: &Policy, literal_plus: bool) -> Settings<'_> {
    Settings {
        policy,
        max_line: 1024,
        max_literal: 100_000,
        literal_plus,
        literal_minus: false,
        has_id: true,
        max_header_bytes: 2048,
        max_header_fields: 50,
        clock: || NOW,
        deltachat_push: false,
    }
}

/// The tests' time: 2026-11-30 10:00:00 UTC.
const NOW: i64 = 1_796_032_800;

/// Feeds `bytes` from the client, all of them.
#[track_caller]
fn client(core: &mut Core<'_>, bytes: &[u8]) {
    assert_eq!(
        core.client_input(bytes),
        bytes.len(),
        "the core stopped taking client bytes"
    );
}

fn provider(core: &mut Core<'_>, bytes: &[u8]) {
    assert_eq!(core.provider_input(bytes), bytes.len());
}

fn for_client(core: &mut Core<'_>) -> String {
    String::from_utf8_lossy(&core.to_client().take()).into_owned()
}

fn for_provider(core: &mut Core<'_>) -> String {
    String::from_utf8_lossy(&core.to_provider().take()).into_owned()
}

#[test]
fn commands_and_responses_pass_unchanged() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    client(&mut core, b"a1 SELECT INBOX\r\na2 NOOP\r\n");
    assert_eq!(for_provider(&mut core), "a1 SELECT INBOX\r\na2 NOOP\r\n");
    provider(&mut core, b"* 3 EXISTS\r\na1 OK [READ-WRITE] done\r\n");
    assert_eq!(
        for_client(&mut core),
        "* 3 EXISTS\r\na1 OK [READ-WRITE] done\r\n"
    );
    assert_eq!(core.ended(), None);
}

#[test]
fn capability_lists_are_filtered_wherever_they_appear() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    provider(
        &mut core,
        b"* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\na OK [CAPABILITY IMAP4rev1 STARTTLS MOVE] x\r\n",
    );
    assert_eq!(
        for_client(&mut core),
        "* CAPABILITY IMAP4rev1 IDLE\r\na OK [CAPABILITY IMAP4rev1 MOVE] x\r\n"
    );
}

#[test]
fn literals_in_responses_pass_byte_for_byte_however_they_are_split() {
    let policy = Policy::default();
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut response = b"* 1 FETCH (BODY[] {20000}\r\n".to_vec();
    response.extend_from_slice(&body);
    response.extend_from_slice(b" FLAGS (\\Seen))\r\na OK done\r\n");
    for split in [1, 7, 4096, response.len()] {
        let mut core = Core::new(settings(&policy, true));
        for piece in response.chunks(split) {
            provider(&mut core, piece);
        }
        assert_eq!(core.to_client().to_vec(), response, "split {split}");
    }
}

#[test]
fn refused_commands_never_reach_the_provider() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    client(
        &mut core,
        b"a COMPRESS DEFLATE\r\nb LOGIN x y\r\nc UID REPLACE 1 INBOX {3+}\r\nabc\r\nd NOOP\r\n",
    );
    assert_eq!(for_provider(&mut core), "d NOOP\r\n");
    assert_eq!(
        for_client(&mut core),
        "a BAD COMPRESS is not available through this relay\r\n\
         b BAD Already authenticated\r\n\
         c BAD Command not available through this relay\r\n"
    );
}

#[test]
fn a_synchronizing_literal_waits_for_the_providers_invitation() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, false));
    client(&mut core, b"a SEARCH TEXT {5}\r\n");
    assert_eq!(for_provider(&mut core), "a SEARCH TEXT {5}\r\n");
    assert!(core.awaiting_provider().is_some());
    assert!(!core.takes_client());
    provider(&mut core, b"+ go ahead\r\n");
    assert_eq!(for_client(&mut core), "+ go ahead\r\n");
    client(&mut core, b"hello\r\n");
    assert_eq!(for_provider(&mut core), "hello\r\n");
}

#[test]
fn a_non_synchronizing_literal_waits_here_when_the_provider_lacks_literal_plus() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, false));
    let wire = b"a SEARCH TEXT {5+}\r\nhello\r\n";
    let taken = core.client_input(wire);
    assert_eq!(taken, 20, "the literal waits for the provider");
    assert_eq!(for_provider(&mut core), "a SEARCH TEXT {5}\r\n");
    provider(&mut core, b"+ ok\r\n");
    assert_eq!(for_client(&mut core), "", "the client never sees that +");
    client(&mut core, &wire[taken..]);
    assert_eq!(for_provider(&mut core), "hello\r\n");
}

#[test]
fn a_refusal_instead_of_an_invitation_ends_the_command() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, false));
    let wire = b"a SEARCH TEXT {5+}\r\nhello\r\nb NOOP\r\n";
    let taken = core.client_input(wire);
    for_provider(&mut core);
    provider(&mut core, b"a NO [TOOBIG] no\r\n");
    assert_eq!(for_client(&mut core), "a NO [TOOBIG] no\r\n");
    client(&mut core, &wire[taken..]);
    assert_eq!(
        for_provider(&mut core),
        "b NOOP\r\n",
        "the literal was dropped"
    );
}

#[test]
fn a_completion_of_an_earlier_command_with_the_same_tag_is_not_a_refusal() {
    // A client reusing a tag while it is still in flight: the provider's
    // completion of the first command must not be taken for the refusal
    // of the second one's literal, or the relay and the provider would
    // read the rest differently.
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    client(&mut core, b"a1 NOOP\r\n");
    let wire = b"a1 SEARCH TEXT {3}\r\nabc\r\n";
    let taken = core.client_input(wire);
    provider(&mut core, b"a1 OK NOOP done\r\n");
    assert!(
        core.awaiting_provider().is_some(),
        "still waiting for the literal's invitation"
    );
    provider(&mut core, b"+ go\r\n");
    client(&mut core, &wire[taken..]);
    assert_eq!(
        for_provider(&mut core),
        "a1 NOOP\r\na1 SEARCH TEXT {3}\r\nabc\r\n"
    );
}

#[test]
fn append_is_sanitized_and_resized() {
    let policy = Policy::default();
    let message =
        b"From: alice@example.test\r\nUser-Agent: Canary/1.0\r\nSubject: draft\r\n\r\nbody\r\n";
    let clean = b"From: alice@example.test\r\nSubject: draft\r\n\r\nbody\r\n";
    let mut wire = format!("a APPEND Drafts (\\Draft) {{{}+}}\r\n", message.len()).into_bytes();
    wire.extend_from_slice(message);
    wire.extend_from_slice(b"\r\n");
    for split in [1, 5, wire.len()] {
        let mut core = Core::new(settings(&policy, true));
        for piece in wire.chunks(split) {
            client(&mut core, piece);
        }
        let mut expected =
            format!("a APPEND Drafts (\\Draft) {{{}+}}\r\n", clean.len()).into_bytes();
        expected.extend_from_slice(clean);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(core.to_provider().to_vec(), expected, "split {split}");
    }
}

#[test]
fn append_without_literal_plus_waits_for_the_provider_and_hides_its_invitation() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, false));
    let message = b"Subject: s\r\nX-Mailer: Canary\r\n\r\nbody";
    let wire = format!("a APPEND Sent {{{}}}\r\n", message.len());
    client(&mut core, wire.as_bytes());
    assert_eq!(for_client(&mut core), "+ Ready for literal data\r\n");
    let taken = core.client_input(message);
    assert_eq!(for_provider(&mut core), "a APPEND Sent {18}\r\n");
    assert!(core.awaiting_provider().is_some());
    provider(&mut core, b"+ OK\r\n");
    assert_eq!(for_client(&mut core), "");
    client(&mut core, &message[taken..]);
    client(&mut core, b"\r\n");
    assert_eq!(for_provider(&mut core), "Subject: s\r\n\r\nbody\r\n");
}

#[test]
fn multiappend_sanitizes_every_message() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    let one = b"User-Agent: a\r\nSubject: 1\r\n\r\nx";
    let two = b"X-Mailer: b\r\nSubject: 2\r\n\r\ny";
    let mut wire = format!("m APPEND Box {{{}+}}\r\n", one.len()).into_bytes();
    wire.extend_from_slice(one);
    wire.extend_from_slice(format!(" (\\Seen) {{{}+}}\r\n", two.len()).as_bytes());
    wire.extend_from_slice(two);
    wire.extend_from_slice(b"\r\n");
    client(&mut core, &wire);
    assert_eq!(
        for_provider(&mut core),
        "m APPEND Box {15+}\r\nSubject: 1\r\n\r\nx (\\Seen) {15+}\r\nSubject: 2\r\n\r\ny\r\n"
    );
}

#[test]
fn a_composed_messages_date_time_goes_out_in_utc_to_the_minute() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    let message = b"Date: Mon, 30 Nov 2026 10:59:30 +0100\r\nUser-Agent: a\r\n\r\nx";
    let mut wire = format!(
        "a APPEND Sent (\\Seen) \"30-Nov-2026 10:59:31 +0100\" {{{}+}}\r\n",
        message.len()
    )
    .into_bytes();
    wire.extend_from_slice(message);
    wire.extend_from_slice(b"\r\n");
    client(&mut core, &wire);
    assert_eq!(
        for_provider(&mut core),
        "a APPEND Sent (\\Seen) \"30-Nov-2026 09:59:00 +0000\" {42+}\r\n\
         Date: Mon, 30 Nov 2026 09:59:00 +0000\r\n\r\nx\r\n"
    );
}

#[test]
fn a_multiappend_cleans_the_new_message_and_keeps_the_archived_one() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    let new = b"User-Agent: a\r\nSubject: 1\r\n\r\nx";
    let old = b"User-Agent: b\r\nDate: Tue, 3 Nov 2026 10:11:09 +0100\r\n\r\ny";
    let delivered = b"Delivered-To: me@example.org\r\nUser-Agent: c\r\n\r\nz";
    let mut wire = format!("m APPEND Box {{{}+}}\r\n", new.len()).into_bytes();
    wire.extend_from_slice(new);
    wire.extend_from_slice(
        format!(" \"03-Nov-2026 10:11:09 +0100\" {{{}+}}\r\n", old.len()).as_bytes(),
    );
    wire.extend_from_slice(old);
    wire.extend_from_slice(
        format!(
            " \"30-Nov-2026 10:00:00 +0100\" {{{}+}}\r\n",
            delivered.len()
        )
        .as_bytes(),
    );
    wire.extend_from_slice(delivered);
    wire.extend_from_slice(b"\r\n");
    client(&mut core, &wire);
    // The new one cleaned; the other two as they came, date-times included.
    let mut expected = b"m APPEND Box {15+}\r\nSubject: 1\r\n\r\nx".to_vec();
    let new_at = wire.windows(new.len()).position(|w| w == new).expect("new");
    let new_end = new_at + new.len();
    expected.extend_from_slice(&wire[new_end..]);
    assert_eq!(
        String::from_utf8_lossy(core.to_provider()),
        String::from_utf8_lossy(&expected)
    );
}

#[test]
fn an_archived_message_passes_even_where_a_new_one_would_be_refused() {
    // An old message with a bare LF and a header over the limit: the relay
    // does not clean it, so nothing about its header needs refusing.
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    let mut message = b"Received: from mx by mail\nSubject: old\r\n".to_vec();
    for i in 0..200 {
        message.extend_from_slice(format!("X-Field-{i}: padding padding\r\n").as_bytes());
    }
    message.extend_from_slice(b"\r\nbody");
    let mut wire = format!("a APPEND Archive {{{}+}}\r\n", message.len()).into_bytes();
    wire.extend_from_slice(&message);
    wire.extend_from_slice(b"\r\n");
    client(&mut core, &wire);
    assert_eq!(core.to_provider().to_vec(), wire);
    assert_eq!(for_client(&mut core), "");
}

#[test]
fn an_append_with_an_oversized_header_is_refused_and_never_sent() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    let mut message = Vec::new();
    for i in 0..200 {
        message.extend_from_slice(format!("X-Field-{i}: padding padding\r\n").as_bytes());
    }
    message.extend_from_slice(b"\r\nbody");
    let mut wire = format!("a APPEND Drafts {{{}+}}\r\n", message.len()).into_bytes();
    wire.extend_from_slice(&message);
    wire.extend_from_slice(b"\r\nb NOOP\r\n");
    client(&mut core, &wire);
    assert_eq!(for_provider(&mut core), "b NOOP\r\n");
    assert_eq!(
        for_client(&mut core),
        "a NO [LIMIT] Message header block too large\r\n"
    );
}

#[test]
fn an_append_with_bare_line_ends_in_its_header_is_refused() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    let message = b"Subject: a\nUser-Agent: sneaky\r\n\r\nbody";
    let mut wire = format!("a APPEND Drafts {{{}+}}\r\n", message.len()).into_bytes();
    wire.extend_from_slice(message);
    wire.extend_from_slice(b"\r\n");
    client(&mut core, &wire);
    assert_eq!(for_provider(&mut core), "");
    assert_eq!(
        for_client(&mut core),
        "a NO Message header lines must end in CRLF\r\n"
    );
}

#[test]
fn append_forms_the_relay_would_not_see_are_refused() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    client(
        &mut core,
        b"a APPEND Drafts CATENATE (URL \"/x\")\r\nb APPEND Drafts\r\n",
    );
    assert_eq!(for_provider(&mut core), "");
    assert_eq!(
        for_client(&mut core),
        "a BAD APPEND form not supported\r\nb BAD APPEND without a message\r\n"
    );
}

#[test]
fn a_multiappend_refused_after_its_first_message_went_out_ends_the_session() {
    // The provider already has part of the command: the relay cannot
    // answer BAD and carry on, or the provider would read the next
    // command as the rest of this one.
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    client(&mut core, b"a APPEND Box {4+}\r\nS: x(junk\r\n");
    assert_eq!(for_provider(&mut core), "a APPEND Box {4+}\r\nS: x");
    assert_eq!(for_client(&mut core), "* BYE Malformed APPEND\r\n");
    assert_eq!(core.ended(), Some(Ended::Closed));
}

#[test]
fn a_push_device_token_is_refused_while_push_is_off() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    client(
        &mut core,
        b"a SETMETADATA \"\" (/private/devicetoken \"tok\")\r\nb SETMETADATA INBOX (/private/comment \"x\")\r\n",
    );
    assert_eq!(
        for_provider(&mut core),
        "b SETMETADATA INBOX (/private/comment \"x\")\r\n"
    );
    assert_eq!(
        for_client(&mut core),
        "a NO [NOPERM] Push notifications are turned off on this relay\r\n"
    );
    // The entry name in a literal, or after one: refused too, unseen.
    client(
        &mut core,
        b"c SETMETADATA {5+}\r\nINBOX (/private/devicetoken \"tok\")\r\n\
          d SETMETADATA INBOX (/private/comment {1+}\r\nx /private/devicetoken \"tok\")\r\n",
    );
    assert_eq!(for_provider(&mut core), "");
    assert_eq!(
        for_client(&mut core),
        "c NO [NOPERM] Push notifications are turned off on this relay\r\n\
         d NO [NOPERM] Push notifications are turned off on this relay\r\n"
    );
    // An escape in a quoted string hides nothing from the server, which
    // reads "/private/device\token" as the device token's name.
    client(
        &mut core,
        b"e SETMETADATA \"\" (\"/private/device\\token\" \"tok\")\r\n",
    );
    assert_eq!(for_provider(&mut core), "");
    assert_eq!(
        for_client(&mut core),
        "e NO [NOPERM] Push notifications are turned off on this relay\r\n"
    );
    let mut on = settings(&policy, true);
    on.deltachat_push = true;
    let mut core = Core::new(on);
    client(
        &mut core,
        b"a SETMETADATA \"\" (/private/DeviceToken \"tok\")\r\n",
    );
    assert_eq!(
        for_provider(&mut core),
        "a SETMETADATA \"\" (/private/DeviceToken \"tok\")\r\n"
    );
}

#[test]
fn the_clients_id_is_replaced_by_the_generic_one() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    client(
        &mut core,
        b"a ID (\"name\" \"Canary Mail\" \"os\" {6+}\r\nLinux!)\r\n",
    );
    assert_eq!(
        for_provider(&mut core),
        "a ID (\"name\" \"IMAP client\")\r\n"
    );
    let mut without = settings(&policy, true);
    without.has_id = false;
    let mut core = Core::new(without);
    client(&mut core, b"a ID NIL\r\n");
    assert_eq!(for_provider(&mut core), "");
    assert_eq!(for_client(&mut core), "* ID NIL\r\na OK ID completed\r\n");
}

#[test]
fn the_relays_own_replies_wait_for_the_end_of_a_provider_response() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    provider(&mut core, b"* 1 FETCH (BODY[] {10}\r\n01234");
    client(&mut core, b"x COMPRESS DEFLATE\r\n");
    assert_eq!(for_client(&mut core), "* 1 FETCH (BODY[] {10}\r\n01234");
    provider(&mut core, b"56789)\r\n");
    assert_eq!(
        for_client(&mut core),
        "56789)\r\nx BAD COMPRESS is not available through this relay\r\n"
    );
}

#[test]
fn overlong_lines_get_toobig_and_the_session_stays_usable() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    let mut wire = b"t1 SEARCH ".to_vec();
    wire.extend(std::iter::repeat_n(b'x', 2000));
    wire.extend_from_slice(b"\r\nt2 NOOP\r\n");
    client(&mut core, &wire);
    assert_eq!(
        for_client(&mut core),
        "t1 BAD [TOOBIG] Command line too long\r\n"
    );
    assert_eq!(for_provider(&mut core), "t2 NOOP\r\n");
    // Inside a command (after a literal), the relay cannot stay in step.
    let mut wire = b"t3 SEARCH TEXT {1+}\r\nx".to_vec();
    wire.extend(std::iter::repeat_n(b'y', 2000));
    for_provider(&mut core);
    let taken = core.client_input(&wire[..1100]);
    assert!(taken < 1100, "nothing more is taken once the session ends");
    assert_eq!(
        for_client(&mut core),
        "* BYE [TOOBIG] Command line too long\r\n"
    );
    assert_eq!(core.ended(), Some(Ended::Closed));
}

#[test]
fn a_literal_over_the_limit_is_refused_before_it_is_sent() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    client(&mut core, b"a APPEND INBOX {200000}\r\nb NOOP\r\n");
    assert_eq!(for_client(&mut core), "a NO [TOOBIG] Literal too large\r\n");
    assert_eq!(for_provider(&mut core), "b NOOP\r\n");
    client(&mut core, b"c SEARCH TEXT {200000+}\r\n");
    assert_eq!(
        for_client(&mut core),
        "* BYE [TOOBIG] Literal too large\r\n"
    );
    assert_eq!(core.ended(), Some(Ended::Closed));
}

#[test]
fn every_end_is_one_value_with_its_last_words() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    core.client_idle();
    assert_eq!(
        for_client(&mut core),
        "* BYE [UNAVAILABLE] Autologout: idle for too long\r\n"
    );
    assert_eq!(core.ended(), Some(Ended::IdleTimeout));
    assert_eq!(Ended::IdleTimeout.counter(), Some(Counter::Timeout));

    let mut core = Core::new(settings(&policy, true));
    core.provider_closed();
    assert_eq!(
        for_client(&mut core),
        "* BYE [UNAVAILABLE] Connection to the mail server was lost\r\n"
    );
    assert_eq!(core.ended(), Some(Ended::ProviderLost));

    let mut core = Core::new(settings(&policy, true));
    provider(&mut core, b"* BYE Logging out\r\na OK done\r\n");
    core.provider_closed();
    assert_eq!(core.ended(), Some(Ended::Closed));
    assert_eq!(Ended::Closed.counter(), None);

    let mut core = Core::new(settings(&policy, true));
    client(&mut core, b"a APPEND INBOX {100+}\r\nab");
    assert!(core.client_literal().is_some());
    core.client_too_slow();
    assert_eq!(core.ended(), Some(Ended::TooSlow));
    assert_eq!(Ended::SlowClient.counter(), Some(Counter::Timeout));
}

#[test]
fn a_client_that_never_reads_cannot_grow_the_relays_own_replies() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    let flood = b"a COMPRESS DEFLATE\r\n".repeat(100_000);
    let taken = core.client_input(&flood);
    assert!(taken < flood.len(), "the core stopped taking input");
    let backlog = core.to_client().len();
    assert!(
        (256 * 1024..256 * 1024 + 100).contains(&backlog),
        "{backlog} bytes wait for the client"
    );
    // Once the client reads, the relay takes more.
    core.to_client().clear();
    assert!(core.client_input(&flood[taken..]) > 0);
}

#[test]
fn a_command_refused_here_does_not_count_as_in_flight() {
    // `a1`'s first form never reaches the provider; the provider's later
    // refusal of `a1`'s literal must still be read as that refusal.
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, false));
    client(&mut core, b"a1 SEARCH TEXT {999999999}\r\n");
    assert_eq!(
        for_client(&mut core),
        "a1 NO [TOOBIG] Literal too large\r\n"
    );
    client(&mut core, b"a1 SEARCH TEXT {3}\r\n");
    assert!(core.awaiting_provider().is_some());
    provider(&mut core, b"a1 NO [CANNOT] no\r\n");
    assert!(
        core.awaiting_provider().is_none(),
        "read as the literal's refusal"
    );
    assert!(core.takes_client());
    client(&mut core, b"a2 NOOP\r\n");
    assert_eq!(for_provider(&mut core), "a1 SEARCH TEXT {3}\r\na2 NOOP\r\n");
}

#[test]
fn a_refusal_after_part_of_a_command_went_out_ends_the_session() {
    let policy = Policy::default();
    // A later message of a MULTIAPPEND with a header over the limit.
    let mut core = Core::new(settings(&policy, true));
    let mut big = Vec::new();
    for i in 0..200 {
        big.extend_from_slice(format!("X-Field-{i}: padding padding\r\n").as_bytes());
    }
    let mut wire = b"a APPEND Box {4+}\r\nS: x".to_vec();
    wire.extend_from_slice(format!(" {{{}+}}\r\n", big.len()).as_bytes());
    wire.extend_from_slice(&big);
    core.client_input(&wire);
    assert_eq!(for_provider(&mut core), "a APPEND Box {4+}\r\nS: x");
    assert_eq!(
        for_client(&mut core),
        "* BYE [LIMIT] Message header block too large\r\n"
    );
    assert_eq!(core.ended(), Some(Ended::Closed));
    // A later line of a forwarded command announcing a literal too large.
    let mut core = Core::new(settings(&policy, true));
    client(&mut core, b"b SEARCH TEXT {1+}\r\nx TEXT {999999999}\r\n");
    assert_eq!(for_provider(&mut core), "b SEARCH TEXT {1+}\r\nx");
    assert_eq!(
        for_client(&mut core),
        "* BYE [TOOBIG] Literal too large\r\n"
    );
    assert_eq!(core.ended(), Some(Ended::Closed));
}

mod driver;
