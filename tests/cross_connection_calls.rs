//! Completions of two spawned connections that call each other's handles
//! at the same moment (a proxy forwarding both ways, a pair closing each
//! other): each engine is held by its driver while its completion runs,
//! so a call that waited for the other engine would wait for ever (RQ-7).
//! Calls that queue writes, `push_shutdown` and `destroy` never wait for
//! another engine; a query that would wait for an engine that waits for
//! the caller panics instead of hanging.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, Handle, QueuedFramed};
use tokio::io::{AsyncWriteExt, DuplexStream};

/// A runtime with two workers, so the two connections' completions can
/// run at the same time.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Two connections, each spawned, with the peer of each.
fn two_connections() -> ((Handle, DuplexStream), (Handle, DuplexStream)) {
    let (a_io, a_peer) = tokio::io::duplex(1 << 16);
    let (b_io, b_peer) = tokio::io::duplex(1 << 16);
    let (a, _) = QueuedFramed::new(a_io).spawn();
    let (b, _) = QueuedFramed::new(b_io).spawn();
    ((a, a_peer), (b, b_peer))
}

/// Runs `act(other)` in a read completion of each of two connections, the
/// two completions running at the same time on two threads. Returns how
/// both reads resolved (a completion that panicked resolves its read with
/// the panic), or `None` if they did not within a few seconds.
fn both_at_once(act: fn(&Handle)) -> Option<[Result<(), ErrorKind>; 2]> {
    // The runtime runs on a thread of its own, watched from here: in a
    // deadlock both workers are stuck, and with them the runtime's timers.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = two_workers();
        rt.block_on(async {
            let ((a, mut a_peer), (b, mut b_peer)) = two_connections();
            let arrived = Arc::new(AtomicUsize::new(0));
            let read_then = |other: Handle, arrived: Arc<AtomicUsize>| {
                move |_, _: &mut anyframe::Requests<'_>| {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    // Both completions inside their engines at once
                    // (bounded: on one thread they would run one after
                    // the other).
                    let start = Instant::now();
                    while arrived.load(Ordering::SeqCst) < 2
                        && start.elapsed() < Duration::from_secs(2)
                    {
                        std::hint::spin_loop();
                    }
                    act(&other);
                    Ok(())
                }
            };
            let ta = a.push_read_with(LineCodec::new(), read_then(b.clone(), arrived.clone()));
            let tb = b.push_read_with(LineCodec::new(), read_then(a.clone(), arrived.clone()));
            a_peer.write_all(b"go\n").await.unwrap();
            b_peer.write_all(b"go\n").await.unwrap();
            let outcome = [ta.await, tb.await].map(|r| r.map_err(|e| e.kind()));
            let _ = done.send(outcome);
        });
        rt.shutdown_background();
    });
    // Threads stuck in a deadlock never finish: the watcher gives up on
    // them (and the test process ends without them).
    finished.recv_timeout(Duration::from_secs(10)).ok()
}

#[test]
fn completions_writing_large_buffers_to_each_other_do_not_deadlock() {
    let outcome = both_at_once(|other| {
        other.push_bytes(vec![b'x'; 64 * 1024]).unwrap();
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

#[test]
fn completions_writing_through_encoders_to_each_other_do_not_deadlock() {
    let outcome = both_at_once(|other| {
        other.push_write(LineCodec::new(), "hello").unwrap();
        drop(other.call(LineCodec::new(), "ping", LineCodec::new()));
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

#[test]
fn completions_destroying_each_other_do_not_deadlock() {
    let outcome = both_at_once(|other| other.destroy());
    // Each read completed before the other connection's destroy came.
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

#[test]
fn completions_shutting_each_others_output_do_not_deadlock() {
    let outcome = both_at_once(|other| {
        other.push_bytes(&b"last words"[..]).unwrap();
        other.push_shutdown().unwrap();
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

#[test]
fn completions_querying_each_other_panic_instead_of_hanging() {
    let outcome = both_at_once(|other| {
        let _ = other.write_buffered();
    })
    .expect("no hang");
    // The second to ask sees the cycle and panics; the first then gets its
    // answer.
    assert!(
        outcome.contains(&Err(ErrorKind::Panicked)) && outcome.contains(&Ok(())),
        "{outcome:?}"
    );
}

/// `push_shutdown` asked while the other engine is busy comes after the
/// writes queued before it, and refuses writes queued after it, as when
/// it is applied at once.
#[test]
fn a_shutdown_asked_from_another_connections_callback_keeps_its_place() {
    let rt = two_workers();
    rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let ((a, mut a_peer), (b, mut b_peer)) = two_connections();
        // B's engine stays busy in a completion while A's completion
        // writes to B and shuts B's output.
        let busy = Arc::new(AtomicUsize::new(0));
        let b_busy = busy.clone();
        let tb = b.push_read_with(LineCodec::new(), move |_, _| {
            b_busy.store(1, Ordering::SeqCst);
            let start = Instant::now();
            while b_busy.load(Ordering::SeqCst) == 1 && start.elapsed() < Duration::from_secs(2) {
                std::hint::spin_loop();
            }
            Ok(())
        });
        let (a_busy, to_b) = (busy.clone(), b.clone());
        let ta = a.push_read_with(LineCodec::new(), move |_, _| {
            while a_busy.load(Ordering::SeqCst) == 0 {
                std::hint::spin_loop();
            }
            to_b.push_bytes(&b"before\n"[..]).unwrap();
            to_b.push_shutdown().unwrap();
            // B's completion may end now; the write below waits for it.
            a_busy.store(2, Ordering::SeqCst);
            let refused = to_b.push_bytes(&b"after\n"[..]);
            Ok(refused.map_err(|e| e.kind()))
        });
        b_peer.write_all(b"go\n").await.unwrap();
        a_peer.write_all(b"go\n").await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(5), ta)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(refused, Err(ErrorKind::InvalidInput));
        tokio::time::timeout(Duration::from_secs(5), tb)
            .await
            .unwrap()
            .unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), b_peer.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"before\n");
    });
    rt.shutdown_background();
}
