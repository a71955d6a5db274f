//! Helpers for the tests of a `QueuedFramed` split into `Sink` and
//! `Stream` halves: a loopback TCP pair, a bounded wait, a poll counter.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// A connected pair on 127.0.0.1: ours and the peer's end.
pub async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ours, theirs) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (ours.expect("connect"), theirs.expect("accept").0)
}

/// `f`'s output; panics naming `what` if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A poll counter for [`counted`].
pub fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// `fut`, counting its polls in `polls`.
pub fn counted<F: Future + Unpin>(
    mut fut: F,
    polls: Arc<AtomicUsize>,
) -> impl Future<Output = F::Output> {
    std::future::poll_fn(move |cx| {
        polls.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut fut).poll(cx)
    })
}
