//! Read requests: a decoder plus what to do with its frame, type-erased so one
//! queue can hold a line request, then a chunk request, then a JSON request.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
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
    fn poll_decode(&mut self, rbuf: &mut BytesMut, eof: bool) -> Poll<Result<(), Rejected>>;

    /// Delivers the stored frame; may queue follow-up requests through `q`.
    fn complete(self: Box<Self>, q: &mut Requests<'_>);

    /// Delivers an error instead.
    fn fail(self: Box<Self>, err: Error);

    /// Tells the waiter a non-fatal error now but keeps the request, which
    /// still reads (and drops) its frame. False if nobody waits any more.
    fn tell(&mut self, err: Error) -> bool;

    /// What happens when the ticket is dropped.
    fn on_drop(&self) -> OnDrop;

    /// Whether the request must go on reading when its waiter is told an
    /// error or gives up: a pipelined response (`OnDrop::Consume`), or a
    /// decoder that has already consumed part of its frame (see
    /// [`has_consumed`](Self::has_consumed)).
    fn keeps_reading(&self) -> bool {
        self.on_drop() == OnDrop::Consume || self.has_consumed()
    }

    /// Whether the decoder has consumed input without producing its frame
    /// (a line being discarded, a header parsed): those bytes are gone, so
    /// the request cannot be dropped without leaving the stream mid-frame.
    /// It runs to the end of its frame even if nobody waits for it.
    fn has_consumed(&self) -> bool;

    /// Whether nobody waits for the result any more (told an error, or the
    /// ticket was dropped).
    fn is_unheard(&self) -> bool;

    /// True when nobody waits for the result and the request may be dropped
    /// unrun (its bytes stay in the buffer for the next request).
    fn is_abandoned(&self) -> bool;

    /// Registers `cx` to be woken when the waiter gives up (its ticket is
    /// dropped), so a cancelled head lets the next request run at once.
    fn poll_abandoned(&mut self, cx: &mut Context<'_>) -> bool;

    /// Whether the decoder has looked at input without finishing a frame:
    /// it may keep state about those bytes (a scan position), so nothing
    /// may consume them from under it.
    fn has_started(&self) -> bool;

    /// Whether this is a batch read (`read_many`), the one that gets an
    /// error deferred from the batch before it.
    fn is_batch(&self) -> bool;
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

/// A decoder's error, and whether the call that returned it consumed
/// input. A non-fatal error whose decoder consumed the bytes it rejected
/// leaves the stream in step (the codecs document what each error
/// consumes); one that consumed nothing leaves those bytes for whoever
/// reads next.
pub(crate) struct Rejected {
    pub(crate) error: Error,
    pub(crate) consumed: bool,
}

/// A request built from a [`Decoder`] and a completion function.
pub(crate) struct DecodeRequest<D: Decoder, F, R> {
    decoder: D,
    frame: Option<D::Item>,
    then: F,
    /// `None` once the waiter was told an error and the request only
    /// consumes its frame.
    tx: Option<oneshot::Sender<Result<R>>>,
    on_drop: OnDrop,
    /// The decoder has seen input and asked for more.
    started: bool,
    /// The decoder consumed input without producing its frame.
    consumed: bool,
    /// A `read_many` batch: how to make its decoder stop after the frame
    /// it has begun, once nobody waits for the batch any more.
    batch: Option<fn(&mut D)>,
}

impl<D, F, R> DecodeRequest<D, F, R>
where
    D: Decoder,
{
    /// Marks this request as one whose decoder carries a frame it began in
    /// an earlier request (a batch that ended having taken the next
    /// header): given up, it still finishes that frame.
    pub(crate) fn continuing_a_frame(mut self: Box<Self>) -> Box<Self> {
        self.consumed = true;
        self
    }

    /// Marks this request as a `read_many` batch; `first_only` makes its
    /// decoder stop after the frame it has begun.
    pub(crate) fn into_batch(mut self: Box<Self>, first_only: fn(&mut D)) -> Box<Self> {
        self.batch = Some(first_only);
        self
    }

    /// A request and its ticket. Boxed where it is built, so the request
    /// (its decoder included) is not built on the stack and copied into
    /// the box.
    pub(crate) fn new(decoder: D, then: F, on_drop: OnDrop) -> (Box<Self>, Ticket<R>) {
        let (tx, rx) = oneshot::channel();
        (
            Box::new(DecodeRequest {
                decoder,
                frame: None,
                then,
                tx: Some(tx),
                on_drop,
                started: false,
                consumed: false,
                batch: None,
            }),
            Ticket { rx },
        )
    }
}

/// A read request, type-erased for the queue, and its ticket.
pub(crate) fn read_request<D, F, R>(
    decoder: D,
    then: F,
    on_drop: OnDrop,
) -> (Box<dyn Request>, Ticket<R>)
where
    D: Decoder + Send + 'static,
    D::Item: Send + 'static,
    D::Error: Into<Error>,
    F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
    R: Send + 'static,
{
    let (req, ticket) = DecodeRequest::new(decoder, then, on_drop);
    (req, ticket)
}

/// Runs one decode step with AnyEvent's EOF rule ([RQ-6](crate::semantics#RQ-6)): at end of input a
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

/// What a batch does after its first frame (see [`batch_step`]).
pub(crate) enum BatchStep<T> {
    /// A frame; the batch may go on.
    Frame(T),
    /// A frame of no input (a zero-length chunk): the last of the batch, so
    /// a decoder that never consumes cannot fill it without end.
    Last(T),
    /// The batch ends here: more input is needed, the input ended cleanly
    /// after the last whole frame, or the decoder is done (`EINVAL`: a
    /// single-use decoder has produced its frame).
    End,
    /// An error after the batch's frames: it is the next thing the caller
    /// sees, after them.
    Error(Error),
}

/// One more frame for a batch (`read_many`, on both front ends) that has
/// its first frame: the one rule for where a batch stops.
///
/// A decoder that refuses to be asked again (`EINVAL`) ends the batch
/// without an error: the batch asked for "every frame already buffered",
/// and a decoder that is done has none. Asked again by its owner, it says
/// so again; nothing of the input is lost.
#[inline(always)]
pub(crate) fn batch_step<D>(decoder: &mut D, rbuf: &mut BytesMut, eof: bool) -> BatchStep<D::Item>
where
    D: Decoder,
    D::Error: Into<Error>,
{
    let before = rbuf.len();
    match decode_step(decoder, rbuf, eof) {
        Ok(Some(frame)) if rbuf.len() == before => BatchStep::Last(frame),
        Ok(Some(frame)) => BatchStep::Frame(frame),
        Ok(None) => BatchStep::End,
        // The end of input between frames (see `Core::poll_decode_observed`).
        Err(e) if eof && e.is_eof_in_request() && rbuf.is_empty() => BatchStep::End,
        Err(e) if e.kind() == ErrorKind::InvalidInput => BatchStep::End,
        Err(e) => BatchStep::Error(e),
    }
}

/// Whether `e` is the error of tokio-util's default `Decoder::decode_eof`
/// (bytes left, no frame), which has no type of its own: an
/// `io::ErrorKind::Other` with that text.
fn is_default_decode_eof_error(e: &Error) -> bool {
    e.kind() == ErrorKind::Io
        && e.io_error().is_some_and(|io| {
            io.kind() == std::io::ErrorKind::Other && io.to_string() == "bytes remaining on stream"
        })
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
            // tokio-util's default `decode_eof` says "bytes remaining on
            // stream" as an I/O error: that is the end of input inside a
            // frame. Any other error is the codec's own, and goes on.
            if is_default_decode_eof_error(&e) {
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
    fn poll_decode(&mut self, rbuf: &mut BytesMut, eof: bool) -> Poll<Result<(), Rejected>> {
        // A batch nobody waits for any more (cancelled or timed out after
        // it began a frame) finishes that frame for nobody, and leaves the
        // frames behind it to the next request (§4).
        if let Some(first_only) = self.batch
            && self.is_unheard()
        {
            first_only(&mut self.decoder);
        }
        let before = rbuf.len();
        match decode_step(&mut self.decoder, rbuf, eof) {
            Ok(Some(frame)) => {
                self.frame = Some(frame);
                Poll::Ready(Ok(()))
            }
            Ok(None) => {
                // Bytes left, or bytes consumed without a frame (a line being
                // discarded): the decoder keeps state about this input.
                self.started |= !rbuf.is_empty() || rbuf.len() < before;
                self.consumed |= rbuf.len() < before;
                Poll::Pending
            }
            Err(error) => Poll::Ready(Err(Rejected {
                error,
                consumed: rbuf.len() < before,
            })),
        }
    }

    fn complete(self: Box<Self>, q: &mut Requests<'_>) {
        // Fields move out of the box one by one: `*self` would copy the
        // whole request (the decoder included) to the stack first, a
        // `memcpy` per frame.
        let this = self;
        let Some(frame) = this.frame else {
            if let Some(tx) = this.tx {
                let _ = tx.send(Err(Error::invalid_input(
                    "request completed without a frame",
                )));
            }
            return;
        };
        // A plain read given up after its decoder began the frame read on
        // to its end for nobody: the frame is dropped, and no completion
        // runs on it (its caller cancelled it, RQ-4). The rest of a
        // response is another matter: its completions queue the reads of
        // what follows, and run whoever still listens.
        // (A batch's completion is the engine's own: it passes on the error
        // after its frames, and runs in any case.)
        if this.on_drop == OnDrop::Cancel
            && this.batch.is_none()
            && this.tx.as_ref().is_none_or(|tx| tx.is_closed())
        {
            tracing::trace!("a cancelled read's frame dropped");
            return;
        }
        let then = this.then;
        // The completion is user code: if it panics, its own waiter learns
        // it too before the panic closes the connection.
        let result = match catch_unwind(AssertUnwindSafe(|| then(frame, q))) {
            Ok(result) => result,
            Err(payload) => {
                if let Some(tx) = this.tx {
                    let _ = tx.send(Err(Error::panicked(crate::queued::core::panic_text(
                        &*payload,
                    ))));
                }
                resume_unwind(payload);
            }
        };
        // A fatal error returned by the completion closes the connection,
        // like any other fatal error (ERR-2).
        if let Err(e) = &result
            && e.is_fatal()
        {
            q.core.close(e.clone());
        }
        // The receiver may be gone (OnDrop::Consume): the frame is discarded.
        if let Some(tx) = this.tx {
            let _ = tx.send(result);
        }
    }

    fn fail(self: Box<Self>, err: Error) {
        if let Some(tx) = self.tx {
            let _ = tx.send(Err(err));
        }
    }

    fn tell(&mut self, err: Error) -> bool {
        match self.tx.take() {
            Some(tx) => tx.send(Err(err)).is_ok(),
            None => false,
        }
    }

    fn on_drop(&self) -> OnDrop {
        self.on_drop
    }

    fn has_consumed(&self) -> bool {
        self.consumed
    }

    fn is_unheard(&self) -> bool {
        self.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn is_abandoned(&self) -> bool {
        self.on_drop == OnDrop::Cancel && !self.consumed && self.is_unheard()
    }

    fn poll_abandoned(&mut self, cx: &mut Context<'_>) -> bool {
        match (&mut self.tx, self.on_drop) {
            (Some(tx), OnDrop::Cancel) if !self.consumed => tx.poll_closed(cx).is_ready(),
            _ => false,
        }
    }

    fn has_started(&self) -> bool {
        self.started
    }

    fn is_batch(&self) -> bool {
        self.batch.is_some()
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
/// Dropping a ticket before its request has taken any input cancels the
/// request: it consumes nothing, and the next request sees those bytes.
/// Two kinds of request are not removed, so that the stream stays in step
/// (the *Cancellation* and *A frame begun is finished* rules of
/// [§4](crate::semantics#4-the-read-queue)):
///
/// * a *response read*, queued with [`Handle::call`](crate::Handle::call),
///   `call_with` or `push_response_with` on either front end, and the reads
///   its completion unshifts (the rest of that reply,
///   [RQ-4](crate::semantics#RQ-4)): its response is still read when it
///   arrives, and dropped;
/// * a read whose decoder has already consumed part of its frame (a line
///   over its limit being discarded): it reads on to the end of that frame,
///   for nobody.
///
/// # Errors
///
/// The request's error: a non-fatal one (`EBADMSG`) fails only this request;
/// a fatal one fails every pending ticket with the same error. If the handle
/// is closed first, the error that closed it ([`ErrorKind::Closed`] after
/// `destroy`).
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
    #[cfg_attr(not(any(feature = "tls", feature = "rustls")), allow(dead_code))]
    pub(crate) fn channel() -> (oneshot::Sender<Result<T>>, Ticket<T>) {
        let (tx, rx) = oneshot::channel();
        (tx, Ticket { rx })
    }

    /// A ticket that is already resolved.
    #[cfg(any(feature = "tower", feature = "tls", feature = "rustls"))]
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

/// Access to the request queue from inside a completion function (AE's
/// "unshift inside a callback", [RQ-4](crate::semantics#RQ-4)).
///
/// A completion function passed to `push_read_with` runs inside the engine,
/// right after its frame was decoded and *before* any later request looks at
/// the buffer, so a request it unshifts runs next, on bytes already
/// buffered. Use this, not the [`Handle`](crate::Handle), from inside a
/// completion: a `Handle` of the completion's own connection panics there
/// (the engine is busy running the completion, so waiting for it would
/// deadlock; see the `Handle`'s *Panics*).
///
/// Reads that the completion of a response read (`Handle::call`,
/// `push_response_with`) unshifts are the rest of that response: they too
/// are read to the end of their frame when their ticket is dropped or told
/// a timeout, so the next caller never gets a piece of this response
/// ([RQ-4](crate::semantics#RQ-4)).
pub struct Requests<'a> {
    pub(crate) core: &'a mut Core,
    /// What happens to a read this completion unshifts when its ticket is
    /// dropped: what happens to the read that completed.
    unshifted: OnDrop,
}

impl<'a> Requests<'a> {
    /// The queue as seen from a hook.
    pub(crate) fn new(core: &'a mut Core) -> Requests<'a> {
        Requests::continuing(core, OnDrop::Cancel)
    }

    /// The queue as seen from the completion of a read with `on_drop`.
    pub(crate) fn continuing(core: &'a mut Core, on_drop: OnDrop) -> Requests<'a> {
        Requests {
            core,
            unshifted: on_drop,
        }
    }
}

impl Requests<'_> {
    /// Queues a read with `decoder` behind every queued request (see
    /// [`QueuedFramed::push_read`](crate::QueuedFramed::push_read)).
    pub fn push_read<D>(&mut self, decoder: D) -> Ticket<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.core
            .enqueue(decoder, |f, _| Ok(f), OnDrop::Cancel, false)
    }

    /// Queues a read that runs next, before every queued request (inside a
    /// completion, the next request has not looked at any input yet; in a
    /// hook, a read that has begun its frame stays first). Several unshifts
    /// in one completion run in reverse order, as in AnyEvent.
    pub fn unshift_read<D>(&mut self, decoder: D) -> Ticket<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.core
            .enqueue(decoder, |f, _| Ok(f), self.unshifted, true)
    }

    /// [`push_read`](Self::push_read) with a completion that runs inside
    /// the engine (see
    /// [`QueuedFramed::push_read_with`](crate::QueuedFramed::push_read_with)).
    pub fn push_read_with<D, F, R>(&mut self, decoder: D, then: F) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.core.enqueue(decoder, then, OnDrop::Cancel, false)
    }

    /// [`unshift_read`](Self::unshift_read) with a completion that runs
    /// inside the engine.
    pub fn unshift_read_with<D, F, R>(&mut self, decoder: D, then: F) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.core.enqueue(decoder, then, self.unshifted, true)
    }

    /// Queues at the front the read of the rest of a response: as
    /// [`unshift_read_with`](Self::unshift_read_with), but read to the end
    /// of its frame even if its ticket is dropped or told a timeout (see
    /// [`Handle::push_response_with`](crate::Handle::push_response_with)).
    /// In the completion of a response read every unshifted read is one
    /// already; this makes one from any completion: the rest of a message
    /// whose first read was a plain one, so that giving up before the
    /// message began loses nothing and giving up after cannot leave half
    /// of it for the next read.
    pub fn unshift_response_with<D, F, R>(&mut self, decoder: D, then: F) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.core.enqueue(decoder, then, OnDrop::Consume, true)
    }

    /// Encodes `item` onto the write queue (see
    /// [`QueuedFramed::push_write`](crate::QueuedFramed::push_write)).
    ///
    /// # Errors
    ///
    /// The encoder's error (nothing queued), `EINVAL` for an item longer
    /// than `wbuf_max` on its own (not fatal, nothing queued), `ENOSPC`
    /// over `wbuf_max` otherwise, or `EINVAL` once the output is shut
    /// (`push_shutdown`).
    pub fn push_write<E, I>(&mut self, encoder: E, item: I) -> Result<()>
    where
        E: tokio_util::codec::Encoder<I>,
        E::Error: Into<Error>,
    {
        self.core.push_encoded(encoder, item)
    }

    /// Queues raw bytes.
    ///
    /// # Errors
    ///
    /// As [`push_write`](Self::push_write).
    pub fn push_bytes(&mut self, bytes: impl Into<bytes::Bytes>) -> Result<()> {
        self.core.push_bytes(bytes.into())
    }

    /// Half-closes the write side once the queued output is written.
    ///
    /// # Errors
    ///
    /// The error that closed the connection.
    pub fn push_shutdown(&mut self) -> Result<()> {
        self.core.push_shutdown()
    }

    /// Closes the connection (as [`QueuedFramed::destroy`](crate::QueuedFramed::destroy)):
    /// an `on_timeout` hook can end an idle connection this way.
    pub fn destroy(&mut self) {
        self.core.destroy();
    }

    /// Starts TLS on this connection once the current completion returns
    /// (the SMTP shape: read `STARTTLS`, queue `220 ready`, upgrade). Output
    /// queued so far goes out in plaintext first; the bytes already read
    /// become the start of the TLS stream. No request runs until the
    /// handshake is done. The ticket resolves when it is.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn starttls(&mut self, mode: impl Into<crate::tls::TlsMode>) -> Ticket<()> {
        self.core.request_starttls(mode.into(), true)
    }

    /// Ends TLS after the output queued so far (see
    /// [`QueuedFramed::stoptls`](crate::QueuedFramed::stoptls)).
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn stoptls(&mut self) -> Ticket<()> {
        self.core.request_stoptls(true)
    }

    /// The unconsumed input.
    pub fn read_buffer(&self) -> &[u8] {
        self.core.read_buffer()
    }

    /// Hands `err` to the next read request instead of decoding for it.
    pub(crate) fn defer_error(&mut self, err: Error) {
        self.core.defer_error(err);
    }

    /// Bytes queued for writing and not yet written.
    pub fn write_buffered(&self) -> usize {
        self.core.write_buffered()
    }

    /// Marks activity now for `which` timer (AE's `*timeout_reset`), as
    /// [`Handle::timeout_reset`](crate::Handle::timeout_reset) does: a
    /// hook that knows the quiet is not the peer's gives it a whole period
    /// from here.
    pub fn timeout_reset(&mut self, which: crate::Timeout) {
        self.core.timeout_reset(which);
    }

    /// How long ago the transport last wrote, if it wrote since the last
    /// call (for the server loop's timer hook, its one caller: a peer whose
    /// answers still leave is not silent).
    #[cfg(feature = "tower")]
    pub(crate) fn take_wrote(&mut self) -> Option<std::time::Duration> {
        self.core.take_wrote()
    }

    /// How long ago the transport last read (or the read timer was reset),
    /// for the server loop's timer hook: a peer still sending is not silent.
    #[cfg(feature = "tower")]
    pub(crate) fn since_read(&self) -> std::time::Duration {
        self.core.since_read()
    }
}

impl fmt::Debug for Requests<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requests")
            .field("queued", &self.core.queued_reads())
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

thread_local! {
    /// Set while the engine runs a decoder at the end of input after some
    /// decoder took part of a frame nobody finished (RQ-6): the input ended
    /// inside that frame, whichever decoder reads now, and [`OrEof`] has no
    /// clean end to give even if its own decoder took nothing.
    static INSIDE_A_FRAME: Cell<bool> = const { Cell::new(false) };
}

/// Tells [`OrEof`] whether the input is inside a frame, for as long as it
/// lives (the engine holds one around each decode at the end of input).
pub(crate) struct InsideAFrame(bool);

impl InsideAFrame {
    pub(crate) fn mark(inside: bool) -> InsideAFrame {
        InsideAFrame(INSIDE_A_FRAME.replace(inside))
    }
}

impl Drop for InsideAFrame {
    fn drop(&mut self) {
        INSIDE_A_FRAME.set(self.0);
    }
}

/// A decoder adapter whose frame is `Some(frame)`, or `None` when the input
/// ends cleanly *between* frames (nothing buffered).
///
/// A plain request at end of input is `EPIPE`, fatal ([RQ-6](crate::semantics#RQ-6)), which is right
/// when a response is owed. A server waiting for the *next* request wants a
/// clean end instead, and to keep its write side for the answers still
/// queued: that is this adapter (AE's "queue the request from `on_read`"
/// pattern). End of input inside a frame is still `EPIPE`: with part of
/// one left in the buffer, or after the decoder took part of one (the
/// header of a length-prefixed frame) with nothing left.
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
/// assert!(!conn.is_closed());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct OrEof<D> {
    inner: D,
    /// `inner` took bytes of a frame it has not finished: an end of input
    /// now is inside that frame, even with nothing buffered.
    inside: bool,
}

impl<D> OrEof<D> {
    /// Wraps `inner`.
    pub fn new(inner: D) -> OrEof<D> {
        OrEof {
            inner,
            inside: false,
        }
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
        let before = src.len();
        let decoded = self.inner.decode(src);
        self.note(decoded.as_ref().map(Option::is_some), src.len() < before);
        Ok(decoded?.map(Some))
    }

    fn decode_eof(
        &mut self,
        src: &mut BytesMut,
    ) -> std::result::Result<Option<Self::Item>, D::Error> {
        // What `decode_eof` itself takes is its own end-of-input handling
        // (trailing whitespace after a JSON text, say); what `decode` took
        // before without a frame is part of one.
        let inside = self.inside || INSIDE_A_FRAME.get();
        let before = src.len();
        let decoded = self.inner.decode_eof(src);
        self.note(decoded.as_ref().map(Option::is_some), src.len() < before);
        match decoded? {
            Some(frame) => Ok(Some(Some(frame))),
            // Between frames: nothing left, nothing of a frame taken.
            None if src.is_empty() && !inside => Ok(Some(None)),
            // Inside a frame: the engine's end of input (`EPIPE`).
            None => Ok(None),
        }
    }
}

impl<D> OrEof<D> {
    /// Notes a step of `inner`: whether it ended a frame (`Ok(true)`: a
    /// frame; `Err`: an error) and whether it took bytes.
    fn note<E>(&mut self, framed: std::result::Result<bool, &E>, took: bool) {
        self.inside = match framed {
            Ok(false) => self.inside || took,
            Ok(true) | Err(_) => false,
        };
    }
}

/// A batch's frame: the decoder, the frames, and an error after them.
///
/// The last element: the batch ended having taken part of the next frame
/// (its header), which the decoder keeps for the next batch.
pub(crate) type BatchOf<D> = (D, Vec<<D as Decoder>::Item>, Option<Error>, bool);

/// The decoder behind [`Handle::read_many`](crate::Handle::read_many): one
/// frame, then every further frame already buffered (up to `limit`). Its
/// frame is the decoder itself (so its state carries over), the frames, and
/// a non-fatal error that came after them. End of input between frames is an
/// empty batch.
pub(crate) struct Batch<D> {
    decoder: Option<D>,
    limit: usize,
    /// The decoder took bytes of its first frame without finishing it
    /// (before the end of input, whose own handling is the decoder's): an
    /// end of input now is inside that frame, even with nothing buffered.
    inside: bool,
}

impl<D> Batch<D> {
    pub(crate) fn new(decoder: D, limit: usize) -> Batch<D> {
        Batch {
            decoder: Some(decoder),
            limit: limit.max(1),
            inside: false,
        }
    }

    /// From now on the batch ends with its first frame.
    pub(crate) fn first_only(&mut self) {
        self.limit = 1;
    }

    fn run(&mut self, src: &mut BytesMut, eof: bool) -> Result<Option<BatchOf<D>>>
    where
        D: Decoder,
        D::Error: Into<Error>,
    {
        let Some(decoder) = self.decoder.as_mut() else {
            return Err(Error::invalid_input("a batch is decoded once"));
        };
        let before = src.len();
        let first = match decode_step(decoder, src, eof) {
            // A frame that consumed nothing ends the batch (a zero-length
            // chunk would repeat up to the limit).
            Ok(Some(frame)) if src.len() == before => {
                let d = self.decoder.take().expect("checked above");
                return Ok(Some((d, vec![frame], None, false)));
            }
            Ok(Some(frame)) => frame,
            Ok(None) => {
                self.inside |= src.len() < before;
                return Ok(None);
            }
            Err(e) if eof && e.is_eof_in_request() && src.is_empty() && !self.inside => {
                let d = self.decoder.take().expect("checked above");
                return Ok(Some((d, Vec::new(), None, false)));
            }
            Err(e) => return Err(e),
        };
        let mut frames = vec![first];
        let mut error = None;
        let mut begun = false;
        while frames.len() < self.limit {
            let step_before = src.len();
            match batch_step(decoder, src, eof) {
                BatchStep::Frame(frame) => frames.push(frame),
                BatchStep::Last(frame) => {
                    frames.push(frame);
                    break;
                }
                BatchStep::End => {
                    begun = src.len() < step_before;
                    break;
                }
                BatchStep::Error(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let d = self.decoder.take().expect("checked above");
        Ok(Some((d, frames, error, begun)))
    }
}

impl<D> Decoder for Batch<D>
where
    D: Decoder,
    D::Error: Into<Error>,
{
    type Item = BatchOf<D>;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>> {
        self.run(src, false)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>> {
        self.run(src, true)
    }
}
