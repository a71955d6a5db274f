//! Tower integration: the pipelined client and the server loop,
//! alone and composed with tower middleware.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyframe::codecs::{LineCodec, PackFormat, PackstringCodec, Utf8Line, Utf8LineCodec};
use anyframe::service::{Client, serve};
use anyframe::{ErrorKind, QueuedFramed};
use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;
use tower::{Service, ServiceBuilder, ServiceExt};

/// A response decoder that depends on the request: `GET` answers a line,
/// `FETCH` answers a packstring (`N`).
enum Answer {
    Line(LineCodec),
    Blob(PackstringCodec),
}

impl Decoder for Answer {
    type Item = Bytes;
    type Error = anyframe::codecs::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Self::Error> {
        match self {
            Answer::Line(c) => Ok(c.decode(src)?.map(|l| l.into_line())),
            Answer::Blob(c) => c.decode(src),
        }
    }
}

/// A server speaking that protocol, written with the sequential API.
async fn get_fetch_server(io: tokio::io::DuplexStream) {
    let mut conn = QueuedFramed::new(io);
    while let Ok(cmd) = conn.read(LineCodec::new()).await {
        let cmd = String::from_utf8(cmd.into_line().to_vec()).unwrap();
        if let Some(key) = cmd.strip_prefix("GET ") {
            conn.push_write(LineCodec::new(), format!("value-of-{key}"))
                .unwrap();
        } else if let Some(n) = cmd.strip_prefix("FETCH ") {
            let n: usize = n.parse().unwrap();
            conn.push_write(PackstringCodec::new(PackFormat::U32Be), vec![b'z'; n])
                .unwrap();
        }
    }
    let _ = conn.flush().await;
}

fn client_over(io: tokio::io::DuplexStream) -> Client<LineCodec, impl FnMut(&String) -> Answer> {
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    Client::new(handle, LineCodec::new(), |req: &String| {
        if req.starts_with("FETCH") {
            Answer::Blob(PackstringCodec::new(PackFormat::U32Be))
        } else {
            Answer::Line(LineCodec::new())
        }
    })
}

#[tokio::test]
async fn pipelined_client_picks_the_response_decoder_per_request() {
    let (a, b) = tokio::io::duplex(4096);
    tokio::spawn(get_fetch_server(b));
    let mut client = client_over(a);
    let mut calls = Vec::new();
    for i in 0..50 {
        let req = if i % 3 == 0 {
            format!("FETCH {}", i * 10)
        } else {
            format!("GET k{i}")
        };
        calls.push((i, client.ready().await.unwrap().call(req)));
    }
    for (i, call) in calls {
        let got = call.await.unwrap();
        if i % 3 == 0 {
            assert_eq!(got.len(), i * 10);
        } else {
            assert_eq!(got, format!("value-of-k{i}"));
        }
    }
}

#[tokio::test]
async fn dropped_response_futures_do_not_desynchronise_the_stream() {
    let (a, b) = tokio::io::duplex(4096);
    tokio::spawn(get_fetch_server(b));
    let mut client = client_over(a);
    drop(client.ready().await.unwrap().call("FETCH 100".to_string()));
    drop(
        client
            .ready()
            .await
            .unwrap()
            .call("GET dropped".to_string()),
    );
    let got = client
        .ready()
        .await
        .unwrap()
        .call("GET kept".to_string())
        .await
        .unwrap();
    assert_eq!(got, "value-of-kept");
}

#[tokio::test]
async fn a_fatal_connection_error_fails_every_pending_call() {
    let (a, b) = tokio::io::duplex(4096);
    let mut client = client_over(a);
    let calls: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(client.ready().await.unwrap().call(format!("GET {i}")));
        }
        v
    };
    drop(b); // the server vanishes without answering
    for c in calls {
        let e = c.await.unwrap_err();
        assert!(e.is_fatal());
        assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    }
    assert!(
        client.ready().await.is_err(),
        "the client reports the dead connection"
    );
}

#[tokio::test]
async fn in_flight_is_bounded_by_the_client() {
    let (a, _b) = tokio::io::duplex(4096); // a server that never answers
    let (handle, _driver) = QueuedFramed::new(a).spawn();
    let mut client =
        Client::builder()
            .max_in_flight(3)
            .build(handle, LineCodec::new(), |_: &String| LineCodec::new());
    let mut pending = Vec::new();
    for i in 0..3 {
        pending.push(client.ready().await.unwrap().call(format!("{i}")));
    }
    let fourth = tokio::time::timeout(Duration::from_millis(30), client.ready()).await;
    assert!(fourth.is_err(), "poll_ready waits with 3 in flight");
}

#[tokio::test]
async fn server_answers_in_request_order_even_when_the_service_finishes_out_of_order() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let slow_first = tower::service_fn(|line: Utf8Line| async move {
        let n: u64 = line.line().parse().unwrap();
        // Earlier requests take longer.
        tokio::time::sleep(Duration::from_millis(20 - n)).await;
        Ok::<_, Infallible>(format!("done {n}"))
    });
    let server =
        tokio::spawn(serve(b, Utf8LineCodec::new(), LineCodec::new(), slow_first).into_future());
    let mut client = QueuedFramed::new(a);
    for i in 0..20 {
        client.push_write(LineCodec::new(), i.to_string()).unwrap();
    }
    client.flush().await.unwrap();
    for i in 0..20 {
        assert_eq!(
            client.read(LineCodec::new()).await.unwrap().line(),
            format!("done {i}").as_bytes()
        );
    }
    client.shutdown_write().await.unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn server_maps_service_errors_to_responses_or_closes() {
    let failing = tower::service_fn(|line: Utf8Line| async move {
        match line.line() {
            "bad" => Err(std::io::Error::other("nope")),
            ok => Ok(format!("ok {ok}")),
        }
    });
    // Mapped to a response.
    let (a, b) = tokio::io::duplex(4096);
    let server = tokio::spawn(
        serve(b, Utf8LineCodec::new(), LineCodec::new(), failing)
            .map_errors(|e| Ok(format!("ERR {e}")))
            .into_future(),
    );
    let mut client = QueuedFramed::new(a);
    for l in ["x", "bad", "y"] {
        client.push_write(LineCodec::new(), l).unwrap();
    }
    client.shutdown_write().await.unwrap();
    let mut got = Vec::new();
    while let Ok(l) = client.read(LineCodec::new()).await {
        got.push(String::from_utf8(l.into_line().to_vec()).unwrap());
    }
    assert_eq!(got, ["ok x", "ERR nope", "ok y"]);
    server.await.unwrap().unwrap();

    // Not mapped: answers before it, then closes with the error.
    let (a, b) = tokio::io::duplex(4096);
    let server =
        tokio::spawn(serve(b, Utf8LineCodec::new(), LineCodec::new(), failing).into_future());
    let mut client = QueuedFramed::new(a);
    for l in ["x", "bad", "y"] {
        client.push_write(LineCodec::new(), l).unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(client.read(LineCodec::new()).await.unwrap().line(), b"ok x");
    assert!(
        client.read(LineCodec::new()).await.is_err(),
        "closed after the error"
    );
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn server_stops_cleanly_on_a_shutdown_signal() {
    let (a, b) = tokio::io::duplex(4096);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let echo = tower::service_fn(|l: Utf8Line| async move { Ok::<_, Infallible>(l.into_line()) });
    let server = tokio::spawn(
        serve(b, Utf8LineCodec::new(), LineCodec::new(), echo)
            .with_shutdown(async move {
                let _ = rx.await;
            })
            .into_future(),
    );
    let mut client = QueuedFramed::new(a);
    client.write(LineCodec::new(), "before").await.unwrap();
    assert_eq!(
        client.read(LineCodec::new()).await.unwrap().line(),
        b"before"
    );
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    // The server half-closed: our next read sees EOF.
    assert_eq!(
        client.read(LineCodec::new()).await.unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
}

#[tokio::test]
async fn client_and_server_compose_with_tower_middleware() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let concurrent = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (c, p) = (concurrent.clone(), peak.clone());
    let svc = ServiceBuilder::new()
        .concurrency_limit(4)
        .timeout(Duration::from_secs(5))
        .service_fn(move |l: Utf8Line| {
            let (c, p) = (c.clone(), p.clone());
            async move {
                let now = c.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                c.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, tower::BoxError>(l.into_line())
            }
        });
    tokio::spawn(serve(b, Utf8LineCodec::new(), LineCodec::new(), svc).into_future());

    let (handle, _driver) = QueuedFramed::new(a).spawn();
    let client = Client::new(handle, LineCodec::new(), |_: &String| LineCodec::new());
    let client = ServiceBuilder::new()
        .buffer(64)
        .timeout(Duration::from_secs(5))
        .service(client);
    let mut calls = Vec::new();
    for i in 0..100 {
        let mut c = client.clone();
        calls.push(tokio::spawn(async move {
            (
                i,
                c.ready()
                    .await
                    .unwrap()
                    .call(format!("m{i}"))
                    .await
                    .unwrap(),
            )
        }));
    }
    for call in calls {
        let (i, resp) = call.await.unwrap();
        assert_eq!(resp.line(), format!("m{i}").as_bytes());
    }
    assert!(peak.load(Ordering::SeqCst) <= 4, "concurrency_limit held");
}

/// 200 client connections x 1,000 pipelined calls against one server
/// (a listener spawning `serve` per connection), every response matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_200_connections_by_1000_pipelined_calls() {
    const CONNS: usize = 200;
    const CALLS: usize = 1000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let echo =
                tower::service_fn(|l: Utf8Line| async move { Ok::<_, Infallible>(l.into_line()) });
            tokio::spawn(serve(s, Utf8LineCodec::new(), LineCodec::new(), echo).into_future());
        }
    });
    let mut conns = Vec::new();
    for c in 0..CONNS {
        conns.push(tokio::spawn(async move {
            let (handle, _driver) = QueuedFramed::builder()
                .autocork(true)
                .connect(addr)
                .await
                .unwrap()
                .spawn();
            let mut client = Client::new(handle, LineCodec::new(), |_: &String| LineCodec::new());
            let mut calls = Vec::with_capacity(CALLS);
            for i in 0..CALLS {
                calls.push(client.ready().await.unwrap().call(format!("{c}:{i}")));
            }
            for (i, call) in calls.into_iter().enumerate() {
                assert_eq!(call.await.unwrap().line(), format!("{c}:{i}").as_bytes());
            }
            CALLS
        }));
    }
    let mut total = 0;
    for c in conns {
        total += c.await.unwrap();
    }
    assert_eq!(total, CONNS * CALLS);
}

#[test]
fn request_bytes_for_fetch_are_what_the_server_expects() {
    // Guard for the test protocol above.
    let mut b = BytesMut::new();
    b.put_u32(3);
    b.put_slice(b"zzz");
    let mut c = Answer::Blob(PackstringCodec::new(PackFormat::U32Be));
    assert_eq!(&c.decode(&mut b).unwrap().unwrap()[..], b"zzz");
}

/// On a runtime with one thread, a caller that never has to wait would
/// queue a whole window before the driver runs, and the peer would sit
/// idle while the caller handles the whole window of answers. `poll_ready`
/// yields to the driver every half window, so the first half is written
/// while the caller queues the second.
#[tokio::test(flavor = "current_thread")]
async fn client_writes_its_window_in_halves_on_one_thread() {
    let (io, _peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let mut client =
        Client::builder()
            .max_in_flight(8)
            .build(handle.clone(), LineCodec::new(), |_: &String| {
                LineCodec::new()
            });
    let mut unwritten = Vec::new();
    let mut calls = Vec::new();
    for i in 0..8 {
        client.ready().await.unwrap();
        unwritten.push(handle.write_buffered());
        calls.push(client.call(format!("request {i}")));
    }
    // Before the fifth call the driver has written the first four.
    assert_eq!(unwritten[4], 0, "unwritten before each call: {unwritten:?}");
    assert!(
        unwritten[3] > 0,
        "unwritten before each call: {unwritten:?}"
    );
}
