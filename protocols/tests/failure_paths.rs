//! The three protocol clients on their failure paths, against scripted
//! in-memory peers: framing the RFCs require, replies that must not reach
//! the wrong request, and memory bounded by what a reply holds.

#[path = "support/counting.rs"]
mod counting;
mod support;

use std::time::Duration;

use anyframe::{ErrorKind, Handle};
use anyframe_protocols::http::{Http, Request};
use anyframe_protocols::memcached::{Command, Item, Memcached, Response as McResponse};
use anyframe_protocols::pipeline::Pipelined;
use anyframe_protocols::redis::{Cmd, Resp, Value};
use bytes::Bytes;
use counting::live;
use support::{LIMIT, MS, body, http_exchange, mc, pipe, pipe_rtimeout, take_commands};
use tokio::io::AsyncWriteExt;

// ----- a per-thread count of live heap bytes ------------------------------------

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

// ----- helpers ----------------------------------------------------------------------

// =====================================================================================
// Redis
// =====================================================================================

/// Nested arrays cut at every byte: the reply is written one byte at a
/// time, with a second request pipelined behind; both get their own value.
#[tokio::test]
async fn redis_nested_reply_cut_at_every_byte() {
    let wire: &[u8] = b"*3\r\n*2\r\n$3\r\nabc\r\n%1\r\n+k\r\n~1\r\n_\r\n|1\r\n+a\r\n+b\r\n=7\r\ntxt:x\r\n\r\n>2\r\n(12345678901234567890\r\n,-inf\r\n#f\r\n:7\r\n";
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Resp::new(), 16);
    let a = c.send(Cmd::new("X"));
    let b = c.send(Cmd::new("Y"));
    take_commands(&mut peer).await;
    for byte in wire {
        peer.write_all(&[*byte]).await.unwrap();
        tokio::task::yield_now().await;
    }
    let a = tokio::time::timeout(LIMIT, a).await.unwrap().unwrap();
    let b = tokio::time::timeout(LIMIT, b).await.unwrap().unwrap();
    assert_eq!(
        a,
        Value::Array(vec![
            Value::Array(vec![
                Value::Bulk("abc".into()),
                Value::Map(vec![(
                    Value::Simple("k".into()),
                    Value::Set(vec![Value::Nil])
                )]),
            ]),
            Value::Verbatim {
                format: "txt".into(),
                text: "x\r\n".into()
            },
            Value::Push(vec![
                Value::BigNumber("12345678901234567890".into()),
                Value::Double(f64::NEG_INFINITY)
            ]),
        ])
    );
    assert_eq!(b, Value::Boolean(false));
    // The `:7` already written after `#f` is the third request's reply.
    let c2 = c.send(Cmd::new("Z"));
    assert_eq!(
        tokio::time::timeout(LIMIT, c2).await.unwrap().unwrap(),
        Value::Integer(7)
    );
}

/// Nesting: 64 levels are read, 65 are a fatal EBADMSG.
#[tokio::test]
async fn redis_nesting_limit() {
    for (depth, ok) in [(64usize, true), (65, false)] {
        let (handle, mut peer) = pipe();
        let c = Pipelined::new(handle, Resp::new(), 16);
        let r = c.send(Cmd::new("X"));
        take_commands(&mut peer).await;
        let mut wire = b"*1\r\n".repeat(depth);
        wire.extend_from_slice(b":1\r\n");
        peer.write_all(&wire).await.unwrap();
        let got = tokio::time::timeout(LIMIT, r).await.unwrap();
        match got {
            Ok(_) => assert!(ok, "depth {depth} accepted"),
            Err(e) => {
                assert!(!ok, "depth {depth}: {e}");
                assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::BadMessage, true));
            }
        }
    }
}

/// RESP3 doubles `,inf`, `,-inf`, `,nan` (spec spellings) are read.
#[tokio::test]
async fn redis_resp3_special_doubles() {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Resp::new(), 16);
    let rs: Vec<_> = (0..3).map(|_| c.send(Cmd::new("X"))).collect();
    take_commands(&mut peer).await;
    peer.write_all(b",inf\r\n,-inf\r\n,nan\r\n").await.unwrap();
    let got: Vec<_> = tokio::time::timeout(LIMIT, futures::future::join_all(rs))
        .await
        .unwrap();
    let got: Vec<Value> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(got[0], Value::Double(f64::INFINITY));
    assert_eq!(got[1], Value::Double(f64::NEG_INFINITY));
    assert!(matches!(got[2], Value::Double(d) if d.is_nan()));
}

/// A reply timed out in the middle of a nested aggregate, then dropped:
/// the rest is read and dropped; the next request gets its own reply.
#[tokio::test(start_paused = true)]
async fn redis_timeout_inside_a_map_keeps_step() {
    let (handle, mut peer) = pipe_rtimeout(MS(300));
    let c = Pipelined::new(handle, Resp::new(), 16);
    let first = c.send(Cmd::new("HGETALL").arg("h"));
    let second = c.send(Cmd::new("GET").arg("k"));
    take_commands(&mut peer).await;
    peer.write_all(b"%2\r\n$1\r\na\r\n*2\r\n$3\r\nab")
        .await
        .unwrap();
    let e = tokio::time::timeout(LIMIT, first)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    peer.write_all(b"c\r\n:1\r\n+b\r\n|1\r\n+x\r\n+y\r\n:2\r\n$6\r\nsecond\r\n")
        .await
        .unwrap();
    let got = tokio::time::timeout(LIMIT, second).await.unwrap();
    assert_eq!(got.unwrap(), Value::Bulk("second".into()));
}

// =====================================================================================
// HTTP
// =====================================================================================

/// RFC 9112 §9.6: "A client that receives a "close" connection option MUST
/// cease sending requests on that connection and close the connection
/// after reading the response message containing the close connection
/// option". Whatever the peer writes after that response is not taken for
/// the next pipelined request's response: that request fails.
#[tokio::test]
async fn http_connection_close_ends_the_connection_after_its_response() {
    let got = http_exchange(
        vec![Request::get("/a"), Request::get("/b")],
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nfirst\
          HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nbogus!",
        false,
    )
    .await;
    assert_eq!(body(&got[0]), Some("first".into()), "{got:?}");
    assert!(
        got[1].is_err(),
        "after a `Connection: close` response the connection is done, but the second request got {:?}",
        got[1]
    );
}

/// An HTTP/1.0 response with `Connection: keep-alive` and a length keeps
/// the connection (RFC 9112 §9.3); one without `keep-alive` ends it.
#[tokio::test]
async fn http_1_0_keep_alive_keeps_the_connection_and_its_absence_ends_it() {
    let got = http_exchange(
        vec![Request::get("/a"), Request::get("/b")],
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\na\
          HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb",
        false,
    )
    .await;
    assert_eq!(body(&got[0]), Some("a".into()), "{got:?}");
    assert_eq!(body(&got[1]), Some("b".into()), "{got:?}");
    let got = http_exchange(
        vec![Request::get("/a"), Request::get("/b")],
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na\
          HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb",
        false,
    )
    .await;
    assert_eq!(body(&got[0]), Some("a".into()), "{got:?}");
    assert!(got[1].is_err(), "{got:?}");
}

/// `CONNECT` is refused before anything is written (`EINVAL`): its 2xx
/// answer would make the connection a tunnel from its empty line on (RFC
/// 9112 §6.3), which this client does not offer; the connection goes on.
#[tokio::test]
async fn http_connect_is_refused_and_the_connection_goes_on() {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Http::new("h"), 16);
    let e = tokio::time::timeout(LIMIT, c.send(Request::new("CONNECT", "example.com:443")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.is_fatal()),
        (ErrorKind::InvalidInput, false),
        "{e}"
    );
    let next = c.send(Request::get("/b"));
    let wrote = take_commands(&mut peer).await;
    assert!(
        wrote.starts_with(b"GET /b "),
        "{:?}",
        String::from_utf8_lossy(&wrote)
    );
    peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
        .await
        .unwrap();
    let got = tokio::time::timeout(LIMIT, next).await.unwrap();
    assert_eq!(body(&got), Some("b".into()), "{got:?}");
}

/// The client frames every request: `Content-Length` from the body (and
/// `0` for an empty `POST`, `PUT` or `PATCH`, RFC 9110 §8.6, none for an
/// empty `GET`); a request's own `Host` replaces the client's, once.
#[tokio::test]
async fn http_requests_carry_one_length_and_one_host() {
    for (req, head) in [
        (
            Request::new("POST", "/"),
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            Request::new("PUT", "/").body("abc"),
            "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
        ),
        (Request::get("/"), "GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        (
            Request::get("/").header("Host", "vhost").header("X-A", "1"),
            "GET / HTTP/1.1\r\nHost: vhost\r\nX-A: 1\r\n\r\n",
        ),
    ] {
        let (handle, mut peer) = pipe();
        let c = Pipelined::new(handle, Http::new("h"), 16);
        let reply = c.send(req);
        let wrote = take_commands(&mut peer).await;
        assert_eq!(String::from_utf8_lossy(&wrote), head);
        drop(reply);
    }
    let (handle, _peer) = pipe();
    let c = Pipelined::new(handle, Http::new("h"), 16);
    for req in [
        Request::get("/").header("Host", "a").header("host", "b"),
        Request::get("/").header("content-length", "0"),
    ] {
        let e = tokio::time::timeout(LIMIT, c.send(req))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
}

/// RFC 9112 §6.1: "A server or client that receives an HTTP/1.0 message
/// containing a Transfer-Encoding header field MUST treat the message as if
/// the framing is faulty, even if a Content-Length is present, and close
/// the connection after processing the message." The next pipelined
/// request fails instead of taking the bytes after it for its response.
#[tokio::test]
async fn http_1_0_response_with_transfer_encoding_ends_the_connection() {
    let got = http_exchange(
        vec![Request::get("/a"), Request::get("/b")],
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 10\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
        false,
    )
    .await;
    assert!(
        got[1].is_err(),
        "the connection must close after a faulty HTTP/1.0 + Transfer-Encoding message; second got {:?}",
        got[1]
    );
}

/// A chunked body holds its own bytes, not the read buffers they came in:
/// 2 000 one-byte chunks with 8 KiB of chunk extension each (a 2 000-byte
/// body on 16 MB of wire) keep well under 1 MiB alive.
#[tokio::test]
async fn http_tiny_chunks_with_extensions_hold_the_body_not_the_wire() {
    const CHUNKS: usize = 2000;
    const EXT: usize = 8 * 1024;
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Http::new("h"), 16);
    let reply = c.send(Request::get("/"));
    take_commands(&mut peer).await;
    let base = live();
    let writer = tokio::spawn(async move {
        peer.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let mut chunk = b"1;x=".to_vec();
        chunk.resize(4 + EXT, b'x');
        chunk.extend_from_slice(b"\r\nA\r\n");
        for _ in 0..CHUNKS {
            peer.write_all(&chunk).await.unwrap();
        }
        peer.write_all(b"0\r\n\r\n").await.unwrap();
        peer
    });
    let resp = tokio::time::timeout(Duration::from_secs(60), reply)
        .await
        .unwrap()
        .unwrap();
    let _peer = writer.await.unwrap();
    assert_eq!(resp.body_len(), CHUNKS);
    let held = live() - base;
    let wire = CHUNKS * (EXT + 9);
    assert!(
        held < 1024 * 1024,
        "a {}-byte chunked body (on {wire} bytes of wire) keeps {held} bytes alive",
        resp.body_len()
    );
}

/// HEAD, 204 and 304 have no body whatever their headers say; 1xx are
/// skipped with their headers; conflicting Content-Length is fatal;
/// agreeing duplicates are accepted.
#[tokio::test]
async fn http_bodyless_responses_and_content_length_lists() {
    let got = http_exchange(
        vec![
            Request::new("HEAD", "/"),
            Request::get("/"),
            Request::get("/"),
            Request::get("/"),
            Request::get("/"),
        ],
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n\
          HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\n\
          HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk",
        false,
    )
    .await;
    assert_eq!(got[0].as_ref().unwrap().body_len(), 0);
    assert_eq!(got[1].as_ref().unwrap().status, 204);
    let r = got[2].as_ref().unwrap();
    assert_eq!((r.status, r.informational.as_slice()), (304, &[100][..]));
    assert_eq!(body(&got[3]), Some("ok".into()));
    let e = got[4].as_ref().unwrap_err();
    assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::BadMessage, true));
}

/// Obsolete line folding is refused (fatal), in a header and in a trailer;
/// a header name with whitespace before the colon is refused.
#[tokio::test]
async fn http_obs_fold_and_space_before_colon_are_fatal() {
    for script in [
        &b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n\tb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n X-A: a\r\nContent-Length: 0\r\n\r\n",
    ] {
        let got = http_exchange(vec![Request::get("/"), Request::get("/")], script, false).await;
        let e = got[0].as_ref().unwrap_err();
        assert_eq!(
            (e.kind(), e.is_fatal()),
            (ErrorKind::BadMessage, true),
            "{e}"
        );
        assert!(got[1].is_err());
    }
}

/// A chunked response timed out between chunks and dropped: the rest of
/// it (chunks and trailers) is read and dropped; the next request gets its
/// own response.
#[tokio::test(start_paused = true)]
async fn http_timeout_between_chunks_keeps_step() {
    let (handle, mut peer) = pipe_rtimeout(MS(300));
    let c = Pipelined::new(handle, Http::new("h"), 16);
    let first = c.send(Request::get("/a"));
    let second = c.send(Request::get("/b"));
    take_commands(&mut peer).await;
    peer.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        .await
        .unwrap();
    let e = tokio::time::timeout(LIMIT, first)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    peer.write_all(
        b"lo\r\n3\r\nHTT\r\n0\r\nX-T: HTTP/1.1 200 OK\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(LIMIT, second).await.unwrap();
    assert_eq!(body(&got), Some("second".into()), "{got:?}");
}

// =====================================================================================
// memcached
// =====================================================================================

fn item(key: &str, data: &[u8]) -> Item {
    Item {
        key: Bytes::copy_from_slice(key.as_bytes()),
        flags: 0,
        cas: None,
        data: Bytes::copy_from_slice(data),
    }
}

/// A multi-get whose values contain `\r\nEND\r\n` and `VALUE` lines,
/// cut at every byte, with a pipelined `set` behind it.
#[tokio::test]
async fn memcached_values_that_look_like_replies() {
    let (c, mut peer) = mc();
    let keys: Vec<Bytes> = ["a", "b", "c"].iter().map(|k| Bytes::from(*k)).collect();
    let get = c.send(Command::Get(keys));
    let set = c.send(Command::set("k", "v"));
    take_commands(&mut peer).await;
    let wire = b"VALUE a 0 7\r\n\r\nEND\r\n\r\nVALUE b 0 19\r\nVALUE c 0 1\r\nx\r\nEND\r\nEND\r\nSTORED\r\n";
    for byte in wire {
        peer.write_all(&[*byte]).await.unwrap();
        tokio::task::yield_now().await;
    }
    let get = tokio::time::timeout(LIMIT, get).await.unwrap().unwrap();
    assert_eq!(
        get,
        McResponse::Values(vec![
            item("a", b"\r\nEND\r\n"),
            item("b", b"VALUE c 0 1\r\nx\r\nEND"),
        ])
    );
    assert_eq!(
        tokio::time::timeout(LIMIT, set).await.unwrap().unwrap(),
        McResponse::Stored
    );
}

/// A multi-get timed out inside a value and dropped: the rest of its
/// values and its END are read and dropped; the next request gets its own.
#[tokio::test(start_paused = true)]
async fn memcached_timeout_inside_a_multi_get_keeps_step() {
    let (handle, mut peer) = pipe_rtimeout(MS(300));
    let c = Pipelined::new(handle, Memcached, 16);
    let first = c.send(Command::Get(vec!["a".into(), "b".into()]));
    let second = c.send(Command::get("c"));
    take_commands(&mut peer).await;
    peer.write_all(b"VALUE a 0 5\r\nEN").await.unwrap();
    let e = tokio::time::timeout(LIMIT, first)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    peer.write_all(b"D\r\n\r\nVALUE b 0 3\r\nEND\r\nEND\r\nVALUE c 0 1\r\nz\r\nEND\r\n")
        .await
        .unwrap();
    let got = tokio::time::timeout(LIMIT, second).await.unwrap().unwrap();
    assert_eq!(got, McResponse::Values(vec![item("c", b"z")]));
}

/// A `get` whose second key is refused (a space in it) leaves nothing in
/// the write queue: the next request is the only thing on the wire.
#[tokio::test]
async fn memcached_refused_key_leaves_no_partial_command() {
    let (c, mut peer) = mc();
    let bad = c.send(Command::Get(vec!["good".into(), "bad key".into()]));
    let e = bad.await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let ok = c.send(Command::Delete("k".into()));
    let wrote = take_commands(&mut peer).await;
    assert_eq!(String::from_utf8_lossy(&wrote), "delete k\r\n");
    peer.write_all(b"DELETED\r\n").await.unwrap();
    assert_eq!(
        tokio::time::timeout(LIMIT, ok).await.unwrap().unwrap(),
        McResponse::Deleted
    );
}

/// Values come for the keys asked for, in that order, each once per time
/// it was asked: a key asked twice may come twice; keys out of order, or a
/// value in the reply to a command that is not a `get`, are fatal.
#[tokio::test]
async fn memcached_values_follow_the_keys_asked_for() {
    let (c, mut peer) = mc();
    let twice = c.send(Command::Get(vec!["a".into(), "b".into(), "a".into()]));
    take_commands(&mut peer).await;
    peer.write_all(b"VALUE a 0 1\r\n1\r\nVALUE a 0 1\r\n2\r\nEND\r\n")
        .await
        .unwrap();
    match tokio::time::timeout(LIMIT, twice).await.unwrap() {
        Ok(McResponse::Values(items)) => assert_eq!(items.len(), 2),
        other => panic!("{other:?}"),
    }
    for (cmd, wire) in [
        (
            Command::Get(vec!["a".into(), "b".into()]),
            &b"VALUE b 0 1\r\n1\r\nVALUE a 0 1\r\n2\r\nEND\r\n"[..],
        ),
        (
            Command::Delete("a".into()),
            &b"VALUE a 0 1\r\n1\r\nEND\r\n"[..],
        ),
    ] {
        let (c, mut peer) = mc();
        let r = c.send(cmd);
        take_commands(&mut peer).await;
        peer.write_all(wire).await.unwrap();
        let e = tokio::time::timeout(LIMIT, r).await.unwrap().unwrap_err();
        assert_eq!(
            (e.kind(), e.is_fatal()),
            (ErrorKind::BadMessage, true),
            "{e:?}"
        );
    }
}

/// A `get` of one key answered with 1 000 `VALUE` lines for it: memcached
/// answers each key asked for at most once, so the reply is refused
/// rather than grown without bound.
#[tokio::test]
async fn memcached_values_are_only_those_asked_for() {
    let (c, mut peer) = mc();
    let get = c.send(Command::get("a"));
    take_commands(&mut peer).await;
    let mut wire = b"VALUE a 0 3\r\nabc\r\n".repeat(1000);
    wire.extend_from_slice(b"END\r\n");
    peer.write_all(&wire).await.unwrap();
    let e = tokio::time::timeout(LIMIT, get).await.unwrap().unwrap_err();
    assert_eq!(
        (e.kind(), e.is_fatal()),
        (ErrorKind::BadMessage, true),
        "{e}"
    );
}

// =====================================================================================
// More HTTP
// =====================================================================================

/// RFC 9112 §6.2: "A sender MUST NOT send a Content-Length header field in
/// any message that contains a Transfer-Encoding header field". A caller's
/// `Transfer-Encoding` beside the body's `Content-Length` would frame the
/// request two ways (a server framing by the caller's field would read a
/// second request in the body): such a request is refused, nothing is
/// written.
#[tokio::test]
async fn http_request_framing_fields_are_the_clients_own() {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Http::new("h"), 16);
    let r = c.send(
        Request::new("POST", "/")
            .header("Transfer-Encoding", "chunked")
            .body("0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"),
    );
    let wrote = take_commands(&mut peer).await;
    let r = tokio::time::timeout(LIMIT, r).await.unwrap();
    assert_eq!(r.map(|_| ()).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert!(wrote.is_empty(), "{:?}", String::from_utf8_lossy(&wrote));
}

/// RFC 9110 §5.5: "a recipient of CR, LF, or NUL within a field value MUST
/// either reject the message or replace each of those characters with SP".
/// A bare CR and a NUL inside a response field value: rejected.
#[tokio::test]
async fn http_cr_and_nul_in_a_field_value_are_refused() {
    let got = http_exchange(
        vec![Request::get("/")],
        b"HTTP/1.1 200 OK\r\nX-A: a\rb\0c\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .await;
    let e = got[0].as_ref().map(|r| r.header("x-a").map(<[u8]>::to_vec));
    assert!(e.is_err(), "field value kept with CR/NUL: {e:?}");
}

// =====================================================================================
// Hostile lengths: nothing is reserved for what has not arrived
// =====================================================================================

/// Each hostile announced length (HTTP Content-Length and chunk size at
/// MAX_BODY, a memcached value at MAX_VALUE_LEN, a Redis bulk at
/// MAX_BULK_LEN, Redis aggregates of i64::MAX elements nested 64 deep)
/// followed by a few bytes: the client's live heap grows by a few MiB at
/// most.
#[tokio::test]
async fn hostile_lengths_reserve_little() {
    async fn grows(send: impl FnOnce(&Handle) -> Box<dyn std::any::Any>, wire: Vec<u8>) -> isize {
        let (handle, mut peer) = pipe();
        let keep = send(&handle);
        take_commands(&mut peer).await;
        let base = live();
        peer.write_all(&wire).await.unwrap();
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        let grown = live() - base;
        drop(keep);
        drop(peer);
        grown
    }
    let http = |h: &Handle| -> Box<dyn std::any::Any> {
        let c = Pipelined::new(h.clone(), Http::new("h"), 16);
        Box::new((c.send(Request::get("/")), c))
    };
    let mcd = |h: &Handle| -> Box<dyn std::any::Any> {
        let c = Pipelined::new(h.clone(), Memcached, 16);
        Box::new((c.send(Command::get("a")), c))
    };
    let redis = |h: &Handle| -> Box<dyn std::any::Any> {
        let c = Pipelined::new(h.clone(), Resp::new(), 16);
        Box::new((c.send(Cmd::new("GET")), c))
    };
    let cases: Vec<(&str, isize)> = vec![
        (
            "http content-length",
            grows(
                http,
                b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\nabc".to_vec(),
            )
            .await,
        ),
        (
            "http chunk",
            grows(
                http,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40000000\r\nabc".to_vec(),
            )
            .await,
        ),
        (
            "memcached value",
            grows(mcd, b"VALUE a 0 1073741824\r\nabc".to_vec()).await,
        ),
        (
            "redis bulk",
            grows(redis, b"$536870912\r\nabc".to_vec()).await,
        ),
        (
            "redis aggregates",
            grows(
                redis,
                b"*9223372036854775807\r\n"
                    .repeat(63)
                    .into_iter()
                    .chain(b"%4611686018427387903\r\n".iter().copied())
                    .collect(),
            )
            .await,
        ),
    ];
    for (what, grown) in cases {
        eprintln!("{what}: live heap grew {grown} bytes");
        assert!(grown < 8 * 1024 * 1024, "{what}: {grown} bytes");
    }
}

// =====================================================================================
// Memory: a reply holds its own bytes, not the read buffers they came in
// =====================================================================================

/// An array of 2 000 one-byte bulk strings, each arriving in its own read
/// (the server writes them one at a time, as a slow or hostile server
/// does): the 2 000-byte reply must not keep a read buffer per element
/// alive (the HTTP client gathers small chunks for exactly this reason;
/// the `redis` crate copies each bulk).
#[tokio::test(flavor = "current_thread")]
async fn redis_small_bulks_hold_their_bytes_not_the_read_buffers() {
    const N: usize = 2000;
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Resp::new(), 16);
    let reply = c.send(Cmd::new("LRANGE").arg("l").arg("0").arg("-1"));
    take_commands(&mut peer).await;
    let base = live();
    peer.write_all(format!("*{N}\r\n").as_bytes())
        .await
        .unwrap();
    for _ in 0..N {
        peer.write_all(b"$1\r\nx\r\n").await.unwrap();
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }
    let v = tokio::time::timeout(LIMIT, reply).await.unwrap().unwrap();
    assert_eq!(v.as_slice().map(<[Value]>::len), Some(N));
    let held = live() - base;
    assert!(
        held < 1024 * 1024,
        "a reply of {N} one-byte bulk strings keeps {held} bytes alive"
    );
}

/// RESP3 attributes are skipped, but the element read right after one
/// shares its read buffer: an array of 200 one-byte bulks, each preceded
/// by an attribute carrying 64 KiB, must not keep the 13 MB of skipped
/// attribute bytes alive.
#[tokio::test(flavor = "current_thread")]
async fn redis_skipped_attributes_are_not_held_by_the_reply() {
    const N: usize = 200;
    const PAD: usize = 64 * 1024;
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Resp::new(), 16);
    let reply = c.send(Cmd::new("X"));
    take_commands(&mut peer).await;
    let base = live();
    let writer = tokio::spawn(async move {
        peer.write_all(format!("*{N}\r\n").as_bytes())
            .await
            .unwrap();
        let mut element = format!("|1\r\n+a\r\n${PAD}\r\n").into_bytes();
        element.resize(element.len() + PAD, b'p');
        element.extend_from_slice(b"\r\n$1\r\nx\r\n");
        for _ in 0..N {
            peer.write_all(&element).await.unwrap();
        }
        peer
    });
    let v = tokio::time::timeout(LIMIT, reply).await.unwrap().unwrap();
    let _peer = writer.await.unwrap();
    assert_eq!(v.as_slice().map(<[Value]>::len), Some(N));
    let held = live() - base;
    assert!(
        held < 1024 * 1024,
        "a reply of {N} one-byte bulk strings (skipped attributes of {PAD} bytes each) keeps {held} bytes alive"
    );
}

/// A multi-get of 1 000 keys whose one-byte values arrive one per read:
/// the reply must not keep a read buffer per value alive.
#[tokio::test(flavor = "current_thread")]
async fn memcached_small_values_hold_their_bytes_not_the_read_buffers() {
    const N: usize = 1000;
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Memcached, 16);
    let keys: Vec<Bytes> = (0..N).map(|i| Bytes::from(format!("k{i}"))).collect();
    let reply = c.send(Command::Get(keys));
    take_commands(&mut peer).await;
    let base = live();
    for i in 0..N {
        peer.write_all(format!("VALUE k{i} 0 1\r\nx\r\n").as_bytes())
            .await
            .unwrap();
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }
    peer.write_all(b"END\r\n").await.unwrap();
    let McResponse::Values(items) = tokio::time::timeout(LIMIT, reply).await.unwrap().unwrap()
    else {
        panic!("not values")
    };
    assert_eq!(items.len(), N);
    let held = live() - base;
    assert!(
        held < 1024 * 1024,
        "a multi-get of {N} one-byte values keeps {held} bytes alive"
    );
}

/// 120 header lines, each arriving in its own read: the response must not
/// keep a read buffer per header line alive.
#[tokio::test(flavor = "current_thread")]
async fn http_headers_hold_their_bytes_not_the_read_buffers() {
    const N: usize = 120;
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Http::new("h"), 16);
    let reply = c.send(Request::get("/"));
    take_commands(&mut peer).await;
    let base = live();
    peer.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
    for i in 0..N {
        peer.write_all(format!("X-{i}: v\r\n").as_bytes())
            .await
            .unwrap();
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }
    peer.write_all(b"Content-Length: 0\r\n\r\n").await.unwrap();
    let resp = tokio::time::timeout(LIMIT, reply).await.unwrap().unwrap();
    assert_eq!(resp.headers.len(), N + 1);
    let held = live() - base;
    assert!(
        held < 256 * 1024,
        "a response with {N} short header lines keeps {held} bytes alive"
    );
}

// =====================================================================================
// Replies reach only their own request
// =====================================================================================

/// A RESP3 push (a client-side caching invalidation) ahead of a reply, on
/// a client with no push channel: it is not that command's reply (which
/// would shift every later reply by one); it is dropped, as the `redis`
/// crate drops it.
#[tokio::test]
async fn redis_push_on_a_client_without_a_push_channel_is_not_a_reply() {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Resp::new(), 16);
    let a = c.send(Cmd::new("GET").arg("k"));
    let b = c.send(Cmd::new("GET").arg("j"));
    take_commands(&mut peer).await;
    peer.write_all(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n$1\r\na\r\n$1\r\nb\r\n")
        .await
        .unwrap();
    let (a, b) = tokio::time::timeout(LIMIT, futures::future::join(a, b))
        .await
        .unwrap();
    assert_eq!(a.unwrap(), Value::Bulk("a".into()));
    assert_eq!(b.unwrap(), Value::Bulk("b".into()));
}

/// Pub/sub commands, `MONITOR`, `SYNC` and `PSYNC` turn a Redis
/// connection into a stream that answers no command: the request/reply
/// client refuses them (non-fatal, nothing written) and the connection
/// stays in step.
#[tokio::test]
async fn redis_client_refuses_commands_that_leave_request_reply() {
    let (handle, mut peer) = pipe();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    for c in [
        Pipelined::new(handle.clone(), Resp::new(), 16),
        Pipelined::new(handle, Resp::with_pushes(tx), 16),
    ] {
        for name in [
            "SUBSCRIBE",
            "psubscribe",
            "SSUBSCRIBE",
            "UNSUBSCRIBE",
            "PUNSUBSCRIBE",
            "SUNSUBSCRIBE",
            "MONITOR",
            "SYNC",
            "psync",
        ] {
            let sent = tokio::time::timeout(LIMIT, c.send(Cmd::new(name).arg("ch")));
            let e = sent.await.expect("hung").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
            assert!(!e.is_fatal(), "{name}: {e}");
        }
        let off = c.send(Cmd::new("client").arg("Reply").arg("OFF"));
        let e = tokio::time::timeout(LIMIT, off).await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "CLIENT REPLY: {e}");
        // Other CLIENT commands, and commands whose arguments look like
        // those names, go out.
        let fine = c.send(Cmd::new("CLIENT").arg("ID"));
        let echo = c.send(Cmd::new("ECHO").arg("SUBSCRIBE"));
        peer.write_all(b":7\r\n$9\r\nSUBSCRIBE\r\n").await.unwrap();
        assert_eq!(
            tokio::time::timeout(LIMIT, fine).await.unwrap().unwrap(),
            Value::Integer(7)
        );
        assert_eq!(
            tokio::time::timeout(LIMIT, echo).await.unwrap().unwrap(),
            Value::Bulk("SUBSCRIBE".into())
        );
        take_commands(&mut peer).await;
        let ping = c.send(Cmd::new("PING"));
        assert_eq!(take_commands(&mut peer).await, b"*1\r\n$4\r\nPING\r\n");
        peer.write_all(b"+PONG\r\n").await.unwrap();
        let ping = tokio::time::timeout(LIMIT, ping).await.unwrap();
        assert_eq!(ping.unwrap(), Value::Simple("PONG".into()));
    }
}

/// Each memcached command has its own set of answers: an `END` (the end
/// of a value list) in answer to `set`, or `STORED` in answer to `get`,
/// means the two sides are out of step, a fatal protocol error, not a
/// reply.
#[tokio::test]
async fn memcached_answer_of_another_command_kind_is_fatal() {
    for (cmd, answer) in [
        (Command::set("k", "v"), &b"END\r\n"[..]),
        (Command::get("k"), b"STORED\r\n"),
        (Command::get("k"), b"DELETED\r\n"),
        (Command::Delete("k".into()), b"STORED\r\n"),
        (Command::Delete("k".into()), b"END\r\n"),
        (Command::Incr("k".into(), 1), b"DELETED\r\n"),
        (Command::set("k", "v"), b"7\r\n"),
        (Command::Delete("k".into()), b"VALUE k 0 1\r\nx\r\nEND\r\n"),
    ] {
        let (c, mut peer) = mc();
        let got = c.send(cmd.clone());
        let next = c.send(Command::get("j"));
        take_commands(&mut peer).await;
        peer.write_all(answer).await.unwrap();
        peer.write_all(b"END\r\n").await.unwrap();
        let got = tokio::time::timeout(LIMIT, got).await.unwrap();
        let e = got.expect_err(&format!("{cmd:?} answered {answer:?}"));
        assert_eq!(e.kind(), ErrorKind::BadMessage, "{cmd:?}: {e}");
        assert!(e.is_fatal());
        assert!(tokio::time::timeout(LIMIT, next).await.unwrap().is_err());
    }
}

/// Every answer each command may get is still its reply.
#[tokio::test]
async fn memcached_each_command_takes_each_of_its_answers() {
    for (cmd, answer, want) in [
        (
            Command::set("k", "v"),
            &b"STORED\r\n"[..],
            McResponse::Stored,
        ),
        (
            Command::set("k", "v"),
            b"NOT_STORED\r\n",
            McResponse::NotStored,
        ),
        (Command::Cas(store(), 3), b"EXISTS\r\n", McResponse::Exists),
        (
            Command::Cas(store(), 3),
            b"NOT_FOUND\r\n",
            McResponse::NotFound,
        ),
        (Command::get("k"), b"END\r\n", McResponse::Values(vec![])),
        (
            Command::Delete("k".into()),
            b"DELETED\r\n",
            McResponse::Deleted,
        ),
        (
            Command::Delete("k".into()),
            b"NOT_FOUND\r\n",
            McResponse::NotFound,
        ),
        (
            Command::Incr("k".into(), 1),
            b"8\r\n",
            McResponse::Number(8),
        ),
        (
            Command::Incr("k".into(), 1),
            b"NOT_FOUND\r\n",
            McResponse::NotFound,
        ),
        (Command::get("k"), b"ERROR\r\n", McResponse::Error),
        (
            Command::set("k", "v"),
            b"SERVER_ERROR out of memory\r\n",
            McResponse::ServerError("out of memory".into()),
        ),
        (
            Command::Incr("k".into(), 1),
            b"CLIENT_ERROR bad\r\n",
            McResponse::ClientError("bad".into()),
        ),
    ] {
        let (c, mut peer) = mc();
        let got = c.send(cmd.clone());
        take_commands(&mut peer).await;
        peer.write_all(answer).await.unwrap();
        let got = tokio::time::timeout(LIMIT, got).await.unwrap();
        assert_eq!(got.unwrap(), want, "{cmd:?}");
    }
}

fn store() -> anyframe_protocols::memcached::Store {
    anyframe_protocols::memcached::Store {
        key: "k".into(),
        flags: 0,
        exptime: 0,
        data: "v".into(),
    }
}
