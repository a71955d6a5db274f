//! The inline front end's readiness and timers: `ready_to_write` and the
//! `Sink` at the low watermark and under `wbuf_max`, a timer set while a
//! poll waits, and the timeouts of a split handle's halves.

use std::time::Duration;

use anyframe::QueuedFramed;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio_util::codec::BytesCodec;

/// `Err(())` if `fut` is not ready by `limit`; the deadline is checked
/// first, so the timer's own wake-up cannot complete `fut`.
async fn within<F: std::future::Future>(limit: Duration, fut: F) -> Result<F::Output, ()> {
    tokio::select! {
        biased;
        _ = tokio::time::sleep(limit) => Err(()),
        out = fut => Ok(out),
    }
}

/// OPT-5: `ready_to_write` resolves once a write brings the queue back to
/// the low watermark, though the transport then takes no more.
#[tokio::test]
async fn ready_to_write_resolves_when_a_write_reaches_the_low_watermark() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(600); // takes 600 bytes, then never reads
        let mut conn = QueuedFramed::builder().watermarks(1000, 500).build(io);
        conn.push_bytes(vec![b'x'; 1010]).unwrap(); // above high: producers wait
        let r = within(Duration::from_secs(2), conn.ready_to_write()).await;
        assert_eq!(
            conn.write_buffered(),
            410,
            "one write of 600 bytes happened"
        );
        assert!(
            matches!(r, Ok(Ok(()))),
            "queue at 410 <= low mark 500, yet ready_to_write did not resolve: {r:?}"
        );
    })
    .await
    .expect("test hung");
}

/// The same through the `Sink`'s `poll_ready`.
#[tokio::test]
async fn sink_poll_ready_resolves_when_a_write_reaches_the_low_watermark() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(600);
        let mut conn = QueuedFramed::builder()
            .watermarks(1000, 500)
            .build_with_codec(io, tokio_util::codec::BytesCodec::new());
        conn.start_send_unpin(bytes::Bytes::from(vec![b'x'; 1010]))
            .unwrap();
        let r = within(
            Duration::from_secs(2),
            std::future::poll_fn(|cx| SinkExt::<bytes::Bytes>::poll_ready_unpin(&mut conn, cx)),
        )
        .await;
        assert_eq!(conn.write_buffered(), 410);
        assert!(
            matches!(r, Ok(Ok(()))),
            "queue at 410 <= low mark 500, yet Sink::poll_ready did not resolve: {r:?}"
        );
    })
    .await
    .expect("test hung");
}

/// The spawned front end does the same.
#[tokio::test]
async fn control_handle_ready_to_write_resolves_at_the_low_watermark() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(600);
        let conn = QueuedFramed::builder().watermarks(1000, 500).build(io);
        let (handle, _driver) = conn.spawn();
        handle.push_bytes(vec![b'x'; 1010]).unwrap();
        let r = within(Duration::from_secs(2), handle.ready_to_write()).await;
        assert!(matches!(r, Ok(Ok(()))), "{r:?}");
        assert_eq!(handle.write_buffered(), 410);
    })
    .await
    .expect("test hung");
}

/// As tokio-util's `FramedWrite` holds a producer back at its backpressure
/// boundary, a `Sink` producer that waits for `poll_ready` never crosses
/// `wbuf_max` (fatal, OPT-9) with small items: the high watermark in force
/// is at most half the cap.
#[tokio::test]
async fn sink_feed_of_small_items_under_wbuf_max_does_not_destroy_the_connection() {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all.len()
        });
        let mut conn = QueuedFramed::builder()
            .wbuf_max(Some(1000))
            .build_with_codec(io, tokio_util::codec::BytesCodec::new());
        let mut result = Ok(());
        for _ in 0..100 {
            // feed = poll_ready, then start_send (the Sink protocol).
            result = conn.feed(bytes::Bytes::from(vec![b'x'; 20])).await;
            if result.is_err() {
                break;
            }
        }
        assert!(
            result.is_ok(),
            "100 items of 20 bytes, each after poll_ready said Ready: {result:?} \
             (queued {}, closed {})",
            conn.write_buffered(),
            conn.is_closed()
        );
        SinkExt::<bytes::Bytes>::close(&mut conn).await.unwrap();
        assert_eq!(reader.await.unwrap(), 2000);
    })
    .await
    .expect("test hung");
}

/// TO-1, TO-4: a timer can be set at any time and takes effect at once. An
/// owner polling the Stream by hand sets a read timeout after a poll
/// returned `Pending`: the waiting poll is woken and the timeout fires.
#[tokio::test]
async fn a_read_timeout_set_after_a_pending_poll_fires() {
    use std::task::Poll;
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(64); // silent peer
        let mut conn = QueuedFramed::with_codec(io, BytesCodec::new());
        let mut armed = false;
        let r = within(
            Duration::from_secs(2),
            std::future::poll_fn(|cx| {
                if let Poll::Ready(item) = conn.poll_next_unpin(cx) {
                    return Poll::Ready(item);
                }
                if !armed {
                    armed = true;
                    conn.set_rtimeout(Duration::from_millis(200));
                }
                Poll::Pending
            }),
        )
        .await;
        assert!(
            matches!(r, Ok(Some(Err(ref e))) if e.is_timeout()),
            "rtimeout 200 ms set while the Stream waited: expected ETIMEDOUT, got {r:?}"
        );
    })
    .await
    .expect("test hung");
}

/// The same with a longer timer already armed: shortening it fires at the
/// new deadline, not the old one.
#[tokio::test]
async fn shortening_an_armed_read_timeout_after_a_pending_poll_fires_on_time() {
    use std::task::Poll;
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .rtimeout(Duration::from_secs(5))
            .build_with_codec(io, BytesCodec::new());
        let mut armed = false;
        let t0 = tokio::time::Instant::now();
        let r = within(
            Duration::from_secs(2),
            std::future::poll_fn(|cx| {
                if let Poll::Ready(item) = conn.poll_next_unpin(cx) {
                    return Poll::Ready(item);
                }
                if !armed {
                    armed = true;
                    conn.set_rtimeout(Duration::from_millis(200));
                }
                Poll::Pending
            }),
        )
        .await;
        assert!(
            matches!(r, Ok(Some(Err(ref e))) if e.is_timeout()),
            "rtimeout shortened to 200 ms; after {:?}: {r:?}",
            t0.elapsed()
        );
    })
    .await
    .expect("test hung");
}

/// The Stream alone gets its read timeout (the split halves' cases below).
#[tokio::test]
async fn control_stream_alone_gets_its_read_timeout() {
    let (io, _peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(200))
        .build_with_codec(io, BytesCodec::new());
    let r = within(Duration::from_secs(2), conn.next()).await;
    assert!(matches!(r, Ok(Some(Err(ref e))) if e.is_timeout()), "{r:?}");
}

/// TO-4: a read timeout set while a read waits, shorter than the time
/// already spent without input, fires at once for that read (the setter
/// finds it expired; nobody queued takes it, so the waiting read does),
/// not one period later.
#[tokio::test(start_paused = true)]
async fn a_read_timeout_set_past_its_deadline_reaches_the_waiting_read_at_once() {
    use std::task::Poll;
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder().build_with_codec(io, BytesCodec::new());
        let mut polled_at = None;
        let r = within(
            Duration::from_secs(2),
            std::future::poll_fn(|cx| {
                if let Poll::Ready(item) = conn.poll_next_unpin(cx) {
                    return Poll::Ready(item.map(|r| (r.map(|_| ()), polled_at)));
                }
                if polled_at.is_none() {
                    polled_at = Some(tokio::time::Instant::now());
                    let waker = cx.waker().clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        waker.wake();
                    });
                } else if polled_at.is_some_and(|t| t.elapsed() >= Duration::from_millis(300)) {
                    // 300 ms without input: a 100 ms timer is already due.
                    conn.set_rtimeout(Duration::from_millis(100));
                    polled_at = Some(tokio::time::Instant::now());
                }
                Poll::Pending
            }),
        )
        .await;
        match r {
            Ok(Some((Err(e), Some(set_at)))) => {
                assert!(e.is_timeout(), "{e:?}");
                assert!(
                    set_at.elapsed() < Duration::from_millis(60),
                    "the timeout came {:?} after the setter found it due",
                    set_at.elapsed()
                );
            }
            other => panic!("{other:?}"),
        }
    })
    .await
    .expect("test hung");
}

/// Split into halves, the `Sink` half flushing to a peer that reads nothing
/// gets its write timeout while the `Stream` half waits for input.
#[tokio::test]
async fn split_sink_gets_its_write_timeout_while_the_stream_half_waits() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(64); // the peer never reads nor writes
        let conn = QueuedFramed::builder()
            .wtimeout(Duration::from_millis(200))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let reader = tokio::spawn(async move { stream.next().await.map(|r| r.map(|_| ())) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = within(
            Duration::from_secs(2),
            sink.send(Bytes::from(vec![b'x'; 1000])),
        )
        .await;
        reader.abort();
        match sent {
            Ok(Err(e)) => assert!(e.is_timeout(), "{e:?}"),
            other => panic!("the blocked Sink half was not told ETIMEDOUT: {other:?}"),
        }
    })
    .await
    .expect("test hung");
}

/// TO-3 on split halves: the `Sink` half waited on the timers last (a flush
/// the peer held up), then finished and went on to other work; the
/// `Stream` half, still waiting for input, gets its read timeout.
#[tokio::test(start_paused = true)]
async fn split_stream_gets_its_read_timeout_after_the_sink_half_waited() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, mut peer) = tokio::io::duplex(64); // the peer never writes
        let conn = QueuedFramed::builder()
            .rtimeout(Duration::from_millis(300))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let reader = tokio::spawn(async move { stream.next().await.map(|r| r.map(|_| ())) });
        tokio::time::sleep(Duration::from_millis(20)).await; // the Stream half waits
        // The peer takes the output only after the flush had to wait.
        let drain = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut peer, &mut sink).await;
        });
        sink.send(Bytes::from(vec![b'x'; 1000])).await.unwrap();
        // The Sink half's task now waits on something else entirely.
        let r = within(Duration::from_secs(2), reader).await;
        drain.abort();
        match r {
            Ok(Ok(Some(Err(e)))) => assert!(e.is_timeout(), "{e:?}"),
            other => panic!("the waiting Stream half missed its read timeout: {other:?}"),
        }
    })
    .await
    .expect("test hung");
}

/// TO-3 on split halves: a write timeout goes to the `Sink` half blocked in
/// a flush, though the `Stream` half waited on the timers after it; the
/// `Stream` half goes on waiting for input.
#[tokio::test(start_paused = true)]
async fn split_sink_gets_its_write_timeout_when_the_stream_half_waited_last() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(64); // the peer never reads nor writes
        let conn = QueuedFramed::builder()
            .wtimeout(Duration::from_millis(300))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let writer = tokio::spawn(async move { sink.send(Bytes::from(vec![b'x'; 1000])).await });
        tokio::time::sleep(Duration::from_millis(20)).await; // the flush waits
        // The write timer fires at 300 ms (and, the Sink half gone, again
        // at 600 ms for whoever waits then: the Stream half, as a lone
        // reader would).
        let read = within(Duration::from_millis(450), stream.next()).await;
        assert!(
            read.is_err(),
            "the Stream half took a timeout that was not its own: {read:?}"
        );
        match within(Duration::from_millis(10), writer).await {
            Ok(Ok(Err(e))) => assert!(e.is_timeout(), "{e:?}"),
            other => panic!("the blocked Sink half was not told ETIMEDOUT: {other:?}"),
        }
    })
    .await
    .expect("test hung");
}

/// Control: one task reading while its output is stuck, with nobody
/// flushing, is the one told of the write timeout.
#[tokio::test(start_paused = true)]
async fn control_a_lone_reader_hears_the_write_timeout() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .wtimeout(Duration::from_millis(300))
            .build_with_codec(io, BytesCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let r = within(Duration::from_secs(2), conn.next()).await;
        assert!(matches!(r, Ok(Some(Err(ref e))) if e.is_timeout()), "{r:?}");
    })
    .await
    .expect("test hung");
}

/// §4, user code is untrusted: a drain hook that `set_wbuf_max` runs (the
/// cap moves the watermark in force, which may fire the drain edge) runs
/// guarded, so its panic closes the connection, inline and spawned alike.
#[tokio::test]
async fn a_drain_hook_set_wbuf_max_runs_is_guarded_inline() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .watermarks(1000, 500)
            .wbuf_max(Some(100)) // high in force 50, low 50
            .build_with_codec(io, BytesCodec::new());
        conn.push_bytes(vec![b'x'; 80]).unwrap(); // above low (50)
        conn.on_drain(|_| panic!("user hook panics"));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            conn.set_wbuf_max(None); // low back to 500: drain edge, hook runs
        }));
        assert!(r.is_err(), "the hook ran and panicked");
        let pushed = conn.push_bytes(vec![b'y'; 1]); // as in the control
        assert!(
            conn.is_closed() && pushed.is_err(),
            "a user hook panicked inside the engine: the connection must fail (fatal \
             ECANCELED), as after set_watermarks; error = {:?}",
            conn.error()
        );
    })
    .await
    .expect("test hung");
}

/// The same through a spawned `Handle`.
#[tokio::test]
async fn a_drain_hook_set_wbuf_max_runs_is_guarded_on_a_handle() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(16); // takes 16 bytes, reads nothing
        let conn = QueuedFramed::builder()
            .watermarks(1000, 500)
            .wbuf_max(Some(100))
            .build_with_codec(io, BytesCodec::new());
        let (h, driver) = conn.spawn();
        let _drv = tokio::spawn(driver);
        h.push_bytes(vec![b'x'; 80]).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await; // 64 left queued
        h.on_drain(|_| panic!("user hook panics"));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.set_wbuf_max(None);
        }));
        assert!(r.is_err(), "the hook ran and panicked");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            h.is_closed(),
            "a user hook panicked inside the engine: the connection must fail; error = {:?}",
            h.error()
        );
    })
    .await
    .expect("test hung");
}
