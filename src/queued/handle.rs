//! The shared handle: the connection lives in a spawned driver task (the
//! AnyEvent model, where the handle lives in the event loop) and any number
//! of cloneable [`Handle`]s queue reads and writes to it.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, Result};
use crate::queued::Parts;
use crate::queued::core::Core;
use crate::queued::request::{OnDrop, Requests, Ticket};
use crate::queued::stack::Stack;

struct Shared {
    core: Mutex<Core>,
    /// Live user handles; the driver winds down when it reaches zero.
    users: AtomicUsize,
    /// `detach` was called: hand the parts back.
    detach: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic inside a user's completion function poisons the lock; the
        // core itself is still consistent (requests are popped before they
        // run), so keep going.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
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

pub(crate) fn spawn<IO>(core: Core, io: Stack<IO>) -> (Handle, Driver<IO>)
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
    F: Future<Output = Result<Stack<IO>>> + Send + 'static,
{
    core.timers.pause();
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        users: AtomicUsize::new(1),
        detach: AtomicBool::new(false),
    });
    let task_shared = shared.clone();
    let join = tokio::spawn(async move {
        match setup.await {
            Ok(io) => {
                task_shared.lock().timers.start();
                Ok(drive(task_shared, io).await)
            }
            Err(e) => {
                task_shared.lock().die(e.clone());
                Err(e)
            }
        }
    });
    (Handle { shared }, Driver { join })
}

async fn drive<IO>(shared: Arc<Shared>, mut io: Stack<IO>) -> Parts<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tracing::debug!("driver started");
    poll_fn(|cx| {
        let mut core = shared.lock();
        if shared.detach.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if core.poll_drive(&mut io, cx).is_ready() {
            return Poll::Ready(());
        }
        if shared.users.load(Ordering::Acquire) == 0 {
            // Nobody can queue reads any more; fail what is queued.
            core.die(Error::closed());
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;

    // LC-3 linger: a destroyed or dropped handle keeps writing what was
    // queued for up to `linger` (not after a transport error, and not when
    // the user detaches to take the bytes back).
    let detached = shared.detach.load(Ordering::Acquire);
    let linger = shared.lock().cfg.linger;
    if !detached && !linger.is_zero() {
        let flushed =
            tokio::time::timeout(linger, poll_fn(|cx| shared.lock().poll_linger(&mut io, cx)))
                .await;
        if flushed.is_err() {
            tracing::debug!(?linger, "linger expired with output unsent");
        }
    }
    let mut core = shared.lock();
    for req in core.queue.drain(..) {
        req.fail(Error::closed());
    }
    let (mut read_buf, write_buf) = core.take_buffers();
    drop(core);
    let (io, unread) = crate::queued::stack::unwrap(io);
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
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.shared.lock()
    }

    crate::queued::request::queue_methods!(self, &);

    /// Writes a request and queues the read of its response under one lock,
    /// so concurrent callers cannot interleave between the two. The
    /// response is read (and discarded) even if the ticket is dropped, which
    /// keeps a request/response stream in step.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn write_then_read<E, I, D, F, R>(
        &self,
        encoder: E,
        item: I,
        decoder: D,
        then: F,
    ) -> Ticket<R>
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

    /// Backpressure for producers: `Ready` below the high watermark.
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut core = self.lock();
        ready!(core.marks.poll_ready(cx));
        Poll::Ready(core.check_alive())
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

    /// Encodes `item` onto the write queue; the driver writes it.
    ///
    /// # Errors
    ///
    /// As [`QueuedFramed::push_write`](crate::QueuedFramed::push_write).
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
    /// The fatal error that ended the handle.
    pub async fn flush(&self) -> Result<()> {
        let rx = self.lock().flush_ticket();
        rx.await.unwrap_or_else(|_| Err(Error::closed()))
    }

    /// Half-closes the write side after the queued output (WQ-7).
    ///
    /// # Errors
    ///
    /// The fatal error that ended the handle.
    pub fn push_shutdown(&self) -> Result<()> {
        self.lock().push_shutdown()
    }

    /// Ends the connection (LC-1): pending requests fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed); queued output is
    /// still written for up to `linger`.
    pub fn destroy(&self) {
        self.lock().die(Error::closed());
    }

    /// Whether the connection has ended.
    pub fn is_destroyed(&self) -> bool {
        self.lock().dead.is_some()
    }

    /// Stops the driver and hands the [`Parts`] (transport, unread and
    /// unwritten bytes) to the [`Driver`] future; pending requests fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed).
    pub fn detach(&self) {
        self.shared.detach.store(true, Ordering::Release);
        self.lock().wake_driver();
    }

    /// Upgrades the connection to TLS (STARTTLS); see
    /// [`QueuedFramed::starttls`](crate::QueuedFramed::starttls). Reads
    /// and writes queued after this call run over TLS. The ticket resolves
    /// when the handshake is done.
    #[cfg(feature = "tls")]
    pub fn starttls(&self, mode: impl Into<crate::tls::TlsMode>) -> Ticket<()> {
        self.lock().request_starttls(mode.into())
    }

    /// Ends TLS after the output queued so far; see
    /// [`QueuedFramed::stoptls`](crate::QueuedFramed::stoptls).
    #[cfg(feature = "tls")]
    pub fn stoptls(&self) -> Ticket<()> {
        self.lock().request_stoptls()
    }

    /// Queues `tls_autostart` (RT-tlsauto): detect a TLS ClientHello and,
    /// if there is one, accept TLS before any later request runs. The ticket
    /// resolves with the verdict.
    #[cfg(feature = "tls")]
    pub fn push_tls_autostart(
        &self,
        server: crate::tls::TlsServer,
    ) -> Ticket<crate::codecs::TlsDetect> {
        self.push_read_with(crate::codecs::TlsDetectCodec::new(), move |verdict, q| {
            if verdict.is_tls() {
                // Failure destroys the handle; later requests see it.
                drop(q.starttls(server));
            }
            Ok(verdict)
        })
    }

    /// Whether TLS is established on this connection.
    pub fn is_tls(&self) -> bool {
        self.lock().tls_active
    }

    /// Calls `f` with the unread input (AE's `rbuf`).
    pub fn with_read_buffer<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.lock().rbuf)
    }
}

impl Handle {
    fn core_mut(&self) -> MutexGuard<'_, Core> {
        self.lock()
    }

    crate::queued::runtime_setters!(self, &);

    /// Resolves when the write queue is below the high watermark (or, once
    /// it went above, back down to the low one): the producer side of
    /// backpressure.
    ///
    /// # Errors
    ///
    /// The error that destroyed the handle.
    pub async fn ready_to_write(&self) -> Result<()> {
        poll_fn(|cx| self.poll_write_ready(cx)).await
    }

    /// Resolves when the write queue is at or below the low watermark.
    ///
    /// # Errors
    ///
    /// The error that destroyed the handle.
    pub async fn drained(&self) -> Result<()> {
        poll_fn(|cx| {
            let mut core = self.lock();
            core.check_alive()?;
            let len = core.wq.len();
            ready!(core.marks.poll_drained(len, cx));
            Poll::Ready(Ok(()))
        })
        .await
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
        if self.shared.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.lock().wake_driver();
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Handle").field(&*self.lock()).finish()
    }
}

impl<IO> Future for Driver<IO> {
    type Output = Result<Parts<IO>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.join)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(Error::closed())))
    }
}

impl<IO> fmt::Debug for Driver<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}
