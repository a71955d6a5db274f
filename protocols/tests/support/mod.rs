//! Scripted in-memory peers for the protocol clients' tests. Each test
//! binary uses part of this.
#![allow(dead_code)]

use std::time::Duration;

use anyframe::{Handle, QueuedFramed};
use anyframe_protocols::http::{Http, Request, Response};
use anyframe_protocols::memcached::Memcached;
use anyframe_protocols::pipeline::Pipelined;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Milliseconds.
pub const MS: fn(u64) -> Duration = Duration::from_millis;
/// How long a reply may take before a test calls it hung.
pub const LIMIT: Duration = Duration::from_secs(5);

/// A spawned connection on one end of a pipe, and the pipe's other end.
pub fn pipe() -> (Handle, DuplexStream) {
    let (io, peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    (handle, peer)
}

/// As [`pipe`], with a read timeout on the connection.
pub fn pipe_rtimeout(rtimeout: Duration) -> (Handle, DuplexStream) {
    let (io, peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder().rtimeout(rtimeout).build(io).spawn();
    (handle, peer)
}

/// Reads what the client wrote (its commands), so the pipe never fills:
/// waits up to 100 ms for the first bytes, then takes whatever follows
/// until 10 ms pass with nothing more. What it read.
pub async fn take_commands(peer: &mut DuplexStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut wait = MS(100);
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(wait, peer.read(&mut buf)).await {
        got.extend_from_slice(&buf[..n]);
        wait = MS(10);
    }
    got
}

/// A response's whole body, if there is a response.
pub fn body(r: &anyframe::Result<Response>) -> Option<Bytes> {
    r.as_ref().ok().map(Response::body_bytes)
}

/// A memcached client on one end of a pipe, and the pipe's other end.
pub fn mc() -> (Pipelined<Memcached>, DuplexStream) {
    let (handle, peer) = pipe();
    (Pipelined::new(handle, Memcached, 16), peer)
}

/// Pipelined HTTP requests on a scripted peer that answers `script` once
/// they are written (and then closes, if `close`): each request's outcome.
pub async fn http_exchange(
    requests: Vec<Request>,
    script: &[u8],
    close: bool,
) -> Vec<anyframe::Result<Response>> {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Http::new("h"), 16);
    let replies: Vec<_> = requests.into_iter().map(|r| c.send(r)).collect();
    take_commands(&mut peer).await;
    peer.write_all(script).await.unwrap();
    // Open until the replies are in, unless asked to close.
    let open = if close {
        drop(peer);
        None
    } else {
        Some(peer)
    };
    let got = tokio::time::timeout(LIMIT, futures::future::join_all(replies))
        .await
        .expect("a reply never resolved");
    drop(open);
    got
}
