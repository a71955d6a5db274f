//! The write side's failure paths: output handed back through `from_parts`
//! and the watermarks, and a drain hook that closes the connection in the
//! middle of an inline flush, write, shutdown or read. Every wait is
//! bounded.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, QueuedFramed};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

const WAIT: Duration = Duration::from_secs(5);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: hung for {WAIT:?}"),
    }
}

/// Resolves `f`, or panics if it is still pending after `limit`. The
/// deadline wins a tie, so a future that only completes because the
/// deadline's own timer happened to wake its task still fails.
async fn promptly<F: std::future::Future>(what: &str, limit: Duration, f: F) -> F::Output {
    tokio::select! {
        biased;
        _ = tokio::time::sleep(limit) => panic!("{what}: still pending after {limit:?} (lost wake-up)"),
        v = f => v,
    }
}

/// A peer that never reads (and never sends).
struct Stuck;

impl AsyncRead for Stuck {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Stuck {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Pending
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

// ----- A. output restored by from_parts bypasses the watermarks ---------------------

/// OPT-5: "Above the high mark the Sink's poll_ready (and ready_to_write)
/// waits." 200 KiB handed back through `Parts::write_buf` sit above the
/// default 64 KiB high mark and the peer reads nothing: the producer
/// waits.
#[tokio::test]
async fn from_parts_restored_output_is_held_to_the_high_watermark() {
    let mut parts = anyframe::Parts::new(Stuck, LineCodec::new());
    parts.write_buf.extend_from_slice(&vec![b'x'; 200 * 1024]);
    let mut conn = QueuedFramed::from_parts(parts);
    assert_eq!(conn.write_buffered(), 200 * 1024);
    let r = tokio::time::timeout(Duration::from_millis(200), conn.ready_to_write()).await;
    assert!(
        r.is_err(),
        "ready_to_write resolved with 200 KiB queued over a 64 KiB high mark: {r:?}"
    );
}

/// Output restored over the builder's `wbuf_max` is kept and written, and
/// counts against the cap: a push while the queue is still over it fails
/// with the fatal `ENOSPC` (as after `set_wbuf_max` lowers the cap); once
/// written, the same push goes through on a handle whose cap holds it.
#[tokio::test]
async fn from_parts_output_over_wbuf_max_is_written_and_counted() {
    let restored = vec![b'x'; 64];
    for written_first in [false, true] {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut parts = anyframe::Parts::new(a, LineCodec::new());
        parts.write_buf.extend_from_slice(&restored);
        let mut conn = QueuedFramed::builder()
            .wbuf_max(Some(32))
            .build_from_parts(parts);
        assert_eq!(conn.write_buffered(), 64, "kept whole");
        if written_first {
            within("flush", conn.flush()).await.unwrap();
            conn.push_write(LineCodec::new(), "next").unwrap();
            within("flush", conn.flush()).await.unwrap();
            let mut got = vec![0u8; 69];
            within("read", b.read_exact(&mut got)).await.unwrap();
            assert_eq!(&got[..64], &restored[..]);
            assert_eq!(&got[64..], b"next\n");
        } else {
            let e = conn.push_write(LineCodec::new(), "next").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
            assert!(e.is_fatal(), "{e}");
        }
    }
}

/// A waker that does nothing; counted by its `Arc`.
struct NoopWake;

impl futures::task::ArcWake for NoopWake {
    fn wake_by_ref(_: &Arc<Self>) {}
}

/// Polls `n` of `make()`'s futures once, each with a waker of its own (as
/// many tasks would), and drops them; how many of those wakers the
/// connection still holds.
fn given_up_waits<F, Fut>(n: usize, mut make: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
{
    let mut wakers = Vec::new();
    for _ in 0..n {
        let w = Arc::new(NoopWake);
        let waker = futures::task::waker(w.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(make());
        assert!(fut.as_mut().poll(&mut cx).is_pending(), "must wait");
        drop(fut);
        drop(waker);
        wakers.push(w);
    }
    wakers.iter().filter(|w| Arc::strong_count(w) > 1).count()
}

/// A `Handle::ready_to_write()` or `drained()` given up (a `select!` or a
/// timeout around it) against a peer that stopped reading lets go of its
/// task's waker: a connection with no timer set would otherwise keep every
/// given-up task's waker (and the task's memory) until the queue drains.
#[tokio::test(start_paused = true)]
async fn given_up_ready_to_write_and_drained_waits_let_go_of_their_wakers() {
    let (ours, _peer) = tokio::io::duplex(64);
    let (h, _driver) = QueuedFramed::builder()
        .watermarks(1024, 0)
        .build(ours)
        .spawn();
    h.push_bytes(vec![b'x'; 8192]).unwrap();
    // The driver writes what the peer takes, and stalls.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        given_up_waits(100, || h.ready_to_write()),
        0,
        "ready_to_write"
    );
    assert_eq!(given_up_waits(100, || h.drained()), 0, "drained");
    // A wait that is not given up is still woken when the queue drains.
    let waiting = tokio::spawn({
        let h = h.clone();
        async move { h.drained().await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished());
    h.destroy();
    let r = within("drained after destroy", waiting).await.unwrap();
    assert!(r.is_err());
}

/// A task waiting in `drained()` and `ready_to_write()` at once gives up
/// the second (a `select!` branch that lost): its `drained()` still hears
/// the queue drain (the given-up wait takes out its own entry, not every
/// wait of the task).
#[tokio::test]
async fn a_given_up_wait_leaves_the_same_tasks_other_wait_parked() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::builder()
        .watermarks(4096, 1024)
        .build(ours)
        .spawn();
    handle.push_bytes(vec![b'x'; 64 * 1024]).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(handle.write_buffered() > 4096, "queue above the high mark");
    let h = handle.clone();
    let waiter = tokio::spawn(async move {
        let mut drained = Box::pin(h.drained());
        let mut ready = Some(Box::pin(h.ready_to_write()));
        std::future::poll_fn(|cx| {
            let d = drained.as_mut().poll(cx);
            if let Some(mut r) = ready.take() {
                assert!(r.as_mut().poll(cx).is_pending());
            }
            d
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut buf = vec![0u8; 128 * 1024];
    let mut got = 0;
    while got < 64 * 1024 {
        got += within("peer read", peer.read(&mut buf)).await.unwrap();
    }
    within("drained", waiter).await.unwrap().unwrap();
}

/// OPT-5: `on_drain` runs "when the queue falls to or below the low mark
/// after having been above it". The restored output was above the low
/// mark (0) and is written out: the hook runs once.
#[tokio::test]
async fn from_parts_restored_output_runs_the_drain_hook_when_written() {
    let (a, mut b) = tokio::io::duplex(1 << 20);
    let mut parts = anyframe::Parts::new(a, LineCodec::new());
    parts.write_buf.extend_from_slice(b"restored\n");
    let mut conn = QueuedFramed::from_parts(parts);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    conn.on_drain(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    within("flush", conn.flush()).await.unwrap();
    let mut buf = [0u8; 9];
    within("read", b.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"restored\n");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the drain hook did not run when the restored output drained"
    );
}

// ----- B. inline writes report Ok on a connection the drain hook closed -------------

/// LC-1: `destroy()` fails "every pending request and waiter ... with
/// Closed". A drain hook destroys the connection in the middle of an
/// inline `flush()`: the flush fails with `Closed`, as the spawned front
/// end's does for the same hook.
#[tokio::test]
async fn inline_flush_after_the_drain_hook_destroys_is_closed() {
    let (a, _b) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::new(a);
    conn.on_drain(|q| q.destroy());
    conn.push_bytes(&b"hello\n"[..]).unwrap();
    let r = within("flush", conn.flush()).await;
    assert!(conn.is_closed());
    let e = r.expect_err("flush returned Ok on a connection its drain hook destroyed");
    assert_eq!(e.kind(), ErrorKind::Closed);
}

/// OPT-9 / ERR-2: crossing `wbuf_max` is `ENOSPC`, fatal, and every waiter
/// fails with it. The drain hook's push crosses the cap during an inline
/// `flush()`: the connection is closed with `ENOSPC`, and so is the flush.
#[tokio::test]
async fn inline_flush_after_the_drain_hook_crosses_wbuf_max_is_enospc() {
    let (a, _b) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::builder().wbuf_max(Some(100)).build(a);
    conn.on_drain(|q| {
        // Each fits alone; the second crosses the cap behind the first.
        let _ = q.push_bytes(vec![0u8; 60]);
        let _ = q.push_bytes(vec![0u8; 60]);
    });
    conn.push_bytes(&b"hello\n"[..]).unwrap();
    let r = within("flush", conn.flush()).await;
    assert_eq!(conn.error().map(|e| e.kind()), Some(ErrorKind::NoSpace));
    let e = r.expect_err("flush returned Ok on a connection closed by ENOSPC inside it");
    assert_eq!(e.kind(), ErrorKind::NoSpace);
}

/// The same through the `Sink`: `send` (poll_ready, start_send,
/// poll_flush) fails on a connection destroyed inside it.
#[tokio::test]
async fn sink_send_after_the_drain_hook_destroys_is_closed() {
    let (a, _b) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::with_codec(a, LineCodec::new());
    conn.on_drain(|q| q.destroy());
    let r = within("send", conn.send("hello")).await;
    assert!(conn.is_closed());
    let e = r.expect_err("Sink::send returned Ok on a connection its drain hook destroyed");
    assert_eq!(e.kind(), ErrorKind::Closed);
}

/// And `shutdown_write`: it fails, and does not half-close the write side
/// of a connection destroyed inside it.
#[tokio::test]
async fn inline_shutdown_write_after_the_drain_hook_destroys_is_closed() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::new(a);
    conn.on_drain(|q| q.destroy());
    conn.push_bytes(&b"hello\n"[..]).unwrap();
    let r = within("shutdown_write", conn.shutdown_write()).await;
    assert!(conn.is_closed());
    let mut buf = [0u8; 6];
    within("read", b.read_exact(&mut buf)).await.unwrap();
    let mut rest = [0u8; 1];
    let fin = tokio::time::timeout(Duration::from_millis(200), b.read(&mut rest)).await;
    assert!(
        r.is_err(),
        "shutdown_write returned Ok after the connection was destroyed (peer's next read: {fin:?})"
    );
}

// ----- C. an inline read hangs when its own write-out closes the connection --------

/// With autocork on, a read that waits for input writes the queued output
/// (OPT-12); that write runs the drain hook, which destroys the
/// connection. The read fails with `Closed` at once (LC-1), rather than
/// staying pending with nothing to wake it.
#[tokio::test]
async fn inline_read_whose_write_out_runs_a_destroying_drain_hook_does_not_hang() {
    let (a, _b) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::builder().autocork(true).build(a);
    conn.on_drain(|q| q.destroy());
    conn.push_bytes(&b"hello\n"[..]).unwrap();
    let mut dec = LineCodec::new();
    let r = promptly(
        "read_with",
        Duration::from_secs(2),
        conn.read_with(&mut dec),
    )
    .await;
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Closed);
}

/// The same through the `Stream`.
#[tokio::test]
async fn stream_whose_write_out_runs_a_destroying_drain_hook_does_not_hang() {
    let (a, _b) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::builder()
        .autocork(true)
        .build_with_codec(a, LineCodec::new());
    conn.on_drain(|q| q.destroy());
    conn.push_bytes(&b"hello\n"[..]).unwrap();
    let r = promptly("next", Duration::from_secs(2), conn.next()).await;
    let e = r.expect("the stream ended without the error").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
}

// ----- D. replies queued before an input-side fatal error ---------------------------

/// A connection whose peer sent `input` and half-closed, and the peer.
async fn half_closed_peer(input: &[u8]) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    b.write_all(input).await.unwrap();
    b.shutdown().await.unwrap();
    (a, b)
}

/// Everything the peer receives up to the end.
async fn received(mut b: tokio::io::DuplexStream) -> Vec<u8> {
    let mut got = Vec::new();
    within("read_to_end", b.read_to_end(&mut got))
        .await
        .unwrap();
    got
}

/// An echo loop over a peer that sent two lines and half-closed before the
/// server read anything: the replies to both are queued (autocork holds
/// them: no read waited), then the third read meets the end of input,
/// `EPIPE`, fatal.
async fn echo_until_the_end(conn: &mut QueuedFramed<tokio::io::DuplexStream>) -> anyframe::Error {
    let mut dec = LineCodec::new();
    loop {
        match within("read_with", conn.read_with(&mut dec)).await {
            Ok(line) => conn.push_write(LineCodec::new(), line.line()).unwrap(),
            Err(e) => break e,
        }
    }
}

/// LC-5: "Replies queued before a fatal input-side error (end of input
/// inside a request, ...) are still written, within `linger`". On the
/// inline front end that is the caller's `flush()`: it writes them, then
/// reports the error that closed the connection.
#[tokio::test]
async fn inline_flush_after_end_of_input_writes_the_replies_queued_before_it() {
    let (a, b) = half_closed_peer(b"one\ntwo\n").await;
    let mut conn = QueuedFramed::builder().autocork(true).build(a);
    let e = echo_until_the_end(&mut conn).await;
    assert!(e.is_eof() && e.is_fatal(), "{e:?}");
    let r = within("flush", conn.flush()).await;
    assert!(r.as_ref().is_err_and(|f| f.is_eof()), "{r:?}");
    drop(conn);
    assert_eq!(
        received(b).await,
        b"one\ntwo\n",
        "replies queued before the end of input"
    );
}

/// The same through `shutdown_write()`: the replies go out, then the write
/// side is closed.
#[tokio::test]
async fn inline_shutdown_write_after_end_of_input_writes_the_replies_then_closes() {
    let (a, b) = half_closed_peer(b"one\ntwo\n").await;
    let mut conn = QueuedFramed::builder().autocork(true).build(a);
    echo_until_the_end(&mut conn).await;
    let r = within("shutdown_write", conn.shutdown_write()).await;
    assert!(r.as_ref().is_err_and(|f| f.is_eof()), "{r:?}");
    // The connection is still held: the end the peer sees is the half-close.
    assert_eq!(received(b).await, b"one\ntwo\n");
    drop(conn);
}

/// And the `Sink`'s `poll_close`.
#[tokio::test]
async fn sink_close_after_end_of_input_writes_the_replies_then_closes() {
    let (a, b) = half_closed_peer(b"one\ntwo\n").await;
    let mut conn = QueuedFramed::builder()
        .autocork(true)
        .build_with_codec(a, LineCodec::new());
    let mut lines = Vec::new();
    let end = loop {
        match within("next", conn.next()).await {
            Some(Ok(line)) => lines.push(line),
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    assert_eq!(lines.len(), 2, "{end:?}");
    for line in lines {
        conn.feed(line.line()).await.unwrap();
    }
    let r = within("close", SinkExt::<&[u8]>::close(&mut conn)).await;
    assert!(r.is_ok() || r.as_ref().is_err_and(|f| f.is_eof()), "{r:?}");
    assert_eq!(received(b).await, b"one\ntwo\n");
    drop(conn);
}

/// LC-3's bound holds for it: a peer that takes nothing keeps that flush
/// no longer than `linger`; the output stays for `into_parts`.
#[tokio::test(start_paused = true)]
async fn inline_flush_after_end_of_input_is_bounded_by_linger() {
    let (a, mut b) = tokio::io::duplex(64);
    b.write_all(b"one\n").await.unwrap();
    b.shutdown().await.unwrap();
    let mut conn = QueuedFramed::builder()
        .autocork(true)
        .linger(Duration::from_secs(2))
        .build(a);
    let mut dec = LineCodec::new();
    conn.read_with(&mut dec).await.unwrap();
    conn.push_bytes(vec![b'x'; 1 << 20]).unwrap();
    let e = conn.read_with(&mut dec).await.unwrap_err();
    assert!(e.is_eof(), "{e:?}");
    let start = tokio::time::Instant::now();
    let r = conn.flush().await;
    let took = start.elapsed();
    assert!(r.is_err_and(|f| f.is_eof()));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "flush after the end took {took:?}, linger 2 s"
    );
    assert!(conn.write_buffered() > (1 << 20) - 1000);
    // A second flush does not wait another period.
    let start = tokio::time::Instant::now();
    let _ = conn.flush().await;
    assert!(start.elapsed() < Duration::from_millis(10));
}

/// With `linger` zero the output is dropped, as LC-3 says: the flush fails
/// at once and nothing goes out.
#[tokio::test]
async fn inline_flush_after_end_of_input_with_zero_linger_writes_nothing() {
    let (a, b) = half_closed_peer(b"one\ntwo\n").await;
    let mut conn = QueuedFramed::builder()
        .autocork(true)
        .linger(Duration::ZERO)
        .build(a);
    echo_until_the_end(&mut conn).await;
    let r = within("flush", conn.flush()).await;
    assert!(r.is_err_and(|f| f.is_eof()));
    drop(conn);
    let got = received(b).await;
    assert!(got.is_empty(), "{got:?}");
}

/// The other input-side errors LC-5 names: a read over `rbuf_max`
/// (`ENOSPC`, fatal) and a fatal bad message (a line over its limit). The
/// reply queued before each is written by the flush that follows.
#[tokio::test]
async fn inline_flush_after_rbuf_max_or_a_fatal_bad_message_writes_the_replies() {
    for (case, rbuf_max, limit) in [("rbuf_max", Some(64), None), ("line limit", None, Some(64))] {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        b.write_all(b"one\n").await.unwrap();
        b.write_all(&[b'x'; 200]).await.unwrap();
        let mut conn = QueuedFramed::builder()
            .autocork(true)
            .rbuf_max(rbuf_max)
            .build(a);
        let mut dec = match limit {
            Some(n) => LineCodec::builder().max_length(n).build().unwrap(),
            None => LineCodec::new(),
        };
        let one = within("read_with", conn.read_with(&mut dec)).await.unwrap();
        conn.push_write(LineCodec::new(), one.line()).unwrap();
        let e = within("read_with", conn.read_with(&mut dec))
            .await
            .unwrap_err();
        assert!(e.is_fatal(), "{case}: {e:?}");
        let r = within("flush", conn.flush()).await;
        assert_eq!(r.unwrap_err().kind(), e.kind(), "{case}");
        let mut got = [0u8; 4];
        within("read_exact", b.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"one\n", "{case}");
    }
}
