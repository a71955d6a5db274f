//! Real sockets, real faults: anyframe on both ends of loopback TCP (and
//! anyframe against Perl's AnyEvent::Handle), through a proxy that
//! re-segments, delays, stalls one direction and resets connections
//! (`tests/support/proxy.rs`).
//!
//! * `soak_...`: a `service::Client` pipelining JSON requests (ids in the
//!   requests) to a `service::serve` server through a proxy that resets a
//!   share of its connections. The client reconnects after a reset and
//!   sends again what was not answered. Checked: every id answered exactly
//!   once, in order, with its own answer; every failure a typed error of
//!   a kind a reset explains; no call hangs; resident memory flat (VmRSS
//!   sampled every two seconds, the curve printed). 60 seconds by default;
//!   `ANYFRAME_SOAK_SECS=1800` runs it for 30 minutes.
//! * `raw_handle_...`: a raw `Handle` pipeline switching decoders per
//!   request (a header line, then a chunk of the length it names).
//! * `anyevent_...`: the same switching against `tests/peers/ae_peer.pl`
//!   (skipped with a printed reason without perl and AnyEvent; failed
//!   instead with `ANYFRAME_REQUIRE_PEERS=1`).
//!
//! Each test prints its seed; `ANYFRAME_FAULT_SEED=N` plans the same faults
//! again.

mod support;

#[path = "support/proxy.rs"]
mod proxy;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyframe::codecs::{ChunkCodec, JsonCodec, LineCodec};
use anyframe::service::{Client, serve};
use anyframe::{ErrorKind, QueuedFramed};
use proxy::{Faults, Proxy, Rng};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};

/// The longest a single call may take before it counts as lost.
const HANG: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
struct Req {
    id: u64,
    pad: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Resp {
    id: u64,
    len: usize,
    sum: u64,
}

/// The padding of request `id`: its length from `rng` (mostly small, now
/// and then up to 256 KiB, so frames span many segments).
fn pad(rng: &mut Rng) -> String {
    let len = if rng.chance(0.02) {
        rng.range(0, 256 * 1024)
    } else {
        rng.range(0, 2048)
    };
    let c = (b'a' + rng.range(0, 25) as u8) as char;
    std::iter::repeat_n(c, len as usize).collect()
}

fn answer(r: &Req) -> Resp {
    Resp {
        id: r.id,
        len: r.pad.len(),
        sum: r.pad.bytes().map(u64::from).sum(),
    }
}

/// What the server saw.
#[derive(Default)]
struct ServerLog {
    /// Connections whose requests did not arrive in id order.
    out_of_order: AtomicU64,
    /// How each connection ended: `ok`, or an error kind.
    ends: Mutex<BTreeMap<String, u64>>,
}

/// A JSON server on loopback: one `serve` per connection, each checking
/// that its ids arrive consecutively.
async fn json_server(log: Arc<ServerLog>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let last = Arc::new(Mutex::new(None::<u64>));
                let seen = log.clone();
                let service = tower::service_fn(move |r: Req| {
                    let mut last = last.lock().unwrap();
                    if last.is_some_and(|l| r.id != l + 1) {
                        seen.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    *last = Some(r.id);
                    std::future::ready(Ok::<_, Infallible>(answer(&r)))
                });
                let end = serve(
                    s,
                    JsonCodec::<Req>::new(),
                    JsonCodec::<Resp>::new(),
                    service,
                )
                .into_future()
                .await;
                let key = match end {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("{:?}", e.kind()),
                };
                *log.ends.lock().unwrap().entry(key).or_default() += 1;
            });
        }
    });
    addr
}

/// The kinds a reset (or the proxy's close after it) explains.
fn reset_explains(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Io | ErrorKind::BrokenPipe | ErrorKind::Closed
    )
}

/// Samples VmRSS every `every` until dropped.
struct RssSampler {
    samples: Arc<Mutex<Vec<(f64, u64)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(every: Duration) -> RssSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            while !st.load(Ordering::Relaxed) {
                if let Some(kib) = proxy::rss_kib() {
                    s.lock().unwrap().push((start.elapsed().as_secs_f64(), kib));
                }
                let until = Instant::now() + every;
                while Instant::now() < until && !st.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        RssSampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.samples.lock().unwrap().clone()
    }
}

/// Pipelines requests through `proxy` until `deadline`, reconnecting after
/// each failure. Returns (answered, failures by kind).
async fn soak_client(
    addr: std::net::SocketAddr,
    seed: u64,
    deadline: Instant,
) -> (u64, BTreeMap<String, u64>) {
    const WINDOW: usize = 32;
    let mut rng = Rng::new(seed);
    // The next id to be answered; every id below it was answered once.
    let mut confirmed = 0u64;
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    'connections: while Instant::now() < deadline {
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => panic!("seed {seed}: connect to the proxy: {e}"),
        };
        stream.set_nodelay(true).unwrap();
        let (handle, driver) = QueuedFramed::new(stream).spawn();
        let mut client = Client::new(handle.clone(), JsonCodec::<Req>::new(), |_: &Req| {
            JsonCodec::<Resp>::new()
        });
        // Each connection also ends by itself now and then, cleanly.
        let end = confirmed + rng.range(1, 2000);
        let mut next = confirmed;
        let mut window = VecDeque::new();
        let mut failed = None;
        loop {
            let sending = Instant::now() < deadline;
            while sending && window.len() < WINDOW && next < end {
                let req = Req {
                    id: next,
                    pad: pad(&mut Rng::new(seed ^ next.wrapping_mul(0x9e37_79b9))),
                };
                let want = answer(&req);
                match tokio::time::timeout(HANG, client.ready()).await {
                    Err(_) => panic!("seed {seed}: poll_ready hung at id {next}"),
                    Ok(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    Ok(Ok(c)) => window.push_back((want, c.call(req))),
                }
                next += 1;
            }
            let Some((want, call)) = window.pop_front() else {
                break;
            };
            match tokio::time::timeout(HANG, call).await {
                Err(_) => panic!("seed {seed}: id {} lost (no answer, no error)", want.id),
                Ok(Ok(got)) => {
                    assert_eq!(
                        want.id, confirmed,
                        "seed {seed}: answers out of order or one lost"
                    );
                    assert_eq!(got, want, "seed {seed}: an answer that is not its own");
                    confirmed += 1;
                }
                Ok(Err(e)) => {
                    failed = Some(e);
                    break;
                }
            }
            if failed.is_some() {
                break;
            }
        }
        if let Some(e) = failed {
            assert!(
                reset_explains(e.kind()),
                "seed {seed}: a failure no reset explains: {e}"
            );
            *failures.entry(format!("{:?}", e.kind())).or_default() += 1;
            // The calls still in the window may have been answered before
            // the failure (a write can fail while answers already sent
            // still arrive): those count, in order; after the first call
            // that fails, none may succeed. The rest are sent again.
            let mut broken = false;
            for (want, call) in window.drain(..) {
                match tokio::time::timeout(HANG, call).await {
                    Err(_) => panic!("seed {seed}: id {} lost (no answer, no error)", want.id),
                    Ok(Ok(got)) => {
                        assert!(
                            !broken,
                            "seed {seed}: answer {} after a failed call",
                            got.id
                        );
                        assert_eq!(want.id, confirmed, "seed {seed}: answers out of order");
                        assert_eq!(got, want, "seed {seed}: an answer that is not its own");
                        confirmed += 1;
                    }
                    Ok(Err(e)) => {
                        assert!(
                            reset_explains(e.kind()),
                            "seed {seed}: a failure no reset explains: {e}"
                        );
                        broken = true;
                    }
                }
            }
            handle.destroy();
            let _ = driver.await;
            continue 'connections;
        }
        drop(client);
        let _ = handle.push_shutdown();
        let _ = handle.flush().await;
        handle.destroy();
        let _ = driver.await;
    }
    (confirmed, failures)
}

fn soak_secs() -> u64 {
    std::env::var("ANYFRAME_SOAK_SECS")
        .ok()
        .map(|s| {
            s.parse()
                .expect("ANYFRAME_SOAK_SECS is a number of seconds")
        })
        .unwrap_or(60)
}

/// The soak. One test, so its cost in a normal run stays at a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_client_and_server_through_resets_lose_nothing_and_stay_flat() {
    let secs = soak_secs();
    let seed = proxy::seed("soak");
    let log = Arc::new(ServerLog::default());
    let server = json_server(log.clone()).await;
    // Half the connections reset, in one direction, within its first MiB.
    let proxy = Proxy::start(server, Faults::with_resets(seed, 0.5, 1 << 20)).await;
    let rss = RssSampler::start(Duration::from_secs(2));
    let start = Instant::now();
    let (answered, failures) =
        soak_client(proxy.addr, seed, start + Duration::from_secs(secs)).await;
    let elapsed = start.elapsed();
    let curve = rss.finish();

    let resets = proxy.stats.resets.load(Ordering::Relaxed);
    let connections = proxy.stats.connections.load(Ordering::Relaxed);
    println!(
        "soak: seed={seed} secs={:.0} answered={answered} ({:.0}/s) connections={connections} \
         resets={resets} stalls={} segments={} client_failures={failures:?} server_ends={:?}",
        elapsed.as_secs_f64(),
        answered as f64 / elapsed.as_secs_f64(),
        proxy.stats.stalls.load(Ordering::Relaxed),
        proxy.stats.segments.load(Ordering::Relaxed),
        log.ends.lock().unwrap(),
    );
    print!("soak: rss_kib");
    for (t, kib) in &curve {
        print!(" {t:.0}s={kib}");
    }
    println!();

    assert!(answered > 0, "seed {seed}: nothing answered");
    assert_eq!(
        log.out_of_order.load(Ordering::Relaxed),
        0,
        "seed {seed}: a server connection saw its ids out of order"
    );
    let failed: u64 = failures.values().sum();
    assert!(
        failed <= resets,
        "seed {seed}: {failed} client failures, only {resets} resets"
    );
    for kind in log.ends.lock().unwrap().keys() {
        assert!(
            kind == "ok" || kind == "Io" || kind == "BrokenPipe",
            "seed {seed}: a server connection ended with {kind}"
        );
    }
    // Flat: the last third's peak within 25% + 8 MiB of the first third's.
    if curve.len() >= 6 {
        let third = curve.len() / 3;
        let first = curve[..third].iter().map(|s| s.1).max().unwrap();
        let last = curve[curve.len() - third..]
            .iter()
            .map(|s| s.1)
            .max()
            .unwrap();
        let bound = first + first / 4 + 8 * 1024;
        assert!(
            last <= bound,
            "seed {seed}: RSS grew: first third peak {first} KiB, last third {last} KiB (bound {bound})"
        );
    }
}

/// A raw `Handle` pipeline through the proxy (no resets): each request is
/// a header line `id len` then `len` bytes; the server switches decoder per
/// request (a line, then a chunk of the length the line named) and answers
/// `id sum`. Every answer arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_handle_pipeline_switching_decoders_through_resegmentation() {
    const N: u64 = 2000;
    let seed = proxy::seed("raw_handle");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (h, driver) = QueuedFramed::new(s).spawn();
        let mut prev = String::new();
        for _ in 0..N {
            let head = h.read(LineCodec::new()).await.unwrap();
            let head = std::str::from_utf8(head.line())
                .unwrap_or_else(|_| {
                    panic!(
                        "header {:?} after {prev:?}",
                        String::from_utf8_lossy(&head.line()[..head.line().len().min(200)])
                    )
                })
                .to_owned();
            prev = head.clone();
            let (id, len) = head.split_once(' ').unwrap();
            let body = h.read(ChunkCodec::new(len.parse().unwrap())).await.unwrap();
            let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
            h.push_bytes(format!("{id} {sum}\n")).unwrap();
        }
        h.push_shutdown().unwrap();
        h.flush().await.unwrap();
        drop(h);
        let _ = driver.await;
    });
    let proxy = Proxy::start(addr, Faults::gentle(seed)).await;
    let (h, driver) = QueuedFramed::new(TcpStream::connect(proxy.addr).await.unwrap()).spawn();
    let mut rng = Rng::new(seed);
    let mut want = Vec::new();
    let mut tickets = Vec::new();
    for id in 0..N {
        let len = rng.size(64 * 1024) - 1;
        let body: Vec<u8> = (0..len).map(|i| (i as u64 ^ id) as u8).collect();
        want.push(format!(
            "{id} {}",
            body.iter().map(|&b| u64::from(b)).sum::<u64>()
        ));
        h.push_bytes(format!("{id} {len}\n")).unwrap();
        h.push_bytes(body).unwrap();
        tickets.push(h.push_read(LineCodec::new()));
    }
    for (want, t) in want.iter().zip(tickets) {
        let got = tokio::time::timeout(HANG, t)
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: answer {want} lost"))
            .unwrap();
        assert_eq!(got.line(), want.as_bytes(), "seed {seed}");
    }
    tokio::time::timeout(HANG, server).await.unwrap().unwrap();
    h.destroy();
    let _ = driver.await;
}

/// anyframe and AnyEvent::Handle through the proxy (no resets): the Perl
/// side echoes a line, then a chunk, alternately; we switch decoder to
/// match. Every echo arrives intact and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyevent_peer_echoes_line_and_chunk_through_resegmentation() {
    if !support::have_peer(
        "perl",
        &["-MAnyEvent::Handle", "-MJSON::XS", "-MCBOR::XS", "-e1"],
        "perl with AnyEvent::Handle, JSON::XS, CBOR::XS",
    ) {
        return;
    }
    const N: u64 = 300;
    let seed = proxy::seed("anyevent");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start(l.local_addr().unwrap(), Faults::gentle(seed)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ae_peer.pl");
    let mut perl = std::process::Command::new("perl")
        .arg(script)
        .arg("connect")
        .arg(proxy.addr.port().to_string())
        .arg(r#"{"watchdog": 120}"#)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run perl");
    let mut rng = Rng::new(seed);
    let mut items = Vec::new();
    {
        use std::io::Write;
        let stdin = perl.stdin.as_mut().unwrap();
        for i in 0..N {
            if i % 2 == 0 {
                let len = rng.size(16 * 1024);
                let line: String = (0..len)
                    .map(|j| (b'a' + ((j as u64 + i) % 26) as u8) as char)
                    .collect();
                writeln!(stdin, r#"["echo","line"]"#).unwrap();
                items.push((true, line.into_bytes()));
            } else {
                let len = rng.size(64 * 1024);
                let chunk: Vec<u8> = (0..len).map(|j| (j as u64 * 7 + i) as u8).collect();
                writeln!(stdin, r#"["echo","chunk",{len}]"#).unwrap();
                items.push((false, chunk));
            }
        }
        stdin.flush().unwrap();
    }
    let (s, _) = tokio::time::timeout(HANG, l.accept())
        .await
        .unwrap()
        .unwrap();
    let (h, driver) = QueuedFramed::new(s).spawn();
    let mut tickets = Vec::new();
    for (is_line, bytes) in &items {
        if *is_line {
            let mut l = bytes.clone();
            l.extend_from_slice(b"\r\n");
            h.push_bytes(l).unwrap();
            tickets.push(h.push_read_with(LineCodec::new(), |l, _| Ok(l.line().to_vec())));
        } else {
            h.push_bytes(bytes.clone()).unwrap();
            tickets.push(h.push_read_with(ChunkCodec::new(bytes.len()), |b, _| Ok(b.to_vec())));
        }
    }
    for (i, ((_, want), t)) in items.iter().zip(tickets).enumerate() {
        let got = tokio::time::timeout(HANG, t)
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: echo {i} lost"))
            .unwrap();
        assert!(got == *want, "seed {seed}: echo {i} differs");
    }
    h.destroy();
    let _ = driver.await;
    let _ = perl.kill();
    let _ = perl.wait();
}

/// The proxy itself (plain tokio sockets on both ends): with no reset
/// planned, every byte arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_every_byte_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seed = proxy::seed("proxy");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start(l.local_addr().unwrap(), Faults::gentle(seed)).await;
    let data: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8)
        .collect();
    let c = TcpStream::connect(proxy.addr).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    let check = |mut from: TcpStream, mut to: TcpStream, data: Vec<u8>| async move {
        let d = data.clone();
        let w = tokio::spawn(async move {
            to.write_all(&d).await.unwrap();
            to.shutdown().await.unwrap();
            to
        });
        let mut got = Vec::new();
        from.read_to_end(&mut got).await.unwrap();
        assert!(
            got == data,
            "seed {seed}: bytes differ ({} of {})",
            got.len(),
            data.len()
        );
        (from, w.await.unwrap())
    };
    let (s, c) = tokio::time::timeout(HANG, check(s, c, data.clone()))
        .await
        .unwrap();
    drop((s, c));
}

/// Writes queued on a `Handle` reach a slow reader over real TCP intact,
/// in order: many `push_bytes` of 0 to 64 KiB, the reader taking small
/// pieces with pauses so the writer meets backpressure and partial writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_reach_a_slow_reader_intact_under_backpressure() {
    use tokio::io::AsyncReadExt;
    let seed = proxy::seed("backpressure");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (h, driver) =
        QueuedFramed::new(TcpStream::connect(l.local_addr().unwrap()).await.unwrap()).spawn();
    let (mut s, _) = l.accept().await.unwrap();
    let mut rng = Rng::new(seed);
    let mut want = Vec::new();
    for id in 0..2000u64 {
        let len = rng.size(64 * 1024) - 1;
        let body: Vec<u8> = (0..len).map(|i| (i as u64 ^ id) as u8).collect();
        let head = format!("{id} {len}\n");
        want.extend_from_slice(head.as_bytes());
        want.extend_from_slice(&body);
        h.push_bytes(head).unwrap();
        h.push_bytes(body).unwrap();
    }
    h.push_shutdown().unwrap();
    let mut got = Vec::with_capacity(want.len());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let max = rng.size(buf.len());
        let n = tokio::time::timeout(HANG, s.read(&mut buf[..max]))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if rng.chance(0.05) {
            tokio::time::sleep(Duration::from_micros(rng.range(0, 3000))).await;
        }
    }
    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        got == want,
        "seed {seed}: {} bytes sent, {} received, first difference at {first_diff:?}",
        want.len(),
        got.len()
    );
    drop(h);
    let _ = driver.await;
}

/// More buffers queued by reference (1 KiB and up) than one vectored write
/// takes (63 and the tail), then a small item copied behind them: the
/// small item still goes out last. All are queued before the driver first
/// runs (one thread), and 200 KiB fits the loopback socket's buffer, so
/// the first write takes everything it is offered.
#[tokio::test]
async fn queued_writes_stay_in_order_with_more_than_63_large_buffers_queued() {
    use tokio::io::AsyncReadExt;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (h, driver) =
        QueuedFramed::new(TcpStream::connect(l.local_addr().unwrap()).await.unwrap()).spawn();
    let (mut s, _) = l.accept().await.unwrap();
    let mut want = Vec::new();
    for i in 0..200u8 {
        let buf = vec![i; 1024];
        want.extend_from_slice(&buf);
        h.push_bytes(buf).unwrap();
    }
    want.extend_from_slice(b"the end\n");
    h.push_bytes(&b"the end\n"[..]).unwrap();
    h.push_shutdown().unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(HANG, s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let at = got.windows(8).position(|w| w == b"the end\n");
    assert!(
        got == want,
        "the small item came out at byte {at:?}, not last ({} bytes sent)",
        want.len()
    );
    drop(h);
    let _ = driver.await;
}
