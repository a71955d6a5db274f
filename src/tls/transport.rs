//! [`TlsTransport`]: a connection that can switch between plaintext and TLS
//! while it is live, and give its IO back afterwards.
//!
//! `tokio_native_tls::TlsStream` owns its IO for good (it has no
//! `into_inner`), which rules out stoptls and `into_parts` over TLS. This is
//! a small async adapter of our own over the synchronous
//! [`native_tls::TlsStream`], whose `S` is a [`Shim`]: a blocking-style
//! `Read + Write` view of the async IO that
//!
//! * owns the IO in an `Option`, so the IO can be taken back out of a live
//!   session (`get_mut().io.take()`) and the session dropped;
//! * keeps the [`Waker`] of the poll in progress (a clone, refreshed on each
//!   poll and cloned only when it changes), builds a [`Context`] from it for
//!   each read or write, and maps `Poll::Pending` to `WouldBlock`, which the
//!   TLS library passes back up as "want read/write". No `unsafe`: a stable
//!   `Context` carries nothing but its waker, so a stored waker is all the
//!   IO needs (tokio's coop budget is thread-local, not in the `Context`);
//! * serves a **replay** prefix first: bytes the caller had already read
//!   from the socket before `start_tls` (the ClientHello of a STARTTLS
//!   client, or everything `tls_autostart` inspected). They go to the TLS
//!   library as ciphertext and are never delivered as plaintext;
//! * records whether the IO reached EOF, which tells a truncated stream from
//!   a clean close_notify.
//!
//! State diagram (`poll_*` move it along; `into_inner` works in every state):
//!
//! ```text
//!            start_tls                poll_handshake
//!   Plain ──────────────▶ Handshaking ───────────────▶ Tls
//!     ▲                        │ failure                │ poll_stop_tls (then plaintext)
//!     │                        ▼                        │ poll_shutdown (then EOF)
//!     │                     Failed                      ▼
//!     │   close_notify sent and peer's received     ShuttingDown
//!     └──────────────────────────────────────────── (writes: plaintext after our
//!                                                    close_notify; reads: TLS until
//!                                                    the peer's close_notify)
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::mem;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use native_tls::{HandshakeError, MidHandshakeTlsStream, TlsStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{TlsError, TlsMode};

/// The most plaintext one TLS read asks for: a record carries at most
/// 2^14 bytes (RFC 8446, 5.1) and the TLS library returns one record's
/// worth per read, so zero-initialising more of a large caller buffer would
/// be wasted work on every read.
const MAX_TLS_READ: usize = 16 * 1024;

/// What a [`Shim`] leaves behind when the TLS library drops it: a failed
/// handshake consumes the stream, and with it our IO. The shim's `Drop`
/// puts the IO (and the unread replay bytes) here, so a failed transport can
/// still give its IO back.
type Lifeboat<IO> = Arc<Mutex<Option<Rescued<IO>>>>;

struct Rescued<IO> {
    io: IO,
    replay: Bytes,
    peer_eof: bool,
}

/// The synchronous `Read + Write` face of the async IO that the TLS library
/// drives. See the module docs.
struct Shim<IO> {
    /// `None` only once the IO has been taken back out (detach).
    io: Option<IO>,
    /// The waker of the poll in progress; every `poll_*` of the transport
    /// refreshes it before it calls into the TLS library.
    waker: Option<Waker>,
    /// Ciphertext to serve before reading from `io`.
    replay: Bytes,
    /// The IO returned end-of-file.
    peer_eof: bool,
    /// The IO returned an error during the current TLS call, so the error
    /// the TLS library passes up is that I/O error.
    io_failed: bool,
    /// Set during the handshake only.
    lifeboat: Option<Lifeboat<IO>>,
}

impl<IO> Shim<IO> {
    fn new(io: IO, replay: Bytes, lifeboat: Lifeboat<IO>) -> Shim<IO> {
        Shim {
            io: Some(io),
            waker: None,
            replay,
            peer_eof: false,
            io_failed: false,
            lifeboat: Some(lifeboat),
        }
    }

    /// Called at the start of every poll that may reach the IO.
    fn enter(&mut self, waker: &Waker) {
        self.io_failed = false;
        match &self.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
    }

    fn parts(&mut self) -> io::Result<(Pin<&mut IO>, Context<'_>)>
    where
        IO: Unpin,
    {
        match (self.io.as_mut(), self.waker.as_ref()) {
            (Some(io), Some(waker)) => Ok((Pin::new(io), Context::from_waker(waker))),
            (None, _) => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the IO was detached from the TLS session",
            )),
            // Unreachable by construction: every path into the TLS library
            // goes through `enter` first.
            (_, None) => Err(io::Error::other("TLS I/O outside of a poll")),
        }
    }

    /// Maps a poll result to what `Read`/`Write` callers expect.
    fn settle<T>(&mut self, p: Poll<io::Result<T>>) -> io::Result<T> {
        match p {
            Poll::Ready(Ok(v)) => Ok(v),
            Poll::Ready(Err(e)) => {
                self.io_failed = true;
                Err(e)
            }
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Read for Shim<IO> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.replay.is_empty() {
            let n = buf.len().min(self.replay.len());
            buf[..n].copy_from_slice(&self.replay[..n]);
            self.replay.advance(n);
            return Ok(n);
        }
        let want = buf.len();
        let (io, mut cx) = self.parts()?;
        let mut rb = ReadBuf::new(buf);
        let p = io
            .poll_read(&mut cx, &mut rb)
            .map_ok(|()| rb.filled().len());
        let n = self.settle(p)?;
        if n == 0 && want > 0 {
            self.peer_eof = true;
        }
        Ok(n)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Write for Shim<IO> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (io, mut cx) = self.parts()?;
        let p = io.poll_write(&mut cx, buf);
        self.settle(p)
    }

    fn flush(&mut self) -> io::Result<()> {
        let (io, mut cx) = self.parts()?;
        let p = io.poll_flush(&mut cx);
        self.settle(p)
    }
}

impl<IO> Drop for Shim<IO> {
    fn drop(&mut self) {
        if let Some(boat) = self.lifeboat.take()
            && let Some(io) = self.io.take()
        {
            let mut slot = boat.lock().unwrap_or_else(PoisonError::into_inner);
            *slot = Some(Rescued {
                io,
                replay: mem::take(&mut self.replay),
                peer_eof: self.peer_eof,
            });
        }
    }
}

/// How the TLS read direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    Open,
    /// The peer's close_notify was read: a clean TLS EOF.
    CloseNotify,
    /// TCP EOF (or an error after it) without close_notify.
    Truncated,
}

/// An established TLS session.
struct Session<IO> {
    stream: TlsStream<Shim<IO>>,
    read_end: ReadEnd,
    /// Our close_notify has been handed to the IO (flushing may be pending).
    close_notify_sent: bool,
    /// After the peer's close_notify, go on in plaintext (stoptls) rather
    /// than report EOF (shutdown).
    then_plain: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Session<IO> {
    /// Classifies an error the TLS library returned from a read or write.
    fn error(&mut self, e: io::Error) -> TlsError {
        let shim = self.stream.get_ref();
        if shim.io_failed {
            TlsError::io(e)
        } else if shim.peer_eof {
            self.read_end = ReadEnd::Truncated;
            TlsError::truncated()
        } else {
            TlsError::protocol(e)
        }
    }

    /// Reads application data. Leaves `buf` unchanged on a clean TLS EOF.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), TlsError>> {
        match self.read_end {
            ReadEnd::Open => {}
            ReadEnd::CloseNotify => return Poll::Ready(Ok(())),
            ReadEnd::Truncated => return Poll::Ready(Err(TlsError::truncated())),
        }
        if buf.remaining() == 0 {
            // A zero-length TLS read would look like EOF.
            return Poll::Ready(Ok(()));
        }
        self.stream.get_mut().enter(cx.waker());
        let want = buf.remaining().min(MAX_TLS_READ);
        match self.stream.read(buf.initialize_unfilled_to(want)) {
            Ok(0) if self.stream.get_ref().peer_eof => {
                // The library may call a bare TCP EOF a clean end; the IO
                // knows better.
                self.read_end = ReadEnd::Truncated;
                tracing::debug!("TLS stream truncated: TCP EOF without close_notify");
                Poll::Ready(Err(TlsError::truncated()))
            }
            Ok(0) => {
                self.read_end = ReadEnd::CloseNotify;
                tracing::debug!("received the peer's TLS close_notify");
                Poll::Ready(Ok(()))
            }
            Ok(n) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(self.error(e))),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, TlsError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.stream.get_mut().enter(cx.waker());
        match self.stream.write(buf) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(self.error(e))),
        }
    }

    /// Flushes the IO. The TLS library keeps no write buffer of its own:
    /// every record is handed to the shim as soon as it is sealed.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        match self.stream.get_mut().io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx).map_err(TlsError::io),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Sends our close_notify (once) and flushes it out.
    fn poll_close_notify(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        if !self.close_notify_sent {
            self.stream.get_mut().enter(cx.waker());
            // Called again only while the alert is still being written; once
            // it succeeds we never call it again, because a further call
            // would start reading, waiting for the peer's close_notify.
            match self.stream.shutdown() {
                Ok(()) => {
                    self.close_notify_sent = true;
                    tracing::debug!("sent TLS close_notify");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(self.error(e))),
            }
        }
        self.poll_flush(cx)
    }

    /// Takes the IO and the unread replay bytes out, ending the session
    /// without a word to the peer.
    fn detach(mut self) -> Option<(IO, Bytes)> {
        let shim = self.stream.get_mut();
        let io = shim.io.take()?;
        Some((io, mem::take(&mut shim.replay)))
    }
}

enum Handshake<IO> {
    /// `start_tls` was called; the first poll starts the handshake (the TLS
    /// library does I/O as soon as it is given the stream).
    Start { mode: TlsMode, shim: Shim<IO> },
    /// The handshake is waiting for the IO.
    Mid(MidHandshakeTlsStream<Shim<IO>>),
}

enum State<IO> {
    /// Plaintext. `prefix`: bytes left over from a TLS session that the TLS
    /// library never read (they follow its last record), served first.
    Plain {
        io: IO,
        prefix: Bytes,
    },
    Handshaking {
        hs: Handshake<IO>,
        lifeboat: Lifeboat<IO>,
    },
    Tls(Session<IO>),
    /// Our close_notify is being sent or has been sent.
    ShuttingDown(Session<IO>),
    /// The handshake failed; the IO is kept for `into_inner` (`None` only
    /// if the TLS library dropped it without telling us).
    Failed(Option<(IO, Bytes)>),
    /// Transient while a state is being moved; left behind only if the TLS
    /// library panicked half-way.
    Poisoned,
}

/// A connection that is plaintext or TLS, switchable while live.
///
/// It starts in plaintext ([`new`](TlsTransport::new)); `AsyncRead` and
/// `AsyncWrite` pass bytes straight through. [`start_tls`] begins a
/// handshake, driven by [`poll_handshake`] (or by any read or write, which
/// finish the handshake first). Once established, reads and writes carry TLS
/// application data. [`poll_stop_tls`] sends close_notify and returns to
/// plaintext over the same IO; [`into_inner`] gives the IO back in any
/// state.
///
/// # End of the TLS stream
///
/// * The peer's close_notify is a **clean TLS EOF**: `poll_read` returns
///   `Ok(())` with nothing read, and keeps doing so. Call [`poll_stop_tls`]
///   to answer it and go on in plaintext, or treat it as end of input.
/// * A TCP EOF without close_notify is **truncation**: `poll_read` fails
///   with an [`io::Error`] of kind [`io::ErrorKind::UnexpectedEof`] whose
///   inner error is a [`TlsError`] with
///   [`is_truncated`](TlsError::is_truncated); every later read fails the
///   same way, and [`was_truncated`](TlsTransport::was_truncated) turns true.
///
/// # Errors through `AsyncRead`/`AsyncWrite`
///
/// A handshake or protocol failure is an `io::Error` (kind `InvalidData`)
/// carrying the [`TlsError`]; get it back with [`TlsError::from_io_ref`].
/// Failures of the IO itself pass through unchanged.
///
/// # Cost
///
/// In plaintext, one `match` per call. Over TLS, each poll compares the
/// task's waker with the stored one (cloning only when it changed) and
/// makes one call into the TLS library, which reads or writes at most one
/// record (16 KiB) per call.
///
/// [`start_tls`]: TlsTransport::start_tls
/// [`poll_handshake`]: TlsTransport::poll_handshake
/// [`poll_stop_tls`]: TlsTransport::poll_stop_tls
/// [`into_inner`]: TlsTransport::into_inner
pub(crate) struct TlsTransport<IO> {
    state: State<IO>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsTransport<IO> {
    /// A plaintext transport over `io`.
    pub(crate) fn new(io: IO) -> TlsTransport<IO> {
        TlsTransport {
            state: State::Plain {
                io,
                prefix: Bytes::new(),
            },
        }
    }

    /// Begins a TLS handshake as `mode` says. `replay` holds bytes already
    /// read from the IO that belong to the TLS stream (everything in the
    /// read buffer at this point): the TLS library reads them before it
    /// reads the IO, and they are never returned as plaintext.
    ///
    /// No I/O happens here; the handshake runs in [`poll_handshake`] (or in
    /// the next read or write). Flush pending plaintext before calling this:
    /// a plaintext write after it would be encrypted.
    ///
    /// # Errors
    ///
    /// [`TlsErrorKind::AlreadyTls`](super::TlsErrorKind::AlreadyTls) unless
    /// the transport is plaintext (a handshake is running, TLS is active or
    /// still shutting down); nothing changes then. After a failed handshake,
    /// the error that failure reported.
    ///
    /// [`poll_handshake`]: TlsTransport::poll_handshake
    pub(crate) fn start_tls(&mut self, mode: TlsMode, replay: Bytes) -> Result<(), TlsError> {
        match &self.state {
            State::Plain { .. } => {}
            State::Failed(_) => return Err(TlsError::failed_earlier()),
            State::Poisoned => return Err(TlsError::poisoned()),
            _ => return Err(TlsError::already_tls()),
        }
        let State::Plain { io, prefix } = mem::replace(&mut self.state, State::Poisoned) else {
            // Checked just above.
            return Err(TlsError::poisoned());
        };
        // Bytes left over from an earlier session come after `replay`:
        // the caller read `replay` from us before they arrived.
        let replay = if prefix.is_empty() {
            replay
        } else {
            let mut all = BytesMut::with_capacity(replay.len() + prefix.len());
            all.extend_from_slice(&replay);
            all.extend_from_slice(&prefix);
            all.freeze()
        };
        tracing::debug!(
            connect = mode.is_connect(),
            replay = replay.len(),
            "starting TLS"
        );
        let lifeboat: Lifeboat<IO> = Arc::new(Mutex::new(None));
        let shim = Shim::new(io, replay, Arc::clone(&lifeboat));
        self.state = State::Handshaking {
            hs: Handshake::Start { mode, shim },
            lifeboat,
        };
        Ok(())
    }

    /// Drives the handshake. `Ready(Ok(()))` once TLS is established, and at
    /// once when there is no handshake to run (plaintext, or TLS already up).
    ///
    /// # Errors
    ///
    /// A failed handshake ([`TlsError::is_handshake`]; the message carries
    /// the TLS library's reason, such as `certificate verify failed` or
    /// `Hostname mismatch`), or [`TlsErrorKind::Io`] when the IO failed
    /// during it. Either is fatal: the transport stays failed (reads and
    /// writes fail, nothing is sent in plaintext) and only
    /// [`into_inner`](TlsTransport::into_inner) is useful afterwards.
    ///
    /// [`TlsErrorKind::Io`]: super::TlsErrorKind::Io
    pub(crate) fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        match &self.state {
            State::Handshaking { .. } => {}
            State::Plain { .. } | State::Tls(_) | State::ShuttingDown(_) => {
                return Poll::Ready(Ok(()));
            }
            State::Failed(_) => return Poll::Ready(Err(TlsError::failed_earlier())),
            State::Poisoned => return Poll::Ready(Err(TlsError::poisoned())),
        }
        let State::Handshaking { hs, lifeboat } = mem::replace(&mut self.state, State::Poisoned)
        else {
            return Poll::Ready(Err(TlsError::poisoned()));
        };
        let result = match hs {
            Handshake::Start { mode, mut shim } => {
                shim.enter(cx.waker());
                match &mode {
                    TlsMode::Connect(c) => c.connector().connect(c.domain(), shim),
                    TlsMode::Accept(s) => s.acceptor().accept(shim),
                }
            }
            Handshake::Mid(mut mid) => {
                mid.get_mut().enter(cx.waker());
                mid.handshake()
            }
        };
        match result {
            Ok(mut stream) => {
                stream.get_mut().lifeboat = None;
                tracing::debug!("TLS handshake complete");
                self.state = State::Tls(Session {
                    stream,
                    read_end: ReadEnd::Open,
                    close_notify_sent: false,
                    then_plain: false,
                });
                Poll::Ready(Ok(()))
            }
            Err(HandshakeError::WouldBlock(mid)) => {
                if mid.get_ref().io_failed {
                    // Defensive: an IO that reports WouldBlock as an error
                    // would otherwise hang here; native-tls has already
                    // seen it as "want I/O", so poll again.
                    cx.waker().wake_by_ref();
                }
                self.state = State::Handshaking {
                    hs: Handshake::Mid(mid),
                    lifeboat,
                };
                Poll::Pending
            }
            Err(HandshakeError::Failure(e)) => {
                let rescued = lifeboat
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                let peer_eof = rescued.as_ref().is_some_and(|r| r.peer_eof);
                let err = TlsError::handshake(e, peer_eof);
                tracing::debug!(error = %err, "TLS handshake failed");
                self.state = State::Failed(rescued.map(|r| (r.io, r.replay)));
                Poll::Ready(Err(err))
            }
        }
    }

    /// Ends TLS and returns to plaintext over the same IO: sends
    /// close_notify and flushes it. `Ready(Ok(()))` when that is done, and at
    /// once when the transport is already plaintext. A handshake in progress
    /// is finished first.
    ///
    /// From then on **writes are plaintext** (the peer reads them after our
    /// close_notify). **Reads stay TLS until the peer's close_notify**,
    /// which the peer sends in answer (or has sent already); application
    /// data that arrives before it is still delivered, and the bytes after
    /// it are read as plaintext, with no EOF in between. [`is_tls`] turns
    /// false once both directions are plaintext.
    ///
    /// A peer that drops its TLS state on our close_notify without
    /// answering (AnyEvent::Handle with `on_stoptls`) leaves our read side
    /// waiting for a close_notify that never comes: its plaintext would be
    /// taken for broken TLS records. Both ends have to agree on stoptls.
    ///
    /// # Errors
    ///
    /// A failed handshake, a TLS error while sending, or an I/O error.
    ///
    /// [`is_tls`]: TlsTransport::is_tls
    pub(crate) fn poll_stop_tls(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        loop {
            match &mut self.state {
                State::Plain { .. } => return Poll::Ready(Ok(())),
                State::Handshaking { .. } => ready!(self.poll_handshake(cx))?,
                State::Tls(_) => self.begin_close(true),
                State::ShuttingDown(s) => {
                    s.then_plain = true;
                    ready!(s.poll_close_notify(cx))?;
                    if s.read_end == ReadEnd::CloseNotify {
                        self.detach_to_plain()?;
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Failed(_) => return Poll::Ready(Err(TlsError::failed_earlier())),
                State::Poisoned => return Poll::Ready(Err(TlsError::poisoned())),
            }
        }
    }

    /// True while TLS is in use in either direction: from `start_tls` until
    /// both close_notify alerts have passed after `poll_stop_tls`. False in
    /// plaintext and after a failed handshake.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(
            self.state,
            State::Handshaking { .. } | State::Tls(_) | State::ShuttingDown(_)
        )
    }

    /// True once a read has seen the connection end without the peer's
    /// close_notify (see the type's docs).
    pub(crate) fn was_truncated(&self) -> bool {
        matches!(
            &self.state,
            State::Tls(s) | State::ShuttingDown(s) if s.read_end == ReadEnd::Truncated
        )
    }

    /// The peer's certificate, once TLS is established and if it sent one.
    pub(crate) fn peer_certificate(&self) -> Option<native_tls::Certificate> {
        match &self.state {
            State::Tls(s) | State::ShuttingDown(s) => s.stream.peer_certificate().ok().flatten(),
            _ => None,
        }
    }

    /// The IO, for socket options and addresses. `None` only after a panic
    /// inside the TLS library.
    pub(crate) fn get_ref(&self) -> Option<&IO> {
        match &self.state {
            State::Plain { io, .. } => Some(io),
            State::Handshaking { hs, .. } => match hs {
                Handshake::Start { shim, .. } => shim.io.as_ref(),
                Handshake::Mid(mid) => mid.get_ref().io.as_ref(),
            },
            State::Tls(s) | State::ShuttingDown(s) => s.stream.get_ref().io.as_ref(),
            State::Failed(parts) => parts.as_ref().map(|(io, _)| io),
            State::Poisoned => None,
        }
    }

    /// Takes the IO back, with the bytes of the replay prefix (or of a
    /// finished session's leftovers) that were never read: they come
    /// before anything still unread in the IO.
    ///
    /// In plaintext this loses nothing. **An active TLS session (handshaking,
    /// established, or shutting down) is dropped on the spot**, like
    /// AnyEvent's `resettls`: no close_notify is sent, so the peer sees a
    /// truncated TLS stream; application data already decrypted but not yet
    /// read, and any partial record the TLS library had buffered, are lost,
    /// and the IO may still hold TLS records the peer sent. Stop TLS first
    /// ([`poll_stop_tls`](TlsTransport::poll_stop_tls) until
    /// [`is_tls`](TlsTransport::is_tls) is false) to hand over a clean
    /// plaintext stream.
    ///
    /// After a failed handshake it returns the IO too.
    ///
    /// # Panics
    ///
    /// Only if an earlier call panicked inside the TLS library and lost the
    /// IO; never because of anything the peer sent.
    pub(crate) fn into_inner(mut self) -> (IO, Bytes) {
        let parts = match mem::replace(&mut self.state, State::Poisoned) {
            State::Plain { io, prefix } => Some((io, prefix)),
            State::Handshaking { hs, .. } => match hs {
                Handshake::Start { mut shim, .. } => {
                    shim.io.take().map(|io| (io, mem::take(&mut shim.replay)))
                }
                Handshake::Mid(mut mid) => {
                    let shim = mid.get_mut();
                    shim.io.take().map(|io| (io, mem::take(&mut shim.replay)))
                }
            },
            State::Tls(s) | State::ShuttingDown(s) => s.detach(),
            State::Failed(parts) => parts,
            State::Poisoned => None,
        };
        match parts {
            Some(parts) => parts,
            None => panic!("TlsTransport lost its IO after a panic inside the TLS library"),
        }
    }

    /// Tls → ShuttingDown.
    fn begin_close(&mut self, then_plain: bool) {
        if let State::Tls(_) = self.state
            && let State::Tls(mut s) = mem::replace(&mut self.state, State::Poisoned)
        {
            s.then_plain = then_plain;
            self.state = State::ShuttingDown(s);
        }
    }

    /// ShuttingDown (both close_notify alerts passed) → Plain.
    fn detach_to_plain(&mut self) -> Result<(), TlsError> {
        match mem::replace(&mut self.state, State::Poisoned) {
            State::ShuttingDown(s) | State::Tls(s) => match s.detach() {
                Some((io, prefix)) => {
                    tracing::debug!(leftover = prefix.len(), "TLS stopped, back to plaintext");
                    self.state = State::Plain { io, prefix };
                    Ok(())
                }
                None => Err(TlsError::poisoned()),
            },
            other => {
                self.state = other;
                Ok(())
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsTransport<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Plain { io, prefix } => {
                    if prefix.is_empty() {
                        return Pin::new(io).poll_read(cx, buf);
                    }
                    let n = buf.remaining().min(prefix.len());
                    buf.put_slice(&prefix[..n]);
                    prefix.advance(n);
                    return Poll::Ready(Ok(()));
                }
                State::Handshaking { .. } => ready!(this.poll_handshake(cx))?,
                State::Tls(s) => return s.poll_read(cx, buf).map_err(io::Error::from),
                State::ShuttingDown(s) => {
                    let before = buf.filled().len();
                    ready!(s.poll_read(cx, buf))?;
                    let peer_closed = s.read_end == ReadEnd::CloseNotify;
                    if buf.filled().len() > before || !peer_closed || !s.then_plain {
                        return Poll::Ready(Ok(()));
                    }
                    // stoptls: the peer's close_notify ends TLS; finish ours
                    // if it is still on its way, then read on in plaintext.
                    ready!(s.poll_close_notify(cx))?;
                    this.detach_to_plain()?;
                }
                State::Failed(_) => return Poll::Ready(Err(TlsError::failed_earlier().into())),
                State::Poisoned => return Poll::Ready(Err(TlsError::poisoned().into())),
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsTransport<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Plain { io, .. } => return Pin::new(io).poll_write(cx, buf),
                State::Handshaking { .. } => ready!(this.poll_handshake(cx))?,
                State::Tls(s) => return s.poll_write(cx, buf).map_err(io::Error::from),
                State::ShuttingDown(s) => {
                    ready!(s.poll_close_notify(cx))?;
                    if !s.then_plain {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "write after the TLS stream was shut down",
                        )));
                    }
                    // After our close_notify, plaintext.
                    return match s.stream.get_mut().io.as_mut() {
                        Some(io) => Pin::new(io).poll_write(cx, buf),
                        None => Poll::Ready(Err(TlsError::poisoned().into())),
                    };
                }
                State::Failed(_) => return Poll::Ready(Err(TlsError::failed_earlier().into())),
                State::Poisoned => return Poll::Ready(Err(TlsError::poisoned().into())),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let State::Plain { io, .. } = &mut this.state {
            return Pin::new(io).poll_write_vectored(cx, bufs);
        }
        // TLS seals one buffer at a time; callers that care coalesce first.
        let buf = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(this).poll_write(cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.state {
            State::Plain { io, .. } => io.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = match &mut this.state {
            State::Plain { io, .. } => Some(io),
            State::Handshaking { hs, .. } => match hs {
                Handshake::Start { shim, .. } => shim.io.as_mut(),
                Handshake::Mid(mid) => mid.get_mut().io.as_mut(),
            },
            State::Tls(s) => return s.poll_flush(cx).map_err(io::Error::from),
            State::ShuttingDown(s) => return s.poll_close_notify(cx).map_err(io::Error::from),
            State::Failed(_) => return Poll::Ready(Err(TlsError::failed_earlier().into())),
            State::Poisoned => None,
        };
        match io {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Err(TlsError::poisoned().into())),
        }
    }

    /// Over TLS: sends close_notify (so the peer sees a clean TLS EOF, not a
    /// truncation), flushes, then shuts down the IO's write side. Reads go
    /// on until the peer's close_notify, which reads as EOF. (AnyEvent's
    /// `push_shutdown` sends no close_notify, TLS-8; its peers then see a
    /// truncated stream.) During a handshake, it shuts down the IO only.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.begin_close(false);
        let io = match &mut this.state {
            State::Plain { io, .. } => Some(io),
            State::Handshaking { hs, .. } => match hs {
                Handshake::Start { shim, .. } => shim.io.as_mut(),
                Handshake::Mid(mid) => mid.get_mut().io.as_mut(),
            },
            State::ShuttingDown(s) => {
                ready!(s.poll_close_notify(cx))?;
                s.stream.get_mut().io.as_mut()
            }
            State::Tls(_) | State::Poisoned => None,
            State::Failed(parts) => parts.as_mut().map(|(io, _)| io),
        };
        match io {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Err(TlsError::poisoned().into())),
        }
    }
}

impl<IO> fmt::Debug for TlsTransport<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Plain { .. } => "Plain",
            State::Handshaking { .. } => "Handshaking",
            State::Tls(_) => "Tls",
            State::ShuttingDown(_) => "ShuttingDown",
            State::Failed(_) => "Failed",
            State::Poisoned => "Poisoned",
        };
        f.debug_struct("TlsTransport")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
