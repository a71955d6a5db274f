//! Three protocol clients assembled from anyframe's per-request reads, the
//! way AnyEvent::Redis, AnyEvent::Memcached and AnyEvent::HTTP were built
//! on AnyEvent::Handle, plus what their tests, examples and benchmarks
//! share: starting real servers on loopback ports.
//!
//! * [`redis`]: RESP2/RESP3, a pipelined tower `Service`, pub/sub.
//! * [`memcached`]: the text protocol, a pipelined tower `Service`.
//! * [`http`]: an HTTP/1.1 client with keep-alive and pipelining.
//! * [`pipeline`]: the reply-as-a-chain-of-reads machinery they share.
//! * [`servers`]: `redis-server`, `memcached` and `nginx` started in a
//!   throw-away folder on a free loopback port, killed on drop.
//!
//! This crate is not published; it shows and measures the engine.

use std::net::SocketAddr;

use anyframe::{Error, Handle, QueuedFramed, Result};
use tokio::net::TcpStream;

pub mod http;
pub mod memcached;
pub mod pipeline;
pub mod redis;
pub mod servers;
pub mod workload;

/// Room in either buffer beyond a protocol's largest frame: the line in
/// front of it and the start of the next reply when reading; the requests
/// queued before it (up to the high watermark) when writing.
const HEADROOM: usize = 1024 * 1024;

/// Connects over TCP (no Nagle delay) and spawns the connection's driver,
/// with a read buffer cap (`rbuf_max`) that holds `largest_frame` bytes
/// (the protocol's documented limit on one value or body) and 1 MiB more
/// (the line in front and the next reply's start), and a write cap
/// (`wbuf_max`) that holds a request of that size the same way, with the
/// requests queued before it: the engine's default caps (64 MiB) would
/// refuse values the protocol accepts.
///
/// # Errors
///
/// The connect error.
pub async fn connect_tcp(addr: SocketAddr, largest_frame: usize) -> Result<Handle> {
    let stream = TcpStream::connect(addr).await.map_err(Error::from)?;
    stream.set_nodelay(true).map_err(Error::from)?;
    let (handle, _driver) = QueuedFramed::builder()
        .rbuf_max(Some(largest_frame.saturating_add(HEADROOM)))
        .wbuf_max(Some(
            largest_frame
                .saturating_add(HEADROOM)
                .max(anyframe::DEFAULT_WBUF_MAX),
        ))
        .build(stream)
        .spawn();
    Ok(handle)
}
