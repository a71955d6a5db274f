//! The memcached client against a real `memcached` on a loopback port.

use std::time::Duration;

use anyframe::ErrorKind;
use anyframe_protocols::memcached::{self, Command, Item, Response, Store};
use anyframe_protocols::pipeline::Reply;
use anyframe_protocols::servers::{Kind, Server};
use anyframe_protocols::workload::{self, MAX_VALUE, Rng};
use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use tower::{Service, ServiceExt};

const LIMIT: Duration = Duration::from_secs(60);

macro_rules! server {
    () => {
        match Server::start(Kind::Memcached) {
            Some(s) => s,
            None => return,
        }
    };
}

async fn call(c: &mut memcached::Client, cmd: Command) -> Response {
    c.ready().await.unwrap().call(cmd).await.unwrap()
}

fn item(key: &str, flags: u32, data: &str) -> Item {
    Item {
        key: Bytes::copy_from_slice(key.as_bytes()),
        flags,
        cas: None,
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

#[tokio::test]
async fn set_get_gets_delete_multi_get() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut c = memcached::connect(server.addr(), 16).await.unwrap();
        assert_eq!(
            call(&mut c, Command::set("a", "alpha")).await,
            Response::Stored
        );
        let store = Store {
            key: "b".into(),
            flags: 42,
            exptime: 0,
            data: "".into(),
        };
        assert_eq!(call(&mut c, Command::Set(store)).await, Response::Stored);
        assert_eq!(
            call(&mut c, Command::get("a")).await,
            Response::Values(vec![item("a", 0, "alpha")])
        );
        assert_eq!(
            call(&mut c, Command::get("missing")).await,
            Response::Values(vec![])
        );
        let keys: Vec<Bytes> = ["a", "missing", "b"]
            .iter()
            .map(|k| Bytes::from_static(k.as_bytes()))
            .collect();
        assert_eq!(
            call(&mut c, Command::Get(keys.clone())).await,
            Response::Values(vec![item("a", 0, "alpha"), item("b", 42, "")])
        );
        // gets: CAS uniques; a cas with a stale unique loses.
        let Response::Values(items) = call(&mut c, Command::Gets(keys)).await else {
            panic!()
        };
        let cas = items[0].cas.expect("gets returns the CAS unique");
        assert!(items.iter().all(|i| i.cas.is_some()));
        let again = Store {
            key: "a".into(),
            flags: 0,
            exptime: 0,
            data: "beta".into(),
        };
        assert_eq!(
            call(&mut c, Command::Cas(again.clone(), cas)).await,
            Response::Stored
        );
        assert_eq!(
            call(&mut c, Command::Cas(again, cas)).await,
            Response::Exists
        );
        assert_eq!(
            call(&mut c, Command::Delete("a".into())).await,
            Response::Deleted
        );
        assert_eq!(
            call(&mut c, Command::Delete("a".into())).await,
            Response::NotFound
        );
        assert_eq!(
            call(&mut c, Command::set("n", "41")).await,
            Response::Stored
        );
        assert_eq!(
            call(&mut c, Command::Incr("n".into(), 1)).await,
            Response::Number(42)
        );
        assert_eq!(
            call(&mut c, Command::Incr("nope".into(), 1)).await,
            Response::NotFound
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn server_and_client_errors_are_replies() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut c = memcached::connect(server.addr(), 16).await.unwrap();
        // Over the 2 MiB item limit: memcached reads and drops the data.
        let huge = workload::value(0, 3 * 1024 * 1024);
        let Response::ServerError(why) = call(&mut c, Command::set("huge", huge)).await else {
            panic!("an item over the size limit is a SERVER_ERROR")
        };
        assert!(why.starts_with(b"object too large"), "{why:?}");
        call(&mut c, Command::set("text", "abc")).await;
        let Response::ClientError(why) = call(&mut c, Command::Incr("text".into(), 1)).await else {
            panic!("incr of a non-number is a CLIENT_ERROR")
        };
        assert!(why.starts_with(b"cannot increment"), "{why:?}");
        // A key memcached would refuse is refused before it is written.
        let e = c
            .send(Command::get(Bytes::from(vec![b'k'; 251])))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = c.send(Command::get("two words")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        // The stream is still in step.
        assert_eq!(
            call(&mut c, Command::get("text")).await,
            Response::Values(vec![item("text", 0, "abc")])
        );
    })
    .await
    .unwrap();
}

async fn tagged(
    reply: Reply<Response>,
    want: Option<(String, Bytes)>,
) -> (anyframe::Result<Response>, Option<(String, Bytes)>) {
    (reply.await, want)
}

/// 10,000 set/get pairs... as 5,000 of each, pipelined 256 deep, values
/// 0 B–1 MiB from a seeded skewed distribution (`Rng::value_size`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_random_sizes() {
    let server = server!();
    tokio::time::timeout(LIMIT, async {
        let mut c = memcached::connect(server.addr(), 256).await.unwrap();
        let mut rng = Rng::new(29);
        let mut pending = FuturesOrdered::new();
        let (mut checked, mut max_seen) = (0usize, 0usize);
        let mut check = |(reply, want): (anyframe::Result<Response>, Option<(String, Bytes)>)| {
            let reply = reply.unwrap();
            match want {
                None => assert_eq!(reply, Response::Stored),
                Some((key, data)) => {
                    max_seen = max_seen.max(data.len());
                    let want = Item {
                        key: key.into(),
                        flags: 0,
                        cas: None,
                        data,
                    };
                    assert_eq!(reply, Response::Values(vec![want]));
                }
            }
            checked += 1;
        };
        for i in 0..5_000usize {
            let size = if i == 0 { MAX_VALUE } else { rng.value_size() };
            let value = workload::value(i, size);
            let key = format!("key:{i}");
            let set = c
                .ready()
                .await
                .unwrap()
                .call(Command::set(key.clone(), value.clone()));
            pending.push_back(tagged(set, None));
            let get = c.ready().await.unwrap().call(Command::get(key.clone()));
            pending.push_back(tagged(get, Some((key, value))));
            while pending.len() > 300 {
                check(pending.next().await.unwrap());
            }
        }
        while let Some(r) = pending.next().await {
            check(r);
        }
        assert_eq!(checked, 10_000);
        assert_eq!(max_seen, MAX_VALUE);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_reply_fails_every_outstanding_request() {
    let mut server = server!();
    let mut c = memcached::connect(server.addr(), 64).await.unwrap();
    let big = workload::value(3, MAX_VALUE);
    for i in 0..8 {
        assert_eq!(
            call(&mut c, Command::set(format!("big{i}"), big.clone())).await,
            Response::Stored
        );
    }
    let keys: Vec<Bytes> = (0..8).map(|i| format!("big{i}").into()).collect();
    let replies: Vec<_> = (0..32)
        .map(|_| c.send(Command::Get(keys.clone())))
        .collect();
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
    assert!(c.send(Command::get("x")).await.is_err());
}

/// Every reply shape from a scripted loopback peer writing one byte at a
/// time: the line and chunk reads come out the same however the bytes
/// arrive, and a VALUE line that lies about its length is a fatal
/// EBADMSG for it and every later request.
#[tokio::test]
async fn replies_from_a_byte_at_a_time_peer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script: &[u8] = b"STORED\r\nVALUE a 7 3 99\r\nx\r\n\r\nVALUE b 0 0 100\r\n\r\nEND\r\n\
        END\r\nSERVER_ERROR out of memory storing object\r\nERROR\r\n18446744073709551615\r\n\
        VALUE c 0 2\r\nabcd\r\nEND\r\n";
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut tmp = [0u8; 4096];
        let _ = sock.read(&mut tmp).await.unwrap();
        for b in script {
            sock.write_all(&[*b]).await.unwrap();
        }
        let _ = sock.read(&mut tmp).await;
    });
    let c = memcached::connect(addr, 32).await.unwrap();
    // The commands whose replies the script gives (each answer one its
    // command may get; a VALUE answers a key asked for, in the order
    // asked).
    let commands = [
        Command::set("k", "v"),
        Command::Gets(vec!["a".into(), "z".into(), "b".into()]),
        Command::get("k"),
        Command::get("k"),
        Command::get("k"),
        Command::Incr("k".into(), 1),
        Command::get("c"),
        Command::get("k"),
    ];
    let replies: Vec<_> = commands.into_iter().map(|cmd| c.send(cmd)).collect();
    let got = tokio::time::timeout(LIMIT, futures::future::join_all(replies))
        .await
        .unwrap();
    let mut got = got.into_iter();
    assert_eq!(got.next().unwrap().unwrap(), Response::Stored);
    let two = Response::Values(vec![
        Item {
            key: "a".into(),
            flags: 7,
            cas: Some(99),
            data: "x\r\n".into(),
        },
        Item {
            key: "b".into(),
            flags: 0,
            cas: Some(100),
            data: "".into(),
        },
    ]);
    assert_eq!(
        got.next().unwrap().unwrap(),
        two,
        "binary-safe values, CRLF inside included"
    );
    assert_eq!(got.next().unwrap().unwrap(), Response::Values(vec![]));
    assert_eq!(
        got.next().unwrap().unwrap(),
        Response::ServerError("out of memory storing object".into())
    );
    assert_eq!(got.next().unwrap().unwrap(), Response::Error);
    assert_eq!(got.next().unwrap().unwrap(), Response::Number(u64::MAX));
    let e = got.next().unwrap().unwrap_err();
    assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::BadMessage, true));
    assert!(got.next().unwrap().is_err());
}
