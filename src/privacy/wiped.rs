//! [`WipedBuf`]: the one byte buffer for anything that may identify or
//! authenticate a person — credentials, command lines, relayed IMAP lines,
//! message and header buffers.
//!
//! A `Vec<u8>` leaves copies behind: when it grows, the old allocation goes
//! back to the allocator as it was, and so does everything when it is
//! dropped. `WipedBuf` never lets that happen: it grows and shrinks by
//! allocating anew, copying, and wiping the old allocation before releasing
//! it, and it wipes itself when dropped. No call site has to remember.
//!
//! Only the bytes that were written are wiped, never the untouched rest of
//! a reservation: a message buffer reserved at a client's declared `SIZE`
//! must not be paged in just to be zeroed.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroize;

/// A byte buffer wiped when dropped and before any allocation it held is
/// released. Its `Debug` shows the length only.
///
/// Invariant: the spare capacity beyond `len` never holds data written
/// through this type (every operation that shortens the buffer wipes
/// first), and the inner `Vec` never reallocates by itself (all growth goes
/// through [`WipedBuf::reserve`]).
#[derive(Default, PartialEq, Eq)]
pub struct WipedBuf {
    bytes: Vec<u8>,
}

impl WipedBuf {
    /// An empty buffer, no allocation.
    pub const fn new() -> Self {
        WipedBuf { bytes: Vec::new() }
    }

    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        WipedBuf {
            bytes: Vec::with_capacity(capacity),
        }
    }

    /// A copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> Self {
        let mut buf = WipedBuf::with_capacity(bytes.len());
        buf.extend_from_slice(bytes);
        buf
    }

    /// `len` zero bytes (to be written over, e.g. by a decoder).
    pub fn zeroed(len: usize) -> Self {
        WipedBuf {
            bytes: vec![0; len],
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes that fit without a new allocation.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Room left in the current allocation.
    pub fn spare(&self) -> usize {
        self.bytes.capacity() - self.bytes.len()
    }

    /// Makes room for `additional` more bytes, at least doubling the
    /// allocation when it must grow; the old allocation is wiped first.
    pub fn reserve(&mut self, additional: usize) {
        if self.spare() >= additional {
            return;
        }
        let needed = self.len().saturating_add(additional);
        let grown = self.capacity().saturating_mul(2).max(needed).max(64);
        self.reallocate(grown);
    }

    /// Makes room for exactly `additional` more bytes when it must grow (a
    /// size known in advance); the old allocation is wiped first.
    pub fn reserve_exact(&mut self, additional: usize) {
        if self.spare() < additional {
            self.reallocate(self.len().saturating_add(additional));
        }
    }

    /// Moves the bytes to a new allocation of `capacity` (at least `len`),
    /// wiping the old one before it is released.
    fn reallocate(&mut self, capacity: usize) {
        let mut moved = Vec::with_capacity(capacity.max(self.len()));
        moved.extend_from_slice(&self.bytes);
        let mut old = std::mem::replace(&mut self.bytes, moved);
        old.as_mut_slice().zeroize();
        #[cfg(test)]
        released::record(&old);
    }

    /// Gives back an allocation larger than `capacity` (and than the bytes
    /// held), wiping it.
    pub fn shrink_to(&mut self, capacity: usize) {
        if self.capacity() > capacity.max(self.len()) {
            self.reallocate(capacity);
        }
    }

    /// Appends bytes.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.bytes.extend_from_slice(bytes);
    }

    /// Appends several pieces.
    pub fn extend_from_slices(&mut self, pieces: &[&[u8]]) {
        self.reserve(pieces.iter().map(|p| p.len()).sum());
        for piece in pieces {
            self.bytes.extend_from_slice(piece);
        }
    }

    /// Appends one byte.
    pub fn push(&mut self, byte: u8) {
        self.reserve(1);
        self.bytes.push(byte);
    }

    /// Wipes and forgets every byte, keeping the allocation.
    pub fn clear(&mut self) {
        self.bytes.as_mut_slice().zeroize();
        self.bytes.clear();
    }

    /// Wipes and forgets the bytes from `len` on.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.bytes[len..].zeroize();
            self.bytes.truncate(len);
        }
    }

    /// Drops the first `n` bytes (all of them if fewer), moving the rest to
    /// the front and wiping what is left behind.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len());
        if n == 0 {
            return;
        }
        let len = self.len();
        self.bytes.copy_within(n.., 0);
        self.truncate(len - n);
    }

    /// Takes the bytes out, leaving an empty buffer.
    pub fn take(&mut self) -> WipedBuf {
        std::mem::take(self)
    }

    /// Reads once from `reader` into the spare room, first making room for
    /// at least `room` bytes. Returns how many bytes arrived (0: end of
    /// stream).
    pub async fn read_from<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        reader: &mut R,
        room: usize,
    ) -> io::Result<usize> {
        self.reserve(room.max(1));
        // With spare room, `Vec`'s `BufMut` hands out exactly that room and
        // never reallocates.
        reader.read_buf(&mut self.bytes).await
    }

    /// Reads once from `reader` through a stack buffer of `N` bytes, wiped
    /// afterwards, and appends what arrived: a buffer kept empty while its
    /// stream is quiet holds no allocation until bytes arrive, and then only
    /// room for them. Returns how many bytes arrived (0: end of stream).
    pub fn poll_read_via_stack<R: AsyncRead + ?Sized, const N: usize>(
        &mut self,
        reader: Pin<&mut R>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut stack = [0u8; N];
        let mut read = tokio::io::ReadBuf::new(&mut stack);
        let polled = reader.poll_read(cx, &mut read);
        let n = read.filled().len();
        if let Poll::Ready(Ok(())) = polled {
            self.extend_from_slice(read.filled());
        }
        stack[..n].zeroize();
        polled.map_ok(|()| n)
    }

    /// [`WipedBuf::read_from`] for poll-based drivers.
    pub fn poll_read_from<R: AsyncRead + ?Sized>(
        &mut self,
        reader: Pin<&mut R>,
        cx: &mut Context<'_>,
        room: usize,
    ) -> Poll<io::Result<usize>> {
        self.reserve(room.max(1));
        tokio_util::io::poll_read_buf(reader, cx, &mut self.bytes)
    }
}

impl Drop for WipedBuf {
    fn drop(&mut self) {
        self.bytes.as_mut_slice().zeroize();
        #[cfg(test)]
        released::record(&self.bytes);
    }
}

/// For tests: what the last allocation this thread's buffers gave back
/// held at that moment (its length, and whether every byte was zero).
#[cfg(test)]
mod released {
    use std::cell::Cell;

    thread_local! {
        static LAST: Cell<Option<(usize, bool)>> = const { Cell::new(None) };
    }

    pub(super) fn record(bytes: &[u8]) {
        LAST.set(Some((bytes.len(), bytes.iter().all(|b| *b == 0))));
    }

    pub(super) fn last() -> Option<(usize, bool)> {
        LAST.take()
    }
}

impl Deref for WipedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DerefMut for WipedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl AsRef<[u8]> for WipedBuf {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl PartialEq<[u8]> for WipedBuf {
    fn eq(&self, other: &[u8]) -> bool {
        self.bytes == other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for WipedBuf {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.bytes == other[..]
    }
}

impl fmt::Debug for WipedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WipedBuf({} bytes)", self.len())
    }
}

impl Clone for WipedBuf {
    fn clone(&self) -> Self {
        WipedBuf::copy_of(self)
    }
}

impl io::Write for WipedBuf {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_moves_to_a_new_allocation_and_keeps_the_bytes() {
        let mut buf = WipedBuf::with_capacity(4);
        buf.extend_from_slice(b"abcd");
        let before = buf.as_ptr();
        buf.extend_from_slice(b"efgh");
        assert_eq!(&buf[..], b"abcdefgh");
        assert!(buf.capacity() >= 8);
        assert_ne!(buf.as_ptr(), before, "grown into a new allocation");
    }

    #[test]
    fn growth_never_happens_inside_the_vec() {
        // Every append goes through `reserve`, so the inner Vec only ever
        // sees pushes that fit: its capacity changes only when ours does.
        let mut buf = WipedBuf::new();
        let mut capacities = Vec::new();
        for i in 0..1000u32 {
            buf.extend_from_slice(&i.to_le_bytes());
            if capacities.last() != Some(&buf.capacity()) {
                capacities.push(buf.capacity());
            }
        }
        assert_eq!(buf.len(), 4000);
        // Doubling from 64: 64, 128, ..., 4096.
        assert_eq!(capacities, vec![64, 128, 256, 512, 1024, 2048, 4096]);
    }

    #[test]
    fn an_allocation_is_wiped_before_it_is_given_back() {
        let mut buf = WipedBuf::with_capacity(8);
        buf.extend_from_slice(b"password");
        released::last();
        buf.push(b'!');
        assert_eq!(
            released::last(),
            Some((8, true)),
            "the old allocation, wiped"
        );
        buf.shrink_to(9);
        assert_eq!(released::last(), Some((9, true)));
        drop(buf);
        assert_eq!(released::last(), Some((9, true)), "dropped, wiped");
    }

    #[test]
    fn shortening_wipes_what_is_left_behind() {
        let mut buf = WipedBuf::copy_of(b"secret-password");
        buf.consume(7);
        assert_eq!(&buf[..], b"password");
        buf.truncate(4);
        assert_eq!(&buf[..], b"pass");
        buf.clear();
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), 15, "clear keeps the allocation");
    }

    #[test]
    fn shrinking_moves_to_a_smaller_allocation() {
        let mut buf = WipedBuf::with_capacity(1 << 16);
        buf.extend_from_slice(b"kept");
        buf.shrink_to(16);
        assert_eq!(&buf[..], b"kept");
        assert_eq!(buf.capacity(), 16);
        buf.shrink_to(1);
        assert_eq!(buf.capacity(), 4, "never below the bytes held");
    }

    #[test]
    fn debug_shows_the_length_only() {
        let buf = WipedBuf::copy_of(b"alice@example.test");
        assert_eq!(format!("{buf:?}"), "WipedBuf(18 bytes)");
    }

    #[tokio::test]
    async fn reads_land_in_the_spare_room() {
        let mut reader: &[u8] = b"hello world";
        let mut buf = WipedBuf::copy_of(b">");
        let n = buf.read_from(&mut reader, 4).await.expect("read");
        assert!(n > 0);
        assert_eq!(&buf[..1 + n], &b">hello world"[..1 + n]);
    }

    #[tokio::test]
    async fn a_read_via_the_stack_allocates_only_for_what_arrived() {
        let mut buf = WipedBuf::new();
        assert_eq!(buf.capacity(), 0);
        let mut reader: &[u8] = b"* 3 EXISTS\r\n";
        let n = std::future::poll_fn(|cx| {
            buf.poll_read_via_stack::<_, 4096>(Pin::new(&mut reader), cx)
        })
        .await
        .expect("read");
        assert_eq!(n, 12);
        assert_eq!(&buf[..], b"* 3 EXISTS\r\n");
        assert!(buf.capacity() <= 64, "{}", buf.capacity());
        let n = std::future::poll_fn(|cx| {
            buf.poll_read_via_stack::<_, 4096>(Pin::new(&mut reader), cx)
        })
        .await
        .expect("read");
        assert_eq!(n, 0, "end of stream");
        buf.consume(12);
        buf.shrink_to(0);
        assert_eq!(buf.capacity(), 0);
    }
}
