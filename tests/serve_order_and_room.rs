//! The server loop (`service::serve`) keeps answers in request order and
//! within `max_in_flight` and `wbuf_max` whatever the service and the
//! peer do: futures that finish out of order, rejected requests answered
//! between them, a service not ready for a while or failing `poll_ready`,
//! answers of sizes around half and all of `wbuf_max` (with the engine
//! busy or not), a peer that stops reading, the shutdown signal and the
//! timers while answers wait for room, and peers that pipeline thousands
//! of requests or never stop. Every wait is bounded.

mod support;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::codecs::{LineCodec, OverflowPolicy, Utf8Line, Utf8LineCodec};
use anyframe::service::{BadRequest, serve};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use support::{read_all, within};

#[path = "support/watched.rs"]
mod watched;

const MS: fn(u64) -> Duration = Duration::from_millis;

/// Writes the requests `0` to `n - 1`, a line each, then shuts the
/// write side.
fn numbered_requests(
    mut wr: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    n: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..n {
            wr.write_all(format!("{i}\n").as_bytes()).await.unwrap();
        }
        wr.shutdown().await.unwrap();
    })
}

/// A line server over `io` (UTF-8 requests, `String` answers) with
/// `max_in_flight` and `wbuf_max` set, spawned.
fn capped_line_server<S>(
    io: tokio::io::DuplexStream,
    svc: S,
    max_in_flight: usize,
    wbuf_max: usize,
) -> tokio::task::JoinHandle<anyframe::Result<()>>
where
    S: tower::Service<Utf8Line, Response = String, Error = Infallible> + Send + 'static,
    S::Future: Send,
{
    let mut b = QueuedFramed::builder();
    b.wbuf_max(Some(wbuf_max));
    tokio::spawn(
        serve(io, Utf8LineCodec::new(), LineCodec::new(), svc)
            .max_in_flight(max_in_flight)
            .connection(b)
            .into_future(),
    )
}

fn lines_of(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .split_terminator('\n')
        .map(str::to_owned)
        .collect()
}

/// Requests `d<ms>`: answered `d<ms>` after `ms` ms (0: at once); lines
/// over 8 bytes are rejected and answered `BAD` (discard policy). With
/// futures completing out of order and replies between them, answers leave
/// in request order.
#[tokio::test(start_paused = true)]
async fn answers_keep_request_order_with_bad_request_replies_and_out_of_order_futures() {
    let (sio, cio) = tokio::io::duplex(1 << 16);
    let svc = tower::service_fn(|l: Utf8Line| {
        let s = l.line().to_string();
        async move {
            let ms: u64 = s[1..].parse().unwrap();
            if ms > 0 {
                tokio::time::sleep(MS(ms)).await;
            }
            Ok::<_, Infallible>(s)
        }
    });
    let dec = LineCodec::builder()
        .max_length(8)
        .overflow(OverflowPolicy::Discard)
        .build_utf8()
        .unwrap();
    let server = tokio::spawn(
        serve(sio, dec, LineCodec::new(), svc)
            .max_in_flight(5)
            .on_bad_request(|_| BadRequest::Reply("BAD".to_string()))
            .into_future(),
    );
    let mut want = Vec::new();
    let mut input = String::new();
    for i in 0..200u64 {
        if i % 7 == 3 {
            input.push_str("waytoolonglinehere\n");
            want.push("BAD".to_string());
        } else {
            let ms = if i % 3 == 0 { 0 } else { (97 * i) % 50 + 1 };
            let l = format!("d{ms}");
            input.push_str(&l);
            input.push('\n');
            want.push(l);
        }
    }
    let (rd, mut wr) = tokio::io::split(cio);
    wr.write_all(input.as_bytes()).await.unwrap();
    wr.shutdown().await.unwrap();
    let got = within("peer", read_all(rd)).await;
    let r = within("server", server).await.unwrap();
    assert_eq!(lines_of(&got), want);
    assert!(r.is_ok(), "{r:?}");
}

/// Concurrent service calls (from `call` to the future's completion)
/// never exceed `max_in_flight`, with answers completing out of order and
/// a peer reading slowly.
#[tokio::test(start_paused = true)]
async fn max_in_flight_is_never_exceeded_with_slow_peer_and_out_of_order_futures() {
    let (sio, cio) = tokio::io::duplex(64);
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (n2, p2) = (now.clone(), peak.clone());
    let svc = tower::service_fn(move |l: Utf8Line| {
        let c = n2.fetch_add(1, Ordering::SeqCst) + 1;
        p2.fetch_max(c, Ordering::SeqCst);
        let n3 = n2.clone();
        let i: u64 = l.line().parse().unwrap();
        async move {
            tokio::time::sleep(MS((i * 37) % 13)).await;
            n3.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Infallible>(format!("{i}:{}", "z".repeat((i as usize * 31) % 200)))
        }
    });
    let server = capped_line_server(sio, svc, 3, 600);
    let (rd, wr) = tokio::io::split(cio);
    let writer = numbered_requests(wr, 300);
    let mut lines = BufReader::new(rd).lines();
    for i in 0..300usize {
        let l = within("answer", lines.next_line()).await.unwrap().unwrap();
        assert_eq!(l, format!("{i}:{}", "z".repeat((i * 31) % 200)));
        if i % 10 == 0 {
            tokio::time::sleep(MS(3)).await;
        }
    }
    within("writer", writer).await.unwrap();
    let r = within("server", server).await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
}

/// `wbuf_max` = 1000; answers whose encoded length is exactly 1000, 999,
/// 501, 500, 499 (in a slow 16-byte transport) all go out in order, and
/// the loop ends `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_exactly_wbuf_max_and_half_go_out_in_order() {
    let (server, cio) = small_pipe_server(None, n_bytes);
    let sizes = [
        1000usize, 999, 501, 500, 499, 1000, 1, 1000, 500, 500, 501, 499, 1000,
    ];
    let mut input = String::new();
    for s in sizes {
        input.push_str(&format!("{s}\n"));
    }
    let (rd, mut wr) = tokio::io::split(cio);
    let writer = tokio::spawn(async move {
        wr.write_all(input.as_bytes()).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    tokio::time::sleep(MS(50)).await;
    let got = within("peer", read_all(rd)).await;
    within("writer", writer).await.unwrap();
    let r = within("server", server).await.unwrap();
    let lens: Vec<usize> = lines_of(&got).iter().map(|l| l.len() + 1).collect();
    assert_eq!(lens, sizes.to_vec(), "loop: {r:?}");
    assert!(r.is_ok(), "{r:?}");
}

/// An answer of wbuf_max + 1 ends the loop (fatal) after the answers
/// before it, exactly those.
#[tokio::test(start_paused = true)]
async fn an_answer_one_over_wbuf_max_ends_the_loop_after_the_answers_before_it() {
    let (server, cio) = small_pipe_server(None, n_bytes);
    let (rd, mut wr) = tokio::io::split(cio);
    wr.write_all(b"600\n1000\n500\n1001\n5\n").await.unwrap();
    tokio::time::sleep(MS(50)).await;
    let got = within("peer", read_all(rd)).await;
    let r = within("server", server).await.unwrap();
    let lens: Vec<usize> = lines_of(&got).iter().map(|l| l.len() + 1).collect();
    assert_eq!(lens, vec![600, 1000, 500], "loop: {r:?}");
    let e = r.unwrap_err();
    assert!(e.is_fatal(), "{e}");
}

/// A peer that sends 200 requests and reads nothing for a while: the loop
/// stops taking answers and reading (calls bounded), never crosses
/// `wbuf_max` (no ENOSPC), and when the peer reads, every answer arrives.
#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_bounds_the_calls_and_gets_everything_later() {
    let (sio, cio) = tokio::io::duplex(64);
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let svc = tower::service_fn(move |l: Utf8Line| {
        c2.fetch_add(1, Ordering::SeqCst);
        let i: usize = l.line().parse().unwrap();
        std::future::ready(Ok::<_, Infallible>(format!(
            "{i}:{}",
            "q".repeat(150 + i % 200)
        )))
    });
    let server = capped_line_server(sio, svc, 4, 1000);
    let (rd, wr) = tokio::io::split(cio);
    let writer = numbered_requests(wr, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled_calls = calls.load(Ordering::SeqCst);
    assert!(
        stalled_calls < 20,
        "calls while the peer read nothing: {stalled_calls}"
    );
    let got = within("peer", read_all(rd)).await;
    within("writer", writer).await.unwrap();
    let r = within("server", server).await.unwrap();
    let ls = lines_of(&got);
    assert_eq!(ls.len(), 200, "loop: {r:?}");
    for (i, l) in ls.iter().enumerate() {
        assert_eq!(*l, format!("{i}:{}", "q".repeat(150 + i % 200)));
    }
    assert!(r.is_ok(), "{r:?}");
}

/// Shutdown signal while an answer waits for room (peer not reading):
/// the requests already read are still answered once the peer reads,
/// and the loop ends Ok.
#[tokio::test(start_paused = true)]
async fn shutdown_while_an_answer_waits_for_room_still_answers_what_was_read() {
    let (sio, cio) = tokio::io::duplex(16);
    let mut b = QueuedFramed::builder();
    b.wbuf_max(Some(1000));
    let svc = tower::service_fn(|l: Utf8Line| {
        let i: usize = l.line().parse().unwrap();
        std::future::ready(Ok::<_, Infallible>(format!("{i}:{}", "w".repeat(700))))
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        serve(sio, Utf8LineCodec::new(), LineCodec::new(), svc)
            .connection(b)
            .with_shutdown(async move {
                let _ = rx.await;
            })
            .into_future(),
    );
    let (rd, mut wr) = tokio::io::split(cio);
    wr.write_all(b"0\n1\n2\n").await.unwrap();
    tokio::time::sleep(MS(200)).await;
    tx.send(()).unwrap();
    tokio::time::sleep(MS(200)).await;
    let got = within("peer", read_all(rd)).await;
    let r = within("server", server).await.unwrap();
    let ls = lines_of(&got);
    assert_eq!(ls.len(), 3, "loop: {r:?}");
    assert!(r.is_ok(), "{r:?}");
}

/// A server loop over a 16-byte pipe with `wbuf_max` 1000 and, if
/// `timer` is given, one timer of 1 s (0 write, 1 read, else idle),
/// answering request `i` (a number) with `answer(i)`; and the peer's end.
fn small_pipe_server(
    timer: Option<usize>,
    answer: fn(usize) -> String,
) -> (
    tokio::task::JoinHandle<anyframe::Result<()>>,
    tokio::io::DuplexStream,
) {
    let (sio, cio) = tokio::io::duplex(16);
    let mut b = QueuedFramed::builder();
    b.wbuf_max(Some(1000));
    match timer {
        None => &mut b,
        Some(0) => b.wtimeout(Duration::from_secs(1)),
        Some(1) => b.rtimeout(Duration::from_secs(1)),
        Some(_) => b.timeout(Duration::from_secs(1)),
    };
    let svc = tower::service_fn(move |l: Utf8Line| {
        let i: usize = l.line().parse().unwrap();
        std::future::ready(Ok::<_, Infallible>(answer(i)))
    });
    let server = tokio::spawn(
        serve(sio, Utf8LineCodec::new(), LineCodec::new(), svc)
            .connection(b)
            .into_future(),
    );
    (server, cio)
}

/// Answers request `n` with a line whose encoding is `n` bytes long.
fn n_bytes(n: usize) -> String {
    "x".repeat(n - 1)
}

/// `wtimeout` 1 s; the peer takes 16 bytes every 100 ms (never silent for
/// a period): answers that wait for room are bounded by the timer but the
/// peer is reading, so every answer arrives and the loop ends Ok.
#[tokio::test(start_paused = true)]
async fn timers_do_not_end_the_loop_while_a_slow_peer_keeps_reading_answers_waiting_for_room() {
    for which in 0..3 {
        let (server, cio) =
            small_pipe_server(Some(which), |i| format!("{i}:{}", "w".repeat(600 + i)));
        let (mut rd, mut wr) = tokio::io::split(cio);
        wr.write_all(b"0\n1\n2\n3\n4\n").await.unwrap();
        wr.shutdown().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        loop {
            let n = within("read", rd.read(&mut buf)).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            tokio::time::sleep(MS(100)).await;
        }
        let r = within("server", server).await.unwrap();
        assert_eq!(lines_of(&got).len(), 5, "timer {which}; loop: {r:?}");
        assert!(r.is_ok(), "timer {which}: {r:?}");
    }
}

/// A peer that never reads, with only a write timer: the answer waiting
/// for room ends the loop with a fatal ETIMEDOUT in bounded time.
#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_ends_the_loop_while_an_answer_waits_for_room() {
    for which in 0..3 {
        let (server, cio) = small_pipe_server(Some(which), |i| format!("{i}:{}", "w".repeat(600)));
        let (_rd, mut wr) = tokio::io::split(cio);
        wr.write_all(b"0\n1\n2\n3\n").await.unwrap();
        let r = within("server", server).await.unwrap();
        let e = r.unwrap_err();
        assert!(e.is_fatal(), "timer {which}: {e}");
    }
}

/// Thousands of pipelined requests in one read with an instant service on
/// a current-thread runtime: a shutdown signal fired by another task, and
/// another task's ticks, are not starved; everything read is answered.
#[tokio::test]
async fn thousands_of_pipelined_requests_do_not_starve_other_tasks_or_shutdown() {
    let (sio, cio) = tokio::io::duplex(1 << 20);
    let svc = tower::service_fn(|l: Utf8Line| {
        std::future::ready(Ok::<_, Infallible>(l.line().to_string()))
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        serve(sio, Utf8LineCodec::new(), LineCodec::new(), svc)
            .with_shutdown(async move {
                let _ = rx.await;
            })
            .into_future(),
    );
    let (rd, mut wr) = tokio::io::split(cio);
    let mut input = String::new();
    for i in 0..20000 {
        input.push_str(&format!("{i}\n"));
    }
    wr.write_all(input.as_bytes()).await.unwrap();
    let reader = tokio::spawn(read_all(rd));
    let ticks = Arc::new(AtomicUsize::new(0));
    let t2 = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            t2.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(MS(1)).await;
        }
    });
    tokio::time::sleep(MS(10)).await;
    tx.send(()).unwrap();
    let r = within("server", server).await.unwrap();
    drop(wr);
    let got = within("peer", reader).await.unwrap();
    ticker.abort();
    assert!(r.is_ok(), "{r:?}");
    let ls = lines_of(&got);
    for (i, l) in ls.iter().enumerate() {
        assert_eq!(*l, i.to_string());
    }
    assert!(ticks.load(Ordering::SeqCst) > 1);
}

/// A service whose poll_ready is Pending for a while (then ready), with
/// a bad request reply behind a request: order holds.
#[tokio::test(start_paused = true)]
async fn a_service_pending_in_poll_ready_keeps_order_with_replies() {
    use std::task::{Context, Poll};
    #[derive(Clone)]
    struct Slow {
        ready_at: tokio::time::Instant,
        sleep: Option<std::sync::Arc<std::sync::Mutex<std::pin::Pin<Box<tokio::time::Sleep>>>>>,
    }
    impl tower::Service<Utf8Line> for Slow {
        type Response = String;
        type Error = Infallible;
        type Future = std::future::Ready<Result<String, Infallible>>;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            let s = self
                .sleep
                .get_or_insert_with(|| {
                    Arc::new(std::sync::Mutex::new(Box::pin(tokio::time::sleep_until(
                        self.ready_at,
                    ))))
                })
                .clone();
            let mut g = s.lock().unwrap();
            g.as_mut().poll(cx).map(Ok)
        }
        fn call(&mut self, l: Utf8Line) -> Self::Future {
            std::future::ready(Ok(l.line().to_string()))
        }
    }
    use std::future::Future;
    let (sio, cio) = tokio::io::duplex(1 << 16);
    let dec = LineCodec::builder()
        .max_length(8)
        .overflow(OverflowPolicy::Discard)
        .build_utf8()
        .unwrap();
    let svc = Slow {
        ready_at: tokio::time::Instant::now() + MS(500),
        sleep: None,
    };
    let server = tokio::spawn(
        serve(sio, dec, LineCodec::new(), svc)
            .on_bad_request(|_| BadRequest::Reply("BAD".to_string()))
            .into_future(),
    );
    let (rd, mut wr) = tokio::io::split(cio);
    wr.write_all(b"waytoolonglinehere\na\nwaytoolonglinehere\nb\nc\nwaytoolonglinehere\n")
        .await
        .unwrap();
    wr.shutdown().await.unwrap();
    let got = within("peer", read_all(rd)).await;
    let r = within("server", server).await.unwrap();
    assert_eq!(lines_of(&got), ["BAD", "a", "BAD", "b", "c", "BAD"]);
    assert!(r.is_ok(), "{r:?}");
}

/// A transport whose writes block the driver's thread for a moment, so the
/// engine is often busy (locked) when the loop answers on another worker:
/// the inbox / hand-back path. Answers around `wbuf_max/2` and `wbuf_max`.
struct SlowWrites(tokio::io::DuplexStream);

impl tokio::io::AsyncRead for SlowWrites {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SlowWrites {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::thread::sleep(Duration::from_micros(300));
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[test]
fn busy_engine_answers_near_half_and_whole_wbuf_max_keep_order_and_never_fail() {
    let size = |i: usize| [499usize, 500, 501, 1000, 999, 6, 250, 251][i % 8];
    let (ls, r) = watched::on_two_workers(Duration::from_secs(60), move || async move {
        let (sio, cio) = tokio::io::duplex(700);
        let mut b = QueuedFramed::builder();
        b.wbuf_max(Some(1000));
        let svc = tower::service_fn(move |l: Utf8Line| {
            let i: usize = l.line().parse().unwrap();
            let n = size(i);
            let s = format!("{i:05}{}", "x".repeat(n - 6));
            std::future::ready(Ok::<_, Infallible>(s))
        });
        let server = tokio::spawn(
            serve(SlowWrites(sio), Utf8LineCodec::new(), LineCodec::new(), svc)
                .connection(b)
                .into_future(),
        );
        let (rd, wr) = tokio::io::split(cio);
        let writer = numbered_requests(wr, 800);
        let got = within("peer", read_all(rd)).await;
        within("writer", writer).await.unwrap();
        let r = within("server", server).await.unwrap();
        (lines_of(&got), r)
    })
    .expect("the loop and its peer finish");
    assert_eq!(ls.len(), 800, "loop: {r:?}");
    for (i, l) in ls.iter().enumerate() {
        assert_eq!(l.len() + 1, size(i), "answer {i}");
        assert_eq!(&l[..5], format!("{i:05}"), "answer {i} out of order");
    }
    assert!(r.is_ok(), "{r:?}");
}

/// poll_ready fails after 5 calls: the 5 answers taken are written in
/// order, and the loop ends with the service's error.
#[tokio::test]
async fn poll_ready_error_after_some_calls_writes_the_answers_taken() {
    use std::task::{Context, Poll};
    #[derive(Clone)]
    struct Fails(usize);
    impl tower::Service<Utf8Line> for Fails {
        type Response = String;
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<String, std::io::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
            if self.0 >= 5 {
                Poll::Ready(Err(std::io::Error::other("gone")))
            } else {
                Poll::Ready(Ok(()))
            }
        }
        fn call(&mut self, l: Utf8Line) -> Self::Future {
            self.0 += 1;
            std::future::ready(Ok(l.line().to_string()))
        }
    }
    let (sio, cio) = tokio::io::duplex(1 << 16);
    let server =
        tokio::spawn(serve(sio, Utf8LineCodec::new(), LineCodec::new(), Fails(0)).into_future());
    let (rd, mut wr) = tokio::io::split(cio);
    wr.write_all(b"a\nb\nc\nd\ne\nf\ng\n").await.unwrap();
    let got = within("peer", read_all(rd)).await;
    let r = within("server", server).await.unwrap();
    assert_eq!(lines_of(&got), ["a", "b", "c", "d", "e"]);
    assert!(r.is_err());
}

/// A peer that pipelines requests without end (and reads its answers):
/// the shutdown signal still ends the loop (it stops reading), Ok, and
/// every answer that went out is in order.
async fn shutdown_under_an_endless_pipelining_peer() {
    let (sio, cio) = tokio::io::duplex(1 << 16);
    let svc = tower::service_fn(|l: Utf8Line| {
        std::future::ready(Ok::<_, Infallible>(l.line().to_string()))
    });
    let server = tokio::spawn(
        serve(sio, Utf8LineCodec::new(), LineCodec::new(), svc)
            .with_shutdown(tokio::time::sleep(MS(100)))
            .into_future(),
    );
    let (rd, mut wr) = tokio::io::split(cio);
    let writer = tokio::spawn(async move {
        let mut i = 0u64;
        loop {
            let mut chunk = String::new();
            for _ in 0..1000 {
                chunk.push_str(&format!("{i}\n"));
                i += 1;
            }
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let reader = tokio::spawn(read_all(rd));
    let r = within("server", server).await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    let got = within("peer", reader).await.unwrap();
    writer.abort();
    for (i, l) in lines_of(&got).iter().enumerate() {
        assert_eq!(*l, i.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_loop_under_an_endless_pipelining_peer() {
    shutdown_under_an_endless_pipelining_peer().await;
}

#[tokio::test]
async fn shutdown_ends_the_loop_under_an_endless_pipelining_peer_current_thread() {
    shutdown_under_an_endless_pipelining_peer().await;
}

/// A request decoder that counts the requests it decodes.
#[derive(Clone)]
struct Counting {
    inner: Utf8LineCodec,
    decoded: Arc<AtomicUsize>,
}

impl tokio_util::codec::Decoder for Counting {
    type Item = Utf8Line;
    type Error = anyframe::codecs::Error;

    fn decode(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Utf8Line>, Self::Error> {
        let line = self.inner.decode(buf)?;
        if line.is_some() {
            self.decoded.fetch_add(1, Ordering::SeqCst);
        }
        Ok(line)
    }
}

/// The loop reads a request only when it can hand it to the service:
/// with every call held and ten requests buffered, it has read and called
/// exactly `max_in_flight` (3); each answer lets exactly one more in, not a
/// batch of them to wait unread by the service in the loop's memory.
#[tokio::test(start_paused = true)]
async fn the_loop_reads_no_more_requests_than_max_in_flight_lets_it_call() {
    let (sio, cio) = tokio::io::duplex(1 << 16);
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h2 = held.clone();
    let svc = tower::service_fn(move |l: Utf8Line| {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        h2.lock().unwrap().push(tx);
        async move {
            let _ = rx.await;
            Ok::<_, Infallible>(l.into_line())
        }
    });
    let decoded = Arc::new(AtomicUsize::new(0));
    let decoder = Counting {
        inner: Utf8LineCodec::new(),
        decoded: decoded.clone(),
    };
    let server = tokio::spawn(
        serve(sio, decoder, LineCodec::new(), svc)
            .max_in_flight(3)
            .into_future(),
    );
    let (rd, wr) = tokio::io::split(cio);
    let writer = numbered_requests(wr, 10);
    let mut lines = BufReader::new(rd).lines();
    // Paused time moves on only when every task is idle: the loop has
    // done all it would do with what it has.
    tokio::time::sleep(MS(10)).await;
    let counts = || (held.lock().unwrap().len(), decoded.load(Ordering::SeqCst));
    assert_eq!(counts(), (3, 3), "(called, decoded) with every call held");
    for i in 0..10usize {
        let first = held.lock().unwrap().remove(0);
        first.send(()).unwrap();
        // The front answer is released: it goes out, and one more
        // request comes in (while any is left).
        let line = within("answer", lines.next_line()).await.unwrap().unwrap();
        assert_eq!(line, i.to_string());
        tokio::time::sleep(MS(10)).await;
        // Called so far: the answered ones and those still held.
        let (held_now, read) = counts();
        let want = (i + 1 + 3).min(10);
        assert_eq!(
            (i + 1 + held_now, read),
            (want, want),
            "(called, decoded) after answer {i}"
        );
    }
    within("writer", writer).await.unwrap();
    let r = within("server", server).await.unwrap();
    assert!(r.is_ok(), "{r:?}");
}
