//! Two spawned connections whose callbacks run at the same moment on two
//! workers, watched from outside the runtime: in a deadlock both workers
//! are stuck, and with them the runtime's timers, so `tokio::time`
//! cannot see it.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs `body` on a two-worker runtime on a thread of its own and waits
/// up to `limit` for its result; `None`: it did not finish. A runtime
/// stuck in a deadlock is left behind (the test process ends without it).
pub fn on_two_workers<T, F, Fut>(limit: Duration, body: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(body());
        let _ = done.send(out);
        rt.shutdown_background();
    });
    finished.recv_timeout(limit).ok()
}

/// Runs `body` on a current-thread runtime on a thread of its own and
/// waits up to `limit` for its result; `None`: the thread never gave
/// control back (a call that never yields keeps even its own timeouts
/// from firing).
pub fn on_one_thread<T, Fut>(limit: Duration, body: Fut) -> Option<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    on_one_thread_with(limit, move || body)
}

/// [`on_one_thread`] for a body made by `make` on that thread, which may
/// hold what cannot be sent between threads.
pub fn on_one_thread_with<T, F, Fut>(limit: Duration, make: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = done.send(rt.block_on(make()));
    });
    finished.recv_timeout(limit).ok()
}

/// Marks this caller arrived, then spins until `parties` have (at most
/// 2 s: on one thread they would run one after the other), so callbacks
/// of two connections run inside their engines at once.
pub fn meet(arrived: &AtomicUsize, parties: usize) {
    arrived.fetch_add(1, Ordering::SeqCst);
    let start = Instant::now();
    while arrived.load(Ordering::SeqCst) < parties && start.elapsed() < Duration::from_secs(2) {
        std::hint::spin_loop();
    }
}
