//! The spawned `Handle` under concurrency: clones on a multi-thread
//! runtime, the inbox path (the engine held by the driver or a
//! completion), tickets dropped mid-response, shutdown and destroy races,
//! close and write-side waiters, linger, and the tower client.
#![cfg(feature = "tower")]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};
use std::time::Duration;

use anyframe::codecs::{ChunkCodec, LineCodec};
use anyframe::{ErrorKind, Handle, QueuedFramed};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

const WAIT: Duration = Duration::from_secs(10);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// A tiny deterministic PRNG (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A peer that echoes each line, writing each reply in two pieces with a
/// pause between them (so a reply is often half-buffered on our side).
fn split_echo(peer: DuplexStream, seed: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = Rng(seed | 1);
        let (rd, mut wr) = tokio::io::split(peer);
        let mut lines = BufReader::new(rd).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let reply = format!("{l}\n");
            let cut = 1 + rng.below(reply.len() as u64 - 1) as usize;
            if wr.write_all(&reply.as_bytes()[..cut]).await.is_err() {
                break;
            }
            if rng.below(4) == 0 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            } else {
                tokio::task::yield_now().await;
            }
            if wr.write_all(&reply.as_bytes()[cut..]).await.is_err() {
                break;
            }
        }
    })
}

/// A peer answering `len:<id>` requests with `<n>\n<payload of n bytes>`
/// (payload = the id repeated), in two pieces.
fn length_echo(peer: DuplexStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (rd, mut wr) = tokio::io::split(peer);
        let mut lines = BufReader::new(rd).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let payload = l.repeat(3);
            let reply = format!("{}\n{}", payload.len(), payload);
            let cut = reply.find('\n').unwrap() + 2;
            if wr.write_all(&reply.as_bytes()[..cut]).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
            if wr.write_all(&reply.as_bytes()[cut..]).await.is_err() {
                break;
            }
        }
    })
}

// ---------------------------------------------------------------------------
// 1. Pipelined calls from many clones: each gets its own answer.
// ---------------------------------------------------------------------------

/// Many tasks on clones `call` at once, over an echo that splits every
/// reply; a third of the tickets are dropped at once, a third after a
/// random short wait (often with half the reply buffered). Every ticket
/// awaited to the end must get exactly its own line (RQ §4 Cancellation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_with_dropped_tickets_get_their_own_answers() {
    let (ours, peer) = tokio::io::duplex(512);
    let _echo = split_echo(peer, 0x9e37_79b9);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x1234_5678 ^ ((t + 1) * 0x9e37));
            let mut ok = 0;
            for i in 0..300 {
                let msg = format!("t{t}-i{i}-{}", "x".repeat(rng.below(40) as usize));
                let mut ticket = h.call(LineCodec::new(), msg.as_str(), LineCodec::new());
                match rng.below(3) {
                    0 => drop(ticket),
                    1 => {
                        let wait = Duration::from_micros(rng.below(300));
                        match tokio::time::timeout(wait, &mut ticket).await {
                            Ok(r) => {
                                let got = r.expect("call");
                                assert_eq!(
                                    std::str::from_utf8(got.line()).unwrap(),
                                    msg,
                                    "a response handed to the wrong caller"
                                );
                                ok += 1;
                            }
                            Err(_) => drop(ticket),
                        }
                    }
                    _ => {
                        let got = tokio::time::timeout(WAIT, ticket)
                            .await
                            .expect("answer within the bound")
                            .expect("call");
                        assert_eq!(
                            std::str::from_utf8(got.line()).unwrap(),
                            msg,
                            "a response handed to the wrong caller"
                        );
                        ok += 1;
                    }
                }
            }
            ok
        }));
    }
    for t in tasks {
        within("caller task", t).await.unwrap();
    }
    assert!(!handle.is_closed());
}

/// As above with multi-read responses: `call_with` whose completion
/// unshifts the payload read (RQ-4); outer or inner tickets dropped at
/// random. Every inner ticket awaited gets its own payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_two_part_calls_with_dropped_tickets_stay_in_step() {
    let (ours, peer) = tokio::io::duplex(256);
    let _echo = length_echo(peer);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut tasks = Vec::new();
    for t in 0..6u64 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xdead_beef ^ ((t + 7) * 0x1000_0001));
            for i in 0..200 {
                let id = format!("c{t}.{i}");
                let outer =
                    h.call_with(LineCodec::new(), id.as_str(), LineCodec::new(), |len, q| {
                        let n: usize = std::str::from_utf8(len.line()).unwrap().parse().unwrap();
                        Ok(q.unshift_read(ChunkCodec::new(n)))
                    });
                match rng.below(4) {
                    0 => drop(outer),
                    1 => {
                        let inner = within("outer", outer).await.expect("outer");
                        drop(inner);
                    }
                    2 => {
                        let inner = within("outer", outer).await.expect("outer");
                        let mut inner = inner;
                        let _ =
                            tokio::time::timeout(Duration::from_micros(rng.below(100)), &mut inner)
                                .await;
                    }
                    _ => {
                        let inner = within("outer", outer).await.expect("outer");
                        let body = within("inner", inner).await.expect("inner");
                        assert_eq!(&body[..], id.repeat(3).as_bytes(), "out of step");
                    }
                }
            }
        }));
    }
    for t in tasks {
        within("caller task", t).await.unwrap();
    }
    // The stream is still in step for a fresh caller.
    let last = handle.call(LineCodec::new(), "last", LineCodec::new());
    let len = within("last", last).await.unwrap();
    assert_eq!(len.line(), b"12");
}

// ---------------------------------------------------------------------------
// 2. Write side: flush / drained / ready_to_write with many writers.
// ---------------------------------------------------------------------------

/// A slow reader: takes `chunk` bytes every `every`, until its input ends.
fn slow_reader(
    mut peer: DuplexStream,
    chunk: usize,
    every: Duration,
) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut all = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            match peer.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            tokio::time::sleep(every).await;
        }
        all
    })
}

/// `Handle::flush` "resolves once everything queued so far is written and
/// flushed". A second writer that keeps the queue between the watermarks
/// (it waits in `ready_to_write`, as a well-behaved producer does) means
/// the queue is never empty; the bytes queued before the flush are
/// written within milliseconds, but the flush waits for an empty queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_resolves_once_its_own_bytes_are_written_despite_another_writer() {
    let (ours, peer) = tokio::io::duplex(2048);
    let (handle, _driver) = QueuedFramed::builder()
        .watermarks(16 * 1024, 8 * 1024)
        .build(ours)
        .spawn();
    let reader = slow_reader(peer, 2048, Duration::from_millis(1));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let h = handle.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut pushed = 0usize;
            while !stop.load(Ordering::Relaxed) {
                h.ready_to_write().await.unwrap();
                h.push_bytes(vec![b'p'; 512]).unwrap();
                pushed += 512;
            }
            pushed
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.push_bytes(&b"<mine>"[..]).unwrap();
    let before = handle.write_buffered();
    // At ~2 MB/s the bytes before the flush leave in well under a second.
    let flushed = tokio::time::timeout(Duration::from_secs(3), handle.flush()).await;
    stop.store(true, Ordering::Relaxed);
    let _ = within("producer", producer).await;
    handle.destroy();
    drop(handle);
    let got = within("reader", reader).await.unwrap();
    assert!(
        got.windows(6).any(|w| w == b"<mine>"),
        "the flushed bytes reached the peer"
    );
    assert!(
        flushed.is_ok(),
        "flush() never resolved within 3 s although the {before} bytes queued before it \
         were written (the peer received them); it waits for an empty queue instead"
    );
}

/// `drained()` and `ready_to_write()` with many writers at once: every
/// waiter wakes once the peer reads; nothing is lost or reordered per writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_behind_watermarks_lose_nothing_and_keep_their_order() {
    let (ours, peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::builder()
        .watermarks(4096, 1024)
        .build(ours)
        .spawn();
    let reader = slow_reader(peer, 1024, Duration::from_micros(100));
    let mut tasks = Vec::new();
    for w in 0..6u32 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..400u32 {
                if i % 3 == 0 {
                    within("drained", h.drained()).await.unwrap();
                } else {
                    within("ready_to_write", h.ready_to_write()).await.unwrap();
                }
                h.push_write(LineCodec::new(), format!("w{w}:{i}").as_str())
                    .unwrap();
            }
            within("flush", h.flush()).await.unwrap();
        }));
    }
    for t in tasks {
        within("writer", t).await.unwrap();
    }
    handle.push_shutdown().unwrap();
    let got = within("reader", reader).await.unwrap();
    let text = String::from_utf8(got).unwrap();
    let mut next = [0u32; 6];
    for line in text.lines() {
        let (w, i) = line[1..].split_once(':').unwrap();
        let (w, i): (usize, u32) = (w.parse().unwrap(), i.parse().unwrap());
        assert_eq!(next[w], i, "writer {w} out of order");
        next[w] += 1;
    }
    assert_eq!(next, [400; 6], "every line arrived");
}

// ---------------------------------------------------------------------------
// 3. closed() / poll_closed.
// ---------------------------------------------------------------------------

/// Counts the polls of the future it wraps.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

/// More than 32 tasks waiting in `closed()` on an idle connection. The
/// waiters are woken "spuriously" once 32 are kept (`CLOSE_WAITERS_KEEP`);
/// each re-registers, which fills the list again and wakes everyone
/// again: idle waiters must not keep the CPU busy. Then `destroy` must
/// still wake every one of them (LC-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_closed_waiters_do_not_spin_and_all_wake_on_destroy() {
    let (ours, _peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let polls = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::new();
    for _ in 0..40 {
        let h = handle.clone();
        let polls = polls.clone();
        waiters.push(tokio::spawn(async move {
            Counted {
                inner: Box::pin(async { h.closed().await }),
                polls,
            }
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let settled = polls.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_polls = polls.load(Ordering::Relaxed) - settled;
    handle.destroy();
    for w in waiters {
        let e = within("closed()", w).await.unwrap();
        assert_eq!(e.kind(), ErrorKind::Closed);
    }
    assert!(
        idle_polls < 200,
        "40 closed() waiters on an idle connection were polled {idle_polls} times in 500 ms: \
         they wake each other in a loop"
    );
}

/// The tower client's `poll_ready` waits for a slot with `poll_closed`
/// (so it hears the connection's end). 40 clones waiting for the one slot
/// (held by a call the peer has not answered yet) are 40 close waiters:
/// they must not spin while they wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_client_clones_waiting_for_a_slot_do_not_spin() {
    use tower::ServiceExt;
    let (ours, _peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let client = anyframe::service::Client::builder().max_in_flight(1).build(
        handle.clone(),
        LineCodec::new(),
        (|_: &String| LineCodec::new()) as fn(&String) -> LineCodec,
    );
    // The one slot, taken before any waiter starts: a call the silent
    // peer never answers.
    let mut first = client.clone();
    first.ready().await.unwrap();
    let held = tokio::spawn(tower::Service::call(&mut first, "held".to_string()));
    let polls = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::new();
    for _ in 0..40 {
        let mut c = client.clone();
        let polls = polls.clone();
        waiters.push(tokio::spawn(async move {
            Counted {
                inner: Box::pin(async move { c.ready().await.map(|_| ()) }),
                polls,
            }
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let settled = polls.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_polls = polls.load(Ordering::Relaxed) - settled;
    handle.destroy();
    for w in waiters {
        let r = within("ready()", w).await.unwrap();
        assert!(
            r.is_err(),
            "the connection's end reaches a waiting poll_ready"
        );
    }
    assert!(within("held", held).await.unwrap().is_err());
    assert!(
        idle_polls < 200,
        "40 clients waiting for a slot were polled {idle_polls} times in 500 ms"
    );
}

// ---------------------------------------------------------------------------
// 4. push_shutdown / destroy racing with writers and callers.
// ---------------------------------------------------------------------------

/// Writers on plain threads (each push tries the engine's lock, else the
/// inbox) race `push_shutdown` from another thread. WQ-3/WQ-7: every push
/// that returned `Ok` reaches the peer, in order, before the half-close;
/// none that returned an error does; once one is refused, all later ones
/// of that writer are refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_shutdown_racing_writers_loses_nothing_accepted_and_writes_nothing_refused() {
    for round in 0..30u64 {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let (handle, driver) = QueuedFramed::new(ours).spawn();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.map(|_| all)
        });
        let go = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..3u32 {
            let h = handle.clone();
            let go = go.clone();
            writers.push(std::thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                let mut accepted = 0u32;
                let mut refused = false;
                for i in 0..3000u32 {
                    match h.push_write(LineCodec::new(), format!("w{w}:{i}").as_str()) {
                        Ok(()) => {
                            assert!(!refused, "writer {w}: push {i} accepted after a refusal");
                            accepted += 1;
                        }
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
                            refused = true;
                        }
                    }
                }
                accepted
            }));
        }
        let shutter = {
            let h = handle.clone();
            let go = go.clone();
            std::thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                for _ in 0..(round * 300) {
                    std::hint::spin_loop();
                }
                h.push_shutdown().unwrap();
            })
        };
        go.store(true, Ordering::Release);
        let accepted: Vec<u32> = tokio::task::spawn_blocking(move || {
            shutter.join().unwrap();
            writers.into_iter().map(|w| w.join().unwrap()).collect()
        })
        .await
        .unwrap();
        let got = within("peer reads to the half-close", reader)
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8(got).unwrap();
        let mut next = [0u32; 3];
        for line in text.lines() {
            let (w, i) = line[1..].split_once(':').unwrap();
            let (w, i): (usize, u32) = (w.parse().unwrap(), i.parse().unwrap());
            assert_eq!(
                next[w], i,
                "round {round}: writer {w} out of order or duplicated"
            );
            next[w] += 1;
        }
        assert_eq!(
            next.to_vec(),
            accepted,
            "round {round}: lines written vs pushes accepted"
        );
        drop(handle);
        let parts = within("driver", driver).await.unwrap();
        assert!(parts.write_buf.is_empty());
    }
}

/// `destroy` from one task while others `call` and `flush` on clones
/// (LC-1): every ticket and waiter resolves, each answer that comes is
/// the caller's own, `closed()` resolves, the driver ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_racing_calls_resolves_every_ticket_and_waiter() {
    for round in 0..20u64 {
        let (ours, peer) = tokio::io::duplex(512);
        let _echo = split_echo(peer, round + 11);
        // The echo stops reading once its replies fill the pipe: a short
        // linger, so the driver's end is not the 30 s default (LC-3).
        let (handle, driver) = QueuedFramed::builder()
            .linger(Duration::from_millis(200))
            .build(ours)
            .spawn();
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let h = handle.clone();
            tasks.push(tokio::spawn(async move {
                let mut tickets = Vec::new();
                for i in 0..200 {
                    let msg = format!("r{round}t{t}i{i}");
                    tickets.push((
                        msg.clone(),
                        h.call(LineCodec::new(), msg.as_str(), LineCodec::new()),
                    ));
                    if i % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                let f = h.flush();
                let closed = h.closed();
                for (msg, t) in tickets {
                    match within("ticket after destroy", t).await {
                        Ok(line) => assert_eq!(line.line(), msg.as_bytes(), "wrong answer"),
                        Err(e) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
                    }
                }
                let _ = within("flush after destroy", f).await;
                within("closed after destroy", closed).await
            }));
        }
        tokio::time::sleep(Duration::from_micros(200 * round)).await;
        handle.destroy();
        for t in tasks {
            let e = within("task", t).await.unwrap();
            assert_eq!(e.kind(), ErrorKind::Closed);
        }
        drop(handle);
        within("driver", driver).await.unwrap();
    }
}

// ---------------------------------------------------------------------------
// 5. Linger and parts: nothing accepted is lost.
// ---------------------------------------------------------------------------

/// Queues a read whose completion holds the engine (it blocks until told
/// to go on), so other threads' work goes to the inbox. Returns the
/// ticket, a receiver that says the completion runs, and the release.
fn hold_engine(handle: &Handle) -> (anyframe::Ticket<()>, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (inside_tx, inside_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let t = handle.push_read_with(LineCodec::new(), move |_, _| {
        let _ = inside_tx.send(());
        let _ = release_rx.lock().unwrap().recv_timeout(WAIT);
        Ok(())
    });
    (t, inside_rx, release_tx)
}

/// LC-3: the last `Handle` is dropped while the inbox holds a write
/// (posted while a completion held the engine). The write was accepted:
/// the driver lingers and the peer gets it, then the half-close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_handle_dropped_with_a_write_in_the_inbox_still_writes_it() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, driver) = QueuedFramed::new(ours).spawn();
    let (held, inside, release) = hold_engine(&handle);
    peer.write_all(b"go\n").await.unwrap();
    tokio::task::spawn_blocking(move || inside.recv_timeout(WAIT).unwrap())
        .await
        .unwrap();
    let last = handle.clone();
    drop(handle);
    let poster = std::thread::spawn(move || {
        last.push_write(LineCodec::new(), "posted").unwrap();
        let c = last.call(LineCodec::new(), "called", LineCodec::new());
        drop(c);
        drop(last); // the last handle: blocks until the engine is free
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();
    within("held completion", held).await.unwrap();
    tokio::task::spawn_blocking(move || poster.join().unwrap())
        .await
        .unwrap();
    let mut got = Vec::new();
    within("peer reads to the end", peer.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, b"posted\ncalled\n", "accepted output lingered out");
    let parts = within("driver", driver).await.unwrap();
    assert!(parts.write_buf.is_empty());
}

/// A transport that takes no output and has no input (a stalled peer).
struct Stuck;
impl tokio::io::AsyncRead for Stuck {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}
impl tokio::io::AsyncWrite for Stuck {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Pending
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

/// Many threads push onto a stalled connection until `wbuf_max` closes it
/// (OPT-9, ERR-2): what was accepted never exceeds the cap, every push
/// accepted is in the driver's parts (in per-writer order), none refused
/// is, and the one that crossed the cap is `ENOSPC`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wbuf_max_crossed_by_racing_writers_keeps_exactly_the_accepted_bytes() {
    for round in 0..2000 {
        let cap = 4000;
        let (handle, driver) = QueuedFramed::builder()
            .wbuf_max(Some(cap))
            .build(Stuck)
            .spawn();
        let go = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..3u32 {
            let h = handle.clone();
            let go = go.clone();
            writers.push(std::thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                let mut accepted = Vec::new();
                for i in 0..2000u32 {
                    let line = format!("w{w}:{i:04}");
                    let r = if i % 2 == 0 {
                        h.push_write(LineCodec::new(), line.as_str())
                    } else {
                        h.push_bytes(format!("{line}\n").into_bytes())
                    };
                    match r {
                        Ok(()) => accepted.push(i),
                        Err(e) => {
                            assert!(
                                matches!(e.kind(), ErrorKind::NoSpace | ErrorKind::Closed),
                                "{e}"
                            );
                            break;
                        }
                    }
                }
                accepted
            }));
        }
        go.store(true, Ordering::Release);
        let accepted: Vec<Vec<u32>> = tokio::task::spawn_blocking(move || {
            writers.into_iter().map(|w| w.join().unwrap()).collect()
        })
        .await
        .unwrap();
        assert_eq!(handle.error().map(|e| e.kind()), Some(ErrorKind::NoSpace));
        drop(handle);
        let parts = within("driver", driver).await.unwrap();
        let total: usize = accepted.iter().map(|a| a.len() * 8).sum();
        assert!(
            total <= cap,
            "round {round}: {total} bytes accepted over wbuf_max {cap} ({} in the parts)",
            parts.write_buf.len()
        );
        let text = String::from_utf8(parts.write_buf.to_vec()).unwrap();
        let mut got: Vec<Vec<u32>> = vec![Vec::new(); 3];
        for line in text.lines() {
            let (w, i) = line[1..].split_once(':').unwrap();
            got[w.parse::<usize>().unwrap()].push(i.parse().unwrap());
        }
        assert_eq!(got, accepted, "round {round}: parts vs accepted pushes");
    }
}

/// `detach` from one thread while others push and call (inbox and locked
/// paths): every push that returned `Ok` is either written to the peer or
/// in the parts, in order, with nothing duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_racing_writers_returns_every_accepted_byte() {
    for round in 0..20u64 {
        let (ours, mut peer) = tokio::io::duplex(4096);
        let (handle, driver) = QueuedFramed::new(ours).spawn();
        let go = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..3u32 {
            let h = handle.clone();
            let go = go.clone();
            writers.push(std::thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                let mut accepted = 0u32;
                for i in 0..3000u32 {
                    let line = format!("w{w}:{i:04}");
                    match h.push_write(LineCodec::new(), line.as_str()) {
                        Ok(()) => accepted += 1,
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
                            break;
                        }
                    }
                }
                accepted
            }));
        }
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut buf = vec![0u8; 1024];
            // Reads until the detach has happened and nothing more comes.
            loop {
                match tokio::time::timeout(Duration::from_millis(300), peer.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
                }
            }
            all
        });
        go.store(true, Ordering::Release);
        tokio::time::sleep(Duration::from_micros(100 * round)).await;
        handle.detach();
        let accepted: Vec<u32> = tokio::task::spawn_blocking(move || {
            writers.into_iter().map(|w| w.join().unwrap()).collect()
        })
        .await
        .unwrap();
        let parts = within("driver", driver).await.unwrap();
        let written = within("reader", reader).await.unwrap();
        let mut all = written.clone();
        all.extend_from_slice(&parts.write_buf);
        let text = String::from_utf8(all).unwrap();
        let mut next = [0u32; 3];
        for line in text.lines() {
            let (w, i) = line[1..].split_once(':').unwrap();
            let (w, i): (usize, u32) = (w.parse().unwrap(), i.parse().unwrap());
            assert_eq!(
                next[w], i,
                "round {round}: writer {w} out of order/duplicated"
            );
            next[w] += 1;
        }
        assert_eq!(
            next.to_vec(),
            accepted,
            "round {round}: accepted vs written+parts"
        );
    }
}

// ---------------------------------------------------------------------------
// 6. read_many and push_read from many tasks at once.
// ---------------------------------------------------------------------------

/// Four tasks read the same stream at once, with `read_many` (random
/// limits) and `push_read`: every line arrives exactly once, and each
/// task sees its lines in stream order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_many_and_push_read_lose_and_duplicate_nothing() {
    const N: u32 = 20_000;
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let feeder = tokio::spawn(async move {
        let mut rng = Rng(77);
        let mut text = Vec::new();
        for i in 0..N {
            text.extend_from_slice(format!("{i}\n").as_bytes());
        }
        let mut at = 0;
        while at < text.len() {
            let n = (1 + rng.below(300) as usize).min(text.len() - at);
            peer.write_all(&text[at..at + n]).await.unwrap();
            at += n;
        }
        peer
    });
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let h = handle.clone();
        let done = done.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(t * 31 + 5);
            let mut mine: Vec<u32> = Vec::new();
            while !done.load(Ordering::Acquire) {
                let got: Vec<u32> = if rng.below(2) == 0 {
                    let limit = 1 + rng.below(20) as usize;
                    match tokio::time::timeout(
                        Duration::from_millis(200),
                        h.read_many(LineCodec::new(), limit),
                    )
                    .await
                    {
                        Ok(r) => {
                            let (_, frames) = r.expect("read_many");
                            frames
                                .iter()
                                .map(|f| std::str::from_utf8(f.line()).unwrap().parse().unwrap())
                                .collect()
                        }
                        Err(_) => continue,
                    }
                } else {
                    let mut t = h.push_read(LineCodec::new());
                    match tokio::time::timeout(Duration::from_millis(200), &mut t).await {
                        Ok(r) => vec![
                            std::str::from_utf8(r.unwrap().line())
                                .unwrap()
                                .parse()
                                .unwrap(),
                        ],
                        Err(_) => continue,
                    }
                };
                let total = count.fetch_add(got.len(), Ordering::AcqRel) + got.len();
                mine.extend(got);
                if total >= N as usize {
                    done.store(true, Ordering::Release);
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let mine = within("reader task", t).await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "a task saw lines out of order"
        );
        all.extend(mine);
    }
    let _peer = within("feeder", feeder).await.unwrap();
    all.sort_unstable();
    let dups = all.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(dups, 0, "lines delivered twice");
    assert_eq!(all.len(), N as usize, "lines lost");
}

// ---------------------------------------------------------------------------
// 7. The tower client: clones, timeouts, futures dropped mid-flight.
// ---------------------------------------------------------------------------

/// An echo that answers each line after a random delay of up to `max_ms`.
fn slow_echo(peer: DuplexStream, max_ms: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = Rng(4242);
        let (rd, mut wr) = tokio::io::split(peer);
        let mut lines = BufReader::new(rd).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let d = rng.below(max_ms * 1000);
            if d > 0 {
                tokio::time::sleep(Duration::from_micros(d)).await;
            }
            let reply = format!("{l}\n");
            let cut = reply.len() / 2;
            if wr.write_all(&reply.as_bytes()[..cut]).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
            if wr.write_all(&reply.as_bytes()[cut..]).await.is_err() {
                break;
            }
        }
    })
}

/// Client clones in many tasks, `oneshot` futures dropped mid-flight by a
/// timeout (tower's `ServiceExt::oneshot`), a small in-flight bound: the
/// answers that come are the caller's own, slots always come back, and
/// the connection ends up usable and in step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_clones_with_calls_dropped_mid_flight_stay_in_step() {
    use tower::ServiceExt;
    let (ours, peer) = tokio::io::duplex(512);
    let _echo = slow_echo(peer, 2);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let client = anyframe::service::Client::builder().max_in_flight(8).build(
        handle.clone(),
        LineCodec::new(),
        (|_: &String| LineCodec::new()) as fn(&String) -> LineCodec,
    );
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(t * 1_000_003 + 9);
            let mut answered = 0;
            for i in 0..60 {
                let msg = format!("k{t}.{i}");
                let wait = Duration::from_micros(rng.below(4000));
                match tokio::time::timeout(wait, c.clone().oneshot(msg.clone())).await {
                    Ok(Ok(line)) => {
                        assert_eq!(line.line(), msg.as_bytes(), "wrong caller's answer");
                        answered += 1;
                    }
                    Ok(Err(e)) => panic!("call failed: {e}"),
                    Err(_) => {}
                }
            }
            answered
        }));
    }
    for t in tasks {
        within("client task", t).await.unwrap();
    }
    // Every slot comes back and the stream is in step.
    let mut probe = client.clone();
    for i in 0..8 {
        let msg = format!("final{i}");
        let r = within("final call", async {
            tower::ServiceExt::ready(&mut probe).await?;
            tower::Service::call(&mut probe, msg.clone()).await
        })
        .await
        .unwrap();
        assert_eq!(r.line(), msg.as_bytes());
    }
}

// ---------------------------------------------------------------------------
// 8. Timeouts with many callers and waiters.
// ---------------------------------------------------------------------------

/// A read timeout shorter than the peer's answer time, many callers at
/// once (TO-3, TO-6): a call is told `ETIMEDOUT` (its late answer is read
/// and dropped), or the connection closes with a fatal timeout; a call
/// that gets an answer gets its own. Nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeouts_with_many_callers_never_hand_out_a_wrong_answer() {
    let (ours, peer) = tokio::io::duplex(1024);
    let _echo = slow_echo(peer, 8);
    let (handle, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(5))
        .build(ours)
        .spawn();
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut timed_out) = (0, 0);
            for i in 0..80 {
                let msg = format!("q{t}.{i}");
                match within(
                    "call",
                    h.call(LineCodec::new(), msg.as_str(), LineCodec::new()),
                )
                .await
                {
                    Ok(line) => {
                        assert_eq!(line.line(), msg.as_bytes(), "wrong caller's answer");
                        ok += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::TimedOut && !e.is_fatal() => timed_out += 1,
                    Err(e) => {
                        assert!(e.is_fatal(), "{e}");
                        return (ok, timed_out, Some(e));
                    }
                }
            }
            (ok, timed_out, None)
        }));
    }
    for t in tasks {
        let (_ok, _to, fatal) = within("caller", t).await.unwrap();
        if let Some(e) = fatal {
            assert!(
                matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::Closed),
                "unexpected fatal error {e}"
            );
        }
    }
}

/// TO-3: a write timeout on a stalled peer reaches every write-side waiter
/// (`flush`, `drained`, `ready_to_write`) of many tasks, as a non-fatal
/// `ETIMEDOUT`, within a few periods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_timeout_reaches_every_write_side_waiter() {
    let (ours, _peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::builder()
        .watermarks(100, 0)
        .wtimeout(Duration::from_millis(200))
        .build(ours)
        .spawn();
    handle.push_bytes(vec![b'x'; 10_000]).unwrap();
    let mut tasks = Vec::new();
    for t in 0..24 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            let r = match t % 3 {
                0 => h.flush().await,
                1 => h.drained().await,
                _ => h.ready_to_write().await,
            };
            (t, r)
        }));
    }
    for task in tasks {
        let (t, r) = tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .unwrap_or_else(|_| panic!("a write-side waiter never heard the write timeout"))
            .unwrap();
        let e = r.expect_err("the peer takes nothing");
        assert_eq!(e.kind(), ErrorKind::TimedOut, "waiter {t}: {e}");
        assert!(!e.is_fatal(), "waiter {t}: {e}");
    }
    assert!(!handle.is_closed());
}

// ---------------------------------------------------------------------------
// 9. Panics and the driver.
// ---------------------------------------------------------------------------

/// A completion panics on the driver while other threads post reads,
/// writes and calls: every ticket resolves with `Panicked` (or `Closed`),
/// later pushes are refused, and the panic reaches whoever awaits the
/// driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_panic_while_others_post_resolves_everything() {
    use futures::FutureExt;
    for _ in 0..10 {
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let (handle, driver) = QueuedFramed::new(ours).spawn();
        let boom = handle.push_read_with(LineCodec::new(), |_, _| -> anyframe::Result<()> {
            std::thread::sleep(Duration::from_millis(2));
            panic!("deliberate completion panic")
        });
        let go = Arc::new(AtomicBool::new(false));
        let mut posters = Vec::new();
        for p in 0..2 {
            let h = handle.clone();
            let go = go.clone();
            posters.push(std::thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                let mut tickets = Vec::new();
                for i in 0..300 {
                    let _ = h.push_write(LineCodec::new(), format!("p{p}.{i}").as_str());
                    tickets.push(h.push_read(LineCodec::new()));
                    tickets.push(h.call(LineCodec::new(), "c", LineCodec::new()));
                }
                tickets
            }));
        }
        go.store(true, Ordering::Release);
        peer.write_all(b"trigger\n").await.unwrap();
        let tickets: Vec<_> = tokio::task::spawn_blocking(move || {
            posters
                .into_iter()
                .flat_map(|p| p.join().unwrap())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        assert_eq!(
            within("boom", boom).await.unwrap_err().kind(),
            ErrorKind::Panicked
        );
        for t in tickets {
            let e = within("posted ticket", t).await.unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::Panicked | ErrorKind::Closed),
                "{e}"
            );
        }
        let e = handle.push_write(LineCodec::new(), "late").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Panicked);
        let outcome = within(
            "driver",
            std::panic::AssertUnwindSafe(driver).catch_unwind(),
        )
        .await;
        assert!(outcome.is_err(), "the panic reaches the driver");
    }
}

/// The only other handle is captured by a queued read's completion: once
/// the caller drops its own handle and that read's ticket, nobody can
/// use the connection; it must end (the driver resolves) instead of
/// idling for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_captured_by_an_abandoned_read_does_not_keep_the_connection_alive() {
    let (ours, _peer) = tokio::io::duplex(64);
    let (handle, driver) = QueuedFramed::builder()
        .linger(Duration::from_millis(50))
        .build(ours)
        .spawn();
    let captured = handle.clone();
    let t = handle.push_read_with(LineCodec::new(), move |f, _| {
        let _keep = &captured;
        Ok(f)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(handle);
    drop(t);
    let r = tokio::time::timeout(Duration::from_secs(3), driver).await;
    assert!(
        r.is_ok(),
        "the driver never ended: the connection is unreachable but alive"
    );
}

/// `Handle::read_many` with a limit of 0 takes nothing, as the inline
/// `read_many` (`Ok` with no frames at once).
#[tokio::test]
async fn handle_read_many_with_limit_zero_takes_no_frame() {
    use tokio::io::AsyncWriteExt;
    let (io, mut peer) = tokio::io::duplex(64);
    let (handle, _driver) = anyframe::QueuedFramed::new(io).spawn();
    peer.write_all(b"a\nb\n").await.unwrap();
    let (_, none) = handle
        .read_many(anyframe::codecs::LineCodec::new(), 0)
        .await
        .unwrap();
    assert!(none.is_empty(), "{} frames", none.len());
    let first = handle
        .read(anyframe::codecs::LineCodec::new())
        .await
        .unwrap();
    assert_eq!(first.line(), b"a");
}
