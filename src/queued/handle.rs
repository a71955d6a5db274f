//! The shared handle: the connection lives in a spawned driver task (the
//! AnyEvent model, where the handle lives in the event loop) and any number
//! of cloneable [`Handle`]s queue reads and writes to it.

use std::cell::RefCell;
use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::resume_unwind;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, Result};
use crate::queued::Parts;
use crate::queued::core::Core;
use crate::queued::request::{OnDrop, Requests, Ticket};
use crate::queued::timer::Timeout;
use crate::queued::transport::TransportIo;

struct Shared {
    core: Mutex<Core>,
    /// Live user handles; the driver winds down when it reaches zero.
    users: AtomicUsize,
    /// `detach` was called: hand the parts back.
    detach: AtomicBool,
}

thread_local! {
    /// The connections whose engine this thread is running right now (a
    /// completion or hook may be on the stack), by address.
    static RUNNING: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// The core, locked; while it is held, the thread is "inside the engine"
/// of this connection.
struct Locked<'a> {
    guard: MutexGuard<'a, Core>,
    key: usize,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        RUNNING.with(|r| {
            let mut r = r.borrow_mut();
            if let Some(i) = r.iter().rposition(|&k| k == self.key) {
                r.swap_remove(i);
            }
        });
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.guard
    }
}

impl Shared {
    fn key(&self) -> usize {
        self as *const Shared as usize
    }

    /// Whether this thread is running this connection's engine now.
    fn reentered(&self) -> bool {
        let key = self.key();
        RUNNING.with(|r| r.borrow().contains(&key))
    }

    fn lock(&self) -> Locked<'_> {
        let key = self.key();
        if self.reentered() {
            // Locking again would deadlock: the engine of this connection
            // is running the caller (a completion or a hook).
            panic!(
                "anyframe: a Handle was used from inside a completion or hook of its own \
                 connection; use the `Requests` argument the callback was given instead"
            );
        }
        // A panic while the lock was held already closed the core (every
        // user callback runs under `Core::guard`), so the state is
        // consistent: ignore the poisoning.
        let guard = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        RUNNING.with(|r| r.borrow_mut().push(key));
        Locked { guard, key }
    }
}

/// A cloneable, `Send` handle to a connection driven by a spawned task.
///
/// Made by [`QueuedFramed::spawn`](crate::QueuedFramed::spawn). Every method
/// queues work and returns at once; tickets and futures resolve as the
/// driver runs. Dropping the last handle closes the connection after the
/// queued output is written (linger, LC-3).
///
/// # Examples
///
/// ```
/// use anyframe::QueuedFramed;
/// use anyframe::codecs::{ChunkCodec, LineCodec};
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let (io, mut peer) = tokio::io::duplex(1024);
/// let (handle, _driver) = QueuedFramed::new(io).spawn();
///
/// // Queue two different reads before any byte has arrived.
/// let line = handle.push_read(LineCodec::new());
/// let chunk = handle.push_read(ChunkCodec::new(3));
/// peer.write_all(b"hi\nxyz").await?;
/// assert_eq!(line.await?.line(), b"hi");
/// assert_eq!(&chunk.await?[..], b"xyz");
/// # Ok(()) }
/// ```
pub struct Handle {
    shared: Arc<Shared>,
}

/// The driver task of a spawned connection. Await it to get the [`Parts`]
/// back when the connection ends (fatal error, [`Handle::destroy`], every
/// handle dropped) or is detached ([`Handle::detach`]).
pub struct Driver<IO> {
    join: JoinHandle<Result<Parts<IO>>>,
}

pub(crate) fn spawn<IO>(core: Core, io: TransportIo<IO>) -> (Handle, Driver<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    spawn_connecting(core, async move { Ok(io) })
}

/// Spawns the driver around a transport that is still being set up (a
/// connect in progress, OPT-2): reads and writes queued meanwhile run once
/// it is up; the timers start then (TO-2). If setup fails, every queued
/// request fails with its error.
pub(crate) fn spawn_connecting<IO, F>(mut core: Core, setup: F) -> (Handle, Driver<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = Result<TransportIo<IO>>> + Send + 'static,
{
    core.pause_timers();
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        users: AtomicUsize::new(1),
        detach: AtomicBool::new(false),
    });
    let task_shared = shared.clone();
    let join = tokio::spawn(async move {
        match setup.await {
            Ok(io) => {
                task_shared.lock().start_timers();
                Ok(drive(task_shared, io).await)
            }
            Err(e) => {
                task_shared.lock().close(e.clone());
                Err(e)
            }
        }
    });
    (Handle { shared }, Driver { join })
}

async fn drive<IO>(shared: Arc<Shared>, mut io: TransportIo<IO>) -> Parts<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tracing::debug!("driver started");
    let mut panicked = None;
    poll_fn(|cx| {
        let mut core = shared.lock();
        if shared.detach.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        match core.guard(|core| core.poll_drive(&mut io, cx)) {
            Ok(Poll::Ready(())) => return Poll::Ready(()),
            Ok(Poll::Pending) => {}
            Err(payload) => {
                // A user callback panicked: the core is closed (everyone
                // waiting has the error); the panic goes to the `Driver`.
                panicked = Some(payload);
                return Poll::Ready(());
            }
        }
        if shared.users.load(Ordering::Acquire) == 0 {
            // Nobody can queue reads any more; fail what is queued.
            core.close(Error::closed());
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
    if let Some(payload) = panicked {
        resume_unwind(payload);
    }

    // Linger: a connection closed by `destroy`, by its last handle going
    // away or by an input-side error keeps writing what was queued for up
    // to `linger` (LC-3). Not after an error toward the peer (its output is
    // dropped at once), and not when the user detaches to take the bytes
    // back.
    let detached = shared.detach.load(Ordering::Acquire);
    let (linger, clean) = {
        let core = shared.lock();
        (core.linger(), core.may_linger())
    };
    if !detached && clean && !linger.is_zero() {
        let flushed =
            tokio::time::timeout(linger, poll_fn(|cx| shared.lock().poll_linger(&mut io, cx)))
                .await;
        if flushed.is_err() {
            tracing::debug!(?linger, "linger expired with output unsent");
        }
    }
    let (mut read_buf, write_buf) = shared.lock().take_buffers();
    let (io, unread) = crate::queued::transport::unwrap(io);
    read_buf.extend_from_slice(&unread);
    tracing::debug!(
        detached,
        unread = read_buf.len(),
        unwritten = write_buf.len(),
        "driver finished"
    );
    Parts {
        io,
        codec: (),
        read_buf,
        write_buf,
    }
}

impl Handle {
    fn lock(&self) -> Locked<'_> {
        self.shared.lock()
    }

    // ----- queued reads ---------------------------------------------------------

    /// Queues a read with `decoder` at the back of the queue. The [`Ticket`]
    /// resolves once every request before it has completed. Dropping the
    /// ticket cancels the read (it consumes nothing).
    pub fn push_read<D>(&self, decoder: D) -> Ticket<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.lock()
            .enqueue(decoder, |f, _| Ok(f), OnDrop::Cancel, false)
    }

    /// Queues a read at the front: it runs before every request already
    /// queued, except a read that has already looked at part of its frame
    /// (its decoder may keep a scan position into those bytes): then it
    /// runs right after that one.
    pub fn unshift_read<D>(&self, decoder: D) -> Ticket<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.lock()
            .enqueue(decoder, |f, _| Ok(f), OnDrop::Cancel, true)
    }

    /// Queues a read whose completion `then` runs inside the engine as soon
    /// as the frame is decoded, before the next request sees the buffer (see
    /// [`QueuedFramed::push_read_with`](crate::QueuedFramed::push_read_with)).
    /// Inside it, use the [`Requests`] argument: using this `Handle` there
    /// panics (it would deadlock).
    pub fn push_read_with<D, F, R>(&self, decoder: D, then: F) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.lock().enqueue(decoder, then, OnDrop::Cancel, false)
    }

    /// [`push_read_with`](Self::push_read_with) at the front of the queue.
    pub fn unshift_read_with<D, F, R>(&self, decoder: D, then: F) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.lock().enqueue(decoder, then, OnDrop::Cancel, true)
    }

    /// Reads one frame with `decoder` after every queued request.
    ///
    /// # Errors
    ///
    /// See [`Ticket`].
    pub async fn read<D>(&self, decoder: D) -> Result<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.push_read(decoder).await
    }

    /// Reads every frame `decoder` can take from the buffered input, up to
    /// `limit`, after every queued request: waits for one frame, then takes
    /// the frames already buffered without reading again (see
    /// [`QueuedFramed::read_many`](crate::QueuedFramed::read_many)). The
    /// decoder comes back with the frames, so its state carries over to the
    /// next call. `Ok` with no frames: the input ended cleanly.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read). Frames decoded before an error are lost only
    /// if the error is fatal; a non-fatal one is returned after them by the
    /// next call.
    pub async fn read_many<D>(&self, decoder: D, limit: usize) -> Result<(D, Vec<D::Item>)>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.push_read_many(decoder, limit).await
    }

    /// [`read_many`](Self::read_many) as a queued request.
    pub(crate) fn push_read_many<D>(&self, decoder: D, limit: usize) -> Ticket<(D, Vec<D::Item>)>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        let batch = crate::queued::request::Batch::new(decoder, limit);
        self.lock()
            .enqueue_batch(batch, |(decoder, frames, error), q| {
                if let Some(e) = error {
                    // Frames came before it: they go now, the error next.
                    q.defer_error(e);
                }
                Ok((decoder, frames))
            })
    }

    /// Writes a request and queues the read of its response, under one lock,
    /// so concurrent callers cannot come between the two: the building block
    /// of a pipelined client. The response is read (and dropped) even if
    /// the ticket is dropped or times out, so the next caller always gets
    /// its own answer.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe::QueuedFramed;
    /// use anyframe::codecs::LineCodec;
    /// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
    /// let (io, peer) = tokio::io::duplex(1024);
    /// tokio::spawn(async move {
    ///     // An echo server.
    ///     let (rd, mut wr) = tokio::io::split(peer);
    ///     let mut lines = BufReader::new(rd).lines();
    ///     while let Ok(Some(l)) = lines.next_line().await {
    ///         wr.write_all(format!("{l}\n").as_bytes()).await.unwrap();
    ///     }
    /// });
    /// let (handle, _driver) = QueuedFramed::new(io).spawn();
    /// let first = handle.call(LineCodec::new(), "one", LineCodec::new());
    /// drop(handle.call(LineCodec::new(), "dropped", LineCodec::new()));
    /// let third = handle.call(LineCodec::new(), "three", LineCodec::new());
    /// assert_eq!(first.await?.line(), b"one");
    /// assert_eq!(third.await?.line(), b"three");
    /// # Ok(()) }
    /// ```
    pub fn call<E, I, D>(&self, encoder: E, item: I, decoder: D) -> Ticket<D::Item>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.call_with(encoder, item, decoder, |frame, _| Ok(frame))
    }

    /// [`call`](Self::call) with a completion that runs inside the engine
    /// on the response (see [`push_read_with`](Self::push_read_with)).
    pub fn call_with<E, I, D, F, R>(&self, encoder: E, item: I, decoder: D, then: F) -> Ticket<R>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let mut core = self.lock();
        if let Err(e) = core.push_encoded(encoder, item) {
            return Ticket::ready(Err(e));
        }
        core.enqueue(decoder, then, OnDrop::Consume, false)
    }

    // ----- writes -----------------------------------------------------------------

    /// Encodes `item` onto the write queue; the driver writes it.
    ///
    /// # Errors
    ///
    /// As [`QueuedFramed::push_write`](crate::QueuedFramed::push_write). An
    /// encoder that panics closes the connection and the panic goes on here.
    pub fn push_write<E, I>(&self, encoder: E, item: I) -> Result<()>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
    {
        self.lock().push_encoded(encoder, item)
    }

    /// Queues raw bytes.
    ///
    /// # Errors
    ///
    /// As [`QueuedFramed::push_write`](crate::QueuedFramed::push_write).
    pub fn push_bytes(&self, bytes: impl Into<Bytes>) -> Result<()> {
        self.lock().push_bytes(bytes.into())
    }

    /// Resolves once everything queued so far is written and flushed.
    ///
    /// # Errors
    ///
    /// The error that closed the connection; `ETIMEDOUT` (non-fatal) when a
    /// write or idle timeout expires while the peer takes nothing.
    pub async fn flush(&self) -> Result<()> {
        let rx = self.lock().flush_ticket();
        rx.await.unwrap_or_else(|_| Err(Error::closed()))
    }

    /// Half-closes the write side after the queued output (WQ-7).
    ///
    /// # Errors
    ///
    /// The error that closed the connection.
    pub fn push_shutdown(&self) -> Result<()> {
        self.lock().push_shutdown()
    }

    /// The poll form of [`ready_to_write`](Self::ready_to_write), for a
    /// `poll_ready` (a tower `Service`, a `Sink`): `Ready` below the high
    /// watermark, or once the queue went back to the low one.
    ///
    /// # Errors
    ///
    /// The error that closed the connection.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut core = self.lock();
        let epoch = core.write_error_epoch();
        core.poll_write_ready(cx, epoch)
    }

    /// Resolves when the write queue is below the high watermark (or, once
    /// it went above, back down to the low one): the producer side of
    /// backpressure.
    ///
    /// # Errors
    ///
    /// The error that closed the connection, or a non-fatal `ETIMEDOUT`
    /// when a write timeout expires meanwhile.
    pub async fn ready_to_write(&self) -> Result<()> {
        let epoch = self.lock().write_error_epoch();
        poll_fn(|cx| self.lock().poll_write_ready(cx, epoch)).await
    }

    /// Resolves when the write queue is at or below the low watermark.
    ///
    /// # Errors
    ///
    /// As [`ready_to_write`](Self::ready_to_write).
    pub async fn drained(&self) -> Result<()> {
        let epoch = self.lock().write_error_epoch();
        poll_fn(|cx| self.lock().poll_drained(cx, epoch)).await
    }

    /// Bytes queued for writing and not yet accepted by the transport.
    pub fn write_buffered(&self) -> usize {
        self.lock().write_buffered()
    }

    // ----- state --------------------------------------------------------------------

    /// Closes the connection (LC-1): pending requests fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed); queued output is
    /// still written for up to `linger`.
    pub fn destroy(&self) {
        self.lock().close(Error::closed());
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().is_closed()
    }

    /// The error that closed the connection, if any.
    pub fn error(&self) -> Option<Error> {
        self.lock().error().cloned()
    }

    /// Whether end of input has been seen.
    pub fn is_eof(&self) -> bool {
        self.lock().is_eof()
    }

    /// Stops the driver and hands the [`Parts`] (transport, unread and
    /// unwritten bytes) to the [`Driver`] future; pending requests fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed).
    pub fn detach(&self) {
        self.shared.detach.store(true, Ordering::Release);
        self.lock().wake_driver();
    }

    /// Calls `f` with the unread input (AE's `rbuf`).
    pub fn with_read_buffer<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self.lock().read_buffer())
    }

    // ----- TLS ------------------------------------------------------------------------

    /// Upgrades the connection to TLS (STARTTLS) after the reads already
    /// queued; see [`QueuedFramed::starttls`](crate::QueuedFramed::starttls).
    /// Reads and writes queued after this call run over TLS. The ticket
    /// resolves when the handshake is done.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn starttls(&self, mode: impl Into<crate::tls::TlsMode>) -> Ticket<()> {
        self.lock().request_starttls(mode.into(), false)
    }

    /// Ends TLS after the output queued so far; see
    /// [`QueuedFramed::stoptls`](crate::QueuedFramed::stoptls).
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn stoptls(&self) -> Ticket<()> {
        self.lock().request_stoptls(false)
    }

    /// Queues `tls_autostart` (RT-tlsauto): detect a TLS ClientHello and,
    /// if there is one, accept TLS before any later request runs. The ticket
    /// resolves with the verdict.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn push_tls_autostart(
        &self,
        server: crate::tls::TlsServer,
    ) -> Ticket<crate::codecs::TlsDetect> {
        self.push_read_with(crate::codecs::TlsDetectCodec::new(), move |verdict, q| {
            if verdict.is_tls() {
                // Failure closes the connection; later requests see it.
                drop(q.starttls(server));
            }
            Ok(verdict)
        })
    }

    /// Whether TLS is established on this connection.
    pub fn is_tls(&self) -> bool {
        self.lock().is_tls()
    }

    /// The peer's certificate, DER-encoded, once TLS is established; see
    /// [`QueuedFramed::peer_certificate`](crate::QueuedFramed::peer_certificate).
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.lock().peer_certificate().map(<[u8]>::to_vec)
    }

    // ----- runtime settings ---------------------------------------------------------

    /// Sets the idle timeout (`timeout`; zero = off), checked at once.
    pub fn set_timeout(&self, period: Duration) {
        self.run(|core| core.set_timer(Timeout::Idle, period));
    }

    /// Sets the read timeout (`rtimeout`; zero = off), checked at once.
    pub fn set_rtimeout(&self, period: Duration) {
        self.run(|core| core.set_timer(Timeout::Read, period));
    }

    /// Sets the write timeout (`wtimeout`; zero = off), checked at once.
    pub fn set_wtimeout(&self, period: Duration) {
        self.run(|core| core.set_timer(Timeout::Write, period));
    }

    /// Marks activity now for `which` timer (AE's `*timeout_reset`).
    pub fn timeout_reset(&self, which: Timeout) {
        self.lock().timeout_reset(which);
    }

    /// Runs `hook` inside the engine whenever a timer expires, instead of
    /// failing the waiting read with `ETIMEDOUT` (AE's `on_timeout`). The
    /// hook can queue reads and writes, or close the connection, through
    /// [`Requests`].
    pub fn on_timeout<F>(&self, hook: F)
    where
        F: FnMut(Timeout, &mut Requests<'_>) + Send + 'static,
    {
        self.lock().set_on_timeout(Box::new(hook));
    }

    /// Runs `hook` inside the engine on each drain edge (AE's `on_drain`).
    pub fn on_drain<F>(&self, hook: F)
    where
        F: FnMut(&mut Requests<'_>) + Send + 'static,
    {
        self.lock().set_on_drain(Box::new(hook));
    }

    /// Turns autocork on or off from the next write on (OPT-12).
    pub fn set_autocork(&self, on: bool) {
        self.lock().set_autocork(on);
    }

    /// Changes the write watermarks; the queue is checked against them at
    /// once.
    pub fn set_watermarks(&self, high: usize, low: usize) {
        self.run(|core| core.set_watermarks(high, low));
    }

    /// Changes the cap on unconsumed input (`None` = unbounded).
    pub fn set_rbuf_max(&self, max: Option<usize>) {
        self.lock().set_rbuf_max(max);
    }

    /// Changes the cap on queued output (`None` = unbounded).
    pub fn set_wbuf_max(&self, max: Option<usize>) {
        self.lock().set_wbuf_max(max);
    }

    /// Runs `f` on the core; a user hook panicking inside closes the
    /// connection and the panic goes on here, after the lock is released.
    fn run<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        let outcome = self.lock().guard(f);
        match outcome {
            Ok(r) => r,
            Err(payload) => resume_unwind(payload),
        }
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        self.shared.users.fetch_add(1, Ordering::AcqRel);
        Handle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // A handle dropped inside its own engine (captured by a completion)
        // must not lock again; the driver checks `users` after every turn.
        if self.shared.users.fetch_sub(1, Ordering::AcqRel) == 1 && !self.shared.reentered() {
            self.lock().wake_driver();
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shared.reentered() {
            return f.debug_tuple("Handle").field(&"<running>").finish();
        }
        f.debug_tuple("Handle").field(&*self.lock()).finish()
    }
}

impl<IO> Future for Driver<IO> {
    type Output = Result<Parts<IO>>;

    /// A panic in a user callback that the driver ran goes on here, like
    /// a `JoinHandle`'s (after every ticket got an error saying so).
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.join).poll(cx).map(|r| match r {
            Ok(parts) => parts,
            Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
            Err(_) => Err(Error::closed()),
        })
    }
}

impl<IO> fmt::Debug for Driver<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}
