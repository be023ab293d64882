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
async fn a_read_that_filled_its_room_does_not_keep_buffers_once_all_is_answered() {
    let policy = Policy::default();
    let mut core = Core::new(settings(&policy, true));
    let (_far, stream) = tokio::io::duplex(1024);
    let mut provider_side = Side::new(stream, WipedBuf::with_capacity(READ_LARGE));
    // The last read of a long response filled its room exactly.
    provider_side.busy = true;
    client(&mut core, b"a1 UID FETCH 1:* BODY.PEEK[]\r\n");
    assert!(!provider_calm(&provider_side, &core), "a response is owed");
    provider_side.relax(provider_calm(&provider_side, &core));
    assert!(provider_side.input.capacity() > 0, "kept while owed");
    provider(&mut core, b"a1 OK done\r\n");
    assert!(provider_calm(&provider_side, &core), "nothing is owed now");
    provider_side.relax(provider_calm(&provider_side, &core));
    assert_eq!(provider_side.input.capacity(), 0, "given back");
    // The session then waits for the provider: that wait must not reserve
    // a buffer again (a read that filled its room reads large next time).
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(provider_side.poll_read(&mut cx).is_pending());
    assert_eq!(provider_side.input.capacity(), 0, "waits holding nothing");
}

#[tokio::test]
async fn a_calm_side_waits_holding_no_buffer_even_after_a_read_that_filled_its_room() {
    let (_far, stream) = tokio::io::duplex(1024);
    let mut side = Side::new(stream, WipedBuf::with_capacity(READ_LARGE));
    side.busy = true;
    side.relax(false);
    assert!(side.input.capacity() > 0, "kept while a literal streams");
    side.relax(true);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(side.poll_read(&mut cx).is_pending());
    assert_eq!(side.input.capacity(), 0);
}

#[tokio::test(start_paused = true)]
async fn one_timer_fires_for_the_earliest_deadline_and_follows_deadlines_that_move() {
    let t = Instant::now();
    let s = |secs| Some(t + Duration::from_secs(secs));
    let mut sleeps = Sleeps::new(t);
    let next = async |sleeps: &mut Sleeps| {
        poll_fn(|cx| sleeps.poll(cx).map_or(Poll::Pending, Poll::Ready)).await
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
    // One that moved earlier than the timer: reset to it.
    sleeps.arm([s(100), s(50), None]);
    assert_eq!(next(&mut sleeps).await, 1);
    assert_eq!(t.elapsed(), Duration::from_secs(50));
}
