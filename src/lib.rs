//! AnyEvent::Handle's queued framing for tokio.
//!
//! A [`QueuedFramed`] is one connection with one read buffer and a queue of
//! read requests, **each with its own decoder**: read a line, then exactly
//! 64 bytes, then one JSON value, then upgrade to TLS, on one connection.
//! Bytes one request does not consume are the next request's input. Writes
//! go through a write queue that coalesces them.
//!
//! # Reading with a different decoder each time
//!
//! ```
//! use anyframe::QueuedFramed;
//! use anyframe::codecs::{ChunkCodec, LineCodec, PackFormat, PackstringCodec};
//! use tokio::io::AsyncWriteExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
//! let (io, mut peer) = tokio::io::duplex(1024);
//! peer.write_all(b"HELO\r\n\x00\x05hello12345678").await?;
//!
//! let mut conn = QueuedFramed::new(io);
//! assert_eq!(conn.read(LineCodec::new()).await?.line(), b"HELO");
//! assert_eq!(&conn.read(PackstringCodec::new(PackFormat::U16Be)).await?[..], b"hello");
//! assert_eq!(&conn.read(ChunkCodec::new(8)).await?[..], b"12345678");
//! # Ok(()) }
//! ```
//!
//! # Pipelining from several tasks
//!
//! [`QueuedFramed::spawn`] moves the connection into a driver task and
//! returns a cloneable, `Send` [`Handle`]. Reads queued with
//! [`Handle::push_read`] resolve strictly in queue order; a completion given
//! to [`Handle::push_read_with`] runs inside the engine and may queue the
//! next read at the front, before any later request sees the buffer.
//!
//! ```
//! use anyframe::QueuedFramed;
//! use anyframe::codecs::{ChunkCodec, LineCodec};
//! use tokio::io::AsyncWriteExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
//! let (io, mut peer) = tokio::io::duplex(1024);
//! let (handle, _driver) = QueuedFramed::new(io).spawn();
//! // "OK" is followed by one more line; the 64-byte answer comes after.
//! let status = handle.push_read_with(LineCodec::new(), |status, q| {
//!     Ok((status.line() == b"OK").then(|| q.unshift_read(LineCodec::new())))
//! });
//! let body = handle.push_read(ChunkCodec::new(64));
//! peer.write_all(b"OK\ndetail\n").await?;
//! peer.write_all(&[b'x'; 64]).await?;
//! assert_eq!(status.await?.unwrap().await?.line(), b"detail");
//! assert_eq!(body.await?.len(), 64);
//! # Ok(()) }
//! ```
//!
//! # The contract
//!
//! Rule ids such as [RQ-6](crate::semantics#RQ-6) or [TO-6](crate::semantics#TO-6) name the rules of [`semantics`], the
//! behaviour contract; "AE" there and in these docs is Perl's
//! AnyEvent::Handle, whose behaviour this crate restates for tokio.
//!
//! * **In order, nothing lost.** Requests complete in queue order; a request
//!   cancelled before its decoder took any input consumed nothing. A
//!   response read ([`Handle::call`], `push_response_with` and the reads
//!   their completions unshift) is still read and dropped when its ticket is
//!   dropped, and a read whose decoder has begun its frame finishes that
//!   frame for nobody ([`Ticket`], [§4](semantics#4-the-read-queue)). A
//!   fatal error keeps the buffers: [`QueuedFramed::into_parts`] (or the
//!   [`Driver`]) returns the transport, the unread and the unwritten bytes.
//! * **EOF** ([RQ-6](crate::semantics#RQ-6)): `EPIPE` (fatal) only when a waiting request cannot
//!   complete; a clean end with nothing queued ends the `Stream`.
//! * **Errors** are one type, [`Error`], with an errno-like [`ErrorKind`] and
//!   [`Error::is_fatal`]. A bad message (`EBADMSG`) fails its request only,
//!   except on a pipelined response read or server loop, where a rejected
//!   message the decoder consumed nothing of closes the connection (see
//!   [`ErrorKind::BadMessage`]).
//! * **Bounded**: `rbuf_max`, `wbuf_max` and every codec limit have defaults.
//! * **Timeouts** (idle, read, write) are AnyEvent's: non-fatal (except
//!   when a response is owed and no request is left to hear it, [TO-6](crate::semantics#TO-6)),
//!   repeating, running while idle. **Autocork**, **watermarks** and **linger** too.
//! * **TLS** (feature `tls`): [`QueuedFramed::starttls`] on a live connection,
//!   `stoptls`, `tls_autostart`; verification on by default.
//! * **Tower** (feature `tower`): [`service::Client`] and [`service::serve`].
//!
//! The codecs live in [`codecs`] (the `anyframe-codecs` crate), usable in a
//! plain `tokio_util::codec::Framed` too. Coming from Perl? See
//! [`coming_from_anyevent`].
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![doc(test(attr(deny(warnings))))]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use anyframe_codecs as codecs;

mod config;
mod connect;
mod error;
mod queued;
#[cfg(feature = "tower")]
pub mod service;
#[cfg(test)]
mod test_io;
#[cfg(any(feature = "tls", feature = "rustls"))]
pub mod tls;

#[doc = include_str!("../docs/anyevent.md")]
pub mod coming_from_anyevent {}

#[doc = include_str!("../docs/semantics.md")]
pub mod semantics {}

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
pub use config::{
    Builder, DEFAULT_HIGH_WATER, DEFAULT_LINGER, DEFAULT_LOW_WATER, DEFAULT_MAX_READ_SIZE,
    DEFAULT_RBUF_MAX, DEFAULT_READ_SIZE, DEFAULT_WBUF_MAX, MAX_READ_SIZE_LIMIT,
};
pub use connect::RetryHook;
pub use error::{Error, ErrorKind, Result};
#[cfg(any(feature = "tls", feature = "rustls"))]
pub use queued::AutostartTicket;
pub use queued::Timeout;
pub use queued::{Closed, Driver, FnDecoder, Handle, OrEof, Parts, QueuedFramed, Requests, Ticket};
