//! Buffers, watermarks, timeouts, autocork, linger, connect.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyframe::codecs::{ChunkCodec, JsonCodec, LineCodec};
use anyframe::{ErrorKind, QueuedFramed, Timeout};
use support::{MockIo, Step, data};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

// ----- timeouts (TO-1…TO-5), on paused time ---------------------------------

#[tokio::test(start_paused = true)]
async fn idle_timeout_fires_three_times_in_350ms_with_period_100ms() {
    let (io, _peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::builder()
        .timeout(Duration::from_millis(100))
        .build(io)
        .spawn();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let f = fired.clone();
    let start = Instant::now();
    handle.on_timeout(move |which, _| f.lock().unwrap().push((which, start.elapsed())));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let fired = fired.lock().unwrap().clone();
    assert_eq!(fired.len(), 3, "{fired:?}");
    assert!(fired.iter().all(|(w, _)| *w == Timeout::Idle));
    // Nothing was queued: the timers run regardless (TO-2).
    assert!(!handle.is_closed(), "ETIMEDOUT is not fatal");
}

#[tokio::test(start_paused = true)]
async fn rtimeout_is_pushed_back_by_reads_and_fires_once_at_650ms() {
    let (io, mut peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(200))
        .build(io)
        .spawn();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let f = fired.clone();
    let start = Instant::now();
    handle.on_timeout(move |which, _| f.lock().unwrap().push((which, start.elapsed())));
    // A request that keeps the handle reading.
    let _pending = handle.push_read(ChunkCodec::new(1000));
    for at in [150, 300, 450] {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        peer.write_all(b"x").await.unwrap();
    }
    tokio::time::sleep_until(start + Duration::from_millis(700)).await;
    let fired = fired.lock().unwrap().clone();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].0, Timeout::Read);
    let at = fired[0].1;
    assert!(
        at >= Duration::from_millis(650) && at < Duration::from_millis(660),
        "{at:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_without_hook_fails_the_waiting_read_and_keeps_its_bytes() {
    let (io, mut peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::builder()
        .rtimeout(Duration::from_secs(1))
        .build(io);
    peer.write_all(b"half a li").await.unwrap();
    let err = conn.read(LineCodec::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    assert!(!err.is_fatal() && !conn.is_closed());
    assert_eq!(conn.read_buffer(), b"half a li");
    // The handle stays usable.
    peer.write_all(b"ne\n").await.unwrap();
    assert_eq!(
        conn.read(LineCodec::new()).await.unwrap().line(),
        b"half a line"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_fails_a_queued_ticket_once_per_period() {
    let (io, _peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::builder()
        .timeout(Duration::from_millis(100))
        .build(io)
        .spawn();
    let t1 = handle.push_read(LineCodec::new());
    let t2 = handle.push_read(LineCodec::new());
    let start = Instant::now();
    assert_eq!(t1.await.unwrap_err().kind(), ErrorKind::TimedOut);
    assert_eq!(t2.await.unwrap_err().kind(), ErrorKind::TimedOut);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(250),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn setting_a_timeout_checks_the_deadline_at_once() {
    let (io, _peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::new(io);
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    conn.on_timeout(move |_, _| {
        f.fetch_add(1, Ordering::SeqCst);
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The idle stamp is 2 s old: setting a 1 s timeout fires before returning.
    conn.set_timeout(Duration::from_secs(1));
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    conn.timeout_reset(Timeout::Idle);
    conn.set_timeout(Duration::from_secs(1));
    assert_eq!(fired.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn zero_turns_a_timer_off() {
    let (io, _peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::builder()
        .wtimeout(Duration::from_millis(100))
        .build(io)
        .spawn();
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    handle.on_timeout(move |w, _| {
        assert_eq!(
            w,
            Timeout::Write,
            "wtimeout fires even with nothing to write"
        );
        f.fetch_add(1, Ordering::SeqCst);
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(fired.load(Ordering::SeqCst), 2);
    handle.set_wtimeout(Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fired.load(Ordering::SeqCst), 2);
}

/// The slowloris recipe from the docs: `rtimeout` drops a silent peer, the
/// line limit and `rbuf_max` bound memory, and a per-request deadline
/// (`tokio::time::timeout` around the read) drops a peer that trickles.
#[tokio::test(start_paused = true)]
async fn a_slowloris_peer_is_dropped_by_the_documented_recipe() {
    let (io, mut peer) = tokio::io::duplex(64);
    let trickle = tokio::spawn(async move {
        for _ in 0..120 {
            if peer.write_all(b"x").await.is_err() {
                return true; // we were dropped
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        false
    });
    let mut conn = QueuedFramed::builder()
        .rtimeout(Duration::from_secs(5))
        .rbuf_max(Some(8 * 1024))
        .build(io);
    let line = LineCodec::builder().max_length(4096).build().unwrap();
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), conn.read(line)).await;
    assert!(r.is_err(), "the request deadline expired");
    assert!(
        start.elapsed() >= Duration::from_secs(10) && start.elapsed() < Duration::from_secs(11)
    );
    assert!(conn.read_buffer().len() <= 11, "memory stayed bounded");
    drop(conn);
    assert!(
        trickle.await.unwrap(),
        "the trickling peer saw the connection close"
    );
}

// ----- buffers and backpressure -----------------------------------------------

#[tokio::test]
async fn wbuf_max_is_checked_on_every_push_and_keeps_what_was_queued() {
    let (io, _stats) = MockIo::new([]);
    let mut conn = QueuedFramed::builder().wbuf_max(Some(10)).build(io);
    conn.push_bytes(&b"0123456789"[..]).unwrap();
    let err = conn.push_bytes(&b"!"[..]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert!(err.is_fatal() && conn.is_closed());
    let parts = conn.into_parts();
    assert_eq!(
        &parts.write_buf[..],
        b"0123456789",
        "queued data stays reachable"
    );
}

#[tokio::test]
async fn rbuf_max_counts_partial_json_and_is_fatal() {
    let (io, _stats) = MockIo::new([data(b"[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15")]);
    let mut conn = QueuedFramed::builder().rbuf_max(Some(16)).build(io);
    let err = conn
        .read(JsonCodec::<serde_json::Value>::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert!(err.is_fatal());
    // Never more than the cap is read; the rest stays in the transport.
    assert_eq!(
        conn.read_buffer().len(),
        16,
        "the bytes read stay reachable"
    );
}

#[tokio::test]
async fn watermarks_make_producers_wait_and_drain_fires_once_per_edge() {
    let (io, mut peer) = tokio::io::duplex(1024);
    let mut builder = QueuedFramed::builder();
    builder.watermarks(4096, 512);
    let (handle, _driver) = builder.build(io).spawn();
    let drains = Arc::new(AtomicUsize::new(0));
    let d = drains.clone();
    handle.on_drain(move |_| {
        d.fetch_add(1, Ordering::SeqCst);
    });
    handle.push_bytes(vec![b'a'; 8192]).unwrap();
    // Above high: the producer must wait.
    let ready = tokio::time::timeout(Duration::from_millis(50), handle.ready_to_write()).await;
    assert!(
        ready.is_err(),
        "ready_to_write waits above the high watermark"
    );
    // The peer reads; the queue falls below low; the producer is released.
    let reader = tokio::spawn(async move {
        let mut buf = vec![0; 8192];
        peer.read_exact(&mut buf).await.unwrap();
        peer
    });
    handle.ready_to_write().await.unwrap();
    handle.drained().await.unwrap();
    let _peer = reader.await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        drains.load(Ordering::SeqCst),
        1,
        "one edge, one notification"
    );
}

/// The chat-server case: one client never reads while the server keeps
/// pushing; its queue hits `wbuf_max` (ENOSPC) while the other client keeps
/// being served, and the server's memory stays bounded by the caps.
#[tokio::test]
async fn a_client_that_never_reads_gets_enospc_while_others_are_served() {
    const WBUF_MAX: usize = 256 * 1024;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (slow_srv, _) = listener.accept().await.unwrap();
    let fast = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (fast_srv, _) = listener.accept().await.unwrap();
    let mut b = QueuedFramed::builder();
    b.wbuf_max(Some(WBUF_MAX));
    let (slow_h, _d1) = b.build(slow_srv).spawn();
    let (fast_h, _d2) = b.build(fast_srv).spawn();

    let fast_reader = tokio::spawn(async move {
        let mut fast = fast;
        let mut total = 0usize;
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = fast.read(&mut buf).await.unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
    });
    let msg = vec![b'm'; 1000];
    let mut slow_failed_at = None;
    for i in 0..20_000 {
        if slow_failed_at.is_none()
            && let Err(e) = slow_h.push_write(LineCodec::new(), &msg)
        {
            assert_eq!(e.kind(), ErrorKind::NoSpace);
            slow_failed_at = Some(i);
        }
        fast_h.push_write(LineCodec::new(), &msg).unwrap();
        // Let the drivers run; wait for the fast client if it lags.
        fast_h.ready_to_write().await.unwrap();
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(slow_failed_at.is_some(), "the slow client hit wbuf_max");
    assert!(slow_h.is_closed());
    fast_h.flush().await.unwrap();
    drop(fast_h);
    assert_eq!(
        fast_reader.await.unwrap(),
        20_000 * 1001,
        "the fast client got everything"
    );
    drop(slow);
}

// ----- autocork ---------------------------------------------------------------

#[tokio::test]
async fn autocork_on_coalesces_a_thousand_pushes_into_a_handful_of_writes() {
    let (io, stats) = MockIo::new([]);
    let (handle, _driver) = QueuedFramed::builder().autocork(true).build(io).spawn();
    for i in 0..1000u32 {
        handle.push_bytes(format!("{i:04}").into_bytes()).unwrap();
    }
    handle.flush().await.unwrap();
    let s = stats.lock().unwrap();
    assert!(s.write_calls <= 4, "{} write calls", s.write_calls);
    let want: Vec<u8> = (0..1000u32)
        .flat_map(|i| format!("{i:04}").into_bytes())
        .collect();
    assert_eq!(s.written, want, "order preserved");
}

#[tokio::test]
async fn autocork_off_sends_without_waiting_for_a_later_push() {
    let (io, stats) = MockIo::new([]);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    handle.push_bytes(&b"now"[..]).unwrap();
    // No flush, no further push: the driver writes when it runs.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(stats.lock().unwrap().written, b"now");
}

#[tokio::test]
async fn sequential_autocork_off_writes_before_returning_a_buffered_frame() {
    let (io, stats) = MockIo::new([data(b"a\nb\n")]);
    let mut conn = QueuedFramed::new(io);
    conn.read(LineCodec::new()).await.unwrap();
    conn.push_write(LineCodec::new(), "reply").unwrap();
    conn.read(LineCodec::new()).await.unwrap();
    assert_eq!(stats.lock().unwrap().written, b"reply\n");
}

// ----- lifecycle ----------------------------------------------------------------

#[tokio::test]
async fn linger_keeps_writing_to_a_slow_peer_after_the_handle_is_dropped() {
    let (io, mut peer) = tokio::io::duplex(4096);
    let (handle, driver) = QueuedFramed::builder()
        .linger(Duration::from_secs(30))
        .build(io)
        .spawn();
    let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    handle.push_bytes(payload.clone()).unwrap();
    drop(handle);
    let mut got = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        // A slow reader.
        tokio::time::sleep(Duration::from_micros(50)).await;
        let n = peer.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, payload);
    let parts = driver.await.unwrap();
    assert!(parts.write_buf.is_empty());
}

#[tokio::test]
async fn zero_linger_discards_unsent_output() {
    let (io, mut peer) = tokio::io::duplex(1024);
    let (handle, driver) = QueuedFramed::builder()
        .linger(Duration::ZERO)
        .build(io)
        .spawn();
    handle.push_bytes(vec![7u8; 100_000]).unwrap();
    drop(handle);
    let parts = driver.await.unwrap();
    // The pipe took at most its capacity; the rest was not written.
    assert!(!parts.write_buf.is_empty());
    drop(parts);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    assert!(got.len() < 100_000);
}

// ----- connect --------------------------------------------------------------------

#[tokio::test]
async fn reads_and_writes_queued_before_the_connection_is_up_run_once_it_is() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (handle, _driver) = QueuedFramed::builder().no_delay(true).spawn_connect(addr);
    handle.push_write(LineCodec::new(), "hello").unwrap();
    let reply = handle.push_read(LineCodec::new());
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut buf = vec![0; 6];
    sock.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, b"hello\n");
    sock.write_all(b"world\n").await.unwrap();
    assert_eq!(reply.await.unwrap().line(), b"world");
}

#[tokio::test]
async fn a_failed_connect_fails_queued_requests_with_the_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (handle, driver) = QueuedFramed::builder().spawn_connect(("127.0.0.1", port));
    let t = handle.push_read(LineCodec::new());
    let e = t.await.unwrap_err();
    assert_eq!(
        e.io_error().unwrap().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert!(driver.await.is_err());
}

#[tokio::test]
async fn mock_transport_sees_no_write_before_data_exists() {
    // Sanity check of the support mock used above: a Pending step wakes.
    let (io, stats) = MockIo::new([Step::Pending, data(b"x\n")]);
    let mut conn = QueuedFramed::new(io);
    assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), b"x");
    assert_eq!(stats.lock().unwrap().write_calls, 0);
}

#[tokio::test]
async fn watermarks_can_be_changed_at_runtime() {
    let (io, _peer) = tokio::io::duplex(16);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    handle.set_watermarks(100, 0);
    handle.push_bytes(vec![0u8; 1000]).unwrap();
    let blocked = tokio::time::timeout(Duration::from_millis(20), handle.ready_to_write()).await;
    assert!(blocked.is_err(), "above the high mark");
    // Raising both marks above what is queued releases the producer at once.
    handle.set_watermarks(1 << 20, 1 << 20);
    tokio::time::timeout(Duration::from_millis(200), handle.ready_to_write())
        .await
        .expect("released")
        .unwrap();
}
