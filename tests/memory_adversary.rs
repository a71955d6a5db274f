//! Memory against a hostile peer, counted by a global allocator: declared
//! lengths that are large (within the limit or over it) followed by a
//! trickle, a peer that keeps the socket full so every read fills all the
//! room the read buffer has, and what a connection keeps once it waits
//! again. The peer is an in-memory source that makes its bytes as they are
//! read (nothing of the frame exists before the engine reads it), so the
//! heap counted is the engine's and the codec's. Each test polls by hand
//! on the test thread, one at a time (`serial`): no timing is involved.
#![allow(clippy::await_holding_lock)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyframe::QueuedFramed;
use anyframe::codecs::{ChunkCodec, NetstringCodec, PackFormat, PackstringCodec};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[path = "support/counting.rs"]
mod counting;

use counting::{heap, peak, reset_peak, serial};

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// A peer that sends `head`, then `body` filler bytes, at most `piece`
/// bytes a read (`usize::MAX`: as much as the reader has room for, a peer
/// that keeps the socket full). Once it has sent everything, a read is
/// `Pending` (the test polls by hand, so no waker is needed). Writes are
/// taken and dropped.
struct Source {
    head: Vec<u8>,
    sent_head: usize,
    body: usize,
    piece: usize,
    /// Bytes the reader may take before the source stalls.
    allowance: usize,
}

impl Source {
    fn new(head: Vec<u8>, body: usize, piece: usize) -> Source {
        Source {
            head,
            sent_head: 0,
            body,
            piece,
            allowance: usize::MAX,
        }
    }
}

impl AsyncRead for Source {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut n = buf.remaining().min(self.piece).min(self.allowance);
        if n == 0 || (self.sent_head == self.head.len() && self.body == 0) {
            return Poll::Pending;
        }
        let start = n;
        let from = self.sent_head;
        let h = (self.head.len() - from).min(n);
        buf.put_slice(&self.head[from..from + h]);
        self.sent_head += h;
        n -= h;
        let b = self.body.min(n);
        buf.initialize_unfilled_to(b);
        buf.advance(b);
        self.body -= b;
        n -= b;
        let took = start - n;
        self.allowance -= took;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Source {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Polls `fut` until it completes or stalls (the source has nothing more).
fn poll_until_stall<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    a as f64 / b as f64
}

/// The bound of the memory rule: 1.3 × (held + one read), and a little
/// for the engine's own state.
fn bound(held: usize) -> usize {
    (1.3 * (held + anyframe::DEFAULT_MAX_READ_SIZE) as f64) as usize + 64 * KIB
}

/// Reads one frame of `len` payload bytes after `head` from a peer that
/// keeps the socket full; returns the peak heap over the read.
fn full_socket_peak<D>(decoder: D, head: Vec<u8>, len: usize) -> usize
where
    D: tokio_util::codec::Decoder + Send + 'static,
    D::Error: Into<anyframe::Error>,
    D::Item: AsRef<[u8]> + Send + 'static,
{
    let src = Source::new(head, len, usize::MAX);
    let mut conn = QueuedFramed::builder().rbuf_max(None).build(src);
    let base = reset_peak();
    let frame = poll_until_stall(conn.read(decoder))
        .expect("the whole frame is there")
        .expect("a frame");
    assert_eq!(frame.as_ref().len(), len);
    peak() - base
}

// ----- a peer that keeps the socket full --------------------------------------

#[test]
fn chunk_from_a_full_socket_peaks_near_what_it_holds() {
    let _g = serial();
    const LEN: usize = 8 * MIB;
    let pk = full_socket_peak(ChunkCodec::new(LEN), Vec::new(), LEN);
    println!(
        "chunk 8 MiB, full socket: peak {} KiB ({:.2}x)",
        pk / KIB,
        ratio(pk, LEN)
    );
    assert!(
        pk <= bound(LEN),
        "peak {pk} over {} ({:.2}x)",
        bound(LEN),
        ratio(pk, LEN)
    );
}

#[test]
fn packstring_from_a_full_socket_peaks_near_what_it_holds() {
    let _g = serial();
    const LEN: usize = 8 * MIB;
    let codec = PackstringCodec::new(PackFormat::U32Be);
    let head = (LEN as u32).to_be_bytes().to_vec();
    let pk = full_socket_peak(codec, head, LEN);
    println!(
        "packstring 8 MiB, full socket: peak {} KiB ({:.2}x)",
        pk / KIB,
        ratio(pk, LEN)
    );
    assert!(
        pk <= bound(LEN),
        "peak {pk} over {} ({:.2}x)",
        bound(LEN),
        ratio(pk, LEN)
    );
}

#[test]
fn netstring_from_a_full_socket_peaks_near_what_it_holds() {
    let _g = serial();
    const LEN: usize = 8 * MIB;
    let codec = NetstringCodec::with_max_length(2 * LEN);
    let head = format!("{LEN}:").into_bytes();
    // The trailing comma: a body one longer, its last byte a zero (the
    // codec refuses it, so read the payload and stop before the comma).
    let src = Source::new(head, LEN, usize::MAX);
    let mut conn = QueuedFramed::builder().rbuf_max(None).build(src);
    let base = reset_peak();
    let got = poll_until_stall(conn.read(codec));
    assert!(got.is_none(), "the comma never comes");
    let pk = peak() - base;
    println!(
        "netstring 8 MiB, full socket: peak {} KiB ({:.2}x)",
        pk / KIB,
        ratio(pk, LEN)
    );
    assert!(
        pk <= bound(LEN),
        "peak {pk} over {} ({:.2}x)",
        bound(LEN),
        ratio(pk, LEN)
    );
}

// ----- a large declared length, then a trickle --------------------------------

/// Sends `head` (declaring a large frame) and then `sent` payload bytes in
/// `piece`-byte reads; returns (heap held while the read waits, peak).
fn trickle<D>(decoder: D, head: Vec<u8>, sent: usize, piece: usize) -> (usize, usize)
where
    D: tokio_util::codec::Decoder + Send + 'static,
    D::Error: Into<anyframe::Error>,
    D::Item: Send + 'static,
{
    let mut src = Source::new(head, usize::MAX, piece);
    src.allowance = src.head.len() + sent;
    let base = reset_peak();
    let mut conn = QueuedFramed::builder().rbuf_max(None).build(src);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let held = {
        let mut read = std::pin::pin!(conn.read(decoder));
        // Reads until the source stalls.
        match read.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(_)) => panic!("a frame from a trickle"),
            Poll::Ready(Err(e)) => panic!("{e}"),
            Poll::Pending => {}
        }
        heap() - base
    };
    let pk = peak() - base;
    assert_eq!(conn.get_ref().allowance, 0, "everything sent was read");
    drop(conn);
    (held, pk)
}

fn check_trickle(what: &str, held: usize, pk: usize, sent: usize) {
    println!(
        "{what}: {} KiB received, held {} KiB, peak {} KiB",
        sent / KIB,
        held / KIB,
        pk / KIB
    );
    assert!(
        held <= bound(sent),
        "{what}: holds {held} B for {sent} B received"
    );
    assert!(
        pk <= bound(sent),
        "{what}: peak {pk} B for {sent} B received"
    );
}

#[test]
fn packstring_declared_lengths_allocate_only_what_arrives() {
    let _g = serial();
    const SENT: usize = 200 * KIB;
    let max = 1 << 30;
    // `C`, `n` and `v` cannot declare more than 64 KiB.
    for format in PackFormat::ALL
        .into_iter()
        .filter(|f| f.max_value() >= max as u64)
    {
        let declared = max as u64;
        let mut wire = bytes::BytesMut::new();
        // The prefix of a frame of `declared` bytes (the encoder writes it
        // only with the payload: take the prefix from a short frame and
        // patch the length in).
        let head = prefix(format, declared);
        wire.extend_from_slice(&head);
        let codec = PackstringCodec::with_max_length(format, max);
        let (held, pk) = trickle(codec, head, SENT, 1000);
        check_trickle(&format!("packstring {}", format.letter()), held, pk, SENT);
    }
}

/// The length prefix of `format` for `len`.
fn prefix(format: PackFormat, len: u64) -> Vec<u8> {
    match format.letter() {
        "C" => vec![len as u8],
        "n" => (len as u16).to_be_bytes().to_vec(),
        "v" => (len as u16).to_le_bytes().to_vec(),
        "N" => (len as u32).to_be_bytes().to_vec(),
        "V" => (len as u32).to_le_bytes().to_vec(),
        "Q>" => len.to_be_bytes().to_vec(),
        "Q<" => len.to_le_bytes().to_vec(),
        "w" => {
            let mut groups = vec![(len & 0x7f) as u8];
            let mut v = len >> 7;
            while v > 0 {
                groups.push((v & 0x7f) as u8 | 0x80);
                v >>= 7;
            }
            groups.reverse();
            groups
        }
        other => panic!("format {other}"),
    }
}

#[test]
fn netstring_declared_length_allocates_only_what_arrives() {
    let _g = serial();
    const SENT: usize = 200 * KIB;
    let max = 1 << 30;
    let codec = NetstringCodec::with_max_length(max);
    let (held, pk) = trickle(codec, format!("{max}:").into_bytes(), SENT, 1000);
    check_trickle("netstring", held, pk, SENT);
}

#[test]
fn chunk_size_allocates_only_what_arrives() {
    let _g = serial();
    const SENT: usize = 200 * KIB;
    let (held, pk) = trickle(ChunkCodec::new(1 << 30), Vec::new(), SENT, 1000);
    check_trickle("chunk", held, pk, SENT);
}
