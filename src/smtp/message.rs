//! [`MessageBuf`]: a message held in memory between the client's last byte
//! and the provider's verdict, wiped when dropped.
//!
//! The first segment holds the start of the message contiguously — at
//! least the largest header block allowed plus one line, so the sanitizer
//! always sees a whole header — and grows by doubling up to that. The rest
//! goes into fixed-size segments that are never reallocated, so a large
//! message is never held twice, not even while it grows, and wiping it
//! costs one pass over what was written.

use crate::admission::MessageRoom;
use crate::privacy::WipedBuf;

/// Size of the segments after the first.
pub(crate) const SEGMENT: usize = 1 << 20;

/// A message being received or sent, in segments.
#[derive(Debug, Default)]
pub struct MessageBuf {
    segments: Vec<WipedBuf>,
    len: usize,
    /// Largest size of the first segment.
    head_max: usize,
    /// Size the client declared (0: unknown), to reserve no more than needed.
    expected: usize,
    /// Its share of the relay-wide message budget (none: unbounded, for
    /// tests and fuzzing).
    room: Option<MessageRoom>,
}

impl MessageBuf {
    /// An empty message whose first `head` bytes will be kept contiguous;
    /// `expected` is the size the client declared (0 if none).
    pub fn new(expected: usize, head: usize) -> Self {
        MessageBuf {
            segments: Vec::new(),
            len: 0,
            head_max: head.max(SEGMENT),
            expected,
            room: None,
        }
    }

    /// The same, held within `room`.
    pub(crate) fn within(mut self, room: MessageRoom) -> Self {
        self.room = Some(room);
        self
    }

    /// Makes room in the relay-wide budget for `more` bytes: for the
    /// memory the buffer will have allocated once they are appended (not
    /// only their length: the head grows by doubling and the tail by whole
    /// segments). False when there is none.
    pub fn has_room_for(&mut self, more: usize) -> bool {
        let allocated = self.allocated_after(more);
        self.room.as_mut().is_none_or(|room| room.cover(allocated))
    }

    /// The most a message of `len` bytes can hold allocated, whatever the
    /// size of the writes and whether or not its size was declared, with
    /// a head of `head` bytes (as passed to [`Self::new`]).
    pub(crate) fn most_allocated(len: usize, head: usize) -> usize {
        let head_max = head.max(SEGMENT);
        if len <= head_max {
            // A declared size (true or not) is reserved at once, and
            // doubling overshoots: up to the whole head.
            head_max
        } else {
            head_max + (len - head_max).div_ceil(SEGMENT) * SEGMENT
        }
    }

    /// Bytes the buffer holds allocated after [`Self::extend_from_slice`]
    /// appends `more` bytes. Mirrors how it allocates.
    fn allocated_after(&self, more: usize) -> usize {
        let total = self.len.saturating_add(more);
        let head_len = total.min(self.head_max);
        let mut head = self
            .segments
            .first()
            .map_or_else(|| self.first_reservation(more), WipedBuf::capacity);
        if head < head_len {
            head = (head * 2).max(head_len).min(self.head_max);
        }
        let tail = total.saturating_sub(self.head_max).div_ceil(SEGMENT) * SEGMENT;
        head + tail
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no byte is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first segment: the message's first bytes, contiguous (all of a
    /// message shorter than the head size).
    pub fn head(&self) -> &[u8] {
        self.segments.first().map_or(&[], |s| &s[..])
    }

    /// True when bytes follow the first segment.
    pub(crate) fn continues_past_head(&self) -> bool {
        self.segments.len() > 1
    }

    /// The segments after the first, in order.
    pub(crate) fn tail(&self) -> impl Iterator<Item = &[u8]> {
        self.segments.iter().skip(1).map(|s| &s[..])
    }

    /// Appends bytes.
    pub fn extend_from_slice(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        if self.segments.is_empty() {
            let first = self.first_reservation(bytes.len());
            self.segments.push(WipedBuf::with_capacity(first));
        }
        if let [first] = self.segments.as_mut_slice() {
            // The head grows by doubling, never past its size.
            let take = (self.head_max - first.len()).min(bytes.len());
            if first.spare() < take {
                let grown = (first.capacity() * 2).max(first.len() + take);
                first.reserve_exact(grown.min(self.head_max) - first.len());
            }
            first.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        while !bytes.is_empty() {
            if self.segments.last().is_none_or(|s| s.spare() == 0) {
                self.segments.push(WipedBuf::with_capacity(SEGMENT));
            }
            if let Some(last) = self.segments.last_mut() {
                let take = last.spare().min(bytes.len());
                last.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
            }
        }
    }

    /// The first segment's first allocation: the declared size when known
    /// (up to the head size), else small.
    fn first_reservation(&self, first_write: usize) -> usize {
        let wanted = if self.expected > 0 {
            self.expected
        } else {
            16 * 1024
        };
        wanted.max(first_write).min(self.head_max)
    }

    /// Forgets (and wipes) every byte.
    pub fn clear(&mut self) {
        self.segments.clear();
        self.len = 0;
        if let Some(room) = &mut self.room {
            room.release();
        }
    }

    /// The whole message in one buffer (for tests and fuzzing).
    pub fn whole(&self) -> WipedBuf {
        let mut out = WipedBuf::with_capacity(self.len);
        for segment in &self.segments {
            out.extend_from_slice(segment);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_fill_the_head_then_fixed_segments_in_order() {
        let mut m = MessageBuf::new(0, 10);
        let data: Vec<u8> = (0..(3 * SEGMENT + 17)).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(7_777) {
            m.extend_from_slice(chunk);
        }
        assert_eq!(m.len(), data.len());
        assert_eq!(m.head().len(), SEGMENT, "the head is at least a segment");
        assert!(m.continues_past_head());
        assert!(m.tail().all(|s| s.len() <= SEGMENT));
        assert_eq!(m.whole()[..], data[..]);
        m.clear();
        assert!(m.is_empty() && m.head().is_empty());
    }

    /// What `allocated_after` predicts, checked against what the buffer
    /// really allocates, for writes of many sizes.
    #[test]
    fn the_budget_is_charged_for_what_is_allocated() {
        for (expected, chunk) in [
            (0, 1),
            (0, 7_777),
            (0, 200_000),
            (5000, 999),
            (3 * SEGMENT, 65_536),
        ] {
            let mut m = MessageBuf::new(expected, 10);
            while m.len() < 3 * SEGMENT + 17 {
                let predicted = m.allocated_after(chunk);
                m.extend_from_slice(&vec![b'x'; chunk]);
                let allocated: usize = m.segments.iter().map(WipedBuf::capacity).sum();
                assert_eq!(
                    predicted,
                    allocated,
                    "expected {expected}, chunk {chunk}, len {}",
                    m.len()
                );
                assert!(allocated <= MessageBuf::most_allocated(m.len(), 10));
            }
        }
    }

    #[test]
    fn a_declared_size_is_reserved_once_and_a_larger_head_is_kept_whole() {
        let mut m = MessageBuf::new(5000, 10);
        m.extend_from_slice(b"x");
        assert_eq!(m.segments[0].capacity(), 5000);
        let mut big_head = MessageBuf::new(0, 3 * SEGMENT);
        let data = vec![7u8; 2 * SEGMENT + 1];
        big_head.extend_from_slice(&data);
        assert_eq!(big_head.head().len(), data.len());
        assert!(!big_head.continues_past_head());
    }
}
