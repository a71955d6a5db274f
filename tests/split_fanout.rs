//! The transport fan-out (WQ-1) and the timers (TO-3) in orderings chosen
//! to break them: a `QueuedFramed` whose write side once waited, used from
//! one task, split across threads, spawned, taken apart, over TLS.
#![cfg(any(feature = "tls", feature = "rustls"))]

mod support;

#[path = "support/pki.rs"]
mod pki;
#[path = "support/split.rs"]
mod split;
#[path = "support/timing.rs"]
mod timing;

use split::{counted, counter, pair, within};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use timing::Eater;

use anyframe::codecs::LineCodec;
use anyframe::tls::{TlsBackend, TlsServer};
use anyframe::{QueuedFramed, Timeout};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::codec::BytesCodec;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn server_on(b: TlsBackend) -> TlsServer {
    pki::server_on(b, &pki::pki().server)
}

fn load(c: &Arc<AtomicUsize>) -> usize {
    c.load(Ordering::SeqCst)
}

/// A transport that counts its polls.
struct Counting<T> {
    inner: T,
    reads: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
}

impl<T> Counting<T> {
    fn new(inner: T) -> (Self, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (r, w) = (counter(), counter());
        (
            Counting {
                inner,
                reads: r.clone(),
                writes: w.clone(),
            },
            r,
            w,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

const BIG: usize = 8 * 1024 * 1024;

/// Queues `BIG` bytes and gives a flush up after 50 ms: the write side has
/// waited, so the fan-out is on from now on.
async fn fan_out<IO, C>(conn: &mut QueuedFramed<IO, C>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    conn.push_bytes(Bytes::from(vec![b'x'; BIG])).unwrap();
    let r = tokio::time::timeout(MS(50), conn.flush()).await;
    assert!(r.is_err(), "the flush cannot finish: {r:?}");
}

/// Reads and checks `n` bytes of `b'x'` from the peer.
async fn drain_x(peer: &mut (impl AsyncRead + Unpin), n: usize) {
    let mut got = 0;
    let mut buf = vec![0u8; 256 * 1024];
    while got < n {
        let k = peer
            .read(&mut buf[..(n - got).min(256 * 1024)])
            .await
            .unwrap();
        assert!(k > 0, "EOF after {got}");
        assert!(buf[..k].iter().all(|&c| c == b'x'));
        got += k;
    }
}

// ======================================================================
// Idea 2: one task, no split, fan-out on.
// ======================================================================

/// One task: a flush gave up (fan-out on), then a `select!` loop of reads
/// against a 10 ms tick on a silent peer. The reads must stay quiet (one
/// poll per tick), then hear the peer's line; the flush then finishes once
/// the peer reads.
#[tokio::test]
async fn one_task_select_loop_after_fanout_quiet_then_hears() {
    let (ours, mut peer) = pair().await;
    let mut conn = QueuedFramed::with_codec(ours, LineCodec::new());
    fan_out(&mut conn).await;
    let polls = counter();
    let mut ticks = 0usize;
    let t0 = tokio::time::Instant::now();
    {
        let mut next = std::pin::pin!(counted(conn.next(), polls.clone()));
        let mut iv = tokio::time::interval(MS(10));
        while t0.elapsed() < MS(500) {
            tokio::select! {
                r = &mut next => panic!("a frame from a silent peer: {r:?}"),
                _ = iv.tick() => ticks += 1,
            }
        }
    }
    let p = load(&polls);
    assert!(
        p <= 2 * ticks + 20,
        "{p} polls of the read over {ticks} ticks"
    );
    // Now the peer writes a line (without reading first): the read hears it.
    peer.write_all(b"hello\n").await.unwrap();
    let line = within(MS(2000), "the read hears hello", conn.next()).await;
    assert_eq!(line.unwrap().unwrap().line(), b"hello");
    // The peer reads everything; the flush finishes.
    let reader = tokio::spawn(async move {
        drain_x(&mut peer, BIG).await;
        peer
    });
    within(MS(5000), "flush after the peer read", conn.flush())
        .await
        .unwrap();
    within(MS(5000), "peer", reader).await.unwrap();
}

/// One task: the read waits (no tick), the peer reads all output slowly
/// while never writing. The task is woken by the write readiness that the
/// fan waker carries (slot 1 holds the old flush waker, then nothing):
/// the count of polls of `next()` while the peer drains 8 MiB stays small
/// (no read-side spin caused by write events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_task_read_while_peer_drains_not_spinning() {
    let (ours, mut peer) = pair().await;
    let mut conn = QueuedFramed::with_codec(ours, LineCodec::new());
    fan_out(&mut conn).await;
    let polls = counter();
    let reader = tokio::spawn(async move {
        tokio::time::sleep(MS(100)).await;
        drain_x(&mut peer, BIG).await;
        tokio::time::sleep(MS(200)).await;
        peer.write_all(b"done\n").await.unwrap();
        peer
    });
    let line = within(
        MS(8000),
        "the read hears done (it also writes the output)",
        counted(conn.next(), polls.clone()),
    )
    .await;
    assert_eq!(line.unwrap().unwrap().line(), b"done");
    within(MS(2000), "peer", reader).await.unwrap();
    let p = load(&polls);
    // Each write-readiness edge may poll once; 8 MiB in >= 64 KiB chunks is
    // at most ~130 edges plus slack.
    assert!(p <= 2000, "{p} polls of one read");
    assert_eq!(conn.write_buffered(), 0);
}

/// One task with `rtimeout`, `wtimeout` and `timeout` all on and a hook
/// counting them, after the fan-out: a read on a silent peer for 1 s.
/// Each timer fires about once per period; the read is polled O(periods).
#[tokio::test]
async fn one_task_timers_after_fanout_fire_once_per_period() {
    let (ours, _peer) = pair().await;
    let mut conn = QueuedFramed::builder()
        .rtimeout(MS(100))
        .wtimeout(MS(100))
        .timeout(MS(100))
        .build_with_codec(ours, LineCodec::new());
    let fired = Arc::new(std::sync::Mutex::new(Vec::new()));
    let f2 = fired.clone();
    let t0 = tokio::time::Instant::now();
    conn.on_timeout(move |t, _| f2.lock().unwrap().push((t, t0.elapsed())));
    fan_out(&mut conn).await;
    let polls = counter();
    let r = tokio::time::timeout(MS(1000), counted(conn.next(), polls.clone())).await;
    assert!(r.is_err(), "{r:?}");
    let fired = fired.lock().unwrap().clone();
    let p = load(&polls);
    let count = |w: Timeout| fired.iter().filter(|(t, _)| *t == w).count();
    assert!(
        (8..=11).contains(&count(Timeout::Read))
            && (8..=11).contains(&count(Timeout::Write))
            && (8..=11).contains(&count(Timeout::Idle)),
        "{fired:?}"
    );
    assert!(p <= 80, "{p} polls over 1 s");
}

// ======================================================================
// Idea 3: spawn / into_parts after the fan-out.
// ======================================================================

/// Fan-out on, then `spawn`: the driver reads and writes through the
/// shared waker (slot 1 holds the gone flush's waker). Silent peer: the
/// transport is polled a handful of times over 500 ms; then the peer
/// reads everything and answers, and the handle hears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_after_fanout_driver_quiet_then_works() {
    let (ours, mut peer) = pair().await;
    let (io, reads, writes) = Counting::new(ours);
    let mut conn = QueuedFramed::new(io);
    fan_out(&mut conn).await;
    let (handle, driver) = conn.spawn();
    let line = handle.push_read(LineCodec::new());
    let (r0, w0) = (load(&reads), load(&writes));
    tokio::time::sleep(MS(500)).await;
    let (r1, w1) = (load(&reads) - r0, load(&writes) - w0);
    assert!(r1 + w1 <= 20, "{r1} reads, {w1} writes on a silent peer");
    let peer_task = tokio::spawn(async move {
        drain_x(&mut peer, BIG).await;
        peer.write_all(b"hi\n").await.unwrap();
        peer
    });
    let l = within(MS(5000), "the spawned handle hears hi", line).await;
    assert_eq!(l.unwrap().line(), b"hi");
    within(MS(5000), "flush", handle.flush()).await.unwrap();
    let _peer = within(MS(5000), "peer", peer_task).await.unwrap();
    handle.destroy();
    let _ = within(MS(2000), "driver ends", driver).await;
}

/// Fan-out on from a split pair, reunited, then spawned: same as above,
/// with the Stream half's waker also stale in slot 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_reunite_spawn_after_fanout() {
    let (ours, mut peer) = pair().await;
    let (io, reads, writes) = Counting::new(ours);
    let conn = QueuedFramed::with_codec(io, BytesCodec::new());
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let st = tokio::spawn(async move {
        let r = tokio::time::timeout(MS(100), stream.next()).await;
        assert!(r.is_err());
        stream
    });
    let sk = tokio::spawn(async move {
        let r = tokio::time::timeout(MS(100), async {
            sink.feed(Bytes::from(vec![b'x'; BIG])).await?;
            sink.flush().await
        })
        .await;
        assert!(r.is_err());
        sink
    });
    let (stream, sink) = (st.await.unwrap(), sk.await.unwrap());
    let conn = sink.reunite(stream).unwrap();
    let (handle, _driver) = conn.spawn();
    let line = handle.push_read(LineCodec::new());
    let (r0, w0) = (load(&reads), load(&writes));
    tokio::time::sleep(MS(400)).await;
    let (r1, w1) = (load(&reads) - r0, load(&writes) - w0);
    assert!(r1 + w1 <= 20, "{r1} reads, {w1} writes on a silent peer");
    let peer_task = tokio::spawn(async move {
        drain_x(&mut peer, BIG).await;
        peer.write_all(b"hi\n").await.unwrap();
        peer
    });
    let l = within(MS(5000), "hears hi", line).await;
    assert_eq!(l.unwrap().line(), b"hi");
    within(MS(5000), "flush", handle.flush()).await.unwrap();
    let _ = peer_task.await;
}

/// Fan-out on, `into_parts`, rebuilt with `from_parts` (fresh engine) and
/// the old buffers: no byte lost, the new one works from one task, and
/// the socket's stored fan waker does not make it spin.
#[tokio::test]
async fn into_parts_after_fanout_then_rebuilt() {
    let (ours, mut peer) = pair().await;
    let (io, reads, writes) = Counting::new(ours);
    let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
    fan_out(&mut conn).await;
    let parts = conn.into_parts();
    let unwritten = parts.write_buf.len();
    let mut conn = QueuedFramed::from_parts(parts);
    let (r0, w0) = (load(&reads), load(&writes));
    let r = tokio::time::timeout(MS(300), conn.next()).await;
    assert!(r.is_err());
    let (r1, w1) = (load(&reads) - r0, load(&writes) - w0);
    assert!(r1 + w1 <= 20, "{r1} reads, {w1} writes");
    let peer_task = tokio::spawn(async move {
        drain_x(&mut peer, BIG).await;
        peer.write_all(b"x\n").await.unwrap();
        peer
    });
    assert!(unwritten > 0);
    within(MS(5000), "flush", conn.flush()).await.unwrap();
    let l = within(MS(5000), "read", conn.next()).await;
    assert_eq!(l.unwrap().unwrap().line(), b"x");
    let _ = peer_task.await;
}

// ======================================================================
// Idea 1: lost wake-ups, multi-thread.
// ======================================================================

/// Many rounds on a multi-thread runtime: per round the Sink half sends a
/// burst larger than the socket buffers and flushes; the peer reads the
/// burst in small pieces, then sends one line; the Stream half must hear
/// every line, the Sink half's flush must finish every round. 10 s bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_rounds_multi_thread_no_lost_wakeups() {
    const ROUNDS: usize = 60;
    const BURST: usize = 1024 * 1024;
    let (ours, mut peer) = pair().await;
    let conn = QueuedFramed::with_codec(ours, LineCodec::new());
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(conn);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let writer = tokio::spawn(async move {
        for _ in 0..ROUNDS {
            let big: &'static str = Box::leak("x".repeat(BURST - 1).into_boxed_str());
            sink.send(big).await.unwrap();
            // Wait until the reader heard the round's answer.
            if rx.recv().await.is_none() {
                return;
            }
        }
    });
    let reader = tokio::spawn(async move {
        for i in 0..ROUNDS {
            let l = stream.next().await.unwrap().unwrap();
            assert_eq!(l.line(), format!("r{i}").as_bytes());
            tx.send(()).await.unwrap();
        }
    });
    let peer_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 7000];
        for i in 0..ROUNDS {
            let mut got = 0;
            while got < BURST {
                let k = peer
                    .read(&mut buf[..(BURST - got).min(7000)])
                    .await
                    .unwrap();
                assert!(k > 0);
                got += k;
                if got % 5 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            peer.write_all(format!("r{i}\n").as_bytes()).await.unwrap();
        }
        peer
    });
    within(Duration::from_secs(10), "reader (lost wake-up?)", reader)
        .await
        .unwrap();
    within(MS(2000), "writer", writer).await.unwrap();
    let _ = within(MS(2000), "peer", peer_task).await;
}

/// Both halves plus a third task awaiting a ticket queued before the
/// split, multi-thread: the Stream half drives the queued read (and then
/// its own frames) while the Sink half is blocked; the third task's
/// ticket resolves when the peer sends its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_in_third_task_resolves_while_halves_run() {
    for _ in 0..20 {
        let (ours, mut peer) = pair().await;
        let mut conn = QueuedFramed::with_codec(ours, LineCodec::new());
        let t = conn.push_read(LineCodec::new());
        let (mut sink, mut stream) = StreamExt::split::<&'static str>(conn);
        let third = tokio::spawn(async move { t.await.map(|l| l.line().to_vec()) });
        let writer = tokio::spawn(async move {
            let big: &'static str = Box::leak("y".repeat(BIG / 4).into_boxed_str());
            sink.send(big).await.unwrap();
            sink
        });
        let reader = tokio::spawn(async move {
            let l = stream.next().await;
            (l.map(|l| l.map(|l| l.line().to_vec())), stream)
        });
        tokio::time::sleep(MS(20)).await;
        peer.write_all(b"ticket\n").await.unwrap();
        let got = within(MS(3000), "third-task ticket", third).await.unwrap();
        assert_eq!(got.unwrap(), b"ticket");
        peer.write_all(b"stream\n").await.unwrap();
        let mut left = BIG / 4 + 1;
        let mut buf = vec![0u8; 65536];
        while left > 0 {
            let k = peer.read(&mut buf).await.unwrap();
            assert!(k > 0);
            left -= k;
        }
        let (l, _stream) = within(MS(3000), "stream", reader).await.unwrap();
        assert_eq!(l.unwrap().unwrap(), b"stream");
        let _sink = within(MS(3000), "writer", writer).await.unwrap();
    }
}

// ======================================================================
// Idea 6: TO-3 with the write side hearing read timeouts (`all`).
// ======================================================================

/// TO-3: "each half hears its own: the Stream half the read timeout …
/// a flush drops the read timeout" only while the Stream half is not
/// waiting. Here a request whose ticket was dropped after its decoder ate
/// part of its frame stays queued (it reads on for nobody); the Stream
/// half waits behind it; the Sink half is blocked in a flush. The read
/// timeout must reach the Stream half (nobody queued hears it), not be
/// dropped by the flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_reaches_stream_half_behind_a_request_read_for_nobody() {
    let (ours, mut peer) = pair().await;
    let mut conn = QueuedFramed::builder()
        .rtimeout(MS(300))
        .build_with_codec(ours, LineCodec::new());
    let eaten = conn.push_read(Eater);
    peer.write_all(b"partial").await.unwrap();
    // The request eats the bytes; then its ticket is given up.
    let r = tokio::time::timeout(MS(50), conn.wait(eaten)).await;
    assert!(r.is_err());
    assert_eq!(conn.queued_reads(), 1, "it reads on for nobody");
    conn.push_bytes(Bytes::from(vec![b'x'; BIG])).unwrap();
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(conn);
    let flusher = tokio::spawn(async move {
        let r = tokio::time::timeout(MS(450), SinkExt::<&'static str>::flush(&mut sink)).await;
        r.map(|r| r.map_err(|e| e.timeout()))
    });
    let reader = tokio::spawn(async move {
        let r = tokio::time::timeout(MS(450), stream.next()).await;
        r.map(|o| o.map(|r| r.map(|l| l.line().to_vec()).map_err(|e| e.timeout())))
    });
    let f = within(MS(4000), "flusher", flusher).await.unwrap();
    let r = within(MS(4000), "reader", reader).await.unwrap();
    assert!(f.is_err(), "the flush hears no read timeout: {f:?}");
    assert_eq!(
        r,
        Ok(Some(Err(Some(Timeout::Read)))),
        "the Stream half hears the first read timeout (rtimeout 300 ms, waits 450 ms); flush: {f:?}"
    );
    drop(peer);
}

/// TO-3 with a STARTTLS whose ticket was dropped: the switch has no
/// waiter, the Stream half waits behind it, the Sink half flushes output
/// queued after it (reading for it). The read timeouts belong to the
/// Stream half while it waits; the flush must not hear them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_read_timeout_with_switch_ticket_dropped_not_heard_by_flush() {
    let b = pki::BACKENDS[0];
    let (c, _s) = pair().await;
    let mut client = QueuedFramed::builder()
        .rtimeout(MS(300))
        .build_with_codec(c, LineCodec::new());
    drop(client.push_starttls(pki::client_on(b)));
    client.push_write(LineCodec::new(), "after").unwrap();
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(client);
    let t0 = tokio::time::Instant::now();
    let reader = tokio::spawn(async move {
        let mut heard = Vec::new();
        while t0.elapsed() < MS(1100) {
            let left = MS(1100).saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, stream.next()).await {
                Ok(Some(Err(e))) if e.timeout() == Some(Timeout::Read) => heard.push(t0.elapsed()),
                Ok(other) => panic!("{:?}", other.map(|r| r.map(|l| l.line().to_vec()))),
                Err(_) => break,
            }
        }
        heard
    });
    tokio::time::sleep(MS(20)).await;
    let flusher = tokio::spawn(async move {
        let r = tokio::time::timeout(MS(1000), SinkExt::<&'static str>::flush(&mut sink)).await;
        (r.map(|r| r.map_err(|e| e.timeout())), t0.elapsed())
    });
    let f = within(MS(3000), "flusher", flusher).await.unwrap();
    let r = within(MS(3000), "reader", reader).await.unwrap();
    assert!(
        !matches!(f.0, Ok(Err(Some(Timeout::Read)))),
        "the flush heard the read timeout: {f:?} (reader heard them at {r:?})"
    );
    assert!(
        r.len() >= 2,
        "the Stream half heard read timeouts at {r:?}; flush: {f:?}"
    );
}

// ======================================================================
// Idea 4: TLS handshakes driven by either half.
// ======================================================================

/// `Builder::tls` (handshake at the head); the Sink half sends a line
/// (waiting behind the handshake, so it drives it) and is dropped mid-
/// handshake; the Stream half, polled only now, must finish the handshake
/// and hear the server's line.
async fn tls_autostart_sink_drives_then_dropped_on(b: TlsBackend, multi: bool) {
    let (c, s) = pair().await;
    let client = QueuedFramed::builder()
        .tls(pki::client_on(b))
        .build_with_codec(c, LineCodec::new());
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(client);
    let sk = tokio::spawn(async move {
        // Gives up after 30 ms: the server has not answered yet.
        let r = tokio::time::timeout(MS(30), sink.send("hi")).await;
        assert!(r.is_err(), "{r:?}");
        drop(sink);
    });
    sk.await.unwrap();
    let reader = tokio::spawn(async move {
        let l = stream.next().await;
        (l.map(|l| l.map(|l| l.line().to_vec())), stream)
    });
    if multi {
        tokio::task::yield_now().await;
    }
    let server = async {
        let mut server = QueuedFramed::new(s);
        server.starttls(server_on(b)).await.unwrap();
        let l = server.read(LineCodec::new()).await.unwrap();
        assert_eq!(l.line(), b"hi");
        server.write(LineCodec::new(), "hello").await.unwrap();
        server
    };
    let _server = within(MS(5000), &format!("{b:?}: server"), server).await;
    let (l, _) = within(MS(3000), &format!("{b:?}: stream hears hello"), reader)
        .await
        .unwrap();
    assert_eq!(l.unwrap().unwrap(), b"hello");
}

#[tokio::test]
async fn tls_autostart_sink_drives_then_dropped() {
    for &b in pki::BACKENDS {
        tls_autostart_sink_drives_then_dropped_on(b, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_autostart_sink_drives_then_dropped_multi_thread() {
    for &b in pki::BACKENDS {
        tls_autostart_sink_drives_then_dropped_on(b, true).await;
    }
}

/// Both halves poll the handshake at once (two tasks, multi-thread), the
/// server slow to answer; then data both ways with big output.
async fn tls_both_halves_drive_handshake_on(b: TlsBackend) {
    let (c, s) = pair().await;
    let client = QueuedFramed::builder()
        .tls(pki::client_on(b))
        .build_with_codec(c, BytesCodec::new());
    let (mut sink, mut stream) = client.split::<Bytes>();
    const N: usize = 2 * 1024 * 1024;
    let sk = tokio::spawn(async move {
        sink.send(Bytes::from(vec![b'z'; N])).await.unwrap();
        sink
    });
    let rd = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 5 {
            match stream.next().await {
                Some(Ok(b)) => got.extend_from_slice(&b),
                other => panic!("{other:?}"),
            }
        }
        (got, stream)
    });
    tokio::time::sleep(MS(100)).await;
    let server = async {
        let mut server = QueuedFramed::new(s);
        server.starttls(server_on(b)).await.unwrap();
        let mut got = 0;
        while got < N {
            let chunk = server
                .read(anyframe::codecs::ChunkCodec::new(65536.min(N - got)))
                .await
                .unwrap();
            assert!(chunk.iter().all(|&c| c == b'z'));
            got += chunk.len();
        }
        server.write(LineCodec::new(), "done").await.unwrap();
        server
    };
    let _server = within(MS(8000), &format!("{b:?}: server"), server).await;
    let _sink = within(MS(3000), &format!("{b:?}: sink"), sk).await.unwrap();
    let (got, _) = within(MS(3000), &format!("{b:?}: stream"), rd)
        .await
        .unwrap();
    assert_eq!(&got[..], b"done\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_both_halves_drive_handshake_multi_thread() {
    for &b in pki::BACKENDS {
        tls_both_halves_drive_handshake_on(b).await;
    }
}

// ======================================================================
// Idea 5: spurious wake amplification with timers and hooks.
// ======================================================================

/// Split halves on a silent peer that reads nothing: autocork off, all
/// three timers at 20 ms with a hook that resets them (`timeout_reset`
/// activity) and counts. Over 1 s each half's polls stay O(expiries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_timers_and_hook_do_not_amplify() {
    let (ours, _peer) = pair().await;
    let mut conn = QueuedFramed::builder()
        .autocork(false)
        .rtimeout(MS(20))
        .wtimeout(MS(20))
        .timeout(MS(20))
        .build_with_codec(ours, BytesCodec::new());
    let hooks = counter();
    let h2 = hooks.clone();
    conn.on_timeout(move |_, _| {
        h2.fetch_add(1, Ordering::SeqCst);
    });
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let (sp, rp) = (counter(), counter());
    let (sp2, rp2) = (sp.clone(), rp.clone());
    let writer = tokio::spawn(async move {
        let send = async {
            sink.feed(Bytes::from(vec![b'x'; BIG])).await?;
            sink.flush().await
        };
        let _ = counted(Box::pin(send), sp2).await;
    });
    let reader = tokio::spawn(async move {
        let _ = counted(stream.next(), rp2).await;
    });
    tokio::time::sleep(MS(1000)).await;
    let (s, r, h) = (load(&sp), load(&rp), load(&hooks));
    assert!(!writer.is_finished() && !reader.is_finished());
    // ~50 periods x 3 timers = ~150 hook runs; each may wake both halves.
    assert!(h <= 200, "{h} hook runs");
    assert!(
        s + r <= 4 * h + 100,
        "{s} sink polls, {r} stream polls, {h} hooks"
    );
    writer.abort();
    reader.abort();
}

/// Control for `one_task_select_loop_after_fanout_quiet_then_hears`: the
/// same output queued, no flush ever waited (no fan-out).
#[tokio::test]
async fn control_one_task_select_loop_without_fanout() {
    let (ours, _peer) = pair().await;
    let mut conn = QueuedFramed::with_codec(ours, LineCodec::new());
    conn.push_bytes(Bytes::from(vec![b'x'; BIG])).unwrap();
    let polls = counter();
    let mut ticks = 0usize;
    let t0 = tokio::time::Instant::now();
    let mut next = std::pin::pin!(counted(conn.next(), polls.clone()));
    let mut iv = tokio::time::interval(MS(10));
    while t0.elapsed() < MS(550) {
        tokio::select! {
            r = &mut next => panic!("a frame from a silent peer: {r:?}"),
            _ = iv.tick() => ticks += 1,
        }
    }
    let p = load(&polls);
    assert!(
        p <= 2 * ticks + 20,
        "control: {p} polls of the read over {ticks} ticks"
    );
}

/// Control for `read_timeout_reaches_stream_half_behind_a_request_read_for_nobody`:
/// the same queue, the output queued but no flush: the Stream half alone
/// hears the first read timeout in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_read_timeout_reaches_stream_half_without_flush() {
    let (ours, mut peer) = pair().await;
    let mut conn = QueuedFramed::builder()
        .rtimeout(MS(300))
        .build_with_codec(ours, LineCodec::new());
    let eaten = conn.push_read(Eater);
    peer.write_all(b"partial").await.unwrap();
    let r = tokio::time::timeout(MS(50), conn.wait(eaten)).await;
    assert!(r.is_err());
    assert_eq!(conn.queued_reads(), 1);
    conn.push_bytes(Bytes::from(vec![b'x'; BIG])).unwrap();
    let (_sink, mut stream) = StreamExt::split::<&'static str>(conn);
    let r = tokio::time::timeout(MS(450), stream.next()).await;
    let r = r.map(|o| o.map(|r| r.map(|l| l.line().to_vec()).map_err(|e| e.timeout())));
    assert_eq!(r, Ok(Some(Err(Some(Timeout::Read)))));
}

/// Both halves keep giving up their waits at random (select! against
/// 0..3 ms sleeps) and resuming, on two threads, with watermarks so the
/// Sink half's `poll_ready` blocks; the peer reads slowly and answers a
/// line per 64 KiB. Every byte and line must arrive, in order, in 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_both_halves_give_up_and_resume_multi_thread() {
    const FRAMES: usize = 1500;
    const FRAME: usize = 16 * 1024;
    const TOTAL: usize = FRAMES * FRAME;
    const PER_LINE: usize = 64 * 1024;
    let (ours, mut peer) = pair().await;
    let conn = QueuedFramed::builder()
        .watermarks(256 * 1024, 64 * 1024)
        .build_with_codec(ours, BytesCodec::new());
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let seed = Arc::new(AtomicUsize::new(12345));
    let rnd = move |s: &Arc<AtomicUsize>| {
        let mut x = s.fetch_add(0x9E37_79B9, Ordering::Relaxed) as u64;
        x ^= x >> 13;
        x = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        Duration::from_micros(x % 3000)
    };
    let (s1, s2) = (seed.clone(), seed.clone());
    let writer = tokio::spawn(async move {
        for i in 0..FRAMES {
            let frame = Bytes::from(vec![(i % 251) as u8; FRAME]);
            let mut feed = std::pin::pin!(sink.feed(frame));
            loop {
                tokio::select! {
                    r = &mut feed => { r.unwrap(); break; }
                    _ = tokio::time::sleep(rnd(&s1)) => {}
                }
            }
        }
        loop {
            let r = tokio::time::timeout(rnd(&s1), sink.flush()).await;
            if let Ok(r) = r {
                r.unwrap();
                break;
            }
        }
        sink
    });
    let reader = tokio::spawn(async move {
        let mut got = BytesMut::new();
        let want = TOTAL / PER_LINE;
        let expect: Vec<u8> = (0..want)
            .flat_map(|i| format!("l{i}\n").into_bytes())
            .collect();
        while got.len() < expect.len() {
            tokio::select! {
                r = stream.next() => got.extend_from_slice(&r.unwrap().unwrap()),
                _ = tokio::time::sleep(rnd(&s2)) => {}
            }
        }
        assert_eq!(&got[..], &expect[..]);
        stream
    });
    let peer_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 9000];
        let mut got = 0usize;
        let mut line = 0usize;
        while got < TOTAL {
            let k = peer.read(&mut buf).await.unwrap();
            assert!(k > 0);
            for (j, &c) in buf[..k].iter().enumerate() {
                assert_eq!(c, (((got + j) / FRAME) % 251) as u8, "byte {}", got + j);
            }
            got += k;
            if got.is_multiple_of(7) {
                tokio::time::sleep(MS(1)).await;
            }
            while (line + 1) * PER_LINE <= got {
                peer.write_all(format!("l{line}\n").as_bytes())
                    .await
                    .unwrap();
                line += 1;
            }
        }
        peer
    });
    let _s = within(Duration::from_secs(10), "writer", writer)
        .await
        .unwrap();
    let _r = within(MS(3000), "reader", reader).await.unwrap();
    let _p = within(MS(3000), "peer", peer_task).await.unwrap();
}

/// The same as `read_timeout_reaches_stream_half_behind_a_request_read_for_nobody`,
/// counted over 1.6 s (about 5 read periods): how many read timeouts the
/// Stream half hears while the Sink half keeps flushing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeouts_swallowed_by_the_flush_over_five_periods() {
    let (ours, mut peer) = pair().await;
    let mut conn = QueuedFramed::builder()
        .rtimeout(MS(300))
        .build_with_codec(ours, LineCodec::new());
    let eaten = conn.push_read(Eater);
    peer.write_all(b"partial").await.unwrap();
    let r = tokio::time::timeout(MS(50), conn.wait(eaten)).await;
    assert!(r.is_err());
    conn.push_bytes(Bytes::from(vec![b'x'; BIG])).unwrap();
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(conn);
    let flusher = tokio::spawn(async move {
        let r = tokio::time::timeout(MS(1600), SinkExt::<&'static str>::flush(&mut sink)).await;
        r.map(|r| r.map_err(|e| e.timeout()))
    });
    let t0 = tokio::time::Instant::now();
    let reader = tokio::spawn(async move {
        let mut at = Vec::new();
        while t0.elapsed() < MS(1600) {
            match tokio::time::timeout(MS(1600) - t0.elapsed().min(MS(1600)), stream.next()).await {
                Ok(Some(Err(e))) if e.timeout() == Some(Timeout::Read) => at.push(t0.elapsed()),
                Ok(other) => panic!("{other:?}"),
                Err(_) => break,
            }
        }
        at
    });
    let f = within(MS(4000), "flusher", flusher).await.unwrap();
    let at = within(MS(4000), "reader", reader).await.unwrap();
    assert!(f.is_err(), "{f:?}");
    assert!(
        at.len() >= 4,
        "the Stream half heard read timeouts only at {at:?} in 1.6 s (rtimeout 300 ms)"
    );
}
