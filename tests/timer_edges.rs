//! Timer edges: the server loop's view of its work as a timer expires
//! (LC-6), its cancellation and a small `rbuf_max` under timers, and TO-6
//! with `read_many`, hooks and the inline front end.

#[path = "support/serving.rs"]
mod serving;
mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyframe::codecs::{LineCodec, Utf8Line, Utf8LineCodec};
use anyframe::service::serve;
use anyframe::{Error, QueuedFramed, Timeout};
use bytes::BytesMut;
use futures::StreamExt;
use serving::{builder_with, spawn_line_server};
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

fn echo() -> impl tower::Service<
    Utf8Line,
    Response = String,
    Error = Infallible,
    Future = impl Future<Output = Result<String, Infallible>> + Send,
> + Send
+ Clone {
    tower::service_fn(|line: Utf8Line| async move { Ok::<_, Infallible>(line.line().to_owned()) })
}

/// A line decoder whose work on a request line starting with "slow"
/// takes `cost` of (real) time: a big request being parsed.
#[derive(Clone)]
struct SlowLines {
    cost: Duration,
}

impl Decoder for SlowLines {
    type Item = Utf8Line;
    type Error = Error;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Utf8Line>, Error> {
        let Some(i) = src.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        if src.starts_with(b"slow") {
            std::thread::sleep(self.cost);
        }
        let _ = i;
        Utf8LineCodec::new().decode(src).map_err(Into::into)
    }
}

// ----- Target 1: stale `owed` while the loop has not yet seen a read -------

/// A request whose decoding takes 1.5 periods (on the driver: a big
/// request being parsed), so the timer expires after the read completed
/// but before the loop has looked at it: the peer is owed an answer, not
/// silent, and its next request, sent at once after the answer, is
/// answered. Real time (the decoder blocks), current thread.
#[tokio::test(flavor = "current_thread")]
async fn serve_timer_expiring_while_the_driver_decodes_a_request_keeps_the_loop() {
    let mut failures = Vec::new();
    for which in [Timeout::Read, Timeout::Idle, Timeout::Write] {
        let period = Duration::from_millis(500);
        let (server_io, client_io) = tokio::io::duplex(4096);
        let server = tokio::spawn(
            serve(
                server_io,
                SlowLines {
                    cost: period * 3 / 2,
                },
                LineCodec::new(),
                echo(),
            )
            .connection(builder_with(which, period))
            .run(),
        );
        let mut client = QueuedFramed::new(client_io);
        client.write(LineCodec::new(), "slow").await.unwrap();
        let first = within("slow", client.read(Utf8LineCodec::new())).await;
        let second = match client.write(LineCodec::new(), "next").await {
            Ok(()) => within("next", client.read(Utf8LineCodec::new())).await,
            Err(e) => Err(e),
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let server_state = if server.is_finished() {
            format!("{:?}", server.await.unwrap())
        } else {
            "running".to_owned()
        };
        let got = (
            first.as_ref().map(|l| l.line().to_owned()).ok(),
            second.as_ref().map(|l| l.line().to_owned()).ok(),
        );
        if got != (Some("slow".into()), Some("next".into())) {
            failures.push(format!(
                "{which:?}: answers {first:?} / {second:?}; server: {server_state}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// the same with a fast decoder and the request sent
/// 0.9 periods into the quiet time: both answered, loop keeps going.
#[tokio::test(start_paused = true)]
async fn serve_request_just_before_the_expiry_is_served() {
    for which in [Timeout::Read, Timeout::Idle, Timeout::Write] {
        let period = Duration::from_secs(1);
        let (server_io, client_io) = tokio::io::duplex(4096);
        let server = tokio::spawn(
            serve(server_io, Utf8LineCodec::new(), LineCodec::new(), echo())
                .connection(builder_with(which, period))
                .run(),
        );
        let mut client = QueuedFramed::new(client_io);
        tokio::time::sleep(period * 9 / 10).await;
        client.write(LineCodec::new(), "a").await.unwrap();
        let a = within("a", client.read(Utf8LineCodec::new()))
            .await
            .unwrap();
        assert_eq!(a.line(), "a");
        tokio::time::sleep(period / 2).await;
        client.write(LineCodec::new(), "b").await.unwrap();
        let b = within("b", client.read(Utf8LineCodec::new()))
            .await
            .unwrap();
        assert_eq!(b.line(), "b", "{which:?}");
        assert!(!server.is_finished(), "{which:?}");
    }
}

// ----- Target 1: cancellation, ENOSPC ---------------------------------------

/// The `run` future dropped while the service works on a request
/// (answers to earlier ones written): the connection closes, the peer
/// sees the end of input, the service's future is dropped.
#[tokio::test(start_paused = true)]
async fn serve_dropped_mid_service_closes_the_connection() {
    let (server_io, mut client_io) = tokio::io::duplex(4096);
    let dropped = Arc::new(AtomicUsize::new(0));
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let d = dropped.clone();
    let svc = tower::service_fn(move |line: Utf8Line| {
        let g = Guard(d.clone());
        async move {
            if line.line() == "hang" {
                std::future::pending::<()>().await;
            }
            drop(g);
            Ok::<_, Infallible>(line.line().to_owned())
        }
    });
    let mut b = QueuedFramed::builder();
    b.rtimeout(Duration::from_secs(1));
    let server = spawn_line_server(server_io, b, svc);
    client_io.write_all(b"a\nhang\n").await.unwrap();
    let mut got = vec![0u8; 2];
    within("a", client_io.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"a\n");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!server.is_finished(), "the loop waits for the service");
    server.abort();
    let _ = server.await;
    let mut rest = Vec::new();
    let n = within("eof", client_io.read_to_end(&mut rest)).await;
    assert!(matches!(n, Ok(0)), "{n:?} {rest:?}");
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "both service futures dropped"
    );
}

/// `rbuf_max` 16 and a read timer: two requests the service takes
/// 3 periods each to answer, then an over-long one in the same segment.
/// The two are answered (the timer during the work ends nothing), then
/// the loop ends with ENOSPC, not ETIMEDOUT.
#[tokio::test(start_paused = true)]
async fn serve_small_rbuf_max_with_timers_answers_then_enospc() {
    let (server_io, mut client_io) = tokio::io::duplex(4096);
    let svc = tower::service_fn(|line: Utf8Line| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, Infallible>(line.line().to_owned())
    });
    let mut b = QueuedFramed::builder();
    b.rtimeout(Duration::from_secs(1))
        .wtimeout(Duration::from_secs(1))
        .rbuf_max(Some(16));
    let server = tokio::spawn(
        serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc)
            .max_in_flight(1000)
            .connection(b)
            .run(),
    );
    client_io
        .write_all(b"a\nb\n0123456789abcdefghij\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let n = within("answers", client_io.read_to_end(&mut got)).await;
    assert!(n.is_ok(), "{n:?}");
    assert_eq!(got, b"a\nb\n");
    let r = within("server", server).await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.kind(), anyframe::ErrorKind::NoSpace, "{e:?}");
}

// ----- Target 2: TO-6 -----------------------------------------------------

/// A decoder that consumes a `#` header byte first, then waits for the
/// rest of its frame (a newline): a frame already begun.
#[derive(Clone, Default, Debug)]
struct HeaderThenLine {
    header: bool,
}

impl Decoder for HeaderThenLine {
    type Item = Vec<u8>;
    type Error = Error;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Vec<u8>>, Error> {
        if !self.header {
            if src.first() == Some(&b'#') {
                let _ = src.split_to(1);
                self.header = true;
            } else {
                return Ok(None);
            }
        }
        match src.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.header = false;
                Ok(Some(src.split_to(i + 1).to_vec()))
            }
            None => Ok(None),
        }
    }
}

/// TO-6 with `read_many`: a `Handle::read_many` batch whose decoder has
/// consumed part of a frame is given up; a task waits in `ready_to_write`
/// / `flush` on the write side (the peer reads nothing). The read timeout
/// closes the connection with a fatal ETIMEDOUT, which the flush hears.
#[tokio::test(start_paused = true)]
async fn to6_read_many_begun_frame_given_up_closes_under_a_flush() {
    let (ours, mut peer) = tokio::io::duplex(64);
    let (h, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(100))
        .build(ours)
        .spawn();
    peer.write_all(b"#par").await.unwrap();
    {
        let batch = h.read_many(HeaderThenLine::default(), 8);
        let r = tokio::time::timeout(Duration::from_millis(50), batch).await;
        assert!(r.is_err(), "the batch waits for the rest");
    }
    h.push_bytes(vec![b'x'; 4096]).unwrap();
    let h2 = h.clone();
    let flush = tokio::spawn(async move { h2.flush().await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let e = h.error();
    assert!(
        e.as_ref().is_some_and(|e| e.is_timeout() && e.is_fatal()),
        "closed={} {e:?}",
        h.is_closed()
    );
    let f = within("flush", flush).await.unwrap();
    assert!(f.as_ref().is_err_and(|e| e.is_fatal()), "{f:?}");
}

/// TO-6 with `read_many` told: the batch's caller hears the first
/// expiry (non-fatal, it keeps its begun frame); with nobody waiting
/// after that, the next expiry closes.
#[tokio::test(start_paused = true)]
async fn to6_read_many_told_then_nobody_closes() {
    let (ours, mut peer) = tokio::io::duplex(64);
    let (h, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(100))
        .build(ours)
        .spawn();
    peer.write_all(b"#par").await.unwrap();
    let e = within("batch", h.read_many(HeaderThenLine::default(), 8))
        .await
        .unwrap_err();
    assert!(e.is_timeout() && !e.is_fatal(), "{e:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let e = h.error();
    assert!(
        e.as_ref().is_some_and(|e| e.is_timeout() && e.is_fatal()),
        "{e:?}"
    );
}

/// TO-6 with `read_many` given up before any input: nothing is owed, so
/// the timeouts stay non-fatal and a later read works.
#[tokio::test(start_paused = true)]
async fn to6_read_many_given_up_unbegun_stays_open() {
    let (ours, mut peer) = tokio::io::duplex(64);
    let (h, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(100))
        .build(ours)
        .spawn();
    {
        let batch = h.read_many(HeaderThenLine::default(), 8);
        let _ = tokio::time::timeout(Duration::from_millis(50), batch).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!h.is_closed(), "{:?}", h.error());
    peer.write_all(b"#ok\n").await.unwrap();
    let (_, frames) = within("later", h.read_many(HeaderThenLine::default(), 8))
        .await
        .unwrap();
    assert_eq!(frames, vec![b"ok\n".to_vec()]);
}

/// TO-6 with a hook: an `on_timeout` hook replaces TO-6: a given-up
/// `push_response_with` and a flush waiter, and the connection stays open.
#[tokio::test(start_paused = true)]
async fn to6_hook_set_never_closes() {
    let (ours, mut peer) = tokio::io::duplex(64);
    let (h, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(100))
        .build(ours)
        .spawn();
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    h.on_timeout(move |_, _| {
        f.fetch_add(1, Ordering::SeqCst);
    });
    drop(h.push_response_with(LineCodec::new(), |l, _| Ok(l)));
    h.push_bytes(vec![b'x'; 4096]).unwrap();
    let h2 = h.clone();
    let _flush = tokio::spawn(async move { h2.flush().await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!h.is_closed(), "{:?}", h.error());
    assert!(fired.load(Ordering::SeqCst) >= 10);
    // The owed response is still read and dropped; the next read gets its own.
    let next = h.push_read(LineCodec::new());
    peer.write_all(b"owed\nmine\n").await.unwrap();
    assert_eq!(within("mine", next).await.unwrap().line(), b"mine");
}

/// The inline front end (not TO-6): a `QueuedFramed` with a codec, used as a
/// `Stream`, a given-up `push_response_with` queued: the stream hears
/// non-fatal timeouts, the connection stays open, and after the owed
/// response the stream yields the next frame.
#[tokio::test(start_paused = true)]
async fn inline_stream_with_an_owed_response_is_not_closed() {
    let (ours, mut peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(100))
        .build_with_codec(ours, LineCodec::new());
    drop(conn.push_response_with(LineCodec::new(), |l, _| Ok(l)));
    for _ in 0..3 {
        let r = within("timeout", conn.next()).await;
        match r {
            Some(Err(e)) => assert!(e.is_timeout() && !e.is_fatal(), "{e:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(!conn.is_closed());
    peer.write_all(b"owed\nframe\n").await.unwrap();
    let r = within("frame", conn.next()).await;
    assert_eq!(r.unwrap().unwrap().line(), b"frame");
}

/// Split with a hook: a hook set, then the inline connection split
/// into Sink and Stream in two tasks, an owed response queued: the hook
/// hears every expiry, neither half gets an error, nothing closes.
#[tokio::test(start_paused = true)]
async fn split_with_a_hook_and_an_owed_response() {
    let (ours, mut peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(100))
        .build_with_codec(ours, LineCodec::new());
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    conn.on_timeout(move |_, _| {
        f.fetch_add(1, Ordering::SeqCst);
    });
    drop(conn.push_response_with(LineCodec::new(), |l, _| Ok(l)));
    let (mut sink, mut stream) = conn.split();
    let reader =
        tokio::spawn(async move { stream.next().await.map(|r| r.map(|l| l.line().to_vec())) });
    let writer = tokio::spawn(async move {
        use futures::SinkExt;
        sink.send(bytes::Bytes::from_static(b"hello")).await
    });
    let mut buf = [0u8; 6];
    within("hello", peer.read_exact(&mut buf)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!reader.is_finished());
    assert!(
        fired.load(Ordering::SeqCst) >= 5,
        "{}",
        fired.load(Ordering::SeqCst)
    );
    peer.write_all(b"owed\nframe\n").await.unwrap();
    let r = within("reader", reader).await.unwrap();
    assert!(matches!(&r, Some(Ok(v)) if v == b"frame"), "{r:?}");
    within("writer", writer).await.unwrap().unwrap();
}

/// An encoder that panics on the answer "boom".
#[derive(Clone)]
struct PanicsOnBoom;

impl tokio_util::codec::Encoder<String> for PanicsOnBoom {
    type Error = Error;
    fn encode(&mut self, item: String, dst: &mut BytesMut) -> Result<(), Error> {
        assert!(item != "boom", "encoder panics");
        dst.extend_from_slice(item.as_bytes());
        dst.extend_from_slice(b"\n");
        Ok(())
    }
}

/// An encoder that panics on an answer, with timers set: the
/// loop's task panics, the connection ends (the peer sees the end of
/// input, with or without the answer before), nothing hangs.
#[tokio::test(start_paused = true)]
async fn serve_encoder_panic_ends_the_connection() {
    let (server_io, mut client_io) = tokio::io::duplex(4096);
    let mut b = QueuedFramed::builder();
    b.rtimeout(Duration::from_secs(1))
        .wtimeout(Duration::from_secs(1));
    let server = tokio::spawn(
        serve(server_io, Utf8LineCodec::new(), PanicsOnBoom, echo())
            .connection(b)
            .run(),
    );
    client_io.write_all(b"a\nboom\nc\n").await.unwrap();
    let mut got = Vec::new();
    let n = within("eof", client_io.read_to_end(&mut got)).await;
    assert!(n.is_ok(), "{n:?}");
    assert!(got == b"a\n" || got.is_empty(), "{got:?}");
    let r = within("server", server).await;
    assert!(r.as_ref().is_err_and(|e| e.is_panic()), "{r:?}");
}
