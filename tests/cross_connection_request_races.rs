//! A `push_shutdown` (or `destroy`) asked from another connection's
//! callback while this engine is busy closes it to writes at once: a
//! write queued after it is refused (RQ-7), even while other threads take
//! and release the engine at that moment (a release must not publish
//! writes as open again, nor the request's application leave a gap).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyframe::codecs::LineCodec;
use anyframe::{Handle, QueuedFramed};
use tokio::io::{AsyncRead, AsyncWriteExt};

#[path = "support/watched.rs"]
mod watched;

/// The two tests one at a time (each wants both cores).
static SERIAL: Mutex<()> = Mutex::new(());

fn run(destroy: bool) -> Option<(usize, usize, String)> {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    watched::on_two_workers(Duration::from_secs(9), move || async move {
        let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
        let (a, _da) = QueuedFramed::new(a_io).spawn();
        // A plain thread (no callback) that keeps taking and releasing
        // the current B's engine, as any thread asking its state does.
        let slot: Arc<Mutex<Option<(usize, Handle)>>> = Arc::new(Mutex::new(None));
        let seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let hammer = {
            let (slot, seen, stop) = (slot.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some((generation, b)) = slot.lock().unwrap().clone() else {
                        continue;
                    };
                    for _ in 0..8 {
                        let _ = b.write_buffered();
                    }
                    seen.store(generation, Ordering::Release);
                }
            })
        };
        let t = a.push_read_with(LineCodec::new(), move |_, _| {
            let start = Instant::now();
            let (mut iterations, mut accepted) = (0, 0);
            let mut wire = String::new();
            while accepted == 0 && start.elapsed() < Duration::from_millis(1500) {
                // B made here (a proxy opening its outgoing side from
                // a completion): its driver may not have run yet.
                let (b_io, b_peer) = tokio::io::duplex(1 << 16);
                let (b, _db) = QueuedFramed::new(b_io).spawn();
                let generation = iterations + 1;
                *slot.lock().unwrap() = Some((generation, b.clone()));
                while seen.load(Ordering::Acquire) < generation {
                    std::thread::yield_now();
                }
                let after = if destroy {
                    b.destroy();
                    b.push_bytes(&b"after\n"[..])
                } else {
                    b.push_shutdown().unwrap();
                    b.push_bytes(&b"after\n"[..])
                };
                if after.is_ok() {
                    accepted += 1;
                    let w1 = b.write_buffered();
                    std::thread::sleep(Duration::from_millis(300));
                    let w2 = b.write_buffered();
                    let mut b_peer = b_peer;
                    let mut buf = [0u8; 64];
                    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
                    let mut rb = tokio::io::ReadBuf::new(&mut buf);
                    let polled = std::pin::Pin::new(&mut b_peer).poll_read(&mut cx, &mut rb);
                    wire = format!(
                        "buffered {w1} then {w2}; peer poll {:?} read {:?}",
                        polled.is_ready(),
                        String::from_utf8_lossy(rb.filled())
                    );
                }
                iterations += 1;
            }
            *slot.lock().unwrap() = None;
            Ok((iterations, accepted, wire))
        });
        a_peer.write_all(b"go\n").await.unwrap();
        let r = t.await.unwrap();
        stop.store(true, Ordering::Relaxed);
        let _ = hammer.join();
        r
    })
}

#[test]
fn a_write_after_a_requested_shutdown_is_never_accepted() {
    let (iterations, accepted, wire) = run(false).expect("finished");
    assert_eq!(
        accepted, 0,
        "{accepted} of {iterations} writes after push_shutdown were accepted; B's peer read {wire:?} before EOF"
    );
}

#[test]
fn a_write_after_a_requested_destroy_is_never_accepted() {
    let (iterations, accepted, wire) = run(true).expect("finished");
    assert_eq!(
        accepted, 0,
        "{accepted} of {iterations} writes after destroy were accepted; B's peer read {wire:?} before EOF"
    );
}
