//! QueuedFramed over loopback TCP against tokio-util `Framed`:
//! `queued-lines-loopback`, `switching-loopback`, `pipelined-rtt` (with
//! `pipelined-rtt-handle` and, clients on the workers,
//! `pipelined-rtt-handle-on-workers` and `pipelined-rtt-on-workers`),
//! `serve-echo`, `autocork-small-writes`, plus the physical limit
//! `limit-read`.
//!
//! The bulk scenarios follow the baseline's method: each receive gets a
//! fresh connection, set up before the clock starts; a plain blocking
//! thread then writes the pre-encoded payload in 64 KiB slices, so only the
//! receiving side differs. The sides run interleaved, round by round, and a
//! ratio is the median of the ratios within each round.

use std::io::Write;
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyframe::QueuedFramed;
use anyframe::codecs::{ChunkCodec, LineBatchCodec, LineCodec, PackFormat, PackstringCodec};
use bytes::{Buf, BufMut, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Framed, FramedRead, FramedWrite, LinesCodec};

use crate::harness::{Harness, Measured, median_ratio};

const LINES: usize = 5_000_000;
const LINE_LEN: usize = 40;
/// Most lines per `read_many` call in `queued-lines-loopback`.
const READ_MANY_LIMIT: usize = 4096;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `LINES` lines of `LINE_LEN` bytes: a zero-padded number, then `\n`.
fn lines_payload() -> Arc<Vec<u8>> {
    let mut v = Vec::with_capacity(LINES * LINE_LEN);
    for i in 0..LINES {
        let line = format!("{i:0>width$}\n", width = LINE_LEN - 1);
        v.extend_from_slice(line.as_bytes());
    }
    Arc::new(v)
}

/// Bytes per blocking `write_all` of the sender (the baseline's slices).
const SEND_SLICE: usize = 64 * 1024;

/// A receiver under test: given the connected socket, reads everything and
/// returns how many items it decoded.
type Receiver<'a> = Box<dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = u64>>> + 'a>;

/// Boxes an async receiver closure into a [`Receiver`].
fn receiver<'a, F, Fut>(f: F) -> Receiver<'a>
where
    F: Fn(TcpStream) -> Fut + 'a,
    Fut: Future<Output = u64> + 'static,
{
    Box::new(move |s| Box::pin(f(s)))
}

/// One timed receive of `payload`, the baseline's way: a blocking sender
/// thread connects first and waits for a go signal; the clock starts at the
/// go, the sender writes `SEND_SLICE`-byte slices and shuts its side down,
/// and the clock stops when the receiver has consumed everything.
fn receive_once(
    rt: &tokio::runtime::Runtime,
    payload: &Arc<Vec<u8>>,
    items: u64,
    recv: &Receiver<'_>,
) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let data = payload.clone();
    let sender = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        go_rx.recv().unwrap();
        for slice in data.chunks(SEND_SLICE) {
            s.write_all(slice).unwrap();
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let (s, _) = listener.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    let took = rt.block_on(async {
        let s = TcpStream::from_std(s).unwrap();
        let t = Instant::now();
        go_tx.send(()).unwrap();
        let n = recv(s).await;
        let took = t.elapsed();
        assert_eq!(n, items, "every item received");
        took
    });
    sender.join().unwrap();
    took
}

/// Receives `payload` through every receiver in turn, `reps` rounds, and
/// returns each one's per-round times. Interleaving matters: loopback
/// bandwidth here moves in phases lasting seconds, so sides measured in
/// separate blocks would see different machines.
fn interleaved(
    h: &Harness,
    payload: &Arc<Vec<u8>>,
    items: u64,
    receivers: &[Receiver<'_>],
) -> Vec<Vec<Duration>> {
    let rt = runtime();
    let mut times = vec![Vec::with_capacity(h.reps()); receivers.len()];
    for _ in 0..h.reps() {
        for (recv, t) in receivers.iter().zip(&mut times) {
            t.push(receive_once(&rt, payload, items, recv));
        }
    }
    times
}

/// Reads from a slice, discards writes.
struct MemIo<'a>(&'a [u8]);

impl AsyncRead for MemIo<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for MemIo<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The same 5 M lines from memory (`&[u8]` is an `AsyncRead`): the engine's
/// per-frame cost without the socket.
fn queued_lines_memory(h: &Harness, payload: &Arc<Vec<u8>>) {
    let rt = runtime();
    let ours = h.time(LINES as u64, || {
        rt.block_on(async {
            let mut conn = QueuedFramed::new(MemIo(&payload[..]));
            let mut codec = LineCodec::new();
            let mut n = 0u64;
            while let Ok(line) = conn.read_with(&mut codec).await {
                std::hint::black_box(&line);
                n += 1;
            }
            assert_eq!(n, LINES as u64);
        })
    });
    let anchor = h.time(LINES as u64, || {
        rt.block_on(async {
            let mut framed = FramedRead::new(&payload[..], LinesCodec::new());
            let mut n = 0u64;
            while let Some(line) = framed.next().await {
                std::hint::black_box(line.unwrap());
                n += 1;
            }
            assert_eq!(n, LINES as u64);
        })
    });
    h.report("queued-lines-memory", ours, anchor);
}

pub fn run(h: &Harness) {
    if h.wants("queued-lines-memory") {
        queued_lines_memory(h, &lines_payload());
    }
    if h.wants("limit-read") || h.wants("queued-lines-loopback") {
        queued_lines(h, &lines_payload());
    }
    if h.wants("switching-loopback") {
        switching(h);
    }
    if h.wants("pipelined-rtt") {
        pipelined(h);
    }
    if h.wants("serve-echo") {
        serve_echo(h);
    }
    if h.wants("autocork-small-writes") {
        autocork(h);
    }
}

/// `queued-lines-loopback`, three ways (a `LineBatch` per call, `read_many`
/// of `Line`s, one `read_with` per line), interleaved round by round with
/// its anchor, the baseline's reference decoder and the raw read
/// (`limit-read`).
fn queued_lines(h: &Harness, payload: &Arc<Vec<u8>>) {
    let items = LINES as u64;
    let receivers = [
        // limit-read: tokio's TcpStream::read into 64 KiB, no decoding.
        receiver(|mut s| async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                total += n;
            }
            (total / LINE_LEN) as u64
        }),
        receiver(|s| async move {
            let mut conn = QueuedFramed::new(s);
            let mut codec = LineCodec::new();
            let mut n = 0u64;
            while let Ok(line) = conn.read_with(&mut codec).await {
                std::hint::black_box(&line);
                n += 1;
            }
            n
        }),
        receiver(|s| async move {
            let mut framed = FramedRead::new(s, LinesCodec::new());
            let mut n = 0u64;
            while let Some(line) = framed.next().await {
                std::hint::black_box(line.unwrap());
                n += 1;
            }
            n
        }),
        // The batch API: every line a read brought, per call.
        receiver(|s| async move {
            let mut conn = QueuedFramed::new(s);
            let mut codec = LineCodec::new();
            let mut lines = Vec::with_capacity(READ_MANY_LIMIT);
            let mut n = 0u64;
            while conn
                .read_many(&mut codec, &mut lines, READ_MANY_LIMIT)
                .await
                .unwrap()
                > 0
            {
                n += std::hint::black_box(&lines).len() as u64;
                lines.clear();
            }
            n
        }),
        // Every line a read brought, as one LineBatch per call; each line
        // is borrowed and looked at.
        receiver(|s| async move {
            let mut conn = QueuedFramed::new(s);
            let mut codec = LineBatchCodec::new();
            let mut n = 0u64;
            loop {
                match conn.read_with(&mut codec).await {
                    Ok(batch) => {
                        for line in &batch {
                            std::hint::black_box(line.line());
                        }
                        n += batch.len() as u64;
                    }
                    Err(e) if e.kind() == anyframe::ErrorKind::BrokenPipe => break,
                    Err(e) => panic!("{e}"),
                }
            }
            n
        }),
        // The baseline's reference: a bare memchr + split_to decoder in a
        // 64 KiB FramedRead (zero-copy, no UTF-8, no EOL split).
        receiver(|s| async move {
            let mut framed = FramedRead::with_capacity(s, BareLines, 64 * 1024);
            let mut n = 0u64;
            while let Some(line) = framed.next().await {
                std::hint::black_box(line.unwrap());
                n += 1;
            }
            n
        }),
    ];
    let t = interleaved(h, payload, items, &receivers);
    let (limit, per_line, anchor, many, batch, reference) =
        (&t[0], &t[1], &t[2], &t[3], &t[4], &t[5]);
    let limit_rate = Measured::median_of(limit, items).rate();
    h.note(
        "limit-read",
        &format!(
            "items_per_s={limit_rate:.0} mb_per_s={:.0} ratio_vs_anchor={:.2} (tokio TcpStream::read 64 KiB, no decoding, 40-byte line equivalents)",
            limit_rate * LINE_LEN as f64 / 1e6,
            median_ratio(limit, anchor),
        ),
    );
    h.note(
        "reference-memchr-lines-loopback",
        &format!(
            "items_per_s={:.0} ratio_vs_anchor={:.2} ours_share={:.2}",
            Measured::median_of(reference, items).rate(),
            median_ratio(reference, anchor),
            median_ratio(batch, reference),
        ),
    );
    if h.wants("queued-lines-loopback") {
        // The scenario's figure is the line decoder that suits bulk lines
        // (every line buffered per frame); the per-line frames beside it.
        let rows = [
            (
                "queued-lines-loopback",
                batch,
                "read_with(LineBatchCodec) target=2.5",
            ),
            (
                "queued-lines-loopback-read-many",
                many,
                "read_many(LineCodec)",
            ),
            (
                "queued-lines-loopback-read-with",
                per_line,
                "read_with(LineCodec)",
            ),
        ];
        for (scenario, times, api) in rows {
            h.report_rounds(
                scenario,
                times,
                anchor,
                items,
                &format!(
                    "api={api} share_of_limit_read={:.2}",
                    median_ratio(times, limit)
                ),
            );
        }
    }
}

/// The baseline's hand-rolled reference line decoder.
struct BareLines;

impl Decoder for BareLines {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        Ok(memchr::memchr(b'\n', src).map(|i| src.split_to(i + 1)))
    }
}

// ----- switching ------------------------------------------------------------

const SWITCH_ROUNDS: usize = 1_000_000;

/// One round: a 20-byte line, a 4-byte length + 12-byte frame, a 16-byte chunk.
fn switching_payload() -> Arc<Vec<u8>> {
    let mut v = BytesMut::with_capacity(SWITCH_ROUNDS * 56);
    for i in 0..SWITCH_ROUNDS {
        v.put_slice(format!("{:0>19}\n", i).as_bytes());
        v.put_u32(12);
        v.put_slice(b"twelve bytes");
        v.put_slice(b"sixteen bytes!!!");
    }
    Arc::new(v.to_vec())
}

/// The anchor: one hand-written decoder that knows the fixed rotation.
#[derive(Default)]
struct Combined {
    phase: u8,
}

impl Decoder for Combined {
    type Item = bytes::Bytes;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<bytes::Bytes>, std::io::Error> {
        let frame = match self.phase {
            0 => match memchr::memchr(b'\n', src) {
                Some(i) => {
                    let mut l = src.split_to(i + 1);
                    l.truncate(i);
                    l.freeze()
                }
                None => return Ok(None),
            },
            1 => {
                if src.len() < 4 {
                    return Ok(None);
                }
                let n = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
                if src.len() < 4 + n {
                    return Ok(None);
                }
                src.advance(4);
                src.split_to(n).freeze()
            }
            _ => {
                if src.len() < 16 {
                    return Ok(None);
                }
                src.split_to(16).freeze()
            }
        };
        self.phase = (self.phase + 1) % 3;
        Ok(Some(frame))
    }
}

fn switching(h: &Harness) {
    let payload = switching_payload();
    let items = (SWITCH_ROUNDS * 3) as u64;
    let receivers = [
        receiver(|s| async move {
            let mut conn = QueuedFramed::new(s);
            let mut line = LineCodec::new();
            let mut pack = PackstringCodec::new(PackFormat::U32Be);
            let mut chunk = ChunkCodec::new(16);
            let mut n = 0u64;
            loop {
                let Ok(l) = conn.read_with(&mut line).await else {
                    break;
                };
                std::hint::black_box(l);
                std::hint::black_box(conn.read_with(&mut pack).await.unwrap());
                std::hint::black_box(conn.read_with(&mut chunk).await.unwrap());
                n += 3;
            }
            n
        }),
        receiver(|s| async move {
            let mut framed = FramedRead::new(s, Combined::default());
            let mut n = 0u64;
            while let Some(f) = framed.next().await {
                std::hint::black_box(f.unwrap());
                n += 1;
            }
            n
        }),
    ];
    let t = interleaved(h, &payload, items, &receivers);
    h.report_rounds("switching-loopback", &t[0], &t[1], items, "target=0.95");
}

// ----- pipelined round trips ------------------------------------------------

const RT_REQUESTS: usize = 200_000;
const IN_FLIGHT: usize = 100;

/// Which echo server to run.
#[derive(Clone, Copy)]
enum Server {
    Queued,
    /// `service::serve` with an echo service.
    Serve,
    FramedForward,
    FramedSendEach,
}

/// Which client to run.
#[derive(Clone, Copy, PartialEq)]
enum ClientKind {
    /// QueuedFramed, sequential API.
    Queued,
    /// A spawned Handle with tickets (`call`: a write and a read queued
    /// together, a oneshot per request).
    Handle,
    /// tokio-util Framed, writer and reader tasks.
    Framed,
}

/// One pipelined run: `client` against `server` over loopback. With
/// `on_workers` the client runs in a spawned task, on the runtime's
/// workers, instead of in `block_on` on the calling thread.
fn pipelined_once(
    rt: &tokio::runtime::Runtime,
    server: Server,
    client: ClientKind,
    on_workers: bool,
) {
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            match server {
                Server::Queued => {
                    let mut conn = QueuedFramed::builder().autocork(true).build(s);
                    let mut codec = LineCodec::new();
                    while let Ok(line) = conn.read_with(&mut codec).await {
                        conn.push_write(LineCodec::new(), line.line()).unwrap();
                    }
                    let _ = conn.flush().await;
                }
                Server::Serve => {
                    let echo = tower::service_fn(|line: anyframe::codecs::Line| async move {
                        Ok::<_, std::convert::Infallible>(line.into_line())
                    });
                    anyframe::service::serve(s, LineCodec::new(), LineCodec::new(), echo)
                        .await
                        .unwrap();
                }
                Server::FramedForward => {
                    let (sink, stream) = Framed::new(s, LinesCodec::new()).split();
                    let _ = stream.forward(sink).await;
                }
                Server::FramedSendEach => {
                    let mut framed = Framed::new(s, LinesCodec::new());
                    while let Some(Ok(line)) = framed.next().await {
                        framed.send(line).await.unwrap();
                    }
                }
            }
        });
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let run = pipelined_client(s, client);
        if on_workers {
            tokio::spawn(run).await.unwrap();
        } else {
            run.await;
        }
        srv.await.unwrap();
    });
}

/// The client side of a pipelined run: `RT_REQUESTS` lines, at most
/// `IN_FLIGHT` unanswered.
async fn pipelined_client(s: TcpStream, client: ClientKind) {
    let req = "0123456789012345678901234567890123456789";
    if client == ClientKind::Handle {
        let (handle, _driver) = QueuedFramed::builder().autocork(true).build(s).spawn();
        let mut window = std::collections::VecDeque::with_capacity(IN_FLIGHT);
        for _ in 0..RT_REQUESTS {
            if window.len() == IN_FLIGHT {
                let t: anyframe::Ticket<_> = window.pop_front().unwrap();
                std::hint::black_box(t.await.unwrap());
            }
            // `call`: the write and its read queued together, as a
            // pipelined client that shares its handle must.
            window.push_back(handle.call(LineCodec::new(), req, LineCodec::new()));
        }
        for t in window {
            std::hint::black_box(t.await.unwrap());
        }
        handle.push_shutdown().unwrap();
        handle.flush().await.unwrap();
    } else if client == ClientKind::Queued {
        // The sequential API: top the window up with writes (queued,
        // not written), then read one answer; autocork writes the batch
        // when the read would wait.
        let mut conn = QueuedFramed::builder().autocork(true).build(s);
        let mut codec = LineCodec::new();
        let (mut sent, mut in_flight) = (0usize, 0usize);
        for _ in 0..RT_REQUESTS {
            while in_flight < IN_FLIGHT && sent < RT_REQUESTS {
                conn.push_write(LineCodec::new(), req).unwrap();
                in_flight += 1;
                sent += 1;
            }
            std::hint::black_box(conn.read_with(&mut codec).await.unwrap());
            in_flight -= 1;
        }
        conn.shutdown_write().await.unwrap();
    } else {
        // Best practice: a writer task that feeds while permits are
        // free and flushes only when it would wait; a reader task that
        // returns one permit per response.
        let (mut sink, mut stream) = Framed::new(s, LinesCodec::new()).split();
        let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let p = permits.clone();
        let writer = tokio::spawn(async move {
            for _ in 0..RT_REQUESTS {
                let permit = match p.try_acquire() {
                    Ok(permit) => permit,
                    Err(_) => {
                        sink.flush().await.unwrap();
                        p.acquire().await.unwrap()
                    }
                };
                permit.forget();
                sink.feed(req.to_string()).await.unwrap();
            }
            sink.close().await.unwrap();
        });
        for _ in 0..RT_REQUESTS {
            std::hint::black_box(stream.next().await.unwrap().unwrap());
            permits.add_permits(1);
        }
        writer.await.unwrap();
    }
}

fn pipelined(h: &Harness) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let items = RT_REQUESTS as u64;
    // Interleaved round by round, like the loopback rows: wake-up latency
    // (what a round trip here mostly is) moves with the machine's phases.
    // The last three: the Handle client, the anchor's client and the
    // sequential client again, each in a spawned task. On the calling thread every hand-over to the
    // client is a wake across threads, which the main rows mostly measure;
    // on the workers what remains is the cost per request.
    let sides = [
        (Server::Queued, ClientKind::Queued, false),
        (Server::FramedForward, ClientKind::Framed, false),
        (Server::FramedSendEach, ClientKind::Framed, false),
        (Server::Queued, ClientKind::Handle, false),
        (Server::Queued, ClientKind::Handle, true),
        (Server::FramedForward, ClientKind::Framed, true),
        (Server::Queued, ClientKind::Queued, true),
    ];
    let mut t = vec![Vec::with_capacity(h.reps()); sides.len()];
    for _ in 0..h.reps() {
        for (&(server, client, on_workers), times) in sides.iter().zip(&mut t) {
            let start = Instant::now();
            pipelined_once(&rt, server, client, on_workers);
            times.push(start.elapsed());
        }
    }
    let (ours, best, each, handle) = (&t[0], &t[1], &t[2], &t[3]);
    h.report_rounds(
        "pipelined-rtt",
        ours,
        best,
        items,
        &format!(
            "ratio_vs_flush_per_response={:.2} target=1.0",
            median_ratio(ours, each)
        ),
    );
    // The same through a spawned Handle (tickets across tasks).
    h.report_rounds("pipelined-rtt-handle", handle, best, items, "");
    h.report_rounds(
        "pipelined-rtt-handle-on-workers",
        &t[4],
        &t[5],
        items,
        "context: both clients in spawned tasks",
    );
    h.report_rounds(
        "pipelined-rtt-on-workers",
        &t[6],
        &t[5],
        items,
        "context: both clients in spawned tasks",
    );
}

/// `serve-echo`: the tower server loop (`service::serve`, an echo
/// service) against the cheapest `Framed` echo (`forward`, no service),
/// the same `Framed` client against both in spawned tasks, 100 requests
/// in flight. Context, no target: the loop's cost per request over a
/// server that does nothing but echo.
fn serve_echo(h: &Harness) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sides = [Server::Serve, Server::FramedForward];
    let mut t = vec![Vec::with_capacity(h.reps()); sides.len()];
    for _ in 0..h.reps() {
        for (&server, times) in sides.iter().zip(&mut t) {
            let start = Instant::now();
            pipelined_once(&rt, server, ClientKind::Framed, true);
            times.push(start.elapsed());
        }
    }
    h.report_rounds(
        "serve-echo",
        &t[0],
        &t[1],
        RT_REQUESTS as u64,
        "context: service::serve vs a Framed forward echo",
    );
}

// ----- autocork: many small writes ------------------------------------------

const SMALL_MSGS: usize = 1_000_000;

/// Counts write calls on the way to the socket.
struct CountWrites<T> {
    inner: T,
    calls: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for CountWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Sends SMALL_MSGS 16-byte messages to a draining reader; returns write calls.
fn small_writes_once(rt: &tokio::runtime::Runtime, ours: bool) -> u64 {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return total;
                }
                total += n;
            }
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let io = CountWrites { inner: s, calls: c };
        let msg = &b"0123456789abcdef"[..];
        if ours {
            let (handle, driver) = QueuedFramed::builder().autocork(true).build(io).spawn();
            for i in 0..SMALL_MSGS {
                handle.push_bytes(msg).unwrap();
                if i % 1024 == 1023 {
                    // Let the driver run, as a real producer task would
                    // between bursts; backpressure keeps memory bounded.
                    handle.ready_to_write().await.unwrap();
                }
            }
            handle.push_shutdown().unwrap();
            handle.flush().await.unwrap();
            drop(handle);
            let _ = driver.await;
        } else {
            let mut w = FramedWrite::new(io, tokio_util::codec::BytesCodec::new());
            for _ in 0..SMALL_MSGS {
                w.send(bytes::Bytes::from_static(msg)).await.unwrap();
            }
            SinkExt::<bytes::Bytes>::close(&mut w).await.unwrap();
        }
        assert_eq!(reader.await.unwrap(), SMALL_MSGS * 16);
    });
    calls.load(Ordering::Relaxed)
}

fn autocork(h: &Harness) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let items = SMALL_MSGS as u64;
    let mut ours_calls = 0;
    let mut anchor_calls = 0;
    let ours = h.time(items, || ours_calls = small_writes_once(&rt, true));
    let anchor = h.time(items, || anchor_calls = small_writes_once(&rt, false));
    h.report_with(
        "autocork-small-writes",
        ours,
        anchor,
        &format!(
            "ours_writes_per_msg={:.4} anchor_writes_per_msg={:.4}",
            ours_calls as f64 / items as f64,
            anchor_calls as f64 / items as f64
        ),
    );
}
