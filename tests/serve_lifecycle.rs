//! The server loop's timers across a connection's life (docs/semantics.md,
//! LC-6): a peer that never sends, a half-close while answers are computed,
//! pipelined bursts with out-of-order services, shutdown stages, bad
//! requests and mapped errors under all three timers, and the loop on a
//! multi-thread runtime in real time.

#[path = "support/serving.rs"]
mod serving;
mod support;

use std::convert::Infallible;
use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::codecs::{LineCodec, Utf8Line, Utf8LineCodec};
use anyframe::service::{BadRequest, serve};
use serving::{MS, SEC, answer_of, slow_read, spawn_line_server, state};
use support::within;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// A service that answers `line` with `line` after `ms` milliseconds,
/// where a line `name/ms` says how long (else `default_ms`).
fn delayed_echo(
    default_ms: u64,
) -> impl tower::Service<
    Utf8Line,
    Response = String,
    Error = Infallible,
    Future = impl Future<Output = Result<String, Infallible>> + Send,
> + Send
+ Clone {
    tower::service_fn(move |line: Utf8Line| async move {
        let l = line.line().to_owned();
        let ms = l
            .split_once('/')
            .and_then(|(_, ms)| ms.parse().ok())
            .unwrap_or(default_ms);
        tokio::time::sleep(MS(ms)).await;
        Ok::<_, Infallible>(l)
    })
}

async fn read_line(rd: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> Option<String> {
    let mut line = String::new();
    match within("line", rd.read_line(&mut line)).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
    }
}

// ---------------------------------------------------------------------------
// 1. A peer that never sends anything.
// ---------------------------------------------------------------------------

/// A client connects and sends nothing; only a read timer (1 s): nothing
/// owed to it and nothing written, so the first read expiry ends the loop,
/// one period after the connection came up.
#[tokio::test(start_paused = true)]
async fn a_fresh_silent_peer_is_ended_by_the_first_read_expiry() {
    let (server_io, _client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC);
    let t0 = Instant::now();
    let server = spawn_line_server(server_io, builder, delayed_echo(0));
    let r = within("server", server).await.unwrap();
    let took = t0.elapsed();
    assert!(
        r.as_ref().is_err_and(|e| e.is_timeout() && !e.is_fatal()),
        "{r:?}"
    );
    assert!(
        took < MS(1500),
        "a silent peer with a 1 s read timer held the loop for {took:?}"
    );
}

/// the same silent peer with an idle timer or a write timer (1 s)
/// instead ends the loop after one period, as documented.
#[tokio::test(start_paused = true)]
async fn fresh_silent_peer_idle_or_write_timer_ends_after_one_period() {
    for idle in [true, false] {
        let (server_io, _client_io) = tokio::io::duplex(512);
        let mut builder = QueuedFramed::builder();
        if idle {
            builder.timeout(SEC);
        } else {
            builder.wtimeout(SEC);
        }
        let t0 = Instant::now();
        let server = spawn_line_server(server_io, builder, delayed_echo(0));
        let r = within("server", server).await.unwrap();
        assert!(
            r.as_ref().is_err_and(|e| e.is_timeout() && !e.is_fatal()),
            "{r:?}"
        );
        assert_eq!(t0.elapsed(), SEC, "idle {idle}");
    }
}

/// A silent client after its last (small) answer, with only a read timer
/// (1 s): it gets a whole period from when the transport took the answer,
/// and not more.
#[tokio::test(start_paused = true)]
async fn a_silent_client_gets_one_period_after_its_last_answer() {
    let (server_io, client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC);
    let server = spawn_line_server(server_io, builder, delayed_echo(0));
    let (rd, mut wr) = tokio::io::split(client_io);
    let mut rd = tokio::io::BufReader::new(rd);
    tokio::time::sleep(MS(300)).await;
    wr.write_all(b"a\n").await.unwrap();
    assert_eq!(read_line(&mut rd).await.as_deref(), Some("a"));
    let taken = Instant::now();
    let r = within("server", server).await.unwrap();
    let silent = taken.elapsed();
    assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "{r:?}");
    assert!(silent >= SEC && silent < SEC + MS(100), "{silent:?}");
}

// ---------------------------------------------------------------------------
// 2. Half-close right after the requests, answers still being computed.
// ---------------------------------------------------------------------------

/// The client sends two requests and half-closes at once; the service
/// takes just under, exactly, or over one period (and two and three), so
/// answers land on a timer's expiry near the last flush, under each timer
/// and all three together. Both answers are delivered and the loop ends
/// `Ok`.
#[tokio::test(start_paused = true)]
async fn answers_to_a_half_closed_client_land_on_timer_expiries_and_arrive() {
    let mut outcomes = Vec::new();
    for which in ["idle", "write", "read", "all"] {
        for service_ms in [999u64, 1000, 1001, 2000, 3000] {
            let (server_io, client_io) = tokio::io::duplex(4096);
            let mut builder = QueuedFramed::builder();
            match which {
                "idle" => builder.timeout(SEC),
                "write" => builder.wtimeout(SEC),
                "read" => builder.rtimeout(SEC),
                _ => builder.timeout(MS(700)).rtimeout(SEC).wtimeout(MS(1300)),
            };
            let server = spawn_line_server(server_io, builder, delayed_echo(service_ms));
            let (rd, mut wr) = tokio::io::split(client_io);
            wr.write_all(b"a\nb\n").await.unwrap();
            wr.shutdown().await.unwrap();
            let mut rd = tokio::io::BufReader::new(rd);
            let a = read_line(&mut rd).await;
            let b = read_line(&mut rd).await;
            let end = read_line(&mut rd).await;
            let r = within("server", server).await.unwrap();
            if a.as_deref() != Some("a") || b.as_deref() != Some("b") || end.is_some() || r.is_err()
            {
                outcomes.push(format!("{which} {service_ms}: {a:?} {b:?} {end:?} {r:?}"));
            }
        }
    }
    assert!(outcomes.is_empty(), "{outcomes:#?}");
}

// ---------------------------------------------------------------------------
// 3. Pipelining, out-of-order services, all three timers.
// ---------------------------------------------------------------------------

/// Requests `i/ms` with service times that finish in reverse order, sent in
/// bursts (several per write) interleaved with answers; all three timers
/// set with different periods, every service time under all of them and
/// some over; the client reads each burst's answers before the next.
/// Answers come in request order, none lost or doubled; the client
/// half-closes and the loop ends `Ok`.
#[tokio::test(start_paused = true)]
async fn pipelined_bursts_out_of_order_services_all_timers() {
    for max in [1usize, 2, 128] {
        let (server_io, client_io) = tokio::io::duplex(256);
        let mut builder = QueuedFramed::builder();
        builder.timeout(MS(700)).rtimeout(SEC).wtimeout(MS(1300));
        let server = tokio::spawn(
            serve(
                server_io,
                Utf8LineCodec::new(),
                LineCodec::new(),
                delayed_echo(0),
            )
            .max_in_flight(max)
            .connection(builder)
            .run(),
        );
        let (rd, mut wr) = tokio::io::split(client_io);
        let mut rd = tokio::io::BufReader::new(rd);
        let mut n = 0;
        for burst in 0..6u64 {
            let mut sent = Vec::new();
            let mut bytes = String::new();
            for k in 0..5u64 {
                // Later requests are quicker: they finish out of order.
                let ms = (5 - k) * 150 + burst * 100;
                let line = format!("{n}/{ms}");
                n += 1;
                bytes.push_str(&line);
                bytes.push('\n');
                sent.push(line);
            }
            wr.write_all(bytes.as_bytes()).await.unwrap();
            for want in sent {
                let got = read_line(&mut rd).await;
                assert_eq!(
                    got.as_deref(),
                    Some(want.as_str()),
                    "max_in_flight {max}, burst {burst}"
                );
            }
            // Within every period of the last answer's take.
            tokio::time::sleep(MS(600)).await;
        }
        wr.shutdown().await.unwrap();
        assert_eq!(read_line(&mut rd).await, None);
        let r = within("server", server).await.unwrap();
        assert!(r.is_ok(), "max_in_flight {max}: {r:?}");
    }
}

// ---------------------------------------------------------------------------
// 4. Shutdown stages, bad requests, mapped errors, with all three timers.
// ---------------------------------------------------------------------------

fn all_timers() -> anyframe::Builder {
    let mut builder = QueuedFramed::builder();
    builder.timeout(MS(700)).rtimeout(SEC).wtimeout(MS(1300));
    builder
}

/// The shutdown signal before the first request: the loop ends `Ok` at
/// once; with a request in service and a slow reader: the answer is
/// delivered whole and the loop ends `Ok`.
#[tokio::test(start_paused = true)]
async fn shutdown_stages_with_all_timers() {
    // Before the first request.
    let (server_io, _client_io) = tokio::io::duplex(512);
    let t0 = Instant::now();
    let r = serve(
        server_io,
        Utf8LineCodec::new(),
        LineCodec::new(),
        delayed_echo(0),
    )
    .with_shutdown(tokio::time::sleep(MS(100)))
    .connection(all_timers())
    .run()
    .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(t0.elapsed(), MS(100));

    // During a slow service (3 periods) and a slow take (20 KB at 3.2 KB/s).
    let (server_io, client_io) = tokio::io::duplex(512);
    let svc = tower::service_fn(|line: Utf8Line| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, Infallible>(answer_of(line.line(), 20_000))
    });
    let server = tokio::spawn(
        serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc)
            .with_shutdown(tokio::time::sleep(MS(500)))
            .connection(all_timers())
            .run(),
    );
    let (mut rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\nb\n").await.unwrap();
    let one = answer_of("a", 20_000).len() + 1;
    let got = slow_read(&mut rd, 2 * one, 64, MS(20)).await;
    assert_eq!(got.len(), 2 * one);
    let r = within("server", server).await.unwrap();
    assert!(r.is_ok(), "{r:?}");
}

/// A decoder that rejects a line `bad` (consuming it) with a non-fatal
/// error.
#[derive(Clone, Default)]
struct Picky;

impl tokio_util::codec::Decoder for Picky {
    type Item = Utf8Line;
    type Error = anyframe::Error;
    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Utf8Line>, Self::Error> {
        let Some(i) = src.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        if &src[..i] == b"bad" {
            let _ = src.split_to(i + 1);
            return Err(anyframe::Error::custom(
                anyframe::ErrorKind::BadMessage,
                false,
                "bad",
            ));
        }
        Utf8LineCodec::new().decode(src).map_err(Into::into)
    }
}

/// Bad requests answered with `Reply` keep their place among slow answers
/// out of order in time; `ReplyAndClose` ends the loop `Ok` after the
/// answers before it, nothing after it answered; with all timers and
/// service times over the periods.
#[tokio::test(start_paused = true)]
async fn bad_requests_with_timers_keep_order() {
    for max in [1usize, 128] {
        let (server_io, client_io) = tokio::io::duplex(4096);
        let server = tokio::spawn(
            serve(server_io, Picky, LineCodec::new(), delayed_echo(0))
                .on_bad_request({
                    let mut n = 0;
                    move |_| {
                        n += 1;
                        if n < 3 {
                            BadRequest::Reply(format!("ERR{n}"))
                        } else {
                            BadRequest::ReplyAndClose("BYE".to_owned())
                        }
                    }
                })
                .max_in_flight(max)
                .connection(all_timers())
                .run(),
        );
        let (rd, mut wr) = tokio::io::split(client_io);
        let mut rd = tokio::io::BufReader::new(rd);
        wr.write_all(b"a/2500\nbad\nb/100\nc/1800\nbad\nd/0\nbad\ne/10\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(l) = read_line(&mut rd).await {
            got.push(l);
        }
        assert_eq!(
            got,
            ["a/2500", "ERR1", "b/100", "c/1800", "ERR2", "d/0", "BYE"],
            "max {max}"
        );
        let r = within("server", server).await.unwrap();
        assert!(r.is_ok(), "max {max}: {r:?}");
    }
}

/// map_errors turns a failure into an answer in its place; an unmapped
/// failure ends the loop with the service's (fatal) error after the answers
/// before it, with all timers and services slower than the periods.
#[tokio::test(start_paused = true)]
async fn map_errors_with_timers() {
    let (server_io, client_io) = tokio::io::duplex(4096);
    let svc = tower::service_fn(|line: Utf8Line| async move {
        let l = line.line().to_owned();
        tokio::time::sleep(MS(1500)).await;
        match l.as_str() {
            "soft" => Err::<String, _>("soft failure".to_owned()),
            "hard" => Err("hard failure".to_owned()),
            _ => Ok(l),
        }
    });
    let server = tokio::spawn(
        serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc)
            .map_errors(|e: String| {
                if e.starts_with("soft") {
                    Ok("MAPPED".to_owned())
                } else {
                    Err(e)
                }
            })
            .connection(all_timers())
            .run(),
    );
    let (rd, mut wr) = tokio::io::split(client_io);
    let mut rd = tokio::io::BufReader::new(rd);
    wr.write_all(b"a\nsoft\nb\nhard\nc\n").await.unwrap();
    let mut got = Vec::new();
    while let Some(l) = read_line(&mut rd).await {
        got.push(l);
    }
    assert_eq!(got, ["a", "MAPPED", "b"]);
    let r = within("server", server).await.unwrap();
    assert!(r.as_ref().is_err_and(|e| !e.is_timeout()), "{r:?}");
}

// ---------------------------------------------------------------------------
// 5. Multi-thread runtime, real time: the driver's thread and the loop's.
// ---------------------------------------------------------------------------

/// Eight connections at once, each a client that sends its next request
/// 0–60 ms after taking its answer (every timer's period is 1 s or more,
/// a margin a loaded machine keeps), with services taking 0–250 ms, some
/// requests pipelined in pairs; 25 rounds each. Every answer arrives, in
/// order, and each loop ends `Ok` at the half-close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_ping_pong_with_all_timers() {
    let mut clients = Vec::new();
    for c in 0..8u64 {
        clients.push(tokio::spawn(async move {
            let (server_io, client_io) = tokio::io::duplex(1024);
            let mut builder = QueuedFramed::builder();
            builder.timeout(MS(1500)).rtimeout(SEC).wtimeout(MS(2000));
            let server = tokio::spawn(
                serve(
                    server_io,
                    Utf8LineCodec::new(),
                    LineCodec::new(),
                    delayed_echo(0),
                )
                .max_in_flight(1 + (c as usize % 3))
                .connection(builder)
                .run(),
            );
            let (rd, mut wr) = tokio::io::split(client_io);
            let mut rd = tokio::io::BufReader::new(rd);
            let mut seed = c * 7919 + 1;
            let mut rnd = move |m: u64| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) % m
            };
            for round in 0..25 {
                let pair = rnd(3) == 0;
                let a = format!("{c}.{round}a/{}", rnd(250));
                let b = format!("{c}.{round}b/{}", rnd(250));
                let msg = if pair {
                    format!("{a}\n{b}\n")
                } else {
                    format!("{a}\n")
                };
                if let Err(e) = wr.write_all(msg.as_bytes()).await {
                    return Err(format!(
                        "conn {c} round {round}: send {e}; server {}",
                        state(server).await
                    ));
                }
                let got = read_line(&mut rd).await;
                if got.as_deref() != Some(a.as_str()) {
                    return Err(format!(
                        "conn {c} round {round}: {got:?} for {a}; server {}",
                        state(server).await
                    ));
                }
                if pair {
                    let got = read_line(&mut rd).await;
                    if got.as_deref() != Some(b.as_str()) {
                        return Err(format!(
                            "conn {c} round {round}: {got:?} for {b}; server {}",
                            state(server).await
                        ));
                    }
                }
                tokio::time::sleep(MS(rnd(60))).await;
            }
            wr.shutdown().await.unwrap();
            let r = server.await.unwrap();
            r.map_err(|e| format!("conn {c}: {e:?}"))
        }));
    }
    let mut failures = Vec::new();
    for c in clients {
        if let Err(e) = c.await.unwrap() {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
