//! anyframe: AnyEvent::Handle's queued framing for tokio.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![doc(test(attr(deny(warnings))))]

pub use anyframe_codecs as codecs;

mod config;
mod connect;
mod error;
mod layer;
mod queued;
#[cfg(feature = "tower")]
pub mod service;
#[cfg(feature = "tls")]
pub mod tls;

pub use config::{
    Builder, DEFAULT_HIGH_WATER, DEFAULT_LINGER, DEFAULT_LOW_WATER, DEFAULT_MAX_READ_SIZE,
    DEFAULT_RBUF_MAX, DEFAULT_READ_SIZE, DEFAULT_WBUF_MAX,
};
pub use connect::RetryHook;
pub use error::{Error, ErrorKind, Result};
pub use layer::timeout::Timeout;
pub use queued::{Driver, FnDecoder, Handle, OrEof, Parts, QueuedFramed, Requests, Ticket};
