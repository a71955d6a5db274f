//! The pipelined client.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};

use bytes::BytesMut;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::PollSemaphore;

use crate::error::{Error, ErrorKind, Result};
use crate::queued::{Handle, Requests, Ticket, Timeout};

/// Chooses the decoder for a request's response (`GET` answers a line,
/// `FETCH` a length-prefixed blob, ...). Implemented for every
/// `FnMut(&Req) -> D`.
pub trait ResponseDecoder<Req> {
    /// The decoder type (use an enum to mix response formats).
    type Decoder: Decoder + Send + 'static;

    /// The decoder that reads the response to `req`.
    fn decoder_for(&mut self, req: &Req) -> Self::Decoder;
}

impl<Req, D, F> ResponseDecoder<Req> for F
where
    F: FnMut(&Req) -> D,
    D: Decoder + Send + 'static,
{
    type Decoder = D;

    fn decoder_for(&mut self, req: &Req) -> D {
        self(req)
    }
}

/// Default bound on requests in flight: deep enough to fill a loopback or
/// LAN pipe (the anchor benchmark pipelines 100), small enough that a
/// stalled server does not let callers queue without limit.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 128;

/// A pipelined client: each `call` writes the request and queues the read
/// of its response; responses are matched to requests in order.
///
/// A call that fails with a non-fatal error (a read, idle or write timeout)
/// still owns its response: when the answer arrives late it is read and
/// dropped, so the next caller gets its own answer, never the timed-out
/// one. `Client` is `Clone` when its encoder and decoder chooser are; a
/// chooser written as a closure that captures nothing can be named as a
/// function pointer, so the client can be returned from a function:
///
/// ```
/// use anyframe::codecs::LineCodec;
/// use anyframe::service::Client;
/// use anyframe::Handle;
///
/// type LineClient = Client<LineCodec, fn(&String) -> LineCodec>;
///
/// fn line_client(handle: Handle) -> LineClient {
///     Client::new(handle, LineCodec::new(), |_: &String| LineCodec::new())
/// }
/// # let _ = line_client;
/// ```
///
/// Input that arrives while no call waits for an answer (a peer that
/// answers a call twice, or speaks unasked) is taken by the next call as
/// its answer, and every later caller gets the one before: use
/// [`ClientBuilder::close_on_unasked_input`] where the protocol allows it.
/// A read timeout set on the connection (`rtimeout`, which counts
/// from the last input) restarts when a call is made with no other call
/// pending, so it bounds how long calls wait for their answers, and a
/// pause between calls does not use it up.
///
/// `poll_ready` is ready while fewer than `max_in_flight` calls are pending
/// and the connection's write queue is below its high watermark. A fatal
/// connection error fails every pending call with it. Dropping a response
/// future does not desynchronise the stream: the response is still read, and
/// discarded. Nor does dropping the `Client`: calls already made keep the
/// connection open until their responses are read.
///
/// A response its decoder rejects fails that call alone when the decoder
/// consumed it (a JSON text the response type refuses, a netstring with a
/// bad trailer, an over-long line under the discard policy: non-fatal
/// errors that leave the stream in step). A response rejected with nothing
/// consumed (malformed JSON) would be read by the next call's decoder, so
/// it closes the connection instead, with a fatal error whose
/// [`codec_error`](crate::Error::codec_error) is the decoder's.
///
/// # Examples
///
/// ```
/// use anyframe::QueuedFramed;
/// use anyframe::codecs::LineCodec;
/// use anyframe::service::Client;
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let (io, peer) = tokio::io::duplex(1024);
/// // An echo server on the other end.
/// tokio::spawn(async move {
///     let mut peer = QueuedFramed::new(peer);
///     while let Ok(line) = peer.read(LineCodec::new()).await {
///         peer.write(LineCodec::new(), line.line()).await.unwrap();
///     }
/// });
/// let (handle, _driver) = QueuedFramed::new(io).spawn();
/// let mut client = Client::new(handle, LineCodec::new(), |_: &String| LineCodec::new());
/// let answer = client.ready().await?.call("ping".to_string()).await?;
/// assert_eq!(answer.line(), b"ping");
/// # Ok(()) }
/// ```
pub struct Client<E, R> {
    handle: Handle,
    encoder: E,
    decoders: R,
    permits: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
    idle: Arc<Idle>,
}

/// What the clones of a client know of their calls, to tell an answer
/// from input nobody asked for.
#[derive(Default)]
struct Idle {
    /// Guard the connection while no call is pending
    /// ([`ClientBuilder::close_on_unasked_input`]).
    watch: bool,
    /// Calls made whose answer has not been read.
    pending: AtomicUsize,
    /// The guard queued now (0: none): while no call is pending, a read
    /// that fails the connection if input arrives.
    guard_id: AtomicU64,
    /// Its ticket: dropped (which cancels the guard) by the next call, or
    /// with the last clone of the client.
    guard: Mutex<Option<Ticket<()>>>,
}

impl Idle {
    /// A call's answer was read, inside the engine: the last one pending
    /// leaves a guard on the connection.
    fn answered(self: &Arc<Idle>, q: &mut Requests<'_>) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) != 1
            || !self.watch
            || self.guard_id.load(Ordering::Acquire) != 0
        {
            return;
        }
        static IDS: AtomicU64 = AtomicU64::new(1);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        self.guard_id.store(id, Ordering::Release);
        let unasked = Unasked {
            idle: Arc::downgrade(self),
            id,
        };
        // Not under the slot's lock: a guard refused at once (the
        // connection closed) is dropped in here, and its drop looks at
        // the slot's id.
        let ticket = q.push_read(unasked);
        *self.guard.lock().unwrap_or_else(PoisonError::into_inner) = Some(ticket);
    }

    /// A call is being made: the guard stands aside (cancelled, it has
    /// consumed nothing). One that is queued meanwhile still leaves the
    /// call's answer alone ([`Unasked`]). True if no other call was
    /// pending.
    fn calling(&self) -> bool {
        let first = self.pending.fetch_add(1, Ordering::AcqRel) == 0;
        if self.guard_id.swap(0, Ordering::AcqRel) != 0 {
            drop(
                self.guard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            );
        }
        first
    }
}

/// One call counted in [`Idle::pending`] until its answer is read, or
/// until the call fails without one (its completion is then dropped).
struct PendingCall(Option<Weak<Idle>>);

impl PendingCall {
    /// Counts a call; true if no other call was pending.
    fn new(idle: &Arc<Idle>) -> (PendingCall, bool) {
        let first = idle.calling();
        (PendingCall(Some(Arc::downgrade(idle))), first)
    }

    fn answered(mut self, q: &mut Requests<'_>) {
        if let Some(idle) = self.0.take().and_then(|idle| idle.upgrade()) {
            idle.answered(q);
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if let Some(idle) = self.0.take().and_then(|idle| idle.upgrade()) {
            idle.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The guard's decoder: input while no call is pending is nobody's
/// answer; while one is (made as the guard was queued), the guard
/// completes without consuming anything and leaves the input to it.
struct Unasked {
    idle: Weak<Idle>,
    id: u64,
}

impl Drop for Unasked {
    fn drop(&mut self) {
        if let Some(idle) = self.idle.upgrade() {
            // Gone (it stood aside, failed, or was cancelled): the next
            // idle time gets a new one.
            let _ = idle
                .guard_id
                .compare_exchange(self.id, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

impl Decoder for Unasked {
    type Item = ();
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<()>> {
        if buf.is_empty() {
            return Ok(None);
        }
        match self.idle.upgrade() {
            Some(idle) if idle.pending.load(Ordering::Acquire) == 0 => Err(Error::new(
                ErrorKind::Protocol,
                true,
                "the peer sent input while no call waited for an answer",
            )),
            _ => Ok(Some(())),
        }
    }
}

/// Options for a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    max_in_flight: usize,
    close_on_unasked_input: bool,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            close_on_unasked_input: false,
        }
    }
}

impl ClientBuilder {
    /// How many calls may wait for their response at once (default
    /// [`DEFAULT_MAX_IN_FLIGHT`]).
    pub fn max_in_flight(&mut self, n: usize) -> &mut Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Closes the connection with a fatal `EPROTO` when input arrives while
    /// no call waits for an answer (a peer that answers a call twice, or
    /// speaks unasked), rather than let the next call take it for its
    /// answer. While no call is pending a read then waits on the
    /// connection, so an end of input is noticed at once too (the next
    /// call fails with it). Off by default: it suits protocols whose
    /// response decoders consume everything up to the next answer. One
    /// that leaves a separator behind (a JSON decoder after an NDJSON
    /// text's newline, a line decoder after a `\r\n` written as two
    /// separators) would have that separator taken for unasked input.
    ///
    /// ```
    /// use anyframe::QueuedFramed;
    /// use anyframe::codecs::LineCodec;
    /// use anyframe::service::Client;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (io, _peer) = tokio::io::duplex(1024);
    /// let (handle, _driver) = QueuedFramed::new(io).spawn();
    /// let client = Client::builder()
    ///     .close_on_unasked_input(true)
    ///     .build(handle, LineCodec::new(), |_: &String| LineCodec::new());
    /// # let _ = client;
    /// # }
    /// ```
    pub fn close_on_unasked_input(&mut self, on: bool) -> &mut Self {
        self.close_on_unasked_input = on;
        self
    }

    /// Builds the client over a spawned connection.
    pub fn build<E, R>(&self, handle: Handle, encoder: E, decoders: R) -> Client<E, R> {
        Client {
            handle,
            encoder,
            decoders,
            permits: PollSemaphore::new(Arc::new(Semaphore::new(self.max_in_flight))),
            permit: None,
            idle: Arc::new(Idle {
                watch: self.close_on_unasked_input,
                ..Idle::default()
            }),
        }
    }
}

impl Client<(), ()> {
    /// Options for a client: see [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }
}

impl<E, R> Client<E, R> {
    /// A client with the default options: `encoder` writes requests,
    /// `decoders` picks each response's decoder.
    pub fn new(handle: Handle, encoder: E, decoders: R) -> Client<E, R> {
        ClientBuilder::default().build(handle, encoder, decoders)
    }

    /// The connection.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl<E, R, Req> tower_service::Service<Req> for Client<E, R>
where
    E: Encoder<Req> + Clone,
    E::Error: Into<Error>,
    R: ResponseDecoder<Req>,
    <R::Decoder as Decoder>::Item: Send + 'static,
    <R::Decoder as Decoder>::Error: Into<Error>,
{
    type Response = <R::Decoder as Decoder>::Item;
    type Error = Error;
    type Future = ResponseFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.permit.is_none() {
            match ready!(self.permits.poll_acquire(cx)) {
                Some(p) => self.permit = Some(p),
                None => return Poll::Ready(Err(Error::closed())),
            }
        }
        ready!(self.handle.poll_write_ready(cx))?;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(permit) = self.permit.take() else {
            return ResponseFuture {
                ticket: Ticket::ready(Err(Error::invalid_input("call without poll_ready"))),
                _connection: self.handle.clone(),
            };
        };
        let decoder = self.decoders.decoder_for(&req);
        // The slot is released when the response has been read, not when
        // the future is dropped: a dropped call still occupies the wire.
        let (pending, first) = PendingCall::new(&self.idle);
        if first {
            // The read timeout counts from the last input; after a pause
            // it would be used up before this call waited at all. It
            // bounds the wait for an answer from here.
            self.handle.timeout_reset(Timeout::Read);
        }
        let ticket = self
            .handle
            .call_with(self.encoder.clone(), req, decoder, move |item, q| {
                drop(permit);
                pending.answered(q);
                Ok(item)
            });
        ResponseFuture {
            ticket,
            _connection: self.handle.clone(),
        }
    }
}

/// A clone shares the connection and the in-flight bound; it has its own
/// `poll_ready` slot (like tower's `Buffer`), so clones can be moved into
/// separate tasks.
impl<E: Clone, R: Clone> Clone for Client<E, R> {
    fn clone(&self) -> Client<E, R> {
        Client {
            handle: self.handle.clone(),
            encoder: self.encoder.clone(),
            decoders: self.decoders.clone(),
            permits: self.permits.clone(),
            permit: None,
            idle: self.idle.clone(),
        }
    }
}

impl<E: fmt::Debug, R> fmt::Debug for Client<E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("handle", &self.handle)
            .field("encoder", &self.encoder)
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// The response to one [`Client`] call. Its in-flight slot is released
/// once the response has been read off the connection (even if this future
/// was dropped).
pub struct ResponseFuture<T> {
    ticket: Ticket<T>,
    /// Keeps the connection open for the response when the `Client` is
    /// dropped first (tower's `oneshot` does that).
    _connection: Handle,
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        Pin::new(&mut self.ticket).poll(cx)
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
