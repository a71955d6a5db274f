//! [`QueuedFramed`]: one connection, one read buffer, a queue of read
//! requests each with its own decoder, and a write queue.

pub(crate) mod core;
mod handle;
pub(crate) mod request;
pub(crate) mod timer;
pub(crate) mod transport;
pub(crate) mod watermark;
mod write;

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder};

use self::core::{Core, DecoderWatch};
use self::request::OnDrop;
use crate::config::{Builder, Config};
use crate::error::{Error, Result};

#[cfg(any(feature = "tls", feature = "rustls"))]
pub use self::handle::AutostartTicket;
pub(crate) use self::handle::spawn_connecting;
pub use self::handle::{Closed, Driver, Handle};
pub use self::request::{FnDecoder, OrEof, Requests, Ticket};
pub use self::timer::Timeout;

/// A connection that reads with a different decoder for each request.
///
/// `QueuedFramed` is AnyEvent::Handle for tokio: one read buffer shared by a
/// FIFO of read requests, **each with its own decoder** — read a line, then
/// 64 bytes, then one JSON value, on one connection. Bytes one request does
/// not consume are the next request's input, whatever its decoder; switching
/// copies none of the buffered bytes (a queued read allocates only its
/// request and the channel its [`Ticket`] waits on). Writes go through a
/// write queue.
///
/// Three ways to use it:
///
/// 1. **Sequentially** (`&mut self`): [`read`](Self::read) a frame with any
///    decoder, [`push_write`](Self::push_write) and [`flush`](Self::flush).
/// 2. **Queued**: [`push_read`](Self::push_read) /
///    [`unshift_read`](Self::unshift_read) return [`Ticket`]s that resolve in
///    queue order; [`wait`](Self::wait) drives the connection until one is
///    ready. [`push_read_with`](Self::push_read_with) runs a completion
///    inside the engine that may unshift follow-up requests ([RQ-4](crate::semantics#RQ-4)).
/// 3. **Shared**: [`spawn`](Self::spawn) moves the connection into a task
///    and returns a cloneable, `Send` [`Handle`] (the AnyEvent model).
///
/// With a default codec `C` (see [`with_codec`](Self::with_codec)) it is
/// also a `Stream` of `C`'s frames (AE's `on_read`, used when no request is
/// queued) and a `Sink` of items `C` encodes.
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
/// // A line, then exactly 4 bytes, then another line, in one packet.
/// peer.write_all(b"HELLO\r\nabcdbye\n").await?;
///
/// let mut conn = QueuedFramed::new(io);
/// let hello = conn.read(LineCodec::new()).await?;
/// assert_eq!(hello.line(), b"HELLO");
/// let four = conn.read(ChunkCodec::new(4)).await?;
/// assert_eq!(&four[..], b"abcd");
/// let bye = conn.read(LineCodec::new()).await?;
/// assert_eq!(bye.line(), b"bye");
///
/// conn.push_write(LineCodec::new(), "OK")?;
/// conn.flush().await?;
/// # Ok(()) }
/// ```
pub struct QueuedFramed<IO, C = ()> {
    core: Core,
    io: transport::TransportIo<IO>,
    codec: C,
    /// Where the `Stream` stands.
    stream: StreamState,
    /// What the `Stream` knows of its decoder between polls.
    watch: DecoderWatch,
    /// The default codec was checked for completing on no input (a fresh
    /// codec, at the first poll of the `Stream`).
    codec_checked: bool,
    /// Bounds the writing of output queued before an input-side error, once
    /// the connection is closed (`linger`, [LC-5](crate::semantics#LC-5)).
    after_close: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// What [`QueuedFramed::into_parts`] gives back: nothing is lost.
#[derive(Debug)]
#[non_exhaustive]
pub struct Parts<IO, C = ()> {
    /// The transport.
    pub io: IO,
    /// The default codec.
    pub codec: C,
    /// Bytes read but not consumed by any request. Bytes a decoder has
    /// already taken into its own state without finishing its frame (the
    /// header of a length-prefixed frame, say) are not here: they went
    /// with that decoder, and `read_buf` begins inside the frame (a read
    /// given up after it began its frame reads on to the frame's end only
    /// while the connection lives).
    pub read_buf: BytesMut,
    /// Bytes queued but not yet written, in order, up to a pending TLS
    /// switch.
    pub write_buf: BytesMut,
    /// Bytes queued behind a TLS switch (`push_starttls`, `push_stoptls`,
    /// `Builder::tls`) that had not run: meant to go out only once it had,
    /// encrypted after a STARTTLS, so never to be written as plaintext
    /// in front of it ([TLS-2](crate::semantics#TLS-2): output queued after a
    /// switch waits for it). Empty unless a switch was pending.
    /// [`Builder::build_from_parts`](crate::Builder::build_from_parts) with
    /// [`tls`](crate::Builder::tls) queues them behind its handshake;
    /// [`QueuedFramed::from_parts`] and a builder without TLS do not
    /// restore them (take them out first to keep them).
    pub after_switch: BytesMut,
}

impl<IO, C> Parts<IO, C> {
    /// Parts for a fresh handle over `io`.
    pub fn new(io: IO, codec: C) -> Parts<IO, C> {
        Parts {
            io,
            codec,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            after_switch: BytesMut::new(),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> QueuedFramed<IO> {
    /// A handle over `io` with the default options and no default codec.
    pub fn new(io: IO) -> QueuedFramed<IO> {
        QueuedFramed::from_config(io, (), Config::default())
    }
}

impl QueuedFramed<()> {
    /// Options for a new handle: see [`Builder`].
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin, C> QueuedFramed<IO, C> {
    /// A handle whose `Stream` yields `codec`'s frames whenever no request is
    /// queued (AE's `on_read`) and whose `Sink` encodes with `codec`.
    pub fn with_codec(io: IO, codec: C) -> QueuedFramed<IO, C> {
        QueuedFramed::from_config(io, codec, Config::default())
    }

    pub(crate) fn from_config(io: IO, codec: C, cfg: Config) -> QueuedFramed<IO, C> {
        QueuedFramed::from_core(io, codec, Core::new(cfg))
    }

    pub(crate) fn from_core(io: IO, codec: C, core: Core) -> QueuedFramed<IO, C> {
        QueuedFramed {
            core,
            io: transport::wrap(io),
            codec,
            stream: StreamState::Live,
            watch: DecoderWatch::default(),
            codec_checked: false,
            after_close: None,
        }
    }

    /// Rebuilds a handle from [`Parts`]: unread bytes are read first, unwritten
    /// bytes are written first. The handle has the default options, as from
    /// [`with_codec`](Self::with_codec) ([`Parts`] carries none):
    /// [`Builder::build_from_parts`](crate::Builder::build_from_parts) puts
    /// the parts back with a builder's.
    ///
    /// Unwritten bytes over the handle's `wbuf_max` are kept and written,
    /// but the cap counts them: a push made while they keep the queue over
    /// it fails with the fatal `ENOSPC`, as after lowering the cap with
    /// [`set_wbuf_max`](Self::set_wbuf_max). Put such parts back with a
    /// builder whose cap holds them.
    pub fn from_parts(parts: Parts<IO, C>) -> QueuedFramed<IO, C> {
        QueuedFramed::from_parts_with(parts, Core::new(Config::default()))
    }

    pub(crate) fn from_parts_with(parts: Parts<IO, C>, core: Core) -> QueuedFramed<IO, C> {
        let mut this = QueuedFramed::from_core(parts.io, parts.codec, core);
        this.core
            .restore(parts.read_buf, parts.write_buf, parts.after_switch);
        // A codec handed back by `into_parts` (or taken from a `Framed`)
        // may be in the middle of a frame, with state that points into
        // these bytes: it is not probed with an empty buffer.
        this.codec_checked = true;
        this
    }

    /// Takes the handle apart without losing a byte: the transport, unread
    /// input and unwritten output. Requests still queued fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed).
    ///
    /// Over TLS, the TLS session is dropped on the spot (no close_notify;
    /// like AE's `resettls`): call [`stoptls`](Self::stoptls) first to hand
    /// over a clean plaintext stream. Output the TLS library had already
    /// taken goes with the session (rustls seals up to 64 KiB ahead of the
    /// transport; [TLS-7](crate::semantics#TLS-7)): `write_buf` holds what
    /// it had not taken. After `stoptls`, the peer's side of
    /// TLS that has already arrived, up to its close_notify, is read
    /// without waiting: its data is decrypted into `read_buf`, followed by
    /// the plaintext behind the close_notify. A peer whose close_notify is
    /// still on its way leaves the rest of its TLS stream in the
    /// transport: read until then (a request) if that can happen.
    pub fn into_parts(mut self) -> Parts<IO, C> {
        let (mut read_buf, write_buf, after_switch) = self.core.take_buffers();
        let (io, unread) = transport::unwrap(self.io);
        read_buf.extend_from_slice(&unread);
        Parts {
            io,
            codec: self.codec,
            read_buf,
            write_buf,
            after_switch,
        }
    }

    /// The transport (for socket options and addresses; reading or writing
    /// it directly would bypass the buffers and any TLS session).
    pub fn get_ref(&self) -> &IO {
        transport::get_ref(&self.io)
    }

    /// The default codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The default codec, mutably. A `Stream` that ended on a decoder made
    /// stale (see the `Stream` implementation) goes on with the decoder as
    /// left here: replace it with a fresh one.
    pub fn codec_mut(&mut self) -> &mut C {
        self.unstick_stream();
        if self.stream == StreamState::Stale {
            self.stream = StreamState::Live;
        }
        &mut self.codec
    }

    /// The unread input (AE's `rbuf`).
    pub fn read_buffer(&self) -> &[u8] {
        self.core.read_buffer()
    }

    /// The unread input, mutably; remove only from the front if requests are
    /// queued. The `Stream`'s decoder, if it holds part of a frame (a
    /// `next()` given up), counts this as bytes taken from under it: its
    /// next poll is `EINVAL` (see the `Stream` implementation). To look,
    /// use [`read_buffer`](Self::read_buffer).
    pub fn read_buffer_mut(&mut self) -> &mut BytesMut {
        self.unstick_stream();
        self.core.read_buffer_mut()
    }

    /// Drops the first `n` unread bytes (all of them if fewer are buffered).
    /// As for [`read_buffer_mut`](Self::read_buffer_mut), the `Stream`'s
    /// decoder is stale after bytes were dropped from under a frame it had
    /// begun.
    pub fn consume(&mut self, n: usize) {
        self.unstick_stream();
        self.core.consume(n);
    }

    /// Bytes queued for writing and not yet accepted by the transport.
    pub fn write_buffered(&self) -> usize {
        self.core.write_buffered()
    }

    /// Read requests (and TLS switches) waiting in the queue.
    pub fn queued_reads(&self) -> usize {
        self.core.queued_reads()
    }

    /// Whether end of input has been seen.
    pub fn is_eof(&self) -> bool {
        self.core.is_eof()
    }

    /// Whether the connection is closed: a fatal error, a panic in a user
    /// callback, or [`destroy`](Self::destroy).
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// The error that closed the connection, if any.
    pub fn error(&self) -> Option<&Error> {
        self.core.error()
    }

    /// Closes the connection ([LC-1](crate::semantics#LC-1)): pending requests fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed), later calls fail
    /// fast. Buffers stay reachable through [`into_parts`](Self::into_parts).
    pub fn destroy(&mut self) {
        self.core.destroy();
    }

    // ----- queued reads -----------------------------------------------------

    // ----- writes (no I/O) --------------------------------------------------

    /// Encodes `item` with `encoder` onto the write queue. No I/O happens
    /// here: queued bytes go out, coalesced, the next time the handle runs
    /// (a read, [`flush`](Self::flush), or the driver of a spawned handle).
    ///
    /// # Errors
    ///
    /// The encoder's error (nothing is queued); `EINVAL`, not fatal and
    /// nothing queued, if the item alone is longer than `wbuf_max` (it
    /// could never be queued); `ENOSPC`, fatal, if it fits alone but the
    /// queue would exceed `wbuf_max` ([OPT-9](crate::semantics#OPT-9)); the
    /// handle's fatal error if it is closed; `EINVAL` after
    /// [`push_shutdown`](Self::push_shutdown).
    /// An encoder must only append to `dst` (which may hold output queued
    /// before): one that leaves it shorter than it found it closes the
    /// connection with a fatal `EINVAL`. One that clears `dst` and then
    /// writes at least as many bytes cannot be told from one that appends:
    /// the output queued before it is lost without an error.
    pub fn push_write<E, I>(&mut self, encoder: E, item: I) -> Result<()>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
    {
        // The encoder runs guarded inside push_encoded.
        self.core.push_encoded(encoder, item)
    }

    /// Queues raw bytes; large ones are queued without copying.
    ///
    /// # Errors
    ///
    /// As [`push_write`](Self::push_write).
    pub fn push_bytes(&mut self, bytes: impl Into<Bytes>) -> Result<()> {
        self.core.push_bytes(bytes.into())
    }

    /// Half-closes the write side once everything queued is written (AE's
    /// `push_shutdown`, [WQ-7](crate::semantics#WQ-7)). The read side stays open. Writes after it
    /// are refused, and so are `starttls` and `stoptls` (a non-fatal
    /// `EINVAL`): they would write after the half-close.
    ///
    /// # Errors
    ///
    /// The error that closed the connection.
    pub fn push_shutdown(&mut self) -> Result<()> {
        self.core.push_shutdown()
    }
}

impl<IO, C> QueuedFramed<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// Reads one frame with `decoder`, after every queued request.
    ///
    /// Bytes the decoder does not consume stay buffered for the next read.
    /// Pending writes are flushed before waiting for input. Cancel-safe:
    /// the read is a queued request ([`push_read`](Self::push_read) then
    /// [`wait`](Self::wait)), so dropping the future before the decoder has
    /// taken anything consumes nothing, and a decoder that has consumed
    /// part of its frame (a line being dropped under
    /// [`OverflowPolicy::Discard`](crate::codecs::OverflowPolicy::Discard))
    /// runs on to the end of that frame for nobody: the next read starts at
    /// the next frame. [`read_with`](Self::read_with) is the cheaper form
    /// for a decoder you keep (no queue entry per frame).
    ///
    /// # Errors
    ///
    /// * `EPIPE` (fatal) if the input ends before a frame is complete ([RQ-6](crate::semantics#RQ-6));
    ///   the partial frame stays in [`read_buffer`](Self::read_buffer).
    /// * The decoder's error: non-fatal ones (`EBADMSG`) leave the handle
    ///   usable; fatal ones destroy it.
    /// * A transport error (fatal), or the error that closed the connection.
    pub async fn read<D>(&mut self, decoder: D) -> Result<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        let ticket = self.push_read(decoder);
        self.wait(ticket).await
    }

    /// [`read`](Self::read) with a decoder you keep (its state survives
    /// between calls, a call given up half way included). The state
    /// describes the buffer as the last call left it: if a read of another
    /// kind takes bytes while the decoder holds part of a frame, go on with
    /// a fresh decoder ([§4](crate::semantics#4-the-read-queue), *Decoders you keep*).
    ///
    /// **A pipelined server should not answer one `read_with` at a time
    /// with autocork off**: every answer is then its own write system call.
    /// Take every request already buffered with
    /// [`read_many`](Self::read_many) (or turn autocork on, so the answers
    /// leave together when the next read would wait): on a line echo that
    /// is about 8x the throughput. [`service::serve`](crate::service::serve)
    /// does both.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn read_with<'a, D>(
        &'a mut self,
        decoder: &'a mut D,
    ) -> impl Future<Output = Result<D::Item>> + 'a
    where
        D: Decoder,
        D::Error: Into<Error>,
    {
        // A plain poll_fn, not an `async fn`: this is the per-frame hot path.
        poll_fn(move |cx| {
            let io = &mut self.io;
            self.core
                .run(|core| core.poll_decode_direct(io, cx, decoder, false))
                .map(|r| r.and_then(|frame| frame.ok_or_else(Error::eof_in_request)))
        })
    }

    /// Reads every frame `decoder` can take from the buffered input, up to
    /// `limit`, into `frames`, and returns how many it appended.
    ///
    /// The batch form of [`read_with`](Self::read_with), shaped like tokio's
    /// `mpsc::Receiver::recv_many`: it waits (after every queued request)
    /// until one frame is complete, then decodes what else is already
    /// buffered without reading again. One call per read from the socket
    /// instead of one per frame is what a bulk consumer (AE's `on_read`
    /// emptying `rbuf`) wants. `Ok(0)` means the input ended cleanly (or
    /// `limit` is 0). Frames are appended; `frames` is not cleared. A frame
    /// that consumed no input (a zero-length chunk) ends the batch, so a
    /// decoder that never consumes cannot spin up to `limit`. Cancel-safe
    /// like `read_with`: frames are appended only in the poll that returns.
    /// A batch that ends on part of a frame leaves `decoder` holding it:
    /// the next batch with the same decoder must come before any read of
    /// another kind, or use a fresh decoder. (Whitespace after a JSON text
    /// is part of the next frame for a plain `JsonCodec`, so a batch of
    /// newline-ended texts always ends on part of one;
    /// `JsonCodec::ndjson()` frames each text with its newline.)
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe::QueuedFramed;
    /// use anyframe::codecs::LineCodec;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anyframe::Result<()> {
    /// let (ours, mut peer) = tokio::io::duplex(1024);
    /// peer.write_all(b"a\nb\nc\n").await?;
    /// drop(peer);
    /// let mut conn = QueuedFramed::new(ours);
    /// let (mut codec, mut lines) = (LineCodec::new(), Vec::new());
    /// assert_eq!(conn.read_many(&mut codec, &mut lines, 2).await?, 2);
    /// assert_eq!(conn.read_many(&mut codec, &mut lines, 2).await?, 1);
    /// assert_eq!(conn.read_many(&mut codec, &mut lines, 2).await?, 0); // clean EOF
    /// assert_eq!(lines.iter().map(|l| l.line()).collect::<Vec<_>>(), [b"a", b"b", b"c"]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read). Frames decoded before the error are already
    /// in `frames`: nothing is lost, and the error is the next thing after
    /// them, as it would be for one read at a time.
    pub fn read_many<'a, D>(
        &'a mut self,
        decoder: &'a mut D,
        frames: &'a mut Vec<D::Item>,
        limit: usize,
    ) -> impl Future<Output = Result<usize>> + 'a
    where
        D: Decoder,
        D::Error: Into<Error>,
    {
        poll_fn(move |cx| {
            let io = &mut self.io;
            self.core
                .run(|core| core.poll_decode_many(io, cx, decoder, frames, limit))
        })
    }

    /// Reads with a closure over the read buffer (AE's untyped request): it
    /// is called with all unread bytes whenever more arrive, removes what it
    /// uses from the front, and returns `Some` when done.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), plus whatever the closure returns.
    pub async fn read_fn<T, F>(&mut self, f: F) -> Result<T>
    where
        F: FnMut(&mut BytesMut) -> Result<Option<T>>,
    {
        self.read_with(&mut FnDecoder::new(f)).await
    }

    /// Drives the connection until `ticket` resolves, and returns its result.
    ///
    /// # Errors
    ///
    /// The request's error (see [`Ticket`]).
    pub async fn wait<T>(&mut self, mut ticket: Ticket<T>) -> Result<T> {
        poll_fn(|cx| {
            loop {
                if let Poll::Ready(r) = ticket.poll_result(cx) {
                    return Poll::Ready(r);
                }
                // The queue holds the ticket's request (or switch): drive it.
                // Whatever the outcome, the ticket has its own result if its
                // request ran. (A fatal error fails the ticket's request
                // too.) A timeout nobody queued heard is not this ticket's:
                // drive on.
                let io = &mut self.io;
                let driven = self.core.run(|core| {
                    let driven = core.poll_queue(io, cx);
                    // A write error closed the connection: the ticket has it.
                    let _ = core.write_uncorked(io, cx);
                    driven
                });
                match driven {
                    Poll::Ready(Err(e)) if !e.is_fatal() => continue,
                    _ => return ticket.poll_result(cx),
                }
            }
        })
        .await
    }

    /// Writes everything queued and flushes the transport (and half-closes
    /// it if [`push_shutdown`](Self::push_shutdown) was called).
    ///
    /// Output queued after a TLS switch that waits behind queued reads
    /// (`push_starttls`, `push_stoptls`) goes out after the switch, and so
    /// does the half-close: the flush then runs those reads and the switch,
    /// as [`wait`](Self::wait) would; their tickets keep their results.
    ///
    /// # Errors
    ///
    /// A transport error (fatal), or the error that closed the connection;
    /// `ETIMEDOUT` (non-fatal) when a write or idle timeout expires while the
    /// peer does not take the output (the output stays queued). When an
    /// error of the input side closed the connection (end of input inside a
    /// read, a fatal bad message, `rbuf_max`), the output queued before it
    /// is written first, for up to `linger` ([LC-3](crate::semantics#LC-3), [LC-5](crate::semantics#LC-5)).
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_flush_or_close(cx, false)).await
    }

    /// `flush`, or with `shut` the half-close after it. On a connection an
    /// error of its input side closed, the output queued before the error
    /// is still written, for up to `linger` ([LC-5](crate::semantics#LC-5)), then that error is
    /// returned.
    fn poll_flush_or_close(&mut self, cx: &mut Context<'_>, shut: bool) -> Poll<Result<()>> {
        let (io, deadline) = (&mut self.io, &mut self.after_close);
        self.core.run(|core| {
            if !core.is_closed() {
                if shut && core.output() == self::core::Output::Open {
                    core.push_shutdown()?;
                }
                match ready!(core.poll_flush_inline(io, cx)) {
                    // The flush ran reads queued in front of a TLS switch,
                    // and one of them closed the connection.
                    Err(_) if core.is_closed() => {}
                    done => return Poll::Ready(done),
                }
            }
            // Closed here: `None` (open) cannot come back.
            core.poll_after_close(io, cx, deadline, shut)
                .map_or(Poll::Ready(Ok(())), |closed| closed.map(Err))
        })
    }

    /// [`push_write`](Self::push_write) then [`flush`](Self::flush).
    ///
    /// # Errors
    ///
    /// As both.
    pub async fn write<E, I>(&mut self, encoder: E, item: I) -> Result<()>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
    {
        self.push_write(encoder, item)?;
        self.flush().await
    }

    /// [`push_shutdown`](Self::push_shutdown) then [`flush`](Self::flush).
    /// On a connection an error of its input side closed, the output queued
    /// before it is written and the write side closed, as `flush` says.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush).
    pub async fn shutdown_write(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_flush_or_close(cx, true)).await
    }

    /// Moves the connection into a spawned driver task and returns a
    /// cloneable, `Send` [`Handle`] to it plus the [`Driver`] (the task's
    /// join handle, which gives the [`Parts`] back when the connection ends
    /// or is detached). The default codec is dropped.
    ///
    /// Must be called inside a tokio runtime.
    pub fn spawn(self) -> (Handle, Driver<IO>)
    where
        IO: Send + 'static,
    {
        handle::spawn(self.core, self.io)
    }
}

/// TLS on a live connection ([§7](crate::semantics#7-tls), [TLS-1](crate::semantics#TLS-1)…[TLS-11](crate::semantics#TLS-11)).
///
/// Over TLS the handle keeps AnyEvent's plaintext backpressure ([RQ-5](crate::semantics#RQ-5)): it
/// reads only while a request waits, where AnyEvent reads all the time in
/// TLS mode ([TLS-9](crate::semantics#TLS-9)). Alerts and close_notify are seen with the next read.
#[cfg(any(feature = "tls", feature = "rustls"))]
impl<IO, C> QueuedFramed<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// Upgrades the connection to TLS (STARTTLS), as client or server, and
    /// waits until the handshake is done.
    ///
    /// The switch is queued behind the reads already queued (as
    /// [`push_starttls`](Self::push_starttls) does): those run first, on
    /// plaintext, and the handshake starts once they have completed. Output
    /// queued before the call is written in plaintext first; every byte
    /// still buffered when the switch runs is handed to the TLS engine as
    /// the start of the ciphertext (so a ClientHello that arrived with
    /// `STARTTLS\r\n` is used, never delivered as data). Reads and writes
    /// queued after the call wait for the handshake.
    ///
    /// # Errors
    ///
    /// `EPROTO`, fatal, if the handshake fails (certificate or host-name
    /// verification, no common version, a peer that does not speak TLS):
    /// the connection never goes on unencrypted. `EINVAL` if TLS is already
    /// active or starting, or after [`push_shutdown`](Self::push_shutdown)
    /// (nothing changes). `EINVAL`, fatal, if a stoptls
    /// is still queued: one switch is queued at a time, and what follows a
    /// refused STARTTLS was meant for TLS, so the connection closes rather
    /// than let it leave in plaintext.
    pub async fn starttls(&mut self, mode: impl Into<crate::tls::TlsMode>) -> Result<()> {
        let ticket = self.push_starttls(mode);
        self.wait(ticket).await
    }

    /// Queues STARTTLS behind the reads already queued, without driving it:
    /// those reads run on plaintext, the reads queued after it over TLS.
    /// Output queued before the call goes out in plaintext; output queued
    /// after it waits for the handshake. Drive it with [`wait`](Self::wait).
    pub fn push_starttls(&mut self, mode: impl Into<crate::tls::TlsMode>) -> Ticket<()> {
        self.core.request_starttls(mode.into(), false)
    }

    /// Queues stoptls behind the reads already queued (see
    /// [`push_starttls`](Self::push_starttls)).
    pub fn push_stoptls(&mut self) -> Ticket<()> {
        self.core.request_stoptls(false)
    }

    /// Ends TLS (stoptls) and waits until it is done: like
    /// [`starttls`](Self::starttls), the switch waits behind the reads
    /// already queued; then it writes what is queued, sends close_notify,
    /// and goes on in plaintext; reads stay TLS until the peer's
    /// close_notify. Both ends must agree to stop. Without TLS on, it
    /// writes what is queued and returns `Ok(())`, changing nothing.
    ///
    /// # Errors
    ///
    /// * `EINVAL`, non-fatal (nothing changes), if a TLS switch (STARTTLS,
    ///   stoptls or the handshake of `tls_autostart`) is already queued, or
    ///   after [`push_shutdown`](Self::push_shutdown).
    /// * A TLS or transport error (fatal).
    pub async fn stoptls(&mut self) -> Result<()> {
        let ticket = self.push_stoptls();
        self.wait(ticket).await
    }

    /// Detects whether the peer starts with a TLS handshake and, if so,
    /// accepts TLS; otherwise the connection stays plaintext
    /// (`tls_autostart`, [RT-tlsauto](crate::semantics#RT-tlsauto)). The
    /// detection is [`TlsDetectCodec::new`](crate::codecs::TlsDetectCodec::new),
    /// AnyEvent's rule (any TLS handshake record header, or an
    /// SSLv2-compatible hello; not only a ClientHello). Consumes nothing in
    /// plaintext. One port can serve TLS and plaintext clients this way.
    ///
    /// # Errors
    ///
    /// `EPIPE` if the input ends before the first bytes decide; the
    /// handshake's errors as [`starttls`](Self::starttls); a non-fatal
    /// `EINVAL` with TLS already on or a switch still in progress (the
    /// handshake of a detection that timed out goes on: wait for it with
    /// [`flush`](Self::flush) or a read).
    pub async fn tls_autostart(
        &mut self,
        server: crate::tls::TlsServer,
    ) -> Result<crate::codecs::TlsDetect> {
        if let Some(e) = self.core.autostart_refused() {
            return Err(e);
        }
        let verdict = self.read(crate::codecs::TlsDetectCodec::new()).await?;
        if verdict.is_tls() {
            self.starttls(server).await?;
        }
        Ok(verdict)
    }

    /// Whether TLS is established on this connection.
    pub fn is_tls(&self) -> bool {
        self.core.is_tls()
    }

    /// The peer's certificate, DER-encoded, once TLS is established (`None`
    /// before, after stoptls, or when the peer sent none: a client that
    /// was not asked for one).
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.core.peer_certificate()
    }
}

impl<IO, C> Stream for QueuedFramed<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Decoder + Unpin,
    C::Error: Into<Error>,
{
    type Item = Result<C::Item>;

    /// Yields frames of the default codec once no request is queued. Ends at
    /// a clean end of input; yields a fatal error once, then ends.
    ///
    /// After a non-fatal error the stream goes on: a timeout, or an error
    /// whose decoder consumed the bytes it rejected (a JSON text `T`
    /// refuses, a discarded over-long line). If the decoder left them in the
    /// buffer, decoding again would only repeat the error ([ERR-3](crate::semantics#ERR-3)), so the
    /// stream ends there (`None` then means "nothing more can be decoded",
    /// and [`is_eof`](QueuedFramed::is_eof) tells it from the end of
    /// input, as after an error from tokio-util's `Framed`). It goes on if
    /// polled again once the bytes or the decoder may have changed: after
    /// [`consume`](QueuedFramed::consume),
    /// [`read_buffer_mut`](QueuedFramed::read_buffer_mut) or
    /// [`codec_mut`](QueuedFramed::codec_mut), after a read took bytes or
    /// brought more, or with a read queued to take them.
    ///
    /// A read queued while the decoder holds part of a frame (a `next()`
    /// given up half way) takes the bytes at the front ([RQ-1](crate::semantics#RQ-1)), as do
    /// [`consume`](QueuedFramed::consume) and
    /// [`read_buffer_mut`](QueuedFramed::read_buffer_mut). The
    /// decoder's state then describes bytes that are gone: rather than
    /// decode with it, the stream yields `EINVAL` (non-fatal) once and ends
    /// until [`codec_mut`](QueuedFramed::codec_mut) gives it a fresh
    /// decoder ([§4](crate::semantics#4-the-read-queue), *Decoders you keep*).
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.stream {
            StreamState::Live => {}
            StreamState::Done | StreamState::Stale => return Poll::Ready(None),
            // The input may go on after the end of TLS input (TLS-5).
            StreamState::Ended if this.core.is_eof() || this.core.is_closed() => {
                return Poll::Ready(None);
            }
            StreamState::Ended => this.stream = StreamState::Live,
            StreamState::Stuck(at) => {
                // Reads queued meanwhile run first: they may take the bytes
                // (one given up is dropped, taking nothing).
                if this.core.queued_reads() > 0 {
                    let io = &mut this.io;
                    if let Err(e) = ready!(this.core.run(|core| core.poll_queue(io, cx))) {
                        // As on the live path: a fatal error ends the
                        // stream, a non-fatal one (a timeout) is yielded.
                        if e.is_fatal() {
                            this.stream = StreamState::Done;
                        }
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                if this.core.input_mark() == at {
                    return Poll::Ready(None);
                }
                this.stream = StreamState::Live;
            }
        }
        if !this.codec_checked {
            this.codec_checked = true;
            // A default decoder that completes on no input would yield
            // frames forever without reading: refuse it.
            if let Ok(Some(_)) = this.codec.decode(&mut BytesMut::new()) {
                this.stream = StreamState::Done;
                return Poll::Ready(Some(Err(Error::invalid_input(
                    "the default codec completes on no input (it would yield frames forever)",
                ))));
            }
        }
        let (io, codec, watch) = (&mut this.io, &mut this.codec, &mut this.watch);
        watch.took = None;
        watch.stale = false;
        match ready!(
            this.core
                .run(|core| core.poll_decode_observed(io, cx, codec, true, watch))
        ) {
            Ok(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            Ok(None) => {
                this.stream = StreamState::Ended;
                Poll::Ready(None)
            }
            Err(e) => {
                if e.is_fatal() {
                    this.stream = StreamState::Done;
                } else if this.watch.stale {
                    this.stream = StreamState::Stale;
                } else if this.watch.took == Some(false) {
                    this.stream = StreamState::Stuck(this.core.input_mark());
                }
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

impl<IO, C> QueuedFramed<IO, C> {
    /// The caller may have changed the read buffer or the codec: a
    /// `Stream` that ended on bytes its decoder rejected decodes again.
    fn unstick_stream(&mut self) {
        if let StreamState::Stuck(_) = self.stream {
            self.stream = StreamState::Live;
        }
    }
}

/// Where a [`QueuedFramed`]'s `Stream` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// Yielding frames.
    Live,
    /// It yielded a non-fatal error on bytes its decoder left in the
    /// buffer, which stood here then: it ends while the buffer is unchanged
    /// and the decoder untouched.
    Stuck(crate::queued::core::InputMark),
    /// Its decoder was refused as stale: it had begun a frame whose bytes
    /// another read took. It ends until `codec_mut` gives the decoder a
    /// fresh state.
    Stale,
    /// Ended at a clean end of input: it stays ended while the input does
    /// (the end of TLS input is reopened by our stoptls, [TLS-5](crate::semantics#TLS-5)).
    Ended,
    /// Ended for good: a fatal error, or a default codec that would yield
    /// frames forever.
    Done,
}

impl<IO, C, I> Sink<I> for QueuedFramed<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Encoder<I> + Unpin,
    C::Error: Into<Error>,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_write_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: I) -> Result<()> {
        let this = self.get_mut();
        let codec = &mut this.codec;
        this.core
            .run(|core| core.push_encoded(EncoderRef(codec), item))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_flush_or_close(cx, false)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_flush_or_close(cx, true)
    }
}

/// Lets the `Sink` encode with the stored codec without moving it.
struct EncoderRef<'a, C>(&'a mut C);

impl<C, I> Encoder<I> for EncoderRef<'_, C>
where
    C: Encoder<I>,
{
    type Error = C::Error;

    fn encode(&mut self, item: I, dst: &mut BytesMut) -> std::result::Result<(), C::Error> {
        self.0.encode(item, dst)
    }
}

impl<IO: fmt::Debug, C: fmt::Debug> fmt::Debug for QueuedFramed<IO, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedFramed")
            .field("io", &self.io)
            .field("codec", &self.codec)
            .field("core", &self.core)
            .finish()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin, C> QueuedFramed<IO, C> {
    // ----- queued reads -------------------------------------------------------

    /// Queues a read with `decoder` at the back of the queue. The [`Ticket`]
    /// resolves once every request before it has completed; drive the
    /// connection with [`wait`](Self::wait). Queuing does no I/O.
    pub fn push_read<D>(&mut self, decoder: D) -> Ticket<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.core
            .enqueue(decoder, |f, _| Ok(f), OnDrop::Cancel, false)
    }

    /// Queues a read at the front: it runs before every request already
    /// queued, except a read that has already looked at part of its frame
    /// (its decoder may keep a scan position into those bytes): then it
    /// runs right after that one.
    pub fn unshift_read<D>(&mut self, decoder: D) -> Ticket<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.core
            .enqueue(decoder, |f, _| Ok(f), OnDrop::Cancel, true)
    }

    /// Queues a read whose completion `then` runs inside the engine as soon
    /// as the frame is decoded, before the next request sees the buffer. It
    /// may queue follow-ups through [`Requests`] (unshift one more read when
    /// the frame says so, [RQ-4](crate::semantics#RQ-4)). The ticket resolves to what `then` returns.
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

    /// [`push_read_with`](Self::push_read_with) at the front of the queue.
    pub fn unshift_read_with<D, F, R>(&mut self, decoder: D, then: F) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.core.enqueue(decoder, then, OnDrop::Cancel, true)
    }

    /// Queues the read of a response: as
    /// [`push_read_with`](Self::push_read_with), but the response is read
    /// (and dropped) even if the ticket is dropped or told a timeout, and
    /// so are the reads its completion unshifts (see
    /// [`Handle::push_response_with`](crate::Handle::push_response_with)).
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe::QueuedFramed;
    /// use anyframe::codecs::LineCodec;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
    /// let (io, mut peer) = tokio::io::duplex(64);
    /// let mut conn = QueuedFramed::new(io);
    /// drop(conn.push_response_with(LineCodec::new(), |l, _| Ok(l)));
    /// let second = conn.push_response_with(LineCodec::new(), |l, _| Ok(l));
    /// peer.write_all(b"one\ntwo\n").await?;
    /// assert_eq!(conn.wait(second).await?.line(), b"two");
    /// # Ok(()) }
    /// ```
    pub fn push_response_with<D, F, R>(&mut self, decoder: D, then: F) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.core.enqueue(decoder, then, OnDrop::Consume, false)
    }

    // ----- runtime settings ------------------------------------------------------

    /// Sets the idle timeout (`timeout`; zero = off). The deadline is
    /// checked at once ([TO-4](crate::semantics#TO-4)).
    pub fn set_timeout(&mut self, period: std::time::Duration) {
        self.core.run(|core| core.set_timer(Timeout::Idle, period));
    }

    /// Sets the read timeout (`rtimeout`; zero = off), checked at once.
    pub fn set_rtimeout(&mut self, period: std::time::Duration) {
        self.core.run(|core| core.set_timer(Timeout::Read, period));
    }

    /// Sets the write timeout (`wtimeout`; zero = off), checked at once.
    pub fn set_wtimeout(&mut self, period: std::time::Duration) {
        self.core.run(|core| core.set_timer(Timeout::Write, period));
    }

    /// Marks activity now for `which` timer (AE's `*timeout_reset`).
    pub fn timeout_reset(&mut self, which: Timeout) {
        self.core.timeout_reset(which);
    }

    /// Runs `hook` inside the engine whenever a timer expires, instead of
    /// failing the waiting read with `ETIMEDOUT` (AE's `on_timeout`). The
    /// hook can queue reads and writes, or close the connection, through
    /// [`Requests`].
    pub fn on_timeout<F>(&mut self, hook: F)
    where
        F: FnMut(Timeout, &mut Requests<'_>) + Send + 'static,
    {
        self.core.set_on_timeout(Box::new(hook));
    }

    /// Runs `hook` inside the engine each time the write queue falls to the
    /// low watermark after having been above it (AE's `on_drain`, as an
    /// edge, [OPT-5](crate::semantics#OPT-5)). Never re-entrant.
    pub fn on_drain<F>(&mut self, hook: F)
    where
        F: FnMut(&mut Requests<'_>) + Send + 'static,
    {
        self.core.set_on_drain(Box::new(hook));
    }

    /// Turns autocork on or off from the next write on ([OPT-12](crate::semantics#OPT-12)).
    pub fn set_autocork(&mut self, on: bool) {
        self.core.set_autocork(on);
    }

    /// Changes the write watermarks (see
    /// [`Builder::watermarks`](crate::Builder::watermarks)); the queue is
    /// checked against them at once.
    pub fn set_watermarks(&mut self, high: usize, low: usize) {
        self.core.run(|core| core.set_watermarks(high, low));
    }

    /// Changes the cap on unconsumed input (`None` = unbounded).
    pub fn set_rbuf_max(&mut self, max: Option<usize>) {
        self.core.set_rbuf_max(max);
    }

    /// The cap on queued output (`None` = unbounded).
    pub fn wbuf_max(&self) -> Option<usize> {
        self.core.wbuf_max()
    }

    /// Changes the cap on queued output (`None` = unbounded). Output
    /// already queued over a lowered cap is kept and written; the next
    /// push while the queue is still over it fails with the fatal `ENOSPC`
    /// (an item longer than the new cap on its own is refused, not fatal).
    pub fn set_wbuf_max(&mut self, max: Option<usize>) {
        self.core.run(|core| core.set_wbuf_max(max));
    }
}

impl<IO, C> QueuedFramed<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Once the output is shut no room will do: said at once.
        self.core.check_writable()?;
        // Backpressure: above the high watermark, write until the queue is
        // back at the low one before accepting more.
        while self.core.write_blocked() {
            let io = &mut self.io;
            match self.core.run(|core| core.poll_flush_inline(io, cx)) {
                Poll::Ready(result) => result?,
                // The write brought the queue to the low mark, not empty.
                Poll::Pending if !self.core.write_blocked() => {
                    self.core.stop_waiting_to_write();
                    break;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(self.core.check_writable())
    }

    /// Resolves when the write queue is below the high watermark (or, once
    /// it went above, back down to the low one), writing meanwhile.
    ///
    /// # Errors
    ///
    /// A transport error, the error that closed the connection, a
    /// non-fatal `EINVAL` once the output is shut
    /// ([`push_shutdown`](Self::push_shutdown)), or a non-fatal
    /// `ETIMEDOUT` when a timer expires while the peer takes nothing.
    pub async fn ready_to_write(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_write_ready(cx)).await
    }

    /// Resolves when the write queue is at or below the low watermark,
    /// writing meanwhile (as [`Handle::drained`]; [`flush`](Self::flush)
    /// waits for all of it).
    ///
    /// # Errors
    ///
    /// As [`ready_to_write`](Self::ready_to_write).
    pub async fn drained(&mut self) -> Result<()> {
        poll_fn(|cx| {
            while !self.core.is_drained() {
                let io = &mut self.io;
                match self.core.run(|core| core.poll_flush_inline(io, cx)) {
                    Poll::Ready(result) => result?,
                    // The write left the queue at the low mark, not empty.
                    Poll::Pending if self.core.is_drained() => {
                        self.core.stop_waiting_to_write();
                        break;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(self.core.check_open())
        })
        .await
    }
}
