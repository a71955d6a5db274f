//! The inline front end's close paths after an
//! input-side fatal error (LC-3, LC-5): `flush`, `shutdown_write`, the
//! `Sink`'s `poll_flush` / `poll_close`, and their siblings. Every wait is
//! bounded.

#[path = "support/mock_io.rs"]
mod mock_io;
#[cfg(any(feature = "tls", feature = "rustls"))]
#[path = "support/pki.rs"]
mod pki;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{Builder, ErrorKind, QueuedFramed};
use futures::{FutureExt, SinkExt, StreamExt};
use mock_io::{MockIo, Peer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

const WAIT: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: hung for {WAIT:?}"),
    }
}

/// A connection over a mock peer that takes no output (budget 0), with
/// `reply` queued, then closed by end of input inside a line read (`EPIPE`,
/// `is_eof`, fatal): the canonical input-side error.
async fn closed_by_eof(b: &Builder, reply: &[u8]) -> (QueuedFramed<MockIo, LineCodec>, Peer) {
    closed_by_eof_pieces(b, &[reply.to_vec()]).await
}

async fn closed_by_eof_pieces(
    b: &Builder,
    pieces: &[Vec<u8>],
) -> (QueuedFramed<MockIo, LineCodec>, Peer) {
    let (io, peer) = mock_io::pair();
    let mut conn = b.build_with_codec(io, LineCodec::new());
    for p in pieces {
        conn.push_bytes(p.clone()).unwrap();
    }
    peer.send(b"partial");
    peer.close();
    let e = within("read", conn.read(LineCodec::new()))
        .await
        .unwrap_err();
    assert!(e.is_eof() && e.is_fatal(), "{e:?}");
    assert!(peer.written().is_empty());
    (conn, peer)
}

#[derive(Clone, Copy, Debug)]
enum How {
    Flush,
    ShutdownWrite,
    SinkFlush,
    SinkClose,
}

const ALL: [How; 4] = [
    How::Flush,
    How::ShutdownWrite,
    How::SinkFlush,
    How::SinkClose,
];

async fn run_close<IO>(conn: &mut QueuedFramed<IO, LineCodec>, how: How) -> anyframe::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match how {
        How::Flush => conn.flush().await,
        How::ShutdownWrite => conn.shutdown_write().await,
        How::SinkFlush => SinkExt::<&[u8]>::flush(conn).await,
        How::SinkClose => SinkExt::<&[u8]>::close(conn).await,
    }
}

// ----- destroy -------------------------------------------------------------------

/// LC-3: "after `destroy` they write nothing"; LC-1: destroy ends the
/// connection. Here the connection was first closed by an input-side
/// error, then the caller destroyed it.
#[tokio::test(start_paused = true)]
async fn destroy_after_an_input_error_then_close_writes_nothing() {
    let mut bad = Vec::new();
    for how in ALL {
        let (mut conn, peer) = closed_by_eof(&Builder::new(), b"reply\n").await;
        conn.destroy();
        peer.accept(1 << 20);
        let r = within("close", run_close(&mut conn, how)).await;
        assert!(r.is_err(), "{how:?}: {r:?}");
        if !peer.written().is_empty() || peer.is_shut_down() {
            bad.push(format!(
                "{how:?}: wrote {:?} (shut {}) after destroy(), returned {:?}",
                String::from_utf8_lossy(&peer.written()),
                peer.is_shut_down(),
                r.map_err(|e| e.kind())
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The same, with destroy() between two halves of a bounded flush: a first
/// flush gives up (its future dropped), the caller destroys the
/// connection, and a second flush must not write any more.
#[tokio::test(start_paused = true)]
async fn destroy_between_two_flushes_stops_the_writing() {
    let (mut conn, peer) = closed_by_eof(&Builder::new(), &[b'x'; 100]).await;
    peer.accept(4);
    let r = tokio::time::timeout(Duration::from_millis(100), conn.flush()).await;
    assert!(r.is_err(), "the first flush waits for the peer: {r:?}");
    assert_eq!(peer.written().len(), 4);
    conn.destroy();
    peer.accept(1 << 20);
    let r = within("flush", conn.flush()).await;
    assert!(r.is_err());
    assert_eq!(
        peer.written().len(),
        4,
        "bytes written after destroy() (flush returned {r:?})"
    );
}

// ----- push_shutdown queued before the error ---------------------------------

/// WQ-7: `push_shutdown` writes everything queued, then half-closes. The
/// caller queued a reply and the shutdown, then the input ended inside a
/// read (the peer had not taken the reply yet). LC-5: the output queued
/// before the error is still written by `flush` / `Sink::flush`. The
/// half-close was queued before the error too; without it the peer never
/// sees the end of our output while we hold the connection.
#[tokio::test(start_paused = true)]
async fn flush_after_push_shutdown_and_an_input_error_half_closes() {
    let mut bad = Vec::new();
    for how in [How::Flush, How::SinkFlush] {
        let (io, peer) = mock_io::pair();
        let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
        conn.push_bytes(&b"reply\n"[..]).unwrap();
        conn.push_shutdown().unwrap();
        peer.send(b"partial");
        peer.close();
        let e = within("read", conn.read(LineCodec::new()))
            .await
            .unwrap_err();
        assert!(e.is_eof(), "{e:?}");
        peer.accept(1 << 20);
        let r = within("close", run_close(&mut conn, how)).await;
        assert_eq!(peer.written(), b"reply\n", "{how:?}");
        if !peer.is_shut_down() {
            bad.push(format!(
                "{how:?}: reply written but the queued half-close never sent (returned {:?})",
                r.map_err(|e| e.kind())
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

// ----- a flush that itself meets the input error ----------------------------

/// A flush whose later output waits behind a queued STARTTLS runs the read
/// queued in front of the switch (the doc of `flush`). That read meets the
/// end of input: `EPIPE`, fatal, an input-side error. The output queued
/// before the switch (and before the error) must still be written (LC-5,
/// LC-3: "write the output queued before the error ... then return the
/// error"); here the same flush call returns the error with it unwritten.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test(start_paused = true)]
async fn flush_that_meets_the_input_error_still_writes_the_output_before_it() {
    let b = pki::BACKENDS[0];
    let mut bad = Vec::new();
    for how in ALL {
        let (io, peer) = mock_io::pair();
        let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
        let before = vec![b'a'; 100];
        conn.push_bytes(before.clone()).unwrap();
        let read = conn.push_read(LineCodec::new());
        let switch = conn.push_starttls(pki::client_on(b));
        conn.push_bytes(&b"after the switch\n"[..]).unwrap();
        peer.accept(10);
        peer.send(b"no newline");
        peer.close();
        let p2 = peer.clone();
        let (r, ()) = tokio::join!(within("close", run_close(&mut conn, how)), async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            p2.accept(1 << 20);
        });
        let e = r.unwrap_err();
        assert!(e.is_eof(), "{how:?}: {e:?}");
        drop((read, switch));
        let written = peer.written();
        assert!(
            !written.ends_with(b"after the switch\n"),
            "{how:?}: output behind the switch went out in plaintext"
        );
        if written.len() != before.len() {
            bad.push(format!(
                "{how:?} returned {:?} with {} of the {} bytes queued before the error written \
                 ({} still queued, shut {}); the peer would take them",
                e.kind(),
                written.len(),
                before.len(),
                conn.write_buffered(),
                peer.is_shut_down()
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

// ----- a transport error during the after-close write --------------------------

/// A transport whose next write fails once (`ConnectionReset`), then
/// accepts again (the mock underneath).
struct FailOnce {
    inner: MockIo,
    fail: Arc<AtomicBool>,
}

impl AsyncRead for FailOnce {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FailOnce {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.fail.swap(false, Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// LC-3/LC-5: after an error toward the peer (a transport error) the output
/// is dropped at once. A transport error that happens during the
/// after-close write is such an error: a later flush must not try again.
#[tokio::test(start_paused = true)]
async fn a_write_error_during_the_after_close_write_ends_it() {
    let (io, peer) = mock_io::pair();
    let fail = Arc::new(AtomicBool::new(false));
    let mut conn = QueuedFramed::new(FailOnce {
        inner: io,
        fail: fail.clone(),
    });
    conn.push_bytes(&b"reply\n"[..]).unwrap();
    peer.send(b"partial");
    peer.close();
    let e = within("read", conn.read(LineCodec::new()))
        .await
        .unwrap_err();
    assert!(e.is_eof());
    fail.store(true, Ordering::SeqCst);
    peer.accept(1 << 20);
    let first = within("flush", conn.flush()).await;
    assert!(peer.written().is_empty());
    let second = within("flush", conn.flush()).await;
    assert!(
        peer.written().is_empty(),
        "the first flush met ConnectionReset and returned {:?}; the second ({:?}) wrote {:?}",
        first.map_err(|e| e.kind()),
        second.map_err(|e| e.kind()),
        String::from_utf8_lossy(&peer.written())
    );
}

// ----- what holds ---------------------------------------------------------------------

/// Nothing lost, nothing written twice: a bounded flush that wrote part of
/// the output, then `into_parts`.
#[tokio::test(start_paused = true)]
async fn into_parts_after_a_bounded_flush_loses_and_repeats_nothing() {
    let mut b = Builder::new();
    b.linger(Duration::from_secs(2));
    // Chained (>= 1024) and copied pieces.
    let mut pieces = Vec::new();
    for i in 0..5u8 {
        pieces.push(vec![b'A' + i; 1500]);
        pieces.push(vec![b'a' + i; 10]);
    }
    let all: Vec<u8> = pieces.concat();
    let (mut conn, peer) = closed_by_eof_pieces(&b, &pieces).await;
    let p = peer.clone();
    let feeder = tokio::spawn(async move {
        for _ in 0..10 {
            p.accept(333);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let start = tokio::time::Instant::now();
    let r = within("flush", conn.flush()).await;
    assert!(r.unwrap_err().is_eof());
    assert!(
        start.elapsed() <= Duration::from_millis(2100),
        "{:?}",
        start.elapsed()
    );
    feeder.abort();
    let parts = conn.into_parts();
    let mut seen = peer.written();
    assert!(seen.len() < all.len());
    seen.extend_from_slice(&parts.write_buf);
    assert_eq!(seen, all);
}

/// A first flush given up half way through `linger`, then a second: the
/// second waits only the rest of the period.
#[tokio::test(start_paused = true)]
async fn a_second_flush_waits_only_the_rest_of_linger() {
    let mut b = Builder::new();
    b.linger(Duration::from_secs(2));
    let (mut conn, _peer) = closed_by_eof(&b, b"reply\n").await;
    let start = tokio::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_millis(1500), conn.flush()).await;
    assert!(r.is_err());
    let r = within("flush", conn.flush()).await;
    assert!(r.unwrap_err().is_eof());
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2100), "{took:?}");
    let start = tokio::time::Instant::now();
    let r = within("shutdown_write", conn.shutdown_write()).await;
    assert!(r.is_err());
    assert!(start.elapsed() < Duration::from_millis(10));
}

/// No hook runs after the connection closed (LC-1, LC-5): neither the
/// drain hook nor the timeout hook during the after-close write.
#[tokio::test(start_paused = true)]
async fn no_hook_runs_during_the_write_after_the_close() {
    let drains = Arc::new(AtomicUsize::new(0));
    let timeouts = Arc::new(AtomicUsize::new(0));
    let mut b = Builder::new();
    b.watermarks(16, 0).linger(Duration::from_secs(5));
    let (mut conn, peer) = closed_by_eof(&b, &[b'z'; 200]).await;
    let d = drains.clone();
    conn.on_drain(move |_| {
        d.fetch_add(1, Ordering::SeqCst);
    });
    let t = timeouts.clone();
    conn.on_timeout(move |_, _| {
        t.fetch_add(1, Ordering::SeqCst);
    });
    conn.set_wtimeout(Duration::from_millis(100));
    conn.set_timeout(Duration::from_millis(100));
    let p = peer.clone();
    let feeder = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            p.accept(20);
        }
    });
    let r = within("flush", conn.flush()).await;
    feeder.abort();
    assert!(r.unwrap_err().is_eof());
    assert_eq!(peer.written().len(), 200);
    assert_eq!(drains.load(Ordering::SeqCst), 0);
    assert_eq!(timeouts.load(Ordering::SeqCst), 0);
}

/// A panicking completion: nothing is written afterwards.
#[tokio::test(start_paused = true)]
async fn nothing_is_written_after_a_panic() {
    for how in ALL {
        let (io, peer) = mock_io::pair();
        let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
        conn.push_bytes(&b"reply\n"[..]).unwrap();
        let t = conn.push_read_with(LineCodec::new(), |_, _| -> anyframe::Result<()> {
            panic!("boom")
        });
        peer.send(b"line\n");
        let r = std::panic::AssertUnwindSafe(conn.wait(t))
            .catch_unwind()
            .await;
        assert!(r.is_err());
        peer.accept(1 << 20);
        let r = within("close", run_close(&mut conn, how)).await;
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Panicked, "{how:?}");
        assert!(peer.written().is_empty(), "{how:?}");
        assert!(!peer.is_shut_down(), "{how:?}");
    }
}

/// A read error (a transport error of the input side): nothing written.
#[tokio::test(start_paused = true)]
async fn nothing_is_written_after_a_read_error() {
    for how in ALL {
        let (io, peer) = mock_io::pair();
        let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
        conn.push_bytes(&b"reply\n"[..]).unwrap();
        peer.fail();
        let e = within("read", conn.read(LineCodec::new()))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        peer.accept(1 << 20);
        let r = within("close", run_close(&mut conn, how)).await;
        assert!(r.is_err());
        assert!(peer.written().is_empty(), "{how:?}");
    }
}

/// `wbuf_max`: nothing written.
#[tokio::test(start_paused = true)]
async fn nothing_is_written_after_wbuf_max() {
    for how in ALL {
        let (io, peer) = mock_io::pair();
        let mut conn = QueuedFramed::builder()
            .wbuf_max(Some(16))
            .build_with_codec(io, LineCodec::new());
        conn.push_bytes(&b"0123456789"[..]).unwrap();
        let e = conn.push_bytes(&b"0123456789"[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        peer.accept(1 << 20);
        let r = within("close", run_close(&mut conn, how)).await;
        assert!(r.is_err());
        assert!(peer.written().is_empty(), "{how:?}");
    }
}

/// Every entry point after an input-side error writes the output, and the
/// close ones half-close; later reads, waits and writes return the error.
#[tokio::test(start_paused = true)]
async fn every_close_path_after_end_of_input_writes_once_and_later_calls_fail() {
    for how in ALL {
        let (mut conn, peer) = closed_by_eof(&Builder::new(), b"reply\n").await;
        peer.accept(1 << 20);
        let r = within("close", run_close(&mut conn, how)).await;
        assert!(r.unwrap_err().is_eof(), "{how:?}");
        assert_eq!(peer.written(), b"reply\n", "{how:?}");
        let shut = matches!(how, How::ShutdownWrite | How::SinkClose);
        assert_eq!(peer.is_shut_down(), shut, "{how:?}");
        assert!(conn.read(LineCodec::new()).await.unwrap_err().is_eof());
        let t = conn.push_read(LineCodec::new());
        assert!(within("wait", conn.wait(t)).await.unwrap_err().is_eof());
        assert!(
            within("write", conn.write(LineCodec::new(), "x"))
                .await
                .is_err()
        );
        // The `Stream` yields the error at most once, then ends.
        if let Some(r) = within("next", conn.next()).await {
            assert!(r.unwrap_err().is_eof());
        }
        assert!(within("next", conn.next()).await.is_none());
        // Again: nothing more, no second period.
        let r = within("close", run_close(&mut conn, how)).await;
        assert!(r.is_err());
        assert_eq!(peer.written(), b"reply\n", "{how:?}");
    }
}

/// A transport whose writes return 0: no hang, no spin.
struct WritesZero(MockIo);

impl AsyncRead for WritesZero {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for WritesZero {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(0))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_transport_writing_zero_ends_the_write_after_the_close() {
    let (io, peer) = mock_io::pair();
    let mut conn = QueuedFramed::with_codec(WritesZero(io), LineCodec::new());
    conn.push_bytes(&b"reply\n"[..]).unwrap();
    peer.send(b"partial");
    peer.close();
    // The read writes first: a zero write there is a transport error or
    // the read goes on; either way bounded.
    let e = within("read", conn.read(LineCodec::new()))
        .await
        .unwrap_err();
    assert!(e.is_fatal());
    for how in ALL {
        let r = within("close", run_close(&mut conn, how)).await;
        assert!(r.is_err());
    }
}

/// The `Sink` half waits in a flush (the peer takes nothing) in one task;
/// the `Stream` half meets the end of input in another. Once the peer
/// reads, the `Sink` half's flush writes the reply and returns the error.
#[tokio::test(start_paused = true)]
async fn a_sink_half_waiting_when_the_stream_half_meets_the_end_writes_its_output() {
    let (io, peer) = mock_io::pair();
    let conn = QueuedFramed::with_codec(io, LineCodec::new());
    let (mut sink, mut stream) = conn.split();
    let sending = tokio::spawn(async move {
        let r = SinkExt::<&[u8]>::send(&mut sink, &b"reply"[..]).await;
        (r, sink)
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let reading = tokio::spawn(async move {
        let r = stream.next().await;
        (r, stream)
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    peer.send(b"partial");
    peer.close();
    let (r, _stream) = within("stream", reading).await.unwrap();
    assert!(r.unwrap().unwrap_err().is_eof());
    tokio::time::sleep(Duration::from_millis(10)).await;
    peer.accept(1 << 20);
    let (r, mut sink) = tokio::time::timeout(Duration::from_millis(500), sending)
        .await
        .expect("the sink half never woke")
        .unwrap();
    assert!(r.is_err_and(|e| e.is_eof()));
    assert_eq!(peer.written(), b"reply\n");
    let r = within("close", SinkExt::<&[u8]>::close(&mut sink)).await;
    assert!(r.is_err());
    assert!(peer.is_shut_down());
}

/// The switch's marker holds output: only what was queued before it goes
/// out in plaintext, then the half-close.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test(start_paused = true)]
async fn output_behind_a_tls_switch_stays_unwritten_after_end_of_input() {
    for &b in pki::BACKENDS {
        let (io, peer) = mock_io::pair();
        let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
        conn.push_bytes(&b"before\n"[..]).unwrap();
        let read = conn.push_read(LineCodec::new());
        let switch = conn.push_starttls(pki::client_on(b));
        conn.push_bytes(&b"secret\n"[..]).unwrap();
        peer.send(b"partial");
        peer.close();
        let e = within("wait", conn.wait(read)).await.unwrap_err();
        assert!(e.is_eof());
        assert!(within("switch", conn.wait(switch)).await.is_err());
        peer.accept(1 << 20);
        let r = within("shutdown_write", conn.shutdown_write()).await;
        assert!(r.unwrap_err().is_eof());
        assert_eq!(peer.written(), b"before\n", "{b:?}");
        assert!(peer.is_shut_down());
        let parts = conn.into_parts();
        assert!(parts.write_buf.is_empty(), "{b:?}");
        assert_eq!(&parts.after_switch[..], b"secret\n", "{b:?}");
    }
}

/// Over TLS on both ends: the client sends two lines and ends its TLS
/// output (close_notify + FIN); the server's echo loop meets `EPIPE` at its
/// third read and its `shutdown_write` still sends both replies over TLS,
/// then close_notify.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn tls_shutdown_write_after_the_peer_ended_sends_the_replies() {
    for &b in pki::BACKENDS {
        let (s, c) = tokio::io::duplex(1 << 16);
        let client = tokio::spawn(async move {
            let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
            conn.push_bytes(&b"one\ntwo\n"[..]).unwrap();
            conn.shutdown_write().await.unwrap();
            let mut got = Vec::new();
            let mut dec = LineCodec::new();
            loop {
                match conn.read_with(&mut dec).await {
                    Ok(l) => got.push(l.line().to_vec()),
                    Err(e) => break (got, e),
                }
            }
        });
        let mut conn = QueuedFramed::builder()
            .autocork(true)
            .tls(pki::localhost_on(b))
            .build(s);
        let mut dec = LineCodec::new();
        let e = loop {
            match within("read_with", conn.read_with(&mut dec)).await {
                Ok(l) => conn.push_write(LineCodec::new(), l.line()).unwrap(),
                Err(e) => break e,
            }
        };
        assert!(e.is_eof(), "{b:?}: {e:?}");
        let r = within("shutdown_write", conn.shutdown_write()).await;
        assert!(r.unwrap_err().is_eof(), "{b:?}");
        let (got, end) = within("client", client).await.unwrap();
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()], "{b:?}: {end:?}");
        drop(conn);
    }
}

/// A slow real peer over a duplex: everything arrives, in order, once,
/// then the half-close.
#[tokio::test]
async fn a_slow_peer_gets_everything_from_sink_close() {
    let (a, mut peer) = tokio::io::duplex(64);
    peer.write_all(b"one\n").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut conn = QueuedFramed::builder()
        .autocork(true)
        .build_with_codec(a, LineCodec::new());
    let mut dec = LineCodec::new();
    conn.read_with(&mut dec).await.unwrap();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    conn.push_bytes(body.clone()).unwrap();
    let e = within("read", conn.read_with(&mut dec)).await.unwrap_err();
    assert!(e.is_eof());
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = peer.read(&mut buf).await.unwrap();
            if n == 0 {
                break got;
            }
            got.extend_from_slice(&buf[..n]);
            tokio::task::yield_now().await;
        }
    });
    let r = within("close", SinkExt::<&[u8]>::close(&mut conn)).await;
    assert!(r.unwrap_err().is_eof());
    let got = within("reader", reader).await.unwrap();
    assert_eq!(got, body);
}

/// TLS on both ends; the client half-closed first (close_notify + FIN,
/// `Output::Shut`), then meets end of input inside a read. Its
/// `shutdown_write` after that must not hang or report a new error.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn a_second_tls_shutdown_write_after_end_of_input_returns_at_once() {
    for &b in pki::BACKENDS {
        let (s, c) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
            let line = conn.read(LineCodec::new()).await.unwrap();
            conn.push_bytes(&b"partial"[..]).unwrap();
            conn.shutdown_write().await.unwrap();
            let end = conn.read(LineCodec::new()).await;
            (line.line().to_vec(), end.map(|_| ()))
        });
        let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
        conn.push_bytes(&b"reply\n"[..]).unwrap();
        conn.push_shutdown().unwrap();
        let e = within("read", conn.read(LineCodec::new()))
            .await
            .unwrap_err();
        assert!(e.is_eof(), "{b:?}: {e:?}");
        let start = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), conn.shutdown_write())
            .await
            .expect("shutdown_write hung");
        assert!(r.unwrap_err().is_eof(), "{b:?}");
        assert!(start.elapsed() < Duration::from_secs(1));
        let (line, end) = within("server", server).await.unwrap();
        assert_eq!(line, b"reply", "{b:?}");
        assert!(
            end.is_err_and(|e| e.is_eof() || e.kind() == ErrorKind::BrokenPipe),
            "{b:?}"
        );
    }
}
