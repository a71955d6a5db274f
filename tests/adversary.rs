//! Adversarial regressions: each test pins one behaviour the engine gets
//! wrong under a timer, a cap, a codec error or a callback, and is bounded
//! so that a hang fails instead of hanging.

use std::time::Duration;

use anyframe::codecs::{ChunkCodec, LineCodec, OverflowPolicy};
use anyframe::{ErrorKind, QueuedFramed};
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bounds an await so that a regression shows up as a failure, not a hang.
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(30), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still pending after 30 s"),
    }
}

// ----- timers ------------------------------------------------------------------

/// TO-3: "a write timeout tries the write side first". On a spawned
/// connection with a read waiting, a write timeout while the peer takes no
/// output must go to the stalled `flush()`, not to the read.
#[tokio::test(start_paused = true)]
async fn write_timeout_goes_to_the_stalled_flush_before_a_waiting_read() {
    let (ours, _peer) = tokio::io::duplex(64);
    let mut b = QueuedFramed::builder();
    b.wtimeout(Duration::from_secs(1));
    let (h, _driver) = b.build(ours).spawn();
    let mut read = h.push_read(LineCodec::new());
    h.push_bytes(vec![b'x'; 4096]).unwrap();
    let flush = within("flush", h.flush()).await;
    let read_now = (&mut read).now_or_never();
    assert!(
        read_now.is_none(),
        "the write timeout went to the waiting read: {read_now:?}"
    );
    assert!(flush.unwrap_err().is_timeout());
}

/// TO-4: "Setting a timer checks the deadline against the last activity."
/// A connection that was busy with every timer off, given a read timeout
/// just after its last read, must not time out at once: activity is only
/// recorded while some timer is on, so the deadline is measured from when
/// the connection was built.
#[tokio::test(start_paused = true)]
async fn read_timeout_set_on_a_busy_connection_counts_from_the_last_read() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peer.write_all(b"busy\n").await.unwrap();
        within("busy read", h.read(LineCodec::new())).await.unwrap();
    }
    // The last read was just now; 5 s of silence are allowed from here.
    let next = h.push_read(LineCodec::new());
    h.set_rtimeout(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_secs(1)).await;
    peer.write_all(b"late but in time\n").await.unwrap();
    let got = within("read", next).await;
    assert_eq!(
        got.expect("timed out at once, 1 s after the last read, under a 5 s rtimeout")
            .line(),
        b"late but in time"
    );
}

/// The same for the idle timeout and an `on_timeout` hook: the hook runs
/// at once on a connection that was active a moment ago.
#[tokio::test(start_paused = true)]
async fn idle_timeout_hook_set_after_activity_does_not_run_at_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    tokio::time::sleep(Duration::from_secs(60)).await;
    peer.write_all(b"hello\n").await.unwrap();
    within("read", h.read(LineCodec::new())).await.unwrap();
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    h.on_timeout(move |_, _| {
        f.fetch_add(1, Ordering::SeqCst);
    });
    h.set_timeout(Duration::from_secs(10));
    assert_eq!(
        fired.load(Ordering::SeqCst),
        0,
        "a 10 s idle timeout fired right after a read"
    );
}
