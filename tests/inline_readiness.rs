//! The inline front end's readiness and timers: `ready_to_write` and the
//! `Sink` at the low watermark and under `wbuf_max`, a timer set while a
//! poll waits, and a read timeout heard by the `Sink` half of a split
//! handle.

use std::time::Duration;

use anyframe::{ErrorKind, QueuedFramed};
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

/// TO-3: an expired timer goes to a waiter it concerns. Split into its
/// `Sink` and `Stream` halves in two tasks, the Sink half flushing to a peer
/// that reads nothing hears the read timer first: it hands the timeout to
/// the Stream half, which is waiting for input, and wakes it.
#[tokio::test]
async fn split_stream_gets_its_read_timeout_while_the_sink_half_is_blocked() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(64); // the peer never reads nor writes
        let conn = QueuedFramed::builder()
            .rtimeout(Duration::from_millis(200))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let writer = tokio::spawn(async move {
            // While the Stream already waits: 1000 bytes into a 64-byte pipe
            // nobody reads, so the flush waits (and polls the timers last).
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = sink.send(Bytes::from(vec![b'x'; 1000])).await;
        });
        let r = within(Duration::from_secs(2), stream.next()).await;
        writer.abort();
        match r {
            Ok(Some(Err(e))) => assert_eq!(e.kind(), ErrorKind::TimedOut),
            other => panic!(
                "no byte for 2 s with rtimeout 200 ms: expected the Stream to yield \
                 ETIMEDOUT, got {other:?}"
            ),
        }
    })
    .await
    .expect("test hung");
}

/// The same with both halves in one task.
#[tokio::test]
async fn split_in_one_task_the_stream_half_gets_its_read_timeout() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = QueuedFramed::builder()
            .rtimeout(Duration::from_millis(200))
            .build_with_codec(io, BytesCodec::new());
        let (mut sink, mut stream) = conn.split::<Bytes>();
        let send = sink.send(Bytes::from(vec![b'x'; 1000]));
        tokio::pin!(send);
        let r = within(Duration::from_secs(2), async {
            tokio::select! {
                biased;
                sent = &mut send => Err(sent),
                item = stream.next() => Ok(item),
            }
        })
        .await;
        match r {
            Ok(Ok(Some(Err(e)))) => assert_eq!(e.kind(), ErrorKind::TimedOut),
            Ok(Err(sent)) => assert!(
                matches!(&sent, Err(e) if e.is_timeout()),
                "the Sink half may hear it instead, but as a timeout: {sent:?}"
            ),
            other => panic!(
                "no byte for 2 s with rtimeout 200 ms: nobody (Stream or Sink) was told \
                 ETIMEDOUT: {other:?}"
            ),
        }
    })
    .await
    .expect("test hung");
}

/// The Stream alone gets its read timeout.
#[tokio::test]
async fn control_stream_alone_gets_its_read_timeout() {
    let (io, _peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(200))
        .build_with_codec(io, BytesCodec::new());
    let r = within(Duration::from_secs(2), conn.next()).await;
    assert!(matches!(r, Ok(Some(Err(ref e))) if e.is_timeout()), "{r:?}");
}

/// The mirror case: the Stream half, waiting for input, hears the write
/// timer first; the Sink half, flushing to a peer that reads nothing, is
/// the one it concerns, and gets it.
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
