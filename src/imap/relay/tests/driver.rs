//! The driver over in-memory streams on a paused clock: deadlines, how a
//! session ends, and what is held back for the client.

use super::*;

/// The driver over in-memory streams, on a paused clock: returns the
/// client's and the provider's ends, and the session's task.
fn drive(
    provider_literal_plus: bool,
) -> (
    tokio::io::DuplexStream,
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<Ended>,
) {
    let (client, relay_client) = tokio::io::duplex(64 * 1024);
    let (provider, relay_provider) = tokio::io::duplex(64 * 1024);
    let timeouts = Timeouts {
        idle: Duration::from_secs(1800),
        client_write: Duration::from_secs(300),
        provider: Duration::from_secs(60),
        literal_grace: Duration::from_secs(300),
        literal_bytes_per_sec: 512,
    };
    let task = tokio::spawn(async move {
        let policy = Policy::default();
        let settings = settings(&policy, provider_literal_plus);
        run(
            settings,
            timeouts,
            relay_client,
            WipedBuf::new(),
            relay_provider,
            WipedBuf::new(),
        )
        .await
    });
    (client, provider, task)
}

async fn read_some(stream: &mut tokio::io::DuplexStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_logged_out_after_the_idle_timeout() {
    let (mut client, _provider, task) = drive(true);
    let started = Instant::now();
    assert_eq!(
        read_some(&mut client).await,
        "* BYE [UNAVAILABLE] Autologout: idle for too long\r\n"
    );
    assert_eq!(task.await.expect("task"), Ended::IdleTimeout);
    assert_eq!(started.elapsed(), Duration::from_secs(1800));
}

#[tokio::test(start_paused = true)]
async fn each_command_starts_the_idle_timeout_again() {
    use tokio::io::AsyncWriteExt;
    let (mut client, mut provider, task) = drive(true);
    let started = Instant::now();
    // A command at 1,000 s moves the idle deadline from 1,800 s to 2,800 s:
    // the timer set for 1,800 s must not end the session.
    tokio::time::sleep(Duration::from_secs(1000)).await;
    client.write_all(b"a NOOP\r\n").await.expect("write");
    assert_eq!(read_some(&mut provider).await, "a NOOP\r\n");
    provider.write_all(b"a OK done\r\n").await.expect("write");
    assert_eq!(read_some(&mut client).await, "a OK done\r\n");
    assert_eq!(
        read_some(&mut client).await,
        "* BYE [UNAVAILABLE] Autologout: idle for too long\r\n"
    );
    assert_eq!(task.await.expect("task"), Ended::IdleTimeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2800));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_after_the_write_timeout() {
    use tokio::io::AsyncWriteExt;
    let (client, mut provider, task) = drive(true);
    // The provider sends more than the pipe to the client holds.
    let writer = tokio::spawn(async move {
        let chunk = b"* 1 FETCH (FLAGS ())\r\n".repeat(1000);
        for _ in 0..100 {
            if provider.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    assert_eq!(task.await.expect("task"), Ended::SlowClient);
    assert!(started.elapsed() >= Duration::from_secs(300));
    assert!(started.elapsed() < Duration::from_secs(310));
    drop(client);
    writer.abort();
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_never_invites_a_literal_is_given_up() {
    use tokio::io::AsyncWriteExt;
    let (mut client, mut provider, task) = drive(false);
    client
        .write_all(b"a SEARCH TEXT {3}\r\n")
        .await
        .expect("write");
    assert_eq!(read_some(&mut provider).await, "a SEARCH TEXT {3}\r\n");
    let started = Instant::now();
    assert_eq!(
        read_some(&mut client).await,
        "* BYE [UNAVAILABLE] Connection to the mail server was lost\r\n"
    );
    assert_eq!(task.await.expect("task"), Ended::ProviderLost);
    assert_eq!(started.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_goodbye_waits_for_the_providers_response_but_not_for_ever() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, mut provider, task) = drive(true);
    // The provider starts a response and stalls inside its literal.
    provider
        .write_all(b"* 1 FETCH (BODY[] {100}\r\nabc")
        .await
        .expect("write");
    // The start of the response is held for its end. The idle timeout
    // comes; the goodbye waits for the response to end, which it never
    // does: both go out after the provider's timeout.
    let started = Instant::now();
    assert_eq!(task.await.expect("task"), Ended::IdleTimeout);
    assert_eq!(started.elapsed(), Duration::from_secs(1800 + 60));
    let mut seen = String::new();
    client.read_to_string(&mut seen).await.expect("read");
    assert_eq!(
        seen,
        "* 1 FETCH (BODY[] {100}\r\nabc* BYE [UNAVAILABLE] Autologout: idle for too long\r\n"
    );
}

#[tokio::test(start_paused = true)]
async fn a_response_split_by_the_provider_reaches_the_client_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, mut provider, task) = drive(true);
    client
        .write_all(b"a FETCH 1 BODY[]\r\n")
        .await
        .expect("write");
    assert_eq!(read_some(&mut provider).await, "a FETCH 1 BODY[]\r\n");
    // Dovecot ends a FETCH in a second write: the client gets one, not two.
    provider
        .write_all(b"* 1 FETCH (BODY[] {3}\r\nabc")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_secs(1)).await;
    provider
        .write_all(b")\r\na OK done\r\n")
        .await
        .expect("write");
    assert_eq!(
        read_some(&mut client).await,
        "* 1 FETCH (BODY[] {3}\r\nabc)\r\na OK done\r\n"
    );
    // A complete response is not held for the start of the next one.
    client.write_all(b"b NOOP\r\n").await.expect("write");
    assert_eq!(read_some(&mut provider).await, "b NOOP\r\n");
    let sent = Instant::now();
    provider
        .write_all(b"b OK done\r\n* 5 EXI")
        .await
        .expect("write");
    assert_eq!(read_some(&mut client).await, "b OK done\r\n");
    assert!(sent.elapsed() < Duration::from_secs(1));
    provider.write_all(b"STS\r\n").await.expect("write");
    assert_eq!(read_some(&mut client).await, "* 5 EXISTS\r\n");
    // A long response is not held whole: its first part goes out before
    // its end arrives.
    let literal = "x".repeat(40 * 1024);
    provider
        .write_all(format!("* 2 FETCH (BODY[] {{{}}}\r\n{literal}", literal.len() + 1).as_bytes())
        .await
        .expect("write");
    let mut seen = vec![0u8; 20 * 1024];
    client
        .read_exact(&mut seen)
        .await
        .expect("part before the end");
    drop(provider);
    assert_eq!(task.await.expect("task"), Ended::ProviderLost);
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_stops_reading_is_given_up() {
    use tokio::io::AsyncWriteExt;
    let (mut client, _provider, task) = drive(true);
    // The provider never reads: its connection fills and the relay's
    // write to it waits until the provider timeout.
    let started = Instant::now();
    client
        .write_all(format!("a SEARCH TEXT {{99000+}}\r\n{}", "x".repeat(99_000)).as_bytes())
        .await
        .expect("write");
    assert_eq!(
        read_some(&mut client).await,
        "* BYE [UNAVAILABLE] Connection to the mail server was lost\r\n"
    );
    assert_eq!(task.await.expect("task"), Ended::ProviderLost);
    assert_eq!(started.elapsed(), Duration::from_secs(60));
}

#[tokio::test]
async fn an_emptied_output_buffer_is_kept_while_data_streams_and_given_back_when_calm() {
    let (_far, stream) = tokio::io::duplex(1 << 20);
    let mut side = Side::new(stream, WipedBuf::new());
    let mut out = WipedBuf::with_capacity(HIGH_WATER);
    out.extend_from_slice(&[b'x'; 40 * 1024]);
    poll_fn(|cx| side.poll_write(cx, &mut out, false))
        .await
        .expect("write");
    assert!(out.is_empty(), "all of it went");
    assert!(out.capacity() >= HIGH_WATER, "kept while streaming");
    out.extend_from_slice(b"* 1 EXISTS\r\n");
    poll_fn(|cx| side.poll_write(cx, &mut out, true))
        .await
        .expect("write");
    assert_eq!(out.capacity(), 0, "given back once calm");
}

#[tokio::test]
async fn a_streaming_provider_keeps_its_buffer_until_its_response_ends() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    let (_far, stream) = tokio::io::duplex(1024);
    let mut provider_side = Side::new(stream, WipedBuf::with_capacity(READ_LARGE));
    // The last read was long, and ended inside a literal.
    provider_side.busy = true;
    client(&mut core, b"a1 UID FETCH 1:* BODY.PEEK[]\r\n");
    provider(&mut core, b"* 1 FETCH (UID 1 BODY[] {10}\r\n01234");
    core.to_client().clear();
    assert!(!provider_calm(&provider_side, &core), "mid response");
    provider_side.relax(provider_calm(&provider_side, &core));
    assert!(provider_side.input.capacity() > 0, "kept while streaming");
    assert!(provider_side.busy, "still streaming");
    // The response ended with a long read, and nothing comes for a while
    // (a burst of updates in IDLE, say): the tagged answer is still owed.
    provider(&mut core, b"56789)\r\n");
    assert!(provider_calm(&provider_side, &core), "between responses");
    provider_side.relax(provider_calm(&provider_side, &core));
    assert_eq!(provider_side.input.capacity(), 0, "given back");
    // The session then waits for the provider: that wait must not reserve
    // a buffer again (after a long read it would read large).
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(provider_side.poll_read(&mut cx).is_pending());
    assert_eq!(provider_side.input.capacity(), 0, "waits holding nothing");
}

#[tokio::test]
async fn a_calm_side_waits_holding_no_buffer_even_after_a_long_read() {
    let (_far, stream) = tokio::io::duplex(1024);
    let mut side = Side::new(stream, WipedBuf::with_capacity(READ_LARGE));
    side.busy = true;
    side.relax(false);
    assert!(side.busy, "still streaming");
    assert!(side.input.capacity() > 0, "kept while a literal streams");
    side.relax(true);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(side.poll_read(&mut cx).is_pending());
    assert_eq!(side.input.capacity(), 0);
}

#[tokio::test]
async fn a_stream_read_one_tls_record_at_a_time_counts_as_streaming() {
    use tokio::io::AsyncWriteExt;
    // A pipe that holds 16 KiB: each read returns at most that, as a read
    // through TLS returns at most one record.
    let (mut far, stream) = tokio::io::duplex(16 * 1024);
    let writer = tokio::spawn(async move {
        far.write_all(&[b'x'; 64 * 1024]).await.expect("write");
        far
    });
    let mut side = Side::new(stream, WipedBuf::new());
    let mut total = 0;
    while total < 64 * 1024 {
        let n = poll_fn(|cx| side.poll_read(cx)).await.expect("read");
        total += n;
        side.input.clear();
        assert!(side.busy, "a read of {n} bytes, {total} in all");
    }
    drop(writer.await.expect("writer"));
}

#[tokio::test(start_paused = true)]
async fn one_timer_fires_for_the_earliest_deadline_and_follows_deadlines_that_move() {
    let t = Instant::now();
    let s = |secs| Some(t + Duration::from_secs(secs));
    let mut sleeps = Sleeps::new(t);
    // A timer that never wakes the task would hang the test: a timeout
    // (on the paused clock, at once) makes that a failure.
    let next = async |sleeps: &mut Sleeps| {
        let fired = poll_fn(|cx| sleeps.poll(cx).map_or(Poll::Pending, Poll::Ready));
        tokio::time::timeout(Duration::from_secs(1000), fired)
            .await
            .expect("the timer fired")
    };
    sleeps.arm([s(30), s(10), None]);
    assert_eq!(next(&mut sleeps).await, 1, "the provider's, the earliest");
    assert_eq!(t.elapsed(), Duration::from_secs(10));
    // Deadlines that moved later: the timer fires early and waits on.
    sleeps.arm([s(40), None, s(35)]);
    assert_eq!(next(&mut sleeps).await, 2);
    assert_eq!(t.elapsed(), Duration::from_secs(35));
    sleeps.arm([s(40), None, None]);
    assert_eq!(next(&mut sleeps).await, 0);
    assert_eq!(t.elapsed(), Duration::from_secs(40));
    // A deadline earlier than the timer's, armed while it waits: reset
    // to it.
    sleeps.arm([s(100), None, None]);
    let waker = std::task::Waker::noop();
    assert_eq!(sleeps.poll(&mut Context::from_waker(waker)), None);
    assert_eq!(sleeps.sleep.deadline(), t + Duration::from_secs(100));
    sleeps.arm([s(100), s(50), None]);
    assert_eq!(sleeps.sleep.deadline(), t + Duration::from_secs(50));
    assert_eq!(next(&mut sleeps).await, 1);
    assert_eq!(t.elapsed(), Duration::from_secs(50));
}
