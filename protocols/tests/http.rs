//! The HTTP/1.1 client against a real nginx on a loopback port, and the
//! rarer shapes of the protocol (1xx, chunk extensions, trailers, a body
//! until close) against a scripted loopback peer that writes them a byte
//! at a time.

use std::net::SocketAddr;
use std::time::Duration;

use anyframe::ErrorKind;
use anyframe_protocols::http::{self, Request, Response};
use anyframe_protocols::pipeline::Reply;
use anyframe_protocols::servers::{Kind, Server};
use anyframe_protocols::workload::{self, MAX_VALUE, Rng};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

const LIMIT: Duration = Duration::from_secs(60);

macro_rules! server {
    () => {
        match Server::start(Kind::Nginx) {
            Some(s) => s,
            None => return,
        }
    };
}

async fn call(c: &mut http::Client, req: Request) -> Response {
    c.ready().await.unwrap().call(req).await.unwrap()
}

fn put(server: &Server, name: &str, data: &[u8]) {
    let path = server.docroot().join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

#[tokio::test]
async fn content_length_head_404_and_keep_alive() {
    let server = server!();
    let small = workload::value(1, 1024);
    let large = workload::value(2, MAX_VALUE);
    put(&server, "small", &small);
    put(&server, "large", &large);
    tokio::time::timeout(LIMIT, async {
        let mut c = http::connect(server.addr(), 16).await.unwrap();
        for _ in 0..3 {
            let r = call(&mut c, Request::get("/small")).await;
            assert_eq!((r.status, &r.reason[..]), (200, &b"OK"[..]));
            assert_eq!(r.header("content-length"), Some(&b"1024"[..]));
            assert_eq!(r.body, std::slice::from_ref(&small), "one read, one piece");
            let r = call(&mut c, Request::get("/large")).await;
            assert_eq!(r.body_bytes(), large);
            let r = call(&mut c, Request::new("HEAD", "/large")).await;
            assert_eq!((r.status, r.body_len()), (200, 0));
            assert_eq!(
                r.header("Content-Length"),
                Some(format!("{MAX_VALUE}").as_bytes())
            );
            let r = call(&mut c, Request::get("/nope")).await;
            assert_eq!(r.status, 404);
            assert!(r.body_len() > 0);
            let r = call(&mut c, Request::get("/early")).await;
            assert_eq!((r.status, r.body_len()), (204, 0));
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn chunked_with_trailer_from_nginx() {
    let server = server!();
    // gzip makes nginx send the body chunked; add_trailer adds a trailer.
    let text = workload::value(3, 200_000);
    put(&server, "gz/text", &text);
    tokio::time::timeout(LIMIT, async {
        let mut c = http::connect(server.addr(), 16).await.unwrap();
        for _ in 0..2 {
            let r = call(
                &mut c,
                Request::get("/gz/text").header("Accept-Encoding", "gzip"),
            )
            .await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("transfer-encoding"), Some(&b"chunked"[..]));
            assert_eq!(r.header("content-encoding"), Some(&b"gzip"[..]));
            assert_eq!(&r.body_bytes()[..2], [0x1f, 0x8b], "a gzip stream");
            assert_eq!(r.trailer("x-checksum"), Some(&b"done"[..]));
            // Without gzip: the same file with a Content-Length.
            let r = call(&mut c, Request::get("/gz/text")).await;
            assert_eq!(r.body_bytes(), text);
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn expect_100_continue_from_nginx() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut c = http::connect(server.addr(), 16).await.unwrap();
        let req = Request::new("POST", "/early")
            .header("Expect", "100-continue")
            .body("payload");
        let r = call(&mut c, req).await;
        assert_eq!(r.status, 204);
        assert_eq!(r.informational, [100]);
        assert_eq!(call(&mut c, Request::get("/early")).await.status, 204);
    })
    .await
    .unwrap();
}

async fn tagged(reply: Reply<Response>, want: usize) -> (anyframe::Result<Response>, usize) {
    (reply.await, want)
}

/// 10,000 pipelined GETs (256 in flight) of 64 files whose sizes come from
/// the seeded 0 B–1 MiB distribution (`Rng::value_size`), the 1 MiB end
/// included: every response is its own file, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_gets() {
    let server = server!();
    let mut rng = Rng::new(41);
    let files: Vec<_> = (0..64)
        .map(|i| workload::value(i, if i == 0 { MAX_VALUE } else { rng.value_size() }))
        .collect();
    for (i, f) in files.iter().enumerate() {
        put(&server, &format!("f{i}"), f);
    }
    tokio::time::timeout(LIMIT, async {
        let mut c = http::connect(server.addr(), 256).await.unwrap();
        let mut pending = FuturesOrdered::new();
        let mut checked = 0;
        let mut check = |(r, i): (anyframe::Result<Response>, usize)| {
            let r = r.unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body_bytes(), files[i], "file {i}");
            checked += 1;
        };
        for _ in 0..10_000 {
            // Mostly small files, the 1 MiB one now and then.
            let i = if rng.below(500) == 0 {
                0
            } else {
                1 + rng.below(63) as usize
            };
            let reply = c
                .ready()
                .await
                .unwrap()
                .call(Request::get(format!("/f{i}")));
            pending.push_back(tagged(reply, i));
            while pending.len() > 300 {
                check(pending.next().await.unwrap());
            }
        }
        while let Some(r) = pending.next().await {
            check(r);
        }
        assert_eq!(checked, 10_000);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_reply_fails_every_outstanding_request() {
    let mut server = server!();
    put(&server, "big", &workload::value(4, 8 * 1024 * 1024));
    let c = http::connect(server.addr(), 64).await.unwrap();
    let replies: Vec<_> = (0..32).map(|_| c.send(Request::get("/big"))).collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.kill();
    let results = tokio::time::timeout(LIMIT, futures::future::join_all(replies))
        .await
        .expect("every outstanding request resolves");
    let first_err = results
        .iter()
        .position(Result::is_err)
        .expect("256 MiB cannot all have been sent");
    for r in &results[first_err..] {
        let e = r.as_ref().unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::BrokenPipe | ErrorKind::Io | ErrorKind::Closed
            ),
            "{e:?}"
        );
    }
    assert!(c.send(Request::get("/big")).await.is_err());
}

/// A loopback peer that answers each request (read up to its empty line)
/// with the next canned response, one byte per write.
async fn scripted(responses: Vec<&'static [u8]>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        sock.set_nodelay(true).unwrap();
        let mut buf = Vec::new();
        for resp in responses {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut tmp = [0u8; 1024];
                let n = sock.read(&mut tmp).await.unwrap();
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            buf.drain(..end);
            for b in resp {
                sock.write_all(&[*b]).await.unwrap();
            }
        }
    });
    addr
}

#[tokio::test]
async fn informational_responses_chunk_extensions_and_trailers() {
    let addr = scripted(vec![
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum, X-Other\r\n\r\n\
          5;name=value;flag\r\nhello\r\n1A ; spaced=\"quoted;value\"\r\n abcdefghijklmnopqrstuvwxy\r\n\
          0;last=1\r\nX-Sum: 42\r\nX-Other:  padded  \r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 3\n\nbar",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ])
    .await;
    tokio::time::timeout(LIMIT, async {
        let c = http::connect(addr, 16).await.unwrap();
        // All five in flight at once.
        let replies: Vec<_> = (0..5)
            .map(|i| c.send(Request::get(format!("/{i}"))))
            .collect();
        let mut r = futures::future::join_all(replies)
            .await
            .into_iter()
            .map(Result::unwrap);
        let first = r.next().unwrap();
        assert_eq!(
            (first.status, first.informational.as_slice()),
            (200, &[100, 103][..])
        );
        assert_eq!(first.header("x-final"), Some(&b"yes"[..]));
        assert_eq!(
            first.header("link"),
            None,
            "1xx headers are not the response's"
        );
        assert_eq!(first.body_bytes(), "hello");
        let chunked = r.next().unwrap();
        // Small chunks are gathered into one piece.
        assert_eq!(chunked.body.len(), 1);
        assert_eq!(chunked.body_bytes(), "hello abcdefghijklmnopqrstuvwxy");
        assert_eq!(chunked.trailer("x-sum"), Some(&b"42"[..]));
        assert_eq!(chunked.trailer("x-other"), Some(&b"padded"[..]));
        let bare_lf = r.next().unwrap();
        assert_eq!(bare_lf.body_bytes(), "bar");
        let not_modified = r.next().unwrap();
        assert_eq!((not_modified.status, not_modified.body_len()), (304, 0));
        let empty = r.next().unwrap();
        assert_eq!(
            (empty.status, empty.body_len(), empty.trailers.len()),
            (200, 0, 0)
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn body_until_close_and_a_bad_status_line() {
    // A peer that closes after the body.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut tmp = [0u8; 1024];
        let _ = sock.read(&mut tmp).await.unwrap();
        sock.write_all(b"HTTP/1.0 200 OK\r\n\r\nall of it")
            .await
            .unwrap();
        sock.write_all(b" until close").await.unwrap();
    });
    let c = http::connect(addr, 4).await.unwrap();
    let r = tokio::time::timeout(LIMIT, c.send(Request::get("/")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.body_bytes(), "all of it until close");

    let addr = scripted(vec![b"HTTP/1.1 2x0 OK\r\n\r\n"]).await;
    let c = http::connect(addr, 4).await.unwrap();
    let first = c.send(Request::get("/"));
    let second = c.send(Request::get("/"));
    let e = tokio::time::timeout(LIMIT, first)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::BadMessage, true));
    assert!(tokio::time::timeout(LIMIT, second).await.unwrap().is_err());
}
