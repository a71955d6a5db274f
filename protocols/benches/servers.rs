//! The protocol clients against the crates Rust users pick, on the same
//! real servers, in the same run.
//!
//! * `redis-100-inflight-1conn` / `-16conn`: SET and GET of 100-byte
//!   values, alternating, 100 requests in flight per connection, through
//!   our tower `Service` against the `redis` crate's
//!   `MultiplexedConnection` (its pipelining connection). Targets ≥ 1.0.
//! * `redis-1-inflight`: one GET at a time (latency). Target ≥ 1.0.
//! * `memcached-1-inflight`: set/get of 100-byte values one at a time
//!   against `async-memcached` (a maintained async client; it has no
//!   pipelining, so it is measured only here).
//! * `memcached-100-inflight`: the same, 100 in flight, against a
//!   `Framed` with a hand-written reply decoder (one decoder for the whole
//!   reply, what a user would write without per-request reads).
//! * `http-1KiB` / `http-1MiB`: keep-alive GETs one at a time against
//!   hyper's `client::conn::http1` on the same nginx. Context, no target.
//!
//! Every scenario interleaves the two sides round by round (the order
//! alternating), on connections opened before the clock starts; the ratio
//! is the median of the per-round ratios (ours / anchor, in requests per
//! second). A missing server binary skips its scenarios with a printed
//! reason. `BENCH_REPS` sets the rounds (default 11); an argument filters
//! scenarios by name.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyframe_protocols::http::{self, Request as HttpRequest};
use anyframe_protocols::memcached::{self, Command, Response as McResponse};
use anyframe_protocols::pipeline::Reply;
use anyframe_protocols::redis::{self, Cmd};
use anyframe_protocols::servers::{Kind, Server};
use bytes::{Buf, Bytes, BytesMut};
use futures::SinkExt;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::runtime::Runtime;
use tokio_util::codec::{Decoder, Encoder, Framed};
use tower::{Service, ServiceExt};

const VALUE_LEN: usize = 100;
const KEYS: usize = 1000;
const IN_FLIGHT: usize = 100;

struct Bench {
    filter: Option<String>,
    rounds: usize,
    rt: Runtime,
}

impl Bench {
    fn wants(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }

    /// Whether any of `names` is wanted (so its server is worth starting).
    fn wants_any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.wants(n))
    }

    /// Runs `ours` and `anchor` (each doing `items` requests per call)
    /// alternately, and prints the scenario line.
    fn pair<A, B>(&self, name: &str, items: u64, extra: &str, mut ours: A, mut anchor: B)
    where
        A: AsyncFnMut(),
        B: AsyncFnMut(),
    {
        let (mut o, mut a) = (Vec::new(), Vec::new());
        // One untimed warm-up round each.
        self.rt.block_on(ours());
        self.rt.block_on(anchor());
        for round in 0..self.rounds {
            let mut time_ours = || {
                let t = Instant::now();
                self.rt.block_on(ours());
                o.push(t.elapsed());
            };
            if round % 2 == 0 {
                time_ours();
                let t = Instant::now();
                self.rt.block_on(anchor());
                a.push(t.elapsed());
            } else {
                let t = Instant::now();
                self.rt.block_on(anchor());
                a.push(t.elapsed());
                time_ours();
            }
        }
        let rate = |d: &[Duration]| items as f64 / median(d).as_secs_f64();
        let mut ratios: Vec<f64> = o
            .iter()
            .zip(&a)
            .map(|(o, a)| a.as_secs_f64() / o.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
        println!(
            "scenario={name} ours={:.0} anchor={:.0} ratio={:.2} range={lo:.2}-{hi:.2}{}{extra}",
            rate(&o),
            rate(&a),
            ratios[ratios.len() / 2],
            if extra.is_empty() { "" } else { " " },
        );
    }
}

fn median(d: &[Duration]) -> Duration {
    let mut d = d.to_vec();
    d.sort();
    d[d.len() / 2]
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .filter(|f| !f.is_empty());
    let rounds = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(11usize)
        .max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bench = Bench { filter, rounds, rt };
    println!(
        "# anyframe protocols bench: {rounds} interleaved rounds (median), client on one thread"
    );
    let started = Instant::now();
    if bench.wants_any(&[
        "redis-100-inflight-1conn",
        "redis-100-inflight-16conn",
        "redis-1-inflight",
    ]) && let Some(server) = Server::start(Kind::Redis)
    {
        println!("# {}", server.version());
        redis_benches(&bench, &server);
    }
    if bench.wants_any(&["memcached-1-inflight", "memcached-100-inflight"])
        && let Some(server) = Server::start(Kind::Memcached)
    {
        println!("# {}", server.version());
        memcached_benches(&bench, &server);
    }
    if bench.wants_any(&["http-1KiB", "http-1MiB"])
        && let Some(server) = Server::start(Kind::Nginx)
    {
        println!("# {}", server.version());
        http_benches(&bench, &server);
    }
    println!("# total wall time {:.1} s", started.elapsed().as_secs_f64());
}

fn keys() -> Vec<Bytes> {
    (0..KEYS)
        .map(|i| Bytes::from(format!("key:{i:06}")))
        .collect()
}

fn redis_benches(b: &Bench, server: &Server) {
    let keys = keys();
    let value = Bytes::from(vec![b'v'; VALUE_LEN]);
    let url = format!("redis://{}/", server.addr());
    for conns in [1usize, 16] {
        let name = format!("redis-100-inflight-{conns}conn");
        if !b.wants(&name) {
            continue;
        }
        let ops = 100_000 / conns * conns;
        let ours: Vec<redis::Client> = b.rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..conns {
                v.push(redis::connect(server.addr(), IN_FLIGHT).await.unwrap());
            }
            v
        });
        let theirs: Vec<::redis::aio::MultiplexedConnection> = b.rt.block_on(async {
            let client = ::redis::Client::open(url.as_str()).unwrap();
            let mut v = Vec::new();
            for _ in 0..conns {
                v.push(client.get_multiplexed_async_connection().await.unwrap());
            }
            v
        });
        let (k, v) = (&keys, &value);
        b.pair(
            &name,
            ops as u64,
            &format!("ops={ops} value={VALUE_LEN}B"),
            async || {
                let per = ops / conns;
                let runs = ours.iter().map(|c| ours_redis(c.clone(), per, k, v));
                futures::future::join_all(runs).await;
            },
            async || {
                let per = ops / conns;
                let runs = theirs.iter().map(|c| theirs_redis(c.clone(), per, k, v));
                futures::future::join_all(runs).await;
            },
        );
    }
    if b.wants("redis-1-inflight") {
        let ops = 5_000;
        let mut ours = b.rt.block_on(redis::connect(server.addr(), 1)).unwrap();
        let mut theirs = b.rt.block_on(async {
            let client = ::redis::Client::open(url.as_str()).unwrap();
            client.get_multiplexed_async_connection().await.unwrap()
        });
        b.pair(
            "redis-1-inflight",
            ops,
            &format!("ops={ops} GET of {VALUE_LEN}B"),
            async || {
                for i in 0..ops as usize {
                    let cmd = Cmd::new("GET").arg(&keys[i % KEYS]);
                    black_box(ours.ready().await.unwrap().call(cmd).await.unwrap());
                }
            },
            async || {
                for i in 0..ops as usize {
                    let v: ::redis::Value = ::redis::cmd("GET")
                        .arg(&keys[i % KEYS][..])
                        .query_async(&mut theirs)
                        .await
                        .unwrap();
                    black_box(v);
                }
            },
        );
    }
}

async fn ours_redis(mut c: redis::Client, ops: usize, keys: &[Bytes], value: &Bytes) {
    let mut inflight = FuturesUnordered::<Reply<redis::Value>>::new();
    for i in 0..ops {
        if inflight.len() >= IN_FLIGHT {
            black_box(inflight.next().await.unwrap().unwrap());
        }
        let key = &keys[(i / 2) % KEYS];
        let cmd = if i % 2 == 0 {
            Cmd::new("SET").arg(key).arg(value)
        } else {
            Cmd::new("GET").arg(key)
        };
        inflight.push(c.ready().await.unwrap().call(cmd));
    }
    while let Some(r) = inflight.next().await {
        black_box(r.unwrap());
    }
}

async fn theirs_redis(
    c: ::redis::aio::MultiplexedConnection,
    ops: usize,
    keys: &[Bytes],
    value: &Bytes,
) {
    let mut inflight = FuturesUnordered::new();
    for i in 0..ops {
        if inflight.len() >= IN_FLIGHT {
            black_box(inflight.next().await.unwrap());
        }
        let key = &keys[(i / 2) % KEYS];
        let mut cmd = if i % 2 == 0 {
            ::redis::cmd("SET")
        } else {
            ::redis::cmd("GET")
        };
        cmd.arg(&key[..]);
        if i % 2 == 0 {
            cmd.arg(&value[..]);
        }
        let mut conn = c.clone();
        inflight.push(async move { cmd.query_async::<::redis::Value>(&mut conn).await.unwrap() });
    }
    while let Some(r) = inflight.next().await {
        black_box(r);
    }
}

fn memcached_benches(b: &Bench, server: &Server) {
    let keys = keys();
    let value = Bytes::from(vec![b'v'; VALUE_LEN]);
    if b.wants("memcached-1-inflight") {
        let ops = 5_000;
        let mut ours = b.rt.block_on(memcached::connect(server.addr(), 1)).unwrap();
        let mut theirs =
            b.rt.block_on(async_memcached::Client::new(format!(
                "tcp://{}",
                server.addr()
            )))
            .unwrap();
        b.pair(
            "memcached-1-inflight",
            ops,
            &format!("ops={ops} set/get alternating, {VALUE_LEN}B"),
            async || {
                for i in 0..ops as usize {
                    let key = keys[(i / 2) % KEYS].clone();
                    let cmd = if i % 2 == 0 {
                        Command::set(key, value.clone())
                    } else {
                        Command::get(key)
                    };
                    black_box(ours.ready().await.unwrap().call(cmd).await.unwrap());
                }
            },
            async || {
                use async_memcached::AsciiProtocol;
                for i in 0..ops as usize {
                    let key = &keys[(i / 2) % KEYS][..];
                    if i % 2 == 0 {
                        theirs.set(key, &value[..], None, None).await.unwrap();
                    } else {
                        black_box(theirs.get(key).await.unwrap());
                    }
                }
            },
        );
    }
    if b.wants("memcached-100-inflight") {
        let ops = 20_000;
        let ours =
            b.rt.block_on(memcached::connect(server.addr(), IN_FLIGHT))
                .unwrap();
        let mut framed = b.rt.block_on(async {
            let s = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
            s.set_nodelay(true).unwrap();
            Framed::new(s, McCodec)
        });
        b.pair(
            "memcached-100-inflight",
            ops,
            &format!("ops={ops} set/get alternating, {VALUE_LEN}B"),
            async || {
                let mut c = ours.clone();
                let mut inflight = FuturesUnordered::<Reply<McResponse>>::new();
                for i in 0..ops as usize {
                    if inflight.len() >= IN_FLIGHT {
                        black_box(inflight.next().await.unwrap().unwrap());
                    }
                    let key = keys[(i / 2) % KEYS].clone();
                    let cmd = if i % 2 == 0 {
                        Command::set(key, value.clone())
                    } else {
                        Command::get(key)
                    };
                    inflight.push(c.ready().await.unwrap().call(cmd));
                }
                while let Some(r) = inflight.next().await {
                    black_box(r.unwrap());
                }
            },
            async || {
                // Keep IN_FLIGHT requests written ahead of the replies read.
                let (mut sent, mut got) = (0usize, 0usize);
                while got < ops as usize {
                    while sent < ops as usize && sent - got < IN_FLIGHT {
                        let key = keys[(sent / 2) % KEYS].clone();
                        let req = if sent % 2 == 0 {
                            McReq::Set(key, value.clone())
                        } else {
                            McReq::Get(key)
                        };
                        framed.feed(req).await.unwrap();
                        sent += 1;
                    }
                    framed.flush().await.unwrap();
                    let reply = framed.next().await.unwrap().unwrap();
                    black_box(match reply {
                        McReply::Line(b) | McReply::Value(b) => b.len(),
                        McReply::Miss => 0,
                    });
                    got += 1;
                }
            },
        );
    }
}

enum McReq {
    Set(Bytes, Bytes),
    Get(Bytes),
}

/// The anchor: one hand-written decoder for a whole memcached reply (what
/// a `Framed` user writes), and its request encoder.
struct McCodec;

#[derive(Debug)]
enum McReply {
    Line(Bytes),
    Value(Bytes),
    Miss,
}

impl Encoder<McReq> for McCodec {
    type Error = std::io::Error;

    fn encode(&mut self, req: McReq, dst: &mut BytesMut) -> std::io::Result<()> {
        match req {
            McReq::Set(k, v) => {
                dst.extend_from_slice(b"set ");
                dst.extend_from_slice(&k);
                dst.extend_from_slice(format!(" 0 0 {}\r\n", v.len()).as_bytes());
                dst.extend_from_slice(&v);
                dst.extend_from_slice(b"\r\n");
            }
            McReq::Get(k) => {
                dst.extend_from_slice(b"get ");
                dst.extend_from_slice(&k);
                dst.extend_from_slice(b"\r\n");
            }
        }
        Ok(())
    }
}

impl Decoder for McCodec {
    type Item = McReply;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> std::io::Result<Option<McReply>> {
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad reply");
        let Some(eol) = memchr(b'\n', src) else {
            return Ok(None);
        };
        let line = &src[..eol.saturating_sub(1)];
        if line == b"END" {
            src.advance(eol + 1);
            return Ok(Some(McReply::Miss));
        }
        if !line.starts_with(b"VALUE ") {
            let line = src
                .split_to(eol + 1)
                .freeze()
                .slice(..eol.saturating_sub(1));
            return Ok(Some(McReply::Line(line)));
        }
        let len: usize = std::str::from_utf8(line.rsplit(|&b| b == b' ').next().ok_or_else(bad)?)
            .map_err(|_| bad())?
            .parse()
            .map_err(|_| bad())?;
        // VALUE line, data, \r\n, END\r\n
        let total = eol + 1 + len + 2 + 5;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(eol + 1);
        let data = src.split_to(len).freeze();
        if &src[..7] != b"\r\nEND\r\n" {
            return Err(bad());
        }
        src.advance(7);
        Ok(Some(McReply::Value(data)))
    }
}

fn memchr(b: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == b)
}

fn http_benches(b: &Bench, server: &Server) {
    for (name, size, ops) in [
        ("http-1KiB", 1024usize, 2_000u64),
        ("http-1MiB", 1 << 20, 100),
    ] {
        if !b.wants(name) {
            continue;
        }
        let file = format!("/{name}");
        std::fs::write(server.docroot().join(&file[1..]), vec![b'x'; size]).unwrap();
        let mut ours = b.rt.block_on(http::connect(server.addr(), 1)).unwrap();
        let mut sender = b.rt.block_on(async {
            let s = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
            s.set_nodelay(true).unwrap();
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
        });
        let host = server.addr().to_string();
        b.pair(
            name,
            ops,
            &format!("ops={ops} keep-alive GET, one at a time"),
            async || {
                for _ in 0..ops {
                    let r = ours
                        .ready()
                        .await
                        .unwrap()
                        .call(HttpRequest::get(file.clone()))
                        .await;
                    let r = r.unwrap();
                    assert_eq!(r.body_len(), size);
                    black_box(r);
                }
            },
            async || {
                use http_body_util::BodyExt;
                for _ in 0..ops {
                    sender.ready().await.unwrap();
                    let req = hyper::Request::get(file.as_str())
                        .header(hyper::header::HOST, host.as_str())
                        .body(http_body_util::Empty::<Bytes>::new())
                        .unwrap();
                    let resp = sender.send_request(req).await.unwrap();
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(body.len(), size);
                    black_box(body);
                }
            },
        );
    }
}
