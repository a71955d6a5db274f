//! Edge cases of the inline front end: exact caps, cancelled futures,
//! transports that misbehave, hooks that push or panic. Every wait is
//! bounded.

#[path = "support/mock_io.rs"]
mod mock_io;
mod support;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use anyframe::codecs::{ChunkCodec, LineCodec};
use anyframe::{Builder, ErrorKind, Parts, QueuedFramed};
use bytes::BytesMut;
use futures::{FutureExt, SinkExt, StreamExt};

use support::within;

#[tokio::test]
async fn rbuf_max_admits_a_frame_of_exactly_the_cap_and_refuses_one_more_byte() {
    let (io, peer) = mock_io::pair();
    let mut conn = Builder::new().rbuf_max(Some(8)).build(io);
    peer.send(b"abc");
    peer.send(b"def");
    peer.send(b"gh");
    let f = within("8", conn.read(ChunkCodec::new(8))).await.unwrap();
    assert_eq!(&f[..], b"abcdefgh");
    peer.send(b"1234567\n");
    let l = within("line", conn.read(LineCodec::new())).await.unwrap();
    assert_eq!(l.line(), b"1234567");
    peer.send(b"123456789");
    let e = within("9", conn.read(ChunkCodec::new(9)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e:?}");
}

#[tokio::test]
async fn restored_input_over_rbuf_max_is_still_read_then_enospc() {
    let (io, peer) = mock_io::pair();
    let mut parts = Parts::new(io, ());
    parts.read_buf = BytesMut::from(&b"0123456789abcdefghij"[..]);
    let mut conn = Builder::new().rbuf_max(Some(8)).build_from_parts(parts);
    let f = within("4", conn.read(ChunkCodec::new(4))).await.unwrap();
    assert_eq!(&f[..], b"0123");
    let f = within("12", conn.read(ChunkCodec::new(12))).await.unwrap();
    assert_eq!(&f[..], b"456789abcdef");
    peer.send(b"zzzz");
    let e = within("30", conn.read(ChunkCodec::new(30)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e:?}");
}

#[tokio::test]
async fn wbuf_max_admits_exactly_the_cap_and_keeps_it_after_the_refused_push() {
    let (io, peer) = mock_io::pair();
    let mut conn = Builder::new().wbuf_max(Some(8)).build(io);
    conn.push_bytes(&b"12345678"[..]).unwrap();
    conn.push_bytes(&b""[..]).unwrap();
    assert_eq!(conn.write_buffered(), 8);
    let e = conn.push_bytes(&b"9"[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    let parts = conn.into_parts();
    assert_eq!(&parts.write_buf[..], b"12345678");
    drop(peer);
}

#[tokio::test]
async fn stream_next_runs_an_unawaited_queued_read_first() {
    let (io, peer) = mock_io::pair();
    let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
    let t = conn.push_read(ChunkCodec::new(3));
    peer.send(b"abcline\n");
    let l = within("next", conn.next()).await.unwrap().unwrap();
    assert_eq!(l.line(), b"line");
    let a = within("t", conn.wait(t)).await.unwrap();
    assert_eq!(&a[..], b"abc");
}

#[tokio::test]
async fn tickets_awaited_out_of_order_keep_queue_order() {
    let (io, peer) = mock_io::pair();
    let mut conn = QueuedFramed::new(io);
    let a = conn.push_read(ChunkCodec::new(2));
    let b = conn.push_read(ChunkCodec::new(2));
    let c = conn.unshift_read(ChunkCodec::new(1));
    peer.send(b"xaabb");
    let bb = within("b", conn.wait(b)).await.unwrap();
    assert_eq!(&bb[..], b"bb");
    let aa = within("a", conn.wait(a)).await.unwrap();
    assert_eq!(&aa[..], b"aa");
    let cc = within("c", conn.wait(c)).await.unwrap();
    assert_eq!(&cc[..], b"x");
}

#[tokio::test]
async fn a_dropped_middle_ticket_consumes_nothing() {
    let (io, peer) = mock_io::pair();
    let mut conn = QueuedFramed::new(io);
    let a = conn.push_read(ChunkCodec::new(2));
    let b = conn.push_read(ChunkCodec::new(2));
    let c = conn.push_read(ChunkCodec::new(2));
    drop(b);
    peer.send(b"aacc");
    let cc = within("c", conn.wait(c)).await.unwrap();
    assert_eq!(&cc[..], b"cc");
    let aa = within("a", conn.wait(a)).await.unwrap();
    assert_eq!(&aa[..], b"aa");
}

#[tokio::test]
async fn cancelled_read_many_mid_frame_leaves_the_bytes_for_the_next_read() {
    let (io, peer) = mock_io::pair();
    let mut conn = QueuedFramed::new(io);
    let mut codec = ChunkCodec::new(4);
    let mut frames = Vec::new();
    peer.send(b"ab");
    {
        let f = conn.read_many(&mut codec, &mut frames, 10);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), f)
                .await
                .is_err()
        );
    }
    assert!(frames.is_empty());
    assert_eq!(conn.read_buffer(), b"ab");
    peer.send(b"cd");
    let f = within("c", conn.read(ChunkCodec::new(3))).await.unwrap();
    assert_eq!(&f[..], b"abc");
}

#[tokio::test]
async fn flush_writes_what_the_drain_hook_queues() {
    let (io, peer) = mock_io::pair();
    let mut conn = Builder::new().watermarks(4, 0).build(io);
    let mut n = 0;
    conn.on_drain(move |q| {
        n += 1;
        if n < 3 {
            q.push_bytes(&b"more!"[..]).unwrap();
        }
    });
    conn.push_bytes(&b"first"[..]).unwrap();
    peer.accept(1000);
    within("flush", conn.flush()).await.unwrap();
    assert_eq!(peer.written(), b"firstmore!more!");
}

#[tokio::test]
async fn a_panicking_drain_hook_reaches_the_caller_and_closes_the_connection() {
    let (io, peer) = mock_io::pair();
    let mut conn = Builder::new().watermarks(4, 0).build(io);
    conn.on_drain(|_q| panic!("hook"));
    conn.push_bytes(&b"first"[..]).unwrap();
    peer.accept(1000);
    let r = std::panic::AssertUnwindSafe(within("flush", conn.flush()))
        .catch_unwind()
        .await;
    assert!(r.is_err(), "the hook's panic goes on to the caller");
    assert!(conn.is_closed());
    let e = within("flush2", conn.flush()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked);
}

#[tokio::test(start_paused = true)]
async fn read_timeout_racing_the_frame_loses_nothing() {
    let (io, peer) = mock_io::pair();
    let mut conn = Builder::new().rtimeout(Duration::from_secs(1)).build(io);
    let p2 = peer.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        p2.send(b"ab");
    });
    let r = conn.read(ChunkCodec::new(2)).await;
    match r {
        Ok(f) => assert_eq!(&f[..], b"ab"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::TimedOut);
            assert!(!e.is_fatal());
            let f = within("retry", conn.read(ChunkCodec::new(2)))
                .await
                .unwrap();
            assert_eq!(&f[..], b"ab");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn read_timeout_then_eof_keeps_the_partial_frame() {
    let (io, peer) = mock_io::pair();
    let mut conn = Builder::new().rtimeout(Duration::from_secs(1)).build(io);
    peer.send(b"a");
    let e = conn.read(ChunkCodec::new(2)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    peer.close();
    let e = conn.read(ChunkCodec::new(2)).await.unwrap_err();
    assert!(e.is_eof(), "{e:?}");
    let parts = conn.into_parts();
    assert_eq!(&parts.read_buf[..], b"a");
}

#[tokio::test]
async fn sink_send_with_a_queued_read_pending() {
    let (io, peer) = mock_io::pair();
    let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
    let t = conn.push_read(LineCodec::new());
    peer.accept(100);
    within("send", conn.send("hello")).await.unwrap();
    assert_eq!(peer.written(), b"hello\n");
    peer.send(b"reply\n");
    let r = within("t", conn.wait(t)).await.unwrap();
    assert_eq!(r.line(), b"reply");
}

#[tokio::test]
async fn into_parts_fails_pending_tickets_and_keeps_every_byte() {
    let (io, peer) = mock_io::pair();
    let mut conn = QueuedFramed::new(io);
    conn.push_bytes(&b"out"[..]).unwrap();
    let t = conn.push_read(ChunkCodec::new(4));
    peer.send(b"ab");
    let _ = tokio::time::timeout(Duration::from_millis(10), conn.flush()).await;
    let parts = conn.into_parts();
    let e = within("t", t).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e:?}");
    let mut conn = QueuedFramed::from_parts(parts);
    peer.send(b"cd");
    let f = within("again", conn.read(ChunkCodec::new(4)))
        .await
        .unwrap();
    assert_eq!(&f[..], b"abcd");
    peer.accept(100);
    within("flush", conn.flush()).await.unwrap();
    assert_eq!(peer.written(), b"out");
}

#[tokio::test]
async fn output_left_by_a_cancelled_flush_goes_out_after_spawn() {
    let (io, peer) = mock_io::pair();
    let mut conn = QueuedFramed::new(io);
    conn.push_bytes(&b"0123456789"[..]).unwrap();
    peer.accept(3);
    let _ = tokio::time::timeout(Duration::from_millis(10), conn.flush()).await;
    assert_eq!(peer.written(), b"012");
    assert_eq!(conn.write_buffered(), 7);
    let (h, driver) = conn.spawn();
    peer.accept(100);
    h.push_bytes(&b"X"[..]).unwrap();
    within("hflush", h.flush()).await.unwrap();
    assert_eq!(peer.written(), b"0123456789X");
    drop(h);
    let _ = within("driver", driver).await;
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    Pending,
    Fail,
}

struct Odd {
    inner: mock_io::MockIo,
    flush: Mode,
    shutdown: Mode,
    shut_calls: usize,
}

impl Odd {
    fn new(inner: mock_io::MockIo, flush: Mode, shutdown: Mode) -> Odd {
        Odd {
            inner,
            flush,
            shutdown,
            shut_calls: 0,
        }
    }
}

fn answer(m: Mode) -> Poll<io::Result<()>> {
    match m {
        Mode::Ok => Poll::Ready(Ok(())),
        Mode::Pending => Poll::Pending,
        Mode::Fail => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
    }
}

impl AsyncRead for Odd {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Odd {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        answer(self.flush)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut_calls += 1;
        answer(self.shutdown)
    }
}

#[tokio::test(start_paused = true)]
async fn a_transport_flush_pending_forever_is_a_write_timeout() {
    let (io, peer) = mock_io::pair();
    peer.accept(100);
    let mut conn = Builder::new()
        .wtimeout(Duration::from_secs(1))
        .build(Odd::new(io, Mode::Pending, Mode::Ok));
    conn.push_bytes(&b"abc"[..]).unwrap();
    let e = within("flush", conn.flush()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn a_transport_shutdown_pending_forever_is_a_write_timeout() {
    let (io, peer) = mock_io::pair();
    peer.accept(100);
    let mut conn = Builder::new()
        .wtimeout(Duration::from_secs(1))
        .build(Odd::new(io, Mode::Ok, Mode::Pending));
    conn.push_bytes(&b"abc"[..]).unwrap();
    let e = within("shut", conn.shutdown_write()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_transport_flush_is_fatal() {
    let (io, peer) = mock_io::pair();
    peer.accept(100);
    let mut conn = Builder::new().build(Odd::new(io, Mode::Fail, Mode::Ok));
    conn.push_bytes(&b"abc"[..]).unwrap();
    let e = within("flush", conn.flush()).await.unwrap_err();
    assert!(e.is_fatal(), "{e:?}");
    assert!(conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_failing_transport_shutdown_is_fatal() {
    let (io, peer) = mock_io::pair();
    peer.accept(100);
    let mut conn = Builder::new().build(Odd::new(io, Mode::Ok, Mode::Fail));
    conn.push_bytes(&b"abc"[..]).unwrap();
    let e = within("shut", conn.shutdown_write()).await.unwrap_err();
    assert!(e.is_fatal(), "{e:?}");
    assert!(conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn shutdown_write_is_idempotent_and_reading_goes_on() {
    let (io, peer) = mock_io::pair();
    peer.accept(100);
    let mut conn = Builder::new().build(Odd::new(io, Mode::Ok, Mode::Ok));
    conn.push_bytes(&b"abc"[..]).unwrap();
    within("shut", conn.shutdown_write()).await.unwrap();
    within("shut2", conn.shutdown_write()).await.unwrap();
    assert_eq!(conn.get_ref().shut_calls, 1);
    let e = conn.push_bytes(&b"x"[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!conn.is_closed());
    within("flush", conn.flush()).await.unwrap();
    peer.send(b"in\n");
    let l = within("read", conn.read(LineCodec::new())).await.unwrap();
    assert_eq!(l.line(), b"in");
}

#[tokio::test(start_paused = true)]
async fn sink_close_half_closes_and_the_stream_reads_on() {
    let (io, peer) = mock_io::pair();
    peer.accept(100);
    let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
    within("send", conn.send("a")).await.unwrap();
    within("close", SinkExt::<&str>::close(&mut conn))
        .await
        .unwrap();
    assert!(peer.is_shut_down());
    let e = within("send2", conn.send("b")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    peer.send(b"x\n");
    peer.close();
    let l = within("next", conn.next()).await.unwrap().unwrap();
    assert_eq!(l.line(), b"x");
    assert!(within("end", conn.next()).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_read_error_fails_every_read_and_keeps_the_output() {
    let (io, peer) = mock_io::pair();
    let mut conn = QueuedFramed::new(io);
    conn.push_bytes(&b"unsent"[..]).unwrap();
    let t = conn.push_read(LineCodec::new());
    peer.send(b"par");
    peer.fail();
    let e = within("read", conn.read(LineCodec::new()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e:?}");
    assert_eq!(within("t", t).await.unwrap_err().kind(), ErrorKind::Io);
    let parts = conn.into_parts();
    assert_eq!(&parts.write_buf[..], b"unsent");
    assert_eq!(&parts.read_buf[..], b"par");
}

async fn stream_across_parts<C>(
    codec: C,
    first: &[u8],
    rest: &[u8],
) -> Result<C::Item, anyframe::Error>
where
    C: tokio_util::codec::Decoder + Unpin,
    C::Error: Into<anyframe::Error>,
{
    let (io, peer) = mock_io::pair();
    let mut conn = QueuedFramed::with_codec(io, codec);
    peer.send(first);
    assert!(
        tokio::time::timeout(Duration::from_millis(20), conn.next())
            .await
            .is_err()
    );
    let parts = conn.into_parts();
    let mut conn = QueuedFramed::from_parts(parts);
    peer.send(rest);
    within("next", conn.next()).await.unwrap()
}

#[tokio::test]
async fn a_stream_codec_mid_frame_survives_into_parts_and_from_parts() {
    let l = stream_across_parts(LineCodec::new(), b"abc", b"def\n")
        .await
        .unwrap();
    assert_eq!(l.line(), b"abcdef");
    let short = LineCodec::builder()
        .max_length(4)
        .overflow(anyframe::codecs::OverflowPolicy::Discard)
        .build()
        .unwrap();
    let e = stream_across_parts(short, b"abcdefgh", b"ij\nok\n")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    let n = stream_across_parts(anyframe::codecs::NetstringCodec::new(), b"5:ab", b"cde,")
        .await
        .unwrap();
    assert_eq!(&n[..], b"abcde");
    let j = stream_across_parts(
        anyframe::codecs::JsonCodec::<serde_json::Value>::new(),
        b"{\"a\":[1,",
        b"2]}",
    )
    .await
    .unwrap();
    assert_eq!(j, serde_json::json!({"a":[1,2]}));
    let c = stream_across_parts(ChunkCodec::for_stream(4).unwrap(), b"ab", b"cd")
        .await
        .unwrap();
    assert_eq!(&c[..], b"abcd");
}

/// Polls `fut` until it is ready or has been polled `max` times; returns
/// the output and the number of polls.
async fn polled<F: std::future::Future + Unpin>(
    mut fut: F,
    max: usize,
) -> (Option<F::Output>, usize) {
    let mut n = 0;
    std::future::poll_fn(|cx| {
        n += 1;
        match Pin::new(&mut fut).poll(cx) {
            Poll::Ready(v) => Poll::Ready((Some(v), n)),
            Poll::Pending if n >= max => Poll::Ready((None, n)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn flush_on_a_stalled_peer_with_a_read_timer_is_not_busy() {
    let (io, peer) = mock_io::pair();
    let mut conn = Builder::new().rtimeout(Duration::from_secs(1)).build(io);
    conn.push_bytes(&b"abc"[..]).unwrap();
    let p2 = peer.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        p2.accept(100);
    });
    let (r, n) = polled(Box::pin(conn.flush()), 200).await;
    assert!(matches!(r, Some(Ok(()))), "{r:?}");
    assert!(n < 50, "flush was polled {n} times: {r:?}");
}

#[tokio::test(start_paused = true)]
async fn ready_to_write_on_a_stalled_peer_with_a_read_timer_is_not_busy() {
    let (io, peer) = mock_io::pair();
    let mut conn = Builder::new()
        .rtimeout(Duration::from_secs(1))
        .watermarks(2, 0)
        .build(io);
    conn.push_bytes(&b"abc"[..]).unwrap();
    let p2 = peer.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        p2.accept(100);
    });
    let (r, n) = polled(Box::pin(conn.ready_to_write()), 200).await;
    assert!(matches!(r, Some(Ok(()))), "{r:?}");
    assert!(n < 50, "ready_to_write was polled {n} times: {r:?}");
}

#[tokio::test(start_paused = true)]
async fn read_with_on_a_silent_peer_hears_the_write_timer() {
    let (io, peer) = mock_io::pair();
    let mut conn = Builder::new().wtimeout(Duration::from_secs(1)).build(io);
    let p2 = peer.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        p2.send(b"x\n");
    });
    let mut codec = LineCodec::new();
    let (r, n) = polled(Box::pin(conn.read_with(&mut codec)), 200).await;
    let e = r.expect("the read ended").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e:?}");
    assert!(!e.is_fatal());
    assert!(n < 50, "read was polled {n} times");
    // The timer fires again every period without a write (TO-3); the
    // line, when it comes, is whole.
    for _ in 0..10 {
        match within("line", conn.read_with(&mut codec)).await {
            Ok(l) => return assert_eq!(l.line(), b"x"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::TimedOut, "{e:?}"),
        }
    }
    panic!("the line never came");
}

#[tokio::test]
async fn a_completion_pushing_over_wbuf_max_closes_with_enospc() {
    let (io, peer) = mock_io::pair();
    let mut conn = Builder::new().wbuf_max(Some(4)).build(io);
    let t = conn.push_read_with(ChunkCodec::new(1), |f, q| {
        // Each fits alone; the second crosses the cap behind the first.
        q.push_bytes(&b"123"[..])?;
        q.push_bytes(&b"45"[..])?;
        Ok(f)
    });
    let behind = conn.push_read(ChunkCodec::new(1));
    peer.send(b"ab");
    let e = within("t", conn.wait(t)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e:?}");
    let e = within("behind", conn.wait(behind)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e:?}");
    assert!(conn.is_closed());
}

#[tokio::test]
async fn sink_readiness_keeps_a_small_wbuf_max_from_being_crossed() {
    let (io, peer) = mock_io::pair();
    let mut conn = Builder::new()
        .wbuf_max(Some(10))
        .build_with_codec(io, LineCodec::new());
    for _ in 0..3 {
        let _ = tokio::time::timeout(Duration::from_millis(20), conn.feed("abcd")).await;
        assert!(conn.write_buffered() <= 10);
    }
    assert!(!conn.is_closed());
    peer.accept(100);
    within("flush", SinkExt::<&str>::flush(&mut conn))
        .await
        .unwrap();
}
