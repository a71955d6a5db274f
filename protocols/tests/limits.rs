//! The protocol clients at their documented size limits: values and bodies
//! larger than the engine's default read cap, bursts of large requests held
//! back by `poll_ready`, and replies that never end.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use anyframe::ErrorKind;
use anyframe_protocols::http::{self, Request};
use anyframe_protocols::memcached::{self, Command, Response};
use anyframe_protocols::pipeline::Pipelined;
use anyframe_protocols::redis::{self, Cmd, Resp};
use anyframe_protocols::servers::{Kind, Server};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(30);

/// A loopback peer: waits until it has read `marker` `count` times, then
/// writes `script` and, if `close`, closes.
async fn peer(count: usize, marker: &'static [u8], script: Vec<u8>, close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        while buf.windows(marker.len()).filter(|w| *w == marker).count() < count {
            let mut tmp = [0u8; 4096];
            let n = sock.read(&mut tmp).await.unwrap();
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        sock.write_all(&script).await.unwrap();
        if close {
            sock.shutdown().await.unwrap();
            drop(sock);
        } else {
            let mut tmp = [0u8; 4096];
            while sock.read(&mut tmp).await.is_ok_and(|n| n > 0) {}
        }
    });
    addr
}

// ---------------------------------------------------------------- memcached

/// MAX_VALUE_LEN says values up to 1 GiB are accepted: one just over the
/// engine's default 64 MiB read-buffer cap is read (`connect` sets the cap
/// from the protocol's limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_value_between_rbuf_max_and_max_value_len_is_read() {
    let len = 64 * 1024 * 1024 + 1;
    assert!(len <= memcached::MAX_VALUE_LEN);
    let mut script = format!("VALUE k 0 {len}\r\n").into_bytes();
    script.resize(script.len() + len, b'v');
    script.extend_from_slice(b"\r\nEND\r\n");
    let addr = peer(1, b"\r\n", script, false).await;
    let c = memcached::connect(addr, 4).await.unwrap();
    let got = tokio::time::timeout(LIMIT, c.send(Command::get("k")))
        .await
        .expect("no hang");
    match got {
        Ok(Response::Values(items)) => assert_eq!(items[0].data.len(), len),
        other => panic!("a {len}-byte value (under MAX_VALUE_LEN) was refused: {other:?}"),
    }
}

// ---------------------------------------------------------------- HTTP

/// MAX_BODY says bodies up to 1 GiB are accepted: a Content-Length body
/// just over the engine's default 64 MiB read-buffer cap is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_content_length_body_between_rbuf_max_and_max_body_is_read() {
    let len = 64 * 1024 * 1024 + 1;
    assert!(len <= http::MAX_BODY);
    let mut script = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    script.resize(script.len() + len, b'b');
    let addr = peer(1, b"\r\n\r\n", script, false).await;
    let c = http::connect(addr, 4).await.unwrap();
    let got = tokio::time::timeout(LIMIT, c.send(Request::get("/")))
        .await
        .expect("no hang");
    match got {
        Ok(r) => assert_eq!(r.body_len(), len),
        Err(e) => panic!("a {len}-byte body (under MAX_BODY) was refused: {e}"),
    }
}

/// Pipelined sets of 1 MiB values (memcached's test server takes 2 MiB
/// items), 80 in flight under the default in-flight bound of 128, each
/// admitted by `poll_ready` (which waits for write room): every one is
/// stored.
#[tokio::test]
async fn memcached_pipelined_one_mib_sets_within_the_in_flight_bound_are_stored() {
    use tower::{Service, ServiceExt};
    let Some(server) = Server::start(Kind::Memcached) else {
        return;
    };
    let mut c = memcached::connect(
        server.addr(),
        anyframe_protocols::pipeline::DEFAULT_MAX_IN_FLIGHT,
    )
    .await
    .unwrap();
    let value = Bytes::from(vec![b'v'; 1024 * 1024]);
    let mut replies = Vec::new();
    for i in 0..80 {
        let r = tokio::time::timeout(LIMIT, c.ready())
            .await
            .expect("poll_ready does not hang")
            .unwrap()
            .call(Command::set(format!("k{i}"), value.clone()));
        replies.push(r);
    }
    let got = tokio::time::timeout(LIMIT, futures::future::join_all(replies))
        .await
        .expect("no hang");
    let failed: Vec<_> = got.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 80 sets failed, first: {:?}",
        failed.len(),
        failed.first()
    );
}

/// The same MAX_BODY bound against nginx: a 64 MiB + 1 file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_file_between_rbuf_max_and_max_body_is_read() {
    let Some(server) = Server::start(Kind::Nginx) else {
        return;
    };
    let len = 64 * 1024 * 1024 + 1;
    let f = std::fs::File::create(server.docroot().join("big")).unwrap();
    f.set_len(len as u64).unwrap();
    let c = http::connect(server.addr(), 4).await.unwrap();
    let got = tokio::time::timeout(LIMIT, c.send(Request::get("/big")))
        .await
        .expect("no hang");
    match got {
        Ok(r) => assert_eq!((r.status, r.body_len()), (200, len)),
        Err(e) => panic!("a {len}-byte body (under MAX_BODY) was refused: {e}"),
    }
}

// ---------------------------------------------------------------- Redis

/// A hostile server announces an array of 2^32 - 1 elements and streams
/// small ones without end: the reply stops at the client's
/// `max_reply_size` with a fatal `ENOSPC`, instead of growing until the
/// process runs out of memory.
#[tokio::test]
async fn redis_reply_that_never_ends_stops_at_max_reply_size() {
    let (handle, mut peer) = support::pipe();
    let c = Pipelined::new(handle, Resp::new().max_reply_size(64 * 1024), 4);
    let reply = tokio::spawn(c.send(Cmd::new("LRANGE").arg("k").arg("0").arg("-1")));
    support::take_commands(&mut peer).await;
    let server = tokio::spawn(async move {
        peer.write_all(b"*4294967295\r\n").await.unwrap();
        let elements = b":1\r\n".repeat(1024);
        // Until the client closes the connection.
        while peer.write_all(&elements).await.is_ok() {}
    });
    let e = tokio::time::timeout(LIMIT, reply)
        .await
        .expect("the reply stops")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert!(e.is_fatal(), "{e}");
    tokio::time::timeout(LIMIT, server)
        .await
        .expect("closed")
        .unwrap();
}

/// A bulk string longer than what is left under `max_reply_size` is
/// refused from its length line, before any byte of it is buffered; the
/// same string fits a client whose limit is larger.
#[tokio::test]
async fn redis_bulk_over_max_reply_size_is_refused_from_its_length() {
    for (max, fits) in [(1000, false), (1100, true)] {
        let (handle, mut peer) = support::pipe();
        let c = Pipelined::new(handle, Resp::new().max_reply_size(max), 4);
        let reply = c.send(Cmd::new("GET").arg("k"));
        support::take_commands(&mut peer).await;
        // Only the length line: a client that waits for the bytes hangs.
        peer.write_all(b"$1024\r\n").await.unwrap();
        if fits {
            peer.write_all(&[b'v'; 1024]).await.unwrap();
            peer.write_all(b"\r\n").await.unwrap();
        }
        let got = tokio::time::timeout(LIMIT, reply).await.expect("no hang");
        match got {
            Ok(redis::Value::Bulk(b)) if fits => assert_eq!(b.len(), 1024),
            Err(e) if !fits => assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}"),
            other => panic!("max_reply_size {max}: {other:?}"),
        }
    }
}

/// A Redis `SET` of a value between the engine's default `wbuf_max`
/// (64 MiB) and `MAX_BULK_LEN` (512 MiB, which Redis takes), sent while a
/// `GET` is in flight: `connect` sizes the write cap as it sizes the read
/// cap, so the value is written and the `GET` gets its own reply (the
/// default cap made the `SET` a fatal `ENOSPC` that failed the `GET` too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_request_between_wbuf_max_and_max_bulk_len_is_written() {
    let len = 65 * 1024 * 1024;
    assert!(len > anyframe::DEFAULT_WBUF_MAX && len <= redis::MAX_BULK_LEN);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let (mut seen, mut answered) = (0, false);
        while seen < len {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {seen} bytes");
            seen += n;
            if !answered {
                answered = true;
                sock.write_all(b"$1\r\nv\r\n").await.unwrap();
            }
        }
        sock.write_all(b"+OK\r\n").await.unwrap();
        seen
    });
    let c = redis::connect(addr, 16).await.unwrap();
    let get = c.send(Cmd::new("GET").arg("k"));
    let set = c.send(Cmd::new("SET").arg("big").arg(vec![b'x'; len]));
    let (get, set) = tokio::time::timeout(LIMIT, futures::future::join(get, set))
        .await
        .expect("no hang");
    assert_eq!(get.unwrap(), redis::Value::Bulk("v".into()));
    assert_eq!(set.unwrap(), redis::Value::Simple("OK".into()));
    assert!(server.await.unwrap() > len);
}

/// A command argument longer than `MAX_BULK_LEN`, which Redis refuses by
/// closing the connection, is refused before anything is written (a
/// non-fatal `EINVAL`); the connection goes on.
#[tokio::test]
async fn redis_argument_over_max_bulk_len_is_refused_before_it_is_written() {
    let (handle, mut peer) = support::pipe();
    let c = Pipelined::new(handle, Resp::new(), 4);
    let huge = c.send(
        Cmd::new("SET")
            .arg("k")
            .arg(vec![b'x'; redis::MAX_BULK_LEN + 1]),
    );
    let e = tokio::time::timeout(LIMIT, huge)
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(!e.is_fatal(), "{e}");
    let ping = c.send(Cmd::new("PING"));
    assert_eq!(
        support::take_commands(&mut peer).await,
        b"*1\r\n$4\r\nPING\r\n"
    );
    peer.write_all(b"+PONG\r\n").await.unwrap();
    let got = tokio::time::timeout(LIMIT, ping).await.expect("no hang");
    assert_eq!(got.unwrap(), redis::Value::Simple("PONG".into()));
}

/// A memcached value longer than `MAX_VALUE_LEN` is refused before
/// anything is written (a non-fatal `EINVAL`); the connection goes on.
#[tokio::test]
async fn memcached_value_over_max_value_len_is_refused_before_it_is_written() {
    let (c, mut peer) = support::mc();
    // Zeroed and never written to: the pages are not touched.
    let huge = bytes::Bytes::from(vec![0u8; memcached::MAX_VALUE_LEN + 1]);
    let set = c.send(Command::set("k", huge));
    let e = tokio::time::timeout(LIMIT, set)
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(!e.is_fatal(), "{e}");
    let get = c.send(Command::get("k"));
    assert_eq!(support::take_commands(&mut peer).await, b"get k\r\n");
    peer.write_all(b"END\r\n").await.unwrap();
    let got = tokio::time::timeout(LIMIT, get).await.expect("no hang");
    assert_eq!(got.unwrap(), Response::Values(Vec::new()));
}

/// An HTTP request body longer than `MAX_BODY` is refused before anything
/// is written (a non-fatal `EINVAL`); the connection goes on.
#[tokio::test]
async fn http_request_body_over_max_body_is_refused_before_it_is_written() {
    let (handle, mut peer) = support::pipe();
    let c = Pipelined::new(handle, http::Http::new("h"), 4);
    // Zeroed and never written to: the pages are not touched.
    let huge = Bytes::from(vec![0u8; http::MAX_BODY + 1]);
    let post = c.send(Request::new("POST", "/").body(huge));
    let e = tokio::time::timeout(LIMIT, post)
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(!e.is_fatal(), "{e}");
    let get = c.send(Request::get("/"));
    let sent = support::take_commands(&mut peer).await;
    assert!(sent.starts_with(b"GET / HTTP/1.1\r\n"), "{sent:?}");
    peer.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        .await
        .unwrap();
    let got = tokio::time::timeout(LIMIT, get).await.expect("no hang");
    assert_eq!(got.unwrap().status, 204);
}

/// `max_reply_size` counts `size_of::<Value>()` per value and the bytes of
/// its strings, exactly: `*2 +hello :1` is three values and five bytes,
/// which a limit of that size takes and one byte less refuses. RESP2's
/// null array stays a `Nil` reply.
#[tokio::test]
async fn redis_max_reply_size_counts_values_and_strings_exactly() {
    let value = std::mem::size_of::<redis::Value>();
    for (max, fits) in [(3 * value + 5, true), (3 * value + 4, false)] {
        let (handle, mut peer) = support::pipe();
        let c = Pipelined::new(handle, Resp::new().max_reply_size(max), 4);
        let reply = c.send(Cmd::new("GET").arg("k"));
        let null = c.send(Cmd::new("GET").arg("k"));
        support::take_commands(&mut peer).await;
        peer.write_all(b"*2\r\n+hello\r\n:1\r\n*-1\r\n")
            .await
            .unwrap();
        let got = tokio::time::timeout(LIMIT, reply).await.expect("no hang");
        match got {
            Ok(redis::Value::Array(items)) if fits => assert_eq!(items.len(), 2),
            Err(e) if !fits => assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}"),
            other => panic!("max_reply_size {max}: {other:?}"),
        }
        if fits {
            let got = tokio::time::timeout(LIMIT, null).await.expect("no hang");
            assert_eq!(got.unwrap(), redis::Value::Nil);
        }
    }
}

/// An attribute (RESP3 metadata in front of a value) counts while it is
/// read, and its size goes when it is skipped: behind attributes that each
/// fit the limit, but not together, the reply is read whole.
#[tokio::test]
async fn redis_skipped_attributes_give_their_size_back() {
    // One attribute: itself, `+key-popularity` (14 bytes) and `:1`.
    let max = 3 * std::mem::size_of::<redis::Value>() + 14;
    let (handle, mut peer) = support::pipe();
    let c = Pipelined::new(handle, Resp::new().max_reply_size(max), 4);
    let reply = c.send(Cmd::new("GET").arg("k"));
    support::take_commands(&mut peer).await;
    let attribute = b"|1\r\n+key-popularity\r\n:1\r\n";
    peer.write_all(&[&b"|0\r\n"[..], attribute, attribute, b"+OK\r\n"].concat())
        .await
        .unwrap();
    let got = tokio::time::timeout(LIMIT, reply).await.expect("no hang");
    assert_eq!(got.unwrap(), redis::Value::Simple("OK".into()));
}

/// A request longer than the connection's whole write cap can never be
/// queued: `Pipelined` refuses it before anything is written (a non-fatal
/// `EINVAL`), where queueing it closed the connection under the request in
/// flight. (The protocols' own limits leave room for one largest value, not
/// for a command of several: an `MSET` of two values near Redis's 512 MiB.)
#[tokio::test]
async fn a_request_longer_than_wbuf_max_is_refused_before_it_is_written() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = anyframe::QueuedFramed::builder()
        .wbuf_max(Some(4096))
        .build(io)
        .spawn();
    let c = Pipelined::new(handle, Resp::new(), 4);
    let get = c.send(Cmd::new("GET").arg("k"));
    let mset = c.send(
        Cmd::new("MSET")
            .arg("a")
            .arg([0u8; 3000])
            .arg("b")
            .arg([0u8; 3000]),
    );
    let e = tokio::time::timeout(LIMIT, mset)
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(!e.is_fatal(), "{e}");
    assert_eq!(
        support::take_commands(&mut peer).await,
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    );
    peer.write_all(b"$1\r\nv\r\n").await.unwrap();
    let got = tokio::time::timeout(LIMIT, get).await.expect("no hang");
    assert_eq!(got.unwrap(), redis::Value::Bulk("v".into()));
}
