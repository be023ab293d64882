//! A small read buffer for IMAP framing: whole lines up to a limit, and
//! literals copied or skipped by exact byte count without holding them.
//!
//! The buffer starts small and goes back to small after a large transfer, so
//! an idle session holds a few KiB here, not the largest line it ever saw.
//! Anything read may be message data or credentials: buffers are wiped
//! before they are released.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::{Zeroize, Zeroizing};

/// Size of the read buffer while idle.
const IDLE_CAPACITY: usize = 4096;
/// Size used while copying a literal: large enough for full TLS records.
const COPY_CAPACITY: usize = 32 * 1024;

/// Why a read stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the connection.
    #[error("connection closed")]
    Eof,
    /// A line went over the limit; what was read so far is in the output.
    #[error("line too long")]
    TooLong,
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(std::io::ErrorKind),
    /// A literal arrived below the transfer rate floor.
    #[error("literal too slow")]
    TooSlow,
}

/// The slowest a literal may arrive: `grace`, plus one second per
/// `bytes_per_sec` bytes of it.
#[derive(Debug, Clone, Copy)]
pub struct RateFloor {
    /// Time allowed on top of the size-based allowance.
    pub grace: std::time::Duration,
    /// Bytes per second.
    pub bytes_per_sec: u32,
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e.kind())
    }
}

/// A reader with its own buffer.
pub struct Framed<R> {
    inner: R,
    /// Wiped (whole capacity) when dropped or replaced.
    buf: Zeroizing<Vec<u8>>,
    pos: usize,
    floor: Option<RateFloor>,
}

impl<R: AsyncRead + Unpin> Framed<R> {
    /// Wraps a reader.
    pub fn new(inner: R) -> Self {
        Self::with_buffered(inner, Vec::new())
    }

    /// Wraps a reader, keeping bytes already read from it in front.
    pub fn with_buffered(inner: R, mut buffered: Vec<u8>) -> Self {
        if buffered.capacity() < IDLE_CAPACITY {
            buffered.reserve(IDLE_CAPACITY - buffered.len());
        }
        Framed {
            inner,
            buf: Zeroizing::new(buffered),
            pos: 0,
            floor: None,
        }
    }

    /// Literals read from here must arrive no slower than `floor`.
    pub fn with_rate_floor(mut self, floor: RateFloor) -> Self {
        self.floor = Some(floor);
        self
    }

    /// When a literal of `n` bytes starting now must have arrived by.
    fn transfer_deadline(&self, n: u64) -> Option<tokio::time::Instant> {
        let floor = self.floor?;
        let millis = n.saturating_mul(1000) / u64::from(floor.bytes_per_sec.max(1));
        Some(tokio::time::Instant::now() + floor.grace + std::time::Duration::from_millis(millis))
    }

    /// [`Self::fill`], failing with [`ReadError::TooSlow`] past `deadline`.
    async fn fill_by(&mut self, deadline: Option<tokio::time::Instant>) -> Result<(), ReadError> {
        match deadline {
            None => self.fill().await,
            Some(d) => tokio::time::timeout_at(d, self.fill())
                .await
                .unwrap_or(Err(ReadError::TooSlow)),
        }
    }

    /// Bytes read and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The reader itself (for writing to a stream that is also read here).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Takes the reader and the unconsumed bytes apart.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        let Framed {
            inner, buf, pos, ..
        } = self;
        (inner, buf[pos..].to_vec())
    }

    /// Forgets unconsumed bytes (after STARTTLS: they came in plain text).
    pub fn discard_buffered(&mut self) {
        self.buf = Zeroizing::new(Vec::with_capacity(IDLE_CAPACITY));
        self.pos = 0;
    }

    /// Waits until at least one unconsumed byte is buffered. Cancel safe: if
    /// the future is dropped before it completes, nothing was consumed.
    pub async fn fill(&mut self) -> Result<(), ReadError> {
        if self.pos < self.buf.len() {
            return Ok(());
        }
        self.buf.as_mut_slice().zeroize();
        self.buf.clear();
        self.pos = 0;
        if self.buf.capacity() == 0 {
            self.buf.reserve(IDLE_CAPACITY);
        }
        match self.inner.read_buf(&mut *self.buf).await? {
            0 => Err(ReadError::Eof),
            _ => Ok(()),
        }
    }

    /// Reads more, keeping unconsumed bytes; grows the buffer when full.
    async fn fill_more(&mut self, want_capacity: usize) -> Result<(), ReadError> {
        if self.pos > 0 {
            let consumed = self.pos;
            self.buf[..consumed].zeroize();
            self.buf.drain(..consumed);
            self.pos = 0;
        }
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(want_capacity.max(IDLE_CAPACITY));
        }
        match self.inner.read_buf(&mut *self.buf).await? {
            0 => Err(ReadError::Eof),
            _ => Ok(()),
        }
    }

    /// Returns to a small buffer once nothing is pending, after a large line
    /// or literal made it grow.
    pub fn relax(&mut self) {
        if self.pos == self.buf.len() && self.buf.capacity() > IDLE_CAPACITY {
            self.buf = Zeroizing::new(Vec::with_capacity(IDLE_CAPACITY));
            self.pos = 0;
        }
    }

    /// Appends one line, through its LF, to `out`. At most `max` bytes are
    /// taken; a longer line gives [`ReadError::TooLong`] with the first
    /// `max` bytes in `out` and the rest of the line still unread.
    pub async fn read_line(&mut self, max: usize, out: &mut Vec<u8>) -> Result<(), ReadError> {
        let start_len = out.len();
        loop {
            let avail = &self.buf[self.pos..];
            let room = max - (out.len() - start_len);
            if let Some(i) = memchr::memchr(b'\n', &avail[..avail.len().min(room)]) {
                out.extend_from_slice(&avail[..=i]);
                self.pos += i + 1;
                return Ok(());
            }
            let take = avail.len().min(room);
            out.extend_from_slice(&avail[..take]);
            self.pos += take;
            if out.len() - start_len >= max {
                return Err(ReadError::TooLong);
            }
            self.fill_more(IDLE_CAPACITY).await?;
        }
    }

    /// Consumes the rest of a line, through its LF, keeping nothing.
    pub async fn skip_line(&mut self) -> Result<(), ReadError> {
        loop {
            let avail = &self.buf[self.pos..];
            if let Some(i) = memchr::memchr(b'\n', avail) {
                self.pos += i + 1;
                return Ok(());
            }
            self.pos = self.buf.len();
            self.fill().await?;
        }
    }

    /// Appends exactly `n` bytes to `out`.
    pub async fn read_exact_into(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), ReadError> {
        let deadline = self.transfer_deadline(n as u64);
        let mut left = n;
        while left > 0 {
            if self.pos == self.buf.len() {
                self.fill_by(deadline).await?;
            }
            let avail = &self.buf[self.pos..];
            let take = avail.len().min(left);
            out.extend_from_slice(&avail[..take]);
            self.pos += take;
            left -= take;
        }
        Ok(())
    }

    /// Copies exactly `n` bytes to `w`, a buffer at a time.
    pub async fn copy_exact<W: AsyncWrite + Unpin>(
        &mut self,
        n: u64,
        w: &mut W,
    ) -> Result<(), ReadError> {
        let deadline = self.transfer_deadline(n);
        let mut left = n;
        while left > 0 {
            if self.pos == self.buf.len() {
                if left > IDLE_CAPACITY as u64 && self.buf.capacity() < COPY_CAPACITY {
                    self.buf = Zeroizing::new(Vec::with_capacity(COPY_CAPACITY));
                    self.pos = 0;
                }
                self.fill_by(deadline).await?;
            }
            let avail = &self.buf[self.pos..];
            let take = avail.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            w.write_all(&avail[..take]).await?;
            self.pos += take;
            left -= take as u64;
        }
        Ok(())
    }

    /// Consumes exactly `n` bytes, keeping nothing.
    pub async fn skip_exact(&mut self, n: u64) -> Result<(), ReadError> {
        let deadline = self.transfer_deadline(n);
        let mut left = n;
        while left > 0 {
            if self.pos == self.buf.len() {
                self.fill_by(deadline).await?;
            }
            let avail = self.buf.len() - self.pos;
            let take = avail.min(usize::try_from(left).unwrap_or(usize::MAX));
            self.pos += take;
            left -= take as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_literals_and_limits() {
        let data: &[u8] = b"a1 LOGIN {5}\r\nalicerest\r\nwaytoolongline\r\nx\r\n";
        let mut f = Framed::new(data);
        let mut line = Vec::new();
        f.read_line(100, &mut line).await.expect("line");
        assert_eq!(line, b"a1 LOGIN {5}\r\n");
        let mut lit = Vec::new();
        f.read_exact_into(5, &mut lit).await.expect("literal");
        assert_eq!(lit, b"alice");
        let mut out = Vec::new();
        f.copy_exact(4, &mut out).await.expect("copy");
        assert_eq!(out, b"rest");
        let mut line = Vec::new();
        f.read_line(100, &mut line).await.expect("crlf");
        assert_eq!(line, b"\r\n");
        let mut line = Vec::new();
        assert!(matches!(
            f.read_line(4, &mut line).await,
            Err(ReadError::TooLong)
        ));
        assert_eq!(line, b"wayt");
        f.skip_line().await.expect("skip");
        let mut line = Vec::new();
        f.read_line(100, &mut line).await.expect("line");
        assert_eq!(line, b"x\r\n");
        assert!(matches!(f.fill().await, Err(ReadError::Eof)));
    }
}
