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
mod error;
mod queued;

pub use config::{
    Builder, DEFAULT_LINGER, DEFAULT_MAX_READ_SIZE, DEFAULT_RBUF_MAX, DEFAULT_READ_SIZE,
    DEFAULT_WBUF_MAX,
};
pub use error::{Error, ErrorKind, Result};
pub use queued::{Driver, FnDecoder, Handle, Parts, QueuedFramed, Requests, Ticket};
