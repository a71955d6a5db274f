//! The server loop: read requests, call the service with several in flight,
//! write the responses in request order.

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, IntoFuture, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder};
use tower_service::Service;

use crate::config::Builder;
use crate::error::{Error, ErrorKind, Result};
use crate::queued::{Handle, Ticket, Timeout};

/// Default bound on requests being served at once per connection: enough to
/// keep a pipelining client's window full, bounded so that one connection
/// cannot queue unbounded work.
pub const DEFAULT_SERVE_IN_FLIGHT: usize = 128;

type ErrorMap<Resp, SErr> = Box<dyn FnMut(SErr) -> std::result::Result<Resp, SErr> + Send>;

/// A server loop over one connection, made by [`serve`]: configure it, then
/// `.await` it (or call [`run`](Self::run)).
///
/// It reads requests with the request decoder, calls the service with up to
/// `max_in_flight` requests outstanding (respecting `poll_ready`), and writes
/// the responses with the response encoder **in request order**, coalescing
/// the writes (autocork). It ends cleanly at end of input between requests
/// or when the shutdown future resolves, after answering every request it
/// has read.
#[must_use = "a server loop does nothing unless awaited"]
pub struct Serve<IO, D, E, S, Req>
where
    S: Service<Req>,
{
    io: IO,
    decoder: D,
    encoder: E,
    service: S,
    max_in_flight: usize,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    on_error: Option<ErrorMap<S::Response, S::Error>>,
    on_bad_request: Option<BadRequestHook<S::Response>>,
    builder: Builder,
}

type BadRequestHook<Resp> = Box<dyn FnMut(&Error) -> BadRequest<Resp> + Send>;

/// What [`Serve::on_bad_request`] does with a request the decoder rejected
/// (a non-fatal decode error such as `EBADMSG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest<Resp> {
    /// Answer it (in request order) and go on reading.
    Reply(Resp),
    /// Answer it, then close after the answers before it.
    ReplyAndClose(Resp),
    /// Close after the answers before it, without an answer (the default).
    Close,
}

/// Serves `service` on `io`: see [`Serve`].
///
/// What it returns is a builder ([`Serve`]) that is `IntoFuture`, as
/// hyper's connection builders are: `.await` it, or spawn
/// `serve(..).into_future()` (`tokio::spawn` takes a `Future`).
///
/// A pipelined server written by hand should do what this loop does: take
/// every request already buffered at once (`read_many`), and keep autocork
/// on so the answers to one batch leave in one write. Reading one request
/// and flushing one answer at a time is several times slower.
///
/// # Errors
///
/// Those of [`Serve::run`]. A failure of `service` comes as
/// [`ErrorKind::Io`] with [`Error::io_error`] `None`; the service's error
/// is the error's [`source`](std::error::Error::source).
///
/// # Examples
///
/// ```
/// use anyframe::QueuedFramed;
/// use anyframe::codecs::{LineCodec, Utf8LineCodec};
/// use anyframe::service::serve;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let (server_io, client_io) = tokio::io::duplex(1024);
/// let upper = tower::service_fn(|line: anyframe::codecs::Utf8Line| async move {
///     Ok::<_, std::convert::Infallible>(line.line().to_uppercase())
/// });
/// let server = tokio::spawn(serve(server_io, Utf8LineCodec::new(), LineCodec::new(), upper).into_future());
///
/// let mut client = QueuedFramed::new(client_io);
/// client.write(LineCodec::new(), "hello").await?;
/// assert_eq!(client.read(LineCodec::new()).await?.line(), b"HELLO");
/// client.shutdown_write().await?;
/// server.await.unwrap()?;
/// # Ok(()) }
/// ```
pub fn serve<IO, D, E, S, Req>(
    io: IO,
    decoder: D,
    encoder: E,
    service: S,
) -> Serve<IO, D, E, S, Req>
where
    S: Service<Req>,
{
    let mut builder = Builder::new();
    builder.autocork(true);
    Serve {
        io,
        decoder,
        encoder,
        service,
        max_in_flight: DEFAULT_SERVE_IN_FLIGHT,
        shutdown: None,
        on_error: None,
        on_bad_request: None,
        builder,
    }
}

impl<IO, D, E, S, Req> Serve<IO, D, E, S, Req>
where
    S: Service<Req>,
{
    /// Requests served at once (default [`DEFAULT_SERVE_IN_FLIGHT`]); 1 means
    /// strictly one at a time.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Stops reading new requests when `signal` resolves; requests already
    /// read are still answered. Those the service has not taken yet wait
    /// for its `poll_ready`, as hyper's connections wait for their service:
    /// for a hard deadline on the shutdown, wrap [`run`](Self::run) in
    /// `tokio::time::timeout` after the signal.
    pub fn with_shutdown(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Maps the error of a service call to a response (`Ok`), or closes
    /// the connection after the responses before it (`Err`, also what
    /// happens without a map): the loop then ends with a fatal error whose
    /// source is the error returned. An error from `poll_ready` is not
    /// mapped: the service is gone (see [`run`](Self::run)).
    pub fn map_errors(
        mut self,
        f: impl FnMut(S::Error) -> std::result::Result<S::Response, S::Error> + Send + 'static,
    ) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }

    /// Decides what to do with a request the decoder rejected without
    /// losing the stream (a non-fatal error: `EBADMSG`, a discarded over-long
    /// line): answer it and go on (a JSON-RPC server answers a `-32700`
    /// parse error), answer and close, or close. Without a hook the loop
    /// closes after the answers before it and returns the error. A fatal
    /// decode error always closes.
    ///
    /// A decoder that consumed nothing of what it rejected (JSON's
    /// `EBADMSG`) would reject the same bytes again: that request is
    /// answered as the hook says, then the connection closes after the
    /// answers and the loop returns the error. A decoder that skipped the
    /// bytes it rejected (a line over the limit under
    /// [`OverflowPolicy::Discard`](crate::codecs::OverflowPolicy::Discard))
    /// has made progress: the loop goes on, however many rejected requests
    /// come in a row.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe::QueuedFramed;
    /// use anyframe::codecs::{LineCodec, OverflowPolicy, Utf8Line};
    /// use anyframe::service::{BadRequest, serve};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
    /// let (server_io, client_io) = tokio::io::duplex(1024);
    /// let upper = tower::service_fn(|line: Utf8Line| async move {
    ///     Ok::<_, std::convert::Infallible>(line.line().to_uppercase())
    /// });
    /// // Lines over 16 bytes are dropped (non-fatal ENOSPC) and answered.
    /// let lines = LineCodec::builder().max_length(16).overflow(OverflowPolicy::Discard).build_utf8()?;
    /// let server = serve(server_io, lines, LineCodec::new(), upper)
    ///     .on_bad_request(|_| BadRequest::Reply("ERR line too long".to_string()));
    /// tokio::spawn(server.into_future());
    ///
    /// let mut client = QueuedFramed::new(client_io);
    /// client.write(LineCodec::new(), "this line is far too long").await?;
    /// client.write(LineCodec::new(), "short").await?;
    /// assert_eq!(client.read(LineCodec::new()).await?.line(), b"ERR line too long");
    /// assert_eq!(client.read(LineCodec::new()).await?.line(), b"SHORT");
    /// # Ok(()) }
    /// ```
    pub fn on_bad_request(
        mut self,
        hook: impl FnMut(&Error) -> BadRequest<S::Response> + Send + 'static,
    ) -> Self {
        self.on_bad_request = Some(Box::new(hook));
        self
    }

    /// Connection options (timeouts, caps, watermarks). Autocork is on by
    /// default for the server loop and stays on unless `builder` sets it
    /// ([`Builder::autocork`]). Socket options (`no_delay`, `keepalive`)
    /// are not applied to the transport the loop is given (it may be any
    /// transport; a warning is logged): set them on the socket before.
    pub fn connection(mut self, mut builder: Builder) -> Self {
        if !builder.autocork_chosen() {
            builder.autocork(true);
        }
        self.builder = builder;
        self
    }
}

/// What the loop's decoder found next in the input.
enum Next<Req> {
    /// A whole request.
    Request(Req),
    /// A request the decoder rejected with a non-fatal error; `skipped`:
    /// whether it consumed input since the request before (it skipped the
    /// bad bytes, so reading on makes progress).
    Rejected { error: Error, skipped: bool },
    /// The input ended cleanly between requests.
    End,
    /// The input ended inside a request (`EPIPE`): the requests before it
    /// are still answered, then the loop returns this error.
    Truncated(Error),
    /// The decoder failed fatally: the requests before it are still
    /// answered (the connection stays open for them), then the loop
    /// returns this error.
    Failed(Error),
}

/// The loop's request decoder: the user's, with what it found turned into
/// a [`Next`], so a batch of requests keeps its order around a rejected or
/// truncated one, and the end of input inside a request does not close the
/// connection before the answers to the requests already read are written.
struct Framing<D> {
    inner: D,
    /// Input was consumed since the last request or rejection.
    consumed: bool,
    /// The decoder failed fatally: it finds nothing more.
    failed: bool,
    /// The connection's `rbuf_max`: a request that needs more input than
    /// that fails here, as a fatal rejection, before the engine's own cap
    /// closes the connection under the answers still owed.
    rbuf_max: Option<usize>,
    /// Told of each request found, inside the engine: a timer that expires
    /// before the loop has looked at it must not take the peer for silent.
    timers: Arc<LoopTimers>,
}

impl<D> Framing<D> {
    fn new(inner: D, rbuf_max: Option<usize>, timers: Arc<LoopTimers>) -> Framing<D> {
        Framing {
            inner,
            consumed: false,
            failed: false,
            rbuf_max,
            timers,
        }
    }

    /// A decoder's answer as a [`Next`]; `None`: more input needed.
    fn next<T, DErr: Into<Error>>(
        &mut self,
        src: &bytes::BytesMut,
        before: usize,
        decoded: std::result::Result<Option<T>, DErr>,
        eof: bool,
    ) -> Result<Option<Next<T>>> {
        // Taken by earlier calls without a request: part of one. What
        // `decode_eof` itself takes is its own end-of-input handling.
        let inside = self.consumed;
        self.consumed |= src.len() < before;
        let next = match decoded {
            Ok(Some(req)) => Next::Request(req),
            Ok(None) if !eof && self.rbuf_max.is_some_and(|max| src.len() >= max) => {
                self.failed = true;
                Next::Failed(Error::no_space(
                    "a read request needs more input than rbuf_max allows",
                ))
            }
            Ok(None) if !eof => return Ok(None),
            Ok(None) => Self::ended(src, inside, Error::eof_in_request()),
            Err(e) => {
                let e: Error = e.into();
                if eof && (e.is_eof() || e.kind() == ErrorKind::Io) {
                    // tokio-util's default `decode_eof` says "bytes remaining
                    // on stream" with an I/O error.
                    Self::ended(src, inside, Error::eof_in_request())
                } else if e.is_fatal() {
                    // Not the engine's to act on: it would close the
                    // connection under the answers still owed.
                    self.failed = true;
                    Next::Failed(e)
                } else {
                    Next::Rejected {
                        error: e,
                        skipped: self.consumed,
                    }
                }
            }
        };
        self.consumed = false;
        // Work for the loop (it stores the exact state when it next looks).
        self.timers.owed.store(true, Ordering::Release);
        Ok(Some(next))
    }

    /// The input's end: between requests if nothing is left and the
    /// decoder took nothing of a request (a length prefix) before it.
    fn ended<T>(src: &bytes::BytesMut, inside: bool, e: Error) -> Next<T> {
        if src.is_empty() && !inside {
            Next::End
        } else {
            Next::Truncated(e)
        }
    }
}

impl<D> Decoder for Framing<D>
where
    D: Decoder,
    D::Error: Into<Error>,
{
    type Item = Next<D::Item>;
    type Error = Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Next<D::Item>>> {
        if self.failed {
            return Ok(None);
        }
        let before = src.len();
        let decoded = self.inner.decode(src);
        self.next(src, before, decoded, false)
    }

    fn decode_eof(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Next<D::Item>>> {
        if self.failed {
            return Ok(None);
        }
        let before = src.len();
        let decoded = self.inner.decode_eof(src);
        self.next(src, before, decoded, true)
    }
}

/// A batch of what the loop's decoder found, with the decoder back.
type Found<D, Req> = (Framing<D>, Vec<Next<Req>>);

/// What waits for its turn at the service, in request order.
enum Waiting<Req, Resp> {
    /// A request for the service.
    Request(Req),
    /// The answer to a rejected request ([`BadRequest`]).
    Reply(Resp),
}

/// Queues `resp`. An encoder that refuses it leaves the peer one answer
/// short, so its refusal is made fatal here; so is an answer longer than
/// `wbuf_max`, which can never be queued (refused before it is, so the
/// answers before it still go out). One that does not fit under the cap
/// yet waits until what is queued is written (bounded by the connection's
/// timers), rather than cross the cap and close the connection under the
/// answers queued before it.
async fn answer<E, Resp>(handle: &Handle, encoder: E, resp: Resp, timers: &LoopTimers) -> Result<()>
where
    E: Encoder<Resp>,
    E::Error: Into<Error>,
{
    let refused = |e: Error| {
        if e.is_fatal() {
            e
        } else {
            Error::fatal_because(e, "an answer could not be encoded")
        }
    };
    // Straight into the queue when it fits; else it comes back encoded
    // (only under a cap, or past an inbox closed for a moment).
    let Some(out) = handle
        .push_write_or_hand_back(encoder, resp)
        .map_err(refused)?
    else {
        return Ok(());
    };
    let max = handle.wbuf_max().unwrap_or(usize::MAX);
    if out.len() > max {
        return Err(Error::fatal_because(
            Error::no_space("an answer longer than wbuf_max"),
            "an answer could not be queued",
        ));
    }
    if handle.write_buffered() + out.len() > max {
        timers.bound(handle, handle.flush()).await?;
    }
    handle.push_bytes(out).map_err(refused)
}

/// The connection's timers, as the loop sees them. The loop owns the
/// connection's `on_timeout` hook, which decides inside the engine, at the
/// expiry, whose doing it is: a peer that sends nothing while the service
/// works on its requests with none of their answers waiting unwritten, or
/// while the transport takes the answers written to it (a write since the
/// previous read expiry, within the period), is waiting for the server;
/// nothing to write while the service works is no stall. Those expiries
/// are dropped; any other is handed to the loop ([`expiry`] says what it
/// means). No read or write waiter is ever told a timeout, so none is
/// given up half way.
struct LoopTimers {
    /// The service is at work: requests handed to it or waiting for it,
    /// with room to take its answers (above the high watermark the wait is
    /// the peer's).
    owed: AtomicBool,
    /// The read timer's period (zero: off).
    read_period: Duration,
    /// The write timer's period (zero: off).
    write_period: Duration,
    /// Expiries handed to the loop, by `Timeout::bit`.
    expired: AtomicU8,
    /// The loop's task, woken for an expiry.
    task: AtomicWaker,
}

impl LoopTimers {
    fn new(read_period: Duration, write_period: Duration) -> LoopTimers {
        LoopTimers {
            owed: AtomicBool::new(false),
            read_period,
            write_period,
            expired: AtomicU8::new(0),
            task: AtomicWaker::new(),
        }
    }

    /// Installs the hook on the loop's connection.
    fn install(self: &Arc<LoopTimers>, handle: &Handle) {
        let timers = Arc::clone(self);
        handle.on_timeout(move |which, q| {
            // The service at work excuses the peer's silence only while no
            // answer waits unwritten: a peer that takes none of them stalls.
            let working =
                timers.owed.load(Ordering::Acquire) && q.write_buffered() == 0;
            let servers_doing = match which {
                // So does the peer taking its answers, to the last byte
                // (asked at every read expiry: each starts afresh).
                Timeout::Read => {
                    let wrote = q.take_wrote();
                    working || wrote.is_some_and(|ago| ago < timers.read_period)
                }
                // With nothing waiting to be written, a write timer says
                // only that no answer went out: a peer that sent bytes
                // within the period (a request still arriving) is not
                // silent.
                Timeout::Write => {
                    working
                        || (q.write_buffered() == 0 && q.since_read() < timers.write_period)
                }
                _ => working,
            };
            if servers_doing {
                tracing::trace!(timeout = ?which, "server loop: timer expired while the server works");
                return;
            }
            timers.expired.fetch_or(which.bit(), Ordering::AcqRel);
            timers.task.wake();
        });
    }

    /// An expiry handed to the loop, if any: the write timer's first, then
    /// the idle timer's (they say the peer takes nothing), then the read
    /// timer's.
    fn poll_expired(&self, cx: &Context<'_>) -> Option<Timeout> {
        self.task.register(cx.waker());
        let bits = self.expired.swap(0, Ordering::AcqRel);
        [Timeout::Write, Timeout::Idle, Timeout::Read]
            .into_iter()
            .find(|&t| bits & t.bit() != 0)
    }

    /// Runs `f` until it completes or a timer expires ([`expiry`]).
    async fn bound<T>(&self, handle: &Handle, f: impl Future<Output = Result<T>>) -> Result<T> {
        let mut f = std::pin::pin!(f);
        poll_fn(|cx| {
            if let Poll::Ready(r) = f.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            match self.poll_expired(cx).map(|which| expiry(handle, which)) {
                Some(Expiry::Stalled(e)) => Poll::Ready(Err(stalled(handle, e))),
                Some(Expiry::Quiet(e)) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// What an expiry handed to the loop means.
enum Expiry {
    /// Answers wait unwritten and the transport took none of them for the
    /// period: a stalled peer.
    Stalled(Error),
    /// The peer was silent with nothing owed to it.
    Quiet(Error),
}

/// What an expiry of `which`, handed to the loop, means now.
fn expiry(handle: &Handle, which: Timeout) -> Expiry {
    let e = Error::timer_expired(which);
    if handle.write_buffered() > 0 {
        Expiry::Stalled(e)
    } else {
        Expiry::Quiet(e)
    }
}

/// The peer took none of the answers for a whole period (or the connection
/// failed): the connection closes with a fatal error, and what is queued
/// is dropped with it rather than lingered toward a peer that does not
/// read. The error.
fn stalled(handle: &Handle, e: Error) -> Error {
    tracing::debug!(error = %e, "server loop: answers not taken");
    let e = if e.is_fatal() {
        e
    } else {
        Error::fatal_because(e, "the peer took none of the answers")
    };
    handle.close_with(e.clone());
    e
}

/// Gives up the loop's read: what it had taken, if it completed (under the
/// engine's lock it has either taken its requests, which come back here,
/// or taken nothing, and dropped it leaves the input where it was).
fn stop_reading<T>(handle: &Handle, next: &mut Option<Ticket<T>>) -> Option<Result<T>> {
    let read = next.take()?;
    handle.with_read_buffer(|_| futures::FutureExt::now_or_never(read))
}

/// What woke the loop.
enum Event<D, Req, Resp, SErr> {
    /// The next requests.
    Requests(Result<Found<D, Req>>),
    /// The service failed `poll_ready`.
    NotReady(SErr),
    /// The answers stopped leaving: the connection's error, or a write or
    /// idle timeout while answers waited unwritten.
    Stalled(Error),
    /// A timer expired, the peer silent with nothing owed to it (see
    /// [`LoopTimers`]).
    Expired(Error),
    Response(std::result::Result<Resp, SErr>),
    Shutdown,
}

/// A response being computed, or one already known (a bad request's).
type Pending<S, Req> = futures::future::Either<
    <S as Service<Req>>::Future,
    futures::future::Ready<
        std::result::Result<<S as Service<Req>>::Response, <S as Service<Req>>::Error>,
    >,
>;

impl<IO, D, E, S, Req> Serve<IO, D, E, S, Req>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Decoder<Item = Req> + Clone + Send + 'static,
    D::Error: Into<Error>,
    Req: Send + 'static,
    E: Encoder<S::Response> + Clone,
    E::Error: Into<Error>,
    S: Service<Req>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Runs the loop until the peer closes between requests or the shutdown
    /// signal fires.
    ///
    /// Requests are read in batches: every request already buffered is
    /// taken at once (one wake-up per read from the socket, not per
    /// request), and answers are corked into few large writes. While its
    /// output is above the connection's high watermark the loop neither
    /// reads requests nor takes answers from the service (a client that
    /// sends but does not read is not answered into unbounded memory, and
    /// a batch of large answers waits in the service instead of crossing
    /// `wbuf_max`), and it goes on at the low one. With any timer set, a
    /// client that takes none of the answers for a period ends the loop,
    /// and the unsent answers are dropped.
    ///
    /// The loop waits for every request it has handed to the service, as
    /// hyper's connections do: the connection's timeouts bound the I/O, not
    /// the service. A timer that expires while the service still owes
    /// answers, with none of them waiting unwritten, does not end the loop;
    /// nor does a read timeout while the client is taking its answers; a
    /// client silent with nothing owed to it for a period ends it. The
    /// loop sets the connection's `on_timeout` hook for that (the rules:
    /// [LC-6](crate::semantics#LC-6)).
    /// Bound a service that may never answer with a timeout layer
    /// (`tower::timeout::Timeout`), whose error
    /// [`map_errors`](Self::map_errors) can turn into an answer.
    ///
    /// # Errors
    ///
    /// A fatal connection error; a fatal `ETIMEDOUT` when the client took
    /// none of the answers for a period of a timer; a non-fatal `ETIMEDOUT`
    /// when the client was silent, with nothing owed to it, for a period
    /// (after the requests already read are answered); a request the
    /// decoder rejects
    /// (after the responses before it are written; a fatal rejection also
    /// waits for the answers to the requests still in service), unless
    /// [`on_bad_request`](Self::on_bad_request) answers it; a service error
    /// from a call that [`map_errors`](Self::map_errors) did not turn into
    /// a response, with the answers owed before it still written; an error
    /// from the service's `poll_ready` (a failed tower service is not asked
    /// again: the requests it did not take are not answered, and
    /// `map_errors` is not consulted); an answer the encoder refuses, made
    /// fatal (the peer would take the next answer for it), after the
    /// answers before it.
    ///
    /// A service error (from a call or from `poll_ready`) is reported as
    /// [`ErrorKind::Io`], fatal, although no I/O failed:
    /// [`Error::io_error`] is `None`, and the service's own error is the
    /// [`source`](std::error::Error::source) (downcast it to your error
    /// type).
    pub async fn run(self) -> Result<()> {
        let Serve {
            io,
            decoder,
            encoder,
            mut service,
            max_in_flight,
            mut shutdown,
            mut on_error,
            mut on_bad_request,
            builder,
        } = self;
        let (handle, driver) = builder.build(io).spawn();
        let timers = Arc::new(LoopTimers::new(builder.cfg.rtimeout, builder.cfg.wtimeout));
        timers.install(&handle);
        let mut in_flight: FuturesOrdered<Pending<S, Req>> = FuturesOrdered::new();
        // Requests read and not yet handed to the service, and the answers
        // to rejected ones, in request order.
        let mut waiting: VecDeque<Waiting<Req, S::Response>> = VecDeque::new();
        let rbuf_max = builder.cfg.rbuf_max;
        // The loop's handle is its own: no timer is set after this.
        let read_timer = !builder.cfg.rtimeout.is_zero();
        let mut reader = Some(Framing::new(decoder.clone(), rbuf_max, Arc::clone(&timers)));
        let mut next: Option<Ticket<Found<D, Req>>> = None;
        // A read that completed as the shutdown signal came (see
        // `Event::Shutdown`): its requests are answered.
        let mut read_at_shutdown: Option<Result<Found<D, Req>>> = None;
        let mut reading = true;
        let mut outcome: Result<()> = Ok(());
        loop {
            if !reading
                && next.is_none()
                && read_at_shutdown.is_none()
                && waiting.is_empty()
                && in_flight.is_empty()
            {
                break;
            }
            if reader.is_none() {
                // The decoder was lost with a failed batch: a fresh one.
                reader = Some(Framing::new(decoder.clone(), rbuf_max, Arc::clone(&timers)));
            }
            // Responses, readiness and requests are polled together, so a
            // service that is not ready (all its slots busy) still sees its
            // in-flight futures driven.
            let event = match read_at_shutdown.take() {
                Some(r) => Event::Requests(r),
                None => {
                    poll_fn(|cx| {
                        if let Some(which) = timers.poll_expired(cx) {
                            return Poll::Ready(match expiry(&handle, which) {
                                Expiry::Stalled(e) => Event::Stalled(e),
                                Expiry::Quiet(e) => Event::Expired(e),
                            });
                        }
                        // Answers are taken, and requests read, only while
                        // the output is below the high watermark (OPT-5):
                        // the rest wait in the service, and what is queued
                        // never crosses `wbuf_max` on the loop's account.
                        // Until it parks (`Pending`) or has room: an error
                        // it ignores was only taken, so it looks again.
                        let room = loop {
                            match handle.poll_write_ready(cx) {
                                Poll::Ready(Ok(())) => break true,
                                // The connection failed, or its output was
                                // shut: no answer can be written.
                                Poll::Ready(Err(e))
                                    if e.is_fatal() || e.kind() == ErrorKind::InvalidInput =>
                                {
                                    return Poll::Ready(Event::Stalled(e));
                                }
                                // Not the loop's (timeouts come to it
                                // through `timers`): look again.
                                Poll::Ready(Err(_)) => continue,
                                Poll::Pending => break false,
                            }
                        };
                        // Above the high watermark the answers wait for the
                        // peer, not for the service.
                        let in_service = !waiting.is_empty() || !in_flight.is_empty();
                        timers.owed.store(room && in_service, Ordering::Release);
                        // Requests go to the service, and answers come back,
                        // within this one poll: a request handed over may be
                        // answered at once, with no turn of the loop between.
                        loop {
                            if room
                                && !in_flight.is_empty()
                                && let Poll::Ready(Some(r)) = in_flight.poll_next_unpin(cx)
                            {
                                return Poll::Ready(Event::Response(r));
                            }
                            // An answer known already (a rejected request's)
                            // takes its place without the service; a request
                            // waits for it.
                            if let Some(Waiting::Reply(_)) = waiting.front()
                                && let Some(Waiting::Reply(resp)) = waiting.pop_front()
                            {
                                in_flight.push_back(futures::future::Either::Right(
                                    futures::future::ready(Ok(resp)),
                                ));
                                continue;
                            }
                            if !waiting.is_empty() && in_flight.len() < max_in_flight {
                                match service.poll_ready(cx) {
                                    Poll::Ready(Ok(())) => {
                                        if let Some(Waiting::Request(req)) = waiting.pop_front() {
                                            in_flight.push_back(futures::future::Either::Left(
                                                service.call(req),
                                            ));
                                        }
                                        continue;
                                    }
                                    Poll::Ready(Err(e)) => {
                                        return Poll::Ready(Event::NotReady(e));
                                    }
                                    Poll::Pending => {}
                                }
                            }
                            break;
                        }
                        // Read more only when the requests read so far are handed
                        // out and the answers are not piling up (backpressure).
                        if room
                            && next.is_none()
                            && reading
                            && waiting.is_empty()
                            && in_flight.len() < max_in_flight
                            && let Some(d) = reader.take()
                        {
                            next = Some(
                                handle.push_read_many_deferring(d, max_in_flight - in_flight.len()),
                            );
                        }
                        if let Some(t) = next.as_mut()
                            && let Poll::Ready(r) = Pin::new(t).poll(cx)
                        {
                            next = None;
                            return Poll::Ready(Event::Requests(r));
                        }
                        if reading
                            && let Some(s) = shutdown.as_mut()
                            && s.as_mut().poll(cx).is_ready()
                        {
                            return Poll::Ready(Event::Shutdown);
                        }
                        Poll::Pending
                    })
                    .await
                }
            };
            // An answer that could not be queued: the peer would take the
            // next one for it, so nothing more is answered.
            let mut refused = None;
            let answered = matches!(event, Event::Response(_));
            match event {
                Event::Response(Ok(resp)) => {
                    refused = answer(&handle, encoder.clone(), resp, &timers).await.err();
                }
                Event::Response(Err(e)) => {
                    let resp = match on_error.as_mut() {
                        Some(map) => map(e),
                        None => Err(e),
                    };
                    match resp {
                        Ok(resp) => {
                            refused = answer(&handle, encoder.clone(), resp, &timers).await.err();
                        }
                        Err(e) => {
                            // Close after the responses before this one.
                            reading = false;
                            next = None;
                            waiting.clear();
                            in_flight.clear();
                            if outcome.is_ok() {
                                outcome = Err(Error::service(e));
                            }
                        }
                    }
                }
                Event::Stalled(e) => {
                    // Nothing more is read or answered.
                    let e = stalled(&handle, e);
                    reading = false;
                    next = None;
                    waiting.clear();
                    in_flight.clear();
                    if outcome.is_ok() {
                        outcome = Err(e);
                    }
                }
                Event::NotReady(e) => {
                    // A failed service is not asked again: the requests it
                    // did not take are dropped, the ones it took answered.
                    reading = false;
                    next = None;
                    waiting.clear();
                    if outcome.is_ok() {
                        outcome = Err(Error::service(e));
                    }
                }
                Event::Requests(Ok((d, found))) => {
                    reader = Some(d);
                    // A read that completed as the loop shut down is
                    // answered like any other; then reading stays off.
                    let shut_down = !reading;
                    reading = true;
                    for next in found {
                        if !reading {
                            // Closing: nothing after the request that
                            // closed the loop is answered.
                            break;
                        }
                        match next {
                            Next::Request(req) => waiting.push_back(Waiting::Request(req)),
                            Next::End => reading = false,
                            Next::Truncated(e) | Next::Failed(e) => {
                                // Answer the requests before it, then end
                                // with the error (LC-5, LC-6).
                                tracing::debug!(error = %e, "server loop: no more requests");
                                reading = false;
                                if outcome.is_ok() {
                                    outcome = Err(e);
                                }
                            }
                            Next::Rejected { error, skipped } => {
                                let verdict = match on_bad_request.as_mut() {
                                    Some(hook) => hook(&error),
                                    None => BadRequest::Close,
                                };
                                tracing::debug!(error = %error, skipped, "server loop: bad request");
                                let reply = match verdict {
                                    // Nothing skipped: the same bytes would
                                    // be rejected again.
                                    BadRequest::Reply(resp) if !skipped => {
                                        reading = false;
                                        if outcome.is_ok() {
                                            outcome = Err(error);
                                        }
                                        Some(resp)
                                    }
                                    BadRequest::Reply(resp) => Some(resp),
                                    BadRequest::ReplyAndClose(resp) => {
                                        reading = false;
                                        Some(resp)
                                    }
                                    BadRequest::Close => {
                                        reading = false;
                                        if outcome.is_ok() {
                                            outcome = Err(error);
                                        }
                                        None
                                    }
                                };
                                if let Some(resp) = reply {
                                    // In request order: after the requests
                                    // before it.
                                    waiting.push_back(Waiting::Reply(resp));
                                }
                            }
                        }
                    }
                    if shut_down {
                        reading = false;
                    }
                }
                Event::Requests(Err(e)) => {
                    // A fatal error: the connection is closed.
                    tracing::debug!(error = %e, "server loop: reading failed");
                    reading = false;
                    if outcome.is_ok() {
                        outcome = Err(e);
                    }
                }
                Event::Expired(e) => {
                    // Nothing owed, and the peer quiet for a whole period:
                    // reading ends as at a shutdown signal (below), and the
                    // loop with the timeout once what was read is answered.
                    tracing::debug!(error = %e, "server loop: timer expired");
                    reading = false;
                    read_at_shutdown = stop_reading(&handle, &mut next);
                    if outcome.is_ok() {
                        outcome = Err(e);
                    }
                }
                Event::Shutdown => {
                    // Requests already read are still answered, also those
                    // of a read that completed since the loop looked at it:
                    // under the engine's lock it has either taken its
                    // requests (they are here) or taken nothing (dropped, it
                    // leaves the input where it was).
                    tracing::debug!("server loop shutting down");
                    reading = false;
                    read_at_shutdown = stop_reading(&handle, &mut next);
                }
            }
            let owed = !waiting.is_empty() || !in_flight.is_empty() || read_at_shutdown.is_some();
            if answered && read_timer && !owed {
                // The last answer owed is queued: from here the peer's
                // silence is its own (once the transport has taken the
                // answers, see `LoopTimers`), and the read timeout counts it.
                handle.timeout_reset(Timeout::Read);
            }
            if let Some(e) = refused {
                // The answers queued before it still go out.
                tracing::debug!(error = %e, "server loop: an answer was refused");
                reading = false;
                next = None;
                waiting.clear();
                in_flight.clear();
                if outcome.is_ok() {
                    outcome = Err(e);
                }
            }
        }
        drop(next);
        // Nothing is owed now: the timers bound the last writes.
        timers.owed.store(false, Ordering::Release);
        let flushed = timers.bound(&handle, handle.flush()).await;
        if !handle.is_closed() {
            let _ = handle.push_shutdown();
            let _ = timers.bound(&handle, handle.flush()).await;
        }
        handle.detach();
        drop(handle);
        let _ = driver.await;
        outcome.and(flushed)
    }
}

impl<IO, D, E, S, Req> IntoFuture for Serve<IO, D, E, S, Req>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Decoder<Item = Req> + Clone + Send + 'static,
    D::Error: Into<Error>,
    Req: Send + 'static,
    E: Encoder<S::Response> + Clone + Send + 'static,
    E::Error: Into<Error>,
    S: Service<Req> + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Output = Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl<IO, D, E, S, Req> fmt::Debug for Serve<IO, D, E, S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codecs::LineCodec;

    fn echo() -> impl Service<
        crate::codecs::Line,
        Response = bytes::Bytes,
        Error = std::convert::Infallible,
        Future = std::future::Ready<std::result::Result<bytes::Bytes, std::convert::Infallible>>,
    > + Clone {
        tower::service_fn(|l: crate::codecs::Line| {
            std::future::ready(Ok(bytes::Bytes::copy_from_slice(l.line())))
        })
    }

    #[test]
    fn connection_options_keep_the_loops_autocork_unless_they_set_it() {
        let (io, _peer) = tokio::io::duplex(64);
        let mut timeouts = Builder::new();
        timeouts.rtimeout(std::time::Duration::from_secs(5));
        let s = serve(io, LineCodec::new(), LineCodec::new(), echo()).connection(timeouts);
        assert!(s.builder.cfg.autocork);
        let (io, _peer) = tokio::io::duplex(64);
        let mut off = Builder::new();
        off.autocork(false);
        let s = serve(io, LineCodec::new(), LineCodec::new(), echo()).connection(off);
        assert!(!s.builder.cfg.autocork);
    }
}
