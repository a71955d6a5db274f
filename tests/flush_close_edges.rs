//! Where flushes and closes meet: the inline write after an input-side
//! error (LC-3, LC-5), `Handle::closed()` and its `Closed` future, a
//! spawned handle's flush resolving at its own mark (WQ-2) around TLS
//! switches and half-closes, and `Parts::after_switch` (TLS-4, "Nothing is
//! lost"). Every wait is bounded.

mod support;

#[cfg(any(feature = "tls", feature = "rustls"))]
#[path = "support/pki.rs"]
mod pki;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, QueuedFramed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn bounded<F: Future>(ms: u64, f: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_millis(ms), f)
        .await
        .ok()
}

/// Polls `f` once with a no-op waker: registers whatever it registers at
/// its first poll (a flush takes its mark then).
fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    Pin::new(f).poll(&mut cx)
}

#[cfg(any(feature = "tls", feature = "rustls"))]
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ----- positional flush vs a TLS switch ---------------------------------------------

/// `Handle::flush`: "Resolves once everything queued so far is written and
/// flushed" (now positional: each flush at its own mark). A flush taken
/// while `EHLO\n` is queued, then a STARTTLS whose peer never answers the
/// ClientHello: the EHLO is written and flushed (the peer reads it), so the
/// flush must resolve; it waits for the handshake instead.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn flush_taken_before_a_starttls_resolves_once_its_bytes_left() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        let (h, _driver) = QueuedFramed::new(io).spawn();
        h.push_bytes(&b"EHLO\n"[..]).unwrap();
        let mut flush = Box::pin(h.flush());
        assert!(poll_once(&mut flush).is_pending());
        let _switch = h.starttls(pki::client_on(b));
        // The peer reads the EHLO (and the ClientHello), and says nothing.
        let mut got = vec![0u8; 5];
        bounded(2000, peer.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"EHLO\n");
        match bounded(1500, flush).await {
            Some(Ok(())) => {}
            other => failed.push(format!(
                "{b:?}: the flush of EHLO (written and read by the peer) gave {other:?} \
                 while the handshake queued after it waits"
            )),
        }
        h.destroy();
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The other order: a flush taken while a STARTTLS is pending, with nothing
/// queued, waits for that switch (it was queued before the flush) and
/// resolves once the handshake is done.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn flush_taken_after_a_starttls_waits_for_the_handshake() {
    for &b in pki::BACKENDS {
        let (io, peer) = tokio::io::duplex(1 << 16);
        let (h, _driver) = QueuedFramed::new(io).spawn();
        let switch = h.starttls(pki::client_on(b));
        let mut flush = Box::pin(h.flush());
        assert!(poll_once(&mut flush).is_pending());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            poll_once(&mut flush).is_pending(),
            "{b:?}: the flush resolved before the handshake queued ahead of it"
        );
        let server = tokio::spawn(async move {
            let mut conn = QueuedFramed::builder()
                .tls(pki::server_on(b, &pki::pki().server))
                .build(peer);
            let _ = conn.read(LineCodec::new()).await;
        });
        bounded(3000, flush).await.unwrap().unwrap();
        assert!(h.is_tls(), "{b:?}");
        bounded(3000, switch).await.unwrap().unwrap();
        h.destroy();
        server.abort();
    }
}

/// The same, but the peer refuses the switch in plaintext (EPROTO, fatal):
/// the flush taken before the STARTTLS had all its bytes written and read
/// by the peer, yet it reports the handshake's failure.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn flush_taken_before_a_failed_starttls_reports_its_own_bytes() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        let (h, _driver) = QueuedFramed::new(io).spawn();
        h.push_bytes(&b"EHLO\n"[..]).unwrap();
        let mut flush = Box::pin(h.flush());
        assert!(poll_once(&mut flush).is_pending());
        let switch = h.starttls(pki::client_on(b));
        let mut got = vec![0u8; 5];
        bounded(2000, peer.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"EHLO\n");
        peer.write_all(b"454 TLS not available\r\n").await.unwrap();
        let s = bounded(3000, switch).await;
        match bounded(1000, flush).await {
            Some(Ok(())) => {}
            other => failed.push(format!(
                "{b:?}: switch {s:?}; the flush of EHLO (written, flushed, read by the \
                 peer) gave {other:?}"
            )),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- positional flush: never before its own bytes ---------------------------------------

/// A flush taken with 8 KiB queued, while another task keeps queueing and
/// the peer reads slowly through a 64-byte pipe: when it resolves, at least
/// those 8 KiB have been written (a flush resolving early is a defect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positional_flush_never_resolves_before_its_bytes() {
    for round in 0..5 {
        let (io, mut peer) = tokio::io::duplex(64);
        let (tap, writes) = support::Tap::new(io);
        let (h, _driver) = QueuedFramed::new(tap).spawn();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 37];
            let mut total = 0usize;
            loop {
                match peer.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
                if total % 1024 < 37 {
                    tokio::task::yield_now().await;
                }
            }
        });
        h.push_bytes(vec![b'a'; 8192]).unwrap();
        let producer = {
            let h = h.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    if h.push_bytes(vec![b'b'; 100]).is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        bounded(20_000, h.flush())
            .await
            .expect("flush hung")
            .unwrap();
        let written = support::written(&writes).len();
        assert!(
            written >= 8192,
            "round {round}: flush resolved with {written} of its 8192 bytes written"
        );
        let _ = bounded(20_000, producer).await;
        h.destroy();
        drop(h);
        reader.abort();
    }
}

/// A write timeout fails the flush (non-fatal ETIMEDOUT); once the peer
/// reads, a later flush at its own mark resolves, and everything arrives
/// once, in order.
#[tokio::test]
async fn positional_flush_after_a_write_timeout() {
    let (io, mut peer) = tokio::io::duplex(256);
    let (h, _driver) = QueuedFramed::builder()
        .linger(Duration::from_millis(100))
        .build(io)
        .spawn();
    h.set_wtimeout(Duration::from_millis(150));
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    h.push_bytes(data.clone()).unwrap();
    let r = bounded(3000, h.flush()).await.expect("flush hung");
    let e = r.expect_err("the peer does not read: ETIMEDOUT");
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(!e.is_fatal());
    h.push_bytes(&b"tail"[..]).unwrap();
    let f = h.flush();
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; 4100];
        peer.read_exact(&mut got).await.map(|_| got)
    });
    bounded(3000, f).await.expect("flush hung").unwrap();
    let got = bounded(3000, reader).await.unwrap().unwrap().unwrap();
    assert_eq!(&got[..4096], &data[..]);
    assert_eq!(&got[4096..], b"tail");
}

/// Flushes taken between pushes over a pipe that takes a few bytes at a
/// time: they resolve in order, each after its own bytes.
#[tokio::test]
async fn positional_flushes_resolve_in_mark_order() {
    let (io, mut peer) = tokio::io::duplex(16);
    let (tap, writes) = support::Tap::new(io);
    let (h, _driver) = QueuedFramed::new(tap).spawn();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut mark = 0usize;
    for i in 0..6usize {
        let n = 100 * (i + 1);
        h.push_bytes(vec![b'0' + i as u8; n]).unwrap();
        mark += n;
        let hc = h.clone();
        let mut f = Box::pin(async move { hc.flush().await });
        assert!(poll_once(&mut f).is_pending());
        let order = order.clone();
        let writes = writes.clone();
        tasks.push(tokio::spawn(async move {
            f.await.unwrap();
            let w = support::written(&writes).len();
            order.lock().unwrap().push(i);
            (w, mark)
        }));
    }
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 7];
        let mut total = 0;
        while total < 2100 {
            match peer.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    });
    for t in tasks {
        let (w, mark) = bounded(5000, t).await.expect("flush hung").unwrap();
        assert!(
            w >= mark,
            "a flush resolved with {w} bytes written, its mark {mark}"
        );
    }
    assert_eq!(bounded(5000, reader).await.unwrap().unwrap(), 2100);
    let order = order.lock().unwrap().clone();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
}

// ----- Closed ----------------------------------------------------------------------------

/// `closed()` futures created before and after a `detach` resolve (the
/// driver's end is the connection's end).
#[tokio::test]
async fn closed_resolves_on_detach() {
    let (io, _peer) = tokio::io::duplex(64);
    let (h, driver) = QueuedFramed::new(io).spawn();
    let before = h.closed();
    h.detach();
    let parts = bounded(2000, driver).await.expect("driver").unwrap();
    drop(parts);
    let e = bounded(1000, before)
        .await
        .expect("closed() before detach hung");
    assert!(e.is_fatal(), "{e}");
    let after = h.closed();
    let e2 = bounded(1000, after)
        .await
        .expect("closed() after detach hung");
    assert_eq!(e.kind(), e2.kind());
}

/// A `Closed` from the only handle, which is then dropped: the connection
/// ends (last handle gone) and the future resolves; it does not keep the
/// connection open.
#[tokio::test]
async fn closed_outlives_the_last_handle() {
    let (io, _peer) = tokio::io::duplex(64);
    let (h, driver) = QueuedFramed::builder()
        .linger(Duration::from_millis(200))
        .build(io)
        .spawn();
    h.push_bytes(vec![b'x'; 1000]).unwrap();
    let closed = h.closed();
    drop(h);
    let e = bounded(2000, closed)
        .await
        .expect("Closed hung after the last handle");
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    let parts = bounded(2000, driver).await.expect("driver").unwrap();
    // 64-byte pipe, nobody reads: the rest comes back.
    assert!(!parts.write_buf.is_empty());
}

/// A `Closed` polled in one task, then moved to another and awaited there:
/// the second task is woken by the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_moved_across_tasks_wakes_the_last_poller() {
    let (io, _peer) = tokio::io::duplex(64);
    let (h, _driver) = QueuedFramed::new(io).spawn();
    let mut closed = h.closed();
    // First poll: task A's waker (a no-op one here).
    assert!(poll_once(&mut closed).is_pending());
    let t = tokio::spawn(closed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.destroy();
    let e = bounded(2000, t).await.expect("moved Closed hung").unwrap();
    assert_eq!(e.kind(), ErrorKind::Closed);
}

/// Many `Closed` futures created and dropped while others wait: each live
/// one resolves once; one re-polled after resolving gives the error again.
#[tokio::test]
async fn closed_dropped_and_repolled() {
    let (io, _peer) = tokio::io::duplex(64);
    let (h, _driver) = QueuedFramed::new(io).spawn();
    let mut live = Vec::new();
    for i in 0..200 {
        let mut c = h.closed();
        assert!(poll_once(&mut c).is_pending());
        if i % 2 == 0 {
            live.push(c);
        }
    }
    h.destroy();
    for c in &mut live {
        let e = bounded(1000, &mut *c).await.expect("Closed hung");
        assert_eq!(e.kind(), ErrorKind::Closed);
        // Polled again after it resolved.
        match poll_once(c) {
            Poll::Ready(e) => assert_eq!(e.kind(), ErrorKind::Closed),
            Poll::Pending => panic!("a resolved Closed went back to pending"),
        }
    }
}

/// `closed()` on a connection closed by a read's end of input (an
/// input-side error), created after the error: resolves at once with it.
#[tokio::test]
async fn closed_after_an_input_side_error() {
    let (io, mut peer) = tokio::io::duplex(64);
    let (h, _driver) = QueuedFramed::new(io).spawn();
    peer.write_all(b"par").await.unwrap();
    peer.shutdown().await.unwrap();
    let e = bounded(2000, h.read(LineCodec::new()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.is_eof(), "{e}");
    let c = bounded(1000, h.closed()).await.expect("closed() hung");
    assert!(c.is_eof(), "{c}");
}

// ----- tower Client waiting for a slot -----------------------------------------------------

/// Clones waiting for the one slot, some dropped while they wait, some
/// re-polled from other tasks: the connection's end reaches the rest.
#[cfg(feature = "tower")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_clones_dropped_while_waiting_for_a_slot() {
    use tower::{Service, ServiceExt};
    let (ours, _peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let client = anyframe::service::Client::builder().max_in_flight(1).build(
        handle.clone(),
        LineCodec::new(),
        (|_: &String| LineCodec::new()) as fn(&String) -> LineCodec,
    );
    // The one slot, taken before any waiter starts.
    let mut first = client.clone();
    first.ready().await.unwrap();
    let held = tokio::spawn(first.call("held".to_string()));
    let mut waiters = Vec::new();
    for i in 0..20 {
        let mut c = client.clone();
        // Poll once here (this task's waker), then move it.
        let first = futures::future::poll_fn(|cx| Poll::Ready(c.poll_ready(cx))).await;
        assert!(first.is_pending());
        if i % 3 == 0 {
            drop(c);
            continue;
        }
        waiters.push(tokio::spawn(async move { c.ready().await.map(|_| ()) }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.destroy();
    for w in waiters {
        let r = bounded(2000, w).await.expect("ready() hung").unwrap();
        assert!(r.is_err());
    }
    assert!(bounded(2000, held).await.unwrap().unwrap().is_err());
}

// ----- inline close paths ----------------------------------------------------------------

/// LC-3/LC-5: after an input-side error, `flush` writes the output queued
/// before it for up to `linger` "from when the peer first stops taking
/// it". Flushes given up after 50 ms each (dropped futures) must still end
/// with the error once the period has run, not restart it every time.
#[tokio::test]
async fn inline_linger_deadline_survives_dropped_flushes() {
    let (io, mut peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::builder()
        .linger(Duration::from_millis(300))
        .build_with_codec(io, LineCodec::new());
    peer.write_all(b"one\ntw").await.unwrap();
    peer.shutdown().await.unwrap();
    let first = bounded(1000, conn.read(LineCodec::new()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.line(), b"one");
    conn.push_bytes(vec![b'r'; 4096]).unwrap();
    let e = bounded(1000, conn.read(LineCodec::new())).await.unwrap();
    // The read itself writes what it can (a read writes queued output):
    // the rest waits for the peer.
    assert!(e.unwrap_err().is_eof());
    let t0 = tokio::time::Instant::now();
    let mut result = None;
    for _ in 0..40 {
        if let Some(r) = bounded(50, conn.flush()).await {
            result = Some(r);
            break;
        }
    }
    let waited = t0.elapsed();
    let r = result.unwrap_or_else(|| panic!("no flush ended within 40 x 50 ms (linger 300 ms)"));
    assert!(r.unwrap_err().is_eof());
    assert!(waited < Duration::from_millis(1000), "{waited:?}");
}

/// LC-3: "after `destroy` they write nothing". An inline connection whose
/// `on_timeout` hook destroys it (Requests::destroy) after an input-side
/// error... before it: the flush writes nothing.
#[tokio::test]
async fn inline_hook_destroy_then_flush_writes_nothing() {
    let (io, peer) = tokio::io::duplex(1 << 16);
    let (tap, writes) = support::Tap::new(io);
    let mut conn = QueuedFramed::builder()
        .linger(Duration::from_secs(5))
        .build(tap);
    conn.set_rtimeout(Duration::from_millis(100));
    conn.on_timeout(|_, q| q.destroy());
    conn.push_bytes(&b"queued\n"[..]).unwrap();
    let r = bounded(2000, conn.read(LineCodec::new()))
        .await
        .expect("read hung");
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Closed);
    let before = support::written(&writes);
    let f = bounded(1000, conn.flush()).await.expect("flush hung");
    assert_eq!(f.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(support::written(&writes), before);
    drop(peer);
}

/// LC-3 on the spawned front end: `Requests::destroy` from a completion
/// still lingers on the queued output.
#[tokio::test]
async fn spawned_requests_destroy_lingers() {
    let (io, mut peer) = tokio::io::duplex(64);
    let (h, driver) = QueuedFramed::builder()
        .linger(Duration::from_secs(5))
        .build(io)
        .spawn();
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    h.push_bytes(data.clone()).unwrap();
    let t = h.push_read_with(LineCodec::new(), |_, q| {
        q.destroy();
        Ok(())
    });
    peer.write_all(b"go\n").await.unwrap();
    let _ = bounded(2000, t).await;
    drop(h);
    let mut got = Vec::new();
    bounded(5000, peer.read_to_end(&mut got))
        .await
        .expect("linger")
        .unwrap();
    assert_eq!(got, data);
    let _ = bounded(2000, driver).await;
}

/// `shutdown_write` after an input-side error with a `push_shutdown`
/// already queued and output behind: output once, then one half-close; a
/// second `shutdown_write` writes nothing more.
#[tokio::test]
async fn inline_shutdown_write_twice_after_input_error() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (tap, writes) = support::Tap::new(io);
    let mut conn = QueuedFramed::builder()
        .linger(Duration::from_secs(2))
        .build(tap);
    conn.set_autocork(true);
    peer.write_all(b"par").await.unwrap();
    peer.shutdown().await.unwrap();
    conn.push_bytes(&b"reply\n"[..]).unwrap();
    let e = bounded(1000, conn.read(LineCodec::new()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.is_eof());
    let a = bounded(1000, conn.shutdown_write()).await.expect("hung");
    let b = bounded(1000, conn.shutdown_write()).await.expect("hung");
    assert!(a.unwrap_err().is_eof());
    assert!(b.unwrap_err().is_eof());
    let mut got = Vec::new();
    bounded(1000, peer.read_to_end(&mut got))
        .await
        .expect("no EOF: no half-close")
        .unwrap();
    assert_eq!(got, b"reply\n");
    assert_eq!(support::written(&writes), b"reply\n");
}

// ----- after_switch ----------------------------------------------------------------------

/// into_parts → build_from_parts(tls) → into_parts: nothing lost or
/// duplicated, plaintext and post-switch output kept apart.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn after_switch_round_trip() {
    for &b in pki::BACKENDS {
        let (io, _peer) = tokio::io::duplex(1 << 16);
        let mut conn = QueuedFramed::new(io);
        conn.push_bytes(&b"EHLO\n"[..]).unwrap();
        let _s = conn.push_starttls(pki::client_on(b));
        conn.push_bytes(&b"SECRET\n"[..]).unwrap();
        let parts = conn.into_parts();
        let mut again = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .build_from_parts(parts);
        again.push_bytes(&b"MORE\n"[..]).unwrap();
        let parts = again.into_parts();
        assert_eq!(&parts.write_buf[..], b"EHLO\n", "{b:?}");
        assert_eq!(&parts.after_switch[..], b"SECRET\nMORE\n", "{b:?}");
    }
}

/// A spawned connection: STARTTLS pending on a silent peer, a clone
/// queues behind it, then detach: the driver's parts keep that output
/// apart from the plaintext.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn detach_during_a_pending_switch_keeps_tls_output_apart() {
    for &b in pki::BACKENDS {
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        let (h, driver) = QueuedFramed::new(io).spawn();
        h.push_bytes(&b"EHLO\n"[..]).unwrap();
        let _s = h.starttls(pki::client_on(b));
        let h2 = h.clone();
        std::thread::spawn(move || {
            h2.push_bytes(&b"SECRET\n"[..]).unwrap();
        })
        .join()
        .unwrap();
        let mut buf = [0u8; 5];
        bounded(2000, peer.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        h.detach();
        let parts = bounded(2000, driver).await.expect("driver").unwrap();
        assert!(
            !contains(&parts.write_buf, b"SECRET"),
            "{b:?}: {:?}",
            parts.write_buf
        );
        assert_eq!(&parts.after_switch[..], b"SECRET\n", "{b:?}");
    }
}

/// Positional flush with a half-close queued after it: a flush taken with
/// `A\n` queued, then a STARTTLS queued behind a read the silent peer has
/// not answered, then `push_shutdown`. `A\n` is written and flushed (the
/// peer reads it); the flush, taken before the shutdown was asked for, must
/// resolve as it does without the shutdown.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn flush_taken_before_a_push_shutdown_behind_a_switch() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for shut in [false, true] {
            let (io, mut peer) = tokio::io::duplex(1 << 16);
            let (h, _driver) = QueuedFramed::new(io).spawn();
            let _read = h.push_read(LineCodec::new());
            h.push_bytes(&b"A\n"[..]).unwrap();
            let mut flush = Box::pin(h.flush());
            assert!(poll_once(&mut flush).is_pending());
            let _switch = h.starttls(pki::client_on(b));
            if shut {
                h.push_shutdown().unwrap();
            }
            let mut got = [0u8; 2];
            bounded(2000, peer.read_exact(&mut got))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&got, b"A\n");
            match bounded(1500, flush).await {
                Some(Ok(())) => {}
                other => failed.push(format!(
                    "{b:?}, push_shutdown after the flush: {shut}: the flush of A (written, \
                     read by the peer) gave {other:?}"
                )),
            }
            h.destroy();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// LC-5 on split halves: the `Stream` half meets end of input inside a
/// line; the `Sink` half's `close` then writes the reply queued before it
/// to a slow reader (64-byte pipe), half-closes, and returns the error.
#[tokio::test]
async fn split_sink_close_after_the_stream_half_met_eof() {
    use futures::{SinkExt, StreamExt};
    let (io, mut peer) = tokio::io::duplex(64);
    let conn = QueuedFramed::builder()
        .linger(Duration::from_secs(5))
        .build_with_codec(io, LineCodec::new());
    let (mut sink, mut stream) = conn.split();
    peer.write_all(b"one\npar").await.unwrap();
    peer.shutdown().await.unwrap();
    let first = bounded(1000, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.line(), b"one");
    let reply = "r".repeat(3000);
    bounded(1000, sink.feed(reply.as_str()))
        .await
        .expect("feed hung")
        .unwrap();
    // SplitSink holds a fed item in its slot: poll_ready hands it over.
    bounded(
        1000,
        futures::future::poll_fn(|cx| sink.poll_ready_unpin(cx)),
    )
    .await
    .expect("poll_ready hung")
    .unwrap();
    let e = bounded(1000, stream.next()).await.expect("next hung");
    assert!(matches!(e, Some(Err(ref e)) if e.is_eof()), "{e:?}");
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 10];
        loop {
            match peer.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let closed = bounded(5000, sink.close()).await.expect("Sink close hung");
    assert!(closed.unwrap_err().is_eof());
    let got = match bounded(2000, reader).await {
        Some(got) => got.unwrap(),
        None => {
            let conn = sink.reunite(stream).unwrap();
            let left = conn.write_buffered();
            panic!(
                "Sink close returned, but the peer saw no end of output ({left} bytes still queued)"
            );
        }
    };
    assert_eq!(got.len(), 3001);
}

/// `Builder::tls` + `build_from_parts` with `after_switch`, spawned, and the
/// peer answers the handshake with plaintext: the driver's parts hand the
/// post-switch output back apart, once; the plaintext left before.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn rebuilt_with_tls_then_failed_handshake_keeps_after_switch() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        let mut parts = anyframe::Parts::new(io, ());
        parts.write_buf.extend_from_slice(b"EHLO\n");
        parts.after_switch.extend_from_slice(b"SECRET\n");
        let conn = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .build_from_parts(parts);
        let (h, driver) = conn.spawn();
        h.push_bytes(&b"MORE\n"[..]).unwrap();
        let mut got = [0u8; 5];
        bounded(2000, peer.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"EHLO\n");
        peer.write_all(b"454 no\r\n").await.unwrap();
        let _ = bounded(2000, h.closed()).await;
        drop(h);
        let parts = bounded(3000, driver).await.expect("driver").unwrap();
        let mut wire = Vec::new();
        drop(parts.io);
        let _ = bounded(1000, peer.read_to_end(&mut wire)).await;
        if contains(&wire, b"SECRET") || contains(&wire, b"MORE") {
            failed.push(format!(
                "{b:?}: leaked {:?}",
                String::from_utf8_lossy(&wire)
            ));
        }
        if &parts.write_buf[..] != b"" || &parts.after_switch[..] != b"SECRET\nMORE\n" {
            failed.push(format!(
                "{b:?}: write_buf {:?}, after_switch {:?}",
                parts.write_buf, parts.after_switch
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Inline: a read queued before a STARTTLS meets end of input inside its
/// line (input-side error). `flush` then writes the plaintext queued before
/// the switch, never what is behind it; `into_parts` hands that back apart.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn inline_after_close_write_stops_at_the_marker() {
    for &b in pki::BACKENDS {
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        let (tap, writes) = support::Tap::new(io);
        let mut conn = QueuedFramed::builder()
            .linger(Duration::from_secs(2))
            .build_with_codec(tap, LineCodec::new());
        conn.set_autocork(true);
        let read = conn.push_read(LineCodec::new());
        conn.push_bytes(&b"PLAIN\n"[..]).unwrap();
        let _switch = conn.push_starttls(pki::client_on(b));
        conn.push_bytes(&b"SECRET\n"[..]).unwrap();
        peer.write_all(b"par").await.unwrap();
        peer.shutdown().await.unwrap();
        let r = bounded(2000, conn.wait(read)).await.expect("read hung");
        assert!(r.unwrap_err().is_eof());
        let f = bounded(2000, conn.flush()).await.expect("flush hung");
        assert!(f.unwrap_err().is_eof());
        let wire = support::written(&writes);
        assert!(!contains(&wire, b"SECRET"), "{b:?}");
        assert_eq!(&wire[..], b"PLAIN\n", "{b:?}");
        let parts = conn.into_parts();
        assert!(parts.write_buf.is_empty(), "{b:?}");
        assert_eq!(&parts.after_switch[..], b"SECRET\n", "{b:?}");
    }
}

/// Inline, nothing lost or duplicated: the after-close write is cut by
/// `destroy` half way (the peer stopped reading); what the peer got plus
/// `into_parts().write_buf` is exactly the reply, and a flush after the
/// destroy writes nothing.
#[tokio::test]
async fn inline_destroy_mid_after_close_write_loses_nothing() {
    let (io, mut peer) = tokio::io::duplex(64);
    let (tap, writes) = support::Tap::new(io);
    let mut conn = QueuedFramed::builder()
        .linger(Duration::from_secs(5))
        .build(tap);
    let reply: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    conn.set_autocork(true);
    conn.push_bytes(reply.clone()).unwrap();
    peer.write_all(b"par").await.unwrap();
    peer.shutdown().await.unwrap();
    let r = bounded(2000, conn.read(LineCodec::new()))
        .await
        .expect("read hung");
    assert!(r.unwrap_err().is_eof());
    assert!(
        bounded(100, conn.flush()).await.is_none(),
        "the pipe is full"
    );
    let mut head = vec![0u8; 32];
    bounded(1000, peer.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert!(
        bounded(100, conn.flush()).await.is_none(),
        "the pipe is full again"
    );
    conn.destroy();
    let before = support::written(&writes).len();
    let f = bounded(1000, conn.flush())
        .await
        .expect("flush after destroy hung");
    assert!(f.is_err());
    assert_eq!(
        support::written(&writes).len(),
        before,
        "a flush after destroy wrote"
    );
    let parts = conn.into_parts();
    let wire = support::written(&writes);
    let mut all = wire.clone();
    all.extend_from_slice(&parts.write_buf);
    assert_eq!(all, reply);
}

/// `closed()` made inside a completion (where the engine is held) and
/// polled in another task: the future takes the engine only when first
/// polled, so it is made without a panic and resolves at the close.
#[tokio::test]
async fn closed_made_inside_a_completion_resolves_at_the_close() {
    let (io, mut peer) = tokio::io::duplex(1 << 10);
    let (h, _driver) = QueuedFramed::new(io).spawn();
    let inner = h.clone();
    let watcher = h.push_read_with(LineCodec::new(), move |_, _| {
        Ok(tokio::spawn(inner.closed()))
    });
    peer.write_all(b"go\n").await.unwrap();
    let watcher = support::within("completion", watcher).await.unwrap();
    h.destroy();
    let e = support::within("closed", watcher).await.unwrap();
    assert_eq!(e.kind(), ErrorKind::Closed);
}

/// What a `poll_ready` keeps across polls: the future is `Send`, `Unpin`
/// and `'static`.
#[test]
fn closed_is_send_unpin_and_static() {
    fn keepable<T: Future + Send + Unpin + 'static>() {}
    keepable::<anyframe::Closed>();
}
