//! Durations whose deadline fits an `Instant` but not once tokio rounds
//! it up to its timer's tick (1 ms): every setting that takes a duration
//! treats such a deadline as never, as the connection's timers do, and
//! nothing panics.

#[path = "support/net.rs"]
mod net;

use std::time::Duration;

use anyframe::codecs::ChunkCodec;
use anyframe::{ErrorKind, QueuedFramed};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// The longest `d` with `now + d` an `Instant` (a binary search over
/// nanoseconds).
fn longest_from(now: Instant) -> Duration {
    let nanos = |n: u128| Duration::new((n / 1_000_000_000) as u64, (n % 1_000_000_000) as u32);
    let (mut lo, mut hi) = (0u128, u128::from(u64::MAX) * 1_000_000_000);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if now.checked_add(nanos(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    nanos(lo)
}

/// Half a tick short of the last `Instant` (exact on the paused clock).
fn at_the_edge() -> Duration {
    longest_from(Instant::now()) - Duration::from_micros(500)
}

/// How long the tests wait to see that nothing expired.
const WHILE: Duration = Duration::from_millis(100);

#[tokio::test(start_paused = true)]
async fn a_read_timeout_at_the_edge_of_instant_never_expires() {
    let (io, _peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::builder().rtimeout(at_the_edge()).build(io);
    let t = conn.push_read(ChunkCodec::new(4));
    assert!(tokio::time::timeout(WHILE, conn.wait(t)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn an_inline_linger_at_the_edge_of_instant_waits_without_panicking() {
    let (io, mut peer) = tokio::io::duplex(8);
    let mut conn = QueuedFramed::builder()
        .autocork(true)
        .linger(at_the_edge())
        .build(io);
    conn.push_bytes(vec![b'x'; 100]).unwrap();
    peer.write_all(b"abc").await.unwrap();
    peer.shutdown().await.unwrap();
    let e = conn.read(ChunkCodec::new(10)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    // The peer reads nothing: the flush waits, for up to the linger.
    assert!(tokio::time::timeout(WHILE, conn.flush()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_connect_timeout_at_the_edge_of_instant_waits_without_panicking() {
    let stalled = net::stalled_listener();
    let mut builder = QueuedFramed::builder();
    builder.connect_timeout(at_the_edge());
    let attempt = tokio::time::timeout(WHILE, builder.connect(stalled.addr)).await;
    assert!(attempt.is_err(), "{:?}", attempt.map(|r| r.map(|_| ())));
}

#[tokio::test(start_paused = true)]
async fn a_spawned_linger_at_the_edge_of_instant_waits_without_panicking() {
    let (io, _peer) = tokio::io::duplex(8);
    let (handle, driver) = QueuedFramed::builder()
        .linger(at_the_edge())
        .build(io)
        .spawn();
    handle.push_bytes(vec![b'x'; 100]).unwrap();
    tokio::task::yield_now().await;
    // The last handle gone with output the peer does not read: the
    // driver lingers.
    drop(handle);
    let driver = tokio::spawn(driver);
    match tokio::time::timeout(WHILE, driver).await {
        Err(_) => {}
        Ok(Err(join)) if join.is_panic() => {
            std::panic::resume_unwind(join.into_panic());
        }
        Ok(ended) => panic!("the driver ended: {:?}", ended.map(|r| r.is_ok())),
    }
}
