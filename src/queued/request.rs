//! Read requests: a decoder plus what to do with its frame, type-erased so one
//! queue can hold a line request, then a chunk request, then a JSON request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::sync::oneshot;
use tokio_util::codec::Decoder;

use crate::error::{Error, ErrorKind, Result};
use crate::queued::core::Core;

/// One queued read request, with its decoder and its completion.
pub(crate) trait Request: Send {
    /// Tries to decode one frame from the front of `rbuf`. `Ready(Ok(()))`
    /// means a frame is stored and [`complete`](Self::complete) must follow.
    fn poll_decode(&mut self, rbuf: &mut BytesMut, eof: bool) -> Poll<Result<()>>;

    /// Delivers the stored frame; may queue follow-up requests through `q`.
    fn complete(self: Box<Self>, q: &mut Requests<'_>);

    /// Delivers an error instead.
    fn fail(self: Box<Self>, err: Error);

    /// True when nobody waits for the result and the request may be dropped
    /// unrun (its bytes stay in the buffer for the next request).
    fn is_abandoned(&self) -> bool;
}

/// What happens to a request whose [`Ticket`] is dropped before it completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDrop {
    /// Remove it unrun: nothing is consumed (the default for user reads).
    Cancel,
    /// Still read (and discard) its frame, to keep a request/response stream
    /// in step (pipelined clients).
    Consume,
}

/// A request built from a [`Decoder`] and a completion function.
pub(crate) struct DecodeRequest<D: Decoder, F, R> {
    decoder: D,
    frame: Option<D::Item>,
    then: F,
    tx: oneshot::Sender<Result<R>>,
    on_drop: OnDrop,
}

impl<D, F, R> DecodeRequest<D, F, R>
where
    D: Decoder,
{
    pub(crate) fn new(decoder: D, then: F, on_drop: OnDrop) -> (Self, Ticket<R>) {
        let (tx, rx) = oneshot::channel();
        (
            DecodeRequest {
                decoder,
                frame: None,
                then,
                tx,
                on_drop,
            },
            Ticket { rx },
        )
    }
}

/// Runs one decode step with AnyEvent's EOF rule (RQ-6): at end of input a
/// request that cannot complete is `EPIPE`, fatal, and its bytes stay put.
///
/// Always inlined: this is the per-frame path, and a frame returned through
/// one more stack slot costs a store-forwarding stall per frame (measured:
/// ~7% of a loopback line read).
#[inline(always)]
pub(crate) fn decode_step<D>(
    decoder: &mut D,
    rbuf: &mut BytesMut,
    eof: bool,
) -> Result<Option<D::Item>>
where
    D: Decoder,
    D::Error: Into<Error>,
{
    if !eof {
        return decoder.decode(rbuf).map_err(Into::into);
    }
    decode_at_eof(decoder, rbuf)
}

/// `decode_step` once the input has ended.
#[inline(never)]
fn decode_at_eof<D>(decoder: &mut D, rbuf: &mut BytesMut) -> Result<Option<D::Item>>
where
    D: Decoder,
    D::Error: Into<Error>,
{
    match decoder.decode_eof(rbuf) {
        Ok(Some(frame)) => Ok(Some(frame)),
        Ok(None) => Err(Error::eof_in_request()),
        Err(e) => {
            let e: Error = e.into();
            // A decoder does no I/O: an "I/O" error at EOF is tokio-util's
            // default `decode_eof` saying "bytes remaining on stream".
            if e.kind() == ErrorKind::Io {
                Err(Error::eof_in_request())
            } else {
                Err(e)
            }
        }
    }
}

impl<D, F, R> Request for DecodeRequest<D, F, R>
where
    D: Decoder + Send,
    D::Item: Send,
    D::Error: Into<Error>,
    F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send,
    R: Send,
{
    fn poll_decode(&mut self, rbuf: &mut BytesMut, eof: bool) -> Poll<Result<()>> {
        match decode_step(&mut self.decoder, rbuf, eof) {
            Ok(Some(frame)) => {
                self.frame = Some(frame);
                Poll::Ready(Ok(()))
            }
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn complete(self: Box<Self>, q: &mut Requests<'_>) {
        let this = *self;
        let result = match this.frame {
            Some(frame) => (this.then)(frame, q),
            None => Err(Error::invalid_input("request completed without a frame")),
        };
        // The receiver may be gone (OnDrop::Consume): the frame is discarded.
        let _ = this.tx.send(result);
    }

    fn fail(self: Box<Self>, err: Error) {
        let _ = self.tx.send(Err(err));
    }

    fn is_abandoned(&self) -> bool {
        self.on_drop == OnDrop::Cancel && self.tx.is_closed()
    }
}

/// The future of a queued read request: resolves with its frame (or the
/// result of its completion function) once every request queued before it
/// has completed.
///
/// With a spawned [`Handle`](crate::Handle) a ticket resolves on its own.
/// With a [`QueuedFramed`](crate::QueuedFramed) that you drive yourself,
/// pass it to [`QueuedFramed::wait`](crate::QueuedFramed::wait), which runs
/// the connection until the ticket is ready.
///
/// Dropping a ticket before its request completes cancels the request and
/// loses no bytes: the next request sees them.
///
/// # Errors
///
/// The request's error: a non-fatal one (`EBADMSG`) fails only this request;
/// a fatal one fails every pending ticket with the same error. If the handle
/// is destroyed first, [`ErrorKind::Closed`].
///
/// # Examples
///
/// Pipelining on a connection you drive yourself: queue both reads, then
/// wait for each.
///
/// ```
/// use anyframe::QueuedFramed;
/// use anyframe::codecs::{ChunkCodec, LineCodec};
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let (io, mut peer) = tokio::io::duplex(64);
/// let mut conn = QueuedFramed::new(io);
/// let status = conn.push_read(LineCodec::new());
/// let body = conn.push_read(ChunkCodec::new(4));
/// peer.write_all(b"200\nbody").await?;
/// assert_eq!(conn.wait(status).await?.line(), b"200");
/// assert_eq!(&conn.wait(body).await?[..], b"body");
/// # Ok(()) }
/// ```
#[must_use = "a ticket does nothing unless awaited (dropping it cancels the read)"]
pub struct Ticket<T> {
    rx: oneshot::Receiver<Result<T>>,
}

impl<T> Ticket<T> {
    /// A ticket and the sender that resolves it.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn channel() -> (oneshot::Sender<Result<T>>, Ticket<T>) {
        let (tx, rx) = oneshot::channel();
        (tx, Ticket { rx })
    }

    /// A ticket that is already resolved.
    pub(crate) fn ready(result: Result<T>) -> Ticket<T> {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        Ticket { rx }
    }

    /// Non-blocking check: the result if the request has completed.
    pub(crate) fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<Result<T>> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(Error::closed())))
    }
}

impl<T> Future for Ticket<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        self.poll_result(cx)
    }
}

impl<T> fmt::Debug for Ticket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

/// The four queueing methods shared by [`QueuedFramed`](crate::QueuedFramed)
/// (`&mut self`), [`Handle`](crate::Handle) (`&self`, through its lock) and
/// [`Requests`] (inside a completion): one list, three receivers.
macro_rules! queue_methods {
    ($self:ident, $($recv:tt)+) => {
        /// Queues a read with `decoder` at the back of the queue. The
        /// [`Ticket`](crate::Ticket) resolves once every request before it has
        /// completed. Queuing does no I/O.
        pub fn push_read<D>($($recv)+ $self, decoder: D) -> crate::Ticket<D::Item>
        where
            D: tokio_util::codec::Decoder + Send + 'static,
            D::Item: Send + 'static,
            D::Error: Into<crate::Error>,
        {
            $self.core_mut().enqueue(decoder, |f, _| Ok(f), crate::queued::request::OnDrop::Cancel, false)
        }

        /// Queues a read at the front: it runs before every request already
        /// queued. Several unshifts in one completion run in reverse order,
        /// as in AnyEvent.
        pub fn unshift_read<D>($($recv)+ $self, decoder: D) -> crate::Ticket<D::Item>
        where
            D: tokio_util::codec::Decoder + Send + 'static,
            D::Item: Send + 'static,
            D::Error: Into<crate::Error>,
        {
            $self.core_mut().enqueue(decoder, |f, _| Ok(f), crate::queued::request::OnDrop::Cancel, true)
        }

        /// Queues a read whose completion `then` runs inside the engine as
        /// soon as the frame is decoded, before the next request sees the
        /// buffer. It may queue follow-ups through [`Requests`](crate::Requests)
        /// (e.g. unshift one more line read when the frame says so); do not
        /// call a [`Handle`](crate::Handle) from inside it. The ticket
        /// resolves to what `then` returns.
        pub fn push_read_with<D, F, R>($($recv)+ $self, decoder: D, then: F) -> crate::Ticket<R>
        where
            D: tokio_util::codec::Decoder + Send + 'static,
            D::Item: Send + 'static,
            D::Error: Into<crate::Error>,
            F: FnOnce(D::Item, &mut crate::Requests<'_>) -> crate::Result<R> + Send + 'static,
            R: Send + 'static,
        {
            $self.core_mut().enqueue(decoder, then, crate::queued::request::OnDrop::Cancel, false)
        }

        /// [`push_read_with`](Self::push_read_with) at the front of the queue.
        pub fn unshift_read_with<D, F, R>($($recv)+ $self, decoder: D, then: F) -> crate::Ticket<R>
        where
            D: tokio_util::codec::Decoder + Send + 'static,
            D::Item: Send + 'static,
            D::Error: Into<crate::Error>,
            F: FnOnce(D::Item, &mut crate::Requests<'_>) -> crate::Result<R> + Send + 'static,
            R: Send + 'static,
        {
            $self.core_mut().enqueue(decoder, then, crate::queued::request::OnDrop::Cancel, true)
        }
    };
}
pub(crate) use queue_methods;

/// Access to the request queue from inside a completion function (AE's
/// "unshift inside a callback", RQ-4).
///
/// A completion function passed to `push_read_with` runs inside the engine,
/// right after its frame was decoded and *before* any later request looks at
/// the buffer, so a request it unshifts runs next, on bytes already
/// buffered. Use this, not the [`Handle`](crate::Handle), from inside a
/// completion (the handle's lock is held there).
pub struct Requests<'a> {
    pub(crate) core: &'a mut Core,
}

impl Requests<'_> {
    fn core_mut(&mut self) -> &mut Core {
        self.core
    }

    queue_methods!(self, &mut);

    /// Encodes `item` onto the write queue (see
    /// [`QueuedFramed::push_write`](crate::QueuedFramed::push_write)).
    ///
    /// # Errors
    ///
    /// The encoder's error (nothing queued), or `ENOSPC` over `wbuf_max`.
    pub fn push_write<E, I>(&mut self, encoder: E, item: I) -> Result<()>
    where
        E: tokio_util::codec::Encoder<I>,
        E::Error: Into<Error>,
    {
        self.core.push_encoded(encoder, item)
    }

    /// Starts TLS on this connection once the current completion returns
    /// (the SMTP shape: read `STARTTLS`, queue `220 ready`, upgrade). Output
    /// queued so far goes out in plaintext first; the bytes already read
    /// become the start of the TLS stream. No request runs until the
    /// handshake is done. The ticket resolves when it is.
    #[cfg(feature = "tls")]
    pub fn starttls(&mut self, mode: impl Into<crate::tls::TlsMode>) -> Ticket<()> {
        self.core.request_starttls(mode.into())
    }

    /// Ends TLS after the output queued so far (see
    /// [`QueuedFramed::stoptls`](crate::QueuedFramed::stoptls)).
    #[cfg(feature = "tls")]
    pub fn stoptls(&mut self) -> Ticket<()> {
        self.core.request_stoptls()
    }

    /// The unconsumed input.
    pub fn read_buffer(&self) -> &[u8] {
        &self.core.rbuf
    }
}

impl fmt::Debug for Requests<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requests")
            .field("queued", &self.core.queue.len())
            .finish()
    }
}

/// A decoder made of a closure, for [`QueuedFramed::read_fn`](crate::QueuedFramed::read_fn)-style
/// requests: `FnMut(&mut BytesMut) -> Result<Option<T>>`, AE's untyped
/// callback request. It may consume any prefix of the buffer.
///
/// # Examples
///
/// A request that wants everything up to a NUL byte, as a closure:
///
/// ```
/// use anyframe::{FnDecoder, QueuedFramed};
/// use bytes::BytesMut;
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let (io, mut peer) = tokio::io::duplex(64);
/// peer.write_all(b"name\0rest").await?;
/// let mut conn = QueuedFramed::new(io);
/// let upto_nul = FnDecoder::new(|buf: &mut BytesMut| {
///     Ok(buf.iter().position(|&b| b == 0).map(|i| {
///         let field = buf.split_to(i).freeze();
///         let _ = buf.split_to(1); // the NUL
///         field
///     }))
/// });
/// assert_eq!(&conn.read(upto_nul).await?[..], b"name");
/// assert_eq!(conn.read_buffer(), b"rest");
/// # Ok(()) }
/// ```
pub struct FnDecoder<F> {
    f: F,
}

impl<F> FnDecoder<F> {
    /// Wraps `f`. It is called with the whole unconsumed input whenever
    /// something arrives; return `Ok(Some(_))` when done (after removing
    /// what you used from the front), `Ok(None)` for more input.
    pub fn new(f: F) -> FnDecoder<F> {
        FnDecoder { f }
    }
}

impl<F> fmt::Debug for FnDecoder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnDecoder").finish_non_exhaustive()
    }
}

impl<F, T> Decoder for FnDecoder<F>
where
    F: FnMut(&mut BytesMut) -> Result<Option<T>>,
{
    type Item = T;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<T>> {
        (self.f)(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<T>> {
        // The closure sees the same buffer at EOF; if it still wants more,
        // the engine reports EPIPE (RQ-6).
        (self.f)(src)
    }
}

/// A decoder adapter whose frame is `Some(frame)`, or `None` when the input
/// ends cleanly *between* frames (nothing buffered).
///
/// A plain request at end of input is `EPIPE`, fatal (RQ-6), which is right
/// when a response is owed. A server waiting for the *next* request wants a
/// clean end instead, and to keep its write side for the answers still
/// queued: that is this adapter (AE's "queue the request from `on_read`"
/// pattern). End of input inside a frame is still `EPIPE`.
///
/// # Examples
///
/// ```
/// use anyframe::{OrEof, QueuedFramed};
/// use anyframe::codecs::LineCodec;
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let (io, mut peer) = tokio::io::duplex(64);
/// peer.write_all(b"last\n").await?;
/// peer.shutdown().await?;
/// let mut conn = QueuedFramed::new(io);
/// assert!(conn.read(OrEof::new(LineCodec::new())).await?.is_some());
/// assert!(conn.read(OrEof::new(LineCodec::new())).await?.is_none());
/// assert!(!conn.is_destroyed());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct OrEof<D> {
    inner: D,
}

impl<D> OrEof<D> {
    /// Wraps `inner`.
    pub fn new(inner: D) -> OrEof<D> {
        OrEof { inner }
    }

    /// The wrapped decoder.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: Decoder> Decoder for OrEof<D> {
    type Item = Option<D::Item>;
    type Error = D::Error;

    fn decode(&mut self, src: &mut BytesMut) -> std::result::Result<Option<Self::Item>, D::Error> {
        Ok(self.inner.decode(src)?.map(Some))
    }

    fn decode_eof(
        &mut self,
        src: &mut BytesMut,
    ) -> std::result::Result<Option<Self::Item>, D::Error> {
        match self.inner.decode_eof(src)? {
            Some(frame) => Ok(Some(Some(frame))),
            None if src.is_empty() => Ok(Some(None)),
            None => Ok(None),
        }
    }
}
