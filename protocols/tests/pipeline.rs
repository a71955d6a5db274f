//! The protocol clients on a scripted peer: failure paths (a reply that
//! times out, or whose future is dropped where no runtime runs, must never
//! let a later request read it) and wire forms a real server seldom sends.

mod support;

use std::time::Duration;

use anyframe::{ErrorKind, QueuedFramed};
use anyframe_protocols::http::Request;
use anyframe_protocols::pipeline::Pipelined;
use anyframe_protocols::redis::{Cmd, Resp, Subscriber, Value};
use support::{LIMIT, MS, body, http_exchange, pipe, take_commands};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// A Redis client on one end of a pipe whose driver has `rtimeout`, and
/// the pipe's other end (the scripted server).
fn client(rtimeout: Duration) -> (Pipelined<Resp>, DuplexStream) {
    let (io, peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder().rtimeout(rtimeout).build(io).spawn();
    (Pipelined::new(handle, Resp::new(), 16), peer)
}

/// One reply per read, the first one late: the first request times out,
/// and its late reply is read and dropped, not handed to the next request.
#[tokio::test(start_paused = true)]
async fn a_timed_out_reply_is_never_the_next_requests() {
    let (c, mut peer) = client(MS(300));
    let first = c.send(Cmd::new("GET").arg("alice"));
    take_commands(&mut peer).await;
    let e = first.await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    let second = c.send(Cmd::new("GET").arg("bob"));
    take_commands(&mut peer).await;
    peer.write_all(b"+alice\r\n+bob\r\n").await.unwrap();
    let got = tokio::time::timeout(MS(1000), second).await.unwrap();
    assert_eq!(got.unwrap(), Value::Simple("bob".into()));
}

/// A reply of several reads (a bulk string: its length line, then its
/// bytes) that times out between them: the rest of it is still read and
/// dropped.
#[tokio::test(start_paused = true)]
async fn a_reply_timed_out_between_its_reads_is_read_to_its_end() {
    let (c, mut peer) = client(MS(300));
    let first = c.send(Cmd::new("GET").arg("alice"));
    take_commands(&mut peer).await;
    peer.write_all(b"*2\r\n$5\r\n").await.unwrap();
    let e = first.await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    let second = c.send(Cmd::new("GET").arg("bob"));
    take_commands(&mut peer).await;
    peer.write_all(b"alice\r\n:7\r\n+bob\r\n").await.unwrap();
    let got = tokio::time::timeout(MS(1000), second).await.unwrap();
    assert_eq!(got.unwrap(), Value::Simple("bob".into()));
}

/// A reply future dropped on a thread with no runtime (another executor's
/// `select!`, say) before its reply came: the reply is still read to its
/// end and dropped.
#[tokio::test]
async fn a_reply_dropped_outside_a_runtime_keeps_the_stream_in_step() {
    let (c, mut peer) = client(Duration::ZERO);
    let first = c.send(Cmd::new("GET").arg("alice"));
    std::thread::spawn(move || drop(first)).join().unwrap();
    let second = c.send(Cmd::new("GET").arg("bob"));
    take_commands(&mut peer).await;
    peer.write_all(b"*1\r\n$5\r\nalice\r\n+bob\r\n")
        .await
        .unwrap();
    let got = tokio::time::timeout(MS(5000), second).await.unwrap();
    assert_eq!(got.unwrap(), Value::Simple("bob".into()));
}

/// A bulk string longer than the connection's `rbuf_max`: the reply
/// cannot be read, and skipping it would hand its bytes to the next
/// request, so the connection closes (fatal) and both requests fail.
#[tokio::test]
async fn a_reply_over_rbuf_max_closes_instead_of_desynchronising() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder()
        .rbuf_max(Some(1024))
        .build(io)
        .spawn();
    let c = Pipelined::new(handle, Resp::new(), 16);
    let first = c.send(Cmd::new("GET").arg("big"));
    let second = c.send(Cmd::new("GET").arg("small"));
    take_commands(&mut peer).await;
    let mut reply = b"$5000\r\n".to_vec();
    reply.extend_from_slice(&[b'+'; 5000]);
    reply.extend_from_slice(b"\r\n+small\r\n");
    peer.write_all(&reply).await.unwrap();
    let e = tokio::time::timeout(MS(5000), first)
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.is_fatal(), "{e}");
    let got = tokio::time::timeout(MS(5000), second).await.unwrap();
    assert!(
        got.is_err(),
        "the next request read the big reply's bytes: {got:?}"
    );
}

/// RESP3: an attribute (`|n`) describes the value after it, and that
/// value takes its place. An empty attribute `|0`, at the top or inside an
/// array, is skipped the same way: it is not a reply (an empty map), which
/// would leave its value for the next request.
#[tokio::test]
async fn redis_empty_attribute_hands_its_value_to_the_next_request() {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Resp::new(), 16);
    let replies: Vec<_> = (0..3).map(|_| c.send(Cmd::new("GET").arg("k"))).collect();
    take_commands(&mut peer).await;
    peer.write_all(b"|0\r\n+a\r\n*2\r\n|0\r\n:1\r\n:2\r\n+b\r\n")
        .await
        .unwrap();
    let got = tokio::time::timeout(LIMIT, futures::future::join_all(replies))
        .await
        .unwrap();
    let got: Vec<Value> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        got,
        [
            Value::Simple("a".into()),
            Value::Array(vec![Value::Integer(1), Value::Integer(2)]),
            Value::Simple("b".into()),
        ]
    );
}

/// A Subscriber on a connection with a read timeout: the timeout is
/// non-fatal (TO-3), so `next()` says it and the subscription goes on:
/// the next message the server sends is delivered.
#[tokio::test(start_paused = true)]
async fn subscriber_survives_a_non_fatal_read_timeout() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder().rtimeout(MS(300)).build(io).spawn();
    let mut sub = Subscriber::new(handle.clone());
    sub.command(&Cmd::new("SUBSCRIBE").arg("ch")).unwrap();
    take_commands(&mut peer).await;
    peer.write_all(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n")
        .await
        .unwrap();
    let confirm = tokio::time::timeout(LIMIT, sub.next()).await.unwrap();
    assert!(matches!(confirm, Some(Ok(Value::Array(_)))), "{confirm:?}");
    // The channel is quiet for longer than rtimeout.
    let quiet = tokio::time::timeout(LIMIT, sub.next()).await.unwrap();
    let e = quiet.expect("an item").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    assert!(!e.is_fatal(), "{e}");
    assert!(!handle.is_closed(), "the connection is still open");
    // A message comes: a subscriber whose connection is open delivers it.
    peer.write_all(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n")
        .await
        .unwrap();
    let msg = tokio::time::timeout(LIMIT, sub.next()).await.unwrap();
    assert!(
        matches!(msg, Some(Ok(Value::Array(_)))),
        "after a non-fatal timeout the subscriber gave {msg:?} on an open connection"
    );
}

/// RFC 9112 §6.3 (and RFC 9110 §5.3: field lines of one name are one
/// list): `Transfer-Encoding: gzip` then `Transfer-Encoding: chunked` is
/// the list `gzip, chunked`, whose final coding is chunked, so the body is
/// chunked (read "until close", the response would never resolve on a
/// keep-alive connection).
#[tokio::test]
async fn http_transfer_encoding_on_two_field_lines_is_one_list() {
    let got = http_exchange(
        vec![Request::get("/a"), Request::get("/b")],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye",
        false,
    )
    .await;
    assert_eq!(body(&got[0]), Some("hello".into()), "{got:?}");
    assert_eq!(body(&got[1]), Some("bye".into()), "{got:?}");
}

/// The other order: `chunked` then `gzip` is the list `chunked, gzip`,
/// whose final coding is not chunked: the body runs until the server
/// closes (RFC 9112 §6.3 item 4), and the bytes after what looks like a
/// zero chunk are part of it, never the next request's response.
#[tokio::test]
async fn http_transfer_encoding_final_coding_is_the_last_field_lines() {
    let got = http_exchange(
        vec![Request::get("/a"), Request::get("/b")],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
        true,
    )
    .await;
    assert!(
        body(&got[0]).is_some_and(|b| b.ends_with(b"smuggled")),
        "{got:?}"
    );
    assert!(got[1].is_err(), "{got:?}");
}

/// HTTP methods are case-sensitive (RFC 9110 §9.1): `head` is not `HEAD`,
/// and a response to it has the body its headers announce (here a 405
/// with `Content-Length: 5`), which is read, not left in front of the next
/// response.
#[tokio::test]
async fn http_lowercase_head_is_not_head() {
    let got = http_exchange(
        vec![Request::new("head", "/"), Request::get("/")],
        b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 5\r\n\r\nnope!\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        false,
    )
    .await;
    assert_eq!(body(&got[0]), Some("nope!".into()), "{got:?}");
    assert_eq!(body(&got[1]), Some("ok".into()), "{got:?}");
}

/// RFC 9112 §7.1: `chunk-size = 1*HEXDIG`, and recipients "MUST anticipate
/// potentially large hexadecimal numerals": a chunk size with leading
/// zeros (`0000000000000005`, 16 digits) is valid.
#[tokio::test]
async fn http_chunk_size_with_leading_zeros_is_valid() {
    let got = http_exchange(
        vec![Request::get("/")],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          0000000000000005\r\nhello\r\n0\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(body(&got[0]), Some("hello".into()), "{got:?}");
}

/// Chunk sizes at the edges: an empty size line is no size (fatal
/// EBADMSG, not the last chunk); a chunk of exactly `MAX_BODY` bytes is
/// accepted (the server then closes: EPIPE), one byte more, or a size of
/// 17 hex digits, is refused before anything is buffered (ENOSPC).
#[tokio::test]
async fn http_chunk_sizes_at_the_edges() {
    let cases: [(&'static [u8], ErrorKind); 4] = [
        (b"\r\n", ErrorKind::BadMessage),
        (b"40000000\r\n", ErrorKind::BrokenPipe),
        (b"40000001\r\n", ErrorKind::NoSpace),
        (b"10000000000000000\r\n", ErrorKind::NoSpace),
    ];
    assert_eq!(anyframe_protocols::http::MAX_BODY, 0x4000_0000);
    for (size_line, kind) in cases {
        let mut script = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        script.extend_from_slice(size_line);
        let script: &'static [u8] = Box::leak(script.into_boxed_slice());
        let got = http_exchange(vec![Request::get("/")], script, true).await;
        let e = got[0].as_ref().unwrap_err();
        assert_eq!(
            (e.kind(), e.is_fatal()),
            (kind, true),
            "{:?}: {e}",
            String::from_utf8_lossy(size_line)
        );
    }
}

/// A message the server began before the read timeout: the subscriber
/// says the timeout, then delivers the whole message (its rest is read by
/// response reads, so no part of it is left for the next read).
#[tokio::test(start_paused = true)]
async fn a_subscriber_message_begun_before_a_timeout_still_arrives_whole() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder().rtimeout(MS(300)).build(io).spawn();
    let mut sub = Subscriber::new(handle.clone());
    peer.write_all(b"*3\r\n$7\r\nmessage\r\n").await.unwrap();
    let e = tokio::time::timeout(LIMIT, sub.next())
        .await
        .unwrap()
        .expect("an item")
        .unwrap_err();
    assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::TimedOut, false));
    peer.write_all(b"$2\r\nch\r\n$5\r\nhello\r\n*1\r\n:7\r\n")
        .await
        .unwrap();
    let whole = tokio::time::timeout(LIMIT, sub.next()).await.unwrap();
    let Some(Ok(Value::Array(parts))) = whole else {
        panic!("{whole:?}")
    };
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[2], Value::Bulk("hello".into()));
    let next = tokio::time::timeout(LIMIT, sub.next()).await.unwrap();
    assert_eq!(
        next.unwrap().unwrap(),
        Value::Array(vec![Value::Integer(7)])
    );
}

/// A message the server stalls in for several read-timeout periods: each
/// period is said (non-fatal) and the connection stays open, then the whole
/// message arrives, and the subscription goes on after it.
#[tokio::test(start_paused = true)]
async fn a_subscriber_message_stalled_for_several_timeouts_still_arrives() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder().rtimeout(MS(300)).build(io).spawn();
    let mut sub = Subscriber::new(handle.clone());
    peer.write_all(b"*3\r\n$7\r\nmessage\r\n").await.unwrap();
    for period in 1..=3 {
        let e = tokio::time::timeout(LIMIT, sub.next())
            .await
            .unwrap()
            .expect("an item")
            .unwrap_err();
        assert_eq!(
            (e.kind(), e.is_fatal()),
            (ErrorKind::TimedOut, false),
            "period {period}: {e}"
        );
        assert!(!handle.is_closed(), "period {period}: {:?}", handle.error());
    }
    peer.write_all(b"$2\r\nch\r\n$5\r\nhello\r\n")
        .await
        .unwrap();
    let whole = tokio::time::timeout(LIMIT, sub.next()).await.unwrap();
    let Some(Ok(Value::Array(parts))) = whole else {
        panic!("{whole:?}")
    };
    assert_eq!(parts[2], Value::Bulk("hello".into()));
    // Quiet again: said again, and the next message still comes.
    let e = tokio::time::timeout(LIMIT, sub.next())
        .await
        .unwrap()
        .expect("an item")
        .unwrap_err();
    assert!(!e.is_fatal(), "{e}");
    peer.write_all(b"*1\r\n:7\r\n").await.unwrap();
    let next = tokio::time::timeout(LIMIT, sub.next()).await.unwrap();
    assert_eq!(
        next.unwrap().unwrap(),
        Value::Array(vec![Value::Integer(7)])
    );
}

/// A peer that answers every Redis command with `+OK`.
fn answers_ok(mut peer: DuplexStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = peer.read(&mut buf).await {
            if n == 0 {
                break;
            }
            for _ in buf[..n].iter().filter(|&&b| b == b'*') {
                if peer.write_all(b"+OK\r\n").await.is_err() {
                    return;
                }
            }
        }
    })
}

/// A reply keeps the connection open until it has its answer, also when
/// the last `Pipelined` clone is dropped first: tower's `oneshot` drops
/// the service before it awaits the response (the core `Client` does the
/// same for its `ResponseFuture`).
#[tokio::test]
async fn a_reply_outlives_the_last_client_clone() {
    use tower::ServiceExt;
    let (io, peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let _peer = answers_ok(peer);
    let c = Pipelined::new(handle, Resp::new(), 16);
    let got = tokio::time::timeout(Duration::from_secs(10), c.oneshot(Cmd::new("PING")))
        .await
        .expect("an answer");
    assert_eq!(got.unwrap(), Value::Simple("OK".into()));

    let (io, peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let _peer = answers_ok(peer);
    let c = Pipelined::new(handle, Resp::new(), 16);
    let reply = c.send(Cmd::new("PING"));
    drop(c);
    let got = tokio::time::timeout(Duration::from_secs(10), reply)
        .await
        .expect("an answer");
    assert_eq!(got.unwrap(), Value::Simple("OK".into()));
}

/// `max_in_flight` of `usize::MAX` means no bound (not a panic in tokio's
/// semaphore), and once the connection's output is shut `poll_ready`
/// fails instead of handing out a slot for a call that cannot be written.
#[tokio::test]
async fn pipelined_readiness_at_the_bounds() {
    use tower::ServiceExt;
    let (handle, _peer) = pipe();
    let mut c = Pipelined::new(handle.clone(), Resp::new(), usize::MAX);
    tokio::time::timeout(LIMIT, c.ready())
        .await
        .unwrap()
        .unwrap();
    handle.push_shutdown().unwrap();
    let mut c = c.clone();
    let e = tokio::time::timeout(LIMIT, c.ready())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

/// A reply of many elements is a chain of reads, each read's ticket
/// holding the next one. A reply future polled rarely (or never) lets the
/// chain grow with every element read; dropping it then must not drop the
/// chain by recursion, which overflows the stack and aborts the process.
/// The rest of the dropped reply is still read and dropped, so the next
/// request gets its own answer.
#[tokio::test]
async fn dropping_a_reply_far_behind_its_reads_neither_overflows_nor_desyncs() {
    let (c, mut peer) = client(Duration::ZERO);
    let first = c.send(Cmd::new("LRANGE").arg("k").arg("0").arg("-1"));
    take_commands(&mut peer).await;
    let elements = 200_000;
    peer.write_all(format!("*{}\r\n", elements + 1).as_bytes())
        .await
        .unwrap();
    peer.write_all(&b":1\r\n".repeat(elements)).await.unwrap();
    // The pipe holds 64 KiB: all but that much has been read, and the
    // chain is nearly as long as the reply so far.
    drop(first);
    let second = c.send(Cmd::new("PING"));
    take_commands(&mut peer).await;
    peer.write_all(b":2\r\n+PONG\r\n").await.unwrap();
    let got = tokio::time::timeout(LIMIT, second).await.expect("no hang");
    assert_eq!(got.unwrap(), Value::Simple("PONG".into()));
}
