//! The write queue: small encoded items are copied into one tail buffer,
//! large `Bytes` are queued as they are for vectored writes.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::task::{Context, Poll};

use crate::error::Result;
use crate::queued::transport::Transport;
use bytes::{Buf, Bytes, BytesMut};

/// A `Bytes` pushed with at least this many bytes is queued by reference
/// instead of being copied into the tail buffer. Below it a copy is cheaper
/// than another iovec entry (the same trade-off as h2's `CHAIN_THRESHOLD`).
pub(crate) const CHAIN_THRESHOLD: usize = 1024;

/// A tail this long whose room is nearly used up goes into the chain as
/// it is, and a fresh tail of [`TAIL_FRESH`] bytes takes its place: the
/// tail's own doubling growth then never leaves more than a sliver of a
/// buffer unused, however much is queued (peak near what is held).
const TAIL_SEAL: usize = 32 * 1024;
/// What counts as nearly used up (see [`TAIL_SEAL`]).
const TAIL_ROOM: usize = 4 * 1024;
/// The size of a tail started after a sealed one.
const TAIL_FRESH: usize = 64 * 1024;
/// A tail buffer larger than this is given back once the queue is empty
/// (a burst's memory is not kept by an idle connection).
const TAIL_KEEP: usize = 16 * 1024;

/// A chain that grew room for more buffers than this is given back once
/// the queue is empty (its handles take 32 bytes each: a burst of small
/// buffers would otherwise leave a large empty ring for good).
const CHAIN_KEEP: usize = MAX_IOVS;

/// At most this many buffers go into one vectored write. Linux takes up to
/// 1024 (IOV_MAX); 64 already amortises the syscall and keeps the slice
/// array on the stack.
const MAX_IOVS: usize = 64;

/// Pending output in push order.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    /// Frozen buffers, written before `tail`.
    chain: VecDeque<Bytes>,
    /// Where encoders write; copied small items accumulate here.
    tail: BytesMut,
    /// Total bytes queued (`chain` + `tail`).
    len: usize,
    /// A TLS switch's marker: how many bytes at the front were queued
    /// before the switch and may be written before it runs. The rest waits.
    marker: Option<usize>,
}

impl WriteQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Before an encoder writes into the tail: seals a full one (see
    /// [`TAIL_SEAL`]) and returns the tail's length, for
    /// [`commit`](Self::commit) or [`rollback`](Self::rollback).
    pub(crate) fn begin_encode(&mut self) -> usize {
        self.seal_full_tail();
        self.tail.len()
    }

    /// The buffer encoders write into, after [`begin_encode`](Self::begin_encode).
    pub(crate) fn tail_mut(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// See [`TAIL_SEAL`].
    #[inline]
    fn seal_full_tail(&mut self) {
        if self.tail.len() >= TAIL_SEAL && self.tail.capacity() - self.tail.len() < TAIL_ROOM {
            self.chain.push_back(self.tail.split().freeze());
            self.tail = BytesMut::with_capacity(TAIL_FRESH);
        }
    }

    pub(crate) fn tail_len(&self) -> usize {
        self.tail.len()
    }

    /// Accounts for what an encoder appended since the tail was `before` long.
    pub(crate) fn commit(&mut self, before: usize) {
        self.len += self.tail.len() - before;
    }

    /// An encoder shrank the tail below `before`: what it removed is no
    /// longer queued.
    pub(crate) fn forget_removed(&mut self, before: usize) {
        let removed = before - self.tail.len();
        self.len -= removed;
        self.marker = self.marker.map(|m| m.min(self.len));
    }

    /// Drops what an encoder appended since the tail was `before` long.
    /// False if the encoder removed bytes queued before its item (they are
    /// forgotten: the output is no longer what was queued).
    pub(crate) fn rollback(&mut self, before: usize) -> bool {
        if self.tail.len() < before {
            self.forget_removed(before);
            return false;
        }
        self.tail.truncate(before);
        true
    }

    /// Takes back, uncommitted, what an encoder appended since the tail
    /// was `before` long (it had not removed anything before it): a copy,
    /// so that the tail keeps its room.
    pub(crate) fn take_back(&mut self, before: usize) -> Bytes {
        let taken = Bytes::copy_from_slice(&self.tail[before..]);
        self.tail.truncate(before);
        taken
    }

    /// Queues `bytes` after everything already queued.
    pub(crate) fn push_bytes(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if bytes.len() < CHAIN_THRESHOLD {
            self.seal_full_tail();
            self.tail.extend_from_slice(&bytes);
            return;
        }
        if !self.tail.is_empty() {
            self.chain.push_back(self.tail.split().freeze());
        }
        self.chain.push_back(bytes);
    }

    /// Marks the switch boundary after everything queued now.
    #[cfg_attr(not(any(feature = "tls", feature = "rustls")), allow(dead_code))]
    pub(crate) fn set_marker(&mut self) {
        // What was queued before the switch is frozen into the chain: an
        // encoder given the tail later (which must only append, but may
        // not) cannot move bytes queued after the switch in front of it.
        if !self.tail.is_empty() {
            self.chain.push_back(self.tail.split().freeze());
        }
        self.marker = Some(self.len);
    }

    /// The switch ran: all output may go.
    #[cfg_attr(not(any(feature = "tls", feature = "rustls")), allow(dead_code))]
    pub(crate) fn clear_marker(&mut self) {
        self.marker = None;
    }

    /// Whether a TLS switch is queued (its marker set).
    pub(crate) fn has_marker(&self) -> bool {
        self.marker.is_some()
    }

    /// Bytes that may be written now (those before a switch's marker).
    pub(crate) fn writable(&self) -> usize {
        self.marker.unwrap_or(self.len)
    }

    /// Writes as much as the transport takes in one call, never past a
    /// switch's marker; returns how many bytes left the queue.
    pub(crate) fn poll_write<T: Transport>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<Result<usize>> {
        if let Some(max) = self.marker {
            return self.poll_write_front(io, cx, max);
        }
        let n = if self.chain.is_empty() {
            std::task::ready!(io.poll_send(cx, &[IoSlice::new(&self.tail)]))?
        } else if io.is_send_vectored() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVS];
            let mut k = 0;
            for b in self.chain.iter().take(MAX_IOVS - 1) {
                slices[k] = IoSlice::new(b);
                k += 1;
            }
            // The tail goes last, and only when every chained buffer is in
            // this write: anything else would put it ahead of them.
            if k == self.chain.len() && !self.tail.is_empty() {
                slices[k] = IoSlice::new(&self.tail);
                k += 1;
            }
            std::task::ready!(io.poll_send(cx, &slices[..k]))?
        } else {
            std::task::ready!(io.poll_send(cx, &[IoSlice::new(&self.chain[0])]))?
        };
        self.advance(n);
        Poll::Ready(Ok(n))
    }

    /// Writes at most `max` bytes from the front of the queue (one buffer,
    /// no vectoring); returns how many left the queue. For a switch that
    /// must happen after exactly the bytes queued before it.
    fn poll_write_front<T: Transport>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<usize>> {
        let front: &[u8] = self.chain.front().map_or(&self.tail[..], |b| &b[..]);
        let k = front.len().min(max);
        let n = std::task::ready!(io.poll_send(cx, &[IoSlice::new(&front[..k])]))?;
        self.advance(n);
        Poll::Ready(Ok(n))
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        if self.len == 0 {
            // Everything went: a burst's buffers, and the room the chain
            // grew to hold their handles, are not kept.
            if self.chain.capacity() > CHAIN_KEEP {
                self.chain = VecDeque::new();
            } else {
                self.chain.clear();
            }
            if self.tail.capacity() > TAIL_KEEP {
                self.tail = BytesMut::new();
            } else {
                self.tail.clear();
            }
            if let Some(m) = &mut self.marker {
                *m = 0;
            }
            return;
        }
        if let Some(m) = &mut self.marker {
            *m -= n.min(*m);
        }
        while n > 0 {
            match self.chain.front_mut() {
                Some(front) if front.len() <= n => {
                    n -= front.len();
                    self.chain.pop_front();
                }
                Some(front) => {
                    front.advance(n);
                    return;
                }
                None => {
                    self.tail.advance(n);
                    return;
                }
            }
        }
    }

    /// Everything still queued, in order, as one buffer: the queue's own
    /// buffer when it holds one (no copy), else one copy of the pieces.
    pub(crate) fn take_all(&mut self) -> BytesMut {
        self.len = 0;
        self.marker = None;
        if self.chain.is_empty() {
            return std::mem::take(&mut self.tail);
        }
        if self.chain.len() == 1 && self.tail.is_empty() {
            // Without a copy when nothing else holds it.
            return self
                .chain
                .pop_front()
                .map(BytesMut::from)
                .unwrap_or_default();
        }
        // Grown piece by piece, each freed once copied: what is allocated
        // stays near what is held (a large buffer grows in place).
        let mut out = Vec::new();
        for b in self.chain.drain(..) {
            out.reserve_exact(b.len());
            out.extend_from_slice(&b);
        }
        out.reserve_exact(self.tail.len());
        out.extend_from_slice(&self.tail);
        self.tail = BytesMut::new();
        BytesMut::from(Bytes::from(out))
    }

    /// Everything still queued, for `into_parts`: what goes before a
    /// pending switch's marker (or all of it), and what was queued behind
    /// the marker.
    pub(crate) fn take_split(&mut self) -> (BytesMut, BytesMut) {
        let marker = self.marker;
        let mut out = self.take_all();
        let after = match marker {
            Some(m) => out.split_off(m),
            None => BytesMut::new(),
        };
        (out, after)
    }

    /// Queues `bytes` in front of nothing: used by `from_parts`.
    pub(crate) fn restore(&mut self, bytes: BytesMut) {
        debug_assert!(self.is_empty());
        // Output handed back was queued before any switch queued since (a
        // builder's TLS): it goes out first, as it would have (TLS-2).
        if let Some(marker) = &mut self.marker {
            *marker += bytes.len();
        }
        self.len = bytes.len();
        self.tail = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `item` as an encoder does.
    fn encode(q: &mut WriteQueue, item: &[u8]) {
        let before = q.begin_encode();
        q.tail_mut().extend_from_slice(item);
        q.commit(before);
    }

    #[test]
    fn order_is_push_order_across_copy_and_chain() {
        let mut q = WriteQueue::default();
        q.push_bytes(Bytes::from_static(b"ab"));
        q.push_bytes(Bytes::from(vec![b'x'; CHAIN_THRESHOLD]));
        encode(&mut q, b"cd");
        assert_eq!(q.len(), 4 + CHAIN_THRESHOLD);
        let all = q.take_all();
        assert_eq!(&all[..2], b"ab");
        assert_eq!(&all[all.len() - 2..], b"cd");
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_tail_is_sealed_into_the_chain_in_order() {
        let mut q = WriteQueue::default();
        let mut want = Vec::new();
        for i in 0..3000u32 {
            let item = [(i % 251) as u8; 100];
            encode(&mut q, &item);
            want.extend_from_slice(&item);
        }
        assert!(q.chain.len() >= 4, "{} sealed buffers", q.chain.len());
        // Sealed only once long: the chain holds a few large buffers (one
        // vectored write's worth), not many small ones.
        assert!(
            q.chain.iter().all(|b| b.len() >= 32 * 1024),
            "{:?}",
            q.chain.iter().map(Bytes::len).collect::<Vec<_>>()
        );
        assert!(q.tail.capacity() <= TAIL_FRESH, "{}", q.tail.capacity());
        let held: usize = q.chain.iter().map(Bytes::len).sum::<usize>() + q.tail.len();
        assert_eq!(held, q.len());
        assert_eq!(&q.take_all()[..], &want[..]);
    }

    #[test]
    fn an_encoded_item_of_up_to_4_kib_never_grows_the_tail_past_a_fresh_one() {
        // The tail is sealed while it still has room for such an item, so
        // the item never makes it reallocate (which would double it).
        let mut q = WriteQueue::default();
        for i in 0..200u32 {
            let item = [(i % 251) as u8; 3000];
            encode(&mut q, &item);
            assert!(
                q.tail.capacity() <= 64 * 1024,
                "item {i}: {} bytes",
                q.tail.capacity()
            );
        }
        assert_eq!(q.len(), 200 * 3000);
    }

    #[test]
    fn an_emptied_queue_keeps_a_small_tail_for_the_next_writes() {
        // Up to 16 KiB of tail stays allocated: a connection that writes a
        // few KiB at a time does not allocate for every burst.
        let mut q = WriteQueue::default();
        for _ in 0..80 {
            q.push_bytes(Bytes::from_static(&[1; 100]));
        }
        let kept = q.tail.capacity();
        assert!(kept >= 8000, "{kept}");
        let n = q.len();
        q.advance(n);
        assert!(q.is_empty());
        assert_eq!(q.tail.capacity(), kept);
    }

    #[test]
    fn an_emptied_queue_keeps_its_buffers_up_to_their_limits_exactly() {
        // A 16 KiB tail and a chain with room for 64 buffers are kept.
        let mut q = WriteQueue {
            tail: BytesMut::with_capacity(16 * 1024),
            ..WriteQueue::default()
        };
        q.chain.reserve_exact(64);
        let (tail, chain) = (q.tail.capacity(), q.chain.capacity());
        assert_eq!((tail, chain), (16 * 1024, 64), "the allocator's sizes");
        q.push_bytes(Bytes::from(vec![1; CHAIN_THRESHOLD]));
        q.push_bytes(Bytes::from_static(b"small"));
        let n = q.len();
        q.advance(n);
        assert_eq!((q.tail.capacity(), q.chain.capacity()), (tail, chain));
        // A chain that grew past 64 slots is given back.
        for _ in 0..65 {
            q.push_bytes(Bytes::from(vec![1; CHAIN_THRESHOLD]));
        }
        let n = q.len();
        q.advance(n);
        assert_eq!(q.chain.capacity(), 0);
    }

    #[test]
    fn a_vectored_write_puts_the_tail_after_every_chained_buffer() {
        // More chained buffers than one write takes, then a small item in
        // the tail: the tail goes with the write that takes the last of
        // them, never ahead of one.
        let mut q = WriteQueue::default();
        let mut want = Vec::new();
        for i in 0..MAX_IOVS + 6 {
            let b = vec![i as u8; CHAIN_THRESHOLD];
            want.extend_from_slice(&b);
            q.push_bytes(Bytes::from(b));
        }
        q.push_bytes(Bytes::from_static(b"tail"));
        want.extend_from_slice(b"tail");
        assert!(q.chain.len() > MAX_IOVS && !q.tail.is_empty());
        let mut io = crate::queued::transport::wrap(crate::test_io::Recorder::default());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while !q.is_empty() {
            match q.poll_write(&mut io, &mut cx) {
                Poll::Ready(Ok(n)) => assert!(n > 0),
                other => panic!("{other:?}"),
            }
        }
        let (recorder, _) = crate::queued::transport::unwrap(io);
        let writes = recorder.writes.len();
        assert_eq!(writes, 2, "one write for each {} buffers", MAX_IOVS - 1);
        assert!(recorder.writes.concat() == want, "written out of order");
    }

    #[test]
    fn an_emptied_queue_gives_a_burst_back() {
        let mut q = WriteQueue::default();
        for _ in 0..1000 {
            q.push_bytes(Bytes::from_static(&[1; 100]));
        }
        let n = q.len();
        q.advance(n);
        assert!(q.is_empty());
        assert_eq!(q.tail.capacity(), 0);
        assert!(q.chain.is_empty());
    }

    #[test]
    fn advance_crosses_buffers() {
        let mut q = WriteQueue::default();
        q.push_bytes(Bytes::from(vec![1; CHAIN_THRESHOLD]));
        q.push_bytes(Bytes::from(vec![2; CHAIN_THRESHOLD]));
        q.push_bytes(Bytes::from_static(b"end"));
        q.advance(CHAIN_THRESHOLD + 10);
        assert_eq!(q.len(), CHAIN_THRESHOLD - 10 + 3);
        let rest = q.take_all();
        assert!(rest[..CHAIN_THRESHOLD - 10].iter().all(|&b| b == 2));
        assert_eq!(&rest[CHAIN_THRESHOLD - 10..], b"end");
    }
}
