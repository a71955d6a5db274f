//! Tower integration: a pipelined client [`Service`](tower_service::Service)
//! over a spawned connection, and a server loop that feeds a service from a
//! connection.
//!
//! Both are thin layers over [`Handle`](crate::Handle): a request is a
//! write plus a queued read, so responses pair with requests by queue order,
//! and the response decoder can differ per request.

mod client;
mod server;

pub use client::{Client, ClientBuilder, DEFAULT_MAX_IN_FLIGHT, ResponseDecoder, ResponseFuture};
pub use server::{BadRequest, DEFAULT_SERVE_IN_FLIGHT, Serve, serve};
