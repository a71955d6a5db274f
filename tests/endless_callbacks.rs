//! User callbacks that never let a connection run out of work (a drain
//! hook that always refills the queue, completions that always queue
//! another read): whatever runs them, an inline call or a spawned driver,
//! must still give its thread back now and then, so the other tasks on it
//! (and the caller's own timeouts) run.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

#[path = "support/watched.rs"]
mod watched;

use anyframe::codecs::{ChunkCodec, LineCodec};
use anyframe::{QueuedFramed, Requests};
use tokio::io::AsyncWrite;

/// Takes every write whole at once, and never spends tokio's task budget
/// (as a transport of another runtime, or a user's own, may not).
struct Swallow;

impl AsyncWrite for Swallow {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// [`watched::on_one_thread`] with 10 s.
fn watched<T: Send + 'static>(body: impl Future<Output = T> + Send + 'static) -> Option<T> {
    watched::on_one_thread(Duration::from_secs(10), body)
}

#[test]
fn a_drain_hook_that_always_refills_lets_a_flush_time_out() {
    let outcome = watched(async {
        // A peer that never writes, and an output that takes everything.
        let (rd, _silent) = tokio::io::duplex(64);
        let io = tokio::io::join(rd, Swallow);
        let mut conn = QueuedFramed::builder().watermarks(64, 0).build(io);
        let drained = Arc::new(AtomicUsize::new(0));
        let d2 = drained.clone();
        conn.on_drain(move |q| {
            d2.fetch_add(1, Ordering::Relaxed);
            let _ = q.push_bytes(vec![b'x'; 128]);
        });
        conn.push_bytes(vec![b'x'; 128]).unwrap();
        let flushed = tokio::time::timeout(Duration::from_millis(100), conn.flush()).await;
        (flushed.is_err(), drained.load(Ordering::Relaxed) > 0)
    });
    assert_eq!(outcome, Some((true, true)), "(timed out, hook ran)");
}

/// Queues, at the front, a read of no bytes whose completion does the
/// same again: a chain of completions that never ends.
fn forever(q: &mut Requests<'_>) {
    drop(q.unshift_response_with(
        ChunkCodec::new(0),
        |_, q: &mut Requests<'_>| -> anyframe::Result<()> {
            forever(q);
            Ok(())
        },
    ));
}

#[test]
fn completions_that_always_queue_another_let_a_wait_return() {
    let outcome = watched(async {
        let (io, _silent) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::new(io);
        let t = conn.push_read_with(
            ChunkCodec::new(0),
            |_, q: &mut Requests<'_>| -> anyframe::Result<()> {
                forever(q);
                Ok(())
            },
        );
        let waited = tokio::time::timeout(Duration::from_secs(1), conn.wait(t)).await;
        // A read behind the chain never gets its turn, but its caller's
        // timeout fires.
        let behind =
            tokio::time::timeout(Duration::from_millis(100), conn.read(LineCodec::new())).await;
        (matches!(waited, Ok(Ok(_))), behind.is_err())
    });
    assert_eq!(
        outcome,
        Some((true, true)),
        "(wait returned, read behind timed out)"
    );
}

/// The same two callbacks on a spawned connection, on a current-thread
/// runtime: its driver must leave the thread to the caller's tasks.
#[test]
fn on_a_spawned_connection_endless_callbacks_leave_the_thread_to_other_tasks() {
    let outcome = watched(async {
        let (rd, _silent) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .watermarks(64, 0)
            .build(tokio::io::join(rd, Swallow));
        conn.on_drain(|q| {
            let _ = q.push_bytes(vec![b'x'; 128]);
        });
        conn.push_bytes(vec![b'x'; 128]).unwrap();
        let (refilling, _d1) = conn.spawn();
        let flushed = tokio::time::timeout(Duration::from_millis(100), refilling.flush()).await;

        let (io, _silent2) = tokio::io::duplex(64);
        let (chained, _d2) = QueuedFramed::new(io).spawn();
        let t = chained.push_read_with(
            ChunkCodec::new(0),
            |_, q: &mut Requests<'_>| -> anyframe::Result<()> {
                forever(q);
                Ok(())
            },
        );
        let waited = tokio::time::timeout(Duration::from_secs(1), t).await;
        let behind = tokio::time::timeout(
            Duration::from_millis(100),
            chained.push_read(LineCodec::new()),
        )
        .await;
        // A handle's flush waits for what was queued when it was called.
        (
            matches!(flushed, Ok(Ok(()))),
            matches!(waited, Ok(Ok(_))),
            behind.is_err(),
        )
    });
    assert_eq!(
        outcome,
        Some((true, true, true)),
        "(flush returned, wait returned, read behind timed out)"
    );
}
