//! Memory against a hostile peer, counted by a global allocator: large
//! declared lengths (within the limit) followed by a trickle, a peer that
//! keeps the socket full so every read fills all the room the read buffer
//! has, nesting past the depth limits, lines without an end, and what the
//! server loop holds per slow client and after a burst. The peer is an
//! in-memory source that makes its bytes as they are read (nothing of the
//! frame exists before the engine reads it), so the heap counted is the
//! engine's and the codec's. The tests run one at a time (`serial`), each
//! polling by hand or on a single-threaded runtime: no timing is involved.
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
    /// The body's bytes, repeated.
    fill: &'static [u8],
    /// Where in `fill` the body goes on.
    fill_at: usize,
}

/// What [`Source`] sends as a body unless told otherwise.
static FILL_X: [u8; 4096] = [b'x'; 4096];

impl Source {
    fn new(head: Vec<u8>, body: usize, piece: usize) -> Source {
        Source {
            head,
            sent_head: 0,
            body,
            piece,
            allowance: usize::MAX,
            fill: &FILL_X,
            fill_at: 0,
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
        self.body -= b;
        n -= b;
        let mut left = b;
        while left > 0 {
            let at = self.fill_at;
            let k = left.min(self.fill.len() - at);
            buf.put_slice(&self.fill[at..at + k]);
            self.fill_at = (at + k) % self.fill.len();
            left -= k;
        }
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

/// Prints `what`'s peak for a frame of `len` bytes and checks it against
/// the memory rule's [`bound`].
fn check_peak(what: &str, pk: usize, len: usize) {
    println!("{what}: peak {} KiB ({:.2}x)", pk / KIB, ratio(pk, len));
    assert!(
        pk <= bound(len),
        "{what}: peak {pk} over {} ({:.2}x)",
        bound(len),
        ratio(pk, len)
    );
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
    check_peak("chunk 8 MiB, full socket", pk, LEN);
}

#[test]
fn packstring_from_a_full_socket_peaks_near_what_it_holds() {
    let _g = serial();
    const LEN: usize = 8 * MIB;
    let codec = PackstringCodec::new(PackFormat::U32Be);
    let head = (LEN as u32).to_be_bytes().to_vec();
    let pk = full_socket_peak(codec, head, LEN);
    check_peak("packstring 8 MiB, full socket", pk, LEN);
}

#[test]
fn netstring_from_a_full_socket_peaks_near_what_it_holds() {
    let _g = serial();
    const LEN: usize = 8 * MIB;
    let codec = NetstringCodec::with_max_length(2 * LEN);
    let head = format!("{LEN}:").into_bytes();
    // The payload only: the read waits for the comma that never comes.
    let src = Source::new(head, LEN, usize::MAX);
    let mut conn = QueuedFramed::builder().rbuf_max(None).build(src);
    let base = reset_peak();
    let got = poll_until_stall(conn.read(codec));
    assert!(got.is_none(), "the comma never comes");
    let pk = peak() - base;
    check_peak("netstring 8 MiB, full socket", pk, LEN);
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
        heap().saturating_sub(base)
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

// ----- JSON and CBOR: long texts trickled, deep nesting --------------------------

#[test]
fn json_long_string_trickled_holds_only_what_arrives() {
    let _g = serial();
    const SENT: usize = 200 * KIB;
    let (held, pk) = trickle(
        anyframe::codecs::JsonCodec::<serde_json::Value>::new(),
        b"[\"".to_vec(),
        SENT,
        1000,
    );
    check_trickle("json string", held, pk, SENT);
}

#[test]
fn json_deep_nesting_trickled_holds_only_what_arrives() {
    let _g = serial();
    const SENT: usize = 100;
    // Within the depth limit: the reader waits for more.
    let mut src = Source::new(Vec::new(), 100, 1);
    src.fill = &[b'['; 4096];
    let mut conn = QueuedFramed::new(src);
    let base = reset_peak();
    assert!(
        poll_until_stall(conn.read(anyframe::codecs::JsonCodec::<serde_json::Value>::new()))
            .is_none()
    );
    let held = heap().saturating_sub(base);
    let pk = peak() - base;
    check_trickle("json nesting", held, pk, SENT);
}

#[test]
fn cbor_long_byte_string_trickled_holds_only_what_arrives() {
    let _g = serial();
    const SENT: usize = 200 * KIB;
    // A byte string of 2^30 bytes, within a limit that allows it.
    let mut head = vec![0x5a];
    head.extend_from_slice(&(1u32 << 30).to_be_bytes());
    let codec = anyframe::codecs::CborCodec::<serde_cbor::Value>::with_limits(1 << 31, 128);
    let (held, pk) = trickle(codec, head, SENT, 1000);
    check_trickle("cbor bytes", held, pk, SENT);
}

#[test]
fn cbor_huge_array_count_trickled_holds_only_what_arrives() {
    let _g = serial();
    const SENT: usize = 200 * KIB;
    // An array announcing 2^30 items (within the size limit, at a byte
    // each), then small integers (0x01) trickled.
    let mut head = vec![0x9a];
    head.extend_from_slice(&(1u32 << 30).to_be_bytes());
    let codec = anyframe::codecs::CborCodec::<serde_cbor::Value>::with_limits(1 << 31, 128);
    let mut src = Source::new(head, usize::MAX, 1000);
    src.fill = &[0x01; 4096];
    src.allowance = 5 + SENT;
    let mut conn = QueuedFramed::builder().rbuf_max(None).build(src);
    let base = reset_peak();
    let got = poll_until_stall(conn.read(codec));
    assert!(got.is_none(), "{got:?}");
    let held = heap().saturating_sub(base);
    let pk = peak() - base;
    check_trickle("cbor array", held, pk, SENT);
}

// ----- the server loop: many slow clients, a burst then quiet -----------------

/// Runs `f` on a single-threaded runtime that is gone before this
/// returns, so that its teardown frees nothing during the next test's
/// measurement.
fn on_a_runtime<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let out = rt.block_on(f);
    drop(rt);
    out
}

/// Runs the other tasks until they all wait (no timers are involved).
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

type EchoService = tower::util::ServiceFn<
    fn(
        anyframe::codecs::Line,
    ) -> std::future::Ready<Result<bytes::Bytes, std::convert::Infallible>>,
>;

fn echo() -> EchoService {
    fn call(
        line: anyframe::codecs::Line,
    ) -> std::future::Ready<Result<bytes::Bytes, std::convert::Infallible>> {
        std::future::ready(Ok(line.into_frame()))
    }
    tower::service_fn(call as fn(_) -> _)
}

/// Heap per connection of `n` server loops, each of whose clients sent
/// `partial` bytes of a line and then went quiet.
async fn slow_clients(n: usize, partial: usize) -> f64 {
    use tokio::io::AsyncWriteExt;
    let mut clients = Vec::with_capacity(n);
    let mut servers = Vec::with_capacity(n);
    let mut ios = Vec::with_capacity(n);
    for _ in 0..n {
        let (s, c) = tokio::io::duplex(4096);
        ios.push(s);
        clients.push(c);
    }
    settle().await;
    let base = heap();
    for s in ios {
        let codec = anyframe::codecs::LineCodec::new();
        servers.push(tokio::spawn(
            anyframe::service::serve(s, codec.clone(), anyframe::codecs::RawCodec::new(), echo())
                .into_future(),
        ));
    }
    let line = vec![b'x'; partial];
    for c in &mut clients {
        c.write_all(&line).await.unwrap();
    }
    settle().await;
    let per_conn = (heap().saturating_sub(base)) as f64 / n as f64;
    for c in &mut clients {
        c.write_all(b"\n").await.unwrap();
    }
    drop(clients);
    for s in servers {
        // Each answers its line and ends at end of input.
        let _ = s.await.unwrap();
    }
    per_conn
}

#[test]
fn serve_with_many_slow_clients_holds_little_per_connection() {
    let _g = serial();
    on_a_runtime(async {
        let idle = slow_clients(200, 0).await;
        let partial = slow_clients(200, 100).await;
        println!("serve: {idle:.0} B per idle connection, {partial:.0} B with 100 B of a line in");
    });
}

/// A server loop after a burst of large pipelined requests, all answered
/// (a peer that sends them as fast as they are read and takes every
/// answer at once), the peer then quiet: what the connection keeps.
#[test]
fn serve_after_a_burst_keeps_little() {
    let _g = serial();
    on_a_runtime(async {
        const LINES: usize = 100;
        const LINE: usize = 64 * KIB;
        let mut line = vec![b'y'; LINE];
        line.push(b'\n');
        let line: &'static [u8] = Box::leak(line.into_boxed_slice());
        let quiet = Source::new(Vec::new(), 0, usize::MAX);
        let mut burst = Source::new(Vec::new(), LINES * line.len(), usize::MAX);
        burst.fill = line;
        settle().await;
        let mut kept = Vec::new();
        for src in [quiet, burst] {
            let base = heap();
            let codec = anyframe::codecs::LineCodec::new();
            let server = tokio::spawn(
                anyframe::service::serve(
                    src,
                    codec.clone(),
                    anyframe::codecs::RawCodec::new(),
                    echo(),
                )
                .into_future(),
            );
            settle().await;
            kept.push(heap().saturating_sub(base));
            server.abort();
            let _ = server.await;
        }
        let (idle, after) = (kept[0], kept[1]);
        println!(
            "serve after {LINES} x {} KiB: idle {idle} B, keeps {after} B",
            LINE / KIB
        );
        assert!(
            after <= idle + 16 * KIB,
            "keeps {after} B after a burst (idle: {idle} B)"
        );
    });
}

#[test]
fn json_nesting_past_the_depth_limit_fails_within_one_read() {
    let _g = serial();
    // A peer with a megabyte of `[` ready: refused at depth 129.
    let mut src = Source::new(Vec::new(), MIB, usize::MAX);
    src.fill = &[b'['; 4096];
    let mut conn = QueuedFramed::builder().rbuf_max(None).build(src);
    let base = reset_peak();
    let got = poll_until_stall(conn.read(anyframe::codecs::JsonCodec::<serde_json::Value>::new()));
    let pk = peak() - base;
    let e = got.expect("refused at once").unwrap_err();
    println!("json 1 MiB of '[': {e}; peak {} KiB", pk / KIB);
    assert!(pk <= bound(0), "peak {pk} B");
}

#[test]
fn cbor_nesting_past_the_depth_limit_fails_within_one_read() {
    let _g = serial();
    // A megabyte of one-element array heads: refused at depth 129.
    let mut src = Source::new(Vec::new(), MIB, usize::MAX);
    src.fill = &[0x81; 4096];
    let mut conn = QueuedFramed::builder().rbuf_max(None).build(src);
    let base = reset_peak();
    let got = poll_until_stall(conn.read(anyframe::codecs::CborCodec::<serde_cbor::Value>::new()));
    let pk = peak() - base;
    let e = got.expect("refused at once").unwrap_err();
    println!("cbor 1 MiB of 0x81: {e}; peak {} KiB", pk / KIB);
    assert!(pk <= bound(0), "peak {pk} B");
}

// ----- lines without an end -----------------------------------------------------

#[test]
fn an_endless_line_under_the_discard_policy_holds_little() {
    let _g = serial();
    const SENT: usize = 4 * MIB;
    let codec = anyframe::codecs::LineCodec::builder()
        .max_length(64 * KIB)
        .overflow(anyframe::codecs::OverflowPolicy::Discard)
        .build()
        .unwrap();
    let (held, pk) = trickle(codec, Vec::new(), SENT, 16 * KIB);
    println!(
        "discarded line: {} KiB sent, held {} KiB, peak {} KiB",
        SENT / KIB,
        held / KIB,
        pk / KIB
    );
    assert!(held <= bound(64 * KIB), "held {held} B");
    assert!(pk <= bound(64 * KIB), "peak {pk} B");
}

#[test]
fn an_endless_regex_frame_holds_at_most_its_limit() {
    let _g = serial();
    const SENT: usize = 4 * MIB;
    let codec = anyframe::codecs::RegexCodec::builder(regex::bytes::Regex::new("x*y").unwrap())
        .max_length(64 * KIB)
        .build()
        .unwrap();
    let mut src = Source::new(Vec::new(), SENT, 16 * KIB);
    src.allowance = SENT;
    let mut conn = QueuedFramed::builder().rbuf_max(None).build(src);
    let base = reset_peak();
    let got = poll_until_stall(conn.read(codec));
    let pk = peak() - base;
    println!(
        "endless regex frame: {:?}; peak {} KiB",
        got.as_ref().map(|r| r.as_ref().map(|_| ())),
        pk / KIB
    );
    assert!(pk <= bound(64 * KIB), "peak {pk} B");
}

// ----- what stays once a large frame is taken ---------------------------------

/// A large frame read, the buffer left empty and no read queued (the
/// application busy with the frame, then done with it): the connection
/// keeps nothing of the frame's buffer.
#[test]
fn an_emptied_read_buffer_does_not_pin_a_dropped_frame() {
    let _g = serial();
    const LEN: usize = 8 * MIB;
    let src = Source::new(Vec::new(), LEN, usize::MAX);
    let base = heap();
    let mut conn = QueuedFramed::builder().rbuf_max(None).build(src);
    let frame = poll_until_stall(conn.read(ChunkCodec::new(LEN)))
        .expect("the whole frame is there")
        .unwrap();
    assert_eq!(frame.len(), LEN);
    drop(frame);
    let kept = heap().saturating_sub(base);
    println!(
        "after an 8 MiB frame, dropped: the connection keeps {} KiB",
        kept / KIB
    );
    assert!(kept <= 64 * KIB, "keeps {kept} B");
}

/// The same on a spawned connection: the driver keeps nothing of a large
/// frame's buffer once the frame is dropped, with no read queued.
#[test]
fn a_spawned_connection_does_not_pin_a_dropped_frame() {
    let _g = serial();
    on_a_runtime(async {
        const LEN: usize = 8 * MIB;
        let src = Source::new(Vec::new(), LEN, usize::MAX);
        let base = heap();
        let (handle, driver) = QueuedFramed::builder().rbuf_max(None).build(src).spawn();
        let driver = tokio::spawn(driver);
        let frame = handle.read(ChunkCodec::new(LEN)).await.unwrap();
        assert_eq!(frame.len(), LEN);
        drop(frame);
        settle().await;
        let kept = heap().saturating_sub(base);
        println!(
            "spawned, after an 8 MiB frame, dropped: keeps {} KiB",
            kept / KIB
        );
        handle.destroy();
        drop(handle);
        let _ = driver.await;
        assert!(kept <= 64 * KIB, "keeps {kept} B");
    });
}

// ----- output: one large encoded item -----------------------------------------

/// A transport whose peer reads nothing: every write waits.
struct Stalled;

impl AsyncRead for Stalled {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Stalled {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Pending
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

/// Queues one large item behind a peer that reads nothing and checks that
/// the heap it holds, and the peak while it was encoded, stay within 1.3
/// times the `queued` bytes it encodes to.
fn assert_queued_item_near_its_size<E, I>(what: &str, encoder: E, item: I, queued: usize)
where
    E: tokio_util::codec::Encoder<I>,
    E::Error: Into<anyframe::Error>,
{
    let mut conn = QueuedFramed::new(Stalled);
    // A small item first: the tail is in use, as between answers.
    conn.push_bytes(&b"hello\n"[..]).unwrap();
    let base = reset_peak();
    conn.push_write(encoder, item).unwrap();
    let held = heap().saturating_sub(base);
    let pk = peak() - base;
    assert_eq!(conn.write_buffered(), queued + 6, "{what}: bytes queued");
    println!(
        "{what}: {} KiB queued, heap {} KiB ({:.2}x), peak {} KiB ({:.2}x)",
        queued / KIB,
        held / KIB,
        ratio(held, queued),
        pk / KIB,
        ratio(pk, queued)
    );
    assert!(
        held as f64 <= 1.3 * queued as f64,
        "{what}: holds {held} B for {queued} B"
    );
    assert!(
        pk as f64 <= 1.3 * queued as f64,
        "{what}: peak {pk} B for {queued} B"
    );
}

#[test]
fn a_large_json_item_queued_holds_near_its_size() {
    let _g = serial();
    let value = serde_json::Value::String("z".repeat(6 * MIB));
    let codec = anyframe::codecs::JsonCodec::<serde_json::Value>::new();
    assert_queued_item_near_its_size("json 6 MiB", codec, &value, 6 * MIB + 2);
}

#[test]
fn a_large_cbor_item_queued_holds_near_its_size() {
    let _g = serial();
    let value = serde_cbor::Value::Bytes(vec![7; 6 * MIB]);
    let codec = anyframe::codecs::CborCodec::<serde_cbor::Value>::new();
    assert_queued_item_near_its_size("cbor 6 MiB", codec, &value, 6 * MIB + 5);
}

#[test]
fn a_large_cbor_array_queued_holds_near_its_size() {
    let _g = serial();
    // 360,000 small items (just over 1 MiB), written one at a time by the
    // serializer.
    let value = serde_cbor::Value::Array(vec![serde_cbor::Value::Integer(1000); 360_000]);
    let codec = anyframe::codecs::CborCodec::<serde_cbor::Value>::new();
    assert_queued_item_near_its_size("cbor array", codec, &value, 5 + 3 * 360_000);
}

/// Whitespace before a text stays in the buffer (nothing is consumed
/// before a frame is complete) and counts against the size limit.
#[test]
fn json_endless_whitespace_is_bounded_by_the_size_limit() {
    let _g = serial();
    const MAX: usize = MIB;
    let mut src = Source::new(Vec::new(), usize::MAX, 16 * KIB);
    src.fill = &[b' '; 4096];
    src.allowance = 2 * MAX;
    let mut conn = QueuedFramed::builder().rbuf_max(None).build(src);
    let codec = anyframe::codecs::JsonCodec::<serde_json::Value>::builder()
        .max_size(MAX)
        .build();
    let base = reset_peak();
    let got = poll_until_stall(conn.read(codec));
    let pk = peak() - base;
    println!("json whitespace: {got:?}; peak {} KiB", pk / KIB);
    assert!(matches!(got, Some(Err(_))), "refused past the size limit");
    assert!(pk <= bound(MAX), "peak {pk} B");
}

#[test]
fn cbor_endless_tags_are_refused_early() {
    let _g = serial();
    // Tag heads nest like containers: a megabyte of them is refused at
    // the depth limit, not kept.
    let mut src = Source::new(Vec::new(), MIB, 16 * KIB);
    src.fill = &[0xc1; 4096];
    let mut conn = QueuedFramed::builder().rbuf_max(None).build(src);
    let base = reset_peak();
    let got = poll_until_stall(conn.read(anyframe::codecs::CborCodec::<serde_cbor::Value>::new()));
    let pk = peak() - base;
    println!("cbor tags: {got:?}; peak {} KiB", pk / KIB);
    assert!(matches!(got, Some(Err(_))));
    assert!(pk <= bound(0), "peak {pk} B");
}

/// A transport whose peer takes nothing until `open`, then everything.
struct Gate {
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Gate {
    fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl AsyncRead for Gate {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Gate {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        if self.is_open() {
            Poll::Ready(Ok(b.len()))
        } else {
            Poll::Pending
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.is_open() {
            Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
        } else {
            Poll::Pending
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Many buffers queued by reference behind a peer that reads nothing,
/// then all written: the connection keeps nothing of the burst.
#[test]
fn a_drained_burst_of_chained_buffers_leaves_nothing_behind() {
    let _g = serial();
    const PIECES: usize = 8192;
    let piece = bytes::Bytes::from(vec![b'c'; KIB]);
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let base = heap();
    let mut conn = QueuedFramed::new(Gate { open: open.clone() });
    let idle = heap().saturating_sub(base);
    for _ in 0..PIECES {
        // Each a buffer of its own, as answers split off reads are.
        conn.push_bytes(piece.slice(..)).unwrap();
    }
    assert_eq!(conn.write_buffered(), PIECES * KIB);
    // The peer reads again.
    open.store(true, std::sync::atomic::Ordering::Relaxed);
    {
        let mut flush = std::pin::pin!(conn.flush());
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // The engine may yield between writes: poll until done.
        let done = (0..100_000).find_map(|_| match flush.as_mut().poll(&mut cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        });
        done.expect("written").unwrap();
    }
    assert_eq!(conn.write_buffered(), 0);
    let kept = heap().saturating_sub(base);
    drop(piece);
    println!("after {PIECES} chained buffers drained: idle {idle} B, keeps {kept} B");
    assert!(kept <= idle + 16 * KIB, "keeps {kept} B (idle: {idle} B)");
}
