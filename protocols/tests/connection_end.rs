//! The HTTP client's responses that end the connection, its chunk
//! gathering and body limit, and memcached's key matching, against
//! scripted peers that write whole or in small pieces.

mod support;

use anyframe::ErrorKind;
use anyframe_protocols::http::{Http, Request, Response};
use anyframe_protocols::memcached::{Command, Response as McResponse};
use anyframe_protocols::pipeline::Pipelined;
use bytes::Bytes;
use support::{LIMIT, MS, body, mc, pipe, pipe_rtimeout, take_commands};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Pipelined requests; the peer answers `script` (at `cut`-byte pieces,
/// 0 = all at once) and then closes if `close`.
async fn exchange(
    requests: Vec<Request>,
    script: &[u8],
    cut: usize,
    close: bool,
) -> Vec<anyframe::Result<Response>> {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Http::new("h"), 16);
    let replies: Vec<_> = requests.into_iter().map(|r| c.send(r)).collect();
    take_commands(&mut peer).await;
    let script = script.to_vec();
    // Written by a task: the client may close before taking it all.
    let writer = tokio::spawn(async move {
        if cut == 0 {
            let _ = peer.write_all(&script).await;
        } else {
            for piece in script.chunks(cut) {
                if peer.write_all(piece).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        if close { None } else { Some(peer) }
    });
    let got = tokio::time::timeout(LIMIT, futures::future::join_all(replies))
        .await
        .expect("a reply never resolved");
    drop(writer.await);
    got
}

/// RFC 9110 §15.2.2 / §7.8: after a `101 Switching Protocols` the
/// connection speaks the new protocol "immediately after the empty line
/// that terminates the 101 response". The client ends a 101 at its header
/// and closes: a request pipelined behind the
/// upgrade fails rather than read the new protocol's bytes as HTTP.
#[tokio::test]
async fn http_101_switching_protocols_ends_http_on_the_connection() {
    let got = exchange(
        vec![
            Request::get("/chat")
                .header("Connection", "Upgrade")
                .header("Upgrade", "x-proto"),
            Request::get("/b"),
        ],
        // The bytes after the 101 are the new protocol's; they happen to
        // look like an HTTP response.
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x-proto\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nupgraded",
        0,
        false,
    )
    .await;
    assert_eq!(got[0].as_ref().map(|r| r.status).ok(), Some(101), "{got:?}");
    assert!(
        got[1]
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::Closed),
        "the request pipelined behind a 101 took the upgraded protocol's bytes for its response: {:?}",
        got[1].as_ref().map(|r| (r.status, r.body_bytes()))
    );
}

/// `max_body` counts every byte of a chunked body, the small chunks being
/// gathered included: 17 chunks of 65,535 bytes (just under the gathering
/// size) pass a 1 MiB limit and are refused with a fatal `ENOSPC`; so are
/// a `Content-Length` and a body until close over it.
#[tokio::test]
async fn http_max_body_counts_gathered_chunks_and_every_framing() {
    const CHUNK: usize = 0xffff;
    const LIMIT_BODY: usize = 1 << 20;
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..LIMIT_BODY / CHUNK + 1 {
        chunked.extend_from_slice(b"ffff\r\n");
        chunked.resize(chunked.len() + CHUNK, b'x');
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let length = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        LIMIT_BODY + 1
    );
    let mut until_close = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    until_close.resize(until_close.len() + LIMIT_BODY + 1, b'x');
    for script in [chunked, length.into_bytes(), until_close] {
        let (handle, mut peer) = pipe();
        let c = Pipelined::new(handle, Http::new("h").max_body(LIMIT_BODY), 16);
        let reply = c.send(Request::get("/"));
        take_commands(&mut peer).await;
        let writer = tokio::spawn(async move {
            let _ = peer.write_all(&script).await;
            // Open until the reply is in.
            let mut sink = [0u8; 64];
            let _ = peer.read(&mut sink).await;
        });
        let got = tokio::time::timeout(LIMIT, reply).await.expect("no reply");
        writer.abort();
        let e = got.map(|r| r.body_len()).unwrap_err();
        assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::NoSpace, true), "{e}");
    }
}

/// `Connection: close` on a chunked response with trailers, whose
/// chunks mix small and ≥ 64 KiB ones: the reply is whole, in order, with
/// its trailer; the pipelined request behind it fails. Also cut into
/// 7-byte pieces.
#[tokio::test]
async fn connection_close_on_chunked_with_trailers_and_mixed_chunks() {
    let sizes = [3usize, 70_000, 5, 6, 65_536, 65_535, 1, 100_000, 2];
    let mut script =
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut expect = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..n).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect();
        script.extend_from_slice(format!("{n:x};ext=1\r\n").as_bytes());
        script.extend_from_slice(&data);
        script.extend_from_slice(b"\r\n");
        expect.extend_from_slice(&data);
    }
    script
        .extend_from_slice(b"0\r\nX-Sum: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad");
    for cut in [0, 7] {
        let got = exchange(
            vec![Request::get("/a"), Request::get("/b")],
            &script,
            cut,
            false,
        )
        .await;
        let r = got[0].as_ref().expect("the close response's own answer");
        assert_eq!(r.body_bytes(), Bytes::from(expect.clone()), "cut {cut}");
        assert_eq!(r.trailer("x-sum"), Some(&b"1"[..]));
        assert!(
            got[1]
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::Closed),
            "cut {cut}: {:?}",
            got[1]
        );
    }
}

/// `Connection: close` on a body read until the server closes; on
/// HEAD, 204 and 304 answers; on a response cut into 1-byte pieces; and
/// `Connection: keep-alive, close` on HTTP/1.1: each answer is whole and
/// the request behind it fails.
#[tokio::test]
async fn connection_close_variants_keep_their_own_answer() {
    let got = exchange(
        vec![Request::get("/a"), Request::get("/b")],
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
        0,
        true,
    )
    .await;
    assert_eq!(body(&got[0]), Some("until the end".into()), "{got:?}");
    assert!(got[1].is_err());
    let next = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad";
    for (req, head) in [
        (
            Request::new("HEAD", "/"),
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n",
        ),
        (
            Request::get("/"),
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        ),
        (
            Request::get("/"),
            "HTTP/1.1 304 Not Modified\r\nConnection: close\r\nContent-Length: 9\r\n\r\n",
        ),
        (
            Request::get("/"),
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok",
        ),
    ] {
        let script = format!("{head}{next}");
        for cut in [0, 1] {
            let got = exchange(
                vec![req.clone(), Request::get("/b")],
                script.as_bytes(),
                cut,
                false,
            )
            .await;
            assert!(got[0].is_ok(), "{script:?} cut {cut}: {got:?}");
            assert!(
                got[1]
                    .as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::Closed),
                "{script:?} cut {cut}: {got:?}"
            );
        }
    }
}

/// `Connection: close` on a 100 Continue is not the final
/// response's: the final one (keep-alive) keeps the connection. An
/// HTTP/1.0 `Connection: keep-alive` response keeps it too.
#[tokio::test]
async fn interim_close_and_http10_keep_alive() {
    let got = exchange(
        vec![Request::get("/a"), Request::get("/b")],
        b"HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na\
          HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nb",
        0,
        false,
    )
    .await;
    assert_eq!(body(&got[0]), Some("a".into()), "{got:?}");
    assert_eq!(body(&got[1]), Some("b".into()), "{got:?}");
}

/// A read timeout between a small and a large chunk of a
/// `Connection: close` response: the caller hears the timeout, the rest is
/// read for nobody, and the pipelined request behind it fails (Closed)
/// rather than reading the bytes after it.
#[tokio::test(start_paused = true)]
async fn timeout_between_chunks_of_a_close_response() {
    let (handle, mut peer) = pipe_rtimeout(MS(300));
    let c = Pipelined::new(handle, Http::new("h"), 16);
    let first = c.send(Request::get("/a"));
    let second = c.send(Request::get("/b"));
    take_commands(&mut peer).await;
    peer.write_all(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    )
    .await
    .unwrap();
    let e = tokio::time::timeout(LIMIT, first)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    let mut rest = format!("{:x}\r\n", 70_000).into_bytes();
    rest.resize(rest.len() + 70_000, b'z');
    rest.extend_from_slice(b"\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad");
    let writer = tokio::spawn(async move {
        peer.write_all(&rest).await.unwrap();
        peer
    });
    let got = tokio::time::timeout(LIMIT, second).await.unwrap();
    let _peer = writer.await.unwrap();
    assert!(got.is_err(), "{got:?}");
}

// ----- memcached -------------------------------------------------------------------

/// A body delimited by the server's close (no `Content-Length` and not
/// chunked: HTTP/1.1 without either, a final coding other than `chunked`,
/// HTTP/1.0 with `keep-alive`) ends the connection once read, as
/// `Connection: close` does: `poll_ready` says so, and no later request
/// (a `POST` that must not be lost) is written onto it.
#[tokio::test(start_paused = true)]
async fn http_body_until_close_ends_the_connection() {
    use tower::ServiceExt;
    for head in [
        &b"HTTP/1.1 200 OK\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
    ] {
        let what = String::from_utf8_lossy(head).into_owned();
        let (handle, mut peer) = pipe();
        let mut c = Pipelined::new(handle, Http::new("h"), 4);
        let first = c.send(Request::get("/1"));
        take_commands(&mut peer).await;
        peer.write_all(head).await.unwrap();
        peer.write_all(b"body").await.unwrap();
        peer.shutdown().await.unwrap();
        let got = tokio::time::timeout(LIMIT, first).await.expect("hung");
        assert_eq!(body(&got).as_deref(), Some(&b"body"[..]), "{what}");
        let ready = tokio::time::timeout(LIMIT, c.ready()).await.expect("hung");
        let e = ready.map(|_| ()).expect_err(&what);
        assert_eq!(e.kind(), ErrorKind::Closed, "{what}: {e}");
        let late = c.send(Request::new("POST", "/pay").body("x"));
        let e = tokio::time::timeout(LIMIT, late)
            .await
            .expect("hung")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed, "{what}: {e}");
        let mut wrote = Vec::new();
        let _ = tokio::time::timeout(MS(100), peer.read_to_end(&mut wrote)).await;
        assert!(
            wrote.is_empty(),
            "{what}: wrote {:?}",
            String::from_utf8_lossy(&wrote)
        );
    }
}

/// `gets` with a duplicate key answered twice, keys differing only
/// in case (both asked, answered in order), and a `get` answered `END`
/// only; a value for the other case of a key asked for is refused.
#[tokio::test]
async fn memcached_duplicate_and_case_keys() {
    let (c, mut peer) = mc();
    let dup = c.send(Command::Gets(vec!["k".into(), "K".into(), "k".into()]));
    let none = c.send(Command::get("x"));
    take_commands(&mut peer).await;
    peer.write_all(
        b"VALUE k 0 1 7\r\n1\r\nVALUE K 0 1 8\r\n2\r\nVALUE k 0 1 7\r\n1\r\nEND\r\nEND\r\n",
    )
    .await
    .unwrap();
    match tokio::time::timeout(LIMIT, dup).await.unwrap() {
        Ok(McResponse::Values(items)) => {
            let keys: Vec<_> = items.iter().map(|i| (i.key.clone(), i.cas)).collect();
            assert_eq!(
                keys,
                [
                    (Bytes::from("k"), Some(7)),
                    (Bytes::from("K"), Some(8)),
                    (Bytes::from("k"), Some(7))
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        tokio::time::timeout(LIMIT, none).await.unwrap().unwrap(),
        McResponse::Values(vec![])
    );
    let (c, mut peer) = mc();
    let r = c.send(Command::get("k"));
    take_commands(&mut peer).await;
    peer.write_all(b"VALUE K 0 1\r\n1\r\nEND\r\n")
        .await
        .unwrap();
    let e = tokio::time::timeout(LIMIT, r).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadMessage);
}
