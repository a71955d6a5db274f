//! Failure paths of the tower integration: the server loop when its
//! service fails or is saturated, the pipelined client when a response is
//! rejected or the client is dropped, and work queued while a user
//! callback panics.

use std::convert::Infallible;
use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyframe::codecs::{
    JsonCodec, LineCodec, NetstringCodec, OverflowPolicy, PackFormat, PackstringCodec, Utf8Line,
    Utf8LineCodec,
};
use anyframe::service::{BadRequest, Client, serve};
use anyframe::{ErrorKind, FnDecoder, QueuedFramed, Timeout};
use bytes::BytesMut;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tower::{Service, ServiceExt};

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still pending after 10 s"),
    }
}

/// A service whose `poll_ready` fails once its first call has been made
/// (a backend that went away), and keeps failing, as a failed tower
/// service does. Counts `poll_ready` calls.
#[derive(Clone)]
struct FailsAfterFirst {
    calls: Arc<AtomicUsize>,
    polls: Arc<AtomicUsize>,
}

impl Service<Utf8Line> for FailsAfterFirst {
    type Response = String;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<String, std::io::Error>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.calls.load(Ordering::SeqCst) >= 1 {
            Poll::Ready(Err(std::io::Error::other("backend gone")))
        } else {
            Poll::Ready(Ok(()))
        }
    }
    fn call(&mut self, l: Utf8Line) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(l.line().to_uppercase()))
    }
}

/// `serve` with a service whose `poll_ready` errs while requests of the same
/// batch are still waiting: the loop should end with the error (documented:
/// "Errors: ... a service error"), not spin calling `poll_ready` for ever.
///
/// The server runs on its own thread and runtime: a loop that never yields
/// would otherwise starve the test's own timeout.
#[test]
fn serve_ends_when_poll_ready_fails_with_requests_waiting() {
    let (server_io, client_io) = tokio::io::duplex(4096);
    let svc = FailsAfterFirst {
        calls: Arc::new(AtomicUsize::new(0)),
        polls: Arc::new(AtomicUsize::new(0)),
    };
    let polls = svc.polls.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt
            .block_on(serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc).into_future());
        let _ = done_tx.send(r.map_err(|e| e.to_string()));
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut client = QueuedFramed::new(client_io);
        // Three requests in one write: one batch, so two wait behind the first.
        client.push_bytes(&b"a\nb\nc\n"[..]).unwrap();
        client.flush().await.unwrap();
        std::mem::forget(client);
    });
    match done_rx.recv_timeout(Duration::from_secs(3)) {
        Ok(r) => assert!(
            r.is_err(),
            "poll_ready error must end the loop with an error"
        ),
        Err(_) => panic!(
            "serve did not end 3 s after poll_ready failed; poll_ready was called {} times",
            polls.load(Ordering::SeqCst)
        ),
    }
}

/// A server loop that upper-cases lines through a one-slot service
/// (tower's `ConcurrencyLimit`), answering lines over 16 bytes with
/// `ERR too long`; and a client on the other end.
fn limited_upper_server() -> (
    tokio::task::JoinHandle<anyframe::Result<()>>,
    QueuedFramed<tokio::io::DuplexStream>,
) {
    let (server_io, client_io) = tokio::io::duplex(4096);
    let upper = tower::service_fn(|line: Utf8Line| async move {
        Ok::<_, Infallible>(line.line().to_uppercase())
    });
    let limited = tower::limit::ConcurrencyLimit::new(upper, 1);
    let lines = LineCodec::builder()
        .max_length(16)
        .overflow(OverflowPolicy::Discard)
        .build_utf8()
        .unwrap();
    let server = serve(server_io, lines, LineCodec::new(), limited)
        .on_bad_request(|_| BadRequest::Reply("ERR too long".to_string()));
    (
        tokio::spawn(server.into_future()),
        QueuedFramed::new(client_io),
    )
}

/// A service with one slot (tower's `ConcurrencyLimit`): it is ready again
/// only once the previous response future has been driven to completion.
/// A batch of two requests followed by a request the decoder rejects
/// (answered through `on_bad_request`) must still be answered.
#[tokio::test]
async fn serve_bad_request_reply_with_a_concurrency_limited_service_does_not_hang() {
    let (server, mut client) = limited_upper_server();
    client
        .push_bytes(&b"one\ntwo\nthis line is far too long for it\nthree\n"[..])
        .unwrap();
    client.flush().await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_secs(3), client.read(LineCodec::new())).await {
            Ok(Ok(l)) => answers.push(String::from_utf8_lossy(l.line()).into_owned()),
            Ok(Err(e)) => {
                answers.push(format!("<{e}>"));
                break;
            }
            Err(_) => {
                answers.push("<hang>".into());
                break;
            }
        }
    }
    assert_eq!(answers, ["ONE", "TWO", "ERR too long", "THREE"]);
    client.shutdown_write().await.unwrap();
    within("server", server).await.unwrap().unwrap();
}

/// An in-order line echo server.
fn echo_server(io: tokio::io::DuplexStream, delay: Duration) {
    tokio::spawn(async move {
        let mut conn = QueuedFramed::new(io);
        while let Ok(line) = conn.read(LineCodec::new()).await {
            tokio::time::sleep(delay).await;
            if conn.write(LineCodec::new(), line.line()).await.is_err() {
                break;
            }
        }
    });
}

/// tower's `ServiceExt::oneshot` consumes the service: it drops it right
/// after `call`, before the response future is polled to completion. The
/// call's response must still arrive (as with hyper's `SendRequest`,
/// tower's `Buffer`, tokio-tower).
#[tokio::test]
async fn client_oneshot_gets_its_answer() {
    let (ours, theirs) = tokio::io::duplex(4096);
    echo_server(theirs, Duration::from_millis(10));
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let client = Client::new(handle, LineCodec::new(), |_: &&str| LineCodec::new());
    let answer = within("oneshot", client.oneshot("ping")).await;
    assert_eq!(
        answer.map(|l| l.line().to_vec()).map_err(|e| e.to_string()),
        Ok(b"ping".to_vec())
    );
}

/// A request longer than the connection's whole `wbuf_max` can never be
/// queued: the call fails alone, non-fatally, before anything is written;
/// the call in flight gets its answer (queued, the request closed the
/// connection under it with a fatal `ENOSPC`).
#[tokio::test]
async fn client_request_longer_than_wbuf_max_fails_alone() {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    echo_server(theirs, Duration::from_millis(10));
    let (handle, _driver) = QueuedFramed::builder()
        .wbuf_max(Some(4096))
        .build(ours)
        .spawn();
    let mut client = Client::new(handle, LineCodec::new(), |_: &String| LineCodec::new());
    let first = client.ready().await.unwrap().call("ping".to_string());
    let long = client.ready().await.unwrap().call("x".repeat(5000));
    let e = within("long", long).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(!e.is_fatal(), "{e}");
    let answer = within("first", first).await.unwrap();
    assert_eq!(answer.line(), b"ping");
}

/// Same thing without `oneshot`: call, drop the client, await the response.
#[tokio::test]
async fn client_dropped_after_call_still_delivers_the_answer() {
    let (ours, theirs) = tokio::io::duplex(4096);
    echo_server(theirs, Duration::from_millis(10));
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut client = Client::new(handle, LineCodec::new(), |_: &&str| LineCodec::new());
    let fut = client.ready().await.unwrap().call("ping");
    drop(client);
    let answer = within("answer", fut).await;
    assert_eq!(
        answer.map(|l| l.line().to_vec()).map_err(|e| e.to_string()),
        Ok(b"ping".to_vec())
    );
}

/// The same service and requests without the rejected line are answered
/// (the loop drives in-flight futures while the service is not ready).
#[tokio::test]
async fn control_concurrency_limited_service_without_a_bad_request() {
    let (server, mut client) = limited_upper_server();
    client.push_bytes(&b"one\ntwo\nthree\n"[..]).unwrap();
    client.flush().await.unwrap();
    for want in ["ONE", "TWO", "THREE"] {
        let l = within("read", client.read(LineCodec::new())).await.unwrap();
        assert_eq!(l.line(), want.as_bytes());
    }
    client.shutdown_write().await.unwrap();
    within("server", server).await.unwrap().unwrap();
}

// ----- the pipelined client: a rejected response -----------------------------

#[derive(Debug, Deserialize, PartialEq)]
struct Answer {
    result: u64,
}

/// A JSON server: answers request `n` with `{"result": n}`, except request 1,
/// which gets a well-formed error object the client's type does not accept.
fn json_server(io: tokio::io::DuplexStream) {
    tokio::spawn(async move {
        let mut conn = QueuedFramed::new(io);
        while let Ok(req) = conn.read(JsonCodec::<Value>::ndjson()).await {
            let n = req["n"].as_u64().unwrap();
            let answer = if n == 1 {
                json!({"error": "no such thing"})
            } else {
                json!({ "result": n })
            };
            if conn
                .write(JsonCodec::<Value>::ndjson(), answer)
                .await
                .is_err()
            {
                break;
            }
        }
    });
}

/// RT-json-2: a well-formed text the target type rejects is consumed, so
/// the stream stays in step; ERR-3: a non-fatal error fails one call and
/// leaves the connection usable. On a pipelined `Client` the other callers
/// get their answers and the connection goes on.
#[tokio::test]
async fn client_typed_json_rejection_fails_only_its_own_call() {
    let (ours, theirs) = tokio::io::duplex(4096);
    json_server(theirs);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut client = Client::new(handle, JsonCodec::<Value>::ndjson(), |_: &Value| {
        JsonCodec::<Answer>::ndjson()
    });
    // Three callers pipelined at once.
    let c0 = client.ready().await.unwrap().call(json!({"n": 0}));
    let c1 = client.ready().await.unwrap().call(json!({"n": 1}));
    let c2 = client.ready().await.unwrap().call(json!({"n": 2}));
    let (r0, r1, r2) = within("calls", futures::future::join3(c0, c1, c2)).await;
    assert_eq!(r0.unwrap(), Answer { result: 0 });
    let e1 = r1.unwrap_err();
    assert_eq!(e1.kind(), ErrorKind::BadMessage);
    let r2 = r2.map_err(|e| format!("{e} (fatal: {})", e.is_fatal()));
    assert_eq!(
        r2,
        Ok(Answer { result: 2 }),
        "an innocent caller lost its answer; the error of call 1 was fatal: {}",
        e1.is_fatal()
    );
    // And the connection stays usable.
    let r3 = within("next", client.ready().await.unwrap().call(json!({"n": 3}))).await;
    assert_eq!(r3.map_err(|e| e.to_string()), Ok(Answer { result: 3 }));
}

/// RT-netstring-3: a bad trailer is `EBADMSG` and the header, payload and odd
/// byte are dropped, "so the next netstring is read after them". The
/// stream is in step; the next pipelined caller must get its answer.
#[tokio::test]
async fn client_netstring_bad_trailer_fails_only_its_own_call() {
    let (ours, mut theirs) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Read both requests (two lines), then answer: a bad netstring, a good one.
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.iter().filter(|&&b| b == b'\n').count() < 2 {
            let n = theirs.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        theirs.write_all(b"3:abcX3:def,").await.unwrap();
        let mut rest = Vec::new();
        let _ = theirs.read_to_end(&mut rest).await;
    });
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut client = Client::new(handle, LineCodec::new(), |_: &&str| NetstringCodec::new());
    let a = client.ready().await.unwrap().call("a");
    let b = client.ready().await.unwrap().call("b");
    let (ra, rb) = within("calls", futures::future::join(a, b)).await;
    let ea = ra.unwrap_err();
    assert_eq!(ea.kind(), ErrorKind::BadMessage);
    assert_eq!(
        rb.map(|p| p.to_vec()).map_err(|e| e.to_string()),
        Ok(b"def".to_vec()),
        "error of the first call fatal: {}",
        ea.is_fatal()
    );
}

/// RT-line-5 under the discard policy: the over-long line is dropped up to
/// its EOL, then `ENOSPC` once, non-fatal, "so the next read ... starts on
/// the next line". A pipelined caller whose answer is too long gets the
/// error; the next caller must still get its own answer.
#[tokio::test]
async fn client_overlong_discarded_answer_fails_only_its_own_call() {
    let (ours, theirs) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let mut conn = QueuedFramed::new(theirs);
        while let Ok(l) = conn.read(LineCodec::new()).await {
            let answer = if l.line() == b"big" {
                "x".repeat(100)
            } else {
                String::from_utf8_lossy(l.line()).into_owned()
            };
            if conn.write(LineCodec::new(), answer).await.is_err() {
                break;
            }
        }
    });
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut client = Client::new(handle, LineCodec::new(), |_: &&str| {
        LineCodec::builder()
            .max_length(16)
            .overflow(OverflowPolicy::Discard)
            .build()
            .unwrap()
    });
    let a = client.ready().await.unwrap().call("big");
    let b = client.ready().await.unwrap().call("small");
    let (ra, rb) = within("calls", futures::future::join(a, b)).await;
    let ea = ra.unwrap_err();
    assert_eq!(ea.kind(), ErrorKind::NoSpace);
    assert_eq!(
        rb.map(|l| l.line().to_vec()).map_err(|e| e.to_string()),
        Ok(b"small".to_vec()),
        "error of the first call fatal: {}",
        ea.is_fatal()
    );
}

// ----- the server loop: an answer the encoder refuses --------------------------

/// A response the encoder refuses (packstring `C` over 255 bytes is
/// `EINVAL`): the peer cannot be answered in order any more, so the loop
/// ends, and says so with a fatal error.
#[tokio::test]
async fn serve_with_an_encoder_that_refuses_one_answer() {
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let svc = tower::service_fn(|l: Utf8Line| async move {
        Ok::<_, Infallible>(if l.line() == "big" {
            bytes::Bytes::from(vec![b'x'; 300])
        } else {
            bytes::Bytes::copy_from_slice(l.line().as_bytes())
        })
    });
    let enc = PackstringCodec::new(PackFormat::U8);
    let server = tokio::spawn(serve(server_io, Utf8LineCodec::new(), enc, svc).into_future());
    let mut client = QueuedFramed::new(client_io);
    client.push_bytes(&b"a\nbig\nc\n"[..]).unwrap();
    client.flush().await.unwrap();
    let mut got = Vec::new();
    loop {
        match within("read", client.read(PackstringCodec::new(PackFormat::U8))).await {
            Ok(p) => got.push(String::from_utf8_lossy(&p).into_owned()),
            Err(e) => {
                got.push(format!("<{:?}>", e.kind()));
                break;
            }
        }
    }
    let outcome = within("server", server).await.unwrap();
    // The answers before it go out; the peer then sees the end, and the
    // loop reports a fatal error: the connection is gone.
    assert_eq!(got, ["a", "<BrokenPipe>"]);
    let e = outcome.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.is_fatal(), "{e:?}");
}

/// A handler that panics on one request: the panic goes to the task running
/// `serve`; the peer must see the connection end (not hang).
#[tokio::test]
async fn serve_with_a_panicking_handler_does_not_leave_the_peer_hanging() {
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let svc = tower::service_fn(|l: Utf8Line| async move {
        if l.line() == "boom" {
            panic!("handler panicked");
        }
        Ok::<_, Infallible>(l.line().to_uppercase())
    });
    let server =
        tokio::spawn(serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc).into_future());
    let mut client = QueuedFramed::new(client_io);
    client.push_bytes(&b"a\n"[..]).unwrap();
    client.flush().await.unwrap();
    assert_eq!(
        within("a", client.read(LineCodec::new()))
            .await
            .unwrap()
            .line(),
        b"A"
    );
    client.push_bytes(&b"boom\nc\n"[..]).unwrap();
    client.flush().await.unwrap();
    let r = within("after panic", client.read(LineCodec::new())).await;
    assert!(r.is_err(), "{r:?}");
    assert!(within("server", server).await.unwrap_err().is_panic());
}

// ----- work queued while a user callback panics ------------------------------

/// A connection whose driver is inside a decoder that holds the engine
/// for 300 ms and then panics: returns the handle, the panicking read's
/// ticket and the driver's task (the panic goes there). Work a handle
/// queues now goes to the inbox, the engine being busy.
async fn driver_inside_a_panicking_decoder() -> (
    anyframe::Handle,
    anyframe::Ticket<()>,
    tokio::task::JoinHandle<anyframe::Result<anyframe::Parts<tokio::io::DuplexStream>>>,
    tokio::io::DuplexStream,
) {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, driver) = QueuedFramed::new(ours).spawn();
    let inside = Arc::new(AtomicBool::new(false));
    let flag = inside.clone();
    let boom = handle.push_read(FnDecoder::new(
        move |buf: &mut BytesMut| -> anyframe::Result<Option<()>> {
            if buf.is_empty() {
                return Ok(None);
            }
            flag.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            panic!("decoder exploded");
        },
    ));
    let driver = tokio::spawn(driver);
    peer.write_all(b"x\n").await.unwrap();
    while !inside.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (handle, boom, driver, peer)
}

/// §4, user code is untrusted: a callback that panics fails the connection
/// and every other request resolves with that error, also a read queued
/// from another thread while the panicking callback held the engine (it
/// went to the inbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_queued_while_a_decoder_panics_is_told_not_hung() {
    let (handle, boom, driver, _peer) = driver_inside_a_panicking_decoder().await;
    let later = handle.push_read(LineCodec::new());
    let boom = tokio::time::timeout(Duration::from_secs(5), boom).await;
    assert!(
        matches!(boom, Ok(Err(ref e)) if e.kind() == ErrorKind::Panicked),
        "{boom:?}"
    );
    let later = tokio::time::timeout(Duration::from_secs(5), later).await;
    assert!(driver.await.unwrap_err().is_panic());
    match later {
        Ok(Err(e)) => assert!(e.is_fatal(), "{e:?}"),
        Ok(Ok(l)) => panic!("read a line after the panic: {l:?}"),
        Err(_) => panic!("the read queued during the panicking turn never resolved"),
    }
}

/// The same with a pipelined call (write + read) queued during the turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_queued_while_a_decoder_panics_is_told_not_hung() {
    let (handle, _boom, driver, _peer) = driver_inside_a_panicking_decoder().await;
    let call = handle.call(LineCodec::new(), "ping", LineCodec::new());
    let call = tokio::time::timeout(Duration::from_secs(5), call).await;
    let _ = driver.await;
    match call {
        Ok(Err(e)) => assert!(e.is_fatal(), "{e:?}"),
        Ok(Ok(l)) => panic!("answered after the panic: {l:?}"),
        Err(_) => panic!("the call queued during the panicking turn never resolved"),
    }
}

// ----- the client after its driver or runtime is gone -------------------------

#[tokio::test]
async fn driver_ends_when_client_and_unpolled_futures_are_dropped() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(1024);
        let (handle, driver) = QueuedFramed::new(io).spawn();
        let mut client = Client::new(handle, LineCodec::new(), |_: &String| LineCodec::new());
        let f1 = client.ready().await.unwrap().call("a".to_string());
        let f2 = client.ready().await.unwrap().call("b".to_string());
        drop(client);
        drop(f1);
        drop(f2);
        let r = tokio::time::timeout(Duration::from_secs(2), driver).await;
        assert!(
            r.is_ok(),
            "driver still running with every handle and future gone"
        );
    })
    .await
    .expect("test hung");
}

/// A client call made on a runtime that has since shut down (its driver
/// dropped unfinished), and the peer's end of the pipe.
fn a_call_whose_runtime_is_gone() -> (
    impl std::future::Future<Output = anyframe::Result<anyframe::codecs::Line>>,
    tokio::io::DuplexStream,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (fut, peer) = rt.block_on(async {
        let (io, peer) = tokio::io::duplex(1024);
        let (handle, _driver) = QueuedFramed::new(io).spawn();
        let mut client = Client::new(handle, LineCodec::new(), |_: &String| LineCodec::new());
        let fut = client.ready().await.unwrap().call("a".to_string());
        (fut, peer)
    });
    drop(rt);
    (fut, peer)
}

#[test]
fn response_future_outliving_its_runtime_drops_quietly() {
    let (fut, _peer) = a_call_whose_runtime_is_gone();
    drop(fut);
}

#[test]
fn response_future_polled_after_its_runtime_is_gone_resolves() {
    let (fut, _peer) = a_call_whose_runtime_is_gone();
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt2.block_on(async { tokio::time::timeout(Duration::from_secs(3), fut).await });
    assert!(
        matches!(r, Ok(Err(_))),
        "a future whose driver died must fail, got {:?}",
        r.map(|r| r.map(|l| l.line().to_vec()))
    );
}

/// Same with a plain Handle ticket: the handle kept, the runtime gone.
#[test]
fn ticket_polled_after_its_runtime_is_gone_resolves() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (handle, ticket, _peer) = rt.block_on(async {
        let (io, peer) = tokio::io::duplex(1024);
        let (handle, _driver) = QueuedFramed::new(io).spawn();
        let ticket = handle.push_read(LineCodec::new());
        tokio::task::yield_now().await;
        (handle, ticket, peer)
    });
    drop(rt);
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt2.block_on(async { tokio::time::timeout(Duration::from_secs(3), ticket).await });
    assert!(
        matches!(r, Ok(Err(_))),
        "a ticket whose driver died must fail, got {:?}",
        r.map(|r| r.map(|l| l.line().to_vec()))
    );
    drop(handle);
}

// ----- which timer ended the server loop --------------------------------------

#[tokio::test]
async fn serve_stall_error_says_which_timer() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (server_io, client_io) = tokio::io::duplex(256);
        let mut builder = QueuedFramed::builder();
        builder
            .autocork(true)
            .watermarks(4096, 0)
            .wtimeout(Duration::from_millis(300));
        let big = tower::service_fn(|line: Utf8Line| async move {
            Ok::<_, std::convert::Infallible>("y".repeat(1000) + line.line())
        });
        let server = tokio::spawn(
            serve(server_io, Utf8LineCodec::new(), LineCodec::new(), big)
                .connection(builder)
                .run(),
        );
        // Requests, and never a read of the answers.
        let (_rd, mut wr) = tokio::io::split(client_io);
        let writer = tokio::spawn(async move { while wr.write_all(b"req\n").await.is_ok() {} });
        let e = server.await.unwrap().unwrap_err();
        writer.abort();
        assert!(e.is_timeout() && e.is_fatal(), "{e:?}");
        assert_eq!(e.timeout(), Some(Timeout::Write), "{e}");
    })
    .await
    .expect("test hung");
}

/// The connection's timers bound the I/O, not the service: a service that
/// takes two and a half periods of a read, idle or write timer to answer
/// does not end the loop; the client gets its answer and the connection
/// goes on for the next request, sent most of a period after the answer
/// (the client's silence counts from the answer). Silence for a whole
/// period after the last answer ends the loop.
#[tokio::test(start_paused = true)]
async fn serve_timers_do_not_count_the_services_own_work() {
    for which in [Timeout::Read, Timeout::Idle, Timeout::Write] {
        let (server_io, client_io) = tokio::io::duplex(4096);
        let mut builder = QueuedFramed::builder();
        let period = Duration::from_secs(1);
        match which {
            Timeout::Read => builder.rtimeout(period),
            Timeout::Idle => builder.timeout(period),
            _ => builder.wtimeout(period),
        };
        let slow = tower::service_fn(|line: Utf8Line| async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            Ok::<_, Infallible>(line.line().to_owned())
        });
        let server = tokio::spawn(
            serve(server_io, Utf8LineCodec::new(), LineCodec::new(), slow)
                .connection(builder)
                .run(),
        );
        let mut client = QueuedFramed::new(client_io);
        for req in ["a", "b"] {
            tokio::time::sleep(Duration::from_millis(800)).await;
            client.write(LineCodec::new(), req).await.unwrap();
            let answer = within(req, client.read(Utf8LineCodec::new())).await;
            assert_eq!(
                answer.as_ref().map(|l| l.line()).ok(),
                Some(req),
                "{which:?}: {answer:?}"
            );
        }
        // Quiet: now the timer ends the loop.
        let e = within("server", server).await.unwrap().unwrap_err();
        assert!(e.is_timeout(), "{which:?}: {e:?}");
    }
}

/// The other side of the rule above: a write or idle timer that expires
/// while answers already queued wait unwritten is the peer's doing (it
/// takes nothing), and ends the loop even while the service works on.
#[tokio::test(start_paused = true)]
async fn serve_ends_on_a_stalled_peer_while_the_service_works() {
    for which in [Timeout::Idle, Timeout::Write] {
        let (server_io, client_io) = tokio::io::duplex(64);
        let mut builder = QueuedFramed::builder();
        builder.watermarks(1 << 20, 0);
        match which {
            Timeout::Idle => builder.timeout(Duration::from_secs(1)),
            _ => builder.wtimeout(Duration::from_secs(1)),
        };
        let service = tower::service_fn(|line: Utf8Line| async move {
            if line.line() != "fast" {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok::<_, Infallible>("y".repeat(1000))
        });
        let t0 = tokio::time::Instant::now();
        let server = tokio::spawn(
            serve(server_io, Utf8LineCodec::new(), LineCodec::new(), service)
                .connection(builder)
                .run(),
        );
        // Two requests, and never a read of the answers.
        let (_rd, mut wr) = tokio::io::split(client_io);
        wr.write_all(b"fast\nslow\n").await.unwrap();
        let e = within("server", server).await.unwrap().unwrap_err();
        assert_eq!((e.timeout(), e.is_fatal()), (Some(which), true), "{e:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{which:?}: {:?}",
            t0.elapsed()
        );
    }
}

// ----- requests already read, and the ways a loop ends ------------------------

/// A line decoder that allows 8 bytes: longer, with no end of line in
/// sight, is a fatal `ENOSPC`.
fn short_lines() -> Utf8LineCodec {
    Utf8LineCodec::builder().max_length(8).build_utf8().unwrap()
}

/// A request handed to a slow service, then, in a later read, a request
/// the loop cannot take: a line its decoder rejects fatally, or one longer
/// than the connection's `rbuf_max`. The first request is still answered
/// (LC-6), as when both arrive in one read: neither the fatal error nor the
/// engine's own cap may close the connection before the answer, ready
/// later, is queued.
#[tokio::test(start_paused = true)]
async fn serve_answers_a_request_in_service_when_a_later_one_cannot_be_read() {
    for over_rbuf_max in [false, true] {
        let (server_io, client_io) = tokio::io::duplex(1 << 16);
        let slow_echo = tower::service_fn(|line: Utf8Line| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, Infallible>(format!("echo {}", line.line()))
        });
        let mut builder = QueuedFramed::builder();
        let decoder = if over_rbuf_max {
            builder.rbuf_max(Some(32));
            Utf8LineCodec::new()
        } else {
            short_lines()
        };
        let server = tokio::spawn(
            serve(server_io, decoder, LineCodec::new(), slow_echo)
                .connection(builder)
                .run(),
        );
        let (mut rd, mut wr) = tokio::io::split(client_io);
        wr.write_all(b"a\n").await.unwrap();
        // The server has read `a`; its answer is being computed.
        tokio::time::sleep(Duration::from_millis(50)).await;
        wr.write_all(&[b'x'; 100]).await.unwrap();
        let out = within("server", server).await.unwrap();
        let mut got = Vec::new();
        let _ = within(
            "answers",
            tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut got),
        )
        .await;
        assert_eq!(
            out.unwrap_err().kind(),
            ErrorKind::NoSpace,
            "{over_rbuf_max}"
        );
        assert_eq!(String::from_utf8_lossy(&got), "echo a\n", "{over_rbuf_max}");
    }
}

/// A line decoder that says when it has handed a request over.
#[derive(Clone)]
struct Telling {
    inner: Utf8LineCodec,
    decoded: Arc<AtomicBool>,
}

impl tokio_util::codec::Decoder for Telling {
    type Item = Utf8Line;
    type Error = anyframe::Error;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Utf8Line>, anyframe::Error> {
        let r = tokio_util::codec::Decoder::decode(&mut self.inner, src).map_err(Into::into);
        if let Ok(Some(_)) = &r {
            self.decoded.store(true, Ordering::SeqCst);
        }
        r
    }
}

/// `with_shutdown`: requests already read are still answered. On a
/// multi-thread runtime the driver can complete the loop's read (the
/// request decoded and consumed) after the loop looked at it and before
/// it looks at the shutdown signal: that request is answered, not dropped
/// with the read. The signal here resolves only once the request has been
/// decoded (blocking its worker a moment to make the order certain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_shutdown_answers_a_request_its_read_already_took() {
    use std::sync::Mutex;
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let decoded = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    let waker: Arc<Mutex<Option<std::task::Waker>>> = Arc::default();
    let signal = {
        let (decoded, go, waker) = (decoded.clone(), go.clone(), waker.clone());
        std::future::poll_fn(move |cx| {
            if !go.load(Ordering::SeqCst) {
                *waker.lock().unwrap() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            // The loop looked at its read (pending) just before this.
            let start = std::time::Instant::now();
            while !decoded.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Let the engine finish the read it is in.
            std::thread::sleep(Duration::from_millis(100));
            Poll::Ready(())
        })
    };
    let echo =
        tower::service_fn(
            |line: Utf8Line| async move { Ok::<_, Infallible>(line.line().to_string()) },
        );
    let decoder = Telling {
        inner: Utf8LineCodec::new(),
        decoded: decoded.clone(),
    };
    let server = tokio::spawn(
        serve(server_io, decoder, LineCodec::new(), echo)
            .with_shutdown(signal)
            .run(),
    );
    // Let the loop queue its first read.
    tokio::time::sleep(Duration::from_millis(100)).await;
    go.store(true, Ordering::SeqCst);
    if let Some(w) = waker.lock().unwrap().take() {
        w.wake();
    }
    let (mut rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"echo\n").await.unwrap();
    within("server", server).await.unwrap().unwrap();
    let mut got = Vec::new();
    let _ = within(
        "answers",
        tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut got),
    )
    .await;
    assert!(decoded.load(Ordering::SeqCst), "the request was decoded");
    assert_eq!(String::from_utf8_lossy(&got), "echo\n");
}

/// Calls one at a time, each waiting a while before the next, all get
/// their answers (the read timeout restarts with each, the peer answers
/// each in turn).
#[tokio::test]
async fn client_calls_one_at_a_time_with_pauses_all_get_their_answers() {
    let (io, peer) = tokio::io::duplex(1024);
    tokio::spawn(async move {
        let mut peer = QueuedFramed::new(peer);
        while let Ok(line) = peer.read(LineCodec::new()).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
            peer.write(LineCodec::new(), line.line()).await.unwrap();
        }
    });
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let mut client = Client::new(handle.clone(), LineCodec::new(), |_: &String| {
        LineCodec::new()
    });
    for i in 0..20 {
        let req = format!("call {i}");
        let got = within("call", client.ready().await.unwrap().call(req.clone()))
            .await
            .unwrap();
        assert_eq!(got.line(), req.as_bytes());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert!(!handle.is_closed());
}

/// With a read timeout, a client idle for longer than it between calls
/// still gets its answers: the read timeout counts from the last input,
/// and a call made with none pending restarts it (without that, the next
/// call would fail at once, before it waited).
#[tokio::test(start_paused = true)]
async fn client_idle_longer_than_its_read_timeout_still_gets_answers() {
    let (io, peer) = tokio::io::duplex(1024);
    tokio::spawn(async move {
        let mut peer = QueuedFramed::new(peer);
        while let Ok(line) = peer.read(LineCodec::new()).await {
            peer.write(LineCodec::new(), line.line()).await.unwrap();
        }
    });
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(Duration::from_millis(100));
    let (handle, _driver) = builder.build(io).spawn();
    let mut client = Client::new(handle.clone(), LineCodec::new(), |_: &String| {
        LineCodec::new()
    });
    for i in 0..3 {
        let req = format!("call {i}");
        let got = within("call", client.ready().await.unwrap().call(req.clone()))
            .await
            .unwrap();
        assert_eq!(got.line(), req.as_bytes());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(!handle.is_closed(), "{:?}", handle.error());
}

/// Lines, with tokio-util's default `decode_eof` (an I/O error, "bytes
/// remaining on stream", when input ends inside a line) and an I/O error
/// of its own at a `!`.
#[derive(Clone)]
struct PlainLines;

impl tokio_util::codec::Decoder for PlainLines {
    type Item = String;
    type Error = anyframe::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, anyframe::Error> {
        if src.first() == Some(&b'!') {
            return Err(std::io::Error::other("a bang").into());
        }
        Ok(src.iter().position(|&b| b == b'\n').map(|at| {
            let line = src.split_to(at + 1);
            String::from_utf8_lossy(&line[..at]).into_owned()
        }))
    }
}

/// The loop tells the end of input inside a request (`EPIPE`, `is_eof`,
/// LC-6), which a decoder with tokio-util's default `decode_eof` reports as
/// an I/O error, from a decoder's own I/O error before the end, which ends
/// the loop with that error; either way the request before it is answered.
#[tokio::test]
async fn serve_tells_an_end_inside_a_request_from_a_decoders_io_error() {
    for (input, eof) in [(&b"a\nb"[..], true), (b"a\n!", false)] {
        let (server_io, mut client_io) = tokio::io::duplex(1 << 16);
        let echo = tower::service_fn(|line: String| async move { Ok::<_, Infallible>(line) });
        let server = tokio::spawn(serve(server_io, PlainLines, LineCodec::new(), echo).run());
        client_io.write_all(input).await.unwrap();
        client_io.shutdown().await.unwrap();
        let mut got = Vec::new();
        let _ = within(
            "answers",
            tokio::io::AsyncReadExt::read_to_end(&mut client_io, &mut got),
        )
        .await;
        let e = within("server", server).await.unwrap().unwrap_err();
        assert_eq!(String::from_utf8_lossy(&got), "a\n", "{input:?}");
        assert_eq!(e.is_eof(), eof, "{input:?}: {e}");
        let kind = if eof {
            ErrorKind::BrokenPipe
        } else {
            ErrorKind::Io
        };
        assert_eq!(e.kind(), kind, "{input:?}: {e}");
    }
}

/// `max_in_flight(usize::MAX)` means no bound: it must not panic in
/// tokio's semaphore (which holds at most `Semaphore::MAX_PERMITS`).
#[tokio::test]
async fn client_max_in_flight_of_usize_max_means_no_bound() {
    let (ours, theirs) = tokio::io::duplex(4096);
    echo_server(theirs, Duration::ZERO);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut client =
        Client::builder()
            .max_in_flight(usize::MAX)
            .build(handle, LineCodec::new(), |_: &&str| LineCodec::new());
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let ready = futures::FutureExt::now_or_never(client.ready()).expect("a slot is free");
            ready.expect("open").call("x")
        })
        .collect();
    for answer in within("answers", futures::future::join_all(calls)).await {
        assert_eq!(answer.unwrap().line(), b"x");
    }
}

/// Once the client's connection is half-closed (`push_shutdown`), no call
/// can be written again: `poll_ready` says so with an error, so tower
/// middleware drops the service instead of handing it calls that fail.
/// The answers owed before the half-close still arrive.
#[tokio::test]
async fn client_poll_ready_fails_once_its_output_is_shut() {
    let (ours, theirs) = tokio::io::duplex(4096);
    echo_server(theirs, Duration::from_millis(10));
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut client = Client::new(handle.clone(), LineCodec::new(), |_: &&str| {
        LineCodec::new()
    });
    let first = client.ready().await.unwrap().call("one");
    handle.push_shutdown().unwrap();
    let e = within("ready", client.ready()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(within("first", first).await.unwrap().line(), b"one");
    // As the handle's own readiness, inline and spawned.
    let e = within("handle", handle.ready_to_write()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let (ours, _theirs) = tokio::io::duplex(4096);
    let mut conn = QueuedFramed::new(ours);
    conn.push_shutdown().unwrap();
    let e = within("inline", conn.ready_to_write()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}
