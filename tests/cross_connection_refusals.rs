//! Calls that queue work (writes, reads, calls), `destroy` and
//! `push_shutdown` never wait for another connection's engine from a
//! callback (RQ-7), also when that connection refuses them (closed, shut,
//! destroyed) or when a write is larger than the room its inbox was
//! given. Each test has two connections' completions run at the same
//! time, each calling the other's handle: a call that waited for the
//! other engine would make the cycle check panic one of the callbacks
//! (`ErrorKind::Panicked`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, Handle, QueuedFramed};
use tokio::io::AsyncWriteExt;

type Outcome<R> = Option<[Result<R, ErrorKind>; 2]>;

fn both_at_once<R: Send + 'static>(wbuf_max: Option<usize>, act: fn(&Handle) -> R) -> Outcome<R> {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mk = |io| match wbuf_max {
                Some(m) => QueuedFramed::builder().wbuf_max(Some(m)).build(io),
                None => QueuedFramed::new(io),
            };
            let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
            let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
            let (a, _da) = mk(a_io).spawn();
            let (b, _db) = mk(b_io).spawn();
            let arrived = Arc::new(AtomicUsize::new(0));
            let read_then = |other: Handle, arrived: Arc<AtomicUsize>| {
                move |_, _: &mut anyframe::Requests<'_>| {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    let start = Instant::now();
                    while arrived.load(Ordering::SeqCst) < 2
                        && start.elapsed() < Duration::from_secs(2)
                    {
                        std::hint::spin_loop();
                    }
                    Ok(act(&other))
                }
            };
            let ta = a.push_read_with(LineCodec::new(), read_then(b.clone(), arrived.clone()));
            let tb = b.push_read_with(LineCodec::new(), read_then(a.clone(), arrived.clone()));
            a_peer.write_all(b"go\n").await.unwrap();
            b_peer.write_all(b"go\n").await.unwrap();
            let outcome = [ta.await, tb.await].map(|r| r.map_err(|e| e.kind()));
            let _ = done.send(outcome);
            // keep peers alive until sent
            drop((a_peer, b_peer));
        });
        rt.shutdown_background();
    });
    finished.recv_timeout(Duration::from_secs(10)).ok()
}

/// A write after a requested `push_shutdown` is refused with EINVAL
/// ("writes queued after it are refused as usual") and, being a queueing
/// call, must not wait for the other engine.
#[test]
fn write_after_requested_shutdown_from_both_callbacks_is_refused_not_panicked() {
    let outcome = both_at_once(None, |other| {
        other.push_shutdown().unwrap();
        other.push_bytes(&b"after\n"[..]).map_err(|e| e.kind())
    });
    assert_eq!(
        outcome,
        Some([
            Ok(Err(ErrorKind::InvalidInput)),
            Ok(Err(ErrorKind::InvalidInput))
        ])
    );
}

/// `destroy` twice from a callback: the second is a `destroy` too, asked
/// for without waiting (RQ-7); it must not wait for the other engine.
#[test]
fn destroy_twice_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once(None, |other| {
        other.destroy();
        other.destroy();
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

/// `push_shutdown` after a requested `destroy`: asked without waiting,
/// it returns Ok or the close error, but never panics.
#[test]
fn shutdown_after_requested_destroy_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once(None, |other| {
        other.destroy();
        let _ = other.push_shutdown();
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

/// A write after a requested `destroy` is refused with the close error.
#[test]
fn write_after_requested_destroy_from_both_callbacks_is_refused_not_panicked() {
    let outcome = both_at_once(None, |other| {
        other.destroy();
        other
            .push_write(LineCodec::new(), "after")
            .map_err(|e| e.kind())
    });
    assert_eq!(
        outcome,
        Some([Ok(Err(ErrorKind::Closed)), Ok(Err(ErrorKind::Closed))])
    );
}

/// A read queued after a requested `destroy` fails with the close error
/// (its ticket), and queueing it does not wait for the other engine.
#[test]
fn read_after_requested_destroy_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once(None, |other| {
        other.destroy();
        drop(other.push_read(LineCodec::new()));
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

/// "push_bytes of any size" never waits: a buffer larger than half of
/// `wbuf_max` but within it.
#[test]
fn large_buffer_within_wbuf_max_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once(Some(256 * 1024), |other| {
        other
            .push_bytes(vec![b'x'; 200 * 1024])
            .map_err(|e| e.kind())
    });
    assert_eq!(outcome, Some([Ok(Ok(())), Ok(Ok(()))]));
}

/// Same through an encoder (push_write): the encoded item is over the
/// inbox's room, under the cap.
#[test]
fn large_encoded_write_within_wbuf_max_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once(Some(256 * 1024), |other| {
        let line = "y".repeat(200 * 1024);
        other
            .push_write(LineCodec::new(), line)
            .map_err(|e| e.kind())
    });
    assert_eq!(outcome, Some([Ok(Ok(())), Ok(Ok(()))]));
}

/// A call (write + response read) with a large request.
#[test]
fn large_call_within_wbuf_max_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once(Some(256 * 1024), |other| {
        let line = "z".repeat(200 * 1024);
        drop(other.call(LineCodec::new(), line, LineCodec::new()));
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}
