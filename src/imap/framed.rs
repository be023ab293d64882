//! A small read buffer for IMAP framing before login and towards the
//! provider during set-up: whole lines up to a limit, and literals read or
//! skipped by exact byte count.
//!
//! The buffer starts small; everything read may be credentials or message
//! data, so it is a [`WipedBuf`], as is everything handed out.

use tokio::io::AsyncRead;

use crate::privacy::WipedBuf;

/// Size of the read buffer while idle.
const IDLE_CAPACITY: usize = 4096;

/// Why a read stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The peer closed the connection.
    #[error("connection closed")]
    Eof,
    /// A line went over the limit; what was read so far is in the output.
    #[error("line too long")]
    TooLong,
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(std::io::ErrorKind),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e.kind())
    }
}

/// A reader with its own buffer.
pub(crate) struct Framed<R> {
    inner: R,
    buf: WipedBuf,
}

impl<R: AsyncRead + Unpin> Framed<R> {
    /// Wraps a reader.
    pub(crate) fn new(inner: R) -> Self {
        Framed {
            inner,
            buf: WipedBuf::with_capacity(IDLE_CAPACITY),
        }
    }

    /// Bytes read and not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The reader itself (for writing to a stream that is also read here).
    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Takes the reader and the unconsumed bytes apart.
    pub(crate) fn into_parts(self) -> (R, WipedBuf) {
        (self.inner, self.buf)
    }

    /// Forgets unconsumed bytes (after STARTTLS: they came in plain text).
    pub(crate) fn discard_buffered(&mut self) {
        self.buf.clear();
    }

    /// Reads more from the reader into the buffer.
    async fn fill(&mut self) -> Result<(), ReadError> {
        match self.buf.read_from(&mut self.inner, IDLE_CAPACITY).await? {
            0 => Err(ReadError::Eof),
            _ => Ok(()),
        }
    }

    /// Appends one line, through its LF, to `out`. At most `max` bytes are
    /// taken; a longer line gives [`ReadError::TooLong`] with the first
    /// `max` bytes in `out` and the rest of the line still unread.
    pub(crate) async fn read_line(
        &mut self,
        max: usize,
        out: &mut WipedBuf,
    ) -> Result<(), ReadError> {
        let mut taken = 0;
        loop {
            let room = max - taken;
            let avail = &self.buf[..self.buf.len().min(room)];
            if let Some(i) = memchr::memchr(b'\n', avail) {
                out.extend_from_slice(&avail[..=i]);
                self.buf.consume(i + 1);
                return Ok(());
            }
            let take = avail.len();
            out.extend_from_slice(avail);
            self.buf.consume(take);
            taken += take;
            if taken >= max {
                return Err(ReadError::TooLong);
            }
            self.fill().await?;
        }
    }

    /// Consumes the rest of a line, through its LF, keeping nothing.
    pub(crate) async fn skip_line(&mut self) -> Result<(), ReadError> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                self.buf.consume(i + 1);
                return Ok(());
            }
            self.buf.clear();
            self.fill().await?;
        }
    }

    /// Appends exactly `n` bytes to `out`.
    pub(crate) async fn read_exact_into(
        &mut self,
        n: usize,
        out: &mut WipedBuf,
    ) -> Result<(), ReadError> {
        out.reserve_exact(n);
        let mut left = n;
        while left > 0 {
            if self.buf.is_empty() {
                self.fill().await?;
            }
            let take = self.buf.len().min(left);
            out.extend_from_slice(&self.buf[..take]);
            self.buf.consume(take);
            left -= take;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_literals_and_limits() {
        let data: &[u8] = b"a1 LOGIN {5}\r\nalice\r\nwaytoolongline\r\nx\r\n";
        let mut f = Framed::new(data);
        let mut line = WipedBuf::new();
        f.read_line(100, &mut line).await.expect("line");
        assert_eq!(&line[..], b"a1 LOGIN {5}\r\n");
        let mut lit = WipedBuf::new();
        f.read_exact_into(5, &mut lit).await.expect("literal");
        assert_eq!(&lit[..], b"alice");
        let mut line = WipedBuf::new();
        f.read_line(100, &mut line).await.expect("crlf");
        assert_eq!(&line[..], b"\r\n");
        let mut line = WipedBuf::new();
        assert!(matches!(
            f.read_line(4, &mut line).await,
            Err(ReadError::TooLong)
        ));
        assert_eq!(&line[..], b"wayt");
        f.skip_line().await.expect("skip");
        let mut line = WipedBuf::new();
        f.read_line(100, &mut line).await.expect("line");
        assert_eq!(&line[..], b"x\r\n");
        assert!(matches!(f.fill().await, Err(ReadError::Eof)));
    }
}
