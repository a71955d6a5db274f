//! How a connection ends: linger with a TLS handshake pending when the last
//! handle goes, a timeout hook that destroys the connection under an inline
//! flush or read, and `serve` with a client that never reads or a service
//! error behind answers held back by the watermark.
#![cfg(all(any(feature = "tls", feature = "rustls"), feature = "tower"))]

mod support;

#[path = "support/pki.rs"]
mod pki;

use std::time::{Duration, Instant};

use anyframe::QueuedFramed;
use anyframe::codecs::{LineCodec, Utf8Line, Utf8LineCodec};
use anyframe::service::serve;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use support::within;

/// LC-3 (docs/semantics.md): "Output that waits behind a TLS switch still
/// pending when the last `Handle` goes (a handshake under way) is written
/// once the switch is done, within the same period". A TLS client with
/// `linger` 1 s queues 1 MB behind `Builder::tls` and drops its handle; the
/// server answers the handshake at 700 ms, reads one line and stops
/// reading. The driver should end about 1 s after the handle went; it
/// lingers a second full period after the handshake (about 1.7 s).
#[tokio::test]
async fn lc3_linger_behind_a_pending_switch_is_one_period_not_two() {
    let b = pki::BACKENDS[0];
    let (c, s) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut conn = QueuedFramed::builder()
            .tls(pki::server_on(b, &pki::pki().server))
            .build(s);
        let l = conn.read(LineCodec::new()).await;
        // Holds the connection, reading nothing more.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(conn);
        l.map(|_| ())
    });
    let (h, driver) = QueuedFramed::builder()
        .tls(pki::client_on(b))
        .linger(Duration::from_secs(1))
        .build(c)
        .spawn();
    let line = "x".repeat(999);
    for _ in 0..1000 {
        h.push_write(LineCodec::new(), line.as_str()).unwrap();
    }
    let start = Instant::now();
    drop(h);
    let _ = within("driver", driver).await;
    let took = start.elapsed();
    server.abort();
    assert!(
        took < Duration::from_millis(1400),
        "linger 1 s, yet the driver ran {took:?} after the last handle went"
    );
}

/// `Serve::run`: "With a write or idle timeout set, a client that takes
/// none of the answers for that long ends the loop, and the unsent answers
/// are dropped." Errors: "a fatal `ETIMEDOUT` when the answers were not
/// taken for a write or idle timeout". Idle timeout 300 ms, answers of
/// 256 KiB, a client that pipelines 64 requests and never reads.
#[tokio::test]
async fn serve_idle_timeout_ends_a_client_that_never_reads() {
    serve_never_reading(true).await;
}

/// The same with a write timeout.
#[tokio::test]
async fn serve_write_timeout_ends_a_client_that_never_reads() {
    serve_never_reading(false).await;
}

async fn serve_never_reading(idle: bool) {
    let (server_io, mut client_io) = tokio::io::duplex(1 << 16);
    let big = Bytes::from(vec![b'a'; 256 * 1024 - 1]);
    let svc = tower::service_fn(move |_: Utf8Line| {
        let big = big.clone();
        async move { Ok::<_, std::convert::Infallible>(big) }
    });
    let mut b = QueuedFramed::builder();
    if idle {
        b.timeout(Duration::from_millis(300));
    } else {
        b.wtimeout(Duration::from_millis(300));
    }
    let server = tokio::spawn(
        serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc)
            .connection(b)
            .run(),
    );
    client_io
        .write_all("x\n".repeat(64).as_bytes())
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the loop never ended")
        .unwrap();
    let e = out.expect_err("ended Ok");
    assert!(e.is_timeout() && e.is_fatal(), "{e:?}");
    drop(client_io);
}

/// An inline connection whose `on_timeout` hook destroys it, with a read
/// timeout or (`write`) a write timeout of 100 ms, and `queued` bytes of
/// output for a peer that reads nothing.
fn destroyed_by_its_timeout_hook(
    write: bool,
    queued: usize,
) -> (
    QueuedFramed<tokio::io::DuplexStream>,
    tokio::io::DuplexStream,
) {
    let (io, peer) = tokio::io::duplex(1024);
    let mut builder = QueuedFramed::builder();
    match write {
        true => builder.wtimeout(Duration::from_millis(100)),
        false => builder.rtimeout(Duration::from_millis(100)),
    };
    let mut conn = builder.build(io);
    conn.on_timeout(|_, q| q.destroy());
    if queued > 0 {
        conn.push_bytes(Bytes::from(vec![b'a'; queued])).unwrap();
    }
    (conn, peer)
}

/// TO-3 with a hook: an `on_timeout` hook that destroys the connection
/// while an inline `flush` waits ends the flush with the close's error
/// (no hang, no `Ok`).
#[tokio::test]
async fn inline_flush_ends_when_the_write_timeout_hook_destroys() {
    let (mut conn, _peer) = destroyed_by_its_timeout_hook(true, 64 * 1024);
    let r = within("flush", conn.flush()).await;
    assert!(r.is_err(), "flush returned Ok on a destroyed connection");
}

/// The same for an inline read under a read timeout.
#[tokio::test]
async fn inline_read_ends_when_the_read_timeout_hook_destroys() {
    let (mut conn, _peer) = destroyed_by_its_timeout_hook(false, 0);
    assert!(within("read", conn.read(LineCodec::new())).await.is_err());
}

/// The same for an inline read with output queued: the read's write-out
/// meets a write timeout whose hook destroys.
#[tokio::test]
async fn inline_read_with_output_ends_when_the_write_timeout_hook_destroys() {
    let (mut conn, _peer) = destroyed_by_its_timeout_hook(true, 64 * 1024);
    assert!(within("read", conn.read(LineCodec::new())).await.is_err());
}

/// `Serve::run` errors: "a service error from a call that `map_errors` did
/// not turn into a response, with the answers owed before it still
/// written". Ten pipelined requests; the first nine answer 1 MiB each (held
/// back by the high watermark, a client that starts reading late), the
/// tenth fails. The client must get all nine answers.
#[tokio::test]
async fn serve_service_error_behind_held_answers_still_writes_them() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    const ANSWER: usize = 1024 * 1024;
    let (server_io, mut client_io) = tokio::io::duplex(1 << 16);
    let big = Bytes::from(vec![b'a'; ANSWER - 1]);
    let n = std::sync::Arc::new(AtomicUsize::new(0));
    let svc = tower::service_fn(move |_: Utf8Line| {
        let big = big.clone();
        let i = n.fetch_add(1, Ordering::SeqCst);
        async move {
            if i == 9 {
                Err(std::io::Error::other("boom"))
            } else {
                Ok(big)
            }
        }
    });
    let server = tokio::spawn(serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc).run());
    client_io
        .write_all("x\n".repeat(10).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    within("read", async {
        loop {
            match client_io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    let out = within("server", server).await.unwrap();
    assert_eq!(got, 9 * ANSWER, "ended with {out:?}");
    assert!(out.is_err());
}
