//! The protocol clients at the edges of one reply per command: pushes,
//! refused commands, each memcached command's own answers (against the
//! real server too), and small pieces copied out of the read buffer.
//! Every wait is bounded.

#[path = "support/counting.rs"]
mod counting;
mod support;

use std::time::Duration;

use anyframe::ErrorKind;
use anyframe_protocols::http::{Http, Request};
use anyframe_protocols::memcached::{Command, Memcached, Response as McResponse};
use anyframe_protocols::pipeline::Pipelined;
use anyframe_protocols::redis::{self, Cmd, Resp, Value};
use anyframe_protocols::servers::{Kind, Server};
use counting::live;
use support::{LIMIT, pipe, take_commands};
use tokio::io::AsyncWriteExt;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

// ----- small pieces hold their own bytes ---------------------------------------------

/// 1 000 pipelined `incr`s, each answered by a short `CLIENT_ERROR` line
/// that arrives in its own read (a slow or hostile server): as for values,
/// the replies must not keep a read buffer each alive.
#[tokio::test(flavor = "current_thread")]
async fn memcached_error_texts_hold_their_bytes_not_the_read_buffers() {
    const N: usize = 1000;
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Memcached, N);
    let replies: Vec<_> = (0..N)
        .map(|i| c.send(Command::Incr(format!("k{i}").into(), 1)))
        .collect();
    take_commands(&mut peer).await;
    let base = live();
    for _ in 0..N {
        peer.write_all(b"CLIENT_ERROR x\r\n").await.unwrap();
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }
    let got = tokio::time::timeout(LIMIT, futures::future::join_all(replies))
        .await
        .unwrap();
    for r in &got {
        assert_eq!(r.as_ref().unwrap(), &McResponse::ClientError("x".into()));
    }
    let held = live() - base;
    assert!(
        held < 1024 * 1024,
        "{N} replies of `CLIENT_ERROR x` keep {held} bytes alive"
    );
}

/// 300 pipelined requests whose responses each carry a one-byte
/// `Content-Length` body and arrive one per read: the responses must not
/// keep a read buffer each alive (the header lines and chunked bodies are
/// copied out; a small sized body is the same piece of the reply).
#[tokio::test(flavor = "current_thread")]
async fn http_small_sized_bodies_hold_their_bytes_not_the_read_buffers() {
    const N: usize = 300;
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Http::new("h"), N);
    let replies: Vec<_> = (0..N).map(|_| c.send(Request::get("/"))).collect();
    take_commands(&mut peer).await;
    let base = live();
    for _ in 0..N {
        peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
            .await
            .unwrap();
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }
    let got = tokio::time::timeout(LIMIT, futures::future::join_all(replies))
        .await
        .unwrap();
    for r in &got {
        assert_eq!(&r.as_ref().unwrap().body_bytes()[..], b"x");
    }
    let held = live() - base;
    assert!(
        held < 1024 * 1024,
        "{N} responses with a one-byte body keep {held} bytes alive"
    );
}

// ----- commands that leave request/reply ---------------------------------------------

/// The same against a real redis-server: after `SYNC`, the connection is
/// still in step (`PING` answers `PONG`).
#[tokio::test]
async fn redis_sync_on_a_real_server_leaves_the_client_in_step() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    let c = redis::connect(server.addr(), 16).await.unwrap();
    let sync = tokio::time::timeout(Duration::from_secs(3), c.send(Cmd::new("SYNC"))).await;
    let ping = tokio::time::timeout(Duration::from_secs(3), c.send(Cmd::new("PING"))).await;
    assert!(
        matches!(&ping, Ok(Ok(Value::Simple(s))) if &s[..] == b"PONG"),
        "SYNC: {:?}; PING after it: {ping:?}",
        sync.map(|r| r.map(|v| format!("{v:?}").chars().take(200).collect::<String>()))
    );
}

// ----- real servers, binary arguments, pushes -----------------------------------------

/// RESP3 client-side caching against a real server: invalidations that
/// follow replies (Redis 7 sends them after the reply of the command that
/// caused them) never take a later command's place.
#[tokio::test]
async fn redis_resp3_tracking_invalidations_never_take_a_reply_on_a_real_server() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    let c = redis::connect(server.addr(), 64).await.unwrap();
    let other = redis::connect(server.addr(), 4).await.unwrap();
    let t = |f| tokio::time::timeout(LIMIT, f);
    t(c.send(Cmd::new("HELLO").arg("3")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        t(c.send(Cmd::new("CLIENT").arg("TRACKING").arg("ON")))
            .await
            .unwrap()
            .unwrap(),
        Value::Simple("OK".into())
    );
    for i in 0..50 {
        let k = format!("k{i}");
        t(c.send(Cmd::new("SET").arg(&k).arg("v")))
            .await
            .unwrap()
            .unwrap();
        t(c.send(Cmd::new("GET").arg(&k))).await.unwrap().unwrap();
        // Invalidated by another connection and by this one, in a MULTI.
        t(other.send(Cmd::new("SET").arg(&k).arg("w")))
            .await
            .unwrap()
            .unwrap();
        t(c.send(Cmd::new("GET").arg(&k))).await.unwrap().unwrap();
        let replies = futures::future::join_all([
            c.send(Cmd::new("MULTI")),
            c.send(Cmd::new("GET").arg(&k)),
            c.send(Cmd::new("SET").arg(&k).arg("x")),
            c.send(Cmd::new("EXEC")),
            c.send(Cmd::new("ECHO").arg(format!("e{i}"))),
        ]);
        let r = tokio::time::timeout(LIMIT, replies).await.unwrap();
        let r: Vec<Value> = r.into_iter().map(Result::unwrap).collect();
        assert_eq!(r[3].as_slice().map(<[Value]>::len), Some(2), "{r:?}");
        assert_eq!(r[4], Value::Bulk(format!("e{i}").into()), "{r:?}");
    }
}

/// `RESET` and `HELLO 3`/`HELLO 2` in the middle of a pipeline answer
/// once each: they are not refused and the replies stay in step.
#[tokio::test]
async fn redis_reset_and_hello_mid_pipeline_stay_in_step_on_a_real_server() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    let c = redis::connect(server.addr(), 64).await.unwrap();
    let replies = futures::future::join_all([
        c.send(Cmd::new("ECHO").arg("a")),
        c.send(Cmd::new("HELLO").arg("3")),
        c.send(Cmd::new("ECHO").arg("b")),
        c.send(Cmd::new("RESET")),
        c.send(Cmd::new("ECHO").arg("c")),
        c.send(Cmd::new("HELLO").arg("2")),
        c.send(Cmd::new("ECHO").arg("d")),
    ]);
    let r: Vec<Value> = tokio::time::timeout(LIMIT, replies)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(r[0], Value::Bulk("a".into()));
    assert!(matches!(r[1], Value::Map(_)), "{:?}", r[1]);
    assert_eq!(r[2], Value::Bulk("b".into()));
    assert_eq!(r[3], Value::Simple("RESET".into()));
    assert_eq!(r[4], Value::Bulk("c".into()));
    assert_eq!(r[6], Value::Bulk("d".into()));
}

/// Binary arguments with `\r`, `\r\n`, `$`, empty ones and a large one do
/// not confuse the refusal: a `SET` whose value spells `\r\n$9\r\nSUBSCRIBE`
/// is sent; `CLIENT` with an empty second argument is sent; `client reply`
/// in any case is refused; so is SUBSCRIBE with an empty channel.
#[tokio::test]
async fn redis_refusal_reads_binary_arguments_by_their_length() {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Resp::new(), 16);
    let sent = [
        Cmd::new("SET").arg("k\r").arg(b"\r\n$9\r\nSUBSCRIBE\r\n"),
        Cmd::new("SET").arg("").arg(""),
        Cmd::new("CLIENT").arg("").arg("REPLY"),
        Cmd::new("ECHO").arg(vec![b'\r'; 70_000]),
        Cmd::new("CLIENT").arg("REPLYX"),
    ];
    let refused = [
        Cmd::new("client").arg("rEpLy").arg("OFF"),
        Cmd::new("SUBSCRIBE").arg(""),
        Cmd::new("sSubscribe").arg("\r\n"),
    ];
    let mut failed = Vec::new();
    let mut pending = Vec::new();
    for cmd in sent {
        pending.push(c.send(cmd));
    }
    for cmd in refused {
        match tokio::time::timeout(Duration::from_millis(200), c.send(cmd.clone())).await {
            Ok(Err(e)) if e.kind() == ErrorKind::InvalidInput && !e.is_fatal() => {}
            other => failed.push(format!("{cmd:?}: not refused: {other:?}")),
        }
    }
    let written = take_commands(&mut peer).await;
    let n = written
        .windows(3)
        .filter(|w| w == b"*3\r" || w == b"*2\r")
        .count();
    if n < 5 {
        failed.push(format!("only {n} commands written"));
    }
    peer.write_all(b"+1\r\n+2\r\n+3\r\n+4\r\n+5\r\n")
        .await
        .unwrap();
    let got = tokio::time::timeout(LIMIT, futures::future::join_all(pending))
        .await
        .unwrap();
    for (i, r) in got.into_iter().enumerate() {
        match r {
            Ok(Value::Simple(s)) if s == format!("{}", i + 1).as_bytes() => {}
            other => failed.push(format!("reply {i}: {other:?}")),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A top-level push after an attribute, and a push that is the whole
/// value of a subscriber (RESP3): dropped ahead of the reply on the
/// client; the reply after them is the command's.
#[tokio::test]
async fn redis_push_after_an_attribute_is_not_a_reply() {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Resp::new(), 16);
    let a = c.send(Cmd::new("GET").arg("k"));
    let b = c.send(Cmd::new("GET").arg("j"));
    take_commands(&mut peer).await;
    peer.write_all(
        b"|1\r\n+ttl\r\n:3\r\n>2\r\n$10\r\ninvalidate\r\n_\r\n>0\r\n$1\r\na\r\n>1\r\n+x\r\n$1\r\nb\r\n",
    )
    .await
    .unwrap();
    let (a, b) = tokio::time::timeout(LIMIT, futures::future::join(a, b))
        .await
        .unwrap();
    assert_eq!(a.unwrap(), Value::Bulk("a".into()));
    assert_eq!(b.unwrap(), Value::Bulk("b".into()));
}

/// `|-1` and `>-1` are no RESP3 values (an attribute annotates the value
/// after it; a push is out of band): taken as a `Nil` reply, each would
/// hand every later reply to the request after its own. They are a fatal
/// `EBADMSG`, which fails the requests behind too.
#[tokio::test]
async fn redis_null_attribute_or_push_is_refused_not_taken_for_a_reply() {
    for wire in [&b"|-1\r\n+a\r\n+b\r\n"[..], b">-1\r\n+a\r\n+b\r\n"] {
        let (handle, mut peer) = pipe();
        let c = Pipelined::new(handle, Resp::new(), 16);
        let a = c.send(Cmd::new("GET").arg("k"));
        let b = c.send(Cmd::new("GET").arg("j"));
        take_commands(&mut peer).await;
        peer.write_all(wire).await.unwrap();
        let (a, b) = tokio::time::timeout(LIMIT, futures::future::join(a, b))
            .await
            .unwrap();
        let wire = String::from_utf8_lossy(wire);
        for got in [a, b] {
            let e = got.expect_err(&wire);
            assert_eq!(e.kind(), ErrorKind::BadMessage, "{wire}: {e}");
            assert!(e.is_fatal(), "{wire}: {e}");
        }
    }
}

/// memcached 1.6's own answers to every command the client sends, edge
/// cases included, are taken (none is "out of step").
#[tokio::test]
async fn memcached_real_answers_are_all_taken() {
    let Some(server) = Server::start(Kind::Memcached) else {
        return;
    };
    let c = anyframe_protocols::memcached::connect(server.addr(), 16)
        .await
        .unwrap();
    let big = bytes::Bytes::from(vec![b'x'; 3 << 20]);
    let cmds = vec![
        Command::set("n", "18446744073709551615"),
        Command::Incr("n".into(), 1),
        Command::set("s", "abc"),
        Command::Incr("s".into(), 1),
        Command::Incr("missing".into(), 1),
        Command::Cas(
            anyframe_protocols::memcached::Store {
                key: "s".into(),
                flags: 0,
                exptime: 0,
                data: "z".into(),
            },
            12345,
        ),
        Command::Cas(
            anyframe_protocols::memcached::Store {
                key: "none".into(),
                flags: 0,
                exptime: u32::MAX,
                data: "z".into(),
            },
            1,
        ),
        Command::Set(anyframe_protocols::memcached::Store {
            key: "e".into(),
            flags: u32::MAX,
            exptime: u32::MAX,
            data: "z".into(),
        }),
        Command::set("big", big),
        Command::Delete("missing".into()),
        Command::Gets(vec!["s".into(), "n".into(), "missing".into()]),
        Command::get("s"),
    ];
    let mut failed = Vec::new();
    for cmd in cmds {
        let what = format!("{cmd:?}").chars().take(80).collect::<String>();
        match tokio::time::timeout(LIMIT, c.send(cmd)).await {
            Ok(Ok(r)) => eprintln!("{what} -> {r:?}"),
            other => failed.push(format!("{what}: {other:?}")),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
