//! Load and memory: many idle handles, and many pipelining
//! connections through the tower server, all over loopback.
//!
//! The default `cargo test` run does small versions (a few seconds in
//! debug). The full figures are `#[ignore]`d; run them with
//!
//! ```text
//! cargo test --release --test load -- --ignored --nocapture --test-threads=1
//! ```
//!
//! which prints `load: ...` lines: heap bytes per idle handle (beyond the
//! socket's own, measured with a counting global allocator) and the
//! pipelined JSON throughput.
// One std mutex serialises the tests of this file, held across awaits on
// purpose (each test has its own runtime and thread).
#![allow(clippy::await_holding_lock)]

use std::convert::Infallible;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyframe::QueuedFramed;
use anyframe::codecs::{JsonCodec, LineCodec};
use anyframe::service::{Client, serve};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};

// ----- the counting allocator -------------------------------------------------

#[path = "support/counting.rs"]
mod counting;

use counting::{heap, peak, reset_peak, serial};

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

/// Raises the open-file limit to at least `want` (root may raise the hard
/// limit too). Returns why not, if it cannot.
fn raise_fd_limit(want: u64) -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
        return Ok(());
    }
    // Not allowed past the hard limit: take what there is.
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) };
    Err(format!(
        "RLIMIT_NOFILE is {} (hard {}), {want} needed: {}",
        lim.rlim_cur,
        lim.rlim_max,
        std::io::Error::last_os_error()
    ))
}

/// `n` connected loopback pairs: (ours, the peer's).
async fn pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        out.push((s.unwrap().0, c.unwrap()));
    }
    out
}

/// Lets spawned drivers run until they are idle.
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// Heap bytes per idle handle, beyond the socket's own (its tokio
/// registration is allocated before the baseline), in three states.
#[derive(Debug)]
struct IdleFigures {
    /// A `QueuedFramed` with nothing queued (inline use).
    inline: f64,
    /// A spawned handle (`Handle` + driver task) with nothing queued.
    spawned: f64,
    /// A spawned handle waiting for its next line (a server between
    /// requests): this holds the read buffer.
    waiting: f64,
}

/// The other ends of the idle connections: in this process, or (when the
/// two ends together need more descriptors than one process may have) in a
/// helper process.
// One value per test run: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Peers {
    Local(Vec<TcpStream>),
    Process {
        child: tokio::process::Child,
        stdin: tokio::process::ChildStdin,
        stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    },
}

impl Peers {
    /// Our ends of `n` loopback connections, and the peers.
    async fn connect(n: usize, separate_process: bool) -> (Vec<TcpStream>, Peers) {
        if !separate_process {
            let (ours, peers) = pairs(n).await.into_iter().unzip();
            return (ours, Peers::Local(peers));
        }
        use tokio::io::AsyncBufReadExt;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // This test binary again, running only the helper below.
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "load_peer_helper", "--nocapture"])
            .env(PEER_ENV, format!("{addr} {n}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("helper process");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut ours = Vec::with_capacity(n);
        for _ in 0..n {
            ours.push(l.accept().await.unwrap().0);
        }
        while let Some(line) = stdout.next_line().await.unwrap() {
            if line.starts_with("load-peer: connected") {
                break;
            }
        }
        (
            ours,
            Peers::Process {
                child,
                stdin,
                stdout,
            },
        )
    }

    /// Every peer sends `hi\n`.
    async fn say_hi(&mut self) {
        use tokio::io::AsyncWriteExt;
        match self {
            Peers::Local(peers) => {
                for p in peers {
                    p.write_all(b"hi\n").await.unwrap();
                }
            }
            Peers::Process { stdin, stdout, .. } => {
                stdin.write_all(b"hi\n").await.unwrap();
                stdin.flush().await.unwrap();
                while let Some(line) = stdout.next_line().await.unwrap() {
                    if line.starts_with("load-peer: said hi") {
                        break;
                    }
                }
            }
        }
    }

    /// Every peer sends `len` bytes of one JSON text that never ends.
    async fn send_partial_json(&mut self, len: usize) {
        use tokio::io::AsyncWriteExt;
        match self {
            Peers::Local(peers) => {
                let text = partial_json(len);
                for p in peers {
                    p.write_all(&text).await.unwrap();
                }
            }
            Peers::Process { stdin, stdout, .. } => {
                stdin
                    .write_all(format!("json {len}\n").as_bytes())
                    .await
                    .unwrap();
                stdin.flush().await.unwrap();
                while let Some(line) = stdout.next_line().await.unwrap() {
                    if line.starts_with("load-peer: sent json") {
                        break;
                    }
                }
            }
        }
    }

    async fn close(self) {
        if let Peers::Process {
            mut child, stdin, ..
        } = self
        {
            drop(stdin);
            child.wait().await.unwrap();
        }
    }
}

/// The environment variable that makes `load_peer_helper` connect.
const PEER_ENV: &str = "ANYFRAME_LOAD_PEER";

/// The helper process of the 10,000-connection tests: connects `n` sockets
/// to `addr` (both from [`PEER_ENV`]), says so, sends `hi\n` (stdin line
/// `hi`) or a partial JSON text (`json LEN`) on each when told to, and
/// exits at the end of stdin. Does nothing when run
/// without the variable.
#[test]
#[ignore = "helper process of the 10,000-connection tests"]
fn load_peer_helper() {
    use std::io::{BufRead, Write};
    let Ok(spec) = std::env::var(PEER_ENV) else {
        return;
    };
    let (addr, n) = spec.split_once(' ').unwrap();
    let n: usize = n.parse().unwrap();
    let _ = raise_fd_limit(n as u64 + 256);
    let mut socks: Vec<std::net::TcpStream> = (0..n)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    println!("load-peer: connected {n}");
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        if line == "hi" {
            for s in &mut socks {
                s.write_all(b"hi\n").unwrap();
            }
            println!("load-peer: said hi");
        } else if let Some(len) = line.strip_prefix("json ") {
            let text = partial_json(len.parse().unwrap());
            for s in &mut socks {
                s.write_all(&text).unwrap();
            }
            println!("load-peer: sent json");
        }
    }
}

async fn idle_handles(n: usize, separate_process: bool) -> IdleFigures {
    let (ours, mut peers) = Peers::connect(n, separate_process).await;
    settle().await;

    let base = heap();
    let inline: Vec<QueuedFramed<TcpStream>> = ours.into_iter().map(QueuedFramed::new).collect();
    let inline_bytes = heap().saturating_sub(base);

    let base = heap();
    // A plain loop, not `collect`: in-place collection would keep the
    // first vector's (larger) buffer and count it twice.
    let mut spawned = Vec::with_capacity(n);
    for q in inline {
        spawned.push(q.spawn());
    }
    settle().await;
    let spawned_bytes = heap().saturating_sub(base);

    let base = heap();
    let tickets: Vec<_> = spawned
        .iter()
        .map(|(h, _)| h.push_read(LineCodec::new()))
        .collect();
    settle().await;
    let waiting_bytes = heap().saturating_sub(base);

    // They all still work.
    peers.say_hi().await;
    for t in tickets {
        assert_eq!(t.await.unwrap().line(), b"hi");
    }
    for (h, _) in &spawned {
        h.destroy();
    }
    drop(spawned);
    peers.close().await;

    IdleFigures {
        inline: inline_bytes as f64 / n as f64,
        spawned: (inline_bytes + spawned_bytes) as f64 / n as f64,
        waiting: (inline_bytes + spawned_bytes + waiting_bytes) as f64 / n as f64,
    }
}

fn report_idle(n: usize, f: &IdleFigures) {
    println!(
        "load: idle handles n={n} bytes_per_handle inline={:.0} spawned={:.0} spawned_waiting_for_a_line={:.0}",
        f.inline, f.spawned, f.waiting
    );
}

#[tokio::test]
async fn a_thousand_idle_handles_cost_little_memory() {
    let _g = serial();
    let n = 1000;
    if let Err(why) = raise_fd_limit(2 * n as u64 + 256) {
        println!("SKIPPED: {why}");
        return;
    }
    let f = idle_handles(n, false).await;
    report_idle(n, &f);
    check_idle(&f);
}

/// The target: 2 KiB per idle handle beyond its socket. A handle with a
/// read pending also holds that request (its box, decoder, ticket and
/// queue slot: 616 bytes for a line read, in debug and release builds
/// alike), but no read buffer while nothing arrives.
fn check_idle(f: &IdleFigures) {
    assert!(f.inline <= 2048.0, "{f:?}");
    assert!(f.spawned <= 2048.0, "{f:?}");
    assert!(f.waiting - f.spawned <= 640.0, "{f:?}");
}

#[tokio::test]
#[ignore = "10,000 connections: run with --release --ignored --nocapture"]
async fn ten_thousand_idle_handles_memory_per_handle() {
    let _g = serial();
    let n = 10_000;
    // Both ends in this process need 2n descriptors; with a lower hard
    // limit the peers live in a helper process and we need n.
    let separate = raise_fd_limit(2 * n as u64 + 1024).is_err();
    if let Err(why) = raise_fd_limit(n as u64 + 1024) {
        println!("SKIPPED: {why}");
        return;
    }
    let f = idle_handles(n, separate).await;
    report_idle(n, &f);
    check_idle(&f);
}

// ----- pipelined JSON through the tower server ---------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Req {
    id: u64,
    op: String,
    args: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Resp {
    id: u64,
    sum: i64,
}

/// `conns` connections, each pipelining `per_conn` JSON requests through
/// `serve` with a `Client`; every answer is checked, in order. Returns
/// requests per second.
async fn pipelined_json(conns: usize, per_conn: usize) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut served = Vec::with_capacity(conns);
        for _ in 0..conns {
            let (s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let service = tower::service_fn(|r: Req| async move {
                Ok::<_, Infallible>(Resp {
                    id: r.id,
                    sum: r.args.iter().sum(),
                })
            });
            served.push(tokio::spawn(
                serve(
                    s,
                    JsonCodec::<Req>::new(),
                    JsonCodec::<Resp>::new(),
                    service,
                )
                .into_future(),
            ));
        }
        for s in served {
            s.await.unwrap().unwrap();
        }
    });

    let start = Instant::now();
    let mut clients = Vec::with_capacity(conns);
    for c in 0..conns {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        clients.push(tokio::spawn(async move {
            let (handle, driver) = QueuedFramed::new(stream).spawn();
            let mut client = Client::new(handle.clone(), JsonCodec::<Req>::new(), |_: &Req| {
                JsonCodec::<Resp>::new()
            });
            let mut calls = Vec::with_capacity(per_conn);
            for i in 0..per_conn as u64 {
                let req = Req {
                    id: i,
                    op: "sum".into(),
                    args: vec![i as i64, c as i64, -1],
                };
                calls.push(client.ready().await.unwrap().call(req));
            }
            for (i, call) in calls.into_iter().enumerate() {
                let i = i as i64;
                let resp = call.await.unwrap();
                assert_eq!(
                    resp,
                    Resp {
                        id: i as u64,
                        sum: i + c as i64 - 1
                    }
                );
            }
            drop(client);
            handle.push_shutdown().unwrap();
            handle.flush().await.unwrap();
            drop(handle);
            let _ = driver.await;
            per_conn
        }));
    }
    let mut answered = 0;
    for c in clients {
        answered += c.await.unwrap();
    }
    let elapsed = start.elapsed();
    server.await.unwrap();
    assert_eq!(answered, conns * per_conn);
    answered as f64 / elapsed.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_json_requests_are_all_answered_in_order() {
    let _g = serial();
    let rate = pipelined_json(20, 200).await;
    println!("load: pipelined json conns=20 requests_per_conn=200 throughput={rate:.0} req/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "1,000 x 1,000 requests: run with --release --ignored --nocapture"]
async fn a_thousand_connections_pipelining_a_thousand_json_requests_each() {
    let _g = serial();
    if let Err(why) = raise_fd_limit(2 * 1000 + 256) {
        println!("SKIPPED: {why}");
        return;
    }
    let rate = pipelined_json(1000, 1000).await;
    println!("load: pipelined json conns=1000 requests_per_conn=1000 throughput={rate:.0} req/s");
}

// ----- memory held for partial frames ---------------------------------------------

/// Sends `len` bytes of one JSON text that never ends (`["aaa…`) from a
/// reused chunk (the sender allocates nothing per write), then waits.
async fn send_partial_json(mut peer: tokio::io::DuplexStream, len: usize) {
    use tokio::io::AsyncWriteExt;
    let chunk = [b'a'; 16 * 1024];
    peer.write_all(b"[\"").await.unwrap();
    let mut left = len - 2;
    while left > 0 {
        let n = left.min(chunk.len());
        peer.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    std::future::pending::<()>().await;
}

async fn buffered_reaches(handle: &anyframe::Handle, len: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.with_read_buffer(|b| b.len()) < len {
        assert!(Instant::now() < deadline, "the partial frame never arrived");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Peak heap while one 8 MiB partial frame builds up in the read buffer:
/// at most 1.3 × (held bytes + one read), not the doubling of a growing
/// `Vec` (the capacity grows by what each read needs, or an eighth).
#[tokio::test]
async fn a_large_partial_frame_peaks_near_what_it_holds() {
    let _serial = serial();
    const LEN: usize = 8 * 1024 * 1024;
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (handle, _driver) = QueuedFramed::builder().rbuf_max(None).build(ours).spawn();
    let codec = anyframe::codecs::RawJsonCodec::builder()
        .max_size(2 * LEN)
        .build_raw();
    settle().await;
    let base = reset_peak();
    let pending = handle.push_read(codec);
    let sender = tokio::spawn(send_partial_json(theirs, LEN));
    buffered_reaches(&handle, LEN).await;
    let held = peak() - base;
    let bound = (1.3 * (LEN + anyframe::DEFAULT_MAX_READ_SIZE) as f64) as usize + 256 * 1024;
    println!("load: 8 MiB partial frame peak_heap={held} bound={bound}");
    assert!(held <= bound, "peak {held} over {bound}");
    drop(pending);
    sender.abort();
}

/// Many connections each holding a 60 KiB partial JSON text: heap per
/// connection at most 1.3 × (60 KiB + one read).
#[tokio::test]
async fn connections_holding_a_60k_partial_frame_cost_little_more_than_it() {
    let _serial = serial();
    const N: usize = 200;
    const LEN: usize = 60 * 1024;
    settle().await;
    let base = heap();
    let mut handles = Vec::with_capacity(N);
    let mut senders = Vec::with_capacity(N);
    for _ in 0..N {
        let (ours, theirs) = tokio::io::duplex(16 * 1024);
        let (handle, driver) = QueuedFramed::new(ours).spawn();
        let t = handle.push_read(JsonCodec::<serde_json::Value>::new());
        senders.push(tokio::spawn(send_partial_json(theirs, LEN)));
        handles.push((handle, driver, t));
    }
    for (h, _, _) in &handles {
        buffered_reaches(h, LEN).await;
    }
    settle().await;
    let per_conn = (heap().saturating_sub(base)) as f64 / N as f64;
    // The largest read a 60 KiB frame grows the read size to.
    let read = 64.0 * 1024.0;
    let bound = 1.3 * (LEN as f64 + read);
    println!(
        "load: {N} connections x 60 KiB partial JSON bytes_per_connection={per_conn:.0} bound={bound:.0}"
    );
    assert!(
        per_conn <= bound,
        "{per_conn:.0} bytes per connection, over {bound:.0}"
    );
    for s in senders {
        s.abort();
    }
    drop(handles);
}

/// `len` bytes of one JSON text that never ends: `["aaa…`.
fn partial_json(len: usize) -> Vec<u8> {
    let mut text = vec![b'a'; len];
    text[..2].copy_from_slice(b"[\"");
    text
}

// ----- real connections each mid-frame ---------------------------------------------

/// `n` loopback TCP connections, each with a JSON read pending and 60 KiB
/// of an unfinished JSON text received. Returns heap bytes per connection
/// beyond its socket (the tokio registrations are made before the
/// baseline); checks every connection still reads its frame when the peer
/// finishes it.
async fn mid_frame_connections(n: usize, separate_process: bool) -> f64 {
    const LEN: usize = 60 * 1024;
    let (ours, mut peers) = Peers::connect(n, separate_process).await;
    settle().await;
    let base = heap();
    let mut handles = Vec::with_capacity(n);
    for s in ours {
        let (h, driver) = QueuedFramed::new(s).spawn();
        let t = h.push_read(JsonCodec::<serde_json::Value>::new());
        handles.push((h, driver, t));
    }
    peers.send_partial_json(LEN).await;
    for (h, _, _) in &handles {
        buffered_reaches(h, LEN).await;
    }
    settle().await;
    let per_conn = heap().saturating_sub(base) as f64 / n as f64;
    for (h, _, _) in &handles {
        h.destroy();
    }
    for (_, driver, t) in handles {
        let _ = driver.await;
        assert_eq!(t.await.unwrap_err().kind(), anyframe::ErrorKind::Closed);
    }
    peers.close().await;
    per_conn
}

/// The bound: 1.3 × (the 60 KiB held + one read buffer, the largest read a
/// 60 KiB frame grows the read size to).
fn check_mid_frame(n: usize, flavor: &str, per_conn: f64) {
    let bound = 1.3 * (60.0 * 1024.0 + 64.0 * 1024.0);
    println!(
        "load: {n} tcp connections x 60 KiB partial JSON runtime={flavor} bytes_per_connection={per_conn:.0} bound={bound:.0}"
    );
    assert!(
        per_conn <= bound,
        "{per_conn:.0} bytes per connection, over {bound:.0}"
    );
}

#[tokio::test]
async fn a_thousand_tcp_connections_mid_frame_hold_little_more_than_their_bytes() {
    let _g = serial();
    let n = 1000;
    if let Err(why) = raise_fd_limit(2 * n as u64 + 256) {
        println!("SKIPPED: {why}");
        return;
    }
    let per_conn = mid_frame_connections(n, false).await;
    check_mid_frame(n, "current_thread", per_conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tcp_connections_mid_frame_multi_thread() {
    let _g = serial();
    let n = 1000;
    if let Err(why) = raise_fd_limit(2 * n as u64 + 256) {
        println!("SKIPPED: {why}");
        return;
    }
    let per_conn = mid_frame_connections(n, false).await;
    check_mid_frame(n, "multi_thread", per_conn);
}

/// The full 10,000: the peers in a helper process when one process may not
/// hold both ends.
async fn ten_thousand_mid_frame(flavor: &str) {
    let n = 10_000;
    let separate = raise_fd_limit(2 * n as u64 + 1024).is_err();
    if let Err(why) = raise_fd_limit(n as u64 + 1024) {
        println!("SKIPPED: {why}");
        return;
    }
    let per_conn = mid_frame_connections(n, separate).await;
    check_mid_frame(n, flavor, per_conn);
}

#[tokio::test]
#[ignore = "10,000 connections: run with --release --ignored --nocapture"]
async fn ten_thousand_tcp_connections_mid_frame_memory_per_connection() {
    let _g = serial();
    ten_thousand_mid_frame("current_thread").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10,000 connections: run with --release --ignored --nocapture"]
async fn ten_thousand_tcp_connections_mid_frame_multi_thread() {
    let _g = serial();
    ten_thousand_mid_frame("multi_thread").await;
}

// ----- a connection storm -----------------------------------------------------------

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `n` connections, at most 64 at once, each accepted into a spawned
/// handle that reads a line, answers it and closes (the server closes
/// first, so TIME_WAIT stays off the client's ephemeral ports).
async fn storm(l: &TcpListener, n: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = l.local_addr().unwrap();
    let clients = tokio::spawn(async move {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            if set.len() >= 64 {
                set.join_next().await.unwrap().unwrap();
            }
            set.spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(format!("{i}\n").as_bytes()).await.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                assert_eq!(got, format!("{i} ok\n").into_bytes());
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    });
    let mut served = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (s, _) = l.accept().await.unwrap();
        served.spawn(async move {
            let (h, driver) = QueuedFramed::new(s).spawn();
            let line = h.read(LineCodec::new()).await.unwrap();
            let mut answer = line.line().to_vec();
            answer.extend_from_slice(b" ok\n");
            h.push_bytes(answer).unwrap();
            h.push_shutdown().unwrap();
            h.flush().await.unwrap();
            drop(h);
            drop(driver.await.unwrap());
        });
        while served.try_join_next().is_some() {}
    }
    while let Some(r) = served.join_next().await {
        r.unwrap();
    }
    clients.await.unwrap();
}

/// Accepts and closes `n` connections after a warm-up (which sizes
/// tokio's registration slab and the allocator's pools): no descriptor and
/// no heap left behind.
async fn storm_leaves_nothing(n: usize, flavor: &str) {
    if let Err(why) = raise_fd_limit(1024) {
        println!("SKIPPED: {why}");
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    storm(&l, 1000).await;
    settle().await;
    let fds = open_fds();
    let base = heap();
    let start = Instant::now();
    storm(&l, n).await;
    let elapsed = start.elapsed();
    settle().await;
    let fds_after = open_fds();
    let grown = heap() as i64 - base as i64;
    println!(
        "load: connection storm n={n} runtime={flavor} conns_per_sec={:.0} fds_before={fds} fds_after={fds_after} heap_growth={grown}",
        n as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(fds_after, fds, "descriptors leaked");
    // Independent of n: a leak of even 8 bytes per connection shows.
    assert!(
        grown < 64 * 1024,
        "heap grew by {grown} bytes over {n} connections"
    );
}

#[tokio::test]
async fn a_storm_of_ten_thousand_connections_leaks_no_fd_or_memory() {
    let _g = serial();
    storm_leaves_nothing(10_000, "current_thread").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_ten_thousand_connections_multi_thread() {
    let _g = serial();
    storm_leaves_nothing(10_000, "multi_thread").await;
}

#[tokio::test]
#[ignore = "100,000 connections: run with --release --ignored --nocapture"]
async fn a_storm_of_a_hundred_thousand_connections_leaks_no_fd_or_memory() {
    let _g = serial();
    storm_leaves_nothing(100_000, "current_thread").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "100,000 connections: run with --release --ignored --nocapture"]
async fn a_storm_of_a_hundred_thousand_connections_multi_thread() {
    let _g = serial();
    storm_leaves_nothing(100_000, "multi_thread").await;
}
