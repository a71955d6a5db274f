//! The pipelined client.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::PollSemaphore;

use crate::error::{Error, Result};
use crate::queued::{Closed, Handle, Ticket, Timeout};

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
/// Answers are matched to calls by their order alone, as in any
/// pipelined client without request ids: input that arrives while no call
/// waits (a peer that answers a call twice, or speaks unasked) is taken by
/// the next call as its answer. A protocol that must detect that carries
/// ids in its requests and answers, and checks them in the response
/// decoder (a mismatch, returned as a fatal error, closes the
/// connection).
///
/// A read timeout set on the connection (`rtimeout`, which counts
/// from the last input) restarts when a call is made with no other call
/// pending, so it bounds how long calls wait for their answers, and a
/// pause between calls does not use it up.
///
/// `poll_ready` is ready while fewer than `max_in_flight` calls are pending
/// and the connection's write queue is below its high watermark; once the
/// connection's output is shut (`Handle::push_shutdown`) it returns a
/// non-fatal `EINVAL` for good, as no call can be written any more. A fatal
/// connection error fails every pending call with it. While `poll_ready`
/// waits for room, it is a write-side waiter: a read timeout that no call
/// is waiting to hear, with answers still owed to calls given up (the
/// peer sent nothing for a whole period, whether or not it was still
/// taking requests), closes the connection
/// ([TO-6](crate::semantics#TO-6)); `poll_ready` returns that fatal error.
/// With no answer owed (the output it waits on is not the client's: it
/// was queued through the `Handle` directly), the read timeout comes as a
/// non-fatal `ETIMEDOUT` ([TO-3](crate::semantics#TO-3)).
/// Every half `max_in_flight` calls made while the connection's driver had
/// no turn, `poll_ready` yields once (`Pending`, woken at once), so the
/// driver writes that half while the caller goes on: the peer works on
/// one half of the window while the caller handles the other, where on a
/// runtime with one thread they would take turns
/// ([`Handle::poll_yield_to_driver`]).
/// A request longer than the connection's whole `wbuf_max` can never be
/// queued: its call fails with a non-fatal `EINVAL` before anything is
/// written ([OPT-9](crate::semantics#OPT-9)).
/// The write queue's cap (`wbuf_max`) is the connection's, shared by every
/// clone: waiting for room keeps one client under it while its requests
/// are smaller than half the cap, but clones that pass `poll_ready` at
/// the same moment on several threads can together queue past it, which
/// closes the connection with a fatal `ENOSPC`. Size `wbuf_max` for
/// `max_in_flight` of the largest request, or send large requests through
/// one clone (behind tower's `Buffer`).
/// tower's middleware (`Buffer`, balancers) treats any error from
/// `poll_ready` as the end of the service; to go on waiting after a
/// non-fatal one, call `poll_ready` again. Dropping a response
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
    /// While waiting for a slot: the connection's end, which gives no slot
    /// back to a clone that holds one without calling.
    closed: Option<Closed>,
    idle: Arc<Idle>,
    /// Calls after which `poll_ready` yields to the driver once: half the
    /// in-flight bound, so the window goes out in two halves.
    batch: usize,
}

/// The calls of a client and its clones whose answer has not been read,
/// counted so that a call made with none pending restarts the read timeout.
#[derive(Default)]
struct Idle {
    pending: AtomicUsize,
}

/// One call counted in [`Idle::pending`] until its answer is read, or
/// until the call fails without one (its completion is then dropped).
struct PendingCall(Arc<Idle>);

impl PendingCall {
    /// Counts a call; true if no other call was pending.
    fn new(idle: &Arc<Idle>) -> (PendingCall, bool) {
        let first = idle.pending.fetch_add(1, Ordering::AcqRel) == 0;
        (PendingCall(idle.clone()), first)
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Options for a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    max_in_flight: usize,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

impl ClientBuilder {
    /// How many calls may wait for their response at once (default
    /// [`DEFAULT_MAX_IN_FLIGHT`]; at least 1, and at most tokio's
    /// `Semaphore::MAX_PERMITS`, so `usize::MAX` means no bound in
    /// practice).
    pub fn max_in_flight(&mut self, n: usize) -> &mut Self {
        self.max_in_flight = n.clamp(1, Semaphore::MAX_PERMITS);
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
            closed: None,
            idle: Arc::default(),
            batch: (self.max_in_flight / 2).max(1),
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
        // Half a window queued since the driver last ran: let it write
        // that half while the caller goes on (see
        // `Handle::poll_yield_to_driver`).
        ready!(self.handle.poll_yield_to_driver(cx, self.batch));
        // Room (or the output shut, or the connection closed) first: a
        // client whose output is shut says so even with every slot taken.
        ready!(self.handle.poll_write_ready(cx))?;
        if self.permit.is_none() {
            match self.permits.poll_acquire(cx) {
                Poll::Ready(Some(p)) => {
                    self.permit = Some(p);
                    self.closed = None;
                }
                Poll::Ready(None) => return Poll::Ready(Err(Error::closed())),
                Poll::Pending => {
                    let handle = &self.handle;
                    let closed = self.closed.get_or_insert_with(|| handle.closed());
                    return Pin::new(closed).poll(cx).map(Err);
                }
            }
        }
        // Room was checked above, in this same poll.
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
            .call_with(self.encoder.clone(), req, decoder, move |item, _| {
                drop((permit, pending));
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
            closed: None,
            idle: self.idle.clone(),
            batch: self.batch,
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
