//! Timers on the inline front end when waits are given up, hooks close the
//! connection, or the `Sink` and `Stream` halves wait in two tasks: each
//! half hears its own timeout, a lone waiter hears the other side's, and
//! nothing hears a timeout twice or one period late (docs/semantics.md,
//! TO-3 and TO-4); a panic in one half's callback ends the other half
//! (§4). The multi-thread cases run on real time with loose bounds.

#[path = "support/timing.rs"]
mod timing;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use timing::{bounded, within};

use anyframe::{QueuedFramed, Timeout};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::codec::{BytesCodec, Decoder, Encoder};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// For the multi-thread cases (100 ms read timer): reads on the `Stream`
/// half for about 15 periods, noting when each read timeout came. An error
/// if anything else comes, or nothing for 5 periods (the half starved).
fn count_read_timeouts<S>(
    mut stream: S,
    t0: Instant,
) -> tokio::task::JoinHandle<Result<Vec<Duration>, String>>
where
    S: futures::Stream<Item = anyframe::Result<BytesMut>> + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut at = Vec::new();
        while t0.elapsed() < MS(1550) {
            match within(MS(500), stream.next()).await {
                Ok(Some(Err(e))) if e.is_timeout() => at.push(t0.elapsed()),
                other => return Err(format!("{other:?} after timeouts at {at:?}")),
            }
        }
        Ok(at)
    })
}

/// TO-3 "a lone reader hears the write timeout": a flush the caller gave
/// up on (dropped while it waited) leaves no flush waiting; the lone
/// reader must then hear the write timeout.
#[tokio::test(start_paused = true)]
async fn lone_reader_hears_write_timeout_after_an_abandoned_flush() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64); // never reads, never writes
        let mut conn = QueuedFramed::builder()
            .wtimeout(MS(300))
            .build_with_codec(io, BytesCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        // Give up on the flush after 50 ms (as `tokio::time::timeout` would).
        assert!(within(MS(50), conn.flush()).await.is_err());
        // Nobody flushes now: the lone reader is told of the write timeout.
        let r = within(Duration::from_secs(2), conn.next()).await;
        assert!(
            matches!(r, Ok(Some(Err(ref e))) if e.is_timeout()),
            "lone reader never heard the write timeout: {r:?}"
        );
    })
    .await;
}

/// The same through the `Sink`: `send` abandoned in a `select!`, then the
/// same task only reads.
#[tokio::test(start_paused = true)]
async fn lone_reader_hears_write_timeout_after_an_abandoned_sink_send() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .wtimeout(MS(300))
            .build_with_codec(io, BytesCodec::new());
        let _ = within(MS(50), conn.send(Bytes::from(vec![b'x'; 1000]))).await;
        let r = within(Duration::from_secs(2), conn.next()).await;
        assert!(
            matches!(r, Ok(Some(Err(ref e))) if e.is_timeout()),
            "lone reader never heard the write timeout: {r:?}"
        );
    })
    .await;
}

/// Split halves: the Sink half's task gives up on a send and goes away
/// (drops its half); the Stream half, now a lone reader, hears the write
/// timeout.
#[tokio::test(start_paused = true)]
async fn split_stream_hears_write_timeout_after_sink_half_gave_up() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .wtimeout(MS(300))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let writer = tokio::spawn(async move {
            let r = tokio::time::timeout(MS(50), sink.send(Bytes::from(vec![b'x'; 1000]))).await;
            drop(sink);
            r.is_err()
        });
        assert!(writer.await.unwrap(), "the send should have been abandoned");
        let r = within(Duration::from_secs(2), stream.next()).await;
        assert!(
            matches!(r, Ok(Some(Err(ref e))) if e.is_timeout()),
            "lone Stream half never heard the write timeout: {r:?}"
        );
    })
    .await;
}

/// TO-3 "fires again after every further period without activity": a read
/// abandoned once (select!) then a flush that waits across the read
/// deadline; the read timeouts the next reads hear must be one period
/// apart, not two back to back.
#[tokio::test(start_paused = true)]
async fn no_back_to_back_read_timeouts_after_an_abandoned_read_and_a_flush() {
    bounded(async {
        let (io, mut peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(200))
            .build_with_codec(io, BytesCodec::new());
        let t0 = Instant::now();
        // A read given up on at 30 ms.
        assert!(within(MS(30), conn.next()).await.is_err());
        // A flush the peer holds up from ~30 ms to ~300 ms: the read timer
        // expires at 200 ms while it waits.
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let drain = tokio::spawn(async move {
            tokio::time::sleep_until(t0 + MS(300)).await;
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut peer, &mut sink).await;
        });
        within(Duration::from_secs(2), conn.flush())
            .await
            .expect("flush hung")
            .unwrap();
        // Read at 370 ms: the read timer last fired at 200, next at 400.
        tokio::time::sleep_until(t0 + MS(370)).await;
        let r1 = within(Duration::from_secs(2), conn.next()).await;
        let at1 = t0.elapsed();
        assert!(
            matches!(r1, Ok(Some(Err(ref e))) if e.is_timeout()),
            "{r1:?}"
        );
        let r2 = within(Duration::from_secs(2), conn.next()).await;
        let at2 = t0.elapsed();
        assert!(
            matches!(r2, Ok(Some(Err(ref e))) if e.is_timeout()),
            "{r2:?}"
        );
        drain.abort();
        assert!(
            at2 - at1 >= MS(120),
            "two read timeouts {:?} apart (first at {at1:?}, second at {at2:?}); period 200 ms",
            at2 - at1
        );
    })
    .await;
}

/// TO-1 "Zero turns a timer off": a read timeout kept (TO-4, set past its
/// deadline with nobody waiting) must not reach a read after the timer
/// was turned off.
#[tokio::test(start_paused = true)]
async fn owed_read_timeout_dropped_when_timer_turned_off() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder().build_with_codec(io, BytesCodec::new());
        tokio::time::sleep(MS(150)).await;
        conn.set_rtimeout(MS(100)); // already due: kept for the next read
        conn.set_rtimeout(Duration::ZERO); // read timer off
        let r = within(MS(500), conn.next()).await;
        assert!(
            r.is_err(),
            "a read timeout reached the read after rtimeout was set to 0: {r:?}"
        );
    })
    .await;
}

/// Control for the above: kept timeout with the timer still on reaches the
/// next read at once (TO-4).
#[tokio::test(start_paused = true)]
async fn control_owed_read_timeout_reaches_next_read() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder().build_with_codec(io, BytesCodec::new());
        tokio::time::sleep(MS(150)).await;
        conn.set_rtimeout(MS(100));
        let r = within(MS(50), conn.next()).await;
        assert!(matches!(r, Ok(Some(Err(ref e))) if e.is_timeout()), "{r:?}");
    })
    .await;
}

/// §4 / TO-3: an `on_timeout` hook that destroys the connection runs on
/// whichever half hears the timer; the other half, waiting, must learn the
/// connection closed instead of waiting for ever.
#[tokio::test(start_paused = true)]
async fn split_hook_destroy_ends_both_halves() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64); // never reads nor writes
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(300))
            .build_with_codec(io, BytesCodec::new());
        conn.on_timeout(|_, q| q.destroy());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let reader = tokio::spawn(async move { stream.next().await.map(|r| r.map(|_| ())) });
        tokio::time::sleep(MS(20)).await; // the Stream half waits
        let writer = tokio::spawn(async move { sink.send(Bytes::from(vec![b'x'; 1000])).await });
        let w = within(Duration::from_secs(2), writer).await;
        let r = within(Duration::from_secs(2), reader).await;
        assert!(matches!(w, Ok(Ok(Err(_)))), "writer: {w:?}");
        assert!(
            matches!(r, Ok(Ok(Some(Err(_)) | None))),
            "the Stream half never learned the hook destroyed the connection: {r:?}"
        );
    })
    .await;
}

/// Both halves waiting, read and write timers with the same period, both
/// expire together: each half gets its own, over several periods.
#[tokio::test(start_paused = true)]
async fn split_both_expire_together_repeatedly() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .rtimeout(MS(200))
            .wtimeout(MS(200))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let reader = tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..3 {
                match within(Duration::from_secs(1), stream.next()).await {
                    Ok(Some(Err(e))) if e.is_timeout() => n += 1,
                    other => return Err(format!("{other:?}")),
                }
            }
            Ok(n)
        });
        let writer = tokio::spawn(async move {
            sink.feed(Bytes::from(vec![b'x'; 1000])).await.unwrap();
            let mut n = 0;
            for _ in 0..3 {
                match within(Duration::from_secs(1), sink.flush()).await {
                    Ok(Err(e)) if e.is_timeout() => n += 1,
                    other => return Err(format!("{other:?}")),
                }
            }
            Ok(n)
        });
        let r = reader.await.unwrap();
        let w = writer.await.unwrap();
        assert_eq!(r, Ok(3), "reader");
        assert_eq!(w, Ok(3), "writer");
    })
    .await;
}

/// A spawned handle still hears read and write timeouts (TO-3 via the
/// driver).
#[tokio::test(start_paused = true)]
async fn spawned_handle_read_and_write_timeouts() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .rtimeout(MS(200))
            .wtimeout(MS(300))
            .build(io);
        let (handle, _driver) = conn.spawn();
        let r = within(
            Duration::from_secs(2),
            handle.read(anyframe::codecs::LineCodec::new()),
        )
        .await;
        assert!(matches!(r, Ok(Err(ref e)) if e.is_timeout()), "{r:?}");
        handle.push_bytes(vec![b'x'; 1000]).unwrap();
        let f = within(Duration::from_secs(2), handle.flush()).await;
        assert!(matches!(f, Ok(Err(ref e)) if e.is_timeout()), "{f:?}");
    })
    .await;
}

/// The hook case the other way round: the `Stream` half polls the timers
/// last, a write timeout's hook destroys the connection; the `Sink` half,
/// blocked in a flush, must end.
#[tokio::test(start_paused = true)]
async fn split_hook_destroy_ends_the_blocked_sink_half() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .wtimeout(MS(300))
            .build_with_codec(io, BytesCodec::new());
        conn.on_timeout(|_, q| q.destroy());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let writer = tokio::spawn(async move { sink.send(Bytes::from(vec![b'x'; 1000])).await });
        tokio::time::sleep(MS(20)).await; // the flush waits
        let reader = tokio::spawn(async move { stream.next().await.map(|r| r.map(|_| ())) });
        let r = within(Duration::from_secs(2), reader).await;
        let w = within(Duration::from_secs(2), writer).await;
        assert!(matches!(r, Ok(Ok(Some(Err(_)) | None))), "reader: {r:?}");
        assert!(
            matches!(w, Ok(Ok(Err(_)))),
            "the blocked Sink half never learned the hook destroyed the connection: {w:?}"
        );
    })
    .await;
}

/// TO-3 "or a TLS switch's waiter": a STARTTLS toward a silent peer is
/// told of the read timeout (control).
#[cfg(feature = "tls")]
#[tokio::test(start_paused = true)]
async fn control_starttls_to_a_silent_peer_times_out() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(1 << 16); // takes the hello, never answers
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(200))
            .build_with_codec(io, BytesCodec::new());
        let tls = anyframe::tls::TlsClient::new("localhost").unwrap();
        let r = within(Duration::from_secs(2), conn.starttls(tls)).await;
        assert!(matches!(r, Ok(Err(ref e)) if e.is_timeout()), "{r:?}");
    })
    .await;
}

/// TO-3: a STARTTLS whose hello the peer never takes, with only a write
/// timeout, after an abandoned flush: the switch's waiter must still be
/// told of the write timeout.
#[cfg(feature = "tls")]
#[tokio::test(start_paused = true)]
async fn starttls_hears_write_timeout_after_an_abandoned_flush() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64); // never reads
        let mut conn = QueuedFramed::builder()
            .wtimeout(MS(300))
            .build_with_codec(io, BytesCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        assert!(within(MS(50), conn.flush()).await.is_err());
        let tls = anyframe::tls::TlsClient::new("localhost").unwrap();
        let r = within(Duration::from_secs(2), conn.starttls(tls)).await;
        assert!(
            matches!(r, Ok(Err(ref e)) if e.is_timeout()),
            "STARTTLS never heard the write timeout: {r:?}"
        );
    })
    .await;
}

/// Control for the above without the abandoned flush.
#[cfg(feature = "tls")]
#[tokio::test(start_paused = true)]
async fn control_starttls_hears_write_timeout() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .wtimeout(MS(300))
            .build_with_codec(io, BytesCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let tls = anyframe::tls::TlsClient::new("localhost").unwrap();
        let r = within(Duration::from_secs(2), conn.starttls(tls)).await;
        assert!(matches!(r, Ok(Err(ref e)) if e.is_timeout()), "{r:?}");
    })
    .await;
}

/// Control: a lone reader hears the write timeout with no flush ever
/// abandoned, for several periods.
#[tokio::test(start_paused = true)]
async fn control_lone_reader_hears_repeated_write_timeouts() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .wtimeout(MS(200))
            .build_with_codec(io, BytesCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        for i in 0..3 {
            let r = within(Duration::from_secs(1), conn.next()).await;
            assert!(
                matches!(r, Ok(Some(Err(ref e))) if e.is_timeout()),
                "{i}: {r:?}"
            );
        }
    })
    .await;
}

/// Split: the Stream half's read abandoned (select!) while the Sink half
/// blocks in a flush; the Sink half must still get its write timeout and
/// nothing hangs; the Stream half, polled again, hears its read timeout.
#[tokio::test(start_paused = true)]
async fn split_abandoned_stream_read_then_both_timeouts() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .rtimeout(MS(250))
            .wtimeout(MS(300))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        assert!(within(MS(30), stream.next()).await.is_err()); // abandoned
        let writer = tokio::spawn(async move { sink.send(Bytes::from(vec![b'x'; 1000])).await });
        let w = within(Duration::from_secs(2), writer).await;
        assert!(matches!(w, Ok(Ok(Err(ref e))) if e.is_timeout()), "{w:?}");
        let r = within(Duration::from_secs(2), stream.next()).await;
        assert!(matches!(r, Ok(Some(Err(ref e))) if e.is_timeout()), "{r:?}");
    })
    .await;
}

/// A spawned handle: idle timeout reaches a queued read, and with nothing
/// waiting, the connection stays open (TO-6: non-fatal).
#[tokio::test(start_paused = true)]
async fn spawned_idle_timeout_nonfatal_with_nobody() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder().timeout(MS(150)).build(io);
        let (handle, _driver) = conn.spawn();
        tokio::time::sleep(MS(400)).await; // two idle expiries heard by nobody
        assert!(!handle.is_closed());
        let r = within(
            Duration::from_secs(2),
            handle.read(anyframe::codecs::LineCodec::new()),
        )
        .await;
        assert!(
            matches!(r, Ok(Err(ref e)) if e.is_timeout() && !e.is_fatal()),
            "{r:?}"
        );
    })
    .await;
}

/// TO-4: a write timeout set while a flush waits, already past its
/// deadline, reaches that flush at once.
#[tokio::test(start_paused = true)]
async fn write_timeout_set_past_deadline_reaches_waiting_flush_at_once() {
    use std::task::Poll;
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder().build_with_codec(io, BytesCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let mut polled_at: Option<Instant> = None;
        let r = within(
            Duration::from_secs(2),
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = SinkExt::<Bytes>::poll_flush_unpin(&mut conn, cx) {
                    return Poll::Ready((r, polled_at));
                }
                match polled_at {
                    None => {
                        polled_at = Some(Instant::now());
                        let waker = cx.waker().clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(MS(300)).await;
                            waker.wake();
                        });
                    }
                    Some(t) if t.elapsed() >= MS(300) => {
                        conn.set_wtimeout(MS(100));
                        polled_at = Some(Instant::now());
                    }
                    _ => {}
                }
                Poll::Pending
            }),
        )
        .await;
        match r {
            Ok((Err(e), Some(set_at))) => {
                assert!(e.is_timeout(), "{e:?}");
                assert!(
                    set_at.elapsed() < MS(60),
                    "came {:?} after",
                    set_at.elapsed()
                );
            }
            other => panic!("{other:?}"),
        }
    })
    .await;
}

/// Split halves both waiting with only an idle timeout: each period one of
/// them hears it, neither hangs, and the Sink half ends once the peer
/// drains.
#[tokio::test(start_paused = true)]
async fn split_idle_timeout_goes_to_one_half_per_period() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .timeout(MS(200))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c1 = count.clone();
        let reader = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Err(e)) if e.is_timeout() => {
                        c1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    other => return format!("{other:?}"),
                }
            }
        });
        let c2 = count.clone();
        let writer = tokio::spawn(async move {
            sink.feed(Bytes::from(vec![b'x'; 1000])).await.unwrap();
            loop {
                match sink.flush().await {
                    Err(e) if e.is_timeout() => {
                        c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    other => return format!("{other:?}"),
                }
            }
        });
        tokio::time::sleep(MS(1100)).await; // 5 idle expiries
        let n = count.load(std::sync::atomic::Ordering::SeqCst);
        reader.abort();
        writer.abort();
        assert!((4..=6).contains(&n), "{n} idle timeouts heard in 5 periods");
    })
    .await;
}

/// Both halves in one task (`futures::join!`, the Sink side polled first):
/// each half must hear its own timeout every period (TO-3).
#[tokio::test(start_paused = true)]
async fn join_sink_first_stream_hears_read_timeouts() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .rtimeout(MS(200))
            .wtimeout(MS(200))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let reads = Arc::new(AtomicUsize::new(0));
        let writes = Arc::new(AtomicUsize::new(0));
        let (r2, w2) = (reads.clone(), writes.clone());
        let writer = async move {
            sink.feed(Bytes::from(vec![b'x'; 1000])).await.unwrap();
            loop {
                match sink.flush().await {
                    Err(e) if e.is_timeout() => w2.fetch_add(1, Ordering::SeqCst),
                    other => panic!("writer: {other:?}"),
                };
            }
        };
        let reader = async move {
            loop {
                match stream.next().await {
                    Some(Err(e)) if e.is_timeout() => r2.fetch_add(1, Ordering::SeqCst),
                    other => panic!("reader: {other:?}"),
                };
            }
        };
        let _ = within(MS(1100), futures::future::join(writer, reader)).await;
        let (r, w) = (reads.load(Ordering::SeqCst), writes.load(Ordering::SeqCst));
        assert!(
            (4..=6).contains(&r) && (4..=6).contains(&w),
            "in 5 periods: Stream half heard {r} timeouts, Sink half {w}"
        );
    })
    .await;
}

/// Two tasks on a multi-thread runtime, only `rtimeout`, the Sink half
/// blocked in a flush: the Stream half must hear a read timeout every
/// period; the Sink half must not hear any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multithread_stream_hears_every_read_timeout() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, stream) = conn.split::<Bytes>();
        let t0 = Instant::now();
        let reader = count_read_timeouts(stream, t0);
        let writer = tokio::spawn(async move {
            sink.feed(Bytes::from(vec![b'x'; 1000])).await.unwrap();
            let r = within(MS(1600), sink.flush()).await;
            format!("{r:?}")
        });
        let at = reader.await.unwrap();
        let w = writer.await.unwrap();
        assert_eq!(w, "Err(())", "the flush heard something");
        assert!(
            matches!(at, Ok(ref at) if at.len() >= 8),
            "read timeouts in ~15 periods: {at:?}"
        );
    })
    .await;
}

/// Two tasks on a multi-thread runtime, only `wtimeout`, both halves
/// waiting: the write timeout is the Sink half's (waiting in a flush), not
/// the Stream half's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multithread_stream_does_not_steal_write_timeouts() {
    stream_does_not_steal_write_timeouts().await
}

/// Control: the same on the current-thread runtime.
#[tokio::test]
async fn control_current_thread_stream_does_not_steal_write_timeouts() {
    stream_does_not_steal_write_timeouts().await
}

async fn stream_does_not_steal_write_timeouts() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .wtimeout(MS(100))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let stolen = Arc::new(AtomicUsize::new(0));
        let s2 = stolen.clone();
        let reader = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Err(e)) if e.is_timeout() => s2.fetch_add(1, Ordering::SeqCst),
                    other => panic!("{other:?}"),
                };
            }
        });
        tokio::time::sleep(MS(10)).await;
        let writer = tokio::spawn(async move {
            sink.feed(Bytes::from(vec![b'x'; 1000])).await.unwrap();
            let mut at = Vec::new();
            let t0 = Instant::now();
            while t0.elapsed() < MS(1500) {
                match within(MS(500), sink.flush()).await {
                    Ok(Err(e)) if e.is_timeout() => at.push(t0.elapsed().as_millis()),
                    other => return Err(format!("{other:?} after timeouts at {at:?} ms")),
                }
            }
            Ok(at)
        });
        let w = writer.await.unwrap();
        reader.abort();
        let s = stolen.load(Ordering::SeqCst);
        assert!(
            matches!(w, Ok(ref at) if at.len() >= 8) && s == 0,
            "Sink half heard {w:?} write timeouts in 15 periods, the Stream half took {s}"
        );
    })
    .await;
}

/// A read polled once after a write expiry and given up, then
/// `timeout_reset(Write)`: nothing left from that expiry lets the `Stream`
/// half take the next write timeout from the `Sink` half waiting in a
/// flush.
#[tokio::test(start_paused = true)]
async fn a_given_up_read_leaves_nothing_that_takes_the_next_write_timeout() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .wtimeout(MS(200))
            .build_with_codec(io, BytesCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        assert!(within(MS(50), conn.flush()).await.is_err());
        tokio::time::sleep(MS(160)).await; // the write timer expired at 200
        // One poll of a read, given up (a select! whose other branch won).
        let mut once = false;
        std::future::poll_fn(|cx| {
            if !once {
                once = true;
                assert!(conn.poll_next_unpin(cx).is_pending());
            }
            Poll::Ready(())
        })
        .await;
        conn.timeout_reset(Timeout::Write);
        let t_reset = Instant::now();
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let reader = tokio::spawn(async move {
            let r = within(MS(1000), stream.next()).await;
            (format!("{r:?}"), Instant::now())
        });
        let writer = tokio::spawn(async move {
            let r = within(MS(1000), sink.flush()).await;
            (format!("{r:?}"), Instant::now())
        });
        let (w, w_at) = writer.await.unwrap();
        let (r, _) = reader.await.unwrap();
        assert!(
            w.contains("timed out") || w.contains("imeout"),
            "the flush never heard its write timeout: {w}; the read got {r}"
        );
        assert!(
            w_at - t_reset < MS(260),
            "the flush heard it {:?} after the reset (period 200 ms); the read got {r}",
            w_at - t_reset
        );
    })
    .await;
}

/// A codec whose encoder panics.
struct PanicEncoder;
impl Decoder for PanicEncoder {
    type Item = BytesMut;
    type Error = std::io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> std::io::Result<Option<BytesMut>> {
        if src.is_empty() {
            Ok(None)
        } else {
            Ok(Some(src.split()))
        }
    }
}
impl Encoder<Bytes> for PanicEncoder {
    type Error = std::io::Error;
    fn encode(&mut self, _: Bytes, _: &mut BytesMut) -> std::io::Result<()> {
        panic!("encoder panics")
    }
}

/// §4 "A ... encoder that panics makes the connection fail (fatal); every
/// other request and waiter resolves with that error": the Stream half,
/// waiting in a read, must end when the Sink half's encoder panics.
#[tokio::test]
async fn split_encoder_panic_ends_the_waiting_stream_half() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder().build_with_codec(io, PanicEncoder);
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let reader = tokio::spawn(async move { format!("{:?}", stream.next().await) });
        tokio::time::sleep(MS(20)).await; // the Stream half waits
        let writer = tokio::spawn(async move { sink.send(Bytes::from_static(b"x")).await });
        assert!(
            writer.await.is_err(),
            "the encoder's panic reaches the writer"
        );
        let r = within(Duration::from_secs(2), reader).await;
        assert!(
            matches!(r, Ok(Ok(ref s)) if s.contains("Err") || s == "None"),
            "the waiting Stream half never learned of the panic: {r:?}"
        );
    })
    .await;
}

/// The same with timers armed (the Stream half waits on the fanned sleep).
#[tokio::test]
async fn split_encoder_panic_ends_the_stream_half_waiting_on_timers() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .rtimeout(Duration::from_secs(5))
            .build_with_codec(io, PanicEncoder);
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let reader = tokio::spawn(async move { format!("{:?}", stream.next().await) });
        tokio::time::sleep(MS(20)).await;
        let writer = tokio::spawn(async move { sink.send(Bytes::from_static(b"x")).await });
        assert!(writer.await.is_err());
        let r = within(Duration::from_secs(2), reader).await;
        assert!(
            matches!(r, Ok(Ok(ref s)) if s.contains("Err") || s == "None"),
            "the waiting Stream half never learned of the panic: {r:?}"
        );
    })
    .await;
}

/// A decoder that panics on input.
struct PanicDecoder;
impl Decoder for PanicDecoder {
    type Item = BytesMut;
    type Error = std::io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> std::io::Result<Option<BytesMut>> {
        if src.is_empty() {
            Ok(None)
        } else {
            panic!("decoder panics")
        }
    }
}
impl Encoder<Bytes> for PanicDecoder {
    type Error = std::io::Error;
    fn encode(&mut self, b: Bytes, dst: &mut BytesMut) -> std::io::Result<()> {
        dst.extend_from_slice(&b);
        Ok(())
    }
}

/// The Stream half's decoder panics while the Sink half waits in a flush
/// (the peer takes nothing, a write timer armed): the flush must end with
/// the fatal error at once, not hang (§4).
#[tokio::test]
async fn split_decoder_panic_ends_the_blocked_sink_half() {
    bounded(async {
        let (io, mut peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .wtimeout(Duration::from_secs(5))
            .build_with_codec(io, PanicDecoder);
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let writer = tokio::spawn(async move { sink.send(Bytes::from(vec![b'x'; 1000])).await });
        tokio::time::sleep(MS(20)).await; // the flush waits
        let reader = tokio::spawn(async move { format!("{:?}", stream.next().await) });
        tokio::time::sleep(MS(20)).await;
        peer.write_all(b"boom").await.unwrap();
        assert!(
            reader.await.is_err(),
            "the decoder's panic reaches the reader"
        );
        let w = within(Duration::from_secs(2), writer).await;
        assert!(
            matches!(w, Ok(Ok(Err(ref e))) if e.is_fatal()),
            "the blocked Sink half never learned of the panic: {w:?}"
        );
    })
    .await;
}

/// §4 for a panicking `on_timeout` hook, run on the Stream half; the Sink
/// half waits in a flush. Both are woken by the same expiry, so this should
/// hold (control).
#[tokio::test]
async fn split_hook_panic_ends_the_blocked_sink_half() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(200))
            .build_with_codec(io, BytesCodec::new());
        conn.on_timeout(|_, _| panic!("hook panics"));
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let reader = tokio::spawn(async move { format!("{:?}", stream.next().await) });
        tokio::time::sleep(MS(20)).await;
        let writer = tokio::spawn(async move { sink.send(Bytes::from(vec![b'x'; 1000])).await });
        let r = within(Duration::from_secs(2), reader).await;
        let w = within(Duration::from_secs(2), writer).await;
        assert!(matches!(r, Ok(Err(_))), "reader: {r:?}");
        assert!(
            matches!(w, Ok(Ok(Err(ref e))) if e.is_fatal()),
            "writer: {w:?}"
        );
    })
    .await;
}

/// A lone reader with both timers off except `wtimeout`, output stuck: the
/// read must not be polled hundreds of times while it waits.
#[tokio::test(start_paused = true)]
async fn lone_reader_is_not_busy_polled() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .rtimeout(MS(200))
            .wtimeout(MS(150))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        sink.feed(Bytes::from(vec![b'x'; 1000])).await.unwrap();
        let _ = within(MS(30), sink.flush()).await; // given up
        let polls = Arc::new(AtomicUsize::new(0));
        let p2 = polls.clone();
        let mut got = 0;
        let t0 = Instant::now();
        while t0.elapsed() < MS(1000) {
            let r = within(
                MS(1000),
                std::future::poll_fn(|cx| {
                    p2.fetch_add(1, Ordering::SeqCst);
                    stream.poll_next_unpin(cx)
                }),
            )
            .await;
            match r {
                Ok(Some(Err(e))) if e.is_timeout() => got += 1,
                other => panic!("{other:?}"),
            }
        }
        let n = polls.load(Ordering::SeqCst);
        assert!(got >= 6, "{got} timeouts");
        assert!(n <= 4 * got, "{n} polls for {got} timeouts");
        drop(sink);
    })
    .await;
}

/// Two tasks on a multi-thread runtime, `rtimeout` = `wtimeout`, the Sink
/// half retrying its flush after each write timeout: the Stream half must
/// still hear a read timeout every period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multithread_both_timers_stream_hears_every_read_timeout() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .wtimeout(MS(100))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, stream) = conn.split::<Bytes>();
        let t0 = Instant::now();
        let reader = count_read_timeouts(stream, t0);
        let writer = tokio::spawn(async move {
            sink.feed(Bytes::from(vec![b'x'; 1000])).await.unwrap();
            let mut n = 0;
            while t0.elapsed() < MS(1600) {
                if let Ok(Err(e)) = within(MS(500), sink.flush()).await {
                    assert!(e.is_timeout());
                    n += 1;
                }
            }
            n
        });
        let at = reader.await.unwrap();
        let n = writer.await.unwrap();
        assert!(
            matches!(at, Ok(ref at) if at.len() >= 8),
            "Stream half's read timeouts in ~15 periods: {at:?}; Sink half heard {n}"
        );
    })
    .await;
}

/// TO-4: a write timeout set past its deadline while a lone reader waits on
/// the timers (no flush waiting at all) reaches that read at once.
#[tokio::test(start_paused = true)]
async fn lone_reader_hears_write_timeout_set_past_deadline_at_once() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder().build_with_codec(io, BytesCodec::new());
        let mut set_at: Option<Instant> = None;
        let mut polls = 0u32;
        let r = within(
            Duration::from_secs(2),
            std::future::poll_fn(|cx| {
                polls += 1;
                if let Poll::Ready(r) = conn.poll_next_unpin(cx) {
                    return Poll::Ready((r, set_at));
                }
                if set_at.is_none() {
                    let waker = cx.waker().clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(MS(300)).await;
                        waker.wake();
                    });
                    set_at = Some(Instant::now() + MS(300)); // placeholder
                    return Poll::Pending;
                }
                if polls == 2 {
                    conn.set_wtimeout(MS(100)); // last write: never, 300 ms ago
                    set_at = Some(Instant::now());
                }
                Poll::Pending
            }),
        )
        .await;
        match r {
            Ok((Some(Err(e)), Some(at))) => {
                assert!(e.is_timeout(), "{e:?}");
                assert!(
                    at.elapsed() < MS(60),
                    "heard {:?} after the set",
                    at.elapsed()
                );
            }
            other => panic!("{other:?}"),
        }
    })
    .await;
}

/// TO-3 split: the Sink half waits in a flush the whole time; the Stream half
/// (which also writes output out when polled) must never hear a write
/// timeout while the Sink half is waiting: the write timeouts are the Sink's.
#[tokio::test(start_paused = true)]
async fn stream_writing_output_does_not_steal_the_waiting_flushs_write_timeout() {
    bounded(async {
        let (io, mut peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .wtimeout(MS(300))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let log = Arc::new(Mutex::new(Vec::<(&'static str, Duration)>::new()));
        let t0 = Instant::now();
        let l1 = log.clone();
        let writer = tokio::spawn(async move {
            sink.feed(Bytes::from(vec![b'x'; 1000])).await.unwrap();
            loop {
                match sink.flush().await {
                    Err(e) if e.is_timeout() => l1.lock().unwrap().push(("sink", t0.elapsed())),
                    other => return format!("{other:?}"),
                }
            }
        });
        tokio::task::yield_now().await;
        let l2 = log.clone();
        let reader = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Err(e)) if e.is_timeout() => {
                        l2.lock().unwrap().push(("stream", t0.elapsed()))
                    }
                    other => return format!("{other:?}"),
                }
            }
        });
        tokio::task::yield_now().await;
        // The peer reads a little once, at 100 ms (the Stream half polled
        // the transport's write side last, so it is the one woken to write).
        tokio::time::sleep(MS(100)).await;
        let mut buf = [0u8; 32];
        let _ = peer.read(&mut buf).await.unwrap();
        tokio::time::sleep(MS(1300)).await;
        reader.abort();
        writer.abort();
        let log = log.lock().unwrap().clone();
        assert!(
            log.iter().all(|(who, _)| *who == "sink"),
            "write timeouts taken by the Stream half while the Sink half waited in a flush: {log:?}"
        );
        assert!(log.len() >= 3, "{log:?}");
    })
    .await;
}

/// TO-3: "A write-side waiter told of several timeouts that expired
/// together gets the write timeout if one of them is": a lone flush, idle
/// and write timers of the same period. The idle timeout that expired with
/// it is not told again a moment later.
#[tokio::test(start_paused = true)]
async fn lone_flush_gets_write_timeout_when_idle_expires_with_it() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .timeout(MS(100))
            .wtimeout(MS(100))
            .build_with_codec(io, BytesCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let t0 = Instant::now();
        let e = match within(MS(1000), conn.flush()).await {
            Ok(Err(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(t0.elapsed(), MS(100));
        assert_eq!(e.timeout(), Some(Timeout::Write), "flush told {e:?}");
        let e = match within(MS(1000), conn.flush()).await {
            Ok(Err(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(t0.elapsed(), MS(200), "the next one a period later: {e:?}");
    })
    .await;
}

/// An `on_timeout` hook hears every timer, whichever side polls: a flush
/// alone, with nothing read and no read waiting, runs it for the read
/// timeout too (as AE's `on_rtimeout` fires while only writing).
#[tokio::test(start_paused = true)]
async fn a_flush_alone_runs_the_hook_for_each_read_timeout() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64); // never reads, never writes
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .build_with_codec(io, BytesCodec::new());
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        conn.on_timeout(move |t, _| h.lock().unwrap().push(t));
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        assert!(within(MS(550), conn.flush()).await.is_err(), "stuck");
        let heard = heard.lock().unwrap().clone();
        assert_eq!(heard, vec![Timeout::Read; 5]);
    })
    .await;
}
