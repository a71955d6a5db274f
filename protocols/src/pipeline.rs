//! What the three clients share: a reply read as a chain of read requests,
//! and a pipelined tower [`Service`](tower_service::Service) over one
//! connection.
//!
//! A reply that takes several reads (a header line, then a chunk whose
//! length the line gave, then another line, ...) is a *chain*: the first
//! read is queued at the back of the connection's queue when the request is
//! written; each later read is queued at the *front* by the completion of
//! the read before it (`Requests::unshift_read_with`), so it runs next, on
//! bytes already buffered, before any other request's reads. The state of
//! the half-read reply moves from one completion into the next; there is
//! no lock and no shared parser.
//!
//! The caller's side of a chain is a [`Step`]: either the finished reply, or
//! the ticket of the read that continues it. [`Reply`] follows the tickets.
//!
//! The first read is a *response read* (`Handle::push_response_with`), and
//! so is every read its chain unshifts: a reply whose caller gave up (its
//! [`Reply`] dropped, or told the connection's read timeout) is still read
//! to its end and dropped, so a later request never reads a piece of it.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use anyframe::codecs::ChunkCodec;
use anyframe::{Closed, Error, ErrorKind, Handle, Result, Ticket, Timeout};
use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::PollSemaphore;

/// One link of a reply read as a chain of read requests.
///
/// Follow a chain with [`Reply`]: the reads run ahead of whoever awaits
/// them, so a chain not followed grows by one ticket per piece read, and
/// dropping a long one as a value drops it link by link on the stack.
/// `Reply` takes it apart one link at a time.
pub enum Step<T> {
    /// The reply is complete.
    Done(T),
    /// The reply continues with this read (already queued at the front).
    More(Ticket<Step<T>>),
}

impl<T> fmt::Debug for Step<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Done(_) => f.write_str("Step::Done(..)"),
            Step::More(_) => f.write_str("Step::More(..)"),
        }
    }
}

/// A request/reply protocol whose replies are read as chains of read
/// requests on an anyframe connection.
///
/// # Examples
///
/// A protocol whose reply is a count line, then that many lines: the
/// count's completion queues the first line read at the front, each line's
/// completion the next.
///
/// ```
/// use anyframe::codecs::LineCodec;
/// use anyframe::{Handle, QueuedFramed, Requests, Result, Ticket};
/// use anyframe_protocols::pipeline::{Pipelined, Protocol, Slot, Step};
/// use bytes::{BufMut, Bytes, BytesMut};
/// use tokio::io::AsyncWriteExt;
///
/// struct Lines;
///
/// fn next_line(mut got: Vec<Bytes>, left: usize, slot: Slot, q: &mut Requests<'_>) -> Result<Step<Vec<Bytes>>> {
///     if left == 0 {
///         return Ok(Step::Done(got));
///     }
///     Ok(Step::More(q.unshift_read_with(LineCodec::new(), move |line, q| {
///         got.push(line.into_line());
///         next_line(got, left - 1, slot, q)
///     })))
/// }
///
/// impl Protocol for Lines {
///     type Request = &'static str;
///     type Reply = Vec<Bytes>;
///
///     fn encode(&self, req: &&'static str, dst: &mut BytesMut) -> Result<()> {
///         dst.put_slice(req.as_bytes());
///         dst.put_slice(b"\n");
///         Ok(())
///     }
///
///     fn read_reply(&self, _: &&'static str, handle: &Handle, slot: Slot) -> Ticket<Step<Vec<Bytes>>> {
///         handle.push_response_with(LineCodec::new(), move |count, q| {
///             let n: usize = std::str::from_utf8(count.line()).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
///             next_line(Vec::new(), n, slot, q)
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let (io, mut peer) = tokio::io::duplex(1024);
/// let (handle, _driver) = QueuedFramed::new(io).spawn();
/// let client = Pipelined::new(handle, Lines, 16);
/// let (a, b) = (client.send("first"), client.send("second"));
/// peer.write_all(b"2\nx\ny\n0\n").await?;
/// assert_eq!(a.await?, ["x", "y"]);
/// assert!(b.await?.is_empty());
/// # Ok(()) }
/// ```
pub trait Protocol: Send + Sync + 'static {
    /// What the caller sends.
    type Request;
    /// What the caller gets back.
    type Reply: Send + 'static;

    /// Appends the wire form of `req` to `dst`.
    ///
    /// # Errors
    ///
    /// A request that cannot be written (`EINVAL`); nothing is queued then.
    fn encode(&self, req: &Self::Request, dst: &mut BytesMut) -> Result<()>;

    /// Queues, at the back of `handle`'s queue, the first read of the reply
    /// to `req` with `Handle::push_response_with`; its completion queues
    /// the rest with `Requests::unshift_read_with`. `slot` travels with the
    /// reply's state and is dropped when the last read completes (or fails).
    ///
    /// It runs after the request is written: if it panics, [`Pipelined`]
    /// closes the connection (the request's answer would have no reader,
    /// and the next request would take it), so every later request fails
    /// with `Closed`, and the panic goes on to the caller.
    fn read_reply(
        &self,
        req: &Self::Request,
        handle: &Handle,
        slot: Slot,
    ) -> Ticket<Step<Self::Reply>>;

    /// Why no more requests may be written on this connection, if so (an
    /// HTTP request said `Connection: close`); `poll_ready` returns it.
    /// `None` by default.
    fn refuses_requests(&self) -> Option<Error> {
        None
    }
}

/// A [`Pipelined`] client's in-flight slot, held by a reply's read state:
/// the slot is free again as soon as the reply has been read off the
/// connection, whether or not anyone polls the [`Reply`] (a caller may
/// hold many unpolled replies while it waits for `poll_ready`).
#[derive(Debug, Default)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    /// Counts the reply as owed until it has been read (see [`Owed`]).
    _owed: Option<OwedReply>,
}

impl Slot {
    /// No slot (a caller that bounds its own concurrency).
    pub fn none() -> Slot {
        Slot::default()
    }
}

/// The replies of a [`Pipelined`] client and its clones not read yet,
/// counted so that a request sent with none owed restarts the read
/// timeout.
#[derive(Debug, Default)]
struct Owed {
    replies: AtomicUsize,
}

/// One reply counted in [`Owed`] until its last read completes (or fails).
#[derive(Debug)]
struct OwedReply(Arc<Owed>);

impl OwedReply {
    /// Counts a reply; true if no other was owed.
    fn new(owed: &Arc<Owed>) -> (OwedReply, bool) {
        let first = owed.replies.fetch_add(1, Ordering::AcqRel) == 0;
        (OwedReply(owed.clone()), first)
    }
}

impl Drop for OwedReply {
    fn drop(&mut self) {
        self.0.replies.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The reply to one request: follows the chain of tickets to the end.
///
/// Dropping it before the reply is complete does not desynchronise the
/// connection: its reads are response reads, so the rest of the reply is
/// still read and dropped (with no task, and on any thread).
pub struct Reply<T: Send + 'static> {
    state: ReplyState<T>,
    /// Keeps the connection open until the answer is in, when the client
    /// is dropped first (tower's `oneshot` does that).
    _connection: Option<Handle>,
}

enum ReplyState<T> {
    Waiting(Ticket<Step<T>>),
    Failed(Error),
    Finished,
}

impl<T: Send + 'static> Reply<T> {
    /// A reply that follows `ticket`.
    pub fn new(ticket: Ticket<Step<T>>) -> Reply<T> {
        Reply {
            state: ReplyState::Waiting(ticket),
            _connection: None,
        }
    }

    /// As [`new`](Self::new), holding `handle` (a connection's last handle
    /// dropped closes it) until the reply is dropped.
    pub fn keeping(ticket: Ticket<Step<T>>, handle: Handle) -> Reply<T> {
        Reply {
            state: ReplyState::Waiting(ticket),
            _connection: Some(handle),
        }
    }

    /// A reply that is already an error (the request was never written).
    pub fn failed(err: Error) -> Reply<T> {
        Reply {
            state: ReplyState::Failed(err),
            _connection: None,
        }
    }
}

impl<T: Send + 'static> Future for Reply<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        loop {
            let ticket = match &mut self.state {
                ReplyState::Waiting(ticket) => ticket,
                ReplyState::Failed(_) => {
                    let ReplyState::Failed(e) =
                        std::mem::replace(&mut self.state, ReplyState::Finished)
                    else {
                        unreachable!()
                    };
                    return Poll::Ready(Err(e));
                }
                ReplyState::Finished => {
                    return Poll::Ready(Err(Error::custom(
                        ErrorKind::InvalidInput,
                        false,
                        "reply polled after completion",
                    )));
                }
            };
            let step = ready!(Pin::new(ticket).poll(cx));
            let result = match step {
                Ok(Step::More(next)) => {
                    self.state = ReplyState::Waiting(next);
                    continue;
                }
                Ok(Step::Done(value)) => Ok(value),
                Err(e) => Err(e),
            };
            self.state = ReplyState::Finished;
            return Poll::Ready(result);
        }
    }
}

impl<T: Send + 'static> Drop for Reply<T> {
    /// Takes the chain of tickets apart one link at a time. A reply polled
    /// rarely lets the chain grow by a ticket per element read (each read's
    /// result holds the next read's ticket); dropped whole it would be
    /// dropped by recursion, one stack frame per link, enough to overflow
    /// a thread's stack for a large array.
    fn drop(&mut self) {
        let ReplyState::Waiting(mut ticket) =
            std::mem::replace(&mut self.state, ReplyState::Finished)
        else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        // Unconstrained: a task out of its cooperative budget would see
        // every ticket as pending and drop the rest of the chain whole.
        while let Poll::Ready(Ok(Step::More(next))) =
            Pin::new(&mut tokio::task::unconstrained(&mut ticket)).poll(&mut cx)
        {
            // `ticket` is empty now: replacing it drops one link only.
            ticket = next;
        }
    }
}

impl<T: Send + 'static> fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("complete", &matches!(self.state, ReplyState::Finished))
            .finish()
    }
}

/// Default bound on requests in flight per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 128;

/// A pipelined client over one spawned connection, for any [`Protocol`]:
/// `call` writes the request and queues the first read of its reply under
/// one lock, so clones used from many tasks keep requests and replies in
/// the same order.
///
/// `poll_ready` waits while `max_in_flight` replies are outstanding; every
/// half `max_in_flight` calls made while the connection's driver had no
/// turn, it yields once, so the first half of the window is written while
/// the caller goes on with the second (`Handle::poll_yield_to_driver`).
///
/// A read timeout set on the connection (`rtimeout`, which counts from
/// the last input and runs while the client idles) restarts when a
/// request is sent with no other reply owed, as for anyframe's
/// `service::Client`: it bounds how long replies wait, and a pause
/// between requests does not use it up.
///
/// While no reply is owed, nothing is read from the connection (anyframe's
/// backpressure rule, [RQ-5](anyframe::semantics#RQ-5)): a server's close is
/// noticed by the next request, which fails with it, and bytes a server
/// sends unasked (an HTTP server's `408 Request Timeout` just before it
/// closes an idle connection) are read as the next request's reply. A
/// client that idles on connections whose servers do that (hyper's client
/// reads while idle to tell them apart) should retire a connection idle
/// longer than the server's keep-alive timeout.
pub struct Pipelined<P> {
    shared: Arc<Shared<P>>,
    permits: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
    /// While waiting for a slot: the connection's end, which gives no slot
    /// back to a clone that holds one without calling.
    closed: Option<Closed>,
}

struct Shared<P> {
    handle: Handle,
    protocol: P,
    /// Held across "write the request, queue its reply's read" (two calls
    /// on the handle), so no other clone can slip in between.
    order: Mutex<()>,
    /// Calls after which `poll_ready` yields to the driver once: half the
    /// in-flight bound, so the window goes out in two halves.
    batch: usize,
    /// Replies not read yet.
    owed: Arc<Owed>,
}

impl<P: Protocol> Pipelined<P> {
    /// A client speaking `protocol` on `handle`, with at most
    /// `max_in_flight` replies outstanding (at least 1; `usize::MAX` is
    /// taken as tokio's `Semaphore::MAX_PERMITS`, no bound in practice).
    ///
    /// A request longer than the connection's `wbuf_max` can never be
    /// queued: the connection refuses it before anything is written, with
    /// a non-fatal `EINVAL`.
    pub fn new(handle: Handle, protocol: P, max_in_flight: usize) -> Pipelined<P> {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Pipelined {
            shared: Arc::new(Shared {
                handle,
                protocol,
                order: Mutex::new(()),
                batch: (max_in_flight / 2).max(1),
                owed: Arc::default(),
            }),
            permits: PollSemaphore::new(Arc::new(Semaphore::new(max_in_flight))),
            permit: None,
            closed: None,
        }
    }

    /// The connection.
    pub fn handle(&self) -> &Handle {
        &self.shared.handle
    }

    /// The protocol's settings.
    pub fn protocol(&self) -> &P {
        &self.shared.protocol
    }

    /// Writes `req` and queues its reply's reads, with no in-flight slot
    /// (for callers that bound their own concurrency).
    pub fn send(&self, req: P::Request) -> Reply<P::Reply> {
        self.send_with(req, None)
    }

    fn send_with(&self, req: P::Request, permit: Option<OwnedSemaphorePermit>) -> Reply<P::Reply> {
        let shared = &*self.shared;
        let _order = shared.order.lock().unwrap_or_else(PoisonError::into_inner);
        let (owed, first) = OwedReply::new(&shared.owed);
        if first {
            // The read timeout counts from the last input, and runs while
            // no reply is owed: after a pause it would be used up before
            // this reply was waited for at all. It bounds the wait for a
            // reply from here.
            shared.handle.timeout_reset(Timeout::Read);
        }
        let slot = Slot {
            _permit: permit,
            _owed: Some(owed),
        };
        // Encoded straight into the connection's write queue; a request the
        // protocol refuses leaves nothing behind.
        if let Err(e) = shared
            .handle
            .push_write(WireEncoder(&shared.protocol), &req)
        {
            return Reply::failed(e);
        }
        // The request is written: a `read_reply` that panics leaves its
        // answer without a reader, and the next request would take it.
        // The connection is closed before the panic goes on.
        let ticket = std::panic::catch_unwind(AssertUnwindSafe(|| {
            shared.protocol.read_reply(&req, &shared.handle, slot)
        }))
        .unwrap_or_else(|panic| {
            shared.handle.destroy();
            std::panic::resume_unwind(panic)
        });
        Reply::keeping(ticket, shared.handle.clone())
    }
}

impl<P> Clone for Pipelined<P> {
    fn clone(&self) -> Pipelined<P> {
        Pipelined {
            shared: self.shared.clone(),
            permits: self.permits.clone(),
            permit: None,
            closed: None,
        }
    }
}

impl<P: Protocol> tower_service::Service<P::Request> for Pipelined<P> {
    type Response = P::Reply;
    type Error = Error;
    type Future = Reply<P::Reply>;

    /// Ready when a reply slot is free and the connection's write queue is
    /// below its high watermark ([OPT-5](anyframe::semantics#OPT-5)): a burst of large requests waits
    /// for the queue to drain instead of filling it past `wbuf_max`. The
    /// cap is the connection's, shared by every clone: clones that pass
    /// `poll_ready` at the same moment on several threads can together
    /// queue past it, which closes the connection with a fatal `ENOSPC`.
    /// Size `wbuf_max` for `max_in_flight` of the largest request, or send
    /// large requests through one clone (behind tower's `Buffer`). As for
    /// anyframe's `service::Client`: a read timeout while it waits for
    /// room, with replies owed that nobody waits for, closes the
    /// connection ([TO-6](anyframe::semantics#TO-6)) and comes here as that fatal error; with no reply
    /// owed, it comes non-fatal ([TO-3](anyframe::semantics#TO-3)), and a call again goes on waiting.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Half a window queued since the driver last ran: let it write
        // that half while the caller goes on (see
        // `Handle::poll_yield_to_driver`).
        ready!(
            self.shared
                .handle
                .poll_yield_to_driver(cx, self.shared.batch)
        );
        // Room (or the output shut, or the connection closed) first: a
        // client whose output is shut says so even with every slot taken.
        ready!(self.shared.handle.poll_write_ready(cx))?;
        if self.permit.is_none() {
            match self.permits.poll_acquire(cx) {
                Poll::Ready(Some(p)) => {
                    self.permit = Some(p);
                    self.closed = None;
                }
                Poll::Ready(None) => {
                    return Poll::Ready(Err(Error::custom(
                        ErrorKind::Closed,
                        true,
                        "client closed",
                    )));
                }
                Poll::Pending => {
                    let handle = &self.shared.handle;
                    let closed = self.closed.get_or_insert_with(|| handle.closed());
                    return Pin::new(closed).poll(cx).map(Err);
                }
            }
        }
        // Room was checked above, in this same poll.
        if let Some(e) = self.shared.protocol.refuses_requests() {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: P::Request) -> Reply<P::Reply> {
        match self.permit.take() {
            Some(permit) => self.send_with(req, Some(permit)),
            None => Reply::failed(Error::custom(
                ErrorKind::InvalidInput,
                false,
                "call without poll_ready",
            )),
        }
    }
}

impl<P> fmt::Debug for Pipelined<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipelined")
            .field("handle", &self.shared.handle)
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// A [`Protocol`]'s request writer as a tokio-util `Encoder`.
struct WireEncoder<'a, P>(&'a P);

impl<P: Protocol> Encoder<&P::Request> for WireEncoder<'_, P> {
    type Error = Error;

    fn encode(&mut self, req: &P::Request, dst: &mut BytesMut) -> Result<()> {
        self.0.encode(req, dst)
    }
}

/// Pieces of a reply shorter than this are copied out of the read buffer
/// they came in; longer ones are kept as they came, without a copy.
///
/// A piece split off the read buffer keeps that whole buffer alive, and a
/// reply whose small pieces came in separate reads (a slow or hostile
/// server writes them one at a time) would keep one read buffer, up to
/// 128 KiB, per piece. A kept piece holds the read buffer it came in, and
/// a read buffer holds a piece it was grown for plus at most one read
/// more: a reply holds at most about three times its size.
pub(crate) const OWN_BELOW: usize = 64 * 1024;

/// `piece` in an allocation of its own if it is shorter than
/// [`OWN_BELOW`], else as it is (see there).
pub(crate) fn own_small(piece: Bytes) -> Bytes {
    if piece.len() < OWN_BELOW {
        Bytes::copy_from_slice(&piece)
    } else {
        piece
    }
}

/// A fatal "the peer broke the protocol" error: the connection is closed,
/// every outstanding request fails with it.
pub fn protocol_error(what: &'static str) -> Error {
    Error::custom(ErrorKind::BadMessage, true, what)
}

/// Exactly `len` bytes followed by `\r\n`, as one [`ChunkCodec`] read of
/// `len + 2` bytes; the frame is the `len` bytes, split off the read
/// buffer without a copy. Anything but `\r\n` after them is a fatal
/// `EBADMSG`. (A Redis bulk string, a memcached value, an HTTP chunk.)
#[derive(Debug)]
pub struct CrlfChunk {
    chunk: ChunkCodec,
}

impl CrlfChunk {
    /// A read of `len` bytes and the `\r\n` after them.
    pub fn new(len: usize) -> CrlfChunk {
        CrlfChunk {
            chunk: ChunkCodec::new(len.saturating_add(2)),
        }
    }
}

impl Decoder for CrlfChunk {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>> {
        match self.chunk.decode(buf)? {
            Some(chunk) if chunk.ends_with(b"\r\n") => Ok(Some(chunk.slice(..chunk.len() - 2))),
            Some(_) => Err(protocol_error("data not followed by \\r\\n")),
            None => Ok(None),
        }
    }
}
