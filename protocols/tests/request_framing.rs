//! The HTTP client's request framing (CONNECT, Host, Content-Length,
//! `Connection: close`, field values), responses that end the connection,
//! chunk gathering and its memory, `Http::max_body`; memcached's `VALUE`s
//! only for the keys asked.

#[path = "support/counting.rs"]
mod counting;
mod support;

use std::time::Duration;

use anyframe::ErrorKind;
use anyframe_protocols::http::{Http, Request, Response};
use anyframe_protocols::memcached::{Command, Item, Response as McResponse};
use anyframe_protocols::pipeline::Pipelined;
use bytes::Bytes;
use counting::live;
use support::{LIMIT, http_exchange, mc, pipe, take_commands};
use tokio::io::AsyncWriteExt;

// ----- a per-thread count of live heap bytes ------------------------------------

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

// ----- helpers ------------------------------------------------------------------------

/// What the client writes for `req` (nothing if it refuses it), and the
/// refusal's kind.
async fn written(req: Request) -> (String, Option<ErrorKind>) {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Http::new("h"), 16);
    let reply = c.send(req);
    let wrote = take_commands(&mut peer).await;
    let refused = match tokio::time::timeout(Duration::from_millis(50), reply).await {
        Ok(Err(e)) => Some(e.kind()),
        _ => None,
    };
    (String::from_utf8_lossy(&wrote).into_owned(), refused)
}

fn kinds(got: &[anyframe::Result<Response>]) -> Vec<Result<u16, ErrorKind>> {
    got.iter()
        .map(|r| r.as_ref().map(|r| r.status).map_err(|e| e.kind()))
        .collect()
}

/// A chunked body holds at most about three times its size once its
/// connection is gone, whether its large chunks are kept (64 KiB, zero-copy)
/// or copied (4 KiB): each is followed by eight 1-byte chunks carrying
/// 16,000 bytes of chunk extension, which fill the read buffers a kept
/// chunk holds on to.
#[tokio::test]
async fn http_a_chunked_body_holds_about_its_size_whatever_its_chunks() {
    for kept in [4096usize, 65_536] {
        let (body, pieces, held) = chunked_body_memory(kept).await;
        assert!(
            held <= 3 * body,
            "chunks of {kept}: a {body}-byte body ({pieces} pieces) keeps {held} bytes alive: \
             {:.1} times its size",
            held as f64 / body as f64
        );
    }
}

/// The bytes a response of 32 units (a `kept`-byte chunk, then eight
/// 1-byte chunks with long extensions) keeps alive once its connection
/// is gone: (body length, pieces, bytes held).
async fn chunked_body_memory(kept: usize) -> (usize, usize, usize) {
    const UNITS: usize = 32;
    const SMALL: usize = 8;
    const EXT: usize = 16_000;
    let base = live();
    let resp = {
        let (handle, mut peer) = pipe();
        let c = Pipelined::new(handle, Http::new("h"), 16);
        let reply = c.send(Request::get("/"));
        take_commands(&mut peer).await;
        let writer = tokio::spawn(async move {
            peer.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            let mut unit = format!("{kept:x}\r\n").into_bytes();
            unit.resize(unit.len() + kept, b'K');
            unit.extend_from_slice(b"\r\n");
            for _ in 0..SMALL {
                unit.extend_from_slice(b"1;x=");
                unit.resize(unit.len() + EXT, b'x');
                unit.extend_from_slice(b"\r\ns\r\n");
            }
            for _ in 0..UNITS {
                peer.write_all(&unit).await.unwrap();
            }
            peer.write_all(b"0\r\n\r\n").await.unwrap();
            peer
        });
        let resp = tokio::time::timeout(Duration::from_secs(60), reply)
            .await
            .unwrap()
            .unwrap();
        let peer = writer.await.unwrap();
        drop((c, peer));
        // Let the driver see the end and drop the connection's buffers.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        resp
    };
    let body = resp.body_len();
    assert_eq!(body, UNITS * (kept + SMALL));
    let pieces = resp.body.len();
    let with_resp = live() - base;
    drop(resp);
    // What the response alone held: the rest (runtime, test) stays.
    let held = with_resp - (live() - base);
    (body, pieces, held as usize)
}

/// RFC 9112 §9.6: "A client that sends a "close" connection option MUST
/// NOT send further requests on that connection": a request pipelined
/// behind one with `Connection: close` is refused (`Closed`), not written.
#[tokio::test]
async fn http_no_request_is_written_after_one_that_says_connection_close() {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Http::new("h"), 16);
    let a = c.send(Request::get("/a").header("Connection", "close"));
    let b = c.send(Request::get("/b"));
    let wrote = String::from_utf8_lossy(&take_commands(&mut peer).await).into_owned();
    drop((a, b));
    assert!(
        !wrote.contains("GET /b"),
        "a request went out after one carrying `Connection: close`: {wrote:?}"
    );
}

/// RFC 9110 §5.5: field values are visible characters, spaces and tabs;
/// a NUL in a request's own `Host` (which replaces the client's) is
/// refused, nothing written.
#[tokio::test]
async fn http_a_nul_in_a_request_field_value_is_refused() {
    let (wrote, refused) = written(Request::get("/").header("Host", "a\0b.example")).await;
    assert!(
        refused == Some(ErrorKind::InvalidInput) && wrote.is_empty(),
        "refused: {refused:?}; wrote {wrote:?}"
    );
}

/// `Content-Length: 0` for an empty `POST`/`PUT`/`PATCH`
/// only (case-sensitive methods: `post` is another method, RFC 9110 §9.1);
/// a body on any method (GET, OPTIONS, DELETE) carries its length; an
/// empty OPTIONS or DELETE none.
#[tokio::test]
async fn content_length_by_method_and_body() {
    for (req, head) in [
        (
            Request::new("PATCH", "/"),
            "PATCH / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            Request::new("post", "/"),
            "post / HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        (
            Request::new("OPTIONS", "*").body("x"),
            "OPTIONS * HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx",
        ),
        (
            Request::new("DELETE", "/k"),
            "DELETE /k HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        (
            Request::get("/").body("yz"),
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nyz",
        ),
    ] {
        let (wrote, refused) = written(req).await;
        assert_eq!((wrote.as_str(), refused), (head, None));
    }
}

/// a request's `Host` (any case) replaces the client's, in
/// first place; two (`Host` and `HOST`) are refused with nothing written;
/// `CONNECT` is refused, nothing written; `connect` (another method) goes.
#[tokio::test]
async fn host_replacement_and_connect() {
    let (wrote, refused) = written(Request::get("/").header("X-A", "1").header("HOST", "v")).await;
    assert_eq!(
        (wrote.as_str(), refused),
        ("GET / HTTP/1.1\r\nHost: v\r\nX-A: 1\r\n\r\n", None)
    );
    let (wrote, refused) = written(Request::get("/").header("Host", "v").header("HOST", "v")).await;
    assert_eq!(
        (wrote.as_str(), refused),
        ("", Some(ErrorKind::InvalidInput))
    );
    let (wrote, refused) = written(Request::new("CONNECT", "x:443").header("Host", "x:443")).await;
    assert_eq!(
        (wrote.as_str(), refused),
        ("", Some(ErrorKind::InvalidInput))
    );
    let (wrote, refused) = written(Request::new("connect", "x:443")).await;
    assert_eq!(
        (wrote.as_str(), refused),
        ("connect x:443 HTTP/1.1\r\nHost: h\r\n\r\n", None)
    );
}

/// Chunks under 64 KiB are gathered into one piece between
/// the kept ones (64 KiB and more), in order; the body is intact.
#[tokio::test]
async fn gather_boundary_and_piece_order() {
    let sizes = [1usize, 65_535, 65_536, 3, 4, 70_000, 65_535];
    let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut expect = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        let data = vec![b'a' + i as u8; n];
        wire.extend_from_slice(&data);
        wire.extend_from_slice(b"\r\n");
        expect.extend_from_slice(&data);
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let got = http_exchange(vec![Request::get("/")], &wire, false).await;
    let r = got[0].as_ref().unwrap();
    let pieces: Vec<usize> = r.body.iter().map(Bytes::len).collect();
    assert_eq!(pieces, [1 + 65_535, 65_536, 3 + 4, 70_000, 65_535]);
    assert_eq!(r.body_bytes(), Bytes::from(expect));
}

/// `Http::max_body` is inclusive, for a `Content-Length`
/// and for chunks (gathered ones count); one byte over is a fatal `ENOSPC`.
#[tokio::test]
async fn max_body_boundaries() {
    for (script, ok) in [
        (&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"[..], true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a", false),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n6\r\n56789a\r\n0\r\n\r\n",
            false,
        ),
    ] {
        let (handle, mut peer) = pipe();
        let c = Pipelined::new(handle, Http::new("h").max_body(10), 16);
        let reply = c.send(Request::get("/"));
        take_commands(&mut peer).await;
        peer.write_all(script).await.unwrap();
        let got = tokio::time::timeout(LIMIT, reply).await.unwrap();
        if ok {
            assert_eq!(got.unwrap().body_len(), 10);
        } else {
            let e = got.unwrap_err();
            assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::NoSpace, true), "{e}");
        }
    }
}

/// responses that end the connection (`Connection: close`
/// among other options, HTTP/1.0 without keep-alive, HTTP/1.0 keep-alive
/// with a Transfer-Encoding, a `101`) keep their own answer and fail the
/// pipelined request behind with `Closed`; HTTP/1.0 keep-alive goes on.
#[tokio::test]
async fn responses_that_end_the_connection() {
    let tail = &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz"[..];
    for (head, ends) in [
        (&b"HTTP/1.1 200 OK\r\nConnection: keep-alive , CLOSE\r\nContent-Length: 1\r\n\r\na"[..], true),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na", true),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
            true,
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", true),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\na", false),
    ] {
        let script = [head, tail].concat();
        let got = http_exchange(vec![Request::get("/a"), Request::get("/b")], &script, false).await;
        let k = kinds(&got);
        assert!(k[0].is_ok(), "{:?}: {k:?}", String::from_utf8_lossy(head));
        if ends {
            assert_eq!(k[1], Err(ErrorKind::Closed), "{:?}", String::from_utf8_lossy(head));
        } else {
            assert_eq!(k[1], Ok(200), "{:?}", String::from_utf8_lossy(head));
        }
    }
}

// =====================================================================================
// memcached
// =====================================================================================

async fn mc_reply(cmd: Command, wire: &[u8]) -> anyframe::Result<McResponse> {
    let (c, mut peer) = mc();
    let reply = c.send(cmd);
    take_commands(&mut peer).await;
    peer.write_all(wire).await.unwrap();
    tokio::time::timeout(LIMIT, reply).await.unwrap()
}

fn keys(ks: &[&str]) -> Vec<Bytes> {
    ks.iter()
        .map(|k| Bytes::copy_from_slice(k.as_bytes()))
        .collect()
}

/// keys that are prefixes of each other, a subset answered
/// (the first and last missing), `gets` with cas uniques, and a key asked
/// twice answered twice (as memcached does).
#[tokio::test]
async fn memcached_prefix_keys_subsets_and_cas() {
    let got = mc_reply(
        Command::Gets(keys(&["a", "ab", "abc", "abcd"])),
        b"VALUE ab 1 1 7\r\nx\r\nVALUE abc 2 2 8\r\nyy\r\nEND\r\n",
    )
    .await
    .unwrap();
    assert_eq!(
        got,
        McResponse::Values(vec![
            Item {
                key: "ab".into(),
                flags: 1,
                cas: Some(7),
                data: "x".into()
            },
            Item {
                key: "abc".into(),
                flags: 2,
                cas: Some(8),
                data: "yy".into()
            },
        ])
    );
    let got = mc_reply(
        Command::Get(keys(&["k", "k"])),
        b"VALUE k 0 1\r\nv\r\nVALUE k 0 1\r\nv\r\nEND\r\n",
    )
    .await
    .unwrap();
    assert!(
        matches!(&got, McResponse::Values(v) if v.len() == 2),
        "{got:?}"
    );
}

/// a `VALUE` for a prefix of the key asked, for a key
/// extending it, out of order, or a key answered more often than asked is
/// a fatal `EBADMSG`.
#[tokio::test]
async fn memcached_values_not_asked_for() {
    for (ks, wire) in [
        (&["abc"][..], &b"VALUE ab 0 1\r\nx\r\nEND\r\n"[..]),
        (&["ab"], b"VALUE abc 0 1\r\nx\r\nEND\r\n"),
        (
            &["a", "b"],
            b"VALUE b 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
        ),
        (
            &["a", "b"],
            b"VALUE a 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
        ),
    ] {
        let e = mc_reply(Command::Get(keys(ks)), wire).await.unwrap_err();
        assert_eq!(
            (e.kind(), e.is_fatal()),
            (ErrorKind::BadMessage, true),
            "{ks:?}: {e}"
        );
    }
}
