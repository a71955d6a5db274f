//! The Redis client against a real `redis-server` on a loopback port.

use std::time::Duration;

use anyframe::ErrorKind;
use anyframe_protocols::redis::{self, Cmd, Value};
use anyframe_protocols::servers::{Kind, Server};
use anyframe_protocols::workload::{self, MAX_VALUE, Rng};
use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use tower::{Service, ServiceExt};

/// Every test is bounded: a hang is a failure, not a stuck CI run.
const LIMIT: Duration = Duration::from_secs(60);

fn bulk(s: &str) -> Value {
    Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

async fn call(client: &mut redis::Client, cmd: Cmd) -> Value {
    client.ready().await.unwrap().call(cmd).await.unwrap()
}

macro_rules! server {
    () => {
        match Server::start(Kind::Redis) {
            Some(s) => s,
            None => return,
        }
    };
}

#[tokio::test]
async fn strings_counters_nil_and_errors() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut c = redis::connect(server.addr(), 16).await.unwrap();
        assert_eq!(
            call(&mut c, Cmd::new("SET").arg("k1").arg("v1")).await,
            Value::Simple("OK".into())
        );
        assert_eq!(call(&mut c, Cmd::new("GET").arg("k1")).await, bulk("v1"));
        assert_eq!(
            call(&mut c, Cmd::new("GET").arg("missing")).await,
            Value::Nil
        );
        call(&mut c, Cmd::new("SET").arg("k2").arg("")).await;
        assert_eq!(
            call(&mut c, Cmd::new("MGET").arg("k1").arg("nope").arg("k2")).await,
            Value::Array(vec![bulk("v1"), Value::Nil, bulk("")])
        );
        assert_eq!(
            call(&mut c, Cmd::new("INCR").arg("n")).await,
            Value::Integer(1)
        );
        assert_eq!(
            call(&mut c, Cmd::new("INCRBY").arg("n").arg("-5")).await,
            Value::Integer(-4)
        );
        // The ends of Redis's 64-bit counters.
        call(
            &mut c,
            Cmd::new("SET").arg("min").arg("-9223372036854775808"),
        )
        .await;
        assert_eq!(
            call(&mut c, Cmd::new("INCRBY").arg("min").arg("0")).await,
            Value::Integer(i64::MIN)
        );
        assert_eq!(
            call(&mut c, Cmd::new("DEL").arg("k1").arg("k2").arg("nope")).await,
            Value::Integer(2)
        );
        // -ERR is a reply: this request fails, the connection goes on.
        call(&mut c, Cmd::new("SET").arg("text").arg("abc")).await;
        let Value::Error(e) = call(&mut c, Cmd::new("INCR").arg("text")).await else {
            panic!("INCR of a string must be an error reply")
        };
        assert!(e.starts_with(b"ERR value is not an integer"), "{e:?}");
        let Value::Error(e) = call(&mut c, Cmd::new("NOSUCHCOMMAND")).await else {
            panic!("unknown command must be an error reply")
        };
        assert!(e.starts_with(b"ERR unknown command"), "{e:?}");
        assert_eq!(
            call(&mut c, Cmd::new("PING")).await,
            Value::Simple("PONG".into())
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn lists_and_nested_replies() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut c = redis::connect(server.addr(), 16).await.unwrap();
        call(
            &mut c,
            Cmd::new("RPUSH").arg("l").arg("a").arg("").arg("ccc"),
        )
        .await;
        assert_eq!(
            call(&mut c, Cmd::new("LRANGE").arg("l").arg("0").arg("-1")).await,
            Value::Array(vec![bulk("a"), bulk(""), bulk("ccc")])
        );
        assert_eq!(
            call(&mut c, Cmd::new("LRANGE").arg("none").arg("0").arg("-1")).await,
            Value::Array(vec![])
        );
        // XRANGE: an array of [id, [field, value, ...]] pairs.
        for (id, v) in [("1-1", "x"), ("2-1", "y")] {
            call(
                &mut c,
                Cmd::new("XADD")
                    .arg("s")
                    .arg(id)
                    .arg("f")
                    .arg(v)
                    .arg("g")
                    .arg(""),
            )
            .await;
        }
        let entry = |id: &str, v: &str| {
            Value::Array(vec![
                bulk(id),
                Value::Array(vec![bulk("f"), bulk(v), bulk("g"), bulk("")]),
            ])
        };
        assert_eq!(
            call(&mut c, Cmd::new("XRANGE").arg("s").arg("-").arg("+")).await,
            Value::Array(vec![entry("1-1", "x"), entry("2-1", "y")])
        );
        // COMMAND INFO GET: [[name, arity, [flags], first, last, step, [acl], [tips], [keyspecs], [subcommands]]]
        let info = call(&mut c, Cmd::new("COMMAND").arg("INFO").arg("GET")).await;
        let outer = info.as_slice().unwrap();
        let get = outer[0].as_slice().unwrap();
        assert_eq!(get[0], bulk("get"));
        assert_eq!(get[1], Value::Integer(2));
        assert!(
            get[2]
                .as_slice()
                .unwrap()
                .contains(&Value::Simple("readonly".into()))
        );
        assert!(
            get.iter().filter(|v| v.as_slice().is_some()).count() >= 3,
            "{info:?}"
        );
        // A key we just made, in a nested reply after it: the stream stays in step.
        assert_eq!(
            call(&mut c, Cmd::new("GET").arg("missing")).await,
            Value::Nil
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bulk_of_16_mib() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut c = redis::connect(server.addr(), 16).await.unwrap();
        let big = workload::value(16, 16 * 1024 * 1024);
        call(&mut c, Cmd::new("SET").arg("big").arg(&big)).await;
        // Two GETs in flight around a small one: boundaries hold.
        let a = c.send(Cmd::new("GET").arg("big"));
        let b = c.send(Cmd::new("ECHO").arg("between"));
        let d = c.send(Cmd::new("GET").arg("big"));
        assert_eq!(a.await.unwrap(), Value::Bulk(big.clone()));
        assert_eq!(b.await.unwrap(), bulk("between"));
        assert_eq!(d.await.unwrap(), Value::Bulk(big));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn resp3_after_hello_3() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut c = redis::connect(server.addr(), 16).await.unwrap();
        let hello = call(&mut c, Cmd::new("HELLO").arg("3")).await;
        let Value::Map(pairs) = &hello else {
            panic!("HELLO 3 answers a map: {hello:?}")
        };
        assert!(
            pairs.contains(&(bulk("proto"), Value::Integer(3))),
            "{hello:?}"
        );
        assert!(
            pairs.contains(&(bulk("server"), bulk("redis"))),
            "{hello:?}"
        );
        // RESP3 types: null, double, map, set, boolean (via Lua's RESP3 mode).
        assert_eq!(
            call(&mut c, Cmd::new("GET").arg("missing")).await,
            Value::Nil
        );
        call(&mut c, Cmd::new("HSET").arg("h").arg("a").arg("1")).await;
        assert_eq!(
            call(&mut c, Cmd::new("HGETALL").arg("h")).await,
            Value::Map(vec![(bulk("a"), bulk("1"))])
        );
        call(&mut c, Cmd::new("SADD").arg("st").arg("m")).await;
        assert_eq!(
            call(&mut c, Cmd::new("SMEMBERS").arg("st")).await,
            Value::Set(vec![bulk("m")])
        );
        call(&mut c, Cmd::new("ZADD").arg("z").arg("1.5").arg("m")).await;
        assert_eq!(
            call(&mut c, Cmd::new("ZSCORE").arg("z").arg("m")).await,
            Value::Double(1.5)
        );
        let script = "redis.setresp(3); return {true, false, {double=2.5}}";
        assert_eq!(
            call(&mut c, Cmd::new("EVAL").arg(script).arg("0")).await,
            Value::Array(vec![
                Value::Boolean(true),
                Value::Boolean(false),
                Value::Double(2.5)
            ])
        );
        let Value::Error(e) = call(&mut c, Cmd::new("INCR").arg("h")).await else {
            panic!()
        };
        assert!(e.starts_with(b"WRONGTYPE"), "{e:?}");
    })
    .await
    .unwrap();
}

async fn expect_message(sub: &mut redis::Subscriber, kind: &str, channel: &str, last: Value) {
    let v = sub.next().await.unwrap().unwrap();
    let items = v
        .as_slice()
        .unwrap_or_else(|| panic!("not an array or push: {v:?}"));
    assert_eq!(items, [bulk(kind), bulk(channel), last]);
}

#[tokio::test]
async fn subscribe_messages_through_the_default_reader() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut publisher = redis::connect(server.addr(), 16).await.unwrap();
        for resp3 in [false, true] {
            let mut sub = redis::subscriber(server.addr()).await.unwrap();
            if resp3 {
                sub.command(&Cmd::new("HELLO").arg("3")).unwrap();
                assert!(matches!(sub.next().await.unwrap().unwrap(), Value::Map(_)));
            }
            sub.command(&Cmd::new("SUBSCRIBE").arg("news").arg("more"))
                .unwrap();
            expect_message(&mut sub, "subscribe", "news", Value::Integer(1)).await;
            expect_message(&mut sub, "subscribe", "more", Value::Integer(2)).await;
            for i in 0..3 {
                let body = format!("hello {i}");
                let n = call(&mut publisher, Cmd::new("PUBLISH").arg("news").arg(&body)).await;
                assert_eq!(n, Value::Integer(1));
                let next = sub.next().await.unwrap().unwrap();
                assert_eq!(matches!(next, Value::Push(_)), resp3, "{next:?}");
                assert_eq!(
                    next.as_slice().unwrap(),
                    [bulk("message"), bulk("news"), bulk(&body)]
                );
            }
            sub.command(&Cmd::new("UNSUBSCRIBE").arg("news")).unwrap();
            expect_message(&mut sub, "unsubscribe", "news", Value::Integer(1)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dropped_reply_keeps_the_stream_in_step() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut c = redis::connect(server.addr(), 16).await.unwrap();
        call(&mut c, Cmd::new("RPUSH").arg("dl").arg("1").arg("2")).await;
        for _ in 0..50 {
            drop(c.send(Cmd::new("LRANGE").arg("dl").arg("0").arg("-1")));
            drop(c.send(Cmd::new("GET").arg("missing")));
        }
        assert_eq!(
            call(&mut c, Cmd::new("ECHO").arg("after")).await,
            bulk("after")
        );
    })
    .await
    .unwrap();
}

/// 10,000 SET/GET pairs, pipelined 256 deep, values 0 B–1 MiB from a seeded
/// skewed distribution (see `Rng::value_size`): every GET answers its own
/// SET, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_random_sizes() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut c = redis::connect(server.addr(), 256).await.unwrap();
        let mut rng = Rng::new(17);
        let mut pending = FuturesOrdered::new();
        let (mut checked, mut max_seen) = (0usize, 0usize);
        for i in 0..5_000usize {
            let size = if i == 0 { MAX_VALUE } else { rng.value_size() };
            let value = workload::value(i, size);
            let key = format!("key:{i}");
            let set = c
                .ready()
                .await
                .unwrap()
                .call(Cmd::new("SET").arg(&key).arg(&value));
            pending.push_back(tagged(set, None));
            let get = c.ready().await.unwrap().call(Cmd::new("GET").arg(&key));
            pending.push_back(tagged(get, Some(value)));
            while pending.len() > 256 {
                let (reply, want) = pending.next().await.unwrap();
                check(reply.unwrap(), want, &mut checked, &mut max_seen);
            }
        }
        while let Some((reply, want)) = pending.next().await {
            check(reply.unwrap(), want, &mut checked, &mut max_seen);
        }
        assert_eq!(checked, 10_000);
        assert_eq!(max_seen, MAX_VALUE);
    })
    .await
    .unwrap();
}

async fn tagged(
    reply: anyframe_protocols::pipeline::Reply<Value>,
    want: Option<Bytes>,
) -> (anyframe::Result<Value>, Option<Bytes>) {
    (reply.await, want)
}

fn check(reply: Value, want: Option<Bytes>, checked: &mut usize, max_seen: &mut usize) {
    match want {
        None => assert_eq!(reply, Value::Simple("OK".into())),
        Some(v) => {
            *max_seen = (*max_seen).max(v.len());
            assert_eq!(reply, Value::Bulk(v));
        }
    }
    *checked += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_reply_fails_every_outstanding_request() {
    let mut server = server!();
    let mut c = redis::connect(server.addr(), 64).await.unwrap();
    let big = workload::value(1, 8 * 1024 * 1024);
    call(&mut c, Cmd::new("SET").arg("big").arg(&big)).await;
    let replies: Vec<_> = (0..32)
        .map(|_| c.send(Cmd::new("GET").arg("big")))
        .collect();
    // Let the first reply start arriving, then kill the server.
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.kill();
    let results = tokio::time::timeout(LIMIT, futures::future::join_all(replies))
        .await
        .expect("every outstanding request resolves");
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!failed.is_empty(), "256 MiB cannot all have been sent");
    // Whatever completed did so in order, then every later one failed.
    let first_err = results.iter().position(Result::is_err).unwrap();
    assert!(results[first_err..].iter().all(Result::is_err));
    for e in failed {
        assert!(
            matches!(
                e.kind(),
                ErrorKind::BrokenPipe | ErrorKind::Io | ErrorKind::Closed
            ),
            "{e:?}"
        );
    }
    let after = c.send(Cmd::new("PING")).await;
    assert!(
        after.is_err(),
        "a dead connection fails new requests at once"
    );
}

/// RESP3 client-side caching: the invalidation push arrives on the
/// tracking connection ahead of its next reply, goes to the push channel,
/// and the reply is still the command's.
#[tokio::test]
async fn resp3_push_ahead_of_a_reply_goes_to_the_push_channel() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let (tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
        let mut c = redis::connect_with_pushes(server.addr(), 16, tx)
            .await
            .unwrap();
        let mut other = redis::connect(server.addr(), 16).await.unwrap();
        call(&mut c, Cmd::new("HELLO").arg("3")).await;
        call(&mut c, Cmd::new("CLIENT").arg("TRACKING").arg("on")).await;
        call(&mut other, Cmd::new("SET").arg("tracked").arg("1")).await;
        assert_eq!(
            call(&mut c, Cmd::new("GET").arg("tracked")).await,
            bulk("1")
        );
        call(&mut other, Cmd::new("SET").arg("tracked").arg("2")).await;
        // Give the invalidation time to be written before our next command.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            call(&mut c, Cmd::new("GET").arg("tracked")).await,
            bulk("2")
        );
        let push = pushes.try_recv().expect("the invalidation was routed");
        assert_eq!(
            push,
            Value::Push(vec![
                bulk("invalidate"),
                Value::Array(vec![bulk("tracked")])
            ])
        );
    })
    .await
    .unwrap();
}

/// A client of a scripted loopback peer: once the first commands arrive,
/// the peer writes `script` in pieces of `piece` bytes, then waits.
async fn scripted(script: &'static [u8], piece: usize) -> redis::Client {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut tmp = [0u8; 4096];
        let _ = sock.read(&mut tmp).await.unwrap();
        for chunk in script.chunks(piece) {
            sock.write_all(chunk).await.unwrap();
        }
        let _ = sock.read(&mut tmp).await;
    });
    redis::connect(addr, 32).await.unwrap()
}

/// `n` pipelined PINGs' replies.
async fn pings(c: &redis::Client, n: usize) -> Vec<anyframe::Result<Value>> {
    let replies: Vec<_> = (0..n).map(|_| c.send(Cmd::new("PING"))).collect();
    tokio::time::timeout(LIMIT, futures::future::join_all(replies))
        .await
        .unwrap()
}

/// Every RESP3 type, from a scripted loopback peer writing one byte at a
/// time (redis-server sends some of them only in rare cases: attributes,
/// big numbers, blob errors): the reads come out the same however the
/// bytes arrive.
#[tokio::test]
async fn every_resp3_type_from_a_byte_at_a_time_peer() {
    let script: &[u8] =
        b"_\r\n#t\r\n,-1.5\r\n,inf\r\n(3492890328409238509324850943850943825024385\r\n\
        !21\r\nSYNTAX invalid syntax\r\n=15\r\ntxt:Some string\r\n\
        |1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:1\r\n:2\r\n\
        %2\r\n+first\r\n*1\r\n~1\r\n$0\r\n\r\n+second\r\n*-1\r\n$-1\r\n*0\r\n";
    let c = scripted(script, 1).await;
    let got: Vec<Value> = pings(&c, 11)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        got,
        [
            Value::Nil,
            Value::Boolean(true),
            Value::Double(-1.5),
            Value::Double(f64::INFINITY),
            Value::BigNumber("3492890328409238509324850943850943825024385".into()),
            Value::Error("SYNTAX invalid syntax".into()),
            Value::Verbatim {
                format: "txt".into(),
                text: "Some string".into()
            },
            // The attribute is skipped; the value it annotates is the reply.
            Value::Array(vec![Value::Integer(1), Value::Integer(2)]),
            Value::Map(vec![
                (
                    Value::Simple("first".into()),
                    Value::Array(vec![Value::Set(vec![bulk("")])])
                ),
                (Value::Simple("second".into()), Value::Nil),
            ]),
            Value::Nil,
            Value::Array(vec![]),
        ]
    );
}

/// RESP integers span all of `i64`: `i64::MIN` has no positive
/// counterpart, so it must not be parsed as a negated magnitude. One past
/// either end is no integer (a fatal EBADMSG).
#[tokio::test]
async fn integers_at_both_ends_of_i64() {
    let c = scripted(
        b":-9223372036854775808\r\n:9223372036854775807\r\n:-0\r\n\
        *1\r\n:-9223372036854775807\r\n:-9223372036854775809\r\n",
        usize::MAX,
    )
    .await;
    let got = pings(&c, 5).await;
    let ok: Vec<&Value> = got[..4].iter().map(|r| r.as_ref().unwrap()).collect();
    assert_eq!(
        ok,
        [
            &Value::Integer(i64::MIN),
            &Value::Integer(i64::MAX),
            &Value::Integer(0),
            &Value::Array(vec![Value::Integer(i64::MIN + 1)]),
        ]
    );
    let e = got[4].as_ref().unwrap_err();
    assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::BadMessage, true));
}

/// RESP3 lets an integer carry a `+` sign; an integer with no digits is
/// no integer (a fatal EBADMSG, not 0).
#[tokio::test]
async fn a_signed_integer_is_read_and_one_without_digits_is_refused() {
    let c = scripted(b":+5\r\n:-\r\n", usize::MAX).await;
    let got = pings(&c, 2).await;
    assert_eq!(got[0].as_ref().unwrap(), &Value::Integer(5));
    let e = got[1].as_ref().unwrap_err();
    assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::BadMessage, true));
}

/// A reply that is not RESP closes the connection with a fatal EBADMSG:
/// the stream cannot be trusted after it, so every later request fails too.
#[tokio::test]
async fn a_reply_that_is_not_resp_is_fatal() {
    let c = scripted(b"+OK\r\n$3\r\nabcde\r\n+never\r\n", usize::MAX).await;
    let got = pings(&c, 3).await;
    assert_eq!(got[0].as_ref().unwrap(), &Value::Simple("OK".into()));
    let e = got[1].as_ref().unwrap_err();
    assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::BadMessage, true));
    assert!(got[2].is_err());
}

/// An in-flight slot is freed when the reply has been read off the
/// connection, not when its future is polled: a caller holding unpolled
/// replies still gets `poll_ready` back (otherwise it would wait forever).
#[tokio::test]
async fn unpolled_replies_free_their_slots_once_read() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut c = redis::connect(server.addr(), 2).await.unwrap();
        let mut held = Vec::new();
        for i in 0..6 {
            let ready = tokio::time::timeout(Duration::from_secs(5), c.ready()).await;
            let ready = ready.expect("a slot comes back without polling the replies");
            held.push(ready.unwrap().call(Cmd::new("ECHO").arg(format!("{i}"))));
        }
        for (i, reply) in held.into_iter().enumerate() {
            assert_eq!(reply.await.unwrap(), bulk(&format!("{i}")));
        }
    })
    .await
    .unwrap();
}
