//! The authenticated IMAP session, relayed both ways by one task.
//!
//! [`Core`] decides (both directions, no I/O); [`run`] moves bytes and
//! keeps time: it reads from whichever side has something and the core can
//! take, writes what the core has for each side (a provider response once
//! it is complete, or in parts when it is long), and enforces every
//! deadline — the client's idle timeout, the rate floor for its literals,
//! a client that stops reading, a provider that stops answering or reading.
//! Each way the session can end is one [`Ended`] value, returned to the one
//! place that counts it. Nothing here logs.

mod append;
mod commands;
mod core;
mod responses;
#[cfg(test)]
mod tests;

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

pub use self::core::Core;
use crate::privacy::WipedBuf;
use crate::sanitize::Policy;
use crate::stats::Counter;

/// What the core needs to know about the session.
#[derive(Clone, Copy)]
pub struct Settings<'a> {
    /// The header policy for APPEND.
    pub policy: &'a Policy,
    /// Longest client command line.
    pub max_line: usize,
    /// Largest literal from the client (message size limit).
    pub max_literal: u64,
    /// The provider takes non-synchronizing literals of any size.
    pub literal_plus: bool,
    /// The provider takes non-synchronizing literals up to 4096 bytes.
    pub literal_minus: bool,
    /// The provider has ID.
    pub has_id: bool,
    /// Largest header block of an APPENDed message.
    pub max_header_bytes: usize,
    /// Most header fields in an APPENDed message.
    pub max_header_fields: usize,
    /// The time now, in seconds since the Unix epoch: whether an APPENDed
    /// message was just composed depends on it.
    pub clock: fn() -> i64,
    /// Delta Chat push is turned on: `XDELTAPUSH` passes, and device tokens
    /// may be registered.
    pub deltachat_push: bool,
}

/// The deadlines of a relayed session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// How long the client may stay silent (IDLE included).
    pub idle: Duration,
    /// How long the client may take to read what is written to it.
    pub client_write: Duration,
    /// How long the provider may take to invite a literal or to read
    /// what is written to it.
    pub provider: Duration,
    /// A client literal may take this long, plus one second per
    /// `literal_bytes_per_sec` bytes.
    pub literal_grace: Duration,
    /// The transfer rate floor for client literals.
    pub literal_bytes_per_sec: u32,
}

/// How a relayed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Logout, either side closing, or the relay refusing to go on.
    Closed,
    /// The client stayed silent past the idle timeout.
    IdleTimeout,
    /// The client sent a literal below the transfer rate floor.
    TooSlow,
    /// The client stopped reading what the relay wrote to it.
    SlowClient,
    /// The provider connection broke, or stopped answering, without a BYE.
    ProviderLost,
}

impl Ended {
    /// The counter a session ending this way adds one to.
    pub(crate) fn counter(self) -> Option<Counter> {
        match self {
            Ended::Closed => None,
            Ended::IdleTimeout | Ended::TooSlow | Ended::SlowClient => Some(Counter::Timeout),
            Ended::ProviderLost => Some(Counter::ProviderLost),
        }
    }
}

/// Read size while idle, and while data flows.
const READ_SMALL: usize = 4 * 1024;
const READ_LARGE: usize = 32 * 1024;
/// Output held for one side before reading more from the other.
const HIGH_WATER: usize = 64 * 1024;
/// Part of a provider response held for the client before it is written:
/// a response goes out whole (one write, one TLS record for a typical
/// FETCH) unless it is longer than this.
const OUT_PART: usize = 16 * 1024;
// Reading stops at `HIGH_WATER`: by then what is held must be going out.
const _: () = assert!(OUT_PART < HIGH_WATER);

/// One side of the session: its stream, what was read from it and not
/// yet taken, and whether a flush is owed.
struct Side<S> {
    stream: S,
    input: WipedBuf,
    /// The last read brought [`READ_SMALL`] bytes or more: data streams,
    /// read more at once next time.
    busy: bool,
    unflushed: bool,
    /// Since when output has been waiting to be taken.
    stalled_since: Option<Instant>,
    eof: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Side<S> {
    fn new(stream: S, buffered: WipedBuf) -> Self {
        Side {
            stream,
            input: buffered,
            busy: false,
            unflushed: false,
            stalled_since: None,
            eof: false,
        }
    }

    /// Gives back the read buffer once it is empty and this side `calm`
    /// (see [`provider_calm`], [`client_calm`]): an idle session (IDLE can
    /// last for hours) holds none. The next read then waits through the
    /// stack, even if the last one was long: otherwise it would reserve
    /// [`READ_LARGE`] again before waiting.
    fn relax(&mut self, calm: bool) {
        if self.input.is_empty() && calm {
            self.busy = false;
            if self.input.capacity() > 0 {
                self.input.shrink_to(0);
            }
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let room = if self.busy { READ_LARGE } else { READ_SMALL };
        // Calm and empty: read through the stack, so that waiting needs no
        // buffer of its own.
        let read = if !self.busy && self.input.is_empty() {
            self.input
                .poll_read_via_stack::<_, READ_SMALL>(Pin::new(&mut self.stream), cx)
        } else {
            self.input
                .poll_read_from(Pin::new(&mut self.stream), cx, room)
        };
        // A read of READ_SMALL or more means data streams: over TLS a read
        // returns at most one record (16 KiB), so a READ_LARGE read never
        // fills, and "filled its room" would call every other read calm.
        if let Poll::Ready(Ok(n)) = read {
            self.busy = n >= READ_SMALL;
        }
        read
    }

    /// Writes from `out`, or flushes when it is empty; Ready when some
    /// bytes went or the flush is done. `calm`: the side that fills `out`
    /// is not streaming (see [`provider_calm`], [`client_calm`]), so the
    /// emptied buffer is given back: a session in IDLE holds none. While
    /// data streams it is kept: every byte released is wiped, and growing
    /// it again would wipe and copy once more.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut WipedBuf,
        calm: bool,
    ) -> Poll<std::io::Result<()>> {
        if !out.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, out))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            out.consume(n);
            self.unflushed = true;
            if !out.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if calm {
                out.shrink_to(0);
            }
            // All of it went: flush now rather than on another turn of the
            // loop. A flush still pending stays owed (its waker is set).
            if let Poll::Ready(flushed) = Pin::new(&mut self.stream).poll_flush(cx) {
                flushed?;
                self.unflushed = false;
            }
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        self.unflushed = false;
        Poll::Ready(Ok(()))
    }

    fn wants_write(&self, out: &WipedBuf) -> bool {
        !out.is_empty() || self.unflushed
    }
}

/// True when the provider is not streaming: its last read was short, or
/// what it sent ends between two responses, or every command sent to it
/// is answered. A burst of untagged updates in IDLE that ends with a long
/// read must not leave the session holding a large buffer for hours.
fn provider_calm<P>(provider: &Side<P>, core: &Core<'_>) -> bool {
    !provider.busy || !core.mid_response() || core.all_answered()
}

/// True when the client is not streaming: its last read was short, or no
/// literal of its is being read.
fn client_calm<C>(client: &Side<C>, core: &Core<'_>) -> bool {
    !client.busy || core.client_literal().is_none()
}

/// True when the client has something to be written now: a flush owed, or
/// output that ends at a response boundary or is long enough to go on its
/// own. Holding the start of a response until its end arrives saves the
/// client a wake-up and a TLS record per split response.
fn client_wants_write<C>(client: &Side<C>, core: &mut Core<'_>) -> bool {
    client.unflushed || client_output_due(core)
}

/// Output for the client that may go now: it ends at a response boundary
/// or is long enough to go on its own.
fn client_output_due(core: &mut Core<'_>) -> bool {
    !core.to_client().is_empty() && (!core.mid_response() || core.to_client().len() >= OUT_PART)
}

/// What woke the driver.
enum Event {
    ClientRead(std::io::Result<usize>),
    ProviderRead(std::io::Result<usize>),
    ClientWrote(std::io::Result<()>),
    ProviderWrote(std::io::Result<()>),
    /// A timer: 0 the client's, 1 the provider's, 2 the client's writes.
    Deadline(usize),
}

/// What the client's deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientClock {
    Idle,
    Literal,
}

/// Relays until the session ends; `client_buffered` and
/// `provider_buffered` are bytes already read from each side.
pub(crate) async fn run<C, P>(
    settings: Settings<'_>,
    timeouts: Timeouts,
    client: C,
    client_buffered: WipedBuf,
    provider: P,
    provider_buffered: WipedBuf,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    P: AsyncRead + AsyncWrite + Unpin,
{
    let mut core = Core::new(settings);
    let mut client = Side::new(client, client_buffered);
    let mut provider = Side::new(provider, provider_buffered);
    let mut clocks = Clocks::new(timeouts, Instant::now());
    let mut sleeps = Sleeps::new(Instant::now());
    let mut client_first = false;
    loop {
        feed(&mut core, &mut client, &mut provider);
        if let Some(ended) = core.ended() {
            finish(ended, &mut core, &mut client, timeouts.client_write).await;
            return ended;
        }
        let now = Instant::now();
        for (wants, stalled) in [
            (
                provider.wants_write(core.to_provider()),
                &mut provider.stalled_since,
            ),
            (
                client_wants_write(&client, &mut core),
                &mut client.stalled_since,
            ),
        ] {
            if wants {
                stalled.get_or_insert(now);
            } else {
                *stalled = None;
            }
        }
        let client_clock = clocks.client(&core, now);
        let provider_deadline = clocks.provider(&core, provider.stalled_since, now);
        let write_deadline = client.stalled_since.map(|t| t + timeouts.client_write);
        sleeps.arm([
            client_clock.map(|(d, _)| d),
            provider_deadline,
            write_deadline,
        ]);
        // Reads alternate which side goes first, so that neither starves
        // the other.
        client_first = !client_first;
        let event = poll_fn(|cx| {
            poll_once(
                cx,
                &mut core,
                &mut client,
                &mut provider,
                &mut sleeps,
                client_first,
            )
        })
        .await;
        match event {
            Event::ClientRead(Ok(0)) | Event::ClientRead(Err(_)) | Event::ClientWrote(Err(_)) => {
                client.eof = true;
                core.client_closed();
            }
            Event::ClientRead(Ok(_)) => clocks.last_client_read = Instant::now(),
            Event::ProviderRead(Ok(0))
            | Event::ProviderRead(Err(_))
            | Event::ProviderWrote(Err(_)) => {
                provider.eof = true;
                core.provider_closed();
            }
            Event::ProviderRead(Ok(_)) => {}
            Event::ClientWrote(Ok(())) => client.stalled_since = None,
            Event::ProviderWrote(Ok(())) => provider.stalled_since = None,
            Event::Deadline(0) => match client_clock {
                Some((_, ClientClock::Literal)) => core.client_too_slow(),
                _ => core.client_idle(),
            },
            // The provider did not answer, or take what it was sent, or
            // finish its response before the relay's goodbye, in time.
            Event::Deadline(1) if core.is_closing() => core.close_now(),
            Event::Deadline(1) => core.provider_timed_out(),
            Event::Deadline(_) => core.client_not_reading(),
        }
    }
}

/// The clocks of a session: when the client last sent something, the
/// deadline of the client literal being read, since when the provider has
/// been awaited, since when the relay has been closing.
struct Clocks {
    t: Timeouts,
    last_client_read: Instant,
    /// The literal being read: its number, the bytes it still had when
    /// last seen, and its credit (see [`Clocks::client`]).
    literal: Option<(u64, u64, Instant)>,
    /// The wait (its number) and when it began.
    awaiting: Option<(u64, Instant)>,
    closing_since: Option<Instant>,
}

impl Clocks {
    fn new(t: Timeouts, now: Instant) -> Self {
        Clocks {
            t,
            last_client_read: now,
            literal: None,
            awaiting: None,
            closing_since: None,
        }
    }

    /// The client's deadline: the rate floor inside a literal, the idle
    /// timeout otherwise; none while the provider is the one awaited or the
    /// session is ending.
    ///
    /// The floor holds over a sliding window, as for SMTP messages: a
    /// literal starts with `literal_grace` of credit, each byte that
    /// arrives buys `1 / literal_bytes_per_sec` seconds more, and the
    /// credit never reaches further than `literal_grace` from now. A fast
    /// burst therefore buys no hours of trickling afterwards.
    fn client(&mut self, core: &Core<'_>, now: Instant) -> Option<(Instant, ClientClock)> {
        if core.awaiting_provider().is_some() || core.is_closing() {
            return None;
        }
        let Some((id, left)) = core.client_literal() else {
            return Some((self.last_client_read + self.t.idle, ClientClock::Idle));
        };
        let grace = self.t.literal_grace;
        self.literal = Some(match self.literal {
            Some((seen, was_left, credit)) if seen == id => {
                let floor = u64::from(self.t.literal_bytes_per_sec.max(1));
                let arrived = was_left.saturating_sub(left);
                let bought = Duration::from_millis(arrived.saturating_mul(1000) / floor);
                (id, left, (credit.max(now) + bought).min(now + grace))
            }
            _ => (id, left, now + grace),
        });
        self.literal
            .map(|(_, _, deadline)| (deadline, ClientClock::Literal))
    }

    /// The provider's deadline: to invite each literal it is waited for,
    /// to take what is written to it, to end its response before the
    /// relay's goodbye.
    fn provider(
        &mut self,
        core: &Core<'_>,
        stalled: Option<Instant>,
        now: Instant,
    ) -> Option<Instant> {
        self.awaiting = match (core.awaiting_provider(), self.awaiting) {
            (Some(id), Some((seen, since))) if id == seen => Some((seen, since)),
            (Some(id), _) => Some((id, now)),
            (None, _) => None,
        };
        if core.is_closing() {
            self.closing_since.get_or_insert(now);
        }
        [
            self.awaiting.map(|(_, since)| since),
            stalled,
            self.closing_since,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|since| since + self.t.provider)
    }
}

/// The three deadlines (the client's, the provider's, the client's
/// writes) on one timer, set to the earliest: a session holds one timer
/// entry, not three.
///
/// Most deadlines only ever move later (each command pushes the idle
/// timeout on), so the timer is reset only when the earliest deadline
/// moves earlier: when it fires before every deadline it is set again to
/// the earliest and keeps waiting. That saves the runtime's timer wheel a
/// reset per command.
struct Sleeps {
    sleep: Pin<Box<Sleep>>,
    due: [Option<Instant>; 3],
}

impl Sleeps {
    fn new(now: Instant) -> Self {
        Sleeps {
            sleep: Box::pin(tokio::time::sleep_until(now)),
            due: [None; 3],
        }
    }

    fn earliest(&self) -> Option<Instant> {
        self.due.iter().flatten().min().copied()
    }

    fn arm(&mut self, deadlines: [Option<Instant>; 3]) {
        self.due = deadlines;
        if let Some(earliest) = self.earliest()
            && earliest < self.sleep.deadline()
        {
            self.sleep.as_mut().reset(earliest);
        }
    }

    /// The deadline that has passed: the earliest (of equal ones, the
    /// first armed).
    fn poll(&mut self, cx: &mut Context<'_>) -> Option<usize> {
        let earliest = self.earliest()?;
        if self.sleep.as_mut().poll(cx).is_pending() {
            return None;
        }
        if self.sleep.deadline() < earliest {
            // Fired early, at a deadline since moved on: wait for the
            // earliest one now.
            self.sleep.as_mut().reset(earliest);
            if self.sleep.as_mut().poll(cx).is_pending() {
                return None;
            }
        }
        let fired = self.sleep.deadline();
        (0..3).find(|&i| self.due[i].is_some_and(|due| due <= fired))
    }
}

/// Hands the core what each side sent, as far as the other side's output
/// has room.
fn feed<C, P>(core: &mut Core<'_>, client: &mut Side<C>, provider: &mut Side<P>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    P: AsyncRead + AsyncWrite + Unpin,
{
    if !provider.input.is_empty() && core.to_client().len() < HIGH_WATER {
        let n = core.provider_input(&provider.input);
        provider.input.consume(n);
        let calm = provider_calm(provider, core);
        provider.relax(calm);
    }
    if !client.input.is_empty() && core.takes_client() && core.to_provider().len() < HIGH_WATER {
        let n = core.client_input(&client.input);
        client.input.consume(n);
        let calm = client_calm(client, core);
        client.relax(calm);
    }
}

/// Polls every ready operation once; returns the first event.
fn poll_once<C, P>(
    cx: &mut Context<'_>,
    core: &mut Core<'_>,
    client: &mut Side<C>,
    provider: &mut Side<P>,
    sleeps: &mut Sleeps,
    client_first: bool,
) -> Poll<Event>
where
    C: AsyncRead + AsyncWrite + Unpin,
    P: AsyncRead + AsyncWrite + Unpin,
{
    if client_wants_write(client, core) {
        // Only a flush while the output is held.
        let write = if client_output_due(core) {
            let calm = provider_calm(provider, core);
            client.poll_write(cx, core.to_client(), calm)
        } else {
            client.poll_write(cx, &mut WipedBuf::new(), true)
        };
        if let Poll::Ready(r) = write {
            return Poll::Ready(Event::ClientWrote(r));
        }
    }
    if provider.wants_write(core.to_provider()) {
        let calm = client_calm(client, core);
        if let Poll::Ready(r) = provider.poll_write(cx, core.to_provider(), calm) {
            return Poll::Ready(Event::ProviderWrote(r));
        }
    }
    let provider_reads =
        provider.input.is_empty() && !provider.eof && core.to_client().len() < HIGH_WATER;
    let client_reads = client.input.is_empty()
        && !client.eof
        && core.takes_client()
        && core.to_provider().len() < HIGH_WATER;
    for read_client in [client_first, !client_first] {
        if read_client
            && client_reads
            && let Poll::Ready(r) = client.poll_read(cx)
        {
            return Poll::Ready(Event::ClientRead(r));
        }
        if !read_client
            && provider_reads
            && let Poll::Ready(r) = provider.poll_read(cx)
        {
            return Poll::Ready(Event::ProviderRead(r));
        }
    }
    match sleeps.poll(cx) {
        Some(i) => Poll::Ready(Event::Deadline(i)),
        None => Poll::Pending,
    }
}

/// Writes what the core still has for the client (unless the client is
/// the one that stopped reading) and closes the client's side.
async fn finish<C>(ended: Ended, core: &mut Core<'_>, client: &mut Side<C>, timeout: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    if ended == Ended::SlowClient || client.eof {
        return;
    }
    let out = core.to_client().take();
    let stream = &mut client.stream;
    let _ = tokio::time::timeout(timeout, async {
        stream.write_all(&out).await?;
        stream.flush().await?;
        stream.shutdown().await
    })
    .await;
}
