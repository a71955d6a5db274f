//! A `QueuedFramed` split into `Sink` and `Stream` halves (futures'
//! `StreamExt::split`) over loopback TCP, in orderings chosen to break it:
//! a half given up or dropped mid-wait, a flush running the reads in front
//! of a STARTTLS or stoptls, both halves in one task, a peer that resets.
//! Each case checks for hangs, busy loops, lost or reordered bytes, and
//! timeouts told to the wrong half (docs/semantics.md, WQ-1 and TO-3).
#![cfg(any(feature = "tls", feature = "rustls"))]

mod support;

#[path = "support/pki.rs"]
mod pki;
#[path = "support/split.rs"]
mod split;

use split::{counted, counter, pair, within};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::tls::{TlsBackend, TlsServer};
use anyframe::{QueuedFramed, Timeout};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::BytesCodec;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn server_on(b: TlsBackend) -> TlsServer {
    pki::server_on(b, &pki::pki().server)
}

// ======================================================================
// TLS: the Sink half's flush reads for the Stream half, then gives up.
// ======================================================================

/// A STARTTLS queued behind a read, output behind the STARTTLS. The Stream
/// half waits first (it runs the queued read), then the Sink half's flush
/// runs the same queue from its own task (reading the socket, so the
/// socket's read wake-up now belongs to the Sink half's task), and gives
/// its flush up (a `select!`/timeout). The peer then says GO, upgrades,
/// reads "after" and says "hello". The Stream half is the only one still
/// waiting; it must hear "hello".
#[derive(Clone, Copy, Debug, PartialEq)]
enum Flusher {
    /// Gives the flush up after 100 ms and keeps the half, idle.
    GivesUp,
    /// Gives the flush up after 100 ms and drops the `Sink` half.
    DropsHalf,
    /// Control: keeps flushing.
    KeepsFlushing,
}

async fn stream_hears_input_after_sink_flush_gave_up_on(
    b: TlsBackend,
    read_first: bool,
    how: Flusher,
) {
    let (c, s) = pair().await;
    let mut client = QueuedFramed::with_codec(c, LineCodec::new());
    let go = if read_first {
        Some(client.push_read(LineCodec::new()))
    } else {
        None
    };
    let upgraded = client.push_starttls(pki::client_on(b));
    client.push_write(LineCodec::new(), "after").unwrap();
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(client);
    let reader = tokio::spawn(async move {
        let line = stream.next().await;
        (line.map(|l| l.map(|l| l.line().to_vec())), stream)
    });
    tokio::time::sleep(MS(50)).await;
    // The Sink half flushes, from another task, and gives up after 100 ms.
    let flusher = tokio::spawn(async move {
        if how == Flusher::KeepsFlushing {
            SinkExt::<&'static str>::flush(&mut sink).await.unwrap();
            return;
        }
        let r = tokio::time::timeout(MS(100), SinkExt::<&'static str>::flush(&mut sink)).await;
        assert!(r.is_err(), "the flush cannot finish yet: {r:?}");
        if how == Flusher::DropsHalf {
            drop(sink);
            return;
        }
        // The task goes on with other work, keeping the half.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(sink);
    });
    tokio::time::sleep(MS(200)).await;
    let server = async {
        let mut server = QueuedFramed::new(s);
        if read_first {
            server.write(LineCodec::new(), "GO").await.unwrap();
        }
        server.starttls(server_on(b)).await.unwrap();
        let after = server.read(LineCodec::new()).await.unwrap();
        assert_eq!(after.line(), b"after");
        server.write(LineCodec::new(), "hello").await.unwrap();
        server
    };
    let _server = within(
        Duration::from_secs(5),
        &format!(
            "{b:?} read_first={read_first} {how:?}: server (nobody drives the client's STARTTLS)"
        ),
        server,
    )
    .await;
    if let Some(go) = go {
        assert_eq!(within(MS(1000), "go", go).await.unwrap().line(), b"GO");
    }
    within(MS(1000), "upgraded", upgraded).await.unwrap();
    let (line, _stream) = within(MS(3000), "the stream half hears hello", reader)
        .await
        .unwrap();
    assert_eq!(line.map(|l| l.unwrap()), Some(b"hello".to_vec()), "{b:?}");
    flusher.abort();
}

/// Runs the case for every backend (each in its own task, so one
/// backend's failure does not hide the other's) and fails listing them.
async fn on_every_backend(read_first: bool, how: Flusher) {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let case = tokio::spawn(stream_hears_input_after_sink_flush_gave_up_on(
            b, read_first, how,
        ));
        if case.await.is_err() {
            failed.push(b);
        }
    }
    assert!(failed.is_empty(), "failed on {failed:?}");
}

#[tokio::test]
async fn tls_stream_hears_input_after_sink_flush_behind_a_read_gave_up() {
    on_every_backend(true, Flusher::GivesUp).await;
}

#[tokio::test]
async fn tls_stream_hears_input_after_sink_flush_behind_a_read_dropped_sink() {
    on_every_backend(true, Flusher::DropsHalf).await;
}

#[tokio::test]
async fn tls_stream_hears_input_after_sink_flush_driving_starttls_gave_up() {
    on_every_backend(false, Flusher::GivesUp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_stream_hears_input_after_sink_flush_gave_up_multi_thread() {
    on_every_backend(true, Flusher::GivesUp).await;
}

/// Control for the three above: the flush keeps waiting (passes).
#[tokio::test]
async fn tls_control_stream_hears_input_while_sink_keeps_flushing() {
    for &b in pki::BACKENDS {
        stream_hears_input_after_sink_flush_gave_up_on(b, true, Flusher::KeepsFlushing).await;
        stream_hears_input_after_sink_flush_gave_up_on(b, false, Flusher::KeepsFlushing).await;
    }
}

/// Same queue, but the Sink half flushes first and the Stream half polls
/// later; both keep waiting. Everything completes.
async fn sink_first_then_stream_on(b: TlsBackend, read_first: bool) {
    let (c, s) = pair().await;
    let mut client = QueuedFramed::with_codec(c, LineCodec::new());
    let go = read_first.then(|| client.push_read(LineCodec::new()));
    let upgraded = client.push_starttls(pki::client_on(b));
    client.push_write(LineCodec::new(), "after").unwrap();
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(client);
    let flusher = tokio::spawn(async move {
        SinkExt::<&'static str>::flush(&mut sink)
            .await
            .map(|()| sink)
    });
    tokio::time::sleep(MS(50)).await;
    let reader = tokio::spawn(async move {
        let line = stream.next().await;
        (line.map(|l| l.map(|l| l.line().to_vec())), stream)
    });
    tokio::time::sleep(MS(50)).await;
    let server = async {
        let mut server = QueuedFramed::new(s);
        if read_first {
            server.write(LineCodec::new(), "GO").await.unwrap();
        }
        server.starttls(server_on(b)).await.unwrap();
        let after = server.read(LineCodec::new()).await.unwrap();
        assert_eq!(after.line(), b"after");
        server.write(LineCodec::new(), "hello").await.unwrap();
        server
    };
    let _server = within(Duration::from_secs(5), "server", server).await;
    if let Some(go) = go {
        assert_eq!(within(MS(1000), "go", go).await.unwrap().line(), b"GO");
    }
    within(MS(1000), "upgraded", upgraded).await.unwrap();
    let _sink = within(MS(2000), "flush", flusher).await.unwrap().unwrap();
    let (line, _stream) = within(MS(2000), "reader", reader).await.unwrap();
    assert_eq!(line.map(|l| l.unwrap()), Some(b"hello".to_vec()), "{b:?}");
}

#[tokio::test]
async fn tls_sink_flush_first_then_stream_behind_a_read() {
    for &b in pki::BACKENDS {
        sink_first_then_stream_on(b, true).await;
    }
}

#[tokio::test]
async fn tls_sink_flush_first_then_stream_starttls_at_head() {
    for &b in pki::BACKENDS {
        sink_first_then_stream_on(b, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sink_flush_first_then_stream_multi_thread() {
    for &b in pki::BACKENDS {
        sink_first_then_stream_on(b, true).await;
        sink_first_then_stream_on(b, false).await;
    }
}

/// The Stream half waits, then gives its wait up; the Sink half's flush
/// alone must run the read, the STARTTLS and write "after"; afterwards the
/// Stream half (polled again) reads "hello".
async fn sink_flush_alone_after_stream_gave_up_on(b: TlsBackend) {
    let (c, s) = pair().await;
    let mut client = QueuedFramed::with_codec(c, LineCodec::new());
    let (go, upgraded) = support::read_then_starttls(&mut client, pki::client_on(b));
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(client);
    let flusher = tokio::spawn(async move {
        SinkExt::<&'static str>::flush(&mut sink)
            .await
            .map(|()| sink)
    });
    tokio::time::sleep(MS(50)).await;
    // The Stream half polls (taking the read wake-up) and gives up.
    let gave_up = tokio::time::timeout(MS(50), stream.next()).await;
    assert!(gave_up.is_err());
    let server = async {
        let mut server = QueuedFramed::new(s);
        server.write(LineCodec::new(), "GO").await.unwrap();
        server.starttls(server_on(b)).await.unwrap();
        let after = server.read(LineCodec::new()).await.unwrap();
        assert_eq!(after.line(), b"after");
        server.write(LineCodec::new(), "hello").await.unwrap();
        server
    };
    let _server = within(
        Duration::from_secs(5),
        &format!("{b:?}: server (the Sink half's flush does not run the queue)"),
        server,
    )
    .await;
    assert_eq!(within(MS(1000), "go", go).await.unwrap().line(), b"GO");
    within(MS(1000), "upgraded", upgraded).await.unwrap();
    let _sink = within(MS(2000), "flush", flusher).await.unwrap().unwrap();
    let line = within(MS(2000), "stream", stream.next()).await;
    assert_eq!(
        line.map(|l| l.unwrap().line().to_vec()),
        Some(b"hello".to_vec())
    );
}

#[tokio::test]
async fn tls_sink_flush_alone_after_stream_gave_up() {
    for &b in pki::BACKENDS {
        sink_flush_alone_after_stream_gave_up_on(b).await;
    }
}

/// Both halves in one task via `FuturesUnordered` (each with its own
/// waker, so the halves' wake-ups of each other are real), STARTTLS behind
/// a read, silent peer: no loop.
#[tokio::test]
async fn tls_futures_unordered_halves_on_silent_peer_not_busy() {
    let b = pki::BACKENDS[0];
    let (c, _s) = pair().await;
    let mut client = QueuedFramed::with_codec(c, LineCodec::new());
    let (_go, _up) = support::read_then_starttls(&mut client, pki::client_on(b));
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(client);
    let (sp, rp) = (counter(), counter());
    let (sp2, rp2) = (sp.clone(), rp.clone());
    let task = tokio::spawn(async move {
        let mut set: FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> =
            FuturesUnordered::new();
        set.push(Box::pin(async move {
            let _ = std::future::poll_fn(|cx| {
                sp2.fetch_add(1, Ordering::SeqCst);
                SinkExt::<&'static str>::poll_flush_unpin(&mut sink, cx)
            })
            .await;
        }));
        set.push(Box::pin(async move {
            let _ = counted(stream.next(), rp2).await;
        }));
        while set.next().await.is_some() {}
    });
    tokio::time::sleep(MS(500)).await;
    let (s, r) = (sp.load(Ordering::SeqCst), rp.load(Ordering::SeqCst));
    assert!(!task.is_finished());
    assert!(
        s <= 20 && r <= 20,
        "{s} polls of the sink, {r} of the stream"
    );
    task.abort();
}

/// Timeouts with the flush reading for queued reads: wtimeout only. The
/// Sink half's flush (waiting behind STARTTLS behind a read) hears the
/// write timeout; the waiting Stream half hears nothing, the queued read
/// nothing.
#[tokio::test]
async fn tls_write_timeout_goes_to_the_flush_reading_for_queued_reads() {
    let b = pki::BACKENDS[0];
    let (c, _s) = pair().await;
    let mut client = QueuedFramed::builder()
        .wtimeout(MS(300))
        .build_with_codec(c, LineCodec::new());
    let (go, _up) = support::read_then_starttls(&mut client, pki::client_on(b));
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(client);
    let reader = tokio::spawn(async move {
        let r = tokio::time::timeout(MS(1000), stream.next()).await;
        r.map(|o| {
            o.map(|r| {
                r.map(|l| l.line().to_vec())
                    .map_err(|e| (e.timeout(), e.to_string()))
            })
        })
    });
    tokio::time::sleep(MS(20)).await;
    let flusher = tokio::spawn(async move {
        let r = tokio::time::timeout(MS(1000), SinkExt::<&'static str>::flush(&mut sink)).await;
        r.map(|r| r.map_err(|e| e.timeout()))
    });
    let mut go = go;
    let f = within(MS(3000), "flusher", flusher).await.unwrap();
    // Right when the flush heard it (a period later, with no write side
    // waiting, the Stream half takes the next one for the head read, as
    // documented).
    let g = tokio::time::timeout(MS(10), &mut go).await;
    assert_eq!(
        f,
        Ok(Err(Some(Timeout::Write))),
        "the flush hears the write timeout"
    );
    assert!(
        g.is_err(),
        "the queued read hears nothing with the flush: {g:?}"
    );
    let r = within(MS(3000), "reader", reader).await.unwrap();
    assert!(r.is_err(), "the Stream half hears nothing: {r:?}");
}

/// rtimeout only: the queued read at the head hears the read timeout (TO-3);
/// the flush reading for it must not get it.
#[tokio::test]
async fn tls_read_timeout_goes_to_the_head_read_not_the_flush() {
    let b = pki::BACKENDS[0];
    let (c, _s) = pair().await;
    let mut client = QueuedFramed::builder()
        .rtimeout(MS(300))
        .build_with_codec(c, LineCodec::new());
    let (go, _up) = support::read_then_starttls(&mut client, pki::client_on(b));
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(client);
    let flusher = tokio::spawn(async move {
        let r = tokio::time::timeout(MS(450), SinkExt::<&'static str>::flush(&mut sink)).await;
        r.map(|r| r.map_err(|e| e.timeout()))
    });
    tokio::time::sleep(MS(20)).await;
    let reader = tokio::spawn(async move {
        let r = tokio::time::timeout(MS(450), stream.next()).await;
        r.map(|o| o.map(|r| r.map(|l| l.line().to_vec()).map_err(|e| e.timeout())))
    });
    let g = within(MS(2000), "go", go).await;
    assert_eq!(
        g.map_err(|e| e.timeout()).map(|l| l.line().to_vec()),
        Err(Some(Timeout::Read))
    );
    let f = within(MS(2000), "flusher", flusher).await.unwrap();
    assert!(f.is_err(), "the flush hears no read timeout: {f:?}");
    let r = within(MS(2000), "reader", reader).await.unwrap();
    // The Stream half waits behind the queue: it may hear a later read
    // timeout (a whole period after the first) but not the first.
    assert!(r.is_err(), "the Stream half: {r:?}");
}

// ======================================================================
// Plain TCP.
// ======================================================================

const FRAMES: usize = 32;
const FRAME: usize = 256 * 1024;

#[derive(Clone, Copy, Debug)]
struct Opts {
    autocork: bool,
    high: usize,
    low: usize,
    close: bool,
}

/// Sink: `FRAMES` big frames via `feed`, then `close` (or `flush`).
/// Stream half: waits for input in its own task. Peer: reads only after a
/// delay. Expected: all bytes reach the peer, in order, then (close) EOF;
/// then the peer's line reaches the Stream half.
async fn sink_close_while_stream_waits(o: Opts) {
    let (ours, mut peer) = pair().await;
    let conn = QueuedFramed::builder()
        .autocork(o.autocork)
        .watermarks(o.high, o.low)
        .build_with_codec(ours, BytesCodec::new());
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let sender = tokio::spawn(async move {
        for i in 0..FRAMES {
            sink.feed(Bytes::from(vec![b'a' + (i % 26) as u8; FRAME]))
                .await?;
        }
        if o.close {
            sink.close().await?;
        } else {
            sink.flush().await?;
        }
        Ok::<_, anyframe::Error>(sink)
    });
    tokio::time::sleep(MS(100)).await;
    let reader = tokio::spawn(async move {
        let f = stream.next().await;
        (f.map(|f| f.map(|b| b.to_vec())), stream)
    });
    tokio::time::sleep(MS(100)).await;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    let read_all = async {
        while total < FRAMES * FRAME {
            let n = peer.read(&mut buf).await.expect("peer read");
            assert!(n > 0, "{o:?}: EOF after {total}");
            for (k, &byte) in buf[..n].iter().enumerate() {
                let at = total + k;
                let want = b'a' + ((at / FRAME) % 26) as u8;
                assert_eq!(byte, want, "{o:?}: byte {at} wrong");
            }
            total += n;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .is_err()
    {
        panic!("{o:?}: the peer got {total} bytes of {}", FRAMES * FRAME);
    }
    if o.close {
        let n = within(MS(3000), "EOF after close", peer.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(n, 0, "{o:?}: EOF after the data");
    }
    let _sink = within(MS(3000), &format!("{o:?}: sender"), sender)
        .await
        .unwrap()
        .unwrap();
    peer.write_all(b"hello").await.unwrap();
    let (f, _stream) = within(MS(3000), &format!("{o:?}: stream half hears hello"), reader)
        .await
        .unwrap();
    assert_eq!(f.map(|f| f.unwrap()), Some(b"hello".to_vec()));
}

fn all_opts() -> Vec<Opts> {
    let mut v = Vec::new();
    for autocork in [false, true] {
        for (high, low) in [
            (64 * 1024, 0),
            (1024 * 1024, 512 * 1024),
            (1, 0),
            (8 * 1024 * 1024, 8 * 1024 * 1024),
        ] {
            for close in [false, true] {
                v.push(Opts {
                    autocork,
                    high,
                    low,
                    close,
                });
            }
        }
    }
    v
}

#[tokio::test]
async fn plain_sink_close_or_flush_while_stream_waits_current_thread() {
    for o in all_opts() {
        sink_close_while_stream_waits(o).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_sink_close_or_flush_while_stream_waits_multi_thread() {
    for o in all_opts() {
        sink_close_while_stream_waits(o).await;
    }
}

/// Bidirectional integrity under backpressure: the Sink half sends N
/// numbered lines, the peer echoes nothing but sends its own M numbered
/// lines; the peer reads slowly. Everything arrives, in order.
async fn bidirectional_integrity(autocork: bool, high: usize, low: usize) {
    const N: usize = 20_000;
    const M: usize = 20_000;
    let (ours, peer) = pair().await;
    let conn = QueuedFramed::builder()
        .autocork(autocork)
        .watermarks(high, low)
        .build_with_codec(ours, LineCodec::new());
    let (mut sink, mut stream) = StreamExt::split::<String>(conn);
    let sender = tokio::spawn(async move {
        for i in 0..N {
            sink.feed(format!("{i:08} {}", "x".repeat(i % 300))).await?;
            if i % 97 == 0 {
                sink.flush().await?;
            }
        }
        sink.flush().await?;
        Ok::<_, anyframe::Error>(sink)
    });
    let reader = tokio::spawn(async move {
        for j in 0..M {
            match stream.next().await {
                Some(Ok(l)) => {
                    let want = format!("{j:08} {}", "y".repeat(j % 200));
                    if l.line() != want.as_bytes() {
                        return Err(format!("line {j}: {:?}", String::from_utf8_lossy(l.line())));
                    }
                }
                other => return Err(format!("line {j}: {other:?}")),
            }
        }
        Ok(stream)
    });
    let (mut pr, mut pw) = peer.into_split();
    let peer_writer = tokio::spawn(async move {
        let mut out = Vec::new();
        for j in 0..M {
            out.extend_from_slice(format!("{j:08} {}\n", "y".repeat(j % 200)).as_bytes());
            if out.len() > 16 * 1024 {
                pw.write_all(&out).await.unwrap();
                out.clear();
            }
        }
        pw.write_all(&out).await.unwrap();
        pw
    });
    let peer_reader = tokio::spawn(async move {
        tokio::time::sleep(MS(100)).await;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 7000];
        let mut lines = 0usize;
        while lines < N {
            let n = pr.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
            while let Some(p) = memchr::memchr(b'\n', &got) {
                let want = format!("{lines:08} {}", "x".repeat(lines % 300));
                assert_eq!(&got[..p], want.as_bytes(), "line {lines}");
                got.drain(..=p);
                lines += 1;
            }
            if lines.is_multiple_of(1000) {
                tokio::task::yield_now().await;
            }
        }
        pr
    });
    let tag = format!("autocork={autocork} high={high} low={low}");
    within(
        Duration::from_secs(10),
        &format!("{tag}: peer reader"),
        peer_reader,
    )
    .await
    .unwrap();
    within(MS(3000), &format!("{tag}: peer writer"), peer_writer)
        .await
        .unwrap();
    let _sink = within(MS(3000), &format!("{tag}: sender"), sender)
        .await
        .unwrap()
        .unwrap();
    let _stream = within(MS(3000), &format!("{tag}: reader"), reader)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_bidirectional_integrity_multi_thread() {
    for autocork in [false, true] {
        for (h, l) in [(64 * 1024, 0), (4096, 1024), (1, 0)] {
            bidirectional_integrity(autocork, h, l).await;
        }
    }
}

#[tokio::test]
async fn plain_bidirectional_integrity_current_thread() {
    for autocork in [false, true] {
        for (h, l) in [(64 * 1024, 0), (4096, 1024)] {
            bidirectional_integrity(autocork, h, l).await;
        }
    }
}

/// Both halves in one task through `FuturesUnordered` (distinct wakers):
/// the sink sends 8 MiB, the stream reads a line; the peer reads late and
/// then writes the line. Completes; polls bounded.
async fn futures_unordered_both(autocork: bool) {
    let (ours, mut peer) = pair().await;
    let conn = QueuedFramed::builder()
        .autocork(autocork)
        .build_with_codec(ours, BytesCodec::new());
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let (sp, rp) = (counter(), counter());
    let (sp2, rp2) = (sp.clone(), rp.clone());
    let task = tokio::spawn(async move {
        let mut set: FuturesUnordered<
            std::pin::Pin<Box<dyn Future<Output = &'static str> + Send>>,
        > = FuturesUnordered::new();
        set.push(Box::pin(async move {
            let send = async {
                for _ in 0..FRAMES {
                    sink.feed(Bytes::from(vec![b'x'; FRAME])).await?;
                }
                sink.flush().await
            };
            counted(Box::pin(send), sp2).await.unwrap();
            "sink"
        }));
        set.push(Box::pin(async move {
            let f = counted(stream.next(), rp2).await;
            assert_eq!(f.unwrap().unwrap().as_ref(), b"hello");
            "stream"
        }));
        let mut done = Vec::new();
        while let Some(x) = set.next().await {
            done.push(x);
        }
        done
    });
    tokio::time::sleep(MS(300)).await;
    let (s0, r0) = (sp.load(Ordering::SeqCst), rp.load(Ordering::SeqCst));
    assert!(
        s0 <= 30 && r0 <= 30,
        "idle: {s0} sink polls, {r0} stream polls"
    );
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    within(Duration::from_secs(10), "peer reads all", async {
        while total < FRAMES * FRAME {
            let n = peer.read(&mut buf).await.unwrap();
            assert!(n > 0);
            total += n;
        }
    })
    .await;
    peer.write_all(b"hello").await.unwrap();
    let done = within(MS(3000), "both done", task).await.unwrap();
    assert_eq!(done.len(), 2);
}

#[tokio::test]
async fn plain_futures_unordered_both_halves() {
    futures_unordered_both(false).await;
    futures_unordered_both(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_futures_unordered_both_halves_multi_thread() {
    futures_unordered_both(false).await;
    futures_unordered_both(true).await;
}

/// One task alternating `select!` between sending a frame and reading,
/// new futures each turn (each given up when the other wins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_select_loop_one_task() {
    let (ours, mut peer) = pair().await;
    let conn = QueuedFramed::with_codec(ours, BytesCodec::new());
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let task = tokio::spawn(async move {
        let mut sent = 0;
        let mut got = Vec::new();
        while sent < FRAMES || got.len() < 5 {
            tokio::select! {
                r = sink.send(Bytes::from(vec![b'x'; FRAME])), if sent < FRAMES => {
                    r.unwrap();
                    sent += 1;
                }
                f = stream.next(), if got.len() < 5 => {
                    got.extend_from_slice(&f.unwrap().unwrap());
                }
            }
        }
        got
    });
    tokio::time::sleep(MS(200)).await;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    within(Duration::from_secs(10), "peer reads", async {
        while total < FRAMES * FRAME {
            let n = peer.read(&mut buf).await.unwrap();
            assert!(n > 0);
            total += n;
        }
    })
    .await;
    peer.write_all(b"hello").await.unwrap();
    let got = within(MS(3000), "task", task).await.unwrap();
    assert_eq!(&got[..], b"hello");
}

/// The Sink half's task is aborted mid-wait (parked writer); the Stream
/// half then reads and its reads write nothing; it must not spin.
#[tokio::test]
async fn plain_sink_aborted_mid_wait_stream_still_reads_quietly() {
    let (ours, mut peer) = pair().await;
    let conn = QueuedFramed::with_codec(ours, BytesCodec::new());
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let sender = tokio::spawn(async move {
        for _ in 0..FRAMES {
            sink.feed(Bytes::from(vec![b'x'; FRAME])).await.unwrap();
        }
        sink.flush().await.unwrap();
    });
    tokio::time::sleep(MS(100)).await;
    sender.abort();
    let _ = sender.await;
    let rp = counter();
    let rp2 = rp.clone();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        counted(
            Box::pin(async move {
                while let Some(f) = stream.next().await {
                    n += f.unwrap().len();
                    if n >= 5 {
                        break;
                    }
                }
                n
            }),
            rp2,
        )
        .await
    });
    tokio::time::sleep(MS(300)).await;
    let r = rp.load(Ordering::SeqCst);
    assert!(r <= 20, "{r} polls of the stream half while idle");
    peer.write_all(b"hello").await.unwrap();
    let n = within(MS(3000), "reader", reader).await.unwrap();
    assert_eq!(n, 5);
}

/// The peer resets while the Sink half is blocked (peer not reading) and
/// the Stream half waits: both halves end with an error, promptly.
async fn peer_reset_ends_both(abort_first: bool) {
    let (ours, peer) = pair().await;
    let conn = QueuedFramed::with_codec(ours, BytesCodec::new());
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let sender = tokio::spawn(async move {
        for _ in 0..FRAMES {
            sink.feed(Bytes::from(vec![b'x'; FRAME])).await?;
        }
        sink.flush().await
    });
    tokio::time::sleep(MS(50)).await;
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(f) = stream.next().await {
            let bad = f.is_err();
            out.push(f.map(|b| b.len()).map_err(|e| e.kind()));
            if bad {
                break;
            }
        }
        out
    });
    tokio::time::sleep(MS(50)).await;
    // Linger 0: RST.
    let std = peer.into_std().unwrap();
    let sock = socket2::Socket::from(std);
    if abort_first {
        sock.set_linger(Some(Duration::ZERO)).unwrap();
    }
    drop(sock);
    let s = within(MS(3000), "sink ends", sender).await.unwrap();
    assert!(s.is_err(), "sink: {s:?}");
    let r = within(MS(3000), "stream ends", reader).await.unwrap();
    assert!(r.len() <= 1, "stream: {r:?}");
}

#[tokio::test]
async fn plain_peer_reset_ends_both_halves() {
    peer_reset_ends_both(true).await;
    peer_reset_ends_both(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_peer_reset_ends_both_halves_multi_thread() {
    peer_reset_ends_both(true).await;
    peer_reset_ends_both(false).await;
}

/// Spurious wake-ups of both tasks must not turn into a loop: an external
/// ticker wakes... (a task polling a half over and over by `select!` with
/// a 1 ms interval). With the Sink half blocked and the Stream half
/// waiting on a silent peer, each tick polls each half once; no extra
/// polls per tick beyond a small constant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_spurious_ticks_do_not_amplify() {
    let (ours, _peer) = pair().await;
    let conn = QueuedFramed::with_codec(ours, BytesCodec::new());
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let (sp, rp, ticks) = (counter(), counter(), counter());
    let (sp2, rp2, t2, t3) = (sp.clone(), rp.clone(), ticks.clone(), ticks.clone());
    let writer = tokio::spawn(async move {
        let send = async {
            for _ in 0..FRAMES {
                sink.feed(Bytes::from(vec![b'x'; FRAME])).await?;
            }
            sink.flush().await
        };
        let mut send = std::pin::pin!(counted(Box::pin(send), sp2));
        let mut iv = tokio::time::interval(MS(5));
        loop {
            tokio::select! {
                _ = &mut send => break,
                _ = iv.tick() => { t2.fetch_add(1, Ordering::SeqCst); }
            }
        }
    });
    let reader = tokio::spawn(async move {
        let mut next = std::pin::pin!(counted(stream.next(), rp2));
        let mut iv = tokio::time::interval(MS(5));
        loop {
            tokio::select! {
                _ = &mut next => break,
                _ = iv.tick() => { t3.fetch_add(1, Ordering::SeqCst); }
            }
        }
    });
    tokio::time::sleep(MS(500)).await;
    let (s, r, t) = (
        sp.load(Ordering::SeqCst),
        rp.load(Ordering::SeqCst),
        ticks.load(Ordering::SeqCst),
    );
    assert!(!writer.is_finished() && !reader.is_finished());
    // Each tick polls its task's half once (select! polls every branch):
    // allow 2x ticks plus slack.
    assert!(
        s + r <= 2 * t + 60,
        "{s} sink polls, {r} stream polls, {t} ticks"
    );
    writer.abort();
    reader.abort();
}

/// `timeout` (idle) + `wtimeout` with the Sink half blocked and the Stream
/// half waiting, multi-thread: the Sink half gets only Write timeouts, the
/// Stream half never a Write timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_write_timeout_goes_to_sink_not_stream_multi_thread() {
    let (ours, _peer) = pair().await;
    let conn = QueuedFramed::builder()
        .wtimeout(MS(150))
        .build_with_codec(ours, BytesCodec::new());
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let end = tokio::time::Instant::now() + MS(1200);
        while let Ok(f) = tokio::time::timeout_at(end, stream.next()).await {
            seen.push(f.map(|f| f.map(|b| b.len()).map_err(|e| e.timeout())));
            if seen.len() > 20 {
                break;
            }
        }
        seen
    });
    tokio::time::sleep(MS(20)).await;
    let writer = tokio::spawn(async move {
        let mut timeouts = Vec::new();
        let end = tokio::time::Instant::now() + MS(1000);
        for _ in 0..FRAMES {
            loop {
                match tokio::time::timeout_at(end, sink.feed(Bytes::from(vec![b'x'; FRAME]))).await
                {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => timeouts.push(e.timeout()),
                    Err(_) => return timeouts,
                }
            }
        }
        timeouts
    });
    let w = within(MS(3000), "writer", writer).await.unwrap();
    let r = within(MS(3000), "reader", reader).await.unwrap();
    assert!(
        r.is_empty(),
        "the Stream half heard: {r:?} (writer heard {w:?})"
    );
    assert!(
        w.len() >= 4 && w.iter().all(|t| *t == Some(Timeout::Write)),
        "writer heard {w:?}"
    );
}

/// The same with a stoptls: a TLS connection, stoptls queued behind a
/// read, plaintext output behind the stoptls. The Stream half waits, the
/// Sink half's flush runs the read from its own task and gives up.
async fn stoptls_stream_after_sink_flush_gave_up_on(b: TlsBackend, how: Flusher) {
    let (c, s) = pair().await;
    let mut client = QueuedFramed::builder()
        .tls(pki::client_on(b))
        .build_with_codec(c, LineCodec::new());
    let mut server = QueuedFramed::builder()
        .tls(server_on(b))
        .build_tcp(s)
        .unwrap();
    let (x, y) = within(MS(5000), "handshake", async {
        tokio::join!(client.flush(), server.flush())
    })
    .await;
    x.unwrap();
    y.unwrap();
    let go = client.push_read(LineCodec::new());
    let stopped = client.push_stoptls();
    client.push_write(LineCodec::new(), "after").unwrap();
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(client);
    let reader = tokio::spawn(async move {
        let line = stream.next().await;
        (line.map(|l| l.map(|l| l.line().to_vec())), stream)
    });
    tokio::time::sleep(MS(50)).await;
    let flusher = tokio::spawn(async move {
        if how == Flusher::KeepsFlushing {
            SinkExt::<&'static str>::flush(&mut sink).await.unwrap();
            return;
        }
        let r = tokio::time::timeout(MS(100), SinkExt::<&'static str>::flush(&mut sink)).await;
        assert!(r.is_err(), "the flush cannot finish yet: {r:?}");
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(sink);
    });
    tokio::time::sleep(MS(200)).await;
    let server = async {
        server.write(LineCodec::new(), "GO").await.unwrap();
        server.stoptls().await.unwrap();
        let after = server.read(LineCodec::new()).await.unwrap();
        assert_eq!(after.line(), b"after");
        server.write(LineCodec::new(), "hello").await.unwrap();
        server
    };
    let _server = within(
        Duration::from_secs(5),
        &format!("{b:?} stoptls {how:?}: server never gets \"after\""),
        server,
    )
    .await;
    assert_eq!(within(MS(1000), "go", go).await.unwrap().line(), b"GO");
    within(MS(1000), "stopped", stopped).await.unwrap();
    let (line, _stream) = within(MS(3000), "the stream half hears hello", reader)
        .await
        .unwrap();
    assert_eq!(line.map(|l| l.unwrap()), Some(b"hello".to_vec()), "{b:?}");
    flusher.abort();
}

#[tokio::test]
async fn tls_stoptls_stream_hears_input_after_sink_flush_gave_up() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let case = tokio::spawn(stoptls_stream_after_sink_flush_gave_up_on(
            b,
            Flusher::GivesUp,
        ));
        if case.await.is_err() {
            failed.push(b);
        }
    }
    assert!(failed.is_empty(), "failed on {failed:?}");
}

/// Control: the flush keeps waiting.
#[tokio::test]
async fn tls_control_stoptls_stream_hears_input_while_sink_keeps_flushing() {
    for &b in pki::BACKENDS {
        stoptls_stream_after_sink_flush_gave_up_on(b, Flusher::KeepsFlushing).await;
    }
}
