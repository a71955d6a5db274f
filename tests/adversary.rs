//! Adversarial regressions: each test pins one behaviour the engine gets
//! wrong under a timer, a cap, a codec error or a callback, and is bounded
//! so that a hang fails instead of hanging.

use std::time::Duration;

use anyframe::codecs::{ChunkCodec, LineCodec, OverflowPolicy};
use anyframe::{ErrorKind, QueuedFramed};
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bounds an await so that a regression shows up as a failure, not a hang.
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(30), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still pending after 30 s"),
    }
}

// ----- timers ------------------------------------------------------------------

/// TO-3: "a write timeout tries the write side first". On a spawned
/// connection with a read waiting, a write timeout while the peer takes no
/// output must go to the stalled `flush()`, not to the read.
#[tokio::test(start_paused = true)]
async fn write_timeout_goes_to_the_stalled_flush_before_a_waiting_read() {
    let (ours, _peer) = tokio::io::duplex(64);
    let mut b = QueuedFramed::builder();
    b.wtimeout(Duration::from_secs(1));
    let (h, _driver) = b.build(ours).spawn();
    let mut read = h.push_read(LineCodec::new());
    h.push_bytes(vec![b'x'; 4096]).unwrap();
    let flush = within("flush", h.flush()).await;
    let read_now = (&mut read).now_or_never();
    assert!(
        read_now.is_none(),
        "the write timeout went to the waiting read: {read_now:?}"
    );
    assert!(flush.unwrap_err().is_timeout());
}

/// TO-4: "Setting a timer checks the deadline against the last activity."
/// A connection that was busy with every timer off, given a read timeout
/// just after its last read, must not time out at once: activity is only
/// recorded while some timer is on, so the deadline is measured from when
/// the connection was built.
#[tokio::test(start_paused = true)]
async fn read_timeout_set_on_a_busy_connection_counts_from_the_last_read() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peer.write_all(b"busy\n").await.unwrap();
        within("busy read", h.read(LineCodec::new())).await.unwrap();
    }
    // The last read was just now; 5 s of silence are allowed from here.
    let next = h.push_read(LineCodec::new());
    h.set_rtimeout(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_secs(1)).await;
    peer.write_all(b"late but in time\n").await.unwrap();
    let got = within("read", next).await;
    assert_eq!(
        got.expect("timed out at once, 1 s after the last read, under a 5 s rtimeout")
            .line(),
        b"late but in time"
    );
}

/// The same for the idle timeout and an `on_timeout` hook: the hook runs
/// at once on a connection that was active a moment ago.
#[tokio::test(start_paused = true)]
async fn idle_timeout_hook_set_after_activity_does_not_run_at_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    tokio::time::sleep(Duration::from_secs(60)).await;
    peer.write_all(b"hello\n").await.unwrap();
    within("read", h.read(LineCodec::new())).await.unwrap();
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    h.on_timeout(move |_, _| {
        f.fetch_add(1, Ordering::SeqCst);
    });
    h.set_timeout(Duration::from_secs(10));
    assert_eq!(
        fired.load(Ordering::SeqCst),
        0,
        "a 10 s idle timeout fired right after a read"
    );
}

/// The head of a line too long for [`short_lines`], its end not sent yet.
const LONG_HEAD: &[u8] = b"an over-long line that has not ended";

/// Sends the rest of the over-long line and then the line `ok`; the next
/// two reads with `read` must give the dropped line's `ENOSPC`, then `ok`.
async fn the_tail_gives_enospc_then_the_next_line(
    peer: &mut tokio::io::DuplexStream,
    mut read: impl AsyncFnMut() -> anyframe::Result<anyframe::codecs::Line>,
) {
    peer.write_all(b" TAIL\nok\n").await.unwrap();
    let retry = within("retry", read()).await;
    assert_eq!(retry.unwrap_err().kind(), ErrorKind::NoSpace);
    let next = within("next", read()).await;
    assert_eq!(next.unwrap().line(), b"ok");
}

/// A peer that reads every request and never answers.
fn never_answer(mut theirs: tokio::io::DuplexStream) {
    tokio::spawn(async move {
        let mut sink = vec![0u8; 4096];
        while let Ok(n) = theirs.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
}

// ----- read_many's deferred error --------------------------------------------

/// A line decoder that drops lines over 8 bytes (non-fatal `ENOSPC`).
fn short_lines() -> LineCodec {
    LineCodec::builder()
        .max_length(8)
        .overflow(OverflowPolicy::Discard)
        .build()
        .unwrap()
}

/// `Handle::read_many` keeps a non-fatal error that came after its frames
/// "for the next call". It is handed to whatever read comes next, even a
/// pipelined `call` of another task: that caller gets the line decoder's
/// `ENOSPC`, and its own response is then read and dropped.
#[tokio::test]
async fn read_many_deferred_error_does_not_fail_an_unrelated_call() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    peer.write_all(b"ok\nthis line is too long\n")
        .await
        .unwrap();
    let (_d, frames) = within("read_many", h.read_many(short_lines(), 16))
        .await
        .unwrap();
    assert_eq!(frames.len(), 1);
    // Another user of the connection now makes a request.
    let call = h.call(LineCodec::new(), "ping", LineCodec::new());
    let mut req = [0u8; 5];
    within("request", peer.read_exact(&mut req)).await.unwrap();
    assert_eq!(&req, b"ping\n");
    peer.write_all(b"pong\n").await.unwrap();
    let got = within("call", call).await;
    assert_eq!(
        got.expect("the call got read_many's deferred line error")
            .line(),
        b"pong"
    );
}

/// The same with a plain read of another type queued after `read_many`.
#[tokio::test]
async fn read_many_deferred_error_does_not_fail_a_chunk_read() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    peer.write_all(b"ok\nthis line is too long\nabc")
        .await
        .unwrap();
    let (_d, frames) = within("read_many", h.read_many(short_lines(), 16))
        .await
        .unwrap();
    assert_eq!(frames.len(), 1);
    let chunk = within("chunk", h.read(ChunkCodec::new(3))).await;
    assert_eq!(&chunk.expect("the chunk read got a line error")[..], b"abc");
}

// ----- the read buffer under a started request --------------------------------

/// OPT-21: bytes may be removed from the front of the read buffer while
/// requests are queued. A line request that has already scanned part of
/// its line keeps a scan position into those bytes, so after `consume` it
/// misses the end of line and returns a wrong frame.
#[tokio::test]
async fn consume_under_a_started_line_request_keeps_the_frame_right() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::new(ours);
    let line = conn.push_read(LineCodec::new());
    let behind = conn.push_read(ChunkCodec::new(1));
    peer.write_all(b"abcdef").await.unwrap();
    // Drive until the line request has looked at "abcdef" and waits.
    let _ = tokio::time::timeout(Duration::from_millis(50), conn.wait(behind)).await;
    assert_eq!(conn.read_buffer(), b"abcdef");
    conn.consume(3);
    peer.write_all(b"\nnext\n").await.unwrap();
    let got = within("line", conn.wait(line)).await.unwrap();
    assert_eq!(got.line(), b"def");
}

// ----- the server loop ---------------------------------------------------------

/// `BadRequest::Reply`: "answer it and go on reading". A decoder that does
/// skip what it rejected (a line over the limit under the discard policy)
/// is still closed on the second over-long line in a row, although every
/// byte of the first was consumed.
#[tokio::test]
async fn serve_answers_two_overlong_lines_in_a_row_when_the_decoder_skips_them() {
    use anyframe::codecs::Utf8Line;
    use anyframe::service::{BadRequest, serve};
    let (server_io, client_io) = tokio::io::duplex(4096);
    let upper = tower::service_fn(|line: Utf8Line| async move {
        Ok::<_, std::convert::Infallible>(line.line().to_uppercase())
    });
    let lines = LineCodec::builder()
        .max_length(16)
        .overflow(OverflowPolicy::Discard)
        .build_utf8()
        .unwrap();
    let server = serve(server_io, lines, LineCodec::new(), upper)
        .on_bad_request(|_| BadRequest::Reply("ERR line too long".to_string()));
    let server = tokio::spawn(std::future::IntoFuture::into_future(server));
    let mut client = QueuedFramed::new(client_io);
    for l in [
        "this line is far too long",
        "and so is this one, again",
        "short",
    ] {
        client.push_write(LineCodec::new(), l).unwrap();
    }
    client.flush().await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..3 {
        match within("answer", client.read(LineCodec::new())).await {
            Ok(l) => answers.push(String::from_utf8_lossy(l.line()).into_owned()),
            Err(e) => {
                answers.push(format!("<{e}>"));
                break;
            }
        }
    }
    drop(client);
    let outcome = within("server", server).await.unwrap();
    assert_eq!(
        answers,
        ["ERR line too long", "ERR line too long", "SHORT"],
        "server ended with {outcome:?}"
    );
}

// ----- the pipelined client ----------------------------------------------------

/// A pipelined tower `Client` whose first response is malformed JSON: the
/// bad bytes are left in the buffer (JSON's `EBADMSG` consumes nothing), so
/// the next caller's request decodes the first caller's response and fails
/// with its error, and so does every later call, while `poll_ready` keeps
/// saying the connection is fine. A response that cannot be decoded must
/// not be handed to the next caller: consume it or close the connection.
#[tokio::test]
async fn client_never_hands_a_malformed_response_to_the_next_caller() {
    use anyframe::codecs::JsonCodec;
    use anyframe::service::Client;
    use serde_json::{Value, json};
    use tower::{Service, ServiceExt};
    let (ours, theirs) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let mut conn = QueuedFramed::new(theirs);
        let mut n = 0;
        while let Ok(_req) = conn.read(JsonCodec::<Value>::ndjson()).await {
            n += 1;
            let answer: &[u8] = if n == 1 { b"{bad}\n" } else { b"{\"ok\":2}\n" };
            conn.push_bytes(answer.to_vec()).unwrap();
            if conn.flush().await.is_err() {
                break;
            }
        }
    });
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut client = Client::new(handle, JsonCodec::<Value>::ndjson(), |_: &Value| {
        JsonCodec::<Value>::ndjson()
    });
    let first = within("first", client.ready().await.unwrap().call(json!({"n": 1}))).await;
    assert_eq!(first.unwrap_err().kind(), ErrorKind::BadMessage);
    for n in 2..5 {
        let Ok(svc) = client.ready().await else {
            return; // closed: acceptable
        };
        match within("next", svc.call(json!({ "n": n }))).await {
            Ok(v) => assert_eq!(v, json!({"ok": 2})),
            Err(e) => assert!(
                e.is_fatal(),
                "call {n} failed with the first response's error and the client goes on: {e:?}"
            ),
        }
    }
}

// ----- panics while closing -----------------------------------------------------

/// Panics when dropped: stands for any user value captured by a completion.
struct Bomb;
impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("bomb dropped");
        }
    }
}

/// A completion that owns a value whose `Drop` panics is user code too.
/// When `destroy` drops it, the panic leaves `close` half done: the
/// connection is marked closed, so no later close finishes the job, and a
/// stalled `flush()` waits forever.
#[tokio::test(start_paused = true)]
async fn a_panicking_drop_while_closing_still_resolves_every_waiter() {
    let (ours, _peer) = tokio::io::duplex(64);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    let bomb = Bomb;
    let armed = h.push_read_with(LineCodec::new(), move |_, _| {
        let _keep = &bomb;
        Ok(())
    });
    h.push_bytes(vec![0u8; 4096]).unwrap();
    let mut flush = Box::pin(h.flush());
    assert!((&mut flush).now_or_never().is_none());
    tokio::task::yield_now().await;
    let destroyed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.destroy()));
    assert!(destroyed.is_err(), "the drop panicked inside destroy");
    let _ = within("armed ticket", armed).await;
    let flushed = within("flush", flush).await;
    assert!(flushed.unwrap_err().is_fatal());
}

// ----- cancellation of a discarding line read ----------------------------------

/// "A request dropped or timed out before it produced a frame has consumed
/// nothing." A line read under `OverflowPolicy::Discard` that has started
/// dropping an over-long line clears the read buffer while it waits for the
/// line's end; dropped (a caller's own timeout) before the end arrives, it
/// has consumed the head of the line, and the next read, with a fresh
/// decoder as in any retry loop, returns the line's tail as a line.
#[tokio::test]
async fn cancelled_discarding_line_read_does_not_turn_the_tail_into_a_line() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    peer.write_all(LONG_HEAD).await.unwrap();
    let first = tokio::time::timeout(Duration::from_millis(100), h.read(short_lines())).await;
    assert!(first.is_err(), "the line has not ended yet: {first:?}");
    peer.write_all(b" TAIL\nok\n").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        match within("retry", h.read(short_lines())).await {
            Ok(l) => got.push(String::from_utf8_lossy(l.line()).into_owned()),
            Err(e) => got.push(format!("<{:?}>", e.kind())),
        }
    }
    assert_ne!(
        got[0], " TAIL",
        "the tail of a dropped line came out as a line: {got:?}"
    );
}

/// The same with the connection's read timeout instead of the caller's.
#[tokio::test(start_paused = true)]
async fn timed_out_discarding_line_read_does_not_turn_the_tail_into_a_line() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut b = QueuedFramed::builder();
    b.rtimeout(Duration::from_secs(1));
    let (h, _driver) = b.build(ours).spawn();
    peer.write_all(LONG_HEAD).await.unwrap();
    let first = within("first", h.read(short_lines())).await;
    assert!(first.unwrap_err().is_timeout());
    peer.write_all(b" TAIL\nok\n").await.unwrap();
    let got = within("retry", h.read(short_lines())).await;
    if let Ok(l) = &got {
        assert_ne!(
            l.line(),
            b" TAIL",
            "the tail of a dropped line came out as a line"
        );
    }
}

// ----- one-shot decoders in a batch ---------------------------------------------

/// `Handle::read_many` with a one-shot decoder (`build_once`): the batch asks
/// the spent decoder for a second frame, gets its fatal `EINVAL` (ERR-5 says
/// `InvalidInput` is never fatal), defers it, and the next read, with a
/// fresh decoder, closes the connection with it. A batch must stop at a
/// decoder that is done instead of turning that into the connection's end.
#[tokio::test]
async fn read_many_with_a_one_shot_decoder_does_not_kill_the_connection() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    peer.write_all(b"a\nb\n").await.unwrap();
    let once = LineCodec::builder().build_once().unwrap();
    let (_d, frames) = within("read_many", h.read_many(once, 10)).await.unwrap();
    assert_eq!(frames.len(), 1);
    let next = within("next", h.read(LineCodec::new())).await;
    assert_eq!(
        next.expect("the spent one-shot decoder's error closed the connection")
            .line(),
        b"b"
    );
    assert!(!h.is_closed());
}

/// The same on a `QueuedFramed` you drive yourself.
#[tokio::test]
async fn inline_read_many_with_a_one_shot_decoder_does_not_kill_the_connection() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::new(ours);
    peer.write_all(b"a\nb\n").await.unwrap();
    let mut once = LineCodec::builder().build_once().unwrap();
    let mut frames = Vec::new();
    let n = within("read_many", conn.read_many(&mut once, &mut frames, 10)).await;
    assert_eq!(frames.len(), 1, "{n:?}");
    let next = within("next", conn.read(LineCodec::new())).await;
    assert_eq!(
        next.expect("the spent one-shot decoder's error closed the connection")
            .line(),
        b"b"
    );
}

// ----- write order ---------------------------------------------------------------

/// A transport that takes every write whole, vectored, and records it.
struct Recorder {
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncRead for Recorder {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
}

impl tokio::io::AsyncWrite for Recorder {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.out.lock().unwrap().extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut out = self.out.lock().unwrap();
        let mut n = 0;
        for b in bufs {
            out.extend_from_slice(b);
            n += b.len();
        }
        std::task::Poll::Ready(Ok(n))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// WQ-4: "Bytes go out exactly in push order." With more large buffers
/// queued than one vectored write takes (64), the write puts the small
/// bytes pushed last (the copied tail) right after the 63rd buffer, ahead
/// of the buffers still queued, and the queue then advances as if it had
/// written them in order: the peer gets the stream out of order.
#[tokio::test]
async fn many_large_pushes_then_a_small_one_go_out_in_push_order() {
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut conn = QueuedFramed::new(Recorder { out: out.clone() });
    let mut expected = Vec::new();
    for i in 0..70u8 {
        let chunk = vec![i; 1024];
        expected.extend_from_slice(&chunk);
        conn.push_bytes(chunk).unwrap();
    }
    conn.push_bytes(&b"END\n"[..]).unwrap();
    expected.extend_from_slice(b"END\n");
    within("flush", conn.flush()).await.unwrap();
    let got = out.lock().unwrap().clone();
    assert_eq!(got.len(), expected.len());
    let first_diff = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "the output is out of push order");
}

// ----- backpressure after a write timeout ----------------------------------------

/// OPT-5: above the high watermark a producer waits until the queue is
/// back at the low one. A write timeout hands its non-fatal `ETIMEDOUT` to
/// the waiting producer (right), but it also clears the blocked state
/// (`Watermarks::wake_all`), so the next `ready_to_write` says "go" with
/// the queue still far above the high mark: backpressure is gone for a
/// peer that stopped reading, and output grows until `wbuf_max`.
#[tokio::test(start_paused = true)]
async fn write_timeout_does_not_lift_backpressure() {
    let (ours, _peer) = tokio::io::duplex(64);
    let mut b = QueuedFramed::builder();
    b.wtimeout(Duration::from_secs(1)).watermarks(1024, 0);
    let (h, _driver) = b.build(ours).spawn();
    h.push_bytes(vec![b'x'; 8192]).unwrap();
    let first = within("ready_to_write", h.ready_to_write()).await;
    assert!(first.unwrap_err().is_timeout());
    assert!(h.write_buffered() > 1024);
    let again = tokio::time::timeout(Duration::from_millis(100), h.ready_to_write()).await;
    assert!(
        !matches!(again, Ok(Ok(()))),
        "ready_to_write said go with {} bytes queued over a 1024-byte high mark",
        h.write_buffered()
    );
}

// ----- the server loop at a truncated last request ---------------------------------

/// A client sends two whole requests and the start of a third, then closes
/// its write side. The server must answer the two it read (its docs: it
/// ends "after answering every request it has read"; LC-5: replies to
/// requests before a fatal input-side error are still written). With a
/// service that takes a moment, the loop reads on while both are in
/// flight, the end of input inside the third closes the connection, and
/// the two answers can no longer be queued: the client gets nothing.
#[tokio::test]
async fn serve_answers_the_whole_requests_before_a_truncated_one() {
    let (got, outcome) = serve_upper(b"one\ntwo\nthr", Duration::from_millis(50)).await;
    assert_eq!(got, "ONE\nTWO\n", "server ended with {outcome:?}");
}

/// Runs `serve` over an in-memory pipe with a service that upper-cases
/// each line after `delay`, sends it `input` and ends the input: what the
/// client read back, and how the loop ended.
async fn serve_upper(input: &[u8], delay: Duration) -> (String, anyframe::Result<()>) {
    use anyframe::codecs::Utf8Line;
    use anyframe::service::serve;
    let (server_io, client_io) = tokio::io::duplex(4096);
    let upper = tower::service_fn(move |line: Utf8Line| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, std::convert::Infallible>(line.line().to_uppercase())
    });
    let lines = LineCodec::builder().build_utf8().unwrap();
    let server = tokio::spawn(std::future::IntoFuture::into_future(serve(
        server_io,
        lines,
        LineCodec::new(),
        upper,
    )));
    let (mut rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(input).await.unwrap();
    wr.shutdown().await.unwrap();
    let mut got = Vec::new();
    let _ = within("answers", rd.read_to_end(&mut got)).await;
    let outcome = within("server", server).await.unwrap();
    (String::from_utf8_lossy(&got).into_owned(), outcome)
}

// ----- the pipelined client against a silent server ---------------------------------

/// A timed-out call keeps its in-flight slot until its late answer is read
/// (right: the slot is still on the wire). Against a server that never
/// answers, with a read timeout set, once `max_in_flight` calls have timed
/// out `ready()` waits forever: the read timeout keeps firing, but it has no
/// waiter left to tell, and `poll_ready` waits on the slots, not on the
/// connection. A tower user gets a hang instead of a timeout or an error.
#[tokio::test(start_paused = true)]
async fn client_ready_does_not_hang_when_every_slot_is_held_by_a_timed_out_call() {
    use anyframe::service::ClientBuilder;
    use tower::{Service, ServiceExt};
    let (ours, theirs) = tokio::io::duplex(4096);
    never_answer(theirs);
    let mut b = QueuedFramed::builder();
    b.rtimeout(Duration::from_secs(1));
    let (handle, _driver) = b.build(ours).spawn();
    let mut client =
        ClientBuilder::default()
            .max_in_flight(2)
            .build(handle, LineCodec::new(), |_: &&str| LineCodec::new());
    for name in ["one", "two"] {
        let r = within(name, client.ready().await.unwrap().call(name)).await;
        assert!(r.unwrap_err().is_timeout());
    }
    let third = within("third ready", client.ready()).await.map(|_| ());
    assert!(third.is_err(), "ready() said go with every slot held");
}

// ----- cancelled requests behind a waiting head ---------------------------------------

/// Bounded memory: a read cancelled behind a head that waits (a heartbeat
/// loop of `timeout(…, handle.read(…))` while a long transfer is queued)
/// stays queued until it reaches the head, so each cancelled read leaks
/// its request, decoder and channel for as long as the head waits.
#[tokio::test]
async fn cancelled_reads_behind_a_waiting_head_do_not_pile_up() {
    let (ours, _peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    let _transfer = h.push_read(ChunkCodec::new(1 << 20));
    for _ in 0..1_000 {
        let _ = tokio::time::timeout(Duration::from_micros(1), h.read(LineCodec::new())).await;
    }
    tokio::task::yield_now().await;
    let n = h.queued_reads();
    assert!(n < 100, "{n} cancelled requests are still queued");
}

// ----- output queued behind a STARTTLS ------------------------------------------------

/// TLS-2: output queued after a STARTTLS waits for the handshake and goes
/// out encrypted; TLS-4: the connection never goes on unencrypted. When
/// the connection is destroyed while the handshake is pending, `close`
/// clears the switch's write marker and the linger writes what is queued:
/// this pins that the transport, mid-handshake, still holds those bytes
/// back (checked; passes).
#[tokio::test]
async fn output_queued_behind_a_pending_starttls_never_goes_out_in_plaintext() {
    let (ours, mut peer) = tokio::io::duplex(64 * 1024);
    let (h, driver) = QueuedFramed::new(ours).spawn();
    let tls = h.starttls(anyframe::tls::TlsClient::new("localhost").unwrap());
    // The ClientHello is out: the handshake waits for the server.
    let mut head = [0u8; 5];
    within("client hello", peer.read_exact(&mut head))
        .await
        .unwrap();
    h.push_bytes(&b"AUTH PLAIN c2VjcmV0\r\n"[..]).unwrap();
    h.destroy();
    drop(h);
    drop(tls);
    let mut wire = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), peer.read_to_end(&mut wire)).await;
    drop(driver);
    let leaked = wire.windows(10).any(|w| w == b"AUTH PLAIN");
    assert!(
        !leaked,
        "output queued for the TLS session went out in plaintext"
    );
}

// ----- hooks after destroy -------------------------------------------------------------

/// LC-1: after `destroy()` "no hook runs". An `on_drain` hook that queues
/// one more message and then destroys the connection (a last goodbye) is
/// run again: the write loop goes on writing after the destroy, the
/// goodbye drains the queue, and that drain edge runs the hook on the
/// closed connection.
#[tokio::test]
async fn no_drain_hook_runs_after_destroy_from_inside_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut conn = QueuedFramed::new(Recorder { out: out.clone() });
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    conn.on_drain(move |q| {
        if r.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = q.push_bytes(&b"goodbye\n"[..]);
            q.destroy();
        }
    });
    conn.push_bytes(vec![b'x'; 1000]).unwrap();
    let _ = within("flush", conn.flush()).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the drain hook ran again after it destroyed the connection"
    );
}

/// LC-1 again: a timer set on a destroyed connection runs the `on_timeout`
/// hook (`set_timer` checks the deadline at once without looking at
/// whether the connection is still open).
#[tokio::test]
async fn no_timeout_hook_runs_after_destroy() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (ours, _peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    h.on_timeout(move |_, _| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    h.destroy();
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.set_timeout(Duration::from_millis(1));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the timeout hook ran on a destroyed connection"
    );
}

/// The same, with the STARTTLS still queued behind a read (the usual
/// shape: read the server's "220 ready", then start TLS, with the login
/// already queued behind it). The connection ends by an input-side error
/// (the peer closes inside the awaited line), which lingers; `close` has
/// cleared the switch's marker, TLS never started, and the linger writes
/// the login, meant for the TLS session, in plaintext.
#[tokio::test]
async fn output_queued_behind_a_starttls_that_never_ran_is_not_lingered_in_plaintext() {
    let (ours, peer) = tokio::io::duplex(64 * 1024);
    let (mut peer_rd, mut peer_wr) = tokio::io::split(peer);
    let (h, driver) = QueuedFramed::new(ours).spawn();
    let ready = h.push_read(LineCodec::new());
    let tls = h.starttls(anyframe::tls::TlsClient::new("localhost").unwrap());
    h.push_bytes(&b"AUTH PLAIN c2VjcmV0\r\n"[..]).unwrap();
    // The peer closes inside the line the client waits for.
    peer_wr.write_all(b"220 rea").await.unwrap();
    peer_wr.shutdown().await.unwrap();
    assert!(within("ready", ready).await.unwrap_err().is_fatal());
    assert!(within("starttls", tls).await.is_err());
    drop(h);
    let _ = within("driver", driver).await;
    let mut wire = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), peer_rd.read_to_end(&mut wire)).await;
    assert!(
        !wire.windows(10).any(|w| w == b"AUTH PLAIN"),
        "output queued for the TLS session went out in plaintext: {:?}",
        String::from_utf8_lossy(&wire)
    );
}

// ----- a fatal error returned by a completion ------------------------------------------

/// ERR-2: a fatal error ends the connection; every queued request fails
/// with it. A completion (`push_read_with`) that returns a fatal error
/// (a frame that proves the peer cannot be trusted) only fails its own
/// ticket: the ticket says `is_fatal()`, yet the connection stays open and
/// the next request reads on as if nothing happened.
#[tokio::test]
async fn a_fatal_error_from_a_completion_closes_the_connection() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    let first = h.push_read_with(LineCodec::new(), |_, _| {
        Err::<(), _>(anyframe::Error::custom(
            ErrorKind::BadMessage,
            true,
            "unexpected greeting",
        ))
    });
    let second = h.push_read(LineCodec::new());
    peer.write_all(b"who are you\nnext\n").await.unwrap();
    let e = within("first", first).await.unwrap_err();
    assert!(e.is_fatal());
    let next = within("second", second).await;
    assert!(
        next.is_err() && h.is_closed(),
        "a fatal error left the connection open: next read gave {next:?}"
    );
}

// ----- the server loop's graceful shutdown ------------------------------------------------

/// `Serve` ends at its shutdown signal "after answering every request it
/// has read". Requests read in one batch that wait for the service's
/// `poll_ready` (a concurrency limit) when the signal fires are dropped
/// unanswered (`Event::Shutdown` clears them), and the client waits for
/// answers that never come.
#[tokio::test]
async fn serve_shutdown_answers_every_request_it_has_read() {
    use anyframe::codecs::Utf8Line;
    use anyframe::service::serve;
    use tower::ServiceBuilder;
    let (server_io, client_io) = tokio::io::duplex(4096);
    let slow_upper =
        ServiceBuilder::new()
            .concurrency_limit(1)
            .service_fn(|line: Utf8Line| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, std::convert::Infallible>(line.line().to_uppercase())
            });
    let lines = LineCodec::builder().build_utf8().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = serve(server_io, lines, LineCodec::new(), slow_upper)
        .max_in_flight(4)
        .with_shutdown(async move {
            let _ = stop_rx.await;
        });
    let server = tokio::spawn(std::future::IntoFuture::into_future(server));
    let (mut rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\nb\nc\n").await.unwrap();
    // All three are read in one batch; the first is with the service.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let _ = stop_tx.send(());
    let outcome = within("server", server).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), rd.read_to_end(&mut got)).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "A\nB\nC\n",
        "server ended with {outcome:?}"
    );
}

/// "An unshift goes after a read that has begun its frame." A discarding
/// line read that has dropped the whole buffer counts as not started (the
/// engine looks at whether bytes are left), so a read unshifted then goes
/// in front of it and reads the rest of the over-long line as its own line.
#[tokio::test]
async fn unshift_goes_after_a_discarding_line_read() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    let discarding = h.push_read(short_lines());
    peer.write_all(LONG_HEAD).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let unshifted = h.unshift_read(LineCodec::new());
    peer.write_all(b" TAIL\nok\n").await.unwrap();
    let first = within("discarding", discarding).await;
    let second = within("unshifted", unshifted).await;
    assert_eq!(
        first.map(|l| l.line().to_vec()).unwrap_err().kind(),
        ErrorKind::NoSpace
    );
    assert_eq!(
        second.unwrap().line(),
        b"ok",
        "the unshifted read ran first, got the long line's tail, and the \
         discarding read then dropped the next line"
    );
}

// ----- siblings of the fixes above, on the other front ends -------------------------

/// `BadRequest::Reply` with a decoder that consumes nothing of what it
/// rejects (JSON's `EBADMSG`): reading on would reject the same bytes
/// forever. The bad request is answered, the answers before it too, and
/// the loop ends with the error instead of spinning.
#[tokio::test]
async fn serve_answers_then_closes_on_a_rejected_request_that_skipped_nothing() {
    use anyframe::codecs::JsonCodec;
    use anyframe::service::{BadRequest, serve};
    use serde_json::Value;
    let (server_io, client_io) = tokio::io::duplex(4096);
    let echo = tower::service_fn(|v: Value| async move { Ok::<_, std::convert::Infallible>(v) });
    let server = serve(
        server_io,
        JsonCodec::<Value>::ndjson(),
        JsonCodec::<Value>::ndjson(),
        echo,
    )
    .on_bad_request(|_| BadRequest::Reply(serde_json::json!({"error": -32700})));
    let server = tokio::spawn(std::future::IntoFuture::into_future(server));
    let (mut rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"{\"n\":1}\n{bad}\n{\"n\":2}\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = within("answers", rd.read_to_end(&mut got)).await;
    let outcome = within("server", server).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "{\"n\":1}\n{\"error\":-32700}\n"
    );
    assert_eq!(outcome.unwrap_err().kind(), ErrorKind::BadMessage);
}

/// Input that ends inside a request, with no whole request before it: the
/// loop ends with the end-of-input error (`EPIPE`), having written nothing.
#[tokio::test]
async fn serve_ends_with_the_eof_error_at_a_truncated_request() {
    let (got, outcome) = serve_upper(b"one\nthr", Duration::ZERO).await;
    assert_eq!(got, "ONE\n");
    let e = outcome.unwrap_err();
    assert!(e.is_eof() && e.is_fatal(), "{e:?}");
}

/// The cancellation law on a `QueuedFramed` you drive yourself: a queued
/// discarding line read whose ticket is dropped mid-line runs on to the
/// line's end; the next read gets its `ENOSPC`, then the next line.
#[tokio::test]
async fn inline_cancelled_discarding_line_read_does_not_turn_the_tail_into_a_line() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::new(ours);
    peer.write_all(LONG_HEAD).await.unwrap();
    let ticket = conn.push_read(short_lines());
    let first = tokio::time::timeout(Duration::from_millis(100), conn.wait(ticket)).await;
    assert!(first.is_err(), "the line has not ended yet: {first:?}");
    the_tail_gives_enospc_then_the_next_line(&mut peer, async || conn.read(short_lines()).await)
        .await;
}

/// The same with the connection's read timeout, inline.
#[tokio::test(start_paused = true)]
async fn inline_timed_out_discarding_line_read_does_not_turn_the_tail_into_a_line() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut b = QueuedFramed::builder();
    b.rtimeout(Duration::from_secs(1));
    let mut conn = b.build(ours);
    peer.write_all(LONG_HEAD).await.unwrap();
    let ticket = conn.push_read(short_lines());
    let first = within("first", conn.wait(ticket)).await;
    assert!(first.unwrap_err().is_timeout());
    the_tail_gives_enospc_then_the_next_line(&mut peer, async || conn.read(short_lines()).await)
        .await;
}

/// `read(decoder)` by value, cancelled mid-line: its decoder dies with the
/// future, so the read is a queued request that runs on to the line's end.
#[tokio::test]
async fn inline_read_by_value_cancelled_mid_line_does_not_turn_the_tail_into_a_line() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::new(ours);
    peer.write_all(LONG_HEAD).await.unwrap();
    let first = tokio::time::timeout(Duration::from_millis(100), conn.read(short_lines())).await;
    assert!(first.is_err(), "the line has not ended yet: {first:?}");
    the_tail_gives_enospc_then_the_next_line(&mut peer, async || conn.read(short_lines()).await)
        .await;
}

/// The same with the connection's read timeout.
#[tokio::test(start_paused = true)]
async fn inline_read_by_value_timed_out_mid_line_does_not_turn_the_tail_into_a_line() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut b = QueuedFramed::builder();
    b.rtimeout(Duration::from_secs(1));
    let mut conn = b.build(ours);
    peer.write_all(LONG_HEAD).await.unwrap();
    let first = within("first", conn.read(short_lines())).await;
    assert!(first.unwrap_err().is_timeout());
    the_tail_gives_enospc_then_the_next_line(&mut peer, async || conn.read(short_lines()).await)
        .await;
}

/// A decoder you keep (`read_with`) carries its discarding state across a
/// cancelled read, as a `FramedRead`'s does across a dropped `next()`.
#[tokio::test]
async fn inline_read_with_keeps_discarding_across_a_cancelled_read() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::new(ours);
    let mut lines = short_lines();
    peer.write_all(LONG_HEAD).await.unwrap();
    let first = tokio::time::timeout(Duration::from_millis(100), conn.read_with(&mut lines)).await;
    assert!(first.is_err(), "the line has not ended yet: {first:?}");
    the_tail_gives_enospc_then_the_next_line(&mut peer, async || conn.read_with(&mut lines).await)
        .await;
}

/// The error of a line dropped for a caller that gave up goes to the next
/// plain read only: a pipelined call queued next gets its own answer.
#[tokio::test]
async fn a_cancelled_discarding_reads_error_never_reaches_a_pipelined_call() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    peer.write_all(LONG_HEAD).await.unwrap();
    let first = tokio::time::timeout(Duration::from_millis(100), h.read(short_lines())).await;
    assert!(first.is_err(), "the line has not ended yet: {first:?}");
    let call = h.call(LineCodec::new(), "ping", LineCodec::new());
    let mut req = [0u8; 5];
    within("request", peer.read_exact(&mut req)).await.unwrap();
    peer.write_all(b" TAIL\npong\n").await.unwrap();
    assert_eq!(within("call", call).await.unwrap().line(), b"pong");
    assert!(!h.is_closed());
}

/// Spawned `read_many` with a one-shot decoder, then another batch: the
/// spent decoder's refusal is not kept for the next batch either.
#[tokio::test]
async fn a_batch_after_a_one_shot_batch_gets_the_next_frames() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    peer.write_all(b"a\nb\nc\n").await.unwrap();
    let once = LineCodec::builder().build_once().unwrap();
    let (_d, frames) = within("read_many", h.read_many(once, 10)).await.unwrap();
    assert_eq!(frames.len(), 1);
    let (_d, frames) = within("read_many", h.read_many(LineCodec::new(), 10))
        .await
        .expect("the spent one-shot decoder's error went to the next batch");
    let lines: Vec<&[u8]> = frames.iter().map(|l| l.line()).collect();
    assert_eq!(lines, [&b"b"[..], b"c"]);
}

/// The idle timeout instead of the read timeout: a `Client` whose every
/// slot is held by a timed-out call does not hang in `ready()`.
#[tokio::test(start_paused = true)]
async fn client_ready_does_not_hang_after_idle_timeouts() {
    use anyframe::service::ClientBuilder;
    use tower::{Service, ServiceExt};
    let (ours, theirs) = tokio::io::duplex(4096);
    never_answer(theirs);
    let mut b = QueuedFramed::builder();
    b.timeout(Duration::from_secs(1));
    let (handle, _driver) = b.build(ours).spawn();
    let mut client =
        ClientBuilder::default()
            .max_in_flight(1)
            .build(handle, LineCodec::new(), |_: &&str| LineCodec::new());
    let r = within("one", client.ready().await.unwrap().call("one")).await;
    assert!(r.unwrap_err().is_timeout());
    let next = within("next ready", client.ready()).await.map(|_| ());
    let e = next.unwrap_err();
    assert!(e.is_timeout() && e.is_fatal(), "{e:?}");
}

/// `Handle::call_with`: once the timed-out call's caller has its
/// `ETIMEDOUT`, the next timeout finds nobody to tell and the answer still
/// owed: the connection closes with a fatal `ETIMEDOUT` instead of waiting
/// for ever, which names the timer that expired (`Error::timeout`).
#[tokio::test(start_paused = true)]
async fn a_timeout_nobody_hears_with_a_response_owed_closes_the_connection() {
    let (ours, _peer) = tokio::io::duplex(4096);
    let mut b = QueuedFramed::builder();
    b.rtimeout(Duration::from_secs(1));
    let (h, _driver) = b.build(ours).spawn();
    let call = h.call_with(LineCodec::new(), "ping", LineCodec::new(), |l, _| Ok(l));
    assert!(within("call", call).await.unwrap_err().is_timeout());
    assert!(!h.is_closed(), "the first timeout was the caller's");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let e = h.error().expect("the connection is closed");
    assert!(e.is_timeout() && e.is_fatal(), "{e:?}");
    assert_eq!(e.timeout(), Some(anyframe::Timeout::Read), "{e:?}");
}

/// Inline: a read queued behind a discarding read that already timed out
/// (it runs on to its line's end, for nobody) gets the next timeout itself,
/// being the one waiting, instead of hanging.
#[tokio::test(start_paused = true)]
async fn inline_read_behind_a_timed_out_discarding_read_gets_the_next_timeout() {
    let (ours, mut peer) = tokio::io::duplex(4096);
    let mut b = QueuedFramed::builder();
    b.rtimeout(Duration::from_secs(1));
    let mut conn = b.build(ours);
    peer.write_all(LONG_HEAD).await.unwrap();
    let ticket = conn.push_read(short_lines());
    assert!(
        within("first", conn.wait(ticket))
            .await
            .unwrap_err()
            .is_timeout()
    );
    let next = within("read", conn.read(LineCodec::new())).await;
    assert!(next.unwrap_err().is_timeout());
    assert!(!conn.is_closed());
}
