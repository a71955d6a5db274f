//! The one poll engine behind [`QueuedFramed`](crate::QueuedFramed) and
//! [`Handle`](crate::Handle).
//!
//! `Core` holds everything except the transport: read buffer, request queue,
//! write queue, flags, limits. The transport is passed into each `poll_*`
//! call, so the same core runs inline (`QueuedFramed`, `&mut self`) or behind
//! a mutex in a spawned driver task (`Handle`). See ARCHITECTURE.md for the
//! state diagram.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;
use tokio_util::codec::{Decoder, Encoder};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layer::timeout::{Timeout, Timers};
use crate::layer::watermark::Watermarks;
use crate::queued::request::{DecodeRequest, OnDrop, Request, Requests, Ticket, decode_step};
use crate::queued::stack::Transport;
use crate::queued::write::WriteQueue;

/// The write side's shutdown progress (WQ-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    /// Writing is open.
    Open,
    /// `push_shutdown` was called: flush what is queued, then half-close.
    Requested,
    /// The write side is closed.
    Done,
}

/// What a read of the transport produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filled {
    /// This many new bytes are in `rbuf`.
    Bytes(usize),
    /// End of input (now or earlier).
    Eof,
}

/// A user hook run inside the engine when a timer expires.
pub(crate) type TimeoutHook = Box<dyn FnMut(Timeout, &mut Requests<'_>) + Send>;
/// A user hook run inside the engine on the drain edge (OPT-5).
pub(crate) type DrainHook = Box<dyn FnMut(&mut Requests<'_>) + Send>;

/// With autocork on, output is written anyway once this much is queued, so
/// a long burst of input cannot grow the write queue without bound before
/// the task would wait. 64 KiB fills a loopback socket buffer's worth.
const CORK_BOUNDARY: usize = 64 * 1024;

/// The engine state, minus the transport.
pub(crate) struct Core {
    pub(crate) rbuf: BytesMut,
    pub(crate) queue: VecDeque<Box<dyn Request>>,
    pub(crate) wq: WriteQueue,
    pub(crate) eof: bool,
    /// The fatal error that destroyed the handle, if any (sticky).
    pub(crate) dead: Option<Error>,
    pub(crate) shutdown: Shutdown,
    pub(crate) cfg: Config,
    /// The current adaptive read size (OPT-10): doubles after a full read,
    /// up to `cfg.max_read_size`, never shrinks.
    read_size: usize,
    /// Wakes the driver task when a user handle queues work.
    driver: Option<Waker>,
    /// Resolved when the write queue is empty and flushed.
    flush_waiters: Vec<oneshot::Sender<Result<()>>>,
    /// Whether the transport needs a `poll_flush` after writes.
    unflushed: bool,
    pub(crate) timers: Timers,
    pub(crate) marks: Watermarks,
    pub(crate) on_timeout: Option<TimeoutHook>,
    pub(crate) on_drain: Option<DrainHook>,
    /// A STARTTLS or stoptls in progress (TLS-1, TLS-2, TLS-6).
    #[cfg(feature = "tls")]
    tls_op: Option<TlsOp>,
    /// TLS is established (and not stopped).
    pub(crate) tls_active: bool,
}

/// A TLS switch in progress on a live connection.
#[cfg(feature = "tls")]
enum TlsOp {
    /// Write `plain` (output queued before `starttls`) in plaintext, then hand
    /// the read buffer to TLS as the start of the ciphertext.
    Start {
        mode: crate::tls::TlsMode,
        plain: BytesMut,
        done: oneshot::Sender<Result<()>>,
    },
    /// The handshake is running.
    Handshake { done: oneshot::Sender<Result<()>> },
    /// Write the `over_tls` bytes at the front of the queue (those queued
    /// before `stoptls`) over TLS, then send close_notify. Bytes queued
    /// after the request stay queued and go out in plaintext.
    Stop {
        over_tls: usize,
        done: oneshot::Sender<Result<()>>,
    },
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("buffered", &self.rbuf.len())
            .field("queued_reads", &self.queue.len())
            .field("queued_write_bytes", &self.wq.len())
            .field("eof", &self.eof)
            .field("dead", &self.dead)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn new(cfg: Config) -> Core {
        Core {
            rbuf: BytesMut::new(),
            queue: VecDeque::new(),
            wq: WriteQueue::default(),
            eof: false,
            dead: None,
            shutdown: Shutdown::Open,
            read_size: cfg.read_size,
            driver: None,
            flush_waiters: Vec::new(),
            unflushed: false,
            timers: Timers::new(cfg.timeout, cfg.rtimeout, cfg.wtimeout),
            marks: Watermarks::new(cfg.high_water, cfg.low_water),
            on_timeout: None,
            on_drain: None,
            #[cfg(feature = "tls")]
            tls_op: None,
            tls_active: false,
            cfg,
        }
    }

    // ----- destruction ------------------------------------------------------

    /// Destroys the handle with a fatal error (ERR-2, LC-5): every queued
    /// request and flush waiter fails with it; buffers stay for `into_parts`.
    pub(crate) fn die(&mut self, err: Error) {
        if self.dead.is_some() {
            return;
        }
        tracing::debug!(error = %err, buffered = self.rbuf.len(), unwritten = self.wq.len(), "handle destroyed");
        self.dead = Some(err.clone());
        for req in self.queue.drain(..) {
            req.fail(err.clone());
        }
        for w in self.flush_waiters.drain(..) {
            let _ = w.send(Err(err.clone()));
        }
        self.marks.wake_all();
        #[cfg(feature = "tls")]
        if let Some(op) = self.tls_op.take() {
            let done = match op {
                TlsOp::Start {
                    mut plain, done, ..
                } => {
                    // Plaintext set aside for before the handshake was never
                    // (fully) written: it goes back in front of the queue, so
                    // `into_parts` still returns every unwritten byte.
                    plain.extend_from_slice(&self.wq.take_all());
                    self.wq.restore(plain);
                    done
                }
                TlsOp::Handshake { done } | TlsOp::Stop { done, .. } => done,
            };
            let _ = done.send(Err(err.clone()));
        }
        self.wake_driver();
    }

    pub(crate) fn check_alive(&self) -> Result<()> {
        match &self.dead {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    // ----- the driver's waker -------------------------------------------------

    pub(crate) fn register_driver(&mut self, waker: &Waker) {
        match &self.driver {
            Some(w) if w.will_wake(waker) => {}
            _ => self.driver = Some(waker.clone()),
        }
    }

    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = &self.driver {
            w.wake_by_ref();
        }
    }

    // ----- the read queue ---------------------------------------------------

    /// Queues a decoder with a completion function, at the back or (unshift)
    /// at the front. A dead handle resolves the ticket with its error at once.
    pub(crate) fn enqueue<D, F, R>(
        &mut self,
        decoder: D,
        then: F,
        on_drop: OnDrop,
        front: bool,
    ) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        if let Some(e) = &self.dead {
            return Ticket::ready(Err(e.clone()));
        }
        let (req, ticket) = DecodeRequest::new(decoder, then, on_drop);
        let req: Box<dyn Request> = Box::new(req);
        if front {
            self.queue.push_front(req);
        } else {
            self.queue.push_back(req);
        }
        self.wake_driver();
        ticket
    }

    /// Runs queued requests on the buffered bytes until the head needs more
    /// input or the queue is empty (AE's "drain", RQ-3). Requests unshifted
    /// by a completion run next, on the same bytes, before any new read.
    pub(crate) fn dispatch(&mut self) {
        if self.tls_switching() {
            // The buffered bytes belong to the TLS handshake now (TLS-2):
            // no request may take them as plaintext.
            return;
        }
        while self.dead.is_none() && !self.tls_switching() {
            let Some(head) = self.queue.front_mut() else {
                break;
            };
            if head.is_abandoned() {
                // Cancelled before completing: it consumed nothing.
                self.queue.pop_front();
                continue;
            }
            match head.poll_decode(&mut self.rbuf, self.eof) {
                Poll::Pending => break,
                Poll::Ready(Ok(())) => {
                    let Some(req) = self.queue.pop_front() else {
                        break;
                    };
                    tracing::trace!(buffered = self.rbuf.len(), "read request complete");
                    req.complete(&mut Requests { core: self });
                }
                Poll::Ready(Err(e)) => {
                    let Some(req) = self.queue.pop_front() else {
                        break;
                    };
                    if e.is_fatal() {
                        req.fail(e.clone());
                        self.die(e);
                    } else {
                        tracing::debug!(error = %e, "read request failed");
                        req.fail(e);
                    }
                }
            }
        }
        self.check_rbuf_max();
    }

    /// OPT-8: unconsumed input over `rbuf_max` is fatal `ENOSPC`. Partial
    /// JSON, CBOR and regex state stays in `rbuf`, so it counts.
    fn check_rbuf_max(&mut self) {
        if let Some(max) = self.cfg.rbuf_max
            && self.rbuf.len() > max
            && self.dead.is_none()
        {
            self.die(Error::no_space("unconsumed input exceeds rbuf_max"));
        }
    }

    // ----- reading ----------------------------------------------------------

    /// Reads once from the transport into `rbuf`. When no input is ready,
    /// pending output is written first (the handle never waits for input
    /// with output queued) and the timers are checked: an expired timer
    /// with no hook is a non-fatal `ETIMEDOUT` for whoever waits to read.
    pub(crate) fn poll_fill<IO>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Filled>>
    where
        IO: Transport,
    {
        loop {
            self.check_alive()?;
            if self.poll_tls(io, cx)?.is_pending() {
                // A TLS switch is stalled on the peer: the timers still run
                // (as in the driver), so a silent peer cannot hold a waiting
                // read past its timeout.
                match self.poll_timers(cx) {
                    Poll::Ready(Some(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(None) => continue,
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.eof {
                return Poll::Ready(Ok(Filled::Eof));
            }
            if self.rbuf.capacity() - self.rbuf.len() < self.read_size {
                self.rbuf.reserve(self.read_size);
            }
            let want = self.read_size;
            match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => {
                    tracing::debug!(
                        buffered = self.rbuf.len(),
                        queued = self.queue.len(),
                        "end of input"
                    );
                    self.eof = true;
                    return Poll::Ready(Ok(Filled::Eof));
                }
                Poll::Ready(Ok(n)) => {
                    self.timers.on_read();
                    if n >= want && self.read_size < self.cfg.max_read_size {
                        self.read_size = (self.read_size * 2).min(self.cfg.max_read_size);
                    }
                    return Poll::Ready(Ok(Filled::Bytes(n)));
                }
                Poll::Ready(Err(e)) => {
                    let e = Error::transport(e);
                    self.die(e.clone());
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // An idle connection keeps no read buffer: give an empty
                    // one back while waiting (the next read allocates it
                    // again). A spawned server waiting for its next request
                    // then costs under 2 KiB beside its socket instead of
                    // `read_size` more (tests/load.rs measures it).
                    if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                        self.rbuf = BytesMut::new();
                    }
                }
            }
            if let Poll::Ready(Err(e)) = self.poll_write_out(io, cx) {
                return Poll::Ready(Err(e));
            }
            match self.poll_timers(cx) {
                Poll::Ready(Some(e)) => return Poll::Ready(Err(e)),
                // A hook handled it (and may have changed things): go again.
                Poll::Ready(None) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Checks the timers (TO-3). `Ready(Some(err))`: one expired and there is
    /// no hook, so the caller delivers the non-fatal `ETIMEDOUT` to the read
    /// waiting now. `Ready(None)`: the hook ran. `Pending`: nothing expired
    /// (the waker is registered for the next deadline).
    pub(crate) fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<Option<Error>> {
        let Poll::Ready(which) = self.timers.poll_expired(cx) else {
            return Poll::Pending;
        };
        tracing::debug!(timeout = %which, "timer expired");
        if let Some(mut hook) = self.on_timeout.take() {
            hook(which, &mut Requests { core: self });
            if self.on_timeout.is_none() {
                self.on_timeout = Some(hook);
            }
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Error::timed_out(match which {
            Timeout::Idle => "idle timeout",
            Timeout::Read => "read timeout",
            Timeout::Write => "write timeout",
        })))
    }

    /// TO-4: a setter checks the deadlines at once, without waiting for the
    /// next poll.
    pub(crate) fn set_timer(&mut self, which: Timeout, period: std::time::Duration) {
        self.timers.set(which, period);
        if let Some(t) = self.timers.expired() {
            if let Some(mut hook) = self.on_timeout.take() {
                hook(t, &mut Requests { core: self });
                if self.on_timeout.is_none() {
                    self.on_timeout = Some(hook);
                }
            } else {
                self.fail_head(Error::timed_out("timeout expired when set"));
            }
        }
        self.wake_driver();
    }

    /// Fails the head request with a non-fatal error (a timeout); its bytes
    /// stay buffered.
    pub(crate) fn fail_head(&mut self, e: Error) {
        if let Some(req) = self.queue.pop_front() {
            req.fail(e);
            return;
        }
        // No read waits, but a TLS switch may: its waiter gets the timeout
        // (non-fatal; the handshake goes on if the peer wakes up, and later
        // reads wait for it), so a bare `starttls().await` cannot hang.
        #[cfg(feature = "tls")]
        if let Some(op) = &mut self.tls_op {
            let (TlsOp::Start { done, .. } | TlsOp::Handshake { done } | TlsOp::Stop { done, .. }) =
                op;
            let (orphan, _) = oneshot::channel();
            let _ = std::mem::replace(done, orphan).send(Err(e));
            return;
        }
        tracing::debug!(error = %e, "timeout with no read waiting");
    }

    /// Drives the queue until it is empty (`Ready`) or waits for input.
    pub(crate) fn poll_queue<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Poll<Result<()>>
    where
        IO: Transport,
    {
        loop {
            self.dispatch();
            self.check_alive()?;
            if self.queue.is_empty() {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.poll_fill(io, cx)) {
                Ok(_) => {}
                Err(e) if !e.is_fatal() => self.fail_head(e),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Decodes one frame with `decoder` directly on the buffer (the queue
    /// must be empty), reading as needed. `at_eof_clean`: whether end of
    /// input with no frame is `Ok(None)` (a stream's end) instead of `EPIPE`.
    pub(crate) fn poll_decode_direct<IO, D>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        decoder: &mut D,
        at_eof_clean: bool,
    ) -> Poll<Result<Option<D::Item>>>
    where
        IO: Transport,
        D: Decoder,
        D::Error: Into<Error>,
    {
        if !self.queue.is_empty() {
            ready!(self.poll_queue(io, cx))?;
        }
        if !self.cfg.autocork && !self.wq.is_empty() {
            // Autocork off: output goes out whenever the handle runs.
            if let Poll::Ready(Err(e)) = self.poll_write_out(io, cx) {
                return Poll::Ready(Err(e));
            }
        }
        loop {
            if let Some(e) = &self.dead {
                return Poll::Ready(Err(e.clone()));
            }
            match decode_step(decoder, &mut self.rbuf, self.eof) {
                Ok(Some(frame)) => return Poll::Ready(Ok(Some(frame))),
                Ok(None) => {}
                Err(e) if at_eof_clean && self.is_clean_eof(&e) => {
                    return Poll::Ready(Ok(None));
                }
                Err(e) => {
                    if e.is_fatal() {
                        self.die(e.clone());
                    }
                    return Poll::Ready(Err(e));
                }
            }
            self.check_rbuf_max();
            ready!(self.poll_fill(io, cx))?;
        }
    }

    /// Whether `e`, from a decode step, only says the input ended between
    /// frames (EOF, nothing buffered): a clean end, not an error.
    fn is_clean_eof(&self, e: &Error) -> bool {
        self.eof && e.kind() == crate::ErrorKind::BrokenPipe && self.rbuf.is_empty()
    }

    /// Waits for one frame as [`poll_decode_direct`](Self::poll_decode_direct)
    /// (clean end of input = `Ok(0)`), then appends it and up to
    /// `limit - 1` more frames decodable from the bytes already buffered,
    /// without reading again. Frames appended before an error stay in `out`.
    pub(crate) fn poll_decode_many<IO, D>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        decoder: &mut D,
        out: &mut Vec<D::Item>,
        limit: usize,
    ) -> Poll<Result<usize>>
    where
        IO: Transport,
        D: Decoder,
        D::Error: Into<Error>,
    {
        if limit == 0 {
            return Poll::Ready(Ok(0));
        }
        match ready!(self.poll_decode_direct(io, cx, decoder, true))? {
            Some(frame) => out.push(frame),
            None => return Poll::Ready(Ok(0)),
        }
        let mut n = 1;
        while n < limit {
            let before = self.rbuf.len();
            match decode_step(decoder, &mut self.rbuf, self.eof) {
                Ok(Some(frame)) => {
                    out.push(frame);
                    n += 1;
                    // A frame of no input (a zero-length chunk) ends the
                    // batch: a decoder that never consumes cannot fill
                    // `out` without end.
                    if self.rbuf.len() == before {
                        break;
                    }
                }
                Ok(None) => break,
                // A clean end of input after the last whole frame: this
                // call's frames now, `Ok(0)` next time.
                Err(e) if self.is_clean_eof(&e) => {
                    break;
                }
                Err(e) => {
                    if e.is_fatal() {
                        self.die(e.clone());
                    }
                    return Poll::Ready(Err(e));
                }
            }
        }
        Poll::Ready(Ok(n))
    }

    // ----- writing ----------------------------------------------------------

    /// Encodes `item` onto the write queue. On an encoder error nothing is
    /// queued; over `wbuf_max` the item is not queued and the handle dies
    /// with `ENOSPC` (what was queued before stays reachable).
    pub(crate) fn push_encoded<E, I>(&mut self, mut encoder: E, item: I) -> Result<()>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
    {
        self.check_writable()?;
        let before = self.wq.tail_len();
        if let Err(e) = encoder.encode(item, self.wq.tail_mut()) {
            self.wq.rollback(before);
            return Err(e.into());
        }
        let added = self.wq.tail_len() - before;
        if self.over_wbuf_max(added) {
            self.wq.rollback(before);
            let e = Error::no_space("queued output exceeds wbuf_max");
            self.die(e.clone());
            return Err(e);
        }
        self.wq.commit(before);
        self.marks.pushed(self.wq.len());
        self.wake_driver();
        Ok(())
    }

    /// Queues raw bytes (zero-copy for large ones).
    pub(crate) fn push_bytes(&mut self, bytes: Bytes) -> Result<()> {
        self.check_writable()?;
        if self.over_wbuf_max(bytes.len()) {
            let e = Error::no_space("queued output exceeds wbuf_max");
            self.die(e.clone());
            return Err(e);
        }
        self.wq.push_bytes(bytes);
        self.marks.pushed(self.wq.len());
        self.wake_driver();
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        self.check_alive()?;
        if self.shutdown != Shutdown::Open {
            return Err(Error::invalid_input("write after push_shutdown"));
        }
        Ok(())
    }

    fn over_wbuf_max(&self, adding: usize) -> bool {
        self.cfg
            .wbuf_max
            .is_some_and(|max| self.wq.len() + adding > max)
    }

    /// WQ-7: flush what is queued, then half-close the write side.
    pub(crate) fn push_shutdown(&mut self) -> Result<()> {
        self.check_alive()?;
        if self.shutdown == Shutdown::Open {
            self.shutdown = Shutdown::Requested;
            self.wake_driver();
        }
        Ok(())
    }

    /// Writes until the queue is empty and flushed (and the write side shut
    /// down, if requested), or the transport pushes back.
    pub(crate) fn poll_write_out<IO>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>>
    where
        IO: Transport,
    {
        self.check_alive()?;
        ready!(self.poll_tls(io, cx))?;
        while !self.wq.is_empty() {
            match ready!(self.wq.poll_write(io, cx)) {
                Ok(0) => {
                    let e = Error::transport(std::io::ErrorKind::WriteZero.into());
                    self.die(e.clone());
                    return Poll::Ready(Err(e));
                }
                Ok(_) => {
                    self.unflushed = true;
                    self.timers.on_write();
                    if self.marks.written(self.wq.len()) {
                        self.run_drain_hook();
                    }
                }
                Err(e) => {
                    let e = Error::transport(e);
                    self.die(e.clone());
                    return Poll::Ready(Err(e));
                }
            }
        }
        if self.unflushed {
            if let Err(e) = ready!(Pin::new(&mut *io).poll_flush(cx)) {
                let e = Error::transport(e);
                self.die(e.clone());
                return Poll::Ready(Err(e));
            }
            self.unflushed = false;
        }
        if self.shutdown == Shutdown::Requested {
            if let Err(e) = ready!(Pin::new(&mut *io).poll_shutdown(cx)) {
                let e = Error::transport(e);
                self.die(e.clone());
                return Poll::Ready(Err(e));
            }
            tracing::debug!("write side shut down");
            self.shutdown = Shutdown::Done;
        }
        for w in self.flush_waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
        Poll::Ready(Ok(()))
    }

    /// Changes the write watermarks at runtime and re-checks the queue
    /// against them (a producer may be released, a drain edge may fire).
    pub(crate) fn set_watermarks(&mut self, high: usize, low: usize) {
        self.marks.high = high;
        self.marks.low = low.min(high);
        let len = self.wq.len();
        self.marks.pushed(len);
        if self.marks.written(len) {
            self.run_drain_hook();
        }
    }

    /// The drain edge (OPT-5): run the user's hook, never re-entrantly.
    fn run_drain_hook(&mut self) {
        if let Some(mut hook) = self.on_drain.take() {
            hook(&mut Requests { core: self });
            if self.on_drain.is_none() {
                self.on_drain = Some(hook);
            }
        }
    }

    /// A future-friendly flush for handles: resolved when the queue drains.
    pub(crate) fn flush_ticket(&mut self) -> oneshot::Receiver<Result<()>> {
        let (tx, rx) = oneshot::channel();
        match &self.dead {
            Some(e) => {
                let _ = tx.send(Err(e.clone()));
            }
            None => {
                self.flush_waiters.push(tx);
                self.wake_driver();
            }
        }
        rx
    }

    // ----- TLS on a live connection (TLS-1, TLS-2, TLS-6) ----------------------

    /// Whether a TLS switch is pending or running (reads and requests wait).
    fn tls_switching(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls_op.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// Queues STARTTLS: the output queued so far is set aside to go out in
    /// plaintext first; the handshake starts when the handle next runs.
    #[cfg(feature = "tls")]
    pub(crate) fn request_starttls(&mut self, mode: crate::tls::TlsMode) -> Ticket<()> {
        let (done, ticket) = Ticket::channel();
        if let Some(e) = &self.dead {
            let _ = done.send(Err(e.clone()));
        } else if self.tls_op.is_some() {
            let _ = done.send(Err(Error::invalid_input(
                "a TLS switch is already in progress",
            )));
        } else {
            let plain = self.wq.take_all();
            tracing::debug!(
                plaintext_first = plain.len(),
                buffered = self.rbuf.len(),
                "starttls requested"
            );
            self.tls_op = Some(TlsOp::Start { mode, plain, done });
            self.wake_driver();
        }
        ticket
    }

    /// Queues stoptls, after the output queued so far.
    #[cfg(feature = "tls")]
    pub(crate) fn request_stoptls(&mut self) -> Ticket<()> {
        let (done, ticket) = Ticket::channel();
        if let Some(e) = &self.dead {
            let _ = done.send(Err(e.clone()));
        } else if self.tls_op.is_some() {
            let _ = done.send(Err(Error::invalid_input(
                "a TLS switch is already in progress",
            )));
        } else {
            let over_tls = self.wq.len();
            self.tls_op = Some(TlsOp::Stop { over_tls, done });
            self.wake_driver();
        }
        ticket
    }

    /// Drives a pending TLS switch; `Ready(Ok)` when there is none. A failed
    /// handshake is fatal `EPROTO`: the handle never goes on unencrypted.
    #[cfg(feature = "tls")]
    pub(crate) fn poll_tls<IO: Transport>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        loop {
            let Some(op) = self.tls_op.take() else {
                return Poll::Ready(Ok(()));
            };
            match op {
                TlsOp::Start {
                    mode,
                    mut plain,
                    done,
                } => {
                    // Plaintext pushed before STARTTLS leaves first (TLS-2).
                    while !plain.is_empty() {
                        let err = match Pin::new(&mut *io).poll_write(cx, &plain) {
                            Poll::Ready(Ok(n)) if n > 0 => {
                                bytes::Buf::advance(&mut plain, n);
                                continue;
                            }
                            Poll::Ready(Ok(_)) => std::io::ErrorKind::WriteZero.into(),
                            Poll::Ready(Err(e)) => e,
                            Poll::Pending => {
                                self.tls_op = Some(TlsOp::Start { mode, plain, done });
                                return Poll::Pending;
                            }
                        };
                        // Put the switch back so die() returns the unwritten
                        // plaintext to the write queue (nothing lost).
                        self.tls_op = Some(TlsOp::Start { mode, plain, done });
                        let e = Error::transport(err);
                        self.die(e.clone());
                        return Poll::Ready(Err(e));
                    }
                    match Pin::new(&mut *io).poll_flush(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return self.tls_failed(done, e),
                        Poll::Pending => {
                            self.tls_op = Some(TlsOp::Start { mode, plain, done });
                            return Poll::Pending;
                        }
                    }
                    // Everything already read is the peer's handshake.
                    let replay = self.rbuf.split().freeze();
                    match io.start_tls(mode, replay) {
                        Ok(()) => self.tls_op = Some(TlsOp::Handshake { done }),
                        Err(e) => return Poll::Ready(self.finish_switch(done, Err(e), false)),
                    }
                }
                TlsOp::Handshake { done } => match io.poll_handshake(cx) {
                    Poll::Pending => {
                        self.tls_op = Some(TlsOp::Handshake { done });
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(())) => {
                        tracing::debug!("TLS established");
                        let _ = self.finish_switch(done, Ok(()), true);
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(self.finish_switch(done, Err(e), false));
                    }
                },
                TlsOp::Stop { mut over_tls, done } => {
                    // Output queued before stoptls goes out over TLS first;
                    // what was queued after it waits for plaintext.
                    while over_tls > 0 {
                        match self.wq.poll_write_front(io, cx, over_tls) {
                            Poll::Ready(Ok(n)) if n > 0 => {
                                over_tls -= n;
                                self.timers.on_write();
                            }
                            Poll::Ready(Ok(_)) => {
                                return self.tls_failed(done, std::io::ErrorKind::WriteZero.into());
                            }
                            Poll::Ready(Err(e)) => return self.tls_failed(done, e),
                            Poll::Pending => {
                                self.tls_op = Some(TlsOp::Stop { over_tls, done });
                                return Poll::Pending;
                            }
                        }
                    }
                    match io.poll_stop_tls(cx) {
                        Poll::Pending => {
                            self.tls_op = Some(TlsOp::Stop { over_tls, done });
                            return Poll::Pending;
                        }
                        Poll::Ready(Ok(())) => {
                            tracing::debug!("close_notify sent; plaintext again");
                            let _ = self.finish_switch(done, Ok(()), false);
                        }
                        Poll::Ready(Err(e)) => {
                            return Poll::Ready(self.finish_switch(done, Err(e), false));
                        }
                    }
                }
            }
        }
    }

    /// Ends a TLS switch: records whether TLS is now on and tells the
    /// waiter. A fatal error destroys the handle (a failed handshake never
    /// goes on unencrypted); the error is returned for the caller to report.
    #[cfg(feature = "tls")]
    fn finish_switch(
        &mut self,
        done: oneshot::Sender<Result<()>>,
        outcome: Result<()>,
        tls_on: bool,
    ) -> Result<()> {
        match &outcome {
            Ok(()) => {
                self.tls_active = tls_on;
                self.wake_driver();
            }
            Err(e) if e.is_fatal() => self.die(e.clone()),
            Err(_) => {}
        }
        let _ = done.send(outcome.clone());
        outcome
    }

    /// A switch failed on the transport underneath.
    #[cfg(feature = "tls")]
    fn tls_failed(
        &mut self,
        done: oneshot::Sender<Result<()>>,
        e: std::io::Error,
    ) -> Poll<Result<()>> {
        Poll::Ready(self.finish_switch(done, Err(Error::transport(e)), false))
    }

    #[cfg(not(feature = "tls"))]
    pub(crate) fn poll_tls<IO: Transport>(
        &mut self,
        _io: &mut IO,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    // ----- the background driver ---------------------------------------------

    /// One turn of the spawned driver: dispatch, write, read while a request
    /// waits, timers. Returns `Ready` only once the handle is dead.
    ///
    /// Autocork off: output is written at the top of every turn, as soon as
    /// the driver runs after a push. On: it is held until the driver would
    /// wait, or until [`CORK_BOUNDARY`] bytes are queued.
    pub(crate) fn poll_drive<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Poll<()>
    where
        IO: Transport,
    {
        self.register_driver(cx.waker());
        loop {
            if self.poll_tls(io, cx).is_pending() {
                // A handshake in progress: nothing else moves until it is done.
                if let Poll::Ready(Some(e)) = self.poll_timers(cx) {
                    self.fail_head(e);
                }
                return Poll::Pending;
            }
            self.dispatch();
            if self.dead.is_some() {
                return Poll::Ready(());
            }
            if !self.cfg.autocork || self.wq.len() >= CORK_BOUNDARY {
                let _ = self.poll_write_out(io, cx);
                if self.dead.is_some() {
                    return Poll::Ready(());
                }
            }
            if self.queue.is_empty() {
                // RQ-5: plaintext is read only while a request waits. About
                // to wait: write what is queued, then the timers.
                let _ = self.poll_write_out(io, cx);
                if self.dead.is_some() {
                    return Poll::Ready(());
                }
                match self.poll_timers(cx) {
                    Poll::Ready(Some(e)) => self.fail_head(e),
                    Poll::Ready(None) => {}
                    Poll::Pending => return Poll::Pending,
                }
            }
            match self.poll_fill(io, cx) {
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) if !e.is_fatal() => self.fail_head(e),
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// LC-3: after the handle ended, keep writing what is queued (the
    /// caller bounds this by `linger`). Stops at the first transport error.
    pub(crate) fn poll_linger<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Poll<()>
    where
        IO: AsyncWrite + Unpin,
    {
        while !self.wq.is_empty() {
            match ready!(self.wq.poll_write(io, cx)) {
                Ok(n) if n > 0 => {}
                _ => return Poll::Ready(()),
            }
        }
        let _ = ready!(Pin::new(&mut *io).poll_flush(cx));
        let _ = ready!(Pin::new(&mut *io).poll_shutdown(cx));
        Poll::Ready(())
    }

    /// Everything not yet consumed or written, for `into_parts`.
    pub(crate) fn take_buffers(&mut self) -> (BytesMut, BytesMut) {
        (std::mem::take(&mut self.rbuf), self.wq.take_all())
    }
}
