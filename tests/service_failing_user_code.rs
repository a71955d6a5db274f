//! The tower client and the server loop against user code that fails in
//! the middle of a call (an encoder, a decoder), and peers that go away.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use anyframe::codecs::{Line, LineCodec, Utf8Line, Utf8LineCodec};
use anyframe::service::{Client, serve};
use anyframe::{Error, ErrorKind, QueuedFramed};
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};
use tower::{Service, ServiceExt};

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: hung"))
}

/// Writes a request as a line; refuses `"bad"` (non-fatal `EINVAL`) and
/// panics on `"panic"`.
#[derive(Clone)]
struct Picky;

impl Encoder<String> for Picky {
    type Error = Error;

    fn encode(&mut self, req: String, dst: &mut BytesMut) -> anyframe::Result<()> {
        match req.as_str() {
            "bad" => Err(Error::custom(ErrorKind::InvalidInput, false, "refused")),
            "panic" => panic!("encoder panicked"),
            _ => {
                dst.put_slice(req.as_bytes());
                dst.put_u8(b'\n');
                Ok(())
            }
        }
    }
}

/// A line decoder that panics on the answer `"explode"`.
struct Fragile(LineCodec);

impl Decoder for Fragile {
    type Item = Line;
    type Error = anyframe::codecs::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Line>, Self::Error> {
        let line = self.0.decode(src)?;
        if line.as_ref().is_some_and(|l| l.line() == b"explode") {
            panic!("response decoder panicked");
        }
        Ok(line)
    }
}

/// An echo peer over the sequential API.
fn echo_peer(io: tokio::io::DuplexStream) {
    tokio::spawn(async move {
        let mut peer = QueuedFramed::new(io);
        while let Ok(line) = peer.read(LineCodec::new()).await {
            if peer.write(LineCodec::new(), line.line()).await.is_err() {
                break;
            }
        }
    });
}

type FragileClient = Client<Picky, fn(&String) -> Fragile>;

fn client(io: tokio::io::DuplexStream, max_in_flight: usize) -> FragileClient {
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    Client::builder()
        .max_in_flight(max_in_flight)
        .build(handle, Picky, |_: &String| Fragile(LineCodec::new()))
}

/// A request the encoder refuses fails alone and gives its in-flight slot
/// back: with one slot, the next call is made and gets its own answer.
#[tokio::test]
async fn client_request_the_encoder_refuses_frees_its_slot() {
    let (ours, theirs) = tokio::io::duplex(1024);
    echo_peer(theirs);
    let mut c = client(ours, 1);
    let e = within("bad", c.ready().await.unwrap().call("bad".into()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let ok = within("ready after a refusal", c.ready())
        .await
        .unwrap()
        .call("ok".into());
    assert_eq!(within("ok", ok).await.unwrap().line(), b"ok");
}

/// A response decoder that panics fails the connection: the pending calls
/// and the next `poll_ready` are told, nothing hangs.
#[tokio::test]
async fn client_response_decoder_panic_fails_every_call_and_poll_ready() {
    let (ours, theirs) = tokio::io::duplex(1024);
    echo_peer(theirs);
    let mut c = client(ours, 4);
    let first = c.ready().await.unwrap().call("explode".into());
    let second = c.ready().await.unwrap().call("after".into());
    let e = within("first", first).await.unwrap_err();
    assert!(e.is_fatal(), "{e}");
    let e = within("second", second).await.unwrap_err();
    assert!(e.is_fatal(), "{e}");
    let r = within("poll_ready", c.ready()).await.map(|_| ());
    assert!(r.is_err_and(|e| e.is_fatal()));
}

/// An encoder that panics (the panic goes on to the caller) fails the
/// connection: the call before it is told, nothing hangs, and the next
/// `poll_ready` says the connection is gone.
#[tokio::test]
async fn client_encoder_panic_fails_the_connection_and_the_calls_before_it() {
    let (ours, theirs) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut c = Client::new(handle, Picky, |_: &String| LineCodec::new());
    let first = c.ready().await.unwrap().call("one".into());
    c.ready().await.unwrap();
    let boom = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(c.call("panic".into()));
    }));
    assert!(boom.is_err(), "the panic reaches the caller");
    let r = within("first", first).await;
    assert!(r.is_err_and(|e| e.is_fatal()));
    let r = within("poll_ready", c.ready()).await.map(|_| ());
    assert!(r.is_err_and(|e| e.is_fatal()));
    drop(theirs);
}

/// Upper-cases lines; answers `"explode"` as is.
fn upper() -> impl Service<
    Utf8Line,
    Response = String,
    Error = Infallible,
    Future = std::future::Ready<Result<String, Infallible>>,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|l: Utf8Line| {
        let s = if l.line() == "explode" {
            l.line().to_string()
        } else {
            l.line().to_uppercase()
        };
        std::future::ready(Ok(s))
    })
}

/// An answer encoder that panics on `"explode"`.
#[derive(Clone)]
struct FragileAnswers;

impl Encoder<String> for FragileAnswers {
    type Error = Error;

    fn encode(&mut self, resp: String, dst: &mut BytesMut) -> anyframe::Result<()> {
        assert_ne!(resp, "explode", "answer encoder panicked");
        dst.put_slice(resp.as_bytes());
        dst.put_u8(b'\n');
        Ok(())
    }
}

/// Reads what the peer gets until the end of the stream.
async fn read_to_end(mut io: tokio::io::DuplexStream) -> String {
    let mut got = Vec::new();
    let _ = io.read_to_end(&mut got).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// An answer encoder that panics ends the loop with an error, and the
/// peer's connection ends (no hang), after the answers before it.
#[tokio::test]
async fn serve_answer_encoder_panic_ends_the_loop_and_the_connection() {
    let (server_io, mut client_io) = tokio::io::duplex(1 << 16);
    let server =
        tokio::spawn(serve(server_io, Utf8LineCodec::new(), FragileAnswers, upper()).into_future());
    client_io.write_all(b"a\nexplode\nb\n").await.unwrap();
    let got = within("peer's end", read_to_end(client_io)).await;
    assert!(!got.contains("B\n"), "answered after the panic: {got:?}");
    let r = within("server", server).await;
    match r {
        Ok(r) => assert!(r.is_err(), "{r:?}"),
        Err(e) => assert!(e.is_panic(), "{e}"),
    }
}

/// A request decoder that panics: likewise.
#[tokio::test]
async fn serve_request_decoder_panic_ends_the_loop_and_the_connection() {
    #[derive(Clone)]
    struct FragileRequests(Utf8LineCodec);
    impl Decoder for FragileRequests {
        type Item = Utf8Line;
        type Error = anyframe::codecs::Error;
        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Utf8Line>, Self::Error> {
            let line = self.0.decode(src)?;
            assert!(
                line.as_ref().is_none_or(|l| l.line() != "explode"),
                "request decoder panicked"
            );
            Ok(line)
        }
    }
    let (server_io, mut client_io) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(
        serve(
            server_io,
            FragileRequests(Utf8LineCodec::new()),
            LineCodec::new(),
            upper(),
        )
        .into_future(),
    );
    client_io.write_all(b"a\n").await.unwrap();
    let mut buf = [0u8; 2];
    within("first answer", client_io.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"A\n");
    client_io.write_all(b"explode\nb\n").await.unwrap();
    let got = within("peer's end", read_to_end(client_io)).await;
    assert!(!got.contains('B'), "answered after the panic: {got:?}");
    let r = within("server", server).await;
    match r {
        Ok(r) => assert!(r.is_err(), "{r:?}"),
        Err(e) => assert!(e.is_panic(), "{e}"),
    }
}

/// The loop's future dropped while the service works on requests: the
/// peer's connection ends, it does not hang.
#[tokio::test]
async fn serve_dropped_while_the_service_works_ends_the_connection() {
    let (server_io, mut client_io) = tokio::io::duplex(1 << 16);
    let never =
        tower::service_fn(|_: Utf8Line| std::future::pending::<Result<String, Infallible>>());
    let server =
        tokio::spawn(serve(server_io, Utf8LineCodec::new(), LineCodec::new(), never).into_future());
    client_io.write_all(b"a\nb\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.abort();
    let got = within("peer's end", read_to_end(client_io)).await;
    assert!(got.is_empty(), "{got:?}");
}

/// A small deterministic generator for the randomised schedules below.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// An echo peer that answers each line after a pseudo-random delay, in
/// order, now and then well past the client's read timeout.
fn slow_echo_peer(io: tokio::io::DuplexStream, seed: u64) {
    tokio::spawn(async move {
        let mut rng = Lcg(seed);
        let mut peer = QueuedFramed::new(io);
        while let Ok(line) = peer.read(LineCodec::new()).await {
            let delay = if rng.below(10) == 0 {
                1_500
            } else {
                rng.below(300)
            };
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if peer.write(LineCodec::new(), line.line()).await.is_err() {
                break;
            }
        }
    });
}

/// Calls from several tasks on clones of one client with a read timeout,
/// some given up early (their futures dropped), against a peer whose
/// answers come late now and then: every answer a call gets is its own.
#[tokio::test(start_paused = true)]
async fn client_answers_reach_their_own_callers_through_timeouts_and_drops() {
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for seed in 1..=8u64 {
        let (ours, theirs) = tokio::io::duplex(1 << 12);
        slow_echo_peer(theirs, seed);
        let mut b = QueuedFramed::builder();
        b.rtimeout(Duration::from_secs(1));
        let (handle, _driver) = b.build(ours).spawn();
        let client =
            Client::builder()
                .max_in_flight(4)
                .build(handle, LineCodec::new(), |_: &String| LineCodec::new());
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let mut c = client.clone();
            let answered = answered.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = Lcg(seed * 31 + t);
                for i in 0..30 {
                    let req = format!("s{seed}-t{t}-{i}");
                    let Ok(c) = c.ready().await else { return };
                    let call = c.call(req.clone());
                    let give_up = Duration::from_millis(rng.below(2_000));
                    match tokio::time::timeout(give_up, call).await {
                        Ok(Ok(answer)) => {
                            assert_eq!(answer.line(), req.as_bytes());
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(Err(e)) if e.is_fatal() => return,
                        Ok(Err(_)) | Err(_) => {}
                    }
                }
            }));
        }
        drop(client);
        for t in tasks {
            // Virtual time: an hour of it passes at once if nothing moves.
            tokio::time::timeout(Duration::from_secs(3_600), t)
                .await
                .expect("a caller hung")
                .unwrap();
        }
    }
    let answered = answered.load(std::sync::atomic::Ordering::Relaxed);
    assert!(answered > 40, "only {answered} calls answered");
}

/// `serve` with an echo service whose calls take pseudo-random times
/// (finishing out of order), a small in-flight bound, small watermarks
/// and every timer set, and a client that writes its requests in random
/// pieces and reads its answers in random pieces with pauses (each within
/// the timers' period): every request is answered, in order, and the loop
/// ends cleanly at the client's end of input.
#[tokio::test(start_paused = true)]
async fn serve_answers_in_order_under_random_service_times_and_a_slow_reader() {
    for seed in 1..=6u64 {
        let (server_io, client_io) = tokio::io::duplex(256);
        let rng = std::sync::Arc::new(std::sync::Mutex::new(Lcg(seed)));
        let svc = tower::service_fn(move |l: Utf8Line| {
            let delay = rng.lock().unwrap().below(400);
            async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok::<_, Infallible>(format!("{}:{}", l.line(), "x".repeat(delay as usize % 97)))
            }
        });
        let mut b = QueuedFramed::builder();
        b.rtimeout(Duration::from_secs(1))
            .wtimeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(1))
            .watermarks(512, 128);
        let server = tokio::spawn(
            serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc)
                .max_in_flight(3)
                .connection(b)
                .into_future(),
        );
        let (mut rd, mut wr) = tokio::io::split(client_io);
        const N: usize = 60;
        let writer = tokio::spawn(async move {
            let mut rng = Lcg(seed * 7);
            let all: String = (0..N).map(|i| format!("r{i}\n")).collect();
            let mut rest = all.as_bytes();
            while !rest.is_empty() {
                let n = (1 + rng.below(rest.len().min(40) as u64)) as usize;
                wr.write_all(&rest[..n]).await.unwrap();
                rest = &rest[n..];
                tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            }
            wr.shutdown().await.unwrap();
            wr
        });
        let mut rng = Lcg(seed * 13);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            let want = (1 + rng.below(64)) as usize;
            match tokio::time::timeout(Duration::from_secs(3_600), rd.read(&mut buf[..want]))
                .await
                .expect("the client's read hung")
            {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let got = String::from_utf8(got).unwrap();
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), N, "seed {seed}: {got:?}");
        for (i, line) in lines.iter().enumerate() {
            assert!(
                line.starts_with(&format!("r{i}:")),
                "seed {seed}: line {i} is {line:?}"
            );
        }
        let outcome = tokio::time::timeout(Duration::from_secs(3_600), server)
            .await
            .expect("the loop hung")
            .unwrap();
        assert!(outcome.is_ok(), "seed {seed}: {outcome:?}");
        drop(writer.await.unwrap());
    }
}

/// Sets a connection's timers to a period.
type SetTimers = fn(&mut anyframe::Builder, Duration);

/// Serves one request whose service takes `delay`, with `timers` set to
/// `period`, for a client that reads at once: the client's answer, and
/// the loop's outcome once the client closes.
async fn answer_after(
    delay: Duration,
    timers: SetTimers,
    period: Duration,
) -> (String, anyframe::Result<()>) {
    let (server_io, mut client_io) = tokio::io::duplex(1 << 12);
    let svc = tower::service_fn(move |l: Utf8Line| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(l.line().to_uppercase())
    });
    let mut b = QueuedFramed::builder();
    timers(&mut b, period);
    let server = tokio::spawn(
        serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc)
            .connection(b)
            .into_future(),
    );
    client_io.write_all(b"ping\n").await.unwrap();
    let mut got = [0u8; 5];
    let answer = match client_io.read_exact(&mut got).await {
        Ok(_) => String::from_utf8_lossy(&got).into_owned(),
        Err(e) => format!("no answer: {e}"),
    };
    drop(client_io);
    let outcome = tokio::time::timeout(Duration::from_secs(3_600), server)
        .await
        .expect("the loop hung")
        .unwrap();
    (answer, outcome)
}

/// A service that answers at the very instant a timer of the connection
/// expires (the period, or a multiple of it) is the server's own work:
/// its answer is written to a client that reads at once, whichever timer
/// it is and whichever task runs first at that instant.
#[tokio::test(start_paused = true)]
async fn serve_answer_due_at_a_timer_expiry_is_written() {
    let period = Duration::from_secs(1);
    let timers: [(&str, SetTimers); 4] = [
        ("wtimeout", |b, p| {
            b.wtimeout(p);
        }),
        ("timeout", |b, p| {
            b.timeout(p);
        }),
        ("rtimeout", |b, p| {
            b.rtimeout(p);
        }),
        ("all", |b, p| {
            b.wtimeout(p).timeout(p).rtimeout(p);
        }),
    ];
    for (name, set) in timers {
        for delay_ms in [999, 1_000, 1_001, 2_000, 3_000] {
            let (answer, outcome) =
                answer_after(Duration::from_millis(delay_ms), set, period).await;
            assert_eq!(answer, "PING\n", "{name}, service {delay_ms} ms");
            assert!(
                outcome.as_ref().is_ok_and(|()| true)
                    || outcome.as_ref().is_err_and(|e| !e.is_fatal()),
                "{name}, service {delay_ms} ms: {outcome:?}"
            );
        }
    }
}

/// The same on two worker threads in real time, where the loop and the
/// driver run in parallel at the expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answer_due_at_a_timer_expiry_is_written_on_two_threads() {
    let period = Duration::from_millis(40);
    for round in 0..12 {
        let set: SetTimers = match round % 3 {
            0 => |b, p| {
                b.wtimeout(p);
            },
            1 => |b, p| {
                b.timeout(p);
            },
            _ => |b, p| {
                b.wtimeout(p).timeout(p).rtimeout(p);
            },
        };
        let (answer, outcome) = within("round", answer_after(period, set, period)).await;
        assert_eq!(answer, "PING\n", "round {round}: {outcome:?}");
    }
}

/// LC-6: an expiry while answers wait unwritten and the transport took
/// none of them for the period is a stalled peer, whichever timer
/// expired: with the read timer alone, a client that never reads is let
/// go within a couple of periods, even while the service still works on
/// a later request of its.
#[tokio::test(start_paused = true)]
async fn serve_read_timer_ends_a_stalled_peer_while_the_service_works() {
    let (server_io, mut client_io) = tokio::io::duplex(64);
    let svc = tower::service_fn(|l: Utf8Line| async move {
        if l.line() == "slow" {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Ok::<_, Infallible>("x".repeat(1_000))
    });
    let mut b = QueuedFramed::builder();
    b.rtimeout(Duration::from_secs(1));
    let start = tokio::time::Instant::now();
    let server = tokio::spawn(
        serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc)
            .connection(b)
            .into_future(),
    );
    client_io.write_all(b"fast\nslow\n").await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(3_600), server)
        .await
        .expect("the loop hung")
        .unwrap();
    let took = start.elapsed();
    let e = outcome.unwrap_err();
    assert!(e.is_timeout() && e.is_fatal(), "{e:?}");
    assert!(
        took < Duration::from_secs(3),
        "the stalled peer was kept {took:?}"
    );
    drop(client_io);
}
